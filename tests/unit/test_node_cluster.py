"""Members of one cluster: forwarding, lost proposals, ReadIndex, snapshots, leases, conf changes."""

from __future__ import annotations

from dataclasses import replace

from rusd.core import errors
from rusd.core.cluster import (
    MemberAddRequest,
    MemberAddResponse,
    MemberChangeResponse,
    MemberInfo,
    MemberPromoteRequest,
    MemberPublishRequest,
    MemberPublishResponse,
    MemberRemoveRequest,
)
from rusd.core.errors import EtcdError
from rusd.core.lease.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
)
from rusd.core.mvcc import store
from rusd.core.mvcc.types import PutRequest, PutResponse, RangeRequest, RangeResponse
from rusd.core.node import (
    Member,
    MemberConfig,
    Result,
    WriteRequest,
    load_conf_state,
    serve_read,
    unapplied_entries,
)
from rusd.core.raft import ConfChange, ConfChangeType, ConfState, EntryKind, MessageType
from rusd.storage.memory import MemoryBackend, MemoryLog


class Peers:
    """Members of one cluster on their own disks, with a hand-driven network and clock."""

    def __init__(self, n: int, **config: object) -> None:
        self.ids = tuple(range(1, n + 1))
        self.initial = tuple(MemberInfo(i, f"m{i}", (f"http://m{i}:2380",), ()) for i in self.ids)
        self.config = config
        self.backends = {i: MemoryBackend() for i in self.ids}
        self.logs = {i: MemoryLog() for i in self.ids}
        self.boots = 0
        self.answers: dict[int, list[tuple[int, Result]]] = {i: [] for i in self.ids}
        self.reads: dict[int, list[tuple[int, RangeResponse]]] = {i: [] for i in self.ids}
        self.members = {i: self.start(i) for i in self.ids}
        self.now = 0.0
        self.snapshots_sent = 0

    def start(self, i: int, join: bool = False) -> Member:
        """(Re)build member i from its disk only (a new one joins an existing cluster)."""
        self.boots += 1
        if i not in self.backends:
            self.backends[i], self.logs[i] = MemoryBackend(), MemoryLog()
            self.answers[i], self.reads[i] = [], []
        cfg = MemberConfig(MemberInfo(i, f"m{i}", (), ()), 9, **self.config)  # type: ignore[arg-type]
        replay = unapplied_entries(self.backends[i], self.logs[i])
        return Member(
            cfg, self.backends[i], replay, 0.0, unix_ms=1000 * self.boots, initial_cluster=self.initial, join=join
        )

    def run(self, cut: frozenset[int] = frozenset()) -> None:
        """Turns until nothing moves; messages to or from a member in `cut` are dropped."""
        moved = True
        while moved:
            moved = False
            for i in self.members:
                moved |= self.turn(i, cut)

    def turn(self, i: int, cut: frozenset[int] = frozenset()) -> bool:
        """One turn of member i (False: it had nothing to do); its messages are stepped
        into their receivers at once."""
        m = self.members[i]
        rd = m.ready()
        if not rd:
            return False
        backend, log = self.backends[i], self.logs[i]
        if rd.snapshot is not None:
            backend.load_image(rd.snapshot.data)
            log.compact_log(log.last_index())
            m.install_snapshot(backend)
        log.append_entries(rd.entries)
        self.answers[i] += list(rd.responses) + m.apply(backend, rd.committed, self.now).answers
        if rd.compact_log_to:
            log.compact_log(rd.compact_log_to)
        m.advance(rd)
        for req_id in rd.reads:
            got = serve_read(backend, RangeRequest(b"k"), 128)
            assert isinstance(got, RangeResponse)
            self.reads[i].append((req_id, got))
        for msg in [*rd.early_messages, *rd.messages]:
            if msg.to in cut or msg.from_ in cut or msg.to not in self.members:
                if msg.type is MessageType.SNAP:
                    m.report_snapshot(msg.to, failed=True)
                continue
            if msg.type is MessageType.SNAP:
                assert msg.snapshot is not None
                msg = replace(msg, snapshot=replace(msg.snapshot, data=backend.image()))
                self.snapshots_sent += 1
                m.report_snapshot(msg.to, failed=False)
            self.members[msg.to].step(msg)
        return True

    def tick(self, n: int, cut: frozenset[int] = frozenset(), only: tuple[int, ...] = ()) -> None:
        """n heartbeat intervals of 0.1 s pass on every member (or only on `only`)."""
        for _ in range(n):
            self.now += 0.1
            for i, m in self.members.items():
                if not only or i in only:
                    m.tick(self.now, store.current_revision(self.backends[i]))
            self.run(cut)

    def leader(self) -> Member:
        (lead,) = [m for m in self.members.values() if m.is_leader]
        return lead

    def value(self, i: int) -> list[bytes]:
        got = serve_read(self.backends[i], RangeRequest(b"k"), 128)
        assert isinstance(got, RangeResponse)
        return [kv.value for kv in got.kvs]


