"""The simulator variant whose nodes are full etcd Members (Raft + MVCC apply + lessor) over
the memory backend, driven exactly as the server drives its Member, under an etcd client
workload and seeded faults: network delay, loss, duplication, reordering, partitions, and
crashes that rebuild a member from its disk alone.

One member's driver turn is atomic, as the server's single LMDB transaction is: install a
received snapshot image, persist the entries, apply the committed ones, then serve the
linearizable reads, send the messages (a MsgSnap carries the backend's image) and answer the
clients. A crash happens between turns and loses the member's memory (pending requests,
Raft's volatile state), never a finished turn.

Checked on every step: election safety, leader completeness, log matching, state machine
safety, applied index monotonic (sim.checkers), and that a request sent while the cluster is
settled gets a real answer, not a timeout (client_liveness). At the end: every acknowledged
write is in every member's history at its revision, every linearizable read saw every write
acknowledged before it was sent, the history is linearizable, watches keep their guarantees,
and after healing the members converge on one state within a bound.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, replace

from rusd.core import codec, errors
from rusd.core.cluster import MemberInfo
from rusd.core.errors import Code, EtcdError
from rusd.core.lease.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
)
from rusd.core.mvcc import store
from rusd.core.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from rusd.core.node import Member, MemberConfig, Proposal, Result, serve_read, unapplied_entries
from rusd.core.raft import Entry, EntryKind, Message, MessageType, StateType
from rusd.core.watch.hub import CreateRequest, WatchHub, WatchResponse
from rusd.storage.memory import MemoryBackend, MemoryLog
from sim import history as h
from sim import member_history as mh
from sim.checkers import Checkers
from sim.clock import US_PER_MS, US_PER_S
from sim.linearizability import check_linearizability
from sim.network import Network, NetworkOptions
from sim.rng import RngTree
from sim.watch_checker import check_watches

TICK, MSG, CLIENT, CRASH, RESTART, WATCH, TURN = range(7)
WATCHERS = 3  # watch clients, each a stream on one member (resumed elsewhere when it dies)
NOT_DRIVEN = ("check durability:", "check raft_invariants:")
CLIENT_CHECKERS = (
    "linearizable_reads",  # a linearizable get sees every write acknowledged before it was sent
    "acknowledged_writes",  # every acknowledged put is in every member's history at its revision
    "lease_expiry",  # no lease expires before the TTL of its last acknowledged grant or renewal
    "linearizability",  # the whole client history against the etcd model (sim.linearizability)
    "watch",  # every watch stream keeps etcd's guarantees against that history (sim.watch_checker)
    "client_liveness",  # a request sent to a settled cluster gets a real answer, not "unavailable"
)
# Checked once the run is over (not run when it stopped at an earlier failure).
FINAL_CHECKERS = ("acknowledged_writes", "linearizability", "watch")
# The history's client ids for the lessor's own revokes and for watched changes.
EXPIRY_CLIENT = 1_000_000
WATCH_CLIENT = 2_000_000
# Search steps the linearizability checker may take (a deterministic deadline).
CHECK_BUDGET = 5_000_000
KEYS = 8


@dataclass
class Op:
    """One client operation in flight."""

    client: int
    kind: str
    request: object
    member: int
    sent_us: int
    # The highest revision acknowledged to any client before this op was sent: a
    # linearizable read must see at least it.
    floor: int = 0
    # Sent while the cluster was settled and no fault has happened since: it must get a
    # real answer (client_liveness).
    judged: bool = False


@dataclass
class MembersResult:
    seed: int
    failed: bool
    verdict_lines: list[str]
    acked: int
    refused: int
    crashes: int
    snapshots: int
    sim_seconds: float
    trace_hash: str


@dataclass
class MembersOptions:
    members: int = 3
    steps: int = 4_000
    tick_ms: int = 100
    clients: int = 6
    crashes: bool = True
    snapshot_count: int = 40
    catch_up_entries: int = 10
    heal_bound_s: float = 30.0
    # Planted bug (test-only): linearizable gets are served from the member's local state
    # at once, without a ReadIndex; the linearizable_reads check must catch it.
    stale_reads: bool = False
    # Planted bug (test-only): a slow watch reader loses one event of a multi-event response.
    watch_skips: bool = False
    # Planted bugs in the Member itself (rusd.core.node.PLANTED_MEMBER_BUGS).
    member_bugs: frozenset[str] = frozenset()
    # How long a member's turn that did work keeps its driver busy (the server's writer
    # commits, and fsyncs, the turn's batch): what arrives meanwhile waits for the next turn.
    turn_us: int = 0


class MemberCluster:
    def __init__(self, seed: int, members: int = 3, steps: int = 4_000, options: MembersOptions | None = None) -> None:
        self.options = options or MembersOptions(members=members, steps=steps)
        self.seed = seed
        self.steps = self.options.steps
        self.tick_us = self.options.tick_ms * US_PER_MS
        self.rngs = RngTree(seed)
        self.ids = list(range(1, self.options.members + 1))
        self.initial_cluster = tuple(MemberInfo(i, f"m{i}", (f"http://m{i}:2380",), ()) for i in self.ids)
        swarm = self.rngs.child("swarm")
        self.network = Network(self.rngs.child("network"), NetworkOptions.random(swarm), self.ids)
        self.workload = self.rngs.child("workload")
        self.faults = self.rngs.child("faults")
        self.raft_rngs = self.rngs.subtree("raft")
        self.checkers = Checkers(self.ids)
        self.backends = {i: MemoryBackend() for i in self.ids}
        self.logs = {i: MemoryLog() for i in self.ids}
        self.boots = dict.fromkeys(self.ids, 0)
        self.now_us = 0
        self.members: dict[int, Member | None] = {}
        self.hubs: dict[int, WatchHub] = {}
        for i in self.ids:
            self.members[i] = self._start(i)
        self._events: list[tuple[int, int, int, int, object]] = []
        self._seq = 0
        self._next_req = 0
        self.ops: dict[int, Op] = {}
        self.before_heal: set[int] = set()
        self.refusals: dict[str, int] = {}
        self.acked = 0
        self.refused = 0
        self.crashes = 0
        self.snapshots = 0
        self.max_acked_revision = 0
        self.acked_puts: list[tuple[bytes, bytes, int]] = []
        self.leases: list[int] = []
        self.healed = False
        # What clients can see, beyond Raft's own invariants (sim.checkers).
        self.client_verdicts: dict[str, str | None] = dict.fromkeys(CLIENT_CHECKERS)
        # Every client call in the shared history format, for the linearizability checker.
        self.history: list[h.Operation] = []
        # Lease id -> the earliest time it may expire (a renewal sent at t lasts t + TTL).
        self.lease_floor: dict[int, int] = {}
        self.expired: set[int] = set()
        self.linearizability = ""
        self.watch_summary = ""
        # Open watch streams: watcher -> (member, stream id, the stream so far); finished ones.
        self.watching: dict[int, tuple[int, int, h.WatchStream]] = {}
        self.watch_streams: list[h.WatchStream] = []
        self.fault_log: list[tuple[int, str]] = []  # (time, what) for reports
        # A member's driver is busy until then; members with a deferred turn queued.
        self.busy_until = dict.fromkeys(self.ids, 0)
        self.turn_due: set[int] = set()
        self.unplaceable: h.Operation | None = None  # the culprit (linearizability, client_liveness)
        # client_liveness: since when the cluster is settled (None: it is not now); once the
        # run winds down, clients send nothing more; what the check covered.
        self.settled_since: int | None = None
        self.winding_down = False
        self.final_checked = False
        first = self.members[self.ids[0]]
        assert first is not None
        self.request_timeout_us = first.config.request_timeout_ticks * self.tick_us  # etcd's ReqTimeout
        self.settled_us = 0
        self.stretches = 0
        self.judged = 0
        self.excused = 0
        self._hash = hashlib.sha256()
        for i in self.ids:
            self._push(self.workload.randrange(self.tick_us), TICK, i, None)
        for c in range(self.options.clients):
            self._push(self.workload.randrange(50 * US_PER_MS), CLIENT, c, None)
        for w in range(WATCHERS):
            self._push(self.workload.randrange(2 * US_PER_S), WATCH, w, None)
        if self.options.crashes:
            self._push(self._fault_delay(), CRASH, 0, None)

    # -- plumbing -------------------------------------------------------------------------

    def _push(self, t_us: int, kind: int, who: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t_us, self._seq, kind, who, payload))

    def record(self, line: str) -> None:
        self._hash.update(f"{self.now_us} {line}\n".encode())

    def _fault_delay(self) -> int:
        return int(self.faults.expovariate(1.0) * 3 * US_PER_S) + 1

    def _start(self, i: int) -> Member:
        """(Re)build member i from its disk alone."""
        self.boots[i] += 1
        cfg = MemberConfig(
            MemberInfo(i, f"m{i}", (), ()), 9, election_ticks=10, heartbeat_ms=self.options.tick_ms,
            snapshot_count=self.options.snapshot_count, catch_up_entries=self.options.catch_up_entries,
            bugs=self.options.member_bugs,
        )
        backend = self.backends[i]
        self.hubs[i] = WatchHub(store.current_revision(backend))
        # A later boot sees a later wall clock (it seeds the proposal ids, as etcd's idutil).
        unix_ms = 1_000_000 * self.boots[i] + self.now_us // 1000
        return Member(
            cfg, backend, unapplied_entries(backend, self.logs[i]), self.now_us / 1e6, unix_ms=unix_ms,
            rng=self.raft_rngs.child(f"{i}/{self.boots[i]}"), initial_cluster=self.initial_cluster,
        )

    def fail(self, name: str, message: str) -> None:
        if self.client_verdicts[name] is None:
            self.client_verdicts[name] = message
            self.record(f"FAIL {name}: {message}")

    @property
    def failed(self) -> bool:
        return self.checkers.failed or any(v is not None for v in self.client_verdicts.values())

    def verdict_lines(self) -> list[str]:
        # Raft's own durability check reads whole logs (these are compacted) and the
        # invariants one counts Raft-only steps: acknowledged_writes stands in for both.
        raft = [line for line in self.checkers.lines() if not line.startswith(NOT_DRIVEN)]
        return raft + [
            f"check {name}: not run" if v is None and name in FINAL_CHECKERS and not self.final_checked else
            f"check {name}: {'ok' if v is None else 'FAIL ' + v}"
            + (f" ({self.linearizability.split('(', 1)[-1]}" if name == "linearizability" and v is None
               and self.linearizability else "")
            + (f" ({self.watch_summary.split('(', 1)[-1]}" if name == "watch" and v is None and self.watch_summary
               else "")
            + (f" ({self.liveness_summary()})" if name == "client_liveness" and v is None else "")
            for name, v in self.client_verdicts.items()
        ]

    # -- one driver turn --------------------------------------------------------------------

    def _turn(self, i: int) -> None:
        if self.busy_until[i] > self.now_us:
            if i not in self.turn_due:
                self.turn_due.add(i)
                self._push(self.busy_until[i], TURN, i, None)
            return
        m = self.members[i]
        assert m is not None
        rd = m.ready()
        if not rd:
            return
        self.busy_until[i] = self.now_us + self.options.turn_us
        backend, log = self.backends[i], self.logs[i]
        now = self.now_us / 1e6
        if rd.snapshot is not None:
            # Its waiting proposals are answered "timed out" (as etcd's): not a liveness failure.
            self._disturb(f"snapshot m{i}", member=i)
            backend.load_image(rd.snapshot.data)
            log.compact_log(log.last_index())
            m.install_snapshot(backend)
            self.checkers.on_restart(i, m.applied_index)
            self.record(f"install {i} snapshot {rd.snapshot.metadata.index} applied {m.applied_index}")
        log.append_entries(rd.entries)
        applied_before = m.applied_index
        for e in rd.committed:
            if e.index > applied_before:
                self.checkers.on_apply(i, e)
                if e.data and e.kind is EntryKind.NORMAL:
                    self._on_expiry(e)
        applied = m.apply(backend, rd.committed, now)
        if rd.snapshot is not None:
            self._end_watches(i)  # the store was replaced: its streams start over elsewhere
            self.hubs[i] = WatchHub(store.current_revision(backend))
        self.hubs[i].on_events(applied.events)
        if rd.compact_log_to:
            log.compact_log(rd.compact_log_to)
        m.advance(rd)
        for req_id in rd.reads:
            op = self.ops.get(req_id)
            if op is not None:
                assert isinstance(op.request, RangeRequest)
                self._answer(req_id, serve_read(backend, op.request, 128))
        for req_id, result in list(rd.responses) + applied.answers:
            self._answer(req_id, result)
        for msg in [*rd.early_messages, *rd.messages]:
            self._send(i, m, msg)
        self._observe(i, m)

    def _send(self, i: int, m: Member, msg: Message) -> None:
        if msg.type is MessageType.SNAP:
            assert msg.snapshot is not None
            delivered = self.network.connected(i, msg.to) and self.members[msg.to] is not None
            m.report_snapshot(msg.to, failed=not delivered)
            if not delivered:
                return
            self.snapshots += 1
            self.record(f"snapshot {i}>{msg.to} at {msg.snapshot.metadata.index}")
            msg = replace(msg, snapshot=replace(msg.snapshot, data=self.backends[i].image()))
        arrivals = self.network.arrivals(self.now_us, msg.from_, msg.to)
        if msg.type is MessageType.PROP:
            # A forwarded proposal travels on a stream (gRPC over TCP, as etcd's rafthttp):
            # it may be lost but never arrives twice, which would apply it twice.
            arrivals = arrivals[:1]
        for t in arrivals:
            self._push(t, MSG, msg.to, msg)

    def _observe(self, i: int, m: Member) -> None:
        node = m.raw
        if (
            node.state is StateType.LEADER
            and self.checkers.leader_of_term.get(node.term) != i
            and self.checkers.on_leader(i, node.term, self._full_log(i, m))
        ):
            self.record(f"leader {i} term {node.term}")
        log = node.raft.log
        done = self.checkers.log_checked[i]
        if log.committed > done:
            lo = max(done + 1, log.first_index())
            self.checkers.on_commit(i, log.committed, lo, log.slice(lo, log.committed + 1))

    def _full_log(self, i: int, m: Member) -> list[Entry]:
        """The leader's log as the completeness check wants it (index 1 on): entries before
        the compacted prefix are taken from what the checkers know committed."""
        log = m.raw.raft.log
        first = log.first_index()
        known = self.checkers.committed
        prefix = [Entry(j, *known[j]) if j in known else Entry(j, 0) for j in range(1, first)]
        return prefix + log.slice(first, log.last_index() + 1)

    # -- clients ----------------------------------------------------------------------------

    def _client(self, c: int) -> None:
        """Client c sends its next operation to a random live member (none once the run
        winds down: convergence is checked on a quiet cluster)."""
        if self.winding_down:
            return
        live = [i for i in self.ids if self.members[i] is not None]
        if not live:
            self._next_op(c, True)
            return
        i = self.workload.choice(live)
        m = self.members[i]
        assert m is not None
        self._next_req += 1
        req_id = self._next_req
        key = f"k{self.workload.randrange(KEYS)}".encode()
        r = self.workload.random()
        backend = self.backends[i]
        op: Op
        if r < 0.35:
            op = Op(c, "put", PutRequest(key, f"v{req_id}".encode()), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        elif r < 0.6:
            ask = RangeRequest(key) if r < 0.52 else RangeRequest(b"k", b"l", limit=self.workload.randrange(1, 5))
            op = Op(c, "get", ask, i, self.now_us, floor=self.max_acked_revision)
            if self.options.stale_reads:
                self._track(req_id, op)
                self._answer(req_id, serve_read(backend, op.request, 128))  # type: ignore[arg-type]
                return
            m.read(req_id)
        elif r < 0.65:
            get = RangeRequest(key, serializable=True)
            got = serve_read(backend, get, 128)
            assert isinstance(got, RangeResponse)
            self.history.append(h.Operation(c, self.now_us, self.now_us, mh.request(get), mh.response(got), None, i))
            self.record(f"c{c} serializable get {key!r} at {i}: rev {got.revision}")
            self._next_op(c, False)
            return
        elif r < 0.72:
            op = Op(c, "delete", DeleteRangeRequest(key), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        elif r < 0.85 and r >= 0.8:
            other = f"k{self.workload.randrange(KEYS)}".encode()
            txn = TxnRequest(
                compare=(Compare(key, CompareTarget.VERSION, CompareResult.GREATER,
                                 operand_target=CompareTarget.VERSION, operand=0),),
                success=(PutRequest(key, f"t{req_id}".encode()), RangeRequest(b"k", b"l"))
                if other == key else (PutRequest(key, f"t{req_id}".encode()), DeleteRangeRequest(other),
                                      RangeRequest(b"k", b"l")),
                failure=(PutRequest(key, f"f{req_id}".encode()),),
            )
            op = Op(c, "txn", txn, i, self.now_us)
            m.submit(req_id, txn, backend.size())
        elif r < 0.85:
            kv = backend.get(key)
            mod = kv.mod_revision if kv is not None else 0
            txn = TxnRequest(
                compare=(Compare(key, CompareTarget.MOD, CompareResult.EQUAL, operand_target=CompareTarget.MOD,
                                 operand=mod),),
                success=(PutRequest(key, f"cas{req_id}".encode()),),
                failure=(RangeRequest(key),),
            )
            op = Op(c, "txn", txn, i, self.now_us)
            m.submit(req_id, txn, backend.size())
        elif r < 0.92 or not self.leases:
            op = Op(c, "grant", LeaseGrantRequest(ttl=self.workload.choice([2, 5, 30])), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        elif r < 0.96:
            lease = self.workload.choice(self.leases)
            op = Op(c, "put-lease", PutRequest(key, f"l{req_id}".encode(), lease=lease), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        elif r < 0.98:
            lease = self.workload.choice(self.leases)
            op = Op(c, "keepalive", LeaseKeepAliveRequest(lease), i, self.now_us)
            # Only the leader renews; a follower forwards the renewal to it, as the server does.
            serving = self._lease_leader(i)
            if serving is None:
                self._track(req_id, op)
                self._answer(req_id, EtcdError(errors.NO_LEADER))  # what a failed forward answers
                return
            leader = self.members[serving]
            assert leader is not None
            leader.local(req_id, op.request, self.now_us / 1e6)  # type: ignore[arg-type]
            self._track(req_id, op)
            self.record(f"c{c} sends {req_id} keepalive {lease:x} to {i}, served by {serving}")
            self._turn(serving)
            return
        elif r < 0.995:
            lease = self.workload.choice(self.leases)
            op = Op(c, "revoke", LeaseRevokeRequest(lease), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        else:
            target = max(1, store.current_revision(backend) - self.workload.randrange(5, 40))
            op = Op(c, "compact", CompactionRequest(target), i, self.now_us)
            m.submit(req_id, op.request, backend.size())  # type: ignore[arg-type]
        self._track(req_id, op)
        self.record(f"c{c} sends {req_id} {op.kind} {key!r} to {i}")
        self._turn(i)

    def _track(self, req_id: int, op: Op) -> None:
        """Op is in flight; sent to a settled cluster, it is judged by client_liveness."""
        op.judged = self.settled_since is not None
        self.judged += op.judged
        self.ops[req_id] = op

    def _lease_leader(self, i: int) -> int | None:
        """Who answers a lease renewal sent to member i: i when it leads, else the leader it
        knows if that member is up, reachable and still leading (None: the server's forward
        would fail with "no leader")."""
        m = self.members[i]
        assert m is not None
        if m.is_leader:
            return i
        lead = m.leader
        leader = self.members.get(lead)
        reachable = self.network.connected(i, lead) and self.network.connected(lead, i)
        return lead if leader is not None and leader.is_leader and reachable else None

    def _next_op(self, client: int, refused: bool) -> None:
        """Each client thinks for a while between operations (mean 60 ms: about 100 ops/s
        from six clients), and backs off after a refusal, as etcd clients retry."""
        pause = self.workload.expovariate(1.0) * (200 if refused else 60) * US_PER_MS
        self._push(self.now_us + 1 + int(pause), CLIENT, client, None)

    def _lost(self, req_id: int) -> None:
        """The connection to the member broke: the client cannot know the outcome."""
        op = self.ops.pop(req_id)
        if op.kind != "keepalive":
            self.history.append(h.Operation(op.client, op.sent_us, None, mh.request(op.request), member=op.member,
                                            indeterminate=True))
        self.record(f"lost {req_id} {op.kind}")
        self._next_op(op.client, True)

    def _answer(self, req_id: int, result: Result) -> None:
        op = self.ops.pop(req_id, None)
        if op is None:
            return
        self._next_op(op.client, isinstance(result, EtcdError))
        self._remember(op, result)
        if op.judged and isinstance(result, EtcdError) and unavailable(result):
            self._liveness_failure(req_id, op, f"answered {result.message!r}")
        if isinstance(result, EtcdError):
            self.refused += 1
            self.refusals[result.message] = self.refusals.get(result.message, 0) + 1
            self.record(f"refused {req_id} {op.kind}: {result.message}")
            return
        self.acked += 1
        revision = 0
        if isinstance(result, PutResponse | DeleteRangeResponse | TxnResponse):
            revision = result.revision
            if isinstance(result, PutResponse) and isinstance(op.request, PutRequest):
                self.acked_puts.append((op.request.key, op.request.value, revision))
        elif isinstance(result, LeaseGrantResponse):
            self.leases.append(result.id)
        elif isinstance(result, RangeResponse) and result.revision < op.floor:
            self.fail(
                "linearizable_reads",
                f"linearizable get {req_id} at member {op.member} saw revision {result.revision}, "
                f"older than revision {op.floor} acknowledged before it was sent",
            )
        self.max_acked_revision = max(self.max_acked_revision, revision)
        self.record(f"ack {req_id} {op.kind} rev {revision}")

    def _remember(self, op: Op, result: Result) -> None:
        """The call in the history; renewals move the lease's earliest expiry."""
        if op.kind == "keepalive":
            if isinstance(result, LeaseKeepAliveResponse) and result.ttl > 0:
                floor = op.sent_us + result.ttl * US_PER_S
                self.lease_floor[result.id] = max(self.lease_floor.get(result.id, 0), floor)
            return
        request = mh.request(op.request)
        if isinstance(result, EtcdError):
            self.history.append(h.Operation.failed(op.client, op.sent_us, self.now_us, request, result.message,
                                                   op.member))
            return
        assert isinstance(result, RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse
                          | LeaseGrantResponse | LeaseRevokeResponse | CompactionResponse)
        self.history.append(h.Operation(op.client, op.sent_us, self.now_us, request, mh.response(result), None,
                                        op.member))
        if isinstance(result, LeaseGrantResponse):
            self.lease_floor[result.id] = max(self.lease_floor.get(result.id, 0), op.sent_us + result.ttl * US_PER_S)

    def _on_expiry(self, entry: Entry) -> None:
        """A lease the leader expired (its revoke proposal has no client): in the history as
        a revoke that may take effect from the earliest moment the lease may expire."""
        p = codec.decode(entry.data)
        if not isinstance(p, Proposal) or p.req_id != 0 or not isinstance(p.request, LeaseRevokeRequest):
            return
        lease = p.request.id
        if lease in self.expired:
            return
        self.expired.add(lease)
        floor = self.lease_floor.get(lease, 0)
        if floor > self.now_us:
            self.fail("lease_expiry", f"lease {lease:x} expired at {self.now_us} us, before {floor} us "
                                      "(a grant or renewal's TTL)")
            return
        self.history.append(h.Operation(EXPIRY_CLIENT, floor, self.now_us, h.LeaseRevoke(lease), indeterminate=True))

    # -- client liveness --------------------------------------------------------------------

    def _calm(self) -> bool:
        """No fault is active: every member is up and the network neither cuts nor loses
        messages (delay, duplication and reordering lose nothing a correct member needs)."""
        return (self.network.options.loss == 0 and not self.network.cut
                and all(m is not None for m in self.members.values()))

    def _agreed(self) -> bool:
        """Every member follows one leader in that leader's term, the leader has committed
        an entry of its term (so it serves ReadIndex), and it has heard from every member
        since its last quorum check (else CheckQuorum may still depose it for the silence
        of a partition that just healed, as etcd-raft does): whatever election the last
        fault caused is over, and no member or message in flight has a higher term."""
        members = [m for m in self.members.values() if m is not None]
        lead = members[0].leader
        leader = self.members.get(lead)
        if leader is None or not leader.is_leader:
            return False
        if any(m.term != leader.term or m.leader != lead for m in members):
            return False
        if not all(pr.recent_active for pr in leader.raw.raft.tracker.progress.values()):
            return False
        log = leader.raw.raft.log
        return log.term(log.committed) == leader.term

    def _settle(self) -> None:
        """After each event of an unsettled run: a calm cluster that agrees on its leader is
        settled from now on, until the next fault."""
        if self._calm() and self._agreed():
            self.settled_since = self.now_us
            self.stretches += 1
            self.record("settled")

    def _disturb(self, what: str, member: int | None = None) -> None:
        """A fault starts or ends (crash, restart, partition, heal), or `member` installs a
        snapshot: requests in flight (all, or that member's) may now fail without a bug, and
        a cluster-wide change ends the settled stretch."""
        for op in self.ops.values():
            if op.judged and (member is None or op.member == member):
                op.judged = False
                self.excused += 1
        if member is None and self.settled_since is not None:
            if not self.winding_down:
                self.settled_us += self.now_us - self.settled_since
            self.settled_since = None
            self.record(f"unsettled by {what}")

    def _wind_down(self) -> None:
        """Clients send nothing more (what they sent is still judged); the settled time ends."""
        self.winding_down = True
        if self.settled_since is not None:
            self.settled_us += self.now_us - self.settled_since

    def _liveness_failure(self, req_id: int, op: Op, outcome: str) -> None:
        since = self.settled_since if self.settled_since is not None else op.sent_us
        self.fail(
            "client_liveness",
            f"{op.kind} {req_id} sent to member {op.member} at {op.sent_us / US_PER_S:.3f} s, "
            f"{(op.sent_us - since) / US_PER_S:.3f} s after the cluster settled (all members up, no partition "
            f"or loss, one leader with an entry of its term committed), {outcome} "
            f"{(self.now_us - op.sent_us) / US_PER_S:.3f} s after it was sent, with no fault in between",
        )
        culprit = [o for o in self.history[-1:] if o.client == op.client and o.call == op.sent_us]
        if culprit and self.unplaceable is None:
            self.unplaceable = culprit[0]

    def _check_unanswered(self) -> None:
        """A judged request still waiting longer than the request timeout (after which a
        member answers "request timed out" itself) was forgotten."""
        for req_id, op in sorted(self.ops.items()):
            if op.judged and self.now_us - op.sent_us > self.request_timeout_us + 2 * self.tick_us:
                self._liveness_failure(req_id, op, "still unanswered")
                return

    def liveness_summary(self) -> str:
        return (f"{self.judged - self.excused} requests to a settled cluster, {self.stretches} settled stretches "
                f"{self.settled_us / US_PER_S:.1f} s, {self.excused} excused by a fault before their answer")

    # -- watchers ---------------------------------------------------------------------------

    def _watch(self, w: int) -> None:
        """Watcher w reads what its stream has for it (a slow reader now and then lets its
        queue grow), or opens a stream on a live member: from a random past revision, or
        resuming after the last revision it saw on a stream that broke."""
        if w in self.watching:
            i, sid, stream = self.watching[w]
            budget = 1 if self.workload.random() < 0.2 else 1_000
            got = list(stream.responses)
            while budget and (r := self.hubs[i].next_response(sid, self.backends[i])) is not None:
                if budget == 1 and self.options.watch_skips and len(r.events) > 1:
                    r = replace(r, events=r.events[1:])
                got.append(_watch_response(r))
                budget -= 1
            self.watching[w] = (i, sid, replace(stream, responses=tuple(got)))
        else:
            live = [i for i in self.ids if self.members[i] is not None]
            if live:
                i = self.workload.choice(live)
                backend = self.backends[i]
                resume = self._resume_revision(w)
                start = resume or self.workload.randrange(1, store.current_revision(backend) + 2)
                prev_kv = self.workload.random() < 0.5
                hub = self.hubs[i]
                sid = hub.open_stream(self.now_us / 1e6)
                hub.create(sid, CreateRequest(b"k", b"l", start_revision=start, prev_kv=prev_kv), backend)
                self.watching[w] = (i, sid, h.WatchStream(w, b"k", b"l", start, prev_kv, member=i))
                self.record(f"watch {w} on {i} from {start}")
        pause = (2_000 if self.workload.random() < 0.1 else 50) * US_PER_MS
        self._push(self.now_us + pause, WATCH, w, None)

    def _resume_revision(self, w: int) -> int:
        """The revision after the last event watcher w saw on an earlier stream (0: none)."""
        seen = [e.revision for s in self.watch_streams if s.client == w for r in s.responses for e in r.events]
        return max(seen) + 1 if seen else 0

    def _end_watches(self, i: int) -> None:
        """Member i went away (crash, or its store was replaced): its streams end."""
        for w, (member, _, stream) in list(self.watching.items()):
            if member == i:
                self.watch_streams.append(stream)
                del self.watching[w]

    # -- faults -----------------------------------------------------------------------------

    def _crash(self) -> None:
        live = [i for i in self.ids if self.members[i] is not None]
        if len(live) == len(self.ids) and not self.healed:
            i = self.faults.choice(self.ids)
            self._disturb(f"crash m{i}")
            self.members[i] = None
            self.busy_until[i] = 0
            self._end_watches(i)
            self.crashes += 1
            self.record(f"crash {i}")
            self.fault_log.append((self.now_us, f"crash m{i}"))
            for req_id in [r for r, op in self.ops.items() if op.member == i]:
                self._lost(req_id)
            downtime = self.faults.randrange(100 * US_PER_MS, 6 * US_PER_S)
            self._push(self.now_us + downtime, RESTART, i, None)
        if not self.healed:
            self._push(self.now_us + self._fault_delay(), CRASH, 0, None)

    def _restart(self, i: int) -> None:
        self._disturb(f"restart m{i}")
        m = self._start(i)
        self.members[i] = m
        self.checkers.on_restart(i, m.applied_index)
        self.record(f"restart {i} applied {m.applied_index} last {m.last_index}")
        self.fault_log.append((self.now_us, f"restart m{i}"))
        self._turn(i)

    # -- the run ----------------------------------------------------------------------------

    def step(self) -> None:
        t, _, kind, who, payload = heapq.heappop(self._events)
        self.now_us = t
        if kind == TICK:
            self._push(t + self.tick_us, TICK, who, None)
            m = self.members[who]
            if m is not None:
                m.tick(t / 1e6, store.current_revision(self.backends[who]))
                self._turn(who)
        elif kind == MSG:
            assert isinstance(payload, Message)
            m = self.members[who]
            if m is not None and self.network.connected(payload.from_, who):
                m.step(payload)
                self._turn(who)
        elif kind == CLIENT:
            self._client(who)
        elif kind == CRASH:
            self._crash()
        elif kind == WATCH:
            self._watch(who)
        elif kind == TURN:
            self.turn_due.discard(who)
            if self.members[who] is not None:
                self._turn(who)
        else:
            self._restart(who)
        if self.settled_since is None:
            self._settle()

    def run(self, progress: Callable[[MemberCluster], None] | None = None) -> MembersResult:
        half = self.steps // 2
        for n in range(self.steps):
            if n == half // 2:
                lone = self.workload.choice(self.ids)
                self._disturb(f"partition m{lone}")
                self.network.partition([[lone], [i for i in self.ids if i != lone]])
                self.record(f"partition {lone}")
                self.fault_log.append((self.now_us, f"partition m{lone}"))
            if n == half:
                self._disturb("heal")
                self.network.heal()
                self.network.options = self.network.options.healed()
                self.healed = True
                self.record("heal")
                self.fault_log.append((self.now_us, "heal"))
            self.step()
            if self.failed:
                break
        self.healed = True
        if self.network.cut or self.network.options != self.network.options.healed():
            self._disturb("heal")
        self.network.heal()
        self.network.options = self.network.options.healed()
        self.before_heal = set(self.ops)
        # Liveness: with faults over, clients stop sending, every member comes up, every
        # request is answered and the members converge on one state.
        self._wind_down()
        deadline = self.now_us + int(self.options.heal_bound_s * US_PER_S)
        while self.now_us < deadline and not self._converged() and not self.failed:
            self.step()
        if not self.failed:
            self._check_unanswered()
        if not self.failed:
            self.checkers.on_liveness(self._converged(), self._why_not_converged())
            self.final_checked = True
            self._check_acknowledged_writes()
            self._check_history()
        return MembersResult(
            self.seed, self.failed, self.verdict_lines(), self.acked, self.refused, self.crashes,
            self.snapshots, self.now_us / US_PER_S, self._hash.hexdigest(),
        )

    def state_of(self, i: int) -> tuple[int, tuple[object, ...]]:
        backend = self.backends[i]
        return store.current_revision(backend), tuple(backend.range(b"", b""))

    def _converged(self) -> bool:
        if any(m is None for m in self.members.values()):
            return False
        members = [m for m in self.members.values() if m is not None]
        leaders = [m for m in members if m.is_leader]
        if len(leaders) != 1 or leaders[0].applied_index != leaders[0].last_index:
            return False
        if any(m.applied_index != leaders[0].applied_index for m in members):
            return False
        return len({self.state_of(i) for i in self.ids}) == 1 and not (self.before_heal & set(self.ops))

    def _why_not_converged(self) -> str:
        states = {i: (m.applied_index, m.is_leader) if m else None for i, m in self.members.items()}
        return f"members did not converge within {self.options.heal_bound_s:.0f} s after healing: {states}"

    def _check_history(self) -> None:
        """The whole client history, unanswered calls as indeterminate, against etcd's model."""
        unanswered = [
            h.Operation(op.client, op.sent_us, None, mh.request(op.request), member=op.member, indeterminate=True)
            for op in self.ops.values() if op.kind != "keepalive"
        ]
        steps = 0

        def out_of_budget() -> bool:
            nonlocal steps
            steps += 1
            return steps > CHECK_BUDGET

        # Close the streams first: what they saw is part of the history. Each watched
        # change is the key's state at its revision, i.e. a serializable read there, which
        # pins indeterminate writes to where they really applied.
        for w in list(self.watching):
            i, sid, stream = self.watching.pop(w)
            got = list(stream.responses)
            while (r := self.hubs[i].next_response(sid, self.backends[i])) is not None:
                got.append(_watch_response(r))
            self.watch_streams.append(replace(stream, responses=tuple(got)))
        observed = _watched_states(self.watch_streams)
        made = [op for op in self.history if not never_proposed(op)]
        unchanged = _watched_unchanged(self.watch_streams)
        result = check_linearizability([*made, *unanswered, *observed, *unchanged], out_of_budget)
        if result.ok:
            self.linearizability = result.summary().splitlines()[0]
        else:
            # The unchanged-key reads assume reliable watches: without them, a stream that
            # lost an event is blamed by the watch check (which names the event), and a
            # history that is not linearizable even so by this one.
            steps = 0
            plain = check_linearizability(checked := [*made, *unanswered, *observed], out_of_budget)
            self.linearizability = plain.summary().splitlines()[0]
            if not plain.ok:
                if plain.failed is not None:
                    self.unplaceable = checked[plain.failed]
                self.fail("linearizability", plain.message.replace("\n", " | "))
                return
        log = result.log if result.ok else plain.log
        assert log is not None
        report = check_watches(self.watch_streams, log)
        self.watch_summary = report.summary()
        if not report.ok:
            self.fail("watch", "; ".join(v.message for v in report.violations[:3]))
        elif not result.ok:
            self.fail("watch", "what the streams show unchanged between their events cannot be linearized: "
                      + result.message.replace("\n", " | "))

    def _check_acknowledged_writes(self) -> None:
        """Every acknowledged put is in every member's history at its revision (unless a
        compaction removed that revision)."""
        for i in self.ids:
            backend = self.backends[i]
            compacted = store.compact_revision(backend)
            for key, value, revision in self.acked_puts:
                if revision < compacted:
                    continue  # compacted away (a later revision of the key stays)
                found = [kv.value for _, kv in backend.history(key, None) if kv.mod_revision == revision]
                if found != [value]:
                    self.fail(
                        "acknowledged_writes",
                        f"acknowledged put {key!r}={value!r} at revision {revision} is {found} on member {i}",
                    )
                    return


