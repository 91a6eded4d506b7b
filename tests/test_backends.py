"""One suite for both storage implementations: the in-memory reference and LMDB.

Every behavioural test runs three ways: against MemoryBackend+MemoryLog, against an
open LMDB batch (reads see the batch's own writes), and against LMDB views (each read
step commits the batch and reads from a fresh snapshot). A hypothesis test then runs
random write sequences against both and compares every read API; the LMDB-only tests
at the end cover durability, isolation, threads and damaged data directories.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rusd.storage.lmdb as lmdb_store
from rusd.core.log import Entry
from rusd.core.mvcc.types import KeyValue
from rusd.storage.errors import StorageError
from rusd.storage.lmdb import _TRUNC as TRUNC
from rusd.storage.lmdb import LmdbBatch, LmdbStore, LmdbView
from rusd.storage.memory import MemoryBackend, MemoryLog

MAP_SIZE = 64 << 20

K = b"k"
T = TRUNC - 1  # a key of T plain bytes escapes to just under the truncation point
# Keys that stress the encoding: NULs and 0xFF around prefixes, and long keys (the
# escaped form crosses the truncation point) that share long prefixes.
SHORT_KEYS = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"a\x00\x00", b"a\xff", b"\xff", b"\xff\xff"]
LONG_KEYS = [
    K * T,  # escaped form just short: shares T bytes with the long keys below
    K * T + b"\x00",  # the truncation point splits an escape pair
    K * T + b"\x00\x00",
    K * T + b"\x00" + b"z" * 100,
    K * T + b"\x01",
    K * (T + 1),
    K * (T + 2),
    K * 599 + b"\x00",
    K * 600,
    K * 600 + b"\x00",
    K * 600 + b"\x01",
    K * 600 + b"\xff",
    K * 4999 + b"\x00",
    K * 4999 + b"l",
    K * 5000,
    K * 5000 + b"\x00",
    b"\x00" * (TRUNC // 2 - 1),  # escapes to TRUNC - 2 bytes: short
    b"\x00" * (TRUNC // 2 - 1) + b"\x01",
    b"\x00" * (TRUNC // 2),  # escapes to TRUNC bytes: long
    b"\x00" * 300,
    b"\x00" * 300 + b"\x01",
    b"\xff" * 600,
]
KEYS = SHORT_KEYS + LONG_KEYS


class MemoryPair(MemoryBackend, MemoryLog):
    """The reference KVBackend and LogStore as one object, like an LmdbBatch."""

    def __init__(self) -> None:
        MemoryBackend.__init__(self)
        MemoryLog.__init__(self)


class Harness:
    """Writes go to `w`; `reader()` is what the test reads back from."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.store: LmdbStore | None = None
        self.views: list[LmdbView] = []
        if kind == "memory":
            self.w: Any = MemoryPair()
        else:
            self.store = LmdbStore(path, MAP_SIZE)
            self.w = self.store.begin()

    def reader(self) -> Any:
        if self.kind != "lmdb-view":
            return self.w
        assert self.store is not None
        self.w.commit()
        self.w = self.store.begin()
        view = self.store.snapshot()
        self.views.append(view)
        return view

    def close(self) -> None:
        for view in self.views:
            view.close()
        if self.store is not None:
            self.w.abort()
            self.store.close()


