"""One test per claim of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", §5), in the spirit of etcd-io/raft's raft_paper_test.go. Every test drives
nodes through RawNode's Ready/Advance API only (plus `node.raft` to read state)."""

from __future__ import annotations

import pytest

from rusd.core.raft import NONE, Entry, HardState, Message, MessageType, RawNode, StateType
from rusd.core.raft.memory import MemoryStorage

from .harness import Network, drain, ents, make_leader, new_node

MT = MessageType


def _become(state: StateType, node_id: int = 1, peers: tuple[int, ...] = (1, 2, 3)) -> tuple[RawNode, MemoryStorage]:
    node, st = new_node(node_id, peers, term=1)
    if state is StateType.CANDIDATE:
        node.campaign()
        drain(node, st)
    elif state is StateType.LEADER:
        make_leader(node, st)
    assert node.state is state
    return node, st


# -- §5.1: terms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE, StateType.LEADER])
def test_update_term_from_message(state: StateType) -> None:
    """§5.1: a server that sees a larger term updates its term; a candidate or leader reverts
    to follower."""
    node, st = _become(state)
    node.step(Message(type=MT.APP, from_=2, to=1, term=5, index=0, log_term=0))
    assert node.term == 5
    assert node.state is StateType.FOLLOWER
    assert node.lead == 2
    drain(node, st)
    assert st.hard_state.term == 5


def test_reject_stale_term_message() -> None:
    """§5.1: a request with a stale term number is ignored."""
    node, st = new_node(1, (1, 2, 3), term=2)
    node.step(Message(type=MT.APP, from_=2, to=1, term=1, index=0, log_term=0, entries=tuple(ents(1))))
    assert node.raft.log.last_index() == 0
    assert node.lead == NONE
    assert drain(node, st) == []


def test_start_as_follower() -> None:
    """§5.2: when servers start up, they begin as followers."""
    node, _ = new_node(1, (1, 2, 3))
    assert node.state is StateType.FOLLOWER
    assert node.term == 0


# -- §5.2: leader election ------------------------------------------------------------------------


def test_leader_bcast_beat() -> None:
    """§5.2: leaders send periodic heartbeats to all followers to maintain their authority."""
    node, st = new_node(1, (1, 2, 3), heartbeat_tick=2)
    make_leader(node, st)
    node.tick()
    assert [m for m in drain(node, st) if m.type is MT.HEARTBEAT] == []
    node.tick()
    beats = [m for m in drain(node, st) if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.term == node.term and m.commit == 0 for m in beats)


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE])
def test_nonleader_start_election(state: StateType) -> None:
    """§5.2: a follower (or a candidate whose election timed out) that receives no communication
    within the election timeout increments its term, votes for itself, and requests votes."""
    node, st = _become(state)
    term = node.term
    for _ in range(2 * 10):
        node.tick()
    assert node.state is StateType.CANDIDATE
    assert node.term == term + 1
    assert node.raft.vote == 1
    msgs = drain(node, st)
    assert st.hard_state == HardState(term=term + 1, vote=1, commit=0)
    votes = sorted((m.to, m.term) for m in msgs if m.type is MT.VOTE)
    assert votes == [(2, term + 1), (3, term + 1)]


@pytest.mark.parametrize(
    ("size", "granted", "rejected", "want"),
    [
        (1, [], [], StateType.LEADER),
        (3, [2], [], StateType.LEADER),
        (3, [2, 3], [], StateType.LEADER),
        (5, [2, 3], [], StateType.LEADER),
        (5, [2, 3, 4, 5], [], StateType.LEADER),
        (3, [], [], StateType.CANDIDATE),
        (5, [2], [], StateType.CANDIDATE),
        (3, [], [2, 3], StateType.FOLLOWER),
        (5, [2], [3, 4, 5], StateType.FOLLOWER),
    ],
)
def test_leader_election_in_one_round(size: int, granted: list[int], rejected: list[int], want: StateType) -> None:
    """§5.2: a candidate wins if it receives votes from a majority of the cluster for the same
    term; it loses (returns to follower) once a majority rejected it; otherwise it waits."""
    peers = tuple(range(1, size + 1))
    node, st = new_node(1, peers)
    node.campaign()
    drain(node, st)  # the candidate's own vote counts once persisted
    for i in granted:
        node.step(Message(type=MT.VOTE_RESP, from_=i, to=1, term=1))
    for i in rejected:
        node.step(Message(type=MT.VOTE_RESP, from_=i, to=1, term=1, reject=True))
    assert node.state is want
    assert node.term == 1


