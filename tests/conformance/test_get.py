"""etcdctl get, against rusd and a real etcd side by side."""

from __future__ import annotations

import itertools

import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from tests.conformance.harness import Pair

# Writes in this order give every sort target a different order:
#   key:     g/a g/b g/c g/d
#   version: g/a=3 g/b=2 g/c=1 g/d=1
#   create:  g/a < g/b < g/c < g/d
#   modify:  g/c < g/b < g/d < g/a
#   value:   g/d=0 < g/c=2 < g/a=4 < g/b=9
WRITES = [("a", "3"), ("b", "1"), ("c", "2"), ("b", "9"), ("d", "0"), ("a", "5"), ("a", "4")]


def load(pair: Pair, prefix: str) -> None:
    for k, v in WRITES:
        pair.ctl("put", f"{prefix}{k}", v)


def test_get_single_and_missing(pair: Pair) -> None:
    load(pair, "get1/")
    assert pair.ctl("get", "get1/a").out == "get1/a\n4\n"
    assert pair.ctl("get", "get1/missing").out == ""
    r = pair.ctl("get", "get1/missing", "-w", "json").json()
    assert set(r) == {"header"}  # no kvs, count 0 omitted
    r = pair.ctl("get", "get1/missing", "-w", "fields")
    assert r.out.endswith('"More" : false\n"Count" : 0\n')
    r = pair.ctl("get", "get1/a", "-w", "json").json()
    assert r["count"] == 1
    kv = r["kvs"][0]
    assert (kv["key"], kv["value"], kv["version"]) == ("Z2V0MS9h", "NA==", 3)
    assert kv["mod_revision"] == r["header"]["revision"]
    assert kv["create_revision"] == r["header"]["revision"] - 6


def test_get_range_prefix_from_key(pair: Pair) -> None:
    load(pair, "get2/")
    pair.ctl("put", "get2x", "outside")
    assert pair.ctl("get", "get2/", "--prefix", "--keys-only").lines == ["get2/a", "", "get2/b", "", "get2/c", "",
                                                                        "get2/d", ""]
    # [key, range_end)
    assert pair.ctl("get", "get2/b", "get2/d").out == "get2/b\n9\nget2/c\n2\n"
    assert pair.ctl("get", "get2/d", "get2/b").out == ""
    # --from-key: everything >= key (the module's later keys sort after "get2")
    r = pair.ctl("get", "get2/c", "--from-key", "--keys-only", "--limit", "3")
    assert r.lines == ["get2/c", "", "get2/d", "", "get2x", ""]
    pair.ctl("get", "get2/", "--from-key", "-w", "json")
    r = pair.ctl("get", "get2/b", "get2/d", "--prefix")
    assert (r.rc, r.err) == (128, "Error: too many arguments, only accept one argument when `--prefix` or "
                                  "`--from-key` is set\n")
    r = pair.ctl("get", "get2/", "--prefix", "--from-key")
    assert (r.rc, r.err) == (128, "Error: `--prefix` and `--from-key` cannot be set at the same time, choose one\n")
    r = pair.ctl("get")
    assert (r.rc, r.err) == (128, "Error: get command needs one argument as key and an optional argument as "
                                  "range_end\n")


def test_get_limit(pair: Pair) -> None:
    load(pair, "get3/")
    assert pair.ctl("get", "get3/", "--prefix", "--limit", "2").out == "get3/a\n4\nget3/b\n9\n"
    r = pair.ctl("get", "get3/", "--prefix", "--limit", "2", "-w", "json").json()
    assert (len(r["kvs"]), r["more"], r["count"]) == (2, True, 4)
    r = pair.ctl("get", "get3/", "--prefix", "--limit", "4", "-w", "json").json()
    assert (len(r["kvs"]), "more" in r, r["count"]) == (4, False, 4)
    r = pair.ctl("get", "get3/", "--prefix", "--limit", "2", "-w", "fields")
    assert r.out.endswith('"More" : true\n"Count" : 4\n')
    pair.ctl("get", "get3/", "--prefix", "--limit", "0", "--keys-only")
    pair.ctl("get", "get3/", "--prefix", "--limit", "-1", "--keys-only")
    pair.ctl("get", "get3/", "--prefix", "--limit", "1", "--order", "DESCEND", "--sort-by", "VALUE")


ORDERS = ["ASCEND", "DESCEND", ""]
TARGETS = ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE", ""]
EXPECTED_ASCEND = {
    "KEY": "abcd", "": "abcd", "CREATE": "abcd",
    "VERSION": "cdba",  # c and d tie at version 1: key order inside the tie
    "MODIFY": "cbda", "VALUE": "dcab",
}
EXPECTED_DESCEND = {
    "KEY": "dcba", "": "dcba", "CREATE": "dcba",
    "VERSION": "abcd",  # the c/d tie stays in key order
    "MODIFY": "adbc", "VALUE": "bacd",
}


