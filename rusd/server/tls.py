"""TLS for the client and peer listeners, the way etcd 3.4 sets it up.

- `prepare(config)` runs etcd's start-up steps in etcd's order: --peer-auto-tls /
  --auto-tls certificates (generated once into <data-dir>/fixtures/{peer,client} and
  reused), then loading and checking every file, with etcd's error messages.
- `TLSMaterial` turns the checked PEM bytes into grpc server or channel credentials.
- `CertificatePinner`: with self-signed peer TLS etcd does not verify its peers; grpcio
  cannot skip verification, so the certificate a peer presents is fetched unverified
  and pinned as the only root of the channel to it.
- `RevocationCheck` enforces --client-crl-file: grpcio has no CRL option, so the
  verified peer certificate (from the call's auth context) is looked up in the CRL
  before any handler runs; etcd refuses at the handshake, rusd on the first RPC.
- `peer_common_name(context)` is the verified client certificate's CommonName, the
  user name etcd's auth takes when no token is sent and --client-cert-auth is on.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rusd.server.config import URL, ServerConfig
from rusd.server.tls_settings import TLSInfo

log = logging.getLogger("rusd")

SELF_CERT_VALIDITY = datetime.timedelta(days=365)  # etcd 3.4's SelfCert: one year
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


class TLSError(Exception):
    """A TLS file or setting etcd would refuse at start-up; str() is etcd's message."""


# --------------------------------------------------------------------------- files


def read_file(path: str) -> bytes:
    """Read like Go's ioutil.ReadFile, failing with Go's error text."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise TLSError(f"read {path}: is a directory") from None
    except OSError as e:
        raise TLSError(f"open {path}: {(e.strerror or str(e)).lower()}") from None


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _check_key_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """Go's tls.X509KeyPair checks: PEM present, key parses, key matches the leaf cert."""
    if _PEM_CERT not in cert_pem:
        raise TLSError("tls: failed to find any PEM data in certificate input")
    certs = _pem_certificates(cert_pem)
    if not certs:
        raise TLSError("tls: failed to parse certificate: x509: malformed certificate")
    if b"-----BEGIN" not in key_pem or b"PRIVATE KEY-----" not in key_pem:
        raise TLSError("tls: failed to find any PEM data in key input")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TLSError("tls: failed to parse private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
        raise TLSError("tls: private key does not match public key")


def _system_roots() -> bytes:
    """The system CA bundle: Go verifies client certs against it when no CA file is given."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return read_file(path)
    raise TLSError("client certificate authentication needs --trusted-ca-file (no system CA bundle found)")


# --------------------------------------------------------------------------- material


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    """One side's checked PEM bytes (etcd's TLSInfo after ServerConfig succeeded)."""

    info: TLSInfo
    certificate_chain: bytes
    private_key: bytes
    trusted_ca: bytes | None  # PEM bundle of --(peer-)trusted-ca-file, if given

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: a trusted CA or client-cert-auth makes a verified client cert mandatory."""
        require = self.info.requires_client_cert
        roots = self.trusted_ca if self.trusted_ca is not None else (_system_roots() if require else None)
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=roots,
            require_client_auth=require,
        )

    def channel_credentials(self, server_certificate: bytes | None = None) -> grpc.ChannelCredentials:
        """Client side of a peer connection: present our certificate, verify the server
        against the trusted CA (or the system roots). etcd skips verification for
        self-signed peers; grpcio cannot, so pass the remote's own certificate as
        `server_certificate` (see CertificatePinner) to trust exactly it."""
        roots = server_certificate if server_certificate is not None else self.trusted_ca
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def load(info: TLSInfo) -> TLSMaterial:
    """etcd's TLSInfo.ServerConfig checks, in its order, with its messages."""
    if not info.key_file or not info.cert_file:
        raise TLSError(f"KeyFile and CertFile must both be present[key: {info.key_file}, cert: {info.cert_file}]")
    cert = read_file(info.cert_file)
    key = read_file(info.key_file)
    _check_key_pair(cert, key)
    trusted: bytes | None = None
    if info.trusted_ca_file:
        trusted = read_file(info.trusted_ca_file)
        if not _pem_certificates(trusted):
            raise TLSError(f"x509: no certificate found in {info.trusted_ca_file}")
    if info.crl_file:
        RevocationList(info.crl_file).load()
    return TLSMaterial(info, cert, key, trusted)


