"""The watch hub: every watch stream and watcher of a member, as a pull model.

Follows etcd 3.4's mvcc/watchable_store.go + etcdserver/api/v3rpc/watch.go, in one
single-threaded machine that the server drives:

- `on_events(events)` after every durable apply (events in (revision, sub) order);
- `create` / `cancel` / `request_progress` for the requests a stream reads;
- `next_response(stream, view)` whenever the stream's consumer can take one more
  response (None: nothing to send now; the server waits for a wake-up);
- `tick(stream, now)` for progress notifications (time is handed in).

Synced and unsynced watchers, as etcd's. A *synced* watcher gets each new revision
queued as one chunk (one response, header revision = that revision) straight from
`on_events`. A watcher whose start revision is in the past, or whose consumer is slow
(its queue would pass `max_pending_events`), is *unsynced*: nothing is queued for it;
once its queue is drained it is caught up from the store's history, in batches of
whole revisions (at most `max_batch_revisions` revisions / about `max_batch_events`
events, header revision = the store's current one), and rejoins the synced group when
it reaches the hub's revision. So no event is dropped, duplicated or reordered, a
revision is never split across responses (unless the watcher asked for fragments),
and a slow watcher holds at most one bounded queue or batch in memory.

A catch-up that starts below the compact revision cancels the watcher with
`compact_revision` (etcd: minRev < compactRev).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc.backend import KVReader
from rusd.core.mvcc.types import Event, KeyValue

# WatchCreateRequest.FilterType
NOPUT = 0
NODELETE = 1

# etcd's cancel reasons (mvcc/watcher.go errors).
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"


@dataclass(frozen=True, slots=True)
class CreateRequest:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    progress_notify: bool = False
    filters: tuple[int, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0  # 0: the server picks one
    fragment: bool = False


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One WatchResponse; `revision` is the header revision (0: etcd sends none)."""

    watch_id: int
    revision: int
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: tuple[Event, ...] = field(default=())


