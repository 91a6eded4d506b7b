"""Is a history linearizable against the etcd model?

A Wing & Gong / Lowe search (as Porcupine does it): repeatedly pick an operation that may
take effect next (its call is not after the earliest return among the operations not yet
placed: A must precede B only when A returned strictly before B was called), step the
model, and backtrack when nothing fits; (set of placed operations, model
state) pairs already explored are remembered and never explored again.

What makes 100,000-operation histories checkable in Python is etcd's revision:

- *Pinning.* A response's header revision is the store's revision right after the request
  applied. At store revision r only operations that answered r (they changed nothing) or
  r + 1 (they made revision r + 1) can be next; they are found by index, not by scanning.
  An operation that answered a revision below the store's can never be placed: prune.
- *Reads are forced moves.* An operation that leaves the state unchanged and whose answer
  matches the state now (a read, a failed compare, an error) is placed at once without a
  choice point: if any linearization exists, one with it placed now exists too (it changes
  nothing, and nothing still pending had to precede it).
- *Claimed revisions.* A determinate write that answered r + 1 holds revision r + 1, so an
  indeterminate write is only tried where no acknowledged write claims the next revision.

Partitioning by key (P-compositionality) is not sound here: every response carries the
store-wide revision, so operations on different keys constrain each other. Pinning plays
its part: at each step only the operations of two revisions are looked at.

Indeterminate operations (timeouts, "leader changed", lost connections) may take effect at
any point after their call, or never; an indeterminate read is dropped (it constrains
nothing). A serializable range may be stale: it is placed wherever the store is at its
header revision, with no real-time bound.

The result of a successful check carries the revision log of the linearization, which is
what the watch checker compares streams to.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sim.history import (
    KV,
    Compact,
    Delete,
    DeleteResult,
    LeaseGrant,
    LeaseRevoke,
    Operation,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnResult,
    describe,
    describe_outcome,
)
from sim.model import ERR_COMPACTED, Model, Outcome, RevisionLog, matches, normalize_error

OK, VIOLATION, UNKNOWN = "ok", "violation", "unknown"
INF = float("inf")
_COMPACTED = normalize_error(ERR_COMPACTED)
_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """A fixed 64-bit mixer: each operation's Zobrist key for the placed-set hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _read_only(req: Request) -> bool:
    if isinstance(req, Range):
        return True
    return isinstance(req, Txn) and all(isinstance(o, Range) for o in req.success + req.failure)


def _mutates(req: Request, resp: Response | None) -> bool | None:
    """Did this answered request make a new revision? None when the answer cannot tell."""
    if resp is None:
        return False
    if isinstance(req, Put):
        return True
    if isinstance(req, LeaseRevoke):
        return None  # only if the lease had keys attached
    result = resp.result
    if isinstance(result, DeleteResult):
        return result.deleted > 0
    if isinstance(result, TxnResult) and isinstance(req, Txn):
        branch = req.success if result.succeeded else req.failure
        return any(
            isinstance(op, Put) or (isinstance(r, DeleteResult) and r.deleted > 0)
            for op, r in zip(branch, result.results, strict=False)
        )
    return False


# the placed operations, newest first, as a linked list shared between search nodes
_Path: TypeAlias = "tuple[int, _Path] | None"
# model mark, placed-set hash, six list pointers, placed determinate count, path
_Snap: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, _Path]


def _puts(req: Request) -> list[Put]:
    if isinstance(req, Put):
        return [req]
    if isinstance(req, Txn):
        return [o for o in req.success + req.failure if isinstance(o, Put)]
    return []


