"""ReadIndex (Raft thesis §6.4, etcd-io/raft read_only.go): linearizable reads without a log entry.

The leader records its commit index, confirms it is still the leader with a heartbeat round
carrying the read's context, and only then answers; a Ready carries the ReadState once the
node's commit index reached the read index."""

from __future__ import annotations

import pytest

from rusd.core.raft import Message, MessageType, ProposalDroppedError, RawNode, ReadState, StateType
from rusd.core.raft.memory import MemoryStorage

from .harness import Network, drain, ents, make_leader, new_node

MT = MessageType


def test_single_node_read_index() -> None:
    node, st = new_node(1, (1,))
    node.campaign()
    drain(node, st)
    assert node.state is StateType.LEADER
    node.read_index(b"ctx1")
    reads: list[ReadState] = []
    drain(node, st, reads=reads)
    assert reads == [ReadState(index=1, request_ctx=b"ctx1")]


def test_single_node_read_does_not_wait_for_in_flight_proposals() -> None:
    """With one voter the commit index is the read index at once: a write not yet committed
    was not acknowledged, so the read need not see it."""
    node, st = new_node(1, (1,))
    node.campaign()
    drain(node, st)
    node.propose(b"x")
    node.read_index(b"r")
    rd = node.ready()
    assert rd.read_states == [ReadState(index=1, request_ctx=b"r")]
    assert [e.index for e in rd.entries] == [2]


def test_read_index_via_leader() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"x")
    assert net.read_index(1, b"a")
    assert net.reads[1] == [ReadState(index=2, request_ctx=b"a")]
    # Every follower acknowledged a heartbeat carrying the context.
    hb = [m for m in net.sent if m.type is MT.HEARTBEAT and m.context == b"a"]
    assert sorted(m.to for m in hb) == [2, 3]


def test_read_index_via_follower() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"x")
    assert net.read_index(2, b"b")
    assert net.reads[2] == [ReadState(index=2, request_ctx=b"b")]
    assert net.reads[1] == []
    assert [m.type for m in net.sent if m.context == b"b" and m.type in (MT.READ_INDEX, MT.READ_INDEX_RESP)] == [
        MT.READ_INDEX,
        MT.READ_INDEX_RESP,
    ]
    # The follower may serve the read: it applied everything up to the read index.
    assert net.applied[2][-1].index >= 2


def test_follower_read_index_waits_for_its_commit() -> None:
    """A follower that learns a read index above its commit index reports it only once its
    commit index gets there."""
    node, st = new_node(2, (1, 2, 3), log=[], term=1)
    node.step(Message(type=MT.HEARTBEAT, from_=1, to=2, term=1))
    drain(node, st)
    node.read_index(b"c")
    [fwd] = [m for m in drain(node, st) if m.type is MT.READ_INDEX]
    assert (fwd.to, fwd.from_, fwd.context) == (1, 2, b"c")
    node.step(Message(type=MT.READ_INDEX_RESP, from_=1, to=2, term=1, index=1, context=b"c"))
    reads: list[ReadState] = []
    drain(node, st, reads=reads)
    assert reads == []
    node.step(Message(type=MT.APP, from_=1, to=2, term=1, index=0, log_term=0, entries=tuple(ents(1)), commit=1))
    drain(node, st, reads=reads)
    assert reads == [ReadState(index=1, request_ctx=b"c")]


def test_follower_without_leader_drops_read() -> None:
    node, st = new_node(2, (1, 2, 3))
    with pytest.raises(ProposalDroppedError):
        node.read_index(b"x")
    # A forwarded read that reaches a node without a leader is dropped silently.
    node.step(Message(type=MT.READ_INDEX, from_=3, to=2, context=b"y"))
    assert drain(node, st) == []


