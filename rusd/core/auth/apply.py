"""Applying logged auth requests to the meta table (etcd's authStore mutations).

Each function mirrors etcd 3.4's: the same refusals in the same order, the same
revision bumps (every change but AuthEnable and a no-op grant), the same quirks
(granting the root role needs no root role to exist; RoleAdd does not check the
user cache). `apply` returns the new state with the answer, so the caller keeps one
cached AuthState in step with the durable batch, and reports what the change means
for tokens (assigned, revoked) as AuthEffects, which every member applies alike.
"""

from __future__ import annotations

from rusd.core import errors
from rusd.core.auth import store
from rusd.core.auth.store import AuthState, has_root_role
from rusd.core.auth.types import (
    ROOT,
    AuthDisableRequest,
    AuthEffect,
    AuthEnableRequest,
    AuthenticateRequest,
    AuthRequest,
    AuthResponse,
    AuthResult,
    Permission,
    Role,
    RoleAddRequest,
    RoleDeleteRequest,
    RoleGetRequest,
    RoleGetResponse,
    RoleGrantPermissionRequest,
    RoleListRequest,
    RoleListResponse,
    RoleRevokePermissionRequest,
    TokenAssigned,
    TokensRevoked,
    User,
    UserAddRequest,
    UserChangePasswordRequest,
    UserDeleteRequest,
    UserGetRequest,
    UserGetResponse,
    UserGrantRoleRequest,
    UserListRequest,
    UserListResponse,
    UserRevokeRoleRequest,
    UserTokensRevoked,
)
from rusd.core.errors import EtcdError
from rusd.core.mvcc.backend import KVBackend


def apply(
    backend: KVBackend, state: AuthState, req: AuthRequest, kv_revision: int,
    index: int = 0, effects: list[AuthEffect] | None = None,
) -> tuple[AuthResult, AuthState]:
    """Apply one auth request (already permission-checked) from the log entry at
    `index`; raises EtcdError on refusal. What it means for tokens goes to `effects`."""
    if isinstance(req, UserGetRequest):
        user = _user(state, req.name)
        return UserGetResponse(kv_revision, user.roles), state
    if isinstance(req, UserListRequest):
        return UserListResponse(kv_revision, tuple(sorted(state.users))), state
    if isinstance(req, RoleGetRequest):
        role = _role(state, req.role)
        return RoleGetResponse(kv_revision, role.perms), state
    if isinstance(req, RoleListRequest):
        return RoleListResponse(kv_revision, tuple(sorted(state.roles))), state
    if isinstance(req, AuthenticateRequest):
        if not state.enabled:
            raise EtcdError(errors.AUTH_NOT_ENABLED)
        who = state.users.get(req.name)
        if who is None or who.no_password:
            raise EtcdError(errors.AUTH_FAILED)
        if not req.simple_token:  # JWT (or an entry from before tokens were logged)
            return AuthResponse(kv_revision, state.revision), state
        # etcd's tokenSimple.assign: the prefix the proposer chose, then the entry's index.
        token = f"{req.simple_token}.{index}"
        if effects is not None:
            effects.append(TokenAssigned(req.name, token))
        return AuthResponse(kv_revision, state.revision, token), state
    if not _change(backend, state, req):
        return AuthResponse(kv_revision, state.revision), state
    if effects is not None:
        if isinstance(req, UserDeleteRequest | UserChangePasswordRequest):
            effects.append(UserTokensRevoked(req.name))
        elif isinstance(req, AuthDisableRequest):
            effects.append(TokensRevoked())
    new = store.load(backend)
    return AuthResponse(kv_revision, new.revision), new


def revoked_between(old: AuthState, new: AuthState) -> list[AuthEffect]:
    """The token revocations that the entries between two states would have made: for a
    member that skipped them by installing a leader's image (etcd does not revoke
    here, which leaves a lagging member honouring a changed password's tokens)."""
    if old.enabled and not new.enabled:
        return [TokensRevoked()]
    return [
        UserTokensRevoked(name) for name in sorted(old.users)
        if name not in new.users or new.users[name].password != old.users[name].password
    ]


def _user(state: AuthState, name: str) -> User:
    user = state.users.get(name)
    if user is None:
        raise EtcdError(errors.USER_NOT_FOUND)
    return user