def test_candidate_own_vote_counts_only_after_persist() -> None:
    """§5.2 + durability: the candidate's vote for itself is in the Ready's HardState, and it is
    tallied only after advance() (a single-voter cluster wins only then)."""
    node, st = new_node(1, (1,))
    node.campaign()
    assert node.state is StateType.CANDIDATE
    rd = node.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.must_sync
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.soft_state().state is StateType.LEADER


@pytest.mark.parametrize(
    ("vote", "candidate", "want_reject"),
    [(NONE, 2, False), (NONE, 3, False), (2, 2, False), (3, 3, False), (2, 3, True), (3, 2, True)],
)
def test_follower_vote(vote: int, candidate: int, want_reject: bool) -> None:
    """§5.2: each server votes for at most one candidate in a given term, first-come-first-served."""
    node, _st = new_node(1, (1, 2, 3), term=1, vote=vote)
    node.step(Message(type=MT.VOTE, from_=candidate, to=1, term=1))
    rd = node.ready()
    assert rd.messages == []  # a vote answer waits for the persist of the vote
    [resp] = rd.messages_after_persist
    assert (resp.type, resp.to, resp.term, resp.reject) == (MT.VOTE_RESP, candidate, 1, want_reject)
    if not want_reject and vote == NONE:
        assert rd.hard_state == HardState(term=1, vote=candidate) and rd.must_sync


def test_at_most_one_vote_per_term_across_requests() -> None:
    """§5.2: after granting a vote in a term, another candidate of that term is refused."""
    node, st = new_node(1, (1, 2, 3))
    node.step(Message(type=MT.VOTE, from_=2, to=1, term=3))
    node.step(Message(type=MT.VOTE, from_=3, to=1, term=3))
    msgs = drain(node, st)
    assert [(m.to, m.reject) for m in msgs] == [(2, False), (3, True)]
    assert st.hard_state.vote == 2


@pytest.mark.parametrize("leader_term", [1, 2])
def test_candidate_fallback(leader_term: int) -> None:
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at least as
    large as its own recognizes the leader and returns to follower."""
    node, st = new_node(1, (1, 2, 3))
    node.campaign()
    drain(node, st)
    assert node.term == 1
    node.step(Message(type=MT.APP, from_=2, to=1, term=leader_term, index=0, log_term=0))
    assert node.state is StateType.FOLLOWER
    assert (node.term, node.lead) == (leader_term, 2)


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE])
def test_election_timeout_randomized(state: StateType) -> None:
    """§5.2: election timeouts are chosen randomly from [et, 2*et), and they vary."""
    et = 10
    seen: set[int] = set()
    for seed in range(60):
        node, st = new_node(1, (1, 2, 3), seed=seed, election_tick=et)
        if state is StateType.CANDIDATE:
            node.campaign()
            drain(node, st)
        term = node.term
        ticks = 0
        while node.term == term:
            node.tick()
            ticks += 1
            assert ticks < 2 * et
        assert et <= ticks < 2 * et
        seen.add(ticks)
    assert len(seen) > 1


def test_split_vote_resolves_by_randomized_timeouts() -> None:
    """§5.2: randomized timeouts make split votes rare; a cluster eventually elects a leader."""
    net = Network(5, seed=3)
    for _ in range(100):
        net.tick_all()
        if net.leaders():
            break
    assert len(net.leaders()) == 1


# -- §5.3: log replication ------------------------------------------------------------------------


def test_leader_start_replication() -> None:
    """§5.3: the leader appends a proposal to its log and issues AppendEntries to the followers."""
    node, st = new_node(1, (1, 2, 3))
    make_leader(node, st)
    for i in (2, 3):  # the followers acked the leader's empty entry
        node.step(Message(type=MT.APP_RESP, from_=i, to=1, term=1, index=1))
    drain(node, st)
    li = node.raft.log.last_index()
    node.propose(b"some data")
    rd = node.ready()
    assert rd.entries == [Entry(index=li + 1, term=1, data=b"some data")]
    apps = sorted(rd.messages, key=lambda m: m.to)
    assert [(m.type, m.to, m.index, m.log_term, m.commit, m.entries) for m in apps] == [
        (MT.APP, to, li, 1, li, tuple(rd.entries)) for to in (2, 3)
    ]


def test_leader_commit_entry() -> None:
    """§5.3: an entry is committed once replicated on a majority; the leader applies it and tells
    the followers the new commit index in later AppendEntries."""
    net = Network(3)
    net.campaign(1)
    assert net.propose(1, b"x")
    assert net.nodes[1].raft.log.committed == 2
    assert [e.data for e in net.applied[1]] == [b"", b"x"]
    for i in (2, 3):
        assert [e.data for e in net.applied[i]] == [b"", b"x"]


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [(1, [], True), (3, [], False), (3, [2], True), (3, [2, 3], True), (5, [2], False), (5, [2, 3], True)],
)
def test_leader_acknowledge_commit(size: int, acks: list[int], committed: bool) -> None:
    """§5.3: the leader commits an entry once a majority (counting its own durable copy) has it."""
    node, st = new_node(1, tuple(range(1, size + 1)))
    make_leader(node, st)
    node.propose(b"x")
    drain(node, st)
    li = node.raft.log.last_index()
    for i in acks:
        node.step(Message(type=MT.APP_RESP, from_=i, to=1, term=1, index=li))
    assert (node.raft.log.committed == li) is committed


def test_leader_counts_own_entry_only_when_durable() -> None:
    """§5.3 + durability: the leader's own copy counts towards the majority only after persist."""
    node, st = new_node(1, (1, 2, 3))
    make_leader(node, st)
    node.propose(b"x")
    rd = node.ready()  # not persisted yet
    li = rd.entries[-1].index
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=1, index=li))
    assert node.raft.log.committed == li - 1  # the leader's durable copy ends at li - 1
    st.append(rd.entries)
    node.advance(rd)
    assert node.raft.log.committed == li


