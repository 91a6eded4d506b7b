"""Differential test: seeded writes, compactions and watches against etcd and rusd.

The same seeded sequence goes to a real etcd (the reference) and to rusd over gRPC:
puts and deletes on a small key space, compactions, and watch creations at random
revisions (past, current, future, compacted) with random ranges, filters and
prev_kv, on a few streams with client-chosen ids. When the writes are done and both
servers have gone quiet, every watcher must have received the same sequence of
events (key, type, revisions, version, value, prev_kv) and the same
cancellation / compact_revision on both. Batching into responses is not compared
(etcd's depends on its timers), only the per-watcher stream.

Seeds: RUSD_WATCH_SEED (comma separated) or the defaults; a failure prints the seed.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

DEFAULT_SEEDS = [1, 20240612, 99]
SEEDS = [int(s) for s in os.environ.get("RUSD_WATCH_SEED", "").split(",") if s.strip()] or DEFAULT_SEEDS
OPS = int(os.environ.get("RUSD_WATCH_OPS", "160"))
KEYS = [b"k%d" % i for i in range(8)] + [b"j1", b"j2"]
STREAMS = 3


@dataclass
class Stream:
    requests: queue.Queue[pb.WatchRequest | None] = field(default_factory=queue.Queue)
    responses: list[pb.WatchResponse] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Side:
    """One server: a KV stub and STREAMS watch streams read by threads."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = pb_grpc.KVStub(self.channel)
        self.streams = [Stream() for _ in range(STREAMS)]
        self.threads = []
        for s in self.streams:
            t = threading.Thread(target=self._read, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, s: Stream) -> None:
        def reqs() -> Iterator[pb.WatchRequest]:
            while (r := s.requests.get()) is not None:
                yield r

        try:
            for resp in pb_grpc.WatchStub(self.channel).Watch(reqs()):
                with s.lock:
                    s.responses.append(resp)
        except grpc.RpcError:
            pass

    def count(self) -> int:
        return sum(len(s.responses) for s in self.streams)

    def wait_created(self, stream: int, n: int) -> None:
        deadline = time.monotonic() + 10
        s = self.streams[stream]
        while time.monotonic() < deadline:
            with s.lock:
                if sum(1 for r in s.responses if r.created) >= n:
                    return
            time.sleep(0.002)
        raise AssertionError("no created response")

    def close(self) -> None:
        for s in self.streams:
            s.requests.put(None)
        self.channel.close()


def event_view(ev: object) -> tuple[object, ...]:
    def kv(k: object) -> tuple[object, ...]:
        return (k.key, k.create_revision, k.mod_revision, k.version, k.value, k.lease)  # type: ignore[attr-defined]

    prev = kv(ev.prev_kv) if ev.HasField("prev_kv") else None  # type: ignore[attr-defined]
    return (int(ev.type), kv(ev.kv), prev)  # type: ignore[attr-defined]


def per_watcher(side: Side) -> dict[tuple[int, int], list[tuple[object, ...]]]:
    out: dict[tuple[int, int], list[tuple[object, ...]]] = {}
    for i, s in enumerate(side.streams):
        with s.lock:
            resps = list(s.responses)
        for r in resps:
            if r.watch_id == -1 and not r.created:
                continue  # progress
            items = out.setdefault((i, r.watch_id), [])
            if r.created:
                items.append(("created", r.canceled, r.cancel_reason))
            for ev in r.events:
                items.append(("event", *event_view(ev)))
            if r.canceled and not r.created:
                items.append(("canceled", r.compact_revision))
    return out


def random_range(rng: random.Random) -> tuple[bytes, bytes]:
    kind = rng.random()
    if kind < 0.4:
        return rng.choice(KEYS), b""
    if kind < 0.7:
        return b"k", b"l"  # prefix
    if kind < 0.8:
        return b"k3", b"\x00"  # from key
    if kind < 0.9:
        return b"\x00", b"\x00"  # everything
    a, b = sorted(rng.sample(KEYS, 2))
    return a, b


@pytest.mark.parametrize("seed", SEEDS)
def test_watch_differential(seed: int, pair: tuple[servers.ServerProcess, servers.ServerProcess]) -> None:
    etcd, rusd = pair
    sides = [Side(etcd.endpoint), Side(rusd.endpoint)]
    try:
        run(seed, sides)
    finally:
        for side in sides:
            side.close()


def run(seed: int, sides: list[Side]) -> None:
    rng = random.Random(seed)
    rev, compacted = 1, 0
    next_id = [1] * STREAMS
    created = [0] * STREAMS
    log: list[str] = []
    for op in range(OPS):
        r = rng.random()
        if r < 0.55:
            key = rng.choice(KEYS)
            value = b"v%d" % op
            for side in sides:
                side.kv.Put(pb.PutRequest(key=key, value=value), timeout=10)
            rev += 1
            log.append(f"put {key!r}")
        elif r < 0.7:
            key, end = random_range(rng)
            resps = [side.kv.DeleteRange(pb.DeleteRangeRequest(key=key, range_end=end), timeout=10) for side in sides]
            assert resps[0].deleted == resps[1].deleted, f"seed {seed}"
            rev += 1 if resps[0].deleted else 0
            log.append(f"delete {key!r} {end!r}")
        elif r < 0.75 and rev - 1 > compacted:
            at = rng.randint(compacted + 1, rev)
            time.sleep(0.25)  # etcd syncs unsynced watchers every 100 ms
            for side in sides:
                side.kv.Compact(pb.CompactionRequest(revision=at), timeout=10)
            compacted = at
            log.append(f"compact {at}")
        else:
            s = rng.randrange(STREAMS)
            key, end = random_range(rng)
            start = rng.choice(
                [0, 0, rng.randint(1, rev), rev, rev + 1, rev + rng.randint(1, 4), max(1, compacted - 1)]
            )
            filters = rng.choice([[], [], [pb.WatchCreateRequest.NOPUT], [pb.WatchCreateRequest.NODELETE]])
            wid = next_id[s]
            if rng.random() < 0.1 and wid > 1:
                wid = rng.randrange(1, wid)  # duplicate
            else:
                next_id[s] += 1
            req = pb.WatchRequest(
                create_request=pb.WatchCreateRequest(
                    key=key,
                    range_end=end,
                    start_revision=start,
                    filters=filters,
                    prev_kv=rng.random() < 0.5,
                    watch_id=wid,
                )
            )
            created[s] += 1
            for side in sides:
                side.streams[s].requests.put(req)
                side.wait_created(s, created[s])
            log.append(f"watch s{s} id {wid} {key!r}-{end!r} start {start} filters {filters}")
    # Wait until both have been quiet for a while.
    last = [-1, -1]
    quiet_since = time.monotonic()
    deadline = quiet_since + 30
    while time.monotonic() < deadline:
        now = [side.count() for side in sides]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            break
        time.sleep(0.05)
    want, got = per_watcher(sides[0]), per_watcher(sides[1])
    for wk in sorted(set(want) | set(got)):
        if want.get(wk) != got.get(wk):
            pytest.fail(
                f"seed {seed}: watcher stream {wk[0]} id {wk[1]} differs\n"
                f"etcd: {want.get(wk)}\nrusd: {got.get(wk)}\nops:\n" + "\n".join(log[-40:])
            )
    assert want.keys() == got.keys()
