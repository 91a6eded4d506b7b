from __future__ import annotations

from dataclasses import replace

import pytest

from sim.history import KV, Compact, Delete, Put, Txn, WatchEvent, WatchResponse, WatchStream
from sim.model import Model, RevisionLog
from sim.watch_checker import check_watches


def _log() -> RevisionLog:
    """Revisions: 2 put a, 3 put b, 4 put a + put b (one txn), 5 delete a, 6 put a, 7 put z."""
    m = Model()
    for r in (
        Put(b"a", b"1"), Put(b"b", b"1"), Txn((), (Put(b"a", b"2"), Put(b"b", b"2")), ()), Delete(b"a"),
        Put(b"a", b"3"), Put(b"z", b"1"), Compact(4),
    ):
        m.apply(r)
    return m.revision_log()


LOG = _log()


def _events(log: RevisionLog, revisions: tuple[int, ...]) -> list[WatchEvent]:
    """The model's events of `revisions` on keys [a, c), with prev_kv."""
    return [WatchEvent(e.type, e.kv, e.prev_kv) for e in log.events if e.revision in revisions and e.kv.key < b"c"]


def _resp(*revisions: int, header: int = 7) -> WatchResponse:
    return WatchResponse(header, tuple(_events(LOG, revisions)))


def _stream(*responses: WatchResponse, start: int = 2) -> WatchStream:
    return WatchStream(1, b"a", b"c", start, True, responses=(WatchResponse(1, created=True), *responses))


GOOD = _stream(_resp(2, 3, header=3), _resp(4, header=4), WatchResponse(4, progress_notify=True), _resp(5, 6))


def _broken(stream: WatchStream) -> set[str]:
    return check_watches([stream], LOG).broken()


def test_a_correct_stream_satisfies_every_guarantee() -> None:
    report = check_watches([GOOD], LOG)
    assert report.ok, report.summary()
    assert report.summary() == "watch: ok (1 streams, 6 events)"


def test_filters_start_zero_and_single_keys() -> None:
    no_delete = [e for e in _events(LOG, (4, 5, 6)) if e.type == "PUT"]
    s = WatchStream(
        1, b"a", b"c", 0, True, no_delete=True,
        responses=(
            WatchResponse(3, created=True), WatchResponse(4, tuple(no_delete[:2])), WatchResponse(6, (no_delete[2],)),
        ),
    )
    single = WatchStream(2, b"z", responses=(WatchResponse(6, created=True), WatchResponse(7, tuple(
        WatchEvent(e.type, e.kv) for e in LOG.events if e.kv.key == b"z"))))
    report = check_watches([s, single], LOG)
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("guarantee", "stream"),
    [
        ("ordered", _stream(_resp(2, 3), _resp(5, 6), _resp(4))),
        ("unique", _stream(_resp(2, 3), _resp(4), _resp(4), _resp(5, 6))),
        ("atomic", _stream(_resp(2, 3), WatchResponse(7, tuple(_events(LOG, (4,))[:1])),
                           WatchResponse(7, tuple(_events(LOG, (4,))[1:])), _resp(5, 6))),
        ("reliable", _stream(_resp(2), _resp(4), _resp(5, 6))),
        ("resumable", _stream(_resp(3), _resp(4), _resp(5, 6))),
        ("bookmarkable", _stream(_resp(2, 3), _resp(4), WatchResponse(5, progress_notify=True), _resp(5, 6))),
        # canceled although everything it needed (7 and later) is still there
        ("compaction", _stream(_resp(2, 3), _resp(4), _resp(5, 6),
                               WatchResponse(7, canceled=True, compact_revision=4))),
        ("compaction", _stream(WatchResponse(7, canceled=True, compact_revision=3))),  # no compaction at 3
    ],
)
def test_each_broken_guarantee_is_reported_alone(guarantee: str, stream: WatchStream) -> None:
    assert _broken(stream) == {guarantee}


def test_prev_kv_must_be_the_value_at_revision_minus_one() -> None:
    events = _events(LOG, (4,))
    wrong = replace(events[0], prev_kv=KV(b"a", b"0", 2, 2, 1))
    assert _broken(_stream(_resp(2, 3), WatchResponse(4, (wrong, events[1])), _resp(5, 6))) == {"prev_kv"}
    unasked = replace(GOOD, prev_kv=False)
    assert _broken(unasked) == {"prev_kv"}


def test_an_event_the_model_never_made_is_invalid() -> None:
    events = _events(LOG, (6,))
    forged = replace(events[0], kv=events[0].kv._replace(value=b"forged"))
    assert _broken(_stream(_resp(2, 3), _resp(4), _resp(5), WatchResponse(7, (forged,)))) == {"valid"}


def test_a_watch_below_the_compaction_is_canceled_with_the_compact_revision() -> None:
    canceled = _stream(WatchResponse(7, canceled=True, compact_revision=4), start=2)
    assert check_watches([canceled], LOG).ok
    after_cancel = _stream(WatchResponse(7, canceled=True, compact_revision=4), _resp(5, 6), start=2)
    assert _broken(after_cancel) == {"compaction"}


def test_prev_kv_may_be_missing_when_its_revision_was_compacted() -> None:
    events = [replace(e, prev_kv=None) if e.revision == 2 else e for e in _events(LOG, (2, 3))]
    assert check_watches([_stream(WatchResponse(3, tuple(events)), _resp(4), _resp(5, 6))], LOG).ok
