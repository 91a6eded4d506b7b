from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.history import (
    Compact,
    CompactResult,
    Compare,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    Operation,
    Put,
    PutResult,
    Range,
    Txn,
    TxnResult,
)
from sim.linearizability import check_linearizability
from tests.checkers.brute_force import brute_force_linearizable
from tests.checkers.helpers import delete, get, kv, ok, put, timed_out
from tests.checkers.tiny import tiny_history

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


def _verdict(*ops: Operation) -> str:
    """The checker's verdict, which the brute-force reference must share."""
    result = check_linearizability(ops)
    assert result.ok == brute_force_linearizable(ops)
    return result.verdict


def test_sequential_put_then_get() -> None:
    assert _verdict(put(1, 0, 10, "a", "1", 2), get(2, 20, 30, "a", 2, kv("a", "1", 2, 2, 1))) == "ok"


def test_a_get_concurrent_with_a_put_may_see_either_value() -> None:
    w = put(1, 0, 100, "a", "1", 2)
    assert _verdict(w, get(2, 10, 20, "a", 1)) == "ok"
    assert _verdict(w, get(2, 10, 20, "a", 2, kv("a", "1", 2, 2, 1))) == "ok"


def test_a_stale_linearizable_read_is_a_violation_and_the_report_names_it() -> None:
    ops = [put(1, 0, 10, "a", "1", 2), get(2, 20, 30, "a", 1)]
    result = check_linearizability(ops)
    assert result.verdict == "violation" and not brute_force_linearizable(ops)
    assert result.failed == 1
    assert result.message == (
        "operation #1 cannot be placed: client 2 [20..30]: range a -> [] count 0 @rev 1\n"
        "  it answered revision 1 after #0 returned 2: #0 is client 1 [0..10]: put a=1 -> ok @rev 2"
    )


def test_a_value_nobody_wrote_is_a_violation_reported_after_the_longest_prefix() -> None:
    ops = [put(1, 0, 10, "a", "1", 2), get(2, 20, 30, "a", 2, kv("a", "2", 2, 2, 1))]
    assert _verdict(*ops) == "violation"
    result = check_linearizability(ops)
    assert result.order == (0,) and result.failed == 1
    assert result.message == (
        "operation #1 cannot be placed: client 2 [20..30]: range a -> [a=2(c2 m2 v1)] count 1 @rev 2\n"
        "  the model at revision 2 answers: [a=1(c2 m2 v1)] count 1 @rev 2\n"
        "  after the longest linearizable prefix: 1 operations; last: client 1 [0..10]: put a=1 -> ok @rev 2"
    )


def test_two_writes_cannot_make_the_same_revision() -> None:
    result = check_linearizability([put(1, 0, 10, "a", "1", 2), put(2, 20, 30, "b", "1", 2)])
    assert result.verdict == "violation" and "both made revision 2" in result.message


def test_an_acknowledged_write_that_vanishes_is_a_violation() -> None:
    ops = (put(1, 0, 10, "a", "1", 2), put(2, 20, 30, "b", "1", 2), get(3, 40, 50, "a", 2))
    assert _verdict(*ops) == "violation"


def test_a_revision_gap_with_no_write_to_fill_it_is_a_violation() -> None:
    assert _verdict(put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "a", "2", 4)) == "violation"


def test_an_indeterminate_write_may_have_applied_or_not() -> None:
    lost = timed_out(1, 0, Put(b"a", b"1"))
    assert _verdict(lost, get(2, 2000, 2010, "a", 1)) == "ok"
    assert _verdict(lost, get(2, 2000, 2010, "a", 2, kv("a", "1", 2, 2, 1))) == "ok"


def test_an_indeterminate_write_may_apply_long_after_the_client_gave_up() -> None:
    late = timed_out(1, 0, Put(b"a", b"1"))  # the client saw the timeout at 1000
    ops = (late, get(2, 2000, 2010, "a", 1), get(2, 3000, 3010, "a", 2, kv("a", "1", 2, 2, 1)))
    assert _verdict(*ops) == "ok"


def test_an_indeterminate_write_cannot_take_effect_before_its_call() -> None:
    late = timed_out(1, 500, Put(b"a", b"1"))
    assert _verdict(late, get(2, 0, 100, "a", 2, kv("a", "1", 2, 2, 1))) == "violation"


def test_an_indeterminate_write_takes_effect_at_most_once() -> None:
    w = timed_out(1, 0, Put(b"a", b"1"))
    seen = get(2, 2000, 2010, "a", 2, kv("a", "1", 2, 2, 1))
    gone = get(2, 3000, 3010, "a", 2)
    assert _verdict(w, seen, gone) == "violation"


