"""Plain value types of the KV API, independent of protobuf.

The server translates protobuf messages to these and back; the core, the storage
backends and the simulator only ever see these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key at one revision. A tombstone has version 0 (and create_revision 0)."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        return self.version == 0


@dataclass(frozen=True, slots=True)
class Event:
    """One change of an applied revision, in sub-revision order: a put, or a delete
    (kv is then the tombstone: key and mod_revision only). prev_kv is the key's value
    just before, when it had one."""

    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def is_delete(self) -> bool:
        return self.kv.is_tombstone


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = 0
    sort_target: int = 0
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """One txn guard.

    `operand_target` says which member of etcd's `target_union` oneof was set (None
    when none was): etcd only uses the operand when it matches `target`, otherwise
    it compares against zero / the empty value.
    """

    key: bytes
    target: int = CompareTarget.VERSION
    result: int = CompareResult.EQUAL
    range_end: bytes = b""
    operand_target: int | None = None
    operand: int | bytes = 0


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


# An empty RequestOp (no member of the oneof set) is represented by None.
RequestOp: TypeAlias = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest | None


@dataclass(frozen=True, slots=True)
class RangeResponse:
    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    revision: int


ResponseOp: TypeAlias = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse
