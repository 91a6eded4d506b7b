"""Cluster alarms (NOSPACE, CORRUPT) and the quota rule that raises NOSPACE.

Alarms change only through the log, so every member agrees on them; they are kept
in the backend's meta table with the applied index.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rusd.core import codec
from rusd.core.mvcc.backend import KVBackend, KVReader
from rusd.core.mvcc.types import PutRequest, RequestOp, TxnRequest

META_ALARMS = b"alarms"
DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
# etcd's estimate of what one put adds to the backend (etcdserver/quota.go).
KV_OVERHEAD = 256


class AlarmType(enum.IntEnum):
    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


class AlarmAction(enum.IntEnum):
    GET = 0
    ACTIVATE = 1
    DEACTIVATE = 2


@dataclass(frozen=True, slots=True, order=True)
class AlarmMember:
    member_id: int
    alarm: int


@dataclass(frozen=True, slots=True)
class AlarmRequest:
    action: int
    member_id: int = 0
    alarm: int = AlarmType.NONE


@dataclass(frozen=True, slots=True)
class AlarmResponse:
    revision: int
    alarms: tuple[AlarmMember, ...] = ()


def load(view: KVReader) -> tuple[AlarmMember, ...]:
    raw = view.get_meta(META_ALARMS)
    if raw is None:
        return ()
    return tuple(AlarmMember(m, a) for m, a in codec.decode(raw))


def apply(backend: KVBackend, req: AlarmRequest) -> tuple[AlarmMember, ...]:
    """etcd's Alarm apply: GET filters by type (NONE = all); ACTIVATE and DEACTIVATE
    answer with the alarm they touched, nothing when DEACTIVATE finds none."""
    active = set(load(backend))
    target = AlarmMember(req.member_id, req.alarm)
    if req.action == AlarmAction.GET:
        return tuple(sorted(a for a in active if req.alarm == AlarmType.NONE or a.alarm == req.alarm))
    if req.action == AlarmAction.ACTIVATE:
        if req.alarm == AlarmType.NONE:
            return ()
        active.add(target)
    elif req.action == AlarmAction.DEACTIVATE:
        if target not in active:
            return ()
        active.discard(target)
    else:
        return ()
    backend.put_meta(META_ALARMS, codec.encode(tuple((a.member_id, a.alarm) for a in sorted(active))))
    return (target,)


def put_cost(req: PutRequest) -> int:
    return KV_OVERHEAD + len(req.key) + len(req.value)


def txn_cost(req: TxnRequest) -> int:
    """The larger branch's puts; nested txns are not counted (as etcd)."""

    def branch(ops: tuple[RequestOp, ...]) -> int:
        return sum(put_cost(op) for op in ops if isinstance(op, PutRequest))

    return max(branch(req.success), branch(req.failure))


def over_quota(size: int, cost: int, quota_bytes: int) -> bool:
    """etcd's backendQuota.Available, negated: a request that writes nothing always
    passes; a negative quota disables the check."""
    if quota_bytes < 0 or cost == 0:
        return False
    limit = quota_bytes or DEFAULT_QUOTA_BYTES
    return size + cost >= limit
