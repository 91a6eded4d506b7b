"""Real rusd clusters on loopback, driven like etcd clusters (and compared with etcd 3.4
ones where the outcome is comparable): formation, writes and linearizable reads through
every member, kill -9 of the leader, catch-up by snapshot, membership changes, leader
transfer, and a five-member cluster losing two members."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, change_behind_its_back, get, hash_kv, put
from tests.servers import etcdctl


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.stop_all()


def member_list_shape(c: Cluster, endpoint: str) -> list[str]:
    """`member list` with this cluster's ports replaced by the member names, once every
    member has published its client URLs."""
    deadline = time.monotonic() + 30
    out = etcdctl(endpoint, "member", "list").stdout
    while ", , " in out and time.monotonic() < deadline:
        time.sleep(0.1)
        out = etcdctl(endpoint, "member", "list").stdout
    for node in c.nodes.values():
        out = out.replace(str(node.client_port), f"<{node.name}-client>").replace(
            str(node.peer_port), f"<{node.name}-peer>"
        )
    return sorted(out.splitlines())


def test_three_members_form_a_cluster_like_etcd_and_serve_from_every_member(tmp_path: Path) -> None:
    etcd = Cluster(tmp_path, kind="etcd").start_all(3)
    try:
        ports = {name: (n.client_port, n.peer_port) for name, n in etcd.nodes.items()}
        etcd_members = member_list_shape(etcd, etcd.nodes["m1"].endpoint)
    finally:
        etcd.stop_all()
    # the same flags and ports: the same member and cluster ids, the same list
    rusd = Cluster(tmp_path, kind="rusd")
    for name, pair in ports.items():
        rusd.add_node(name, pair)
    try:
        for node in rusd.nodes.values():
            rusd.start(node, wait=False)
        for node in rusd.nodes.values():
            assert node.process is not None
            node.process.wait_ready(60)
        rusd.leader()
        assert member_list_shape(rusd, rusd.nodes["m2"].endpoint) == etcd_members
        for i, node in enumerate(rusd.nodes.values()):
            put(node.endpoint, b"k%d" % i, b"v%d" % i)
        # a linearizable read on any member sees every acknowledged write
        for node in rusd.nodes.values():
            assert get(node.endpoint, b"k", prefix=True) == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]
        statuses = rusd.converged()
        assert sum(1 for s in statuses if s.leader == s.header.member_id) == 1
        assert len({s.raftIndex for s in statuses}) == 1
        assert len({hash_kv(n.endpoint) for n in rusd.nodes.values()}) == 1
    finally:
        rusd.stop_all()


def test_kill9_of_the_leader_during_writes_loses_no_acknowledged_write(cluster: Cluster) -> None:
    cluster.start_all(3)
    acked: list[bytes] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = b"w%06d" % n
            for endpoint in cluster.endpoints():
                try:
                    put(endpoint, key, b"x", timeout=3)
                    acked.append(key)
                    break
                except grpc.RpcError:
                    continue

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acked) < 50:
            stop.wait(0.05)
        leader = cluster.leader()
        assert leader.process is not None
        leader.process.kill()
        before = len(acked)
        new_leader = cluster.leader()
        assert new_leader is not leader
        while len(acked) < before + 50:  # the cluster takes writes again
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join()
    cluster.start(leader)  # the killed member restarts from its disk and catches up
    cluster.converged()
    for node in cluster.nodes.values():
        got = {k for k, _ in get(node.endpoint, b"w", serializable=True, prefix=True)}
        assert set(acked) <= got, f"{node.name} lost {sorted(set(acked) - got)[:5]}"
    assert len({hash_kv(n.endpoint) for n in cluster.nodes.values()}) == 1


def test_a_member_behind_the_compacted_log_catches_up_by_snapshot(tmp_path: Path) -> None:
    c = Cluster(tmp_path, extra=("--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"))
    try:
        c.start_all(3)
        lagging = c.nodes["m3"]
        assert lagging.process is not None
        lagging.process.kill()
        leader = c.leader()
        for i in range(120):
            put(leader.endpoint, b"s%03d" % i, b"v%d" % i)
        c.start(lagging)
        c.converged()
        assert get(lagging.endpoint, b"s", serializable=True, prefix=True)[-1] == (b"s119", b"v119")
        assert "installed a snapshot" in lagging.process.log()
        assert len({hash_kv(n.endpoint) for n in c.nodes.values()}) == 1
        # and it goes on replicating from the log
        put(leader.endpoint, b"after", b"1")
        c.converged()
        assert get(lagging.endpoint, b"after", serializable=True) == [(b"after", b"1")]
    finally:
        c.stop_all()


def when_healthy(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a membership change once every voter has been connected for etcd's health
    interval (5 s): before that etcd and rusd both answer "unhealthy cluster"."""
    deadline = time.monotonic() + 30
    while True:
        out = etcdctl(endpoint, *args, check=False)
        if "etcdserver: unhealthy cluster" not in out.stderr or time.monotonic() > deadline:
            assert out.returncode == 0, out.stderr
            return out
        time.sleep(0.5)


