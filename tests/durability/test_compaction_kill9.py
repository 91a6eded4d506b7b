"""Deletes and compaction survive kill -9."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10, **kwargs)
    return info.value


def keys_at(kv: pb_grpc.KVStub, revision: int = 0) -> dict[bytes, tuple[bytes, int]]:
    resp = kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0", revision=revision), timeout=10)
    return {x.key: (x.value, x.mod_revision) for x in resp.kvs}


@pytest.mark.parametrize("physical", [True, False], ids=["physical", "logical"])
def test_compaction_and_deletes_survive_kill9(tmp_path: Path, physical: bool) -> None:
    data_dir = tmp_path / "data"
    server = servers.rusd(tmp_path, data_dir=data_dir).start()
    try:
        with grpc.insecure_channel(server.endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            revs = {}
            for key, value in [(b"a", b"1"), (b"b", b"1"), (b"p/1", b"x"), (b"p/2", b"y"), (b"a", b"2")]:
                revs[key] = kv.Put(pb.PutRequest(key=key, value=value), timeout=10).header.revision
            assert revs[b"a"] == 6
            assert kv.DeleteRange(pb.DeleteRangeRequest(key=b"b"), timeout=10).deleted == 1  # rev 7
            deleted = kv.DeleteRange(pb.DeleteRangeRequest(key=b"p/", range_end=b"p0"), timeout=10)  # rev 8
            assert (deleted.deleted, deleted.header.revision) == (2, 8)
            kv.Put(pb.PutRequest(key=b"c", value=b"3"), timeout=10)  # rev 9
            before = {rev: keys_at(kv, rev) for rev in (7, 8, 9)}
            kv.Compact(pb.CompactionRequest(revision=7, physical=physical), timeout=10)
        server.kill()

        server = servers.rusd(tmp_path, data_dir=data_dir).start()
        with grpc.insecure_channel(server.endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            latest = kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), timeout=10)
            assert latest.header.revision == 9
            assert {x.key: x.value for x in latest.kvs} == {b"a": b"2", b"c": b"3"}
            # Below the compact revision: compacted, for ranges and for compactions.
            for rev in (1, 2, 6):
                err = rpc_error(kv.Range, pb.RangeRequest(key=b"a", revision=rev))
                assert (err.code(), err.details()) == (grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
            for rev in (6, 7):
                err = rpc_error(kv.Compact, pb.CompactionRequest(revision=rev))
                assert (err.code(), err.details()) == (grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
            # From the compact revision on, history reads as before the kill.
            for rev, expected in before.items():
                assert keys_at(kv, rev) == expected, rev
            assert keys_at(kv, 7) == {b"a": (b"2", 6), b"p/1": (b"x", 4), b"p/2": (b"y", 5)}
            # The revision continues, and a later compaction works.
            assert kv.Put(pb.PutRequest(key=b"d", value=b"4"), timeout=10).header.revision == 10
            kv.Compact(pb.CompactionRequest(revision=9, physical=True), timeout=10)
            err = rpc_error(kv.Range, pb.RangeRequest(key=b"a", revision=8))
            assert (err.code(), err.details()) == (grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
        # And that one survives a kill too.
        server.kill()
        server = servers.rusd(tmp_path, data_dir=data_dir).start()
        with grpc.insecure_channel(server.endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            err = rpc_error(kv.Range, pb.RangeRequest(key=b"a", revision=8))
            assert (err.code(), err.details()) == (grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
            assert keys_at(kv, 9) == {b"a": (b"2", 6), b"c": (b"3", 9)}
            assert keys_at(kv) == {b"a": (b"2", 6), b"c": (b"3", 9), b"d": (b"4", 10)}
        # etcdctl sees the same.
        got = servers.etcdctl(server.endpoint, "get", "a", "--rev=3", check=False)
        assert got.returncode != 0 and "required revision has been compacted" in got.stderr
    finally:
        server.kill()
    assert "Traceback" not in server.log()
