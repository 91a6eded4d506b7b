"""Data survives a clean restart (SIGTERM, start again on the same data dir), seen
through etcdctl: keys, history, compaction, revision counter, ids, hash. Run on a
rusd and, as the reference, an etcd with the same command sequence."""

from __future__ import annotations

from tests.conformance.harness import Out, Pair, norm_hash, norm_status, run_etcdctl


def snapshot(pair: Pair) -> dict[str, Out]:
    """Everything a client can observe about the data, compared on both servers."""
    return {
        "all": pair.ctl("get", "", "--prefix", "-w", "json"),
        "history": pair.ctl("get", "k", "--rev", "5", "-w", "json"),
        "compacted": pair.ctl("get", "k", "--rev", "2"),
        "status": pair.ctl("endpoint", "status", "-w", "json", norm=norm_status),
        "hashkv": pair.ctl("endpoint", "hashkv", "--rev", "6", "-w", "json", norm=norm_hash),
        "members": pair.ctl("member", "list"),
    }


def restart(pair: Pair) -> None:
    """SIGTERM both, start both again with the same flags and data dirs."""
    # rusd exits 0 after a clean shutdown; etcd re-raises the signal after its
    # cleanup, so its exit status is "killed by SIGTERM".
    assert pair.rusd.stop() == 0
    assert pair.etcd.stop() in (0, -15)
    pair.rusd.start()
    pair.etcd.start()
    pair.forget_ids()


def test_data_survives_clean_restart(fresh_pair: Pair) -> None:
    pair = fresh_pair
    for i in range(3):
        pair.ctl("put", "k", f"v{i}")  # revisions 2, 3, 4
    pair.ctl("put", "bin", stdin=b"\x00\xff\n")  # 5
    pair.ctl("put", "gone", "x")  # 6
    pair.ctl("del", "gone")  # 7
    pair.ctl("txn", stdin="\nput t1 a\nput t2 b\n\n\n")  # 8
    pair.ctl("compaction", "3")
    before = snapshot(pair)
    assert before["compacted"].err.endswith("Error: etcdserver: mvcc: required revision has been compacted\n")
    assert before["all"].json()["header"]["revision"] == 8
    assert before["status"].json()[0]["Status"]["header"]["revision"] == 8
    hash_before = {s.endpoint: _raw_hash(s.endpoint) for s in (pair.rusd, pair.etcd)}
    r_ids, e_ids = pair.ids()

    restart(pair)

    # ids are stable across the restart
    assert (pair.ids()[0].cluster_id, pair.ids()[0].member_id) == (r_ids.cluster_id, r_ids.member_id)
    assert (pair.ids()[1].cluster_id, pair.ids()[1].member_id) == (e_ids.cluster_id, e_ids.member_id)
    after = snapshot(pair)
    assert after == before
    assert {s.endpoint: _raw_hash(s.endpoint) for s in (pair.rusd, pair.etcd)} == hash_before
    # the revision counter continues
    assert pair.ctl("put", "k", "after").out == "OK\n"
    r = pair.ctl("get", "k", "-w", "json").json()
    assert r["header"]["revision"] == 9
    assert r["kvs"][0]["version"] == 4
    assert r["kvs"][0]["create_revision"] == 2
    # compaction state survived too
    assert pair.ctl("compaction", "3").err.endswith("Error: etcdserver: mvcc: required revision has been compacted\n")
    assert pair.ctl("compaction", "4").out == "compacted revision 4\n"

    # and a second restart right after a compaction and a write
    restart(pair)
    assert pair.ctl("get", "", "--prefix", "--keys-only").out == "bin\n\nk\n\nt1\n\nt2\n\n"
    assert pair.ctl("get", "k", "--rev", "3").err.endswith(
        "Error: etcdserver: mvcc: required revision has been compacted\n")
    assert pair.ctl("endpoint", "status", "-w", "json", norm=norm_status).json()[0]["Status"]["header"][
        "revision"] == 9


def _raw_hash(endpoint: str) -> int:
    out = run_etcdctl(endpoint, "endpoint", "hashkv", "--rev", "8", "-w", "json")
    assert out.rc == 0, out
    return int(out.json()[0]["HashKV"]["hash"])
