"""Hashes of the key space that are equal on every member holding the same history."""

from __future__ import annotations

import struct
import zlib

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store
from rusd.core.mvcc.backend import KVReader

_HEAD = struct.Struct(">qqqqqI")


def hash_kv(view: KVReader, revision: int) -> tuple[int, int, int]:
    """etcd's HashKV: crc32 over every stored revision up to `revision` (0 = current).

    Returns (hash, compact_revision, hashed_revision), the compact revision being -1
    before any compaction as in etcd; raises the compacted / future errors as etcd.
    """
    current = store.current_revision(view)
    compacted = store.compact_revision(view)
    # Unlike a Range, HashKV refuses the compact revision itself (etcd's HashByRev).
    if 0 < revision <= compacted:
        raise EtcdError(errors.COMPACTED)
    rev = store.check_revision(revision, current, compacted)
    crc = 0
    for sub, kv in view.changes(0):
        if kv.mod_revision > rev:
            break
        if kv.is_tombstone and kv.mod_revision == compacted:
            # The tombstone compaction keeps at its own revision is not hashed (as etcd's
            # keep()), so hashes match those of stores compacted before it was kept.
            continue
        head = _HEAD.pack(kv.mod_revision, sub, kv.create_revision, kv.version, kv.lease, len(kv.key))
        crc = zlib.crc32(kv.value, zlib.crc32(kv.key, zlib.crc32(head, crc)))
    return crc, compacted, rev


def hash_all(view: KVReader) -> int:
    """Maintenance.Hash: the whole key space plus the revision bookkeeping."""
    crc, compacted, rev = hash_kv(view, 0)
    return zlib.crc32(struct.pack(">qq", compacted, rev), crc)
