"""The in-memory Raft log storage (as etcd-io/raft's MemoryStorage): the reference for a
durable one, and the copy of the durable log a Member hands its RawNode."""

from __future__ import annotations

from collections.abc import Sequence

from rusd.core.raft.types import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    RaftError,
    Snapshot,
    SnapshotMetadata,
    UnavailableError,
)


class MemoryStorage:
    """Raft Storage in memory, for tests and the simulator."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.hard_state = HardState()
        self.conf_state = conf_state or ConfState()
        # Index and term of the last compacted entry (0, 0 when nothing was compacted).
        self.snapshot_index = 0
        self.snapshot_term = 0
        self._ents: list[Entry] = []
        # The latest snapshot of the application state (created by the driver or received).
        self._snap = Snapshot(metadata=SnapshotMetadata(conf_state=self.conf_state))

    # -- Storage ----------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.conf_state

    def first_index(self) -> int:
        return self.snapshot_index + 1

    def last_index(self) -> int:
        return self.snapshot_index + len(self._ents)

    def term(self, index: int) -> int:
        if index < self.snapshot_index:
            raise CompactedError(index)
        if index == self.snapshot_index:
            return self.snapshot_term
        if index > self.last_index():
            raise UnavailableError(index)
        return self._ents[index - self.snapshot_index - 1].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        if lo <= self.snapshot_index:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        off = self.snapshot_index + 1
        return self._ents[lo - off : hi - off]

    def snapshot(self) -> Snapshot:
        return self._snap

    # -- writes by the driver ---------------------------------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries; stored entries at or after entries[0].index are replaced."""
        if not entries:
            return
        first = entries[0].index
        if first > self.last_index() + 1:
            raise ValueError(f"gap in log: last {self.last_index()}, appending {first}")
        new = [e for e in entries if e.index > self.snapshot_index]
        if not new:
            return
        keep = new[0].index - self.snapshot_index - 1
        del self._ents[keep:]
        self._ents.extend(new)

    def compact(self, upto: int) -> None:
        """Drop entries with index <= upto (they must be applied)."""
        if upto <= self.snapshot_index:
            return
        if upto > self.last_index():
            raise UnavailableError(upto)
        term = self.term(upto)
        del self._ents[: upto - self.snapshot_index]
        self.snapshot_index = upto
        self.snapshot_term = term

    def set_conf_state(self, cs: ConfState) -> None:
        """Record the configuration after applying a conf change (what a restart starts from)."""
        self.conf_state = cs

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at index (entries up to it may then be compacted)."""
        if index <= self._snap.metadata.index:
            raise RaftError(f"snapshot {index} is out of date (have {self._snap.metadata.index})")
        if index > self.last_index():
            raise UnavailableError(index)
        md = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        self._snap = Snapshot(data=data, metadata=md)
        return self._snap

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        md = snap.metadata
        if md.index <= self._snap.metadata.index:
            raise RaftError(f"snapshot {md.index} is out of date (have {self._snap.metadata.index})")
        self._ents = []
        self.snapshot_index = md.index
        self.snapshot_term = md.term
        self._snap = snap
        self.conf_state = md.conf_state