def elected(n: int = 3, **config: object) -> Peers:
    peers = Peers(n, **config)
    peers.members[1].raw.campaign()
    peers.run()
    assert peers.members[1].is_leader
    return peers


def test_a_follower_forwards_writes_to_the_leader_and_answers_them_itself() -> None:
    peers = elected()
    peers.members[2].submit(7, PutRequest(b"k", b"x"), 0)
    peers.run()
    assert peers.answers[2] == [(7, PutResponse(revision=2))]
    assert peers.answers[1] == [] and peers.answers[3] == []
    assert all(peers.value(i) == [b"x"] for i in peers.ids)


def test_proposals_of_one_turn_travel_as_one_message_per_follower() -> None:
    peers = elected()
    lead, follower = peers.members[1], peers.members[2]
    for req_id in (1, 2, 3):
        lead.submit(req_id, PutRequest(b"k", b"v%d" % req_id), 0)
        follower.submit(10 + req_id, PutRequest(b"k", b"f%d" % req_id), 0)
    rd = follower.ready()
    (forwarded,) = [m for m in [*rd.early_messages, *rd.messages] if m.type is MessageType.PROP]
    assert len(forwarded.entries) == 3
    follower.advance(rd)
    rd = lead.ready()
    appends = [m for m in [*rd.early_messages, *rd.messages] if m.type is MessageType.APP]
    assert sorted(m.to for m in appends) == [2, 3] and all(len(m.entries) == 3 for m in appends)
    peers.logs[1].append_entries(rd.entries)
    lead.advance(rd)
    for m in [*rd.early_messages, *rd.messages]:
        peers.members[m.to].step(m)
    lead.step(forwarded)
    peers.run()
    assert [r for r, _ in peers.answers[1]] == [1, 2, 3]
    assert [r for r, _ in peers.answers[2]] == [11, 12, 13]
    assert peers.value(3) == [b"f3"]


def test_a_member_that_knows_no_leader_answers_no_leader() -> None:
    peers = Peers(3)  # nobody campaigned yet
    peers.members[2].submit(7, PutRequest(b"k", b"x"), 0)
    peers.run()
    assert peers.answers[2] == [(7, EtcdError(errors.NO_LEADER))]


def test_a_proposal_lost_to_a_leader_change_answers_leader_changed() -> None:
    peers = elected()
    m1, m2 = peers.members[1], peers.members[2]
    m1.submit(1, PutRequest(b"k", b"committed"), 0)
    peers.run()
    assert peers.answers[1] == [(1, PutResponse(revision=2))]
    # m1 appends a proposal nobody else sees, then m2 or m3 wins an election without it
    m1.submit(2, PutRequest(b"k", b"lost"), 0)
    peers.run(cut=frozenset({1}))
    peers.tick(30, cut=frozenset({1}), only=(2, 3))
    (new,) = [m for m in (m2, peers.members[3]) if m.is_leader]
    new.tick(peers.now, 2)  # a heartbeat reaches m1 once the network heals
    peers.run()
    assert not m1.is_leader
    assert peers.answers[1][-1] == (2, EtcdError(errors.LEADER_CHANGED))
    assert all(peers.value(i) == [b"committed"] for i in peers.ids)


def test_a_forwarded_proposal_that_is_lost_times_out() -> None:
    peers = elected()
    m3 = peers.members[3]
    # the forwarded proposal goes to a leader that no longer hears anyone
    m3.submit(5, PutRequest(b"k", b"x"), 0)
    peers.run(cut=frozenset({1}))
    assert peers.answers[3] == []
    peers.tick(m3.config.request_timeout_ticks, cut=frozenset({1}))
    assert (5, EtcdError(errors.REQUEST_TIMEOUT)) in peers.answers[3]
    assert peers.value(2) == []


