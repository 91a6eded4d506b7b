"""Request checks that etcd makes before a request reaches Raft (v3rpc/key.go).

They depend only on the request, so a bad request is refused without a proposal.
"""

from __future__ import annotations

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc.types import (
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)


def check_range(req: RangeRequest) -> None:
    if not req.key:
        raise EtcdError(errors.EMPTY_KEY)
    # etcd 3.4 checks no sort option: an unknown sort_order sorts nothing, and an
    # unknown sort_target crashes it as soon as it must sort, i.e. with any known
    # order (NONE sorts ASCEND for targets other than KEY). We refuse exactly those,
    # with etcd 3.6's error.
    if req.sort_target not in SortTarget._value2member_map_ and req.sort_order in SortOrder._value2member_map_:
        raise EtcdError(errors.INVALID_SORT_OPTION)


def check_put(req: PutRequest) -> None:
    if not req.key:
        raise EtcdError(errors.EMPTY_KEY)
    if req.ignore_value and req.value:
        raise EtcdError(errors.VALUE_PROVIDED)
    if req.ignore_lease and req.lease:
        raise EtcdError(errors.LEASE_PROVIDED)


def check_delete(req: DeleteRangeRequest) -> None:
    if not req.key:
        raise EtcdError(errors.EMPTY_KEY)


def check_txn(req: TxnRequest, max_txn_ops: int) -> None:
    """checkTxnRequest then checkIntervals on both branches, as etcd's Txn handler."""
    _check_txn_ops(req, max_txn_ops)
    _check_intervals(req.success)
    _check_intervals(req.failure)


def _check_txn_ops(req: TxnRequest, max_txn_ops: int) -> None:
    ops = max(len(req.compare), len(req.success), len(req.failure))
    if ops > max_txn_ops:
        raise EtcdError(errors.TOO_MANY_OPS)
    for c in req.compare:
        if not c.key:
            raise EtcdError(errors.EMPTY_KEY)
    # etcd hands nested txns the budget left after this level's widest branch.
    for op in (*req.success, *req.failure):
        _check_op(op, max_txn_ops - ops)


def _check_op(op: RequestOp, max_txn_ops: int) -> None:
    if isinstance(op, RangeRequest):
        check_range(op)
    elif isinstance(op, PutRequest):
        check_put(op)
    elif isinstance(op, DeleteRangeRequest):
        check_delete(op)
    elif isinstance(op, TxnRequest):
        _check_txn_ops(op, max_txn_ops)
    else:
        # An empty RequestOp: etcd answers with ErrGRPCKeyNotFound.
        raise EtcdError(errors.KEY_NOT_FOUND)


class _Deletes:
    """The delete ranges of a txn level, as etcd's interval tree of string intervals.

    A delete with a range_end is [key, range_end); one without is the point [key,
    key+"\\x00"). etcd compares interval ends as plain strings here, so a from-key
    delete (range_end "\\x00") covers nothing; we match that.
    """

    def __init__(self) -> None:
        self.spans: list[tuple[bytes, bytes]] = []

    def add(self, req: DeleteRangeRequest) -> None:
        self.spans.append((req.key, req.range_end or req.key + b"\x00"))

    def covers(self, key: bytes) -> bool:
        return any(lo <= key < hi for lo, hi in self.spans)


def _check_intervals(ops: tuple[RequestOp, ...]) -> tuple[set[bytes], _Deletes]:
    """etcd's checkIntervals: no key put twice, no put inside a delete, nested levels
    included (a key put on both branches of one nested txn is fine)."""
    dels = _Deletes()
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            dels.add(op)
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in sorted(puts_then):
            if k in puts or dels.covers(k):
                raise EtcdError(errors.DUPLICATE_KEY)
            puts.add(k)
        for k in sorted(puts_else):
            if (k in puts and k not in puts_then) or dels.covers(k):
                raise EtcdError(errors.DUPLICATE_KEY)
            puts.add(k)
        dels.spans.extend(dels_then.spans)
        dels.spans.extend(dels_else.spans)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or dels.covers(op.key):
                raise EtcdError(errors.DUPLICATE_KEY)
            puts.add(op.key)
    return puts, dels