def _id_of(c: Cluster, name: str) -> str:
    for line in etcdctl(c.endpoints()[0], "member", "list").stdout.splitlines():
        if f", {name}, " in line or line.split(", ")[2:3] == [name]:
            return line.split(",")[0]
    raise AssertionError(f"{name} not listed")


def test_member_add_learner_promote_move_leader_and_remove(cluster: Cluster) -> None:
    cluster.start_all(3)
    put(cluster.nodes["m1"].endpoint, b"before", b"1")
    new = cluster.add_node("m4")
    out = when_healthy(cluster.nodes["m1"].endpoint, "member", "add", "m4", f"--peer-urls={new.peer_url}", "--learner")
    # etcdctl prints ids here with %16x: an id with a leading zero nibble is space-padded
    assert re.match(r"Member +[0-9a-f]+ added to cluster +[0-9a-f]+", out.stdout)
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out.stdout
    cluster.start(new, state="existing")
    cluster.converged()  # the learner caught up from the leader's log
    assert get(new.endpoint, b"before", serializable=True) == [(b"before", b"1")]
    listed = "\n".join(member_list_shape(cluster, cluster.nodes["m2"].endpoint))  # once m4 published
    assert re.search(r", started, m4, http://127\.0\.0\.1:<m4-peer>, http://127\.0\.0\.1:<m4-client>, true", listed)
    # a learner cannot be moved to, nor promoted twice
    new_id = _id_of(cluster, "m4")
    out = etcdctl(cluster.nodes["m1"].endpoint, "member", "promote", new_id)
    promoted = re.fullmatch(r"Member +([0-9a-f]+) promoted in cluster +[0-9a-f]+", out.stdout.strip())
    assert promoted and int(promoted.group(1), 16) == int(new_id, 16), out.stdout
    refused = etcdctl(cluster.nodes["m1"].endpoint, "member", "promote", new_id, check=False)
    assert "etcdserver: can only promote a learner member" in refused.stderr
    for _ in range(3):  # on a loaded machine a transfer may time out; operators retry
        leader = cluster.leader()
        moved = etcdctl(leader.endpoint, "move-leader", new_id, check=False)
        if moved.returncode == 0:
            break
    assert f"to {new_id}" in moved.stdout, moved.stderr
    assert cluster.leader() is new
    # remove a former member: it stops, the others go on
    old = cluster.nodes["m1"]
    old_id = _id_of(cluster, "m1")
    when_healthy(new.endpoint, "member", "remove", old_id)
    assert old.process is not None and old.process.proc is not None
    assert old.process.proc.wait(timeout=30) == 0
    assert "permanently removed" in old.process.log()
    put(new.endpoint, b"after", b"2")
    assert [n.split(", ")[2] for n in etcdctl(new.endpoint, "member", "list").stdout.splitlines()] == sorted(
        ["m2", "m3", "m4"], key=lambda name: _id_of(cluster, name)
    )


def test_membership_errors_match_etcd(tmp_path: Path) -> None:
    outputs: dict[str, list[str]] = {}
    for kind in ("etcd", "rusd"):
        c = Cluster(tmp_path / kind, kind=kind)
        (tmp_path / kind).mkdir()
        try:
            c.start_all(3)
            ep = c.nodes["m1"].endpoint
            unhealthy = etcdctl(ep, "member", "add", "x", "--peer-urls=http://127.0.0.1:2", check=False)
            assert "etcdserver: unhealthy cluster" in unhealthy.stderr  # connected for less than 5 s
            time.sleep(6)
            runs = [
                etcdctl(ep, "member", "remove", "1234", check=False),
                etcdctl(ep, "member", "promote", _id_of(c, "m2"), check=False),
                etcdctl(ep, "member", "add", "x", f"--peer-urls={c.nodes['m2'].peer_url}", check=False),
                etcdctl(ep, "member", "add", "x", "--peer-urls=notaurl", check=False),
                etcdctl(ep, "member", "update", "1234", "--peer-urls=http://127.0.0.1:1", check=False),
            ]
            # etcdctl's own retry log lines carry times and client ids: keep its verdict
            outputs[kind] = [
                f"{r.returncode} {[line for line in r.stderr.splitlines() if line.startswith('Error')]}"
                for r in runs
            ]
        finally:
            c.stop_all()
    assert outputs["rusd"] == outputs["etcd"]


