"""Test PKI built with `cryptography`: a CA, a server certificate for 127.0.0.1/localhost,
client certificates (good, from another CA, revoked) and a CRL, written as PEM files;
plus readiness probes for servers listening with TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate and its key on disk."""

    cert: Path
    key: Path
    serial: int


@dataclass(frozen=True)
class CA:
    name: str
    key: Key
    cert: x509.Certificate
    path: Path  # the CA certificate (PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(key: Key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def make_ca(directory: Path, name: str) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(name, key, cert, path)


def issue(ca: CA, directory: Path, name: str, common_name: str, *, server: bool = False) -> Issued:
    """A leaf certificate signed by `ca`; server certificates carry 127.0.0.1/localhost SANs."""
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return Issued(cert_path, key_path, serial)


def write_crl(ca: CA, path: Path, revoked_serials: list[int]) -> Path:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(_now() - datetime.timedelta(days=1))
        .next_update(_now() + datetime.timedelta(days=30))
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_now()).build()
        )
    path.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class PKI:
    """Everything the TLS tests need, in one directory."""

    ca: CA
    other_ca: CA
    server: Issued
    client: Issued  # CN "alice", signed by `ca`
    stranger: Issued  # CN "alice", signed by `other_ca`
    revoked: Issued  # CN "mallory", signed by `ca`, listed in `crl`
    crl: Path


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    revoked = issue(ca, directory, "revoked", "mallory")
    return PKI(
        ca=ca,
        other_ca=other,
        server=issue(ca, directory, "server", "server", server=True),
        client=issue(ca, directory, "client", "alice"),
        stranger=issue(other, directory, "stranger", "alice"),
        revoked=revoked,
        crl=write_crl(ca, directory / "ca.crl", [revoked.serial]),
    )


def channel_credentials(ca: Path | bytes, client: Issued | None = None) -> grpc.ChannelCredentials:
    roots = ca if isinstance(ca, bytes) else ca.read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(roots)
    return grpc.ssl_channel_credentials(roots, client.key.read_bytes(), client.cert.read_bytes())


def range_once(endpoint: str, credentials: grpc.ChannelCredentials, key: bytes = b"health") -> pb.RangeResponse:
    with grpc.secure_channel(endpoint, credentials) as ch:
        response: pb.RangeResponse = pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=key), timeout=2)
        return response


def tls_probe(ca: Path, client: Issued | None = None) -> Callable[[str], None]:
    """A ServerProcess probe for a TLS listener whose certificate `ca` signed."""
    credentials = channel_credentials(ca, client)

    def probe(endpoint: str) -> None:
        range_once(endpoint, credentials)

    return probe


def server_certificate(endpoint: str) -> bytes:
    """The certificate a TLS server presents, unverified (self-signed --auto-tls ones)."""
    host, port = endpoint.rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port)), timeout=2).encode()


def auto_tls_probe(endpoint: str) -> None:
    """A ServerProcess probe for --auto-tls: a completed TLS handshake (both servers only
    handshake once serving). Not a gRPC call: etcd's self-signed P-521 certificate needs a
    signature algorithm gRPC's BoringSSL client does not offer."""
    server_certificate(endpoint)
