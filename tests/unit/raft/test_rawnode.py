"""RawNode's Ready/Advance contract."""

from __future__ import annotations

import random

import pytest

from rusd.core.raft import (
    Config,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    RaftError,
    RawNode,
    SoftState,
    StateType,
)
from rusd.core.raft.memory import MemoryStorage

from .harness import Network, drain, ents, make_leader, new_node

MT = MessageType


def test_single_node_commits_after_persist() -> None:
    node, st = new_node(1, (1,))
    node.campaign()
    drain(node, st)
    assert node.state is StateType.LEADER
    node.propose(b"x")
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert rd.committed_entries == []  # not durable anywhere yet
    assert rd.must_sync
    st.append(rd.entries)
    node.advance(rd)
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.hard_state is not None and rd.hard_state.commit == 2
    assert not rd.must_sync  # a commit index alone needs no fsync
    node.advance(rd)
    assert not node.has_ready()


def test_ready_reports_soft_state_changes_once() -> None:
    node, _st = new_node(1, (1, 2, 3))
    assert not node.has_ready()
    node.campaign()
    rd = node.ready()
    assert rd.soft_state == SoftState(lead=0, state=StateType.CANDIDATE)
    node.advance(rd)
    rd = node.ready()
    assert rd.soft_state is None
    node.advance(rd)


def test_messages_now_vs_after_persist() -> None:
    """A leader's appends go out at once (in parallel with its own write); a follower's answer to
    them waits for the follower's persist."""
    leader, lst = new_node(1, (1, 2))
    leader.campaign()
    drain(leader, lst)
    leader.step(Message(type=MT.VOTE_RESP, from_=2, to=1, term=1))
    rd = leader.ready()  # the new leader's empty entry: to persist and to send
    assert [e.index for e in rd.entries] == [1]
    assert [m.type for m in rd.messages] == [MT.APP]
    assert rd.messages_after_persist == []
    follower, _fst = new_node(2, (1, 2))
    follower.step(rd.messages[0])
    frd = follower.ready()
    assert frd.messages == []
    assert [m.type for m in frd.messages_after_persist] == [MT.APP_RESP]
    assert frd.hard_state == HardState(term=1, vote=0, commit=0)
    assert frd.entries and frd.must_sync


def test_ready_twice_without_advance_is_an_error() -> None:
    node, _ = new_node(1, (1, 2, 3))
    node.campaign()
    rd = node.ready()
    with pytest.raises(RaftError):
        node.ready()
    with pytest.raises(RaftError):
        node.advance(type(rd)())
    node.advance(rd)


def test_step_rejects_local_messages_and_ignores_strangers() -> None:
    node, st = new_node(1, (1, 2, 3))
    with pytest.raises(RaftError):
        node.step(Message(type=MT.HUP, from_=2, to=1))
    make_leader(node, st)
    node.step(Message(type=MT.APP_RESP, from_=9, to=1, term=1, index=1))
    assert node.raft.log.committed == 0


def test_restart_keeps_term_vote_and_replays_unapplied_entries() -> None:
    st = MemoryStorage(ConfState(voters=(1, 2, 3)))
    st.append(ents(1, 1, 2))
    st.set_hard_state(HardState(term=2, vote=3, commit=3))
    node = RawNode(Config(id=1, applied=1), st, random.Random(0))
    assert (node.term, node.raft.vote, node.state) == (2, 3, StateType.FOLLOWER)
    applied: list[Entry] = []
    drain(node, st, applied)
    assert [e.index for e in applied] == [2, 3]
    # it will not vote for another candidate in term 2
    node.step(Message(type=MT.VOTE, from_=2, to=1, term=2, index=3, log_term=2))
    [resp] = drain(node, st)
    assert resp.reject


def test_restart_with_commit_past_log_is_an_error() -> None:
    st = MemoryStorage(ConfState(voters=(1,)))
    st.set_hard_state(HardState(term=1, commit=5))
    with pytest.raises(RaftError):
        RawNode(Config(id=1), st, random.Random(0))


def test_invalid_config() -> None:
    st = MemoryStorage(ConfState(voters=(1,)))
    for cfg in (Config(id=0), Config(id=1, election_tick=1), Config(id=1, heartbeat_tick=0)):
        with pytest.raises(ValueError):
            RawNode(cfg, st, random.Random(0))


def test_learner_replicates_but_never_votes_or_campaigns() -> None:
    node, st = new_node(4, (1, 2, 3), learners=(4,))
    for _ in range(50):
        node.tick()
    assert node.state is StateType.FOLLOWER
    assert drain(node, st) == []
    leader, lst = new_node(1, (1, 2, 3), learners=(4,))
    msgs = make_leader(leader, lst)
    assert sorted(m.to for m in msgs if m.type is MT.APP) == [2, 3, 4]
    leader.step(Message(type=MT.APP_RESP, from_=4, to=1, term=1, index=1))
    assert leader.raft.log.committed == 0  # a learner's ack does not count towards the quorum


def test_replication_streams_in_replicate_state_with_window() -> None:
    """After the first ack the follower is in replicate state: appends stream without waiting,
    at most max_inflight_msgs unacknowledged messages."""
    node, st = new_node(1, (1, 2), max_inflight_msgs=2, max_entries_per_msg=1)
    make_leader(node, st)
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=1, index=1))
    drain(node, st)
    for k in range(5):
        node.propose(b"%d" % k)
    apps = [m for m in drain(node, st) if m.type is MT.APP]
    assert [m.index for m in apps] == [1, 2]  # two in flight, one entry each
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=1, index=2))
    apps = [m for m in drain(node, st) if m.type is MT.APP]
    assert [m.index for m in apps] == [3]


def test_network_five_nodes_replicate_many() -> None:
    net = Network(5, max_entries_per_msg=3, max_inflight_msgs=2)
    net.campaign(2)
    for k in range(40):
        assert net.propose(2, b"v%d" % k)
    for i in net.ids:
        assert [e.data for e in net.applied[i]][1:] == [b"v%d" % k for k in range(40)]
