"""The permission matrix, differential: a seeded random set of users, roles and
permissions (single keys, ranges, prefixes, from-key), then random operations by random
users (range, put, delete, txn, watch create, lease revoke) against rusd and a real
etcd; each decision (and what an allowed read returned) must be the same on both,
down to empty and inverted ranges.

Not drawn: nested txns and from-key watches, where rusd is deliberately stricter than
etcd 3.4 (which skips nested txns and checks a from-key watch as its first key only);
tests/badinput/test_auth_tokens.py covers both."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from rusd.api.authpb import auth_pb2
from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.conformance.harness import ETCD_FAST, require_etcd
from tests.servers import ServerProcess, etcd, rusd

SEEDS = (20261125, 7, 1234)
KEYS = [b"a", b"a0", b"a1", b"ab", b"b", b"b0", b"b1", b"c", b"c0", b"d", b"e"]
USERS = ["u0", "u1", "u2", "u3"]
ROLES = ["r0", "r1", "r2", "r3", "r4"]
OPERATIONS = 1500


@dataclass
class Server:
    process: ServerProcess
    channel: grpc.Channel
    tokens: dict[str, str]

    def md(self, user: str) -> list[tuple[str, str]]:
        return [("token", self.tokens[user])]

    @property
    def kv(self) -> pb_grpc.KVStub:
        return pb_grpc.KVStub(self.channel)


def prefix_end(key: bytes) -> bytes:
    return key[:-1] + bytes([key[-1] + 1])


def random_range(rng: random.Random, from_key: bool = True) -> tuple[bytes, bytes]:
    """A single key, a prefix, a range, a from-key range or (rarely) an empty or
    inverted range, which etcd's interval tree decides by its shape."""
    key = rng.choice(KEYS)
    kinds = ["key", "prefix", "range", "range", "inverted"] + (["from"] if from_key else [])
    kind = rng.choice(kinds)
    if kind == "key":
        return key, b""
    if kind == "prefix":
        return key, prefix_end(key)
    if kind == "from":
        return key, b"\x00"
    if kind == "inverted":
        return key, rng.choice([k for k in KEYS if k <= key])
    end = rng.choice([k for k in KEYS if k > key] or [b"f"])
    return key, end


def permission(rng: random.Random) -> auth_pb2.Permission:
    key, end = random_range(rng)
    return auth_pb2.Permission(permType=rng.choice([0, 1, 2]), key=key, range_end=end)  # type: ignore[arg-type]


def outcome(call: Any) -> tuple[str, ...]:
    try:
        return ("ok", *call())
    except grpc.RpcError as e:
        return ("error", e.code().name, e.details() or "")


def setup(servers: list[Server], rng: random.Random) -> None:
    """Root, then random roles and users (the same requests to both servers)."""
    plan: list[tuple[str, Any]] = [
        ("UserAdd", pb.AuthUserAddRequest(name="root", password="rootpw")),
        ("UserGrantRole", pb.AuthUserGrantRoleRequest(user="root", role="root")),
    ]
    for role in ROLES:
        plan.append(("RoleAdd", pb.AuthRoleAddRequest(name=role)))
        for _ in range(rng.randint(1, 3)):
            plan.append(("RoleGrantPermission", pb.AuthRoleGrantPermissionRequest(name=role, perm=permission(rng))))
    for user in USERS:
        plan.append(("UserAdd", pb.AuthUserAddRequest(name=user, password=user + "pw")))
        for role in rng.sample(ROLES, rng.randint(0, 3)):
            plan.append(("UserGrantRole", pb.AuthUserGrantRoleRequest(user=user, role=role)))
    plan.append(("AuthEnable", pb.AuthEnableRequest()))
    for s in servers:
        stub = pb_grpc.AuthStub(s.channel)
        for method, req in plan:
            getattr(stub, method)(req, timeout=10, metadata=s.md("root") if "root" in s.tokens else None)
            if method == "AuthEnable":
                for user in ["root", *USERS]:
                    r = stub.Authenticate(pb.AuthenticateRequest(name=user, password=user + "pw"), timeout=10)
                    s.tokens[user] = r.token


