"""Joining an existing cluster (--initial-cluster-state=existing), as etcd does it: ask the
members named in --initial-cluster for the cluster's id and member list over the peer
listener, then find this member's id (chosen by the MemberAdd that added it) by its peer
URLs. Also serves that question to members that join us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import grpc

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core.cluster import MemberInfo
from rusd.server.config import ConfigError
from rusd.server.peer import peer_address, peer_target
from rusd.server.tls import CertificatePinner

log = logging.getLogger("rusd.join")


class MembershipServicer(pb_grpc.MembershipServicer):
    """Answers the cluster id and the member list (served on the peer listener)."""

    def __init__(self, cluster_id: int, members: Callable[[], tuple[MemberInfo, ...]]) -> None:
        self.cluster_id = cluster_id
        self.members = members

    async def Members(self, request: pb.MembersRequest, context: Any) -> pb.MembersResponse:
        return pb.MembersResponse(
            cluster_id=self.cluster_id,
            members=[
                pb.Member(id=m.id, name=m.name, peer_urls=list(m.peer_urls), client_urls=list(m.client_urls),
                          is_learner=m.is_learner)
                for m in self.members()
            ],
        )


async def _channel(
    url: str, timeout: float, credentials: grpc.ChannelCredentials | None, pinner: CertificatePinner | None
) -> grpc.aio.Channel:
    """As the peer transport dials: TLS for https URLs, with the peer credentials, or,
    when this member's peer TLS is self-signed, trusting the certificate the member
    presents (etcd does not verify it); raises OSError if that cannot be fetched."""
    target = peer_target(url, credentials is not None or pinner is not None)
    if urlsplit(url).scheme == "https":
        if pinner is not None:
            pinned = await pinner.pin(*peer_address(url), timeout)
            return grpc.aio.secure_channel(target, pinned.credentials, options=list(pinned.options))
        if credentials is not None:
            return grpc.aio.secure_channel(target, credentials)
    return grpc.aio.insecure_channel(target)


async def _ask(
    url: str, timeout: float, credentials: grpc.ChannelCredentials | None, pinner: CertificatePinner | None
) -> pb.MembersResponse | None:
    try:
        async with await _channel(url, timeout, credentials, pinner) as channel:
            got: pb.MembersResponse = await pb_grpc.MembershipStub(channel).Members(
                pb.MembersRequest(), timeout=timeout
            )
            return got
    except ValueError as e:  # an https URL without peer TLS
        log.warning("could not get the cluster's members from %s: %s", url, e)
    except grpc.aio.AioRpcError as e:
        log.warning("could not get the cluster's members from %s: %s", url, e.details())
    except OSError as e:  # a self-signed member's certificate could not be fetched
        log.warning("could not get the cluster's members from %s: %s", url, str(e) or type(e).__name__)
    return None


async def fetch_cluster(
    name: str,
    initial_cluster: dict[str, tuple[str, ...]],
    own_peer_urls: tuple[str, ...],
    timeout: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    pinner: CertificatePinner | None = None,
) -> tuple[int, int, tuple[MemberInfo, ...]]:
    """(cluster id, this member's id, the members), from the first other member that answers
    (over https with the peer `credentials`, or the `pinner` with self-signed peer TLS, as
    the peer transport).

    Refused like etcd: no member answered ("could not retrieve cluster information from
    the given URLs"), or the answer does not list this member's peer URLs (it was not
    added with MemberAdd), or the member counts differ."""
    urls = [u for n, us in sorted(initial_cluster.items()) if n != name for u in us]
    for url in urls:
        got = await _ask(url, timeout, credentials, pinner)
        if got is None:
            continue
        if len(got.members) != len(initial_cluster):
            raise ConfigError(
                f"error validating peerURLs {{ClusterID:{got.cluster_id:x} Members:[{len(got.members)}]}}: "
                "member count is unequal"
            )
        mine = [m for m in got.members if sorted(m.peer_urls) == sorted(own_peer_urls)]
        if not mine:
            raise ConfigError(
                f"error validating peerURLs: member with peer URLs {','.join(own_peer_urls)} "
                "is not in the cluster (add it with `member add` first)"
            )
        members = tuple(
            MemberInfo(m.id, m.name, tuple(m.peer_urls), tuple(m.client_urls), m.is_learner) for m in got.members
        )
        return got.cluster_id, mine[0].id, members
    raise ConfigError("cannot fetch cluster info from peer urls: could not retrieve cluster information "
                      "from the given URLs")