def _observations(op: Operation) -> list[tuple[KV, int]]:
    """(kv, revision it was seen at) for every value an answer shows: the key was not
    written between kv.mod_revision and that revision."""
    resp = op.response
    if resp is None:
        return []
    req, res, at = op.request, resp.result, resp.revision
    out: list[tuple[KV, int]] = []
    if isinstance(req, Range) and isinstance(res, RangeResult):
        out += [(kv, req.revision or at) for kv in res.kvs]
    elif isinstance(res, PutResult) and res.prev_kv is not None:
        out.append((res.prev_kv, at - 1))
    elif isinstance(res, DeleteResult):
        out += [(kv, at - 1) for kv in res.prev_kvs]
    elif isinstance(req, Txn) and isinstance(res, TxnResult):
        branch = req.success if res.succeeded else req.failure
        seen = at - 1 if _mutates(req, resp) else at  # ranges inside a writing txn saw the state before it
        for sub, r in zip(branch, res.results, strict=False):
            if isinstance(sub, Range) and isinstance(r, RangeResult) and not sub.revision:
                out += [(kv, seen) for kv in r.kvs]
            elif isinstance(r, PutResult) and r.prev_kv is not None:
                out.append((r.prev_kv, seen))
            elif isinstance(r, DeleteResult):
                out += [(kv, seen) for kv in r.prev_kvs]
    return out


class _Quiet:
    """Per key, the revisions at which an answer shows it was not written: a key seen at
    revision `at` with mod_revision m was not written in (m, at]."""

    def __init__(self, operations: Sequence[Operation]) -> None:
        spans: dict[bytes, list[tuple[int, int]]] = {}
        for op in operations:
            for kv, at in _observations(op):
                if kv.mod_revision < at:
                    spans.setdefault(kv.key, []).append((kv.mod_revision, at))
        self.starts: dict[bytes, list[int]] = {}
        self.ends: dict[bytes, list[int]] = {}
        for key, lst in spans.items():
            lst.sort()
            starts: list[int] = []
            ends: list[int] = []
            for lo, hi in lst:  # merge into disjoint (lo, hi] spans
                if ends and lo < ends[-1]:
                    ends[-1] = max(ends[-1], hi)
                else:
                    starts.append(lo)
                    ends.append(hi)
            self.starts[key], self.ends[key] = starts, ends

    def written_at_is_impossible(self, key: bytes, revision: int) -> bool:
        starts = self.starts.get(key)
        if starts is None:
            return False
        i = bisect.bisect_left(starts, revision) - 1  # the last span starting below revision
        return i >= 0 and revision <= self.ends[key][i]


def _pins(operations: Sequence[Operation]) -> dict[int, int]:
    """Indeterminate writes that an answer shows applied, and the revision they made:
    an answer holding key k with value v at mod_revision m, where exactly one operation of
    the history puts v into k, says that operation made revision m."""
    writers: dict[tuple[bytes, bytes], list[int]] = {}
    for index, op in enumerate(operations):
        for p in _puts(op.request):
            writers.setdefault((p.key, p.value), []).append(index)
    pins: dict[int, int] = {}
    for op in operations:
        for kv, _ in _observations(op):
            w = writers.get((kv.key, kv.value))
            if w is not None and len(set(w)) == 1 and operations[w[0]].indeterminate:
                pins[w[0]] = kv.mod_revision
    return pins


def _leases(req: Request) -> set[int]:
    if isinstance(req, LeaseGrant | LeaseRevoke):
        return {req.id} if req.id else set()
    return {p.lease for p in _puts(req) if p.lease}


class _Op:
    """An operation as the search sees it."""

    __slots__ = ("call", "changer", "err", "i", "indet", "index", "mut", "pin", "req", "resp", "ret", "rev", "z")

    def __init__(self, i: int, index: int, op: Operation, call: float, ret: float) -> None:
        self.i = i  # position in the search's own list
        self.index = index  # position in the caller's list
        self.call, self.ret = call, ret
        self.req, self.resp, self.err = op.request, op.response, op.error
        self.indet = op.indeterminate
        self.rev = None if op.response is None else op.response.revision
        self.mut = _mutates(op.request, op.response)  # made revision `rev` (None: cannot tell)
        # may change the state without making a revision
        self.changer = isinstance(op.request, LeaseGrant | LeaseRevoke | Compact)
        self.z = _splitmix64(index)
        self.pin = 0  # an indeterminate write known to have made this revision


