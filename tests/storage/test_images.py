"""Backend images for snapshot transfer: LmdbStore.write_image / install_image.

An image is the whole store at one point; installing one must be atomic and
crash-safe: whatever happens, the live store is the old one or the new one, whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rusd.core.log import Entry
from rusd.core.mvcc.types import KeyValue
from rusd.storage.errors import StorageError
from rusd.storage.lmdb import LmdbStore

MAP_SIZE = 64 << 20
ROOT = Path(__file__).resolve().parents[2]


def kv(key: bytes, rev: int, value: bytes = b"v") -> KeyValue:
    return KeyValue(key, rev, rev, 1, value, 0)


def populate(store: LmdbStore, tag: bytes, n: int, first_log: int = 1) -> None:
    batch = store.begin()
    for i in range(n):
        batch.write(0, kv(tag + b"%05d" % i, i + 2, value=tag * 50))
    batch.put_meta(b"revision", b"%d" % (n + 1))
    batch.put_meta(b"applied_index", tag)
    batch.put_meta(b"identity", b"member-" + tag)
    batch.append_entries([Entry(first_log + i, 2, tag + b"%d" % i) for i in range(5)])
    batch.commit()


def contents(path: Path) -> dict[str, object]:
    with LmdbStore(path, MAP_SIZE) as store, store.snapshot() as view:
        return {
            "keys": [x.key for x in view.range(b"", b"")],
            "applied": view.get_meta(b"applied_index"),
            "identity": view.get_meta(b"identity"),
            "hard_state": view.get_meta(b"raft_hard_state"),
            "log": (view.first_index(), view.last_index()),
        }


def as_store(image: Path, dest: Path) -> Path:
    """An image is a data file: as data.mdb in an empty directory it is a store."""
    dest.mkdir()
    os.link(image, dest / "data.mdb")
    return dest


def test_the_image_is_the_store_as_the_view_saw_it(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "a", MAP_SIZE) as store:
        populate(store, b"a", 100)
        view = store.snapshot()
        batch = store.begin()  # a writer that goes on while the image is written
        batch.write(0, kv(b"later", 500))
        size = store.write_image(tmp_path / "img", view)
        batch.commit()
        view.close()
    assert size == (tmp_path / "img").stat().st_size
    assert not (tmp_path / "img.tmp").exists()
    got = contents(as_store(tmp_path / "img", tmp_path / "copy"))
    assert got["keys"] == [b"a%05d" % i for i in range(100)]
    assert got["applied"] == b"a" and got["log"] == (1, 5)
    assert b"later" in contents(tmp_path / "a")["keys"]  # type: ignore[operator]


def test_the_image_is_compacted(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "a", MAP_SIZE) as store:
        populate(store, b"a", 2000)
        batch = store.begin()
        for i in range(1990):
            batch.remove(b"a%05d" % i, i + 2, 0)
        batch.commit()
        store.write_image(tmp_path / "img")  # default: the last commit
    assert (tmp_path / "img").stat().st_size < (tmp_path / "a" / "data.mdb").stat().st_size // 2
    with LmdbStore(as_store(tmp_path / "img", tmp_path / "copy"), MAP_SIZE) as copy, copy.snapshot() as v:
        assert len(list(v.history(b"", b""))) == 10


def test_install_replaces_the_data_keeps_local_records_and_resets_the_log(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "leader", MAP_SIZE) as leader:
        populate(leader, b"L", 50)
        leader.write_image(tmp_path / "img")
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        populate(follower, b"F", 10)
        batch = follower.begin()
        batch.put_meta(b"raft_hard_state", b"follower's vote")
        batch.commit()
        stale = follower.snapshot()
        follower.install_image(tmp_path / "img", log_after=41, keep_meta=[b"identity", b"raft_hard_state"])
        stale.close()
        assert not (tmp_path / "img").exists()  # consumed
        assert sorted(os.listdir(tmp_path / "f")) == ["data.mdb", "lock.mdb"]
        batch = follower.begin()  # the store is usable at once, its log continues after 41
        batch.append_entries([Entry(42, 3, b"next")])
        batch.commit()
    got = contents(tmp_path / "f")
    assert got["keys"] == [b"L%05d" % i for i in range(50)]
    assert got["applied"] == b"L"
    assert got["identity"] == b"member-F" and got["hard_state"] == b"follower's vote"
    assert got["log"] == (42, 42)


def test_install_deletes_kept_records_this_store_does_not_have(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "leader", MAP_SIZE) as leader:
        populate(leader, b"L", 1)
        b = leader.begin()
        b.put_meta(b"raft_hard_state", b"leader's")
        b.commit()
        leader.write_image(tmp_path / "img")
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        follower.install_image(tmp_path / "img", log_after=0, keep_meta=[b"raft_hard_state"])
    assert contents(tmp_path / "f")["hard_state"] is None


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:100], id="a few bytes"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: os.urandom(len(data)), id="not lmdb"),
    ],
)
def test_a_damaged_image_is_refused_and_the_store_is_untouched(tmp_path: Path, damage: object) -> None:
    with LmdbStore(tmp_path / "leader", MAP_SIZE) as leader:
        populate(leader, b"L", 300)
        leader.write_image(tmp_path / "img")
    img = tmp_path / "img"
    img.write_bytes(damage(img.read_bytes()))  # type: ignore[operator]
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        populate(follower, b"F", 10)
        with pytest.raises(StorageError, match="snapshot image"):
            follower.install_image(img, log_after=5)
        with follower.snapshot() as view:  # still open and serving the old data
            assert view.get(b"F00001") is not None
        assert sorted(os.listdir(tmp_path / "f")) == ["data.mdb", "lock.mdb"]
    assert contents(tmp_path / "f")["keys"] == [b"F%05d" % i for i in range(10)]


def test_a_foreign_store_is_refused(tmp_path: Path) -> None:
    import lmdb

    env = lmdb.open(str(tmp_path / "foreign"), map_size=MAP_SIZE)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        with pytest.raises(StorageError, match="not an rusd store"):
            follower.install_image(tmp_path / "foreign" / "data.mdb", log_after=0)
        with pytest.raises(ValueError):
            follower.install_image(tmp_path / "x", log_after=-1)
        with pytest.raises(StorageError, match="cannot install"):
            follower.install_image(tmp_path / "missing", log_after=0)
        batch = follower.begin()
        with pytest.raises(RuntimeError, match="batch"):
            follower.install_image(tmp_path / "x", log_after=0)
        batch.abort()


def test_a_half_staged_image_left_by_a_crash_never_becomes_the_store(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "leader", MAP_SIZE) as leader:
        populate(leader, b"L", 300)
        leader.write_image(tmp_path / "img")
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        populate(follower, b"F", 10)
    scratch = tmp_path / "f" / ".rusd-install"
    scratch.mkdir()
    data = (tmp_path / "img").read_bytes()
    (scratch / "data.mdb").write_bytes(data[: len(data) // 3])
    assert contents(tmp_path / "f")["keys"] == [b"F%05d" % i for i in range(10)]
    assert not scratch.exists()  # removed when the store was opened


# A child process installs an image and dies (os._exit: no cleanup, no close) at one
# step; the parent then opens the data dir as a restart would.
CHILD = """
import os, sys
import rusd.storage.lmdb as m
from rusd.storage.lmdb import LmdbStore