def test_leader_waits_for_commit_in_its_term() -> None:
    """A new leader does not know whether its commit index is the latest until it commits an
    entry of its own term: reads wait until then (etcd TestReadOnlyForNewLeader)."""
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"x")
    # Node 2 becomes leader, but nothing it sends is acknowledged yet.
    net.drop = lambda m: m.type is MT.APP_RESP
    net.campaign(2)
    assert net.leaders() == [2]
    r2 = net.nodes[2].raft
    assert not r2.committed_entry_in_current_term()
    assert net.read_index(2, b"early")
    assert net.reads[2] == []
    assert [m for m in net.sent if m.type is MT.HEARTBEAT and m.context == b"early"] == []
    net.drop = None
    net.tick(2, 1)  # heartbeat -> followers answer -> leader resends -> commit
    assert r2.committed_entry_in_current_term()
    assert net.reads[2] == [ReadState(index=r2.log.committed, request_ctx=b"early")]
    assert net.reads[2][0].index == 3


def test_leader_without_quorum_never_answers() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(1)
    assert net.read_index(1, b"lost")
    for _ in range(5):
        net.tick(1)
    assert net.reads[1] == []
    assert net.nodes[1].raft.read_only.pending  # still waiting


def test_one_ack_is_not_enough_in_five() -> None:
    net = Network(5)
    net.campaign(1)
    net.partition([1, 2], [3, 4, 5])
    assert net.read_index(1, b"q")
    net.tick(1, 3)
    assert net.reads[1] == []
    net.heal()
    net.tick(1)  # the heartbeat carries the pending context again
    assert net.reads[1] == [ReadState(index=1, request_ctx=b"q")]


def test_stale_leader_in_partition_cannot_answer() -> None:
    """An old leader cut off with a minority keeps believing it leads; a read at it must not be
    answered (the majority side elected a new leader and committed writes)."""
    net = Network(5)
    net.campaign(1)
    net.partition([1, 2], [3, 4, 5])
    net.campaign(3)
    assert net.propose(3, b"new write")
    assert net.nodes[1].state is StateType.LEADER  # stale, does not know
    assert net.read_index(1, b"stale")
    assert net.read_index(2, b"stale2")
    net.tick(1, 5)
    assert net.reads[1] == [] and net.reads[2] == []
    # Reads on the majority side are answered and see the new write.
    assert net.read_index(4, b"fresh")
    assert net.reads[4] == [ReadState(index=net.nodes[3].raft.log.committed, request_ctx=b"fresh")]
    # After healing the stale leader steps down; its pending read is dropped, never answered.
    net.heal()
    net.tick(3)
    assert net.nodes[1].state is StateType.FOLLOWER
    net.tick_all(3)
    assert all(rs.request_ctx != b"stale" for rs in net.reads[1])


def test_reads_confirmed_in_order() -> None:
    """A quorum for a later read confirms every earlier pending read too."""
    node, st = make_leader_node()
    node.read_index(b"1")
    node.read_index(b"2")
    drain(node, st)
    node.step(Message(type=MT.HEARTBEAT_RESP, from_=2, to=1, term=node.term, context=b"2"))
    reads: list[ReadState] = []
    drain(node, st, reads=reads)
    assert [r.request_ctx for r in reads] == [b"1", b"2"]
    assert node.raft.read_only.pending == {}


def test_learner_ack_does_not_count() -> None:
    node, st = new_node(1, (1, 2, 3), learners=(4,))
    make_leader(node, st)
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=node.term, index=1))
    drain(node, st)
    node.read_index(b"l")
    drain(node, st)
    node.step(Message(type=MT.HEARTBEAT_RESP, from_=4, to=1, term=node.term, context=b"l"))
    reads: list[ReadState] = []
    drain(node, st, reads=reads)
    assert reads == []
    node.step(Message(type=MT.HEARTBEAT_RESP, from_=3, to=1, term=node.term, context=b"l"))
    drain(node, st, reads=reads)
    assert reads == [ReadState(index=1, request_ctx=b"l")]


def make_leader_node() -> tuple[RawNode, MemoryStorage]:
    node, st = new_node(1, (1, 2, 3))
    make_leader(node, st)
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=node.term, index=1))
    drain(node, st)
    assert node.raft.committed_entry_in_current_term()
    return node, st
