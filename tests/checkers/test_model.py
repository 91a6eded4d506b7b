from __future__ import annotations

from sim.history import (
    KV,
    Compact,
    CompactResult,
    Compare,
    Delete,
    DeleteResult,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Response,
    Txn,
    TxnResult,
)
from sim.model import (
    ERR_COMPACTED,
    ERR_FUTURE_REV,
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    Model,
    matches,
    step,
)


def _model(*reqs: object) -> Model:
    m = Model()
    for r in reqs:
        m.apply(r)  # type: ignore[arg-type]
    return m


def test_puts_bump_the_revision_and_track_create_mod_and_version() -> None:
    m = Model()
    assert m.apply(Put(b"a", b"1")) == Response(2, PutResult())
    assert m.apply(Put(b"a", b"2", prev_kv=True)) == Response(3, PutResult(KV(b"a", b"1", 2, 2, 1)))
    assert m.apply(Range(b"a")) == Response(3, RangeResult((KV(b"a", b"2", 2, 3, 2),), 1))


def test_deleting_nothing_keeps_the_revision_and_a_new_generation_restarts_the_version() -> None:
    m = _model(Put(b"a", b"1"))
    assert m.apply(Delete(b"zz")) == Response(2, DeleteResult(0))
    assert m.apply(Delete(b"a", prev_kv=True)) == Response(3, DeleteResult(1, (KV(b"a", b"1", 2, 2, 1),)))
    assert m.apply(Put(b"a", b"2")) == Response(4, PutResult())
    assert m.get(b"a") == KV(b"a", b"2", 4, 4, 1)


def test_range_count_limit_more_and_count_only() -> None:
    m = _model(Put(b"a", b"1"), Put(b"b", b"2"), Put(b"c", b"3"), Put(b"d", b"4"))
    res = m.apply(Range(b"a", b"d", limit=2))
    assert isinstance(res, Response) and isinstance(res.result, RangeResult)
    assert [kv.key for kv in res.result.kvs] == [b"a", b"b"] and res.result.count == 3 and res.result.more
    assert m.apply(Range(b"b", b"\x00", count_only=True)) == Response(5, RangeResult((), 3, False))
    assert m.apply(Range(b"a", b"d", limit=3)) == m.apply(Range(b"a", b"d"))


def test_historical_reads_and_compaction_errors() -> None:
    m = _model(Put(b"a", b"1"), Put(b"a", b"2"), Delete(b"a"), Put(b"a", b"3"))  # revisions 2..5
    assert m.read(Range(b"a", revision=2)) == RangeResult((KV(b"a", b"1", 2, 2, 1),), 1)
    assert m.read(Range(b"a", revision=4)) == RangeResult((), 0)
    assert m.apply(Range(b"a", revision=6)) == ERR_FUTURE_REV
    assert m.apply(Compact(3)) == Response(5, CompactResult())
    assert m.apply(Range(b"a", revision=2)) == ERR_COMPACTED
    assert m.read(Range(b"a", revision=3)) == RangeResult((KV(b"a", b"2", 2, 3, 2),), 1)  # at the compact rev
    assert m.apply(Compact(3)) == ERR_COMPACTED
    assert m.apply(Compact(9)) == ERR_FUTURE_REV


def test_txn_compares_see_a_missing_key_as_zero_except_for_value() -> None:
    m = Model()
    missing_value = Txn((Compare(b"a", "value", "!=", b"x"),), (Put(b"a", b"1"),), (Range(b"a"),))
    assert m.apply(missing_value) == Response(1, TxnResult(False, (RangeResult(),)))
    create_if_absent = Txn((Compare(b"a", "mod", "=", 0),), (Put(b"a", b"1"), Range(b"a")), ())
    kv = KV(b"a", b"1", 2, 2, 1)
    assert m.apply(create_if_absent) == Response(2, TxnResult(True, (PutResult(), RangeResult((kv,), 1))))


def test_one_txn_is_one_revision_with_sub_revisions_in_op_order() -> None:
    m = _model(Put(b"c", b"0"))
    txn = Txn((), (Put(b"b", b"1"), Put(b"a", b"2"), Delete(b"c")), ())
    assert m.apply(txn) == Response(3, TxnResult(True, (PutResult(), PutResult(), DeleteResult(1))))
    log = m.revision_log()
    assert [(e.revision, e.sub, e.type, e.kv.key) for e in log.events] == [
        (2, 0, "PUT", b"c"), (3, 0, "PUT", b"b"), (3, 1, "PUT", b"a"), (3, 2, "DELETE", b"c"),
    ]
    assert log.events[-1].prev_kv == KV(b"c", b"0", 2, 2, 1)


