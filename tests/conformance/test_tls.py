"""TLS against the real etcdctl: rusd and a real etcd 3.4 started with the same flags
must let the same clients in, and show them the same output."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.certs import PKI, auto_tls_probe, make_pki, server_certificate, tls_probe
from tests.conformance.harness import ETCD_FAST, Out, require_etcd, run_etcdctl
from tests.servers import ServerProcess, etcd, rusd

KINDS = ("rusd", "etcd")
Probe = Callable[[str], None]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    require_etcd()
    return make_pki(tmp_path_factory.mktemp("pki"))


def start(kind: str, tmp: Path, flags: tuple[str, ...], probe: Probe) -> ServerProcess:
    directory = tmp / kind
    directory.mkdir(exist_ok=True)
    if kind == "rusd":
        return rusd(directory, *flags, scheme="https", probe=probe).start()
    return etcd(directory, *ETCD_FAST, *flags, scheme="https", probe=probe).start()


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., list[ServerProcess]]]:
    """`servers(flags, probe)` starts a rusd and an etcd with the same flags."""
    started: list[ServerProcess] = []

    def launch(flags: tuple[str, ...], probe: Probe) -> list[ServerProcess]:
        for kind in KINDS:
            started.append(start(kind, tmp_path, flags, probe))
        return started[-len(KINDS):]

    yield launch
    for server in started:
        server.stop()


def ctl(server: ServerProcess, *args: str) -> Out:
    return run_etcdctl(f"https://{server.endpoint}", "--dial-timeout", "2s", "--command-timeout", "4s", *args)


def last_error(o: Out) -> str:
    return o.err.strip().splitlines()[-1]


def both(pair: list[ServerProcess], *args: str) -> Out:
    """Run on rusd and etcd; they must agree (stdout, exit code, the final error line)."""
    r, e = (ctl(s, *args) for s in pair)
    assert (r.rc, r.out) == (e.rc, e.out), (r, e)
    if r.rc != 0:
        assert last_error(r) == last_error(e), (r.err, e.err)
    return r


def server_tls(pki: PKI) -> tuple[str, ...]:
    return ("--cert-file", str(pki.server.cert), "--key-file", str(pki.server.key))


def test_put_get_over_tls(pki: PKI, servers: Callable[..., list[ServerProcess]]) -> None:
    pair = servers(server_tls(pki), tls_probe(pki.ca.path))
    cacert = ("--cacert", str(pki.ca.path))
    assert both(pair, *cacert, "put", "tls/a", "1").out == "OK\n"
    assert both(pair, *cacert, "get", "tls/a").lines == ["tls/a", "1"]
    # No client certificate is asked for without --client-cert-auth or --trusted-ca-file.
    client = ("--cert", str(pki.client.cert), "--key", str(pki.client.key))
    assert both(pair, *cacert, *client, "get", "tls/a", "--print-value-only").lines == ["1"]
    # The server is verified: a client trusting another CA does not connect.
    refused = both(pair, "--cacert", str(pki.other_ca.path), "get", "tls/a")
    assert refused.rc == 1 and last_error(refused) == "Error: context deadline exceeded"


def test_advertised_https_url_is_published(pki: PKI, servers: Callable[..., list[ServerProcess]]) -> None:
    pair = servers(server_tls(pki), tls_probe(pki.ca.path))
    for server in pair:
        out = ctl(server, "--cacert", str(pki.ca.path), "member", "list")
        assert out.rc == 0, out
        assert f", https://{server.endpoint}, " in out.out


@pytest.mark.parametrize("flag", ["--client-cert-auth", "--trusted-ca-file"])
def test_client_certificate_is_required(pki: PKI, servers: Callable[..., list[ServerProcess]], flag: str) -> None:
    # etcd requires (and verifies) a client certificate as soon as a trusted CA is given,
    # with or without --client-cert-auth.
    flags = (*server_tls(pki), "--trusted-ca-file", str(pki.ca.path))
    if flag == "--client-cert-auth":
        flags = (*flags, flag)
    pair = servers(flags, tls_probe(pki.ca.path, pki.client))
    cacert = ("--cacert", str(pki.ca.path))
    client = ("--cert", str(pki.client.cert), "--key", str(pki.client.key))
    assert both(pair, *cacert, *client, "put", "mtls/a", "1").out == "OK\n"
    refused = both(pair, *cacert, "put", "mtls/b", "1")
    assert refused.rc == 1 and last_error(refused) == "Error: context deadline exceeded"
    assert both(pair, *cacert, *client, "get", "mtls/", "--prefix", "--keys-only").lines == ["mtls/a", ""]


def test_auto_tls_with_insecure_skip_verify(servers: Callable[..., list[ServerProcess]]) -> None:
    pair = servers(("--auto-tls",), auto_tls_probe)
    # etcdctl 3.4 only uses TLS when given a CA or certificate, or --insecure-transport=false:
    # --insecure-skip-tls-verify alone still dials in plaintext, against etcd too.
    skip = ("--insecure-transport=false", "--insecure-skip-tls-verify")
    assert both(pair, *skip, "put", "auto/a", "1").out == "OK\n"
    assert both(pair, *skip, "get", "auto/a", "--print-value-only").lines == ["1"]
    plaintext = both(pair, "--insecure-skip-tls-verify", "get", "auto/a")
    assert plaintext.rc == 1 and last_error(plaintext) == "Error: context deadline exceeded"
    # The certificate is self-signed: verifying it fails.
    verified = both(pair, "--insecure-transport=false", "get", "auto/a")
    assert verified.rc == 1
    for server in pair:
        fixtures = server.data_dir / "fixtures" / "client"
        assert sorted(p.name for p in fixtures.iterdir()) == ["cert.pem", "key.pem"]
        assert (fixtures / "key.pem").stat().st_mode & 0o777 == 0o600


def test_auto_tls_certificate_is_reused_after_restart(servers: Callable[..., list[ServerProcess]]) -> None:
    pair = servers(("--auto-tls",), auto_tls_probe)
    skip = ("--insecure-transport=false", "--insecure-skip-tls-verify")
    for server in pair:
        first = server_certificate(server.endpoint)
        assert ctl(server, *skip, "put", "auto/r", "1").rc == 0
        server.stop()
        server.start()
        assert server_certificate(server.endpoint) == first
        assert ctl(server, *skip, "get", "auto/r", "--print-value-only").lines == ["1"]


def _tls12_handshake(endpoint: str, ca: Path, cipher: str) -> str | None:
    """The cipher a TLS 1.2 handshake offering only `cipher` settles on, or None if refused."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    ctx.set_alpn_protocols(["h2"])
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock, ctx.wrap_socket(
            sock, server_hostname=host
        ) as tls:
            got = tls.cipher()
            return None if got is None else got[0]
    except ssl.SSLError:
        return None