class _Frame:
    """A choice point: the forced moves made on arrival, then the choices tried in turn."""

    __slots__ = ("choices", "chosen", "forced", "next", "post", "pre")

    def __init__(self, pre: _Snap, forced: list[_Op], post: _Snap, choices: list[_Op]) -> None:
        self.pre, self.forced, self.post, self.choices = pre, forced, post, choices
        self.next = 0
        self.chosen: _Op | None = None


@dataclass(frozen=True)
class LinearizationResult:
    verdict: str  # "ok" | "violation" | "unknown"
    operations: int  # operations checked (indeterminate reads are not counted)
    # indices into the checked list: the linearization, or the longest linearizable prefix found
    # (empty when the violation was found without a search: two answers contradict each other)
    order: tuple[int, ...]
    failed: int | None  # index of the first operation that cannot be placed after that prefix
    message: str
    log: RevisionLog | None  # the revisions the linearization committed (verdict ok)

    @property
    def ok(self) -> bool:
        return self.verdict == OK

    def summary(self) -> str:
        line = f"linearizability: {self.verdict} ({self.operations:,} ops)"
        return line if self.verdict == OK else f"{line}\n{self.message}"


def check_linearizability(
    operations: Sequence[Operation], deadline: Callable[[], bool] | None = None
) -> LinearizationResult:
    """Check `operations` (any order); `deadline()` returning True stops the search with
    verdict "unknown". The function is pure: same input, same result."""
    search = _Search(operations)
    return search.contradiction() or search.run(deadline)


