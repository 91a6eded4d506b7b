"""etcdctl endpoint status/health/hashkv, member list, alarm, defrag, against rusd
and a real etcd side by side.

What legitimately differs is normalised: ids, the addresses, version string, DB size,
raft term and indexes, the health probe's duration, the KV hash value.
"""

from __future__ import annotations

import re

import pytest

from tests.conformance.harness import Pair, cells, norm_hash, norm_status, norm_took, run_etcdctl


def test_endpoint_status_simple(pair: Pair) -> None:
    r = pair.ctl("endpoint", "status", norm=norm_status)
    assert r.out == "<EP>, <MEMBER_ID>, <VERSION>, <DB SIZE>, true, false, <TERM>, <INDEX>, <APPLIED>, \n"
    raw = run_etcdctl(pair.rusd.endpoint, "endpoint", "status").out.rstrip("\n").split(", ")
    assert re.fullmatch(r"3\.\d+\.\d+", raw[2]), raw
    assert re.fullmatch(r"\d+(\.\d+)? [kMG]?B", raw[3]), raw
    assert int(raw[7]) >= int(raw[8]) > 0  # raft index >= applied index


def test_endpoint_status_json(pair: Pair) -> None:
    pair.ctl("put", "st1/k", "v")
    r = pair.ctl("endpoint", "status", "-w", "json", norm=norm_status).json()
    assert len(r) == 1
    assert r[0]["Endpoint"] == "<EP>"
    st = r[0]["Status"]
    assert st["leader"] == "<MEMBER_ID>"
    assert st["header"]["member_id"] == "<MEMBER_ID>"
    # the header revision is the store's current revision
    assert st["header"]["revision"] == pair.ctl("get", "st1/k", "-w", "json").json()["header"]["revision"]
    assert "errors" not in st and "isLearner" not in st
    raw = run_etcdctl(pair.rusd.endpoint, "endpoint", "status", "-w", "json").json()[0]["Status"]
    assert raw["raftIndex"] >= raw["raftAppliedIndex"] > 0
    assert raw["dbSize"] >= raw["dbSizeInUse"] > 0
    assert raw["raftTerm"] == raw["header"]["raft_term"] >= 1


def test_endpoint_status_table_and_fields(pair: Pair) -> None:
    r = pair.ctl("endpoint", "status", "-w", "table", norm=norm_status)
    assert cells(r.lines[1]) == ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
                                 "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"]
    assert cells(r.lines[3]) == ["<EP>", "<MEMBER_ID>", "<VERSION>", "<DB SIZE>", "true", "false", "<TERM>",
                                 "<INDEX>", "<APPLIED>", ""]
    r = pair.ctl("endpoint", "status", "-w", "fields", norm=norm_status)
    assert '"Leader" : <MEMBER_ID>\n"IsLearner" : false\n' in r.out
    assert r.out.endswith('"Errors" : []\n"Endpoint" : "<EP>"\n\n')
    pair.ctl("endpoint", "status", "--cluster", "-w", "json", norm=norm_status)
    pair.ctl("endpoint", "status", "--cluster", norm=norm_status)


def test_endpoint_health(pair: Pair) -> None:
    r = pair.ctl("endpoint", "health", norm=norm_took)
    assert (r.rc, r.out, r.err) == (0, "", "<EP> is healthy: successfully committed proposal: took = <TOOK>\n")
    r = pair.ctl("endpoint", "health", "-w", "json", norm=norm_took)
    assert r.json() == [{"endpoint": "<EP>", "health": True, "took": "<TOOK>"}]
    r = pair.ctl("endpoint", "health", "-w", "table", norm=norm_took)
    assert cells(r.lines[1]) == ["ENDPOINT", "HEALTH", "TOOK", "ERROR"]
    assert cells(r.lines[3]) == ["<EP>", "true", "<TOOK>", ""]
    r = pair.ctl("endpoint", "health", "--cluster", norm=norm_took)
    assert r.err == "http://<EP> is healthy: successfully committed proposal: took = <TOOK>\n"


