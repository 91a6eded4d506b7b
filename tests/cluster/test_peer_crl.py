"""--peer-crl-file: a member whose peer certificate is revoked is refused by its peers, so
nothing it sends is taken (its forwarded writes never reach the leader), while the others
go on.

etcd 3.4 checks the CRL only on connections to its peer listener, and a peer's Raft
messages mostly travel on streams the *receiver* dialled, so a revoked etcd member still
gets its stream messages through (a write through it succeeds there). rusd's members send
on streams they dial themselves, so the check refuses everything a revoked member sends:
the revocation takes effect, which is what the flag is for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.certs import PKI, issue, make_pki, write_crl
from tests.cluster.harness import Cluster
from tests.servers import etcdctl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_member_with_a_revoked_peer_certificate_is_refused_by_its_peers(tmp_path: Path, pki: PKI) -> None:
    bad = issue(pki.ca, tmp_path, "peer-bad", "bad", server=True)
    crl = write_crl(pki.ca, tmp_path / "peer.crl", [bad.serial])
    flags = ("--peer-client-cert-auth", "--peer-trusted-ca-file", str(pki.ca.path), "--peer-crl-file", str(crl))
    cluster = Cluster(tmp_path, peer_scheme="https", extra=flags)
    try:
        for i in (1, 2, 3):
            cluster.add_node(f"m{i}")
        good = ("--peer-cert-file", str(pki.server.cert), "--peer-key-file", str(pki.server.key))
        cluster.nodes["m1"].extra = cluster.nodes["m2"].extra = good
        cluster.nodes["m3"].extra = ("--peer-cert-file", str(bad.cert), "--peer-key-file", str(bad.key))
        for node in cluster.nodes.values():
            cluster.start(node, wait=False)
        for name in ("m1", "m2"):
            process = cluster.nodes[name].process
            assert process is not None
            process.wait_ready(60)
        m1, m3 = cluster.nodes["m1"], cluster.nodes["m3"]
        deadline = time.monotonic() + 30
        while etcdctl(m1.endpoint, "put", "k", "v", check=False).returncode != 0:
            assert time.monotonic() < deadline, "m1 and m2 elected no leader"
            time.sleep(0.2)
        assert etcdctl(m1.endpoint, "get", "k", "--print-value-only").stdout.strip() == "v"
        refused = etcdctl(m3.endpoint, "--command-timeout", "3s", "put", "k", "from-m3", check=False)
        assert refused.returncode != 0
        assert etcdctl(m1.endpoint, "get", "k", "--print-value-only").stdout.strip() == "v"
        logs = [n.process.log() for n in (m1, cluster.nodes["m2"]) if n.process is not None]
        assert any("revoked" in text for text in logs)
    finally:
        cluster.stop_all()