def test_get_sort_matrix(pair: Pair) -> None:
    load(pair, "get4/")
    for order, target in itertools.product(ORDERS, TARGETS):
        r = pair.ctl("get", "get4/", "--prefix", "--keys-only", "--order", order, "--sort-by", target)
        keys = "".join(line[-1] for line in r.lines if line)
        want = EXPECTED_ASCEND[target] if order != "DESCEND" else EXPECTED_DESCEND[target]
        assert keys == want, (order, target)
    r = pair.ctl("get", "get4/", "--prefix", "--order", "BAD")
    assert (r.rc, r.err) == (4, "Error: bad sort order BAD\n")
    r = pair.ctl("get", "get4/", "--prefix", "--sort-by", "BAD")
    assert (r.rc, r.err) == (4, "Error: bad sort target BAD\n")


def test_get_sort_ties_all_equal(pair: Pair) -> None:
    """20 keys (past Go's insertion-sort cutoff of 12), all tied: key order."""
    puts = "".join(f"put get5/{i:02d} same\n" for i in range(20))
    pair.ctl("txn", stdin=f"\n{puts}\n\n")  # one txn: all versions and values tie
    want = [f"get5/{i:02d}" for i in range(20)]
    for order, target in [("ASCEND", "VALUE"), ("DESCEND", "VALUE"), ("ASCEND", "MODIFY"), ("DESCEND", "CREATE")]:
        r = pair.ctl("get", "get5/", "--prefix", "--keys-only", "--order", order, "--sort-by", target)
        assert [line for line in r.lines if line] == want


def put_tied_values(pair: Pair, prefix: str) -> None:
    puts = "".join(f"put {prefix}{i:02d} v{i * 7 % 3}\n" for i in range(40))
    pair.ctl("txn", stdin=f"\n{puts}\n\n")


def test_get_sort_ties_grouping(pair: Pair) -> None:
    """Many keys in three tie groups: the groups come out in value order. (The order
    inside a group is compared exactly in the test below.)"""
    put_tied_values(pair, "get5b/")
    for order in ("ASCEND", "DESCEND"):
        rusd_out, etcd_out = pair.raw("get", "get5b/", "--prefix", "--sort-by", "VALUE", "--order", order)
        for o in (rusd_out, etcd_out):
            pairs = list(zip(o.lines[::2], o.lines[1::2], strict=True))
            values = [v for _, v in pairs]
            assert values == sorted(values, reverse=order == "DESCEND")
            assert sorted(pairs) == sorted((f"get5b/{i:02d}", f"v{i * 7 % 3}") for i in range(40))


def test_get_sort_ties_order_like_etcd(pair: Pair) -> None:
    put_tied_values(pair, "get5c/")
    pair.ctl("get", "get5c/", "--prefix", "--keys-only", "--sort-by", "VALUE", "--order", "ASCEND")
    pair.ctl("get", "get5c/", "--prefix", "--keys-only", "--sort-by", "VALUE", "--order", "DESCEND")


def test_get_output_shapes(pair: Pair) -> None:
    load(pair, "get6/")
    r = pair.ctl("get", "get6/", "--prefix", "--keys-only")
    assert r.out == "get6/a\n\nget6/b\n\nget6/c\n\nget6/d\n\n"
    r = pair.ctl("get", "get6/", "--prefix", "--keys-only", "-w", "json").json()
    assert all("value" not in kv for kv in r["kvs"])
    assert pair.ctl("get", "get6/", "--prefix", "--print-value-only").out == "4\n9\n2\n0\n"
    assert pair.ctl("get", "get6/a", "--print-value-only", "--keys-only").out == "\n"
    assert pair.ctl("get", "get6/", "--prefix", "-w", "simple").out == "get6/a\n4\nget6/b\n9\nget6/c\n2\nget6/d\n0\n"
    r = pair.ctl("get", "get6/", "--prefix", "--limit", "2", "-w", "fields")
    assert r.lines[:4] == ['"ClusterID" : <CLUSTER_ID>', '"MemberID" : <MEMBER_ID>', r.lines[2], '"RaftTerm" : <TERM>']
    assert r.lines[4:10] == ['"Key" : "get6/a"', r.lines[5], r.lines[6], '"Version" : 3', '"Value" : "4"',
                             '"Lease" : 0']
    pair.ctl("get", "get6/", "--prefix", "-w", "json")
    pair.ctl("get", "get6/", "--prefix", "-w", "protobuf", protobuf=pb.RangeResponse)
    pair.ctl("get", "get6/missing", "-w", "protobuf", protobuf=pb.RangeResponse)
    r = pair.ctl("get", "get6/a", "-w", "table")
    assert (r.rc, r.err) == (4, "Error: table not supported as output format\n")
    r = pair.ctl("get", "get6/a", "-w", "yaml")
    assert r.rc != 0
    # etcdctl 3.4 has no --count-only (3.5 added it)
    r = pair.ctl("get", "get6/", "--prefix", "--count-only")
    assert r.rc == 1
    assert r.err == "Error: unknown flag: --count-only\n\nError: unknown flag: --count-only\n"


