"""Planted bugs prove that the simulator can fail: with a test-only switch that breaks Raft
(Config.bugs) or the driver (SimOptions), the checkers find a violation within a few seeds, and
the same seed without the bug passes (so the bug, not the fault schedule, is what they saw)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from rusd.core.raft import PLANTED_BUGS, Config, RawNode
from rusd.core.raft.memory import MemoryStorage
from rusd.core.raft.types import ConfState
from sim.cli import main
from sim.cluster import SimOptions, SimResult, simulate
from sim.swarm import profile_options, with_bugs

STEPS = 10_000


def _failures(result: SimResult) -> list[str]:
    return [line for line in result.verdict_lines if ": FAIL" in line]


def _first_caught(bug: str, seeds: range) -> tuple[int, list[str]]:
    """The first seed of the election-heavy profile whose run with `bug` fails a check."""
    for seed in seeds:
        fails = _failures(simulate(seed, with_bugs(profile_options("elections", 3, STEPS), frozenset([bug]))))
        if fails:
            return seed, fails
    raise AssertionError(f"planted bug {bug} not found in seeds {seeds.start}..{seeds.stop - 1}")


# (bug, seeds within which the simulator must find it, checkers that may report it)
CORE_BUGS = [
    # Figure 8: a leader commits an old-term entry by counting replicas; a later leader whose
    # log lacks it is elected and overwrites it.
    ("commit_old_term", range(12), ("leader_completeness", "log_matching", "state_machine_safety", "durability")),
    # A restarted member forgot its vote and votes again in the same term: two leaders.
    ("forget_vote", range(6), ("election_safety",)),
    # A follower keeps a conflicting entry and acknowledges the leader's: logs diverge.
    ("no_log_truncation", range(4), ("log_matching", "state_machine_safety", "raft_invariants")),
]


@pytest.mark.parametrize(("bug", "seeds", "checkers"), CORE_BUGS, ids=[b for b, _, _ in CORE_BUGS])
def test_planted_raft_bug_is_found_within_a_few_seeds(bug: str, seeds: range, checkers: tuple[str, ...]) -> None:
    seed, fails = _first_caught(bug, seeds)
    assert any(f.startswith(f"check {name}: FAIL") for f in fails for name in checkers), fails
    clean = simulate(seed, profile_options("elections", 3, STEPS))
    assert _failures(clean) == [], (seed, clean.verdict_lines)


def test_every_core_bug_is_tested() -> None:
    assert {b for b, _, _ in CORE_BUGS} == PLANTED_BUGS


def test_core_bugs_are_off_by_default_and_checked() -> None:
    assert Config(id=1).bugs == frozenset() and SimOptions().raft_bugs == frozenset()
    with pytest.raises(ValueError, match="unknown planted bugs"):
        RawNode(Config(id=1, bugs=frozenset({"typo"})), MemoryStorage(ConfState(voters=(1,))), random.Random(0))


def test_planted_bug_lying_fsync_is_caught() -> None:
    """Disks acknowledge fsync without persisting: a crash loses committed, acknowledged
    entries. The durability checker must see it within a few seeds."""
    caught = []
    for seed in range(10):
        fails = _failures(simulate(seed, SimOptions(steps=8_000, lying_fsync=True)))
        if fails:
            caught.append(seed)
            assert any("durability" in f for f in fails), fails
    assert len(caught) >= 3, caught


def test_planted_bug_ack_before_fsync_is_caught() -> None:
    """The driver sends messages_after_persist (append acks, votes) before the fsync: a
    follower acknowledges entries it can still lose. The checkers must see it within a few
    seeds (a crash then leaves a committed entry on less than a quorum)."""
    caught = [
        seed
        for seed in range(10)
        if _failures(simulate(seed, SimOptions(steps=10_000, early_ack=True, fault_mean_ms=500)))
    ]
    assert len(caught) >= 2, caught


def test_planted_bugs_are_not_kept_as_regression_seeds(tmp_path: Path) -> None:
    """`rusd-sim --bug` runs fail on purpose; --save-failing must not keep them (they would
    fail the regression replay forever)."""
    result = CliRunner().invoke(
        main,
        ["--profile", "elections", "--bug", "forget_vote", "--count", "3", "--steps", str(STEPS),
         "--save-failing", str(tmp_path)],
    )
    assert result.exit_code == 1, result.output
    assert "check election_safety: FAIL" in result.output
    assert "(not saved: planted bug)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_with_bugs_routes_driver_and_core_bugs() -> None:
    o = with_bugs(SimOptions(), frozenset({"early_ack", "forget_vote"}))
    assert o.early_ack and not o.lying_fsync and o.raft_bugs == frozenset({"forget_vote"})
    assert dataclasses.replace(o, early_ack=False, raft_bugs=frozenset()) == SimOptions()
