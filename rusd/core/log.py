"""Log entries and the storage contract of the replicated log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# The durable log stores Raft's own entries (no copy between the two): `data` is an
# encoded proposal (see rusd.core.codec), or a ConfChange when kind is CONF_CHANGE.
from rusd.core.raft.types import Entry, EntryKind

__all__ = ["Entry", "EntryKind", "LogReader", "LogStore"]


class LogReader(Protocol):
    """The read half of a log: what a snapshot of the storage can answer."""

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi (those present)."""

    def first_index(self) -> int:
        """Index of the first stored entry (last_index() + 1 when empty)."""

    def last_index(self) -> int:
        """Index of the last stored entry (0 when nothing was ever stored)."""


class LogStore(LogReader, Protocol):
    """Durable log entries. Indexes are contiguous from first_index() to last_index()."""

    def append_entries(self, entries: Sequence[Entry]) -> None:
        """Store entries; any stored entry at or after entries[0].index is replaced."""

    def compact_log(self, upto: int) -> None:
        """Drop entries with index <= upto (they are applied and no longer needed)."""
