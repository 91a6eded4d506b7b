"""The Lease gRPC service: protobuf <-> core lease types, nothing else.

Grant and Revoke go through the log (`Runtime.write`); KeepAlive, TimeToLive and
Leases are answered by the leader's lessor in the writer thread (`Runtime.local`).
Header revisions follow etcd 3.4: Grant and Revoke carry the store's revision right
after their apply, the others the current revision when answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.core.auth import check
from rusd.core.errors import EtcdError
from rusd.core.lease import types as lt
from rusd.core.mvcc import store as mvcc
from rusd.server.auth_guard import AuthGuard
from rusd.server.base import ServiceBase, abort
from rusd.server.runtime import Runtime


class LeaseService(ServiceBase, pb_grpc.LeaseServicer):
    def __init__(self, runtime: Runtime, guard: AuthGuard) -> None:
        super().__init__(runtime)
        self.guard = guard

    async def _current_header(self) -> pb.ResponseHeader:
        view = await self.rt.snapshot()
        return self.header(mvcc.current_revision(view))

    async def LeaseGrant(self, request: pb.LeaseGrantRequest, context: Any) -> pb.LeaseGrantResponse:
        req = lt.LeaseGrantRequest(ttl=request.TTL, id=request.ID)
        await self.check_size(request, req, context)
        r = await self.answer(await self.guard.write(context, req), lt.LeaseGrantResponse, context)
        return pb.LeaseGrantResponse(header=self.header(r.revision), ID=r.id, TTL=r.ttl)

    async def LeaseRevoke(self, request: pb.LeaseRevokeRequest, context: Any) -> pb.LeaseRevokeResponse:
        req = lt.LeaseRevokeRequest(request.ID)
        await self.check_size(request, req, context)
        # The apply checks write access to every attached key (etcd's checkLeasePuts).
        r = await self.answer(await self.guard.write(context, req), lt.LeaseRevokeResponse, context)
        return pb.LeaseRevokeResponse(header=self.header(r.revision))

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        # One response per request, in order. Reading the next request only after the
        # previous response is handed to gRPC keeps a slow client from queueing work;
        # a disconnect cancels this one handler task and nothing else is left behind.
        async for request in request_iterator:
            result = await self.rt.local(lt.LeaseKeepAliveRequest(request.ID))
            r = await self.answer(result, lt.LeaseKeepAliveResponse, context)
            yield pb.LeaseKeepAliveResponse(header=await self._current_header(), ID=r.id, TTL=r.ttl)

    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: Any
    ) -> pb.LeaseTimeToLiveResponse:
        result = await self.rt.local(lt.LeaseTimeToLiveRequest(request.ID, request.keys))
        r = await self.answer(result, lt.LeaseTimeToLiveResponse, context)
        if request.keys:
            # Listing the keys needs read access to each of them (etcd >= 3.5).
            try:
                info = await self.guard.info(context)
                state = await self.guard.current()
                for key in r.keys:
                    check.check_range(state, info, key, b"")
            except EtcdError as e:
                await abort(context, e)
        return pb.LeaseTimeToLiveResponse(
            header=await self._current_header(), ID=r.id, TTL=r.ttl, grantedTTL=r.granted_ttl, keys=list(r.keys)
        )

    async def LeaseLeases(self, request: pb.LeaseLeasesRequest, context: Any) -> pb.LeaseLeasesResponse:
        r = await self.answer(await self.rt.local(lt.LeaseLeasesRequest()), lt.LeaseLeasesResponse, context)
        return pb.LeaseLeasesResponse(
            header=await self._current_header(), leases=[pb.LeaseStatus(ID=i) for i in r.ids]
        )
