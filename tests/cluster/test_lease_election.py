"""A lease keepalive sent to a follower while the cluster elects a new leader waits for
it (etcd's LeaseRenew retries the forward for up to its request timeout) instead of
failing with "no leader"; listing leases needs no leader at all (every member's lessor
knows them). Checked against etcd 3.4 and rusd alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster
from tests.servers import etcdctl


@pytest.mark.parametrize("kind", ["etcd", "rusd"])
def test_a_keepalive_through_a_follower_during_an_election_is_answered(tmp_path: Path, kind: str) -> None:
    cluster = Cluster(tmp_path, kind=kind)
    try:
        cluster.start_all(3)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        granted = etcdctl(follower.endpoint, "lease", "grant", "60").stdout
        lease = re.search(r"lease ([0-9a-f]+) granted", granted)
        assert lease, granted
        assert leader.process is not None
        leader.process.kill()
        # any member lists leases from its own lessor, leader or not
        listed = etcdctl(follower.endpoint, "lease", "list", check=False)
        assert listed.returncode == 0 and lease.group(1) in listed.stdout.split(), listed.stderr
        # sent at once: the follower still believes the dead member leads
        kept = etcdctl(follower.endpoint, "lease", "keep-alive", "--once", lease.group(1), check=False)
        assert kept.returncode == 0, kept.stderr
        assert f"lease {lease.group(1)} keepalived with TTL(" in kept.stdout
    finally:
        cluster.stop_all()
