"""Real 3-member clusters with --peer-auto-tls and https peer URLs (client URLs http), for
rusd and etcd 3.4 alike: each member makes its own self-signed peer certificate and, as
etcd's peer client does, does not verify its peers' (rusd trusts exactly the certificate
each presents). --peer-client-cert-auth is given too: etcd drops it with the generated
TLS info, so peers are not asked for client certificates (that would refuse every
self-signed one). The cluster forms, serves linearizable reads through any member,
forwards a follower's lease keepalive to the leader over the peer transport, and takes
back a killed member, also one restarted with a new certificate."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import server_certificate
from tests.cluster.harness import Cluster, Node, get, put
from tests.servers import etcdctl

FLAGS = ("--peer-auto-tls", "--peer-client-cert-auth")


@pytest.fixture(params=["etcd", "rusd"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Three members with self-signed peer TLS; killed (by pid) when the test ends."""
    c = Cluster(tmp_path, kind=request.param, peer_scheme="https", extra=FLAGS)
    try:
        c.start_all(3)
        yield c
    finally:
        c.stop_all()


def peer_certificate(c: Cluster, node: Node) -> bytes:
    """The certificate the member made for itself (etcd's <data-dir>/fixtures/peer)."""
    return (c.tmp / f"{c.kind}-{node.name}.data" / "fixtures" / "peer" / "cert.pem").read_bytes()


def restart(c: Cluster, node: Node, new_certificate: bool = False) -> None:
    """kill -9 and start again on the same data dir (without its peer certificate, so
    that a new one is made, if asked); returns once every member agrees on a leader."""
    assert node.process is not None
    node.process.kill()
    if new_certificate:
        shutil.rmtree(c.tmp / f"{c.kind}-{node.name}.data" / "fixtures" / "peer")
    c.start(node)
    c.leader()


def test_a_peer_auto_tls_cluster_forms_forwards_leases_and_takes_back_restarted_members(cluster: Cluster) -> None:
    c = cluster
    m1, m2, m3 = c.nodes["m1"], c.nodes["m2"], c.nodes["m3"]
    # every member presents its own self-signed certificate on its https peer URL
    certificates = {n.name: peer_certificate(c, n) for n in (m1, m2, m3)}
    assert len(set(certificates.values())) == 3
    for n in (m1, m2, m3):
        assert server_certificate(f"127.0.0.1:{n.peer_port}") == certificates[n.name]
    listed = etcdctl(m3.endpoint, "member", "list").stdout.splitlines()
    assert sorted(line.split(", ")[3] for line in listed) == sorted(n.peer_url for n in (m1, m2, m3))
    assert all(line.split(", ")[3].startswith("https://") for line in listed)

    # writes through one member, linearizable reads through the others
    put(m1.endpoint, b"k", b"v1")
    assert get(m2.endpoint, b"k") == [(b"k", b"v1")]
    assert get(m3.endpoint, b"k") == [(b"k", b"v1")]

    # a follower's keepalive goes to the leader over the peer transport
    leader = c.leader()
    follower = next(n for n in (m1, m2, m3) if n is not leader)
    granted = re.search(r"lease ([0-9a-f]+) granted", etcdctl(leader.endpoint, "lease", "grant", "60").stdout)
    assert granted is not None
    lease = granted.group(1)
    kept = etcdctl(follower.endpoint, "lease", "keep-alive", "--once", lease).stdout
    assert f"lease {lease} keepalived with TTL(60)" in kept
    assert f"lease {lease} granted with TTL(60s)" in etcdctl(follower.endpoint, "lease", "timetolive", lease).stdout

    # a follower killed and restarted rejoins and catches up on what it missed
    down = next(n for n in (m1, m2, m3) if n is not leader)
    up = [n for n in (m1, m2, m3) if n is not down]
    assert down.process is not None
    down.process.kill()
    put(up[0].endpoint, b"k", b"v2")
    restart(c, down)
    assert peer_certificate(c, down) == certificates[down.name]  # kept in the data dir
    assert get(down.endpoint, b"k") == [(b"k", b"v2")]
    put(down.endpoint, b"k", b"v3")
    assert get(up[1].endpoint, b"k") == [(b"k", b"v3")]

    # one restarted with a new certificate (its peer fixtures lost): its peers trust the new one
    other = next(n for n in (m1, m2, m3) if n is not c.leader())
    restart(c, other, new_certificate=True)
    assert peer_certificate(c, other) != certificates[other.name]
    put(other.endpoint, b"k", b"v4")
    for n in (m1, m2, m3):
        assert get(n.endpoint, b"k") == [(b"k", b"v4")]
    c.converged()
