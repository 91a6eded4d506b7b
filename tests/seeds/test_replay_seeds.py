"""Every kept seed (tests/seeds/*.json: a seed and the complete options it ran with, written by
`rusd-sim --save-failing tests/seeds`) replays green, forever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import sim.cli
from sim.cli import main
from sim.cluster import SimOptions, simulate
from sim.swarm import load_seed, options_from_json, options_to_json, save_seed, swarm_options

SEEDS_DIR = Path(__file__).parent
KEPT = sorted(SEEDS_DIR.glob("*.json"))


def test_there_are_kept_seeds() -> None:
    assert KEPT, f"no kept seeds in {SEEDS_DIR}"


@pytest.mark.parametrize("path", KEPT, ids=[p.stem for p in KEPT])
def test_kept_seed_replays_green(path: Path) -> None:
    kept = load_seed(path)
    result = simulate(kept.seed, kept.options)
    assert [line for line in result.verdict_lines if ": FAIL" in line or "not run" in line] == [], (
        f"{path.name} ({kept.note}) fails again; replay: rusd-sim --replay {path}"
    )
    assert json.loads(path.read_text())["command"].startswith("rusd-sim --replay ")


def test_options_round_trip_through_json() -> None:
    for seed in range(20):
        o = swarm_options(seed, SimOptions(members=5, steps=123, raft_bugs=frozenset({"forget_vote"})))
        assert options_from_json(json.loads(json.dumps(options_to_json(o)))) == o
    assert options_from_json(options_to_json(SimOptions())) == SimOptions()
    with pytest.raises(ValueError, match="unknown simulator options"):
        options_from_json({"members": 3, "colour": "red"})


def test_bad_seed_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "seed-1.json"
    bad.write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="not a kept seed"):
        load_seed(bad)
    result = CliRunner().invoke(main, ["--replay", str(bad)])
    assert result.exit_code == 2 and "not a kept seed" in result.output


def test_cli_saves_a_failing_seed_that_replays_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing run is written to --save-failing DIR with its full options; --replay of that
    file reproduces the run bit for bit (same verdict, same trace hash). (The lying disk makes
    the run fail; the planted-bug guard is lifted so that it is saved.)"""
    monkeypatch.setattr(sim.cli, "has_planted_bug", lambda options: False)
    args = ["--swarm", "--seed", "3", "--steps", "8000", "--bug", "lying_fsync", "--save-failing", str(tmp_path)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output
    saved = sorted(tmp_path.glob("seed-3-*.json"))
    assert len(saved) == 1 and f"saved {saved[0]}" in first.output
    kept = load_seed(saved[0])
    assert kept.seed == 3 and kept.options.lying_fsync and kept.options == swarm_options(
        3, SimOptions(steps=8000, lying_fsync=True)
    )
    assert "durability" in kept.note
    replay = CliRunner().invoke(main, ["--replay", str(saved[0])])
    assert replay.exit_code == 1
    assert replay.output.splitlines()[-1] == first.output.splitlines()[-1]  # the trace hash


def test_saving_is_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sim.cli, "has_planted_bug", lambda options: False)
    result = CliRunner().invoke(main, ["--seed", "0", "--steps", "8000", "--bug", "lying_fsync"])
    assert result.exit_code == 1
    assert list(tmp_path.rglob("*.json")) == []


def test_save_seed_names_by_seed_and_options(tmp_path: Path) -> None:
    a = save_seed(tmp_path, 7, SimOptions(members=3), "x")
    b = save_seed(tmp_path, 7, SimOptions(members=5), "x")
    assert a != b and a.name.startswith("seed-7-") and load_seed(b).options.members == 5
