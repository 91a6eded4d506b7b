"""MVCC semantics over a KVBackend: ranges, puts, deletes, txns, compaction.

Follows etcd's mvcc/kvstore_txn.go and etcdserver/apply.go: what a read at a
revision sees, how revisions and versions move, what a txn's responses carry, and
which error each bad request gets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Protocol

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.gosort import go_sort, reverse
from rusd.core.mvcc.backend import KVBackend, KVReader
from rusd.core.mvcc.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

META_REVISION = b"revision"
META_COMPACT_REVISION = b"compact_revision"
_INT = struct.Struct(">q")


def get_int(view: KVReader, name: bytes, default: int = 0) -> int:
    raw = view.get_meta(name)
    return default if raw is None else int(_INT.unpack(raw)[0])


def put_int(backend: KVBackend, name: bytes, value: int) -> None:
    backend.put_meta(name, _INT.pack(value))


def current_revision(view: KVReader) -> int:
    """A fresh store is at revision 1, as etcd's."""
    return get_int(view, META_REVISION, 1)


def compact_revision(view: KVReader) -> int:
    """The last compaction's revision; -1 before any (etcd's compactMainRev)."""
    return get_int(view, META_COMPACT_REVISION, -1)


class LeaseBook(Protocol):
    """What the store needs of the lessor: existence checks and key attachment."""

    def exists(self, lease_id: int) -> bool: ...

    def attach(self, lease_id: int, key: bytes) -> None: ...

    def detach(self, lease_id: int, key: bytes) -> None: ...


