"""The unary peer calls on loopback: lease forwarding to the leader and the corruption
checks' HashKV go over the peer transport (every peer URL in order, the cluster id
checked), and the answers reach the caller unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core import errors
from rusd.core.cluster import MemberInfo
from rusd.core.errors import EtcdError
from rusd.core.lease import types as lt
from rusd.core.mvcc import hashing, store
from rusd.core.mvcc.backend import KVReader
from rusd.core.mvcc.types import PutRequest
from rusd.core.node import LocalRequest, NotFoundLeases, Result
from rusd.server import peer_services
from rusd.server.corrupt import diverged_peers
from rusd.server.forward import forward
from rusd.server.peer import CLUSTER_MISMATCH, MD_CLUSTER, MD_FROM, MD_TO, PEER_SERVER_OPTIONS
from rusd.storage.memory import MemoryBackend
from tests.peer.harness import Node, url
from tests.servers import free_port

CLUSTER = 0xC1
FOLLOWER, LEADER = 1, 2


class Lessor:
    """The leader's lessor as the Lease service sees it: one lease 0x10 (TTL 30, key k)."""

    def __init__(self) -> None:
        self.leading = True
        self.asked: list[LocalRequest] = []

    async def answer(self, req: LocalRequest) -> Result:
        self.asked.append(req)
        if not self.leading:
            return EtcdError(errors.NOT_LEADER)
        if isinstance(req, lt.LeaseKeepAliveRequest):
            return lt.LeaseKeepAliveResponse(req.id, 30 if req.id == 0x10 else 0)
        if isinstance(req, lt.LeaseTimeToLiveRequest):
            if req.id != 0x10:
                return lt.LeaseTimeToLiveResponse(req.id, -1)
            return lt.LeaseTimeToLiveResponse(req.id, 25, 30, (b"k",) if req.keys else ())
        raise AssertionError(f"{req} is never forwarded: any member lists leases itself")


def backend(*values: bytes) -> MemoryBackend:
    """A store with key k put once per value."""
    b = MemoryBackend()
    for v in values:
        store.put(b, NotFoundLeases(), PutRequest(b"k", v))
    return b


async def start_member(
    node: Node, lessor: Lessor | None = None, view: KVReader | None = None
) -> Node:
    """A member's transport and its peer server: Raft plus the Lease and Maintenance services."""
    await node.start(serve=False)
    node.server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    node.t.add_servicer(node.server)
    answer = (lessor or Lessor()).answer
    shown = view if view is not None else backend()

    async def snapshot() -> KVReader:
        return shown

    peer_services.register(node.server, node.cluster_id, node.id, answer, snapshot)
    node.server.add_insecure_port(f"127.0.0.1:{node.port}")
    await node.server.start()
    return node


def run_pair(
    tmp: Path,
    body: Callable[[Node, Node, MemberInfo], Awaitable[None]],
    lessor: Lessor | None = None,
    view: KVReader | None = None,
    follower_cluster: int = CLUSTER,
    leader_urls: Callable[[str], tuple[str, ...]] = lambda u: (u,),
    connect_timeout: float = 2.0,
) -> None:
    """A follower and a leader member on loopback; `body(follower, leader, leader_info)`."""

    async def run() -> None:
        pf, pl = free_port(), free_port()
        peers = {FOLLOWER: url(pf), LEADER: url(pl)}
        follower = await start_member(
            Node(FOLLOWER, pf, peers, tmp, cluster_id=follower_cluster, connect_timeout=connect_timeout)
        )
        leader = await start_member(Node(LEADER, pl, peers, tmp, cluster_id=CLUSTER), lessor, view)
        info = MemberInfo(LEADER, "m2", leader_urls(url(pl)), ())
        try:
            await body(follower, leader, info)
        finally:
            await follower.stop()
            await leader.stop()

    asyncio.run(run())


def test_lease_requests_are_answered_by_the_leader_unchanged(tmp_path: Path) -> None:
    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        t = follower.t
        assert await forward(lt.LeaseKeepAliveRequest(0x10), info, t) == lt.LeaseKeepAliveResponse(0x10, 30)
        # an unknown lease is an answer, not an error: TTL 0 (keepalive), -1 (time to live)
        assert await forward(lt.LeaseKeepAliveRequest(0x99), info, t) == lt.LeaseKeepAliveResponse(0x99, 0)
        assert await forward(lt.LeaseTimeToLiveRequest(0x99), info, t) == lt.LeaseTimeToLiveResponse(0x99, -1)
        got = await forward(lt.LeaseTimeToLiveRequest(0x10, keys=True), info, t)
        assert got == lt.LeaseTimeToLiveResponse(0x10, 25, 30, (b"k",))

    run_pair(tmp_path, body)


def test_a_member_that_no_longer_leads_refuses_and_the_follower_answers_no_leader(tmp_path: Path) -> None:
    lessor = Lessor()
    lessor.leading = False

    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        assert await forward(lt.LeaseKeepAliveRequest(0x10), info, follower.t) == EtcdError(errors.NO_LEADER)
        assert lessor.asked == [lt.LeaseKeepAliveRequest(0x10)]  # asked once: a refusal is not retried
        async with grpc.aio.insecure_channel(f"127.0.0.1:{leader.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.LeaseStub(ch).Renew(pb.LeaseRenewRequest(id=0x10),
                                                  metadata=follower.t.call_metadata(LEADER))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == peer_services.NOT_PRIMARY
        # nobody known to lead, or no transport: "no leader" without asking anyone
        assert await forward(lt.LeaseTimeToLiveRequest(0x10), None, follower.t) == EtcdError(errors.NO_LEADER)
        assert await forward(lt.LeaseTimeToLiveRequest(0x10), info, None) == EtcdError(errors.NO_LEADER)
        assert len(lessor.asked) == 2

    run_pair(tmp_path, body, lessor)


