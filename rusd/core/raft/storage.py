"""The log storage Raft reads from, and an in-memory reference implementation."""

from __future__ import annotations

from typing import Protocol

from rusd.core.raft.types import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    """Durable Raft state as last persisted by the driver (read-only for Raft).

    The log is contiguous from first_index() to last_index(); entries up to
    first_index() - 1 were compacted away, and term(first_index() - 1) is still known.
    """

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi; CompactedError below first_index, UnavailableError past the end."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index() - 1 <= index <= last_index()."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (SnapshotTemporarilyUnavailableError if it is being built)."""
        ...
