"""The simulator variant whose nodes are full etcd Members: an etcd client workload under
network faults, partitions and crashes, every checker green; planted bugs are caught."""

from __future__ import annotations

import pytest

from sim.linearizability import check_linearizability
from sim.members import MemberCluster, MembersOptions, simulate_members

# 40 seeds x 3 and 5 members in CI (a sweep of seeds 0-99 x both sizes x 6,000 steps passed
# when this was written).
SEEDS = range(40)


@pytest.mark.parametrize("members", [3, 5])
def test_member_cluster_seed_range_passes_every_checker(members: int) -> None:
    totals = {"acked": 0, "crashes": 0, "snapshots": 0, "reads": 0}
    for seed in SEEDS:
        c = MemberCluster(seed, options=MembersOptions(members=members, steps=3_000))
        r = c.run()
        assert not r.failed, (seed, members, r.verdict_lines)
        assert r.acked > 0
        assert c.checkers.leader_of_term  # elections happened and were checked
        totals["acked"] += r.acked
        totals["crashes"] += r.crashes
        totals["snapshots"] += r.snapshots
    # the range exercises what it claims to: crashes, and followers restored by snapshot
    assert totals["crashes"] >= len(SEEDS)
    assert totals["snapshots"] > 0


def test_member_cluster_is_deterministic() -> None:
    assert simulate_members(3, steps=2_000).trace_hash == simulate_members(3, steps=2_000).trace_hash
    assert simulate_members(3, steps=2_000).trace_hash != simulate_members(4, steps=2_000).trace_hash


def test_a_write_lost_with_its_leader_is_answered_and_clients_see_each_outcome() -> None:
    refusals: dict[str, int] = {}
    for seed in range(10):
        c = MemberCluster(seed, options=MembersOptions(steps=3_000))
        assert not c.run().failed
        for message, n in c.refusals.items():
            refusals[message] = refusals.get(message, 0) + n
    assert refusals.get("etcdserver: leader changed", 0) > 0
    assert refusals.get("etcdserver: no leader", 0) > 0
    assert refusals.get("etcdserver: request timed out", 0) > 0


def test_planted_stale_reads_are_caught_by_the_linearizable_reads_check() -> None:
    caught = [
        seed for seed in range(10)
        if MemberCluster(seed, options=MembersOptions(steps=3_000, stale_reads=True)).run().failed
    ]
    assert len(caught) >= 5, caught


def test_a_follower_restored_from_a_snapshot_converges_with_the_leader() -> None:
    for seed in range(40):
        c = MemberCluster(seed, options=MembersOptions(steps=3_000))
        r = c.run()
        if r.snapshots:
            assert not r.failed
            states = {c.state_of(i) for i in c.ids}
            assert len(states) == 1
            return
    pytest.fail("no seed sent a snapshot")


def test_rusd_sim_runs_the_members_engine_seed_first_hash_last() -> None:
    from click.testing import CliRunner

    from sim.cli import main

    runs = [CliRunner().invoke(main, ["--engine", "members", "--seed", "5", "--steps", "1500"]) for _ in range(2)]
    for r in runs:
        assert r.exit_code == 0, r.output
        lines = r.output.splitlines()
        assert lines[0] == "seed 5"
        assert "check linearizable_reads: ok" in lines and "verdict ok" in lines
        assert len(lines[-1]) == 64
    assert runs[0].output.splitlines()[-1] == runs[1].output.splitlines()[-1]


def test_the_whole_client_history_is_linearizable_and_the_summary_says_so() -> None:
    c = MemberCluster(2, options=MembersOptions(steps=4_000))
    r = c.run()
    assert not r.failed, r.verdict_lines
    (line,) = [v for v in r.verdict_lines if v.startswith("check linearizability:")]
    assert line.startswith("check linearizability: ok (") and line.endswith(" ops)")
    assert len(c.history) > 300


def test_planted_stale_reads_make_the_history_non_linearizable() -> None:
    for seed in range(5):
        c = MemberCluster(seed, options=MembersOptions(steps=3_000, stale_reads=True))
        c.run()
        result = check_linearizability(c.history)
        if result.verdict == "violation":
            assert "range" in result.message
            return
    pytest.fail("no seed's history showed the stale reads")


def test_planted_early_lease_expiry_on_a_new_leader_is_caught() -> None:
    caught = []
    planted = MembersOptions(steps=4_000, member_bugs=frozenset({"early_lease_expiry"}))
    for seed in range(6):
        r = MemberCluster(seed, options=planted).run()
        caught += [v for v in r.verdict_lines if v.startswith("check lease_expiry: FAIL")]
    assert len(caught) >= 4, caught


def test_watch_streams_keep_etcds_guarantees_and_a_skipped_event_is_caught() -> None:
    c = MemberCluster(1, options=MembersOptions(steps=4_000))
    r = c.run()
    assert not r.failed, r.verdict_lines
    (line,) = [v for v in r.verdict_lines if v.startswith("check watch:")]
    assert line.startswith("check watch: ok (") and "streams" in line
    assert sum(len(resp.events) for s in c.watch_streams for resp in s.responses) > 100
    planted = MemberCluster(1, options=MembersOptions(steps=4_000, watch_skips=True)).run()
    assert any(v.startswith("check watch: FAIL") and "was skipped" in v for v in planted.verdict_lines)
