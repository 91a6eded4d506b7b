"""The watch hub over the memory backend: etcd 3.4's watch semantics, pull model."""

from __future__ import annotations

from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc.types import DeleteRangeRequest, Event, KeyValue, PutRequest
from rusd.core.watch.hub import (
    ERR_DUPLICATE_ID,
    ERR_EMPTY_RANGE,
    NODELETE,
    NOPUT,
    CreateRequest,
    WatchHub,
    WatchResponse,
    split_fragments,
)
from rusd.storage.memory import MemoryBackend


class NoLeases:
    def exists(self, lease_id: int) -> bool:
        return False

    def attach(self, lease_id: int, key: bytes) -> None:
        pass

    def detach(self, lease_id: int, key: bytes) -> None:
        pass


class World:
    """A store plus a hub fed by every write, as the server wires them."""

    def __init__(self, **hub_args: int) -> None:
        self.db = MemoryBackend()
        self.hub = WatchHub(**hub_args)  # type: ignore[arg-type]
        self.sid = self.hub.open_stream(0.0)

    def put(self, key: bytes, value: bytes = b"v") -> None:
        sink: list[Event] = []
        mvcc.put(self.db, NoLeases(), PutRequest(key, value), sink)
        self.hub.on_events(sink)

    def delete(self, key: bytes, end: bytes = b"") -> None:
        sink: list[Event] = []
        mvcc.delete_range(self.db, NoLeases(), DeleteRangeRequest(key, end), sink)
        self.hub.on_events(sink)

    def compact(self, rev: int) -> None:
        mvcc.compact(self.db, rev)

    def watch(self, key: bytes, end: bytes = b"", **kw: object) -> None:
        self.hub.create(self.sid, CreateRequest(key, end, **kw), self.db)  # type: ignore[arg-type]

    def drain(self, sid: int | None = None) -> list[WatchResponse]:
        out = []
        while (r := self.hub.next_response(self.sid if sid is None else sid, self.db)) is not None:
            out.append(r)
        return out


def events(resps: list[WatchResponse], watch_id: int | None = None) -> list[tuple[str, bytes, int]]:
    return [
        ("DEL" if e.is_delete else "PUT", e.kv.key, e.kv.mod_revision)
        for r in resps
        if watch_id is None or r.watch_id == watch_id
        for e in r.events
    ]


def test_start_revision_zero_sees_only_new_writes() -> None:
    w = World()
    w.put(b"a")
    w.watch(b"a")
    assert w.drain() == [WatchResponse(watch_id=0, revision=2, created=True)]
    w.put(b"a", b"x")
    w.put(b"b")
    (r,) = w.drain()
    assert r.watch_id == 0 and r.revision == 3
    assert r.events == (Event(KeyValue(b"a", 2, 3, 2, b"x")),)  # prev_kv not asked for


def test_past_start_replays_history_then_goes_live() -> None:
    w = World()
    for k in (b"a1", b"a2", b"b", b"a3"):
        w.put(k)
    w.delete(b"a1")
    w.watch(b"a", b"b", start_revision=3, prev_kv=True)
    created, replay = w.drain()
    assert created.created and created.revision == 6
    assert replay.revision == 6  # catch-up responses carry the current revision
    assert events([replay]) == [("PUT", b"a2", 3), ("PUT", b"a3", 5), ("DEL", b"a1", 6)]
    assert replay.events[2].prev_kv == KeyValue(b"a1", 2, 2, 1, b"v")
    w.put(b"a9")
    assert events(w.drain()) == [("PUT", b"a9", 7)]


def test_future_start_waits() -> None:
    w = World()
    w.watch(b"k", start_revision=4)
    w.drain()
    w.put(b"k")  # rev 2
    w.put(b"k")  # rev 3
    assert w.drain() == []
    w.put(b"k")  # rev 4
    assert events(w.drain()) == [("PUT", b"k", 4)]


def test_start_below_compaction_cancels_after_created() -> None:
    w = World()
    for _ in range(5):
        w.put(b"k")
    w.compact(4)
    w.watch(b"k", start_revision=3)
    w.watch(b"k", start_revision=4)
    resps = w.drain()
    assert resps[0] == WatchResponse(watch_id=0, revision=6, created=True)
    assert resps[1] == WatchResponse(watch_id=1, revision=6, created=True)
    assert WatchResponse(watch_id=0, revision=0, canceled=True, compact_revision=4) in resps
    assert events(resps, 1) == [("PUT", b"k", 4), ("PUT", b"k", 5), ("PUT", b"k", 6)]
    w.put(b"k")
    assert [r.watch_id for r in w.drain()] == [1]  # the canceled watcher is gone


