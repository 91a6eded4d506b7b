"""The Raft state machine: roles, elections, replication. Pure: no IO, no clock, no randomness
except the Rng handed in. Driven by RawNode (see rawnode.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rusd.core.raft.log import RaftLog
from rusd.core.raft.progress import Progress, ProgressState, ProgressTracker, VoteResult
from rusd.core.raft.storage import Storage
from rusd.core.raft.types import (
    NONE,
    CompactedError,
    Config,
    Entry,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
    Rng,
    SoftState,
    StateType,
    UnavailableError,
    vote_resp_type,
)

MT = MessageType


class Raft:
    def __init__(self, config: Config, storage: Storage, rng: Rng) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage)
        hs, cs = storage.initial_state()
        self.tracker = ProgressTracker(cs, config.max_inflight_msgs)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.randomized_election_timeout = config.election_tick
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Messages that may be sent at once, and messages that may only be sent (or, when
        # addressed to this node, stepped) once the current HardState and entries are durable.
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self._step: Callable[[Message], None] = self._step_follower
        if hs != HardState():
            self._load_state(hs)
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    # -- state ----------------------------------------------------------------------------------

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise RaftError(f"commit {hs.commit} is out of range [{self.log.committed}, {self.log.last_index()}]")
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(lead=self.lead, state=self.state)

    def promotable(self) -> bool:
        return self.id in self.tracker.voters

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.tracker.reset_votes()
        self.tracker.reset_progress(0, self.log.last_index() + 1)
        own = self.tracker.progress.get(self.id)
        if own is not None:
            # Only what is durable counts for our own match; the rest is acked in on_persisted.
            own.match = self.log.stable_last_index()

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.rng.randrange(self.election_timeout, 2 * self.election_timeout)

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise RaftError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise RaftError("invalid transition [leader -> pre-candidate]")
        # A pre-candidate changes neither its term nor its vote.
        self._step = self._step_candidate
        self.tracker.reset_votes()
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state is StateType.FOLLOWER:
            raise RaftError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        own = self.tracker.progress.get(self.id)
        if own is not None:
            own.become_replicate()
            own.recent_active = True
        # An empty entry of the new term: committing it commits every earlier entry (§5.4.2).
        self._append_entries([Entry(index=0, term=0)])

    # -- ticks ----------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.state is StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(type=MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(type=MT.CHECK_QUORUM, from_=self.id))
        if self.state is not StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MT.BEAT, from_=self.id))

    # -- sending --------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.type in (MT.APP_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP):
            # These promise something about our durable state (the vote, the appended entries).
            self.msgs_after_persist.append(m)
        else:
            if m.to == self.id:
                raise RaftError(f"message to self: {m}")
            self.msgs.append(m)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries_from(pr.next, self.config.max_entries_per_msg)
        except (CompactedError, UnavailableError):
            # The follower needs entries we no longer have: a snapshot (not implemented yet).
            return False
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                type=MT.APP,
                to=to,
                from_=self.id,
                term=self.term,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        pr.sent_entries(len(ents))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes = b"") -> None:
        # Never tell a follower to commit past what it is known to have (it may lack the entries).
        commit = min(self.tracker.progress[to].match, self.log.committed)
        self._send(Message(type=MT.HEARTBEAT, to=to, from_=self.id, term=self.term, commit=commit, context=ctx))

    def _peers(self) -> list[int]:
        return [i for i in self.tracker.ids() if i != self.id]

    def bcast_append(self) -> None:
        for i in self._peers():
            self._send_append(i)

    def bcast_heartbeat(self) -> None:
        for i in self._peers():
            self._send_heartbeat(i)

    # -- leader log -----------------------------------------------------------------------------

    def _append_entries(self, es: Sequence[Entry]) -> None:
        li = self.log.last_index()
        ents = [Entry(index=li + 1 + k, term=self.term, data=e.data, kind=e.kind) for k, e in enumerate(es)]
        self.log.append(ents)
        # Our own progress is updated once the entries are durable (on_persisted).

    def maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def on_persisted(self, index: int, term: int) -> None:
        """The driver made entries up to (index, term) durable."""
        self.log.stable_to(index, term)
        if self.state is not StateType.LEADER:
            return
        own = self.tracker.progress.get(self.id)
        stable = self.log.stable_last_index()
        if own is not None and own.maybe_update(stable) and self.maybe_commit():
            self.bcast_append()

    # -- elections ------------------------------------------------------------------------------

    def _hup(self) -> None:
        if self.state is StateType.LEADER:
            return
        if not self.promotable():
            return
        if self.config.pre_vote:
            self._campaign(MT.PRE_VOTE)
        else:
            self._campaign(MT.VOTE)

    def _campaign(self, vote_type: MessageType) -> None:
        if vote_type is MT.PRE_VOTE:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        for i in self.tracker.voters:
            if i == self.id:
                # Our own vote counts once it is durable: it comes back to us after the persist.
                self._send(Message(type=vote_resp_type(vote_type), to=self.id, from_=self.id, term=term))
                continue
            self._send(
                Message(
                    type=vote_type,
                    to=i,
                    from_=self.id,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                )
            )

    def _poll(self, id_: int, granted: bool) -> VoteResult:
        self.tracker.record_vote(id_, granted)
        return self.tracker.tally_votes()

    # -- step -----------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = (
                    self.config.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                )
                if in_lease:
                    # We heard from a leader within the minimum election timeout: do not let a
                    # disruptive server depose it (§6, "disruptive servers").
                    return
            if m.type is MT.PRE_VOTE:
                pass  # never change our term on a pre-vote
            elif m.type is MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term is bumped when the pre-election is won
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader: answer so that it learns the newer term and steps down (otherwise
                # with check quorum / pre-vote a partitioned node could never bring its term back).
                self._send(Message(type=MT.APP_RESP, to=m.from_, from_=self.id, term=self.term))
            elif m.type is MT.PRE_VOTE:
                self._send(Message(type=MT.PRE_VOTE_RESP, to=m.from_, from_=self.id, term=self.term, reject=True))
            return

        if m.type is MT.HUP:
            self._hup()
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            can_vote = (
                self.vote == m.from_
                or (self.vote == NONE and self.lead == NONE)
                or (m.type is MT.PRE_VOTE and m.term > self.term)
            )
            if can_vote and self.log.is_up_to_date(m.index, m.log_term):
                self._send(Message(type=vote_resp_type(m.type), to=m.from_, from_=self.id, term=m.term))
                if m.type is MT.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.from_
            else:
                self._send(Message(type=vote_resp_type(m.type), to=m.from_, from_=self.id, term=self.term, reject=True))
        else:
            self._step(m)

    def _step_leader(self, m: Message) -> None:
        if m.type is MT.BEAT:
            self.bcast_heartbeat()
            return
        if m.type is MT.CHECK_QUORUM:
            own = self.tracker.progress.get(self.id)
            if own is not None:
                own.recent_active = True
            if not self.tracker.quorum_active():
                self.become_follower(self.term, NONE)
            for i, other in self.tracker.progress.items():
                if i != self.id:
                    other.recent_active = False
            return
        if m.type is MT.PROP:
            if not m.entries:
                raise RaftError("stepped empty MsgProp")
            if self.id not in self.tracker.progress:
                raise ProposalDroppedError("not a member of the configuration")
            self._append_entries(m.entries)
            self.bcast_append()
            return

        pr = self.tracker.progress.get(m.from_)
        if pr is None:
            return
        if m.type is MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif m.type is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index() or pr.state is ProgressState.PROBE:
                self._send_append(m.from_)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term is above the follower's term at the hint.
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        elif old_paused:
            self._send_append(m.from_)
        while self._maybe_send_append(m.from_, send_if_empty=False):
            pass

    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state is StateType.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type is MT.PROP:
            raise ProposalDroppedError("no leader")
        if m.type is MT.APP:
            self.become_follower(m.term, m.from_)
            self._handle_append_entries(m)
        elif m.type is MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif m.type is my_resp:
            res = self._poll(m.from_, not m.reject)
            if res is VoteResult.WON:
                if self.state is StateType.PRE_CANDIDATE:
                    self._campaign(MT.VOTE)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res is VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        if m.type is MT.PROP:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            self._send(Message(type=MT.PROP, to=self.lead, from_=self.id, entries=m.entries))
        elif m.type is MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif m.type is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)

    def _handle_append_entries(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(type=MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(type=MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=last_new))
            return
        # Reject (§5.3) with a hint: the largest index <= m.index whose term is <= m.log_term.
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                type=MT.APP_RESP,
                to=m.from_,
                from_=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self._send(Message(type=MT.HEARTBEAT_RESP, to=m.from_, from_=self.id, term=self.term, context=m.context))
