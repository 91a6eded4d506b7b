"""etcdctl txn (non-interactive from stdin, -i from stdin, -i on a terminal),
against rusd and a real etcd side by side.

etcdctl reads three blocks of lines, each ended by an empty line: compares,
success requests, failure requests. A compare is `target("key") op "value"` with
target value|version|create|mod (or val|ver|c|m) and op = != < >.
"""

from __future__ import annotations

import itertools
import operator

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.conformance.harness import Pair, run_etcdctl_pty

OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}


def txn(compares: list[str], success: list[str], failure: list[str]) -> str:
    return "".join(line + "\n" for line in [*compares, "", *success, "", *failure, ""])


def test_txn_success_and_failure_branches(pair: Pair) -> None:
    pair.ctl("put", "txn1/a", "1")
    pair.ctl("put", "txn1/b", "2")
    script = txn(['value("txn1/a") = "1"', 'version("txn1/b") > "0"'],
                 ["put txn1/a 11", "get txn1/ --prefix", "del txn1/b --prev-kv"],
                 ["put txn1/failed yes"])
    r = pair.ctl("txn", stdin=script)
    assert r.out == "SUCCESS\n\nOK\n\ntxn1/a\n11\ntxn1/b\n2\n\n1\ntxn1/b\n2\n"
    # same script again: txn1/a is now 11, so the failure branch runs
    r = pair.ctl("txn", stdin=script)
    assert r.out == "FAILURE\n\nOK\n"
    assert pair.ctl("get", "txn1/", "--prefix").out == "txn1/a\n11\ntxn1/failed\nyes\n"


def test_txn_output_formats(pair: Pair) -> None:
    pair.ctl("put", "txn2/a", "1")
    ok = txn(['value("txn2/a") = "1"'], ["put txn2/b x", "get txn2/a", "del txn2/none"], ["get txn2/a"])
    r = pair.ctl("txn", "-w", "json", stdin=ok).json()
    assert r["succeeded"] is True
    rev = r["header"]["revision"]
    assert r["responses"] == [
        {"Response": {"ResponsePut": {"header": {"revision": rev}}}},
        {"Response": {"ResponseRange": {"header": {"revision": rev}, "kvs": [
            {"key": "dHhuMi9h", "create_revision": rev - 1, "mod_revision": rev - 1, "version": 1,
             "value": "MQ=="}], "count": 1}}},
        {"Response": {"ResponseDeleteRange": {"header": {"revision": rev}}}},
    ]
    fail = txn(['value("txn2/a") = "nope"'], ["put txn2/b y"], ["get txn2/a", "get txn2/missing"])
    r = pair.ctl("txn", "-w", "json", stdin=fail).json()
    assert "succeeded" not in r  # false is omitted
    assert r["header"]["revision"] == rev  # read-only branch: no new revision
    pair.ctl("txn", "-w", "fields", stdin=ok)
    pair.ctl("txn", "-w", "fields", stdin=fail)
    pair.ctl("txn", "-w", "protobuf", stdin=ok, protobuf=pb.TxnResponse)
    pair.ctl("txn", "-w", "protobuf", stdin=fail, protobuf=pb.TxnResponse)
    pair.ctl("txn", "-w", "simple", stdin=fail)
    r = pair.ctl("txn", "-w", "table", stdin=fail)
    assert r.rc != 0


def test_txn_compare_matrix(pair: Pair) -> None:
    """Every target x op against values below, at and above the key's own."""
    pair.ctl("put", "txn3/k", "m")
    pair.ctl("put", "txn3/k", "m")  # version 2
    kv = pair.ctl("get", "txn3/k", "-w", "json").json()["kvs"][0]
    actual = {"version": kv["version"], "create": kv["create_revision"], "mod": kv["mod_revision"]}
    cases: list[tuple[str, str, bool]] = []
    for target, op in itertools.product(["version", "create", "mod"], OPS):
        for value in (actual[target] - 1, actual[target], actual[target] + 1):
            cases.append((f'{target}("txn3/k") {op} "{value}"', "", OPS[op](actual[target], value)))
    for op, value in itertools.product(OPS, ["l", "m", "n", "", "mm"]):
        cases.append((f'value("txn3/k") {op} "{value}"', "", OPS[op]("m", value)))
    for compare, _, holds in cases:
        if compare.endswith('""'):
            continue  # etcdctl cannot parse an empty quoted value (client-side error)
        r = pair.ctl("txn", stdin=txn([compare], ["get txn3/k"], []))
        assert r.out == ("SUCCESS\n\ntxn3/k\nm\n" if holds else "FAILURE\n"), compare


