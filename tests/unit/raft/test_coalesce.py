"""Merging one turn's Raft messages per peer (rusd.core.raft.coalesce)."""

from __future__ import annotations

from rusd.core.raft import Entry, Message, MessageType
from rusd.core.raft.coalesce import MAX_MERGED_BYTES, coalesce

APP, RESP, HB = MessageType.APP, MessageType.APP_RESP, MessageType.HEARTBEAT


def app(to: int, index: int, n: int, commit: int = 0, term: int = 2, size: int = 1) -> Message:
    entries = tuple(Entry(index=index + 1 + k, term=term, data=b"x" * size) for k in range(n))
    return Message(type=APP, to=to, from_=1, term=term, index=index, log_term=term, entries=entries, commit=commit)


def resp(to: int, index: int, reject: bool = False, term: int = 2) -> Message:
    return Message(type=RESP, to=to, from_=2, term=term, index=index, reject=reject)


def indexes(m: Message) -> list[int]:
    return [e.index for e in m.entries]


def test_consecutive_appends_to_a_peer_become_one_with_the_latest_commit() -> None:
    out = coalesce([app(2, 10, 2, commit=9), app(3, 10, 2), app(2, 12, 3, commit=11), app(3, 12, 1)])
    assert [(m.to, m.index, indexes(m), m.commit) for m in out] == [
        (2, 10, [11, 12, 13, 14, 15], 11),
        (3, 10, [11, 12, 13], 0),
    ]


def test_appends_that_do_not_continue_each_other_stay_apart() -> None:
    gap = [app(2, 10, 2), app(2, 13, 1)]
    other_term = [app(2, 10, 2), app(2, 12, 1, term=3)]
    empty = [app(2, 10, 0), app(2, 10, 1)]
    for msgs in (gap, other_term, empty):
        assert coalesce(msgs) == msgs


def test_a_message_between_two_appends_to_the_same_peer_keeps_them_apart() -> None:
    heartbeat = Message(type=HB, to=2, from_=1, term=2, commit=5)
    msgs = [app(2, 10, 1), heartbeat, app(2, 11, 1)]
    assert coalesce(msgs) == msgs


def test_merged_appends_stay_within_the_size_limit() -> None:
    half = MAX_MERGED_BYTES // 2
    out = coalesce([app(2, 10, 1, size=half), app(2, 11, 1, size=half), app(2, 12, 1, size=half)])
    assert [indexes(m) for m in out] == [[11, 12], [13]]


def test_only_the_highest_successful_append_response_is_kept() -> None:
    out = coalesce([resp(1, 5), resp(1, 9), resp(1, 7)])
    assert out == [resp(1, 9)]


def test_rejections_and_responses_of_another_term_are_kept() -> None:
    msgs = [resp(1, 5), resp(1, 4, reject=True), resp(1, 9)]
    assert coalesce(msgs) == msgs
    msgs = [resp(1, 5, term=2), resp(1, 9, term=3)]
    assert coalesce(msgs) == msgs