@pytest.fixture(params=["memory", "lmdb-batch", "lmdb-view"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path / "db")
    yield harness
    harness.close()


def kv(key: bytes, rev: int, version: int = 1, value: bytes | None = None, create: int = 0) -> KeyValue:
    if version == 0:
        return KeyValue(key, 0, rev, 0)
    return KeyValue(key, create or rev, rev, version, b"v%d:" % rev + key[:8] if value is None else value)


def expected_range(keys: list[bytes], lo: bytes, end: bytes) -> list[bytes]:
    return [k for k in sorted(keys) if k >= lo and (not end or k < end)]


# -- both implementations --------------------------------------------------------------


def test_meta(h: Harness) -> None:
    assert h.reader().get_meta(b"revision") is None
    h.w.put_meta(b"revision", b"\x00" * 8)
    h.w.put_meta(b"", b"empty name")
    h.w.put_meta(b"\x00", b"")
    r = h.reader()
    assert r.get_meta(b"revision") == b"\x00" * 8
    assert r.get_meta(b"") == b"empty name"
    assert r.get_meta(b"\x00") == b""
    h.w.put_meta(b"revision", b"2")
    assert h.reader().get_meta(b"revision") == b"2"


def test_meta_items_by_prefix_and_delete(h: Harness) -> None:
    assert list(h.reader().meta_items(b"lease/")) == []
    for name in (b"lease/\x00\x02", b"lease/\x00\x01", b"lease", b"lease0", b"leas", b"lease/\xff"):
        h.w.put_meta(name, b"v" + name[-1:])
    h.w.put_meta(b"revision", b"r")
    r = h.reader()
    assert list(r.meta_items(b"lease/")) == [
        (b"lease/\x00\x01", b"v\x01"), (b"lease/\x00\x02", b"v\x02"), (b"lease/\xff", b"v\xff"),
    ]
    assert [n for n, _ in r.meta_items(b"lease")] == [
        b"lease", b"lease/\x00\x01", b"lease/\x00\x02", b"lease/\xff", b"lease0",
    ]
    assert list(r.meta_items(b"zzz")) == []
    # the empty prefix: every meta value the caller stored
    assert [n for n, _ in r.meta_items(b"")][-1] == b"revision"
    h.w.delete_meta(b"lease/\x00\x01")
    h.w.delete_meta(b"lease/absent")  # dropping nothing is fine
    r = h.reader()
    assert r.get_meta(b"lease/\x00\x01") is None
    assert [n for n, _ in r.meta_items(b"lease/")] == [b"lease/\x00\x02", b"lease/\xff"]


def test_get_and_range_over_tricky_keys(h: Harness) -> None:
    order = KEYS[:]
    random.Random(7).shuffle(order)
    for i, key in enumerate(order):
        h.w.write(0, kv(key, i + 2, value=b"value of %d" % i + key))
    r = h.reader()
    for i, key in enumerate(order):
        got = r.get(key)
        assert got == kv(key, i + 2, value=b"value of %d" % i + key)
    assert r.get(b"missing") is None and r.get(K * 700) is None and r.get(K * T + b"\x00\x01") is None
    assert [x.key for x in r.range(b"", b"")] == sorted(KEYS)
    bounds = [*KEYS, K * 540, K * T + b"\x00\x01", b"\x00" * 250, b"b"]
    for lo, end in itertools.product(bounds, [*bounds, b""]):
        assert [x.key for x in r.range(lo, end)] == expected_range(KEYS, lo, end), (lo[:8], len(lo), end[:8], len(end))


def test_range_with_end_at_or_below_key_is_empty(h: Harness) -> None:
    for key in (b"a", b"b", b"c", K * 600):
        h.w.write(0, kv(key, 2))
    r = h.reader()
    assert list(r.range(b"b", b"b")) == []
    assert list(r.range(b"c", b"a")) == []
    assert list(r.range(K * 600, K * 600)) == []
    assert list(r.history(b"c", b"a")) == []
    assert [x.key for x in r.range(b"b", b"")] == [b"b", b"c", K * 600]


def test_history_ordering_and_bounds(h: Harness) -> None:
    keys = [b"a", b"a\x00", b"b", K * 600, K * 600 + b"\x00", K * T, K * 5000]
    rev = 2
    written: list[tuple[bytes, int]] = []
    # interleave keys and revisions so LMDB insertion order is not key order
    for _round in range(3):
        for key in reversed(keys):
            h.w.write(0, kv(key, rev, version=_round + 1, create=2))
            written.append((key, rev))
            rev += 1
    r = h.reader()
    everything = sorted(written)
    assert [(x.key, x.mod_revision) for _s, x in r.history(b"", b"")] == everything
    for key in keys:
        assert [(x.key, x.mod_revision) for _s, x in r.history(key, None)] == [e for e in everything if e[0] == key]
    assert list(r.history(b"zz", None)) == [] and list(r.history(K * 700, None)) == []
    for lo, end in itertools.product([b"", *keys], [*keys, b"", b"c"]):
        want = [e for e in everything if e[0] >= lo and (not end or e[0] < end)]
        assert [(x.key, x.mod_revision) for _s, x in r.history(lo, end)] == want


def test_tombstones_leave_latest_but_stay_in_history(h: Harness) -> None:
    for sub, key in enumerate((b"a", K * 600)):
        h.w.write(sub, kv(key, 2))
        h.w.write(sub, kv(key, 3, version=2, create=2))
    h.w.write(0, kv(b"a", 4, version=0))
    h.w.write(1, kv(K * 600, 4, version=0))
    h.w.write(0, kv(b"b", 5))
    r = h.reader()
    assert r.get(b"a") is None and r.get(K * 600) is None
    assert [x.key for x in r.range(b"", b"")] == [b"b"]
    hist = [(x.key, x.mod_revision, x.version) for _s, x in r.history(b"", b"")]
    assert hist == [
        (b"a", 2, 1),
        (b"a", 3, 2),
        (b"a", 4, 0),
        (b"b", 5, 1),
        (K * 600, 2, 1),
        (K * 600, 3, 2),
        (K * 600, 4, 0),
    ]
    # recreated after the tombstone
    h.w.write(0, kv(b"a", 6))
    assert h.reader().get(b"a") == kv(b"a", 6)


def test_changes_in_revision_order(h: Harness) -> None:
    writes = [
        (3, 0, b"b"),
        (2, 1, K * 600),
        (2, 0, b"a"),
        (5, 2, b"a"),
        (5, 0, K * 5000),
        (5, 1, b"\x00"),
        (4, 0, b"b"),
    ]
    for main, sub, key in writes:
        h.w.write(sub, kv(key, main))
    r = h.reader()
    assert [(x.mod_revision, s, x.key) for s, x in r.changes(0)] == sorted(writes)
    assert [(x.mod_revision, s) for s, x in r.changes(4)] == [(5, 0), (5, 1), (5, 2)]
    assert list(r.changes(5)) == [] and len(list(r.changes(-1))) == len(writes)
    assert all(x == kv(x.key, x.mod_revision) for _s, x in r.changes(0))


def test_remove_drops_one_revision(h: Harness) -> None:
    for sub, key in enumerate((b"a", K * 600)):
        h.w.write(sub, kv(key, 2))
        h.w.write(sub, kv(key, 3, version=2, create=2))
    h.w.remove(b"a", 2, 0)
    h.w.remove(K * 600, 3, 1)
    r = h.reader()
    assert [(x.key, x.mod_revision) for _s, x in r.history(b"", b"")] == [(b"a", 3), (K * 600, 2)]
    assert [(x.key, x.mod_revision) for _s, x in r.changes(0)] == [(K * 600, 2), (b"a", 3)]
    assert r.get(b"a") == kv(b"a", 3, version=2, create=2)
    assert r.get(K * 600) == kv(K * 600, 3, version=2, create=2)  # latest is not compaction's business
    for key, rev, sub in ((b"a", 2, 0), (b"a", 3, 1), (b"zz", 1, 0), (K * 600, 3, 1), (K * 601, 2, 1)):
        with pytest.raises(KeyError):
            h.w.remove(key, rev, sub)


def test_a_key_can_change_twice_in_one_revision(h: Harness) -> None:
    """One txn may delete a key (a from-key delete escapes etcd's duplicate check) and
    put it again: both changes are kept, in sub-revision order."""
    h.w.write(0, kv(b"a", 2, value=b"first"))
    h.w.write(0, KeyValue(b"a", 0, 3, 0))
    h.w.write(1, kv(b"a", 3, value=b"again"))
    r = h.reader()
    assert [(x.mod_revision, s, x.version) for s, x in r.history(b"a", None)] == [(2, 0, 1), (3, 0, 0), (3, 1, 1)]
    assert [(x.mod_revision, s, x.value) for s, x in r.changes(2)] == [(3, 0, b""), (3, 1, b"again")]
    assert r.get(b"a") == kv(b"a", 3, value=b"again")
    h.w.remove(b"a", 3, 0)
    r = h.reader()
    assert [(x.mod_revision, s) for s, x in r.history(b"", b"")] == [(2, 0), (3, 1)]


def test_values_and_fields_round_trip(h: Harness) -> None:
    big = os.urandom(1 << 20)
    items = [
        KeyValue(b"k1", 7, 9, 3, b"", 0),
        KeyValue(b"k2", 2**62, 2**62 + 1, 2**40, big, -5),
        KeyValue(K * 5000, 1, 2, 2, big, 2**63 - 1),
    ]
    for item in items:
        h.w.write(5, item)
    r = h.reader()
    for item in items:
        assert r.get(item.key) == item
        assert list(r.history(item.key, None)) == [(5, item)]


def test_log(h: Harness) -> None:
    r = h.reader()
    assert (r.first_index(), r.last_index(), r.entries(0, 100)) == (1, 0, [])
    h.w.append_entries([])
    h.w.append_entries([Entry(i, 1, b"e%d" % i) for i in range(1, 6)])
    r = h.reader()
    assert (r.first_index(), r.last_index()) == (1, 5)
    assert [e.index for e in r.entries(2, 4)] == [2, 3]
    assert r.entries(0, 100) == [Entry(i, 1, b"e%d" % i) for i in range(1, 6)]
    assert r.entries(4, 2) == [] and r.entries(6, 9) == []
    # overwrite a suffix: everything from index 3 on is replaced
    h.w.append_entries([Entry(3, 2, b"x3"), Entry(4, 2, b"")])
    r = h.reader()
    assert r.last_index() == 4
    assert r.entries(1, 10) == [Entry(1, 1, b"e1"), Entry(2, 1, b"e2"), Entry(3, 2, b"x3"), Entry(4, 2, b"")]
    h.w.append_entries([Entry(5, 2, b"x5")])
    h.w.compact_log(2)
    r = h.reader()
    assert (r.first_index(), r.last_index()) == (3, 5)
    assert [e.index for e in r.entries(0, 100)] == [3, 4, 5]
    h.w.compact_log(1)  # below the first index: nothing to do
    assert h.reader().first_index() == 3
    h.w.compact_log(99)  # past the end: empty, next index stays last + 1
    r = h.reader()
    assert (r.first_index(), r.last_index(), r.entries(0, 100)) == (6, 5, [])
    # an empty log starts wherever the next append says (snapshot install)
    h.w.append_entries([Entry(20, 3, b"s"), Entry(21, 3, b"t")])
    r = h.reader()
    assert (r.first_index(), r.last_index()) == (20, 21)
    # an append before the first index replaces the whole log
    h.w.append_entries([Entry(18, 4, b"u")])
    r = h.reader()
    assert (r.first_index(), r.last_index(), r.entries(0, 100)) == (18, 18, [Entry(18, 4, b"u")])
    with pytest.raises(ValueError):
        h.w.append_entries([Entry(20, 4, b"gap")])
    with pytest.raises(ValueError):
        h.w.append_entries([Entry(19, 4, b"a"), Entry(21, 4, b"b")])


def test_sizes(h: Harness) -> None:
    r = h.reader()
    before = r.size()
    assert 0 <= r.size_in_use() <= before
    for i in range(300):
        h.w.write(0, kv(b"key%05d" % i, i + 2, value=b"x" * 200))
    r = h.reader()
    assert r.size() > before
    assert 0 < r.size_in_use() <= r.size()


# -- random sequences: LMDB must match the reference exactly ---------------------------

POOL = [*SHORT_KEYS[1:], b"b", b"b\x00", *LONG_KEYS[::2], K * 600 + b"\x00\x00", K * 5000 + b"\x01"]
BOUNDS = [b"", b"\x00", b"a\x00", b"b", K * T + b"\x00", K * 600, K * 600 + b"\x00\x01", K * 5000, b"\xff"]
META_NAMES = [b"revision", b"compact", b"\x00"]

op_strategy = st.one_of(
    st.tuples(
        st.just("put"),
        st.integers(0, len(POOL) - 1),
        st.integers(1, 12),
        st.integers(1, 4),
        st.binary(max_size=6),
        st.integers(0, 3),
    ),
    st.tuples(st.just("delete"), st.integers(0, len(POOL) - 1), st.integers(1, 12)),
    st.tuples(st.just("remove"), st.integers(0, 10_000)),
    st.tuples(st.just("meta"), st.sampled_from(META_NAMES), st.binary(max_size=4)),
    st.tuples(st.just("delete_meta"), st.sampled_from(META_NAMES)),
    st.tuples(st.just("append"), st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 5)),
    st.tuples(st.just("compact_log"), st.integers(0, 14)),
    st.tuples(st.just("commit")),
)