def never_proposed(op: h.Operation) -> bool:
    """A Member answers "no leader" only for a request it never handed to Raft (a proposal
    batch or ReadIndex Raft dropped for want of a leader; a lease renewal nobody could
    forward): it certainly changed nothing. The shared history calls it indeterminate (it
    cannot know the server), which let the search explain another change (a lease's revoke)
    with such a never-made write and then blame the watches that did not show it."""
    return op.error == errors.NO_LEADER.message


def unavailable(error: EtcdError) -> bool:
    """Not an answer to the request: the member could not serve it now (no leader, leader
    changed, request timed out: gRPC UNAVAILABLE) or only pointed at the leader."""
    return error.code is Code.UNAVAILABLE or error.kind is errors.NOT_LEADER


def _watch_response(r: WatchResponse) -> h.WatchResponse:
    return h.WatchResponse(
        r.revision,
        tuple(
            h.WatchEvent("DELETE" if e.is_delete else "PUT", mh.kv(e.kv),
                         mh.kv(e.prev_kv) if e.prev_kv is not None else None)
            for e in r.events
        ),
        r.created, r.canceled, r.compact_revision,
    )


def _watched_states(streams: list[h.WatchStream]) -> list[h.Operation]:
    """Every event a watch delivered, as a serializable read of its key at its revision."""
    return [_read_at(WATCH_CLIENT + s.client, s.member, e.kv.key, None if e.type == "DELETE" else e.kv, e.revision)
            for s in streams for r in s.responses for e in r.events]


