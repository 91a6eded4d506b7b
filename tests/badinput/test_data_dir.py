"""Damaged, foreign and half-written data dirs.

What cannot be ours or is damaged is refused: exit status 1, one clear line on stderr
naming the path and the problem, no traceback, and the files left exactly as they were.
What only looks like an interrupted first start (nothing stored yet) starts fresh.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

KEYS = {b"k%03d" % i: b"v%03d" % i * 50 for i in range(200)}


def store_dir(data_dir: Path) -> Path:
    return data_dir / "member" / "rusd"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under root, with the file contents' hashes (lock.mdb
    excluded: it is LMDB's reader table, rewritten by every open)."""
    out: dict[str, str] = {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.name == "lock.mdb":
            out[rel] = "lock"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def run_to_exit(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Start rusd on data_dir and wait for it to exit (it should refuse to start)."""
    argv = servers.rusd(tmp_path, data_dir=data_dir).argv
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rusd started on {data_dir} instead of refusing it")


def assert_refused(proc: subprocess.CompletedProcess[str], path: Path, *problem: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rusd:")]
    assert len(lines) == 1, out
    assert str(path) in lines[0], out
    assert any(p.lower() in lines[0].lower() for p in problem), out


def check_keys(endpoint: str, expected: dict[bytes, bytes]) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        resp = pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), timeout=10)
    assert {kv.key: kv.value for kv in resp.kvs} == expected
    return resp.header.revision


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding KEYS, written by rusd and cleanly stopped."""
    tmp = tmp_path_factory.mktemp("populated")
    server = servers.rusd(tmp).start()
    try:
        with grpc.insecure_channel(server.endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            for key, value in KEYS.items():
                kv.Put(pb.PutRequest(key=key, value=value), timeout=10)
        assert server.stop() == 0
    finally:
        server.kill()
    return server.data_dir


@pytest.fixture
def data_dir(tmp_path: Path, populated: Path) -> Path:
    """A private copy of the populated data dir."""
    d = tmp_path / "data"
    shutil.copytree(populated, d)
    return d


# -- damaged stores: refuse, touch nothing ---------------------------------------------


def truncate_1000(data: Path) -> None:
    os.truncate(data, 1000)


def truncate_to_one_page(data: Path) -> None:
    os.truncate(data, 4096)


def truncate_half(data: Path) -> None:
    os.truncate(data, data.stat().st_size // 2 // 4096 * 4096)


def empty_file(data: Path) -> None:
    os.truncate(data, 0)


def garbage(data: Path) -> None:
    data.write_bytes(random.Random(1).randbytes(data.stat().st_size))


def garbage_after_meta_pages(data: Path) -> None:
    """The two meta pages intact (LMDB opens it), every tree page garbage."""
    with open(data, "r+b") as f:
        f.seek(2 * 4096)
        f.write(random.Random(2).randbytes(data.stat().st_size - 2 * 4096))


def zeroed_tree_pages(data: Path) -> None:
    """The meta pages intact, the pages they point to zeroed."""
    with open(data, "r+b") as f:
        f.seek(2 * 4096)
        f.write(bytes(data.stat().st_size - 2 * 4096))


DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "truncated-1000-bytes": (truncate_1000, ("truncated", "not an LMDB file")),
    "truncated-one-page": (truncate_to_one_page, ("truncated", "not an LMDB file")),
    "truncated-half": (truncate_half, ("truncated",)),
    "empty-data-mdb": (empty_file, ("empty",)),
    "garbage": (garbage, ("not an LMDB file", "corrupt")),
    "garbage-after-meta-pages": (garbage_after_meta_pages, ("corrupt", "not an rusd store")),
    "zeroed-tree-pages": (zeroed_tree_pages, ("corrupt", "not an rusd store")),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_data_file_is_refused_and_left_alone(tmp_path: Path, data_dir: Path, case: str) -> None:
    damage, problem = DAMAGE[case]
    damage(store_dir(data_dir) / "data.mdb")
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, store_dir(data_dir), *problem)
    assert tree_digest(data_dir) == before


# -- not a store at all: refuse, touch nothing -------------------------------------------


def test_store_path_is_a_file(tmp_path: Path, data_dir: Path) -> None:
    shutil.rmtree(store_dir(data_dir))
    store_dir(data_dir).write_bytes(b"not a directory\n")
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, store_dir(data_dir), "not a directory")
    assert tree_digest(data_dir) == before


def test_member_path_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "member").write_bytes(b"not a directory\n")
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, data_dir / "member", "not a directory")
    assert tree_digest(data_dir) == before


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_bytes(b"not a directory\n")
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, data_dir, "not a directory")
    assert data_dir.read_bytes() == b"not a directory\n"


