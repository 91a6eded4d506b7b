from __future__ import annotations

import random

import pytest

from sim.history import (
    KV,
    Compact,
    CompactResult,
    Compare,
    Delete,
    DeleteResult,
    History,
    HistoryError,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Operation,
    Put,
    PutResult,
    Range,
    RangeResult,
    Response,
    Txn,
    TxnResult,
    WatchEvent,
    WatchResponse,
    WatchStream,
    classify_error,
    describe,
    dumps,
    loads,
)
from tests.checkers.tiny import tiny_history

A = KV(b"a", b"\x00\xff bytes", 2, 3, 2, 7)


def _every_kind() -> History:
    txn = Txn(
        (Compare(b"a", "mod", "=", 3), Compare(b"b", "value", "!=", b"x")),
        (Put(b"a", b"1", 7, True), Delete(b"b", b"c", True), Range(b"a", b"\x00", 0, 2, False, False)),
        (Range(b"a", revision=2, count_only=True),),
    )
    ops = (
        Operation(1, 10, 20, Range(b"a", b"b", 2, 5, True, True), Response(4, RangeResult((A,), 1, True)), member=3),
        Operation(2, 11, 21, Put(b"a", b"v", 7, True), Response(5, PutResult(A))),
        Operation(3, 12, 22, Delete(b"a", b"", True), Response(6, DeleteResult(1, (A,)))),
        Operation(4, 13, 23, txn, Response(7, TxnResult(True, (PutResult(), DeleteResult(0), RangeResult())))),
        Operation(5, 14, 24, Compact(3), Response(7, CompactResult())),
        Operation(6, 15, 25, LeaseGrant(0, 5), Response(7, LeaseGrantResult(99, 6))),
        Operation(7, 16, 26, LeaseRevoke(99), Response(8, LeaseRevokeResult())),
        Operation(8, 17, 27, Range(b"z", revision=1), None, "etcdserver: mvcc: required revision has been compacted"),
        Operation(9, 18, None, Put(b"q", b"w"), None, "etcdserver: request timed out", None, True),
    )
    stream = WatchStream(
        1, b"a", b"\x00", 2, True, False, True,
        (
            WatchResponse(3, created=True),
            WatchResponse(5, (WatchEvent("PUT", A, None), WatchEvent("DELETE", KV(b"b", b"", 0, 5, 0), A))),
            WatchResponse(9, progress_notify=True),
            WatchResponse(9, canceled=True, compact_revision=4),
        ),
        member=2,
    )
    return History(ops, (stream,))


def test_every_request_result_and_watch_round_trips_through_json_lines() -> None:
    h = _every_kind()
    text = dumps(h)
    assert len(text.splitlines()) == len(h.operations) + 1
    assert loads(text) == h


def test_random_histories_round_trip() -> None:
    for seed in range(50):
        ops = tiny_history(random.Random(seed), 6, corrupt=seed % 2 == 0)
        h = History(tuple(ops))
        assert loads(dumps(h)) == h


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"kind": "op"}', "line 1: malformed (KeyError"),
        ("not json", "line 1: malformed"),
        ('{"kind": "nope"}', "unknown line kind"),
        (
            '{"kind":"op","client":1,"call":5,"return":4,"member":null,"request":{"type":"compact","revision":1},'
            '"response":null,"error":"x","indeterminate":false}',
            "returns at 4 before its call at 5",
        ),
        (
            '{"kind":"op","client":1,"call":5,"return":6,"member":null,"request":{"type":"frob"},'
            '"response":null,"error":"x","indeterminate":false}',
            "unknown request type 'frob'",
        ),
        (
            '{"kind":"op","client":"one","call":5,"return":6,"member":null,"request":{"type":"compact","revision":1},'
            '"response":null,"error":"x","indeterminate":false}',
            "expected an integer",
        ),
    ],
)
def test_bad_lines_name_the_line_and_the_problem(line: str, words: str) -> None:
    with pytest.raises(HistoryError, match="line 1") as e:
        loads(line)
    assert words in str(e.value)


def test_an_operation_must_not_contradict_itself() -> None:
    with pytest.raises(HistoryError, match="exactly one of response, error"):
        Operation(1, 1, 2, Compact(1))
    with pytest.raises(HistoryError, match="needs a return time"):
        Operation(1, 1, None, Compact(1), None, "x")
    with pytest.raises(HistoryError, match="has no response"):
        Operation(1, 1, 2, Compact(1), Response(1, CompactResult()), None, None, True)
    with pytest.raises(HistoryError, match="compare on version needs a int"):
        Compare(b"a", "version", "=", b"1")


def test_errors_the_model_cannot_produce_are_indeterminate() -> None:
    assert classify_error("etcdserver: request timed out")
    assert classify_error("etcdserver: leader changed")
    assert classify_error("rpc error: code = Unavailable desc = connection lost")
    assert not classify_error("etcdserver: mvcc: required revision has been compacted")
    assert not classify_error("etcdserver: requested lease not found")
    op = Operation.failed(1, 1, 2, Put(b"a", b"b"), "etcdserver: leader changed")
    assert op.indeterminate and op.response is None


def test_describe_is_one_readable_line() -> None:
    op = _every_kind().operations[3]
    assert describe(op) == (
        "client 4 [13..23]: txn if mod(a) = 3 && value(b) != x then put a=1 lease 7; delete [b..c); "
        "range [a..) limit 2 else range a @2 count -> succeeded; ok; deleted 0; [] count 0 @rev 7"
    )
