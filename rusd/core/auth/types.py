"""Auth value types, requests and responses, independent of protobuf.

Every request here is a log entry (as in etcd 3.4, which proposes even the read-only
ones so their answers are linearizable). `Authed` carries who asked, and at which auth
revision the server checked it, so the apply can check again (etcd's RequestHeader
Username/AuthRevision)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeAlias

from rusd.core import codec

ROOT = "root"


class PermType(enum.IntEnum):
    """authpb.Permission.Type."""

    READ = 0
    WRITE = 1
    READWRITE = 2


@dataclass(frozen=True, slots=True)
class Permission:
    """Access to `key` alone (range_end empty), [key, range_end), or every key >= key
    (range_end b"\\x00")."""

    perm_type: int
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class User:
    """`password` is a bcrypt hash (empty for a no-password user); roles stay sorted."""

    name: str
    password: bytes
    roles: tuple[str, ...] = ()
    no_password: bool = False


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    perms: tuple[Permission, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who a request runs as: an empty user with revision 0 means no credentials."""

    user: str = ""
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Authed:
    """A client request with the identity the server resolved from its token."""

    user: str
    auth_revision: int
    request: Any


@dataclass(frozen=True, slots=True)
class AuthEnableRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthDisableRequest:
    pass


@dataclass(frozen=True, slots=True)
class AuthenticateRequest:
    """Proposed after the server checked the password (the log never sees it).
    `simple_token` is the random prefix of a simple token (etcd's
    InternalAuthenticateRequest.SimpleToken; "" for JWT): every member that applies the
    entry assigns the token "<prefix>.<entry index>", so it works on all of them."""

    name: str
    simple_token: str = ""


@dataclass(frozen=True, slots=True)
class UserAddRequest:
    name: str
    hashed_password: bytes
    no_password: bool = False


@dataclass(frozen=True, slots=True)
class UserGetRequest:
    name: str


@dataclass(frozen=True, slots=True)
class UserListRequest:
    pass


@dataclass(frozen=True, slots=True)
class UserDeleteRequest:
    name: str


@dataclass(frozen=True, slots=True)
class UserChangePasswordRequest:
    name: str
    hashed_password: bytes


@dataclass(frozen=True, slots=True)
class UserGrantRoleRequest:
    user: str
    role: str


@dataclass(frozen=True, slots=True)
class UserRevokeRoleRequest:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class RoleAddRequest:
    name: str


@dataclass(frozen=True, slots=True)
class RoleGetRequest:
    role: str


@dataclass(frozen=True, slots=True)
class RoleListRequest:
    pass


@dataclass(frozen=True, slots=True)
class RoleDeleteRequest:
    role: str


@dataclass(frozen=True, slots=True)
class RoleGrantPermissionRequest:
    name: str
    perm: Permission


@dataclass(frozen=True, slots=True)
class RoleRevokePermissionRequest:
    role: str
    key: bytes
    range_end: bytes = b""


AuthRequest: TypeAlias = (
    AuthEnableRequest | AuthDisableRequest | AuthenticateRequest | UserAddRequest | UserGetRequest
    | UserListRequest | UserDeleteRequest | UserChangePasswordRequest | UserGrantRoleRequest
    | UserRevokeRoleRequest | RoleAddRequest | RoleGetRequest | RoleListRequest | RoleDeleteRequest
    | RoleGrantPermissionRequest | RoleRevokePermissionRequest
)
AUTH_REQUESTS = (
    AuthEnableRequest, AuthDisableRequest, AuthenticateRequest, UserAddRequest, UserGetRequest,
    UserListRequest, UserDeleteRequest, UserChangePasswordRequest, UserGrantRoleRequest,
    UserRevokeRoleRequest, RoleAddRequest, RoleGetRequest, RoleListRequest, RoleDeleteRequest,
    RoleGrantPermissionRequest, RoleRevokePermissionRequest,
)
# Only root may make these (etcd's needAdminPermission); UserGet and RoleGet are also
# allowed for one's own user and roles.
ADMIN_REQUESTS = (
    AuthEnableRequest, AuthDisableRequest, UserAddRequest, UserDeleteRequest, UserChangePasswordRequest,
    UserGrantRoleRequest, UserRevokeRoleRequest, RoleAddRequest, RoleGrantPermissionRequest,
    RoleRevokePermissionRequest, RoleDeleteRequest, UserListRequest, RoleListRequest,
)


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The answer of every auth change: the KV revision for the header, and the auth
    revision after the apply (the server uses it to drop stale tokens)."""

    revision: int
    auth_revision: int = 0
    # Authenticate's simple token, as assigned by the apply ("" otherwise).
    token: str = ""


@dataclass(frozen=True, slots=True)
class UserGetResponse:
    revision: int
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserListResponse:
    revision: int
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoleGetResponse:
    revision: int
    perms: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class RoleListResponse:
    revision: int
    roles: tuple[str, ...]


AuthResult: TypeAlias = AuthResponse | UserGetResponse | UserListResponse | RoleGetResponse | RoleListResponse


# What an applied auth change means for the tokens a member keeps in memory (etcd's
# tokenProvider calls in its auth store's apply). Every member applies every entry, so
# every member's tokens follow; the driver hands these to its token provider.
@dataclass(frozen=True, slots=True)
class TokenAssigned:
    """An Authenticate applied: `token` now stands for `user` (etcd's assign)."""

    user: str
    token: str


@dataclass(frozen=True, slots=True)
class UserTokensRevoked:
    """The user was deleted or its password changed (etcd's invalidateUser)."""

    user: str


@dataclass(frozen=True, slots=True)
class TokensRevoked:
    """Auth was disabled: every token ends (etcd's disable)."""


AuthEffect: TypeAlias = TokenAssigned | UserTokensRevoked | TokensRevoked


# Log entry and meta record type numbers (20-49 belong to auth; never reuse one).
for _number, _cls in enumerate(
    (Permission, User, Role, Authed, AuthEnableRequest, AuthDisableRequest, None,
     UserAddRequest, UserGetRequest, UserListRequest, UserDeleteRequest, UserChangePasswordRequest,
     UserGrantRoleRequest, UserRevokeRoleRequest, RoleAddRequest, RoleGetRequest, RoleListRequest,
     RoleDeleteRequest, RoleGrantPermissionRequest, RoleRevokePermissionRequest),
    start=20,
):
    if _cls is not None:
        codec.register(_number, _cls)
# 26: AuthenticateRequest before it carried the simple token (older logs hold these).
codec.register_legacy(26, AuthenticateRequest, fields=1)
codec.register(40, AuthenticateRequest)
