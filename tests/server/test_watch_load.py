"""Watch under load on a real rusd process: 100 watchers of one prefix on several
streams (one stream reading slowly), 10,000 concurrent writes (some of them
multi-key txns). Every watcher must see every event exactly once, in revision
order, no revision split across responses, and a progress response (periodic or
requested) at revision R only once every event <= R was delivered to that watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

WRITES = 10_000
WRITERS = 48
FAST_STREAMS = 4
WATCHERS = 100  # one of them alone on the slow stream
PREFIX = b"/load/"
VALUE = b"x" * 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[servers.ServerProcess]:
    proc = servers.rusd(tmp_path, "--experimental-watch-progress-notify-interval", "100ms").start()
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Seen:
    events: list[tuple[int, bytes]] = field(default_factory=list)
    revisions_by_response: list[set[int]] = field(default_factory=list)
    progress: int = 0
    problems: list[str] = field(default_factory=list)


async def watch_stream(
    channel: grpc.aio.Channel, ids: list[int], last_rev: asyncio.Future[int], slow: bool
) -> dict[int, Seen]:
    call = pb_grpc.WatchStub(channel).Watch()
    seen = {wid: Seen() for wid in ids}
    for wid in ids:
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=PREFIX, range_end=PREFIX[:-1] + b"0", watch_id=wid, progress_notify=True,
        )))
    n = 0
    if slow:
        # Take nothing while the writes happen: more than a flow-control window
        # piles up, the server's writes block, and its watcher has to fall back to
        # unsynced and be caught up from the store.
        await asyncio.wait([last_rev])
    while True:
        if last_rev.done() and all(s.events and s.events[-1][0] >= last_rev.result() for s in seen.values()):
            break
        resp = await call.read()
        assert resp is not grpc.aio.EOF
        n += 1
        if n % 50 == 0:
            await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        if slow:
            await asyncio.sleep(0.005)
        if resp.created:
            continue
        if resp.watch_id == -1:  # requested progress: a bookmark for every watcher here
            for s in seen.values():
                s.progress = max(s.progress, resp.header.revision)
            continue
        s = seen[resp.watch_id]
        if not resp.events:
            s.progress = max(s.progress, resp.header.revision)
            continue
        revs = {ev.kv.mod_revision for ev in resp.events}
        s.revisions_by_response.append(revs)
        for ev in resp.events:
            if ev.kv.mod_revision <= s.progress:
                s.problems.append(f"event {ev.kv.mod_revision} after progress {s.progress}")
            s.events.append((ev.kv.mod_revision, ev.kv.key))
    call.cancel()
    return seen


async def write_all(channel: grpc.aio.Channel) -> dict[int, list[bytes]]:
    kv = pb_grpc.KVStub(channel)
    by_rev: dict[int, list[bytes]] = {}
    counter = iter(range(WRITES))

    async def writer() -> None:
        for i in counter:
            key = PREFIX + b"%04d" % (i % 700)
            if i % 50 == 0:
                keys = [key, key + b"-a", key + b"-b"]
                r = await kv.Txn(pb.TxnRequest(success=[
                    pb.RequestOp(request_put=pb.PutRequest(key=k, value=VALUE)) for k in keys
                ]))
                by_rev[r.header.revision] = keys
            else:
                p = await kv.Put(pb.PutRequest(key=key, value=VALUE))
                by_rev[p.header.revision] = [key]

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return by_rev


async def scenario(endpoint: str) -> None:
    channels = [grpc.aio.insecure_channel(endpoint) for _ in range(FAST_STREAMS + 2)]
    # The slow reader keeps gRPC's flow-control window small (no BDP growth), so
    # the server's writes to it block and its watcher falls behind on the server.
    channels[FAST_STREAMS] = grpc.aio.insecure_channel(endpoint, options=[("grpc.http2.bdp_probe", 0)])
    try:
        last_rev: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fast = list(range(1, WATCHERS))
        groups = [fast[i::FAST_STREAMS] for i in range(FAST_STREAMS)]
        tasks = [
            asyncio.create_task(watch_stream(channels[i], ids, last_rev, slow=False))
            for i, ids in enumerate(groups)
        ]
        tasks.append(asyncio.create_task(watch_stream(channels[FAST_STREAMS], [WATCHERS], last_rev, slow=True)))
        await asyncio.sleep(0.5)  # let every watch be created before the first write
        by_rev = await write_all(channels[-1])
        last_rev.set_result(max(by_rev))
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        for ch in channels:
            await ch.close()
    expected = [(rev, key) for rev in sorted(by_rev) for key in by_rev[rev]]
    assert len(expected) == WRITES + 2 * (WRITES // 50)
    assert sorted(by_rev) == list(range(2, WRITES + 2))
    watchers = {wid: s for group in results for wid, s in group.items()}
    assert sorted(watchers) == list(range(1, WATCHERS + 1))
    for wid, s in watchers.items():
        assert not s.problems, (wid, s.problems[:5])
        assert s.events == expected, f"watcher {wid}: {len(s.events)} events, first difference at " + str(
            next((i for i, (a, b) in enumerate(zip(s.events, expected, strict=False)) if a != b), None)
        )
        for a, b in zip(s.revisions_by_response, s.revisions_by_response[1:], strict=False):
            assert max(a) < min(b), f"watcher {wid}: a revision split across responses"


def test_hundred_watchers_ten_thousand_writes(server: servers.ServerProcess) -> None:
    asyncio.run(scenario(server.endpoint))
