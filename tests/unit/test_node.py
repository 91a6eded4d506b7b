"""The member's Ready contract, crash replay, quota alarms and auto-compaction."""

from __future__ import annotations

from rusd.core import errors
from rusd.core.alarms import AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType
from rusd.core.cluster import MemberInfo
from rusd.core.compactor import CompactionPolicy
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store
from rusd.core.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
)
from rusd.core.node import Member, MemberConfig, Result, WriteRequest, serve_read, unapplied_entries
from rusd.storage.memory import MemoryBackend, MemoryLog

INFO = MemberInfo(1, "m", ("http://127.0.0.1:2380",), ("http://127.0.0.1:2379",))


class Disk:
    """A backend + log pair that a member is rebuilt from, like a data dir."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.log = MemoryLog()
        self.boots = 0

    def member(self, now: float = 0.0, **config: object) -> Member:
        """Each start sees a later wall clock, which keeps proposal ids unique (etcd's idutil)."""
        self.boots += 1
        replay = unapplied_entries(self.backend, self.log)
        return Member(
            MemberConfig(INFO, 9, **config), self.backend, replay, now, unix_ms=1000 * self.boots  # type: ignore[arg-type]
        )

    def turn(self, member: Member) -> list[tuple[int, Result]]:
        rd = member.ready()
        self.log.append_entries(rd.entries)
        answers = list(rd.responses) + member.apply(self.backend, rd.committed).answers
        if rd.compact_log_to:
            self.log.compact_log(rd.compact_log_to)
        member.advance(rd)
        return answers


def submit(disk: Disk, member: Member, *reqs: WriteRequest) -> list[tuple[int, Result]]:
    for i, req in enumerate(reqs, start=1):
        member.submit(i, req, disk.backend.size())
    return disk.turn(member)


def test_ready_persists_entries_before_they_are_applied_and_answers_in_order() -> None:
    disk = Disk()
    m = disk.member()
    m.submit(1, PutRequest(b"a", b"1"), 0)
    m.submit(2, PutRequest(b"b", b"2"), 0)
    rd = m.ready()
    # the bootstrap entry adding the member, the term's empty entry, then the two
    # proposals: persisted and committed at once
    assert [e.index for e in rd.entries] == [1, 2, 3, 4]
    assert rd.committed == rd.entries
    answers = m.apply(disk.backend, rd.committed).answers
    m.advance(rd)
    assert answers == [(1, PutResponse(revision=2)), (2, PutResponse(revision=3))]
    assert not m.ready()


def test_a_new_term_on_every_start_and_term_is_durable() -> None:
    disk = Disk()
    m = disk.member()
    assert m.term == 2
    disk.turn(m)
    assert disk.member().term == 3


def test_entries_persisted_but_not_applied_are_applied_after_a_crash() -> None:
    disk = Disk()
    m = disk.member()
    disk.turn(m)
    m.submit(1, PutRequest(b"k", b"v"), 0)
    rd = m.ready()
    disk.log.append_entries(rd.entries)  # crash here: the log is durable, the apply is not
    restarted = disk.member()
    assert serve_read(disk.backend, RangeRequest(b"k"), 128) == RangeResponse(revision=1)
    disk.turn(restarted)
    got = serve_read(disk.backend, RangeRequest(b"k"), 128)
    assert isinstance(got, RangeResponse) and [kv.value for kv in got.kvs] == [b"v"]
    # applied exactly once: the revision moved by one
    assert got.revision == 2


def test_validation_errors_are_answered_without_a_log_entry() -> None:
    disk = Disk()
    m = disk.member()
    disk.turn(m)
    m.submit(1, PutRequest(b"", b"v"), 0)
    m.submit(2, DeleteRangeRequest(b""), 0)
    m.submit(3, TxnRequest(success=(PutRequest(b"a"), PutRequest(b"a"))), 0)
    rd = m.ready()
    assert rd.entries == []
    assert rd.responses == [
        (1, EtcdError(errors.EMPTY_KEY)),
        (2, EtcdError(errors.EMPTY_KEY)),
        (3, EtcdError(errors.DUPLICATE_KEY)),
    ]


def test_over_quota_raises_nospace_refuses_puts_until_disarmed() -> None:
    disk = Disk()
    m = disk.member(quota_backend_bytes=1000)
    assert submit(disk, m, PutRequest(b"a")) == [(1, PutResponse(revision=2))]
    big = PutRequest(b"k", b"x" * 900)
    assert submit(disk, m, big) == [(1, EtcdError(errors.NO_SPACE))]
    assert m.alarms == (AlarmMember(1, AlarmType.NOSPACE),)
    # once the alarm is on, even a small put is refused at apply; deletes still work
    answers = submit(disk, m, PutRequest(b"small", b""), DeleteRangeRequest(b"a"))
    assert answers == [(1, EtcdError(errors.NO_SPACE)), (2, DeleteRangeResponse(revision=3, deleted=1))]
    # alarm list, then disarm
    nospace = (AlarmMember(1, AlarmType.NOSPACE),)
    assert submit(disk, m, AlarmRequest(AlarmAction.GET)) == [(1, AlarmResponse(revision=3, alarms=nospace))]
    answers = submit(disk, m, AlarmRequest(AlarmAction.DEACTIVATE, 1, AlarmType.NOSPACE))
    assert answers == [(1, AlarmResponse(revision=3, alarms=nospace))]
    assert m.alarms == ()
    assert submit(disk, m, PutRequest(b"small", b"")) == [(1, PutResponse(revision=4))]
    # the alarm survives a restart, as it is in the backend
    submit(disk, m, AlarmRequest(AlarmAction.ACTIVATE, 1, AlarmType.NOSPACE))
    assert disk.member().nospace


def test_periodic_auto_compaction_keeps_the_retention_window() -> None:
    disk = Disk()
    m = disk.member(now=0.0, compaction=CompactionPolicy("periodic", 100.0))
    disk.turn(m)
    revs = []
    for second in range(0, 301, 10):
        m.tick(float(second), store.current_revision(disk.backend))
        revs.append((second, store.current_revision(disk.backend)))
        submit(disk, m, PutRequest(b"k", str(second).encode()))
    # compactions happened, and each kept at least 100 s of history
    compacted = store.compact_revision(disk.backend)
    assert compacted > 1
    newest_allowed = max(rev for second, rev in revs if second <= 300 - 100)
    assert compacted <= newest_allowed


def test_revision_auto_compaction_keeps_the_last_n_revisions() -> None:
    disk = Disk()
    m = disk.member(now=0.0, compaction=CompactionPolicy("revision", 5))
    disk.turn(m)
    for i in range(20):
        submit(disk, m, PutRequest(b"k", str(i).encode()))
    m.tick(0.0, store.current_revision(disk.backend))
    disk.turn(m)
    assert store.compact_revision(disk.backend) == store.current_revision(disk.backend) - 5
    # nothing more until the next 5-minute mark
    submit(disk, m, PutRequest(b"k", b"more"))
    m.tick(299.0, store.current_revision(disk.backend))
    disk.turn(m)
    assert store.compact_revision(disk.backend) == store.current_revision(disk.backend) - 6
    m.tick(300.0, store.current_revision(disk.backend))
    disk.turn(m)
    assert store.compact_revision(disk.backend) == store.current_revision(disk.backend) - 5


def test_explicit_compaction_answers_with_current_revision() -> None:
    disk = Disk()
    m = disk.member()
    submit(disk, m, PutRequest(b"a"), PutRequest(b"b"))
    answers = submit(disk, m, CompactionRequest(2), CompactionRequest(2), CompactionRequest(9))
    assert answers == [
        (1, CompactionResponse(revision=3)),
        (2, EtcdError(errors.COMPACTED)),
        (3, EtcdError(errors.FUTURE_REV)),
    ]


def test_apply_reports_events_in_revision_order_with_prev_kv() -> None:
    disk = Disk()
    m = disk.member()
    disk.turn(m)
    for i, req in enumerate((PutRequest(b"a", b"1"), PutRequest(b"a", b"2"), DeleteRangeRequest(b"a", b"b")), 1):
        m.submit(i, req, 0)
    rd = m.ready()
    disk.log.append_entries(rd.entries)
    applied = m.apply(disk.backend, rd.committed)
    m.advance(rd)
    first = KeyValue(b"a", 2, 2, 1, b"1")
    second = KeyValue(b"a", 2, 3, 2, b"2")
    assert applied.events == [
        Event(first, None),
        Event(second, first),
        Event(KeyValue(b"a", 0, 4, 0), second),
    ]


def test_a_replayed_entry_never_answers_a_new_request_with_the_same_id() -> None:
    disk = Disk()
    m = disk.member()
    disk.turn(m)
    m.submit(1, DeleteRangeRequest(b"k"), 0)
    disk.log.append_entries(m.ready().entries)  # crash: durable, not applied
    restarted = disk.member()
    restarted.submit(1, PutRequest(b"k", b"new"), 0)  # request ids start again at 1
    answers = disk.turn(restarted)
    assert answers == [(1, PutResponse(revision=2))]


def test_the_log_restarts_after_compaction_and_the_hard_state_is_durable() -> None:
    disk = Disk()
    m = disk.member(snapshot_count=2, catch_up_entries=1)
    for i in range(5):
        assert submit(disk, m, PutRequest(b"k", str(i).encode())) == [(1, PutResponse(revision=i + 2))]
    assert disk.log.first_index() > 1
    restarted = disk.member(snapshot_count=2, catch_up_entries=1)
    assert restarted.term == 3
    assert submit(disk, restarted, PutRequest(b"k", b"after")) == [(1, PutResponse(revision=7))]
    assert restarted.applied_index == restarted.last_index == m.last_index + 2
