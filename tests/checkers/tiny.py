"""Random tiny histories: requests over two keys and two leases, executed on the model in a
random sequential order, each given a random interval around its moment (so they overlap),
some indeterminate (applied or not), some stale reads; optionally one response corrupted."""

from __future__ import annotations

import random
from dataclasses import replace

from sim.history import (
    Compact,
    Compare,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Operation,
    Put,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnOp,
)
from sim.model import Model

KEYS = (b"a", b"b")


def _op(rnd: random.Random, n: int) -> TxnOp:
    key = rnd.choice(KEYS)
    x = rnd.random()
    if x < 0.4:
        return Put(key, rnd.choice((f"v{n}".encode(), b"x")), rnd.choice((0, 0, 0, 1, 2)), rnd.random() < 0.3)
    if x < 0.7:
        return Range(key) if rnd.random() < 0.6 else Range(b"a", b"c", limit=rnd.choice((0, 1)))
    return Delete(key, b"" if rnd.random() < 0.7 else b"\x00", rnd.random() < 0.5)


def _request(rnd: random.Random, n: int, model: Model) -> Request:
    x = rnd.random()
    if x < 0.45:
        return _op(rnd, n)
    if x < 0.55:
        target = rnd.choice(("value", "version", "create", "mod", "lease"))
        operand: bytes | int = rnd.choice((b"x", b"v1")) if target == "value" else rnd.randrange(4)
        compare = Compare(rnd.choice(KEYS), target, rnd.choice(("=", "!=", ">", "<")), operand)
        return Txn((compare,), tuple(_op(rnd, n) for _ in range(rnd.randint(0, 2))), (_op(rnd, n),))
    if x < 0.65:
        return Range(rnd.choice(KEYS), revision=rnd.randint(1, model.revision + 1), count_only=rnd.random() < 0.3)
    if x < 0.72:
        return Compact(rnd.randint(1, model.revision + 1))
    if x < 0.85:
        return LeaseGrant(rnd.choice((1, 2)), 5)
    return LeaseRevoke(rnd.choice((1, 2)))


def _corrupt(rnd: random.Random, resp: Response) -> Response:
    r = resp.result
    if isinstance(r, RangeResult) and r.kvs and rnd.random() < 0.5:
        return replace(resp, result=RangeResult(r.kvs[1:], r.count, r.more))
    if isinstance(r, RangeResult) and rnd.random() < 0.5:
        return replace(resp, result=RangeResult(r.kvs, r.count + 1, r.more))
    return replace(resp, revision=max(1, resp.revision + rnd.choice((-1, 1))))


def tiny_history(rnd: random.Random, size: int = 6, corrupt: bool = False) -> list[Operation]:
    model = Model()
    ops: list[Operation] = []
    for n in range(rnd.randint(1, size)):
        t = 10 * (n + 1)
        call, ret = t - rnd.randint(0, 25), t + rnd.randint(0, 25)
        req = _request(rnd, n, model)
        fate = rnd.random()
        if fate < 0.1:  # timed out and never applied
            ops.append(Operation.failed(n, call, ret, req, "etcdserver: request timed out"))
            continue
        if isinstance(req, Range) and req.revision == 0 and fate < 0.3:  # a stale read
            at = rnd.randint(max(1, model.compact_revision), model.revision)
            req = replace(req, serializable=True)
            got = model.read(Range(req.key, req.range_end, at, req.limit, req.count_only))
            assert isinstance(got, RangeResult)
            ops.append(Operation(n, call, ret, req, Response(at, got)))
            continue
        out = model.apply(req)
        if fate < 0.25:  # timed out but applied
            ops.append(Operation.failed(n, call, ret, req, "etcdserver: leader changed"))
        elif isinstance(out, str):
            ops.append(Operation(n, call, ret, req, None, out))
        else:
            ops.append(Operation(n, call, ret, req, out))
    if corrupt:
        answered = [i for i, op in enumerate(ops) if op.response is not None]
        if answered:
            i = rnd.choice(answered)
            resp = ops[i].response
            assert resp is not None
            ops[i] = replace(ops[i], response=_corrupt(rnd, resp))
    rnd.shuffle(ops)  # the checkers take operations in any order
    return ops
