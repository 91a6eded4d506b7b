"""One etcd member: client requests in, log proposals, apply, responses out.

The member never does IO. The driver feeds it requests and time, takes a Ready,
persists `entries`, applies `committed` through `apply` inside the same storage
batch, makes the batch durable, releases the answers and calls `advance`.
Reads never enter the log: `serve_read` answers them from any consistent snapshot
that already holds every acknowledged write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeAlias

from rusd.core import alarms, codec, errors
from rusd.core.alarms import AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType
from rusd.core.auth import apply as auth_apply
from rusd.core.auth import check as auth_check
from rusd.core.auth import store as auth_store
from rusd.core.auth.types import AUTH_REQUESTS, Authed, AuthInfo, AuthRequest, AuthResult
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
from rusd.core.raft import (
    NONE,
    Config,
    ConfState,
    HardState,
    Message,
    ProposalDroppedError,
    RawNode,
    Rng,
    StateType,
)
from rusd.core.raft import Entry as RaftEntry
from rusd.core.raft.memory import MemoryStorage

META_APPLIED_INDEX = b"applied_index"
# The term of the entry at the applied index (etcd's "term" next to its consistent index):
# the log restarts after it, so Raft knows the term of the entry before the first one.
META_APPLIED_TERM = b"applied_term"
# The member's current term (kept for data written before the hard state was stored).
# Raft's HardState (term, vote, commit), written in the same batch as the entries.
META_HARD_STATE = b"raft_hard_state"

WriteRequest: TypeAlias = (
    PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | AlarmRequest
    | LeaseGrantRequest | LeaseRevokeRequest | AuthRequest | Authed
)
# Answered by the leader's lessor without a log entry (Member.local).
LocalRequest: TypeAlias = LeaseKeepAliveRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest
LOCAL_REQUESTS = (LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
Response: TypeAlias = (
    RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse | AlarmResponse
    | LeaseGrantResponse | LeaseRevokeResponse | LeaseKeepAliveResponse | LeaseTimeToLiveResponse
    | LeaseLeasesResponse | AuthResult
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
    (with `Member.apply`, in the same durable batch: it also stores `hard_state`), drop
    log entries up to `compact_log_to` (0: none), make the batch durable, then send
    `messages` to peers and `responses` to clients.

    Raft ran ahead of the disk to produce it (its own append counted as persisted), which
    is safe because nothing leaves the member before the whole batch is durable: a crash
    before that loses the turn entirely."""

    entries: list[Entry]
    committed: list[Entry]
    responses: list[tuple[int, Result]]
    compact_log_to: int
    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.entries or self.committed or self.responses or self.hard_state is not None or self.messages
        )


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
    """The lease book of a read-only txn (served from a snapshot, away from the
    lessor): it writes nothing, so it never needs to know a lease."""

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


def load_hard_state(view: KVReader) -> HardState:
    raw = view.get_meta(META_HARD_STATE)
    if raw is None:
        return HardState()
    term, vote, commit = _HARD_STATE.unpack(raw)
    return HardState(term, vote, commit)


def save_hard_state(backend: KVBackend, hs: HardState) -> None:
    backend.put_meta(META_HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit))


_HARD_STATE = struct.Struct(">QQQ")


