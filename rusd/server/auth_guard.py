"""The one place every service asks "who is this, and may they?".

`AuthGuard` resolves the caller from the `token` (or `authorization`) gRPC metadata,
checks reads and admin calls against the auth state of the snapshot it answers from,
and wraps writes in `Authed` so the apply checks them again at the auth revision the
log entry is applied in (etcd checks writes only there)."""

from __future__ import annotations

from typing import Any

from rusd.core import errors
from rusd.core.auth import check, store
from rusd.core.auth.store import AuthState
from rusd.core.auth.types import Authed, AuthEffect, AuthInfo
from rusd.core.errors import EtcdError
from rusd.core.mvcc import validate
from rusd.core.mvcc.backend import KVReader
from rusd.core.mvcc.types import RangeRequest, TxnRequest
from rusd.core.node import Result, WriteRequest, serve_read
from rusd.server.auth_tokens import SimpleTokens, TokenProvider, apply_effects
from rusd.server.runtime import Runtime
from rusd.server.tls import peer_common_name

_TOKEN_KEYS = ("token", "authorization")


def token_of(context: Any) -> str | None:
    """etcd's AuthInfoFromCtx: metadata `token`, else `authorization`."""
    metadata = context.invocation_metadata() or ()
    for name in _TOKEN_KEYS:
        for key, value in metadata:
            if key == name:
                return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


# etcd's maintenance server returns its auth store's own errors unconverted: the
# client sees code Unknown and the "auth: ..." text.
_RAW = {
    errors.USER_EMPTY: "auth: user name is empty",
    errors.USER_NOT_FOUND: "auth: user not found",
    errors.PERMISSION_DENIED: "auth: permission denied",
    errors.INVALID_AUTH_TOKEN: "auth: invalid auth token",
}


def raw(e: EtcdError) -> EtcdError:
    """`e` as etcd's authMaintenanceServer lets it through."""
    text = _RAW.get(e.kind)
    return e if text is None else EtcdError(errors.ErrorKind(errors.Code.UNKNOWN, text))


class AuthGuard:
    def __init__(self, runtime: Runtime, tokens: TokenProvider | None = None, cert_auth: bool = False) -> None:
        """`cert_auth` (--client-cert-auth): a caller without a token is the user named by
        its verified client certificate's CommonName, as etcd's AuthInfoFromTLS."""
        self.rt = runtime
        self.tokens: TokenProvider = tokens if tokens is not None else SimpleTokens(300.0)
        self.cert_auth = cert_auth
        self._state = AuthState()

    def state(self, view: KVReader) -> AuthState:
        """The auth state in a snapshot (parsed again only when it changed)."""
        self._state = store.load(view, self._state)
        return self._state

    async def current(self) -> AuthState:
        return self.state(await self.rt.snapshot())

    def applied(self, effects: list[AuthEffect]) -> None:
        """The runtime's `on_auth`: applied auth changes reach this member's tokens."""
        apply_effects(self.tokens, effects)

    async def info(self, context: Any) -> AuthInfo:
        """The caller; no token means no user. A token that is unknown, expired, forged
        or whose user is gone raises "invalid auth token"."""
        token = token_of(context)
        if token is None:
            name = peer_common_name(context) if self.cert_auth else None
            if name:
                return AuthInfo(name, (await self.current()).revision)
            return AuthInfo()
        index = self.tokens.applied_index(token)
        if index and not await self.rt.wait_applied(index):
            raise EtcdError(errors.INVALID_AUTH_TOKEN)
        state = await self.current()
        info = self.tokens.info(token, state.revision)
        if info is None:
            raise EtcdError(errors.INVALID_AUTH_TOKEN)
        return info

    async def admin(self, context: Any) -> None:
        """Root only (etcd's IsAdminPermitted), when auth is enabled."""
        info = await self.info(context)
        check.check_admin(await self.current(), info)

    async def write(self, context: Any, req: WriteRequest) -> Result:
        """Propose a client write under the caller's identity."""
        try:
            info = await self.info(context)
        except EtcdError as e:
            return e
        return await self.rt.write(Authed(info.user, info.revision, req))

    async def read(self, context: Any, req: RangeRequest | TxnRequest) -> Result:
        """A Range or read-only Txn: validated, permission-checked and answered from
        one snapshot (etcd's doSerialize), once Raft confirmed it is linearizable."""
        barrier = await self.rt.linearize(req)
        if barrier is not None:
            return barrier
        try:
            info = await self.info(context)
            view = await self.rt.snapshot()
            if isinstance(req, RangeRequest):
                validate.check_range(req)
                check.check_range(self.state(view), info, req.key, req.range_end)
            else:
                validate.check_txn(req, self.rt.config.max_txn_ops)
                check.check_txn(self.state(view), info, req)
            return serve_read(view, req, self.rt.config.max_txn_ops)
        except EtcdError as e:
            return e
