"""Safety checked on every step, liveness after the faults stop.

Each checker keeps the first violation it saw (a message naming member, index and term);
the cluster stops the run at the first violation, so the message describes the first bad
state and the trace ends right after the event that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rusd.core.raft import Entry

CHECKERS = (
    "election_safety",  # at most one leader per term
    "leader_completeness",  # a new leader's log holds every entry known committed
    "log_matching",  # the committed prefixes of all logs agree
    "state_machine_safety",  # every member applies the same entry at each index
    "applied_monotonic",  # a member's applied index only moves forward, one entry at a time
    "durability",  # committed entries stay durable on a quorum; no acknowledged write is lost
    "liveness",  # after healing: one leader, every pending request answered, within a bound
    "raft_invariants",  # the core raised an error (a panic in etcd)
)


class Checkers:
    def __init__(self, members: Sequence[int]) -> None:
        self.members = list(members)
        self.quorum = len(self.members) // 2 + 1
        self.verdicts: dict[str, str | None] = dict.fromkeys(CHECKERS)
        self._failed = False
        self.liveness_checked = False
        self.leader_of_term: dict[int, int] = {}
        self.completeness_checked: set[int] = set()
        # index -> (term, data) of every entry known committed (from any member's log or apply)
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.log_checked: dict[int, int] = dict.fromkeys(self.members, 0)
        self.applied: dict[int, int] = dict.fromkeys(self.members, 0)
        self.acked: dict[str, int] = {}  # request id -> index it took effect at
        # How much each checker looked at (for the summary: a checker that saw nothing proves nothing).
        self.entries_matched = 0
        self.applies_checked = 0
        self.crashes_checked = 0
        self.steps_checked = 0  # set by the driver: steps whose errors raft_invariants watched
        self.liveness_detail = ""

    # -- verdicts -------------------------------------------------------------------------------

    def fail(self, name: str, message: str) -> None:
        if self.verdicts[name] is None:
            self.verdicts[name] = message
            self._failed = True

    @property
    def failed(self) -> bool:
        return self._failed  # read on every step: a flag, not a scan of the verdicts

    def sizes(self) -> dict[str, str]:
        """What each checker covered, e.g. election_safety -> "31 terms"."""
        return {
            "election_safety": f"{len(self.leader_of_term)} terms",
            "leader_completeness": f"{len(self.completeness_checked)} new leaders",
            "log_matching": f"{self.entries_matched} committed entries",
            "state_machine_safety": f"{self.applies_checked} applies",
            "applied_monotonic": f"{self.applies_checked} applies",
            "durability": f"{self.crashes_checked} crashes, {len(self.acked)} acked writes",
            "liveness": self.liveness_detail,
            "raft_invariants": f"{self.steps_checked} steps",
        }

    def lines(self) -> list[str]:
        out = []
        sizes = self.sizes()
        for name, v in self.verdicts.items():
            size = f" ({sizes[name]})" if sizes[name] else ""
            if v is not None:
                out.append(f"check {name}: FAIL {v}")
            elif name == "liveness" and not self.liveness_checked:
                out.append(f"check {name}: not run")
            else:
                out.append(f"check {name}: ok{size}")
        return out

    # -- safety ---------------------------------------------------------------------------------

    def _committed(self, index: int, term: int, data: bytes) -> tuple[int, bytes]:
        return self.committed.setdefault(index, (term, data))

    def on_leader(self, member: int, term: int, log: list[Entry]) -> bool:
        """A member is leader in `term`; True when this is news (a new election won)."""
        first = self.leader_of_term.setdefault(term, member)
        if first != member:
            self.fail("election_safety", f"term {term} has two leaders: {first} and {member}")
            return False
        if term not in self.completeness_checked:
            self.completeness_checked.add(term)  # once per term: when its leader first shows
            for index, (t, data) in sorted(self.committed.items()):
                if index > len(log) or (log[index - 1].term, log[index - 1].data) != (t, data):
                    self.fail(
                        "leader_completeness",
                        f"leader {member} of term {term} lacks committed entry {index}@{t}",
                    )
                    break
            return True
        return False

    def on_commit(self, member: int, committed: int, entries_from: int, entries: Sequence[Entry]) -> None:
        """`entries` are the member's log entries from index `entries_from` up to its commit."""
        self.entries_matched += len(entries)
        for e in entries:
            want = self._committed(e.index, e.term, e.data)
            if want != (e.term, e.data):
                self.fail(
                    "log_matching",
                    f"member {member} has {e.index}@{e.term} committed, another member has {e.index}@{want[0]}",
                )
                return
        self.log_checked[member] = committed

    def on_restart(self, member: int, applied: int) -> None:
        self.log_checked[member] = 0
        self.applied[member] = applied

    def on_apply(self, member: int, entry: Entry) -> None:
        self.applies_checked += 1
        prev = self.applied[member]
        if entry.index != prev + 1:
            self.fail("applied_monotonic", f"member {member} applied {entry.index} after {prev}")
        self.applied[member] = entry.index
        want = self._committed(entry.index, entry.term, entry.data)
        if want != (entry.term, entry.data):
            self.fail(
                "state_machine_safety",
                f"member {member} applied {entry.index}@{entry.term} where {entry.index}@{want[0]} was applied",
            )

    def on_ack(self, request_id: str, index: int) -> None:
        self.acked.setdefault(request_id, index)

    def on_crash(self, member: int, durable_terms: dict[int, list[tuple[int, bytes]]]) -> None:
        """After a crash dropped un-fsynced writes: every committed entry is still on a quorum
        of durable logs (`durable_terms[m]` is member m's durable log as (term, data) pairs)."""
        self.crashes_checked += 1
        for index, want in sorted(self.committed.items()):
            holders = sum(
                1 for log in durable_terms.values() if index <= len(log) and log[index - 1] == want
            )
            if holders < self.quorum:
                acked = sorted(rid for rid, i in self.acked.items() if i == index)
                what = f"acknowledged request {acked[0]}" if acked else "committed entry"
                self.fail(
                    "durability",
                    f"after member {member} crashed, {what} at {index}@{want[0]} is durable on "
                    f"{holders} of {len(self.members)} members",
                )
                return

    # -- end of run -----------------------------------------------------------------------------

    def final_registers(self, seen: dict[int, dict[str, int]]) -> None:
        """Every acknowledged request took effect, at its index, on every member."""
        for member, s in sorted(seen.items()):
            for rid, index in self.acked.items():
                if s.get(rid) != index:
                    self.fail(
                        "durability",
                        f"acknowledged request {rid} (index {index}) is at {s.get(rid)} on member {member}",
                    )
                    return

    def on_liveness(self, ok: bool, message: str, detail: str = "") -> None:
        self.liveness_checked = True
        self.liveness_detail = detail
        if not ok:
            self.fail("liveness", message)
