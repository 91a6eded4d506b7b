"""One etcd member: client requests in, log proposals, apply, responses out.

The member never does IO. The driver feeds it requests and time, takes a Ready,
persists `entries`, applies `committed` through `apply` inside the same storage
batch, makes the batch durable, releases the answers and calls `advance`.
Reads never enter the log: `serve_read` answers them from any consistent snapshot
that already holds every acknowledged write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from rusd.core import alarms, codec, errors
from rusd.core.alarms import AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType
from rusd.core.compactor import AutoCompactor, CompactionPolicy
from rusd.core.errors import EtcdError
from rusd.core.log import Entry
from rusd.core.mvcc import store, validate
from rusd.core.mvcc.backend import KVBackend, KVReader
from rusd.core.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from rusd.core.single_log import LogReady, SingleMemberLog

META_APPLIED_INDEX = b"applied_index"
META_TERM = b"term"

WriteRequest: TypeAlias = PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | AlarmRequest
Response: TypeAlias = (
    RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse | AlarmResponse
)
Result: TypeAlias = Response | EtcdError


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a log entry carries: the request and who waits for its answer."""

    member_id: int
    req_id: int
    request: WriteRequest


for _number, _cls in enumerate(
    (Proposal, PutRequest, DeleteRangeRequest, TxnRequest, RangeRequest, Compare, CompactionRequest,
     AlarmRequest, KeyValue),
    start=1,
):
    codec.register(_number, _cls)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberConfig:
    member: MemberInfo
    cluster_id: int
    max_txn_ops: int = 128
    quota_backend_bytes: int = 0
    snapshot_count: int = 100_000
    compaction: CompactionPolicy = field(default_factory=lambda: CompactionPolicy("periodic", 0))


@dataclass
class Ready:
    """One turn's work for the driver, in order: persist `entries`, apply `committed`
    (with `Member.apply`, in the same durable batch), drop log entries up to
    `compact_log_to` (0: none), then send `responses` (they need nothing durable)."""

    entries: list[Entry]
    committed: list[Entry]
    responses: list[tuple[int, Result]]
    compact_log_to: int
    _log: LogReady

    def __bool__(self) -> bool:
        return bool(self.entries or self.committed or self.responses)


@dataclass
class Applied:
    """What applying committed entries produced: answers for waiting clients and
    the changes, in revision order, for watchers. Release both only once durable."""

    answers: list[tuple[int, Result]]
    events: list[Event]


class NotFoundLeases:
    """The lease book until the lessor exists: no lease is ever granted, so every
    lease id is unknown and nothing can be attached."""

    def exists(self, lease_id: int) -> bool:
        return False

    def attach(self, lease_id: int, key: bytes) -> None:
        raise EtcdError(errors.LEASE_NOT_FOUND)

    def detach(self, lease_id: int, key: bytes) -> None:
        """Keys never carry a lease here, so there is nothing to detach."""


def serve_read(view: KVReader, req: RangeRequest | TxnRequest, max_txn_ops: int) -> Response:
    """A Range or a read-only Txn against a snapshot."""
    if isinstance(req, RangeRequest):
        validate.check_range(req)
        return store.read_range(view, req)
    validate.check_txn(req, max_txn_ops)
    return store.txn(_ReadOnly(view), NotFoundLeases(), req)


class _ReadOnly:
    """A snapshot seen as a backend by the txn code path of a read-only txn."""

    def __init__(self, view: KVReader) -> None:
        self.get_meta = view.get_meta
        self.get = view.get
        self.range = view.range
        self.history = view.history
        self.changes = view.changes
        self.size = view.size
        self.size_in_use = view.size_in_use

    def put_meta(self, name: bytes, value: bytes) -> None:
        raise AssertionError("read-only txn wrote meta")

    def write(self, sub: int, kv: KeyValue) -> None:
        raise AssertionError("read-only txn wrote a key")

    def remove(self, key: bytes, mod_revision: int) -> None:
        raise AssertionError("read-only txn removed a key")


def check_request(req: WriteRequest, max_txn_ops: int) -> None:
    """The checks etcd's gRPC handlers make of a write (v3rpc/key.go), before any other
    (the proposal size limit included)."""
    if isinstance(req, PutRequest):
        validate.check_put(req)
    elif isinstance(req, DeleteRangeRequest):
        validate.check_delete(req)
    elif isinstance(req, TxnRequest):
        validate.check_txn(req, max_txn_ops)


def is_read(req: object) -> bool:
    """Requests answered from a snapshot without a log entry."""
    return isinstance(req, RangeRequest) or (isinstance(req, TxnRequest) and not store.is_write(req))