def test_txn_short_target_names_and_several_compares(pair: Pair) -> None:
    pair.ctl("put", "txn4/k", "v")
    r = pair.ctl("txn", stdin=txn(['val("txn4/k") = "v"', 'ver("txn4/k") = "1"', 'c("txn4/k") > "1"',
                                   'm("txn4/k") > "1"'], ["put txn4/ok 1"], []))
    assert r.out == "SUCCESS\n\nOK\n"
    # all compares must hold
    r = pair.ctl("txn", stdin=txn(['val("txn4/k") = "v"', 'ver("txn4/k") = "2"'], [], ["put txn4/no 1"]))
    assert r.out == "FAILURE\n\nOK\n"


def test_txn_compare_missing_key(pair: Pair) -> None:
    def branch(compare: str) -> str:
        return pair.ctl("txn", stdin=txn([compare], [], [])).out

    # a missing key compares as a zero KeyValue ...
    assert branch('version("txn5/none") = "0"') == "SUCCESS\n"
    assert branch('create("txn5/none") = "0"') == "SUCCESS\n"
    assert branch('mod("txn5/none") < "1"') == "SUCCESS\n"
    assert branch('version("txn5/none") > "0"') == "FAILURE\n"
    # ... except that a value compare on it always fails
    assert branch('value("txn5/none") != "x"') == "FAILURE\n"
    assert branch('value("txn5/none") > "a"') == "FAILURE\n"
    assert branch('value("txn5/none") < "a"') == "FAILURE\n"


def test_txn_no_compares_and_empty_branches(pair: Pair) -> None:
    assert pair.ctl("txn", stdin=txn([], ["put txn6/a 1"], ["put txn6/b 1"])).out == "SUCCESS\n\nOK\n"
    assert pair.ctl("txn", stdin=txn([], [], [])).out == "SUCCESS\n"
    r = pair.ctl("txn", "-w", "json", stdin=txn([], [], []))
    assert r.json()["succeeded"] is True
    assert pair.ctl("get", "txn6/", "--prefix", "--keys-only").out == "txn6/a\n\n"


def test_txn_ops_see_earlier_ops(pair: Pair) -> None:
    pair.ctl("put", "txn7/old", "0")
    r = pair.ctl("txn", stdin=txn([], ["put txn7/a 1", "get txn7/a", "del txn7/old --prev-kv", "get txn7/old",
                                       "put txn7/b 2"], []))
    assert r.out == "SUCCESS\n\nOK\n\ntxn7/a\n1\n\n1\ntxn7/old\n0\n\n\nOK\n"
    r = pair.ctl("get", "txn7/", "--prefix", "-w", "json").json()
    # the whole txn is one revision
    assert [kv["mod_revision"] for kv in r["kvs"]] == [r["header"]["revision"]] * 2
    r = pair.ctl("txn", stdin=txn([], ["get txn7/ --prefix --limit 1 --order DESCEND", 'put txn7/q "a b"',
                                       "get txn7/q --print-value-only"], []))
    # (--print-value-only has no effect inside a txn)
    assert r.out == "SUCCESS\n\ntxn7/b\n2\n\nOK\n\ntxn7/q\na b\n"
    # put then delete of one key in one branch is a duplicate
    r = pair.ctl("txn", stdin=txn([], ["put txn7/a 1", "del txn7/a"], []))
    assert r.err.endswith("Error: etcdserver: duplicate key given in txn request\n")


def test_txn_server_errors(pair: Pair) -> None:
    r = pair.ctl("txn", stdin=txn([], ["put txn8/d 1", "put txn8/d 2"], []))
    assert r.rc == 1
    assert "code = InvalidArgument desc = etcdserver: duplicate key given in txn request" in r.err
    assert r.err.endswith("Error: etcdserver: duplicate key given in txn request\n")
    r = pair.ctl("txn", stdin=txn([], ["put txn8/d 1", "del txn8/ --prefix"], []))
    assert r.err.endswith("Error: etcdserver: duplicate key given in txn request\n")
    # the same key in both branches is fine
    assert pair.ctl("txn", stdin=txn([], ["put txn8/d 1"], ["put txn8/d 2"])).out == "SUCCESS\n\nOK\n"
    r = pair.ctl("txn", stdin=txn([], ['put "" 1'], []))
    assert r.err.endswith("Error: etcdserver: key is not provided\n")
    many = [f"put txn8/m{i} x" for i in range(129)]
    r = pair.ctl("txn", stdin=txn([], many, []))
    assert r.err.endswith("Error: etcdserver: too many operations in txn request\n")
    assert pair.ctl("txn", stdin=txn([], many[:128], [])).rc == 0


