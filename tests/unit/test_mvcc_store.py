"""MVCC edge cases that the model test does not reach."""

from __future__ import annotations

import pytest

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc import hashing, store
from rusd.core.mvcc.types import DeleteRangeRequest, Event, KeyValue, PutRequest, RangeRequest, TxnRequest
from rusd.core.node import NotFoundLeases
from rusd.storage.memory import MemoryBackend


def test_a_txn_deleting_and_recreating_a_key_keeps_both_changes() -> None:
    """A from-key delete escapes etcd's duplicate-key check, so one txn can delete a
    key and put it again. Live watchers and history (catch-up, resumed watches,
    historical reads, compaction) must agree: DELETE b then PUT b at one revision."""
    backend, leases = MemoryBackend(), NotFoundLeases()
    store.put(backend, leases, PutRequest(b"a", b"1"))
    store.put(backend, leases, PutRequest(b"b", b"2"))
    live: list[Event] = []
    txn = TxnRequest(success=(DeleteRangeRequest(b"a", b"\x00"), PutRequest(b"b", b"3")))
    assert store.txn(backend, leases, txn, live).revision == 4
    recreated = KeyValue(b"b", 4, 4, 1, b"3")
    assert [e.kv for e in live] == [KeyValue(b"a", 0, 4, 0), KeyValue(b"b", 0, 4, 0), recreated]
    assert [kv for _sub, kv in backend.changes(3)] == [e.kv for e in live]
    assert store.read_range(backend, RangeRequest(b"\x00", b"\x00")).kvs == (recreated,)
    assert store.read_range(backend, RangeRequest(b"\x00", b"\x00", revision=3)).count == 2
    store.compact(backend, 4)
    # the tombstone at the compact revision stays (a watch from 4 still sees DELETE a)
    assert [kv for _sub, kv in backend.history(b"", b"")] == [KeyValue(b"a", 0, 4, 0), recreated]
    store.put(backend, leases, PutRequest(b"c", b"5"))
    store.compact(backend, 5)
    assert [kv.key for _sub, kv in backend.history(b"", b"")] == [b"b", b"c"]


def test_a_delete_at_the_compact_revision_is_still_watchable_from_it() -> None:
    """etcd issue 18089: compacting at the revision of a delete dropped the tombstone, so
    a watch from the compact revision (allowed) missed the delete. Fixed etcd keeps it
    until a later compaction, and leaves it out of the hash."""
    backend, leases = MemoryBackend(), NotFoundLeases()
    for value in (b"1", b"2", b"3"):
        store.put(backend, leases, PutRequest(b"k", value))
    store.delete_range(backend, leases, DeleteRangeRequest(b"k"), [])
    store.put(backend, leases, PutRequest(b"k", b"4"))
    store.compact(backend, 5)
    assert [(kv.mod_revision, kv.is_tombstone) for _sub, kv in backend.changes(4)] == [(5, True), (6, False)]
    assert store.read_range(backend, RangeRequest(b"k", revision=5)).kvs == ()
    assert hashing.hash_kv(backend, 6)[0] == hashing.hash_kv(_without_the_tombstone(backend, 5), 6)[0]


def _without_the_tombstone(backend: MemoryBackend, rev: int) -> MemoryBackend:
    """A copy of `backend` as compaction at `rev` left it before tombstones were kept."""
    copy = MemoryBackend()
    copy.load_image(backend.image())
    for sub, kv in list(copy.history(b"", b"")):
        if kv.is_tombstone and kv.mod_revision == rev:
            copy.remove(kv.key, kv.mod_revision, sub)
    return copy


def test_hashkv_refuses_the_compact_revision_itself() -> None:
    backend, leases = MemoryBackend(), NotFoundLeases()
    for value in (b"1", b"2", b"3"):
        store.put(backend, leases, PutRequest(b"k", value))
    store.compact(backend, 3)
    with pytest.raises(EtcdError) as refused:
        hashing.hash_kv(backend, 3)
    assert refused.value.kind == errors.COMPACTED
    assert hashing.hash_kv(backend, 4)[1:] == (3, 4)
    assert hashing.hash_kv(backend, 0)[1:] == (3, 4)
