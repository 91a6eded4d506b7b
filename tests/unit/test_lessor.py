"""The lessor over a fake clock: expiry, renewal, TTL bounds, promotion, ids."""

from __future__ import annotations

import pytest

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.lease.lessor import MAX_LEASE_TTL, IdGenerator, Lessor, load, min_lease_ttl, remove, save
from rusd.storage.memory import MemoryBackend


def primary(now: float = 0.0, min_ttl: int = 2) -> Lessor:
    le = Lessor(min_ttl)
    le.promote(now)
    return le


def test_expires_exactly_at_ttl_not_before() -> None:
    le = primary()
    le.grant(7, 10, now=100.0)
    assert le.expired(109.999) == []
    assert le.expired(110.0) == [7]
    # reported once per expiry
    assert le.expired(200.0) == []


def test_keepalive_extends_from_now_and_returns_the_ttl() -> None:
    le = primary()
    le.grant(7, 10, now=0.0)
    assert le.renew(7, now=8.0) == 10
    assert le.expired(17.9) == []
    assert le.time_to_live(7, now=9.5)[0] == 8  # 8.5 s left, truncated as etcd
    assert le.expired(18.0) == [7]


def test_renewing_an_expired_or_unknown_lease_is_not_found() -> None:
    le = primary()
    le.grant(7, 10, now=0.0)
    with pytest.raises(EtcdError) as e:
        le.renew(7, now=10.0)
    assert e.value == EtcdError(errors.LEASE_NOT_FOUND)
    with pytest.raises(EtcdError):
        le.renew(8, now=0.0)


def test_ttl_below_the_minimum_is_raised() -> None:
    le = primary(min_ttl=2)
    assert le.grant(1, 1, now=0.0).ttl == 2
    assert le.grant(2, -5, now=0.0).ttl == 2
    assert le.grant(3, 3, now=0.0).ttl == 3
    assert le.expired(1.5) == []
    assert le.expired(2.0) == [1, 2]


def test_min_ttl_is_one_and_a_half_election_timeouts_in_whole_ticks() -> None:
    assert min_lease_ttl(10, 100) == 2  # etcd defaults: 1.5 s -> 2
    assert min_lease_ttl(10, 10) == 1  # 0.15 s -> 1
    assert min_lease_ttl(11, 100) == 2  # (33 // 2) * 100 ms = 1.6 s
    assert min_lease_ttl(20, 100) == 3


def test_max_ttl() -> None:
    le = primary()
    assert le.grant(1, MAX_LEASE_TTL, now=0.0).ttl == MAX_LEASE_TTL
    with pytest.raises(EtcdError) as e:
        le.grant(2, MAX_LEASE_TTL + 1, now=0.0)
    assert e.value == EtcdError(errors.LEASE_TTL_TOO_LARGE)
    assert not le.exists(2)


def test_duplicate_id_and_id_zero() -> None:
    le = primary()
    le.grant(1, 10, now=0.0)
    with pytest.raises(EtcdError) as e:
        le.grant(1, 20, now=0.0)
    assert e.value == EtcdError(errors.LEASE_EXISTS)
    assert le.time_to_live(1, 0.0)[1] == 10
    with pytest.raises(EtcdError):
        le.grant(0, 10, now=0.0)


def test_revoke_returns_the_attached_keys_sorted_and_forgets_the_lease() -> None:
    le = primary()
    le.grant(1, 10, now=0.0)
    for key in (b"b", b"a", b"c"):
        le.attach(1, key)
    le.detach(1, b"c")
    le.detach(99, b"x")  # a key of an unknown lease: nothing to do
    assert le.time_to_live(1, 0.0) == (10, 10, (b"a", b"b"))
    assert le.revoke(1) == [b"a", b"b"]
    assert not le.exists(1)
    assert le.expired(100.0) == []
    with pytest.raises(EtcdError):
        le.revoke(1)
    with pytest.raises(EtcdError):
        le.attach(1, b"a")


