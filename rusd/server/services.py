"""gRPC services: translate protobuf to core requests, await the runtime, translate
back. No decisions are made here beyond etcd's wire-level checks (message size)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.api.health import health_pb2, health_pb2_grpc
from rusd.core import errors
from rusd.core.alarms import AlarmResponse
from rusd.core.cluster import (
    MemberAddRequest,
    MemberAddResponse,
    MemberChangeResponse,
    MemberPromoteRequest,
    MemberRemoveRequest,
    MemberRequest,
    MemberResponse,
    MemberUpdateRequest,
)
from rusd.core.errors import EtcdError
from rusd.core.membership import member_id
from rusd.core.mvcc import hashing
from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc import types as t
from rusd.core.node import is_read
from rusd.server import convert, watch_service
from rusd.server.auth_guard import AuthGuard, raw
from rusd.server.auth_service import AuthService
from rusd.server.base import ETCD_API_VERSION, ServiceBase, abort
from rusd.server.lease_service import LeaseService
from rusd.server.runtime import Runtime
from rusd.server.watch_service import WatchService


class KVService(ServiceBase, pb_grpc.KVServicer):
    def __init__(self, runtime: Runtime, guard: AuthGuard) -> None:
        super().__init__(runtime)
        self.guard = guard

    async def Range(self, request: pb.RangeRequest, context: Any) -> pb.RangeResponse:
        result = await self.guard.read(context, convert.range_request(request))
        r = await self.answer(result, t.RangeResponse, context)
        return convert.range_response(r, self.header(r.revision))

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        req = convert.put_request(request)
        await self.check_size(request, req, context)
        result = await self.guard.write(context, req)
        r = await self.answer(result, t.PutResponse, context)
        return convert.put_response(r, self.header(r.revision))

    async def DeleteRange(self, request: pb.DeleteRangeRequest, context: Any) -> pb.DeleteRangeResponse:
        req = convert.delete_request(request)
        await self.check_size(request, req, context)
        result = await self.guard.write(context, req)
        r = await self.answer(result, t.DeleteRangeResponse, context)
        return convert.delete_response(r, self.header(r.revision))

    async def Txn(self, request: pb.TxnRequest, context: Any) -> pb.TxnResponse:
        req = convert.txn_request(request)
        if is_read(req):
            result = await self.guard.read(context, req)
        else:
            await self.check_size(request, req, context)
            result = await self.guard.write(context, req)
        r = await self.answer(result, t.TxnResponse, context)
        return convert.txn_response(r, self.header(r.revision))

    async def Compact(self, request: pb.CompactionRequest, context: Any) -> pb.CompactionResponse:
        result = await self.guard.write(context, convert.compaction_request(request))
        r = await self.answer(result, t.CompactionResponse, context)
        return pb.CompactionResponse(header=self.header(r.revision))


class MaintenanceService(ServiceBase, pb_grpc.MaintenanceServicer):
    def __init__(self, runtime: Runtime, guard: AuthGuard) -> None:
        super().__init__(runtime)
        self.guard = guard

    async def _admin(self, context: Any) -> None:
        """etcd's authMaintenanceServer: Defragment, Snapshot, Hash and HashKV are root's."""
        try:
            await self.guard.admin(context)
        except EtcdError as e:
            await abort(context, raw(e))

    async def Alarm(self, request: pb.AlarmRequest, context: Any) -> pb.AlarmResponse:
        result = await self.guard.write(context, convert.alarm_request(request))
        r = await self.answer(result, AlarmResponse, context)
        # etcd 3.4 answers Alarm without a header at all.
        return pb.AlarmResponse(alarms=convert.alarm_members(r.alarms))

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        view = await self.rt.snapshot()
        status = self.rt.status
        return pb.StatusResponse(
            header=self.header(mvcc.current_revision(view)),
            version=ETCD_API_VERSION,
            dbSize=view.size(),
            dbSizeInUse=view.size_in_use(),
            leader=status.leader,
            raftIndex=status.last_index,
            raftTerm=status.term,
            raftAppliedIndex=status.applied_index,
            errors=[f"memberID:{a.member_id} alarm:{pb.AlarmType.Name(a.alarm)} " for a in status.alarms],
            isLearner=status.is_learner,
        )

    async def MoveLeader(self, request: pb.MoveLeaderRequest, context: Any) -> pb.MoveLeaderResponse:
        """Hand leadership to another voter; only the leader takes it (etcd's MoveLeader)."""
        await self._admin(context)
        me, status = self.rt.config.member.id, self.rt.status
        if status.leader != me:
            await abort(context, EtcdError(errors.NOT_LEADER))
        if request.targetID not in {m.id for m in status.members if not m.is_learner} or request.targetID == me:
            await abort(context, EtcdError(errors.BAD_LEADER_TRANSFEREE))
        self.rt.transfer_leader(request.targetID)
        deadline = time.monotonic() + self.rt.request_timeout
        while self.rt.status.leader != request.targetID:
            if time.monotonic() > deadline:
                await abort(context, EtcdError(errors.LEADER_TRANSFER_TIMEOUT))
            await asyncio.sleep(0.02)
        return pb.MoveLeaderResponse(header=self.header(0))

    async def Snapshot(self, request: pb.SnapshotRequest, context: Any) -> AsyncIterator[pb.SnapshotResponse]:
        """The whole store as one consistent image, in chunks, then its SHA-256 as the last
        chunk (etcd's checksum trailer, which `rusd snapshot restore` verifies)."""
        await self._admin(context)
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryDirectory(dir=self.rt.snapshot_parent) as tmp:
            path = os.path.join(tmp, "image")
            size = await loop.run_in_executor(None, self.rt.store.write_image, path)
            digest = hashlib.sha256()
            header = self.header(mvcc.current_revision(await self.rt.snapshot()))
            with open(path, "rb") as f:
                sent = 0
                while chunk := await loop.run_in_executor(None, f.read, SNAPSHOT_CHUNK):
                    digest.update(chunk)
                    sent += len(chunk)
                    yield pb.SnapshotResponse(header=header, remaining_bytes=size - sent, blob=chunk)
        yield pb.SnapshotResponse(header=header, remaining_bytes=0, blob=digest.digest())

    async def Defragment(self, request: pb.DefragmentRequest, context: Any) -> pb.DefragmentResponse:
        await self._admin(context)
        await self.rt.defragment()
        view = await self.rt.snapshot()
        return pb.DefragmentResponse(header=self.header(mvcc.current_revision(view)))

    async def Hash(self, request: pb.HashRequest, context: Any) -> pb.HashResponse:
        await self._admin(context)
        view = await self.rt.snapshot()
        return pb.HashResponse(header=self.header(mvcc.current_revision(view)), hash=hashing.hash_all(view))

    async def HashKV(self, request: pb.HashKVRequest, context: Any) -> pb.HashKVResponse:
        await self._admin(context)
        view = await self.rt.snapshot()
        try:
            crc, compacted, rev = hashing.hash_kv(view, request.revision)
        except EtcdError as e:
            await abort(context, e)
        return pb.HashKVResponse(
            header=self.header(mvcc.current_revision(view)),
            hash=crc,
            compact_revision=compacted,
            hash_revision=rev,
        )


class ClusterService(ServiceBase, pb_grpc.ClusterServicer):
    def __init__(self, runtime: Runtime, guard: AuthGuard) -> None:
        super().__init__(runtime)
        self.guard = guard

    async def MemberList(self, request: pb.MemberListRequest, context: Any) -> pb.MemberListResponse:
        # etcd fills only the ids and the term in a Cluster header, no revision.
        return pb.MemberListResponse(header=self.header(0), members=self._members())

    def _strict(self) -> bool:
        return self.rt.config.strict_reconfig_check

    def _voters(self) -> int:
        return sum(1 for m in self.rt.status.members if not m.is_learner)

    def _members(self) -> list[pb.Member]:
        return [convert.member(m) for m in self.rt.status.members or (self.rt.config.member,)]

    async def _change(self, req: MemberRequest, context: Any) -> MemberResponse:
        try:
            await self.guard.admin(context)
        except EtcdError as e:
            await abort(context, e)
        result = await self.rt.write(req)
        if isinstance(result, EtcdError):
            await abort(context, result)
        assert isinstance(result, MemberAddResponse | MemberChangeResponse)
        return result

    async def MemberAdd(self, request: pb.MemberAddRequest, context: Any) -> pb.MemberAddResponse:
        urls = tuple(request.peerURLs)
        if not urls or not all(valid_peer_url(u) for u in urls):
            await abort(context, EtcdError(errors.MEMBER_BAD_URLS))
        # etcd's NewMember: the id hashes the peer URLs, the cluster token and the time.
        new_id = member_id(list(urls), self.rt.cluster_token, int(time.time()))
        if self._strict() and self.rt.connected_voters(time.monotonic() - HEALTH_INTERVAL) < self._voters():
            await abort(context, EtcdError(errors.UNHEALTHY))
        r = await self._change(MemberAddRequest(urls, request.isLearner, new_id), context)
        assert isinstance(r, MemberAddResponse)
        return pb.MemberAddResponse(header=self.header(0), member=convert.member(r.member), members=self._members())

    async def MemberRemove(self, request: pb.MemberRemoveRequest, context: Any) -> pb.MemberRemoveResponse:
        if self._strict() and not self._may_remove(request.ID):
            await abort(context, EtcdError(errors.UNHEALTHY))
        await self._change(MemberRemoveRequest(request.ID), context)
        return pb.MemberRemoveResponse(header=self.header(0), members=self._members())

    def _may_remove(self, member_id: int) -> bool:
        """etcd's mayRemoveMember: a learner or a member that is down (no stream to it) may
        always go; removing a connected voter must leave a quorum of connected voters."""
        if any(m.id == member_id and m.is_learner for m in self.rt.status.members):
            return True
        transport = self.rt.transport
        if member_id != self.rt.config.member.id and (transport is None or transport.active_since(member_id) is None):
            return True
        active = self.rt.connected_voters(time.monotonic() - HEALTH_INTERVAL)
        return active - 1 >= 1 + (self._voters() - 1) // 2

    async def MemberUpdate(self, request: pb.MemberUpdateRequest, context: Any) -> pb.MemberUpdateResponse:
        urls = tuple(request.peerURLs)
        if not urls or not all(valid_peer_url(u) for u in urls):
            await abort(context, EtcdError(errors.MEMBER_BAD_URLS))
        await self._change(MemberUpdateRequest(request.ID, urls), context)
        return pb.MemberUpdateResponse(header=self.header(0), members=self._members())

    async def MemberPromote(self, request: pb.MemberPromoteRequest, context: Any) -> pb.MemberPromoteResponse:
        await self._change(MemberPromoteRequest(request.ID), context)
        return pb.MemberPromoteResponse(header=self.header(0), members=self._members())


# Bytes per Snapshot response message.
SNAPSHOT_CHUNK = 1 << 20
# etcd's HealthInterval: a member counts as connected once its stream is up this long.
HEALTH_INTERVAL = 5.0


def valid_peer_url(url: str) -> bool:
    """etcd's types.NewURLs: http(s)://host:port with nothing after the port."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port is not None and (
        parts.path in ("", "/") and not parts.query and not parts.fragment
    )


class HealthService(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING while the writer is alive."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _status(self) -> int:
        return (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if self.rt.failed
            else health_pb2.HealthCheckResponse.SERVING
        )

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=self._status())  # type: ignore[arg-type]

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> AsyncIterator[Any]:
        yield health_pb2.HealthCheckResponse(status=self._status())  # type: ignore[arg-type]
        await self.rt.stopped()


def register(
    server: grpc.aio.Server,
    runtime: Runtime,
    watch_progress_interval: float = 600.0,
    guard: AuthGuard | None = None,
    bcrypt_cost: int = 10,
) -> None:
    guard = guard or AuthGuard(runtime)
    # Applied auth changes (on every member) reach the tokens this member honours.
    runtime.on_auth = guard.applied
    adders: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = [
        (pb_grpc.add_KVServicer_to_server, KVService(runtime, guard)),
        (pb_grpc.add_MaintenanceServicer_to_server, MaintenanceService(runtime, guard)),
        (pb_grpc.add_ClusterServicer_to_server, ClusterService(runtime, guard)),
        (health_pb2_grpc.add_HealthServicer_to_server, HealthService(runtime)),
        (pb_grpc.add_LeaseServicer_to_server, LeaseService(runtime, guard)),
        (pb_grpc.add_AuthServicer_to_server, AuthService(runtime, guard, bcrypt_cost)),
    ]
    for add, servicer in adders:
        add(servicer, server)
    _register_watch(server, runtime, watch_progress_interval, guard)


def _register_watch(server: grpc.aio.Server, runtime: Runtime, progress_interval: float, guard: AuthGuard) -> None:
    watch = WatchService(runtime, progress_interval, guard=guard)
    watch_service.add_to_server(watch, server)
    earlier = runtime.on_events

    def on_events(events: list[t.Event]) -> None:
        earlier(events)
        watch.on_events(events)

    runtime.on_events = on_events

