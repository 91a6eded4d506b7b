"""The replicated log of a one-member cluster: an entry commits once it is persisted.

It has the surface the member needs of Raft (propose, a Ready of entries to persist
and entries to apply, advance), so Raft replaces this class and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rusd.core.log import Entry


@dataclass
class LogReady:
    """Persist `entries`, then apply `committed` (which may include them)."""

    entries: list[Entry] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries or self.committed)


class SingleMemberLog:
    """A one-voter log: the leader's own durable append is a quorum.

    `replay` holds durable entries after the applied index (a crash between the log
    append and the apply); they are committed, so the first Ready applies them.
    """

    def __init__(self, term: int, applied_index: int, replay: list[Entry]) -> None:
        self.term = term
        self.applied_index = applied_index
        self.last_index = replay[-1].index if replay else applied_index
        self._committed: list[Entry] = list(replay)
        self._unstable: list[Entry] = []

    def propose(self, data: bytes) -> int:
        self.last_index += 1
        entry = Entry(self.last_index, self.term, data)
        self._unstable.append(entry)
        self._committed.append(entry)
        return self.last_index

    def ready(self) -> LogReady:
        return LogReady(entries=list(self._unstable), committed=list(self._committed))

    def advance(self, rd: LogReady) -> None:
        del self._unstable[: len(rd.entries)]
        del self._committed[: len(rd.committed)]
        if rd.committed:
            self.applied_index = rd.committed[-1].index
