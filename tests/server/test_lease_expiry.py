"""A lease with attached keys expires on a real rusd process: every key goes in one
revision, and the lease is gone. Waits by polling; asserts no durations."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

KEYS = [b"exp/b", b"exp/a", b"exp/c"]


def test_lease_expiry_deletes_attached_keys_in_one_revision(tmp_path: Path) -> None:
    server = servers.rusd(tmp_path).start()
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            kv, lease = pb_grpc.KVStub(ch), pb_grpc.LeaseStub(ch)
            granted = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2), timeout=10)
            assert granted.ID > 0 and granted.TTL == 2
            for key in KEYS:
                kv.Put(pb.PutRequest(key=key, value=b"v", lease=granted.ID), timeout=10)
            kv.Put(pb.PutRequest(key=b"exp/z", value=b"no lease"), timeout=10)
            before = kv.Range(pb.RangeRequest(key=b"exp/z"), timeout=10).header.revision
            ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=10)
            assert (ttl.grantedTTL, sorted(ttl.keys)) == (2, sorted(KEYS))

            deadline = time.monotonic() + 60
            while True:
                got = kv.Range(pb.RangeRequest(key=b"exp/", range_end=b"exp0"), timeout=10)
                if len(got.kvs) == 1:
                    break
                assert len(got.kvs) == 4, "keys of one lease were deleted in several steps"
                assert time.monotonic() < deadline, "the lease never expired"
                time.sleep(0.1)
            assert [k.key for k in got.kvs] == [b"exp/z"]
            # one revision for the three deletes
            assert got.header.revision == before + 1
            ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=granted.ID), timeout=10)
            assert (ttl.ID, ttl.TTL) == (granted.ID, -1)
            assert list(lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=10).leases) == []
            ka = list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=granted.ID)]), timeout=10))
            assert [(r.ID, r.TTL) for r in ka] == [(granted.ID, 0)]
    finally:
        assert server.stop() == 0


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    server = servers.rusd(tmp_path).start()
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            lease = pb_grpc.LeaseStub(ch)
            lease.LeaseGrant(pb.LeaseGrantRequest(ID=0x1234, TTL=600), timeout=10)
            pb_grpc.KVStub(ch).Put(pb.PutRequest(key=b"r/k", value=b"v", lease=0x1234), timeout=10)
        assert server.stop() == 0
        server.start()
        with grpc.insecure_channel(server.endpoint) as ch:
            lease = pb_grpc.LeaseStub(ch)
            ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=0x1234, keys=True), timeout=10)
            assert (ttl.grantedTTL, list(ttl.keys)) == (600, [b"r/k"])
            assert 0 < ttl.TTL <= 601
            lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=0x1234), timeout=10)
            assert list(pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"r/k"), timeout=10).kvs) == []
    finally:
        server.stop()