store_dir, image, step = sys.argv[1], sys.argv[2], sys.argv[3]
live = os.path.join(store_dir, "data.mdb")
real_replace, real_prepare, real_fsync = os.replace, m.LmdbStore._prepare_image, m._fsync

def replace(src, dst):
    if step == "before-swap" and os.fspath(dst) == live:
        os._exit(9)
    real_replace(src, dst)
    if step == "after-swap" and os.fspath(dst) == live:
        os._exit(9)

def prepare(h, path, kept, log_after):
    if step == "while-staging":
        os._exit(9)
    real_prepare(h, path, kept, log_after)

def fsync(path):
    if step == "before-dir-fsync" and path == store_dir:
        os._exit(9)
    real_fsync(path)

os.replace = replace
m.LmdbStore._prepare_image = staticmethod(prepare)
m._fsync = fsync
store = LmdbStore(store_dir, 64 << 20)
store.install_image(image, log_after=300, keep_meta=[b"identity"])
os._exit(0)
"""


@pytest.mark.parametrize(
    ("step", "survivor"),
    [
        ("while-staging", b"F"),
        ("before-swap", b"F"),
        ("after-swap", b"L"),
        ("before-dir-fsync", b"L"),
        ("none", b"L"),
    ],
)
def test_a_crash_at_any_step_leaves_the_old_or_the_new_store_whole(
    tmp_path: Path, step: str, survivor: bytes
) -> None:
    with LmdbStore(tmp_path / "leader", MAP_SIZE) as leader:
        populate(leader, b"L", 300)
        leader.write_image(tmp_path / "img")
    with LmdbStore(tmp_path / "f", MAP_SIZE) as follower:
        populate(follower, b"F", 10)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "f"), str(tmp_path / "img"), step],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == (0 if step == "none" else 9), proc.stderr.decode()
    got = contents(tmp_path / "f")
    n = 300 if survivor == b"L" else 10
    assert got["keys"] == [survivor + b"%05d" % i for i in range(n)]
    assert got["identity"] == b"member-F"  # the new store carries the member's own record
    assert got["log"] == ((301, 300) if survivor == b"L" else (1, 5))
    assert not (tmp_path / "f" / ".rusd-install").exists()