def test_leader_commit_preceding_entries() -> None:
    """§5.3: committing an entry of the leader's term also commits all preceding entries, including
    those created by previous leaders."""
    for prev in ([], ents(2), ents(1, 1), ents(1, 2)):
        node, st = new_node(1, (1, 2, 3), log=prev, term=2)
        make_leader(node, st)
        applied: list[Entry] = []
        li = node.raft.log.last_index()
        node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=3, index=li))
        drain(node, st, applied)
        assert node.raft.log.committed == li
        assert [e.index for e in applied] == list(range(1, li + 1))


def test_follower_commit_entry() -> None:
    """§5.3: once a follower learns an entry is committed, it applies it (in log order)."""
    node, st = new_node(1, (1, 2, 3), term=1)
    applied: list[Entry] = []
    node.step(Message(type=MT.APP, from_=2, to=1, term=1, index=0, log_term=0, entries=tuple(ents(1, 1)), commit=1))
    drain(node, st, applied)
    assert [e.index for e in applied] == [1]
    node.step(Message(type=MT.HEARTBEAT, from_=2, to=1, term=1, commit=2))
    drain(node, st, applied)
    assert [e.index for e in applied] == [1, 2]


@pytest.mark.parametrize(
    ("index", "log_term", "reject", "hint"),
    [
        (0, 0, False, 0),  # match with the dummy entry
        (1, 1, False, 0),
        (2, 2, False, 0),
        (2, 1, True, 1),  # term mismatch at 2: hint at the last index with term <= 1
        (3, 3, True, 2),  # index past the end: hint at the last index
    ],
)
def test_follower_check_msg_app(index: int, log_term: int, reject: bool, hint: int) -> None:
    """§5.3: if the follower does not find an entry with the same index and term as the leader's
    prevLogIndex/prevLogTerm, it refuses the new entries."""
    node, st = new_node(1, (1, 2, 3), log=ents(1, 2), term=2)
    node.step(Message(type=MT.APP, from_=2, to=1, term=2, index=index, log_term=log_term))
    [resp] = drain(node, st)
    assert (resp.type, resp.reject, resp.reject_hint) == (MT.APP_RESP, reject, hint)
    if not reject:
        assert resp.index == index


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want_terms"),
    [
        (2, 2, ents(3, start=3), [1, 2, 3]),
        (1, 1, ents(3, 4, start=2), [1, 3, 4]),  # conflict: delete the existing entry and all after it
        (0, 0, ents(1, start=1), [1, 2]),  # already present: keep everything
        (0, 0, ents(3, start=1), [3]),
    ],
)
def test_follower_append_entries(index: int, log_term: int, new: list[Entry], want_terms: list[int]) -> None:
    """§5.3: on a conflict (same index, different term) the follower deletes the existing entry and
    all that follow it, then appends any new entries not already in the log."""
    node, st = new_node(1, (1, 2, 3), log=ents(1, 2), term=3)
    node.step(Message(type=MT.APP, from_=2, to=1, term=3, index=index, log_term=log_term, entries=tuple(new)))
    drain(node, st)
    assert [e.term for e in node.raft.log.all_entries()] == want_terms
    assert [e.term for e in st.entries(st.first_index(), st.last_index() + 1)] == want_terms


