"""Production storage: the MVCC indexes and the raft log in one LMDB environment.

One environment, five named sub-databases, so one commit (one fsync) persists the log
entries and the applied state together, and any process can answer a Range, latest or
historical, straight from the file (no index is rebuilt at startup):

- ``meta``:    b"u" + name -> value (the KVBackend meta table, leases included:
  b"ulease/" + be64(id) -> be64(ttl)); b"i" + name -> this
  module's own records (format marker, first log index).
- ``latest``:  K(key) -> the key's current KeyValue (live keys only).
- ``history``: K(key) + be64(main) + be64(sub) -> (sub, KeyValue), tombstones included.
- ``changes``: be64(main) + be64(sub) -> the history record's LMDB key.
- ``log``:     be64(index) -> (term, data).

be64 is 8-byte big-endian, so bytewise order is numeric order (revisions and log
indexes are non-negative).

K(key) is an order-preserving encoding. The *escaped form* E(key) turns every 0x00
into 0x00 0xFF; a 0x00 0x00 terminator follows it. The terminator sorts below any
continuation of an escaped form, so a key sorts before its extensions and all history
records of one key are contiguous, ordered by revision, even when one key is a prefix
of another.

LMDB keys are limited to 511 bytes, user keys are not. When E(key) is at least _TRUNC
bytes long the key is *long* and K(key) = E(key)[:_TRUNC] + 0x01 + BLAKE2b-128(key);
the full key is then kept in the record's value. A long key sorts exactly where it
belongs relative to every key that does not share those _TRUNC escaped bytes (a short
key's encoding can only agree with them up to its terminator, and 0x01 sorts above the
terminator's second 0x00). The long keys that do share them form one contiguous *run*,
in hash order; scans buffer each run and re-sort it by full key before yielding it.
Runs only exist among keys longer than ~480 bytes, so the short-key path never pays.
Two distinct long keys with the same prefix and hash would collide: writes refuse that
with a StorageError (it takes a 128-bit hash collision).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Final, TypeVar

import lmdb

from rusd.core.log import Entry, EntryKind
from rusd.core.mvcc.types import KeyValue
from rusd.storage.errors import StorageError

FORMAT_VERSION: Final = 2
DEFAULT_MAP_SIZE: Final = 8 << 30

_DB_NAMES: Final = (b"meta", b"latest", b"history", b"changes", b"log")
_FORMAT_KEY: Final = b"iformat"
_FORMAT_PREFIX: Final = b"rusd-lmdb/"
_LOG_FIRST_KEY: Final = b"ilog_first"
_USER: Final = b"u"
_MAX_META_NAME: Final = 511 - len(_USER)
_DATA_FILE: Final = "data.mdb"
_LOCK_FILE: Final = "lock.mdb"
_INIT_DIR: Final = ".rusd-init"
_DEFRAG_DIR: Final = ".rusd-defrag"
_INSTALL_DIR: Final = ".rusd-install"

# -- key encoding ---------------------------------------------------------------------

_NUL: Final = b"\x00"
_ESC: Final = b"\x00\xff"
_TERM: Final = b"\x00\x00"
_MARK: Final = b"\x01"
_TRUNC: Final = 472  # escaped bytes kept in a long key's LMDB key (+ marker, hash, revision <= 511)
_HASH_LEN: Final = 16
_RUN_PREFIX_LEN: Final = _TRUNC + 1  # escaped prefix + marker: what a run shares
_SHORT_LATEST_MAX: Final = _TRUNC + 1  # longest short `latest` key: E < _TRUNC, + terminator
_SHORT_HISTORY_MAX: Final = _SHORT_LATEST_MAX + 16
_NEEDED_KEY_SIZE: Final = _RUN_PREFIX_LEN + _HASH_LEN + 16

# -- value encoding -------------------------------------------------------------------

_KV: Final = struct.Struct("<qqqq")  # create, mod, version, lease; then the value
_KV_LONG: Final = struct.Struct("<qqqqI")  # ... + key length; then key, value
_REV: Final = struct.Struct("<qqqqq")  # sub, create, mod, version, lease; then the value
_REV_LONG: Final = struct.Struct("<qqqqqI")  # ... + key length; then key, value
_U64: Final = struct.Struct(">Q")
_CHANGE: Final = struct.Struct(">QQ")
_TERM_S: Final = struct.Struct("<q")
# A log record starts with the entry's term; its top byte holds the entry kind (0 normal,
# 1 conf change), which keeps records written before kinds existed readable.
_KIND_SHIFT: Final = 56
_TERM_MASK: Final = (1 << _KIND_SHIFT) - 1
_KV_SIZE: Final = _KV.size
_KV_LONG_SIZE: Final = _KV_LONG.size
_REV_SIZE: Final = _REV.size
_REV_LONG_SIZE: Final = _REV_LONG.size

_T = TypeVar("_T")


def _encode_key(key: bytes) -> bytes:
    """K(key): the `latest` key, and the prefix of the key's `history` keys."""
    head = key[:_TRUNC].replace(_NUL, _ESC)  # enough to know E(key)[:_TRUNC]
    if len(head) < _TRUNC:
        return head + _TERM
    return head[:_TRUNC] + _MARK + hashlib.blake2b(key, digest_size=_HASH_LEN).digest()


