"""rusd.server.tls and tls_settings: auto-TLS certificates, file checks with etcd's
messages, cipher-suite names, the CRL, and gRPC credentials for clients and peers."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rusd.server import tls
from rusd.server.config import ServerConfig, parse_config
from rusd.server.tls_settings import GRPC_CIPHER_ENV, TLSInfo, export_cipher_suites, grpc_cipher_list
from tests.certs import PKI, make_pki, write_crl
from tests.servers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def info(pki: PKI, **extra: Any) -> TLSInfo:
    return TLSInfo(cert_file=str(pki.server.cert), key_file=str(pki.server.key), **extra)


# --------------------------------------------------------------------------- auto TLS


def test_self_cert_is_made_like_etcds_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "fixtures" / "client"
    made = tls.self_cert(str(directory), ["127.0.0.1", "localhost", "::1"])
    assert made == TLSInfo(str(directory / "cert.pem"), str(directory / "key.pem"), self_signed=True)
    cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "etcd"
    assert cert.issuer == cert.subject
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=365)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (directory / "key.pem").read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    tls.load(made)  # the pair matches

    before = (directory / "cert.pem").read_bytes(), (directory / "key.pem").read_bytes()
    assert tls.self_cert(str(directory), ["10.0.0.1"]) == made
    assert ((directory / "cert.pem").read_bytes(), (directory / "key.pem").read_bytes()) == before


def test_self_cert_is_remade_when_a_file_is_missing(tmp_path: Path) -> None:
    tls.self_cert(str(tmp_path), ["127.0.0.1"])
    old = (tmp_path / "cert.pem").read_bytes()
    (tmp_path / "key.pem").unlink()
    tls.self_cert(str(tmp_path), ["127.0.0.1"])
    assert (tmp_path / "cert.pem").read_bytes() != old
    tls.load(TLSInfo(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))


def test_peer_self_cert_can_also_act_as_a_client(tmp_path: Path) -> None:
    made = tls.self_cert(str(tmp_path), ["127.0.0.1"], client_auth=True)
    cert = x509.load_pem_x509_certificate(Path(made.cert_file).read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_self_cert_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(tls.TLSError, match=r"^cannot create cert directory: mkdir .*/file/fixtures: not a directory$"):
        tls.self_cert(str(tmp_path / "file" / "fixtures"), ["127.0.0.1"])


# --------------------------------------------------------------------------- loading


def test_load_reads_the_files(pki: PKI) -> None:
    material = tls.load(info(pki, trusted_ca_file=str(pki.ca.path)))
    assert material.certificate_chain == pki.server.cert.read_bytes()
    assert material.private_key == pki.server.key.read_bytes()
    assert material.trusted_ca == pki.ca.path.read_bytes()


def test_load_errors_are_etcds(pki: PKI, tmp_path: Path) -> None:
    cert, key = str(pki.server.cert), str(pki.server.key)
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage")
    bad_key = tmp_path / "bad-key.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    crl_garbage = tmp_path / "crl.pem"
    crl_garbage.write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    cases = [
        (TLSInfo(cert_file=cert), f"KeyFile and CertFile must both be present[key: , cert: {cert}]"),
        (TLSInfo(key_file=key), f"KeyFile and CertFile must both be present[key: {key}, cert: ]"),
        (TLSInfo(cert_file=missing, key_file=key), f"open {missing}: no such file or directory"),
        (TLSInfo(cert_file=cert, key_file=missing), f"open {missing}: no such file or directory"),
        (TLSInfo(cert_file=cert, key_file=str(tmp_path)), f"read {tmp_path}: is a directory"),
        (TLSInfo(cert_file=str(garbage), key_file=key), "tls: failed to find any PEM data in certificate input"),
        (TLSInfo(cert_file=cert, key_file=str(garbage)), "tls: failed to find any PEM data in key input"),
        (TLSInfo(cert_file=cert, key_file=str(bad_key)), "tls: failed to parse private key"),
        (TLSInfo(cert_file=cert, key_file=str(pki.client.key)), "tls: private key does not match public key"),
        (info(pki, trusted_ca_file=missing), f"open {missing}: no such file or directory"),
        (info(pki, trusted_ca_file=str(garbage)), f"x509: no certificate found in {garbage}"),
        (info(pki, crl_file=missing), f"open {missing}: no such file or directory"),
        (info(pki, crl_file=str(crl_garbage)), f"x509: cannot parse CRL {crl_garbage}: "),
    ]
    for settings, message in cases:
        with pytest.raises(tls.TLSError) as e:
            tls.load(settings)
        assert str(e.value).startswith(message), (settings, str(e.value))


def test_a_trusted_ca_alone_requires_client_certificates() -> None:
    assert not TLSInfo(cert_file="c", key_file="k").requires_client_cert
    assert TLSInfo(cert_file="c", key_file="k", trusted_ca_file="ca").requires_client_cert
    assert TLSInfo(cert_file="c", key_file="k", client_cert_auth=True).requires_client_cert
    assert TLSInfo(cert_file="c").empty is False and TLSInfo().empty


# --------------------------------------------------------------------------- cipher suites


def test_cipher_suite_names_map_to_boringssl() -> None:
    assert grpc_cipher_list([]) == ""
    assert grpc_cipher_list(
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",  # the same suite
            "TLS_AES_128_GCM_SHA256",  # TLS 1.3: accepted, restricts nothing
        ]
    ) == "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"


def test_cipher_suite_refusals() -> None:
    with pytest.raises(ValueError, match=r'^unexpected TLS cipher suite "TLS_FOO"$'):
        grpc_cipher_list(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_FOO"])
    with pytest.raises(ValueError, match=r'^unexpected TLS cipher suite ""$'):
        grpc_cipher_list([""])
    with pytest.raises(ValueError, match=r"TLS_RSA_WITH_RC4_128_SHA.*not supported by rusd"):
        grpc_cipher_list(["TLS_RSA_WITH_RC4_128_SHA"])
    with pytest.raises(ValueError, match=r"only TLS 1\.3 suites"):
        grpc_cipher_list(["TLS_AES_256_GCM_SHA384"])


def test_cipher_suites_are_exported_before_grpc_loads() -> None:
    env: dict[str, str] = {}
    export_cipher_suites((), env, grpc_loaded=True)
    assert env == {}
    export_cipher_suites(("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",), env, grpc_loaded=False)
    assert env == {GRPC_CIPHER_ENV: "ECDHE-ECDSA-AES128-GCM-SHA256"}
    with pytest.raises(RuntimeError, match="before grpc is imported"):
        export_cipher_suites(("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",), {}, grpc_loaded=True)


# --------------------------------------------------------------------------- CRL


def test_revocation_list(pki: PKI, tmp_path: Path) -> None:
    path = write_crl(pki.ca, tmp_path / "ca.crl", [])
    crl = tls.RevocationList(str(path))
    revoked_pem = pki.revoked.cert.read_bytes()
    assert crl.refusal(revoked_pem) is None
    write_crl(pki.ca, path, [pki.client.serial, pki.revoked.serial])
    os.utime(path, ns=(1, 1))  # a different stamp even within the clock's resolution
    serial = pki.revoked.serial.to_bytes((pki.revoked.serial.bit_length() + 7) // 8, "big").hex()
    assert crl.refusal(revoked_pem) == f"transport: certificate serial {serial} revoked"
    assert crl.refusal(pki.server.cert.read_bytes()) is None
    path.unlink()
    assert crl.refusal(revoked_pem) == f"open {path}: no such file or directory"


def test_revocation_list_reads_der_and_names_serials_like_go(pki: PKI, tmp_path: Path) -> None:
    pem = write_crl(pki.ca, tmp_path / "pem.crl", [0x0ABC])
    der = tmp_path / "der.crl"
    der.write_bytes(x509.load_pem_x509_crl(pem.read_bytes()).public_bytes(serialization.Encoding.DER))
    assert tls.RevocationList(str(der)).load() == frozenset({0x0ABC})
    assert tls._go_serial_hex(0x0ABC) == "0abc"  # Go prints whole bytes


# --------------------------------------------------------------------------- gRPC


def _identity(b: bytes) -> bytes:
    return b


class _Seen:
    names: list[str | None]

    def __init__(self) -> None:
        self.names = []


def _echo_handler(seen: _Seen) -> grpc.GenericRpcHandler:
    async def who(request: bytes, context: tls.Context) -> bytes:
        seen.names.append(tls.peer_common_name(context))
        return request

    async def many(request: bytes, context: tls.Context) -> AsyncIterator[bytes]:
        for _ in range(2):
            yield request

    return grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who, _identity, _identity),
            "Many": grpc.unary_stream_rpc_method_handler(many, _identity, _identity),
        },
    )


Scenario = Callable[[str], Awaitable[None]]


def _serve(material: tls.TLSMaterial, seen: _Seen, scenario: Scenario, crl: Path | None = None) -> None:
    async def main() -> None:
        interceptors = [] if crl is None else [tls.RevocationCheck(tls.RevocationList(str(crl)))]
        server = grpc.aio.server(interceptors=interceptors)
        server.add_generic_rpc_handlers([_echo_handler(seen)])
        port = server.add_secure_port("127.0.0.1:0", material.server_credentials())
        await server.start()
        try:
            await scenario(f"127.0.0.1:{port}")
        finally:
            await server.stop(None)

    asyncio.run(main())


async def _who(endpoint: str, creds: grpc.ChannelCredentials) -> bytes:
    async with grpc.aio.secure_channel(endpoint, creds) as ch:
        reply: bytes = await ch.unary_unary("/test.Echo/Who")(b"hi", timeout=5)
        return reply


async def _many(endpoint: str, creds: grpc.ChannelCredentials) -> list[bytes]:
    async with grpc.aio.secure_channel(endpoint, creds) as ch:
        return [r async for r in ch.unary_stream("/test.Echo/Many")(b"x", timeout=5)]


def _creds(pki: PKI, client: Any = None) -> grpc.ChannelCredentials:
    roots = pki.ca.path.read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(roots)
    return grpc.ssl_channel_credentials(roots, client.key.read_bytes(), client.cert.read_bytes())


def test_mtls_gives_the_verified_common_name(pki: PKI) -> None:
    material = tls.load(info(pki, trusted_ca_file=str(pki.ca.path), client_cert_auth=True))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        assert await _who(endpoint, _creds(pki, pki.client)) == b"hi"
        for refused in (None, pki.stranger):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _who(endpoint, _creds(pki, refused))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    _serve(material, seen, scenario)
    assert seen.names == ["alice"]


def test_client_cert_auth_without_a_ca_trusts_only_the_system_roots(pki: PKI) -> None:
    material = tls.load(info(pki, client_cert_auth=True))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _who(endpoint, _creds(pki, pki.client))  # our test CA is no system root
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    _serve(material, seen, scenario)
    assert seen.names == []


def test_no_client_certificate_no_common_name(pki: PKI) -> None:
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        assert await _who(endpoint, _creds(pki, pki.client)) == b"hi"  # offered, not asked for
        assert await _who(endpoint, _creds(pki)) == b"hi"

    _serve(tls.load(info(pki)), seen, scenario)
    assert seen.names == [None, None]


def test_revoked_certificate_is_refused_on_every_rpc_kind(pki: PKI) -> None:
    material = tls.load(info(pki, trusted_ca_file=str(pki.ca.path), client_cert_auth=True, crl_file=str(pki.crl)))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        revoked = _creds(pki, pki.revoked)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await _who(endpoint, revoked)
        assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
        assert unary.value.details().endswith(" revoked")
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await _many(endpoint, revoked)
        assert stream.value.code() == grpc.StatusCode.UNAVAILABLE
        good = _creds(pki, pki.client)
        assert await _who(endpoint, good) == b"hi"
        assert await _many(endpoint, good) == [b"x", b"x"]

    _serve(material, seen, scenario, crl=pki.crl)
    assert seen.names == ["alice"]


def test_peer_credentials_with_a_trusted_ca(pki: PKI) -> None:
    """Peers present their own certificate as clients and verify each other with the CA."""
    peer = tls.load(info(pki, trusted_ca_file=str(pki.ca.path), client_cert_auth=True))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        assert await _who(endpoint, peer.channel_credentials()) == b"hi"

    _serve(peer, seen, scenario)
    assert seen.names == ["server"]


def test_peer_credentials_with_auto_tls(tmp_path: Path) -> None:
    """Self-signed peers: trust exactly the certificate the other member presents."""
    server_side = tls.load(tls.self_cert(str(tmp_path / "a"), ["127.0.0.1"], client_auth=True))
    client_side = tls.load(tls.self_cert(str(tmp_path / "b"), ["127.0.0.1"], client_auth=True))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        remote = await tls.fetch_server_certificate(host, int(port))
        assert remote == Path(server_side.info.cert_file).read_bytes()
        assert await _who(endpoint, client_side.channel_credentials(server_certificate=remote)) == b"hi"
        with pytest.raises(grpc.aio.AioRpcError):
            await _who(endpoint, client_side.channel_credentials())  # no CA, system roots: refused

    _serve(server_side, seen, scenario)
    assert seen.names == [None]


def _self_signed(hosts: list[str]) -> bytes:
    cert, _key = tls._generate_self_signed(hosts, True)
    return cert


@pytest.mark.parametrize(
    ("hosts", "dialled", "override"),
    [
        (["127.0.0.1"], "127.0.0.1", None),
        (["::1", "127.0.0.1"], "127.0.0.1", None),
        (["LocalHost"], "localhost", None),
        (["0.0.0.0"], "127.0.0.1", "0.0.0.0"),  # listening on every address, dialled at one
        (["10.0.0.1", "node1.example"], "127.0.0.1", "10.0.0.1"),
        (["node1.example"], "127.0.0.1", "node1.example"),
    ],
)
def test_a_pinned_certificate_is_checked_against_a_name_it_carries(
    hosts: list[str], dialled: str, override: str | None
) -> None:
    assert tls.name_override(dialled, _self_signed(hosts)) == override


def test_pinning_trusts_exactly_the_certificate_presented(tmp_path: Path) -> None:
    """The self-signed server listens on 0.0.0.0 (its certificate names that) and is
    dialled at 127.0.0.1; pinned credentials for another certificate are refused."""
    server_side = tls.load(tls.self_cert(str(tmp_path / "a"), ["0.0.0.0"], client_auth=True))
    pinner = tls.CertificatePinner(tls.load(tls.self_cert(str(tmp_path / "b"), ["127.0.0.1"], client_auth=True)))
    seen = _Seen()

    async def scenario(endpoint: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        pinned = await pinner.pin(host, int(port), 5.0)
        assert pinned.certificate == Path(server_side.info.cert_file).read_bytes()
        assert pinned.options == (("grpc.ssl_target_name_override", "0.0.0.0"),)
        async with grpc.aio.secure_channel(endpoint, pinned.credentials, options=pinned.options) as ch:
            assert await ch.unary_unary("/test.Echo/Who")(b"hi", timeout=5) == b"hi"
        stale = pinner.pinned(host, _self_signed(["0.0.0.0"]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with grpc.aio.secure_channel(endpoint, stale.credentials, options=stale.options) as ch:
                await ch.unary_unary("/test.Echo/Who")(b"hi", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    _serve(server_side, seen, scenario)
    assert seen.names == [None]


def test_fetching_from_nothing_or_from_plaintext_fails_as_unreachable() -> None:
    async def main() -> None:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            with pytest.raises(OSError):  # no TLS handshake
                await tls.fetch_server_certificate("127.0.0.1", port, 5.0)
        finally:
            await server.stop(None)
        with pytest.raises(ConnectionRefusedError):  # nothing listens there
            await tls.fetch_server_certificate("127.0.0.1", free_port(), 5.0)

    asyncio.run(main())


# --------------------------------------------------------------------------- prepare


def _config(tmp_path: Path, *argv: str) -> ServerConfig:
    return parse_config(["--data-dir", str(tmp_path / "data"), *argv], {}, warn=lambda _: None)


HTTPS = ("--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379")


def test_prepare_with_auto_tls_on_both_sides(tmp_path: Path) -> None:
    config = _config(tmp_path, *HTTPS, "--auto-tls", "--peer-auto-tls", "--client-cert-auth")
    prepared = tls.prepare(config)
    fixtures = tmp_path / "data" / "fixtures"
    assert prepared.client is not None and prepared.peer is not None
    assert prepared.client.info.cert_file == str(fixtures / "client" / "cert.pem")
    assert prepared.peer.info.cert_file == str(fixtures / "peer" / "cert.pem")
    # As in etcd, the generated TLSInfo replaces the flags' one: no client cert auth.
    assert not prepared.client.info.requires_client_cert and not prepared.client_cert_auth
    assert tls.prepare(config) == prepared  # the same files are reused


def test_peer_auto_tls_drops_peer_client_cert_auth_as_etcd_does(tmp_path: Path) -> None:
    """etcd 3.4 logs "client-cert-auth = false" for --peer-auto-tls --peer-client-cert-auth:
    the generated TLS info replaces the flags' one, so peers are not asked for client
    certificates (every one would be self-signed, and refused), and the CA is not read."""
    config = _config(tmp_path, "--peer-auto-tls", "--peer-client-cert-auth", "--peer-trusted-ca-file", "/nonexistent")
    prepared = tls.prepare(config)
    assert prepared.peer is not None
    peer = tmp_path / "data" / "fixtures" / "peer"
    assert prepared.peer.info == TLSInfo(str(peer / "cert.pem"), str(peer / "key.pem"), self_signed=True)
    assert not prepared.peer.info.requires_client_cert and prepared.peer.trusted_ca is None


def test_prepare_prefers_given_certificates_over_auto_tls(pki: PKI, tmp_path: Path) -> None:
    config = _config(
        tmp_path, *HTTPS, "--auto-tls", "--cert-file", str(pki.server.cert), "--key-file", str(pki.server.key),
        "--trusted-ca-file", str(pki.ca.path), "--client-cert-auth",
    )
    prepared = tls.prepare(config)
    assert prepared.client is not None and prepared.client.info.cert_file == str(pki.server.cert)
    assert prepared.client_cert_auth
    assert prepared.peer is None
    assert not (tmp_path / "data" / "fixtures").exists()


def test_prepare_ignores_client_files_without_an_https_url(tmp_path: Path) -> None:
    # etcd starts with unreadable client files if no client URL is https...
    config = _config(tmp_path, "--cert-file", "/nonexistent/c.pem", "--key-file", "/nonexistent/k.pem")
    assert tls.prepare(config) == tls.ServerTLS(client=None, peer=None)
    # ... but loads the peer files whenever they are given.
    config = _config(tmp_path, "--peer-cert-file", "/nonexistent/c.pem", "--peer-key-file", "/nonexistent/k.pem")
    with pytest.raises(tls.TLSError, match=r"^open /nonexistent/c\.pem: no such file or directory$"):
        tls.prepare(config)
