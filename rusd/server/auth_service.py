"""The Auth gRPC service: protobuf <-> core auth types, password hashing and checking,
token minting, and Authenticate's brute-force limit.

Every request but AuthStatus is a log entry, as in etcd 3.4 (the apply checks who may
make it). What auth changes mean for tokens (a simple token assigned, a user's tokens
or all of them revoked) reaches every member's token provider from the apply, through
the runtime's `on_auth`, not from here. Passwords never reach the log or the logs: the server hashes them with
bcrypt (--bcrypt-cost) before proposing, and checks them against the stored hash in
a worker thread, so a slow hash never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import bcrypt

from rusd.api.authpb import auth_pb2
from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.core import errors
from rusd.core.auth import types as at
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store as mvcc
from rusd.server.auth_guard import AuthGuard
from rusd.server.auth_tokens import TokenError
from rusd.server.base import ServiceBase, abort
from rusd.server.runtime import Runtime

log = logging.getLogger("rusd.auth")

# bcrypt reads at most 72 bytes of a password (Go's bcrypt did too, silently).
_BCRYPT_MAX = 72
# Authenticate: each (peer, user) may fail this many times in a burst, then one more
# time per _REFILL_SECONDS; a correct password does not use up the allowance.
_BURST = 10
_REFILL_SECONDS = 1.0
# Authenticate retries when the auth revision moved between the password check and
# the apply (etcd loops the same way).
_MAX_ATTEMPTS = 5

R = TypeVar("R")


def _secret(password: str) -> bytes:
    return password.encode()[:_BCRYPT_MAX]


class FailureLimiter:
    """A token bucket per key, spent by failed attempts only."""

    def __init__(self, burst: int = _BURST, refill: float = _REFILL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.refill = refill
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def _level(self, key: tuple[str, str]) -> float:
        tokens, at_time = self._buckets.get(key, (float(self.burst), self._clock()))
        return min(float(self.burst), tokens + (self._clock() - at_time) / self.refill)

    def allowed(self, key: tuple[str, str]) -> bool:
        return self._level(key) >= 1.0

    def failed(self, key: tuple[str, str]) -> None:
        if len(self._buckets) > 10_000:
            now = self._clock()
            self._buckets = {k: v for k, v in self._buckets.items()
                             if v[0] + (now - v[1]) / self.refill < self.burst}
        self._buckets[key] = (max(0.0, self._level(key) - 1.0), self._clock())


class AuthService(ServiceBase, pb_grpc.AuthServicer):
    def __init__(self, runtime: Runtime, guard: AuthGuard, bcrypt_cost: int = 10) -> None:
        super().__init__(runtime)
        self.guard = guard
        self.bcrypt_cost = bcrypt_cost
        self.limiter = FailureLimiter()
        # At most one bcrypt check per core at a time: a flood of Authenticate calls
        # queues here instead of starving every other request of CPU.
        self._bcrypt_slots = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        # Compared against for unknown users, so an answer's timing does not tell
        # whether a user exists (made on first need: a high cost takes a while).
        self._decoy: bytes | None = None

    async def _apply(self, req: Any, expected: type[R], context: Any) -> R:
        return await self.answer(await self.guard.write(context, req), expected, context)

    async def _hash(self, password: str) -> bytes:
        salt = bcrypt.gensalt(self.bcrypt_cost)
        return await asyncio.get_running_loop().run_in_executor(None, bcrypt.hashpw, _secret(password), salt)

    async def AuthEnable(self, request: pb.AuthEnableRequest, context: Any) -> pb.AuthEnableResponse:
        r = await self._apply(at.AuthEnableRequest(), at.AuthResponse, context)
        return pb.AuthEnableResponse(header=self.header(r.revision))

    async def AuthDisable(self, request: pb.AuthDisableRequest, context: Any) -> pb.AuthDisableResponse:
        # Every member forgets its tokens when it applies this (Runtime.on_auth).
        r = await self._apply(at.AuthDisableRequest(), at.AuthResponse, context)
        return pb.AuthDisableResponse(header=self.header(r.revision))

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: Any) -> pb.AuthStatusResponse:
        """etcd 3.5's AuthStatus (3.4 has none): read from the snapshot."""
        view = await self.rt.snapshot()
        state = self.guard.state(view)
        return pb.AuthStatusResponse(
            header=self.header(mvcc.current_revision(view)), enabled=state.enabled, authRevision=state.revision
        )

    async def Authenticate(self, request: pb.AuthenticateRequest, context: Any) -> pb.AuthenticateResponse:
        name = request.name
        # Per client address (not port: a new connection must not reset the count).
        key = ((context.peer() or "").rsplit(":", 1)[0], name)
        for _ in range(_MAX_ATTEMPTS):
            state = await self.guard.current()
            if not state.enabled:
                await abort(context, EtcdError(errors.AUTH_NOT_ENABLED))
            if not self.limiter.allowed(key):
                log.warning("too many failed authentications for user %r from %s", name, key[0])
                await abort(context, EtcdError(errors.TOO_MANY_REQUESTS))
            user = state.users.get(name)
            if user is not None and user.no_password:
                await abort(context, EtcdError(errors.NO_PASSWORD_USER))
            if user is None and self._decoy is None:
                self._decoy = await self._hash("decoy")
            stored = user.password if user is not None else self._decoy
            assert stored is not None
            async with self._bcrypt_slots:
                matches = await asyncio.get_running_loop().run_in_executor(
                    None, bcrypt.checkpw, _secret(request.password), stored
                )
            if user is None or not matches:
                self.limiter.failed(key)
                log.warning("invalid authentication was requested for user %r", name)
                await abort(context, EtcdError(errors.AUTH_FAILED))
            # A simple token's prefix goes into the log: every member assigns the token
            # when it applies the entry (this one before the answer reaches us).
            req = at.AuthenticateRequest(name, self.guard.tokens.token_prefix())
            r = await self.answer(await self.rt.write(req), at.AuthResponse, context)
            if r.auth_revision == state.revision:
                token = r.token
                if not token:
                    try:
                        token = self.guard.tokens.assign(name, r.auth_revision)
                    except TokenError as e:  # a verify-only JWT member (etcd: ErrVerifyOnly)
                        await abort(context, EtcdError(errors.ErrorKind(errors.Code.UNKNOWN, str(e))))
                return pb.AuthenticateResponse(header=self.header(r.revision), token=token)
        await abort(context, EtcdError(errors.REQUEST_TIMEOUT))

    async def UserAdd(self, request: pb.AuthUserAddRequest, context: Any) -> pb.AuthUserAddResponse:
        no_password = request.options.no_password
        # Hash only for someone allowed to add users (the apply checks again).
        await self._admin(context)
        hashed = b"" if no_password else await self._hash(request.password)
        r = await self._apply(at.UserAddRequest(request.name, hashed, no_password), at.AuthResponse, context)
        return pb.AuthUserAddResponse(header=self.header(r.revision))

    async def UserGet(self, request: pb.AuthUserGetRequest, context: Any) -> pb.AuthUserGetResponse:
        r = await self._apply(at.UserGetRequest(request.name), at.UserGetResponse, context)
        return pb.AuthUserGetResponse(header=self.header(r.revision), roles=list(r.roles))

    async def UserList(self, request: pb.AuthUserListRequest, context: Any) -> pb.AuthUserListResponse:
        r = await self._apply(at.UserListRequest(), at.UserListResponse, context)
        return pb.AuthUserListResponse(header=self.header(r.revision), users=list(r.users))

    async def UserDelete(self, request: pb.AuthUserDeleteRequest, context: Any) -> pb.AuthUserDeleteResponse:
        r = await self._apply(at.UserDeleteRequest(request.name), at.AuthResponse, context)
        return pb.AuthUserDeleteResponse(header=self.header(r.revision))

    async def UserChangePassword(
        self, request: pb.AuthUserChangePasswordRequest, context: Any
    ) -> pb.AuthUserChangePasswordResponse:
        await self._admin(context)
        hashed = await self._hash(request.password)
        r = await self._apply(at.UserChangePasswordRequest(request.name, hashed), at.AuthResponse, context)
        return pb.AuthUserChangePasswordResponse(header=self.header(r.revision))

    async def UserGrantRole(self, request: pb.AuthUserGrantRoleRequest, context: Any) -> pb.AuthUserGrantRoleResponse:
        r = await self._apply(at.UserGrantRoleRequest(request.user, request.role), at.AuthResponse, context)
        return pb.AuthUserGrantRoleResponse(header=self.header(r.revision))

    async def UserRevokeRole(
        self, request: pb.AuthUserRevokeRoleRequest, context: Any
    ) -> pb.AuthUserRevokeRoleResponse:
        r = await self._apply(at.UserRevokeRoleRequest(request.name, request.role), at.AuthResponse, context)
        return pb.AuthUserRevokeRoleResponse(header=self.header(r.revision))

    async def RoleAdd(self, request: pb.AuthRoleAddRequest, context: Any) -> pb.AuthRoleAddResponse:
        r = await self._apply(at.RoleAddRequest(request.name), at.AuthResponse, context)
        return pb.AuthRoleAddResponse(header=self.header(r.revision))

    async def RoleGet(self, request: pb.AuthRoleGetRequest, context: Any) -> pb.AuthRoleGetResponse:
        r = await self._apply(at.RoleGetRequest(request.role), at.RoleGetResponse, context)
        perms = [auth_pb2.Permission(permType=p.perm_type, key=p.key, range_end=p.range_end)  # type: ignore[arg-type]
                 for p in r.perms]
        return pb.AuthRoleGetResponse(header=self.header(r.revision), perm=perms)

    async def RoleList(self, request: pb.AuthRoleListRequest, context: Any) -> pb.AuthRoleListResponse:
        r = await self._apply(at.RoleListRequest(), at.RoleListResponse, context)
        return pb.AuthRoleListResponse(header=self.header(r.revision), roles=list(r.roles))

    async def RoleDelete(self, request: pb.AuthRoleDeleteRequest, context: Any) -> pb.AuthRoleDeleteResponse:
        r = await self._apply(at.RoleDeleteRequest(request.role), at.AuthResponse, context)
        return pb.AuthRoleDeleteResponse(header=self.header(r.revision))

    async def RoleGrantPermission(
        self, request: pb.AuthRoleGrantPermissionRequest, context: Any
    ) -> pb.AuthRoleGrantPermissionResponse:
        p = request.perm
        perm = at.Permission(int(p.permType), p.key, p.range_end)
        r = await self._apply(at.RoleGrantPermissionRequest(request.name, perm), at.AuthResponse, context)
        return pb.AuthRoleGrantPermissionResponse(header=self.header(r.revision))

    async def RoleRevokePermission(
        self, request: pb.AuthRoleRevokePermissionRequest, context: Any
    ) -> pb.AuthRoleRevokePermissionResponse:
        req = at.RoleRevokePermissionRequest(request.role, request.key, request.range_end)
        r = await self._apply(req, at.AuthResponse, context)
        return pb.AuthRoleRevokePermissionResponse(header=self.header(r.revision))

    async def _admin(self, context: Any) -> None:
        try:
            await self.guard.admin(context)
        except EtcdError as e:
            await abort(context, e)
