"""Start one rusd member: data dir, identity, storage, runtime, gRPC listeners."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass

import grpc

from rusd.api.rusdraftpb.raft_pb2_grpc import add_MembershipServicer_to_server
from rusd.core import codec, errors
from rusd.core.cluster import MemberInfo, MemberPublishRequest
from rusd.core.compactor import CompactionPolicy
from rusd.core.errors import EtcdError
from rusd.core.membership import cluster_id, member_id
from rusd.core.node import MemberConfig
from rusd.server import auth_tokens, logs, peer_services, services, tls
from rusd.server.auth_guard import AuthGuard
from rusd.server.config import ConfigError, ServerConfig, verify_bootstrap, verify_join_existing
from rusd.server.corrupt import CorruptionError, check_initial_hash, check_periodically
from rusd.server.interceptors import LeaderChecks, UnmarshalErrors
from rusd.server.join import MembershipServicer, fetch_cluster
from rusd.server.peer import PEER_SERVER_OPTIONS, PeerTransport
from rusd.server.runtime import META_IDENTITY, Runtime
from rusd.storage.errors import StorageError
from rusd.storage.lmdb import LmdbStore

log = logging.getLogger("rusd")

# What etcd lets a gRPC message carry beyond --max-request-bytes (grpcOverheadBytes).
GRPC_OVERHEAD_BYTES = 512 * 1024
_GIB = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this member is, fixed at bootstrap and read back on every restart (etcd
    likewise ignores the --initial-* flags once the data dir exists)."""

    member_id: int
    cluster_id: int
    name: str
    peer_urls: tuple[str, ...]


codec.register(100, Identity)


def store_path(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "rusd")


def open_store(config: ServerConfig) -> LmdbStore:
    """Open (or create) the data dir, refusing one that is not ours."""
    if os.path.exists(os.path.join(config.data_dir, "member", "wal")):
        raise StorageError(
            f"{config.data_dir}: this data dir was written by etcd; rusd cannot read it "
            "(start rusd on an empty --data-dir)"
        )
    path = store_path(config.data_dir)
    for part in (config.data_dir, os.path.dirname(path), path):
        if os.path.exists(part) and not os.path.isdir(part):
            raise StorageError(f"mkdir {part}: not a directory")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise StorageError(f"mkdir {e.filename}: {(e.strerror or str(e)).lower()}") from None
    quota = config.effective_quota_backend_bytes or 8 * _GIB
    return LmdbStore(path, map_size=max(2 * quota, 8 * _GIB))


def peer_dialing(
    peer_tls: tls.TLSMaterial | None,
) -> tuple[grpc.ChannelCredentials | None, tls.CertificatePinner | None]:
    """How this member dials other members' https peer URLs: verifying them with its peer
    credentials, or, when its peer certificate is self-signed (--peer-auto-tls), trusting
    whatever certificate each presents, as etcd's peer client skips verification then."""
    if peer_tls is None:
        return None, None
    if peer_tls.info.self_signed:
        return None, tls.CertificatePinner(peer_tls)
    return peer_tls.channel_credentials(), None


async def load_identity(
    store: LmdbStore, config: ServerConfig, peer_tls: tls.TLSMaterial | None = None
) -> tuple[Identity, tuple[MemberInfo, ...]]:
    """The stored identity, or a new one from the --initial-cluster flags; and the members
    of the cluster this member joins (learned from them over the peer URLs, with the peer
    TLS credentials for https ones; empty otherwise)."""
    view = store.snapshot()
    try:
        raw = view.get_meta(META_IDENTITY)
    finally:
        view.close()
    if raw is not None:
        identity = codec.decode(raw)
        if not isinstance(identity, Identity):
            raise StorageError(f"{config.data_dir}: member identity record is corrupt")
        return identity, ()
    own_urls = tuple(str(u) for u in config.initial_advertise_peer_urls)
    if config.is_new_cluster:
        verify_bootstrap(config)
        initial = initial_cluster(config)
        (own,) = [m for m in initial if m.name == config.name]
        identity = Identity(own.id, cluster_id([m.id for m in initial]), config.name, own.peer_urls)
    else:
        verify_join_existing(config)
        members = {n: tuple(str(u) for u in us) for n, us in config.initial_cluster_members.items()}
        credentials, pinner = peer_dialing(peer_tls)
        cid, mid, joined = await fetch_cluster(config.name, members, own_urls, credentials=credentials, pinner=pinner)
        identity = Identity(mid, cid, config.name, own_urls)
    batch = store.begin()
    batch.put_meta(META_IDENTITY, codec.encode(identity))
    batch.commit()
    return identity, () if config.is_new_cluster else joined