def observe(r: Any) -> dict[str, Any]:
    """Everything the read APIs say, for comparing two implementations."""
    return {
        "get": [r.get(k) for k in POOL],
        "range": [list(r.range(lo, end)) for lo, end in itertools.product(BOUNDS, BOUNDS)],
        "history": [list(r.history(lo, end)) for lo, end in itertools.product(BOUNDS, BOUNDS)],
        "history_key": [list(r.history(k, None)) for k in POOL],
        "changes": [list(r.changes(after)) for after in (-1, 0, 3, 7, 11)],
        "meta": [r.get_meta(n) for n in META_NAMES],
        "meta_items": [list(r.meta_items(p)) for p in (b"", b"a", b"r")],
        "log": (r.first_index(), r.last_index(), r.entries(0, 100), r.entries(3, 7)),
    }


def apply(ops: list[tuple[Any, ...]], mem: MemoryPair, store: LmdbStore) -> LmdbBatch:
    batch = store.begin()
    sub = itertools.count()
    for op in ops:
        name = op[0]
        targets: list[Any] = [mem, batch]
        if name == "put":
            _, i, rev, version, value, lease = op
            item = KeyValue(POOL[i], 1, rev, version, value, lease)
            s = next(sub)  # (main, sub) is unique per write, as the store guarantees
            for t in targets:
                t.write(s, item)
        elif name == "delete":
            _, i, rev = op
            s = next(sub)
            for t in targets:
                t.write(s, KeyValue(POOL[i], 0, rev, 0))
        elif name == "remove":
            stored = [(x.key, x.mod_revision, s) for s, x in mem.history(b"", b"")]
            victim = stored[op[1] % len(stored)] if stored else (b"nope", 1, 0)
            if op[1] % 7 == 0:
                victim = (victim[0] + b"?", victim[1], victim[2])  # a revision that is not there
            outcomes = []
            for t in targets:
                try:
                    t.remove(*victim)
                    outcomes.append("ok")
                except KeyError:
                    outcomes.append("KeyError")
            assert outcomes[0] == outcomes[1]
        elif name == "meta":
            for t in targets:
                t.put_meta(op[1], op[2])
        elif name == "delete_meta":
            for t in targets:
                t.delete_meta(op[1])
        elif name == "append":
            _, r, n, term = op
            first, last = mem.first_index(), mem.last_index()
            lo = max(first - 2, 1)
            start = lo + r % (last + 2 - lo) if last >= first else 1 + r % 12
            entries = [Entry(start + j, term, b"%d/%d" % (start + j, term)) for j in range(n)]
            for t in targets:
                t.append_entries(entries)
        elif name == "compact_log":
            for t in targets:
                t.compact_log(op[1])
        else:
            batch.commit()
            with store.snapshot() as view:
                assert observe(view) == observe(mem)
            batch = store.begin()
        assert observe(batch) == observe(mem), op
    return batch


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(op_strategy, min_size=3, max_size=60))
def test_lmdb_matches_memory(ops: list[tuple[Any, ...]], tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("hyp") / "db"
    mem = MemoryPair()
    with LmdbStore(path, MAP_SIZE) as store:
        apply(ops, mem, store).commit()
    with LmdbStore(path, MAP_SIZE) as store, store.snapshot() as view:
        assert observe(view) == observe(mem)


# -- LMDB alone --------------------------------------------------------------------------


def fill(batch: LmdbBatch, n: int = 3) -> None:
    for i in range(n):
        batch.write(i, kv(b"key%d" % i, 2))
    batch.write(n, kv(K * 600, 2))
    batch.put_meta(b"revision", b"2")
    batch.append_entries([Entry(1, 1, b"one"), Entry(2, 1, b"two")])


def test_aborted_batch_is_invisible_after_reopen(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        fill(batch)
        batch.abort()
        batch.abort()  # idempotent
        fill(store.begin())  # left open: close() aborts it
    with LmdbStore(tmp_path, MAP_SIZE) as store, store.snapshot() as view:
        assert list(view.range(b"", b"")) == [] and list(view.history(b"", b"")) == []
        assert view.get_meta(b"revision") is None
        assert (view.first_index(), view.last_index()) == (1, 0)


def test_committed_batch_survives_reopen(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        fill(batch)
        batch.commit()
        with pytest.raises(RuntimeError):
            batch.commit()
        batch.abort()  # no-op once finished
    with LmdbStore(tmp_path, MAP_SIZE) as store, store.snapshot() as view:
        assert [x.key for x in view.range(b"", b"")] == [b"key0", b"key1", b"key2", K * 600]
        assert view.get(K * 600) == kv(K * 600, 2)
        assert len(list(view.changes(0))) == 4
        assert view.get_meta(b"revision") == b"2"
        assert view.entries(1, 3) == [Entry(1, 1, b"one"), Entry(2, 1, b"two")]


def test_views_are_snapshots(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        before = store.snapshot()
        batch = store.begin()
        during = store.snapshot()
        fill(batch)
        assert batch.get(b"key0") is not None
        assert during.get(b"key0") is None  # a view never sees an open batch
        batch.commit()
        after = store.snapshot()
        for view in (before, during):
            assert view.get(b"key0") is None and list(view.range(b"", b"")) == []
            assert view.last_index() == 0 and view.get_meta(b"revision") is None
        assert after.get(b"key0") == kv(b"key0", 2) and after.last_index() == 2
        for view in (before, during, after):
            view.close()


def test_view_is_usable_from_another_thread(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        fill(batch, 50)
        batch.commit()
        view = store.snapshot()
        batch = store.begin()  # a writer is active meanwhile
        batch.write(0, kv(b"key0", 3, version=2, create=2))
        results: list[Any] = []

        def read() -> None:
            try:
                results.append((len(list(view.range(b"", b""))), view.get(b"key0"), view.entries(0, 9)))
                view.close()  # closed on a thread other than the opener's
            except BaseException as exc:
                results.append(exc)

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
        assert results == [(51, kv(b"key0", 2), [Entry(1, 1, b"one"), Entry(2, 1, b"two")])]
        batch.commit()


def test_one_batch_at_a_time(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        with pytest.raises(RuntimeError):
            store.begin()
        batch.commit()
        store.begin().abort()
    with pytest.raises(RuntimeError):
        store.begin()


def test_another_process_reads_while_the_writer_writes(tmp_path: Path) -> None:
    """The file alone answers a Range, without blocking on the writer's open batch."""
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        fill(batch)
        batch.commit()
        batch = store.begin()
        batch.write(0, kv(b"uncommitted", 3))
        code = (
            "import sys; from rusd.storage.lmdb import LmdbStore\n"
            "with LmdbStore(sys.argv[1], readonly=True) as s, s.snapshot() as v:\n"
            "    print(sorted(len(x.key) for x in v.range(b'', b'')), len(list(v.history(b'key1', None))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.split("\n")[0] == "[4, 4, 4, 600] 1"
        batch.abort()


def test_long_key_hash_collision_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class ConstantHash:
        @staticmethod
        def blake2b(data: bytes, digest_size: int) -> Any:
            return hashlib.blake2b(b"same", digest_size=digest_size)

    monkeypatch.setattr(lmdb_store, "hashlib", ConstantHash)
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        batch.write(0, kv(K * 600 + b"a", 2))
        batch.write(1, kv(K * 600 + b"a", 3, version=0))
        with pytest.raises(StorageError, match="collision"):
            batch.write(2, kv(K * 600 + b"b", 4))  # clashes with a.'s history
        batch.write(3, kv(b"j" * 700, 5))  # another truncated prefix: no clash
        assert batch.get(K * 600 + b"b") is None and list(batch.history(K * 600 + b"b", None)) == []
        batch.abort()


def test_map_full_is_a_storage_error(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, 1 << 20) as store:
        batch = store.begin()
        with pytest.raises(StorageError, match=str(tmp_path)):
            for i in range(100):
                batch.write(i, kv(b"key%d" % i, 2, value=os.urandom(100_000)))
        batch.abort()


def test_defragment_keeps_data_and_shrinks(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store:
        batch = store.begin()
        for i in range(2000):
            batch.write(i, kv(b"key%05d" % i, 2, value=b"x" * 500))
        batch.commit()
        batch = store.begin()
        for i in range(1990):
            batch.remove(b"key%05d" % i, 2, i)
        batch.commit()
        with store.snapshot() as view:
            size, in_use = view.size(), view.size_in_use()
            assert in_use < size // 2
        stale = store.snapshot()
        store.defragment()
        with pytest.raises(lmdb.Error):
            stale.get(b"key01995")  # views from before are invalidated, not left dangling
        stale.close()
        with store.snapshot() as view:
            assert view.size() < size // 2
            assert len(list(view.range(b"", b""))) == 2000 and len(list(view.history(b"", b""))) == 10
        batch = store.begin()
        batch.write(0, kv(b"after", 3))
        batch.commit()
    with LmdbStore(tmp_path, MAP_SIZE) as store, store.snapshot() as view:
        assert view.get(b"after") == kv(b"after", 3)


def test_the_same_store_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE), pytest.raises(StorageError, match="already open"):
        LmdbStore(tmp_path, MAP_SIZE)


def test_meta_names_are_limited_by_the_lmdb_key_size(tmp_path: Path) -> None:
    with LmdbStore(tmp_path, MAP_SIZE) as store, store.begin() as batch:
        batch.put_meta(b"m" * 510, b"fits")
        assert batch.get_meta(b"m" * 510) == b"fits" and batch.get_meta(b"m" * 511) is None
        with pytest.raises(ValueError):
            batch.put_meta(b"m" * 511, b"too long")


def test_interrupted_creation_is_redone(tmp_path: Path) -> None:
    (tmp_path / ".rusd-init").mkdir()
    (tmp_path / ".rusd-init" / "data.mdb").write_bytes(b"half-made")
    (tmp_path / ".rusd-init" / "lock.mdb").write_bytes(b"")
    with LmdbStore(tmp_path, MAP_SIZE) as store, store.snapshot() as view:
        assert view.last_index() == 0
    assert sorted(os.listdir(tmp_path)) == ["data.mdb", "lock.mdb"]


# -- damaged or foreign data directories ------------------------------------------------


def digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def make_store(path: Path, n: int = 10) -> Path:
    with LmdbStore(path, MAP_SIZE) as store:
        batch = store.begin()
        for i in range(n):
            batch.write(i, kv(b"key%06d" % i, 2, value=b"v" * 100))
        batch.commit()
    return path / "data.mdb"


def assert_refused(path: Path, *, readonly: bool = False) -> StorageError:
    files = digest(path) if path.is_dir() else None
    data = path / "data.mdb"
    before = data.read_bytes() if data.exists() else None
    with pytest.raises(StorageError) as info:
        LmdbStore(path, MAP_SIZE, readonly=readonly)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    # no chained lmdb traceback: the one line is the whole story
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    if before is not None:
        assert data.read_bytes() == before  # no repair, no overwrite
    if files is not None:
        after = digest(path)
        after.pop("lock.mdb", None)  # LMDB may create its lock file
        files.pop("lock.mdb", None)
        assert after == files
    return info.value


def test_truncated_to_a_few_bytes(tmp_path: Path) -> None:
    data = make_store(tmp_path)
    os.truncate(data, 5)
    assert_refused(tmp_path)


def test_truncated_to_empty(tmp_path: Path) -> None:
    data = make_store(tmp_path)
    os.truncate(data, 0)
    assert "empty" in str(assert_refused(tmp_path))


def test_truncated_midway(tmp_path: Path) -> None:
    data = make_store(tmp_path, 3000)
    os.truncate(data, data.stat().st_size // 2)
    assert "truncated" in str(assert_refused(tmp_path))


def test_garbage_header(tmp_path: Path) -> None:
    data = make_store(tmp_path)
    with open(data, "r+b") as f:
        f.write(random.Random(1).randbytes(256))
    assert_refused(tmp_path)


def test_garbage_second_meta_page(tmp_path: Path) -> None:
    data = make_store(tmp_path)
    with open(data, "r+b") as f:
        f.seek(4096)
        f.write(b"\xa5" * 256)
    assert_refused(tmp_path)


def test_random_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    assert_refused(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "sub"]


def test_lost_data_file(tmp_path: Path) -> None:
    """A lock file without its data file: the data is gone, do not start afresh."""
    data = make_store(tmp_path)
    data.unlink()
    assert_refused(tmp_path)
    assert not data.exists()


def test_os_errors_are_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError, match="Not a directory"):
        LmdbStore(tmp_path / "file" / "db", MAP_SIZE)


def test_data_file_written_by_something_else(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(b"SQLite format 3\x00" + bytes(8000))
    assert_refused(tmp_path)


def test_a_plain_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with pytest.raises(StorageError, match="not a directory"):
        LmdbStore(path, MAP_SIZE)
    assert path.read_bytes() == b"x"


def test_foreign_lmdb_environment(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), map_size=MAP_SIZE, max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"somebody", b"else")
    env.close()
    assert "not an rusd store" in str(assert_refused(tmp_path))
    assert "not an rusd store" in str(assert_refused(tmp_path, readonly=True))


def test_unknown_format_version(tmp_path: Path) -> None:
    make_store(tmp_path)
    env = lmdb.open(str(tmp_path), map_size=MAP_SIZE, max_dbs=8)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"iformat", b"rusd-lmdb/99", db=meta)
    env.close()
    assert "format" in str(assert_refused(tmp_path))


def test_readonly_needs_an_existing_store(tmp_path: Path) -> None:
    assert_refused(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing" / "data.mdb").exists()
