"""Bad requests are refused with etcd's errors; the server stays up, the data intact,
and a refused request does not move the revision."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

MIB = 1024 * 1024
SC = grpc.StatusCode
KEYS = {b"a": b"1", b"b": b"2", b"dir/x": b"3", b"big": b"y" * (MIB // 2)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.ServerProcess]:
    tmp = tmp_path_factory.mktemp("badrequests")
    proc = servers.rusd(tmp).start()
    try:
        with grpc.insecure_channel(proc.endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            for key, value in KEYS.items():
                kv.Put(pb.PutRequest(key=key, value=value), timeout=10)
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def channel(server: servers.ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.endpoint) as ch:
        yield ch


def snapshot(channel: grpc.Channel) -> tuple[int, dict[bytes, tuple[bytes, int, int]]]:
    resp = pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"\0", range_end=b"\0"), timeout=10)
    return resp.header.revision, {x.key: (x.value, x.mod_revision, x.version) for x in resp.kvs}


def raw(channel: grpc.Channel, method: str) -> Callable[..., Any]:
    """A call that sends and returns raw bytes (no protobuf on our side)."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def put(value_len: int = 1, **kw: Any) -> Callable[[grpc.Channel], Any]:
    kw.setdefault("key", b"new")
    return lambda ch: pb_grpc.KVStub(ch).Put(pb.PutRequest(value=b"x" * value_len, **kw), timeout=10)


def txn(*ops: pb.RequestOp, **kw: Any) -> Callable[[grpc.Channel], Any]:
    return lambda ch: pb_grpc.KVStub(ch).Txn(pb.TxnRequest(success=list(ops), **kw), timeout=10)


def put_op(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"v"))


def range_(**kw: Any) -> Callable[[grpc.Channel], Any]:
    return lambda ch: pb_grpc.KVStub(ch).Range(pb.RangeRequest(**kw), timeout=10)


INVALID = "etcdserver: "
# name -> (call, expected status code, expected details; None: any details)
BAD: dict[str, tuple[Callable[[grpc.Channel], Any], SC, str | None]] = {
    "value-over-max-request-bytes": (put(1536 * 1024), SC.INVALID_ARGUMENT, "etcdserver: request is too large"),
    "value-over-grpc-limit": (put(2 * MIB + 1), SC.RESOURCE_EXHAUSTED, None),
    "txn-over-max-request-bytes": (
        txn(
            *[put_op(b"t%d" % i) for i in range(2)],
            failure=[pb.RequestOp(request_put=pb.PutRequest(key=b"f", value=b"x" * (1536 * 1024)))],
        ),
        SC.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    ),
    "empty-key-put": (put(key=b""), SC.INVALID_ARGUMENT, "etcdserver: key is not provided"),
    "empty-key-range": (range_(key=b""), SC.INVALID_ARGUMENT, "etcdserver: key is not provided"),
    "empty-key-delete": (
        lambda ch: pb_grpc.KVStub(ch).DeleteRange(pb.DeleteRangeRequest(key=b""), timeout=10),
        SC.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    ),
    "unknown-lease": (put(lease=0x1234567), SC.NOT_FOUND, "etcdserver: requested lease not found"),
    "unknown-lease-in-txn": (
        txn(pb.RequestOp(request_put=pb.PutRequest(key=b"l", value=b"v", lease=99))),
        SC.NOT_FOUND,
        "etcdserver: requested lease not found",
    ),
    # etcd 3.4.23 crashes (nil dereference) on an unknown sort target as soon as it
    # has to sort; etcd 3.6, and rusd, refuse it.
    "invalid-sort-target": (range_(key=b"a", sort_target=9), SC.INVALID_ARGUMENT, "etcdserver: invalid sort option"),
    "invalid-sort-target-ascend": (
        range_(key=b"a", sort_target=9, sort_order=pb.RangeRequest.ASCEND),
        SC.INVALID_ARGUMENT,
        "etcdserver: invalid sort option",
    ),
    "too-many-txn-ops": (
        txn(*[put_op(b"t%d" % i) for i in range(129)]),
        SC.INVALID_ARGUMENT,
        "etcdserver: too many operations in txn request",
    ),
    "duplicate-key-in-txn": (
        txn(put_op(b"a"), put_op(b"a")),
        SC.INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    ),
    "put-and-delete-same-key-in-txn": (
        txn(put_op(b"a"), pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"a"))),
        SC.INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    ),
    "range-future-revision": (
        range_(key=b"a", revision=1000),
        SC.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    ),
    "compact-future-revision": (
        lambda ch: pb_grpc.KVStub(ch).Compact(pb.CompactionRequest(revision=1000), timeout=10),
        SC.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    ),
    "unknown-method": (lambda ch: raw(ch, "/etcdserverpb.KV/Nope")(b"", timeout=10), SC.UNIMPLEMENTED, None),
    "unknown-service": (lambda ch: raw(ch, "/nosuch.Service/Put")(b"", timeout=10), SC.UNIMPLEMENTED, None),
}

