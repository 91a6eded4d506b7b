"""Differential test: the same random KV requests against a real etcd and rusd.

One real etcd (the reference, /usr/bin/etcd 3.4) and one rusd start on fresh data
dirs. A seeded random sequence of Range / Put / DeleteRange / Txn / Compact
requests (see kvops.py for the mix) goes to both over gRPC, one request at a time,
and every answer must be equal:

- responses: the protobuf messages byte for byte (deterministic serialization,
  so also which sub-messages are present) after clearing the top-level header's
  cluster_id, member_id and raft_term; the revision must be equal;
- errors: the gRPC status code and the details (message).

Seeds: RUSD_DIFF_SEED (comma separated) or the defaults below; ops per seed:
RUSD_DIFF_OPS. A failure prints the seed, the op index and the request.
HashKV is not compared: rusd's hash function is its own.
"""

from __future__ import annotations

import difflib
import os
import random
import time
from collections import Counter

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests import servers
from tests.differential.kvops import Op, OpGenerator, show, strip_identity

DEFAULT_SEEDS = [20240611, 7, 424242]
SEEDS = [int(s) for s in os.environ.get("RUSD_DIFF_SEED", "").split(",") if s.strip()] or DEFAULT_SEEDS
OPS = int(os.environ.get("RUSD_DIFF_OPS", "1500"))
RPC_TIMEOUT = 15.0
# A few ranges over near-limit values pass gRPC's default 4 MiB receive limit.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 1 << 30)]
# Requests shown before the failing one, to help reproduce by hand.
HISTORY = 8

Outcome = tuple[str, Message | tuple[grpc.StatusCode, str | None]]


def call(stubs: dict[str, object], op: Op) -> Outcome:
    try:
        return "ok", getattr(stubs[op.service], op.method)(op.request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return "error", (e.code(), e.details())


def describe(outcome: Outcome) -> str:
    kind, value = outcome
    if kind == "error":
        code, details = value  # type: ignore[misc]
        return f"error {code.name}: {details!r}"
    return show(strip_identity(value))  # type: ignore[arg-type]


def mismatch(seed: int, index: int, op: Op, history: list[tuple[int, Op]], want: Outcome, got: Outcome) -> str:
    lines = [
        f"rusd disagrees with etcd: seed={seed} op #{index} ({op.method}); "
        f"reproduce with RUSD_DIFF_SEED={seed} RUSD_DIFF_OPS={index + 1}",
        f"request:\n{show(op.request)}",
    ]
    a, b = describe(want), describe(got)
    lines.append(f"etcd:\n{a}\nrusd:\n{b}")
    if want[0] == got[0] == "ok":
        diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "etcd", "rusd", lineterm="")
        lines.append("diff:\n" + "\n".join(diff))
    lines.append("preceding requests:")
    lines += [f"  #{i} {h.method} {text_format.MessageToString(h.request, as_one_line=True)[:300]}" for i, h in history]
    return "\n".join(lines)


def same(want: Outcome, got: Outcome) -> bool:
    if want[0] != got[0]:
        return False
    if want[0] == "error":
        return want[1] == got[1]
    w, g = strip_identity(want[1]), strip_identity(got[1])  # type: ignore[arg-type]
    # The whole seconds a lease has left depend on when each server answered.
    ttl = isinstance(w, pb.LeaseTimeToLiveResponse) and isinstance(g, pb.LeaseTimeToLiveResponse)
    if ttl and w.TTL > 0 and g.TTL > 0 and abs(w.TTL - g.TTL) <= 1:  # type: ignore[attr-defined]
        g.TTL = w.TTL  # type: ignore[attr-defined]
    return w.SerializeToString(deterministic=True) == g.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_kv_differential(pair: tuple[servers.ServerProcess, servers.ServerProcess], seed: int) -> None:
    etcd, rusd = pair
    gen = OpGenerator(random.Random(seed))
    stats: Counter[str] = Counter()
    history: list[tuple[int, Op]] = []
    started = time.monotonic()
    with (
        grpc.insecure_channel(etcd.endpoint, options=CHANNEL_OPTIONS) as ech,
        grpc.insecure_channel(rusd.endpoint, options=CHANNEL_OPTIONS) as rch,
    ):
        ref = {"KV": pb_grpc.KVStub(ech), "Lease": pb_grpc.LeaseStub(ech)}
        sut = {"KV": pb_grpc.KVStub(rch), "Lease": pb_grpc.LeaseStub(rch)}
        for i in range(OPS):
            op = gen.next()
            want = call(ref, op)
            got = call(sut, op)
            if not same(want, got):
                report = mismatch(seed, i, op, history, want, got)
                if etcd.proc is not None and etcd.proc.poll() is not None:
                    report += f"\netcd exited with {etcd.proc.returncode}:\n{etcd.log()[-3000:]}"
                pytest.fail(report, pytrace=False)
            gen.observe(op, want[1] if want[0] == "ok" else None)  # type: ignore[arg-type]
            stats[f"{op.method} {describe(want) if want[0] == 'error' else 'ok'}"] += 1
            history = [*history[-HISTORY + 1 :], (i, op)]
        # Finally the whole key space at every revision that is still readable (and
        # one below: the compacted error), so that no divergence of the stored
        # history goes unnoticed.
        first = max(gen.state.compacted - 1, 1)
        for i, rev in enumerate(range(first, gen.state.rev + 1), start=OPS):
            op = Op("Range", pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev))
            want, got = call(ref, op), call(sut, op)
            if not same(want, got):
                pytest.fail(mismatch(seed, i, op, history, want, got), pytrace=False)
    elapsed = time.monotonic() - started
    print(
        f"\nseed {seed}: {OPS} ops in {elapsed:.1f}s, final revision {gen.state.rev}, "
        f"compacted at {gen.state.compacted}"
    )
    for outcome, n in sorted(stats.items()):
        print(f"  {n:5d}  {outcome}")
    # The mix must keep exercising both answers, or the comparison proves little.
    ok = sum(n for outcome, n in stats.items() if outcome.endswith(" ok"))
    assert ok >= OPS // 2, f"only {ok} of {OPS} requests succeeded"
