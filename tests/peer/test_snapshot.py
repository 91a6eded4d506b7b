"""Snapshot transfer: the MsgSnap and its image in chunks, checked end to end."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import grpc
import pytest

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from rusd.server.peer import MD_CLUSTER, MD_FROM, MD_TO
from rusd.server.peer_convert import message_to_pb
from tests.peer.harness import cluster, connected, sha256_file, stop_all


def msg_snap(to: int, frm: int, index: int = 1234) -> Message:
    md = SnapshotMetadata(index=index, term=7, conf_state=ConfState(voters=(1, 2, 3), learners=(4,)))
    return Message(MessageType.SNAP, to=to, from_=frm, term=7, snapshot=Snapshot(data=b"meta", metadata=md))


def image(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(os.urandom(size))
    return path


def test_a_20_mib_snapshot_arrives_intact(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2, chunk_size=1 << 20)
        try:
            await connected(nodes)  # a snapshot to a peer that is being dialled fails fast
            img = image(tmp_path / "image.db", (20 << 20) + 12345)  # not a whole number of chunks
            m = msg_snap(2, 1)
            assert await a.t.send_snapshot(m, img)
            assert len(b.snapshots) == 1
            got, path = b.snapshots[0]
            assert got == m
            assert sha256_file(path) == sha256_file(img)
            assert list((b.dir / "snap").iterdir()) == []  # the callee took the file
            # The ordinary stream is untouched by it.
            a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=7)])
            await asyncio.wait_for(_until(lambda: len(b.received) == 1), 20)
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_an_empty_image_is_sent_too(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2)
        try:
            await connected(nodes)
            assert await a.t.send_snapshot(msg_snap(2, 1), image(tmp_path / "empty", 0))
            assert b.snapshots[0][1].stat().st_size == 0
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_a_failed_install_fails_the_transfer_and_removes_the_file(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = nodes = await cluster(tmp_path, 2)
        try:
            await connected(nodes)
            b.fail_install = True
            before = len(a.unreachable)
            assert not await a.t.send_snapshot(msg_snap(2, 1), image(tmp_path / "img", 3 << 20))
            assert a.unreachable[before:] == [2]
            assert b.snapshots == []
            assert list((b.dir / "snap").iterdir()) == []
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_snapshot_to_a_down_or_unknown_peer_fails(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = await cluster(tmp_path, 2)
        try:
            await b.stop()
            img = image(tmp_path / "img", 1000)
            assert not await a.t.send_snapshot(msg_snap(2, 1), img)
            assert not await a.t.send_snapshot(msg_snap(9, 1), img)
            assert not await a.t.send_snapshot(msg_snap(2, 1), tmp_path / "missing")
            with pytest.raises(ValueError, match="MsgSnap"):
                await a.t.send_snapshot(Message(MessageType.APP, to=2, from_=1), img)
        finally:
            await a.stop()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("chunks", "code"),
    [
        pytest.param(lambda m: [], grpc.StatusCode.INVALID_ARGUMENT, id="empty stream"),
        pytest.param(lambda m: [pb.SnapshotChunk(data=b"x")], grpc.StatusCode.INVALID_ARGUMENT, id="no MsgSnap"),
        pytest.param(
            lambda m: [pb.SnapshotChunk(message=m, image_size=100), pb.SnapshotChunk(data=b"x" * 50)],
            grpc.StatusCode.DATA_LOSS,
            id="cut short",
        ),
        pytest.param(
            lambda m: [
                pb.SnapshotChunk(message=m, image_size=4),
                pb.SnapshotChunk(data=b"abcd"),
                pb.SnapshotChunk(sha256=hashlib.sha256(b"abce").digest()),
            ],
            grpc.StatusCode.DATA_LOSS,
            id="bad checksum",
        ),
        pytest.param(
            lambda m: [
                pb.SnapshotChunk(message=m, image_size=4),
                pb.SnapshotChunk(sha256=hashlib.sha256(b"abcd").digest()),
                pb.SnapshotChunk(data=b"abcd"),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            id="data after checksum",
        ),
    ],
)
def test_damaged_transfers_are_refused_and_leave_no_file(tmp_path: Path, chunks: object, code: grpc.StatusCode) -> None:
    async def run() -> None:
        (b,) = nodes = await cluster(tmp_path, 1)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as ch:
                stub = pb_grpc.RaftStub(ch)
                m = message_to_pb(msg_snap(1, 2))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.SendSnapshot(
                        iter(chunks(m)),  # type: ignore[operator]
                        metadata=((MD_CLUSTER, "c1"), (MD_FROM, "2"), (MD_TO, "1")),
                    )
                assert err.value.code() is code
            assert b.snapshots == []
            assert list((b.dir / "snap").iterdir()) == []
        finally:
            await stop_all(nodes)

    asyncio.run(run())


def test_a_receive_cut_short_by_a_crash_is_cleaned_up_at_start(tmp_path: Path) -> None:
    async def run() -> None:
        snap = tmp_path / "m1" / "snap"
        snap.mkdir(parents=True)
        (snap / "00000000000004d2-x.snap.part").write_bytes(b"half")
        (snap / "keep-me").write_bytes(b"not ours to delete")
        nodes = await cluster(tmp_path, 1)
        await stop_all(nodes)
        assert sorted(p.name for p in snap.iterdir()) == ["keep-me"]

    asyncio.run(run())


async def _until(cond: object) -> None:
    while not cond():  # type: ignore[operator]
        await asyncio.sleep(0.01)
