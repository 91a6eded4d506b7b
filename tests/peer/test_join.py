"""A joining member asks for the member list over the peer URLs, with the peer TLS
credentials when they are https (etcd's GET /members over its peer round tripper)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from rusd.api.rusdraftpb.raft_pb2_grpc import add_MembershipServicer_to_server
from rusd.core.cluster import MemberInfo
from rusd.server import tls
from rusd.server.config import ConfigError
from rusd.server.join import MembershipServicer, fetch_cluster
from tests.certs import channel_credentials, make_pki
from tests.servers import free_port


def test_joining_over_https_peer_urls_uses_the_peer_credentials(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    existing = f"https://127.0.0.1:{port}"
    joining = f"https://127.0.0.1:{free_port()}"
    members = (MemberInfo(0xA, "m1", (existing,), ()), MemberInfo(0xB, "", (joining,), ()))

    async def run() -> None:
        server = grpc.aio.server()
        add_MembershipServicer_to_server(MembershipServicer(0xC1, lambda: members), server)
        credentials = grpc.ssl_server_credentials(
            [(pki.server.key.read_bytes(), pki.server.cert.read_bytes())],
            root_certificates=pki.ca.path.read_bytes(), require_client_auth=True,
        )
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
        await server.start()
        initial = {"m1": (existing,), "m2": (joining,)}
        try:
            peer_credentials = channel_credentials(pki.ca.path, pki.server)
            got = await fetch_cluster("m2", initial, (joining,), credentials=peer_credentials)
            assert got == (0xC1, 0xB, members)
            # no peer TLS: the https URL cannot be asked
            with pytest.raises(ConfigError, match="could not retrieve cluster information"):
                await fetch_cluster("m2", initial, (joining,), timeout=2.0)
        finally:
            await server.stop(None)

    asyncio.run(run())


def test_joining_a_self_signed_cluster_trusts_the_certificate_the_member_presents(tmp_path: Path) -> None:
    """With --peer-auto-tls etcd does not verify the member it asks; rusd pins what it presents."""
    port = free_port()
    existing = f"https://127.0.0.1:{port}"
    joining = f"https://127.0.0.1:{free_port()}"
    members = (MemberInfo(0xA, "m1", (existing,), ()), MemberInfo(0xB, "", (joining,), ()))
    theirs = tls.load(tls.self_cert(str(tmp_path / "m1"), ["127.0.0.1"], client_auth=True))
    mine = tls.load(tls.self_cert(str(tmp_path / "m2"), ["127.0.0.1"], client_auth=True))
    initial = {"m1": (existing,), "m2": (joining,)}

    async def run() -> None:
        pinner = tls.CertificatePinner(mine)
        # nobody listening yet: the certificate cannot be fetched, as an unreachable member
        with pytest.raises(ConfigError, match="could not retrieve cluster information"):
            await fetch_cluster("m2", initial, (joining,), timeout=2.0, pinner=pinner)
        server = grpc.aio.server()
        add_MembershipServicer_to_server(MembershipServicer(0xC1, lambda: members), server)
        server.add_secure_port(f"127.0.0.1:{port}", theirs.server_credentials())
        await server.start()
        try:
            assert await fetch_cluster("m2", initial, (joining,), pinner=pinner) == (0xC1, 0xB, members)
            # verified instead (against the system roots, as with real certificates and no CA): refused
            with pytest.raises(ConfigError, match="could not retrieve cluster information"):
                await fetch_cluster("m2", initial, (joining,), timeout=2.0, credentials=mine.channel_credentials())
        finally:
            await server.stop(None)

    asyncio.run(run())