def request_op(rng: random.Random) -> pb.RequestOp:
    kind = rng.choice(["range", "put", "delete"])
    key, end = random_range(rng)
    if kind == "range":
        return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=end))
    if kind == "put":
        return pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"v"))
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end, prev_kv=rng.random() < 0.3))


def watch_create(s: Server, user: str, key: bytes, end: bytes) -> tuple[str, ...]:
    requests = iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=end))])
    call = pb_grpc.WatchStub(s.channel).Watch(requests, timeout=10, metadata=s.md(user))
    try:
        first = next(call)
        return ("ok", str(first.canceled), first.cancel_reason)
    finally:
        call.cancel()


def run_op(servers: list[Server], rng: random.Random, n: int) -> list[tuple[str, ...]]:
    """One random operation, the same on both servers; returns each server's outcome."""
    user = rng.choice(USERS)
    kind = rng.choice(["range", "range", "put", "delete", "txn", "txn", "watch", "lease"])
    key, end = random_range(rng, from_key=kind != "watch")
    txn = pb.TxnRequest()
    if kind == "txn":
        for _ in range(rng.randint(0, 2)):
            ckey, cend = random_range(rng)
            txn.compare.append(pb.Compare(key=ckey, range_end=cend, target=pb.Compare.VERSION,
                                          result=pb.Compare.GREATER, version=0))
        txn.success.extend(request_op(rng) for _ in range(rng.randint(0, 2)))
        txn.failure.extend(request_op(rng) for _ in range(rng.randint(0, 2)))
    lease_id, lease_keys = 1000 + n, rng.sample(KEYS, rng.randint(1, 3))
    return [run_on(s, user, kind, key, end, txn, lease_id, lease_keys) for s in servers]


def run_on(s: Server, user: str, kind: str, key: bytes, end: bytes, txn: pb.TxnRequest, lease_id: int,
           lease_keys: list[bytes]) -> tuple[str, ...]:
    md = s.md(user)
    lease = pb_grpc.LeaseStub(s.channel)
    if kind == "range":
        req = pb.RangeRequest(key=key, range_end=end)
        return outcome(lambda: [kv.key.decode() for kv in s.kv.Range(req, timeout=10, metadata=md).kvs])
    if kind == "put":
        return outcome(lambda: [str(s.kv.Put(pb.PutRequest(key=key, value=b"v"), timeout=10, metadata=md).header
                                    .revision > 0)])
    if kind == "delete":
        req_d = pb.DeleteRangeRequest(key=key, range_end=end)
        return outcome(lambda: [str(s.kv.DeleteRange(req_d, timeout=10, metadata=md).deleted)])
    if kind == "txn":
        return outcome(lambda: [str(s.kv.Txn(txn, timeout=10, metadata=md).succeeded)])
    if kind == "watch":
        return outcome(lambda: watch_create(s, user, key, end))
    root = s.md("root")
    lease.LeaseGrant(pb.LeaseGrantRequest(ID=lease_id, TTL=600), timeout=10, metadata=root)
    for k in lease_keys:
        s.kv.Put(pb.PutRequest(key=k, value=b"l", lease=lease_id), timeout=10, metadata=root)
    revoke = pb.LeaseRevokeRequest(ID=lease_id)
    return outcome(lambda: [str(lease.LeaseRevoke(revoke, timeout=10, metadata=md).header.revision > 0)])


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    require_etcd()
    tmp = tmp_path_factory.mktemp("matrix")
    started = [rusd(tmp, "--bcrypt-cost", "4").start()]
    try:
        started.append(etcd(tmp, *ETCD_FAST, "--bcrypt-cost", "4").start())
        yield [Server(p, grpc.insecure_channel(p.endpoint), {}) for p in started]
    finally:
        for p in started:
            p.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_permission_matrix_matches_etcd(servers: list[Server], seed: int) -> None:
    rng = random.Random(seed)
    setup(servers, rng)
    decisions = {"ok": 0, "error": 0}
    for n in range(OPERATIONS):
        r, e = run_op(servers, rng, n)
        assert r == e, f"operation {n} (seed {seed}): rusd {r} != etcd {e}"
        decisions[r[0]] += 1
    # the matrix must exercise both answers, not only refusals
    assert decisions["ok"] > OPERATIONS // 10 and decisions["error"] > OPERATIONS // 10, decisions
