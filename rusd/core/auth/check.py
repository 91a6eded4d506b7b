"""Who may do what: etcd's isOpPermitted / IsAdminPermitted and the per-request
checks of its authApplierV3, as pure functions of an AuthState.

The same functions run twice, as in etcd: on the server before a read is answered
(or a watch created), and in the apply for every logged request, with the auth
revision the server saw (so a permission revoked in between is refused with
"revision of auth store is old")."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rusd.core import errors
from rusd.core.auth.store import AuthState, has_root_role
from rusd.core.auth.types import (
    ADMIN_REQUESTS,
    AuthInfo,
    RoleGetRequest,
    UserGetRequest,
)
from rusd.core.errors import EtcdError
from rusd.core.lease.types import LeaseRevokeRequest
from rusd.core.mvcc.types import (
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)

# The keys attached to a lease (empty for an unknown lease).
LeaseKeys = Callable[[int], Iterable[bytes]]


def check_op(state: AuthState, info: AuthInfo, key: bytes, range_end: bytes, write: bool) -> None:
    """etcd's isOpPermitted."""
    if not state.enabled:
        return
    if info.revision == 0:
        raise EtcdError(errors.USER_EMPTY)
    if info.revision < state.revision:
        raise EtcdError(errors.AUTH_OLD_REVISION)
    user = state.users.get(info.user)
    if user is None:
        raise EtcdError(errors.PERMISSION_DENIED)
    if has_root_role(user):
        return
    if not state.perms(user).allows(key, range_end, write):
        raise EtcdError(errors.PERMISSION_DENIED)


def check_range(state: AuthState, info: AuthInfo, key: bytes, range_end: bytes) -> None:
    check_op(state, info, key, range_end, write=False)


def check_admin(state: AuthState, info: AuthInfo) -> None:
    """etcd's IsAdminPermitted: only the root role (no revision check)."""
    if not state.enabled:
        return
    if not info.user:
        raise EtcdError(errors.USER_EMPTY)
    user = state.users.get(info.user)
    if user is None:
        raise EtcdError(errors.USER_NOT_FOUND)
    if not has_root_role(user):
        raise EtcdError(errors.PERMISSION_DENIED)


def _check_ops(state: AuthState, info: AuthInfo, ops: tuple[RequestOp, ...]) -> None:
    for op in ops:
        if isinstance(op, RangeRequest):
            check_range(state, info, op.key, op.range_end)
        elif isinstance(op, PutRequest):
            check_op(state, info, op.key, b"", write=True)
        elif isinstance(op, DeleteRangeRequest):
            if op.prev_kv:
                check_range(state, info, op.key, op.range_end)
            check_op(state, info, op.key, op.range_end, write=True)
        elif isinstance(op, TxnRequest):
            # etcd 3.4 skips nested txns here, which lets them read and write anything;
            # rusd checks them like the outer one (as etcd >= 3.4.26 does).
            check_txn(state, info, op)


def check_txn(state: AuthState, info: AuthInfo, txn: TxnRequest) -> None:
    """etcd's checkTxnAuth: every compare (read), then every op of both branches."""
    compare: Compare
    for compare in txn.compare:
        check_range(state, info, compare.key, compare.range_end)
    _check_ops(state, info, txn.success)
    _check_ops(state, info, txn.failure)


def check_lease_keys(state: AuthState, info: AuthInfo, keys: Iterable[bytes]) -> None:
    """etcd's checkLeasePuts: revoking (or attaching to) a lease needs write access to
    every key already attached."""
    for key in keys:
        check_op(state, info, key, b"", write=True)


def check_request(state: AuthState, info: AuthInfo, req: object, lease_keys: LeaseKeys) -> None:
    """The apply-time check of one logged request (etcd's authApplierV3)."""
    if not state.enabled:
        return
    if isinstance(req, ADMIN_REQUESTS):
        check_admin(state, info)
    elif isinstance(req, PutRequest):
        check_op(state, info, req.key, b"", write=True)
        if req.lease:
            check_lease_keys(state, info, lease_keys(req.lease))
        if req.prev_kv:
            check_range(state, info, req.key, b"")
    elif isinstance(req, DeleteRangeRequest):
        check_op(state, info, req.key, req.range_end, write=True)
        if req.prev_kv:
            check_range(state, info, req.key, req.range_end)
    elif isinstance(req, TxnRequest):
        check_txn(state, info, req)
    elif isinstance(req, LeaseRevokeRequest):
        check_lease_keys(state, info, lease_keys(req.id))
    elif isinstance(req, UserGetRequest):
        if req.name != info.user:
            check_admin(state, info)
    elif isinstance(req, RoleGetRequest):
        user = state.users.get(info.user)
        if user is None or req.role not in user.roles:
            check_admin(state, info)
