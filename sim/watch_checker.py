"""Watch guarantees, checked stream by stream against the model's revision order (the
`RevisionLog` of a linearization, or the committed changes of a run).

etcd promises (https://etcd.io/docs/v3.5/learning/api_guarantees/#watch-apis):

- ordered: events arrive in (revision, sub-revision) order;
- unique: no event arrives twice;
- atomic: all events of one revision arrive in one response;
- reliable: no event is skipped between the first and the last one delivered;
- resumable: the first event is the first change at or after the start revision, so a
  broken watch resumes from last revision + 1 without a gap;
- bookmarkable: a progress notification at revision r means every event <= r has been
  delivered, and none <= r follows it;
- prev_kv: when asked for, it is the key's value at revision - 1 (absent when the key did
  not exist; it may also be absent when revision - 1 was compacted away);
- compaction: a watch is canceled with compact_revision c only when a compaction at c
  happened and the watch still needed a revision below c; nothing follows the cancel.

Plus `valid`: each delivered event is the model's change (same key, type, value, revisions,
lease), and no response's header revision is below the events it carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.history import WatchEvent, WatchStream
from sim.model import ModelEvent, RevisionLog

GUARANTEES = ("ordered", "unique", "atomic", "reliable", "resumable", "bookmarkable", "prev_kv", "compaction", "valid")


@dataclass(frozen=True)
class WatchViolation:
    guarantee: str
    stream: int  # index into the checked streams
    message: str


@dataclass(frozen=True)
class WatchReport:
    streams: int
    events: int  # events delivered, over all streams
    violations: tuple[WatchViolation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def broken(self) -> set[str]:
        return {v.guarantee for v in self.violations}

    def summary(self) -> str:
        line = f"watch: {'ok' if self.ok else 'violation'} ({self.streams:,} streams, {self.events:,} events)"
        return "\n".join([line] + [f"  stream {v.stream}: {v.guarantee}: {v.message}" for v in self.violations])


def _watched(w: WatchStream, e: ModelEvent) -> bool:
    key = e.kv.key
    if not w.range_end:
        inside = key == w.key
    elif w.range_end == b"\x00":
        inside = key >= w.key
    else:
        inside = w.key <= key < w.range_end
    return inside and not (w.no_put and e.type == "PUT") and not (w.no_delete and e.type == "DELETE")


def _show(e: WatchEvent | ModelEvent) -> str:
    return f"{e.type} {e.kv.key.decode('latin-1')}@{e.kv.mod_revision}"


def check_watches(streams: Sequence[WatchStream], log: RevisionLog) -> WatchReport:
    violations: list[WatchViolation] = []
    delivered = 0
    for n, w in enumerate(streams):
        found = _check_stream(w, log)
        delivered += sum(len(r.events) for r in w.responses)
        violations.extend(WatchViolation(g, n, m) for g, m in found)
    return WatchReport(len(streams), delivered, tuple(violations))


def _check_stream(w: WatchStream, log: RevisionLog) -> list[tuple[str, str]]:
    """(guarantee, message) for each broken guarantee, at most one message per guarantee."""
    out: dict[str, str] = {}

    def fail(guarantee: str, message: str) -> None:
        out.setdefault(guarantee, message)

    watched = [e for e in log.events if _watched(w, e)]
    model_at = {(e.revision, e.kv.key): e for e in watched}
    start: int | None = w.start_revision or None
    if start is None and w.responses and w.responses[0].created:
        start = w.responses[0].revision + 1  # start 0: the revision after the one current at creation
    compacted_below = max(log.compactions, default=0)
    seen: set[tuple[int, bytes]] = set()
    response_of: dict[int, int] = {}  # revision -> the response that carried it
    last: ModelEvent | None = None
    first: WatchEvent | None = None
    progress = 0
    canceled = False
    for ri, resp in enumerate(w.responses):
        if canceled:
            if resp.events:
                fail("compaction", f"response {ri} carries events after the watch was canceled")
            continue
        if resp.events and resp.revision < max(e.revision for e in resp.events):
            fail("valid", f"response {ri} has header revision {resp.revision} below its events")
        for ev in resp.events:
            rev, key = ev.revision, ev.kv.key
            first = first or ev
            if start is not None and rev < start:
                fail("resumable", f"{_show(ev)} precedes the start revision {start}")
            if (rev, key) in seen:
                fail("unique", f"{_show(ev)} delivered twice")
                continue
            seen.add((rev, key))
            if response_of.setdefault(rev, ri) != ri:
                fail("atomic", f"revision {rev} split over responses {response_of[rev]} and {ri}")
            if rev <= progress:
                fail("bookmarkable", f"{_show(ev)} arrives after a progress notification at {progress}")
            me = model_at.get((rev, key))
            if me is None or me.type != ev.type or me.kv != ev.kv:
                want = "no such change" if me is None else f"the model has {me.type} {me.kv}"
                fail("valid", f"{_show(ev)} {ev.kv} is not the model's change ({want})")
                continue
            if last is not None and (me.revision, me.sub) < (last.revision, last.sub):
                fail("ordered", f"{_show(ev)} arrives after {_show(last)}")
            last = me if last is None or (me.revision, me.sub) > (last.revision, last.sub) else last
            if not w.prev_kv:
                if ev.prev_kv is not None:
                    fail("prev_kv", f"{_show(ev)} carries a prev_kv that was not asked for")
            elif ev.prev_kv != me.prev_kv and not (ev.prev_kv is None and rev - 1 < compacted_below):
                fail("prev_kv", f"{_show(ev)} has prev_kv {ev.prev_kv}, the model's value at {rev - 1} is {me.prev_kv}")
        if resp.progress_notify:
            low = start or 0
            missing = [e for e in watched if low <= e.revision <= resp.revision and (e.revision, e.kv.key) not in seen]
            if missing:
                fail("bookmarkable", f"progress at {resp.revision} before {_show(missing[0])} was delivered")
            progress = max(progress, resp.revision)
        if resp.canceled:
            c = resp.compact_revision
            if c:
                needed = last.revision + 1 if last is not None else start
                if c not in log.compactions:
                    fail("compaction", f"canceled with compact_revision {c}, but no compaction at {c} happened")
                elif needed is not None and needed >= c:
                    fail("compaction", f"canceled at compact_revision {c} while it needed {needed}, still available")
            canceled = True
    if first is not None and start is not None:
        expected = [e for e in watched if e.revision >= start]
        if expected and (expected[0].revision, expected[0].kv.key) != (first.revision, first.kv.key):
            want = _show(expected[0])
            fail("resumable", f"the first event is {_show(first)}; the first change from {start} is {want}")
    if first is not None and last is not None:
        lo, hi = first.revision, last.revision
        gap = [e for e in watched if lo <= e.revision <= hi and (e.revision, e.kv.key) not in seen]
        if gap:
            fail("reliable", f"{_show(gap[0])} was skipped")
    return sorted(out.items(), key=lambda kv: GUARANTEES.index(kv[0]))
