"""gRPC services: translate protobuf to core requests, await the runtime, translate
back. No decisions are made here beyond etcd's wire-level checks (message size)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.api.health import health_pb2, health_pb2_grpc
from rusd.core.alarms import AlarmResponse
from rusd.core.errors import EtcdError
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
            leader=self.rt.config.member.id,
            raftIndex=status.last_index,
            raftTerm=status.term,
            raftAppliedIndex=status.applied_index,
            errors=[f"memberID:{a.member_id} alarm:{pb.AlarmType.Name(a.alarm)} " for a in status.alarms],
            isLearner=False,
        )

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
    async def MemberList(self, request: pb.MemberListRequest, context: Any) -> pb.MemberListResponse:
        info = self.rt.config.member
        member = pb.Member(
            ID=info.id,
            name=info.name,
            peerURLs=list(info.peer_urls),
            clientURLs=list(info.client_urls),
            isLearner=info.is_learner,
        )
        # etcd fills only the ids and the term in a MemberList header, no revision.
        return pb.MemberListResponse(header=self.header(0), members=[member])


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
    adders: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = [
        (pb_grpc.add_KVServicer_to_server, KVService(runtime, guard)),
        (pb_grpc.add_MaintenanceServicer_to_server, MaintenanceService(runtime, guard)),
        (pb_grpc.add_ClusterServicer_to_server, ClusterService(runtime)),
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

