"""The etcd model the checkers replay histories against: revisions, compaction, per-key
create/mod revision, version and lease, leases with attached keys.

It is written from etcd's documented behaviour (docs/checkers.md, ../shared/ETCD_SEMANTICS.md),
independently of rusd/core/mvcc, so that a bug shared by both cannot hide.

The state is mutable with an undo journal rather than immutable: the linearizability
search keeps one model and walks it forward and back (`mark` / `rollback`), so a
100,000-operation history never holds 100,000 copies of the key space. Memoization uses
`fingerprint()`, which is maintained incrementally: the revision, the compact revision and
XOR-hashes of every (key, revision) entry ever written and of the leases. Two models with
equal fingerprints answer every request alike (up to a 64-bit hash collision). Historical
reads use each key's list of versions (tombstones included), so the past is part of the
state, as it is for etcd. `step` is the pure form (state, request) -> (new state, outcome).
"""

from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass
from typing import TypeAlias

from sortedcontainers import SortedList

from sim.history import (
    KV,
    Compact,
    CompactResult,
    Compare,
    Delete,
    DeleteResult,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnOpResult,
    TxnResult,
)

ERR_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
ERR_FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"
ERR_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
ERR_LEASE_EXISTS = "etcdserver: lease already exists"
ERR_LEASE_ID_UNKNOWN = "model: the server chose the lease id and the response is unknown"

# What the model answers: a response, or an error message.
Outcome: TypeAlias = Response | str

_ALL = b"\x00"
_main = operator.itemgetter(0)

# journal record tags
_LIVE, _HIST, _SCALARS, _LEASE, _COMPACTION = range(5)

# One entry of a key's history: (main revision, sub revision, value or None for a tombstone).
Entry: TypeAlias = tuple[int, int, KV | None]


def normalize_error(message: str) -> str:
    """The part of an error message that identifies it, without gRPC's and etcd's prefixes."""
    if "desc = " in message:
        message = message.split("desc = ", 1)[1]
    return message.removeprefix("etcdserver: ").strip()


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One change of the model's revision order, as a watch must report it."""

    revision: int
    sub: int
    type: str  # "PUT" | "DELETE"
    kv: KV  # a DELETE's kv is the key and the delete revision only, as etcd sends it
    prev_kv: KV | None


@dataclass(frozen=True)
class RevisionLog:
    """The committed revisions of one linearization: what the watch checker compares to."""

    events: tuple[ModelEvent, ...]
    last_revision: int
    compactions: tuple[int, ...]  # compact revisions in the order they applied


