"""The checkers on realistic workload histories (kept small here; scripts/bench_checker.py
times the large ones)."""

from __future__ import annotations

import random
from itertools import groupby

import pytest

from sim.bench_checker import generate, plant_stale_read
from sim.history import History, WatchEvent, WatchResponse, WatchStream, dumps, loads
from sim.linearizability import check_linearizability
from sim.model import RevisionLog
from sim.watch_checker import check_watches


def test_a_correct_execution_is_linearizable_and_its_log_is_the_executions() -> None:
    work = generate(2_000, seed=7, faults=0.0)
    result = check_linearizability(work.operations)
    assert result.verdict == "ok", result.message
    assert result.operations == 2_000 and sorted(result.order) == list(range(2_000))
    assert result.log == work.model.revision_log()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_timeouts_the_execution_is_still_linearizable(seed: int) -> None:
    work = generate(2_000, seed=seed, faults=0.05)
    assert any(op.indeterminate for op in work.operations)
    result = check_linearizability(work.operations)
    assert result.verdict == "ok", result.message


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_planted_stale_read_is_caught(seed: int) -> None:
    work = generate(2_000, seed=seed)
    bad = plant_stale_read(work, random.Random(seed))
    result = check_linearizability(work.operations)
    assert result.verdict == "violation"
    assert result.failed == bad, result.message


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_planted_lost_write_is_caught(seed: int) -> None:
    work = generate(2_000, seed=seed, lose_write=1_000)
    result = check_linearizability(work.operations)
    assert result.verdict == "violation"
    assert "cannot be placed" in result.message


def test_the_verdict_survives_a_json_round_trip() -> None:
    work = generate(500, seed=4)
    plant_stale_read(work, random.Random(4))
    again = loads(dumps(History(tuple(work.operations)))).operations
    assert check_linearizability(again) == check_linearizability(work.operations)


def _stream(log: RevisionLog, prefix: bytes, start: int, rng: random.Random) -> WatchStream:
    """A correct watch on `prefix` from `start`, whole revisions batched at random."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    wanted = [e for e in log.events if prefix <= e.kv.key < end and e.revision >= start]
    responses = [WatchResponse(start - 1, created=True)]
    batch: list[WatchEvent] = []
    for rev, group in groupby(wanted, key=lambda e: e.revision):
        batch.extend(WatchEvent(e.type, e.kv, e.prev_kv) for e in group)
        if rng.random() < 0.5:
            responses.append(WatchResponse(rev, tuple(batch)))
            batch = []
            if rng.random() < 0.1:
                responses.append(WatchResponse(rev, progress_notify=True))
    if batch:
        responses.append(WatchResponse(log.last_revision, tuple(batch)))
    return WatchStream(0, prefix, end, start, True, responses=tuple(responses))


def test_watches_of_the_workload_pass_and_a_skipped_event_is_caught() -> None:
    work = generate(2_000, seed=5)
    result = check_linearizability(work.operations)
    assert result.log is not None
    rng = random.Random(5)
    streams = [_stream(result.log, f"k/0{d}".encode(), rng.randrange(1, 200), rng) for d in range(10)]
    report = check_watches(streams, result.log)
    assert report.ok, report.summary()
    assert report.events > 500
    victim = streams[3]
    with_events = [i for i, r in enumerate(victim.responses) if len(r.events) > 0]
    i = with_events[len(with_events) // 2]  # drop one response in the middle (a slow consumer's lost batch)
    skipped = WatchStream(0, victim.key, victim.range_end, victim.start_revision, True,
                          responses=victim.responses[:i] + victim.responses[i + 1:])
    assert check_watches([skipped], result.log).broken() >= {"reliable"}
