"""Membership changes one server at a time (Raft thesis §4.1; etcd-io/raft simple ConfChange):
add voter, add learner, promote, remove; one pending change at a time; learners replicate but
neither vote nor count; a removed leader steps down."""

from __future__ import annotations

import pytest

from rusd.core.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    RaftError,
    RawNode,
    StateType,
)
from rusd.core.raft.memory import MemoryStorage

from .harness import Network, drain, make_leader, new_node

MT = MessageType
ADD = ConfChangeType.ADD_NODE
ADD_LEARNER = ConfChangeType.ADD_LEARNER_NODE
REMOVE = ConfChangeType.REMOVE_NODE


def test_conf_change_encoding_round_trips() -> None:
    for cc in (ConfChange(ADD, 7), ConfChange(REMOVE, 2**40, b"ctx"), ConfChange(ADD_LEARNER, 1)):
        assert ConfChange.decode(cc.encode()) == cc


def test_propose_conf_change_appends_conf_entry() -> None:
    node, st = new_node(1, (1, 2))
    make_leader(node, st)
    node.propose_conf_change(ConfChange(ADD, 3))
    rd = node.ready()
    [e] = rd.entries
    assert e.kind is EntryKind.CONF_CHANGE
    assert ConfChange.decode(e.data) == ConfChange(ADD, 3)
    assert node.raft.pending_conf_index == e.index


def test_second_pending_conf_change_becomes_noop() -> None:
    """Only one unapplied conf change at a time: the leader replaces a second one by an empty
    normal entry (etcd TestStepIgnoreConfig)."""
    node, st = new_node(1, (1, 2))
    make_leader(node, st)
    node.propose_conf_change(ConfChange(ADD, 3))
    node.propose_conf_change(ConfChange(ADD, 4))
    ents = node.ready().entries
    assert [e.kind for e in ents] == [EntryKind.CONF_CHANGE, EntryKind.NORMAL]
    assert ents[1].data == b""


def test_new_leader_assumes_pending_conf_change() -> None:
    """A new leader does not know whether its uncommitted log holds a conf change
    (etcd TestNewLeaderPendingConfig)."""
    node, st = new_node(1, (1, 2), log=[Entry(index=1, term=1)], term=1)
    make_leader(node, st)
    assert node.raft.pending_conf_index == 1
    node.propose_conf_change(ConfChange(ADD, 3))
    [e] = [e for e in drain_entries(node, st) if e.index == 3]
    assert e.kind is EntryKind.NORMAL


def drain_entries(node: RawNode, st: MemoryStorage) -> list[Entry]:
    out: list[Entry] = []
    while node.has_ready():
        rd = node.ready()
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        st.append(rd.entries)
        out.extend(rd.entries)
        node.advance(rd)
    return out


def test_apply_add_remove_promote() -> None:
    node, _ = new_node(1, (1,))
    assert node.apply_conf_change(ConfChange(ADD, 2)) == ConfState(voters=(1, 2))
    assert node.apply_conf_change(ConfChange(ADD_LEARNER, 3)) == ConfState(voters=(1, 2), learners=(3,))
    assert node.raft.tracker.progress[3].is_learner
    assert node.apply_conf_change(ConfChange(ADD, 3)) == ConfState(voters=(1, 2, 3))
    assert not node.raft.tracker.progress[3].is_learner
    assert node.apply_conf_change(ConfChange(REMOVE, 2)) == ConfState(voters=(1, 3))
    assert 2 not in node.raft.tracker.progress
    assert node.conf_state() == ConfState(voters=(1, 3))
    node.apply_conf_change(ConfChange(REMOVE, 3))
    with pytest.raises(RaftError):
        node.apply_conf_change(ConfChange(REMOVE, 1))


def test_add_voter_through_the_log() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"before")
    net.add_node(4, ConfState(voters=(1, 2, 3)))
    assert net.propose_conf_change(1, ConfChange(ADD, 4))
    net.tick(1)  # heartbeat: node 4 is probed and caught up
    for i in net.ids:
        assert net.nodes[i].conf_state() == ConfState(voters=(1, 2, 3, 4)), i
    assert net.log(4) == net.log(1)
    # Now a write needs 3 of 4.
    net.isolate(2)
    net.isolate(3)
    assert net.propose(1, b"needs three")
    assert net.nodes[1].raft.log.committed < net.nodes[1].raft.log.last_index()
    net.heal()
    net.tick(1)
    assert net.nodes[1].raft.log.committed == net.nodes[1].raft.log.last_index()


