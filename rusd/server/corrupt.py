"""etcd's corruption checks. Initial (--experimental-initial-corrupt-check): before serving
clients, compare this member's KV hash with every peer's at the same revision; a different
hash at the same compact revision means the data diverged, and the member refuses to start
("found data inconsistency with peers"), as etcd's CheckInitialHashKV. Periodic
(--experimental-corrupt-check-time): the leader compares the same way every interval and
raises the CORRUPT alarm for a member that diverged; the cluster then refuses changes
("etcdserver: corrupt cluster")."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.core.alarms import AlarmAction, AlarmRequest, AlarmType
from rusd.core.cluster import MemberInfo
from rusd.core.mvcc import hashing
from rusd.core.mvcc.backend import KVReader
from rusd.server.runtime import Runtime

log = logging.getLogger("rusd.corrupt")


class CorruptionError(Exception):
    pass


async def diverged_peers(
    me: int, members: tuple[MemberInfo, ...], view: KVReader, timeout: float = 5.0
) -> list[int]:
    """The peers whose hash at our revision differs from ours at the same compact revision.
    Peers that cannot answer (down, behind, ahead of a compaction) are skipped with a warning,
    as etcd does."""
    crc, compacted, rev = hashing.hash_kv(view, 0)
    diverged: list[int] = []
    for m in members:
        if m.id == me or not m.client_urls or urlsplit(m.client_urls[0]).scheme != "http":
            continue
        parts = urlsplit(m.client_urls[0])
        try:
            async with grpc.aio.insecure_channel(f"{parts.hostname}:{parts.port}") as channel:
                got = await pb_grpc.MaintenanceStub(channel).HashKV(pb.HashKVRequest(revision=rev), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            log.warning("cannot fetch hash from peer %x: %s", m.id, e.details())
            continue
        if got.hash == crc:
            continue
        if got.compact_revision == compacted:
            log.error("%x's hash %d != %x's hash %d (revision %d, compact revision %d)",
                      me, crc, m.id, got.hash, rev, compacted)
            diverged.append(m.id)
        else:
            log.warning("%x's hash differs from %x's, but their compact revisions differ (%d != %d)",
                        me, m.id, compacted, got.compact_revision)
    return diverged


async def check_initial_hash(me: int, members: tuple[MemberInfo, ...], view: KVReader) -> None:
    if await diverged_peers(me, members, view):
        raise CorruptionError(f"{me:x} found data inconsistency with peers")


async def check_periodically(runtime: Runtime, interval: float) -> None:
    """While this member leads, compare hashes every `interval` seconds; raise the CORRUPT
    alarm for each member that diverged."""
    me = runtime.config.member.id
    while True:
        await asyncio.sleep(interval)
        status = runtime.status
        if status.leader != me or any(a.alarm == AlarmType.CORRUPT for a in status.alarms):
            continue
        for peer in await diverged_peers(me, status.members, await runtime.snapshot()):
            log.error("raising the CORRUPT alarm for member %x", peer)
            await runtime.write(AlarmRequest(AlarmAction.ACTIVATE, peer, AlarmType.CORRUPT))
