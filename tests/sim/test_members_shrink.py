"""Shrinking, keeping and replaying members-engine seeds, and the HTML timeline."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from sim import shrink, timeline
from sim.cli import main
from sim.members import EXPIRY_CLIENT, MemberCluster, MembersOptions, members_options


def test_a_failing_seed_shrinks_to_a_smaller_run_that_fails_the_same_check() -> None:
    options = MembersOptions(steps=3_000, stale_reads=True)
    original = MemberCluster(1, options=options).run()
    small, result = shrink.shrink(1, options)
    assert small.steps < options.steps and small.clients <= options.clients
    assert shrink.failed_checks(result) & shrink.failed_checks(original)


def test_kept_seeds_round_trip_and_replay_exactly(tmp_path: Path) -> None:
    options = MembersOptions(members=5, steps=1_500, clients=4)
    result = MemberCluster(3, options=options).run()
    path = shrink.save(tmp_path, 3, options, result)
    assert shrink.load(path) == (3, options)
    runner = CliRunner()
    replayed = runner.invoke(main, ["--engine", "members", "--replay", str(path)])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output.splitlines()[0] == "seed 3"
    assert replayed.output.splitlines()[-1] == result.trace_hash


def test_planted_runs_are_never_kept(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["--engine", "members", "--seed", "1", "--steps", "3000", "--bug", "stale_reads",
                                    "--save-failing", str(tmp_path)])
    assert out.exit_code == 1
    assert "not kept: the run has a planted bug" in out.output
    assert list(tmp_path.iterdir()) == []


def test_the_timeline_has_a_lane_per_client_and_marks_faults_and_the_culprit() -> None:
    c = MemberCluster(2, options=MembersOptions(steps=1_500))
    c.run()
    clients = [op for op in c.history if op.client < EXPIRY_CLIENT]  # not the lessor's expiries
    culprit = clients[5]
    page = timeline.render("run", c.history, c.fault_log, culprit)
    svg = ET.fromstring(page[page.index("<svg"):])
    lanes = {op.client for op in clients}
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert all(f"client {n}" in texts for n in lanes)
    fills = [r.get("fill") for r in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert fills.count("red") == 1 and len(fills) == len(clients)
    assert any(what in texts for _, what in c.fault_log) or not c.fault_log


def test_options_json_refuses_unknown_fields() -> None:
    raw = shrink.options_to_json(dataclasses.replace(MembersOptions(), member_bugs=frozenset({"early_lease_expiry"})))
    assert shrink.options_from_json(raw).member_bugs == frozenset({"early_lease_expiry"})
    raw["nope"] = 1
    try:
        shrink.options_from_json(raw)
    except ValueError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("unknown option accepted")


def test_a_client_liveness_failure_shrinks_keeps_and_replays(tmp_path: Path) -> None:
    options = dataclasses.replace(members_options("load", 3, 3_000), member_bugs=frozenset({"read_context_per_member"}))
    small, result = shrink.shrink(2, options)
    assert (small.steps, small.clients) < (options.steps, options.clients)
    assert shrink.failed_checks(result) == {"check client_liveness"}
    path = shrink.save(tmp_path, 2, small, result)  # the CLI refuses to keep planted runs; the file works
    assert shrink.load(path) == (2, small)
    replayed = CliRunner().invoke(main, ["--engine", "members", "--replay", str(path)])
    assert replayed.exit_code == 1
    assert any(line.startswith("check client_liveness: FAIL get ") for line in replayed.output.splitlines())
    assert replayed.output.splitlines()[-1] == result.trace_hash


def test_the_members_engine_takes_its_own_profiles_only() -> None:
    out = CliRunner().invoke(main, ["--engine", "members", "--seed", "2", "--steps", "3000", "--profile", "load",
                                    "--bug", "read_context_per_member"])
    assert out.exit_code == 1 and "24 clients, turns 2000 us" in out.output
    assert "check client_liveness: FAIL" in out.output and "check linearizability: not run" in out.output
    refused = CliRunner().invoke(main, ["--engine", "members", "--profile", "elections"])
    assert refused.exit_code == 2 and "profiles are default, load" in refused.output