class Member:
    """A single-member etcd: requests become log entries; applying them answers."""

    def __init__(self, config: MemberConfig, view: KVReader, replay: list[Entry], now: float) -> None:
        self.config = config
        # A fresh member bootstraps at term 1 and wins its first election at term 2,
        # as etcd does; each restart is one more election.
        self.term = store.get_int(view, META_TERM, 1) + 1
        self.log = SingleMemberLog(self.term, store.get_int(view, META_APPLIED_INDEX), replay)
        self.alarms: tuple[AlarmMember, ...] = alarms.load(view)
        self.compactor = AutoCompactor(config.compaction, now)
        self._waiting: set[int] = set()
        self._responses: list[tuple[int, Result]] = []
        self._log_compacted = self.log.applied_index
        # A new term starts with an empty entry, as a Raft leader's does: it makes
        # the new term durable before anything is acknowledged in it.
        self.log.propose(b"")

    @property
    def member_id(self) -> int:
        return self.config.member.id

    @property
    def applied_index(self) -> int:
        return self.log.applied_index

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def submit(self, req_id: int, req: WriteRequest, backend_size: int) -> None:
        """A client write (or a read-only txn's quota check has already passed it)."""
        try:
            self._check(req, backend_size)
        except EtcdError as e:
            self._responses.append((req_id, e))
            return
        self._propose(req_id, req)

    def _propose(self, req_id: int, req: WriteRequest) -> None:
        self._waiting.add(req_id)
        self.log.propose(codec.encode(Proposal(self.member_id, req_id, req)))

    def _check(self, req: WriteRequest, backend_size: int) -> None:
        check_request(req, self.config.max_txn_ops)
        if isinstance(req, PutRequest):
            self.check_quota(alarms.put_cost(req), backend_size)
        elif isinstance(req, TxnRequest):
            self.check_quota(alarms.txn_cost(req), backend_size)

    def check_quota(self, cost: int, backend_size: int) -> None:
        """Refuse a write that would pass the quota, and raise the NOSPACE alarm."""
        if alarms.over_quota(backend_size, cost, self.config.quota_backend_bytes):
            if not self.nospace:
                self._propose_internal(AlarmRequest(AlarmAction.ACTIVATE, self.member_id, AlarmType.NOSPACE))
            raise EtcdError(errors.NO_SPACE)

    def _propose_internal(self, req: WriteRequest) -> None:
        """A proposal nobody waits for (req_id 0 is never a client's)."""
        self.log.propose(codec.encode(Proposal(self.member_id, 0, req)))

    @property
    def nospace(self) -> bool:
        return any(a.alarm == AlarmType.NOSPACE for a in self.alarms)

    def tick(self, now: float, revision: int) -> None:
        """Time passes: maybe start an auto-compaction."""
        target = self.compactor.tick(now, revision)
        if target is not None:
            self._propose_internal(CompactionRequest(target))

    def ready(self) -> Ready:
        lrd = self.log.ready()
        compact_to = 0
        if lrd.committed and lrd.committed[-1].index - self._log_compacted >= self.config.snapshot_count:
            compact_to = lrd.committed[-1].index
        responses, self._responses = self._responses, []
        return Ready(lrd.entries, lrd.committed, responses, compact_to, lrd)

    def apply(self, backend: KVBackend, entries: list[Entry]) -> Applied:
        """Apply committed entries through the open batch."""
        answers: list[tuple[int, Result]] = []
        events: list[Event] = []
        for entry in entries:
            if not entry.data:
                continue
            proposal: Proposal = codec.decode(entry.data)
            try:
                result: Result = self._apply_one(backend, proposal.request, events)
            except EtcdError as e:
                result = e
            if proposal.member_id == self.member_id and proposal.req_id in self._waiting:
                self._waiting.discard(proposal.req_id)
                answers.append((proposal.req_id, result))
        if entries:
            store.put_int(backend, META_APPLIED_INDEX, entries[-1].index)
            store.put_int(backend, META_TERM, self.term)
        return Applied(answers, events)

    def _apply_one(self, backend: KVBackend, req: WriteRequest, events: list[Event]) -> Response:
        leases = NotFoundLeases()
        if isinstance(req, PutRequest):
            if self.nospace:
                raise EtcdError(errors.NO_SPACE)
            return store.put(backend, leases, req, events)
        if isinstance(req, DeleteRangeRequest):
            return store.delete_range(backend, leases, req, events)
        if isinstance(req, TxnRequest):
            if self.nospace and alarms.txn_cost(req) > 0:
                raise EtcdError(errors.NO_SPACE)
            return store.txn(backend, leases, req, events)
        if isinstance(req, CompactionRequest):
            store.compact(backend, req.revision)
            return CompactionResponse(revision=store.current_revision(backend))
        touched = alarms.apply(backend, req)
        self.alarms = alarms.load(backend)
        return AlarmResponse(revision=store.current_revision(backend), alarms=touched)

    def advance(self, rd: Ready) -> None:
        self.log.advance(rd._log)
        if rd.compact_log_to:
            self._log_compacted = rd.compact_log_to
