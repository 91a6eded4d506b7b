"""RawNode: the driver-facing surface of Raft (inputs are calls, output is a Ready).

Usage, one turn of the driver::

    node.tick() / node.step(msg) / node.propose(data)    # any number of inputs
    if node.has_ready():
        rd = node.ready()
        persist rd.hard_state and rd.entries              # one fsync if rd.must_sync
        send rd.messages (may overlap the persist), then rd.messages_after_persist
        apply rd.committed_entries
        node.advance(rd)
"""

from __future__ import annotations

from rusd.core.raft.raft import Raft
from rusd.core.raft.storage import Storage
from rusd.core.raft.types import (
    LOCAL_MESSAGES,
    RESPONSE_MESSAGES,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
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
        self.raft.step(
            Message(
                type=MessageType.PROP,
                from_=self.raft.id,
                entries=(Entry(index=0, term=0, data=data, kind=EntryKind.NORMAL),),
            )
        )

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
            if m.type is not MessageType.PROP:
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
        return bool(
            r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.log.unstable.entries
            or r.log.has_next_committed_entries()
            or r.msgs
            or r.msgs_after_persist
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
        vote_changed = (hard.term, hard.vote) != (self._prev_hard.term, self._prev_hard.vote)
        rd.must_sync = bool(rd.entries) or vote_changed
        for m in r.msgs_after_persist:
            if m.to == r.id:
                self._steps_on_advance.append(m)
            else:
                rd.messages_after_persist.append(m)
        r.msgs = []
        r.msgs_after_persist = []
        self._prev_soft = soft
        self._prev_hard = hard
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in rd."""
        if rd is not self._outstanding:
            raise RaftError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        r = self.raft
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            r.on_persisted(last.index, last.term)
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            r.step(m)
