"""Bad credentials against rusd: wrong passwords (and their rate limit), forged,
tampered, expired and stale JWTs, deleted users' and unknown simple tokens, bad
--auth-token options. Each is refused with etcd's error, nothing is written, and the
server keeps serving everyone else."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rusd.api.authpb import auth_pb2
from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers

SC = grpc.StatusCode
INVALID_TOKEN = (SC.UNAUTHENTICATED, "etcdserver: invalid auth token")
AUTH_FAILED = (SC.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
DENIED = (SC.PERMISSION_DENIED, "etcdserver: permission denied")


def rsa_pair(tmp: Path, name: str) -> tuple[Path, Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp / f"{name}.key").write_bytes(priv)
    (tmp / f"{name}.pub").write_bytes(pub)
    return tmp / f"{name}.pub", tmp / f"{name}.key", priv


def err(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    raise AssertionError("the call was not refused")


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = pb_grpc.KVStub(channel)
        self.auth = pb_grpc.AuthStub(channel)
        self.watch = pb_grpc.WatchStub(channel)
        self.lease = pb_grpc.LeaseStub(channel)

    def token(self, name: str, password: str) -> str:
        return str(self.auth.Authenticate(pb.AuthenticateRequest(name=name, password=password), timeout=10).token)

    def put(self, token: str, key: bytes) -> object:
        return lambda: self.kv.Put(pb.PutRequest(key=key, value=b"v"), timeout=10, metadata=[("token", token)])

    def get(self, token: str, key: bytes, end: bytes = b"") -> object:
        req = pb.RangeRequest(key=key, range_end=end)
        return lambda: self.kv.Range(req, timeout=10, metadata=[("token", token)])


def set_up_users(c: Client) -> None:
    """root, and alice with readwrite on a/ (auth enabled)."""
    c.auth.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"), timeout=10)
    c.auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
    c.auth.UserAdd(pb.AuthUserAddRequest(name="alice", password="alicepw"), timeout=10)
    c.auth.RoleAdd(pb.AuthRoleAddRequest(name="rw"), timeout=10)
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a/", range_end=b"a0")
    c.auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="rw", perm=perm), timeout=10)
    c.auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="alice", role="rw"), timeout=10)
    c.auth.AuthEnable(pb.AuthEnableRequest(), timeout=10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes, bytes]:
    tmp = tmp_path_factory.mktemp("jwtkeys")
    pub, priv, priv_pem = rsa_pair(tmp, "server")
    _, _, other_pem = rsa_pair(tmp, "other")
    return pub, priv, priv_pem, other_pem


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path, bytes, bytes]) -> Iterator[Client]:
    pub, priv, _, _ = keys
    option = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=1h"
    proc = servers.rusd(tmp_path_factory.mktemp("jwt"), "--auth-token", option, "--bcrypt-cost", "4").start()
    try:
        with grpc.insecure_channel(proc.endpoint) as ch:
            c = Client(ch)
            set_up_users(c)
            yield c
    finally:
        proc.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_is_verified_without_a_round_trip_and_carries_the_revision(jwt_server: Client,
                                                                       keys: tuple[Path, Path, bytes, bytes]) -> None:
    c = jwt_server
    token = c.token("alice", "alicepw")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, keys[0].read_bytes(), algorithms=["RS256"])
    assert header["alg"] == "RS256" and claims["username"] == "alice" and claims["revision"] >= 1
    c.put(token, b"a/1")()  # type: ignore[operator]


def test_forged_tampered_and_expired_jwts_are_refused(jwt_server: Client,
                                                      keys: tuple[Path, Path, bytes, bytes]) -> None:
    c = jwt_server
    _, _, priv_pem, other_pem = keys
    good = c.token("alice", "alicepw")
    revision = jwt.decode(good, options={"verify_signature": False})["revision"]
    claims = {"username": "root", "revision": revision, "exp": int(time.time()) + 600}
    head, payload, sig = good.split(".")
    edited = json.loads(base64.urlsafe_b64decode(payload + "=="))
    edited["username"] = "root"
    forged = [
        b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims).encode()) + ".",
        jwt.encode(claims, other_pem, algorithm="RS256"),  # the wrong key
        ".".join([head, b64(json.dumps(edited).encode()), sig]),  # payload edited, signature kept
        jwt.encode({**claims, "exp": int(time.time()) - 60}, priv_pem, algorithm="RS256"),  # expired
        jwt.encode({**claims, "username": "alice"}, priv_pem, algorithm="RS512"),  # another method
        "not-a-token",
        "",
    ]
    for token in forged:
        assert err(c.get(token, b"z")) == INVALID_TOKEN, token
        assert err(c.put(token, b"z")) == INVALID_TOKEN, token
    root = c.token("root", "rootpw")
    assert c.kv.Range(pb.RangeRequest(key=b"z"), timeout=10, metadata=[("token", root)]).count == 0


def test_a_jwt_issued_before_an_auth_change_is_stale(jwt_server: Client) -> None:
    c = jwt_server
    alice = c.token("alice", "alicepw")
    root = c.token("root", "rootpw")
    c.auth.RoleAdd(pb.AuthRoleAddRequest(name="other"), timeout=10, metadata=[("token", root)])
    stale = (SC.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
    assert err(c.put(alice, b"a/2")) == stale
    assert err(c.get(alice, b"a/1")) == stale
    assert c.kv.Range(pb.RangeRequest(key=b"a/2"), timeout=10,
                      metadata=[("token", c.token("root", "rootpw"))]).count == 0
    c.put(c.token("alice", "alicepw"), b"a/2")()  # type: ignore[operator]


def test_wrong_passwords_are_refused_then_rate_limited(jwt_server: Client) -> None:
    c = jwt_server
    results = [err(lambda: c.token("alice", "wrong")) for _ in range(12)]
    assert results[0] == AUTH_FAILED
    assert (SC.RESOURCE_EXHAUSTED, "etcdserver: too many requests") in results
    assert err(lambda: c.token("ghost", "pw")) == AUTH_FAILED
    # others are still served
    c.put(c.token("root", "rootpw"), b"a/3")()  # type: ignore[operator]


@pytest.fixture
def simple_server(tmp_path: Path) -> Iterator[Client]:
    proc = servers.rusd(tmp_path, "--bcrypt-cost", "4").start()
    try:
        with grpc.insecure_channel(proc.endpoint) as ch:
            c = Client(ch)
            set_up_users(c)
            yield c
    finally:
        proc.stop()


def test_simple_tokens_end_with_their_user_or_password(simple_server: Client) -> None:
    c = simple_server
    root = c.token("root", "rootpw")
    alice = c.token("alice", "alicepw")
    c.put(alice, b"a/1")()  # type: ignore[operator]
    root_md = [("token", root)]
    c.auth.UserChangePassword(pb.AuthUserChangePasswordRequest(name="alice", password="new"), timeout=10,
                              metadata=root_md)
    assert err(c.put(alice, b"a/2")) == INVALID_TOKEN
    alice = c.token("alice", "new")
    c.auth.UserDelete(pb.AuthUserDeleteRequest(name="alice"), timeout=10, metadata=root_md)
    assert err(c.get(alice, b"a/1")) == INVALID_TOKEN
    assert err(c.put(alice, b"a/2")) == INVALID_TOKEN
    assert err(c.get("ZZZZZZZZZZZZZZZZ.1", b"a/1")) == INVALID_TOKEN
    assert err(c.get("", b"a/1")) == INVALID_TOKEN
    assert [kv.key for kv in c.kv.Range(pb.RangeRequest(key=b"a/", range_end=b"a0"), timeout=10,
                                        metadata=root_md).kvs] == [b"a/1"]
    # without a token at all
    assert err(lambda: c.kv.Range(pb.RangeRequest(key=b"a"), timeout=10)) == (
        SC.INVALID_ARGUMENT, "etcdserver: user name is empty")
    status = c.auth.AuthStatus(pb.AuthStatusRequest(), timeout=10)
    assert status.enabled and status.authRevision >= 8


def test_rusd_is_stricter_than_etcd_34_on_nested_txns_and_from_key_watches(simple_server: Client) -> None:
    c = simple_server
    alice = [("token", c.token("alice", "alicepw"))]
    nested = pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest(
        success=[pb.RequestOp(request_put=pb.PutRequest(key=b"secret", value=b"x"))]))])
    assert err(lambda: c.kv.Txn(nested, timeout=10, metadata=alice)) == DENIED
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a/", range_end=b"\x00"))
    call = c.watch.Watch(iter([create]), timeout=10, metadata=alice)
    first = next(call)
    call.cancel()
    assert (first.created, first.canceled, first.watch_id) == (True, True, -1)
    assert first.cancel_reason == "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


@pytest.mark.parametrize("option, message", [
    ("jwt,sign-method=RS256", "auth: missing key data"),
    ("jwt,pub-key=/nonexistent,sign-method=RS256", "open /nonexistent: no such file or directory"),
    ("jwt,sign-method=XX1", "auth: invalid auth signature method"),
    ("jwt,ttl", "auth: invalid auth options"),
    ("oauth", "auth: invalid auth options"),
])
def test_bad_auth_token_options_stop_the_start(tmp_path: Path, option: str, message: str) -> None:
    proc = servers.rusd(tmp_path, "--auth-token", option)
    r = subprocess.run(proc.argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"rusd: --auth-token: {message}", r.stderr


def test_a_public_key_only_member_verifies_but_cannot_issue(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "ec.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    proc = servers.rusd(tmp_path, "--auth-token", f"jwt,pub-key={pub},sign-method=ES256", "--bcrypt-cost", "4")
    proc.start()
    try:
        with grpc.insecure_channel(proc.endpoint) as ch:
            c = Client(ch)
            set_up_users(c)
            token = jwt.encode({"username": "alice", "revision": 100, "exp": int(time.time()) + 60}, key,
                               algorithm="ES256")
            # a token signed elsewhere with the private key: accepted here without a round trip
            c.put(token, b"a/1")()  # type: ignore[operator]
            assert err(c.put(token, b"b")) == DENIED
            assert err(lambda: c.token("alice", "alicepw")) == (
                SC.UNKNOWN, "auth: token signing attempted with verify-only key")
    finally:
        proc.stop()


def test_lease_time_to_live_lists_keys_only_to_a_reader_of_each(simple_server: Client) -> None:
    c = simple_server
    root = [("token", c.token("root", "rootpw"))]
    alice = [("token", c.token("alice", "alicepw"))]
    lease = c.lease
    lease.LeaseGrant(pb.LeaseGrantRequest(ID=77, TTL=600), timeout=10, metadata=root)
    c.kv.Put(pb.PutRequest(key=b"a/1", value=b"v", lease=77), timeout=10, metadata=root)
    assert lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=77, keys=True), timeout=10,
                                 metadata=alice).keys == [b"a/1"]
    c.kv.Put(pb.PutRequest(key=b"secret", value=b"v", lease=77), timeout=10, metadata=root)
    assert err(lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=77, keys=True), timeout=10,
                                             metadata=alice)) == DENIED
    assert lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=77), timeout=10, metadata=alice).grantedTTL == 600
    # revoking would delete "secret": refused, and the lease and its keys stay
    assert err(lambda: lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=77), timeout=10, metadata=alice)) == DENIED
    assert c.kv.Range(pb.RangeRequest(key=b"secret"), timeout=10, metadata=root).count == 1


class _AuthedServer(servers.ServerProcess):
    """Ready once Status answers: with auth enabled the default probe (a Range
    without a token) is refused."""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                with grpc.insecure_channel(self.endpoint) as ch:
                    pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.05)
        raise RuntimeError(self.log())


def test_auth_state_survives_a_restart_and_simple_tokens_do_not(tmp_path: Path,
                                                                 keys: tuple[Path, Path, bytes, bytes]) -> None:
    pub, priv, _, _ = keys
    first = servers.rusd(tmp_path, "--bcrypt-cost", "4")
    proc = _AuthedServer(first.argv, first.endpoint, first.data_dir, first.log_path).start()
    with grpc.insecure_channel(proc.endpoint) as ch:
        c = Client(ch)
        set_up_users(c)
        simple = c.token("alice", "alicepw")
        c.put(simple, b"a/1")()  # type: ignore[operator]
        before = c.auth.AuthStatus(pb.AuthStatusRequest(), timeout=10)
    proc.kill()  # kill -9: everything acknowledged is durable
    jwt_option = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256"
    again = _AuthedServer([*first.argv, "--auth-token", jwt_option], first.endpoint, first.data_dir,
                          first.log_path).start()
    try:
        with grpc.insecure_channel(again.endpoint) as ch:
            c = Client(ch)
            after = c.auth.AuthStatus(pb.AuthStatusRequest(), timeout=10)
            assert (after.enabled, after.authRevision) == (True, before.authRevision)
            assert err(c.get(simple, b"a/1")) == INVALID_TOKEN  # simple tokens live in memory only
            assert err(lambda: c.token("alice", "wrong")) == AUTH_FAILED
            token = c.token("alice", "alicepw")
            assert [kv.key for kv in c.get(token, b"a/", b"a0")().kvs] == [b"a/1"]  # type: ignore[operator]
            assert err(c.get(token, b"b")) == DENIED
    finally:
        again.stop()