def initial_cluster(config: ServerConfig) -> tuple[MemberInfo, ...]:
    """The members of a new cluster, with etcd's ids (sha1 of peer URLs and token)."""
    token = config.initial_cluster_token
    return tuple(
        MemberInfo(member_id([str(u) for u in urls], token), name, tuple(str(u) for u in urls), ())
        for name, urls in config.initial_cluster_members.items()
    )


def member_config(config: ServerConfig, identity: Identity) -> MemberConfig:
    mode = config.auto_compaction_mode or "periodic"
    return MemberConfig(
        member=MemberInfo(
            id=identity.member_id,
            name=identity.name,
            peer_urls=identity.peer_urls,
            client_urls=tuple(str(u) for u in config.advertise_client_urls),
        ),
        cluster_id=identity.cluster_id,
        max_txn_ops=config.max_txn_ops,
        quota_backend_bytes=config.quota_backend_bytes,
        snapshot_count=config.snapshot_count,
        catch_up_entries=config.snapshot_catchup_entries,
        strict_reconfig_check=config.strict_reconfig_check,
        compaction=CompactionPolicy(mode, config.auto_compaction_retention),
        heartbeat_ms=config.heartbeat_interval_ms,
        election_ticks=config.election_ticks,
    )


async def serve(config: ServerConfig) -> None:
    try:
        server_tls = tls.prepare(config)
    except tls.TLSError as e:
        raise ConfigError(str(e)) from None
    try:
        tokens = auth_tokens.provider(config.auth_token, float(config.auth_token_ttl))
    except auth_tokens.TokenError as e:
        raise ConfigError(f"--auth-token: {e}") from None
    store = open_store(config)
    try:
        identity, joined = await load_identity(store, config, server_tls.peer)
        runtime = Runtime(
            store,
            member_config(config, identity),
            max_request_bytes=config.max_request_bytes,
            tick_interval=config.heartbeat_interval_ms / 1000,
            initial_cluster=initial_cluster(config) if config.is_new_cluster else (),
            join=not config.is_new_cluster,
            cluster_token=config.initial_cluster_token,
            force_new_cluster=config.force_new_cluster,
        )
        await _serve(config, runtime, server_tls, tokens, joined)
    finally:
        store.close()


async def _serve(
    config: ServerConfig,
    runtime: Runtime,
    server_tls: tls.ServerTLS,
    tokens: auth_tokens.TokenProvider,
    joined: tuple[MemberInfo, ...] = (),
) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    runtime.on_fatal = lambda exc: done.set()
    client_tls = server_tls.client
    leader_checks = LeaderChecks(lambda: runtime.status)
    interceptors: list[grpc.aio.ServerInterceptor] = [UnmarshalErrors(), leader_checks]  # type: ignore[type-arg]
    if client_tls is not None and client_tls.info.crl_file:
        interceptors.insert(0, tls.RevocationCheck(tls.RevocationList(client_tls.info.crl_file)))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ]
    )
    services.register(
        server,
        runtime,
        watch_progress_interval=config.watch_progress_notify_interval,
        guard=AuthGuard(runtime, tokens, cert_auth=server_tls.client_cert_auth),
        bcrypt_cost=config.bcrypt_cost,
    )
    for url in config.listen_client_urls:
        address = f"{url.host}:{url.port}"
        try:
            if url.is_secure:
                assert client_tls is not None  # tls.prepare loads it whenever a URL is https
                server.add_secure_port(address, client_tls.server_credentials())
            else:
                server.add_insecure_port(address)
        except RuntimeError as e:
            raise ConfigError(f"listen tcp {address}: bind: address already in use or not available ({e})") from e
        if url.is_secure:
            log.info("serving client requests on %s", address)
        else:
            log.warning("serving insecure client requests on %s, this is strongly discouraged!", address)
    peer_server, transport = _peer_listener(config, runtime, joined, server_tls.peer)
    runtime.start()
    await peer_server.start()
    if config.initial_corrupt_check:
        try:
            await check_initial_hash(
                runtime.config.member.id, runtime.status.members, await runtime.snapshot(), transport
            )
        except CorruptionError:
            await transport.close()
            await peer_server.stop(grace=0.5)
            await runtime.stop()
            raise
    await server.start()
    publishing = asyncio.ensure_future(_publish(runtime))
    monitoring = asyncio.ensure_future(leader_checks.monitor_leader(runtime.config.election_timeout))
    checking = (
        asyncio.ensure_future(check_periodically(runtime, config.corrupt_check_interval))
        if config.corrupt_check_interval > 0 else None
    )
    log.info("ready to serve client requests")
    await done.wait()
    log.info("received stop request, shutting down")
    publishing.cancel()
    monitoring.cancel()
    if checking is not None:
        checking.cancel()
    await server.stop(grace=1.0)
    await transport.close()
    await peer_server.stop(grace=0.5)
    await runtime.stop()
    if runtime.failed and not runtime.removed:
        raise SystemExit("rusd: stopped after a storage failure (see the log above)")


