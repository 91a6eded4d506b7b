"""The storage contract of the MVCC store.

The backend keeps three indexes, all of them persistent in LMDB so that a restart
needs no index rebuild and any process can answer a Range from the file alone:

- latest:  key -> the key's current KeyValue (live keys only);
- history: (key, main, sub) -> (sub, KeyValue), tombstones included (one txn can
  delete a key and put it again, e.g. a from-key delete then a put: both stay);
- changes: (main, sub) -> key, the order in which revisions happened (watch catch-up,
  hashing).

Plus a small meta table of named byte strings (revision, compact revision, applied
index, alarms, ...). All MVCC *semantics* (generations, what a range means at a
revision, what compaction keeps) live in the core; a backend only stores and scans.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from rusd.core.mvcc.types import KeyValue


class KVReader(Protocol):
    """A consistent view of the store (a snapshot, or the open write batch)."""

    def get_meta(self, name: bytes) -> bytes | None:
        """The meta value stored under `name`, or None."""

    def meta_items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Meta (name, value) pairs whose name starts with `prefix`, in name order."""

    def get(self, key: bytes) -> KeyValue | None:
        """The current value of a live key."""

    def range(self, key: bytes, end: bytes) -> Iterator[KeyValue]:
        """Live keys in [key, end) in key order; `end == b""` means no upper bound."""

    def history(self, key: bytes, end: bytes | None) -> Iterator[tuple[int, KeyValue]]:
        """Stored revisions as (sub, kv), ordered by (key, mod_revision).

        `end is None` means the single key `key`; `end == b""` means no upper bound.
        """

    def changes(self, after: int) -> Iterator[tuple[int, KeyValue]]:
        """Stored revisions with main revision > `after` as (sub, kv), in revision order."""

    def size(self) -> int:
        """Bytes the store occupies (what --quota-backend-bytes limits)."""

    def size_in_use(self) -> int:
        """Bytes holding live data (size minus free pages)."""


class KVBackend(KVReader, Protocol):
    """The write side; every write lands in the current batch until the driver commits."""

    def put_meta(self, name: bytes, value: bytes) -> None:
        """Store a meta value."""

    def delete_meta(self, name: bytes) -> None:
        """Drop a meta value (nothing happens when there is none)."""

    def write(self, sub: int, kv: KeyValue) -> None:
        """Record a revision: a put, or a tombstone (version 0) that deletes the key."""

    def remove(self, key: bytes, mod_revision: int, sub: int) -> None:
        """Drop one stored revision of a key (compaction)."""