def test_leases_are_listed_soonest_expiry_first() -> None:
    le = primary()
    le.grant(5, 30, now=0.0)
    le.grant(9, 10, now=0.0)
    le.grant(1, 30, now=0.0)
    assert le.leases() == [9, 1, 5]


def test_not_primary_never_expires_until_promoted_then_gets_a_full_ttl() -> None:
    le = Lessor(2)
    le.restore(1, 10)
    le.restore(2, 60)
    assert le.expired(1e9) == []
    le.promote(1000.0, extend=1.0)
    assert le.expired(1010.9) == []
    assert le.expired(1011.0) == [1]
    assert le.time_to_live(2, 1000.0)[0] == 61
    le.demote()
    assert le.expired(1e12) == []


def test_promote_after_restart_refreshes_remaining_ttls() -> None:
    """Leases persist as (id, ttl); a restart long after the grant gives every lease
    its whole TTL again instead of expiring it at once."""
    backend = MemoryBackend()
    le = primary()
    for lease_id, ttl in ((3, 10), (1, 20)):
        save(backend, lease_id, le.grant(lease_id, ttl, now=0.0).ttl)
    save(backend, 2, le.grant(2, 5, now=0.0).ttl)
    remove(backend, 2)
    assert list(load(backend)) == [(1, 20), (3, 10)]
    again = Lessor(2)
    for lease_id, ttl in load(backend):
        again.restore(lease_id, ttl)
    again.promote(500.0)
    assert again.expired(509.9) == []
    assert again.expired(510.0) == [3]
    assert again.time_to_live(1, 500.0)[:2] == (20, 20)


def test_a_renew_re_arms_expiry_even_after_promote() -> None:
    le = primary()
    le.grant(1, 10, now=0.0)
    le.promote(5.0)
    le.renew(1, now=6.0)
    assert le.expired(15.9) == []
    assert le.expired(16.0) == [1]


def test_id_generator_matches_etcd_idutil() -> None:
    gen = IdGenerator(0x1234_ABCD, unix_ms=0x12_3456_789A)
    first = gen.next()
    # member id's low 16 bits, then the ms' low 40 bits, then a counter starting at 1
    assert first == (0xABCD << 48) | (0x12_3456_789A << 8) | 1
    assert gen.next() == first + 1


def test_id_generator_counter_wraps_inside_the_suffix() -> None:
    gen = IdGenerator(0x0001, unix_ms=(1 << 40) - 1)
    ids = [gen.next() for _ in range(300)]
    assert all(i >> 48 == 1 for i in ids)  # the overflow never reaches the member bits
    assert len(set(ids)) == 300


def test_lease_ids_are_positive_int63_and_never_zero() -> None:
    gen = IdGenerator(0xFFFF, unix_ms=(1 << 40) - 1)
    ids = [gen.next_lease_id() for _ in range(600)]
    assert all(0 < i < 1 << 63 for i in ids)
    gen = IdGenerator(0x8000, unix_ms=(1 << 40) - 1)
    # the raw ids pass through 0x8000_0000_0000_0000, which masks to 0: skipped
    ids = [gen.next_lease_id() for _ in range(300)]
    assert 0 not in ids and all(0 < i < 1 << 63 for i in ids)


def test_keepalives_do_not_grow_the_expiry_heap() -> None:
    lessor = Lessor(2)
    lessor.promote(0.0)
    lessor.grant(1, 3600, 0.0)
    lessor.grant(2, 10, 0.0)
    for i in range(10_000):
        lessor.renew(1, float(i) / 1000)
    assert len(lessor._heap) <= 2 * 2 + 64
    # the heap still reports each lease once, at its latest expiry
    assert lessor.expired(9.9) == []
    assert lessor.expired(10.0) == [2]
    assert lessor.expired(3609.0) == []
    assert lessor.expired(3610.0) == [1]