def test_filters_and_prev_kv() -> None:
    w = World()
    w.watch(b"k", filters=(NOPUT,), prev_kv=True)
    w.watch(b"k", filters=(NODELETE,))
    w.drain()
    w.put(b"k", b"1")
    w.put(b"k", b"2")
    w.delete(b"k")
    resps = w.drain()
    assert events(resps, 0) == [("DEL", b"k", 4)]
    (dele,) = [r for r in resps if r.watch_id == 0]
    assert dele.events[0].prev_kv == KeyValue(b"k", 2, 3, 2, b"2")
    assert events(resps, 1) == [("PUT", b"k", 2), ("PUT", b"k", 3)]
    assert all(r.events[0].prev_kv is None for r in resps if r.watch_id == 1)


def test_catch_up_prev_kv_respects_compaction_and_creates() -> None:
    w = World()
    w.put(b"k", b"1")  # 2
    w.put(b"k", b"2")  # 3
    w.put(b"k", b"3")  # 4
    w.compact(3)
    w.watch(b"k", start_revision=3, prev_kv=True)
    _, replay = w.drain()
    # rev 3's previous value (rev 2) is compacted: no prev_kv, as etcd's read fails
    assert [e.prev_kv for e in replay.events] == [None, KeyValue(b"k", 2, 3, 2, b"2")]


def test_watch_ids_auto_and_duplicate_and_bad_range() -> None:
    w = World()
    w.watch(b"a", watch_id=1)
    w.watch(b"a")  # auto: 0
    w.watch(b"a")  # auto: 2 (1 is taken)
    w.watch(b"a", watch_id=1)
    w.watch(b"b", b"a")
    w.watch(b"", b"\x00")  # every key
    resps = w.drain()
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in resps] == [
        (1, True, False, ""),
        (0, True, False, ""),
        (2, True, False, ""),
        (-1, True, True, ERR_DUPLICATE_ID),
        (-1, True, True, ERR_EMPTY_RANGE),
        (3, True, False, ""),
    ]


def test_empty_key_watches_the_zero_byte_key() -> None:
    w = World()
    w.watch(b"")
    w.drain()
    w.put(b"\x00")
    w.put(b"a")
    assert events(w.drain()) == [("PUT", b"\x00", 2)]


def test_cancel() -> None:
    w = World()
    w.watch(b"k")
    w.drain()
    w.put(b"k")
    w.hub.cancel(w.sid, 0)
    w.hub.cancel(w.sid, 42)  # unknown: nothing
    assert w.drain() == [WatchResponse(watch_id=0, revision=2, canceled=True)]
    w.put(b"k")
    assert w.drain() == []


def test_progress_request_waits_for_catch_up() -> None:
    w = World(max_batch_revisions=2)
    for _ in range(5):
        w.put(b"k")
    w.watch(b"k", start_revision=2)
    w.hub.request_progress(w.sid)
    resps = w.drain()
    assert resps[-1] == WatchResponse(watch_id=-1, revision=6)
    assert events(resps[:-1]) == [("PUT", b"k", r) for r in range(2, 7)]


def test_progress_notify_only_when_idle() -> None:
    w = World(progress_interval=10)  # type: ignore[arg-type]
    w.watch(b"k", progress_notify=True)
    w.watch(b"j")
    w.drain()
    assert w.hub.next_deadline(w.sid) == 10
    assert not w.hub.tick(w.sid, 5)
    assert w.hub.tick(w.sid, 10)
    assert w.drain() == [WatchResponse(watch_id=0, revision=1)]
    w.put(b"k")
    w.drain()
    assert not w.hub.tick(w.sid, 20)  # it was sent events in that interval
    assert w.hub.tick(w.sid, 30)
    w.put(b"k")  # queued before the notification is taken: events come first
    assert w.drain() == [
        WatchResponse(watch_id=0, revision=3, events=(Event(KeyValue(b"k", 2, 3, 2, b"v")),)),
        WatchResponse(watch_id=0, revision=3),
    ]