def test_linearizable_reads_on_a_follower_see_every_acknowledged_write() -> None:
    peers = elected()
    peers.members[1].submit(1, PutRequest(b"k", b"v1"), 0)
    peers.run()
    peers.members[3].read(9)
    peers.run()
    ((req_id, got),) = peers.reads[3]
    assert req_id == 9 and [kv.value for kv in got.kvs] == [b"v1"]


def test_reads_of_one_turn_share_one_read_index() -> None:
    peers = elected()
    m2 = peers.members[2]
    for req_id in (1, 2, 3):
        m2.read(req_id)
    rd = m2.ready()
    asks = [msg for msg in [*rd.early_messages, *rd.messages] if msg.type is MessageType.READ_INDEX]
    assert len(asks) == 1
    m2.apply(peers.backends[2], rd.committed)
    m2.advance(rd)
    for msg in [*rd.early_messages, *rd.messages]:
        peers.members[msg.to].step(msg)
    peers.run()
    assert [r for r, _ in peers.reads[2]] == [1, 2, 3]


def test_reads_asked_on_several_followers_at_once_are_all_answered() -> None:
    # Each follower's first ReadIndex of its life reaches the leader in the same round:
    # a context that only counts per member would make the leader drop the second one.
    peers = elected()
    for i in peers.ids:
        peers.members[i].read(10 + i)
    peers.run()
    assert {i: [r for r, _ in peers.reads[i]] for i in peers.ids} == {1: [11], 2: [12], 3: [13]}
    for i in (2, 3):
        peers.members[i].read(20 + i)
    peers.run()
    assert [r for r, _ in peers.reads[2]] == [12, 22] and [r for r, _ in peers.reads[3]] == [13, 23]


def test_planted_per_member_read_contexts_lose_a_followers_read_until_it_times_out() -> None:
    # The planted bug brings back the old per-member context: both followers' first
    # ReadIndex carries context 1, the leader keeps only the first, the other waits for
    # etcd's request timeout (what the simulator's client_liveness check must notice).
    peers = elected(bugs=frozenset({"read_context_per_member"}))
    for i in (2, 3):
        peers.members[i].read(10 + i)
    peers.run()
    (served,) = [i for i in (2, 3) if peers.reads[i]]
    (lost,) = [i for i in (2, 3) if not peers.reads[i]]
    assert [r for r, _ in peers.reads[served]] == [10 + served]
    peers.tick(peers.members[lost].config.request_timeout_ticks)
    assert (10 + lost, EtcdError(errors.REQUEST_TIMEOUT)) in peers.answers[lost]


def test_a_leader_cut_off_from_the_quorum_never_serves_a_linearizable_read() -> None:
    peers = elected()
    m1 = peers.members[1]
    m1.read(4)
    peers.run(cut=frozenset({1}))
    assert peers.reads[1] == []
    peers.tick(m1.config.request_timeout_ticks, cut=frozenset({1}))
    assert peers.reads[1] == []
    assert (4, EtcdError(errors.REQUEST_TIMEOUT)) in peers.answers[1] or (
        4, EtcdError(errors.LEADER_CHANGED)) in peers.answers[1]


def test_a_follower_behind_the_compacted_log_catches_up_from_a_snapshot() -> None:
    peers = elected(snapshot_count=3, catch_up_entries=0)
    leader = peers.members[1]
    for n in range(8):
        leader.submit(n, PutRequest(b"k", b"v%d" % n), 0)
        peers.run(cut=frozenset({3}))
    assert peers.logs[1].first_index() > peers.logs[3].last_index() + 1  # 3 cannot catch up by log
    leader.tick(peers.now, 0)
    peers.run()
    assert peers.snapshots_sent == 1
    assert peers.value(3) == [b"v7"]
    assert peers.members[3].applied_index == leader.applied_index
    # the follower keeps its own term and vote, and replicates on from the log
    leader.submit(99, PutRequest(b"k", b"after"), 0)
    peers.run()
    assert peers.value(3) == [b"after"]
    # and it restarts from its disk alone
    peers.members[3] = peers.start(3)
    assert peers.members[3].applied_index == leader.applied_index
    assert peers.value(3) == [b"after"]


