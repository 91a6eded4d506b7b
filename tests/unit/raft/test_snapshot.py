"""Log compaction and snapshots (Raft §7, etcd-io/raft MsgSnap and StateSnapshot): a leader that
compacted the entries a follower needs sends its snapshot; the follower installs it and
replication resumes after it."""

from __future__ import annotations

import random

from rusd.core.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    ProgressState,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from rusd.core.raft.memory import MemoryStorage

from .harness import Network, drain, ents, make_leader, new_node

MT = MessageType


def snap(index: int, term: int, voters: tuple[int, ...] = (1, 2), learners: tuple[int, ...] = ()) -> Snapshot:
    return Snapshot(
        data=b"app-state",
        metadata=SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=voters, learners=learners)),
    )


def compacted_leader() -> tuple[RawNode, MemoryStorage]:
    """Leader 1 of (1, 2) in term 1 with entries up to 11 of which 1..10 are compacted."""
    st = MemoryStorage(ConfState(voters=(1, 2)))
    st.append(ents(*[1] * 10))
    st.set_hard_state(HardState(term=1, commit=10))
    st.create_snapshot(10, ConfState(voters=(1, 2)), b"s10")
    st.compact(10)
    node = RawNode(Config(id=1, applied=10), st, random.Random(0))
    node.campaign()
    drain(node, st)
    node.step(Message(type=MT.VOTE_RESP, from_=2, to=1, term=2))
    assert node.state is StateType.LEADER
    drain(node, st)
    return node, st


def test_leader_sends_snapshot_to_follower_behind_compaction() -> None:
    node, st = compacted_leader()
    pr = node.raft.tracker.progress[2]
    pr.recent_active = True
    # The follower's reject says it has nothing: the leader must fall back to the snapshot.
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=2, index=10, reject=True, reject_hint=0))
    msgs = drain(node, st)
    [m] = [m for m in msgs if m.type is MT.SNAP]
    assert m.snapshot is not None and m.snapshot.metadata.index == 10
    assert pr.state is ProgressState.SNAPSHOT and pr.pending_snapshot == 10
    # Paused: nothing more is sent to 2 while the snapshot is in flight.
    node.propose(b"x")
    assert [m for m in drain(node, st) if m.to == 2 and m.type is MT.APP] == []


def test_no_snapshot_to_inactive_follower() -> None:
    node, st = compacted_leader()
    node.raft.tracker.progress[2].recent_active = False
    node.raft.tracker.progress[2].next = 5
    node.raft.tracker.progress[2].become_probe()
    node.raft.tracker.progress[2].next = 5
    node.step(Message(type=MT.HEARTBEAT_RESP, from_=2, to=1, term=2))  # marks it active
    assert [m.type for m in drain(node, st) if m.to == 2] == [MT.SNAP]


def test_snapshot_success_resumes_replication() -> None:
    node, st = compacted_leader()
    pr = node.raft.tracker.progress[2]
    pr.recent_active = True
    pr.become_snapshot(10)
    node.step(Message(type=MT.APP_RESP, from_=2, to=1, term=2, index=10))
    assert pr.state is ProgressState.REPLICATE
    assert (pr.match, pr.next) == (10, 12)  # entry 11 went out right away
    assert [m.index for m in drain(node, st) if m.to == 2 and m.type is MT.APP] == [10]


def test_report_snapshot_failure_and_success() -> None:
    node, _ = compacted_leader()
    pr = node.raft.tracker.progress[2]
    pr.become_snapshot(10)
    node.report_snapshot(2, failed=True)
    assert pr.state is ProgressState.PROBE and pr.next == 1 and pr.msg_app_flow_paused
    pr.become_snapshot(10)
    node.report_snapshot(2, failed=False)
    assert pr.state is ProgressState.PROBE and pr.next == 11 and pr.msg_app_flow_paused


def test_report_unreachable_moves_replicate_to_probe() -> None:
    node, _ = compacted_leader()
    pr = node.raft.tracker.progress[2]
    pr.maybe_update(11)
    pr.become_replicate()
    node.report_unreachable(2)
    assert pr.state is ProgressState.PROBE


def test_follower_restores_snapshot() -> None:
    node, st = new_node(2, (1, 2), log=ents(1, 1), term=1, commit=1)
    s = snap(10, 3)
    node.step(Message(type=MT.SNAP, from_=1, to=2, term=3, snapshot=s))
    r = node.raft
    assert r.log.last_index() == 10 and r.log.committed == 10 and r.log.last_term() == 3
    assert r.lead == 1
    rd = node.ready()
    assert rd.snapshot == s and rd.must_sync
    assert rd.committed_entries == []  # the snapshot replaces them
    [resp] = rd.messages_after_persist  # acked only once the snapshot is durable
    assert (resp.type, resp.index, resp.reject) == (MT.APP_RESP, 10, False)
    st.apply_snapshot(s)
    st.set_hard_state(rd.hard_state or st.hard_state)
    node.advance(rd)
    assert r.log.applied == 10 and not node.has_ready()
    assert st.first_index() == 11 and st.snapshot() == s
    # Replication continues after the snapshot.
    node.step(
        Message(type=MT.APP, from_=1, to=2, term=3, index=10, log_term=3, entries=(Entry(11, 3, b"y"),), commit=11)
    )
    applied: list[Entry] = []
    drain(node, st, applied)
    assert [e.index for e in applied] == [11]


