"""What members ask each other besides Raft, served on the peer listener next to it:

- `Lease`: the leader answers the lease requests its followers took from clients
  (KeepAlive, TimeToLive; etcd's peer endpoints /leases and /leases/internal; any
  member lists leases itself).
  A member that does not lead refuses with FAILED_PRECONDITION "not a primary lessor"
  (etcd's lease.ErrNotPrimary) instead of forwarding again, so a stale view of who
  leads never bounces a request between followers;
- `Maintenance.HashKV`: this member's KV hash for the corruption checks (etcd's
  /members/hashkv), computed as the client API's HashKV but without its auth check
  (peers are trusted by the peer TLS configuration, as in etcd).

Every call must carry this cluster's id and this member's id (`peer.check_call`), like
the Raft streams. The callers are `forward.py` and `corrupt.py`, through
`PeerTransport.call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.lease import types as lt
from rusd.core.mvcc import hashing
from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc.backend import KVReader
from rusd.core.node import LocalRequest, Result
from rusd.server.base import abort
from rusd.server.peer import abort_call, check_call

# etcd's lease.ErrNotPrimary: the addressee does not lead (any more).
NOT_PRIMARY = "not a primary lessor"

R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class LeaseServicer(pb_grpc.LeaseServicer):
    """`answer` is the member's own lessor (Runtime.local without forwarding)."""

    def __init__(self, cluster_id: int, member_id: int, answer: Callable[[LocalRequest], Awaitable[Result]]) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.answer = answer

    async def _answer(self, req: LocalRequest, want: type[R], context: Context) -> R:
        await check_call(context, self.cluster_id, self.member_id)
        result = await self.answer(req)
        if isinstance(result, EtcdError):
            if result.kind in (errors.NOT_LEADER, errors.NO_LEADER):
                await abort_call(context, grpc.StatusCode.FAILED_PRECONDITION, NOT_PRIMARY)
            await abort(context, result)
        if not isinstance(result, want):
            await abort_call(context, grpc.StatusCode.INTERNAL, f"unexpected answer {type(result).__name__}")
        return result

    async def Renew(self, request: pb.LeaseRenewRequest, context: Context) -> pb.LeaseRenewResponse:
        r = await self._answer(lt.LeaseKeepAliveRequest(request.id), lt.LeaseKeepAliveResponse, context)
        return pb.LeaseRenewResponse(id=r.id, ttl=r.ttl)

    async def TimeToLive(self, request: pb.LeaseTimeToLiveRequest, context: Context) -> pb.LeaseTimeToLiveResponse:
        req = lt.LeaseTimeToLiveRequest(request.id, request.keys)
        r = await self._answer(req, lt.LeaseTimeToLiveResponse, context)
        return pb.LeaseTimeToLiveResponse(id=r.id, ttl=r.ttl, granted_ttl=r.granted_ttl, keys=list(r.keys))


class MaintenanceServicer(pb_grpc.MaintenanceServicer):
    """`snapshot` is the member's current durable view (Runtime.snapshot)."""

    def __init__(self, cluster_id: int, member_id: int, snapshot: Callable[[], Awaitable[KVReader]]) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.snapshot = snapshot

    async def HashKV(self, request: pb.HashKVRequest, context: Context) -> pb.HashKVResponse:
        await check_call(context, self.cluster_id, self.member_id)
        try:
            view = await self.snapshot()
            crc, compacted, rev = hashing.hash_kv(view, request.revision)
        except EtcdError as e:  # compacted / future revision, or stopping
            await abort(context, e)
        return pb.HashKVResponse(
            hash=crc, compact_revision=compacted, hash_revision=rev, revision=mvcc.current_revision(view)
        )


def register(
    server: grpc.aio.Server,
    cluster_id: int,
    member_id: int,
    answer: Callable[[LocalRequest], Awaitable[Result]],
    snapshot: Callable[[], Awaitable[KVReader]],
) -> None:
    """Serve Lease and Maintenance on the peer server (next to Raft and Membership)."""
    pb_grpc.add_LeaseServicer_to_server(LeaseServicer(cluster_id, member_id, answer), server)
    pb_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(cluster_id, member_id, snapshot), server)
