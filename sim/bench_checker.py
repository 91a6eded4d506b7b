"""Realistic workload histories for testing and benchmarking the checkers, without a cluster.

A correct sequential execution of the etcd model under 10 clients: each client calls one
operation at a time; every call gets a random duration and a linearization point inside
it, and the model executes the operations in linearization-point order, so the history is
linearizable by construction while the intervals of different clients overlap. The mix:
puts with unique values, linearizable and serializable (stale) gets, prefix ranges with
limits, compare-and-set on mod_revision, multi-op txns, deletes, leases with attached keys
and revokes, compactions, historical reads. Some writes time out (indeterminate, applied
or not).

Planted bugs turn the history into one that is not linearizable: a stale read served as
linearizable, and a lost write (acknowledged, never applied: its revision goes to the
next write). `scripts/bench_checker.py` times the checker on these histories.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from sim.history import (
    KV,
    Compact,
    Compare,
    Delete,
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
)
from sim.model import Model

TIMEOUT = "etcdserver: request timed out"


@dataclass
class _Client:
    n: int = 0
    seen_rev: int = 1
    mod_of: dict[bytes, int] = field(default_factory=dict)  # last mod_revision seen per key
    leases: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    client: int
    call: int
    ret: int
    request: Request
    indeterminate: bool
    outcome: Response | str | None = None


@dataclass
class Workload:
    operations: list[Operation]
    model: Model  # the state after the execution (for planting bugs and for watch tests)


def _key(rng: random.Random) -> bytes:
    return f"k/{rng.randrange(100):03d}".encode()


def _prefix(rng: random.Random) -> tuple[bytes, bytes]:
    """One of the ten prefixes k/00 .. k/09 (ten keys each) as [key, range_end)."""
    d = rng.randrange(10)
    return f"k/0{d}".encode(), f"k/0{d + 1}".encode() if d < 9 else b"k/1"


def _request(rng: random.Random, c: _Client, cid: int) -> Request:
    """The next request of client `cid`, from what it has seen so far."""
    c.n += 1
    value = f"c{cid}-{c.n}".encode()
    x = rng.random()
    if x < 0.30:
        lease = rng.choice(c.leases) if c.leases and rng.random() < 0.15 else 0
        return Put(_key(rng), value, lease, prev_kv=rng.random() < 0.2)
    if x < 0.55:
        return Range(_key(rng))
    if x < 0.60:
        return Range(_key(rng), serializable=True)
    if x < 0.68:
        k, end = _prefix(rng)
        return Range(k, end, limit=rng.choice((0, 3, 5)), count_only=rng.random() < 0.1)
    if x < 0.75:
        k = _key(rng)
        mod = c.mod_of.get(k, 0)
        return Txn((Compare(k, "mod", "=", mod),), (Put(k, value),), (Range(k),))
    if x < 0.80:
        k1, k2, k3 = (f"k/{i:03d}".encode() for i in sorted(rng.sample(range(100), 3)))
        p, end = _prefix(rng)
        return Txn(
            (Compare(k1, "version", ">", 0),),
            (Put(k1, value), Put(k2, value + b"'"), Delete(k3, prev_kv=True)),
            (Range(p, end, limit=3), Range(k2)),
        )
    if x < 0.88:
        return Delete(_key(rng), prev_kv=rng.random() < 0.5)
    if x < 0.89:
        k, end = _prefix(rng)
        return Delete(k, end)
    if x < 0.91:
        lid = cid * 1_000_000 + c.n
        return LeaseGrant(lid, 30)
    if x < 0.92 and c.leases:
        return LeaseRevoke(c.leases.pop(rng.randrange(len(c.leases))))
    if x < 0.93:
        return Compact(max(1, c.seen_rev - 200))
    return Range(_key(rng), revision=max(1, c.seen_rev - rng.randrange(300)))


def _learn(c: _Client, req: Request, resp: Response) -> None:
    c.seen_rev = max(c.seen_rev, resp.revision)
    r = resp.result
    if isinstance(r, RangeResult):
        for kv in r.kvs:
            c.mod_of[kv.key] = kv.mod_revision
    elif isinstance(r, PutResult) and isinstance(req, Put):
        c.mod_of[req.key] = resp.revision
    elif isinstance(r, TxnResult) and isinstance(req, Txn) and r.succeeded and isinstance(req.success[0], Put):
        c.mod_of[req.success[0].key] = resp.revision
    if isinstance(req, LeaseGrant):
        c.leases.append(req.id)


def _stale_answer(model: Model, req: Range, rng: random.Random) -> Response:
    """A follower behind the leader: its state at a recent revision, not below the compaction."""
    rev = max(model.compact_revision, model.revision - rng.randrange(20), 1)
    got = model.read(Range(req.key, req.range_end, rev, req.limit, req.count_only))
    assert isinstance(got, RangeResult)
    return Response(rev, got)


def generate(
    n_ops: int, seed: int, clients: int = 10, faults: float = 0.01, lose_write: int | None = None
) -> Workload:
    """`n_ops` operations of `clients` clients. `faults`: the share of writes that time out.
    `lose_write`: the first put issued at or after this operation number is acknowledged but lost."""
    rng = random.Random(seed)
    model = Model()
    state = [_Client() for _ in range(clients)]
    # events: (time, seq, kind, client, op number); kinds: 0 call, 1 take effect, 2 return
    events: list[tuple[int, int, int, int, int]] = []
    seq = 0
    pending: dict[int, _Pending] = {}
    ops: list[Operation] = []
    issued = 0
    lost = -1
    for cid in range(clients):
        heapq.heappush(events, (rng.randrange(1000), seq, 0, cid, -1))
        seq += 1
    while events:
        t, _, kind, cid, num = heapq.heappop(events)
        c = state[cid]
        if kind == 0:
            if issued >= n_ops:
                continue
            num = issued
            issued += 1
            req = _request(rng, c, cid)
            duration = rng.randrange(200, 3000) if rng.random() < 0.95 else rng.randrange(3000, 30000)
            writes = not isinstance(req, Range)
            indet = writes and rng.random() < faults
            applies = not indet or rng.random() < 0.5
            if lose_write is not None and num >= lose_write and isinstance(req, Put) and not indet:
                lose_write, lost = None, num
            pending[num] = _Pending(cid, t, t + duration, req, indet)
            if applies:
                heapq.heappush(events, (t + rng.randrange(1, duration), seq, 1, cid, num))
                seq += 1
            heapq.heappush(events, (t + duration, seq, 2, cid, num))
            seq += 1
        elif kind == 1:
            p = pending[num]
            if num == lost:
                p.outcome = Response(model.revision + 1, PutResult(None))  # acknowledged, never applied
            elif isinstance(p.request, Range) and p.request.serializable:
                p.outcome = _stale_answer(model, p.request, rng)
            else:
                p.outcome = model.apply(p.request)
        else:
            p = pending.pop(num)
            if p.indeterminate:
                ops.append(Operation(p.client, p.call, p.ret, p.request, None, TIMEOUT, None, True))
            elif isinstance(p.outcome, Response):
                ops.append(Operation(p.client, p.call, p.ret, p.request, p.outcome))
                _learn(c, p.request, p.outcome)
            else:
                assert isinstance(p.outcome, str)
                ops.append(Operation(p.client, p.call, p.ret, p.request, None, p.outcome))
            heapq.heappush(events, (p.ret + rng.randrange(0, 500), seq, 0, cid, -1))
            seq += 1
    return Workload(ops, model)


def plant_stale_read(work: Workload, rng: random.Random) -> int:
    """Make one linearizable get answer from before a put of its key that had already
    returned when the get was called (a follower's local state served as linearizable).
    Returns the index of the changed operation."""
    ops = work.operations
    done_puts: dict[bytes, list[tuple[int, int]]] = {}  # key -> [(ret, revision)]
    for op in ops:
        if isinstance(op.request, Put) and op.response is not None and op.ret is not None:
            done_puts.setdefault(op.request.key, []).append((op.ret, op.response.revision))
    candidates = []
    for i, op in enumerate(ops):
        req = op.request
        if not isinstance(req, Range) or req.serializable or req.range_end or req.revision or op.response is None:
            continue
        before = [rev for ret, rev in done_puts.get(req.key, ()) if ret < op.call and rev > 1]
        if before:
            candidates.append((i, max(before)))
    if not candidates:
        raise ValueError("no get follows a put of its key; use a longer history")
    i, put_rev = candidates[rng.randrange(len(candidates))]
    op = ops[i]
    assert isinstance(op.request, Range)
    old: KV | None = work.model.get(op.request.key, put_rev - 1)
    kvs = () if old is None else (old,)
    ops[i] = Operation(op.client, op.call, op.ret, op.request, Response(put_rev - 1, RangeResult(kvs, len(kvs))))
    return i
