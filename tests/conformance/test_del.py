"""etcdctl del, against rusd and a real etcd side by side."""

from __future__ import annotations

from rusd.api.etcdserverpb import rpc_pb2 as pb
from tests.conformance.harness import Pair


def load(pair: Pair, prefix: str, names: str = "abcde") -> None:
    puts = "".join(f"put {prefix}{n} v{prefix}{n}\n" for n in names)
    pair.ctl("txn", stdin=f"\n{puts}\n\n")


def test_del_single(pair: Pair) -> None:
    load(pair, "del1/")
    rev = pair.ctl("get", "del1/a", "-w", "json").json()["header"]["revision"]
    assert pair.ctl("del", "del1/a").out == "1\n"
    # deleting a missing key: 0, and no new revision
    assert pair.ctl("del", "del1/a").out == "0\n"
    r = pair.ctl("del", "del1/a", "-w", "json").json()
    assert r["header"]["revision"] == rev + 1
    assert "deleted" not in r
    assert pair.ctl("get", "del1/", "--prefix", "--keys-only").lines == ["del1/b", "", "del1/c", "", "del1/d", "",
                                                                        "del1/e", ""]


def test_del_prev_kv(pair: Pair) -> None:
    load(pair, "del2/")
    assert pair.ctl("del", "del2/a", "--prev-kv").out == "1\ndel2/a\nvdel2/a\n"
    assert pair.ctl("del", "del2/a", "--prev-kv").out == "0\n"
    r = pair.ctl("del", "del2/b", "--prev-kv", "-w", "json").json()
    assert r["deleted"] == 1
    assert r["prev_kvs"][0]["key"] == "ZGVsMi9i"
    r = pair.ctl("del", "del2/c", "--prev-kv", "-w", "fields")
    assert '"Deleted" : 1\n"PrevKey" : "del2/c"\n' in r.out
    assert '"PrevValue" : "vdel2/c"\n' in r.out
    pair.ctl("del", "del2/d", "--prev-kv", "-w", "protobuf", protobuf=pb.DeleteRangeResponse)
    pair.ctl("del", "del2/e", "-w", "protobuf", protobuf=pb.DeleteRangeResponse)
    pair.ctl("del", "del2/e", "-w", "protobuf", protobuf=pb.DeleteRangeResponse)


def test_del_range_prefix(pair: Pair) -> None:
    load(pair, "del3/")
    pair.ctl("put", "del3", "no slash")
    pair.ctl("put", "del3x", "sibling")
    # [key, range_end)
    assert pair.ctl("del", "del3/b", "del3/d", "--prev-kv").out == "2\ndel3/b\nvdel3/b\ndel3/c\nvdel3/c\n"
    assert pair.ctl("del", "del3/", "--prefix").out == "3\n"
    assert pair.ctl("get", "del3", "--prefix", "--keys-only").lines == ["del3", "", "del3x", ""]
    assert pair.ctl("del", "del3/", "--prefix", "-w", "json").json().get("deleted") is None
    r = pair.ctl("del", "a", "b", "--prefix")
    assert (r.rc, r.err) == (128, "Error: too many arguments, only accept one argument when `--prefix` or "
                                  "`--from-key` is set\n")
    r = pair.ctl("del", "a", "--prefix", "--from-key")
    assert (r.rc, r.err) == (128, "Error: `--prefix` and `--from-key` cannot be set at the same time, choose one\n")


def test_del_from_key(pair: Pair) -> None:
    # "zzdel/" sorts after every key any other test in this module writes
    load(pair, "zzdel/")
    assert pair.ctl("del", "zzdel/c", "--from-key", "--prev-kv").out == \
        "3\nzzdel/c\nvzzdel/c\nzzdel/d\nvzzdel/d\nzzdel/e\nvzzdel/e\n"
    assert pair.ctl("get", "zzdel/", "--prefix", "--keys-only").lines == ["zzdel/a", "", "zzdel/b", ""]
    assert pair.ctl("del", "zzdel/c", "--from-key").out == "0\n"


def test_del_errors(pair: Pair) -> None:
    r = pair.ctl("del")
    assert (r.rc, r.err) == (128, "Error: del command needs one argument as key and an optional argument as "
                                  "range_end\n")
    r = pair.ctl("del", "")
    assert r.rc == 1
    assert "code = InvalidArgument desc = etcdserver: key is not provided" in r.err
    assert r.err.endswith("Error: etcdserver: key is not provided\n")


def test_del_then_recreate_starts_new_generation(pair: Pair) -> None:
    pair.ctl("put", "del4/k", "1")
    pair.ctl("put", "del4/k", "2")
    pair.ctl("del", "del4/k")
    pair.ctl("put", "del4/k", "3")
    r = pair.ctl("get", "del4/k", "-w", "json").json()
    kv = r["kvs"][0]
    assert (kv["version"], kv["create_revision"], kv["mod_revision"]) == (1, r["header"]["revision"],
                                                                         r["header"]["revision"])
