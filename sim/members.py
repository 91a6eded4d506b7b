"""A cluster variant whose nodes are full etcd Members (Raft + MVCC apply) over the memory
backend: puts go through `Member.submit`, gets through `serve_read`, and the same checkers
as `sim.cluster` watch the Raft logs and the applied entries.

This first variant has a seeded network (delay, loss, duplication, reordering) and a
partition that heals, but no crashes and no disk latency: each driver turn persists and
applies its Ready atomically (as the server's single LMDB batch does).
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass

from rusd.core import codec
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store
from rusd.core.mvcc.types import PutRequest, PutResponse, RangeRequest, RangeResponse
from rusd.core.node import Member, MemberConfig, MemberInfo, Proposal, serve_read
from rusd.core.raft import Entry, Message, StateType
from rusd.storage.memory import MemoryBackend, MemoryLog
from sim.checkers import Checkers
from sim.clock import US_PER_MS
from sim.network import Network, NetworkOptions
from sim.rng import RngTree

TICK, MSG, CLIENT = range(3)


@dataclass
class MembersResult:
    seed: int
    failed: bool
    verdict_lines: list[str]
    acked: int
    refused: int
    trace_hash: str


class MemberCluster:
    def __init__(self, seed: int, members: int = 3, steps: int = 4_000, tick_ms: int = 100) -> None:
        self.seed = seed
        self.steps = steps
        self.tick_us = tick_ms * US_PER_MS
        self.rngs = RngTree(seed)
        self.ids = list(range(1, members + 1))
        swarm = self.rngs.child("swarm")
        self.network = Network(self.rngs.child("network"), NetworkOptions.random(swarm), self.ids)
        self.workload = self.rngs.child("workload")
        self.checkers = Checkers(self.ids)
        self.backends = {i: MemoryBackend() for i in self.ids}
        self.logs = {i: MemoryLog() for i in self.ids}
        voters = tuple(self.ids)
        self.members = {
            i: Member(
                MemberConfig(MemberInfo(i, f"m{i}", (), ()), 9, election_ticks=10),
                self.backends[i], [], 0.0, rng=self.rngs.child(f"raft/{i}"), voters=voters,
            )
            for i in self.ids
        }
        self.now_us = 0
        self._events: list[tuple[int, int, int, int, object]] = []
        self._seq = 0
        self._next_req = 0
        self.pending: set[int] = set()
        self.before_heal: set[int] = set()
        self.refusals: dict[str, int] = {}
        self.acked = 0
        self.refused = 0
        self._hash = hashlib.sha256()
        for i in self.ids:
            self._push(self.workload.randrange(self.tick_us), TICK, i, None)
        self._push(0, CLIENT, 0, None)

    def _push(self, t_us: int, kind: int, member: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t_us, self._seq, kind, member, payload))

    def record(self, line: str) -> None:
        self._hash.update(f"{self.now_us} {line}\n".encode())

    def _turn(self, i: int) -> None:
        """One driver turn of member i: persist + apply in one step, then send and answer."""
        m = self.members[i]
        rd = m.ready()
        if not rd:
            return
        backend = self.backends[i]
        self.logs[i].append_entries(rd.entries)
        applied = m.apply(backend, rd.committed, self.now_us / 1e6)
        if rd.compact_log_to:
            self.logs[i].compact_log(rd.compact_log_to)
        m.advance(rd)
        index_of: dict[int, int] = {}
        for e in rd.committed:
            self.checkers.on_apply(i, Entry(e.index, e.term, e.data))
            if e.data:
                p: Proposal = codec.decode(e.data)
                if p.member_id == i:
                    index_of[p.req_id] = e.index
        for req_id, result in list(rd.responses) + applied.answers:
            self.pending.discard(req_id)
            if isinstance(result, PutResponse):
                self.acked += 1
                self.checkers.on_ack(f"r{req_id}", index_of[req_id])
                self.record(f"ack {req_id} at {i} rev {result.revision}")
            else:
                assert isinstance(result, EtcdError)
                self.refused += 1
                self.refusals[result.message] = self.refusals.get(result.message, 0) + 1
                self.record(f"refused {req_id} at {i}: {result.message}")
        for msg in rd.messages:
            for t in self.network.arrivals(self.now_us, msg.from_, msg.to):
                self._push(t, MSG, msg.to, msg)
        self._observe(i)

    def _observe(self, i: int) -> None:
        node = self.members[i].raw
        if (
            node.state is StateType.LEADER
            and self.checkers.leader_of_term.get(node.term) != i
            and self.checkers.on_leader(i, node.term, node.raft.log.all_entries())
        ):
            self.record(f"leader {i} term {node.term}")
        log = node.raft.log
        done = self.checkers.log_checked[i]
        if log.committed > done:
            lo = max(done + 1, log.first_index())
            self.checkers.on_commit(i, log.committed, lo, log.slice(lo, log.committed + 1))

    def _client(self) -> None:
        """A put to a random member (only a leader takes it) or a get from one."""
        i = self.workload.choice(self.ids)
        key = f"k{self.workload.randrange(8)}".encode()
        if self.workload.random() < 0.7:
            self._next_req += 1
            req_id = self._next_req
            self.pending.add(req_id)
            value = str(req_id).encode()
            self.members[i].submit(req_id, PutRequest(key, value), self.backends[i].size())
            self._turn(i)
        else:
            got = serve_read(self.backends[i], RangeRequest(key), 128)
            assert isinstance(got, RangeResponse)
            self.record(f"get {key!r} at {i}: rev {got.revision}")

    def step(self) -> None:
        t, _, kind, i, payload = heapq.heappop(self._events)
        self.now_us = t
        if kind == TICK:
            m = self.members[i]
            m.tick(t / 1e6, store.current_revision(self.backends[i]))
            self._push(t + self.tick_us, TICK, i, None)
            self._turn(i)
        elif kind == MSG:
            assert isinstance(payload, Message)
            if self.network.connected(payload.from_, i):  # a partition swallows what is in flight
                self.members[i].step(payload)
                self._turn(i)
        else:
            self._client()
            if self._seq < 10**9:
                self._push(t + int(self.workload.expovariate(1.0) * 10 * US_PER_MS) + 1, CLIENT, 0, None)

    def run(self) -> MembersResult:
        half = self.steps // 2
        for n in range(self.steps):
            if n == half // 2:
                lone = self.workload.choice(self.ids)
                self.network.partition([[lone], [i for i in self.ids if i != lone]])
                self.record(f"partition {lone}")
            if n == half:
                self.network.heal()
                self.network.options = self.network.options.healed()
                self.before_heal = set(self.pending)
                self.record("heal")
            self.step()
        # Liveness: with the network healed, every member converges on the same state.
        deadline = self.now_us + 30_000_000
        while self.now_us < deadline and not self._converged():
            self.step()
        self.checkers.on_liveness(self._converged(), "members did not converge within 30 s after healing")
        failed = self.checkers.failed
        return MembersResult(self.seed, failed, self.checkers.lines(), self.acked, self.refused, self._hash.hexdigest())

    def _converged(self) -> bool:
        states = {
            (m.applied_index, tuple(self.backends[i].range(b"", b""))) for i, m in self.members.items()
        }
        leaders = [m for m in self.members.values() if m.is_leader]
        settled = len(leaders) == 1 and leaders[0].applied_index == leaders[0].last_index
        # every write made before the heal has its answer (an ack or "leader changed")
        return len(states) == 1 and settled and not (self.before_heal & self.pending)


def simulate_members(seed: int, members: int = 3, steps: int = 4_000) -> MembersResult:
    return MemberCluster(seed, members, steps).run()
