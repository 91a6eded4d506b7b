"""Peer transports whose peer TLS is self-signed (--peer-auto-tls) on https loopback URLs.

etcd's peer client does not verify a self-signed member's peers at all; grpcio cannot skip
verification, so each channel trusts exactly the certificate its peer presents, fetched
again whenever the channel must connect anew. Streams, unary calls and snapshots all
work; a peer restarted with a new certificate is dialled with the new one; a peer that
is down is unreachable as over plain http; and members with CA-issued certificates keep
verifying, so they cannot talk to self-signed ones, as in etcd.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.api.rusdraftpb.raft_pb2_grpc import add_MembershipServicer_to_server
from rusd.core.cluster import MemberInfo
from rusd.core.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from rusd.server import tls
from rusd.server.join import MembershipServicer
from rusd.server.peer import PEER_SERVER_OPTIONS, Metadata, PeerCallError
from rusd.server.tls_settings import TLSInfo
from tests.certs import PKI, channel_credentials, make_pki
from tests.peer.harness import Node, connected, wait_for
from tests.servers import free_port

CLUSTER = 0xC1
_DATA_DIRS = itertools.count()


def https(port: int) -> str:
    return f"https://127.0.0.1:{port}"


def auto_tls(directory: Path) -> tls.TLSMaterial:
    """A member's --peer-auto-tls material (made as tls.prepare makes it)."""
    return tls.load(tls.self_cert(str(directory), ["127.0.0.1"], client_auth=True))


def auto_node(member_id: int, port: int, peers: dict[int, str], tmp: Path, **kwargs: object) -> Node:
    """A member with self-signed peer TLS: it serves its own certificate and pins its peers'."""
    material = auto_tls(tmp / f"fixtures-{next(_DATA_DIRS)}")  # a new data dir: a new certificate
    return Node(member_id, port, peers, tmp, cluster_id=CLUSTER, server_credentials=material.server_credentials(),
                pinner=tls.CertificatePinner(material), **kwargs)


async def serve(node: Node) -> Node:
    """Start the node's transport and its peer server: Raft plus Membership (a unary call
    whose answer names the member that gave it)."""
    await node.start(serve=False)
    node.server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    node.t.add_servicer(node.server)
    me = (MemberInfo(node.id, f"m{node.id}", (), ()),)
    add_MembershipServicer_to_server(MembershipServicer(node.cluster_id, lambda: me), node.server)
    assert node.server_credentials is not None
    node.server.add_secure_port(f"127.0.0.1:{node.port}", node.server_credentials)
    await node.server.start()
    return node


async def who(channel: grpc.aio.Channel, metadata: Metadata) -> int:
    """The member id that answers a unary peer call."""
    got: pb.MembersResponse = await pb_grpc.MembershipStub(channel).Members(
        pb.MembersRequest(), metadata=metadata, timeout=5
    )
    return got.members[0].id


def msg_snap(to: int, frm: int) -> Message:
    md = SnapshotMetadata(index=99, term=2, conf_state=ConfState(voters=(1, 2, 3)))
    return Message(MessageType.SNAP, to=to, from_=frm, term=2, snapshot=Snapshot(data=b"meta", metadata=md))


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def test_self_signed_members_exchange_messages_calls_and_snapshots(tmp_path: Path) -> None:
    async def body() -> None:
        ports = [free_port() for _ in range(3)]
        peers = {i + 1: https(p) for i, p in enumerate(ports)}
        nodes = [await serve(auto_node(i + 1, ports[i], peers, tmp_path)) for i in range(3)]
        a, b, c = nodes
        try:
            await connected(nodes)
            a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=7),
                      Message(MessageType.HEARTBEAT, to=3, from_=1, term=1, commit=8)])
            c.t.send([Message(MessageType.HEARTBEAT, to=1, from_=3, term=1, commit=9)])
            await wait_for(lambda: bool(b.received and c.received and a.received), "delivery")
            assert [m.commit for m in b.received] == [7]
            assert [m.commit for m in c.received] == [8]
            assert [m.commit for m in a.received] == [9]
            # unary calls: over the stream's own channel, and over another URL of the member
            assert await a.t.call(2, [peers[2]], who) == 2
            assert await b.t.call(3, [https(free_port()), peers[3]], who) == 3
            # snapshots
            image = tmp_path / "image"
            image.write_bytes(b"x" * 100_000)
            assert await a.t.send_snapshot(msg_snap(3, 1), image)
            assert [m for m, _ in c.snapshots] == [msg_snap(3, 1)]
        finally:
            for n in nodes:
                await n.stop()

    run(body)


