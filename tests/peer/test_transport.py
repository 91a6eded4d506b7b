"""PeerTransport on loopback: ordered batches, unreachable peers and reconnection,
bounded queues, refusals of foreign calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core.raft.types import Message, MessageType
from rusd.server.peer import CLUSTER_MISMATCH, MD_ACCEPTED, MD_CLUSTER, MD_FROM, MD_TO, PeerTransport
from rusd.server.peer_convert import message_to_pb
from tests.peer.harness import Node, app, cluster, connected, stop_all, url, wait_for
from tests.servers import free_port


def test_two_members_exchange_batches_in_order(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2)
        try:
            await connected(nodes)
            sent_ab = [app(2, 1, i, n=i % 3) for i in range(1, 301)]
            sent_ba = [Message(MessageType.APP_RESP, to=1, from_=2, term=3, index=i) for i in range(1, 301)]
            for lo in range(0, 300, 37):  # batches of different sizes, interleaved with the loop running
                a.t.send(sent_ab[lo : lo + 37])
                b.t.send(sent_ba[lo : lo + 37])
                await asyncio.sleep(0)
            await wait_for(lambda: len(b.received) == 300 and len(a.received) == 300, "all delivered")
            assert b.received == sent_ab
            assert a.received == sent_ba
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_three_members_each_stream_keeps_its_order(tmp_path: Path) -> None:
    async def run() -> None:
        nodes = await cluster(tmp_path, 3)
        try:
            await connected(nodes)
            for i in range(1, 101):
                for n in nodes:  # one send() may address several peers
                    n.t.send([Message(MessageType.HEARTBEAT, to=o.id, from_=n.id, term=i) for o in nodes if o is not n])
                if i % 10 == 0:
                    await asyncio.sleep(0)
            await wait_for(lambda: all(len(n.received) == 200 for n in nodes), "all delivered")
            for n in nodes:
                for o in nodes:
                    if o is not n:
                        assert [m.term for m in n.from_peer(o.id)] == list(range(1, 101))
                assert all(m.to == n.id for m in n.received)
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_down_peer_is_reported_unreachable_and_messages_flow_once_it_starts(tmp_path: Path) -> None:
    async def run() -> None:
        pa, pb_ = free_port(), free_port()
        peers = {1: url(pa), 2: url(pb_)}
        a = await Node(1, pa, peers, tmp_path).start()
        b = Node(2, pb_, peers, tmp_path)
        try:
            beat = 0

            def resend() -> None:
                nonlocal beat
                beat += 1
                a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=beat)])

            resend()
            await wait_for(lambda: 2 in a.unreachable, "peer 2 reported unreachable", tick=resend)
            assert 2 not in a.t.active()
            await b.start()  # the peer comes up on the address a keeps dialling
            await wait_for(lambda: bool(b.received), "a heartbeat after the restart", tick=resend)
            await wait_for(lambda: 2 in a.t.active(), "stream to 2 active")
            # Once up, nothing is lost and order holds.
            seen = len(b.received)
            a.t.send([app(2, 1, i) for i in range(1, 51)])
            await wait_for(lambda: len(b.received) == seen + 50, "50 more")
            assert [m.index for m in b.received[seen:]] == list(range(1, 51))
            assert all(m.type is MessageType.HEARTBEAT for m in b.received[:seen])
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_a_peer_that_restarts_is_reconnected(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2)
        try:
            await connected(nodes)
            assert b.server is not None
            await b.server.stop(None)
            await wait_for(lambda: 2 in a.unreachable, "the broken stream is reported")
            await b.serve()
            n = 0

            def resend() -> None:
                nonlocal n
                n += 1
                a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=n)])

            await wait_for(lambda: bool(b.received), "delivery after the restart", tick=resend)
            commits = [m.commit for m in b.received]
            assert commits == sorted(commits)
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_full_queue_drops_and_reports_unreachable(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2, queue_size=8)
        try:
            await connected(nodes)
            before = len(a.unreachable)  # failed first dials while b was starting
            # send() is synchronous: the writer cannot drain between these appends.
            a.t.send([app(2, 1, i) for i in range(1, 21)])
            assert a.unreachable[before:] == [2]
            await wait_for(lambda: len(b.received) == 8, "the queued 8")
            assert [m.index for m in b.received] == list(range(1, 9))
            a.t.send([app(2, 1, 9)])  # drained: room again
            await wait_for(lambda: len(b.received) == 9, "one more")
            assert a.unreachable[before:] == [2]
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_large_messages_are_split_into_several_writes(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2, batch_bytes=1 << 20)
        try:
            await connected(nodes)
            big = [app(2, 1, i, payload=bytes([i]) * (700 << 10)) for i in range(1, 9)]  # 5.6 MB in all
            a.t.send(big)
            await wait_for(lambda: len(b.received) == 8, "all big messages")
            assert b.received == big
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_update_peers_adds_and_removes(tmp_path: Path) -> None:
    async def run() -> None:
        p1, p2, p3 = free_port(), free_port(), free_port()
        a = await Node(1, p1, {1: url(p1), 2: url(p2)}, tmp_path).start()
        b = await Node(2, p2, {1: url(p1), 2: url(p2)}, tmp_path).start()
        c = await Node(3, p3, {1: url(p1), 3: url(p3)}, tmp_path).start()
        try:
            a.t.update_peers({1: url(p1), 2: url(p2), 3: url(p3)})
            assert a.t.peers() == {2: url(p2), 3: url(p3)}
            await wait_for(lambda: a.t.active() == {2, 3}, "streams to 2 and 3")
            a.t.send([Message(MessageType.HEARTBEAT, to=3, from_=1, term=1)])
            await wait_for(lambda: len(c.received) == 1, "3 got it")
            a.t.update_peers({1: url(p1), 3: url(p3)})
            assert a.t.peers() == {3: url(p3)}
            a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=2)])  # 2 is not a peer any more
            a.t.send([Message(MessageType.HEARTBEAT, to=3, from_=1, term=2)])
            await wait_for(lambda: len(c.received) == 2, "3 got the second")
            assert b.received == []
        finally:
            await stop_all([a, b, c])

    asyncio.run(run())


def test_cluster_id_mismatch_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        pa, pb_ = free_port(), free_port()
        peers = {1: url(pa), 2: url(pb_)}
        a = await Node(1, pa, peers, tmp_path, cluster_id=0xAAAA).start()
        b = await Node(2, pb_, peers, tmp_path, cluster_id=0xBBBB).start()
        try:
            def resend() -> None:
                a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])

            resend()
            await wait_for(lambda: a.unreachable.count(2) >= 3, "refusals reported", tick=resend)
            assert b.received == []
            assert a.t.active() == set()
            # The refusal itself, as a raw client sees it.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{pb_}") as ch:
                call = pb_grpc.RaftStub(ch).Send(
                    metadata=((MD_CLUSTER, "aaaa"), (MD_FROM, "1"), (MD_TO, "2"))
                )
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert err.value.details() == CLUSTER_MISMATCH
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_calls_for_another_member_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        (b,) = nodes = await cluster(tmp_path, 1)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as ch:
                stub = pb_grpc.RaftStub(ch)
                # Addressed (metadata) to member 7, which b is not.
                call = stub.Send(metadata=((MD_CLUSTER, "c1"), (MD_FROM, "2"), (MD_TO, "7")))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert "member ID mismatch" in (err.value.details() or "")
                # Right metadata, but a message inside is for member 7.
                call = stub.Send(metadata=((MD_CLUSTER, "c1"), (MD_FROM, "2"), (MD_TO, "1")))
                ok = message_to_pb(Message(MessageType.HEARTBEAT, to=1, from_=2, term=1))
                bad = message_to_pb(Message(MessageType.HEARTBEAT, to=7, from_=2, term=1))
                await call.write(pb.MessageBatch(messages=[ok]))
                await call.write(pb.MessageBatch(messages=[ok, bad]))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                # A message that only a member's own driver may step (MsgHup: start an election).
                call = stub.Send(metadata=((MD_CLUSTER, "c1"), (MD_FROM, "2"), (MD_TO, "1")))
                await call.write(pb.MessageBatch(messages=[message_to_pb(Message(MessageType.HUP, to=1, from_=2))]))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                # A message type the core does not know.
                call = stub.Send(metadata=((MD_CLUSTER, "c1"), (MD_FROM, "2"), (MD_TO, "1")))
                await call.write(pb.MessageBatch(messages=[pb.Message(type=99, to=1)]))  # type: ignore[arg-type]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            # Only the first, whole batch was handed on.
            assert [m.to for m in b.received] == [1]
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    async def run() -> None:
        with pytest.raises(ValueError, match="want http"):
            PeerTransport(1, 1, {2: "127.0.0.1:2380"}, list.__len__, _nothing, _ignore, snapshot_dir=tmp_path)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="credentials"):
            PeerTransport(1, 1, {2: "https://127.0.0.1:2380"}, _ignore, _nothing, _ignore, snapshot_dir=tmp_path)
        t = PeerTransport(1, 1, {2: "http://127.0.0.1:1"}, _ignore, _nothing, _ignore, snapshot_dir=tmp_path)
        try:
            with pytest.raises(ValueError, match="send_snapshot"):
                t.send([Message(MessageType.SNAP, to=2, from_=1)])
        finally:
            await t.close()
        with pytest.raises(RuntimeError, match="closed"):
            t.send([])

    asyncio.run(run())


def _ignore(_: object) -> None:
    return None


async def _nothing(_m: Message, _p: Path) -> None:
    return None


class _Stalled(pb_grpc.RaftServicer):
    """A peer that accepts the stream and then never reads (as a SIGSTOPped process)."""

    async def Send(self, request_iterator: object, context: grpc.aio.ServicerContext) -> pb.SendResponse:  # type: ignore[type-arg]
        await context.send_initial_metadata(((MD_ACCEPTED, "1"),))
        await asyncio.Event().wait()
        return pb.SendResponse()


def test_a_peer_that_stops_reading_fills_the_queue_and_is_reported(tmp_path: Path) -> None:
    async def run() -> None:
        port = free_port()
        server = grpc.aio.server()
        pb_grpc.add_RaftServicer_to_server(_Stalled(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        (a,) = nodes = await cluster(tmp_path, 1, queue_size=4)
        try:
            a.t.update_peers({2: url(port)})
            await wait_for(lambda: 2 in a.t.active(), "stream to the stalled peer accepted")
            before = len(a.unreachable)

            def resend() -> None:  # 1 MiB messages: the HTTP/2 window fills, then the queue
                a.t.send([app(2, 1, 1, payload=b"z" * (1 << 20))])

            await wait_for(lambda: len(a.unreachable) > before, "the stalled peer reported", tick=resend)
            assert a.unreachable[before:] == [2] * (len(a.unreachable) - before)
        finally:
            await stop_all(nodes)
            await server.stop(None)

    asyncio.run(run())
