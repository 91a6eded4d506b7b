"""Test helpers: single nodes driven by hand, and a tiny deterministic in-memory network."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rusd.core.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    ReadState,
    StateType,
)
from rusd.core.raft.memory import MemoryStorage

MT = MessageType


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return [Entry(index=start + k, term=t, data=f"{start + k}@{t}".encode()) for k, t in enumerate(terms)]


def new_node(
    id_: int,
    peers: Sequence[int],
    *,
    log: Sequence[Entry] = (),
    term: int = 0,
    vote: int = 0,
    commit: int = 0,
    seed: int = 0,
    learners: Sequence[int] = (),
    **cfg: Any,
) -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage(ConfState(voters=tuple(peers), learners=tuple(learners)))
    storage.append(list(log))
    storage.set_hard_state(HardState(term=term, vote=vote, commit=commit))
    config = Config(id=id_, **cfg)
    return RawNode(config, storage, random.Random(seed * 1000 + id_)), storage


def drain(
    node: RawNode,
    storage: MemoryStorage,
    applied: list[Entry] | None = None,
    reads: list[ReadState] | None = None,
) -> list[Message]:
    """Run Ready/persist/advance until quiet; return every message to send, in order.

    Committed conf changes are applied (and the new ConfState stored); read states are
    collected into `reads` when given."""
    out: list[Message] = []
    while node.has_ready():
        rd = node.ready()
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.append(rd.entries)
        out.extend(rd.messages)
        out.extend(rd.messages_after_persist)
        for e in rd.committed_entries:
            if e.kind is EntryKind.CONF_CHANGE:
                storage.set_conf_state(node.apply_conf_change(ConfChange.decode(e.data)))
        if applied is not None:
            applied.extend(rd.committed_entries)
        if reads is not None:
            reads.extend(rd.read_states)
        node.advance(rd)
    return out


def make_leader(node: RawNode, storage: MemoryStorage) -> list[Message]:
    """Campaign and grant every vote by hand; return the messages the new leader sends."""
    node.campaign()
    msgs = drain(node, storage)
    for m in msgs:
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
            node.step(Message(type=resp, to=node.id, from_=m.to, term=m.term))
            if node.state is StateType.LEADER:
                break
    if node.state is not StateType.LEADER:
        # pre-vote round won: now the real election
        for m in drain(node, storage):
            if m.type is MT.VOTE:
                node.step(Message(type=MT.VOTE_RESP, to=node.id, from_=m.to, term=m.term))
    assert node.state is StateType.LEADER
    return drain(node, storage)


class Network:
    """n nodes and a FIFO of messages, delivered one by one; `drop` filters messages out."""

    def __init__(self, n: int, *, seed: int = 0, learners: Sequence[int] = (), **cfg: Any) -> None:
        """Voters 1..n, plus the given learners."""
        voters = list(range(1, n + 1))
        self.ids = voters + list(learners)
        self.cfg = cfg
        self.seed = seed
        self.storage: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.reads: dict[int, list[ReadState]] = {i: [] for i in self.ids}
        for i in self.ids:
            self.nodes[i], self.storage[i] = new_node(i, voters, seed=seed, learners=learners, **cfg)
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []
        self.cut: set[tuple[int, int]] = set()  # (from, to) pairs whose messages are dropped
        self.drop: Callable[[Message], bool] | None = None

    # -- faults ------------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut.add((i, j))
                self.cut.add((j, i))

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in g and b in g for g in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def restart(self, i: int) -> None:
        """Rebuild node i from its storage alone (a crash loses nothing: storage is durable here)."""
        applied = max([self.storage[i].snapshot().metadata.index, *(e.index for e in self.applied[i][-1:])])
        self.nodes[i] = RawNode(
            Config(id=i, applied=applied, **self.cfg),
            self.storage[i],
            random.Random(self.seed * 1000 + i + 7919 * len(self.applied[i])),
        )

    # -- driving -----------------------------------------------------------------------------

    def add_node(self, i: int, conf: ConfState, **cfg: Any) -> None:
        """A new, empty member that knows the configuration `conf` (before it was added)."""
        self.ids.append(i)
        self.applied[i] = []
        self.reads[i] = []
        storage = MemoryStorage(conf)
        self.storage[i] = storage
        self.nodes[i] = RawNode(Config(id=i, **{**self.cfg, **cfg}), storage, random.Random(self.seed * 1000 + i))

    def process(self, i: int) -> None:
        self.queue.extend(self._sent(drain(self.nodes[i], self.storage[i], self.applied[i], self.reads[i])))

    def _sent(self, msgs: list[Message]) -> list[Message]:
        self.sent.extend(msgs)
        return msgs

    def deliver(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            m = self.queue.popleft()
            if (m.from_, m.to) in self.cut or (self.drop is not None and self.drop(m)):
                continue
            self.nodes[m.to].step(m)
            self.process(m.to)
        raise AssertionError("network did not quiesce")

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[i].tick()
            self.process(i)
            self.deliver()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i in self.ids:
                self.nodes[i].tick()
                self.process(i)
            self.deliver()

    def campaign(self, i: int) -> None:
        self.nodes[i].campaign()
        self.process(i)
        self.deliver()

    def propose(self, i: int, data: bytes) -> bool:
        try:
            self.nodes[i].propose(data)
        except ProposalDroppedError:
            return False
        self.process(i)
        self.deliver()
        return True

    def read_index(self, i: int, ctx: bytes) -> bool:
        try:
            self.nodes[i].read_index(ctx)
        except ProposalDroppedError:
            return False
        self.process(i)
        self.deliver()
        return True

    def propose_conf_change(self, i: int, cc: ConfChange) -> bool:
        try:
            self.nodes[i].propose_conf_change(cc)
        except ProposalDroppedError:
            return False
        self.process(i)
        self.deliver()
        return True

    def transfer_leader(self, i: int, transferee: int) -> None:
        self.nodes[i].transfer_leader(transferee)
        self.process(i)
        self.deliver()

    def compact(self, i: int, index: int) -> None:
        """Node i snapshots its state at `index` (applied) and drops the log up to it."""
        st = self.storage[i]
        st.create_snapshot(index, self.nodes[i].conf_state(), f"state@{index}".encode())
        st.compact(index)

    def leaders(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].state is StateType.LEADER]

    def log(self, i: int) -> list[Entry]:
        return self.nodes[i].raft.log.all_entries()
