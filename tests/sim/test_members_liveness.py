"""client_liveness: a request sent while the cluster is settled (every member up, no partition,
no message loss, one leader that every member follows, with an entry of its term committed) and
answered before the next fault must get a real answer, not "request timed out", "leader
changed", "no leader" or "not leader". Requests caught by a fault may fail; the planted bug
that lost ReadIndex requests (per-member contexts, fixed in 00e8b94) is caught under load."""

from __future__ import annotations

from dataclasses import replace

from rusd.core import errors
from rusd.core.errors import EtcdError
from sim import history as h
from sim.members import (
    MemberCluster,
    MembersOptions,
    _watched_unchanged,
    members_options,
    never_proposed,
)

LOST_READS = frozenset({"read_context_per_member"})
SEEDS = range(20)


def _failures(c: MemberCluster) -> list[str]:
    return [line for line in c.verdict_lines() if ": FAIL" in line]


def test_planted_per_member_read_contexts_are_caught_under_load_and_the_seeds_pass_without_them() -> None:
    # Two members' ReadIndex contexts collide only when their counters are equal at the same
    # moment: rare under the default ~100 requests/s, a few seeds in 20 under the load profile
    # (seeds 2, 4 and 9 of the first 20 when this was written).
    caught: dict[int, list[str]] = {}
    for seed in SEEDS:
        c = MemberCluster(seed, options=replace(members_options("load", 3, 3_000), member_bugs=LOST_READS))
        c.run()
        if _failures(c):
            caught[seed] = _failures(c)
    assert len(caught) >= 2, caught
    for seed, fails in caught.items():
        (fail,) = fails
        assert fail.startswith("check client_liveness: FAIL get "), fail
        assert "answered 'etcdserver: request timed out'" in fail and "with no fault in between" in fail
        clean = MemberCluster(seed, options=members_options("load", 3, 3_000))
        assert not clean.run().failed, (seed, clean.verdict_lines())


def test_the_load_profile_passes_every_checker() -> None:
    judged = 0
    for members, seeds in ((3, SEEDS), (5, range(10))):
        for seed in seeds:
            c = MemberCluster(seed, options=members_options("load", members, 3_000))
            assert not c.run().failed, (seed, members, _failures(c))
            judged += c.judged - c.excused
    assert judged > 1_000


def test_a_run_says_how_many_requests_it_judged() -> None:
    c = MemberCluster(0, options=MembersOptions(steps=3_000))
    assert not c.run().failed
    (line,) = [v for v in c.verdict_lines() if v.startswith("check client_liveness:")]
    assert line.startswith("check client_liveness: ok (") and "requests to a settled cluster" in line
    assert c.judged - c.excused > 50 and c.stretches >= 1 and c.settled_us > 0


def _settled_with_requests_in_flight(seed: int) -> MemberCluster:
    c = MemberCluster(seed, options=MembersOptions(steps=3_000))
    while not (c.settled_since is not None and any(op.judged for op in c.ops.values())):
        c.step()
    return c


def test_a_judged_request_answered_unavailable_fails_the_check() -> None:
    c = _settled_with_requests_in_flight(0)
    req_id = min(r for r, op in c.ops.items() if op.judged)
    c._answer(req_id, EtcdError(errors.LEADER_CHANGED))
    (fail,) = _failures(c)
    assert fail.startswith("check client_liveness: FAIL ") and f" {req_id} sent to member " in fail
    assert "answered 'etcdserver: leader changed'" in fail
    assert c.unplaceable is not None and c.unplaceable.error == "etcdserver: leader changed"


def test_requests_in_flight_when_a_fault_strikes_are_excused() -> None:
    c = _settled_with_requests_in_flight(0)
    in_flight = [r for r, op in c.ops.items() if op.judged]
    c._disturb("crash m1")
    assert c.settled_since is None and c.excused == len(in_flight)
    for req_id in in_flight:
        c._answer(req_id, EtcdError(errors.REQUEST_TIMEOUT))
    assert not c.failed


def test_a_snapshot_excuses_only_the_requests_waiting_at_its_member() -> None:
    c = _settled_with_requests_in_flight(0)
    member = next(op.member for op in c.ops.values() if op.judged)
    c._disturb(f"snapshot m{member}", member=member)
    assert c.settled_since is not None
    assert all(not op.judged for op in c.ops.values() if op.member == member)


def test_keepalives_sent_to_followers_are_forwarded_to_the_leader() -> None:
    refusals: dict[str, int] = {}
    for seed in range(5):
        c = MemberCluster(seed, options=MembersOptions(steps=3_000))
        assert not c.run().failed
        for message, n in c.refusals.items():
            refusals[message] = refusals.get(message, 0) + n
    assert "etcdserver: not leader" not in refusals
    assert refusals.get("etcdserver: no leader", 0) > 0


def test_a_no_leader_refusal_changed_nothing_and_stays_out_of_the_linearizability_check() -> None:
    put = h.Put(b"k", b"v")
    assert never_proposed(h.Operation.failed(1, 0, 1, put, "etcdserver: no leader"))
    assert not never_proposed(h.Operation.failed(1, 0, 1, put, "etcdserver: request timed out"))
    assert not never_proposed(h.Operation(1, 0, None, put, indeterminate=True))


def _event(kind: str, key: bytes, value: bytes, revision: int, prev: h.KV | None = None) -> h.WatchEvent:
    kv = h.KV(key, value, revision, revision, 1) if kind == "PUT" else h.KV(key, b"", 0, revision, 0)
    return h.WatchEvent(kind, kv, prev)


def test_a_stream_shows_each_key_unchanged_between_its_events() -> None:
    a3 = _event("PUT", b"a", b"1", 3)
    stream = h.WatchStream(0, b"a", b"z", 2, True, responses=(
        h.WatchResponse(3, (a3, _event("PUT", b"b", b"2", 3, prev=h.KV(b"b", b"0", 1, 1, 1)))),
        h.WatchResponse(5, (_event("DELETE", b"a", b"", 5, prev=a3.kv),)),
        h.WatchResponse(9, (_event("PUT", b"c", b"3", 9),)),
    ))
    reads = {(op.request.key, op.response.revision): op.response.result.kvs  # type: ignore[union-attr]
             for op in _watched_unchanged([stream])}
    assert reads == {
        (b"b", 2): (h.KV(b"b", b"0", 1, 1, 1),),  # b's prev_kv, just before its first event
        (b"a", 4): (a3.kv,),  # a as its event at 3 left it, until just before its delete at 5
        (b"a", 9): (),  # deleted, until the stream's last event
        (b"b", 9): (h.KV(b"b", b"2", 3, 3, 1),),
    }


def test_seeds_the_watch_check_blamed_for_a_never_made_write_pass() -> None:
    # Seed 7 (8,000 steps): a txn refused "no leader" was placed at a lease revoke's revision.
    # Seed 17 under load: a timed-out txn "put k6, delete k4" was placed there instead.
    for seed, options in ((7, MembersOptions(steps=8_000)), (17, members_options("load", 3, 3_000))):
        c = MemberCluster(seed, options=options)
        assert not c.run().failed, (seed, _failures(c))
