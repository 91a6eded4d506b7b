"""Leadership transfer (Raft thesis §3.10, etcd-io/raft MsgTransferLeader / MsgTimeoutNow)."""

from __future__ import annotations

import pytest

from rusd.core.raft import NONE, Message, MessageType, ProposalDroppedError, StateType

from .harness import Network, drain, make_leader, new_node

MT = MessageType


def check_leader_transfer_state(net: Network, leader: int, term: int) -> None:
    for i in net.ids:
        n = net.nodes[i]
        assert n.lead == leader, (i, n.lead)
        assert n.term == term, (i, n.term)
        assert (n.state is StateType.LEADER) == (i == leader)
    assert net.nodes[leader].raft.lead_transferee == NONE


def test_transfer_to_up_to_date_node() -> None:
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"x")
    net.transfer_leader(1, 2)
    check_leader_transfer_state(net, 2, 2)
    # The transferee campaigned at once: a TimeoutNow and a real vote, no waiting for a timeout.
    assert [m.to for m in net.sent if m.type is MT.TIMEOUT_NOW] == [2]
    # The new leader works, and leadership can be transferred back.
    assert net.propose(2, b"y")
    net.transfer_leader(2, 1)
    check_leader_transfer_state(net, 1, 3)
    assert net.log(1) == net.log(2) == net.log(3)


def test_transfer_requested_at_follower() -> None:
    """A follower forwards the request to its leader."""
    net = Network(3)
    net.campaign(1)
    net.transfer_leader(2, 2)
    check_leader_transfer_state(net, 2, 2)


def test_transfer_with_check_quorum_and_pre_vote() -> None:
    """The transferee's vote bypasses PreVote and the voters' leader lease."""
    net = Network(3, check_quorum=True, pre_vote=True)
    net.tick_all(30)
    [old] = net.leaders()
    target = 3 if old != 3 else 2
    term = net.nodes[old].term
    net.transfer_leader(old, target)
    check_leader_transfer_state(net, target, term + 1)
    assert not [m for m in net.sent if m.type is MT.PRE_VOTE and m.term == term + 1]
    votes = [m for m in net.sent if m.type is MT.VOTE and m.term == term + 1]
    assert votes and all(m.context == b"CampaignTransfer" for m in votes)


def test_transfer_to_slow_follower_catches_it_up_first() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    assert net.propose(1, b"b")
    net.heal()
    assert net.nodes[1].raft.tracker.progress[3].match < net.nodes[1].raft.log.last_index()
    net.transfer_leader(1, 3)
    check_leader_transfer_state(net, 3, 2)
    assert net.log(3)[:3] == net.log(1)[:3]
    # MsgApp to 3 came before the TimeoutNow.
    kinds = [m.type for m in net.sent if m.to == 3 and m.type in (MT.APP, MT.TIMEOUT_NOW)]
    assert kinds.index(MT.TIMEOUT_NOW) > kinds.index(MT.APP)


def test_transfer_to_self_and_unknown_node_are_ignored() -> None:
    net = Network(3)
    net.campaign(1)
    net.transfer_leader(1, 1)
    check_leader_transfer_state(net, 1, 1)
    net.transfer_leader(1, 9)
    check_leader_transfer_state(net, 1, 1)


def test_transfer_to_learner_is_ignored() -> None:
    node, st = new_node(1, (1, 2), learners=(3,))
    make_leader(node, st)
    node.transfer_leader(3)
    assert node.raft.lead_transferee == NONE
    assert [m for m in drain(node, st) if m.type is MT.TIMEOUT_NOW] == []


def test_proposals_refused_during_transfer_and_transfer_times_out() -> None:
    net = Network(3, election_tick=10)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")  # 3 lags: the transfer has to wait for it
    net.transfer_leader(1, 3)
    r1 = net.nodes[1].raft
    assert r1.lead_transferee == 3
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose(b"refused")
    net.tick(1, 9)
    assert r1.lead_transferee == 3
    net.tick(1, 1)
    assert r1.lead_transferee == NONE  # aborted after an election timeout
    assert net.nodes[1].state is StateType.LEADER
    assert net.propose(1, b"accepted again")


def test_second_transfer_to_same_node_does_not_extend_timeout() -> None:
    net = Network(3, election_tick=10)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    net.transfer_leader(1, 3)
    net.tick(1, 5)
    net.transfer_leader(1, 3)
    net.tick(1, 5)
    assert net.nodes[1].raft.lead_transferee == NONE


def test_second_transfer_to_another_node_replaces_first() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    net.transfer_leader(1, 3)
    assert net.nodes[1].raft.lead_transferee == 3
    net.transfer_leader(1, 2)
    assert net.nodes[2].state is StateType.LEADER
    assert net.nodes[1].state is StateType.FOLLOWER


def test_timeout_now_ignored_by_learner_and_candidate() -> None:
    node, st = new_node(3, (1, 2), learners=(3,))
    node.step(Message(type=MT.TIMEOUT_NOW, from_=1, to=3, term=1))
    assert node.state is StateType.FOLLOWER
    assert [m for m in drain(node, st) if m.type is MT.VOTE] == []


def test_leader_stepping_down_aborts_transfer() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    net.transfer_leader(1, 3)
    net.nodes[1].step(Message(type=MT.HEARTBEAT, from_=2, to=1, term=5))
    assert net.nodes[1].raft.lead_transferee == NONE