def _seek_key(key: bytes) -> bytes:
    """The smallest LMDB key a record of `key` or of any greater key can have."""
    head = key[:_TRUNC].replace(_NUL, _ESC)
    if len(head) < _TRUNC:
        return head + _TERM
    return head[:_TRUNC] + _MARK  # the start of key's run


def _latest_long(v: bytes) -> KeyValue:
    c, m, ver, lease, n = _KV_LONG.unpack_from(v)
    end = _KV_LONG_SIZE + n
    return KeyValue(v[_KV_LONG_SIZE:end], c, m, ver, v[end:], lease)


def _latest_kv(lk: bytes, v: bytes) -> KeyValue:
    if len(lk) <= _SHORT_LATEST_MAX:
        c, m, ver, lease = _KV.unpack_from(v)
        return KeyValue(lk[:-2].replace(_ESC, _NUL), c, m, ver, v[_KV_SIZE:], lease)
    return _latest_long(v)


def _history_long(v: bytes) -> tuple[int, KeyValue]:
    sub, c, m, ver, lease, n = _REV_LONG.unpack_from(v)
    end = _REV_LONG_SIZE + n
    return sub, KeyValue(v[_REV_LONG_SIZE:end], c, m, ver, v[end:], lease)


def _history_item(hk: bytes, v: bytes) -> tuple[int, KeyValue]:
    if len(hk) <= _SHORT_HISTORY_MAX:
        sub, c, m, ver, lease = _REV.unpack_from(v)
        return sub, KeyValue(hk[:-18].replace(_ESC, _NUL), c, m, ver, v[_REV_SIZE:], lease)
    return _history_long(v)


def _kv_key(kv: KeyValue) -> bytes:
    return kv.key


def _item_key(item: tuple[int, KeyValue]) -> bytes:
    return item[1].key


def _flush(run: list[_T], keyof: Callable[[_T], bytes], lo: bytes, end: bytes) -> Generator[_T, None, bool]:
    """Yield a run of long keys in key order, within [lo, end); return True once past end."""
    run.sort(key=keyof)  # stable: one key's revisions stay in revision order
    for item in run:
        k = keyof(item)
        if k < lo:
            continue
        if end and k >= end:
            return True
        yield item
    return False


# -- opening --------------------------------------------------------------------------


def _fsync(path: str) -> None:
    """fsync a file, or a directory after a rename in it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lmdb_reason(exc: lmdb.Error, path: str) -> str:
    """The binding's message without the path it often repeats."""
    return str(exc).replace(f"{path}: ", "").replace(f"b'{path}': ", "").strip()


