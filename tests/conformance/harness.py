"""Differential etcdctl runs: the same command against a rusd and a real etcd.

`Pair.ctl(*args)` runs the real etcdctl against both servers, normalises what may
legitimately differ between two clusters (cluster and member ids, raft term, the
addresses, timestamps in etcdctl's own log lines, ...) and asserts the two results
are equal. It returns rusd's normalised result so a test can also spell out the
expected output explicitly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.servers import ETCDCTL, ServerProcess

# Where the padding puts that keep the two servers' revisions in step go: sorts
# before every key a test uses, so no --prefix/--from-key read of a test sees it.
PAD_KEY = b"\x00conformance-pad"


@dataclass(frozen=True)
class Out:
    """One etcdctl run: exit code, stdout and stderr (decoded, binary-safe)."""

    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.out)  # type: ignore[no-any-return]


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def run_etcdctl(endpoint: str, *args: str, stdin: str | bytes = b"", timeout: float = 30) -> Out:
    """The real etcdctl; stdin defaults to empty (never the terminal)."""
    env = dict(os.environ, ETCDCTL_API="3")
    env.pop("ETCDCTL_ENDPOINTS", None)
    data = encode(stdin) if isinstance(stdin, str) else stdin
    p = subprocess.run(
        [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "10s", *args],
        input=data, capture_output=True, env=env, timeout=timeout, check=False,
    )
    return Out(p.returncode, decode(p.stdout), decode(p.stderr))


def peer_port(server: ServerProcess) -> str:
    url = server.argv[server.argv.index("--listen-peer-urls") + 1]
    return url.rsplit(":", 1)[1]


@dataclass
class Identity:
    """What differs between two single-member clusters by construction."""

    endpoint: str
    peer_port: str
    cluster_id: int
    member_id: int

    @classmethod
    def of(cls, server: ServerProcess) -> Identity:
        with grpc.insecure_channel(server.endpoint) as ch:
            st = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=10)
        return cls(server.endpoint, peer_port(server), st.header.cluster_id, st.header.member_id)


# etcdctl's own zap log lines (retrying of unary invoker failed, ...).
_TS = re.compile(r'"ts":"[^"]*"')
_CLIENT = re.compile(r"client-[0-9a-f-]{36}")
# Raft term in every response header, per output format.
_TERM = [
    (re.compile(r'"raft_term":\d+'), '"raft_term":<TERM>'),
    (re.compile(r'"RaftTerm" : \d+'), '"RaftTerm" : <TERM>'),
]


def normalise_text(text: str, ident: Identity) -> str:
    text = text.replace(f"127.0.0.1:{ident.peer_port}", "<PEER>")
    text = text.replace(ident.endpoint, "<EP>")
    # ids: decimal (json, fields) and hex (member list, endpoint status, headers in simple)
    for value, name in ((ident.cluster_id, "<CLUSTER_ID>"), (ident.member_id, "<MEMBER_ID>")):
        text = text.replace(str(value), name).replace(format(value, "x"), name)
    text = _TS.sub('"ts":"<TS>"', text)
    text = _CLIENT.sub("client-<UUID>", text)
    for pattern, repl in _TERM:
        text = pattern.sub(repl, text)
    return text


def normalise_protobuf(data: str, message: type) -> str:
    """`-w protobuf` prints the marshalled response: compare it with the header's
    cluster/member id and raft term cleared (the rest must be byte-equal)."""
    raw = encode(data)
    msg = message()
    msg.ParseFromString(raw)
    hdr = msg.header  # type: ignore[attr-defined]
    hdr.cluster_id = hdr.member_id = hdr.raft_term = 0
    rest = raw  # any other difference in the encoding shows in the hex
    head_len = _header_field_len(raw)
    return f"{msg}\nbody-after-header: {rest[head_len:].hex()}"


def _header_field_len(raw: bytes) -> int:
    """Length of the leading `header` field (tag 1, length-delimited), 0 if none."""
    if not raw or raw[0] != 0x0A:
        return 0
    n, shift, i = 0, 0, 1
    while True:
        b = raw[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return i + n


Normaliser = Callable[[str, Identity], str]


@dataclass
class Pair:
    """A rusd and a real etcd, driven with identical etcdctl command sequences."""

    rusd: ServerProcess
    etcd: ServerProcess
    extra_norm: list[Normaliser] = field(default_factory=list)
    _ids: tuple[Identity, Identity] | None = None

    def ids(self) -> tuple[Identity, Identity]:
        if self._ids is None:
            self._ids = (Identity.of(self.rusd), Identity.of(self.etcd))
        return self._ids

    def forget_ids(self) -> None:
        self._ids = None

    def raw(self, *args: str, stdin: str | bytes = b"") -> tuple[Out, Out]:
        """Run on both; (rusd, etcd), not normalised."""
        return run_etcdctl(self.rusd.endpoint, *args, stdin=stdin), run_etcdctl(self.etcd.endpoint, *args, stdin=stdin)

    def ctl(self, *args: str, stdin: str | bytes = b"", norm: Normaliser | None = None,
            protobuf: type | None = None) -> Out:
        """Run on both, assert equal after normalisation, return rusd's normalised Out."""
        rusd_out, etcd_out = self.raw(*args, stdin=stdin)
        r_id, e_id = self.ids()
        r = self.normalise(rusd_out, r_id, norm, protobuf)
        e = self.normalise(etcd_out, e_id, norm, protobuf)
        assert r == e, _diff_message(args, e, r)
        return r

    def normalise(self, o: Out, ident: Identity, norm: Normaliser | None, protobuf: type | None) -> Out:
        out = normalise_protobuf(o.out, protobuf) if protobuf is not None and o.rc == 0 else o.out
        out, err = normalise_text(out, ident), normalise_text(o.err, ident)
        for f in [*self.extra_norm, *([norm] if norm else [])]:
            out, err = f(out, ident), f(err, ident)
        return Out(o.rc, out, err)

    def revisions(self) -> tuple[int, int]:
        return current_revision(self.rusd), current_revision(self.etcd)

    def sync_revisions(self) -> None:
        """Pad the server that is behind so both are at the same revision. Keeps one
        divergence (a rusd bug) from turning every later comparison red."""
        r, e = self.revisions()
        behind, n = (self.rusd, e - r) if r < e else (self.etcd, r - e)
        with grpc.insecure_channel(behind.endpoint) as ch:
            kv = pb_grpc.KVStub(ch)
            for _ in range(n):
                kv.Put(pb.PutRequest(key=PAD_KEY, value=b""), timeout=10)


def current_revision(server: ServerProcess) -> int:
    with grpc.insecure_channel(server.endpoint) as ch:
        return int(pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=PAD_KEY), timeout=10).header.revision)


def _diff_message(args: tuple[str, ...], e: Out, r: Out) -> str:
    lines = [f"etcdctl {' '.join(repr(a) if not a or ' ' in a else a for a in args)}: rusd differs from etcd"]
    if e.rc != r.rc:
        lines.append(f"  exit code: etcd {e.rc}, rusd {r.rc}")
    if e.out != r.out:
        lines += ["  stdout etcd:", _indent(e.out), "  stdout rusd:", _indent(r.out)]
    if e.err != r.err:
        lines += ["  stderr etcd:", _indent(e.err), "  stderr rusd:", _indent(r.err)]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in (text.splitlines() or ["<empty>"]))