class Model:
    __slots__ = ("_hist_x", "_journal", "_lease_x", "compact_revision", "compactions", "hist", "keys", "leases",
                 "live", "revision")

    def __init__(self) -> None:
        self.revision = 1  # a fresh etcd store is at revision 1
        self.compact_revision = 0
        self.live: dict[bytes, KV] = {}
        self.hist: dict[bytes, list[Entry]] = {}
        self.keys = SortedList()  # every key with history, for ranges (historical ones included)
        self.leases: dict[int, int] = {}  # id -> granted TTL; attached keys are the live keys naming it
        self.compactions: list[int] = []
        self._hist_x = 0
        self._lease_x = 0
        self._journal: list[tuple[object, ...]] = []

    # -- identity and undo --------------------------------------------------------------------

    def fingerprint(self) -> tuple[int, int, int, int]:
        return (self.revision, self.compact_revision, self._hist_x, self._lease_x)

    def mark(self) -> int:
        return len(self._journal)

    def rollback(self, mark: int) -> None:
        """Undo every change made since `mark`."""
        j = self._journal
        while len(j) > mark:
            e = j.pop()
            tag = e[0]
            if tag == _LIVE:
                key, old = e[1], e[2]
                assert isinstance(key, bytes)
                if old is None:
                    del self.live[key]
                else:
                    assert isinstance(old, KV)
                    self.live[key] = old
            elif tag == _HIST:
                key = e[1]
                assert isinstance(key, bytes)
                lst = self.hist[key]
                main, sub, kv = lst.pop()
                self._hist_x ^= hash((key, main, sub, kv))
                if not lst:
                    del self.hist[key]
                    self.keys.remove(key)
            elif tag == _SCALARS:
                rev, compact = e[1], e[2]
                assert isinstance(rev, int) and isinstance(compact, int)
                self.revision, self.compact_revision = rev, compact
            elif tag == _LEASE:
                lid, old_ttl = e[1], e[2]
                assert isinstance(lid, int)
                if old_ttl is None:
                    self._lease_x ^= hash((lid, self.leases.pop(lid)))
                else:
                    assert isinstance(old_ttl, int)
                    self.leases[lid] = old_ttl
                    self._lease_x ^= hash((lid, old_ttl))
            else:
                self.compactions.pop()

    def changed_since(self, mark: int) -> list[bytes]:
        """The keys written (or deleted) since `mark`."""
        return [e[1] for e in self._journal[mark:] if e[0] == _HIST]  # type: ignore[misc]

    def clone(self) -> Model:
        """An independent copy (with an empty journal)."""
        m = Model()
        m.revision, m.compact_revision = self.revision, self.compact_revision
        m.live = dict(self.live)
        m.hist = {k: list(v) for k, v in self.hist.items()}
        m.keys = SortedList(self.keys)
        m.leases = dict(self.leases)
        m.compactions = list(self.compactions)
        m._hist_x, m._lease_x = self._hist_x, self._lease_x
        return m

    # -- primitive changes --------------------------------------------------------------------

    def _save_scalars(self) -> None:
        self._journal.append((_SCALARS, self.revision, self.compact_revision))

    def _write(self, key: bytes, main: int, sub: int, kv: KV | None) -> None:
        self._journal.append((_LIVE, key, self.live.get(key)))
        if kv is None:
            del self.live[key]
        else:
            self.live[key] = kv
        lst = self.hist.get(key)
        if lst is None:
            lst = self.hist[key] = []
            self.keys.add(key)
        lst.append((main, sub, kv))
        self._hist_x ^= hash((key, main, sub, kv))
        self._journal.append((_HIST, key))

    def _set_lease(self, lid: int, ttl: int | None) -> None:
        old = self.leases.get(lid)
        self._journal.append((_LEASE, lid, old))
        if old is not None:
            self._lease_x ^= hash((lid, old))
            del self.leases[lid]
        if ttl is not None:
            self.leases[lid] = ttl
            self._lease_x ^= hash((lid, ttl))

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: bytes, at: int = 0) -> KV | None:
        """The key's value at revision `at` (0: now), None when absent then."""
        if at == 0:
            return self.live.get(key)
        lst = self.hist.get(key)
        if not lst:
            return None
        i = bisect.bisect_right(lst, at, key=_main)
        return lst[i - 1][2] if i else None

    def _keys_in(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key]
        maximum = None if range_end == _ALL else range_end
        return list(self.keys.irange(key, maximum, inclusive=(True, False)))

    def _check_read_revision(self, revision: int) -> str | None:
        if revision > self.revision:
            return ERR_FUTURE_REV
        if 0 < revision < self.compact_revision:
            return ERR_COMPACTED
        return None

    def read(self, r: Range) -> RangeResult | str:
        """A range at the request's revision; `count` ignores the limit, count_only returns no kvs."""
        err = self._check_read_revision(r.revision)
        if err is not None:
            return err
        at = r.revision
        if not r.range_end:
            kv = self.get(r.key, at)
            found = [] if kv is None else [kv]
        else:
            found = [kv for k in self._keys_in(r.key, r.range_end) if (kv := self.get(k, at)) is not None]
        count = len(found)
        if r.count_only:
            return RangeResult((), count, False)
        if 0 < r.limit < count:
            return RangeResult(tuple(found[: r.limit]), count, True)
        return RangeResult(tuple(found), count, False)

    def _compare(self, c: Compare) -> bool:
        kv = self.live.get(c.key)
        if c.target == "value":
            if kv is None:  # etcd: a value compare on a missing key is false
                return False
            assert isinstance(c.operand, bytes)
            a: bytes | int = kv.value
        elif kv is None:
            a = 0
        elif c.target == "version":
            a = kv.version
        elif c.target == "create":
            a = kv.create_revision
        elif c.target == "mod":
            a = kv.mod_revision
        else:
            a = kv.lease
        b = c.operand
        if c.result == "=":
            return a == b
        if c.result == "!=":
            return a != b
        if c.result == ">":
            return a > b  # type: ignore[operator]
        return a < b  # type: ignore[operator]

    # -- writes -------------------------------------------------------------------------------

    def _put(self, p: Put, main: int, sub: int) -> PutResult:
        old = self.live.get(p.key)
        if old is None:
            kv = KV(p.key, p.value, main, main, 1, p.lease)
        else:
            kv = KV(p.key, p.value, old.create_revision, main, old.version + 1, p.lease)
        self._write(p.key, main, sub, kv)
        return PutResult(old if p.prev_kv else None)

    def _delete_keys(self, keys: list[bytes], main: int, sub: int) -> list[KV]:
        prev = []
        for k in keys:
            prev.append(self.live[k])
            self._write(k, main, sub, None)
            sub += 1
        return prev

    def _live_keys(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key] if key in self.live else []
        return [k for k in self._keys_in(key, range_end) if k in self.live]

    # -- the step -----------------------------------------------------------------------------

    def apply(self, req: Request, observed: Response | None = None) -> Outcome:
        """Apply one request; `observed` only resolves the server's choice of a lease id."""
        if isinstance(req, Range):
            res = self.read(req)
            return res if isinstance(res, str) else Response(self.revision, res)
        if isinstance(req, Put):
            if req.lease and req.lease not in self.leases:
                return ERR_LEASE_NOT_FOUND
            self._save_scalars()
            self.revision += 1
            return Response(self.revision, self._put(req, self.revision, 0))
        if isinstance(req, Delete):
            keys = self._live_keys(req.key, req.range_end)
            if not keys:  # deleting nothing does not bump the revision
                return Response(self.revision, DeleteResult(0, ()))
            self._save_scalars()
            self.revision += 1
            prev = self._delete_keys(keys, self.revision, 0)
            return Response(self.revision, DeleteResult(len(prev), tuple(prev) if req.prev_kv else ()))
        if isinstance(req, Txn):
            return self._txn(req)
        if isinstance(req, Compact):
            if req.revision <= self.compact_revision:
                return ERR_COMPACTED
            if req.revision > self.revision:
                return ERR_FUTURE_REV
            self._save_scalars()
            self.compact_revision = req.revision
            self.compactions.append(req.revision)
            self._journal.append((_COMPACTION,))
            return Response(self.revision, CompactResult())
        if isinstance(req, LeaseGrant):
            lid = req.id
            if lid == 0 and observed is not None and isinstance(observed.result, LeaseGrantResult):
                lid = observed.result.id
            if lid == 0:
                return ERR_LEASE_ID_UNKNOWN
            if lid in self.leases:
                return ERR_LEASE_EXISTS
            self._set_lease(lid, req.ttl)
            return Response(self.revision, LeaseGrantResult(lid, req.ttl))
        assert isinstance(req, LeaseRevoke)
        if req.id not in self.leases:
            return ERR_LEASE_NOT_FOUND
        attached = sorted(k for k, kv in self.live.items() if kv.lease == req.id)
        if attached:  # every attached key goes in one revision
            self._save_scalars()
            self.revision += 1
            self._delete_keys(attached, self.revision, 0)
        self._set_lease(req.id, None)
        return Response(self.revision, LeaseRevokeResult())

    def _txn(self, req: Txn) -> Outcome:
        succeeded = all(self._compare(c) for c in req.compares)
        ops = req.success if succeeded else req.failure
        for op in ops:  # etcd checks the whole branch before applying any of it
            if isinstance(op, Put) and op.lease and op.lease not in self.leases:
                return ERR_LEASE_NOT_FOUND
            if isinstance(op, Range):
                err = self._check_read_revision(op.revision)
                if err is not None:
                    return err
        main, sub = self.revision + 1, 0
        results: list[TxnOpResult] = []
        self._save_scalars()
        for op in ops:
            if isinstance(op, Range):
                res = self.read(op)
                assert not isinstance(res, str)
                results.append(res)
            elif isinstance(op, Put):
                results.append(self._put(op, main, sub))
                sub += 1
            else:
                keys = self._live_keys(op.key, op.range_end)
                prev = self._delete_keys(keys, main, sub)
                sub += len(prev)
                results.append(DeleteResult(len(prev), tuple(prev) if op.prev_kv else ()))
        if sub:  # a txn that changed something gets one new revision
            self.revision = main
        return Response(self.revision, TxnResult(succeeded, tuple(results)))

    # -- the revision order -------------------------------------------------------------------

    def revision_log(self) -> RevisionLog:
        """Every change in revision order, with prev_kv = the key's value at revision - 1."""
        events: list[ModelEvent] = []
        for key, lst in self.hist.items():
            prev: KV | None = None
            for main, sub, kv in lst:
                if kv is None:
                    events.append(ModelEvent(main, sub, "DELETE", KV(key, b"", 0, main, 0, 0), prev))
                else:
                    events.append(ModelEvent(main, sub, "PUT", kv, prev))
                prev = kv
        events.sort(key=lambda e: (e.revision, e.sub))
        return RevisionLog(tuple(events), self.revision, tuple(self.compactions))


def step(state: Model, request: Request, observed: Response | None = None) -> tuple[Model, Outcome]:
    """The pure step: a new state and the model's answer; `state` is left as it was."""
    new = state.clone()
    return new, new.apply(request, observed)


def matches(outcome: Outcome, response: Response | None, error: str | None) -> bool:
    """Does what the client saw agree with the model? Errors compare without their prefixes; a
    granted TTL may be larger than asked (the server raises it to its minimum)."""
    if isinstance(outcome, str):
        return error is not None and normalize_error(error) == normalize_error(outcome)
    if response is None or response.revision != outcome.revision:
        return False
    want, got = outcome.result, response.result
    if isinstance(want, LeaseGrantResult):
        return isinstance(got, LeaseGrantResult) and got.id == want.id and got.ttl >= want.ttl
    return got == want
