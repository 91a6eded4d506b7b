"""The reference in-memory backend: what the LMDB backend must behave like.

Used by unit tests and the simulator. Writes are visible at once; there is no
durability here (the simulator models the disk separately).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sortedcontainers import SortedDict

from rusd.core import codec
from rusd.core.log import Entry
from rusd.core.mvcc.types import KeyValue

# A rough per-record overhead so that size() grows like a real store's does.
_RECORD_OVERHEAD = 64


class MemoryBackend:
    """KVBackend over three sorted maps."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._meta: SortedDict = SortedDict()  # name -> value
        self._latest: SortedDict = SortedDict()  # key -> KeyValue
        self._history: SortedDict = SortedDict()  # (key, main, sub) -> (sub, KeyValue)
        self._changes: SortedDict = SortedDict()  # (main, sub) -> key
        self._size = 0

    # -- reads ---------------------------------------------------------------
    def get_meta(self, name: bytes) -> bytes | None:
        value: bytes | None = self._meta.get(name)
        return value

    def meta_items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        meta = self._meta
        for name in list(meta.irange(prefix, None)):
            if not name.startswith(prefix):
                return
            yield name, meta[name]

    def get(self, key: bytes) -> KeyValue | None:
        kv: KeyValue | None = self._latest.get(key)
        return kv

    def range(self, key: bytes, end: bytes) -> Iterator[KeyValue]:
        if end and end <= key:
            return
        keys = self._latest.irange(key, end or None, inclusive=(True, False))
        latest = self._latest
        for k in keys:
            yield latest[k]

    def history(self, key: bytes, end: bytes | None) -> Iterator[tuple[int, KeyValue]]:
        if end is None:
            lo, hi, inclusive = (key, 0, 0), (key, 2**63, 0), (True, True)
        elif end == b"":
            lo, hi, inclusive = (key, 0, 0), None, (True, True)
        else:
            if end <= key:
                return
            lo, hi, inclusive = (key, 0, 0), (end, 0, 0), (True, False)
        history = self._history
        for k in history.irange(lo, hi, inclusive=inclusive):
            yield history[k]

    def changes(self, after: int) -> Iterator[tuple[int, KeyValue]]:
        history = self._history
        for main, sub in self._changes.irange((after + 1, 0), None):
            key = self._changes[(main, sub)]
            yield history[(key, main, sub)]

    def size(self) -> int:
        return self._size

    def size_in_use(self) -> int:
        return self._size

    # -- writes --------------------------------------------------------------
    def put_meta(self, name: bytes, value: bytes) -> None:
        self._meta[name] = value

    def delete_meta(self, name: bytes) -> None:
        self._meta.pop(name, None)

    def write(self, sub: int, kv: KeyValue) -> None:
        main = kv.mod_revision
        old = self._history.get((kv.key, main, sub))
        if old is not None:  # the same revision again replaces it
            self._size -= _RECORD_OVERHEAD + len(kv.key) + len(old[1].value)
        self._history[(kv.key, main, sub)] = (sub, kv)
        self._changes[(main, sub)] = kv.key
        self._size += _RECORD_OVERHEAD + len(kv.key) + len(kv.value)
        if kv.is_tombstone:
            self._latest.pop(kv.key, None)
        else:
            self._latest[kv.key] = kv

    def remove(self, key: bytes, mod_revision: int, sub: int) -> None:
        _, kv = self._history.pop((key, mod_revision, sub))
        del self._changes[(mod_revision, sub)]
        self._size -= _RECORD_OVERHEAD + len(kv.key) + len(kv.value)

    # -- images (what a leader sends a follower that is behind its log) -------
    def image(self) -> bytes:
        """The whole store as bytes: meta, then every stored revision in revision order."""
        records = tuple(
            (sub, kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)
            for sub, kv in self.changes(0)
        )
        return codec.encode((tuple(self._meta.items()), records))

    def load_image(self, data: bytes) -> None:
        """Replace the whole store with an image (codec.CodecError if it is corrupt)."""
        meta, records = codec.decode(data)
        self._clear()
        for name, value in meta:
            self.put_meta(name, value)
        for sub, key, create, mod, version, value, lease in records:
            self.write(sub, KeyValue(key, create, mod, version, value, lease))


class MemoryLog:
    """LogStore in a list; the reference for the LMDB log."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._offset = 1  # index of _entries[0]

    def append_entries(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if self._entries and first > self.last_index() + 1:
            raise ValueError(f"append at {first} leaves a gap after the last entry {self.last_index()}")
        if any(e.index != first + i for i, e in enumerate(entries)):
            raise ValueError("appended entries must have contiguous indexes")
        keep = first - self._offset
        del self._entries[max(keep, 0) :]
        if not self._entries:
            self._offset = entries[0].index
        self._entries.extend(entries)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        lo = max(lo, self._offset)
        return self._entries[lo - self._offset : max(hi - self._offset, 0)]

    def first_index(self) -> int:
        return self._offset

    def last_index(self) -> int:
        return self._offset + len(self._entries) - 1

    def compact_log(self, upto: int) -> None:
        drop = min(upto - self._offset + 1, len(self._entries))
        if drop > 0:
            del self._entries[:drop]
            self._offset += drop