def test_txn_client_side_errors(pair: Pair) -> None:
    r = pair.ctl("txn", stdin='value("a") = "1"\n\nput a 1\n')  # no terminating empty lines
    assert (r.rc, r.err) == (3, "Error: EOF\n")
    r = pair.ctl("txn", stdin="")
    assert (r.rc, r.err) == (3, "Error: EOF\n")
    r = pair.ctl("txn", stdin=txn(['bogus("a") = "1"'], [], []))
    assert (r.rc, r.err) == (3, 'Error: malformed comparison: bogus("a") = "1" (unknown target bogus)\n')
    r = pair.ctl("txn", stdin=txn(['version("a") = "x"'], [], []))
    assert (r.rc, r.err) == (3, 'Error: invalid txn compare request: version("a") = "x"\n')
    r = pair.ctl("txn", stdin=txn([], ["badop a"], []))
    assert (r.rc, r.err) == (3, "Error: invalid txn request: badop a\n")
    # etcdctl 3.4 panics on an unknown operator (and on any lease("k") compare)
    r = pair.ctl("txn", stdin=txn(['value("a") ~ "1"'], [], []))
    assert r.rc == 2
    assert r.err.startswith("panic: Unknown result op\n")


def test_txn_interactive_from_stdin(pair: Pair) -> None:
    pair.ctl("put", "txn9/a", "1")
    script = txn(['value("txn9/a") = "1"'], ["put txn9/a 2"], ["get txn9/a"])
    r = pair.ctl("txn", "-i", stdin=script)
    assert r.out == ("compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
                     "SUCCESS\n\nOK\n")
    r = pair.ctl("txn", "-i", "-w", "json", stdin=script)
    assert r.lines[:3] == ["compares:", "success requests (get, put, del):", "failure requests (get, put, del):"]
    assert r.out.count('"ResponseRange"') == 1


def test_txn_interactive_on_a_terminal(pair: Pair) -> None:
    pair.ctl("put", "txn10/a", "1")
    script = [
        ("compares:", 'value("txn10/a") = "1"\n\n'),
        ("success requests (get, put, del):", "put txn10/a 2\nget txn10/a\n\n"),
        ("failure requests (get, put, del):", "get txn10/a\n\n"),
    ]
    for expected_branch in ("SUCCESS\n\nOK\n\ntxn10/a\n2\n", "FAILURE\n\ntxn10/a\n2\n"):
        rusd_out = run_etcdctl_pty(pair.rusd.endpoint, "txn", "-i", script=script)
        etcd_out = run_etcdctl_pty(pair.etcd.endpoint, "txn", "-i", script=script)
        r = pair.compare(rusd_out, etcd_out, "etcdctl txn -i (on a pty)")
        assert r.rc == 0
        assert r.out.endswith(expected_branch)
        assert r.out.startswith('compares:\nvalue("txn10/a") = "1"\n\nsuccess requests (get, put, del):\n')


LEASE_ID = 0x5E7C0DE


def grant(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        pb_grpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(ID=LEASE_ID, TTL=3600), timeout=10)


def grpc_txn(endpoint: str, request: pb.TxnRequest) -> pb.TxnResponse:
    with grpc.insecure_channel(endpoint) as ch:
        return pb_grpc.KVStub(ch).Txn(request, timeout=10)


def test_txn_lease_compare(pair: Pair) -> None:
    """etcdctl 3.4 cannot send a LEASE compare (it panics while building it), so the
    compare goes over gRPC; the key is attached with `etcdctl put --lease`."""
    grant(pair.rusd.endpoint)
    grant(pair.etcd.endpoint)
    assert pair.ctl("put", "txn11/k", "v", f"--lease={LEASE_ID:x}").out == "OK\n"
    assert pair.ctl("get", "txn11/k", "-w", "json").json()["kvs"][0]["lease"] == LEASE_ID
    # --ignore-lease keeps the lease; a plain put detaches it
    pair.ctl("put", "txn11/k", "v2", "--ignore-lease")
    assert pair.ctl("get", "txn11/k", "-w", "json").json()["kvs"][0]["lease"] == LEASE_ID
    results = {"=": pb.Compare.EQUAL, "!=": pb.Compare.NOT_EQUAL, "<": pb.Compare.LESS, ">": pb.Compare.GREATER}
    for (op, result), (key, value) in itertools.product(
        results.items(), [(b"txn11/k", LEASE_ID), (b"txn11/k", LEASE_ID + 1), (b"txn11/k", 0), (b"txn11/none", 0)]
    ):
        req = pb.TxnRequest(compare=[pb.Compare(key=key, target=pb.Compare.LEASE, result=result, lease=value)])
        got = [grpc_txn(s.endpoint, req).succeeded for s in (pair.rusd, pair.etcd)]
        assert got[0] == got[1], (op, key, value, got)
        actual = LEASE_ID if key == b"txn11/k" else 0
        assert got[1] == OPS[op](actual, value)
    pair.ctl("put", "txn11/k", "v3")
    assert "lease" not in pair.ctl("get", "txn11/k", "-w", "json").json()["kvs"][0]
