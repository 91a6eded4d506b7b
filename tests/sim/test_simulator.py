"""The deterministic simulator: determinism, a fixed seed range, a planted bug, the CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner

from rusd.core.raft import Entry, HardState
from sim.cli import main
from sim.cluster import Cluster, SimOptions, simulate
from sim.disk import Disk
from sim.network import Network, NetworkOptions
from sim.rng import RngTree, derive
from sim.swarm import profile_options, swarm_options

SHORT = 6_000


def _opts(seed: int, **kw: object) -> SimOptions:
    return SimOptions(members=5 if seed % 3 == 0 else 3, steps=SHORT, **kw)  # type: ignore[arg-type]


def _failures(seed: int, opts: SimOptions) -> list[str]:
    return [line for line in simulate(seed, opts).verdict_lines if "FAIL" in line]


# -- building blocks ----------------------------------------------------------------------------


def test_rng_tree_is_stable_and_separates_components() -> None:
    assert derive(1, "network") == derive(1, "network")
    assert derive(1, "network") != derive(1, "disk/1") != derive(2, "network")
    # Pinned: the derivation never depends on hash() or the process.
    assert derive(0, "x") == 0x4115557189E89726
    a, b = RngTree(5).child("w"), RngTree(5).child("w")
    assert [a.random() for _ in range(3)] == [b.random() for _ in range(3)]
    tree = RngTree(5)
    tree.child("w")
    with pytest.raises(ValueError):
        tree.child("w")


def test_disk_crash_keeps_only_a_prefix_of_unsynced_writes() -> None:
    for seed in range(20):
        disk = Disk(random.Random(seed))
        disk.write_entries([Entry(1, 1, b"a")])
        disk.write_hard_state(HardState(term=1, vote=1, commit=1))
        disk.fsync()
        disk.write_entries([Entry(2, 1, b"b"), Entry(3, 1, b"c")])
        disk.write_hard_state(HardState(term=1, vote=1, commit=3))
        kept, lost = disk.crash()
        assert kept + lost == 3
        ents = disk.durable.entries
        assert [e.index for e in ents] == list(range(1, 2 + min(kept, 2)))
        assert disk.durable.hard_state.commit == (3 if kept == 3 else 1)
        storage, register = disk.load((1, 2, 3))
        assert storage.last_index() == len(ents) and register.applied == 0


def test_lying_disk_loses_fsynced_writes() -> None:
    disk = Disk(random.Random(0), lying_fsync=True)
    disk.write_entries([Entry(1, 1, b"a")])
    disk.fsync()
    disk.rng = random.Random(1)
    while disk.pending:
        disk.crash()
    assert disk.durable.entries in ([], [Entry(1, 1, b"a")])


def test_network_fifo_links_never_reorder() -> None:
    net = Network(random.Random(3), NetworkOptions(loss=0, duplicate=0.3, fifo=True), [1, 2])
    times = [t for now in range(0, 100_000, 100) for t in net.arrivals(now, 1, 2)]
    assert times == sorted(times)
    net = Network(random.Random(3), NetworkOptions(loss=0, duplicate=0, fifo=False), [1, 2])
    times = [t for now in range(0, 100_000, 100) for t in net.arrivals(now, 1, 2)]
    assert times != sorted(times)  # without FIFO, messages overtake each other


def test_one_way_partition_cuts_one_direction() -> None:
    net = Network(random.Random(0), NetworkOptions(), [1, 2, 3])
    net.cut_one_way(1, 2)
    assert not net.connected(1, 2) and net.connected(2, 1)
    net.partition([[1], [2, 3]])
    assert not net.connected(2, 1) and net.connected(2, 3)
    net.heal()
    assert net.connected(1, 2)


# -- whole runs ---------------------------------------------------------------------------------


# Determinism: these seeds run twice each (default profile, swarm options, election profile).
DETERMINISM_SEEDS = [0, 1, 7, 42, 1234, 99_999]


@pytest.mark.parametrize("seed", DETERMINISM_SEEDS)
def test_same_seed_same_trace_hash(seed: int) -> None:
    for opts in (_opts(seed), swarm_options(seed, _opts(seed)), profile_options("elections", 3, SHORT)):
        a = simulate(seed, opts)
        b = simulate(seed, opts)
        assert a.trace_hash == b.trace_hash
        assert a.trace == b.trace


def test_trace_hash_does_not_depend_on_the_process() -> None:
    """The same seed in fresh interpreters with different str hash seeds prints the same hash
    (nothing may iterate a hash-ordered container of strings, nor read time or the OS)."""
    hashes = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "sim.cli", "--swarm", "--seed", "42", "--steps", "2000"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.returncode == 0, out.stdout + out.stderr
        hashes.add(out.stdout.splitlines()[-1])
    assert len(hashes) == 1


def test_different_seeds_differ() -> None:
    assert simulate(1, _opts(1)).trace_hash != simulate(2, _opts(2)).trace_hash


# The CI range: 200 fixed seeds, each with its own swarm-drawn options and a short schedule, in
# chunks (one test per 10 seeds keeps the overhead low and names every failing seed).
CI_SEEDS = range(200)
CI_STEPS = 4_000
CI_CHUNK = 10


@pytest.mark.parametrize("first", range(CI_SEEDS.start, CI_SEEDS.stop, CI_CHUNK))
def test_ci_seed_range_passes(first: int) -> None:
    failed = {}
    for seed in range(first, first + CI_CHUNK):
        opts = swarm_options(seed, SimOptions(members=5 if seed % 3 == 0 else 3, steps=CI_STEPS))
        result = simulate(seed, opts)
        bad = [line for line in result.verdict_lines if ": FAIL" in line or "not run" in line]
        if bad or result.counters.operations == 0:
            failed[seed] = bad or ["no operations"]
    assert failed == {}, f"replay with: rusd-sim --swarm --seed N --steps {CI_STEPS} (--members 5 if N % 3 == 0)"


@pytest.mark.parametrize("seed", range(20))
def test_default_profile_seed_range_passes(seed: int) -> None:
    result = simulate(seed, _opts(seed))
    assert [line for line in result.verdict_lines if "FAIL" in line or "not run" in line] == []
    assert result.counters.acked > 0


def test_every_fault_kind_occurs_over_the_range() -> None:
    totals = {"crashes": 0, "partitions": 0, "elections": 0}
    kinds: set[str] = set()
    for seed in range(8):
        c = Cluster(seed, SimOptions(members=3, steps=15_000))
        r = c.run()
        totals["crashes"] += r.counters.crashes
        totals["partitions"] += r.counters.partitions
        totals["elections"] += r.counters.elections
        kinds.update(line.split()[1] for line in r.trace)
    assert all(v > 0 for v in totals.values()), totals
    assert {"crash", "restart", "partition", "isolate", "one-way", "heal", "lost", "retry"} <= kinds


# -- the command line ---------------------------------------------------------------------------


def test_cli_output_shape_and_exit_code() -> None:
    result = CliRunner().invoke(main, ["--seed", "5", "--steps", "2000"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "seed 5"
    assert any(line.startswith("progress ") for line in lines)
    assert any(line.startswith("check state_machine_safety: ok") for line in lines)
    assert any(line.startswith("counters operations ") for line in lines)
    assert len(lines[-1]) == 64 and int(lines[-1], 16) >= 0
    again = CliRunner().invoke(main, ["--seed", "5", "--steps", "2000"])
    assert again.output.splitlines()[-1] == lines[-1]
    five = CliRunner().invoke(main, ["--seed", "5", "--steps", "2000", "--members", "5"])
    assert five.exit_code == 0 and five.output.splitlines()[-1] != lines[-1]


def test_cli_exit_status_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.cli

    class Lying(Cluster):
        def __init__(self, seed: int, options: SimOptions | None = None) -> None:
            super().__init__(seed, SimOptions(steps=8_000, lying_fsync=True))

    monkeypatch.setattr(sim.cli, "Cluster", Lying)
    result = CliRunner().invoke(main, ["--seed", "0"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "seed 0" and len(lines[-1]) == 64
    assert any("check durability: FAIL" in line for line in lines)


def test_cli_swarm_mode_prints_a_line_per_seed_and_a_summary() -> None:
    result = CliRunner().invoke(main, ["--swarm", "--seeds", "3..5", "--steps", "1500"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:3] for line in lines[:3]] == [["seed", "3", "ok"], ["seed", "4", "ok"], ["seed", "5", "ok"]]
    assert lines[-1].startswith("summary seeds 3..5 swarm: 3 run, 3 ok, 0 failed")
    again = CliRunner().invoke(main, ["--swarm", "--seed", "3", "--count", "3", "--steps", "1500"])
    assert again.output.splitlines()[:3] == lines[:3]  # same seeds, same drawn options, same hashes
    single = CliRunner().invoke(main, ["--swarm", "--seed", "4", "--steps", "1500"])
    assert single.output.splitlines()[-1].startswith(lines[1].split("hash ")[1])


@pytest.mark.parametrize("bad", [["--seeds", "5..3"], ["--seeds", "x"], ["--seeds", "1..2", "--count", "2"]])
def test_cli_rejects_bad_seed_ranges(bad: list[str]) -> None:
    result = CliRunner().invoke(main, bad)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_lists_every_checker_with_what_it_covered() -> None:
    result = CliRunner().invoke(main, ["--seed", "2", "--steps", "3000"])
    checks = [line for line in result.output.splitlines() if line.startswith("check ")]
    assert len(checks) == 8
    assert all(line.endswith(")") for line in checks), checks
    terms = next(line for line in checks if line.startswith("check election_safety: ok ("))
    assert int(terms.split("(")[1].split()[0]) >= 1
