"""Real rusd clusters whose client URLs are https (with client certificates required), and
whose peer URLs are http or https with peer TLS: what members ask each other outside Raft
(lease requests a follower forwards to the leader, the corruption checks' hashes) goes
over the peer listener, so it works whatever the client URLs are."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import PKI, channel_credentials, make_pki
from tests.cluster.harness import Cluster, Node, change_behind_its_back
from tests.servers import etcdctl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_cluster(tmp: Path, pki: PKI, peer_scheme: str, *extra: str) -> Cluster:
    """https client URLs that require a client certificate; with `peer_scheme` https, the
    peers also authenticate each other with certificates from the same CA."""
    server, ca = pki.server, str(pki.ca.path)
    flags = ["--cert-file", str(server.cert), "--key-file", str(server.key),
             "--client-cert-auth", "--trusted-ca-file", ca]
    if peer_scheme == "https":
        flags += ["--peer-cert-file", str(server.cert), "--peer-key-file", str(server.key),
                  "--peer-client-cert-auth", "--peer-trusted-ca-file", ca]
    return Cluster(
        tmp, extra=(*flags, *extra), client_scheme="https", peer_scheme=peer_scheme,
        credentials=channel_credentials(pki.ca.path, pki.client),
    )


@pytest.fixture
def stopped_after() -> Iterator[list[Cluster]]:
    """Clusters a test started; their members are killed (by pid) when it ends."""
    started: list[Cluster] = []
    yield started
    for c in started:
        c.stop_all()


def ctl(pki: PKI, node: Node, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """etcdctl over TLS with the client certificate."""
    return etcdctl(
        node.client_url, "--cacert", str(pki.ca.path), "--cert", str(pki.client.cert), "--key", str(pki.client.key),
        *args, check=check,
    )


@pytest.mark.parametrize("peer_scheme", ["http", "https"])
def test_lease_requests_through_a_follower_reach_the_leader_over_the_peer_listener(
    tmp_path: Path, pki: PKI, peer_scheme: str, stopped_after: list[Cluster]
) -> None:
    c = tls_cluster(tmp_path, pki, peer_scheme)
    stopped_after.append(c)
    c.start_all(3)
    leader = c.leader()
    follower = next(n for n in c.nodes.values() if n is not leader)
    granted = ctl(pki, leader, "lease", "grant", "60").stdout
    lease = re.search(r"lease ([0-9a-f]+) granted", granted)
    assert lease, granted
    lease_id = lease.group(1)
    ctl(pki, follower, "put", "leased", "v", f"--lease={lease_id}")
    # KeepAlive, TimeToLive and Leases are the leader's to answer: the follower forwards them
    kept = ctl(pki, follower, "lease", "keep-alive", "--once", lease_id).stdout
    assert f"lease {lease_id} keepalived with TTL(60)" in kept
    ttl = ctl(pki, follower, "lease", "timetolive", lease_id, "--keys").stdout
    assert f"lease {lease_id} granted with TTL(60s)" in ttl and "attached keys([leased])" in ttl
    assert lease_id in ctl(pki, follower, "lease", "list").stdout.split()
    # an unknown lease is answered as the leader answers it, not as "no leader"
    unknown = ctl(pki, follower, "lease", "keep-alive", "--once", "1234", check=False)
    assert (unknown.returncode, unknown.stderr) == (2, "Error: etcdserver: requested lease not found\n")
    assert ctl(pki, follower, "lease", "timetolive", "1234").stdout == "lease 0000000000001234 already expired\n"


def test_initial_corrupt_check_compares_hashes_with_peers_over_peer_tls(
    tmp_path: Path, pki: PKI, stopped_after: list[Cluster]
) -> None:
    c = tls_cluster(tmp_path, pki, "https")
    stopped_after.append(c)
    c.start_all(3)
    m1, m3 = c.nodes["m1"], c.nodes["m3"]
    for i in range(5):
        ctl(pki, m1, "put", f"c{i}", f"v{i}")
    c.converged()
    assert m3.process is not None
    m3.process.stop()
    # m3 with one value changed on disk behind rusd's back: its peers' hashes differ
    change_behind_its_back(m3.process.data_dir, b"c2", b"evil")
    c.extra = (*c.extra, "--experimental-initial-corrupt-check")
    m3.process = None
    process = c.start(m3, wait=False)
    assert process.proc is not None
    assert process.proc.wait(timeout=60) == 1
    assert "found data inconsistency with peers" in process.log()
