"""RaftLog, Unstable and MemoryStorage."""

from __future__ import annotations

import pytest

from rusd.core.raft import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    RaftError,
    RaftLog,
    UnavailableError,
)
from rusd.core.raft.memory import MemoryStorage

from .harness import ents


def make_log(*terms: int) -> tuple[RaftLog, MemoryStorage]:
    st = MemoryStorage(ConfState(voters=(1,)))
    st.append(ents(*terms))
    return RaftLog(st), st


def test_memory_storage_append_replaces_tail_and_compacts() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2))
    st.append(ents(3, start=2))
    assert [(e.index, e.term) for e in st.entries(1, 3)] == [(1, 1), (2, 3)]
    assert st.last_index() == 2
    st.compact(1)
    assert st.first_index() == 2
    assert st.term(1) == 1
    with pytest.raises(CompactedError):
        st.term(0)
    with pytest.raises(CompactedError):
        st.entries(1, 2)
    with pytest.raises(UnavailableError):
        st.entries(2, 4)
    with pytest.raises(ValueError):
        st.append(ents(3, start=5))
    assert st.initial_state() == (HardState(), ConfState())


def test_new_log_starts_after_storage() -> None:
    log, _ = make_log(1, 2)
    assert (log.first_index(), log.last_index(), log.committed, log.applied) == (1, 2, 0, 0)
    assert log.unstable.offset == 3
    assert log.term(0) == 0
    assert log.term(2) == 2
    with pytest.raises(UnavailableError):
        log.term(3)


@pytest.mark.parametrize(
    ("new", "want"),
    [
        ([], 0),
        (ents(1, 2, 3), 0),  # all match
        (ents(2, 3, start=2), 0),
        (ents(3, 4, start=3), 4),  # new entries past the end
        (ents(1, 4, start=1), 2),  # conflict at 2
        (ents(4, 4, start=2), 2),
        (ents(3, 3, start=3), 4),  # the first matches, the second is new
    ],
)
def test_find_conflict(new: list[Entry], want: int) -> None:
    log, _ = make_log(1, 2, 3)
    assert log.find_conflict(new) == want


@pytest.mark.parametrize(
    ("index", "log_term", "commit", "new", "want_last", "want_commit", "want_terms"),
    [
        # prev entry does not match: reject
        (3, 2, 3, ents(4, start=4), None, 0, [1, 2, 3]),
        (4, 3, 3, ents(4, start=5), None, 0, [1, 2, 3]),
        # match, nothing new
        (3, 3, 3, [], 3, 3, [1, 2, 3]),
        (3, 3, 4, [], 3, 3, [1, 2, 3]),  # commit bounded by the last new entry
        (2, 2, 2, [], 2, 2, [1, 2, 3]),
        # append past the end
        (3, 3, 4, ents(4, start=4), 4, 4, [1, 2, 3, 4]),
        # conflict: truncate and replace
        (1, 1, 1, ents(4, start=2), 2, 1, [1, 4]),
        (2, 2, 3, ents(4, 4, start=3), 4, 3, [1, 2, 4, 4]),
        # matching entries only: nothing truncated (a delayed, shorter MsgApp)
        (1, 1, 0, ents(2, start=2), 2, 0, [1, 2, 3]),
    ],
)
def test_maybe_append(
    index: int,
    log_term: int,
    commit: int,
    new: list[Entry],
    want_last: int | None,
    want_commit: int,
    want_terms: list[int],
) -> None:
    log, _ = make_log(1, 2, 3)
    assert log.maybe_append(index, log_term, commit, new) == want_last
    assert log.committed == want_commit
    assert [e.term for e in log.all_entries()] == want_terms


def test_maybe_append_never_truncates_committed_entries() -> None:
    log, _ = make_log(1, 2, 3)
    log.commit_to(2)
    with pytest.raises(RaftError):
        log.maybe_append(1, 1, 3, ents(4, start=2))


def test_commit_to_only_moves_forward_and_within_log() -> None:
    log, _ = make_log(1, 2, 3)
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(RaftError):
        log.commit_to(4)


def test_maybe_commit_requires_term() -> None:
    log, _ = make_log(1, 2, 3)
    assert not log.maybe_commit(2, 3)
    assert log.maybe_commit(3, 3)
    assert log.committed == 3


def test_applied_to_and_next_committed_entries() -> None:
    log, _ = make_log(1, 1, 2)
    log.commit_to(2)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]
    log.applied_to(1)
    assert [e.index for e in log.next_committed_entries()] == [2]
    log.applied_to(2)
    assert not log.has_next_committed_entries()
    with pytest.raises(RaftError):
        log.applied_to(3)  # past commit
    with pytest.raises(RaftError):
        log.applied_to(1)  # backwards


def test_unstable_entries_and_stable_to() -> None:
    log, st = make_log(1)
    log.append(ents(1, 2, start=2))
    assert [e.index for e in log.unstable_entries()] == [2, 3]
    assert [e.index for e in log.slice(1, 4)] == [1, 2, 3]
    log.stable_to(3, 9)  # wrong term: ignored
    assert log.stable_last_index() == 1
    st.append(log.unstable_entries()[:1])
    log.stable_to(2, 1)
    assert log.stable_last_index() == 2
    assert [e.index for e in log.unstable_entries()] == [3]
    # a conflicting append below the unstable offset rewinds it
    log.append(ents(5, start=2))
    assert log.unstable.offset == 2
    assert [e.term for e in log.all_entries()] == [1, 5]
    assert log.last_index() == 2
    with pytest.raises(RaftError):
        log.commit_to(3)


def test_find_conflict_by_term() -> None:
    log, _ = make_log(1, 1, 2, 2, 5, 5)
    assert log.find_conflict_by_term(6, 3) == (4, 2)
    assert log.find_conflict_by_term(6, 5) == (6, 5)
    assert log.find_conflict_by_term(2, 0) == (0, 0)
    assert log.find_conflict_by_term(6, 1) == (2, 1)


def test_is_up_to_date() -> None:
    log, _ = make_log(1, 2, 3)
    assert log.is_up_to_date(3, 3)
    assert log.is_up_to_date(4, 3)
    assert not log.is_up_to_date(2, 3)
    assert log.is_up_to_date(1, 4)  # higher last term wins regardless of length
    assert not log.is_up_to_date(5, 2)


def test_term_below_compaction_is_compacted() -> None:
    log, st = make_log(1, 2, 3)
    log.commit_to(3)
    log.applied_to(3)
    st.compact(2)
    log2 = RaftLog(st)
    assert log2.term(2) == 2
    with pytest.raises(CompactedError):
        log2.term(1)
    assert not log2.match_term(1, 1)
    assert log2.committed == 2
