"""A simulated disk per member.

Writes are records appended to a pending list, in order: one record per log entry (as etcd's
WAL writes one record per entry), then the hard state, then the state machine's apply records.
`fsync()` makes every pending record durable. A crash keeps a seeded prefix of the pending
records (the page cache may have flushed some of them) and drops the rest; the last kept
write may be torn, which a checksummed log detects and drops, so a torn tail is again a
shorter prefix. Nothing fsynced is ever lost (unless the test-only `lying_fsync` switch is on).

Restart rebuilds a member from `durable` alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rusd.core.raft import ConfState, Entry, HardState
from rusd.core.raft.memory import MemoryStorage
from sim.register import Register


@dataclass
class DurableState:
    entries: list[Entry] = field(default_factory=list)  # contiguous from index 1
    hard_state: HardState = field(default_factory=HardState)
    register: Register = field(default_factory=Register)


# Records: ("entry", Entry) | ("hard_state", HardState) | ("apply", index, data)
Record = tuple[str, object, object]


class Disk:
    def __init__(self, rng: random.Random, *, lying_fsync: bool = False) -> None:
        self.rng = rng
        self.durable = DurableState()
        self.pending: list[Record] = []
        # Planted bug for the checkers' own test: fsync returns without making anything durable.
        self.lying_fsync = lying_fsync
        self.fsyncs = 0
        self.records_written = 0
        self.records_lost = 0

    # -- writes ---------------------------------------------------------------------------------

    def write_entries(self, entries: list[Entry]) -> None:
        for e in entries:
            self.pending.append(("entry", e, None))
        self.records_written += len(entries)

    def write_hard_state(self, hs: HardState) -> None:
        self.pending.append(("hard_state", hs, None))
        self.records_written += 1

    def write_apply(self, index: int, data: bytes) -> None:
        self.pending.append(("apply", index, data))
        self.records_written += 1

    def fsync(self) -> None:
        self.fsyncs += 1
        if self.lying_fsync:
            return
        self._fold(self.pending)
        self.pending = []

    # -- faults ---------------------------------------------------------------------------------

    def crash(self) -> tuple[int, int]:
        """Power loss: a seeded prefix of the pending records survives. Returns (kept, lost)."""
        n = len(self.pending)
        keep = self.rng.randint(0, n) if n else 0
        self._fold(self.pending[:keep])
        self.pending = []
        self.records_lost += n - keep
        return keep, n - keep

    # -- reading back ---------------------------------------------------------------------------

    def load(self, voters: tuple[int, ...]) -> tuple[MemoryStorage, Register]:
        """The Raft storage and the state machine as a restarted member finds them."""
        storage = MemoryStorage(ConfState(voters=voters))
        storage.append(list(self.durable.entries))
        storage.set_hard_state(self.durable.hard_state)
        reg = self.durable.register
        return storage, Register(reg.applied, dict(reg.kv), dict(reg.seen))

    def durable_term_at(self, index: int) -> int | None:
        ents = self.durable.entries
        return ents[index - 1].term if 0 < index <= len(ents) else None

    def _fold(self, records: list[Record]) -> None:
        d = self.durable
        for kind, a, b in records:
            if kind == "entry":
                assert isinstance(a, Entry)
                if a.index > len(d.entries) + 1:
                    raise AssertionError(f"gap on disk: {len(d.entries)} then {a.index}")
                del d.entries[a.index - 1 :]
                d.entries.append(a)
            elif kind == "hard_state":
                assert isinstance(a, HardState)
                d.hard_state = a
            else:
                assert isinstance(a, int) and isinstance(b, bytes)
                d.register.apply(a, b)
