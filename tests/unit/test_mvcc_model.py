"""The MVCC store against a tiny dict-per-revision model (hypothesis state machine)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store
from rusd.core.mvcc.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from rusd.core.node import NotFoundLeases
from rusd.storage.memory import MemoryBackend

KEYS = [b"a", b"a\x00", b"ab", b"b", b"\x00", b"c\xff", b"\xff"]
keys = st.sampled_from(KEYS)
ends = st.sampled_from([b"", b"\x00", b"b", b"c", b"ab", b"\xff\xff"])
values = st.binary(max_size=3)


class Model:
    """Every revision's full state as a dict; revision 1 is empty."""

    def __init__(self) -> None:
        self.states: dict[int, dict[bytes, KeyValue]] = {1: {}}
        self.rev = 1
        self.compacted = -1

    def latest(self) -> dict[bytes, KeyValue]:
        return self.states[self.rev]

    def commit(self, state: dict[bytes, KeyValue]) -> None:
        self.rev += 1
        self.states[self.rev] = state

    def put(self, key: bytes, value: bytes) -> None:
        state = dict(self.latest())
        old = state.get(key)
        rev = self.rev + 1
        if old is None:
            state[key] = KeyValue(key, rev, rev, 1, value)
        else:
            state[key] = KeyValue(key, old.create_revision, rev, old.version + 1, value)
        self.commit(state)

    @staticmethod
    def in_range(k: bytes, key: bytes, end: bytes) -> bool:
        if not end:
            return k == key
        if end == b"\x00":
            return k >= key
        return key <= k < end

    def delete(self, key: bytes, end: bytes) -> int:
        state = dict(self.latest())
        doomed = [k for k in state if self.in_range(k, key, end)]
        for k in doomed:
            del state[k]
        if doomed:
            self.commit(state)
        return len(doomed)

    def range(self, key: bytes, end: bytes, rev: int) -> list[KeyValue]:
        state = self.states[rev if rev > 0 else self.rev]
        return sorted((kv for k, kv in state.items() if self.in_range(k, key, end)), key=lambda kv: kv.key)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.backend = MemoryBackend()
        self.leases = NotFoundLeases()
        self.model = Model()

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        resp = store.put(self.backend, self.leases, PutRequest(key, value, prev_kv=True))
        expected_prev = self.model.latest().get(key)
        self.model.put(key, value)
        assert resp.revision == self.model.rev
        assert resp.prev_kv == expected_prev

    @rule(key=keys, end=ends)
    def delete(self, key: bytes, end: bytes) -> None:
        before = self.model.range(key, end, 0)
        resp = store.delete_range(self.backend, self.leases, DeleteRangeRequest(key, end, prev_kv=True))
        n = self.model.delete(key, end)
        assert resp.deleted == n
        assert list(resp.prev_kvs) == before
        assert resp.revision == self.model.rev

    @rule(key=keys, version=st.integers(0, 3), then_key=keys, else_key=keys, value=values)
    def txn(self, key: bytes, version: int, then_key: bytes, else_key: bytes, value: bytes) -> None:
        cmp = Compare(key, CompareTarget.VERSION, CompareResult.EQUAL, operand_target=CompareTarget.VERSION,
                      operand=version)
        req = TxnRequest((cmp,), (PutRequest(then_key, value),), (DeleteRangeRequest(else_key),))
        current = self.model.latest().get(key)
        ok = (current.version if current else 0) == version
        resp = store.txn(self.backend, self.leases, req)
        assert resp.succeeded == ok
        if ok:
            self.model.put(then_key, value)
        else:
            self.model.delete(else_key, b"")
        assert resp.revision == self.model.rev

    @precondition(lambda self: self.model.rev > 1)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(0, self.model.rev + 1))
        try:
            store.compact(self.backend, rev)
        except EtcdError as e:
            assert (e.kind == errors.COMPACTED and rev <= self.model.compacted) or (
                e.kind == errors.FUTURE_REV and rev > self.model.rev
            )
            return
        assert self.model.compacted < rev <= self.model.rev
        self.model.compacted = rev

    @rule(key=keys, end=ends, data=st.data(), limit=st.integers(0, 3))
    def range(self, key: bytes, end: bytes, data: st.DataObject, limit: int) -> None:
        rev = data.draw(st.integers(0, self.model.rev + 1))
        req = RangeRequest(key, end, limit=limit, revision=rev)
        try:
            resp = store.read_range(self.backend, req)
        except EtcdError as e:
            if rev > self.model.rev:
                assert e.kind == errors.FUTURE_REV
            else:
                assert e.kind == errors.COMPACTED and 0 < rev < self.model.compacted
            return
        assert rev <= self.model.rev and not (0 < rev < self.model.compacted)
        want = self.model.range(key, end, rev)
        assert resp.count == len(want)
        assert list(resp.kvs) == (want[:limit] if limit else want)
        assert resp.more == (0 < limit < len(want))
        assert resp.revision == self.model.rev

    @invariant()
    def revision_matches(self) -> None:
        assert store.current_revision(self.backend) == self.model.rev


TestStore = StoreMachine.TestCase
