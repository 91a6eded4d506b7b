"""The simulator variant whose nodes are full Members (Raft + MVCC apply) over memory."""

from __future__ import annotations

import pytest

from sim.members import MemberCluster, simulate_members


@pytest.mark.parametrize("seed", range(6))
def test_member_cluster_seeds_pass_every_checker(seed: int) -> None:
    c = MemberCluster(seed, members=5 if seed % 3 == 0 else 3, steps=3_000)
    r = c.run()
    assert not r.failed, r.verdict_lines
    assert r.acked > 0
    assert c.checkers.leader_of_term  # elections happened and were checked
    assert max(c.checkers.applied.values()) > r.acked  # every applied entry was checked


def test_member_cluster_is_deterministic() -> None:
    assert simulate_members(3, steps=2_000).trace_hash == simulate_members(3, steps=2_000).trace_hash
    assert simulate_members(3, steps=2_000).trace_hash != simulate_members(4, steps=2_000).trace_hash


def test_writes_lost_with_a_partitioned_leader_answer_leader_changed() -> None:
    c = MemberCluster(3, steps=3_000)
    assert not c.run().failed
    assert c.refusals.get("etcdserver: leader changed", 0) > 0