def gte_range_end(range_end: bytes) -> bytes | None:
    """etcd's mkGteRange: empty -> single key (None); b"\\x00" -> unbounded (b"")."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


# -- reads -------------------------------------------------------------------


def _live_at(view: KVReader, key: bytes, end: bytes | None, rev: int) -> Iterator[KeyValue]:
    """Keys live at an old revision: per key, the newest stored revision <= rev."""
    current: KeyValue | None = None
    for _sub, kv in view.history(key, end):
        if current is not None and kv.key != current.key:
            if not current.is_tombstone:
                yield current
            current = None
        if kv.mod_revision <= rev:
            current = kv
    if current is not None and not current.is_tombstone:
        yield current


def read_keys(
    view: KVReader, key: bytes, end: bytes | None, rev: int, latest_rev: int
) -> Iterator[KeyValue]:
    """Keys in range as of `rev` (which the caller has validated)."""
    if rev >= latest_rev:
        return latest_keys(view, key, end)
    return _live_at(view, key, end, rev)


def latest_keys(view: KVReader, key: bytes, end: bytes | None) -> Iterator[KeyValue]:
    if end is None:
        kv = view.get(key)
        return iter(() if kv is None else (kv,))
    return view.range(key, end)


def check_revision(rev: int, latest_rev: int, compacted: int) -> int:
    """The revision a read runs at, or the compacted / future error."""
    if rev > latest_rev:
        raise EtcdError(errors.FUTURE_REV)
    if rev <= 0:
        return latest_rev
    if rev < compacted:
        raise EtcdError(errors.COMPACTED)
    return rev


# etcd's kvSortBy* Less functions (apply.go); the sort itself is Go's unstable
# sort.Sort, replayed by go_sort, so ties come out in etcd's order.
_SORT_LESS: dict[int, Callable[[KeyValue, KeyValue], bool]] = {
    SortTarget.KEY: lambda a, b: a.key < b.key,
    SortTarget.VERSION: lambda a, b: a.version < b.version,
    SortTarget.CREATE: lambda a, b: a.create_revision < b.create_revision,
    SortTarget.MOD: lambda a, b: a.mod_revision < b.mod_revision,
    SortTarget.VALUE: lambda a, b: a.value < b.value,
}


def range_at(view: KVReader, req: RangeRequest, latest_rev: int, header_rev: int) -> RangeResponse:
    """A Range as etcd applies it (apply.go Range): fetch, filter, sort, limit."""
    rev = check_revision(req.revision, latest_rev, compact_revision(view))
    filtered = bool(
        req.min_mod_revision or req.max_mod_revision or req.min_create_revision or req.max_create_revision
    )
    keys = read_keys(view, req.key, gte_range_end(req.range_end), rev, latest_rev)
    if req.count_only:
        return RangeResponse(revision=header_rev, count=sum(1 for _ in keys))
    # Fetch one more than the limit to learn whether there is more, unless sorting
    # or filtering needs every key first.
    fetch = 0 if (req.sort_order != SortOrder.NONE or filtered) else max(req.limit, 0)
    kvs: list[KeyValue] = []
    count = 0
    for kv in keys:
        if not fetch or count <= fetch:
            kvs.append(kv)
        count += 1
    if filtered:
        kvs = [kv for kv in kvs if _passes_filters(kv, req)]
    order = req.sort_order
    if req.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    # An unknown order sorts nothing (etcd 3.4), though every key was fetched above.
    # etcd also sort.Sorts by KEY ASCEND, a no-op: a range's keys are distinct and ascending.
    if order in (SortOrder.ASCEND, SortOrder.DESCEND) and not (
        req.sort_target == SortTarget.KEY and order == SortOrder.ASCEND
    ):
        less = _SORT_LESS[req.sort_target]
        go_sort(kvs, reverse(less) if order == SortOrder.DESCEND else less)
    more = False
    if req.limit > 0 and len(kvs) > req.limit:
        kvs = kvs[: req.limit]
        more = True
    if req.keys_only:
        kvs = [replace(kv, value=b"") for kv in kvs]
    return RangeResponse(revision=header_rev, kvs=tuple(kvs), more=more, count=count)


def _passes_filters(kv: KeyValue, req: RangeRequest) -> bool:
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_create_revision and kv.create_revision > req.max_create_revision:
        return False
    if req.min_create_revision and kv.create_revision < req.min_create_revision:
        return False
    return True


def read_range(view: KVReader, req: RangeRequest) -> RangeResponse:
    """A read-only Range against a snapshot."""
    rev = current_revision(view)
    return range_at(view, req, rev, rev)


# -- writes ------------------------------------------------------------------


class WriteTxn:
    """One write transaction: at most one new main revision, sub-revisions in op order.

    Reads through it see its own earlier writes (the backend batch is shared).
    """

    def __init__(self, backend: KVBackend, leases: LeaseBook) -> None:
        self.backend = backend
        self.leases = leases
        self.begin_rev = current_revision(backend)
        self.events: list[Event] = []

    @property
    def rev(self) -> int:
        """etcd's txn.Rev() after the writes so far: begin, or begin + 1 once changed."""
        return self.begin_rev + 1 if self.events else self.begin_rev

    def put(self, key: bytes, value: bytes, lease: int) -> int:
        rev = self.begin_rev + 1
        old = self.backend.get(key)
        if old is None:
            kv = KeyValue(key, rev, rev, 1, value, lease)
        else:
            kv = KeyValue(key, old.create_revision, rev, old.version + 1, value, lease)
            if old.lease and old.lease != lease:
                self.leases.detach(old.lease, key)
        self.backend.write(len(self.events), kv)
        self.events.append(Event(kv, old))
        if lease:
            self.leases.attach(lease, key)
        return rev

    def delete_range(self, key: bytes, end: bytes | None) -> int:
        if end is None:
            kv = self.backend.get(key)
            victims = [] if kv is None else [kv]
        else:
            victims = list(self.backend.range(key, end))
        rev = self.begin_rev + 1
        for kv in victims:
            tomb = KeyValue(kv.key, 0, rev, 0)
            self.backend.write(len(self.events), tomb)
            self.events.append(Event(tomb, kv))
            if kv.lease:
                self.leases.detach(kv.lease, kv.key)
        return len(victims)

    def range(self, req: RangeRequest) -> RangeResponse:
        # Inside a txn the store's revision already counts this txn's changes.
        return range_at(self.backend, req, self.rev, self.rev)

    def end(self, sink: list[Event] | None = None) -> None:
        """Close the txn; its events (for watchers) go to `sink` when given."""
        if self.events:
            put_int(self.backend, META_REVISION, self.begin_rev + 1)
            if sink is not None:
                sink.extend(self.events)


def apply_put(txn: WriteTxn, req: PutRequest) -> PutResponse:
    """apply.go Put; the caller has validated the request and the lease."""
    prev: KeyValue | None = None
    if req.ignore_value or req.ignore_lease or req.prev_kv:
        prev = txn.backend.get(req.key)
    if (req.ignore_value or req.ignore_lease) and prev is None:
        raise EtcdError(errors.KEY_NOT_FOUND)
    value = prev.value if req.ignore_value and prev is not None else req.value
    lease = prev.lease if req.ignore_lease and prev is not None else req.lease
    rev = txn.put(req.key, value, lease)
    return PutResponse(revision=rev, prev_kv=prev if req.prev_kv else None)