def test_only_the_leader_expires_leases_and_a_new_leader_restarts_their_ttl() -> None:
    peers = elected()
    peers.members[1].submit(1, LeaseGrantRequest(ttl=5), 0)
    peers.run()
    ((_, granted),) = peers.answers[1]
    assert isinstance(granted, LeaseGrantResponse)
    # followers know the lease but do not expire it, and refuse keepalives
    peers.members[2].local(2, LeaseKeepAliveRequest(granted.id), peers.now)
    # ... but list them, as etcd's LeaseLeases reads the local lessor on any member
    peers.members[3].local(3, LeaseLeasesRequest(), peers.now)
    peers.run()
    assert peers.answers[2] == [(2, EtcdError(errors.NOT_LEADER))]
    assert peers.answers[3] == [(3, LeaseLeasesResponse((granted.id,)))]
    # leadership moves to 2 at 4 s: the lease lives a full TTL (+ an election timeout) from then
    peers.tick(40)
    assert all(m.lessor.exists(granted.id) for m in peers.members.values())
    peers.members[1].transfer_leader(2)
    peers.run()
    assert peers.members[2].is_leader
    peers.tick(50)  # 9 s: older than 5 s since the grant, younger than 4 + 5 + 1 s
    assert all(m.lessor.exists(granted.id) for m in peers.members.values())
    peers.tick(20)  # 11 s: expired, revoked by the new leader on every member
    assert not any(m.lessor.exists(granted.id) for m in peers.members.values())


