"""Leader-only lease requests (KeepAlive, TimeToLive) taken by a follower go to the
leader over the peer transport, as etcd's followers forward them to the leader's peer
URLs (POST /leases, /leases/internal over its peer round tripper): each of the leader's
peer URLs in order until one answers, with the peer TLS credentials when the URL is
https, over the channel the transport already holds to that member. The leader answers
with its own lessor (`peer_services.LeaseServicer`)."""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

import grpc

from rusd.api.rusdraftpb import raft_pb2 as ppb
from rusd.api.rusdraftpb import raft_pb2_grpc as ppb_grpc
from rusd.core import errors
from rusd.core.cluster import MemberInfo
from rusd.core.errors import EtcdError
from rusd.core.lease import types as lt
from rusd.core.node import Response, Result
from rusd.server.peer import Metadata, PeerCallError, PeerTransport

log = logging.getLogger("rusd.forward")

# A forwarded request waits no longer than etcd's lease forwarding does for its answer.
FORWARD_TIMEOUT = 5.0


# What a follower forwards (any member lists leases itself).
Forwarded: TypeAlias = lt.LeaseKeepAliveRequest | lt.LeaseTimeToLiveRequest


async def _ask(req: Forwarded, channel: grpc.aio.Channel, metadata: Metadata) -> Response:
    stub = ppb_grpc.LeaseStub(channel)
    got: Any
    if isinstance(req, lt.LeaseKeepAliveRequest):
        got = await stub.Renew(ppb.LeaseRenewRequest(id=req.id), metadata=metadata, timeout=FORWARD_TIMEOUT)
        return lt.LeaseKeepAliveResponse(got.id, got.ttl)
    got = await stub.TimeToLive(
        ppb.LeaseTimeToLiveRequest(id=req.id, keys=req.keys), metadata=metadata, timeout=FORWARD_TIMEOUT
    )
    return lt.LeaseTimeToLiveResponse(got.id, got.ttl, got.granted_ttl, tuple(got.keys))


async def forward(req: Forwarded, leader: MemberInfo | None, transport: PeerTransport | None) -> Result:
    """Ask the leader; "no leader" when none is known, it cannot be reached over any of its
    peer URLs, or it no longer leads (the client retries, as with etcd's timeouts)."""
    if leader is None or transport is None:
        return EtcdError(errors.NO_LEADER)
    try:
        return await transport.call(leader.id, leader.peer_urls, lambda ch, md: _ask(req, ch, md))
    except PeerCallError as e:
        log.warning("forwarding a lease request to the leader %x failed: %s", leader.id, e.details)
        return EtcdError(errors.NO_LEADER)