def test_cipher_suites_restrict_tls12(pki: PKI, servers: Callable[..., list[ServerProcess]]) -> None:
    flags = (*server_tls(pki), "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
    pair = servers(flags, tls_probe(pki.ca.path))
    for server in pair:
        assert _tls12_handshake(server.endpoint, pki.ca.path, "ECDHE-ECDSA-AES128-GCM-SHA256") == (
            "ECDHE-ECDSA-AES128-GCM-SHA256"
        ), server.argv[0]
        assert _tls12_handshake(server.endpoint, pki.ca.path, "ECDHE-ECDSA-AES256-GCM-SHA384") is None, server.argv[0]
    # TLS 1.3 (which etcdctl negotiates) is not restricted by the list, in Go or in gRPC.
    assert both(pair, "--cacert", str(pki.ca.path), "put", "cipher/a", "1").out == "OK\n"


def test_unrestricted_server_accepts_other_tls12_suites(pki: PKI, servers: Callable[..., list[ServerProcess]]) -> None:
    pair = servers(server_tls(pki), tls_probe(pki.ca.path))
    for server in pair:
        assert _tls12_handshake(server.endpoint, pki.ca.path, "ECDHE-ECDSA-AES256-GCM-SHA384") == (
            "ECDHE-ECDSA-AES256-GCM-SHA384"
        )



def test_client_certificate_common_name_is_the_user_when_auth_is_on(
    pki: PKI, servers: Callable[..., list[ServerProcess]]
) -> None:
    # With --client-cert-auth, a caller that sends no token is the user its certificate
    # names (CN "alice"), as etcd's AuthInfoFromTLS.
    flags = (*server_tls(pki), "--trusted-ca-file", str(pki.ca.path), "--client-cert-auth")
    pair = servers(flags, tls_probe(pki.ca.path, pki.client))
    alice = ("--cacert", str(pki.ca.path), "--cert", str(pki.client.cert), "--key", str(pki.client.key))
    for args in (
        ("user", "add", "root", "--new-user-password=rootpw"),
        ("user", "add", "alice", "--new-user-password=alicepw"),
        ("role", "add", "k-writer"),
        ("role", "grant-permission", "k-writer", "readwrite", "k"),
        ("user", "grant-role", "alice", "k-writer"),
        ("auth", "enable"),
    ):
        assert both(pair, *alice, *args).rc == 0
    assert both(pair, *alice, "put", "k", "v").out == "OK\n"
    denied = both(pair, *alice, "put", "other", "v")
    assert denied.rc == 1 and last_error(denied) == "Error: etcdserver: permission denied"
    assert both(pair, *alice, "get", "k").lines == ["k", "v"]