class _Lcg:
    """Deterministic randomness for Raft's election timeouts when the driver gives none
    (a single voter never waits for a randomized timeout)."""

    def __init__(self, seed: int) -> None:
        self._state = seed & 0xFFFFFFFFFFFFFFFF

    def randrange(self, start: int, stop: int) -> int:
        self._state = (self._state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return start + (self._state >> 33) % (stop - start)


def is_read(req: object) -> bool:
    """Requests answered from a snapshot without a log entry."""
    return isinstance(req, RangeRequest) or (isinstance(req, TxnRequest) and not store.is_write(req))


class Member:
    """An etcd member over a Raft RawNode: requests become proposals; applying the
    committed entries answers them. The server runs it as the only voter."""

    def __init__(
        self,
        config: MemberConfig,
        view: KVReader,
        replay: list[Entry],
        now: float,
        unix_ms: int = 0,
        rng: Rng | None = None,
        voters: tuple[int, ...] = (),
    ) -> None:
        """`now` is the driver's clock (seconds); `unix_ms` the wall clock in
        milliseconds, which seeds the lease id generator as etcd's idutil does.
        `replay` holds the durable log entries after the applied index; `voters` the
        cluster's voters (default: this member alone, which then campaigns at once)."""
        self.config = config
        applied = store.get_int(view, META_APPLIED_INDEX)
        hs = load_hard_state(view)
        # A fresh member bootstraps at term 1 and wins its first election at term 2,
        # as etcd does; each restart is one more election.
        term = max(hs.term, 1)
        # Raft reads its log from memory (as etcd's raft.MemoryStorage next to its WAL):
        # the durable entries after the applied index, then what each turn appends.
        self.storage = MemoryStorage(ConfState(voters=voters or (config.member.id,)))
        self.storage.snapshot_index = applied
        self.storage.snapshot_term = store.get_int(view, META_APPLIED_TERM, term if applied else 0)
        self.storage.append([RaftEntry(e.index, e.term, e.data) for e in replay])
        commit = min(max(hs.commit, applied), self.storage.last_index())
        self.storage.set_hard_state(HardState(term, hs.vote, commit))
        raft_config = Config(
            id=config.member.id, election_tick=config.election_ticks, heartbeat_tick=1, applied=applied
        )
        self.raw = RawNode(raft_config, self.storage, rng or _Lcg(config.member.id))
        self._applied = applied
        # Proposals of this member that a client waits for: log index -> (req_id, term).
        self._waiting: dict[int, tuple[int, int]] = {}
        self._pending = Ready([], [], [], 0)
        self.alarms: tuple[AlarmMember, ...] = alarms.load(view)
        self.compactor = AutoCompactor(config.compaction, now)
        self._responses: list[tuple[int, Result]] = []
        self._log_compacted = applied
        self._outstanding: Ready | None = None
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
        self.auth = auth_store.load(view)
        if len(self.storage.conf_state.voters) == 1:
            # The only voter elects itself at once; as leader it appends the empty entry
            # of its term, which makes the term durable before anything is acknowledged.
            self.raw.campaign()
        self._drain()

    @property
    def member_id(self) -> int:
        return self.config.member.id

    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def is_leader(self) -> bool:
        return self.raw.state is StateType.LEADER

    def status(self) -> MemberStatus:
        """Call after `advance`: then every proposal so far is persisted."""
        return MemberStatus(self.term, self.last_index, self.applied_index, self.alarms)

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def last_index(self) -> int:
        return self.raw.raft.log.last_index()

    def submit(self, req_id: int, req: WriteRequest, backend_size: int) -> None:
        """A client write: refused at once if invalid or over quota, else proposed."""
        inner = req.request if isinstance(req, Authed) else req
        try:
            self._check(inner, backend_size)
        except EtcdError as e:
            self._responses.append((req_id, e))
            return
        if isinstance(inner, LeaseGrantRequest) and inner.id == 0:
            # The id is chosen before proposing, so every member applies the same one.
            lease_id = self._ids.next_lease_id()
            while self.lessor.exists(lease_id):
                lease_id = self._ids.next_lease_id()
            inner = LeaseGrantRequest(ttl=inner.ttl, id=lease_id)
            req = Authed(req.user, req.auth_revision, inner) if isinstance(req, Authed) else inner
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
        if not self.is_leader:
            # Followers do not forward proposals (yet): the client retries elsewhere.
            error = errors.NO_LEADER if self.raw.lead == NONE else errors.NOT_LEADER
            self._responses.append((req_id, EtcdError(error)))
            return
        try:
            self.raw.propose(codec.encode(Proposal(self.member_id, req_id, req)))
        except ProposalDroppedError:  # e.g. while leadership is being transferred
            self._responses.append((req_id, EtcdError(errors.LEADER_CHANGED)))
            return
        # The leader appended it to its log: it answers when that index is applied.
        self._waiting[self.last_index] = (req_id, self.term)

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
        """A proposal nobody waits for (req_id 0 is never a client's); only a leader
        makes them, and a lost one is made again by whoever leads next."""
        if not self.is_leader:
            return
        try:
            self.raw.propose(codec.encode(Proposal(self.member_id, 0, req)))
        except ProposalDroppedError:
            return  # a transfer is under way; the next leader proposes it again

    @property
    def nospace(self) -> bool:
        return any(a.alarm == AlarmType.NOSPACE for a in self.alarms)

    def tick(self, now: float, revision: int) -> None:
        """Time passes: maybe start an auto-compaction; revoke expired leases (each
        proposed once, until its revocation is applied)."""
        self._now = max(self._now, now)
        self.raw.tick()
        target = self.compactor.tick(now, revision)
        if target is not None:
            self._propose_internal(CompactionRequest(target))
        for lease_id in self.lessor.expired(now):
            if lease_id not in self._revoking:
                self._revoking.add(lease_id)
                self._propose_internal(LeaseRevokeRequest(lease_id))

    def step(self, m: Message) -> None:
        """A Raft message from a peer."""
        self.raw.step(m)

    def _drain(self) -> None:
        """Run Raft until it has nothing more to do, collecting its Readys into one.

        Raft is told at once that each Ready's entries are persisted and applied: the
        driver makes them durable, with the apply, in one batch before anything in the
        combined Ready (messages included) leaves the member, so no one can observe the
        difference. For a single voter this commits a proposal in the turn it is made."""
        pending = self._pending
        raw = self.raw
        while raw.has_ready():
            rd = raw.ready()
            if rd.snapshot is not None:
                raise NotImplementedError("installing a snapshot into a Member")
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
                pending.hard_state = rd.hard_state
            if rd.entries:
                self.storage.append(rd.entries)
                first = rd.entries[0].index
                while pending.entries and pending.entries[-1].index >= first:
                    pending.entries.pop()
                pending.entries.extend(Entry(e.index, e.term, e.data) for e in rd.entries)
            pending.committed.extend(Entry(e.index, e.term, e.data) for e in rd.committed_entries)
            pending.messages.extend(rd.messages)
            pending.messages.extend(rd.messages_after_persist)
            raw.advance(rd)

    def ready(self) -> Ready:
        self._drain()
        rd, self._pending = self._pending, Ready([], [], [], 0)
        if rd.committed and rd.committed[-1].index - self._log_compacted >= self.config.snapshot_count:
            rd.compact_log_to = rd.committed[-1].index
        rd.responses, self._responses = self._responses, []
        self._outstanding = rd
        return rd

    def apply(self, backend: KVBackend, entries: list[Entry], now: float | None = None) -> Applied:
        """Apply committed entries through the open batch. `now` (default: the last
        time handed in) starts the expiry of leases granted here."""
        if now is not None:
            self._now = max(self._now, now)
        answers: list[tuple[int, Result]] = []
        events: list[Event] = []
        waiting = self._waiting
        for entry in entries:
            # A client waits for the entry this member appended at that index (request
            # ids start again after a restart, so the term must match too); another
            # entry there means its proposal was lost to a leader change.
            waiter = waiting.pop(entry.index, None) if waiting else None
            if not entry.data:
                if waiter is not None:
                    answers.append((waiter[0], EtcdError(errors.LEADER_CHANGED)))
                continue
            proposal: Proposal = codec.decode(entry.data)
            try:
                result: Result = self._apply_one(backend, proposal.request, events)
            except EtcdError as e:
                result = e
            if waiter is not None:
                req_id, term = waiter
                mine = proposal.member_id == self.member_id and proposal.req_id == req_id and entry.term == term
                answers.append((req_id, result if mine else EtcdError(errors.LEADER_CHANGED)))
        if entries:
            store.put_int(backend, META_APPLIED_INDEX, entries[-1].index)
            store.put_int(backend, META_APPLIED_TERM, entries[-1].term)
        rd = self._outstanding
        if rd is not None and rd.hard_state is not None:
            save_hard_state(backend, rd.hard_state)
        return Applied(answers, events)

    def _apply_one(self, backend: KVBackend, req: WriteRequest, events: list[Event]) -> Response:
        if isinstance(req, Authed):
            # A client's request is checked again against the auth state it is applied in.
            info = AuthInfo(req.user, req.auth_revision)
            auth_check.check_request(self.auth, info, req.request, self._lease_keys)
            return self._apply_one(backend, req.request, events)
        if isinstance(req, AUTH_REQUESTS):
            answer, self.auth = auth_apply.apply(backend, self.auth, req, store.current_revision(backend))
            return answer
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

    def _lease_keys(self, lease_id: int) -> list[bytes]:
        lease = self.lessor.get(lease_id)
        return sorted(lease.keys) if lease is not None else []

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
        """The driver made rd durable (and sent its messages and responses)."""
        self._outstanding = None
        if rd.committed:
            self._applied = rd.committed[-1].index
        if rd.compact_log_to:
            self.storage.compact(rd.compact_log_to)
            self._log_compacted = rd.compact_log_to