def test_get_hex(pair: Pair) -> None:
    load(pair, "get7/")
    assert pair.ctl("get", "get7/a", "--hex").out == "\\x67\\x65\\x74\\x37\\x2f\\x61\n\\x34\n"
    assert pair.ctl("get", "get7/a", "--hex", "--print-value-only").out == "\\x34\n"
    assert pair.ctl("get", "get7/a", "--hex", "--keys-only").out == "\\x67\\x65\\x74\\x37\\x2f\\x61\n\n"
    pair.ctl("get", "get7/", "--prefix", "--hex", "-w", "json")
    r = pair.ctl("get", "get7/a", "--hex", "-w", "fields")
    assert '"Key" : "get7/a"' in r.out  # fields ignores --hex
    # --hex is output only: the key argument is not decoded
    assert pair.ctl("get", "\\x67\\x65\\x74\\x37\\x2f\\x61", "--hex").out == ""


def test_get_consistency(pair: Pair) -> None:
    load(pair, "get8/")
    for c in ("l", "s"):
        assert pair.ctl("get", "get8/", "--prefix", "--consistency", c).out == \
            "get8/a\n4\nget8/b\n9\nget8/c\n2\nget8/d\n0\n"
        pair.ctl("get", "get8/", "--prefix", "--consistency", c, "-w", "json")
    r = pair.ctl("get", "get8/a", "--consistency", "x")
    assert (r.rc, r.err) == (4, 'Error: unknown consistency flag "x"\n')


def test_get_rev(pair: Pair) -> None:
    pair.ctl("put", "get9/k", "v1")
    rev1 = pair.ctl("get", "get9/k", "-w", "json").json()["header"]["revision"]
    pair.ctl("put", "get9/k", "v2")
    pair.ctl("del", "get9/k")
    pair.ctl("put", "get9/k", "v3")
    assert pair.ctl("get", "get9/k", "--rev", str(rev1)).out == "get9/k\nv1\n"
    assert pair.ctl("get", "get9/k", "--rev", str(rev1 + 1)).out == "get9/k\nv2\n"
    assert pair.ctl("get", "get9/k", "--rev", str(rev1 + 2)).out == ""  # deleted
    assert pair.ctl("get", "get9/k", "--rev", str(rev1 + 3)).out == "get9/k\nv3\n"
    assert pair.ctl("get", "get9/k", "--rev", str(rev1 - 1)).out == ""  # before it existed
    r = pair.ctl("get", "get9/k", "--rev", str(rev1), "-w", "json").json()
    # the header carries the current revision even for a historical read
    assert r["header"]["revision"] == rev1 + 3
    assert r["kvs"][0]["version"] == 1
    r = pair.ctl("get", "get9/k", "--rev", str(rev1 + 3), "-w", "json").json()
    assert (r["kvs"][0]["create_revision"], r["kvs"][0]["version"]) == (rev1 + 3, 1)  # new generation
    pair.ctl("get", "get9/k", "--rev", "0")
    pair.ctl("get", "get9/k", "--rev", "-1")
    r = pair.ctl("get", "get9/k", "--rev", str(rev1 + 4))
    assert r.rc == 1
    assert "code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision" in r.err
    assert r.err.endswith("Error: etcdserver: mvcc: required revision is a future revision\n")
    r = pair.ctl("get", "get9/k", "--rev", "99999999", "--consistency", "s")
    assert r.err.endswith("Error: etcdserver: mvcc: required revision is a future revision\n")


def test_get_binary_keys(pair: Pair) -> None:
    """Keys with 0xff bytes (etcdctl computes the prefix end by incrementing the last
    byte that is not 0xff) and other non-UTF-8 bytes, passed as raw argv bytes."""
    ff, fe = "\udcff", "\udcfe"  # surrogateescape: raw bytes 0xff, 0xfe on the command line
    for key, value in [(f"getb/{ff}{ff}", "1"), (f"getb/{ff}", "2"), (f"getb/{fe}", "3"), ("getb/\x01", "4"),
                       ("getb0", "outside")]:
        pair.ctl("put", key, value)
    r = pair.ctl("get", f"getb/{ff}", "--prefix", "--hex")
    assert r.out == "\\x67\\x65\\x74\\x62\\x2f\\xff\n\\x32\n\\x67\\x65\\x74\\x62\\x2f\\xff\\xff\n\\x31\n"
    r = pair.ctl("get", "getb/", "--prefix", "-w", "json").json()
    assert [kv["key"] for kv in r["kvs"]] == ["Z2V0Yi8B", "Z2V0Yi/+", "Z2V0Yi//", "Z2V0Yi///w=="]
    assert pair.ctl("get", f"getb/{fe}", f"getb/{ff}{ff}", "--print-value-only").out == "3\n2\n"
    assert pair.ctl("del", f"getb/{ff}", "--prefix").out == "2\n"
    assert pair.ctl("get", "getb/", "--prefix", "--print-value-only").out == "4\n3\n"


@pytest.mark.parametrize("key", ["", "\\x00"])
def test_get_empty_and_nul_key(pair: Pair, key: str) -> None:
    r = pair.ctl("get", key)
    if key == "":
        assert r.rc == 1
        assert r.err.endswith("Error: etcdserver: key is not provided\n")
    else:
        assert (r.rc, r.out) == (0, "")  # a literal backslash-x00 key: just absent
