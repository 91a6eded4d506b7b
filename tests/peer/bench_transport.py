"""Benchmark of the peer transport on loopback (not a test: timing lives here).

    python -m tests.peer.bench_transport [--seconds 5] [--snapshot-mib 100]

Member 2 runs in a child process (its own GIL, as a real peer would). Member 1 sends
MsgApps in send() calls of 64 (each with one, then with 64 100-byte entries), keeping at most
`--window` unacknowledged as Raft's inflight limit would; member 2 answers every
received batch with one MsgAppResp for the last index. Then one snapshot image of
`--snapshot-mib` MiB goes from 1 to 2 (received, checksummed and fsynced).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from rusd.core.raft.types import Entry, Message, MessageType, Snapshot, SnapshotMetadata
from rusd.server.peer import PEER_SERVER_OPTIONS, PeerTransport
from tests.servers import free_port

CLUSTER = 0xBE7C


async def follower(port: int, leader_port: int, workdir: Path) -> None:
    """Member 2: acknowledge what arrives, drop received images, until killed."""
    transport: PeerTransport | None = None

    def on_messages(ms: list[Message]) -> None:
        assert transport is not None
        transport.send([Message(MessageType.APP_RESP, to=1, from_=2, term=1, index=ms[-1].index)])

    async def on_snapshot(m: Message, path: Path) -> None:
        path.unlink()

    transport = PeerTransport(
        2, CLUSTER, {1: f"http://127.0.0.1:{leader_port}"}, on_messages, on_snapshot, lambda _p: None,
        snapshot_dir=workdir / "snap2",
    )
    server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    transport.add_servicer(server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.Event().wait()


async def messages_phase(
    t: PeerTransport, args: argparse.Namespace, per_msg: int, acked: Callable[[], int], got_ack: asyncio.Event
) -> int:
    """Send MsgApps (per_msg 100-byte entries each) for args.seconds; return the last index."""
    payload = b"x" * 100
    base = index = acked()
    start = time.perf_counter()
    end = start + args.seconds
    while time.perf_counter() < end:
        while index - acked() < args.window:
            t.send([
                Message(MessageType.APP, to=2, from_=1, term=1, log_term=1, index=i, commit=i,
                        entries=tuple(Entry(i * per_msg + j, 1, payload) for j in range(per_msg)))
                for i in range(index + 1, index + 65)
            ])
            index += 64
        got_ack.clear()
        await got_ack.wait()
    while acked() < index:
        got_ack.clear()
        await got_ack.wait()
    elapsed = time.perf_counter() - start
    n = index - base
    print(f"MsgApp with {per_msg} x 100 B entries, send() calls of 64, window {args.window}: "
          f"{n / elapsed:,.0f} messages/s, {n * per_msg / elapsed:,.0f} entries/s, "
          f"{n * per_msg * 100 / elapsed / 1e6:.1f} MB/s of entry data ({n} messages in {elapsed:.2f} s)")
    return index


async def leader(args: argparse.Namespace, workdir: Path) -> None:
    port, fport = free_port(), free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.peer.bench_transport", "--follower", str(fport), str(port), str(workdir)
    )
    acked = 0
    got_ack = asyncio.Event()
    unreachable = 0

    def on_messages(ms: list[Message]) -> None:
        nonlocal acked
        acked = max(acked, *(m.index for m in ms))
        got_ack.set()

    def on_unreachable(_p: int) -> None:
        nonlocal unreachable
        unreachable += 1

    async def no_snapshot(m: Message, path: Path) -> None:
        raise RuntimeError("unexpected")

    t = PeerTransport(
        1, CLUSTER, {2: f"http://127.0.0.1:{fport}"}, on_messages, no_snapshot, on_unreachable,
        snapshot_dir=workdir / "snap1",
    )
    server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    t.add_servicer(server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        while 2 not in t.active():
            await asyncio.sleep(0.05)
        for per_msg in (1, 64):
            unreachable = 0
            index = await messages_phase(t, args, per_msg, lambda: acked, got_ack)
            print(f"  ({unreachable} unreachable reports)")
        # -- snapshot -------------------------------------------------------------------
        image = workdir / "image"
        with image.open("wb") as f:
            for _ in range(args.snapshot_mib):
                f.write(os.urandom(1 << 20))
        m = Message(MessageType.SNAP, to=2, from_=1, term=1,
                    snapshot=Snapshot(metadata=SnapshotMetadata(index=index, term=1)))
        start = time.perf_counter()
        ok = await t.send_snapshot(m, image)
        elapsed = time.perf_counter() - start
        print(f"snapshot {args.snapshot_mib} MiB: {'ok' if ok else 'FAILED'} in {elapsed:.2f} s, "
              f"{args.snapshot_mib * 1.048576 / elapsed:.0f} MB/s (incl. checksum both sides and fsync)")
    finally:
        await t.close()
        await server.stop(None)
        child.kill()  # our own child, by its handle
        await child.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--snapshot-mib", type=int, default=100)
    p.add_argument("--follower", nargs=3, metavar=("PORT", "LEADER_PORT", "DIR"))
    args = p.parse_args()
    if args.follower:
        fport, lport, d = args.follower
        asyncio.run(follower(int(fport), int(lport), Path(d)))
        return
    with tempfile.TemporaryDirectory(prefix="rusd-peer-bench-", dir=os.getcwd()) as d:
        asyncio.run(leader(args, Path(d)))


if __name__ == "__main__":
    main()