def _watched_unchanged(streams: list[h.WatchStream]) -> list[h.Operation]:
    """What a stream shows between its events, as serializable reads: it delivers every
    change of its range in order, so a key stays as one of its events left it until just
    before its next event in the stream (or until the stream's last event), and an event's
    prev_kv is its key just before it. Without these, the search may explain a change with an
    indeterminate write that never applied (a timed-out txn "put k6, delete k4" placed at the
    revision where k4's lease was revoked), and the watch check then finds the put missing."""
    ops: list[h.Operation] = []
    for s in streams:
        client = WATCH_CLIENT + s.client
        events = [e for r in s.responses for e in r.events]
        last: dict[bytes, h.WatchEvent] = {}
        for e in events:
            key = e.kv.key
            before = last.get(key)
            if before is not None and e.revision - 1 > before.revision:
                ops.append(_read_at(client, s.member, key, None if before.type == "DELETE" else before.kv,
                                    e.revision - 1))
            elif before is None and e.prev_kv is not None:
                ops.append(_read_at(client, s.member, key, e.prev_kv, e.revision - 1))
            last[key] = e
        end = events[-1].revision if events else 0
        for key, e in sorted(last.items()):
            if end > e.revision:
                ops.append(_read_at(client, s.member, key, None if e.type == "DELETE" else e.kv, end))
    return ops