def _role(state: AuthState, name: str) -> Role:
    role = state.roles.get(name)
    if role is None:
        raise EtcdError(errors.ROLE_NOT_FOUND)
    return role


def _change(backend: KVBackend, state: AuthState, req: AuthRequest) -> bool:
    """Write one change; False when etcd answers success without changing anything."""
    if isinstance(req, AuthEnableRequest):
        if state.enabled:
            return False
        root = state.users.get(ROOT)
        if root is None:
            raise EtcdError(errors.ROOT_USER_NOT_EXIST)
        if not has_root_role(root):
            raise EtcdError(errors.ROOT_ROLE_NOT_EXIST)
        store.set_enabled(backend, True)
        return True
    if isinstance(req, AuthDisableRequest):
        if not state.enabled:
            return False
        store.set_enabled(backend, False)
    elif isinstance(req, UserAddRequest):
        if not req.name:
            raise EtcdError(errors.USER_EMPTY)
        if req.name in state.users:
            raise EtcdError(errors.USER_ALREADY_EXIST)
        password = b"" if req.no_password else req.hashed_password
        store.put_user(backend, User(req.name, password, (), req.no_password))
    elif isinstance(req, UserDeleteRequest):
        if state.enabled and req.name == ROOT:
            raise EtcdError(errors.INVALID_AUTH_MGMT)
        _user(state, req.name)
        store.delete_user(backend, req.name)
    elif isinstance(req, UserChangePasswordRequest):
        user = _user(state, req.name)
        store.put_user(backend, User(user.name, req.hashed_password, user.roles, user.no_password))
    elif isinstance(req, UserGrantRoleRequest):
        user = _user(state, req.user)
        if req.role != ROOT:
            _role(state, req.role)
        if req.role in user.roles:
            return False
        store.put_user(backend, User(user.name, user.password, tuple(sorted((*user.roles, req.role))),
                                     user.no_password))
    elif isinstance(req, UserRevokeRoleRequest):
        if state.enabled and req.name == ROOT and req.role == ROOT:
            raise EtcdError(errors.INVALID_AUTH_MGMT)
        user = _user(state, req.name)
        if req.role not in user.roles:
            raise EtcdError(errors.ROLE_NOT_GRANTED)
        store.put_user(backend, User(user.name, user.password, tuple(r for r in user.roles if r != req.role),
                                     user.no_password))
    elif isinstance(req, RoleAddRequest):
        if not req.name:
            raise EtcdError(errors.ROLE_EMPTY)
        if req.name in state.roles:
            raise EtcdError(errors.ROLE_ALREADY_EXIST)
        store.put_role(backend, Role(req.name))
    elif isinstance(req, RoleDeleteRequest):
        if state.enabled and req.role == ROOT:
            raise EtcdError(errors.INVALID_AUTH_MGMT)
        _role(state, req.role)
        store.delete_role(backend, req.role)
        for user in state.users.values():
            if req.role in user.roles:
                roles = tuple(r for r in user.roles if r != req.role)
                store.put_user(backend, User(user.name, user.password, roles, user.no_password))
    elif isinstance(req, RoleGrantPermissionRequest):
        store.put_role(backend, _grant(_role(state, req.name), req.perm))
    else:
        assert isinstance(req, RoleRevokePermissionRequest), req
        role = _role(state, req.role)
        kept = tuple(p for p in role.perms if p.key != req.key or p.range_end != req.range_end)
        if len(kept) == len(role.perms):
            raise EtcdError(errors.PERMISSION_NOT_GRANTED)
        store.put_role(backend, Role(role.name, kept))
    store.bump_revision(backend)
    return True


def _grant(role: Role, perm: Permission) -> Role:
    """etcd's RoleGrantPermission: it looks only at the first permission whose key is
    >= the new one; if that has the same key and range end its type is updated,
    otherwise the permission is added and the list stably sorted by key."""
    perms = list(role.perms)
    idx = next((i for i, p in enumerate(perms) if p.key >= perm.key), len(perms))
    if idx < len(perms) and perms[idx].key == perm.key and perms[idx].range_end == perm.range_end:
        perms[idx] = perm
    else:
        perms.append(perm)
        perms.sort(key=lambda p: p.key)
    return Role(role.name, tuple(perms))