def test_conf_changes_apply_on_every_member_and_survive_a_restart() -> None:
    peers = elected()
    peers.members[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    peers.run()
    for i in peers.ids:
        assert peers.members[i].raw.conf_state() == ConfState(voters=(1, 2, 3), learners=(4,))
        assert load_conf_state(peers.backends[i]) == ConfState(voters=(1, 2, 3), learners=(4,))
    peers.members[2] = peers.start(2)
    assert peers.members[2].raw.conf_state() == ConfState(voters=(1, 2, 3), learners=(4,))


def test_a_new_cluster_starts_with_its_members_in_the_log_and_lists_them_everywhere() -> None:
    peers = elected()
    for i in peers.ids:
        assert [e.kind for e in peers.logs[i].entries(1, 4)] == [EntryKind.CONF_CHANGE] * 3
        assert peers.members[i].members() == peers.initial


def add(peers: Peers, via: int, req: WriteRequest) -> Result:
    peers.members[via].submit(1000, req, 0)
    peers.run()
    ((req_id, result),) = [a for a in peers.answers[via] if a[0] == 1000]
    peers.answers[via].remove((req_id, result))
    return result


def test_member_add_learner_catch_up_promote_and_remove() -> None:
    peers = elected()
    peers.members[1].submit(1, PutRequest(b"k", b"before"), 0)
    peers.run()
    added = add(peers, 2, MemberAddRequest(("http://m4:2380",), is_learner=True, id=4))
    assert isinstance(added, MemberAddResponse)
    assert added.member == MemberInfo(4, "", ("http://m4:2380",), (), True)
    assert [m.id for m in added.members] == [1, 2, 3, 4]
    # the new member starts empty, learns the whole log (bootstrap included) from the leader
    peers.members[4] = peers.start(4, join=True)
    peers.tick(2)
    assert peers.value(4) == [b"before"]
    assert peers.members[4].members() == peers.members[1].members()
    assert not peers.members[4].raw.raft.promotable()
    # only one learner at a time; a voter cannot be promoted; unknown ids are not found
    assert add(peers, 1, MemberAddRequest(("http://m5:2380",), is_learner=True, id=5)) == EtcdError(
        errors.TOO_MANY_LEARNERS)
    assert add(peers, 1, MemberPromoteRequest(2)) == EtcdError(errors.MEMBER_NOT_LEARNER)
    assert add(peers, 1, MemberRemoveRequest(77)) == EtcdError(errors.MEMBER_NOT_FOUND)
    assert add(peers, 1, MemberAddRequest(("http://m1:2380",), id=6)) == EtcdError(errors.PEER_URL_EXIST)
    promoted = add(peers, 1, MemberPromoteRequest(4))
    assert isinstance(promoted, MemberChangeResponse)
    assert all(peers.members[i].raw.conf_state() == ConfState(voters=(1, 2, 3, 4)) for i in (1, 2, 3, 4))
    removed = add(peers, 3, MemberRemoveRequest(2))
    assert isinstance(removed, MemberChangeResponse)
    assert [m.id for m in removed.members] == [1, 3, 4]
    assert peers.members[2].removed and not peers.members[1].removed
    assert add(peers, 1, MemberAddRequest(("http://m9:2380",), True, id=2)) == EtcdError(errors.MEMBER_EXIST)
    # the list survives a restart
    peers.members[3] = peers.start(3)
    assert [m.id for m in peers.members[3].members()] == [1, 3, 4]


def test_strict_reconfig_check_refuses_changes_without_a_started_quorum() -> None:
    peers = elected()
    # started = has a name (the initial members have theirs; added ones publish later):
    # 3 started of 4 and then of 5 voters are a quorum; of 6 they are not
    assert isinstance(add(peers, 1, MemberAddRequest(("http://m4:2380",), id=4)), MemberAddResponse)
    assert isinstance(add(peers, 1, MemberAddRequest(("http://m5:2380",), id=5)), MemberAddResponse)
    assert add(peers, 1, MemberAddRequest(("http://m6:2380",), id=6)) == EtcdError(errors.MEMBER_NOT_ENOUGH_STARTED)
    relaxed = elected(strict_reconfig_check=False)
    assert isinstance(add(relaxed, 1, MemberAddRequest(("http://m4:2380",), id=4)), MemberAddResponse)


def test_publish_sets_a_members_name_and_client_urls_on_every_member() -> None:
    peers = elected()
    assert add(peers, 2, MemberPublishRequest(2, "two", ("http://127.0.0.1:2379",))) == MemberPublishResponse()
    for i in peers.ids:
        (two,) = [m for m in peers.members[i].members() if m.id == 2]
        assert (two.name, two.client_urls) == ("two", ("http://127.0.0.1:2379",))


def test_the_member_list_travels_with_a_snapshot() -> None:
    peers = elected(snapshot_count=3, catch_up_entries=0)
    add(peers, 1, MemberPublishRequest(1, "one", ("http://c1",)))
    for n in range(6):
        peers.members[1].submit(n, PutRequest(b"k", b"v%d" % n), 0)
        peers.run(cut=frozenset({3}))
    add(peers, 1, MemberPublishRequest(2, "two", ("http://c2",)))
    peers.members[1].tick(peers.now, 0)
    peers.run()
    assert peers.snapshots_sent >= 1
    assert peers.members[3].members() == peers.members[1].members()


def test_a_new_leader_renews_leases_only_after_applying_the_revokes_of_earlier_terms() -> None:
    # Found by the members simulator's lease_expiry check (seed 385, 4,000 steps, once
    # keepalives reached the leader through followers): a leader cut off proposed a revoke of
    # an expired lease that reached nobody, lost and won back leadership, renewed the lease
    # for a client as soon as it was elected, and then committed its old revoke: the client
    # was told TTL 2 and the lease was gone 40 ms later. As etcd, a new leader promotes its
    # lessor, and answers lease requests, only once it applies the first entry of its term.
    peers = elected()
    m1 = peers.members[1]
    m1.submit(1, LeaseGrantRequest(ttl=2, id=7), 0)
    peers.run()
    assert all(m.lessor.exists(7) for m in peers.members.values())
    peers.now += 3  # member 1's clock passes the TTL while it is cut off
    m1.tick(peers.now, store.current_revision(peers.backends[1]))
    peers.run(cut=frozenset({1}))
    assert m1.last_index > peers.members[2].last_index  # the revoke, in member 1's log only
    peers.tick(20, cut=frozenset({1}), only=(1,))  # CheckQuorum: it steps down
    peers.tick(10, cut=frozenset({1}), only=(2, 3))  # the others stop honouring its lease
    assert not any(m.is_leader for m in peers.members.values())
    m1.raw.campaign()
    for i in (1, 2, 3):  # votes out and back: member 1 leads again, its old revoke uncommitted
        peers.turn(i)
    assert m1.is_leader
    m1.local(9, LeaseKeepAliveRequest(7), peers.now)  # held until the lessor is promoted
    peers.run()
    assert not any(m.lessor.exists(7) for m in peers.members.values())
    assert [a for r, a in peers.answers[1] if r == 9] == [LeaseKeepAliveResponse(7, 0)]  # not renewed: gone


def test_a_leader_deposed_before_promotion_answers_its_held_lease_requests_no_leader() -> None:
    peers = Peers(3)
    m1 = peers.members[1]
    m1.raw.campaign()
    for i in (1, 2, 3):
        peers.turn(i)
    assert m1.is_leader and not m1.lessor.primary
    m1.local(9, LeaseKeepAliveRequest(7), peers.now)
    peers.members[2].raw.campaign()  # a higher term deposes member 1 before its entry commits
    peers.turn(2)
    peers.run()
    assert not m1.is_leader
    assert (9, EtcdError(errors.NO_LEADER)) in peers.answers[1]  # the client retries elsewhere