def test_five_members_tolerate_two_failures(cluster: Cluster) -> None:
    cluster.start_all(5)
    leader = cluster.leader()
    others = [n for n in cluster.nodes.values() if n is not leader]
    for node in (leader, others[0]):
        assert node.process is not None
        node.process.kill()
    survivor = others[1]
    # a write forwarded to the dead leader times out (as in etcd); clients retry
    deadline = time.monotonic() + 60
    while True:
        try:
            put(survivor.endpoint, b"k", b"still", timeout=10)
            break
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, e
    assert cluster.leader() in others[1:]
    for node in others[1:]:
        assert get(node.endpoint, b"k") == [(b"k", b"still")]


def test_leases_work_through_followers_and_expire_after_a_leader_change(cluster: Cluster) -> None:
    cluster.start_all(3)
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    granted = etcdctl(follower.endpoint, "lease", "grant", "6").stdout
    lease = re.search(r"lease ([0-9a-f]+) granted", granted)
    assert lease, granted
    lease_id = lease.group(1)
    etcdctl(follower.endpoint, "put", "leased", "v", f"--lease={lease_id}")
    kept = etcdctl(follower.endpoint, "lease", "keep-alive", "--once", lease_id).stdout
    assert f"lease {lease_id} keepalived with TTL(6)" in kept
    ttl = etcdctl(follower.endpoint, "lease", "timetolive", lease_id, "--keys").stdout
    assert f"lease {lease_id} granted with TTL(6s)" in ttl and "attached keys([leased])" in ttl
    assert lease_id in etcdctl(follower.endpoint, "lease", "list").stdout
    # the leader dies: the new one gives the lease its TTL again, then expires it
    assert leader.process is not None
    leader.process.kill()
    survivor = cluster.leader()
    assert get(survivor.endpoint, b"leased") == [(b"leased", b"v")]
    deadline = time.monotonic() + 30
    while get(survivor.endpoint, b"leased") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(survivor.endpoint, b"leased") == []
    assert "already expired" in etcdctl(survivor.endpoint, "lease", "timetolive", lease_id).stdout


