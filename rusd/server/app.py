"""Start one rusd member: data dir, identity, storage, runtime, gRPC listeners."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass

import grpc

from rusd.core import codec
from rusd.core.compactor import CompactionPolicy
from rusd.core.membership import cluster_id, member_id
from rusd.core.node import MemberConfig, MemberInfo
from rusd.server import logs, services, tls
from rusd.server.config import ConfigError, ServerConfig, verify_bootstrap
from rusd.server.interceptors import UnmarshalErrors
from rusd.server.runtime import Runtime
from rusd.storage.errors import StorageError
from rusd.storage.lmdb import LmdbStore

log = logging.getLogger("rusd")

META_IDENTITY = b"identity"
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


def load_identity(store: LmdbStore, config: ServerConfig) -> Identity:
    """The stored identity, or a new one from the --initial-cluster flags."""
    view = store.snapshot()
    try:
        raw = view.get_meta(META_IDENTITY)
    finally:
        view.close()
    if raw is not None:
        identity = codec.decode(raw)
        if not isinstance(identity, Identity):
            raise StorageError(f"{config.data_dir}: member identity record is corrupt")
        return identity
    if not config.is_new_cluster:
        raise ConfigError("joining an existing cluster (--initial-cluster-state=existing) is not implemented yet")
    verify_bootstrap(config)
    members = config.initial_cluster_members
    if len(members) > 1:
        raise ConfigError(
            f"multi-member clusters are not implemented yet (--initial-cluster lists {len(members)} members)"
        )
    token = config.initial_cluster_token
    ids = {name: member_id([str(u) for u in urls], token) for name, urls in members.items()}
    identity = Identity(
        member_id=ids[config.name],
        cluster_id=cluster_id(list(ids.values())),
        name=config.name,
        peer_urls=tuple(str(u) for u in members[config.name]),
    )
    batch = store.begin()
    batch.put_meta(META_IDENTITY, codec.encode(identity))
    batch.commit()
    return identity


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
        compaction=CompactionPolicy(mode, config.auto_compaction_retention),
        heartbeat_ms=config.heartbeat_interval_ms,
        election_ticks=config.election_ticks,
    )


async def serve(config: ServerConfig) -> None:
    try:
        server_tls = tls.prepare(config)
    except tls.TLSError as e:
        raise ConfigError(str(e)) from None
    store = open_store(config)
    try:
        identity = load_identity(store, config)
        runtime = Runtime(
            store,
            member_config(config, identity),
            max_request_bytes=config.max_request_bytes,
            tick_interval=config.heartbeat_interval_ms / 1000,
        )
        await _serve(config, runtime, server_tls)
    finally:
        store.close()


async def _serve(config: ServerConfig, runtime: Runtime, server_tls: tls.ServerTLS) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    runtime.on_fatal = lambda exc: done.set()
    client_tls = server_tls.client
    interceptors: list[grpc.aio.ServerInterceptor] = [UnmarshalErrors()]  # type: ignore[type-arg]
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
    services.register(server, runtime, watch_progress_interval=config.watch_progress_notify_interval)
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
    runtime.start()
    await server.start()
    info = runtime.config.member
    log.info(
        "published {Name:%s ClientURLs:[%s]} to cluster %x; member %x",
        info.name,
        " ".join(info.client_urls),
        runtime.config.cluster_id,
        info.id,
    )
    log.info("ready to serve client requests")
    await done.wait()
    log.info("received stop request, shutting down")
    await server.stop(grace=1.0)
    await runtime.stop()
    if runtime.failed:
        raise SystemExit("rusd: stopped after a storage failure (see the log above)")


def run(config: ServerConfig) -> None:
    try:
        logs.setup(config)
        asyncio.run(serve(config))
    except (ConfigError, StorageError) as e:
        print(f"rusd: {e}", file=sys.stderr)
        raise SystemExit(1) from None
