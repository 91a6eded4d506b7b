"""etcdctl user/role/auth commands and `--user` against rusd and a real etcd side by
side: every output, exit code and refusal text (etcd 3.4's etcdctl has no
`auth status`; AuthStatus is tested against rusd alone in tests/badinput)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conformance.harness import ETCD_FAST, Out, Pair, require_etcd, stop_pair
from tests.servers import etcd, rusd

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:alicepw")


# Every etcdctl --user run authenticates: the cheapest bcrypt cost keeps that quick.
FAST_BCRYPT = ("--bcrypt-cost", "4")


def start(tmp: Path, *options: str) -> Pair:
    require_etcd()
    r = rusd(tmp, *FAST_BCRYPT, *options).start()
    try:
        e = etcd(tmp, *ETCD_FAST, *FAST_BCRYPT, *options).start()
    except BaseException:
        r.stop()
        raise
    return Pair(r, e)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """A fresh pair per test: auth state is cluster-wide and would leak between tests."""
    p = start(tmp_path)
    try:
        yield p
    finally:
        stop_pair(p)


@pytest.fixture
def jwt_pair(tmp_path: Path) -> Iterator[Pair]:
    """Both servers on JWT tokens (ES256), with one key pair made for the test."""
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    p = start(tmp_path, "--auth-token", f"jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl=10m")
    try:
        yield p
    finally:
        stop_pair(p)


def last_error(o: Out) -> str:
    return o.err.splitlines()[-1] if o.err else ""


def add_user(pair: Pair, name: str, password: str, *auth: str) -> Out:
    return pair.ctl(*auth, "user", "add", name, "--interactive=false", stdin=f"{password}\n")


def enable(pair: Pair) -> None:
    assert add_user(pair, "root", "rootpw").out == "User root created\n"
    # etcdctl adds the missing root role and grants it before enabling (both servers)
    assert pair.ctl("auth", "enable").out == "Authentication Enabled\n"


def test_users_and_roles_without_auth(pair: Pair) -> None:
    assert add_user(pair, "u1", "pw").out == "User u1 created\n"
    assert last_error(add_user(pair, "u1", "pw")) == "Error: etcdserver: user name already exists"
    r = pair.ctl("user", "add", "u2:pw2")
    assert r.out == "User u2 created\n"
    assert pair.ctl("user", "add", "u3", "--no-password").rc == 0
    assert pair.ctl("user", "list").out == "u1\nu2\nu3\n"
    pair.ctl("user", "list", "-w", "json")
    assert pair.ctl("role", "add", "r1").out == "Role r1 created\n"
    assert last_error(pair.ctl("role", "add", "r1")) == "Error: etcdserver: role name already exists"
    pair.ctl("role", "add", "r2")
    assert pair.ctl("role", "list").out == "r1\nr2\n"
    for args in (
        ("r1", "read", "k1"),
        ("r1", "write", "p/", "--prefix"),
        ("r1", "readwrite", "z", "--from-key"),
        ("r1", "read", "a", "c"),
        ("r1", "readwrite", "k1"),  # updates the type of an existing permission
        ("r2", "write", "w", "--prefix"),
    ):
        assert pair.ctl("role", "grant-permission", *args).out == f"Role {args[0]} updated\n"
    r = pair.ctl("role", "get", "r1")
    assert r.out.startswith("Role r1\nKV Read:\n")
    pair.ctl("role", "get", "r1", "-w", "json")
    assert last_error(pair.ctl("role", "get", "nope")) == "Error: etcdserver: role name not found"
    assert last_error(pair.ctl("role", "grant-permission", "nope", "read", "k")) == (
        "Error: etcdserver: role name not found"
    )
    assert pair.ctl("user", "grant-role", "u1", "r1").out == "Role r1 is granted to user u1\n"
    assert pair.ctl("user", "grant-role", "u1", "r2").rc == 0
    assert pair.ctl("user", "grant-role", "u1", "r1").rc == 0  # already granted: no change
    assert last_error(pair.ctl("user", "grant-role", "u1", "nope")) == "Error: etcdserver: role name not found"
    assert last_error(pair.ctl("user", "grant-role", "nobody", "r1")) == "Error: etcdserver: user name not found"
    assert pair.ctl("user", "get", "u1").out == "User: u1\nRoles: r1 r2\n"
    pair.ctl("user", "get", "u1", "--detail")
    pair.ctl("user", "get", "u1", "-w", "json")
    assert last_error(pair.ctl("user", "get", "nobody")) == "Error: etcdserver: user name not found"
    assert pair.ctl("user", "revoke-role", "u1", "r2").out == "Role r2 is revoked from user u1\n"
    assert last_error(pair.ctl("user", "revoke-role", "u1", "r2")) == (
        "Error: etcdserver: role is not granted to the user"
    )
    assert pair.ctl("role", "revoke-permission", "r1", "p/", "--prefix").out.startswith("Permission of range")
    pair.ctl("role", "revoke-permission", "r1", "z", "--from-key")
    pair.ctl("role", "revoke-permission", "r1", "a", "c")
    assert last_error(pair.ctl("role", "revoke-permission", "r1", "p/", "--prefix")) == (
        "Error: etcdserver: permission is not granted to the role"
    )
    pair.ctl("role", "get", "r1")
    r = pair.ctl("user", "passwd", "u1", "--interactive=false", stdin="newpw\n")
    assert r.out == "Password updated\n"
    assert last_error(pair.ctl("user", "passwd", "nobody", "--interactive=false", stdin="x\n")) == (
        "Error: etcdserver: user name not found"
    )
    assert pair.ctl("role", "delete", "r1").out == "Role r1 deleted\n"
    assert pair.ctl("user", "get", "u1").out == "User: u1\nRoles:\n"  # the role went with it
    assert last_error(pair.ctl("role", "delete", "r1")) == "Error: etcdserver: role name not found"
    assert pair.ctl("user", "delete", "u2").out == "User u2 deleted\n"
    assert last_error(pair.ctl("user", "delete", "u2")) == "Error: etcdserver: user name not found"
    # every change above went through the log at the same KV revision on both
    pair.ctl("user", "list", "-w", "json")
    # auth is off: --user is accepted and ignored
    assert pair.ctl("--user", "u1:newpw", "put", "k", "v").out == "OK\n"


def test_enable_disable_and_root(pair: Pair) -> None:
    assert last_error(pair.ctl("auth", "enable")) == "Error: etcdserver: root user does not exist"
    enable(pair)
    assert pair.ctl(*ROOT, "auth", "enable").out == "Authentication Enabled\n"  # again: no-op
    for args in (("get", "k"), ("put", "k", "v"), ("del", "k"), ("user", "list"), ("role", "list"),
                 ("auth", "disable"), ("user", "add", "x:y"), ("role", "add", "r")):
        assert last_error(pair.ctl(*args)) == "Error: etcdserver: user name is empty", args
    r = pair.ctl("--user", "root:wrong", "get", "k")
    assert (r.rc, last_error(r)) == (2, "Error: etcdserver: authentication failed, invalid user ID or password")
    r = pair.ctl("--user", "ghost:pw", "get", "k")
    assert last_error(r) == "Error: etcdserver: authentication failed, invalid user ID or password"
    assert pair.ctl(*ROOT, "put", "k", "v").out == "OK\n"
    assert pair.ctl(*ROOT, "get", "k").out == "k\nv\n"
    assert pair.ctl(*ROOT, "user", "list").out == "root\n"
    assert pair.ctl(*ROOT, "role", "get", "root").out == "Role root\nKV Read:\nKV Write:\n"
    assert last_error(pair.ctl(*ROOT, "user", "delete", "root")) == "Error: etcdserver: invalid auth management"
    assert last_error(pair.ctl(*ROOT, "user", "revoke-role", "root", "root")) == (
        "Error: etcdserver: invalid auth management"
    )
    assert last_error(pair.ctl(*ROOT, "role", "delete", "root")) == "Error: etcdserver: invalid auth management"
    r = pair.ctl(*ROOT, "user", "passwd", "root", "--interactive=false", stdin="rootpw2\n")
    assert r.out == "Password updated\n"
    assert last_error(pair.ctl(*ROOT, "get", "k")) == (
        "Error: etcdserver: authentication failed, invalid user ID or password"
    )
    assert pair.ctl("--user", "root:rootpw2", "auth", "disable").out == "Authentication Disabled\n"
    assert pair.ctl("auth", "disable").out == "Authentication Disabled\n"  # again: no-op
    assert pair.ctl("get", "k").out == "k\nv\n"
    # disabled: root may go now
    assert pair.ctl("user", "delete", "root").out == "User root deleted\n"


def test_permissions_of_a_user(pair: Pair) -> None:
    permissions_scenario(pair)


def test_permissions_of_a_user_with_jwt_tokens(jwt_pair: Pair) -> None:
    permissions_scenario(jwt_pair)


def permissions_scenario(pair: Pair) -> None:
    enable(pair)
    assert add_user(pair, "alice", "alicepw", *ROOT).out == "User alice created\n"
    pair.ctl(*ROOT, "role", "add", "rw")
    pair.ctl(*ROOT, "role", "add", "ro")
    pair.ctl(*ROOT, "role", "grant-permission", "rw", "readwrite", "a/", "--prefix")
    pair.ctl(*ROOT, "role", "grant-permission", "ro", "read", "r/", "--prefix")
    pair.ctl(*ROOT, "role", "grant-permission", "ro", "read", "z", "--from-key")
    pair.ctl(*ROOT, "role", "grant-permission", "rw", "write", "w")
    pair.ctl(*ROOT, "user", "grant-role", "alice", "rw")
    pair.ctl(*ROOT, "user", "grant-role", "alice", "ro")
    pair.ctl(*ROOT, "put", "r/1", "x")
    denied = "Error: etcdserver: permission denied"

    assert pair.ctl(*ALICE, "put", "a/1", "v").out == "OK\n"
    assert pair.ctl(*ALICE, "get", "a/", "--prefix").out == "a/1\nv\n"
    assert pair.ctl(*ALICE, "get", "r/", "--prefix").out == "r/1\nx\n"
    assert pair.ctl(*ALICE, "get", "zz").out == ""
    assert pair.ctl(*ALICE, "put", "w", "1").out == "OK\n"
    for args in (("put", "r/1", "y"), ("get", "w"), ("get", "a", "--prefix"), ("get", "", "--from-key"),
                 ("del", "r/1"), ("del", "w", "--prev-kv"), ("put", "b", "v"),
                 ("get", "y", "--from-key"), ("put", "w", "v", "--prev-kv")):
        assert last_error(pair.ctl(*ALICE, *args)) == denied, args
    assert pair.ctl(*ALICE, "del", "a/", "--prefix").out == "1\n"
    # a txn needs every compare and every op of both branches
    ok = 'value("a/1") = "v"\n\nput a/2 x\n\nget r/1\n\n'
    assert pair.ctl(*ALICE, "txn", "--interactive=false", stdin=ok).out == "FAILURE\n\nr/1\nx\n"
    for txn in ('value("w") = "1"\n\nput a/2 x\n\n\n', 'value("b") = "x"\n\n\n\n',
                'value("a/1") = "v"\n\nput a/2 x\n\nput r/2 x\n\n',
                'value("a/1") = "v"\n\nget w\n\n\n'):
        assert last_error(pair.ctl(*ALICE, "txn", "--interactive=false", stdin=txn)) == denied, txn
    assert pair.ctl(*ROOT, "get", "a/2").out == ""  # nothing of a refused txn applied
    # a watch on a range not readable is canceled at once
    for args in (("watch", "w"), ("watch", "a", "--prefix"), ("watch", "b")):
        r = pair.ctl(*ALICE, *args)
        assert (r.rc, r.err.splitlines()[0]) == (
            5, "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)"
        ), args
    # own user and own roles are readable, the rest is root's
    assert pair.ctl(*ALICE, "user", "get", "alice").out == "User: alice\nRoles: ro rw\n"
    pair.ctl(*ALICE, "role", "get", "ro")
    for args in (("user", "get", "root"), ("role", "get", "root"), ("user", "list"), ("role", "list"),
                 ("role", "add", "x"), ("user", "add", "bob:pw"), ("auth", "disable"),
                 ("user", "grant-role", "alice", "root"), ("role", "grant-permission", "ro", "read", "b")):
        assert last_error(pair.ctl(*ALICE, *args)) == denied, args
    # maintenance: defragment and hashes are root's, with etcd's unconverted auth error
    assert pair.ctl(*ALICE, "defrag").rc == 1
    assert pair.ctl(*ALICE, "endpoint", "hashkv").rc == 1
    assert pair.ctl(*ROOT, "defrag").rc == 0
    # compaction, alarms and member list are open to any user in etcd 3.4
    pair.ctl(*ALICE, "compaction", "1")
    pair.ctl(*ALICE, "alarm", "list")
    pair.ctl(*ALICE, "member", "list")
    # revoking a role takes effect on the next request; deleting the user ends it
    pair.ctl(*ROOT, "user", "revoke-role", "alice", "ro")
    assert last_error(pair.ctl(*ALICE, "get", "r/1")) == denied
    pair.ctl(*ROOT, "role", "revoke-permission", "rw", "a/", "--prefix")
    assert last_error(pair.ctl(*ALICE, "put", "a/1", "v")) == denied
    pair.ctl(*ROOT, "user", "delete", "alice")
    assert last_error(pair.ctl(*ALICE, "get", "a/1")) == (
        "Error: etcdserver: authentication failed, invalid user ID or password"
    )