def test_commit_index_recomputed_on_remove() -> None:
    """Removing a node that held back the quorum commits what the rest has
    (etcd TestCommitAfterRemoveNode)."""
    node, st = new_node(1, (1, 2))
    make_leader(node, st)
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=1, index=1))
    drain(node, st)
    node.propose(b"x")
    drain(node, st)
    assert node.raft.log.committed == 1
    node.apply_conf_change(ConfChange(REMOVE, 2))
    assert node.raft.log.committed == 2


def test_learner_replicates_but_never_votes_or_counts() -> None:
    net = Network(2, learners=(3,))
    net.campaign(1)
    assert net.propose(1, b"x")
    assert net.log(3) == net.log(1)
    # Votes go to voters only.
    assert sorted(m.to for m in net.sent if m.type is MT.VOTE) == [2]
    # A learner never campaigns on its own.
    net.isolate(3)
    net.tick(3, 100)
    assert net.nodes[3].state is StateType.FOLLOWER
    assert net.nodes[3].term == 1
    # The learner's ack does not commit: with 2 cut off, nothing commits.
    net.heal()
    net.isolate(2)
    assert net.propose(1, b"y")
    r1 = net.nodes[1].raft
    assert r1.tracker.progress[3].match == r1.log.last_index()
    assert r1.log.committed < r1.log.last_index()


def test_learner_promotion() -> None:
    """A promoted learner becomes a voter and may be elected (etcd TestLearnerPromotion)."""
    net = Network(2, learners=(3,))
    net.campaign(1)
    assert net.propose_conf_change(1, ConfChange(ADD, 3))
    for i in net.ids:
        assert net.nodes[i].conf_state() == ConfState(voters=(1, 2, 3))
    net.campaign(3)
    assert net.leaders() == [3]


def test_add_learner_through_the_log() -> None:
    net = Network(3)
    net.campaign(1)
    net.add_node(4, ConfState(voters=(1, 2, 3)))
    assert net.propose_conf_change(1, ConfChange(ADD_LEARNER, 4))
    net.tick(1)
    assert net.nodes[4].conf_state() == ConfState(voters=(1, 2, 3), learners=(4,))
    assert net.log(4) == net.log(1)
    assert not net.nodes[4].raft.promotable()


def test_removed_leader_steps_down() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose_conf_change(1, ConfChange(REMOVE, 1))
    assert net.nodes[1].state is StateType.FOLLOWER
    assert net.nodes[1].conf_state() == ConfState(voters=(2, 3))
    assert not net.nodes[1].raft.promotable()
    net.cut.update({(1, 2), (1, 3), (2, 1), (3, 1)})
    net.tick_all(50)
    [new] = net.leaders()
    assert new in (2, 3)
    assert net.propose(new, b"after removal")
    assert net.nodes[new].raft.log.committed == net.nodes[new].raft.log.last_index()


def test_remove_follower() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose_conf_change(1, ConfChange(REMOVE, 3))
    assert net.nodes[1].conf_state() == ConfState(voters=(1, 2))
    net.isolate(3)
    assert net.propose(1, b"two of two")
    assert net.nodes[1].raft.log.committed == net.nodes[1].raft.log.last_index()


def test_no_campaign_with_unapplied_conf_change() -> None:
    """A node with a committed but unapplied conf change does not campaign
    (its configuration is about to change)."""
    cc = Entry(index=2, term=1, data=ConfChange(ADD, 4).encode(), kind=EntryKind.CONF_CHANGE)
    node, st = new_node(1, (1, 2, 3), log=[Entry(index=1, term=1), cc], term=1, commit=2, applied=1)
    node.campaign()
    assert node.state is StateType.FOLLOWER
    drain(node, st)  # applies it
    node.campaign()
    assert node.state is StateType.CANDIDATE


def test_removing_transferee_aborts_transfer() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    net.transfer_leader(1, 3)
    assert net.nodes[1].raft.lead_transferee == 3
    net.nodes[1].apply_conf_change(ConfChange(REMOVE, 3))
    assert net.nodes[1].raft.lead_transferee == 0