def test_slow_consumer_goes_unsynced_and_catches_up_exactly_once() -> None:
    w = World(max_pending_events=4, max_batch_revisions=3)
    w.watch(b"k", b"l")
    w.drain()
    got: list[tuple[str, bytes, int]] = []
    batches = []
    for i in range(50):
        w.put(b"k%d" % (i % 7))
        if i % 3 == 0:
            w.delete(b"k%d" % (i % 5))
        if i % 10 == 0:  # read a little now and then
            r = w.hub.next_response(w.sid, w.db)
            if r is not None:
                got += events([r])
        (watcher,) = w.hub._streams[w.sid].watchers.values()
        assert watcher.queued_events <= 4  # bounded memory per slow watcher
    rest = w.drain()
    batches = [r for r in rest if r.events]
    got += events(rest)
    expected = [("DEL" if e.is_delete else "PUT", e.kv.key, e.kv.mod_revision) for _, e in (
        (s, Event(kv)) for s, kv in w.db.changes(1))]
    assert got == expected
    assert all(len({e.kv.mod_revision for e in r.events}) <= 3 for r in batches)
    # back in sync: new writes are queued straight away, one revision per response
    w.put(b"k1")
    (r,) = w.drain()
    assert events([r]) == [("PUT", b"k1", mvcc.current_revision(w.db))]


def test_revision_not_split_and_streams_independent() -> None:
    w = World(max_pending_events=1, max_batch_events=1)
    other = w.hub.open_stream(0.0)
    w.watch(b"k", b"l")
    w.hub.create(other, CreateRequest(b"k", b"l"), w.db)
    w.drain()
    w.drain(other)
    for i in range(3):
        w.put(b"k%d" % i)
    w.delete(b"k", b"l")  # one revision, three events
    w.put(b"k9")
    resps = w.drain()
    assert len(events(resps)) == 7
    for r in resps:
        assert len({e.kv.mod_revision for e in r.events}) == 1
    # the backlog is merged into whole revisions of at most max_batch_events (1),
    # except that a revision is never split
    assert [len(r.events) for r in resps] == [1, 1, 1, 3, 1]


def test_backlog_of_revisions_merges_into_one_response() -> None:
    w = World()
    w.watch(b"k", b"l")
    w.drain()
    for i in range(3):
        w.put(b"k%d" % i)
    (r,) = w.drain()
    assert r.revision == 4 and events([r]) == [("PUT", b"k0", 2), ("PUT", b"k1", 3), ("PUT", b"k2", 4)]


def test_close_stream_removes_watchers() -> None:
    w = World()
    w.watch(b"k")
    w.watch(b"a", b"z")
    w.hub.close_stream(w.sid)
    assert w.hub.watcher_count() == 0
    w.put(b"k")
    assert w.hub._by_key == {} and w.hub._by_range == {}


def test_fragments_only_when_asked() -> None:
    w = World(max_response_bytes=60)
    w.watch(b"k", b"l", fragment=True)
    w.watch(b"k", b"l")
    w.drain()
    resps = []
    w.put(b"k1", b"x" * 40)
    resps += w.drain()
    w.put(b"k2", b"x" * 40)
    resps += w.drain()
    w.delete(b"k", b"l")  # one revision, two events: 84 estimated bytes
    resps += w.drain()
    whole = [r for r in resps if r.watch_id == 1]
    frags = [r for r in resps if r.watch_id == 0]
    assert [len(r.events) for r in whole] == [1, 1, 2]
    assert [(len(r.events), r.fragment) for r in frags] == [(1, False), (1, False), (1, True), (1, False)]


def test_split_fragments_like_etcd() -> None:
    evs = tuple(Event(KeyValue(b"k%d" % i, 1, 2, 1, b"v")) for i in range(5))
    resp = WatchResponse(watch_id=3, revision=2, events=evs)

    def size(r: WatchResponse) -> int:
        return 10 * len(r.events)

    assert split_fragments(resp, 100, size) == [resp]
    parts = split_fragments(resp, 25, size)
    assert [len(p.events) for p in parts] == [2, 2, 1]
    assert [p.fragment for p in parts] == [True, True, False]
    assert tuple(e for p in parts for e in p.events) == evs
