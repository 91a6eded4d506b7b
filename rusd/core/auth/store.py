"""The auth store over the KV backend's meta table (etcd's auth/store.go).

Meta layout: `auth/enabled` (b"\\x01" or absent), `auth/revision` (be64; absent
means 1, etcd's first revision), `auth/user/<name>` and `auth/role/<name>` (codec
records). `AuthState` is an immutable snapshot of it with each user's merged range
permissions computed once; `load` is cheap when the revision has not moved.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from rusd.core import codec
from rusd.core.auth.perms import RangePerms
from rusd.core.auth.types import ROOT, Permission, Role, User
from rusd.core.mvcc.backend import KVBackend, KVReader

META_ENABLED = b"auth/enabled"
META_REVISION = b"auth/revision"
USER_PREFIX = b"auth/user/"
ROLE_PREFIX = b"auth/role/"
_REV = struct.Struct(">Q")


@dataclass(frozen=True)
class AuthState:
    enabled: bool = False
    revision: int = 1
    users: Mapping[str, User] = field(default_factory=dict)
    roles: Mapping[str, Role] = field(default_factory=dict)
    _perms: dict[str, RangePerms] = field(default_factory=dict, compare=False, repr=False)

    def perms(self, user: User) -> RangePerms:
        """The user's permissions merged over its roles (etcd's rangePermCache)."""
        cached = self._perms.get(user.name)
        if cached is None:
            merged: list[Permission] = []
            for name in user.roles:
                role = self.roles.get(name)
                if role is not None:
                    merged.extend(role.perms)
            cached = self._perms[user.name] = RangePerms.merge(merged)
        return cached


def has_root_role(user: User) -> bool:
    return ROOT in user.roles


def revision(view: KVReader) -> int:
    raw = view.get_meta(META_REVISION)
    return 1 if raw is None else int(_REV.unpack(raw)[0])


def load(view: KVReader, cached: AuthState | None = None) -> AuthState:
    """The auth state in `view`; `cached` is returned when it is still current (every
    change moves the revision, except enabling, which also flips the flag)."""
    rev = revision(view)
    enabled = view.get_meta(META_ENABLED) == b"\x01"
    if cached is not None and cached.revision == rev and cached.enabled == enabled:
        return cached
    users: dict[str, User] = {}
    for _, raw in view.meta_items(USER_PREFIX):
        user = codec.decode(raw)
        assert isinstance(user, User)
        users[user.name] = user
    roles: dict[str, Role] = {}
    for _, raw in view.meta_items(ROLE_PREFIX):
        role = codec.decode(raw)
        assert isinstance(role, Role)
        roles[role.name] = role
    return AuthState(enabled, rev, users, roles)


def put_user(backend: KVBackend, user: User) -> None:
    backend.put_meta(USER_PREFIX + user.name.encode(), codec.encode(user))


def delete_user(backend: KVBackend, name: str) -> None:
    backend.delete_meta(USER_PREFIX + name.encode())


def put_role(backend: KVBackend, role: Role) -> None:
    backend.put_meta(ROLE_PREFIX + role.name.encode(), codec.encode(role))


def delete_role(backend: KVBackend, name: str) -> None:
    backend.delete_meta(ROLE_PREFIX + name.encode())


def set_enabled(backend: KVBackend, enabled: bool) -> None:
    if enabled:
        backend.put_meta(META_ENABLED, b"\x01")
    else:
        backend.delete_meta(META_ENABLED)


def bump_revision(backend: KVBackend) -> int:
    """etcd's commitRevision: every change but enabling moves the auth revision."""
    rev = revision(backend) + 1
    backend.put_meta(META_REVISION, _REV.pack(rev))
    return rev