def apply_delete(txn: WriteTxn, req: DeleteRangeRequest) -> DeleteRangeResponse:
    end = gte_range_end(req.range_end)
    prev: tuple[KeyValue, ...] = ()
    if req.prev_kv:
        prev = tuple(latest_keys(txn.backend, req.key, end))
    deleted = txn.delete_range(req.key, end)
    return DeleteRangeResponse(revision=txn.rev, deleted=deleted, prev_kvs=prev)


def check_put_lease(req: PutRequest, leases: LeaseBook) -> None:
    if req.lease and not req.ignore_lease and not leases.exists(req.lease):
        raise EtcdError(errors.LEASE_NOT_FOUND)


def put(backend: KVBackend, leases: LeaseBook, req: PutRequest, sink: list[Event] | None = None) -> PutResponse:
    """A top-level Put: lease check first, then the write, as etcd."""
    check_put_lease(req, leases)
    txn = WriteTxn(backend, leases)
    resp = apply_put(txn, req)
    txn.end(sink)
    return resp


def delete_range(
    backend: KVBackend, leases: LeaseBook, req: DeleteRangeRequest, sink: list[Event] | None = None
) -> DeleteRangeResponse:
    txn = WriteTxn(backend, leases)
    resp = apply_delete(txn, req)
    txn.end(sink)
    return resp


# -- txn ---------------------------------------------------------------------


_INT_TARGETS: dict[int, Callable[[KeyValue], int]] = {
    CompareTarget.VERSION: lambda kv: kv.version,
    CompareTarget.CREATE: lambda kv: kv.create_revision,
    CompareTarget.MOD: lambda kv: kv.mod_revision,
    CompareTarget.LEASE: lambda kv: kv.lease,
}


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    """etcd's compareKV: the operand counts only when it matches the target."""
    result = 0
    if c.target == CompareTarget.VALUE:
        want = c.operand if c.operand_target == CompareTarget.VALUE and isinstance(c.operand, bytes) else b""
        result = (kv.value > want) - (kv.value < want)
    elif c.target in _INT_TARGETS:
        operand = c.operand if c.operand_target == c.target and isinstance(c.operand, int) else 0
        have = _INT_TARGETS[c.target](kv)
        result = (have > operand) - (have < operand)
    if c.result == CompareResult.EQUAL:
        return result == 0
    if c.result == CompareResult.NOT_EQUAL:
        return result != 0
    if c.result == CompareResult.GREATER:
        return result > 0
    if c.result == CompareResult.LESS:
        return result < 0
    return True


def _compare(view: KVReader, c: Compare) -> bool:
    kvs = list(latest_keys(view, c.key, gte_range_end(c.range_end)))
    if not kvs:
        if c.target == CompareTarget.VALUE:
            # A missing key has no value to compare: always false, as etcd.
            return False
        return _compare_kv(c, KeyValue(c.key, 0, 0, 0))
    return all(_compare_kv(c, kv) for kv in kvs)


def _txn_path(view: KVReader, req: TxnRequest) -> list[bool]:
    """The guard outcome of the txn and of each nested txn on a taken branch, in
    depth-first order, all against the state before the txn (etcd's compareToPath)."""
    ok = all(_compare(view, c) for c in req.compare)
    path = [ok]
    for op in req.success if ok else req.failure:
        if isinstance(op, TxnRequest):
            path.extend(_txn_path(view, op))
    return path


def _taken_ops(req: TxnRequest, path: Iterator[bool]) -> Iterator[RequestOp]:
    """The ops of the taken branches in the order they run, a nested txn's in its
    place (the order of etcd's checkRequests)."""
    for op in req.success if next(path) else req.failure:
        if isinstance(op, TxnRequest):
            yield from _taken_ops(op, path)
        else:
            yield op


def is_write(req: TxnRequest) -> bool:
    """etcd's !isTxnReadonly: any op but a range on either branch makes a write txn,
    a nested txn too even if it only reads (so it is proposed and size-checked)."""
    return not all(isinstance(op, RangeRequest) for op in (*req.success, *req.failure))