def test_etcd_data_dir_is_refused(tmp_path: Path) -> None:
    etcd = servers.etcd(tmp_path).start()
    try:
        servers.etcdctl(etcd.endpoint, "put", "from-etcd", "1")
        etcd.stop()
    finally:
        etcd.kill()
    data_dir = etcd.data_dir
    assert (data_dir / "member" / "wal").is_dir() and (data_dir / "member" / "snap" / "db").is_file()
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, data_dir, "written by etcd")
    assert tree_digest(data_dir) == before  # nothing added (no member/rusd) or changed


def test_hand_made_etcd_layout_is_refused_even_next_to_a_store(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "member" / "wal").mkdir()
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, data_dir, "written by etcd")
    assert tree_digest(data_dir) == before


# -- half-written data dirs ----------------------------------------------------------------


def empty_data_dir(d: Path) -> None:
    d.mkdir()


def empty_member_dir(d: Path) -> None:
    (d / "member").mkdir(parents=True)


def empty_store_dir(d: Path) -> None:
    store_dir(d).mkdir(parents=True)


def interrupted_creation(d: Path) -> None:
    """A crash while the store was being created: only the scratch dir, half done."""
    scratch = store_dir(d) / ".rusd-init"
    scratch.mkdir(parents=True)
    (scratch / "data.mdb").write_bytes(b"\0" * 1000)
    (scratch / "lock.mdb").write_bytes(b"\0" * 100)


@pytest.mark.parametrize(
    "make",
    [empty_data_dir, empty_member_dir, empty_store_dir, interrupted_creation],
    ids=lambda f: f.__name__.replace("_", "-"),
)
def test_nothing_stored_yet_starts_fresh(tmp_path: Path, make: Callable[[Path], None]) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        assert check_keys(server.endpoint, {}) == 1
        with grpc.insecure_channel(server.endpoint) as channel:
            assert pb_grpc.KVStub(channel).Put(pb.PutRequest(key=b"x", value=b"1"), timeout=10).header.revision == 2
        assert server.stop() == 0
    finally:
        server.kill()
    assert sorted(p.name for p in store_dir(data_dir).iterdir()) == ["data.mdb", "lock.mdb"]
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        assert check_keys(server.endpoint, {b"x": b"1"}) == 2
    finally:
        server.kill()


def test_lock_file_without_data_file_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """lock.mdb is only ever created next to an existing data.mdb (a new store's data
    file is created elsewhere and renamed in): lock.mdb alone means the data file was
    lost, and starting empty would silently serve an empty store."""
    (store_dir(data_dir) / "data.mdb").unlink()
    before = tree_digest(data_dir)
    proc = run_to_exit(tmp_path, data_dir)
    assert_refused(proc, store_dir(data_dir), "data.mdb")
    assert tree_digest(data_dir) == before


def test_data_file_without_lock_file_starts_with_its_data(tmp_path: Path, data_dir: Path) -> None:
    """A copy of data.mdb alone (e.g. a backup) is a whole store."""
    (store_dir(data_dir) / "lock.mdb").unlink()
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        assert check_keys(server.endpoint, KEYS) == 1 + len(KEYS)
    finally:
        server.kill()


def test_leftover_defragment_scratch_is_ignored(tmp_path: Path, data_dir: Path) -> None:
    """A crash during defragmentation leaves a partial copy next to the old data.mdb,
    which is still whole: start on the old data."""
    scratch = store_dir(data_dir) / ".rusd-defrag"
    scratch.mkdir()
    (scratch / "data.mdb").write_bytes(os.urandom(10000))
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        assert check_keys(server.endpoint, KEYS) == 1 + len(KEYS)
    finally:
        server.kill()