def test_snapshot_save_then_restore_makes_a_new_cluster_with_the_data(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_all(3)
    for i in range(5):
        put(cluster.nodes["m1"].endpoint, b"key%d" % i, b"val%d" % i)
    saved = tmp_path / "snap.db"
    out = etcdctl(cluster.nodes["m2"].endpoint, "snapshot", "save", str(saved))
    assert f"Snapshot saved at {saved}" in out.stdout
    cluster.stop_all()
    # a damaged snapshot is refused and nothing is created
    broken = tmp_path / "broken.db"
    raw = bytearray(saved.read_bytes())
    raw[100] ^= 0xFF
    broken.write_bytes(bytes(raw))
    refused = subprocess.run(
        [sys.executable, "-m", "rusd", "snapshot", "restore", str(broken), "--data-dir", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert refused.returncode == 1 and "expected sha256" in refused.stderr
    assert not (tmp_path / "bad").exists()
    restored = Cluster(tmp_path / "restored", token="new")
    (tmp_path / "restored").mkdir()
    node = restored.add_node("r1")
    done = subprocess.run(
        [sys.executable, "-m", "rusd", "snapshot", "restore", str(saved), "--name", "r1",
         "--data-dir", str(tmp_path / "restored" / "rusd-r1.data"), "--initial-cluster", f"r1={node.peer_url}",
         "--initial-advertise-peer-urls", node.peer_url, "--initial-cluster-token", "new"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    try:
        restored.start(node)
        assert get(node.endpoint, b"key", prefix=True) == [(b"key%d" % i, b"val%d" % i) for i in range(5)]
        listed = etcdctl(node.endpoint, "member", "list").stdout.strip().split(", ")
        assert listed[1:4] == ["started", "r1", node.peer_url]
        put(node.endpoint, b"after", b"restore")
    finally:
        restored.stop_all()


def test_learners_serve_only_status_and_serializable_reads_and_require_leader_fails_fast(cluster: Cluster) -> None:
    cluster.start_all(3)
    new = cluster.add_node("m4")
    when_healthy(cluster.nodes["m1"].endpoint, "member", "add", "m4", f"--peer-urls={new.peer_url}", "--learner")
    cluster.start(new, state="existing")  # waits for a (serializable) read to answer
    cluster.converged()  # it applied its own addition: it knows it is a learner
    with grpc.insecure_channel(new.endpoint) as ch:
        kv = pb_grpc.KVStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "etcdserver: rpc not supported for learner"
        with pytest.raises(grpc.RpcError):
            kv.Range(pb.RangeRequest(key=b"k"), timeout=5)
        kv.Range(pb.RangeRequest(key=b"k", serializable=True), timeout=5)
        assert pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5).isLearner
        # no stream at all (etcd 3.4's stream interceptor)
        watch = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k"))
        with pytest.raises(grpc.RpcError) as refused:
            list(pb_grpc.WatchStub(ch).Watch(iter([watch]), timeout=5))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "etcdserver: rpc not supported for learner"
    # with two of three voters gone there is no leader: hasleader calls fail at once
    for name in ("m1", "m2"):
        process = cluster.nodes[name].process
        assert process is not None
        process.kill()
    survivor = cluster.nodes["m3"]
    deadline = time.monotonic() + 30
    while True:
        with grpc.insecure_channel(survivor.endpoint) as ch:
            try:
                pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"k", serializable=True), timeout=5,
                                        metadata=(("hasleader", "true"),))
            except grpc.RpcError as e:
                assert e.details() == "etcdserver: no leader"
                break
        assert time.monotonic() < deadline, "m3 still believes it has a leader"
        time.sleep(0.2)


def test_force_new_cluster_restarts_a_member_alone_with_its_data(cluster: Cluster) -> None:
    cluster.start_all(3)
    for i in range(3):
        put(cluster.nodes["m1"].endpoint, b"f%d" % i, b"v%d" % i)
    cluster.converged()
    cluster.stop_all()
    m1 = cluster.nodes["m1"]
    cluster.extra = ("--force-new-cluster",)
    m1.process = None  # new flags
    cluster.start(m1)
    cluster.leader()  # it elects itself after an election timeout, as etcd does
    assert put(m1.endpoint, b"alone", b"yes", timeout=30)
    assert get(m1.endpoint, b"f", prefix=True) == [(b"f0", b"v0"), (b"f1", b"v1"), (b"f2", b"v2")]
    listed = etcdctl(m1.endpoint, "member", "list").stdout.splitlines()
    assert len(listed) == 1 and ", m1, " in listed[0]
    status = cluster.status(m1)
    assert status is not None and status.leader == status.header.member_id
    # and it stays a one-member cluster when restarted without the flag
    assert m1.process is not None
    m1.process.stop()
    cluster.extra = ()
    m1.process = None
    cluster.start(m1)
    cluster.leader()
    assert get(m1.endpoint, b"alone") == [(b"alone", b"yes")]


def test_initial_corrupt_check_refuses_a_member_whose_data_diverged(cluster: Cluster) -> None:
    cluster.start_all(3)
    for i in range(5):
        put(cluster.nodes["m1"].endpoint, b"c%d" % i, b"v%d" % i)
    cluster.converged()
    m3 = cluster.nodes["m3"]
    assert m3.process is not None
    m3.process.stop()
    cluster.extra = ("--experimental-initial-corrupt-check",)
    # a healthy member passes the check and serves
    m3.process = None
    cluster.start(m3)
    assert m3.process is not None
    m3.process.stop()
    # the same member with one value changed on disk behind rusd's back refuses to start
    change_behind_its_back(m3.process.data_dir, b"c2", b"evil")
    m3.process = None
    process = cluster.start(m3, wait=False)
    assert process.proc is not None
    assert process.proc.wait(timeout=60) == 1
    assert "found data inconsistency with peers" in process.log()


def test_periodic_corrupt_check_raises_the_corrupt_alarm_and_writes_stop(tmp_path: Path) -> None:
    c = Cluster(tmp_path, extra=("--experimental-corrupt-check-time", "1s"))
    try:
        c.start_all(3)
        leader = c.leader()
        for i in range(5):
            put(leader.endpoint, b"c%d" % i, b"v%d" % i)
        c.converged()
        victim = next(n for n in c.nodes.values() if n is not leader)
        assert victim.process is not None
        victim.process.stop()
        change_behind_its_back(victim.process.data_dir, b"c2", b"evil")
        c.start(victim)
        victim_id = _id_of(c, victim.name)
        deadline = time.monotonic() + 30
        while "alarm:CORRUPT" not in (alarms := etcdctl(leader.endpoint, "alarm", "list").stdout):
            assert time.monotonic() < deadline, "no CORRUPT alarm"
            time.sleep(0.3)
        assert f"memberID:{int(victim_id, 16)} alarm:CORRUPT" in alarms
        refused = etcdctl(leader.endpoint, "put", "k", "v", check=False)
        assert refused.returncode == 1 and "etcdserver: corrupt cluster" in refused.stderr
        assert get(leader.endpoint, b"c1") == [(b"c1", b"v1")]  # reads still work
    finally:
        c.stop_all()
