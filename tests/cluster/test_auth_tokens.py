"""Simple auth tokens in a three-member cluster, rusd against etcd 3.4: a token issued by
one member works on every member (Go clientv3 round-robins its endpoints), and a
password change or user delete taken by another member ends it on every member.

etcdctl authenticates again for every command, so the token part is a small gRPC
client: Authenticate on m1, then use the token (metadata `token`) on m2 and m3."""

from __future__ import annotations

from pathlib import Path

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, Node
from tests.servers import etcdctl


def authenticate(node: Node, name: str, password: str) -> str:
    with grpc.insecure_channel(node.endpoint) as ch:
        r = pb_grpc.AuthStub(ch).Authenticate(pb.AuthenticateRequest(name=name, password=password), timeout=10)
        return str(r.token)


def as_user(node: Node, token: str, call: str, req: object) -> str:
    """One call with the token; "OK", the values read, or "<code> <details>"."""
    md = (("token", token),)
    with grpc.insecure_channel(node.endpoint) as ch:
        try:
            if call == "put":
                pb_grpc.KVStub(ch).Put(req, metadata=md, timeout=10)
                return "OK"
            if call == "range":
                r = pb_grpc.KVStub(ch).Range(req, metadata=md, timeout=10)
                return " ".join(kv.value.decode() for kv in r.kvs)
            if call == "passwd":
                pb_grpc.AuthStub(ch).UserChangePassword(req, metadata=md, timeout=10)
                return "OK"
            assert call == "delete"
            pb_grpc.AuthStub(ch).UserDelete(req, metadata=md, timeout=10)
            return "OK"
        except grpc.RpcError as e:
            return f"{e.code().name} {e.details()}"


def token_story(c: Cluster) -> list[str]:
    """Tokens issued on one member, used on the others, then revoked through another."""
    a, b, c3 = (c.nodes[n] for n in ("m1", "m2", "m3"))
    ep = a.endpoint
    etcdctl(ep, "user", "add", "root", "--interactive=false", stdin="rootpw\n")
    etcdctl(ep, "user", "add", "alice", "--interactive=false", stdin="pw1\n")
    etcdctl(ep, "role", "add", "kv")
    etcdctl(ep, "role", "grant-permission", "kv", "readwrite", "k", "--prefix")
    etcdctl(ep, "user", "grant-role", "alice", "kv")
    assert etcdctl(ep, "auth", "enable").stdout == "Authentication Enabled\n"
    out: list[str] = []

    def step(label: str, node: Node, token: str, call: str, req: object) -> None:
        out.append(f"{label} on {node.name}: {as_user(node, token, call, req)}")

    # issued by m1, used at once on m2 and m3 (a member behind waits for the entry)
    t1 = authenticate(a, "alice", "pw1")
    step("put", b, t1, "put", pb.PutRequest(key=b"k1", value=b"v1"))
    step("range", c3, t1, "range", pb.RangeRequest(key=b"k1"))
    step("put outside", c3, t1, "put", pb.PutRequest(key=b"x", value=b"v"))
    root = authenticate(b, "root", "rootpw")
    # a password change taken by m2 ends the token on every member once applied there
    step("passwd", b, root, "passwd", pb.AuthUserChangePasswordRequest(name="alice", password="pw2"))
    c.converged()
    for node in (a, c3, b):
        step("range with the old token", node, t1, "range", pb.RangeRequest(key=b"k1"))
    # a token from the new password, issued by m3, works on m1; a user delete through m2
    # ends it everywhere
    t2 = authenticate(c3, "alice", "pw2")
    step("put", a, t2, "put", pb.PutRequest(key=b"k2", value=b"v2"))
    root = authenticate(b, "root", "rootpw")
    step("delete", b, root, "delete", pb.AuthUserDeleteRequest(name="alice"))
    c.converged()
    for node in (a, c3, b):
        step("put with the deleted user's token", node, t2, "put", pb.PutRequest(key=b"k3", value=b"v3"))
    step("range as root", c3, root, "range", pb.RangeRequest(key=b"k", range_end=b"l"))
    return out


def test_simple_tokens_work_on_every_member_and_end_on_every_member_like_etcd(tmp_path: Path) -> None:
    stories: dict[str, list[str]] = {}
    for kind in ("etcd", "rusd"):
        (tmp_path / kind).mkdir()
        c = Cluster(tmp_path / kind, kind=kind)
        try:
            c.start_all(3)
            stories[kind] = token_story(c)
        finally:
            c.stop_all()
    assert stories["rusd"] == stories["etcd"]
    assert stories["rusd"] == [
        "put on m2: OK",
        "range on m3: v1",
        "put outside on m3: PERMISSION_DENIED etcdserver: permission denied",
        "passwd on m2: OK",
        "range with the old token on m1: UNAUTHENTICATED etcdserver: invalid auth token",
        "range with the old token on m3: UNAUTHENTICATED etcdserver: invalid auth token",
        "range with the old token on m2: UNAUTHENTICATED etcdserver: invalid auth token",
        "put on m1: OK",
        "delete on m2: OK",
        "put with the deleted user's token on m1: UNAUTHENTICATED etcdserver: invalid auth token",
        "put with the deleted user's token on m3: UNAUTHENTICATED etcdserver: invalid auth token",
        "put with the deleted user's token on m2: UNAUTHENTICATED etcdserver: invalid auth token",
        "range as root on m3: v1 v2",
    ]