def test_a_txn_with_a_missing_lease_fails_whole() -> None:
    m = Model()
    assert m.apply(Txn((), (Put(b"a", b"1"), Put(b"b", b"2", lease=5)), ())) == ERR_LEASE_NOT_FOUND
    assert m.revision == 1 and m.get(b"a") is None


def test_leases_attach_keys_and_revoke_deletes_them_in_one_revision() -> None:
    m = Model()
    assert m.apply(Put(b"a", b"1", lease=5)) == ERR_LEASE_NOT_FOUND
    assert m.apply(LeaseGrant(5, 10)) == Response(1, LeaseGrantResult(5, 10))
    assert m.apply(LeaseGrant(5, 10)) == ERR_LEASE_EXISTS
    m.apply(Put(b"b", b"1", lease=5))
    m.apply(Put(b"a", b"1", lease=5))
    m.apply(Put(b"c", b"1", lease=5))
    m.apply(Put(b"c", b"2"))  # a put without the lease detaches the key
    assert m.apply(LeaseRevoke(5)) == Response(6, LeaseRevokeResult())
    assert sorted(m.live) == [b"c"]
    assert [(e.revision, e.kv.key) for e in m.revision_log().events if e.type == "DELETE"] == [(6, b"a"), (6, b"b")]
    assert m.apply(LeaseRevoke(5)) == ERR_LEASE_NOT_FOUND
    m.apply(LeaseGrant(6, 1))
    assert m.apply(LeaseRevoke(6)) == Response(6, LeaseRevokeResult())  # no keys: no new revision


def test_a_server_chosen_lease_id_comes_from_the_observed_response() -> None:
    m = Model()
    seen = Response(1, LeaseGrantResult(77, 12))
    out = m.apply(LeaseGrant(0, 5), seen)
    assert out == Response(1, LeaseGrantResult(77, 5))
    assert matches(out, seen, None)  # the server may raise the TTL
    assert not matches(out, Response(1, LeaseGrantResult(77, 4)), None)


def test_rollback_restores_state_and_fingerprint() -> None:
    m = _model(Put(b"a", b"1"), LeaseGrant(3, 5), Put(b"b", b"1", lease=3))
    before, kvs, leases = m.fingerprint(), dict(m.live), dict(m.leases)
    mark = m.mark()
    for r in (Put(b"a", b"2"), Delete(b"a", b"\x00"), LeaseRevoke(3), Compact(3), LeaseGrant(4, 1), Put(b"z", b"9")):
        m.apply(r)
    assert m.fingerprint() != before
    m.rollback(mark)
    assert (m.fingerprint(), m.live, m.leases, m.compactions) == (before, kvs, leases, [])
    assert m.read(Range(b"a", revision=2)) == RangeResult((KV(b"a", b"1", 2, 2, 1),), 1)


def test_equal_states_reached_differently_have_equal_fingerprints() -> None:
    one = _model(LeaseGrant(1, 5), LeaseGrant(2, 5), Put(b"a", b"1"), Range(b"a"))
    two = _model(LeaseGrant(2, 5), Put(b"a", b"1"), LeaseGrant(1, 5))
    assert one.fingerprint() == two.fingerprint()
    # same current value, different past: historical reads tell them apart
    past_one, past_two = _model(Put(b"a", b"1"), Put(b"a", b"2")), _model(Put(b"a", b"3"), Put(b"a", b"2"))
    assert past_one.live == past_two.live and past_one.fingerprint() != past_two.fingerprint()


def test_step_is_pure() -> None:
    m = _model(Put(b"a", b"1"))
    new, out = step(m, Put(b"a", b"2"))
    assert out == Response(3, PutResult())
    assert m.revision == 2 and m.get(b"a") == KV(b"a", b"1", 2, 2, 1)
    assert new.get(b"a") == KV(b"a", b"2", 2, 3, 2)


def test_matches_ignores_error_prefixes() -> None:
    assert matches(ERR_COMPACTED, None, "rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision "
                   "has been compacted")
    assert not matches(ERR_COMPACTED, None, ERR_FUTURE_REV)
    assert not matches(ERR_COMPACTED, Response(1, CompactResult()), None)
