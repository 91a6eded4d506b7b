"""A seeded random sequence of etcdctl KV commands on a fresh rusd and a fresh etcd:
every output must be equal after normalisation, absolute revisions included, and the
whole key space (current and historical) must match at the end."""

from __future__ import annotations

import random

import pytest

from tests.conformance.harness import Pair

KEYS = ["a", "a/1", "a/2", "a/10", "ab", "b", "b/x", "c", "zz"]
PREFIXES = ["a", "a/", "b", "", "zz"]
VALUES = ["v", "value with spaces", "0", "9", "", "ünï"]
FORMATS = [[], [], ["-w", "json"], ["-w", "fields"]]


def random_command(rng: random.Random, revision: int) -> tuple[list[str], str]:
    """One etcdctl command line and its stdin."""
    fmt = rng.choice(FORMATS)
    kind = rng.choices(["put", "get", "getrange", "del", "txn", "compact"], weights=[6, 3, 3, 2, 3, 1])[0]
    key = rng.choice(KEYS)
    if kind == "put":
        return ["put", key, rng.choice(VALUES), *(["--prev-kv"] if rng.random() < 0.4 else []), *fmt], ""
    if kind == "get":
        extra = []
        if rng.random() < 0.4:
            extra += ["--rev", str(rng.randint(0, revision + 1))]
        return ["get", key, *extra, *fmt], ""
    if kind == "getrange":
        prefix = rng.choice(PREFIXES)
        how = rng.choice([["--prefix"], ["--from-key"]])  # with "" both mean every key
        extra = []
        if rng.random() < 0.5:
            extra += ["--limit", str(rng.randint(1, 4))]
        if rng.random() < 0.5:
            extra += ["--sort-by", rng.choice(["KEY", "CREATE", "MODIFY", "VERSION"]),
                      "--order", rng.choice(["ASCEND", "DESCEND"])]
        if rng.random() < 0.3:
            extra += ["--rev", str(rng.randint(1, revision))]
        if rng.random() < 0.3:
            extra += ["--keys-only"]
        return ["get", prefix, *how, *extra, *fmt], ""
    if kind == "del":
        how = rng.choice([[], [], ["--prefix"], ["--from-key"]])
        target = rng.choice(PREFIXES[:3]) if how else key
        return ["del", target, *how, *(["--prev-kv"] if rng.random() < 0.5 else []), *fmt], ""
    if kind == "txn":
        target = rng.choice(["value", "version", "create", "mod"])
        op = rng.choice(["=", "!=", "<", ">"])
        value = rng.choice(VALUES[:4]) if target == "value" else str(rng.randint(0, revision))
        success = [f"put {rng.choice(KEYS)} {rng.randint(0, 9)}", f"get {rng.choice(PREFIXES[:3])} --prefix"]
        failure = [f"del {rng.choice(KEYS)}", f"get {rng.choice(KEYS)}"]
        stdin = f'{target}("{key}") {op} "{value}"\n\n' + "\n".join(success) + "\n\n" + "\n".join(failure) + "\n\n"
        return ["txn", *fmt], stdin
    return ["compaction", str(rng.randint(1, revision + 1))], ""


@pytest.mark.parametrize("seed", [1, 2])
def test_random_kv_workload(fresh_pair: Pair, seed: int) -> None:
    pair = fresh_pair
    rng = random.Random(seed)
    revision = 1
    for _ in range(60):
        args, stdin = random_command(rng, revision)
        pair.ctl(*args, stdin=stdin)
        rusd_rev, revision = pair.revisions()
        assert rusd_rev == revision
    # the whole key space, now and at every revision still available
    pair.ctl("get", "", "--from-key", "-w", "json")
    for rev in range(1, revision + 1):
        pair.ctl("get", "", "--from-key", "--rev", str(rev), "-w", "json")