# Figure 7 of the paper: the leader's log (term 8 leader) and followers (a)-(f).
FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = [
    [1, 1, 1, 4, 4, 5, 5, 6, 6],
    [1, 1, 1, 4],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    [1, 1, 1, 4, 4, 4, 4],
    [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
]


@pytest.mark.parametrize("follower", FIG7_FOLLOWERS)
def test_leader_sync_follower_log(follower: list[int]) -> None:
    """§5.3 (Figure 7): the leader backs up nextIndex after rejections until the logs match, then
    the follower's log becomes identical to the leader's (and the conflicting tail is removed)."""
    net = Network(3)
    for i, terms in ((1, FIG7_LEADER), (2, follower), (3, [])):
        net.storage[i].append(ents(*terms))
        net.storage[i].set_hard_state(HardState(term=7 if i == 1 else 0))
        net.restart(i)
    net.cut = {(2, 3), (3, 2), (3, 1), (1, 3)}  # node 3 is out; 1 and 2 form the majority
    # Whether 2 would grant depends on the logs (§5.4.1, tested below); grant by hand here.
    net.nodes[1].campaign()
    net.process(1)
    net.queue.clear()
    net.nodes[1].step(Message(type=MT.VOTE_RESP, from_=2, to=1, term=8))
    net.process(1)
    net.deliver()
    assert net.nodes[1].state is StateType.LEADER and net.nodes[1].term == 8
    net.propose(1, b"after")
    assert [e.term for e in net.log(2)] == [*FIG7_LEADER, 8, 8]
    assert net.log(2) == net.log(1)
    assert net.nodes[1].raft.log.committed == len(FIG7_LEADER) + 2


# -- §5.4: safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "index", "log_term", "grant"),
    [
        ([1], 1, 1, True),
        ([1], 2, 1, True),
        ([1], 0, 0, False),
        ([1, 1], 1, 1, False),  # same last term, shorter log
        ([1, 1], 1, 2, True),  # higher last term
        ([2], 5, 1, False),  # lower last term, longer log
        ([2], 1, 2, True),
    ],
)
def test_voter(log: list[int], index: int, log_term: int, grant: bool) -> None:
    """§5.4.1: the voter denies its vote if its own log is more up to date than the candidate's."""
    node, st = new_node(1, (1, 2, 3), log=ents(*log), term=2)
    node.step(Message(type=MT.VOTE, from_=2, to=1, term=3, index=index, log_term=log_term))
    [resp] = drain(node, st)
    assert (resp.type, resp.reject) == (MT.VOTE_RESP, not grant)


def test_vote_request_carries_last_log_position() -> None:
    """§5.4.1: RequestVote includes the candidate's last log index and term."""
    node, st = new_node(1, (1, 2, 3), log=ents(1, 2, 2), term=2)
    node.campaign()
    votes = [m for m in drain(node, st) if m.type is MT.VOTE]
    assert {(m.index, m.log_term, m.term) for m in votes} == {(3, 2, 3)}


def test_leader_only_commits_log_from_current_term() -> None:
    """§5.4.2 (Figure 8): a leader never commits an entry of a previous term by counting replicas;
    only an entry of its own term, which then commits the earlier ones indirectly."""
    node, st = new_node(1, (1, 2, 3), log=ents(1, 2), term=2)
    make_leader(node, st)
    assert node.term == 3
    applied: list[Entry] = []
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=3, index=2))  # a majority has index 2 (term 2)
    drain(node, st, applied)
    assert node.raft.log.committed == 0
    assert applied == []
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=3, index=3))  # the term-3 entry
    drain(node, st, applied)
    assert node.raft.log.committed == 3
    assert [e.index for e in applied] == [1, 2, 3]


def test_leader_appends_empty_entry_on_election() -> None:
    """§8 / §5.4.2: a new leader commits a blank no-op entry of its term at the start of its term."""
    net = Network(3)
    net.campaign(1)
    assert [(e.index, e.term, e.data) for e in net.log(1)] == [(1, 1, b"")]
    assert all(net.nodes[i].raft.log.committed == 1 for i in net.ids)


