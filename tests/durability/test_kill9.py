"""Acknowledged writes survive kill -9; revisions are never reused after a restart.

A kill -9 does not lose what the kernel's page cache already holds, so these tests do
not prove the fsync itself; they prove the ordering around it: a put is acknowledged
only after its batch is committed, the revision counter and the applied state are
recovered from the file, and a batch is either entirely there or not there at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

WORKERS = 32
PREFIX = b"d/"


def value_for(key: bytes) -> bytes:
    """A unique value that can only be intact or wrong, not plausibly half-written."""
    digest = hashlib.sha256(key).hexdigest().encode()
    return key + b"=" + digest * 3


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across all rounds."""

    attempted: dict[bytes, bytes] = field(default_factory=dict)  # key -> value sent
    acked: dict[bytes, int] = field(default_factory=dict)  # key -> acknowledged revision
    probes: dict[bytes, int] = field(default_factory=dict)  # key -> revision, one per restart


async def put_stream(
    server: servers.ServerProcess, ledger: Ledger, round_no: int, kill_after: int, stop: str = "kill"
) -> None:
    """WORKERS concurrent putters of unique keys; once `kill_after` puts of this round
    are acknowledged, stop the server ("kill": kill -9, "term": SIGTERM) while they
    keep putting, and wait until every putter has seen the server go away."""
    loop = asyncio.get_running_loop()
    reached = asyncio.Event()
    acked_this_round = 0

    async with grpc.aio.insecure_channel(server.endpoint) as channel:
        kv = pb_grpc.KVStub(channel)

        async def putter(worker: int) -> grpc.StatusCode:
            nonlocal acked_this_round
            i = 0
            while True:
                key = b"%sr%d/w%02d/%06d" % (PREFIX, round_no, worker, i)
                value = value_for(key)
                ledger.attempted[key] = value
                try:
                    resp = await kv.Put(pb.PutRequest(key=key, value=value), timeout=20)
                except grpc.aio.AioRpcError as e:
                    return e.code()
                ledger.acked[key] = resp.header.revision
                acked_this_round += 1
                if acked_this_round >= kill_after:
                    reached.set()
                i += 1

        tasks = [asyncio.create_task(putter(w)) for w in range(WORKERS)]
        waiter = asyncio.create_task(reached.wait())
        done, _ = await asyncio.wait([waiter, *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        assert waiter in done, f"only {acked_this_round} puts acknowledged; server log:\n{server.log()}"
        assert server.proc is not None
        # Stop the server under the putters' feet: the loop keeps receiving answers
        # (acknowledgements) until the process is gone.
        os.kill(server.proc.pid, signal.SIGKILL if stop == "kill" else signal.SIGTERM)
        await loop.run_in_executor(None, server.proc.wait)
        codes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert acked_this_round >= kill_after
    # Nothing but "the server went away" may end a putter (no other error on a put).
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}, (
        codes
    )


def check_store(server: servers.ServerProcess, ledger: Ledger) -> int:
    """Every acknowledged put is there with its value and revision; nothing else is
    half there; revisions 2..current are exactly the puts that were applied. Returns
    the current revision."""
    with grpc.insecure_channel(server.endpoint) as channel:
        kv = pb_grpc.KVStub(channel)
        resp = kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), timeout=30)
    current = resp.header.revision
    present = {kv.key: kv for kv in resp.kvs}

    missing = [k for k in ledger.acked if k not in present]
    assert not missing, f"{len(missing)} acknowledged puts lost after restart, e.g. {missing[:5]}"
    for key, rev in ledger.acked.items():
        got = present[key]
        assert got.value == ledger.attempted[key], f"{key!r}: acknowledged value corrupted"
        assert (got.mod_revision, got.create_revision, got.version) == (rev, rev, 1), key
    for key, rev in ledger.probes.items():
        assert present[key].mod_revision == rev, key

    unknown = [k for k in present if k not in ledger.attempted and k not in ledger.probes]
    assert not unknown, f"keys nobody put: {unknown[:5]}"
    for key, got in present.items():
        if key in ledger.attempted:  # acknowledged or in flight at the kill: intact
            assert got.value == ledger.attempted[key], f"{key!r}: in-flight put stored half-written"

    assert current >= max([1, *ledger.acked.values()])
    # Every put bumps the revision by exactly one and each key was put once: the
    # applied puts own revisions 2..current, one each (no gap, no reuse).
    revisions = sorted(got.mod_revision for got in present.values())
    assert revisions == list(range(2, current + 1)), "revisions have gaps or duplicates"
    return current


def probe_put(server: servers.ServerProcess, ledger: Ledger, current: int, n: int) -> None:
    """The first put after a restart takes the revision right after the recovered one."""
    key = b"probe/%d" % n
    with grpc.insecure_channel(server.endpoint) as channel:
        resp = pb_grpc.KVStub(channel).Put(pb.PutRequest(key=key, value=b"p"), timeout=30)
    assert resp.header.revision == current + 1, "revision reused or skipped after restart"
    ledger.probes[key] = resp.header.revision


@pytest.mark.parametrize("kill_points", [(150, 1500, 600)], ids=["3-kills"])
def test_acknowledged_puts_survive_kill9(tmp_path: Path, kill_points: tuple[int, ...]) -> None:
    data_dir = tmp_path / "data"
    ledger = Ledger()
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        for round_no, kill_after in enumerate(kill_points):
            asyncio.run(put_stream(server, ledger, round_no, kill_after))
            assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
            server = servers.rusd(tmp_path, data_dir=data_dir).start()
            current = check_store(server, ledger)
            probe_put(server, ledger, current, round_no)
        # A second restart without new writes changes nothing.
        server.kill()
        server = servers.rusd(tmp_path, data_dir=data_dir).start()
        assert check_store(server, ledger) == max(ledger.probes.values())
    finally:
        server.kill()
    assert "Traceback" not in server.log()


def test_sigterm_under_load_exits_zero_and_keeps_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ledger = Ledger()
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        asyncio.run(put_stream(server, ledger, 0, 400, stop="term"))
        assert server.proc is not None
        assert server.proc.returncode == 0, server.log()
        server = servers.rusd(tmp_path, data_dir=data_dir).start()
        current = check_store(server, ledger)
        probe_put(server, ledger, current, 0)
        assert server.stop() == 0
        # Idle SIGTERM restart: the same store, the same revision.
        server = servers.rusd(tmp_path, data_dir=data_dir).start()
        assert check_store(server, ledger) == current + 1
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.log()