@dataclass(slots=True)
class _Watcher:
    stream: int
    id: int
    key: bytes
    end: bytes | None  # None: one key; b"": no upper bound
    noput: bool
    nodelete: bool
    prev_kv: bool
    progress_notify: bool
    fragment: bool
    min_rev: int  # events below it are not for this watcher (etcd's minRev)
    synced: bool
    next_rev: int = 0  # unsynced: the first revision not yet queued or sent
    queue: deque[tuple[tuple[Event, ...], int]] = field(default_factory=deque)
    queued_events: int = 0
    idle: bool = True  # no events sent since the last progress tick
    progress_due: bool = False

    def matches(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return key >= self.key and (not self.end or key < self.end)

    def wanted(self, events: Iterable[Event]) -> tuple[Event, ...]:
        out = []
        for ev in events:
            if not self.matches(ev.kv.key):
                continue
            if ev.is_delete:
                if self.nodelete:
                    continue
            elif self.noput:
                continue
            out.append(ev if self.prev_kv or ev.prev_kv is None else Event(ev.kv))
        return tuple(out)


@dataclass(slots=True)
class _Stream:
    id: int
    next_progress_at: float
    watchers: dict[int, _Watcher] = field(default_factory=dict)
    next_auto_id: int = 0
    ctrl: deque[WatchResponse] = field(default_factory=deque)
    fragments: deque[WatchResponse] = field(default_factory=deque)
    progress_requested: int = 0
    rr: int = 0  # round-robin position over the watchers
    order: list[_Watcher] | None = None  # list(watchers.values()), None when stale


def estimate_size(resp: WatchResponse) -> int:
    """A rough encoded size (the server hands in the exact protobuf one)."""
    size = 32
    for ev in resp.events:
        size += 24 + len(ev.kv.key) + len(ev.kv.value)
        if ev.prev_kv is not None:
            size += 24 + len(ev.prev_kv.key) + len(ev.prev_kv.value)
    return size


def split_fragments(resp: WatchResponse, limit: int, size: Callable[[WatchResponse], int]) -> list[WatchResponse]:
    """etcd's sendFragments: split a response of `limit` bytes or more into pieces
    that stay below it (at least one event each), fragment=true on all but the last."""
    if len(resp.events) < 2 or size(resp) < limit:
        return [resp]
    out: list[WatchResponse] = []
    events = resp.events
    idx = 0
    while idx < len(events):
        cur: list[Event] = []
        while idx < len(events):
            cur.append(events[idx])
            if len(cur) > 1 and size(replace(resp, events=tuple(cur), fragment=True)) >= limit:
                cur.pop()
                break
            idx += 1
        out.append(replace(resp, events=tuple(cur), fragment=idx < len(events)))
    return out


class WatchHub:
    """All watch streams of one member. See the module docstring."""

    def __init__(
        self,
        revision: int = 1,
        progress_interval: float = 600.0,
        max_pending_events: int = 1024,
        max_batch_revisions: int = 1000,
        max_batch_events: int = 1000,
        max_response_bytes: int = 1572864,
        size: Callable[[WatchResponse], int] = estimate_size,
    ) -> None:
        self.revision = revision
        self.progress_interval = progress_interval
        self.max_pending_events = max_pending_events
        self.max_batch_revisions = max_batch_revisions
        self.max_batch_events = max_batch_events
        self.max_response_bytes = max_response_bytes
        self.size = size
        self._streams: dict[int, _Stream] = {}
        self._next_stream = 1
        # Watcher indexes for on_events: single keys, and ranges grouped by range.
        self._by_key: dict[bytes, dict[tuple[int, int], _Watcher]] = {}
        self._by_range: dict[tuple[bytes, bytes], dict[tuple[int, int], _Watcher]] = {}

    # -- streams -------------------------------------------------------------------
    def open_stream(self, now: float) -> int:
        sid = self._next_stream
        self._next_stream += 1
        self._streams[sid] = _Stream(sid, now + self.progress_interval)
        return sid

    def close_stream(self, sid: int) -> None:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        for w in list(stream.watchers.values()):
            self._unindex(w)

    def watcher_count(self, sid: int | None = None) -> int:
        if sid is not None:
            return len(self._streams[sid].watchers)
        return sum(len(s.watchers) for s in self._streams.values())

    def observe(self, view: KVReader) -> None:
        """Learn the store's revision from a view (never goes backwards)."""
        self.revision = max(self.revision, mvcc.current_revision(view))

    # -- requests ------------------------------------------------------------------
    def create(self, sid: int, req: CreateRequest, view: KVReader) -> None:
        """A WatchCreateRequest; its `created` response is queued in request order."""
        self.observe(view)
        stream = self._streams[sid]
        key = req.key or b"\x00"
        end: bytes | None
        if not req.range_end:
            end = None
        elif req.range_end == b"\x00":
            end = b""
        else:
            end = req.range_end
        if end and key >= end:
            stream.ctrl.append(self._failed(ERR_EMPTY_RANGE))
            return
        wid = req.watch_id
        if wid == 0:
            while stream.next_auto_id in stream.watchers:
                stream.next_auto_id += 1
            wid = stream.next_auto_id
            stream.next_auto_id += 1
        elif wid in stream.watchers:
            stream.ctrl.append(self._failed(ERR_DUPLICATE_ID))
            return
        start = req.start_revision or self.revision + 1
        synced = start > self.revision
        w = _Watcher(
            stream=sid,
            id=wid,
            key=key,
            end=end,
            noput=NOPUT in req.filters,
            nodelete=NODELETE in req.filters,
            prev_kv=req.prev_kv,
            progress_notify=req.progress_notify,
            fragment=req.fragment,
            min_rev=max(start, self.revision + 1) if synced else start,
            synced=synced,
            next_rev=start,
        )
        stream.watchers[wid] = w
        stream.order = None
        self._index(w)
        stream.ctrl.append(WatchResponse(watch_id=wid, revision=self.revision, created=True))

    def refuse(self, sid: int, reason: str, view: KVReader) -> None:
        """A create refused outside the hub (e.g. no permission): answered in order
        with the other creates, as created + canceled with watch id -1."""
        self.observe(view)
        self._streams[sid].ctrl.append(self._failed(reason))

    def _failed(self, reason: str) -> WatchResponse:
        return WatchResponse(watch_id=-1, revision=self.revision, created=True, canceled=True, cancel_reason=reason)

    def cancel(self, sid: int, watch_id: int) -> None:
        """A WatchCancelRequest: a `canceled` response, or nothing for an unknown id."""
        stream = self._streams[sid]
        w = stream.watchers.pop(watch_id, None)
        if w is None:
            return
        stream.order = None
        self._unindex(w)
        stream.ctrl.append(WatchResponse(watch_id=watch_id, revision=self.revision, canceled=True))

    def request_progress(self, sid: int) -> None:
        """A WatchProgressRequest: one response with watch_id -1 and the current
        revision, sent once every watcher of the stream has been sent everything up
        to it (so the revision is a safe bookmark)."""
        self._streams[sid].progress_requested += 1

    # -- time ----------------------------------------------------------------------
    def next_deadline(self, sid: int) -> float | None:
        stream = self._streams[sid]
        if not any(w.progress_notify for w in stream.watchers.values()):
            return None
        return stream.next_progress_at

    def tick(self, sid: int, now: float) -> bool:
        """Progress notifications: each progress_notify watcher that was sent no
        events since the last tick gets an empty response with the current revision
        (when it is synced). Returns True when one became due."""
        stream = self._streams.get(sid)
        if stream is None or now < stream.next_progress_at:
            return False
        due = False
        for w in stream.watchers.values():
            if w.progress_notify:
                # etcd only notifies a watcher in the synced group.
                if w.idle and w.synced and not w.queue:
                    w.progress_due = True
                    due = True
                w.idle = True
        stream.next_progress_at = now + self.progress_interval
        return due

    # -- new revisions -------------------------------------------------------------
    def on_events(self, events: list[Event]) -> list[int]:
        """Queue a durable turn's events for the synced watchers; returns the ids of
        the streams that have something new to send."""
        woken: set[int] = set()
        i = 0
        while i < len(events):
            rev = events[i].kv.mod_revision
            j = i
            while j < len(events) and events[j].kv.mod_revision == rev:
                j += 1
            self._on_revision(rev, events[i:j], woken)
            i = j
        return sorted(woken)

    def _on_revision(self, rev: int, events: list[Event], woken: set[int]) -> None:
        self.revision = max(self.revision, rev)
        # Every watcher of one index group watches the same key or range, so the
        # matching is done once per group, and the filtered event tuple once per
        # (group, filters): watchers with the same filters share one tuple (the
        # server converts a shared tuple to protobuf once). The events without
        # prev_kv are made once per revision, for the same reason.
        bare = {id(ev): Event(ev.kv) for ev in events if ev.prev_kv is not None}
        if len(events) == 1:
            ev = events[0]
            found = self._by_key.get(ev.kv.key)
            if found:
                self._queue_group(rev, found, events, bare, woken)
        else:
            by_key: dict[bytes, list[Event]] = {}
            for ev in events:
                if ev.kv.key in self._by_key:
                    by_key.setdefault(ev.kv.key, []).append(ev)
            for k, evs in by_key.items():
                self._queue_group(rev, self._by_key[k], evs, bare, woken)
        for (key, end), group in self._by_range.items():
            matched = [ev for ev in events if key <= ev.kv.key and (not end or ev.kv.key < end)]
            if matched:
                self._queue_group(rev, group, matched, bare, woken)

    def _queue_group(
        self,
        rev: int,
        group: dict[tuple[int, int], _Watcher],
        matched: list[Event],
        bare: dict[int, Event],
        woken: set[int],
    ) -> None:
        """Queue one revision's `matched` events (all in the group's key/range) for
        the group's synced watchers."""
        shared: dict[tuple[bool, bool, bool], tuple[tuple[Event, ...], int]] = {}
        for w in group.values():
            if not w.synced or rev < w.min_rev:
                continue
            filters = (w.noput, w.nodelete, w.prev_kv)
            chunk = shared.get(filters)
            if chunk is None:
                chunk = shared[filters] = (_filtered(matched, bare, *filters), rev)
            evs = chunk[0]
            if not evs:
                continue
            if w.queue and w.queued_events + len(evs) > self.max_pending_events:
                # Too slow: stop queueing, catch up from history once drained.
                w.synced = False
                w.next_rev = rev
                continue
            w.queue.append(chunk)
            w.queued_events += len(evs)
            woken.add(w.stream)

    # -- responses -----------------------------------------------------------------
    def next_response(self, sid: int, view: KVReader) -> WatchResponse | None:
        """The stream's next response, or None when it has nothing to send.

        `view` must hold every revision the hub was told about (the server passes
        its latest snapshot); unsynced watchers are caught up from it.
        """
        stream = self._streams.get(sid)
        if stream is None:
            return None
        if stream.fragments:
            return stream.fragments.popleft()
        if stream.ctrl:
            return stream.ctrl.popleft()
        # `observe(view)` only where self.revision is read below (progress
        # responses, catch-up): reading the view's revision costs a lookup.
        watchers = stream.order
        if watchers is None:
            watchers = stream.order = list(stream.watchers.values())
        n = len(watchers)
        for k in range(n):
            idx = (stream.rr + k) % n
            w = watchers[idx]
            resp = self._next_of(stream, w, view)
            if resp is not None:
                stream.rr = idx + 1
                return resp
        if stream.progress_requested:
            stream.progress_requested -= 1
            self.observe(view)
            return WatchResponse(watch_id=-1, revision=self.revision)
        return None

    def _next_of(self, stream: _Stream, w: _Watcher, view: KVReader) -> WatchResponse | None:
        while True:
            if w.queue:
                evs, rev = w.queue.popleft()
                if w.queue and len(evs) + len(w.queue[0][0]) <= self.max_batch_events:
                    # A backlog of whole revisions goes out in one response (as an
                    # etcd catch-up does); header revision = the last one's.
                    merged = list(evs)
                    while w.queue and len(merged) + len(w.queue[0][0]) <= self.max_batch_events:
                        more, rev = w.queue.popleft()
                        merged.extend(more)
                    evs = tuple(merged)
                w.queued_events -= len(evs)
                return self._events(stream, w, evs, rev)
            if w.synced:
                if w.progress_due:
                    w.progress_due = False
                    self.observe(view)
                    return WatchResponse(watch_id=w.id, revision=self.revision)
                return None
            self.observe(view)
            compacted = mvcc.compact_revision(view)
            if w.next_rev < compacted:
                del stream.watchers[w.id]
                stream.order = None
                self._unindex(w)
                return WatchResponse(watch_id=w.id, revision=0, canceled=True, compact_revision=compacted)
            evs = self._catch_up(w, view)
            if evs:
                return self._events(stream, w, evs, mvcc.current_revision(view))

    def _events(self, stream: _Stream, w: _Watcher, evs: tuple[Event, ...], rev: int) -> WatchResponse:
        w.idle = False
        resp = WatchResponse(watch_id=w.id, revision=rev, events=evs)
        if not w.fragment:
            return resp
        parts = split_fragments(resp, self.max_response_bytes, self.size)
        stream.fragments.extend(parts[1:])
        return parts[0]

    def _catch_up(self, w: _Watcher, view: KVReader) -> tuple[Event, ...]:
        """Read the next batch of whole revisions from history; moves next_rev on
        and marks the watcher synced once it reaches the hub's revision."""
        current = mvcc.current_revision(view)
        compacted = mvcc.compact_revision(view)
        out: list[Event] = []
        revs = 0
        last = w.next_rev - 1
        nxt = current + 1
        for _sub, kv in view.changes(w.next_rev - 1):
            main = kv.mod_revision
            if main > current:
                break
            if main != last:
                if revs >= self.max_batch_revisions or len(out) >= self.max_batch_events:
                    nxt = main
                    break
                revs += 1
                last = main
            if not w.matches(kv.key):
                continue
            if kv.is_tombstone:
                if w.nodelete:
                    continue
            elif w.noput:
                continue
            prev = _prev_kv(view, kv, compacted) if w.prev_kv else None
            out.append(Event(kv, prev))
        w.next_rev = nxt
        if w.next_rev > self.revision:
            w.synced = True
            w.min_rev = w.next_rev
        return tuple(out)

    # -- indexes -------------------------------------------------------------------
    def _index(self, w: _Watcher) -> None:
        if w.end is None:
            self._by_key.setdefault(w.key, {})[(w.stream, w.id)] = w
        else:
            self._by_range.setdefault((w.key, w.end), {})[(w.stream, w.id)] = w

    def _unindex(self, w: _Watcher) -> None:
        if w.end is None:
            table = self._by_key
            group = table.get(w.key)
            if group is not None:
                group.pop((w.stream, w.id), None)
                if not group:
                    del table[w.key]
        else:
            group = self._by_range.get((w.key, w.end))
            if group is not None:
                group.pop((w.stream, w.id), None)
                if not group:
                    del self._by_range[(w.key, w.end)]


def _filtered(
    events: list[Event], bare: dict[int, Event], noput: bool, nodelete: bool, prev_kv: bool
) -> tuple[Event, ...]:
    """What `_Watcher.wanted` keeps of events that all match the watcher's key/range
    (`bare`: each event with a prev_kv, without it)."""
    out = []
    for ev in events:
        if ev.is_delete:
            if nodelete:
                continue
        elif noput:
            continue
        out.append(ev if prev_kv or ev.prev_kv is None else bare[id(ev)])
    return tuple(out)


def _prev_kv(view: KVReader, kv: KeyValue, compacted: int) -> KeyValue | None:
    """What etcd's watch sender reads for prev_kv: the key at mod_revision - 1
    (nothing for a create, or when that revision is compacted)."""
    if kv.version == 1 or kv.mod_revision - 1 < compacted:
        return None
    prev: KeyValue | None = None
    for _sub, old in view.history(kv.key, None):
        if old.mod_revision >= kv.mod_revision:
            break
        prev = old
    if prev is None or prev.is_tombstone:
        return None
    return prev
