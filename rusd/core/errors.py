"""Errors a client sees, with etcd's exact gRPC status codes and messages.

The Go client maps the message text back to typed errors, so the strings must be
byte-for-byte etcd's. The core cannot import grpc, so codes are mirrored here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.IntEnum):
    """gRPC status codes (same numbers as grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One etcd error: status code plus the exact message text."""

    code: Code
    message: str


class EtcdError(Exception):
    """Raised by the core; the server turns it into a gRPC status."""

    def __init__(self, kind: ErrorKind) -> None:
        super().__init__(kind.message)
        self.kind = kind

    @property
    def code(self) -> Code:
        return self.kind.code

    @property
    def message(self) -> str:
        return self.kind.message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EtcdError) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self.kind)


def _kind(code: Code, message: str) -> ErrorKind:
    return ErrorKind(code, message)


EMPTY_KEY = _kind(Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = _kind(Code.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = _kind(Code.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = _kind(Code.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = _kind(Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = _kind(Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
INVALID_SORT_OPTION = _kind(Code.INVALID_ARGUMENT, "etcdserver: invalid sort option")
REQUEST_TOO_LARGE = _kind(Code.INVALID_ARGUMENT, "etcdserver: request is too large")
COMPACTED = _kind(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = _kind(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = _kind(Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
LEASE_NOT_FOUND = _kind(Code.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = _kind(Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = _kind(Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")
NO_LEADER = _kind(Code.UNAVAILABLE, "etcdserver: no leader")
LEADER_CHANGED = _kind(Code.UNAVAILABLE, "etcdserver: leader changed")
REQUEST_TIMEOUT = _kind(Code.UNAVAILABLE, "etcdserver: request timed out")
STOPPED = _kind(Code.UNAVAILABLE, "etcdserver: server stopped")
NOT_LEADER = _kind(Code.FAILED_PRECONDITION, "etcdserver: not leader")
MEMBER_NOT_FOUND = _kind(Code.NOT_FOUND, "etcdserver: member not found")
MEMBER_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_NOT_ENOUGH_STARTED = _kind(
    Code.FAILED_PRECONDITION, "etcdserver: re-configuration failed due to not enough started members"
)
MEMBER_BAD_URLS = _kind(Code.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_LEARNER = _kind(Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = _kind(
    Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader"
)
TOO_MANY_LEARNERS = _kind(Code.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster")

# Auth (etcd's api/v3rpc/rpctypes/error.go).
ROOT_USER_NOT_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
USER_ALREADY_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: user name already exists")
USER_EMPTY = _kind(Code.INVALID_ARGUMENT, "etcdserver: user name is empty")
USER_NOT_FOUND = _kind(Code.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = _kind(Code.FAILED_PRECONDITION, "etcdserver: role name already exists")
ROLE_NOT_FOUND = _kind(Code.FAILED_PRECONDITION, "etcdserver: role name not found")
ROLE_EMPTY = _kind(Code.INVALID_ARGUMENT, "etcdserver: role name is empty")
AUTH_FAILED = _kind(Code.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
PERMISSION_DENIED = _kind(Code.PERMISSION_DENIED, "etcdserver: permission denied")
ROLE_NOT_GRANTED = _kind(Code.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = _kind(Code.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role")
AUTH_NOT_ENABLED = _kind(Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = _kind(Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
INVALID_AUTH_MGMT = _kind(Code.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = _kind(Code.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
# Not in etcd's gRPC error map: it reaches the client as an unknown error with the auth text.
NO_PASSWORD_USER = _kind(Code.UNKNOWN, "auth: authentication failed, password was given for no password user")
TOO_MANY_REQUESTS = _kind(Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
BAD_LEADER_TRANSFEREE = _kind(Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
LEADER_TRANSFER_TIMEOUT = _kind(Code.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long")
UNHEALTHY = _kind(Code.UNAVAILABLE, "etcdserver: unhealthy cluster")
CORRUPT = _kind(Code.DATA_LOSS, "etcdserver: corrupt cluster")
