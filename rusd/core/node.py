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
from rusd.core.lease import lessor as leases
from rusd.core.lease.lessor import IdGenerator, Lessor, min_lease_ttl
from rusd.core.lease.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
)
from rusd.core.log import Entry, LogReader
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

WriteRequest: TypeAlias = (
    PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | AlarmRequest
    | LeaseGrantRequest | LeaseRevokeRequest
)
# Answered by the leader's lessor without a log entry (Member.local).
LocalRequest: TypeAlias = LeaseKeepAliveRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest
LOCAL_REQUESTS = (LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
Response: TypeAlias = (
    RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse | AlarmResponse
    | LeaseGrantResponse | LeaseRevokeResponse | LeaseKeepAliveResponse | LeaseTimeToLiveResponse
    | LeaseLeasesResponse
)
# etcd's quota estimate for a lease grant (etcdserver/quota.go leaseOverhead).
LEASE_OVERHEAD = 64
Result: TypeAlias = Response | EtcdError


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a log entry carries: the request and who waits for its answer."""

    member_id: int
    req_id: int
    request: WriteRequest


for _number, _cls in enumerate(
    (Proposal, PutRequest, DeleteRangeRequest, TxnRequest, RangeRequest, Compare, CompactionRequest,
     AlarmRequest, KeyValue, LeaseGrantRequest, LeaseRevokeRequest),
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
    # --heartbeat-interval and the election timeout in ticks: the minimum lease TTL
    # and the lease refresh on promotion derive from them, as in etcd.
    heartbeat_ms: int = 100
    election_ticks: int = 10

    @property
    def election_timeout(self) -> float:
        return self.election_ticks * self.heartbeat_ms / 1000


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


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """What Maintenance.Status reports, taken when everything in it is durable."""

    term: int
    last_index: int
    applied_index: int
    alarms: tuple[AlarmMember, ...]


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
        self.meta_items = view.meta_items
        self.get = view.get
        self.range = view.range
        self.history = view.history
        self.changes = view.changes
        self.size = view.size
        self.size_in_use = view.size_in_use

    def put_meta(self, name: bytes, value: bytes) -> None:
        raise AssertionError("read-only txn wrote meta")

    def delete_meta(self, name: bytes) -> None:
        raise AssertionError("read-only txn deleted meta")

    def write(self, sub: int, kv: KeyValue) -> None:
        raise AssertionError("read-only txn wrote a key")

    def remove(self, key: bytes, mod_revision: int, sub: int) -> None:
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


def unapplied_entries(view: KVReader, log: LogReader) -> list[Entry]:
    """Durable entries after the applied index: committed but not applied before a
    crash; a restarted Member applies them first."""
    applied = store.get_int(view, META_APPLIED_INDEX)
    return log.entries(applied + 1, log.last_index() + 1)


def is_read(req: object) -> bool:
    """Requests answered from a snapshot without a log entry."""
    return isinstance(req, RangeRequest) or (isinstance(req, TxnRequest) and not store.is_write(req))


class Member:
    """A single-member etcd: requests become log entries; applying them answers."""

    def __init__(
        self, config: MemberConfig, view: KVReader, replay: list[Entry], now: float, unix_ms: int = 0
    ) -> None:
        """`now` is the driver's clock (seconds); `unix_ms` the wall clock in
        milliseconds, which seeds the lease id generator as etcd's idutil does."""
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
        self._now = now
        self._ids = IdGenerator(config.member.id, unix_ms)
        self.lessor = Lessor(min_lease_ttl(config.election_ticks, config.heartbeat_ms))
        for lease_id, ttl in leases.load(view):
            self.lessor.restore(lease_id, ttl)
        if len(self.lessor):
            # Attachments are not stored: each key's lease field is the truth.
            for kv in view.range(b"", b""):
                if kv.lease and self.lessor.exists(kv.lease):
                    self.lessor.attach(kv.lease, kv.key)
        # This member leads from the start: it expires leases, each given its full
        # TTL again (plus an election timeout, as etcd's Promote) from now.
        self.lessor.promote(now, config.election_timeout)
        self._revoking: set[int] = set()
        # A new term starts with an empty entry, as a Raft leader's does: it makes
        # the new term durable before anything is acknowledged in it.
        self.log.propose(b"")

    @property
    def member_id(self) -> int:
        return self.config.member.id

    def status(self) -> MemberStatus:
        """Call after `advance`: then every proposal so far is persisted."""
        return MemberStatus(self.term, self.last_index, self.applied_index, self.alarms)

    @property
    def applied_index(self) -> int:
        return self.log.applied_index

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def submit(self, req_id: int, req: WriteRequest, backend_size: int) -> None:
        """A client write: refused at once if invalid or over quota, else proposed."""
        try:
            self._check(req, backend_size)
        except EtcdError as e:
            self._responses.append((req_id, e))
            return
        if isinstance(req, LeaseGrantRequest) and req.id == 0:
            # The id is chosen before proposing, so every member applies the same one.
            lease_id = self._ids.next_lease_id()
            while self.lessor.exists(lease_id):
                lease_id = self._ids.next_lease_id()
            req = LeaseGrantRequest(ttl=req.ttl, id=lease_id)
        self._propose(req_id, req)

    def local(self, req_id: int, req: LocalRequest, now: float) -> None:
        """A lease request the leader answers alone (no log entry); the answer comes
        in the next Ready's responses."""
        self._responses.append((req_id, self.answer_local(req, now)))

    def answer_local(self, req: LocalRequest, now: float) -> Response:
        self._now = max(self._now, now)
        if isinstance(req, LeaseKeepAliveRequest):
            try:
                return LeaseKeepAliveResponse(req.id, self.lessor.renew(req.id, now))
            except EtcdError:
                return LeaseKeepAliveResponse(req.id, 0)
        if isinstance(req, LeaseTimeToLiveRequest):
            try:
                remaining, granted, keys = self.lessor.time_to_live(req.id, now)
            except EtcdError:
                return LeaseTimeToLiveResponse(req.id, -1)
            return LeaseTimeToLiveResponse(req.id, remaining, granted, keys if req.keys else ())
        return LeaseLeasesResponse(tuple(self.lessor.leases()))

    def _propose(self, req_id: int, req: WriteRequest) -> None:
        self._waiting.add(req_id)
        self.log.propose(codec.encode(Proposal(self.member_id, req_id, req)))

    def _check(self, req: WriteRequest, backend_size: int) -> None:
        check_request(req, self.config.max_txn_ops)
        if isinstance(req, PutRequest):
            self.check_quota(alarms.put_cost(req), backend_size)
        elif isinstance(req, TxnRequest):
            self.check_quota(alarms.txn_cost(req), backend_size)
        elif isinstance(req, LeaseGrantRequest):
            self.check_quota(LEASE_OVERHEAD, backend_size)

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
        """Time passes: maybe start an auto-compaction; revoke expired leases (each
        proposed once, until its revocation is applied)."""
        self._now = max(self._now, now)
        target = self.compactor.tick(now, revision)
        if target is not None:
            self._propose_internal(CompactionRequest(target))
        for lease_id in self.lessor.expired(now):
            if lease_id not in self._revoking:
                self._revoking.add(lease_id)
                self._propose_internal(LeaseRevokeRequest(lease_id))

    def ready(self) -> Ready:
        lrd = self.log.ready()
        compact_to = 0
        if lrd.committed and lrd.committed[-1].index - self._log_compacted >= self.config.snapshot_count:
            compact_to = lrd.committed[-1].index
        responses, self._responses = self._responses, []
        return Ready(lrd.entries, lrd.committed, responses, compact_to, lrd)

    def apply(self, backend: KVBackend, entries: list[Entry], now: float | None = None) -> Applied:
        """Apply committed entries through the open batch. `now` (default: the last
        time handed in) starts the expiry of leases granted here."""
        if now is not None:
            self._now = max(self._now, now)
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
            # Only this term's own proposals have a waiting client: request ids start
            # again after a restart, so an older entry must never answer a new one.
            mine = proposal.member_id == self.member_id and entry.term == self.term
            if mine and proposal.req_id in self._waiting:
                self._waiting.discard(proposal.req_id)
                answers.append((proposal.req_id, result))
        if entries:
            store.put_int(backend, META_APPLIED_INDEX, entries[-1].index)
            store.put_int(backend, META_TERM, self.term)
        return Applied(answers, events)

    def _apply_one(self, backend: KVBackend, req: WriteRequest, events: list[Event]) -> Response:
        book = self.lessor
        if isinstance(req, PutRequest):
            if self.nospace:
                raise EtcdError(errors.NO_SPACE)
            return store.put(backend, book, req, events)
        if isinstance(req, DeleteRangeRequest):
            return store.delete_range(backend, book, req, events)
        if isinstance(req, TxnRequest):
            if self.nospace and alarms.txn_cost(req) > 0:
                raise EtcdError(errors.NO_SPACE)
            return store.txn(backend, book, req, events)
        if isinstance(req, CompactionRequest):
            store.compact(backend, req.revision)
            return CompactionResponse(revision=store.current_revision(backend))
        if isinstance(req, LeaseGrantRequest):
            if self.nospace:
                raise EtcdError(errors.NO_SPACE)
            lease = self.lessor.grant(req.id, req.ttl, self._now)
            leases.save(backend, lease.id, lease.ttl)
            return LeaseGrantResponse(store.current_revision(backend), lease.id, lease.ttl)
        if isinstance(req, LeaseRevokeRequest):
            return self._revoke(backend, req.id, events)
        touched = alarms.apply(backend, req)
        self.alarms = alarms.load(backend)
        return AlarmResponse(revision=store.current_revision(backend), alarms=touched)

    def _revoke(self, backend: KVBackend, lease_id: int, events: list[Event]) -> LeaseRevokeResponse:
        """Delete the lease's keys, all in one revision and in key order, then the lease."""
        self._revoking.discard(lease_id)
        keys = self.lessor.revoke(lease_id)
        txn = store.WriteTxn(backend, self.lessor)
        for key in keys:
            txn.delete_range(key, None)
        txn.end(events)
        leases.remove(backend, lease_id)
        return LeaseRevokeResponse(store.current_revision(backend))

    def advance(self, rd: Ready) -> None:
        self.log.advance(rd._log)
        if rd.compact_log_to:
            self._log_compacted = rd.compact_log_to
