"""RawNode: the driver-facing surface of Raft (inputs are calls, output is a Ready).

Usage, one turn of the driver::

    node.tick() / node.step(msg) / node.propose(data)    # any number of inputs
    node.read_index(ctx) / node.transfer_leader(id) / node.propose_conf_change(cc)
    if node.has_ready():
        rd = node.ready()
        persist rd.snapshot, rd.hard_state and rd.entries # one fsync if rd.must_sync
        send rd.messages (may overlap the persist), then rd.messages_after_persist
        apply rd.committed_entries (conf changes via node.apply_conf_change)
        serve the reads of rd.read_states
        node.advance(rd)
"""

from __future__ import annotations

from collections.abc import Sequence

from rusd.core.raft.raft import Raft
from rusd.core.raft.storage import Storage
from rusd.core.raft.types import (
    LOCAL_MESSAGES,
    RESPONSE_MESSAGES,
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
    Ready,
    Rng,
    SoftState,
    StateType,
)


class RawNode:
    def __init__(self, config: Config, storage: Storage, rng: Rng) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._outstanding: Ready | None = None
        self._steps_on_advance: list[Message] = []

    # -- inputs ---------------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout elapsed)."""
        self.raft.step(Message(type=MessageType.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose data for the log; ProposalDroppedError if no leader can take it."""
        self.propose_batch((data,))

    def propose_batch(self, data: Sequence[bytes]) -> None:
        """Propose several entries as one MsgProp: a leader appends them together and
        sends one MsgApp per follower for all of them (a follower forwards one MsgProp).
        ProposalDroppedError (for all of them) if no leader can take them."""
        self.raft.step(
            Message(
                type=MessageType.PROP,
                from_=self.raft.id,
                entries=tuple(Entry(index=0, term=0, data=d, kind=EntryKind.NORMAL) for d in data),
            )
        )

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; once its entry is committed, the driver applies it with
        apply_conf_change. While another change is unapplied, the leader turns this one into an
        empty entry (one change at a time, as etcd-io/raft)."""
        self.raft.step(
            Message(
                type=MessageType.PROP,
                from_=self.raft.id,
                entries=(Entry(index=0, term=0, data=cc.encode(), kind=EntryKind.CONF_CHANGE),),
            )
        )

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (decode it with ConfChange.decode(entry.data)); returns
        the new configuration, which the driver persists with its applied state."""
        return self.raft.apply_conf_change(cc)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read identified by `context` (unique per request). A later
        Ready carries ReadState(index, context): serve the read after applying that Ready's
        committed entries. The request may be lost (leader change, partition): retry on timeout.
        ProposalDroppedError if no leader is known here."""
        self.raft.step(Message(type=MessageType.READ_INDEX, from_=self.raft.id, context=context))

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader (this node, or the one it knows) to hand leadership to transferee.
        Proposals are refused while the transfer is under way; it gives up after an election
        timeout."""
        self.raft.step(Message(type=MessageType.TRANSFER_LEADER, from_=transferee))

    def report_snapshot(self, to: int, failed: bool) -> None:
        """The driver tells whether the MsgSnap it sent to `to` was delivered (leader only).
        Replication to `to` resumes after its next heartbeat response."""
        self.raft.step(Message(type=MessageType.SNAP_STATUS, from_=to, reject=failed))

    def report_unreachable(self, to: int) -> None:
        """The driver could not send to `to`: stop streaming to it optimistically."""
        self.raft.step(Message(type=MessageType.UNREACHABLE, from_=to))

    def conf_state(self) -> ConfState:
        return self.raft.tracker.conf_state()

    def step(self, m: Message) -> None:
        """Feed a message received from a peer.

        A proposal forwarded by a follower that cannot be taken here (we are no longer the
        leader and know none) is dropped silently: its proposer learns it was lost by timeout
        or from a leader change, as in etcd.
        """
        if m.type in LOCAL_MESSAGES:
            raise RaftError(f"cannot step local message {m.type.value} from the network")
        if m.type in RESPONSE_MESSAGES and m.from_ not in self.raft.tracker.progress:
            return  # a response from a node that is not in the configuration
        try:
            self.raft.step(m)
        except ProposalDroppedError:
            if m.type not in (MessageType.PROP, MessageType.READ_INDEX):
                raise

    # -- state ----------------------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def state(self) -> StateType:
        return self.raft.state

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def lead(self) -> int:
        return self.raft.lead

    def hard_state(self) -> HardState:
        return self.raft.hard_state()

    def soft_state(self) -> SoftState:
        return self.raft.soft_state()

    # -- output ---------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        # The cheap and most often true conditions first.
        return bool(
            r.msgs
            or r.msgs_after_persist
            or r.log.unstable.entries
            or r.log.has_next_committed_entries()
            or r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.log.has_pending_snapshot()
            or any(rs.index <= r.log.committed for rs in r.read_states)
        )

    def ready(self) -> Ready:
        """The next batch of work; call advance(ready) before the next ready()."""
        if self._outstanding is not None:
            raise RaftError("ready() called again before advance()")
        r = self.raft
        soft = r.soft_state()
        hard = r.hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=r.log.unstable_entries(),
            committed_entries=r.log.next_committed_entries(),
            messages=r.msgs,
        )
        rd.snapshot = r.log.unstable.snapshot
        vote_changed = (hard.term, hard.vote) != (self._prev_hard.term, self._prev_hard.vote)
        rd.must_sync = bool(rd.entries) or vote_changed or rd.snapshot is not None
        for m in r.msgs_after_persist:
            if m.to == r.id:
                self._steps_on_advance.append(m)
            else:
                rd.messages_after_persist.append(m)
        rd.read_states = self._take_read_states()
        r.msgs = []
        r.msgs_after_persist = []
        self._prev_soft = soft
        self._prev_hard = hard
        self._outstanding = rd
        return rd

    def _take_read_states(self) -> list[ReadState]:
        r = self.raft
        ready = [rs for rs in r.read_states if rs.index <= r.log.committed]
        if ready:
            r.read_states = [rs for rs in r.read_states if rs.index > r.log.committed]
        return ready

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in rd."""
        if rd is not self._outstanding:
            raise RaftError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        r = self.raft
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        if rd.snapshot is not None:
            # The driver persisted the snapshot and installed it into the state machine.
            r.log.stable_snap_to(rd.snapshot.metadata.index)
            r.log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            r.on_persisted(last.index, last.term)
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            r.step(m)
