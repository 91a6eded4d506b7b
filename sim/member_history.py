"""The members engine's client calls in the shared history format (sim.history), so the
linearizability checker reads what the simulated etcd clients saw."""

from __future__ import annotations

from rusd.core.lease.types import LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse
from rusd.core.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from sim import history as h

_TARGETS = {
    CompareTarget.VALUE: "value", CompareTarget.VERSION: "version", CompareTarget.CREATE: "create",
    CompareTarget.MOD: "mod", CompareTarget.LEASE: "lease",
}
_RESULTS = {CompareResult.EQUAL: "=", CompareResult.NOT_EQUAL: "!=", CompareResult.GREATER: ">",
            CompareResult.LESS: "<"}


def kv(k: KeyValue) -> h.KV:
    return h.KV(k.key, k.value, k.create_revision, k.mod_revision, k.version, k.lease)


def _op(req: object) -> h.TxnOp:
    if isinstance(req, RangeRequest):
        return h.Range(req.key, req.range_end, req.revision, req.limit, req.count_only, req.serializable)
    if isinstance(req, PutRequest):
        return h.Put(req.key, req.value, req.lease, req.prev_kv)
    if isinstance(req, DeleteRangeRequest):
        return h.Delete(req.key, req.range_end, req.prev_kv)
    raise TypeError(f"not a txn op the workload sends: {req!r}")


def _compare(c: Compare) -> h.Compare:
    target = _TARGETS[CompareTarget(c.target)]
    operand = c.operand if c.operand_target == c.target else (b"" if target == "value" else 0)
    return h.Compare(c.key, target, _RESULTS[CompareResult(c.result)], operand)


def request(req: object) -> h.Request:
    """A workload request as the history records it."""
    if isinstance(req, TxnRequest):
        return h.Txn(tuple(_compare(c) for c in req.compare), tuple(_op(o) for o in req.success),
                      tuple(_op(o) for o in req.failure))
    if isinstance(req, LeaseGrantRequest):
        return h.LeaseGrant(req.id, req.ttl)
    if isinstance(req, LeaseRevokeRequest):
        return h.LeaseRevoke(req.id)
    if isinstance(req, CompactionRequest):
        return h.Compact(req.revision)
    return _op(req)


def _result(r: object) -> h.Result:
    if isinstance(r, RangeResponse):
        return h.RangeResult(tuple(kv(k) for k in r.kvs), r.count, r.more)
    if isinstance(r, PutResponse):
        return h.PutResult(kv(r.prev_kv) if r.prev_kv is not None else None)
    if isinstance(r, DeleteRangeResponse):
        return h.DeleteResult(r.deleted, tuple(kv(k) for k in r.prev_kvs))
    if isinstance(r, TxnResponse):
        return h.TxnResult(r.succeeded, tuple(_result(x) for x in r.responses))  # type: ignore[misc]
    if isinstance(r, LeaseGrantResponse):
        return h.LeaseGrantResult(r.id, r.ttl)
    if isinstance(r, LeaseRevokeResponse):
        return h.LeaseRevokeResult()
    if isinstance(r, CompactionResponse):
        return h.CompactResult()
    raise TypeError(f"not a response the workload gets: {r!r}")


def response(r: RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | LeaseGrantResponse
             | LeaseRevokeResponse | CompactionResponse) -> h.Response:
    return h.Response(r.revision, _result(r))