def test_endpoint_hashkv(pair: Pair) -> None:
    r = pair.ctl("endpoint", "hashkv", norm=norm_hash)
    assert r.out == "<EP>, <HASH>\n"
    r = pair.ctl("endpoint", "hashkv", "-w", "table", norm=norm_hash)
    assert cells(r.lines[1]) == ["ENDPOINT", "HASH"]
    assert cells(r.lines[3]) == ["<EP>", "<HASH>"]
    r = pair.ctl("endpoint", "hashkv", "--rev", "99999999", norm=norm_hash)
    assert (r.rc, r.out) == (1, "")
    assert "Failed to get the hash of endpoint <EP> (etcdserver: mvcc: required revision is a future revision)" \
        in r.err
    r = pair.ctl("endpoint", "hashkv", "--rev", "99999999", "-w", "json", norm=norm_hash)
    assert (r.rc, r.out) == (1, "[]\n")


def hashkv(endpoint: str, rev: int = 0) -> int:
    out = run_etcdctl(endpoint, "endpoint", "hashkv", "--rev", str(rev), "-w", "json")
    assert out.rc == 0, out
    return int(out.json()[0]["HashKV"]["hash"])


def test_endpoint_hashkv_is_a_function_of_history(pair: Pair) -> None:
    """The hash values differ between the two implementations, but on each the hash
    at a revision never changes afterwards, and a new write changes the latest hash."""
    pair.ctl("put", "hash1/k", "v")
    rev = pair.ctl("get", "hash1/k", "-w", "json").json()["header"]["revision"]
    for server in (pair.rusd, pair.etcd):
        at_rev, latest = hashkv(server.endpoint, rev), hashkv(server.endpoint)
        assert at_rev == latest
        assert run_etcdctl(server.endpoint, "put", "hash1/k", "v2").rc == 0
        assert hashkv(server.endpoint, rev) == at_rev
        assert hashkv(server.endpoint) != at_rev


def test_endpoint_hashkv_json_never_compacted(pair: Pair) -> None:
    r = pair.ctl("endpoint", "hashkv", "-w", "json", norm=norm_hash).json()
    assert r[0]["HashKV"]["compact_revision"] == -1


def test_member_list_simple_and_table(pair: Pair) -> None:
    r = pair.ctl("member", "list")
    assert r.out == "<MEMBER_ID>, started, default, http://<PEER>, http://<EP>, false\n"
    r = pair.ctl("member", "list", "-w", "table")
    assert cells(r.lines[1]) == ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"]
    assert cells(r.lines[3]) == ["<MEMBER_ID>", "started", "default", "http://<PEER>", "http://<EP>", "false"]
    # --hex prints the ids as they are (hex already)
    assert pair.ctl("member", "list", "--hex").out == \
        "<MEMBER_ID>, started, default, http://<PEER>, http://<EP>, false\n"


@pytest.mark.parametrize("fmt", ["json", "fields"])
def test_member_list_json_and_fields(pair: Pair, fmt: str) -> None:
    r = pair.ctl("member", "list", "-w", fmt)
    if fmt == "json":
        assert r.json()["members"] == [{"ID": "<MEMBER_ID>", "name": "default", "peerURLs": ["http://<PEER>"],
                                        "clientURLs": ["http://<EP>"]}]
    else:
        assert '"Revision" : 0\n' in r.out


def test_alarm_list_and_disarm_when_empty(pair: Pair) -> None:
    r = pair.ctl("alarm", "list")
    assert (r.rc, r.out, r.err) == (0, "", "")
    r = pair.ctl("alarm", "disarm")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert pair.ctl("alarm", "disarm", "-w", "json").out == "{}\n"
    pair.ctl("alarm", "disarm", "-w", "fields")


def test_alarm_list_json_when_empty(pair: Pair) -> None:
    assert pair.ctl("alarm", "list", "-w", "json").out == "{}\n"


def test_defrag(pair: Pair) -> None:
    pair.ctl("put", "defrag/k", "v")
    r = pair.ctl("defrag")
    assert (r.rc, r.out, r.err) == (0, "Finished defragmenting etcd member[<EP>]\n", "")
    assert pair.ctl("defrag", "-w", "json").out == "Finished defragmenting etcd member[<EP>]\n"
    assert pair.ctl("defrag", "--cluster").out == "Finished defragmenting etcd member[http://<EP>]\n"
    assert pair.ctl("get", "defrag/k").out == "defrag/k\nv\n"