def test_restore_ignores_old_snapshot() -> None:
    """A snapshot at or below the commit index changes nothing."""
    node, st = new_node(2, (1, 2), log=ents(1, 1, 1), term=1, commit=3)
    node.step(Message(type=MT.SNAP, from_=1, to=2, term=1, snapshot=snap(2, 1)))
    assert node.raft.log.last_index() == 3 and not node.raft.log.has_pending_snapshot()
    [resp] = drain(node, st)
    assert resp.index == 3


def test_restore_fast_forwards_commit_when_log_matches() -> None:
    node, _ = new_node(2, (1, 2), log=ents(1, 1, 1), term=1, commit=1)
    node.step(Message(type=MT.SNAP, from_=1, to=2, term=1, snapshot=snap(2, 1)))
    assert node.raft.log.committed == 2 and not node.raft.log.has_pending_snapshot()
    assert node.raft.log.last_index() == 3


def test_restore_snapshot_with_learner() -> None:
    node, _ = new_node(3, (1, 2), learners=(3,))
    node.step(Message(type=MT.SNAP, from_=1, to=3, term=1, snapshot=snap(5, 1, (1, 2), (3,))))
    assert node.conf_state() == ConfState(voters=(1, 2), learners=(3,))
    assert not node.raft.promotable()


def test_restore_snapshot_promoting_learner() -> None:
    node, _ = new_node(3, (1, 2), learners=(3,))
    node.step(Message(type=MT.SNAP, from_=1, to=3, term=1, snapshot=snap(5, 1, (1, 2, 3))))
    assert node.conf_state() == ConfState(voters=(1, 2, 3))
    assert node.raft.promotable()


def test_snapshot_of_foreign_config_ignored() -> None:
    node, _ = new_node(3, (1, 2, 3))
    node.step(Message(type=MT.SNAP, from_=1, to=3, term=1, snapshot=snap(5, 1, (1, 2))))
    assert node.raft.log.last_index() == 0


def test_lagging_follower_catches_up_through_snapshot() -> None:
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    for k in range(20):
        assert net.propose(1, f"v{k}".encode())
    committed = net.nodes[1].raft.log.committed
    net.compact(1, committed)
    net.heal()
    net.tick(1, 3)
    assert [m.snapshot.metadata.index for m in net.sent if m.type is MT.SNAP and m.snapshot] == [committed]
    assert net.storage[3].snapshot().data == f"state@{committed}".encode()
    assert net.nodes[3].raft.log.committed == committed
    assert net.propose(1, b"after")
    assert net.log(3) == net.log(1)
    assert net.nodes[1].raft.tracker.progress[3].state is ProgressState.REPLICATE
    # The node restarts from its storage alone (snapshot + log after it).
    net.restart(3)
    assert net.nodes[3].raft.log.committed == net.nodes[1].raft.log.committed
    assert net.nodes[3].raft.log.applied == net.nodes[1].raft.log.committed
    assert net.nodes[3].conf_state() == ConfState(voters=(1, 2, 3))


def test_new_member_bootstraps_from_snapshot() -> None:
    """A node added after the log was compacted gets the snapshot with the configuration."""
    net = Network(3)
    net.campaign(1)
    for k in range(5):
        assert net.propose(1, f"v{k}".encode())
    net.add_node(4, ConfState())  # knows nothing, not even the configuration
    net.isolate(4)
    assert net.propose_conf_change(1, ConfChange(ConfChangeType.ADD_NODE, 4))
    # The snapshot is taken after the change was applied: it includes node 4.
    net.compact(1, net.nodes[1].raft.log.applied)
    net.heal()
    net.tick(1, 3)
    assert net.nodes[4].conf_state() == ConfState(voters=(1, 2, 3, 4))
    assert net.log(4) == net.log(1)
    assert net.propose(1, b"four")
    assert net.nodes[4].raft.log.committed == net.nodes[1].raft.log.committed


def test_leader_transfer_after_snapshot() -> None:
    """The transferee is caught up by a snapshot, then told to campaign (etcd
    TestLeaderTransferAfterSnapshot)."""
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    assert net.propose(1, b"a")
    net.compact(1, net.nodes[1].raft.log.committed)
    net.heal()
    # 3 must be known active for a snapshot to be sent.
    net.nodes[1].raft.tracker.progress[3].recent_active = True
    net.transfer_leader(1, 3)
    assert net.leaders() == [3]


def test_restart_with_compacted_storage() -> None:
    st = MemoryStorage(ConfState(voters=(1, 2)))
    st.append(ents(1, 1, 1))
    st.create_snapshot(2, ConfState(voters=(1, 2)), b"s")
    st.compact(2)
    node = RawNode(Config(id=1, applied=2), st, random.Random(0))
    assert node.raft.log.first_index() == 3
    assert node.raft.log.applied == 2
    make_leader(node, st)
    assert node.raft.log.last_index() == 4