# Bytes that are not a PutRequest: invalid wire types, a length running past the end,
# a truncated varint.
GARBAGE = {
    "bad-wire-type": b"\xff\xff\xff\xff\xff",
    "length-past-end": b"\x0a\xff\xff\xff\xff\x0f",
    "truncated-varint": b"\x08",
    "random": bytes(range(7, 256, 3)) * 10,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_refused_without_effect(server: servers.ServerProcess, channel: grpc.Channel, case: str) -> None:
    call, code, details = BAD[case]
    before = snapshot(channel)
    log_before = len(server.log())
    with pytest.raises(grpc.RpcError) as info:
        call(channel)
    assert info.value.code() == code, info.value.details()
    if details is not None:
        assert info.value.details() == details
    assert snapshot(channel) == before
    assert "Traceback" not in server.log()[log_before:]


def test_unknown_sort_order_is_served_unsorted_like_etcd_34(channel: grpc.Channel) -> None:
    """etcd 3.4 does not check sort_order: an unknown one sorts nothing."""
    resp = range_(key=b"a", range_end=b"c", sort_order=7, sort_target=pb.RangeRequest.VALUE)(channel)
    assert [x.key for x in resp.kvs] == [b"a", b"b", b"big"]


@pytest.mark.parametrize("payload", list(GARBAGE))
def test_garbage_payload_is_answered_with_an_error(channel: grpc.Channel, payload: str) -> None:
    before = snapshot(channel)
    for method in ("/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Range"):
        with pytest.raises(grpc.RpcError) as info:
            raw(channel, method)(GARBAGE[payload], timeout=10)
        # An error from the server, not a dropped connection.
        assert info.value.code() not in (SC.OK, SC.UNAVAILABLE, SC.DEADLINE_EXCEEDED), info.value
    assert snapshot(channel) == before


def test_garbage_payload_is_answered_like_etcd(server: servers.ServerProcess, channel: grpc.Channel) -> None:
    log_before = len(server.log())
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, "/etcdserverpb.KV/Put")(GARBAGE["bad-wire-type"], timeout=10)
    assert info.value.code() == SC.INTERNAL
    assert "Traceback" not in server.log()[log_before:]


def test_server_still_serves_after_bad_requests(server: servers.ServerProcess, channel: grpc.Channel) -> None:
    """Runs after the others (file order): everything first written is intact and
    writes still work, at the very next revision."""
    for call, _, _ in BAD.values():
        with pytest.raises(grpc.RpcError):
            call(channel)
    for payload in GARBAGE.values():
        with pytest.raises(grpc.RpcError):
            raw(channel, "/etcdserverpb.KV/Put")(payload, timeout=10)
    revision, kvs = snapshot(channel)
    assert revision == 1 + len(KEYS)
    assert {k: v for k, (v, _, _) in kvs.items()} == KEYS
    kv = pb_grpc.KVStub(channel)
    assert kv.Put(pb.PutRequest(key=b"after", value=b"ok"), timeout=10).header.revision == revision + 1
    got = servers.etcdctl(server.endpoint, "get", "after", "--print-value-only")
    assert got.stdout.strip() == "ok"
    assert server.proc is not None and server.proc.poll() is None
