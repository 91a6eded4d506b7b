"""Bad TLS input, against rusd and a real etcd started with the same flags.

Clients without the right credentials (plaintext, no certificate, a certificate from
another CA, a revoked one) are refused, nothing they sent is written, and the server
keeps serving good clients. Bad TLS start-up flags make both servers exit 1 with the
same error text.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.certs import PKI, channel_credentials, make_pki, range_once, tls_probe, write_crl
from tests.conformance.harness import ETCD_FAST, Out, require_etcd, run_etcdctl
from tests.servers import ServerProcess, etcd, rusd

KINDS = ("rusd", "etcd")
DEADLINE = "Error: context deadline exceeded"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    require_etcd()
    return make_pki(tmp_path_factory.mktemp("pki"))


def mtls_flags(pki: PKI, crl: Path) -> tuple[str, ...]:
    return (
        "--cert-file", str(pki.server.cert), "--key-file", str(pki.server.key),
        "--trusted-ca-file", str(pki.ca.path), "--client-cert-auth", "--client-crl-file", str(crl),
    )


def start(kind: str, tmp: Path, flags: tuple[str, ...], pki: PKI) -> ServerProcess:
    directory = tmp / kind
    directory.mkdir(exist_ok=True)
    probe = tls_probe(pki.ca.path, pki.client)
    if kind == "rusd":
        return rusd(directory, *flags, scheme="https", probe=probe).start()
    return etcd(directory, *ETCD_FAST, *flags, scheme="https", probe=probe).start()


@pytest.fixture(scope="module")
def servers(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("mtls")
    started: dict[str, ServerProcess] = {}
    try:
        for kind in KINDS:
            started[kind] = start(kind, tmp, mtls_flags(pki, pki.crl), pki)
        yield started
    finally:
        for server in started.values():
            server.stop()


def ctl(url: str, *args: str) -> Out:
    return run_etcdctl(url, "--dial-timeout", "2s", "--command-timeout", "4s", *args)


def good(pki: PKI) -> tuple[str, ...]:
    return ("--cacert", str(pki.ca.path), "--cert", str(pki.client.cert), "--key", str(pki.client.key))


def refused_args(pki: PKI, case: str) -> tuple[str, tuple[str, ...]]:
    """(URL scheme, etcdctl TLS flags) of each kind of bad client."""
    cacert = ("--cacert", str(pki.ca.path))
    return {
        "plaintext": ("http", ()),
        "no-client-cert": ("https", cacert),
        "other-ca": ("https", (*cacert, "--cert", str(pki.stranger.cert), "--key", str(pki.stranger.key))),
        "revoked": ("https", (*cacert, "--cert", str(pki.revoked.cert), "--key", str(pki.revoked.key))),
    }[case]


@pytest.mark.parametrize("case", ["plaintext", "no-client-cert", "other-ca", "revoked"])
def test_bad_client_is_refused_and_nothing_is_written(
    pki: PKI, servers: dict[str, ServerProcess], case: str
) -> None:
    scheme, flags = refused_args(pki, case)
    errors = {}
    for kind, server in servers.items():
        key = f"bad/{case}"
        out = ctl(f"{scheme}://{server.endpoint}", *flags, "put", key, "x")
        assert out.rc == 1 and out.out == "", (kind, out)
        errors[kind] = out.err.strip().splitlines()[-1]
        url = f"https://{server.endpoint}"
        assert ctl(url, *good(pki), "get", key).out == "", kind  # nothing written
        assert ctl(url, *good(pki), "put", f"good/{case}", "1").out == "OK\n", kind  # still serving
    assert errors["etcd"] == DEADLINE
    if case == "revoked":
        # etcd drops the connection right after the handshake; rusd (grpcio has no CRL hook)
        # refuses the first RPC with etcd's reason, which etcdctl prints.
        serial = pki.revoked.serial.to_bytes((pki.revoked.serial.bit_length() + 7) // 8, "big").hex()
        reason = f"transport: certificate serial {serial} revoked"
        assert errors["rusd"] == f"Error: rpc error: code = Unavailable desc = {reason}"
    else:
        assert errors["rusd"] == DEADLINE


@pytest.mark.parametrize("kind", KINDS)
def test_revoked_certificate_gets_unavailable_on_unary_and_streams(
    pki: PKI, servers: dict[str, ServerProcess], kind: str
) -> None:
    endpoint = servers[kind].endpoint
    revoked = channel_credentials(pki.ca.path, pki.revoked)
    with pytest.raises(grpc.RpcError) as unary:
        range_once(endpoint, revoked)
    assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(endpoint, revoked) as ch:
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"bad/"))
        with pytest.raises(grpc.RpcError) as stream:
            next(iter(pb_grpc.WatchStub(ch).Watch(iter([create]), timeout=5)))
    assert stream.value.code() == grpc.StatusCode.UNAVAILABLE
    if kind == "rusd":
        assert "revoked" in (unary.value.details() or "")
    assert range_once(endpoint, channel_credentials(pki.ca.path, pki.client)).header.revision > 0


@pytest.mark.parametrize("kind", KINDS)
def test_crl_file_is_reread_when_it_changes(pki: PKI, tmp_path: Path, kind: str) -> None:
    crl = write_crl(pki.ca, tmp_path / "live.crl", [])
    server = start(kind, tmp_path, mtls_flags(pki, crl), pki)
    try:
        url = f"https://{server.endpoint}"
        _, revoked = refused_args(pki, "revoked")
        assert ctl(url, *revoked, "put", "crl/a", "1").out == "OK\n"
        write_crl(pki.ca, crl, [pki.revoked.serial])
        assert ctl(url, *revoked, "put", "crl/b", "1").rc == 1
        assert ctl(url, *good(pki), "get", "crl/", "--prefix", "--keys-only").lines == ["crl/a", ""]
    finally:
        server.stop()


# --------------------------------------------------------------------------- start-up


def _startup_cases(pki: PKI, tmp: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    """flags -> etcd's error text. `{peer}` in the text is replaced by the peer address."""
    cert, key = str(pki.server.cert), str(pki.server.key)
    missing = str(tmp / "missing.pem")
    a_dir = tmp / "a-directory"
    a_dir.mkdir(exist_ok=True)
    garbage = tmp / "garbage.pem"
    garbage.write_text("garbage\n")
    wrong_key = str(pki.client.key)
    https = ("--listen-client-urls", "https://127.0.0.1:{port}", "--advertise-client-urls", "https://127.0.0.1:{port}")
    return {
        "https-without-certs": (
            https, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:{port} "
            "with HTTPS scheme",
        ),
        "missing-cert-file": ((*https, "--cert-file", missing, "--key-file", key), f"open {missing}: no such file"),
        "missing-key-file": ((*https, "--cert-file", cert, "--key-file", missing), f"open {missing}: no such file"),
        "unreadable-key": ((*https, "--cert-file", cert, "--key-file", str(a_dir)), f"read {a_dir}: is a directory"),
        "key-does-not-match": (
            (*https, "--cert-file", cert, "--key-file", wrong_key), "tls: private key does not match public key"
        ),
        "garbage-key": (
            (*https, "--cert-file", cert, "--key-file", str(garbage)), "tls: failed to find any PEM data in key input"
        ),
        "cert-without-key": (
            (*https, "--cert-file", cert), f"KeyFile and CertFile must both be present[key: , cert: {cert}]"
        ),
        "missing-trusted-ca": (
            (*https, "--cert-file", cert, "--key-file", key, "--trusted-ca-file", missing),
            f"open {missing}: no such file",
        ),
        "unknown-cipher-suite": (
            (*https, "--cert-file", cert, "--key-file", key, "--cipher-suites", "TLS_FOO"),
            'unexpected TLS cipher suite "TLS_FOO"',
        ),
        "https-peer-without-certs": (
            ("--listen-peer-urls", "https://{peer}"),
            "cannot listen on TLS for {peer}: KeyFile and CertFile are not presented",
        ),
        "missing-peer-cert": (("--peer-cert-file", missing, "--peer-key-file", key), f"open {missing}: no such file"),
        "peer-key-does-not-match": (
            ("--peer-cert-file", cert, "--peer-key-file", wrong_key), "tls: private key does not match public key"
        ),
    }


CASE_NAMES = [
    "https-without-certs", "missing-cert-file", "missing-key-file", "unreadable-key", "key-does-not-match",
    "garbage-key", "cert-without-key", "missing-trusted-ca", "unknown-cipher-suite", "https-peer-without-certs",
    "missing-peer-cert", "peer-key-does-not-match",
]


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_tls_flags_stop_the_server(pki: PKI, tmp_path: Path, kind: str, case: str) -> None:
    flags, message = _startup_cases(pki, tmp_path)[case]
    process = rusd(tmp_path) if kind == "rusd" else etcd(tmp_path, *ETCD_FAST)
    port = process.endpoint.rsplit(":", 1)[1]
    peer = next(a for a in process.argv if a.startswith("default=http://")).removeprefix("default=http://")
    argv = [*process.argv, *(f.format(port=port, peer=peer) for f in flags)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert message.format(port=port, peer=peer) in output, output
    assert "Traceback" not in output
    if kind == "rusd":
        assert not (process.data_dir / "member").exists()  # refused before touching the data dir
    shutil.rmtree(process.data_dir, ignore_errors=True)
