"""PreVote and CheckQuorum (Raft thesis §9.6): a partitioned or restarted node must not disrupt a
stable leader, and a leader that lost its quorum steps down."""

from __future__ import annotations

from rusd.core.raft import Message, MessageType, StateType

from .harness import Network, drain, make_leader, new_node

MT = MessageType


def test_prevote_does_not_increase_term() -> None:
    """A pre-candidate asks with term + 1 but keeps its own term (and its vote) until it wins."""
    node, st = new_node(1, (1, 2, 3), term=4, vote=2, pre_vote=True)
    node.campaign()
    assert node.state is StateType.PRE_CANDIDATE
    assert (node.term, node.raft.vote) == (4, 2)
    msgs = drain(node, st)
    assert sorted((m.type, m.to, m.term) for m in msgs if m.to != 1) == [(MT.PRE_VOTE, 2, 5), (MT.PRE_VOTE, 3, 5)]
    assert st.hard_state.term == 4


def test_prevote_then_vote() -> None:
    """Winning the pre-vote starts a real election with term + 1."""
    node, st = new_node(1, (1, 2, 3), term=4, pre_vote=True)
    node.campaign()
    drain(node, st)
    node.step(Message(type=MT.PRE_VOTE_RESP, from_=2, to=1, term=5))
    assert node.state is StateType.CANDIDATE
    assert node.term == 5
    votes = [m for m in drain(node, st) if m.type is MT.VOTE]
    assert sorted(m.to for m in votes) == [2, 3]


def test_prevote_granted_without_term_change() -> None:
    """A voter answers a pre-vote for a higher term without adopting the term or recording a vote."""
    node, st = new_node(1, (1, 2, 3), term=4, vote=3, pre_vote=True)
    node.step(Message(type=MT.PRE_VOTE, from_=2, to=1, term=5))
    [resp] = drain(node, st)
    assert (resp.type, resp.term, resp.reject) == (MT.PRE_VOTE_RESP, 5, False)
    assert (node.term, node.raft.vote) == (4, 3)


def test_prevote_does_not_disrupt_stable_leader() -> None:
    """A node isolated from a stable cluster keeps timing out; with PreVote its term does not grow,
    so when it rejoins the leader is not deposed and the term is unchanged."""
    net = Network(3, pre_vote=True)
    net.campaign(1)
    net.isolate(3)
    for _ in range(100):
        net.tick_all()
    assert net.nodes[3].term == 1
    assert net.nodes[3].state is StateType.PRE_CANDIDATE
    assert net.propose(1, b"while isolated")
    net.heal()
    net.tick_all(30)
    assert net.leaders() == [1]
    assert all(net.nodes[i].term == 1 for i in net.ids)
    assert net.log(3) == net.log(1)


def test_without_prevote_rejoining_node_disrupts_leader() -> None:
    """The control for the test above: without PreVote the rejoining node forces a new term."""
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    for _ in range(100):
        net.tick_all()
    assert net.nodes[3].term > 1
    net.heal()
    net.tick_all(30)
    assert all(net.nodes[i].term > 1 for i in net.ids)


def test_check_quorum_leader_steps_down_without_quorum() -> None:
    """With CheckQuorum a leader that hears from no majority for an election timeout steps down."""
    net = Network(3, check_quorum=True)
    net.campaign(1)
    net.isolate(1)
    for _ in range(2 * 10 + 1):
        net.nodes[1].tick()
        net.process(1)
    assert net.nodes[1].state is StateType.FOLLOWER
    assert net.nodes[1].lead == 0


def test_check_quorum_leader_stays_with_quorum() -> None:
    net = Network(3, check_quorum=True)
    net.campaign(1)
    net.isolate(3)
    for _ in range(50):
        net.tick(1)
    assert net.nodes[1].state is StateType.LEADER


def test_check_quorum_lease_ignores_vote_requests() -> None:
    """With CheckQuorum a follower that heard from its leader within the election timeout ignores
    a vote request with a higher term (leader lease)."""
    node, st = new_node(1, (1, 2, 3), check_quorum=True)
    node.step(Message(type=MT.HEARTBEAT, from_=2, to=1, term=1))
    drain(node, st)
    node.step(Message(type=MT.VOTE, from_=3, to=1, term=2, index=5, log_term=1))
    assert node.term == 1
    assert drain(node, st) == []


def test_stale_term_append_gets_an_answer_with_check_quorum() -> None:
    """With CheckQuorum/PreVote a node answers a stale leader's append so that it learns the term."""
    node, st = new_node(1, (1, 2, 3), term=5, check_quorum=True)
    node.step(Message(type=MT.APP, from_=2, to=1, term=3, index=0, log_term=0))
    [resp] = drain(node, st)
    assert (resp.type, resp.term, resp.to) == (MT.APP_RESP, 5, 2)


def test_leader_heartbeat_response_unpauses_probe() -> None:
    """A follower in probe state gets one append per heartbeat round until it answers."""
    node, st = new_node(1, (1, 2, 3))
    make_leader(node, st)
    node.propose(b"a")
    node.propose(b"b")
    apps = [m for m in drain(node, st) if m.type is MT.APP and m.to == 2]
    assert apps == []  # paused: the first probe (the empty entry) is unanswered
    node.step(Message(type=MT.HEARTBEAT_RESP, from_=2, to=1, term=1))
    apps = [m for m in drain(node, st) if m.type is MT.APP and m.to == 2]
    assert len(apps) == 1 and [e.data for e in apps[0].entries] == [b"", b"a", b"b"]
