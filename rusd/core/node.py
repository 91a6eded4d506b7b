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
from rusd.core.auth.types import AUTH_REQUESTS, Authed, AuthEffect, AuthInfo, AuthRequest, AuthResult
from rusd.core.cluster import (
    ConfRequest,
    MemberAddRequest,
    MemberInfo,
    MemberPromoteRequest,
    MemberPublishRequest,
    MemberRemoveRequest,
    MemberRequest,
    MemberResponse,
    MemberUpdateRequest,
    Roster,
)
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
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryKind,
    HardState,
    Message,
    ProposalDroppedError,
    RawNode,
    Rng,
    Snapshot,
    StateType,
)
from rusd.core.raft.coalesce import coalesce
from rusd.core.raft.memory import MemoryStorage

# Test-only: "early_lease_expiry" makes a new leader expire leases as if their TTLs had
# started long ago, instead of giving each its full TTL again (etcd's Promote);
# "read_context_per_member" brings back ReadIndex contexts counted per member (1, 2, 3, ...),
# so two members' reads can share a context and the leader drops one of them.
PLANTED_MEMBER_BUGS = frozenset({"early_lease_expiry", "read_context_per_member"})

META_APPLIED_INDEX = b"applied_index"
# The term of the entry at the applied index (etcd's "term" next to its consistent index):
# the log restarts after it, so Raft knows the term of the entry before the first one.
META_APPLIED_TERM = b"applied_term"
# Raft's HardState (term, vote, commit), written in the same batch as the entries.
META_HARD_STATE = b"raft_hard_state"
# Raft's configuration (voters, learners) as of the applied index.
META_CONF_STATE = b"raft_conf_state"

WriteRequest: TypeAlias = (
    PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | AlarmRequest
    | LeaseGrantRequest | LeaseRevokeRequest | MemberRequest | AuthRequest | Authed
)
# Answered by the leader's lessor without a log entry (Member.local).
LocalRequest: TypeAlias = LeaseKeepAliveRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest
LOCAL_REQUESTS = (LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
Response: TypeAlias = (
    RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse | AlarmResponse
    | LeaseGrantResponse | LeaseRevokeResponse | LeaseKeepAliveResponse | LeaseTimeToLiveResponse
    | LeaseLeasesResponse | MemberResponse | AuthResult
)
# What a cluster with the CORRUPT alarm refuses (etcd's applierV3Corrupt).
CORRUPT_REFUSES = (PutRequest, DeleteRangeRequest, TxnRequest, CompactionRequest, LeaseGrantRequest,
                   LeaseRevokeRequest)
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
     AlarmRequest, KeyValue, LeaseGrantRequest, LeaseRevokeRequest, MemberInfo, MemberAddRequest,
     MemberRemoveRequest, MemberUpdateRequest, MemberPromoteRequest, MemberPublishRequest),
    start=1,
):
    codec.register(_number, _cls)


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
    # Entries kept after a log compaction so that a slow follower catches up from the
    # log rather than by snapshot (etcd's snapshotCatchUpEntries).
    catch_up_entries: int = 5_000
    # --strict-reconfig-check: refuse member changes that would leave no started quorum.
    strict_reconfig_check: bool = True
    # Test-only planted bugs (see PLANTED_MEMBER_BUGS) that the simulator must catch.
    bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.bugs - PLANTED_MEMBER_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(unknown)}")

    @property
    def request_timeout_ticks(self) -> int:
        """etcd's ReqTimeout (5 s + 2 election timeouts), in ticks: how long a proposal or
        a linearizable read waits before it is answered "request timed out"."""
        return (5_000 // self.heartbeat_ms) + 2 * self.election_ticks

    @property
    def election_timeout(self) -> float:
        return self.election_ticks * self.heartbeat_ms / 1000


@dataclass
class Ready:
    """One turn's work for the driver, in order:

    1. if `snapshot` is set: replace the backend's whole contents with the image in
       `snapshot.data` (received from the leader), drop every durable log entry, and call
       `Member.install_snapshot(backend)`;
    2. persist `entries` and apply `committed` (with `Member.apply`, in the same durable
       batch: it also stores `hard_state`), drop log entries up to `compact_log_to`
       (0: none), make the batch durable;
    3. serve the linearizable reads in `reads` (request ids) from a snapshot that holds
       the batch, send `messages` to peers (a MsgSnap gets the backend's image as its
       snapshot data, see `Member.report_snapshot`) and `responses` to clients.

    Raft ran ahead of the disk to produce it (its own append counted as persisted), which
    is safe because nothing leaves the member before the whole batch is durable: a crash
    before that loses the turn entirely."""

    entries: list[Entry]
    committed: list[Entry]
    responses: list[tuple[int, Result]]
    compact_log_to: int
    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)
    # Messages Raft produced before anything of this turn was claimed persisted (a
    # leader's appends and heartbeats, a candidate's vote requests): they may leave while
    # the batch is being made durable, as etcd sends them during its WAL fsync.
    early_messages: list[Message] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    snapshot: Snapshot | None = None

    def __bool__(self) -> bool:
        return bool(
            self.entries or self.committed or self.responses or self.hard_state is not None or self.messages
            or self.early_messages or self.reads or self.snapshot is not None
        )


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """What Maintenance.Status reports, taken when everything in it is durable."""

    term: int
    last_index: int
    applied_index: int
    alarms: tuple[AlarmMember, ...]
    leader: int = 0
    members: tuple[MemberInfo, ...] = ()
    is_learner: bool = False
    # Members removed for good: their peer streams are refused.
    removed: frozenset[int] = frozenset()


