"""The Raft state machine: roles, elections, replication. Pure: no IO, no clock, no randomness
except the Rng handed in. Driven by RawNode (see rawnode.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rusd.core.raft.log import RaftLog
from rusd.core.raft.progress import Progress, ProgressState, ProgressTracker, VoteResult
from rusd.core.raft.read_only import ReadOnly
from rusd.core.raft.storage import Storage
from rusd.core.raft.types import (
    CAMPAIGN_TRANSFER,
    NONE,
    CompactedError,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
    ReadState,
    Rng,
    Snapshot,
    SnapshotTemporarilyUnavailableError,
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
        # ReadIndex: reads waiting for a heartbeat quorum, reads waiting for the first commit
        # of the leader's term, and the answers for the driver (see ReadState).
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.read_states: list[ReadState] = []
        # The node leadership is being transferred to (NONE when no transfer is under way).
        self.lead_transferee = NONE
        # The leader may not propose a conf change while the log has an unapplied one at or
        # below this index (one membership change at a time).
        self.pending_conf_index = 0
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
        if "forget_vote" in self.config.bugs:
            return HardState(term=self.term, vote=NONE, commit=self.log.committed)  # planted bug
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
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []
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
        # Conservatively, any entry of the log may be an unapplied conf change.
        self.pending_conf_index = self.log.last_index()
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
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state is StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
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
            # The follower needs entries we no longer have: send a snapshot instead.
            return self._maybe_send_snapshot(to, pr)
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

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            # Do not ship a snapshot to a node we have not heard from lately.
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            raise RaftError("need a non-empty snapshot")
        self._send(Message(type=MT.SNAP, to=to, from_=self.id, term=self.term, snapshot=snap))
        pr.become_snapshot(snap.metadata.index)
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
        # Carry the newest pending read so that lost heartbeats of a read are made up for.
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for i in self._peers():
            self._send_heartbeat(i, ctx)

    # -- leader log -----------------------------------------------------------------------------

    def _append_entries(self, es: Sequence[Entry]) -> None:
        li = self.log.last_index()
        ents = [Entry(index=li + 1 + k, term=self.term, data=e.data, kind=e.kind) for k, e in enumerate(es)]
        self.log.append(ents)
        # Our own progress is updated once the entries are durable (on_persisted).

    def maybe_commit(self) -> bool:
        index = self.tracker.committed()
        term = self.term
        if "commit_old_term" in self.config.bugs:
            term = self.log.zero_term_on_err(index)  # planted bug: any term counts
        if not self.log.maybe_commit(index, term):
            return False
        self._release_pending_read_index_messages()
        return True

    def committed_entry_in_current_term(self) -> bool:
        return self.log.zero_term_on_err(self.log.committed) == self.term

    # -- ReadIndex ------------------------------------------------------------------------------

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._send_read_index_response(m)

    def _send_read_index_response(self, m: Message) -> None:
        # The read index is the commit index now; it is valid once a quorum confirms that we
        # were still the leader after this point (a heartbeat round carrying the context).
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self.bcast_heartbeat_with_ctx(m.context)

    def _response_to_read_index_req(self, req: Message, read_index: int) -> None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index=read_index, request_ctx=req.context))
            return
        self._send(
            Message(
                type=MT.READ_INDEX_RESP,
                to=req.from_,
                from_=self.id,
                term=self.term,
                index=read_index,
                context=req.context,
            )
        )

    # -- leader transfer ------------------------------------------------------------------------

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def _send_timeout_now(self, to: int) -> None:
        self._send(Message(type=MT.TIMEOUT_NOW, to=to, from_=self.id, term=self.term))

    # -- membership -----------------------------------------------------------------------------

    def has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        try:
            ents = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        except (CompactedError, UnavailableError):
            return False
        return any(e.kind is EntryKind.CONF_CHANGE for e in ents)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change to the configuration (the driver calls this when it
        applies the CONF_CHANGE entry)."""
        self.tracker.apply_conf_change(cc, max(self.log.last_index(), 1))
        cs = self.tracker.conf_state()
        own = self.tracker.progress.get(self.id)
        if (own is None or own.is_learner) and self.state is StateType.LEADER:
            # Removed or demoted: step down (a node outside the voters cannot lead).
            self.become_follower(self.term, NONE)
            return cs
        if self.state is not StateType.LEADER:
            return cs
        # The quorum changed: maybe more is committed now, and new members need the log.
        if self.maybe_commit():
            self.bcast_append()
        else:
            for i in self._peers():
                self._maybe_send_append(i, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.tracker.voters:
            self.abort_leader_transfer()
        return cs

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

    def _hup(self, transfer: bool = False) -> None:
        if self.state is StateType.LEADER:
            return
        if not self.promotable():
            return
        if self.has_unapplied_conf_changes():
            # The configuration we would campaign in is about to change: wait until applied.
            return
        if self.config.pre_vote and not transfer:
            self._campaign(MT.PRE_VOTE)
        else:
            self._campaign(MT.VOTE, transfer)

    def _campaign(self, vote_type: MessageType, transfer: bool = False) -> None:
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
                    context=CAMPAIGN_TRANSFER if transfer else b"",
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
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.config.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                )
                if in_lease and not force:
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
            if self.lead_transferee != NONE:
                raise ProposalDroppedError(f"leadership is being transferred to {self.lead_transferee}")
            es = list(m.entries)
            for k, e in enumerate(es):
                if e.kind is not EntryKind.CONF_CHANGE:
                    continue
                if self.pending_conf_index > self.log.applied:
                    # One membership change at a time: this one becomes a no-op (as etcd does).
                    es[k] = Entry(index=0, term=0)
                else:
                    self.pending_conf_index = self.log.last_index() + k + 1
            self._append_entries(es)
            self.bcast_append()
            return
        if m.type is MT.SNAP_STATUS:
            spr = self.tracker.progress.get(m.from_)
            if spr is not None and spr.state is ProgressState.SNAPSHOT:
                if m.reject:
                    spr.pending_snapshot = 0  # failed: probe from match again
                spr.become_probe()
                # Wait for a heartbeat response before sending more (the snapshot may still
                # be on its way, or the peer is unreachable).
                spr.msg_app_flow_paused = True
            return
        if m.type is MT.UNREACHABLE:
            upr = self.tracker.progress.get(m.from_)
            if upr is not None and upr.state is ProgressState.REPLICATE:
                upr.become_probe()
            return
        if m.type is MT.READ_INDEX:
            if self.tracker.is_singleton():
                self._response_to_read_index_req(m, self.log.committed)
            elif not self.committed_entry_in_current_term():
                # Our commit index may be behind the previous leader's: wait for the first
                # commit of our term before it can serve as a read index (§6.4).
                self.pending_read_index_messages.append(m)
            else:
                self._send_read_index_response(m)
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
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.from_, m.context)
            if acks is None or self.tracker.tally_acks(acks) is not VoteResult.WON:
                return
            for rs in self.read_only.advance(m.context):
                self._response_to_read_index_req(rs.req, rs.index)
        elif m.type is MT.TRANSFER_LEADER:
            self._handle_transfer_leader(m, pr)

    def _handle_transfer_leader(self, m: Message, pr: Progress) -> None:
        if pr.is_learner:
            return  # a learner cannot lead
        transferee = m.from_
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return  # already under way
            self.abort_leader_transfer()
        if transferee == self.id:
            return  # already the leader
        # The transfer must finish within an election timeout (see _tick_heartbeat).
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._send_append(transferee)

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
        elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            # The snapshot (or entries) brought it past what we compacted: replicate again.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        elif old_paused:
            self._send_append(m.from_)
        while self._maybe_send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            # The transferee caught up: tell it to campaign now.
            self._send_timeout_now(m.from_)

    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state is StateType.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type in (MT.PROP, MT.READ_INDEX):
            raise ProposalDroppedError("no leader")
        if m.type is MT.APP:
            self.become_follower(m.term, m.from_)
            self._handle_append_entries(m)
        elif m.type is MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif m.type is MT.SNAP:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
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
        elif m.type is MT.READ_INDEX:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            self._send(Message(type=MT.READ_INDEX, to=self.lead, from_=m.from_, context=m.context))
        elif m.type is MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.context))
        elif m.type is MT.TIMEOUT_NOW:
            # The leader hands leadership to us: campaign at once, past PreVote and leases.
            self._hup(transfer=True)
        elif m.type is MT.TRANSFER_LEADER:
            if self.lead == NONE:
                return
            self._send(Message(type=MT.TRANSFER_LEADER, to=self.lead, from_=m.from_, term=self.term))
        elif m.type is MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif m.type is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif m.type is MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)

    def _handle_append_entries(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(type=MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=self.log.committed))
            return
        truncate = "no_log_truncation" not in self.config.bugs
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries, truncate=truncate)
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

    # -- snapshots ------------------------------------------------------------------------------

    def _handle_snapshot(self, m: Message) -> None:
        if m.snapshot is None:
            raise RaftError("MsgSnap without a snapshot")
        index = self.log.last_index() if self.restore(m.snapshot) else self.log.committed
        self._send(Message(type=MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=index))

    def restore(self, snap: Snapshot) -> bool:
        """Install a snapshot from the leader; False if it brings nothing new."""
        md = snap.metadata
        if md.index <= self.log.committed:
            return False
        if self.state is not StateType.FOLLOWER:
            # Only a follower installs a snapshot (from its leader); should never happen.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = md.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            # A snapshot of a configuration we are not part of: ignore it (etcd does too).
            return False
        if self.log.match_term(md.index, md.term):
            # We already have the snapshot's last entry: just fast-forward the commit index.
            self.log.commit_to(md.index)
            return False
        self.log.restore(snap)
        self.tracker = ProgressTracker(cs, self.config.max_inflight_msgs)
        self.tracker.reset_progress(0, self.log.last_index() + 1)
        return True
