"""N simulated members, each a Raft RawNode driven by the Ready contract, under a seeded
client workload and a seeded fault schedule, checked on every step.

One member's driver turn (as the server's single writer thread does it)::

    rd = node.ready()
    send rd.messages                       # at once
    write rd.entries, rd.hard_state        # pending on the member's disk
    fsync (takes simulated time when rd.must_sync; the member is busy meanwhile,
           its inputs queue up, as requests do while the writer thread fsyncs)
    send rd.messages_after_persist
    apply rd.committed_entries             # to the register; apply records go to the disk
    node.advance(rd)

Everything random comes from the seed's rng tree; the event queue breaks time ties with a
sequence number; nothing iterates a hash-ordered container. A run is a pure function of
(seed, options), and its trace hash says so.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rusd.core.raft import (
    Config,
    Entry,
    Message,
    ProposalDroppedError,
    RaftError,
    RawNode,
    Ready,
    StateType,
)
from rusd.core.raft.memory import MemoryStorage
from sim.checkers import Checkers
from sim.clock import US_PER_MS, US_PER_S, MemberClock, SimClock, member_clock
from sim.disk import Disk
from sim.network import Network, NetworkOptions
from sim.register import Register, encode
from sim.rng import RngTree

# event kinds
TICK, MSG, FSYNC, CLIENT, CLIENT_CHECK, FAULT, RESTART = range(7)


@dataclass(frozen=True)
class SimOptions:
    members: int = 3
    steps: int = 20_000  # events processed while faults are on
    tick_ms: int = 100
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_skew_ppm: int = 20_000  # member tick rates differ by up to +-2%
    pre_vote: bool | None = None  # None: drawn from the seed (swarm testing)
    check_quorum: bool | None = None
    network: NetworkOptions | None = None  # None: drawn from the seed
    ops_per_s: float = 100.0
    keys: int = 8
    client_timeout_ms: int = 1_000
    max_pending: int = 200
    fault_mean_ms: int = 1_500  # mean time between fault actions
    downtime_ms: tuple[int, int] = (100, 4_000)
    fsync_us: tuple[int, int] = (200, 8_000)
    heal_bound_s: float = 30.0  # liveness: everything settles within this after healing
    heal_max_steps: int = 100_000  # ... and within this many events (a message storm is a liveness failure)
    max_entries_per_msg: int = 64  # small values split catch-up into many appends (and acks)
    max_inflight_msgs: int = 256  # with a small window, catching a follower up takes many round trips
    election_crash: float = 0.0  # probability a member crashes right after persisting a new term/vote
    lying_fsync: bool = False  # planted bug: disks acknowledge fsync without persisting
    early_ack: bool = False  # planted bug: the driver sends messages_after_persist before the fsync
    raft_bugs: frozenset[str] = frozenset()  # planted bugs inside the Raft core (Config.bugs)


@dataclass
class Request:
    rid: str
    data: bytes
    member: int
    deadline_us: int
    attempts: int = 1


@dataclass
class Member:
    id: int
    clock: MemberClock
    disk: Disk
    node: RawNode
    storage: MemoryStorage
    register: Register
    alive: bool = True
    incarnation: int = 0
    last_vote: tuple[int, int] = (0, 0)  # (term, vote) last seen durable, for election crashes
    outstanding: Ready | None = None
    inbox: deque[tuple[int, object]] = field(default_factory=deque)


@dataclass
class Counters:
    steps: int = 0
    operations: int = 0
    acked: int = 0
    retries: int = 0
    dropped_proposals: int = 0
    elections: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    heals: int = 0
    messages_delivered: int = 0


@dataclass
class SimResult:
    seed: int
    verdict_lines: list[str]
    failed: bool
    counters: Counters
    sim_seconds: float
    trace: list[str]
    trace_hash: str
    settings: str


class Cluster:
    def __init__(self, seed: int, options: SimOptions | None = None) -> None:
        self.seed = seed
        self.options = o = options or SimOptions()
        self.rngs = RngTree(seed)
        swarm = self.rngs.child("swarm")
        self.pre_vote = swarm.random() < 0.5 if o.pre_vote is None else o.pre_vote
        self.check_quorum = swarm.random() < 0.5 if o.check_quorum is None else o.check_quorum
        net_opts = o.network or NetworkOptions.random(swarm)
        self.ids = list(range(1, o.members + 1))
        self.voters = tuple(self.ids)
        self.clock = SimClock()
        self.network = Network(self.rngs.child("network"), net_opts, self.ids)
        self.workload_rng = self.rngs.child("workload")
        self.fault_rng = self.rngs.child("faults")
        self.fsync_rng = self.rngs.child("fsync")
        self.checkers = Checkers(self.ids)
        self.counters = Counters()
        self.trace: list[str] = []
        self._hash = hashlib.sha256()
        self._events: list[tuple[int, int, int, int, object]] = []
        self._seq = 0
        self.pending: dict[str, Request] = {}
        self._next_rid = 0
        self.faulty = True
        self.members: dict[int, Member] = {}
        for i in self.ids:
            clk = member_clock(self.rngs.child(f"clock/{i}"), i, o.tick_ms, o.max_skew_ppm)
            disk = Disk(self.rngs.child(f"disk/{i}"), lying_fsync=o.lying_fsync)
            storage, register = disk.load(self.voters)
            node = self._new_node(i, 0, storage, register)
            self.members[i] = Member(i, clk, disk, node, storage, register)
            self._push(clk.first_tick_at(), TICK, i, 0)
        self.settings = (
            f"members={o.members} pre_vote={self.pre_vote} check_quorum={self.check_quorum} "
            f"loss={net_opts.loss} dup={net_opts.duplicate} fifo={net_opts.fifo} "
            f"delay={net_opts.delay_min_us}+{net_opts.delay_mean_us}us "
            f"tick={o.tick_ms}ms election={o.election_tick} faults_every={o.fault_mean_ms}ms "
            f"downtime={o.downtime_ms[0]}-{o.downtime_ms[1]}ms election_crash={o.election_crash} "
            f"max_msg={o.max_entries_per_msg} inflight={o.max_inflight_msgs} "
            f"lying_fsync={o.lying_fsync} early_ack={o.early_ack}"
            + (f" raft_bugs={','.join(sorted(o.raft_bugs))}" if o.raft_bugs else "")
        )
        self.record(f"settings {self.settings}")
        self._push(0, CLIENT, 0, None)
        self._push(0, CLIENT_CHECK, 0, None)
        self._push(self._fault_gap(), FAULT, 0, None)

    # -- plumbing -------------------------------------------------------------------------------

    def _new_node(self, i: int, incarnation: int, storage: MemoryStorage, register: Register) -> RawNode:
        o = self.options
        cfg = Config(
            id=i,
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            applied=register.applied,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_entries_per_msg=o.max_entries_per_msg,
            max_inflight_msgs=o.max_inflight_msgs,
            bugs=o.raft_bugs,
        )
        return RawNode(cfg, storage, self.rngs.child(f"raft/{i}/{incarnation}"))

    def record(self, event: str) -> None:
        line = f"{self.clock.now_us} {event}"
        self.trace.append(line)
        self._hash.update(line.encode())
        self._hash.update(b"\n")

    def _push(self, t_us: int, kind: int, member: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t_us, self._seq, kind, member, payload))

    def _fault_gap(self) -> int:
        return self.clock.now_us + int(self.fault_rng.expovariate(1.0) * self.options.fault_mean_ms * US_PER_MS) + 1

    def _send(self, m: Message) -> None:
        for t in self.network.arrivals(self.clock.now_us, m.from_, m.to):
            self._push(t, MSG, m.to, m)

    # -- one member's driver ----------------------------------------------------------------------

    def _input(self, m: Member, kind: int, payload: object) -> None:
        if m.outstanding is not None:
            m.inbox.append((kind, payload))  # busy in fsync: inputs queue up
            return
        self._feed(m, kind, payload)
        self._pump(m)

    def _feed(self, m: Member, kind: int, payload: object) -> None:
        if kind == TICK:
            m.node.tick()
        elif kind == MSG:
            assert isinstance(payload, Message)
            m.node.step(payload)
        else:
            assert isinstance(payload, Request)
            try:
                m.node.propose(payload.data)
            except ProposalDroppedError:
                self.counters.dropped_proposals += 1
                self.record(f"drop {payload.rid} at {m.id}")

    def _pump(self, m: Member) -> None:
        while m.alive and m.outstanding is None:
            while m.inbox:
                kind, payload = m.inbox.popleft()
                self._feed(m, kind, payload)
            if not m.node.has_ready():
                break
            rd = m.node.ready()
            if rd.soft_state is not None and rd.soft_state.state is StateType.LEADER and self._leader_crash(m, rd):
                break
            m.outstanding = rd
            for msg in rd.messages:
                self._send(msg)
            m.disk.write_entries(rd.entries)
            if rd.hard_state is not None:
                m.disk.write_hard_state(rd.hard_state)
            if self.options.early_ack:
                for msg in rd.messages_after_persist:
                    self._send(msg)
                rd.messages_after_persist = []
            if rd.must_sync:
                lo, hi = self.options.fsync_us
                self._push(self.clock.now_us + self.fsync_rng.randint(lo, hi), FSYNC, m.id, m.incarnation)
                break
            self._finish(m)
        self._observe(m)

    def _finish(self, m: Member) -> None:
        """The Ready's writes are durable (as far as the disk says): the rest of the turn."""
        rd = m.outstanding
        assert rd is not None
        if rd.entries:
            m.storage.append(rd.entries)
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        for msg in rd.messages_after_persist:
            self._send(msg)
        for e in rd.committed_entries:
            self._apply(m, e)
        m.outstanding = None
        m.node.advance(rd)

    def _apply(self, m: Member, e: Entry) -> None:
        self.checkers.on_apply(m.id, e)
        rid = m.register.apply(e.index, e.data)
        m.disk.write_apply(e.index, e.data)
        if rid is None:
            return
        req = self.pending.get(rid)
        if req is not None and req.member == m.id:
            index = m.register.seen[rid]
            del self.pending[rid]
            self.counters.acked += 1
            self.checkers.on_ack(rid, index)
            self.record(f"ack {rid} at {m.id} index {index}")

    def _observe(self, m: Member) -> None:
        """Per-step safety checks for the member that just moved."""
        node = m.node
        if (
            node.state is StateType.LEADER
            and self.checkers.leader_of_term.get(node.term) != m.id
            and self.checkers.on_leader(m.id, node.term, node.raft.log.all_entries())
        ):
            self.counters.elections += 1
            self.record(f"leader {m.id} term {node.term}")
        log = node.raft.log
        done = self.checkers.log_checked[m.id]
        if log.committed > done:
            lo = max(done + 1, log.first_index())
            self.checkers.on_commit(m.id, log.committed, lo, log.slice(lo, log.committed + 1))

    # -- faults ---------------------------------------------------------------------------------

    def _vote_crash(self, m: Member) -> bool:
        """Crash point: right after a member persisted (and sent) its vote for another member."""
        vote = (m.node.term, m.node.raft.vote)
        if vote[1] in (0, m.id) or vote == m.last_vote:
            return False
        m.last_vote = vote
        return self._crash_point(m, f"after voting {vote[1]} in term {vote[0]}")

    def _leader_crash(self, m: Member, rd: Ready) -> bool:
        """Crash point: a new leader's first turn made its writes durable, but the process died
        before its messages left (etcd persists and sends in parallel): its new-term entry
        exists on its disk only."""
        if not self._crash_chance():
            return False
        m.disk.write_entries(rd.entries)
        if rd.hard_state is not None:
            m.disk.write_hard_state(rd.hard_state)
        m.disk.fsync()
        self.record(f"election crash {m.id} as new leader of term {m.node.term}")
        self._crash_for_a_while(m.id)
        return True

    def _crash_chance(self) -> bool:
        p = self.options.election_crash
        return bool(p) and self.faulty and self.fault_rng.random() < p

    def _crash_point(self, m: Member, where: str) -> bool:
        """Crash points around elections (probability `election_crash`): the member crashes
        at once and restarts after a drawn downtime."""
        if not self._crash_chance():
            return False
        self.record(f"election crash {m.id} {where}")
        self._crash_for_a_while(m.id)
        return True

    def _crash_for_a_while(self, i: int) -> None:
        self.crash(i)
        lo, hi = self.options.downtime_ms
        self._push(self.clock.now_us + self.fault_rng.randint(lo, hi) * US_PER_MS, RESTART, i, None)

    def _leader(self) -> int | None:
        for i in self.ids:
            m = self.members[i]
            if m.alive and m.node.state is StateType.LEADER:
                return i
        return None

    def crash(self, i: int) -> None:
        m = self.members[i]
        m.alive = False
        m.incarnation += 1
        m.outstanding = None
        m.inbox.clear()
        kept, lost = m.disk.crash()
        self.counters.crashes += 1
        self.record(f"crash {i} kept {kept} lost {lost} pending records")
        durable = {
            j: [(e.term, e.data) for e in self.members[j].disk.durable.entries] for j in self.ids
        }
        self.checkers.on_crash(i, durable)

    def restart(self, i: int) -> None:
        m = self.members[i]
        if m.alive:
            return
        m.storage, m.register = m.disk.load(self.voters)
        m.node = self._new_node(i, m.incarnation, m.storage, m.register)
        m.alive = True
        self.counters.restarts += 1
        self.checkers.on_restart(i, m.register.applied)
        hs = m.storage.hard_state
        self.record(
            f"restart {i} log {m.storage.last_index()} term {hs.term} vote {hs.vote} "
            f"commit {hs.commit} applied {m.register.applied}"
        )
        self._push(self.clock.now_us + m.clock.tick_us, TICK, i, m.incarnation)
        self._pump(m)

    def _fault(self) -> None:
        rng = self.fault_rng
        alive = [i for i in self.ids if self.members[i].alive]
        action = rng.choices(
            ["crash", "crash_leader", "partition", "isolate", "isolate_leader", "one_way", "heal"],
            weights=[2, 2, 2, 1, 2, 1, 3],
        )[0]
        leader = self._leader()
        if action == "crash_leader" and leader is not None:
            self._crash_for_a_while(leader)
        elif action == "crash" and alive:
            self._crash_for_a_while(rng.choice(alive))
        elif action == "isolate_leader" and leader is not None:
            self.network.partition([[leader], [j for j in self.ids if j != leader]])
            self.counters.partitions += 1
            self.record(f"isolate leader {leader} cut {self.network.describe_cut()}")
        elif action == "partition":
            shuffled = self.ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(shuffled) - 1)
            self.network.heal()
            self.network.partition([shuffled[:cut], shuffled[cut:]])
            self.counters.partitions += 1
            self.record(f"partition {sorted(shuffled[:cut])} | {sorted(shuffled[cut:])}")
        elif action == "isolate":
            i = rng.choice(self.ids)
            self.network.partition([[i], [j for j in self.ids if j != i]])
            self.counters.partitions += 1
            self.record(f"isolate {i} cut {self.network.describe_cut()}")
        elif action == "one_way":
            a, b = rng.sample(self.ids, 2)
            self.network.cut_one_way(a, b)
            self.counters.partitions += 1
            self.record(f"one-way {a}>{b} cut {self.network.describe_cut()}")
        else:
            self.network.heal()
            self.counters.heals += 1
            self.record("heal")

    # -- client workload ------------------------------------------------------------------------

    def _client(self) -> None:
        rng = self.workload_rng
        o = self.options
        self._push(self.clock.now_us + int(rng.expovariate(o.ops_per_s) * US_PER_S) + 1, CLIENT, 0, None)
        if not self.faulty or len(self.pending) >= o.max_pending:
            return
        self._next_rid += 1
        rid = f"r{self._next_rid}"
        key = f"k{rng.randrange(o.keys)}"
        req = Request(rid, encode(rid, key, rid), rng.choice(self.ids), self._deadline())
        self.pending[rid] = req
        self.counters.operations += 1
        self.record(f"put {rid} {key} at {req.member}")
        self._submit(req)

    def _deadline(self) -> int:
        return self.clock.now_us + self.options.client_timeout_ms * US_PER_MS

    def _submit(self, req: Request) -> None:
        m = self.members[req.member]
        if m.alive:
            self._input(m, CLIENT, req)

    def _client_check(self) -> None:
        self._push(self.clock.now_us + 100 * US_PER_MS, CLIENT_CHECK, 0, None)
        now = self.clock.now_us
        for req in list(self.pending.values()):
            if req.deadline_us <= now:
                req.member = self.workload_rng.choice(self.ids)
                req.deadline_us = self._deadline()
                req.attempts += 1
                self.counters.retries += 1
                self.record(f"retry {req.rid} at {req.member}")
                self._submit(req)

    # -- the loop -------------------------------------------------------------------------------

    def step(self) -> None:
        t, _, kind, i, payload = heapq.heappop(self._events)
        self.clock.advance_to(t)
        self.counters.steps += 1
        if kind == TICK:
            m = self.members[i]
            if m.alive and m.incarnation == payload:
                self._push(t + m.clock.tick_us, TICK, i, payload)
                self._input(m, TICK, None)
        elif kind == MSG:
            assert isinstance(payload, Message)
            m = self.members[i]
            if not m.alive or not self.network.connected(payload.from_, i):
                self.record(f"lost {_msg(payload)}")
                return
            self.counters.messages_delivered += 1
            self.record(f"deliver {_msg(payload)}")
            self._input(m, MSG, payload)
        elif kind == FSYNC:
            m = self.members[i]
            if m.alive and m.incarnation == payload and m.outstanding is not None:
                m.disk.fsync()
                self._finish(m)
                if self._vote_crash(m):
                    return
                self._pump(m)
        elif kind == CLIENT:
            self._client()
        elif kind == CLIENT_CHECK:
            self._client_check()
        elif kind == FAULT:
            if self.faulty:
                self._fault()
                self._push(self._fault_gap(), FAULT, 0, None)
        elif kind == RESTART and self.faulty:
            self.restart(i)

    def _safe_step(self) -> None:
        try:
            self.step()
        except RaftError as e:
            self.checkers.fail("raft_invariants", f"{type(e).__name__}: {e}")
            self.record(f"raft error {e}")

    def heal(self) -> None:
        """The faults stop: the network heals (no loss, no duplicates), crashed members restart."""
        self.faulty = False
        self.network.heal()
        self.network.options = self.network.options.healed()
        self.record("faults stop")
        for i in self.ids:
            self.restart(i)

    def settled(self) -> str | None:
        """None when the cluster is settled, else what it still waits for."""
        leaders = [i for i in self.ids if self.members[i].node.state is StateType.LEADER]
        if len(leaders) != 1:
            return f"leaders {leaders}"
        lead = leaders[0]
        if any(self.members[i].node.lead != lead for i in self.ids):
            return f"not all members follow {lead}"
        if self.pending:
            return f"{len(self.pending)} requests pending"
        commit = self.members[lead].node.raft.log.committed
        if any(self.members[i].register.applied != commit for i in self.ids):
            return f"not all members applied {commit}"
        return None

    def run(self, progress: Callable[[Cluster], None] | None = None, progress_every: int = 5_000) -> SimResult:
        o = self.options
        while self.counters.steps < o.steps and not self.checkers.failed:
            self._safe_step()
            if progress is not None and self.counters.steps % progress_every == 0:
                progress(self)
        if not self.checkers.failed:
            self.heal()
            start = self.clock.now_us
            bound = start + int(o.heal_bound_s * US_PER_S)
            waiting: str | None = "not checked yet"
            last_step = self.counters.steps + o.heal_max_steps
            while not self.checkers.failed and self.clock.now_us <= bound and self.counters.steps < last_step:
                self._safe_step()
                if self.counters.steps % 50 == 0:
                    waiting = self.settled()
                    if waiting is None:
                        break
            if not self.checkers.failed:
                if waiting is None:
                    secs = (self.clock.now_us - start) / US_PER_S
                    self.record(f"settled after {secs:.3f}s")
                    self.checkers.on_liveness(True, "", f"settled {secs:.1f}s after healing")
                    self.checkers.final_registers({i: self.members[i].register.seen for i in self.ids})
                else:
                    self.checkers.on_liveness(
                        False,
                        f"not settled {o.heal_bound_s}s or {o.heal_max_steps} events after healing: {waiting}",
                    )
        self.checkers.steps_checked = self.counters.steps
        for line in self.checkers.lines():
            self.record(line)
        return SimResult(
            seed=self.seed,
            verdict_lines=self.checkers.lines(),
            failed=self.checkers.failed,
            counters=self.counters,
            sim_seconds=self.clock.seconds,
            trace=self.trace,
            trace_hash=self._hash.hexdigest(),
            settings=self.settings,
        )


def _msg(m: Message) -> str:
    return (
        f"{m.from_}>{m.to} {m.type.value} t{m.term} i{m.index} lt{m.log_term} c{m.commit} "
        f"n{len(m.entries)}{' rej' if m.reject else ''}"
    )


def simulate(seed: int, options: SimOptions | None = None) -> SimResult:
    """Run one seed to its verdict."""
    return Cluster(seed, options).run()