def _check_taken_ops(view: KVReader, leases: LeaseBook, req: TxnRequest, path: list[bool]) -> None:
    """The pre-checks etcd runs before applying a txn: put preconditions (write txns
    only), then the revisions of ranges, each over the taken ops in order.

    etcd checks that the key of an ignore_value/ignore_lease put exists before the
    txn; if an earlier op of the txn deleted it (a from-key delete escapes the
    duplicate-key check), etcd panics applying the put. We refuse such a txn here
    with the put's error instead, so that a txn never fails half-applied.
    """
    begin = current_revision(view)
    if is_write(req):
        ops = list(_taken_ops(req, iter(path)))
        ignoring = any(isinstance(op, PutRequest) and (op.ignore_value or op.ignore_lease) for op in ops)
        deleted: set[bytes] = set()
        for op in ops:
            if ignoring and isinstance(op, DeleteRangeRequest):
                deleted.update(kv.key for kv in latest_keys(view, op.key, gte_range_end(op.range_end)))
            elif isinstance(op, PutRequest):
                if (op.ignore_value or op.ignore_lease) and (op.key in deleted or view.get(op.key) is None):
                    raise EtcdError(errors.KEY_NOT_FOUND)
                if op.lease and not leases.exists(op.lease):
                    raise EtcdError(errors.LEASE_NOT_FOUND)
    compacted = compact_revision(view)
    for op in _taken_ops(req, iter(path)):
        if isinstance(op, RangeRequest) and op.revision:
            if op.revision > begin:
                raise EtcdError(errors.FUTURE_REV)
            if op.revision < compacted:
                raise EtcdError(errors.COMPACTED)


def txn(backend: KVBackend, leases: LeaseBook, req: TxnRequest, sink: list[Event] | None = None) -> TxnResponse:
    """apply.go Txn: guards on the old state, pre-checks, then the ops in order."""
    path = _txn_path(backend, req)
    _check_taken_ops(backend, leases, req, path)
    wtxn = WriteTxn(backend, leases)
    resp = _apply_txn(wtxn, req, iter(path))
    wtxn.end(sink)
    return replace(resp, revision=wtxn.rev)


def _apply_txn(wtxn: WriteTxn, req: TxnRequest, path: Iterator[bool]) -> TxnResponse:
    """Nested txn responses carry revision 0 in their header, as etcd's."""
    ok = next(path)
    responses: list[ResponseOp] = []
    for op in req.success if ok else req.failure:
        if isinstance(op, RangeRequest):
            responses.append(wtxn.range(op))
        elif isinstance(op, PutRequest):
            responses.append(apply_put(wtxn, op))
        elif isinstance(op, DeleteRangeRequest):
            responses.append(apply_delete(wtxn, op))
        elif isinstance(op, TxnRequest):
            responses.append(_apply_txn(wtxn, op, path))
    return TxnResponse(revision=0, succeeded=ok, responses=tuple(responses))


# -- compaction ---------------------------------------------------------------


def check_compact(view: KVReader, rev: int) -> None:
    if rev <= compact_revision(view):
        raise EtcdError(errors.COMPACTED)
    if rev > current_revision(view):
        raise EtcdError(errors.FUTURE_REV)


def compact(backend: KVBackend, rev: int) -> None:
    """Forget history below `rev`: per key keep the newest revision <= rev, unless
    that revision is a tombstone older than `rev` (then the key is gone entirely). A
    tombstone at `rev` itself stays until a later compaction, so a watch from `rev`
    still sees the delete (etcd's fix of issue 18089, in 3.4.34 and 3.5.15)."""
    check_compact(backend, rev)
    put_int(backend, META_COMPACT_REVISION, rev)
    doomed: list[tuple[bytes, int, int]] = []
    group: list[tuple[int, KeyValue]] = []
    for sub, kv in backend.history(b"", b""):
        if group and group[0][1].key != kv.key:
            doomed.extend(_compacted_in(group, rev))
            group = []
        group.append((sub, kv))
    if group:
        doomed.extend(_compacted_in(group, rev))
    for key, mod, sub in doomed:
        backend.remove(key, mod, sub)


def _compacted_in(group: list[tuple[int, KeyValue]], rev: int) -> Iterable[tuple[bytes, int, int]]:
    """One key's stored revisions (in (main, sub) order) that compaction at `rev` drops."""
    old = [(sub, kv) for sub, kv in group if kv.mod_revision <= rev]
    if not old:
        return []
    last = old[-1][1]
    keep_last = not last.is_tombstone or last.mod_revision == rev
    victims = old[:-1] if keep_last else old
    return [(kv.key, kv.mod_revision, sub) for sub, kv in victims]