def test_a_peer_that_is_down_then_returns_with_a_new_certificate(tmp_path: Path) -> None:
    async def body() -> None:
        pa, pb_ = free_port(), free_port()
        peers = {1: https(pa), 2: https(pb_)}
        a = await serve(auto_node(1, pa, peers, tmp_path))
        b = await serve(auto_node(2, pb_, peers, tmp_path))
        b2: Node | None = None
        try:
            await connected([a, b])
            assert await a.t.call(2, [peers[2]], who) == 2
            await b.stop()
            # down: the failed fetch is a failed connection, reported like any other
            before = len(a.unreachable)
            await wait_for(lambda: a.unreachable.count(2) > before, "the stream to the stopped peer is reported")
            assert 2 not in a.t.active()
            with pytest.raises(PeerCallError) as down:
                await a.t.call(2, [peers[2]], who)
            assert down.value.code is grpc.StatusCode.UNAVAILABLE
            image = tmp_path / "image"
            image.write_bytes(b"y" * 1000)
            assert not await a.t.send_snapshot(msg_snap(2, 1), image)
            # back on the same URL with a new data dir, so a new self-signed certificate
            b2 = await serve(auto_node(2, pb_, peers, tmp_path))
            n = 0

            def resend() -> None:
                nonlocal n
                n += 1
                a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=n)])

            await wait_for(lambda: bool(b2.received), "delivery to the restarted peer", tick=resend)
            assert await a.t.call(2, [peers[2]], who) == 2
            assert await a.t.send_snapshot(msg_snap(2, 1), image)
            assert len(b2.snapshots) == 1
            await wait_for(lambda: 1 in b2.t.active(), "the restarted peer's stream back")
        finally:
            await a.stop()
            await b.stop()
            if b2 is not None:
                await b2.stop()

    run(body)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("ca_member_requires_client_certs", [True, False])
def test_a_self_signed_member_and_one_with_ca_issued_certificates(
    tmp_path: Path, pki: PKI, ca_member_requires_client_certs: bool
) -> None:
    """As in etcd: the member with real certificates verifies its peers as always, so its
    stream to the self-signed member never comes up; the self-signed member trusts any
    certificate, so its stream comes up unless the other requires a CA-issued client
    certificate (a trusted CA on its listener), which its own is not."""

    async def body() -> None:
        pa, pb_ = free_port(), free_port()
        peers = {1: https(pa), 2: https(pb_)}
        a = await serve(auto_node(1, pa, peers, tmp_path))
        ca = str(pki.ca.path) if ca_member_requires_client_certs else ""
        real = tls.load(TLSInfo(cert_file=str(pki.server.cert), key_file=str(pki.server.key), trusted_ca_file=ca))
        b = await serve(Node(2, pb_, peers, tmp_path, cluster_id=CLUSTER, server_credentials=real.server_credentials(),
                             credentials=channel_credentials(pki.ca.path, pki.server)))
        try:
            await wait_for(lambda: b.unreachable.count(1) >= 3, "the CA member's stream keeps failing")
            assert 1 not in b.t.active()
            if ca_member_requires_client_certs:
                await wait_for(lambda: a.unreachable.count(2) >= 3, "the self-signed member's stream keeps failing")
                assert 2 not in a.t.active()
            else:
                await wait_for(lambda: 2 in a.t.active(), "the self-signed member's stream is up")
                assert await a.t.call(2, [peers[2]], who) == 2
        finally:
            await a.stop()
            await b.stop()

    run(body)


def test_a_peer_that_accepts_but_never_answers_is_unreachable(tmp_path: Path) -> None:
    """A stopped process: the kernel accepts the connection, no TLS handshake follows.
    The fetch gives up after connect_timeout, as a connection attempt would."""

    async def body() -> None:
        held: list[asyncio.StreamWriter] = []

        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # say nothing, keep it open

        stalled = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = stalled.sockets[0].getsockname()[1]
        pa = free_port()
        a = await serve(auto_node(1, pa, {1: https(pa), 2: https(port)}, tmp_path, connect_timeout=0.3))
        try:
            await wait_for(lambda: a.unreachable.count(2) >= 2, "the stalled peer is reported, again")
            assert 2 not in a.t.active()
            with pytest.raises(PeerCallError) as err:
                await a.t.call(2, [https(port)], who)
            assert err.value.code is grpc.StatusCode.UNAVAILABLE
            assert err.value.details == f"{https(port)}: no TLS handshake in 0.3s"
        finally:
            await a.stop()
            for w in held:
                w.close()
            stalled.close()
            await stalled.wait_closed()

    run(body)
