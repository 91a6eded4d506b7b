"""The NOSPACE alarm through etcdctl: a rusd and an etcd with a small
--quota-backend-bytes are each filled until a put is refused (how many puts that
takes depends on the storage engine, so each is filled on its own); from then on
every etcdctl command must answer the same on both."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conformance.harness import ETCD_FAST, Identity, Pair, cells, norm_status, require_etcd, run_etcdctl
from tests.servers import ServerProcess, etcd, rusd

QUOTA = "400000"
NOSPACE = "Error: etcdserver: mvcc: database space exceeded\n"


def fill(server: ServerProcess) -> int:
    for i in range(200):
        out = run_etcdctl(server.endpoint, "put", f"big/{i:03d}", stdin="x" * 20_000)
        if out.rc != 0:
            assert "code = ResourceExhausted desc = etcdserver: mvcc: database space exceeded" in out.err
            assert out.err.endswith(NOSPACE)
            return i
    raise AssertionError("quota never reached")


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_etcd()
    tmp = tmp_path_factory.mktemp("nospace")
    r = rusd(tmp, "--quota-backend-bytes", QUOTA).start()
    e = etcd(tmp, "--quota-backend-bytes", QUOTA, *ETCD_FAST).start()
    pair = Pair(r, e)
    try:
        puts = fill(r), fill(e)
        assert min(puts) >= 1
        # same key set on both: drop what only one of them could store (the
        # revisions stay apart: outputs showing them are normalised below)
        for server in (r, e):
            assert run_etcdctl(server.endpoint, "del", f"big/{min(puts):03d}", "--from-key").rc == 0
        yield pair
    finally:
        r.stop()
        e.stop()


def norm_revision(text: str, ident: Identity) -> str:
    return re.sub(r'"revision":\d+', '"revision":<REV>', text)


def test_alarm_list_shows_nospace(full: Pair) -> None:
    assert full.ctl("alarm", "list").out == "memberID:<MEMBER_ID> alarm:NOSPACE \n"


def test_endpoint_status_shows_the_alarm(full: Pair) -> None:
    r = full.ctl("endpoint", "status", norm=norm_status)
    assert r.out == ("<EP>, <MEMBER_ID>, <VERSION>, <DB SIZE>, true, false, <TERM>, <INDEX>, <APPLIED>, "
                     "memberID:<MEMBER_ID> alarm:NOSPACE \n")
    r = full.ctl("endpoint", "status", "-w", "json", norm=(norm_status, norm_revision))
    assert r.json()[0]["Status"]["errors"] == ["memberID:<MEMBER_ID> alarm:NOSPACE "]
    r = full.ctl("endpoint", "status", "-w", "table", norm=norm_status)
    assert cells(r.lines[3])[-1] == "memberID:<MEMBER_ID>"
    assert cells(r.lines[4])[-1] == "alarm:NOSPACE"


def test_writes_refused_reads_and_deletes_allowed(full: Pair) -> None:
    for args, stdin in [(("put", "small", "x"), ""), (("txn",), "\nput small x\n\n\n")]:
        r = full.ctl(*args, stdin=stdin)
        assert r.rc == 1
        assert "code = ResourceExhausted desc = etcdserver: mvcc: database space exceeded" in r.err
        assert r.err.endswith(NOSPACE)
    assert full.ctl("get", "big/000", "--keys-only").out == "big/000\n\n"
    assert full.ctl("get", "big/", "--prefix", "--keys-only", "--limit", "1").out == "big/000\n\n"
    assert full.ctl("del", "big/000").out == "1\n"
    # (no compaction or defrag here: what they free is engine-specific, and the
    # tests below need both servers still over the quota)


@pytest.mark.parametrize(("script", "output"), [
    ("\nget big/002 --keys-only\n\n\n", "SUCCESS\n\nbig/002\n\n"),
    ("\ndel big/001\n\n\n", "SUCCESS\n\n1\n"),
    ('value("big/002") = "nope"\n\n\n\n', "FAILURE\n"),
], ids=["get", "del", "compare-only"])
def test_txn_without_puts_allowed(full: Pair, script: str, output: str) -> None:
    assert full.ctl("txn", stdin=script).out == output


def test_disarm_last(full: Pair) -> None:
    """Runs last (pytest keeps definition order)."""
    r = full.ctl("alarm", "disarm")
    assert r.out == "memberID:<MEMBER_ID> alarm:NOSPACE \n"
    assert full.ctl("alarm", "list").out == ""
    assert full.ctl("alarm", "disarm").out == ""
    assert full.ctl("endpoint", "status", norm=norm_status).out.endswith("<APPLIED>, \n")