@dataclass
class Applied:
    """What applying committed entries produced: answers for waiting clients, the
    changes, in revision order, for watchers, and in log order what the auth changes
    mean for the tokens this member keeps (hand them to the token provider before the
    answers go out, so a client never holds an answer its member does not honour yet).
    Release all of it only once durable."""

    answers: list[tuple[int, Result]]
    events: list[Event]
    auth: list[AuthEffect] = field(default_factory=list)


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
_U64 = struct.Struct(">Q")


def load_conf_state(view: KVReader) -> ConfState | None:
    """The configuration as of the applied index (None: never stored, a fresh member)."""
    raw = view.get_meta(META_CONF_STATE)
    if raw is None:
        return None
    (n_voters,) = _U64.unpack_from(raw, 0)
    ids = [_U64.unpack_from(raw, 8 + 8 * i)[0] for i in range(len(raw) // 8 - 1)]
    return ConfState(voters=tuple(ids[:n_voters]), learners=tuple(ids[n_voters:]))


def save_conf_state(backend: KVBackend, cs: ConfState) -> None:
    ids = (len(cs.voters), *cs.voters, *cs.learners)
    backend.put_meta(META_CONF_STATE, b"".join(_U64.pack(i) for i in ids))


def _bootstrap_entries(initial: tuple[MemberInfo, ...]) -> list[Entry]:
    """Entries 1..n of a new cluster's log (term 1): adding each initial member."""
    return [
        Entry(index, 1, ConfChange(
            ConfChangeType.ADD_NODE, m.id,
            codec.encode(Proposal(0, 0, MemberAddRequest(m.peer_urls, False, m.id, m.name))),
        ).encode(), EntryKind.CONF_CHANGE)
        for index, m in enumerate(sorted(initial, key=lambda m: m.id), start=1)
    ]


def _removal_entries(me: int, conf: ConfState, first: int, term: int) -> list[Entry]:
    """Committed-by-fiat entries removing every member but `me` (--force-new-cluster)."""
    others = [i for i in (*conf.voters, *conf.learners) if i != me]
    return [
        Entry(first + k, term, ConfChange(
            ConfChangeType.REMOVE_NODE, i, codec.encode(Proposal(me, 0, MemberRemoveRequest(i))),
        ).encode(), EntryKind.CONF_CHANGE)
        for k, i in enumerate(others)
    ]


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


@dataclass(slots=True)
class _Waiter:
    """A client waiting for its proposal (or linearizable read) to be applied."""

    req_id: int
    deadline_tick: int


class Member:
    """An etcd member over a Raft RawNode: client writes become proposals (a follower's
    go to the leader through Raft), applying the committed entries answers them on the
    member that took the request; linearizable reads wait for a ReadIndex."""

    def __init__(
        self,
        config: MemberConfig,
        view: KVReader,
        replay: list[Entry],
        now: float,
        unix_ms: int = 0,
        rng: Rng | None = None,
        initial_cluster: tuple[MemberInfo, ...] = (),
        join: bool = False,
        force_new_cluster: bool = False,
    ) -> None:
        """`now` is the driver's clock (seconds); `unix_ms` the wall clock in
        milliseconds, which seeds the request and lease id generator as etcd's idutil
        does (so ids of proposals made before a restart are not reused). `replay` holds
        the durable log entries after the applied index.

        A fresh member of a new cluster bootstraps as etcd's raft.StartNode does: the log
        starts with one committed conf change entry per member of `initial_cluster`
        (default: this member alone, which then campaigns at once). A member joining an
        existing cluster (`join`) starts empty and learns everything from the leader.

        `force_new_cluster` (etcd's --force-new-cluster) restarts a member with data as a
        one-member cluster: its uncommitted entries are dropped and committed entries
        removing every other member are appended (etcd's restartAsStandaloneNode)."""
        self.config = config
        applied = store.get_int(view, META_APPLIED_INDEX)
        hs = load_hard_state(view)
        fresh = not applied and not replay and hs == HardState()
        initial = initial_cluster or (config.member,)
        bootstrap = _bootstrap_entries(initial) if fresh and not join else []
        # A fresh member bootstraps at term 1 and wins its first election at term 2,
        # as etcd does; each restart is one more election.
        term = max(hs.term, 1)
        conf = load_conf_state(view)
        if conf is None:
            conf = ConfState() if join else ConfState(voters=tuple(sorted(m.id for m in initial)))
        # Raft reads its log from memory (as etcd's raft.MemoryStorage next to its WAL):
        # the durable entries after the applied index, then what each turn appends.
        self.storage = MemoryStorage(conf)
        self.storage.snapshot_index = applied
        self.storage.snapshot_term = store.get_int(view, META_APPLIED_TERM, term if applied else 0)
        if applied:
            # What a lagging follower is sent: the backend as of (at least) this index.
            self.storage.create_snapshot(applied, conf, b"")
        forced: list[Entry] = []
        if force_new_cluster and not fresh:
            replay = [e for e in replay if e.index <= max(hs.commit, applied)]
            last = replay[-1].index if replay else applied
            forced = _removal_entries(config.member.id, conf, last + 1, term)
        self.storage.append(replay or bootstrap)
        self.storage.append(forced)
        commit = min(max(hs.commit, applied, len(bootstrap)), self.storage.last_index())
        if forced:
            commit = forced[-1].index
        self.storage.set_hard_state(HardState(term, hs.vote, commit))
        # Raft counts the bootstrap entries applied (its configuration already holds them);
        # the first Ready persists them and applies them to the member list.
        # CheckQuorum as etcd sets it: a leader cut off from a quorum steps down after an
        # election timeout (so its clients learn there is no leader).
        raft_config = Config(
            id=config.member.id, election_tick=config.election_ticks, heartbeat_tick=1,
            applied=applied or len(bootstrap), check_quorum=True,
        )
        self.raw = RawNode(raft_config, self.storage, rng or _Lcg(config.member.id))
        self._applied = applied
        self._ticks = 0
        # Proposals of this member that a client waits for, by proposal id; and, for those
        # this member appended as leader, the log index it put them at.
        self._waiting: dict[int, _Waiter] = {}
        self._at_index: dict[int, int] = {}
        # Proposals of this turn not yet handed to Raft: (request id or None, proposal
        # id, encoded proposal).
        self._proposals: list[tuple[int | None, int, bytes]] = []
        # Linearizable reads: not yet asked for, asked (by ReadIndex context), and known
        # safe once the applied index reaches theirs.
        self._reads_new: list[_Waiter] = []
        self._reads_asked: dict[bytes, tuple[int, list[_Waiter]]] = {}
        self._reads_ready: list[tuple[int, list[_Waiter]]] = []
        self._read_seq = 0  # only the planted bug "read_context_per_member" counts here
        self._pending = Ready(list(bootstrap) or forced, list(bootstrap), [], 0)
        if bootstrap or forced:
            self._pending.hard_state = self.storage.hard_state
        self.alarms: tuple[AlarmMember, ...] = alarms.load(view)
        self.roster = Roster(view)
        self.auth = auth_store.load(view)
        # Token effects not yet handed out (those of an installed image wait for the
        # next apply). Entries at or below the applied index are never applied again,
        # so a restart assigns no token from them.
        self._auth_effects: list[AuthEffect] = []
        self.compactor = AutoCompactor(config.compaction, now)
        self._responses: list[tuple[int, Result]] = []
        self._log_compacted = applied
        self._outstanding: Ready | None = None
        self._now = now
        self._ids = IdGenerator(config.member.id, unix_ms)
        self.lessor = Lessor(min_lease_ttl(config.election_ticks, config.heartbeat_ms))
        self._load_leases(view)
        self._revoking: set[int] = set()
        self._leading = False
        # Lease requests a new leader holds until its lessor is promoted (see _promote).
        self._local_waiting: list[tuple[int, LocalRequest]] = []
        if conf.voters == (config.member.id,) and not conf.learners and not join:
            # The only voter elects itself at once; as leader it appends the empty entry
            # of its term, which makes the term durable before anything is acknowledged.
            self.raw.campaign()
        self._drain()

    def _load_leases(self, view: KVReader) -> None:
        self.lessor = Lessor(self.lessor.min_ttl)
        for lease_id, ttl in leases.load(view):
            self.lessor.restore(lease_id, ttl)
        if len(self.lessor):
            # Attachments are not stored: each key's lease field is the truth.
            for kv in view.range(b"", b""):
                if kv.lease and self.lessor.exists(kv.lease):
                    self.lessor.attach(kv.lease, kv.key)

    @property
    def member_id(self) -> int:
        return self.config.member.id

    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def is_leader(self) -> bool:
        return self.raw.state is StateType.LEADER

    @property
    def leader(self) -> int:
        """The leader this member knows of (0: none)."""
        return self.raw.lead

    def status(self) -> MemberStatus:
        """Call after `advance`: then every proposal so far is persisted."""
        conf = self.raw.conf_state()
        return MemberStatus(
            self.term, self.last_index, self.applied_index, self.alarms, self.leader, self.members(),
            self.member_id in conf.learners, frozenset(self.roster.removed),
        )

    @property
    def alone(self) -> bool:
        """The only voter and no learners: always the leader, so every local read is
        linearizable without a ReadIndex round."""
        conf = self.raw.conf_state()
        return conf.voters == (self.member_id,) and not conf.learners

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
        if isinstance(inner, MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest):
            self._propose_conf_change(req_id, inner)
            return
        self._propose(req_id, req)

    @property
    def removed(self) -> bool:
        """This member was removed from the cluster: the driver stops it (as etcd does)."""
        return self.member_id in self.roster.removed

    def members(self) -> tuple[MemberInfo, ...]:
        return self.roster.listed()

    def _propose_conf_change(self, req_id: int, req: ConfRequest) -> None:
        """A member add, remove or promote becomes a Raft configuration change whose
        context carries the request (and who waits for it)."""
        try:
            if isinstance(req, MemberAddRequest) and not req.id:
                raise ValueError("a member add needs the new member's id")
            if self.config.strict_reconfig_check:
                self.roster.check_started(req)
            self.roster.validate(req)
            if isinstance(req, MemberPromoteRequest) and self.is_leader:
                self._check_learner_ready(req.id)
        except EtcdError as e:
            self._responses.append((req_id, e))
            return
        kind = {
            MemberAddRequest: ConfChangeType.ADD_LEARNER_NODE if getattr(req, "is_learner", False)
            else ConfChangeType.ADD_NODE,
            MemberRemoveRequest: ConfChangeType.REMOVE_NODE,
            MemberPromoteRequest: ConfChangeType.ADD_NODE,
        }[type(req)]
        self._flush_proposals()  # in the log after the proposals taken before it
        proposal_id = self._ids.next()
        context = codec.encode(Proposal(self.member_id, proposal_id, req))
        try:
            self.raw.propose_conf_change(ConfChange(kind, req.id, context))
        except ProposalDroppedError:
            self._responses.append((req_id, EtcdError(self._no_leader_error())))
            return
        self._waiting[proposal_id] = _Waiter(req_id, self._ticks + self.config.request_timeout_ticks)

    def _check_learner_ready(self, learner: int) -> None:
        """etcd promotes a learner only once its log is within 90% of the leader's."""
        progress = self.raw.raft.tracker.progress
        learner_match = progress[learner].match if learner in progress else 0
        if learner_match < progress[self.member_id].match * 0.9:
            raise EtcdError(errors.LEARNER_NOT_READY)

    def read(self, req_id: int) -> None:
        """A linearizable read: it comes back in a later Ready's `reads` once this
        member has applied everything committed when the read arrived (confirmed by the
        leader with a heartbeat round, Raft's ReadIndex); reads are batched into one
        ReadIndex per turn."""
        self._reads_new.append(_Waiter(req_id, self._ticks + self.config.request_timeout_ticks))

    def local(self, req_id: int, req: LocalRequest, now: float) -> None:
        """A lease request answered without a log entry; the answer comes in the next
        Ready's responses. Every member knows every lease (grants and revokes are applied
        everywhere), so any member lists them (etcd's LeaseLeases reads the local lessor);
        keepalive and time-to-live are the leader's: a follower answers "not leader" (the
        driver forwards such requests to the leader, as etcd's lease HTTP handler does)."""
        if isinstance(req, LeaseLeasesRequest):
            self._responses.append((req_id, LeaseLeasesResponse(tuple(self.lessor.leases()))))
            return
        if not self.is_leader:
            self._responses.append((req_id, EtcdError(self._no_leader_error())))
            return
        if not self.lessor.primary:
            self._now = max(self._now, now)
            self._local_waiting.append((req_id, req))
            return
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

    def _no_leader_error(self) -> errors.ErrorKind:
        return errors.NO_LEADER if self.raw.lead == NONE else errors.NOT_LEADER

    def _propose(self, req_id: int | None, req: WriteRequest) -> None:
        """Queue a proposal; the turn's proposals go to Raft together (_flush_proposals).
        `req_id` None: nobody waits for it (proposal id 0 is never a client's)."""
        proposal_id = 0 if req_id is None else self._ids.next()
        self._proposals.append((req_id, proposal_id, codec.encode(Proposal(self.member_id, proposal_id, req))))

    def _flush_proposals(self) -> None:
        """Propose the queued proposals as one batch: one log append and one MsgApp per
        follower on a leader, one forwarded MsgProp on a follower."""
        batch, self._proposals = self._proposals, []
        if not batch:
            return
        try:
            self.raw.propose_batch([data for _, _, data in batch])
        except ProposalDroppedError:
            # No leader to take them (or a leadership transfer is under way here).
            error = errors.LEADER_CHANGED if self.is_leader else errors.NO_LEADER
            self._responses.extend((req_id, EtcdError(error)) for req_id, _, _ in batch if req_id is not None)
            return
        deadline = self._ticks + self.config.request_timeout_ticks
        # Appended here, in order, ending at the last index: another entry at one of these
        # indexes means that proposal was lost.
        first = self.last_index - len(batch) + 1 if self.is_leader else 0
        for k, (req_id, proposal_id, _) in enumerate(batch):
            if req_id is None:
                continue
            self._waiting[proposal_id] = _Waiter(req_id, deadline)
            if first:
                self._at_index[first + k] = proposal_id

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
        """A proposal nobody waits for; lost ones are made again by whoever leads next."""
        self._propose(None, req)

    @property
    def corrupt(self) -> bool:
        return any(a.alarm == AlarmType.CORRUPT for a in self.alarms)

    @property
    def nospace(self) -> bool:
        return any(a.alarm == AlarmType.NOSPACE for a in self.alarms)

    def tick(self, now: float, revision: int) -> None:
        """Time passes: Raft ticks; requests past etcd's request timeout are answered so;
        the leader may start an auto-compaction and revokes expired leases (each proposed
        once, until its revocation is applied or leadership moves)."""
        self._now = max(self._now, now)
        self._ticks += 1
        self.raw.tick()
        self._expire_requests()
        if not self.is_leader:
            return
        target = self.compactor.tick(now, revision)
        if target is not None:
            self._propose_internal(CompactionRequest(target))
        for lease_id in self.lessor.expired(now):
            if lease_id not in self._revoking:
                self._revoking.add(lease_id)
                self._propose_internal(LeaseRevokeRequest(lease_id))

    def _expire_requests(self) -> None:
        """Lost proposals (e.g. forwarded to a leader that died) and reads time out."""
        now = self._ticks
        if self._waiting and min(w.deadline_tick for w in self._waiting.values()) <= now:
            for pid in [p for p, w in self._waiting.items() if w.deadline_tick <= now]:
                self._responses.append((self._waiting.pop(pid).req_id, EtcdError(errors.REQUEST_TIMEOUT)))
            self._at_index = {i: p for i, p in self._at_index.items() if p in self._waiting}
        for ctx, (_term, batch) in list(self._reads_asked.items()):
            if batch[0].deadline_tick <= now:
                del self._reads_asked[ctx]
                self._responses.extend((w.req_id, EtcdError(errors.REQUEST_TIMEOUT)) for w in batch)

    def step(self, m: Message) -> None:
        """A Raft message from a peer."""
        self.raw.step(m)

    def report_snapshot(self, to: int, failed: bool) -> None:
        """The driver tells whether the MsgSnap (with the backend image) reached `to`."""
        self.raw.report_snapshot(to, failed)

    def report_unreachable(self, to: int) -> None:
        self.raw.report_unreachable(to)

    def transfer_leader(self, transferee: int) -> None:
        """MoveLeader: hand leadership to `transferee` (proposals wait meanwhile)."""
        self.raw.transfer_leader(transferee)

    def _ask_reads(self) -> None:
        """One ReadIndex for every read that arrived since the last one."""
        batch, self._reads_new = self._reads_new, []
        # The leader keeps one pending ReadIndex per context and ignores a second one
        # with the same context, so contexts must be unique across members and restarts
        # (etcd uses its request id generator, as here).
        ctx = _U64.pack(self._ids.next())
        if "read_context_per_member" in self.config.bugs:  # test-only planted bug
            self._read_seq += 1
            ctx = _U64.pack(self._read_seq)
        try:
            self.raw.read_index(ctx)
        except ProposalDroppedError:
            self._responses.extend((w.req_id, EtcdError(errors.NO_LEADER)) for w in batch)
            return
        self._reads_asked[ctx] = (self.term, batch)

    def _drain(self, early: bool = False) -> None:
        """Run Raft until it has nothing more to do, collecting its Readys into one.

        Raft is told at once that each Ready's entries are persisted and applied: the
        driver makes them durable, with the apply, in one batch before anything in the
        combined Ready (messages included) leaves the member, so no one can observe the
        difference. For a single voter this commits a proposal in the turn it is made.
        With `early`, the first Raft Ready's ordinary messages go to `early_messages`."""
        self._flush_proposals()
        if self._reads_new:
            self._ask_reads()
        pending = self._pending
        raw = self.raw
        first = early  # the first Raft Ready of the turn
        while raw.has_ready():
            rd = raw.ready()
            if rd.soft_state is not None:
                self._on_role(rd.soft_state.state is StateType.LEADER, rd.soft_state.lead)
            if rd.snapshot is not None:
                # The leader's state replaces ours: what we had pending is superseded.
                self.storage.apply_snapshot(Snapshot(metadata=rd.snapshot.metadata))
                pending.snapshot = rd.snapshot
                pending.entries.clear()
                pending.committed.clear()
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
                pending.hard_state = rd.hard_state
            if rd.entries:
                self.storage.append(rd.entries)
                start = rd.entries[0].index
                while pending.entries and pending.entries[-1].index >= start:
                    pending.entries.pop()
                pending.entries.extend(rd.entries)
            pending.committed.extend(rd.committed_entries)
            (pending.early_messages if first else pending.messages).extend(rd.messages)
            pending.messages.extend(rd.messages_after_persist)
            first = False
            for rs in rd.read_states:
                asked = self._reads_asked.pop(rs.request_ctx, None)
                if asked is not None:
                    self._reads_ready.append((rs.index, asked[1]))
            raw.advance(rd)

    def _on_role(self, leading: bool, lead: int) -> None:
        """Leadership moved. Only the leader expires leases, once promoted (_promote); a
        former one stops, and the lease requests it held go elsewhere.
        Reads asked in an older term may never be answered: they fail now so clients retry."""
        if leading and not self._leading:
            self._revoking.clear()
        elif self._leading and not leading:
            self.lessor.demote()
            self._revoking.clear()
            held, self._local_waiting = self._local_waiting, []
            self._responses.extend((req_id, EtcdError(self._no_leader_error())) for req_id, _ in held)
        self._leading = leading
        term = self.term
        for ctx, (asked_term, batch) in list(self._reads_asked.items()):
            if asked_term != term or lead == NONE:
                del self._reads_asked[ctx]
                self._responses.extend((w.req_id, EtcdError(errors.LEADER_CHANGED)) for w in batch)

    def _promote(self) -> list[tuple[int, Result]]:
        """The leader applies the first entry of its term, so every entry of earlier terms is
        applied: its lessor becomes primary, giving each lease its full TTL again (plus an
        election timeout), and answers the lease requests held meanwhile. Promoting when
        elected (as rusd did) let a keepalive renew a lease that a revoke proposed by an
        earlier leader, still in the log, removed right after; etcd promotes here too."""
        if "early_lease_expiry" in self.config.bugs:
            self.lessor.promote(self._now - 3600.0)
        else:
            self.lessor.promote(self._now, self.config.election_timeout)
        held, self._local_waiting = self._local_waiting, []
        return [(req_id, self.answer_local(req, self._now)) for req_id, req in held]

    def ready(self) -> Ready:
        # Only the first Raft Ready of a turn may send early: the later ones can carry
        # what the turn's claimed (not yet durable) persistence made Raft conclude.
        self._drain(early=not (self._pending.entries or self._pending.messages or self._pending.committed))
        rd, self._pending = self._pending, Ready([], [], [], 0)
        rd.messages = coalesce(rd.messages)
        rd.early_messages = coalesce(rd.early_messages)
        applied = rd.committed[-1].index if rd.committed else self._applied
        if rd.snapshot is not None:
            applied = max(applied, rd.snapshot.metadata.index)
        if self._reads_ready:
            still: list[tuple[int, list[_Waiter]]] = []
            for index, batch in self._reads_ready:
                if index <= applied:
                    rd.reads.extend(w.req_id for w in batch)
                else:
                    still.append((index, batch))
            self._reads_ready = still
        # After a snapshot install the backend may be ahead of the log: compact only
        # entries the log holds.
        keep_from = min(applied, self.storage.last_index()) - self.config.catch_up_entries
        if applied - self._log_compacted >= self.config.snapshot_count and keep_from > self._log_compacted:
            rd.compact_log_to = keep_from
        rd.responses, self._responses = self._responses, []
        self._outstanding = rd
        return rd

    def install_snapshot(self, backend: KVBackend) -> None:
        """The driver replaced the backend's contents with the leader's image (rd.snapshot):
        take its applied index, leases and alarms, and keep this member's own Raft state.
        Clients waiting for proposals cannot learn their outcome any more: they are
        answered "request timed out" (indeterminate), as etcd would after its timeout."""
        rd = self._outstanding
        assert rd is not None and rd.snapshot is not None
        self._applied = max(store.get_int(backend, META_APPLIED_INDEX), rd.snapshot.metadata.index)
        save_hard_state(backend, self.raw.hard_state())
        if load_conf_state(backend) is None:
            # The image's own configuration is as of its applied index (what a restart
            # starts from); only an image without one takes the snapshot's.
            save_conf_state(backend, rd.snapshot.metadata.conf_state)
        self.alarms = alarms.load(backend)
        self.roster = Roster(backend)
        before, self.auth = self.auth, auth_store.load(backend)
        self._auth_effects.extend(auth_apply.revoked_between(before, self.auth))
        self._load_leases(backend)
        if self._leading:
            self.lessor.promote(self._now, self.config.election_timeout)
        self._responses.extend((w.req_id, EtcdError(errors.REQUEST_TIMEOUT)) for w in self._waiting.values())
        self._waiting.clear()
        self._at_index.clear()
        self._log_compacted = rd.snapshot.metadata.index

    def apply(self, backend: KVBackend, entries: list[Entry], now: float | None = None) -> Applied:
        """Apply committed entries through the open batch. `now` (default: the last
        time handed in) starts the expiry of leases granted here. Entries the backend
        already holds (it came from a leader's image newer than the Raft snapshot) are
        skipped, except for Raft's configuration changes."""
        if now is not None:
            self._now = max(self._now, now)
        answers: list[tuple[int, Result]] = []
        events: list[Event] = []
        effects, self._auth_effects = self._auth_effects, []
        waiting = self._waiting
        at_index = self._at_index
        applied = self._applied
        conf_changed = False
        for entry in entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                # Changes the backend already holds leave its stored configuration alone.
                conf_changed |= entry.index > applied
                self._apply_conf_change(backend, entry, entry.index <= applied, answers)
                continue
            if entry.index <= applied:
                continue
            if self._leading and not self.lessor.primary and entry.term == self.raw.term:
                answers.extend(self._promote())
            proposal: Proposal | None = codec.decode(entry.data) if entry.data else None
            if at_index:
                # The proposal this member put at that index is not the entry there: lost.
                lost = at_index.pop(entry.index, None)
                if lost is not None and (
                    proposal is None or proposal.member_id != self.member_id or proposal.req_id != lost
                ):
                    waiter = waiting.pop(lost, None)
                    if waiter is not None:
                        answers.append((waiter.req_id, EtcdError(errors.LEADER_CHANGED)))
            if proposal is None:
                continue
            try:
                result: Result = self._apply_one(backend, proposal.request, events, entry.index, effects)
            except EtcdError as e:
                result = e
            if proposal.member_id == self.member_id and waiting:
                mine = waiting.pop(proposal.req_id, None)
                if mine is not None:
                    answers.append((mine.req_id, result))
        if entries and entries[-1].index > applied:
            store.put_int(backend, META_APPLIED_INDEX, entries[-1].index)
            store.put_int(backend, META_APPLIED_TERM, entries[-1].term)
            self._applied = entries[-1].index
        if conf_changed:
            save_conf_state(backend, self.storage.conf_state)
        rd = self._outstanding
        if rd is not None and rd.hard_state is not None:
            save_hard_state(backend, rd.hard_state)
        return Applied(answers, events, effects)

    def _apply_conf_change(
        self, backend: KVBackend, entry: Entry, seen: bool, answers: list[tuple[int, Result]]
    ) -> None:
        """A member change: the member list first (validated again), then Raft's
        configuration, only if the change took effect (etcd applies a refused one as a
        no-op). `seen`: the backend already holds it (an image newer than the snapshot)."""
        cc = ConfChange.decode(entry.data)
        if not cc.context:  # a bare Raft configuration change (no member record)
            self.storage.set_conf_state(self.raw.apply_conf_change(cc))
            return
        proposal: Proposal = codec.decode(cc.context)
        req = proposal.request
        assert isinstance(req, MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest)
        result: Result
        if seen:
            if self.roster.applied_before(req):
                self.storage.set_conf_state(self.raw.apply_conf_change(cc))
            return
        try:
            result = self.roster.apply(backend, req)
        except EtcdError as e:
            result = e
            conf = self.raw.conf_state()
            if cc.type is ConfChangeType.REMOVE_NODE and cc.node_id in (*conf.voters, *conf.learners):
                # Raft knows a member the list does not (--force-new-cluster on a store
                # from before the list was kept): the removal still applies to Raft.
                self.storage.set_conf_state(self.raw.apply_conf_change(cc))
        else:
            self.storage.set_conf_state(self.raw.apply_conf_change(cc))
        self._at_index.pop(entry.index, None)
        if proposal.member_id == self.member_id:
            waiter = self._waiting.pop(proposal.req_id, None)
            if waiter is not None:
                answers.append((waiter.req_id, result))

    def _apply_one(
        self, backend: KVBackend, req: WriteRequest, events: list[Event], index: int, effects: list[AuthEffect]
    ) -> Response:
        if isinstance(req, Authed):
            # A client's request is checked again against the auth state it is applied in.
            info = AuthInfo(req.user, req.auth_revision)
            auth_check.check_request(self.auth, info, req.request, self._lease_keys)
            return self._apply_one(backend, req.request, events, index, effects)
        if isinstance(req, AUTH_REQUESTS):
            answer, self.auth = auth_apply.apply(
                backend, self.auth, req, store.current_revision(backend), index, effects
            )
            return answer
        if self.corrupt and isinstance(req, CORRUPT_REFUSES):
            # etcd's applierV3Corrupt: a member found diverged stops taking changes.
            raise EtcdError(errors.CORRUPT)
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
        if isinstance(req, MemberUpdateRequest | MemberPublishRequest):
            return self.roster.apply(backend, req)
        assert isinstance(req, AlarmRequest)
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
            self._applied = max(self._applied, rd.committed[-1].index)
        if rd.compact_log_to:
            # A lagging follower is sent the backend as of (at least) this index.
            if rd.compact_log_to > self.storage.snapshot().metadata.index:
                self.storage.create_snapshot(rd.compact_log_to, self.storage.conf_state, b"")
            self.storage.compact(rd.compact_log_to)
            self._log_compacted = rd.compact_log_to
