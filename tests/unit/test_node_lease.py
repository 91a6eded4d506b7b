"""Leases through the Member: grant/revoke through the log, attach by put, expiry by
tick, leader-local requests, quota, and restart from the same backend + log."""

from __future__ import annotations

from rusd.core import errors
from rusd.core.alarms import AlarmAction, AlarmRequest, AlarmType
from rusd.core.errors import EtcdError
from rusd.core.lease.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
)
from rusd.core.mvcc import store
from rusd.core.mvcc.types import (
    DeleteRangeRequest,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
)
from rusd.core.node import Member, Result, WriteRequest, serve_read
from tests.unit.test_node import Disk

LEASE = 0x77


def turn(disk: Disk, m: Member, now: float) -> tuple[list[tuple[int, Result]], list[Event]]:
    rd = m.ready()
    disk.log.append_entries(rd.entries)
    applied = m.apply(disk.backend, rd.committed, now)
    m.advance(rd)
    return list(rd.responses) + applied.answers, applied.events


def submit(disk: Disk, m: Member, *reqs: WriteRequest, now: float = 0.0) -> list[Result]:
    for i, req in enumerate(reqs, start=1):
        m.submit(i, req, disk.backend.size())
    answers, _ = turn(disk, m, now)
    return [r for _, r in sorted(answers, key=lambda a: a[0])]


def ask(disk: Disk, m: Member, req: object, now: float) -> Result:
    m.local(42, req, now)  # type: ignore[arg-type]
    answers, _ = turn(disk, m, now)
    assert [i for i, _ in answers] == [42]
    return answers[0][1]


def keys(disk: Disk) -> list[tuple[bytes, int, int]]:
    got = serve_read(disk.backend, RangeRequest(b"\x00", b"\x00"), 128)
    assert isinstance(got, RangeResponse)
    return [(kv.key, kv.mod_revision, kv.lease) for kv in got.kvs]


def started(now: float = 0.0) -> tuple[Disk, Member]:
    disk = Disk()
    m = disk.member(now=now)
    turn(disk, m, now)
    return disk, m


def test_grant_attach_by_put_and_revoke_deletes_all_keys_in_one_revision() -> None:
    disk, m = started()
    assert submit(disk, m, LeaseGrantRequest(ttl=60, id=LEASE)) == [LeaseGrantResponse(1, LEASE, 60)]
    assert submit(disk, m, *(PutRequest(k, b"v", lease=LEASE) for k in (b"c", b"a", b"b"))) == [
        PutResponse(revision=2), PutResponse(revision=3), PutResponse(revision=4),
    ]
    submit(disk, m, PutRequest(b"z", b"no lease"))
    assert ask(disk, m, LeaseTimeToLiveRequest(LEASE), 0.0) == LeaseTimeToLiveResponse(LEASE, 60, 60)
    ttl = ask(disk, m, LeaseTimeToLiveRequest(LEASE, keys=True), 0.5)
    assert ttl == LeaseTimeToLiveResponse(LEASE, 59, 60, (b"a", b"b", b"c"))  # 59.5 s truncated, as etcd
    m.submit(1, LeaseRevokeRequest(LEASE), 0)
    answers, events = turn(disk, m, 0.0)
    assert answers == [(1, LeaseRevokeResponse(revision=6))]
    assert [(e.kv, e.prev_kv.key if e.prev_kv else None) for e in events] == [
        (KeyValue(b"a", 0, 6, 0), b"a"), (KeyValue(b"b", 0, 6, 0), b"b"), (KeyValue(b"c", 0, 6, 0), b"c"),
    ]
    assert keys(disk) == [(b"z", 5, 0)]
    assert ask(disk, m, LeaseTimeToLiveRequest(LEASE), 0.0) == LeaseTimeToLiveResponse(LEASE, -1)
    assert submit(disk, m, LeaseRevokeRequest(LEASE)) == [EtcdError(errors.LEASE_NOT_FOUND)]


def test_revoking_a_lease_without_keys_does_not_move_the_revision() -> None:
    disk, m = started()
    submit(disk, m, LeaseGrantRequest(ttl=60, id=LEASE))
    assert submit(disk, m, LeaseRevokeRequest(LEASE)) == [LeaseRevokeResponse(revision=1)]