def test_a_serializable_read_may_be_stale_but_must_match_its_revision() -> None:
    w1, w2 = put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "a", "2", 3)
    assert _verdict(w1, w2, get(2, 40, 50, "a", 2, kv("a", "1", 2, 2, 1), serializable=True)) == "ok"
    assert _verdict(w1, w2, get(2, 40, 50, "a", 2, kv("a", "2", 2, 2, 1), serializable=True)) == "violation"
    assert _verdict(w1, w2, get(2, 40, 50, "a", 9, serializable=True)) == "violation"  # from the future
    # the same stale answer without the serializable flag is a stale read
    assert _verdict(w1, w2, get(2, 40, 50, "a", 2, kv("a", "1", 2, 2, 1))) == "violation"


def test_two_compare_and_sets_on_the_same_mod_revision_cannot_both_succeed() -> None:
    def cas(client: int, value: bytes, rev: int) -> Operation:
        txn = Txn((Compare(b"a", "mod", "=", 2),), (Put(b"a", value),), (Range(b"a"),))
        return ok(client, 20, 30, txn, rev, TxnResult(True, (PutResult(),)))

    first = put(1, 0, 10, "a", "0", 2)
    assert _verdict(first, cas(2, b"x", 3)) == "ok"
    assert _verdict(first, cas(2, b"x", 3), cas(3, b"y", 4)) == "violation"


def test_delete_of_nothing_keeps_the_revision() -> None:
    ops = (
        put(1, 0, 10, "a", "1", 2), delete(2, 20, 30, "b", 2, 0), delete(2, 40, 50, "a", 3, 1), get(1, 60, 70, "a", 3),
    )
    assert _verdict(*ops) == "ok"
    assert _verdict(put(1, 0, 10, "a", "1", 2), delete(2, 20, 30, "b", 3, 0)) == "violation"


def test_a_compacted_error_needs_a_compaction_before_it() -> None:
    w = [put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "a", "2", 3)]
    failed_read = Operation(2, 40, 50, Range(b"a", revision=2), None, COMPACTED)
    compaction = ok(3, 60, 70, Compact(3), 3, CompactResult())
    assert _verdict(*w, failed_read, compaction) == "violation"
    early = ok(3, 35, 45, Compact(3), 3, CompactResult())
    assert _verdict(*w, failed_read, early) == "ok"


def test_a_timed_out_compaction_may_explain_a_compacted_error() -> None:
    w = [put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "a", "2", 3)]
    failed_read = Operation(2, 400, 500, Range(b"a", revision=2), None, COMPACTED)
    assert _verdict(*w, failed_read) == "violation"
    assert _verdict(*w, failed_read, timed_out(3, 35, Compact(3))) == "ok"


def test_a_put_on_a_lease_granted_later_is_a_violation() -> None:
    grant = ok(1, 50, 60, LeaseGrant(7, 10), 1, LeaseGrantResult(7, 10))
    early = ok(2, 0, 10, Put(b"a", b"1", 7), 2, PutResult())
    late = ok(2, 70, 80, Put(b"a", b"1", 7), 2, PutResult())
    assert _verdict(grant, late) == "ok"
    assert _verdict(grant, early) == "violation"


def test_the_deadline_gives_unknown() -> None:
    ops = [put(c, 0, 10, "a", str(c), 2 + c) for c in range(600)]
    result = check_linearizability(ops, deadline=lambda: True)
    assert result.verdict == "unknown" and "deadline" in result.message


def test_summary_names_the_verdict_and_size() -> None:
    assert check_linearizability([put(1, 0, 10, "a", "1", 2)]).summary() == "linearizability: ok (1 ops)"


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_agrees_with_brute_force_on_tiny_histories(rnd: random.Random, corrupt: bool) -> None:
    ops = tiny_history(rnd, 6, corrupt)
    expected = brute_force_linearizable(ops)
    assert corrupt or expected, "an uncorrupted history is linearizable by construction"
    assert check_linearizability(ops).ok == expected


def test_a_lease_expiring_before_its_ttl_is_a_violation() -> None:
    """Expiry is recorded as an indeterminate revoke called at the earliest legal expiry."""
    grant = ok(1, 0, 10, LeaseGrant(5, 1), 1, LeaseGrantResult(5, 1))
    attach = ok(1, 20, 30, Put(b"a", b"1", 5), 2, PutResult())
    expiry = Operation.failed(-1, 1000, None, LeaseRevoke(5), "lease expired")
    assert _verdict(grant, attach, expiry, get(2, 1500, 1510, "a", 3)) == "ok"
    assert _verdict(grant, attach, expiry, get(2, 500, 510, "a", 3)) == "violation"
