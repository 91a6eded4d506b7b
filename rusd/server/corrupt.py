"""etcd's corruption checks. Initial (--experimental-initial-corrupt-check): before serving
clients, compare this member's KV hash with every peer's at the same revision; a different
hash at the same compact revision means the data diverged, and the member refuses to start
("found data inconsistency with peers"), as etcd's CheckInitialHashKV. Periodic
(--experimental-corrupt-check-time): the leader compares the same way every interval and
raises the CORRUPT alarm for a member that diverged; the cluster then refuses changes
("etcdserver: corrupt cluster"). Peers' hashes are fetched over the peer transport
(`Maintenance.HashKV` on the peer listener, trying each of a member's peer URLs with the
peer TLS credentials), as etcd's getPeerHashKVs does over its peer round tripper."""

from __future__ import annotations

import asyncio
import logging

import grpc

from rusd.api.rusdraftpb import raft_pb2 as ppb
from rusd.api.rusdraftpb import raft_pb2_grpc as ppb_grpc
from rusd.core.alarms import AlarmAction, AlarmRequest, AlarmType
from rusd.core.cluster import MemberInfo
from rusd.core.mvcc import hashing
from rusd.core.mvcc.backend import KVReader
from rusd.server.peer import Metadata, PeerCallError, PeerTransport
from rusd.server.runtime import Runtime

log = logging.getLogger("rusd.corrupt")


class CorruptionError(Exception):
    pass


async def _hash_kv(revision: int, timeout: float, channel: grpc.aio.Channel, metadata: Metadata) -> ppb.HashKVResponse:
    got: ppb.HashKVResponse = await ppb_grpc.MaintenanceStub(channel).HashKV(
        ppb.HashKVRequest(revision=revision), metadata=metadata, timeout=timeout
    )
    return got


async def diverged_peers(
    me: int, members: tuple[MemberInfo, ...], view: KVReader, transport: PeerTransport, timeout: float = 5.0
) -> list[int]:
    """The peers whose hash at our revision differs from ours at the same compact revision.
    Peers that cannot answer (down, behind, ahead of a compaction) are skipped with a warning,
    as etcd does."""
    crc, compacted, rev = hashing.hash_kv(view, 0)
    diverged: list[int] = []
    for m in members:
        if m.id == me:
            continue
        try:
            got = await transport.call(m.id, m.peer_urls, lambda ch, md: _hash_kv(rev, timeout, ch, md))
        except PeerCallError as e:
            log.warning("cannot fetch hash from peer %x: %s", m.id, e.details)
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


async def check_initial_hash(
    me: int, members: tuple[MemberInfo, ...], view: KVReader, transport: PeerTransport
) -> None:
    """Refuse to start when a peer's data differs from ours (etcd's CheckInitialHashKV)."""
    if await diverged_peers(me, members, view, transport):
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
        transport = runtime.transport
        if transport is None:
            continue
        for peer in await diverged_peers(me, status.members, await runtime.snapshot(), transport):
            log.error("raising the CORRUPT alarm for member %x", peer)
            await runtime.write(AlarmRequest(AlarmAction.ACTIVATE, peer, AlarmType.CORRUPT))