def test_keys_moved_to_another_lease_or_deleted_are_detached() -> None:
    disk, m = started()
    submit(disk, m, LeaseGrantRequest(ttl=60, id=1), LeaseGrantRequest(ttl=60, id=2))
    submit(disk, m, PutRequest(b"a", lease=1), PutRequest(b"b", lease=1), PutRequest(b"c", lease=1),
           PutRequest(b"d", lease=1))
    submit(disk, m, PutRequest(b"a", lease=2), PutRequest(b"b"), DeleteRangeRequest(b"c"),
           TxnRequest(success=(PutRequest(b"d", b"x", ignore_lease=True),)))
    assert ask(disk, m, LeaseTimeToLiveRequest(1, keys=True), 0.0).keys == (b"d",)  # type: ignore[union-attr]
    assert ask(disk, m, LeaseTimeToLiveRequest(2, keys=True), 0.0).keys == (b"a",)  # type: ignore[union-attr]


def test_put_with_an_unknown_lease_is_not_found() -> None:
    disk, m = started()
    assert submit(disk, m, PutRequest(b"a", lease=5)) == [EtcdError(errors.LEASE_NOT_FOUND)]
    assert submit(disk, m, TxnRequest(success=(PutRequest(b"a", lease=5),))) == [
        EtcdError(errors.LEASE_NOT_FOUND)
    ]
    assert keys(disk) == []


def test_grant_errors_and_raised_ttl() -> None:
    disk, m = started()
    assert submit(disk, m, LeaseGrantRequest(ttl=1, id=1)) == [LeaseGrantResponse(1, 1, 2)]
    assert submit(disk, m, LeaseGrantRequest(ttl=5, id=1), LeaseGrantRequest(ttl=9_000_000_001, id=3)) == [
        EtcdError(errors.LEASE_EXISTS), EtcdError(errors.LEASE_TTL_TOO_LARGE),
    ]


def test_min_ttl_follows_the_election_timeout() -> None:
    disk = Disk()
    m = disk.member(heartbeat_ms=10, election_ticks=10)
    assert submit(disk, m, LeaseGrantRequest(ttl=1, id=1)) == [LeaseGrantResponse(1, 1, 1)]


def test_server_chosen_ids_are_distinct_positive_and_in_the_proposal() -> None:
    disk = Disk()
    m = Member(disk.member().config, disk.backend, [], 0.0, unix_ms=1_700_000_000_123)
    got = submit(disk, m, LeaseGrantRequest(ttl=10), LeaseGrantRequest(ttl=10))
    ids = [r.id for r in got if isinstance(r, LeaseGrantResponse)]
    assert len(set(ids)) == 2 and all(0 < i < 1 << 63 for i in ids)
    assert ids[0] >> 48 == 1  # the member id (1) in the top bits
    # a restart finds the same ids in the backend
    assert sorted(disk.member().lessor.leases()) == sorted(ids)


def test_expiry_by_tick_proposes_one_revoke_and_deletes_keys_in_one_revision() -> None:
    disk, m = started(now=100.0)
    submit(disk, m, LeaseGrantRequest(ttl=10, id=LEASE), now=100.0)
    submit(disk, m, *(PutRequest(k, lease=LEASE) for k in (b"k2", b"k1", b"k3")), now=100.0)
    m.tick(109.9, store.current_revision(disk.backend))
    assert not m.ready()
    m.tick(110.0, store.current_revision(disk.backend))
    m.tick(110.1, store.current_revision(disk.backend))  # proposed once only
    rd = m.ready()
    assert len(rd.entries) == 1
    disk.log.append_entries(rd.entries)
    applied = m.apply(disk.backend, rd.committed, 110.1)
    m.advance(rd)
    assert applied.answers == []  # nobody waits for an expiry
    assert [(e.kv.key, e.kv.mod_revision, e.is_delete) for e in applied.events] == [
        (b"k1", 5, True), (b"k2", 5, True), (b"k3", 5, True),
    ]
    assert keys(disk) == []
    assert ask(disk, m, LeaseTimeToLiveRequest(LEASE), 111.0) == LeaseTimeToLiveResponse(LEASE, -1)
    m.tick(200.0, store.current_revision(disk.backend))
    assert not m.ready()