def test_stale_leader_steps_down() -> None:
    """§5.1: a leader partitioned away keeps its term until it hears of a newer one, then it
    steps down, and its uncommitted entries are replaced by the new leader's log."""
    net = Network(3)
    net.campaign(1)
    net.isolate(1)
    net.propose(1, b"lost")  # never replicated
    net.campaign(2)
    assert net.nodes[2].state is StateType.LEADER and net.nodes[2].term == 2
    assert net.propose(2, b"kept")
    assert net.nodes[1].state is StateType.LEADER  # it does not know yet
    net.heal()
    net.tick(1)  # its heartbeat reaches the others, whose answer carries term 2
    net.tick(2)
    assert net.nodes[1].soft_state().state is StateType.FOLLOWER
    assert net.nodes[1].term == 2
    assert net.log(1) == net.log(2)
    assert b"lost" not in [e.data for e in net.applied[1]]


def test_follower_forwards_proposal_to_leader() -> None:
    """A follower forwards proposals to the leader (etcd behaviour, not a paper claim)."""
    net = Network(3)
    net.campaign(1)
    assert net.propose(3, b"via follower")
    assert [e.data for e in net.applied[1]][-1] == b"via follower"


def test_proposal_without_leader_is_dropped() -> None:
    net = Network(3)
    assert not net.propose(2, b"x")


def _agree_on_applied(net: Network) -> None:
    seen: dict[int, Entry] = {}
    for i in net.ids:
        for e in net.applied[i]:
            assert seen.setdefault(e.index, e) == e, f"node {i} applied {e}, another node {seen[e.index]}"


def test_figure8_old_term_entry_replicated_on_majority_is_not_committed() -> None:
    """§5.4.2, Figure 8 played out on five nodes: (a) S1 leads term 1 and places index 2 on S2
    only; (b) S5 wins term 2 with S3, S4 and writes its own index 2 locally; (c) S1 restarts, wins
    term 3 and copies its index 2 (term 1) to S3 - a majority holds it, yet it must not commit;
    (d) S5 restarts, wins term 4 and overwrites index 2 everywhere it can. Had S1 committed
    index 2 in (c), two nodes would apply different entries at index 2."""
    net = Network(5, max_entries_per_msg=1)
    net.campaign(1)
    # (a)
    net.partition({1, 2}, {3}, {4}, {5})
    net.propose(1, b"t1")
    assert [e.term for e in net.log(2)] == [1, 1]
    # (b) S5 wins, but none of its appends get out
    net.heal()
    net.partition({1}, {2}, {3, 4, 5})
    net.drop = lambda m: m.type is MT.APP and m.from_ == 5
    net.campaign(5)
    assert net.nodes[5].state is StateType.LEADER and net.nodes[5].term == 2
    assert [e.term for e in net.log(5)] == [1, 2]
    # (c) S1 restarts and wins term 3 with S2 and S3; S3 gets index 2 (term 1) but not index 3
    net.heal()
    net.partition({1, 2, 3}, {4}, {5})
    net.drop = lambda m: m.type is MT.APP and m.to == 3 and m.index == 2 and len(net.log(3)) >= 2
    net.restart(1)
    net.campaign(1)  # term 2: S3 already voted for S5
    net.campaign(1)  # term 3
    assert net.nodes[1].state is StateType.LEADER and net.nodes[1].term == 3
    assert [e.term for e in net.log(3)] == [1, 1]  # index 2 (term 1) is now on S1, S2, S3
    assert net.nodes[1].raft.log.committed == 1  # ... and still not committed
    assert [e.index for e in net.applied[1]] == [1]
    # (d) S1 is cut off; S5 restarts and wins term 4 with S3 and S4
    net.drop = None
    net.heal()
    net.partition({1}, {2, 3, 4, 5})
    net.restart(5)
    net.campaign(5)  # term 3: S2, S3 voted for S1 in it
    net.campaign(5)  # term 4
    assert net.nodes[5].state is StateType.LEADER and net.nodes[5].term == 4
    assert [e.term for e in net.log(5)] == [1, 2, 4]
    for i in (2, 3, 4):
        assert net.log(i) == net.log(5)
    _agree_on_applied(net)
    assert [e.term for e in net.applied[5]] == [1, 2, 4]
