"""Leader-only lease requests (KeepAlive, TimeToLive, Leases) taken by a follower go to the
leader, as etcd's followers forward them (etcd over its peer HTTP /leases endpoints; rusd
over the leader's published client URL)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.lease import types as lt
from rusd.core.node import LocalRequest, Result

log = logging.getLogger("rusd.forward")

# A forwarded request waits no longer than etcd's lease forwarding does for its answer.
FORWARD_TIMEOUT = 5.0


class LeaderForwarder:
    """One channel per leader client URL, kept while that member leads."""

    def __init__(self) -> None:
        self._url = ""
        self._channel: grpc.aio.Channel | None = None

    async def _stub(self, url: str) -> pb_grpc.LeaseStub:
        if url != self._url or self._channel is None:
            if self._channel is not None:
                old, self._channel = self._channel, None
                await old.close(None)
            parts = urlsplit(url)
            self._channel = grpc.aio.insecure_channel(f"{parts.hostname}:{parts.port}")
            self._url = url
        return pb_grpc.LeaseStub(self._channel)

    async def forward(self, req: LocalRequest, leader_url: str | None) -> Result:
        """Ask the leader; "no leader" when none is known or it cannot be reached."""
        if not leader_url or urlsplit(leader_url).scheme != "http":
            return EtcdError(errors.NO_LEADER)
        stub = await self._stub(leader_url)
        try:
            if isinstance(req, lt.LeaseKeepAliveRequest):
                call = stub.LeaseKeepAlive(timeout=FORWARD_TIMEOUT)
                await call.write(pb.LeaseKeepAliveRequest(ID=req.id))
                got = await call.read()
                call.cancel()
                if not isinstance(got, pb.LeaseKeepAliveResponse):
                    return EtcdError(errors.NO_LEADER)
                return lt.LeaseKeepAliveResponse(got.ID, got.TTL)
            if isinstance(req, lt.LeaseTimeToLiveRequest):
                ttl = await stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=req.id, keys=req.keys),
                                                 timeout=FORWARD_TIMEOUT)
                return lt.LeaseTimeToLiveResponse(ttl.ID, ttl.TTL, ttl.grantedTTL, tuple(ttl.keys))
            leases = await stub.LeaseLeases(pb.LeaseLeasesRequest(), timeout=FORWARD_TIMEOUT)
            return lt.LeaseLeasesResponse(tuple(s.ID for s in leases.leases))
        except grpc.aio.AioRpcError as e:
            log.warning("forwarding a lease request to the leader at %s failed: %s", leader_url, e.details())
            return EtcdError(errors.NO_LEADER)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