def test_keepalive_postpones_expiry_and_unknown_answers_ttl_zero() -> None:
    disk, m = started()
    submit(disk, m, LeaseGrantRequest(ttl=10, id=LEASE), now=0.0)
    assert ask(disk, m, LeaseKeepAliveRequest(LEASE), 9.0) == LeaseKeepAliveResponse(LEASE, 10)
    m.tick(18.9, 1)
    assert not m.ready()
    assert ask(disk, m, LeaseKeepAliveRequest(999), 9.0) == LeaseKeepAliveResponse(999, 0)
    # expired but not revoked yet: a keepalive cannot save it
    assert ask(disk, m, LeaseKeepAliveRequest(LEASE), 19.0) == LeaseKeepAliveResponse(LEASE, 0)
    m.tick(19.0, 1)
    turn(disk, m, 19.0)
    assert ask(disk, m, LeaseLeasesRequest(), 19.0) == LeaseLeasesResponse(())


def test_leases_lists_soonest_expiry_first() -> None:
    disk, m = started()
    submit(disk, m, LeaseGrantRequest(ttl=50, id=1), LeaseGrantRequest(ttl=20, id=2), LeaseGrantRequest(ttl=50, id=3))
    assert ask(disk, m, LeaseLeasesRequest(), 0.0) == LeaseLeasesResponse((2, 1, 3))


def test_grant_costs_quota_and_is_refused_under_nospace() -> None:
    disk = Disk()
    m = disk.member(quota_backend_bytes=10)
    turn(disk, m, 0.0)
    assert submit(disk, m, LeaseGrantRequest(ttl=10, id=1)) == [EtcdError(errors.NO_SPACE)]
    assert m.nospace
    # refused at apply too while the alarm is on (a grant that passed the check earlier)
    disk2 = Disk()
    m2 = disk2.member()
    submit(disk2, m2, AlarmRequest(AlarmAction.ACTIVATE, 1, AlarmType.NOSPACE))
    assert submit(disk2, m2, LeaseGrantRequest(ttl=10, id=1)) == [EtcdError(errors.NO_SPACE)]
    # revoke and keepalive keep working
    assert submit(disk2, m2, LeaseRevokeRequest(1)) == [EtcdError(errors.LEASE_NOT_FOUND)]


def test_restart_keeps_leases_and_attachments_and_refreshes_ttls() -> None:
    disk, m = started(now=0.0)
    submit(disk, m, LeaseGrantRequest(ttl=30, id=1), LeaseGrantRequest(ttl=1, id=2), now=0.0)
    submit(disk, m, PutRequest(b"b", lease=1), PutRequest(b"a", lease=1), PutRequest(b"c", lease=2), now=0.0)
    # a grant durable in the log but not applied: replayed on restart
    m.submit(9, LeaseGrantRequest(ttl=40, id=3), 0)
    rd = m.ready()
    disk.log.append_entries(rd.entries)

    again = disk.member(now=1000.0)  # long after every TTL: nothing may expire early
    turn(disk, again, 1000.0)
    assert sorted(again.lessor.leases()) == [1, 2, 3]
    again.tick(1000.9, store.current_revision(disk.backend))
    assert not again.ready()
    # the full TTL again, plus one election timeout (etcd's Promote)
    assert ask(disk, again, LeaseTimeToLiveRequest(1, keys=True), 1000.0) == LeaseTimeToLiveResponse(
        1, 31, 30, (b"a", b"b")
    )
    assert ask(disk, again, LeaseTimeToLiveRequest(2, keys=True), 1000.0) == LeaseTimeToLiveResponse(
        2, 3, 2, (b"c",)
    )
    again.tick(1003.0, store.current_revision(disk.backend))
    _, events = turn(disk, again, 1003.0)
    assert [e.kv.key for e in events] == [b"c"]
    # revoking after the restart deletes the rebuilt attachments
    m3 = disk.member(now=2000.0)
    assert submit(disk, m3, LeaseRevokeRequest(1), now=2000.0) == [LeaseRevokeResponse(revision=6)]
    assert keys(disk) == []
