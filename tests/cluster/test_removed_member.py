"""A member removed while it was down misses its own removal; when it comes back, its
peers refuse its streams ("the member has been permanently removed from the cluster",
etcd's 410 Gone) and it stops, as an etcd member does, instead of campaigning against
the cluster. Checked against etcd 3.4 and rusd alike."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, get, put
from tests.servers import etcdctl

REMOVED = "the member has been permanently removed from the cluster"


def member_id(c: Cluster, name: str) -> str:
    for line in etcdctl(c.endpoints()[0], "member", "list").stdout.splitlines():
        fields = line.split(", ")
        if fields[2:3] == [name]:
            return fields[0]
    raise AssertionError(f"{name} not listed")


@pytest.mark.parametrize("kind", ["etcd", "rusd"])
def test_a_member_removed_while_down_stops_when_it_returns(tmp_path: Path, kind: str) -> None:
    cluster = Cluster(tmp_path, kind=kind)
    try:
        cluster.start_all(3)
        # a follower goes (no election in the way of the removal)
        m1 = cluster.leader()
        m2, m3 = [n for n in cluster.nodes.values() if n is not m1]
        gone = member_id(cluster, m3.name)
        assert m3.process is not None
        m3.process.kill()
        out = etcdctl(m1.endpoint, "member", "remove", gone)
        assert out.returncode == 0, out.stderr
        process = cluster.start(m3, wait=False)
        assert process.proc is not None
        deadline = time.monotonic() + 60
        while process.proc.poll() is None:
            assert time.monotonic() < deadline, "the removed member is still running"
            time.sleep(0.2)
        assert process.proc.returncode == 0
        assert REMOVED in process.log()
        # the two members left go on as a cluster
        put(m1.endpoint, b"after", b"removal")
        assert get(m2.endpoint, b"after") == [(b"after", b"removal")]
    finally:
        cluster.stop_all()
