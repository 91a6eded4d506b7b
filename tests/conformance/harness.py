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
import pty
import re
import select
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.servers import ETCD, ETCDCTL, ServerProcess, etcd, rusd

# Where the padding puts that keep the two servers' revisions in step go: sorts
# before every key a test uses, so no --prefix/--from-key read of a test sees it.
PAD_KEY = b"\x00conformance-pad"


_PLACEHOLDER = re.compile(r"(?<=[:\[,])(<[A-Za-z_ ]+>)(?=[,}\]])")


@dataclass(frozen=True)
class Out:
    """One etcdctl run: exit code, stdout and stderr (decoded, binary-safe)."""

    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        """stdout as JSON; bare placeholders such as <MEMBER_ID> become strings."""
        return json.loads(_PLACEHOLDER.sub(r'"\1"', self.out))


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _start(endpoint: str, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, ETCDCTL_API="3")
    env.pop("ETCDCTL_ENDPOINTS", None)
    return subprocess.Popen(
        [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "10s", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def _finish(p: subprocess.Popen[bytes], stdin: str | bytes, timeout: float = 30) -> Out:
    data = encode(stdin) if isinstance(stdin, str) else stdin
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return Out(p.returncode, decode(out), decode(err))


def run_etcdctl(endpoint: str, *args: str, stdin: str | bytes = b"") -> Out:
    """The real etcdctl; stdin defaults to empty (never the terminal)."""
    return _finish(_start(endpoint, args), stdin)


def run_etcdctl_pty(endpoint: str, *args: str, script: list[tuple[str, str]], timeout: float = 20) -> Out:
    """etcdctl on a terminal, like a user typing: for each (prompt, text) wait until
    `prompt` has been printed, then type `text`. Returns the whole terminal transcript
    (echoed input included) with CRLF turned into LF."""
    env = dict(os.environ, ETCDCTL_API="3")
    env.pop("ETCDCTL_ENDPOINTS", None)
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "10s", *args],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    transcript = b""
    deadline = time.monotonic() + timeout

    def read_some() -> bool:
        nonlocal transcript
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        transcript += chunk
        return bool(chunk)

    try:
        for prompt, text in script:
            while encode(prompt) not in transcript:
                if not read_some():
                    raise AssertionError(f"no prompt {prompt!r}; got {transcript!r}")
            os.write(master, encode(text))
        while read_some():
            pass
        p.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return Out(p.returncode, decode(transcript).replace("\r\n", "\n"), "")


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
# Raft term of the response header, per output format (inner txn headers carry 0).
_TERM = [
    (re.compile(r'"raft_term":[1-9]\d*'), '"raft_term":<TERM>'),
    (re.compile(r'"RaftTerm" : [1-9]\d*'), '"RaftTerm" : <TERM>'),
]
# etcdctl panics on some bad input, before talking to any server: keep the message.
_PANIC = re.compile(r"^(panic: [^\n]*\n).*", re.S | re.M)
_TABLE_RULE = re.compile(r"^\+[-+]+\+$")


def normalise_text(text: str, ident: Identity) -> str:
    text = text.replace(f"127.0.0.1:{ident.peer_port}", "<PEER>")
    text = text.replace(ident.endpoint, "<EP>")
    # ids: decimal (json, fields) and hex (member list, endpoint status)
    for value, name in ((ident.cluster_id, "<CLUSTER_ID>"), (ident.member_id, "<MEMBER_ID>")):
        text = text.replace(str(value), name).replace(format(value, "x"), name)
    text = _TS.sub('"ts":"<TS>"', text)
    text = _CLIENT.sub("client-<UUID>", text)
    for pattern, repl in _TERM:
        text = pattern.sub(repl, text)
    text = _PANIC.sub(r"\1<goroutine trace>\n", text)
    return normalise_table(text)


def normalise_table(text: str) -> str:
    """`-w table` pads columns to the widest cell, and ids/sizes differ in width:
    compare tables cell by cell (rules collapsed, cells stripped)."""
    lines = text.split("\n")
    if not lines or not _TABLE_RULE.match(lines[0]):
        return text
    out = []
    for line in lines:
        if _TABLE_RULE.match(line):
            out.append("+")
        elif line.startswith("|") and line.endswith("|"):
            out.append("|" + "|".join(f" {c.strip()} " for c in line[1:-1].split("|")) + "|")
        else:
            out.append(line)
    return "\n".join(out)


def cells(line: str) -> list[str]:
    """The cells of a normalised table row."""
    return [c.strip() for c in line.strip("|").split("|")]


def normalise_protobuf(data: str, message: type) -> str:
    """`-w protobuf` prints the marshalled response: compare it decoded, with the
    header's cluster/member id and raft term cleared, and the bytes after the
    header verbatim (field order and encoding must match too)."""
    raw = encode(data)
    msg = message()
    msg.ParseFromString(raw)
    hdr = msg.header  # type: ignore[attr-defined]
    hdr.cluster_id = hdr.member_id = hdr.raft_term = 0
    return f"{msg}\nbody-after-header: {raw[_header_field_len(raw):].hex()}\n"


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


# What legitimately differs in `endpoint status`: version string, DB sizes, raft
# term and indexes (etcd logs a few internal entries at boot that rusd need not).
_STATUS_JSON = re.compile(r'"(version|dbSize|dbSizeInUse|raftIndex|raftTerm|raftAppliedIndex)":("[^"]*"|\d+)')
_STATUS_FIELDS = re.compile(r'^"(Version|DBSize|RaftIndex|RaftTerm|RaftAppliedIndex)" : .*$', re.M)
_STATUS_SIMPLE = re.compile(r"^((?:http://)?<EP>, [^,]*), [^,]*, [^,]*, ([^,]*, [^,]*), [^,]*, [^,]*, [^,]*, ", re.M)
_STATUS_TABLE = re.compile(r"^\|( (?:http://)?<EP> \|[^|]*\|)[^|]*\|[^|]*\|([^|]*\|[^|]*\|)[^|]*\|[^|]*\|[^|]*\|", re.M)


def norm_status(text: str, ident: Identity) -> str:
    text = _STATUS_JSON.sub(r'"\1":<\1>', text)
    text = _STATUS_FIELDS.sub(r'"\1" : <\1>', text)
    text = _STATUS_SIMPLE.sub(r"\1, <VERSION>, <DB SIZE>, \2, <TERM>, <INDEX>, <APPLIED>, ", text)
    return _STATUS_TABLE.sub(r"|\1 <VERSION> | <DB SIZE> |\2 <TERM> | <INDEX> | <APPLIED> |", text)


# `endpoint health` reports how long the probe took.
_TOOK = re.compile(r"(took = |\"took\":\"|\| true \| )[0-9.]+[µnm]?s")


def norm_took(text: str, ident: Identity) -> str:
    return _TOOK.sub(r"\1<TOOK>", text)


# `endpoint hashkv`: the hash of the key space (etcd's crc32 over its bolt layout).
_HASH = [
    re.compile(r"^(<EP>, )\d+$", re.M),
    re.compile(r'("hash":)\d+'),
    re.compile(r"^(\| <EP> \| )\d+", re.M),
]


def norm_hash(text: str, ident: Identity) -> str:
    for pattern in _HASH:
        text = pattern.sub(r"\1<HASH>", text)
    return text


Normaliser = Callable[[str, Identity], str]


@dataclass
class Pair:
    """A rusd and a real etcd, driven with identical etcdctl command sequences."""

    rusd: ServerProcess
    etcd: ServerProcess
    _ids: tuple[Identity, Identity] | None = None

    def ids(self) -> tuple[Identity, Identity]:
        if self._ids is None:
            self._ids = (Identity.of(self.rusd), Identity.of(self.etcd))
        return self._ids

    def forget_ids(self) -> None:
        self._ids = None

    def raw(self, *args: str, stdin: str | bytes = b"") -> tuple[Out, Out]:
        """Run on both at once; (rusd, etcd), not normalised."""
        r, e = _start(self.rusd.endpoint, args), _start(self.etcd.endpoint, args)
        try:
            return _finish(r, stdin), _finish(e, stdin)
        finally:
            for p in (r, e):
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def compare(self, rusd_out: Out, etcd_out: Out, what: str,
                norm: Normaliser | tuple[Normaliser, ...] = (), protobuf: type | None = None) -> Out:
        """Assert two raw results equal after normalisation; return rusd's."""
        r_id, e_id = self.ids()
        r = self.normalise(rusd_out, r_id, norm, protobuf)
        e = self.normalise(etcd_out, e_id, norm, protobuf)
        assert r == e, _diff_message(what, e, r)
        return r

    def ctl(self, *args: str, stdin: str | bytes = b"", norm: Normaliser | tuple[Normaliser, ...] = (),
            protobuf: type | None = None) -> Out:
        """Run on both, assert equal after normalisation, return rusd's normalised Out."""
        rusd_out, etcd_out = self.raw(*args, stdin=stdin)
        return self.compare(rusd_out, etcd_out, "etcdctl " + shlex.join(args), norm, protobuf)

    @staticmethod
    def normalise(o: Out, ident: Identity, norm: Normaliser | tuple[Normaliser, ...] = (),
                  protobuf: type | None = None) -> Out:
        out = normalise_protobuf(o.out, protobuf) if protobuf is not None and o.rc == 0 else o.out
        out, err = normalise_text(out, ident), normalise_text(o.err, ident)
        for f in norm if isinstance(norm, tuple) else (norm,):
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


def _diff_message(what: str, e: Out, r: Out) -> str:
    lines = [f"{what}: rusd differs from etcd"]
    if e.rc != r.rc:
        lines.append(f"  exit code: etcd {e.rc}, rusd {r.rc}")
    if e.out != r.out:
        lines += ["  stdout etcd:", _indent(e.out), "  stdout rusd:", _indent(r.out)]
    if e.err != r.err:
        lines += ["  stderr etcd:", _indent(e.err), "  stderr rusd:", _indent(r.err)]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in (text.splitlines() or ["<empty>"]))


# A single-member etcd waits one election timeout before it leads; shorten it so a
# fresh etcd is ready in ~0.1 s instead of ~1 s. Nothing the KV commands print
# depends on these (raft term is normalised anyway).
ETCD_FAST = ("--heartbeat-interval", "10", "--election-timeout", "100")


def require_etcd() -> None:
    if not (shutil.which(ETCDCTL) and shutil.which(ETCD)):  # pragma: no cover
        pytest.skip("the conformance suite needs etcd and etcdctl (apt-get install etcd-server etcd-client)")


def start_pair(tmp: Path) -> Pair:
    require_etcd()
    r = rusd(tmp).start()
    try:
        e = etcd(tmp, *ETCD_FAST).start()
    except BaseException:
        r.stop()
        raise
    return Pair(r, e)


def stop_pair(pair: Pair) -> None:
    for server in (pair.rusd, pair.etcd):
        server.stop()
