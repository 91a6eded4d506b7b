"""etcd's NOSPACE recovery procedure against a real rusd process: fill the quota,
see the alarm, compact, defragment, disarm, write again; no data lost on the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

QUOTA = 1_000_000
VALUE = b"v" * 100_000


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    server = servers.rusd(tmp_path, "--quota-backend-bytes", str(QUOTA)).start()
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            yield ch
    finally:
        assert server.stop() == 0


def test_nospace_alarm_then_recovery(channel: grpc.Channel) -> None:
    kv = pb_grpc.KVStub(channel)
    maint = pb_grpc.MaintenanceStub(channel)
    kv.Put(pb.PutRequest(key=b"keep", value=b"me"))
    written = 0
    with pytest.raises(grpc.RpcError) as refused:
        for i in range(100):
            kv.Put(pb.PutRequest(key=b"big/%d" % i, value=VALUE))
            written += 1
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "etcdserver: mvcc: database space exceeded"
    assert 0 < written < 100

    alarms = maint.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms
    member_id = kv.Range(pb.RangeRequest(key=b"keep")).header.member_id
    assert [(a.memberID, a.alarm) for a in alarms] == [(member_id, pb.NOSPACE)]
    status = maint.Status(pb.StatusRequest())
    assert list(status.errors) == [f"memberID:{member_id} alarm:NOSPACE "]

    # even a tiny put is refused while the alarm is on; reads and deletes work
    with pytest.raises(grpc.RpcError) as tiny:
        kv.Put(pb.PutRequest(key=b"tiny", value=b"x"))
    assert tiny.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert kv.Range(pb.RangeRequest(key=b"keep")).kvs[0].value == b"me"
    deleted = kv.DeleteRange(pb.DeleteRangeRequest(key=b"big/", range_end=b"big0"))
    assert deleted.deleted == written

    size_before = maint.Status(pb.StatusRequest()).dbSize
    kv.Compact(pb.CompactionRequest(revision=deleted.header.revision, physical=True))
    maint.Defragment(pb.DefragmentRequest())
    size_after = maint.Status(pb.StatusRequest()).dbSize
    assert size_after < size_before
    assert size_after < QUOTA

    # still refused until disarmed, as etcd
    with pytest.raises(grpc.RpcError):
        kv.Put(pb.PutRequest(key=b"tiny", value=b"x"))
    disarmed = maint.Alarm(
        pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=pb.NOSPACE)
    )
    assert [(a.memberID, a.alarm) for a in disarmed.alarms] == [(member_id, pb.NOSPACE)]
    assert maint.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms == []
    put = kv.Put(pb.PutRequest(key=b"tiny", value=b"x"))
    assert put.header.revision == deleted.header.revision + 1
    assert kv.Range(pb.RangeRequest(key=b"keep")).kvs[0].value == b"me"


def test_defragment_keeps_every_revision_readable(channel: grpc.Channel) -> None:
    kv = pb_grpc.KVStub(channel)
    maint = pb_grpc.MaintenanceStub(channel)
    revs = [kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i)).header.revision for i in range(20)]
    before = maint.HashKV(pb.HashKVRequest(revision=0))
    maint.Defragment(pb.DefragmentRequest())
    after = maint.HashKV(pb.HashKVRequest(revision=0))
    assert (after.hash, after.header.revision) == (before.hash, before.header.revision)
    for i, rev in enumerate(revs):
        got = kv.Range(pb.RangeRequest(key=b"k", revision=rev))
        assert got.kvs[0].value == b"%d" % i