def _peer_listener(
    config: ServerConfig, runtime: Runtime, joined: tuple[MemberInfo, ...], peer_tls: tls.TLSMaterial | None
) -> tuple[grpc.aio.Server, PeerTransport]:
    """The peer server on --listen-peer-urls (Raft, Membership, and the lease forwarding
    and HashKV calls of peer_services) and the transport to the other members (those it
    knows, or, joining, those the cluster told it of); with the --peer-* TLS flags, both
    sides use the peer certificate."""
    me = runtime.config.member.id
    known = runtime.status.members or joined
    peers = {m.id: m.peer_urls[0] for m in known if m.id != me and m.peer_urls}
    credentials, pinner = peer_dialing(peer_tls)
    transport = PeerTransport(
        me, runtime.config.cluster_id, peers, runtime.step, runtime.receive_snapshot, runtime.unreachable,
        snapshot_dir=os.path.join(os.path.dirname(runtime.store.path), "snap-in"),
        credentials=credentials,
        pinner=pinner,
    )
    runtime.transport = transport
    transport.is_removed = lambda member_id: member_id in runtime.status.removed
    transport.on_removed = runtime.removed_by_peer
    # --peer-crl-file: a peer presenting a revoked certificate is refused on every call.
    revocation: list[grpc.aio.ServerInterceptor] = (  # type: ignore[type-arg]
        [tls.RevocationCheck(tls.RevocationList(peer_tls.info.crl_file))]
        if peer_tls is not None and peer_tls.info.crl_file else []
    )
    server = grpc.aio.server(interceptors=revocation, options=[*PEER_SERVER_OPTIONS, ("grpc.so_reuseport", 0)])
    transport.add_servicer(server)
    add_MembershipServicer_to_server(
        MembershipServicer(runtime.config.cluster_id, lambda: runtime.status.members), server
    )
    peer_services.register(server, runtime.config.cluster_id, me, runtime.answer_forwarded, runtime.snapshot)
    for url in config.listen_peer_urls:
        address = f"{url.host}:{url.port}"
        try:
            if url.is_secure and peer_tls is not None:
                server.add_secure_port(address, peer_tls.server_credentials())
            else:
                server.add_insecure_port(address)
        except RuntimeError as e:
            raise ConfigError(f"listen tcp {address}: bind: address already in use or not available ({e})") from e
    return server, transport


async def _publish(runtime: Runtime) -> None:
    """Announce this member's name and client URLs through the log, until it is
    applied (etcd's publish; retried while there is no leader)."""
    info = runtime.config.member
    req = MemberPublishRequest(info.id, info.name, info.client_urls)
    while True:
        result = await runtime.write(req)
        if not isinstance(result, EtcdError):
            break
        if result.kind is errors.STOPPED:
            return
        await asyncio.sleep(0.5)
    log.info(
        "published {Name:%s ClientURLs:[%s]} to cluster %x; member %x",
        info.name, " ".join(info.client_urls), runtime.config.cluster_id, info.id,
    )


def run(config: ServerConfig) -> None:
    try:
        logs.setup(config)
        asyncio.run(serve(config))
    except (ConfigError, StorageError, CorruptionError) as e:
        print(f"rusd: {e}", file=sys.stderr)
        raise SystemExit(1) from None
