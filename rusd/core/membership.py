"""Member and cluster IDs derived exactly as etcd derives them, so they are stable
across restarts and equal to what an etcd with the same flags would report."""

from __future__ import annotations

import hashlib
import struct


def member_id(peer_urls: list[str] | tuple[str, ...], cluster_token: str, added_at: int | None = None) -> int:
    """First 8 bytes (big endian) of sha1(sorted peer URLs + token [+ unix time])."""
    data = "".join(sorted(peer_urls)) + cluster_token
    if added_at is not None:
        data += str(added_at)
    return int.from_bytes(hashlib.sha1(data.encode()).digest()[:8], "big")


def cluster_id(member_ids: list[int] | tuple[int, ...]) -> int:
    """First 8 bytes of sha1 over the sorted member IDs, each 8 bytes big endian."""
    raw = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big")