def _create(path: str) -> None:
    """Create a fresh store so that data.mdb only ever appears complete.

    The environment is initialised (sub-databases, format marker) in a scratch
    directory and its data file renamed into place, so a data.mdb that is empty or
    lacks the marker always means damage, never an interrupted creation.
    """
    if os.path.isdir(path):
        # Not even a lock file: one next to a missing data.mdb means the data is lost.
        foreign = set(os.listdir(path)) - {_INIT_DIR}
        if foreign:
            raise StorageError(f"{path}: not an rusd store (no {_DATA_FILE}, and the directory is not empty)")
    else:
        os.makedirs(path)
    scratch = os.path.join(path, _INIT_DIR)
    shutil.rmtree(scratch, ignore_errors=True)
    env = lmdb.open(scratch, map_size=1 << 20, max_dbs=len(_DB_NAMES), lib_version=0)
    try:
        with env.begin(write=True) as txn:
            dbs = [env.open_db(name, txn=txn, create=True) for name in _DB_NAMES]
            txn.put(_FORMAT_KEY, _FORMAT_PREFIX + str(FORMAT_VERSION).encode(), db=dbs[0])
            txn.put(_LOG_FIRST_KEY, _U64.pack(1), db=dbs[0])
    finally:
        env.close()
    os.rename(os.path.join(scratch, _DATA_FILE), os.path.join(path, _DATA_FILE))
    _fsync(path)
    shutil.rmtree(scratch, ignore_errors=True)


def _open(path: str, map_size: int, readonly: bool, max_readers: int) -> _Handles:
    try:
        return _Handles(path, map_size, readonly, max_readers)
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror or exc}") from None
    except lmdb.Error as exc:  # from creating a new store; opening ones wraps its own
        raise StorageError(f"{path}: cannot create LMDB store: {_lmdb_reason(exc, path)}") from None


