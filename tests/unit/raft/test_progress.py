"""Progress, Inflights and the majority quorum."""

from __future__ import annotations

import pytest

from rusd.core.raft import Inflights, Progress, ProgressState, VoteResult
from rusd.core.raft.progress import majority_committed_index, majority_vote_result


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i)
    assert inf.full()
    with pytest.raises(OverflowError):
        inf.add(10)
    inf.free_le(7)
    assert len(inf) == 1
    inf.free_first_one()
    assert len(inf) == 0


def test_probe_sends_one_message_until_ack() -> None:
    pr = Progress(match=0, next_=5, max_inflight=10)
    assert not pr.is_paused()
    pr.sent_entries(2)
    assert pr.is_paused()
    assert pr.next == 5  # probing does not move next optimistically
    assert pr.maybe_update(6)
    assert not pr.is_paused()
    assert (pr.match, pr.next) == (6, 7)


def test_replicate_moves_next_optimistically_and_pauses_when_full() -> None:
    pr = Progress(match=4, next_=5, max_inflight=2)
    pr.become_replicate()
    pr.sent_entries(3)
    assert (pr.next, pr.is_paused()) == (8, False)
    pr.sent_entries(1)
    assert (pr.next, pr.is_paused()) == (9, True)
    assert pr.maybe_update(7)
    pr.inflights.free_le(7)
    assert len(pr.inflights) == 1


@pytest.mark.parametrize(
    ("state", "match", "next_", "rejected", "hint", "ok", "want_next"),
    [
        (ProgressState.REPLICATE, 5, 10, 5, 5, False, 10),  # stale: rejected <= match
        (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),  # back to match + 1
        (ProgressState.PROBE, 0, 10, 8, 8, False, 10),  # stale: not the last probe
        (ProgressState.PROBE, 0, 10, 9, 9, True, 9),
        (ProgressState.PROBE, 0, 10, 9, 3, True, 4),  # use the hint
        (ProgressState.PROBE, 5, 10, 9, 2, True, 6),  # never below match + 1
    ],
)
def test_maybe_decr_to(
    state: ProgressState, match: int, next_: int, rejected: int, hint: int, ok: bool, want_next: int
) -> None:
    pr = Progress(match=match, next_=next_, max_inflight=10)
    pr.state = state
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == want_next


def test_maybe_update_ignores_stale_acks() -> None:
    pr = Progress(match=5, next_=6, max_inflight=1)
    assert not pr.maybe_update(3)
    assert (pr.match, pr.next) == (5, 6)


@pytest.mark.parametrize(
    ("match", "want"),
    [
        ({1: 5}, 5),
        ({1: 5, 2: 3, 3: 1}, 3),
        ({1: 5, 2: 5, 3: 1, 4: 1}, 1),
        ({1: 5, 2: 5, 3: 4, 4: 1}, 4),
        ({1: 9, 2: 8, 3: 7, 4: 6, 5: 5}, 7),
        ({1: 9}, 0),  # voters 1..3, two missing acks
    ],
)
def test_majority_committed_index(match: dict[int, int], want: int) -> None:
    voters = sorted(match) if len(match) > 1 else ([1] if want else [1, 2, 3])
    assert majority_committed_index(voters, match) == want


def test_majority_vote_result() -> None:
    v = [1, 2, 3]
    assert majority_vote_result(v, {1: True}) is VoteResult.PENDING
    assert majority_vote_result(v, {1: True, 2: True}) is VoteResult.WON
    assert majority_vote_result(v, {1: True, 2: False}) is VoteResult.PENDING
    assert majority_vote_result(v, {1: True, 2: False, 3: False}) is VoteResult.LOST
    assert majority_vote_result([1, 2, 3, 4], {1: True, 2: True}) is VoteResult.PENDING


def test_replicate_stays_paused_on_ack_below_the_window() -> None:
    """Regression (found by the randomized test with duplicated/delayed messages): an ack below
    every inflight index frees nothing, so the progress must stay paused rather than overfill."""
    pr = Progress(match=5, next_=6, max_inflight=2)
    pr.become_replicate()
    pr.sent_entries(4)
    pr.sent_entries(4)
    assert pr.is_paused()
    assert pr.maybe_update(7)  # a late ack of an earlier message
    pr.inflights.free_le(7)
    assert pr.is_paused()