def test_every_peer_url_of_the_leader_is_tried_in_order(tmp_path: Path) -> None:
    dead = url(free_port())  # nothing listens there
    https = "https://127.0.0.1:1"  # unusable without peer TLS

    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        assert info.peer_urls[:2] == (https, dead)
        assert await forward(lt.LeaseKeepAliveRequest(0x10), info, follower.t) == lt.LeaseKeepAliveResponse(0x10, 30)
        unreachable = MemberInfo(LEADER, "m2", (https, dead), ())
        assert await forward(lt.LeaseKeepAliveRequest(0x10), unreachable, follower.t) == EtcdError(errors.NO_LEADER)

    run_pair(tmp_path, body, leader_urls=lambda u: (https, dead, u), connect_timeout=0.5)


def test_unary_calls_share_the_raft_streams_channel_and_keep_one_per_other_url(tmp_path: Path) -> None:
    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        t = follower.t
        stream_url = t.peers()[LEADER]
        other = url(free_port())
        assert await t.channel(LEADER, stream_url) is await t.channel(LEADER, stream_url)
        assert await t.channel(LEADER, other) is await t.channel(LEADER, other)
        assert await t.channel(LEADER, other) is not await t.channel(LEADER, stream_url)
        t.update_peers({FOLLOWER: t.peers()[LEADER]})  # the leader left: its channels go
        await asyncio.sleep(0)
        assert t.peers() == {}
        fresh = await t.channel(LEADER, other)
        assert fresh is await t.channel(LEADER, other)

    run_pair(tmp_path, body)


def test_peer_calls_from_another_cluster_are_refused(tmp_path: Path) -> None:
    lessor = Lessor()

    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        # through the transport of a member of another cluster: refused, so "no leader",
        # and the corruption check skips the peer
        assert await forward(lt.LeaseKeepAliveRequest(0x10), info, follower.t) == EtcdError(errors.NO_LEADER)
        mine = backend(b"1")
        me = MemberInfo(FOLLOWER, "m1", (url(follower.port),), ())
        assert await diverged_peers(FOLLOWER, (me, info), mine, follower.t) == []
        assert lessor.asked == []
        # as a raw client sees it, every service, and a call meant for another member
        async with grpc.aio.insecure_channel(f"127.0.0.1:{leader.port}") as ch:
            foreign = ((MD_CLUSTER, "aaaa"), (MD_FROM, "1"), (MD_TO, "2"))
            calls = [
                pb_grpc.LeaseStub(ch).Renew(pb.LeaseRenewRequest(id=0x10), metadata=foreign),
                pb_grpc.LeaseStub(ch).TimeToLive(pb.LeaseTimeToLiveRequest(id=0x10), metadata=foreign),
                pb_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(), metadata=foreign),
                pb_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest()),  # no metadata at all
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert refused.value.details() == CLUSTER_MISMATCH
            elsewhere = ((MD_CLUSTER, f"{CLUSTER:x}"), (MD_FROM, "1"), (MD_TO, "7"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.LeaseStub(ch).Renew(pb.LeaseRenewRequest(id=0x10), metadata=elsewhere)
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "member ID mismatch" in (refused.value.details() or "")
        assert lessor.asked == []

    run_pair(tmp_path, body, lessor, follower_cluster=0xAAAA)


@pytest.mark.parametrize(
    ("peer_values", "diverged"),
    [
        ((b"1", b"2"), []),  # same history
        ((b"1", b"x"), [LEADER]),  # same revisions, other data
        ((b"1",), []),  # behind: no hash at our revision (a future revision there), skipped
    ],
)
def test_corruption_check_fetches_hashes_over_the_peer_transport(
    tmp_path: Path, peer_values: tuple[bytes, ...], diverged: list[int]
) -> None:
    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        me = MemberInfo(FOLLOWER, "m1", (url(follower.port),), ())
        dead = MemberInfo(3, "m3", (url(free_port()),), ())  # down: skipped
        assert await diverged_peers(FOLLOWER, (me, info, dead), backend(b"1", b"2"), follower.t) == diverged

    run_pair(tmp_path, body, view=backend(*peer_values), connect_timeout=0.5)


def test_hashkv_answers_like_the_client_api(tmp_path: Path) -> None:
    view = backend(b"1", b"2", b"3")  # revisions 2, 3, 4
    store.compact(view, 2)

    async def body(follower: Node, leader: Node, info: MemberInfo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{leader.port}") as ch:
            stub = pb_grpc.MaintenanceStub(ch)
            md = follower.t.call_metadata(LEADER)
            got = await stub.HashKV(pb.HashKVRequest(revision=3), metadata=md)
            assert (got.hash, got.compact_revision, got.hash_revision, got.revision) == (*hashing.hash_kv(view, 3), 4)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.HashKV(pb.HashKVRequest(revision=2), metadata=md)
            assert refused.value.code() is grpc.StatusCode.OUT_OF_RANGE
            assert refused.value.details() == errors.COMPACTED.message

    run_pair(tmp_path, body, view=view)