def _unverified_context() -> ssl.SSLContext:
    """A client context that accepts any server certificate (Go's InsecureSkipVerify)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # as gRPC offers: a peer listener may insist on it
    return context


_UNVERIFIED = _unverified_context()


async def fetch_server_certificate(host: str, port: int, timeout: float = 5.0) -> bytes:
    """The PEM certificate a TLS server presents, unverified (a self-signed peer's).

    Runs on the event loop without blocking it (asyncio's TLS), so a stopped peer holds
    no thread and closing the transport cancels the fetch. Raises OSError (refused,
    timed out, no TLS handshake) when the server cannot be reached: callers treat that
    as an unreachable peer.
    """
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(host, port, ssl=_UNVERIFIED, server_hostname=host)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.transport.abort()  # no close_notify round trip: nothing was sent
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def name_override(host: str, certificate: bytes) -> str | None:
    """The name gRPC must check a pinned certificate against, or None if `host` (the
    peer URL's) already matches it. Auto-TLS certificates name the hosts their member
    listens on (--listen-peer-urls), which need not be the host others dial (0.0.0.0,
    another address of the machine); a pinned certificate is trusted whatever it names,
    as etcd's InsecureSkipVerify trusts it, so check it against a name it carries."""
    cert = x509.load_pem_x509_certificate(certificate)
    try:
        san: x509.SubjectAlternativeName | None = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    ips = san.get_values_for_type(x509.IPAddress) if san is not None else []
    dns = san.get_values_for_type(x509.DNSName) if san is not None else []
    try:
        if ipaddress.ip_address(host) in ips:
            return None
    except ValueError:
        if host.lower() in (d.lower() for d in dns):
            return None
    names = [str(ip) for ip in ips] + [d for d in dns if "*" not in d]
    if names:
        return names[0]
    common = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return str(common[0]) if common else None


@dataclass(frozen=True, slots=True)
class PinnedCredentials:
    """Channel credentials that trust exactly one server certificate."""

    certificate: bytes  # the pinned PEM, to tell when the peer presents another one
    credentials: grpc.ChannelCredentials
    options: tuple[tuple[str, str], ...]  # grpc.ssl_target_name_override, when needed


class CertificatePinner:
    """How a member with self-signed peer TLS (--peer-auto-tls) dials other members.

    etcd's peer client skips verifying the remote's certificate when its own is
    self-signed (TLSInfo.ClientConfig sets InsecureSkipVerify); grpcio cannot skip
    verification, so the certificate the remote presents is fetched unverified and then
    pinned as the only root of the channel to it. Fetch again whenever a channel has to
    connect anew: a peer restarted with a new data dir presents a new certificate.
    """

    def __init__(self, material: TLSMaterial) -> None:
        self.material = material

    async def pin(self, host: str, port: int, timeout: float) -> PinnedCredentials:
        """Credentials for the server at host:port; raises OSError if it cannot be reached."""
        certificate = await fetch_server_certificate(host, port, timeout)
        return self.pinned(host, certificate)

    def pinned(self, host: str, certificate: bytes) -> PinnedCredentials:
        """Credentials trusting exactly `certificate` (PEM) for a server dialled as `host`."""
        override = name_override(host, certificate)
        return PinnedCredentials(
            certificate,
            self.material.channel_credentials(server_certificate=certificate),
            () if override is None else (("grpc.ssl_target_name_override", override),),
        )


# --------------------------------------------------------------------------- auto TLS


def self_cert(directory: str, hosts: Sequence[str], *, client_auth: bool = False) -> TLSInfo:
    """etcd's transport.SelfCert: reuse <dir>/cert.pem + key.pem, or create them.

    Organisation "etcd", one year, ServerAuth (plus ClientAuth when the certificate is
    also presented as a client, i.e. by peers), SANs from `hosts`. ECDSA P-256 where
    etcd uses P-521: gRPC's BoringSSL client offers no P-521 signature algorithm, so a
    P-521 certificate would lock out every gRPC client, rusd's own peers included.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise TLSError(f"cannot create cert directory: mkdir {e.filename}: {(e.strerror or str(e)).lower()}") from None
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        cert_pem, key_pem = _generate_self_signed(hosts, client_auth)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        log.info("created cert file %s and key file %s", cert_path, key_path)
    return TLSInfo(cert_file=cert_path, key_file=key_path, self_signed=True)


def _generate_self_signed(hosts: Sequence[str], client_auth: bool) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(128) or 1)
        .not_valid_before(now)
        .not_valid_after(now + SELF_CERT_VALIDITY)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _auto(info: TLSInfo, auto: bool, directory: str, urls: Sequence[URL], side: str, peer: bool) -> TLSInfo:
    """etcd's ClientSelfCert / PeerSelfCert. Like etcd, the generated TLSInfo replaces
    the flags' one whole, so --client-cert-auth, CA and CRL no longer apply to it."""
    if not auto:
        return info
    if not info.empty:
        log.warning("ignoring %s auto TLS since certs given", side)
        return info
    return self_cert(directory, [u.hostname for u in urls], client_auth=peer)


# --------------------------------------------------------------------------- start-up


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """What the listeners use: None where a side serves no TLS."""

    client: TLSMaterial | None
    peer: TLSMaterial | None

    @property
    def client_cert_auth(self) -> bool:
        """etcd's ServerConfig.ClientCertAuthEnabled: whether the CN may name the user."""
        return self.client is not None and self.client.info.client_cert_auth


def prepare(config: ServerConfig) -> ServerTLS:
    """Auto-TLS and file checks for both sides, in etcd's order (peer, then client).

    Peer TLS is loaded whenever peer certificates are given (etcd's servePeers), client
    TLS only when an https client URL listens (plain http URLs ignore the files, as etcd).
    """
    fixtures = os.path.join(config.data_dir, "fixtures")
    peer_info = _auto(config.peer_tls, config.peer_auto_tls, os.path.join(fixtures, "peer"),
                      config.listen_peer_urls, "peer", peer=True)
    client_info = _auto(config.client_tls, config.client_auto_tls, os.path.join(fixtures, "client"),
                        config.listen_client_urls, "client", peer=False)
    peer = None if peer_info.empty else load(peer_info)
    for url in config.listen_client_urls:
        if url.is_secure:
            continue
        if not client_info.empty:
            log.warning("scheme is HTTP while key and cert files are present; ignoring key and cert files "
                        "(client-url %s)", url)
        if client_info.client_cert_auth:
            log.warning("scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth "
                        "for this URL (client-url %s)", url)
    secure = any(url.is_secure for url in config.listen_client_urls)
    return ServerTLS(client=load(client_info) if secure else None, peer=peer)


# --------------------------------------------------------------------------- CRL


def _go_serial_hex(serial: int) -> str:
    """Go's %x of big.Int.Bytes(): the minimal big-endian bytes in hex."""
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex()


class RevocationList:
    """--client-crl-file, re-read when the file changes (etcd re-reads it per connection)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        self._serials: dict[bytes, int] = {}  # certificate PEM -> serial, bounded cache

    def load(self) -> frozenset[int]:
        """The revoked serial numbers; raises TLSError if the file cannot be read or parsed."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise TLSError(f"open {self.path}: {(e.strerror or str(e)).lower()}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            data = read_file(self.path)
            try:
                crl = (
                    x509.load_pem_x509_crl(data)
                    if b"-----BEGIN" in data
                    else x509.load_der_x509_crl(data)
                )
            except ValueError as e:
                raise TLSError(f"x509: cannot parse CRL {self.path}: {e}") from None
            self._revoked = frozenset(r.serial_number for r in crl)
            self._stamp = stamp
        return self._revoked

    def refusal(self, cert_pem: bytes) -> str | None:
        """Why a peer presenting this certificate is refused, or None if it is not revoked."""
        try:
            revoked = self.load()
        except TLSError as e:
            return str(e)
        serial = self._serials.get(cert_pem)
        if serial is None:
            serial = x509.load_pem_x509_certificate(cert_pem).serial_number
            if len(self._serials) >= 1024:
                self._serials.clear()
            self._serials[cert_pem] = serial
        if serial in revoked:
            return f"transport: certificate serial {_go_serial_hex(serial)} revoked"
        return None


Context = grpc.aio.ServicerContext[Any, Any]
Check = Callable[[Context], Awaitable[None]]


def _wrap(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    """`behavior` with `check` run first, keeping its shape (coroutine or async generator)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await check(context)
            async for item in behavior(request, context):
                yield item

        return stream

    async def call(request: Any, context: Context) -> Any:
        await check(context)
        return await behavior(request, context)

    return call


def guard_handler(handler: grpc.RpcMethodHandler[Any, Any], check: Check) -> grpc.RpcMethodHandler[Any, Any]:
    """The same RPC handler with `check` run before its behaviour, for all four RPC kinds."""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    for behavior, make in kinds:
        if behavior is not None:
            return make(
                _wrap(behavior, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class RevocationCheck(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every RPC from a client whose certificate serial is in the CRL, with
    etcd's reason ("transport: certificate serial <hex> revoked") as UNAVAILABLE: etcd
    drops such a connection after the handshake, which its clients see as unavailable."""

    def __init__(self, crl: RevocationList) -> None:
        self.crl = crl

    async def _check(self, context: Context) -> None:
        pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
        if pem is None:
            return
        reason = self.crl.refusal(pem)
        if reason is not None:
            log.info('rejected connection from "%s" (error "%s")', context.peer(), reason)
            await context.abort(grpc.StatusCode.UNAVAILABLE, reason)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guard_handler(handler, self._check)


def peer_common_name(context: Context) -> str | None:
    """The CommonName of the client certificate gRPC verified for this call, or None.

    gRPC only asks for (and verifies) client certificates when client certs are
    required, so a name here is always a verified one. etcd takes it as the user name
    only when no token is sent and ServerTLS.client_cert_auth is true.
    """
    name = next(iter(context.auth_context().get("x509_common_name", ())), None)
    return None if name is None else name.decode("utf-8", errors="replace")