def _read_at(client: int, member: int | None, key: bytes, kv: h.KV | None, revision: int) -> h.Operation:
    """A serializable get of `key` that answered `kv` (None: absent) at `revision`."""
    kvs = () if kv is None else (kv,)
    answer = h.Response(revision, h.RangeResult(kvs, len(kvs)))
    return h.Operation(client, 0, 0, h.Range(key, serializable=True), answer, None, member)


# The members engine's profiles. "load": four times the clients (about 400 requests a second),
# and each turn keeps a member's driver busy for 2 ms (the server's batch commit), so requests
# queue and members take them in batches, as a loaded server does.
MEMBERS_PROFILES: dict[str, dict[str, int]] = {"default": {}, "load": {"clients": 24, "turn_us": 2_000}}


def members_options(profile: str, members: int = 3, steps: int = 4_000) -> MembersOptions:
    if profile not in MEMBERS_PROFILES:
        raise ValueError(f"unknown members profile {profile!r} (known: {', '.join(sorted(MEMBERS_PROFILES))})")
    return replace(MembersOptions(members=members, steps=steps), **MEMBERS_PROFILES[profile])  # type: ignore[arg-type]


def simulate_members(seed: int, members: int = 3, steps: int = 4_000) -> MembersResult:
    return MemberCluster(seed, members, steps).run()
