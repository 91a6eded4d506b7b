"""The leader's view of each follower: match/next, probe or replicate, and the inflight window."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping

from rusd.core.raft.types import ConfChange, ConfChangeType, ConfState, RaftError


class Inflights:
    """Last indexes of MsgApps sent but not acknowledged, bounded by `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def add(self, index: int) -> None:
        if self.full():
            raise OverflowError("cannot add into a full inflights")
        self._q.append(index)

    def free_le(self, index: int) -> None:
        while self._q and self._q[0] <= index:
            self._q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()


class ProgressState(enum.Enum):
    PROBE = "StateProbe"  # one MsgApp per heartbeat interval until the match point is found
    REPLICATE = "StateReplicate"  # stream MsgApps optimistically, bounded by inflights
    SNAPSHOT = "StateSnapshot"  # a snapshot was sent; wait until it is applied (or fails)


class Progress:
    def __init__(self, match: int, next_: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = match
        self.next = next_
        self.state = ProgressState.PROBE
        self.msg_app_flow_paused = False
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)
        # Index of the snapshot being sent while in StateSnapshot.
        self.pending_snapshot = 0

    def __repr__(self) -> str:
        return f"Progress({self.state.value} match={self.match} next={self.next} paused={self.msg_app_flow_paused})"

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # Resume after the snapshot (if it was applied, match is already there).
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
            return
        self._reset_state(ProgressState.PROBE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def sent_entries(self, count: int) -> None:
        """Account for a MsgApp carrying `count` entries just sent."""
        if self.state is ProgressState.REPLICATE:
            if count > 0:
                self.next += count
                self.inflights.add(self.next - 1)
        elif self.state is ProgressState.PROBE:
            self.msg_app_flow_paused = True

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged index n; False if the ack is stale."""
        if n <= self.match:
            return False
        self.match = n
        self.next = max(self.next, n + 1)
        self.msg_app_flow_paused = False
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected a MsgApp at index `rejected`; back next off. False if stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return True
        if self.state is ProgressState.REPLICATE:
            # Bounded by the window alone: an ack below every inflight index (a delayed or
            # duplicated response) must not let the leader overfill it.
            return self.inflights.full()
        return self.msg_app_flow_paused


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority_committed_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """The highest index acknowledged by a majority of voters (0 for missing acks)."""
    ids = list(voters)
    if not ids:
        return 0
    srt = sorted((match.get(i, 0) for i in ids), reverse=True)
    return srt[len(ids) // 2]


def majority_vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> VoteResult:
    ids = list(voters)
    if not ids:
        return VoteResult.WON
    granted = sum(1 for i in ids if votes.get(i) is True)
    missing = sum(1 for i in ids if i not in votes)
    q = len(ids) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


class ProgressTracker:
    """The configuration (voters, learners), each member's Progress, and the votes of an election."""

    def __init__(self, conf: ConfState, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: tuple[int, ...] = tuple(sorted(set(conf.voters)))
        self.learners: tuple[int, ...] = tuple(sorted(set(conf.learners) - set(self.voters)))
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.reset_progress(0, 1)

    def ids(self) -> list[int]:
        return sorted((*self.voters, *self.learners))

    def reset_progress(self, match: int, next_: int) -> None:
        self.progress = {
            i: Progress(match, next_, self.max_inflight, is_learner=i in self.learners) for i in self.ids()
        }

    def conf_state(self) -> ConfState:
        return ConfState(voters=self.voters, learners=self.learners)

    def committed(self) -> int:
        return majority_committed_index(self.voters, {i: p.match for i, p in self.progress.items()})

    def record_vote(self, id_: int, granted: bool) -> None:
        self.votes.setdefault(id_, granted)

    def tally_votes(self) -> VoteResult:
        return majority_vote_result(self.voters, self.votes)

    def tally_acks(self, acks: Mapping[int, bool]) -> VoteResult:
        """Whether a quorum of voters is among acks (learners' acks do not count)."""
        return majority_vote_result(self.voters, acks)

    def reset_votes(self) -> None:
        self.votes = {}

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def apply_conf_change(self, cc: ConfChange, next_index: int) -> None:
        """Apply one simple change; new members start probing at next_index."""
        voters, learners = set(self.voters), set(self.learners)
        nid = cc.node_id
        if cc.type is ConfChangeType.ADD_NODE:
            learners.discard(nid)
            voters.add(nid)
        elif cc.type is ConfChangeType.ADD_LEARNER_NODE:
            voters.discard(nid)
            learners.add(nid)
        elif cc.type is ConfChangeType.REMOVE_NODE:
            voters.discard(nid)
            learners.discard(nid)
        if not voters:
            raise RaftError("removed all voters")
        self.voters = tuple(sorted(voters))
        self.learners = tuple(sorted(learners))
        for i in list(self.progress):
            if i not in voters and i not in learners:
                del self.progress[i]
        for i in self.ids():
            pr = self.progress.get(i)
            if pr is None:
                pr = Progress(0, max(next_index, 1), self.max_inflight)
                # A new member counts as active: check quorum must not depose the leader at once.
                pr.recent_active = True
                self.progress[i] = pr
            pr.is_learner = i in learners
        self.votes = {i: v for i, v in self.votes.items() if i in voters}

    def quorum_active(self) -> bool:
        active = {i: p.recent_active for i, p in self.progress.items() if not p.is_learner}
        return majority_vote_result(self.voters, active) is VoteResult.WON
