"""The Raft log: durable entries in Storage followed by unstable (not yet persisted) ones."""

from __future__ import annotations

from collections.abc import Sequence

from rusd.core.raft.storage import Storage
from rusd.core.raft.types import CompactedError, Entry, RaftError, Snapshot, UnavailableError


class Unstable:
    """What is not yet persisted: an incoming snapshot (if any), then entries; entries[i] has
    index offset + i (offset is snapshot index + 1 when there is a snapshot)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        return self.snapshot.metadata.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.metadata.index if self.snapshot is not None else None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset or index >= self.offset + len(self.entries):
            if self.snapshot is not None and index == self.snapshot.metadata.index:
                return self.snapshot.metadata.term
            return None
        return self.entries[index - self.offset].term

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are persisted; ignored if the log changed since."""
        if index < self.offset or self.maybe_term(index) != term:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace everything unstable; the storage's entries from `after` on are stale
            # and will be overwritten when these are persisted.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """committed: highest index known committed; applied: highest index handed out to apply."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, unstable={len(self.unstable.entries)})"
        )

    # -- indexes and terms -------------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def snapshot(self) -> Snapshot:
        """The newest snapshot: the unstable one being installed, else the storage's."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot (it becomes the committed prefix)."""
        self.committed = snap.metadata.index
        self.unstable.restore(snap)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def stable_last_index(self) -> int:
        """The last index whose entry is persisted and agrees with this log."""
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """The term at index; CompactedError / UnavailableError outside the known range."""
        dummy = self.first_index() - 1
        if index < dummy:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        return self.storage.term(index)

    def zero_term_on_err(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (last_index, term) is at least as up to date as this one (§5.4.1)."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- entries -------------------------------------------------------------------------------

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi."""
        if lo > hi:
            raise RaftError(f"invalid slice {lo} > {hi}")
        if lo < self.first_index():
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        if lo == hi:
            return []
        out: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            out.extend(self.storage.entries(lo, min(hi, off)))
        if hi > off:
            out.extend(self.unstable.slice(max(lo, off), hi))
        return out

    def entries_from(self, lo: int, max_count: int) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, min(self.last_index() + 1, lo + max_count))

    def all_entries(self) -> list[Entry]:
        return self.slice(self.first_index(), self.last_index() + 1)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_committed_entries(self) -> bool:
        return self.committed > self.applied and not self.has_pending_snapshot()

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet handed out for applying (none while a snapshot is pending:
        it must be installed first)."""
        if self.committed <= self.applied or self.has_pending_snapshot():
            return []
        return self.slice(self.applied + 1, self.committed + 1)

    # -- changes -------------------------------------------------------------------------------

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry of ents that is absent or has another term here, else 0."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term (the probe hint, §5.3 optimization)."""
        while index > 0:
            try:
                our = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: Sequence[Entry], *, truncate: bool = True
    ) -> int | None:
        """Append ents after (index, log_term) if that entry matches; returns the last new index.
        `truncate=False` is the planted bug "no_log_truncation" (test-only): conflicting entries
        are kept and only entries past our last index are appended."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0 and not truncate:
            last = self.last_index()
            ci = max(ci, last + 1) if last < last_new else 0
        if ci != 0:
            if ci <= self.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry [committed({self.committed})]")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise RaftError(f"to_commit({to_commit}) is out of range [last_index({self.last_index()})]")
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to max_index only if that entry is of `term` (§5.4.2)."""
        if max_index > self.committed and self.zero_term_on_err(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if self.committed < index or index < self.applied:
            raise RaftError(f"applied({index}) is out of range [prev({self.applied}), committed({self.committed})]")
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)