class _Handles:
    """An open environment and its sub-databases, validated."""

    __slots__ = ("changes", "env", "history", "latest", "log", "meta", "psize")

    def __init__(self, path: str, map_size: int, readonly: bool, max_readers: int) -> None:
        data = os.path.join(path, _DATA_FILE)
        if os.path.exists(path) and not os.path.isdir(path):
            raise StorageError(f"{path}: not a directory")
        if not os.path.exists(data):
            if readonly:
                raise StorageError(f"{path}: no {_DATA_FILE} (not an rusd store)")
            _create(path)
        elif os.path.getsize(data) == 0:
            # LMDB would silently initialise an empty file: never treat damage as new.
            raise StorageError(f"{path}: {_DATA_FILE} is empty (truncated?)")
        try:
            self.env = lmdb.open(
                path,
                map_size=map_size,
                readonly=readonly,
                create=False,
                max_dbs=len(_DB_NAMES),
                max_readers=max_readers,
                sync=True,
                metasync=True,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise StorageError(f"{path}: cannot open LMDB store: {_lmdb_reason(exc, path)}") from None
        try:
            self.psize, dbs = self._validate(path, data, readonly)
        except BaseException:
            self.env.close()
            raise
        self.meta, self.latest, self.history, self.changes, self.log = dbs

    def _validate(self, path: str, data: str, readonly: bool) -> tuple[int, list[lmdb._Database]]:
        """Check the file is whole, ours and of a known version; open the sub-databases."""
        env = self.env
        # Only the meta pages have been read so far. A data file shorter than its last
        # page would SIGBUS on first access: catch truncation before touching the trees.
        psize = env.stat()["psize"]
        needed = (env.info()["last_pgno"] + 1) * psize
        actual = os.path.getsize(data)
        if actual < needed:
            raise StorageError(f"{path}: {_DATA_FILE} is truncated ({actual} bytes, {needed} needed)")
        if env.max_key_size() < _NEEDED_KEY_SIZE:
            raise StorageError(f"{path}: LMDB max key size {env.max_key_size()} < {_NEEDED_KEY_SIZE}")
        try:
            if readonly:
                dbs = [env.open_db(name, create=False) for name in _DB_NAMES]
            else:
                # A DBI opened in a read txn does not survive it; a write txn that opens
                # existing DBIs dirties nothing, so its commit writes nothing.
                txn = env.begin(write=True)
                try:
                    dbs = [env.open_db(name, txn=txn, create=False) for name in _DB_NAMES]
                except BaseException:
                    txn.abort()
                    raise
                txn.commit()
            with env.begin() as rtxn:
                marker = rtxn.get(_FORMAT_KEY, db=dbs[0])
        except (lmdb.NotFoundError, lmdb.IncompatibleError):
            raise StorageError(f"{path}: not an rusd store (its sub-databases are missing)") from None
        except lmdb.Error as exc:
            raise StorageError(f"{path}: corrupt LMDB store: {_lmdb_reason(exc, path)}") from None
        if marker is None or not marker.startswith(_FORMAT_PREFIX):
            raise StorageError(f"{path}: not an rusd store (no format marker)")
        version = marker[len(_FORMAT_PREFIX) :]
        if version != str(FORMAT_VERSION).encode():
            raise StorageError(
                f"{path}: unsupported store format {version.decode(errors='replace')!r} "
                f"(this build reads {FORMAT_VERSION})"
            )
        return psize, dbs


# -- readers --------------------------------------------------------------------------


class _Reader:
    """KVReader and the read half of LogStore over one LMDB transaction."""

    __slots__ = ("_changes", "_env", "_history", "_latest", "_log", "_meta", "_path", "_psize", "_txn")

    def __init__(self, handles: _Handles, txn: lmdb.Transaction[bytes], path: str) -> None:
        self._txn = txn
        self._env = handles.env
        self._meta = handles.meta
        self._latest = handles.latest
        self._history = handles.history
        self._changes = handles.changes
        self._log = handles.log
        self._psize = handles.psize
        self._path = path

    # -- KVReader ---------------------------------------------------------------------
    def get_meta(self, name: bytes) -> bytes | None:
        if len(name) > _MAX_META_NAME:
            return None  # put_meta refuses such names
        return self._txn.get(_USER + name, db=self._meta)

    def meta_items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        start = _USER + prefix
        cur = self._txn.cursor(self._meta)
        if not cur.set_range(start):
            return
        for k, v in cur.iternext():
            if not k.startswith(start):
                return
            yield k[len(_USER) :], v

    def get(self, key: bytes) -> KeyValue | None:
        lk = _encode_key(key)
        v = self._txn.get(lk, db=self._latest)
        if v is None:
            return None
        kv = _latest_kv(lk, v)
        return kv if kv.key == key else None

    def range(self, key: bytes, end: bytes) -> Iterator[KeyValue]:
        if end and end <= key:
            return
        cur = self._txn.cursor(self._latest)
        if not cur.set_range(_seek_key(key)):
            return
        unpack, make, esc, nul, short_max, hdr = _KV.unpack_from, KeyValue, _ESC, _NUL, _SHORT_LATEST_MAX, _KV_SIZE
        run: list[KeyValue] = []
        run_prefix = b""
        for lk, v in cur.iternext():
            if len(lk) > short_max:
                if run and lk.startswith(run_prefix):
                    run.append(_latest_long(v))
                    continue
                if run and (yield from _flush(run, _kv_key, key, end)):
                    return
                run = [_latest_long(v)]
                run_prefix = lk[:_RUN_PREFIX_LEN]
                continue
            if run:
                if (yield from _flush(run, _kv_key, key, end)):
                    return
                run = []
            k = lk[:-2].replace(esc, nul)
            if end and k >= end:
                return
            c, m, ver, lease = unpack(v)
            yield make(k, c, m, ver, v[hdr:], lease)
        if run:
            yield from _flush(run, _kv_key, key, end)

    def history(self, key: bytes, end: bytes | None) -> Iterator[tuple[int, KeyValue]]:
        if end is None:
            yield from self._key_history(key)
            return
        if end and end <= key:
            return
        cur = self._txn.cursor(self._history)
        if not cur.set_range(_seek_key(key)):
            return
        unpack, make, esc, nul, short_max, hdr = _REV.unpack_from, KeyValue, _ESC, _NUL, _SHORT_HISTORY_MAX, _REV_SIZE
        run: list[tuple[int, KeyValue]] = []
        run_prefix = b""
        for hk, v in cur.iternext():
            if len(hk) > short_max:
                if run and hk.startswith(run_prefix):
                    run.append(_history_long(v))
                    continue
                if run and (yield from _flush(run, _item_key, key, end)):
                    return
                run = [_history_long(v)]
                run_prefix = hk[:_RUN_PREFIX_LEN]
                continue
            if run:
                if (yield from _flush(run, _item_key, key, end)):
                    return
                run = []
            k = hk[:-18].replace(esc, nul)
            if end and k >= end:
                return
            sub, c, m, ver, lease = unpack(v)
            yield sub, make(k, c, m, ver, v[hdr:], lease)
        if run:
            yield from _flush(run, _item_key, key, end)

    def _key_history(self, key: bytes) -> Iterator[tuple[int, KeyValue]]:
        prefix = _encode_key(key)
        cur = self._txn.cursor(self._history)
        if not cur.set_range(prefix):
            return
        for hk, v in cur.iternext():
            if not hk.startswith(prefix):
                return
            item = _history_item(hk, v)
            if item[1].key == key:  # only a hash collision could make this false
                yield item

    def changes(self, after: int) -> Iterator[tuple[int, KeyValue]]:
        cur = self._txn.cursor(self._changes)
        if not cur.set_range(_CHANGE.pack(max(after + 1, 0), 0)):
            return
        get = self._txn.get
        history = self._history
        for _ck, hk in cur.iternext():
            v = get(hk, db=history)
            if v is None:
                raise StorageError(f"{self._path}: corrupt store (a change without its revision)")
            yield _history_item(hk, v)

    def size(self) -> int:
        """The data file's extent as of the last commit (what the quota limits).

        In a batch that has grown the trees beyond it, the pages the batch reaches.
        """
        committed = (self._env.info()["last_pgno"] + 1) * self._psize
        return max(committed, self._used_pages() * self._psize)

    def size_in_use(self) -> int:
        """Bytes in pages reachable from this view's trees (+ the two meta pages).

        LMDB does not expose its free list, so "size minus free pages" is computed the
        other way round: everything not reachable is free or belongs to the (small)
        free list itself, or is held for readers of older snapshots.
        """
        return min(self._used_pages() * self._psize, self.size())

    def _used_pages(self) -> int:
        txn = self._txn
        pages = 2
        for db in (None, self._meta, self._latest, self._history, self._changes, self._log):
            st = txn.stat(db)
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages

    # -- LogStore (reads) -------------------------------------------------------------
    def entries(self, lo: int, hi: int) -> list[Entry]:
        out: list[Entry] = []
        lo = max(lo, 0)
        if hi <= lo:
            return out
        cur = self._txn.cursor(self._log)
        if not cur.set_range(_U64.pack(lo)):
            return out
        unpack_index = _U64.unpack
        unpack_term = _TERM_S.unpack_from
        for k, v in cur.iternext():
            index = unpack_index(k)[0]
            if index >= hi:
                break
            term = unpack_term(v)[0]
            if term >> _KIND_SHIFT:
                out.append(Entry(index, term & _TERM_MASK, v[8:], EntryKind(term >> _KIND_SHIFT)))
            else:
                out.append(Entry(index, term, v[8:]))
        return out

    def first_index(self) -> int:
        raw = self._txn.get(_LOG_FIRST_KEY, db=self._meta)
        return 1 if raw is None else int(_U64.unpack(raw)[0])

    def last_index(self) -> int:
        cur = self._txn.cursor(self._log)
        if cur.last():
            return int(_U64.unpack(cur.key())[0])
        return self.first_index() - 1


class LmdbView(_Reader):
    """A read-only snapshot: sees the store as of its opening, never later commits.

    Not bound to a thread (py-lmdb opens environments with MDB_NOTLS), but used by one
    thread at a time. Close it promptly: an open view pins the pages of its snapshot,
    so the file grows while it lives.
    """

    __slots__ = ()

    def close(self) -> None:
        self._txn.abort()

    def __enter__(self) -> LmdbView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LmdbBatch(_Reader):
    """The write transaction: KVBackend + LogStore; reads see the batch's own writes.

    Group commit: the writer thread applies many writes, then one commit() fsyncs them
    all. Must be used (and finished) on the thread that began it.
    """

    __slots__ = ("_store", "owner")

    def __init__(self, store: LmdbStore, handles: _Handles, txn: lmdb.Transaction[bytes]) -> None:
        super().__init__(handles, txn, store.path)
        self._store: LmdbStore | None = store
        self.owner = threading.get_ident()  # LMDB's write lock belongs to this thread

    def commit(self) -> None:
        """Make the batch durable: returns once LMDB has fsynced the data file."""
        store = self._finish("commit")
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            raise StorageError(f"{store.path}: commit failed: {_lmdb_reason(exc, store.path)}") from None

    def abort(self) -> None:
        """Discard the batch; a no-op once it is finished."""
        if self._store is not None:
            self._finish("abort")
            self._txn.abort()

    def _finish(self, what: str) -> LmdbStore:
        store = self._store
        if store is None:
            raise RuntimeError(f"{what}: the batch is already finished")
        self._store = None
        store._batch = None
        return store

    def __enter__(self) -> LmdbBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a batch left open by an exception is not committed

    def _full(self, exc: lmdb.Error) -> StorageError:
        return StorageError(f"{self._path}: write failed: {_lmdb_reason(exc, self._path)}")

    # -- KVBackend --------------------------------------------------------------------
    def put_meta(self, name: bytes, value: bytes) -> None:
        if len(name) > _MAX_META_NAME:
            raise ValueError(f"meta name too long ({len(name)} bytes)")
        try:
            self._txn.put(_USER + name, value, db=self._meta)
        except lmdb.Error as exc:
            raise self._full(exc) from None

    def delete_meta(self, name: bytes) -> None:
        if len(name) > _MAX_META_NAME:
            return  # put_meta refuses such names: there is nothing to drop
        try:
            self._txn.delete(_USER + name, db=self._meta)
        except lmdb.Error as exc:
            raise self._full(exc) from None

    def write(self, sub: int, kv: KeyValue) -> None:
        txn = self._txn
        key = kv.key
        main = kv.mod_revision
        lk = _encode_key(key)
        hk = lk + _CHANGE.pack(main, sub)
        if len(lk) <= _SHORT_LATEST_MAX:
            hval = _REV.pack(sub, kv.create_revision, main, kv.version, kv.lease) + kv.value
        else:
            self._check_collision(lk, key)
            hval = _REV_LONG.pack(sub, kv.create_revision, main, kv.version, kv.lease, len(key)) + key + kv.value
        try:
            txn.put(hk, hval, db=self._history)
            txn.put(_CHANGE.pack(main, sub), hk, db=self._changes)
            if kv.version == 0:
                txn.delete(lk, db=self._latest)
            elif len(lk) <= _SHORT_LATEST_MAX:
                txn.put(lk, _KV.pack(kv.create_revision, main, kv.version, kv.lease) + kv.value, db=self._latest)
            else:
                lval = _KV_LONG.pack(kv.create_revision, main, kv.version, kv.lease, len(key)) + key + kv.value
                txn.put(lk, lval, db=self._latest)
        except lmdb.Error as exc:
            raise self._full(exc) from None

    def _check_collision(self, lk: bytes, key: bytes) -> None:
        """Refuse a long key whose LMDB key another long key already uses."""
        txn = self._txn
        v = txn.get(lk, db=self._latest)
        clash = v is not None and _latest_long(v).key != key
        cur = txn.cursor(self._history)
        if not clash and cur.set_range(lk) and cur.key().startswith(lk):
            clash = _history_long(cur.value())[1].key != key
        if clash:
            raise StorageError(f"{self._path}: long-key hash collision; key not stored")

    def remove(self, key: bytes, mod_revision: int, sub: int) -> None:
        txn = self._txn
        hk = _encode_key(key) + _CHANGE.pack(mod_revision, sub)
        v = txn.get(hk, db=self._history)
        if v is None or _history_item(hk, v)[1].key != key:
            raise KeyError((key, mod_revision, sub))
        txn.delete(hk, db=self._history)
        txn.delete(_CHANGE.pack(mod_revision, sub), db=self._changes)

    # -- LogStore (writes) ------------------------------------------------------------
    def append_entries(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        offset = self.first_index()
        last = self.last_index()
        empty = last < offset
        if not empty and first > last + 1:
            raise ValueError(f"append at {first} leaves a gap after the last entry {last}")
        items: list[tuple[bytes, bytes]] = []
        for i, e in enumerate(entries):
            if e.index != first + i:
                raise ValueError("appended entries must have contiguous indexes")
            items.append((_U64.pack(e.index), _TERM_S.pack(e.term | e.kind.value << _KIND_SHIFT) + e.data))
        txn = self._txn
        try:
            if empty or first <= offset:
                txn.drop(self._log, delete=False)  # nothing kept: the log restarts at `first`
                txn.put(_LOG_FIRST_KEY, _U64.pack(first), db=self._meta)
            elif first <= last:
                self._delete_log_from(first)
            txn.cursor(self._log).putmulti(items, append=True)
        except lmdb.Error as exc:
            raise self._full(exc) from None

    def _delete_log_from(self, index: int) -> None:
        cur = self._txn.cursor(self._log)
        ok = cur.set_range(_U64.pack(index))
        while ok:
            ok = cur.delete()

    def compact_log(self, upto: int) -> None:
        offset = self.first_index()
        last = self.last_index()
        if upto < offset or last < offset:
            return
        new_first = min(upto, last) + 1
        stop = _U64.pack(new_first)
        txn = self._txn
        cur = txn.cursor(self._log)
        ok = cur.first()
        while ok and cur.key() < stop:
            ok = cur.delete()
        txn.put(_LOG_FIRST_KEY, _U64.pack(new_first), db=self._meta)


# -- the store ------------------------------------------------------------------------


class LmdbStore:
    """An rusd data directory: an LMDB environment holding the KV indexes and the log.

    `map_size` is the most the file may grow to; it is virtual address space only (the
    file stays sparse), so pass something generous, e.g. max(2 * quota, 8 GiB).
    A `readonly` store serves snapshots to another process while the server writes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = DEFAULT_MAP_SIZE,
        *,
        readonly: bool = False,
        max_readers: int = 126,
    ) -> None:
        self.path = os.fspath(path)
        self.map_size = map_size
        self.readonly = readonly
        self._max_readers = max_readers
        self._h = _open(self.path, map_size, readonly, max_readers)
        if not readonly:  # what a crash in install_image left behind, never live data
            shutil.rmtree(os.path.join(self.path, _INSTALL_DIR), ignore_errors=True)
        self._batch: LmdbBatch | None = None
        self._closed = False

    def begin(self) -> LmdbBatch:
        """Start the (single) write batch."""
        self._check_open()
        if self._batch is not None:
            raise RuntimeError("a batch is already open: only one batch at a time")
        try:
            txn = self._h.env.begin(write=True)
        except lmdb.Error as exc:
            raise StorageError(f"{self.path}: cannot begin a batch: {_lmdb_reason(exc, self.path)}") from None
        self._batch = LmdbBatch(self, self._h, txn)
        return self._batch

    def snapshot(self) -> LmdbView:
        """A consistent read-only view of the last commit."""
        self._check_open()
        try:
            txn = self._h.env.begin()
        except lmdb.Error as exc:
            raise StorageError(f"{self.path}: cannot open a view: {_lmdb_reason(exc, self.path)}") from None
        return LmdbView(self._h, txn, self.path)

    def defragment(self) -> None:
        """Rewrite the data file without free pages (etcd's defrag).

        Needs no open batch; views opened before become unusable (they raise). The
        compacted copy is fsynced and renamed over data.mdb, so a crash leaves either
        the old or the new file.
        """
        self._check_open()
        if self._batch is not None:
            raise RuntimeError("defragment: a batch is open")
        scratch = os.path.join(self.path, _DEFRAG_DIR)
        shutil.rmtree(scratch, ignore_errors=True)
        os.mkdir(scratch)
        copy = os.path.join(scratch, _DATA_FILE)
        try:
            self._h.env.copy(scratch, compact=True)
            _fsync(copy)
        except lmdb.Error as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StorageError(f"{self.path}: defragment failed: {_lmdb_reason(exc, self.path)}") from None
        self._h.env.close()
        os.replace(copy, os.path.join(self.path, _DATA_FILE))
        _fsync(self.path)
        shutil.rmtree(scratch, ignore_errors=True)
        self._h = _open(self.path, self.map_size, self.readonly, self._max_readers)

    def write_image(self, path: str | os.PathLike[str], view: LmdbView | None = None) -> int:
        """Write a compacted copy of the whole store to the file `path`; return its size.

        The copy is the store as `view` sees it (default: the last commit), so the caller
        knows exactly what it holds (e.g. the applied index of a Raft snapshot). It runs
        in a read transaction: the writer keeps committing meanwhile (LMDB readers never
        block it); only the pages of that snapshot stay pinned until the copy is done.
        Call it off the event loop (it reads the whole store). The copy goes to
        `path`.tmp, is fsynced and renamed, so `path` is either whole or absent. An image
        is a valid data file: as data.mdb in an empty directory it opens as a store.
        """
        self._check_open()
        dest = os.fspath(path)
        tmp = dest + ".tmp"
        own = view is None
        src = self.snapshot() if view is None else view
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                self._h.env.copyfd(fd, compact=True, txn=src._txn)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
            _fsync(os.path.dirname(os.path.abspath(dest)))
            return os.path.getsize(dest)
        except lmdb.Error as exc:
            raise StorageError(f"{self.path}: cannot write an image: {_lmdb_reason(exc, self.path)}") from None
        except OSError as exc:
            raise StorageError(f"{dest}: cannot write an image: {exc.strerror or exc}") from None
        finally:
            if own:
                src.close()
            if os.path.exists(tmp):
                os.unlink(tmp)

    def install_image(self, image: str | os.PathLike[str], *, log_after: int, keep_meta: Sequence[bytes] = ()) -> None:
        """Replace the whole store with an image (a received Raft snapshot), crash-safely.

        The image file is consumed. On disk:

        1. ``<store>/.rusd-install/`` is emptied and the image moved into it as data.mdb
           (a rename; a copy if it is on another file system);
        2. it is opened and validated like any store (whole, ours, this format): a
           truncated or foreign image raises StorageError here and is deleted, the
           live store untouched;
        3. in one fsynced write transaction on the staged copy: the meta records named
           in `keep_meta` get this store's values (or are deleted if it has none) -
           records that belong to this member, not to the sender (identity, Raft hard
           state) - and the log is emptied to continue at `log_after` + 1;
        4. the live environment is closed, the staged file renamed over data.mdb, the
           directory fsynced, the scratch directory removed, the store reopened.

        A crash before the rename of step 4 leaves the old store (the scratch directory
        is removed at the next open); a crash after it leaves the new one, complete.
        Needs no open batch; views opened before become unusable.
        """
        self._check_open()
        if self._batch is not None:
            raise RuntimeError("install_image: a batch is open")
        if log_after < 0:
            raise ValueError(f"log_after must be >= 0, not {log_after}")
        for name in keep_meta:
            if len(name) > _MAX_META_NAME:
                raise ValueError(f"meta name too long ({len(name)} bytes)")
        scratch = os.path.join(self.path, _INSTALL_DIR)
        staged = os.path.join(scratch, _DATA_FILE)
        shutil.rmtree(scratch, ignore_errors=True)
        os.mkdir(scratch)
        try:
            try:
                os.replace(image, staged)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copyfile(image, staged)
                os.unlink(image)
            kept = self._meta_values(keep_meta)
            handles = _open(scratch, self.map_size, False, self._max_readers)
            try:
                self._prepare_image(handles, scratch, kept, log_after)
            finally:
                handles.env.close()
            _fsync(staged)
        except StorageError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StorageError(f"snapshot image: {exc}") from None
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StorageError(f"{self.path}: cannot install an image: {exc.strerror or exc}") from None
        self._h.env.close()
        os.replace(staged, os.path.join(self.path, _DATA_FILE))
        _fsync(self.path)
        shutil.rmtree(scratch, ignore_errors=True)
        self._h = _open(self.path, self.map_size, self.readonly, self._max_readers)

    def _meta_values(self, names: Sequence[bytes]) -> dict[bytes, bytes | None]:
        with self.snapshot() as view:
            return {name: view.get_meta(name) for name in names}

    @staticmethod
    def _prepare_image(h: _Handles, path: str, kept: dict[bytes, bytes | None], log_after: int) -> None:
        try:
            with h.env.begin(write=True) as txn:
                for name, value in kept.items():
                    if value is None:
                        txn.delete(_USER + name, db=h.meta)
                    else:
                        txn.put(_USER + name, value, db=h.meta)
                txn.drop(h.log, delete=False)
                txn.put(_LOG_FIRST_KEY, _U64.pack(log_after + 1), db=h.meta)
        except lmdb.Error as exc:
            raise StorageError(f"{path}: {_lmdb_reason(exc, path)}") from None

    def close(self) -> None:
        """Close the environment (aborting an open batch); idempotent.

        Views still open become unusable. An open batch can only be aborted by the
        thread that began it, so closing from elsewhere while one is open is refused.
        """
        if self._closed:
            return
        if self._batch is not None:
            if self._batch.owner != threading.get_ident():
                raise RuntimeError("close: a batch is open on another thread")
            self._batch.abort()
        self._closed = True
        self._h.env.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path}: the store is closed")

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
