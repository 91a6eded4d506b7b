"""etcdctl compaction and reads of compacted/future revisions, each scenario on a
fresh rusd and a fresh etcd (absolute revisions are asserted)."""

from __future__ import annotations

from tests.conformance.harness import Pair, norm_hash

COMPACTED = "Error: etcdserver: mvcc: required revision has been compacted\n"
FUTURE = "Error: etcdserver: mvcc: required revision is a future revision\n"


def history(pair: Pair) -> None:
    """Revisions: 2 k=v1, 3 k=v2, 4 k=v3, 5 other=o, 6 del other."""
    for args in (("k", "v1"), ("k", "v2"), ("k", "v3"), ("other", "o")):
        pair.ctl("put", *args)
    pair.ctl("del", "other")


def test_compaction_and_reads(fresh_pair: Pair) -> None:
    pair = fresh_pair
    history(pair)
    assert pair.ctl("compaction", "3").out == "compacted revision 3\n"
    r = pair.ctl("get", "k", "--rev", "2")
    assert r.rc == 1
    assert "code = OutOfRange desc = etcdserver: mvcc: required revision has been compacted" in r.err
    assert r.err.endswith(COMPACTED)
    assert pair.ctl("get", "k", "--rev", "1").err.endswith(COMPACTED)
    # the compaction revision itself is still readable
    assert pair.ctl("get", "k", "--rev", "3").out == "k\nv2\n"
    assert pair.ctl("get", "k", "--rev", "4").out == "k\nv3\n"
    assert pair.ctl("get", "other", "--rev", "5").out == "other\no\n"
    assert pair.ctl("get", "", "--prefix", "--rev", "3", "-w", "json").json()["kvs"][0]["mod_revision"] == 3
    assert pair.ctl("get", "k", "--rev", "7").err.endswith(FUTURE)
    assert pair.ctl("get", "k", "--rev", "2", "--consistency", "s").err.endswith(COMPACTED)
    # compaction does not create a revision
    assert pair.ctl("get", "k", "-w", "json").json()["header"]["revision"] == 6
    assert pair.ctl("get", "", "--prefix").out == "k\nv3\n"


def test_compaction_errors(fresh_pair: Pair) -> None:
    pair = fresh_pair
    history(pair)
    assert pair.ctl("compaction", "4").out == "compacted revision 4\n"
    for rev in ("4", "3", "1"):
        r = pair.ctl("compaction", rev)
        assert r.rc == 1
        assert "code = OutOfRange desc = etcdserver: mvcc: required revision has been compacted" in r.err
        assert r.err.endswith(COMPACTED)
    r = pair.ctl("compaction", "7")
    assert r.rc == 1
    assert "code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision" in r.err
    assert r.err.endswith(FUTURE)
    # up to the current revision is fine
    assert pair.ctl("compaction", "6").out == "compacted revision 6\n"
    assert pair.ctl("get", "k", "--rev", "5").err.endswith(COMPACTED)
    assert pair.ctl("get", "k", "--rev", "6").out == "k\nv3\n"
    r = pair.ctl("compaction")
    assert (r.rc, r.err) == (128, "Error: compaction command needs 1 argument\n")
    r = pair.ctl("compaction", "x")
    assert (r.rc, r.err) == (1, 'Error: strconv.ParseInt: parsing "x": invalid syntax\n')


def test_compaction_zero_and_fresh_store(fresh_pair: Pair) -> None:
    pair = fresh_pair
    assert pair.ctl("compaction", "0").out == "compacted revision 0\n"
    assert pair.ctl("compaction", "1").out == "compacted revision 1\n"
    assert pair.ctl("compaction", "1").err.endswith(COMPACTED)
    assert pair.ctl("compaction", "2").err.endswith(FUTURE)
    pair.ctl("put", "a", "1")
    assert pair.ctl("compaction", "2", "--physical").out == "compacted revision 2\n"


def test_compaction_physical(fresh_pair: Pair) -> None:
    pair = fresh_pair
    history(pair)
    # a larger history so the physical compaction has work to do
    for i in range(10):
        pair.ctl("put", f"bulk/{i}", "x" * 1000)
    pair.ctl("del", "bulk/", "--prefix")
    assert pair.ctl("compaction", "5", "--physical").out == "compacted revision 5\n"
    assert pair.ctl("get", "k", "--rev", "4").err.endswith(COMPACTED)
    assert pair.ctl("get", "other", "--rev", "5").out == "other\no\n"
    assert pair.ctl("compaction", "17", "--physical").out == "compacted revision 17\n"
    assert pair.ctl("get", "", "--prefix", "--keys-only").out == "k\n\n"
    assert pair.ctl("compaction", "17", "--physical").err.endswith(COMPACTED)


def test_hashkv_after_compaction(fresh_pair: Pair) -> None:
    pair = fresh_pair
    history(pair)
    pair.ctl("compaction", "4")
    r = pair.ctl("endpoint", "hashkv", "-w", "json", norm=norm_hash).json()
    assert r[0]["HashKV"]["compact_revision"] == 4
    r = pair.ctl("endpoint", "hashkv", "--rev", "3", norm=norm_hash)
    assert r.rc == 1
    assert "Failed to get the hash of endpoint <EP> (etcdserver: mvcc: required revision has been compacted)" \
        in r.err
    pair.ctl("endpoint", "hashkv", "--rev", "5", "-w", "json", norm=norm_hash)


def test_defrag_after_compaction_keeps_data(fresh_pair: Pair) -> None:
    pair = fresh_pair
    history(pair)
    pair.ctl("compaction", "5", "--physical")
    assert pair.ctl("defrag").out == "Finished defragmenting etcd member[<EP>]\n"
    assert pair.ctl("get", "", "--prefix").out == "k\nv3\n"
    assert pair.ctl("get", "other", "--rev", "5").out == "other\no\n"
    assert pair.ctl("get", "k", "--rev", "4").err.endswith(COMPACTED)