class _Search:
    def __init__(self, operations: Sequence[Operation]) -> None:
        self.source = operations
        ops: list[_Op] = []
        leases_named: dict[int, int] = {}  # lease id -> how many operations name it
        for op in operations:
            for lid in _leases(op.request):
                leases_named[lid] = leases_named.get(lid, 0) + 1
        for index, op in enumerate(operations):
            req = op.request
            if op.indeterminate:
                if _read_only(req) or (isinstance(req, LeaseGrant) and leases_named.get(req.id, 0) < 2):
                    continue  # could not have changed anything a later answer can show
                ops.append(_Op(len(ops), index, op, op.call, INF))
            elif isinstance(req, Range) and req.serializable:
                ops.append(_Op(len(ops), index, op, -INF, INF))
            else:
                assert op.ret is not None
                ops.append(_Op(len(ops), index, op, op.call, op.ret))
        self.ops = ops
        pins = _pins(operations)
        for o in ops:
            o.pin = pins.get(o.index, 0)
        det = [o for o in ops if not o.indet]
        self.n_det = len(det)
        self.by_ret = sorted(det, key=lambda o: (o.ret, o.i))
        self.by_rev = sorted((o for o in det if o.rev is not None), key=lambda o: (o.rev or 0, o.i))
        self.floating = sorted((o for o in det if o.rev is None), key=lambda o: (o.call, o.i))
        self.at_rev: dict[int, list[_Op]] = {}
        for o in sorted(det, key=lambda o: (o.call, o.i)):
            if o.rev is not None:
                self.at_rev.setdefault(o.rev, []).append(o)
        self.claimed = {o.rev for o in det if o.rev is not None and o.mut is True}
        self.claimed.update(o.pin for o in ops if o.pin)
        self.pinned: dict[int, list[_Op]] = {}
        for o in ops:
            if o.pin:
                self.pinned.setdefault(o.pin, []).append(o)
        # what answers show about revisions, to reject an indeterminate write at a revision early
        self.quiet = _Quiet(operations)
        self.made_at: dict[int, set[tuple[bytes, bytes]]] = {}
        for op in operations:
            for kv, _ in _observations(op):
                self.made_at.setdefault(kv.mod_revision, set()).add((kv.key, kv.value))
        self.readers_at: dict[int, list[_Op]] = {}
        for o in det:
            if o.rev is not None and o.mut is False and isinstance(o.req, Range | Txn | Delete):
                self.readers_at.setdefault(o.rev, []).append(o)
        self.naming: dict[int, list[_Op]] = {}  # lease id -> the operations naming it
        for o in ops:
            for lid in _leases(o.req):
                self.naming.setdefault(lid, []).append(o)
        indet = sorted((o for o in ops if o.indet and not o.pin), key=lambda o: (o.call, o.i))
        self.indet_bump = [o for o in indet if not o.changer]
        self.indet_other = [o for o in indet if o.changer]
        # Answers "compacted". An indeterminate compaction is only tried while one of them may
        # be placed next: moving a compaction later, to just before the first answer that
        # needs it, keeps a linearization valid (until then it could only add errors).
        self.need_compact = [
            o for o in det if o.err is not None and normalize_error(o.err) == _COMPACTED
        ]
        self.need_compact.sort(key=lambda o: (o.call, o.i))

    def contradiction(self) -> LinearizationResult | None:
        """A violation visible without searching: the store's revision never goes back, so an
        operation called after another returned cannot answer a lower revision (nor the same
        one if it wrote), and no two writes make the same revision."""
        timed = [o for o in self.by_rev if o.call != -INF]
        made: dict[int, _Op] = {}
        for o in timed:
            if o.mut is True and o.rev is not None:
                other = made.setdefault(o.rev, o)
                if other is not o:
                    return self._witness(o, other, f"both made revision {o.rev}")
        by_ret = sorted(timed, key=lambda o: (o.ret, o.i))
        j, top = 0, None
        for b in sorted(timed, key=lambda o: (o.call, o.i)):
            while j < len(by_ret) and by_ret[j].ret < b.call:
                a = by_ret[j]
                if top is None or (a.rev or 0) > (top.rev or 0):
                    top = a
                j += 1
            if top is None or b.rev is None or top.rev is None:
                continue
            if b.rev < top.rev or (b.mut is True and b.rev == top.rev):
                return self._witness(b, top, f"it answered revision {b.rev} after #{top.index} returned {top.rev}")
        return None

    def _witness(self, bad: _Op, other: _Op, why: str) -> LinearizationResult:
        lines = [
            f"operation #{bad.index} cannot be placed: {describe(self.source[bad.index])}",
            f"  {why}: #{other.index} is {describe(self.source[other.index])}",
        ]
        return LinearizationResult(VIOLATION, len(self.ops), (), bad.index, "\n".join(lines), None)

    def run(self, deadline: Callable[[], bool] | None) -> LinearizationResult:
        ops, model = self.ops, Model()
        lin = bytearray(len(ops))
        by_ret, by_rev, floating = self.by_ret, self.by_rev, self.floating
        indet_bump, indet_other, at_rev, claimed = self.indet_bump, self.indet_other, self.at_rev, self.claimed
        pinned = self.pinned
        n_ret, n_rev, n_flo, n_ib, n_io = len(by_ret), len(by_rev), len(floating), len(indet_bump), len(indet_other)
        visited: set[tuple[int, tuple[int, int, int, int]]] = set()
        # the search position: placed-set hash, the first unplaced op of each list, the path
        zob = p_ret = p_rev = p_flo = p_ib = p_io = p_nc = ndet = 0
        need_compact = self.need_compact
        n_nc = len(need_compact)
        path: _Path = None
        best_ndet, best_path = -1, path
        frames: list[_Frame] = []
        nodes = 0
        descend = True
        while True:
            if descend:
                nodes += 1
                if deadline is not None and nodes % 256 == 0 and deadline():
                    return self._report(UNKNOWN, best_path, "deadline reached before the search finished")
                pre: _Snap = (model.mark(), zob, p_ret, p_rev, p_flo, p_ib, p_io, p_nc, ndet, path)
                forced: list[_Op] = []
                # -- forced moves: answers that match now and change nothing -----------------
                while True:
                    while p_ret < n_ret and lin[by_ret[p_ret].i]:
                        p_ret += 1
                    while p_flo < n_flo and lin[floating[p_flo].i]:
                        p_flo += 1
                    min_ret = by_ret[p_ret].ret if p_ret < n_ret else INF
                    fp = model.fingerprint()
                    cands = [o for o in at_rev.get(fp[0], ()) if o.mut is not True]
                    j = p_flo
                    while j < n_flo and floating[j].call <= min_ret:
                        cands.append(floating[j])
                        j += 1
                    progress = False
                    for o in cands:
                        if lin[o.i] or o.call > min_ret:
                            continue
                        m = model.mark()
                        out = model.apply(o.req, o.resp)
                        if matches(out, o.resp, o.err) and model.fingerprint() == fp:
                            lin[o.i] = 1
                            forced.append(o)
                            zob ^= o.z
                            ndet += 1
                            path = (o.i, path)
                            progress = True
                        model.rollback(m)
                    if not progress:
                        break
                if ndet == self.n_det:
                    return self._success(path, model)
                if ndet > best_ndet:
                    best_ndet, best_path = ndet, path
                rev = model.revision
                while p_rev < n_rev and lin[by_rev[p_rev].i]:
                    p_rev += 1
                while p_ib < n_ib and lin[indet_bump[p_ib].i]:
                    p_ib += 1
                while p_io < n_io and lin[indet_other[p_io].i]:
                    p_io += 1
                key = (zob, model.fingerprint())
                # an unplaced op answered a revision the store has passed, or we were here before
                if (p_rev < n_rev and (by_rev[p_rev].rev or 0) < rev) or key in visited:
                    for o in forced:
                        lin[o.i] = 0
                    model.rollback(pre[0])
                    _, zob, p_ret, p_rev, p_flo, p_ib, p_io, p_nc, ndet, path = pre
                else:
                    visited.add(key)
                    choices = [
                        o for o in at_rev.get(rev + 1, ()) if o.mut is not False and not lin[o.i] and o.call <= min_ret
                    ]
                    choices += [o for o in at_rev.get(rev, ()) if o.changer and not lin[o.i] and o.call <= min_ret]
                    choices.sort(key=lambda o: (o.ret, o.i))
                    choices += [o for o in pinned.get(rev + 1, ()) if not lin[o.i] and o.call <= min_ret]
                    if rev + 1 not in claimed:  # newest first: old timeouts mostly never applied
                        j = p_ib
                        later: list[_Op] = []
                        while j < n_ib and indet_bump[j].call <= min_ret:
                            if not lin[indet_bump[j].i]:
                                later.append(indet_bump[j])
                            j += 1
                        choices += reversed(later)
                    while p_nc < n_nc and lin[need_compact[p_nc].i]:
                        p_nc += 1
                    j = p_nc
                    while j < n_nc and need_compact[j].call <= min_ret and lin[need_compact[j].i]:
                        j += 1
                    compact_wanted = j < n_nc and need_compact[j].call <= min_ret
                    j = p_io
                    while j < n_io and indet_other[j].call <= min_ret:
                        o = indet_other[j]
                        j += 1
                        if lin[o.i] or (isinstance(o.req, Compact) and not compact_wanted):
                            continue
                        if isinstance(o.req, LeaseGrant) and not self._lease_wanted(o, lin, min_ret):
                            continue
                        choices.append(o)
                    post: _Snap = (model.mark(), zob, p_ret, p_rev, p_flo, p_ib, p_io, p_nc, ndet, path)
                    frames.append(_Frame(pre, forced, post, choices))
            # -- take the innermost frame's next choice, or leave the frame --------------------
            if not frames:
                return self._report(VIOLATION, best_path, "")
            f = frames[-1]
            if f.chosen is not None:
                lin[f.chosen.i] = 0
                model.rollback(f.post[0])
                _, zob, p_ret, p_rev, p_flo, p_ib, p_io, p_nc, ndet, path = f.post
                f.chosen = None
            rev = model.revision
            fp = model.fingerprint()
            descend = False
            while not descend and f.next < len(f.choices):
                o = f.choices[f.next]
                f.next += 1
                m = model.mark()
                out = model.apply(o.req, o.resp)
                if o.indet:  # worth trying only if it changes something and takes no claimed revision
                    ok = isinstance(out, Response) and model.fingerprint() != fp
                    if ok and isinstance(o.req, LeaseRevoke) and model.revision == rev:
                        ok = self._lease_wanted(o, lin, min_ret)  # a revoke without keys
                    if o.pin:
                        ok = ok and model.revision == o.pin
                    else:
                        ok = ok and not (model.revision > rev and model.revision in claimed)
                    ok = ok and (model.revision == rev or self._fits(model, m))
                else:
                    ok = matches(out, o.resp, o.err)
                if ok:
                    lin[o.i] = 1
                    zob ^= o.z
                    path = (o.i, path)
                    ndet += 0 if o.indet else 1
                    f.chosen = o
                    descend = True
                else:
                    model.rollback(m)
            if not descend:  # every choice failed: undo the forced moves and leave the frame
                for o in f.forced:
                    lin[o.i] = 0
                model.rollback(f.pre[0])
                _, zob, p_ret, p_rev, p_flo, p_ib, p_io, p_nc, ndet, path = f.pre
                frames.pop()

    def _lease_wanted(self, o: _Op, lin: bytearray, min_ret: float) -> bool:
        """Only operations naming a lease see whether it exists, so an indeterminate grant, or a
        revoke of a lease without keys, is only tried while one of them may be placed next
        (moving it later, to just before that operation, keeps a linearization valid)."""
        lid = o.req.id if isinstance(o.req, LeaseGrant | LeaseRevoke) else 0
        return any(x is not o and not lin[x.i] and x.call <= min_ret for x in self.naming.get(lid, ()))

    def _fits(self, model: Model, mark: int) -> bool:
        """Can the write just applied (since `mark`) have made this revision? Not if an answer
        shows the revision wrote other values, or shows a key it wrote unchanged across it, or
        a read that answered this revision disagrees (only lease and compaction changes can
        follow within a revision, and they do not change what a read sees, except to fail)."""
        revision = model.revision
        for key, value in self.made_at.get(revision, ()):
            kv = model.live.get(key)
            if kv is None or kv.mod_revision != revision or kv.value != value:
                return False
        if any(self.quiet.written_at_is_impossible(k, revision) for k in model.changed_since(mark)):
            return False
        for o in self.readers_at.get(revision, ()):
            m = model.mark()
            fits = matches(model.apply(o.req, o.resp), o.resp, o.err)
            model.rollback(m)
            if not fits:
                return False
        return True

    # -- results --------------------------------------------------------------------------------

    def _order(self, path: _Path) -> list[_Op]:
        out: list[_Op] = []
        while path is not None:
            out.append(self.ops[path[0]])
            path = path[1]
        out.reverse()
        return out

    def _success(self, path: _Path, model: Model) -> LinearizationResult:
        order = tuple(o.index for o in self._order(path))
        return LinearizationResult(OK, len(self.ops), order, None, "", model.revision_log())

    def _report(self, verdict: str, path: _Path, why: str) -> LinearizationResult:
        """Replay the longest linearizable prefix and name the operation that cannot follow it."""
        prefix = self._order(path)
        model = Model()
        placed = set()
        for o in prefix:
            model.apply(o.req, o.resp)
            placed.add(o.i)
        pending = [o for o in self.by_ret if o.i not in placed]
        passed = [o for o in pending if o.rev is not None and o.rev < model.revision]
        blocker = min(passed, key=lambda o: (o.rev or 0, o.i)) if passed else (pending[0] if pending else None)
        lines = [why] if why else []
        if blocker is not None:
            op = self.source[blocker.index]
            answer: Outcome = model.clone().apply(op.request, op.response)
            said = describe_outcome(*((answer, None) if isinstance(answer, Response) else (None, answer)))
            lines.append(f"operation #{blocker.index} cannot be placed: {describe(op)}")
            lines.append(f"  the model at revision {model.revision} answers: {said}")
        last = f"; last: {describe(self.source[prefix[-1].index])}" if prefix else ""
        lines.append(f"  after the longest linearizable prefix: {len(prefix)} operations{last}")
        return LinearizationResult(
            verdict,
            len(self.ops),
            tuple(o.index for o in prefix),
            None if blocker is None else blocker.index,
            "\n".join(lines),
            None,
        )
