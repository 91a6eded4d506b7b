"""The core's RawNodes over real PeerTransports: election, replication, leader loss, and
a member that comes back behind the compacted log catching up by snapshot.

A minimal driver (memory storage, ticks every 10 ms) shows the transport carries
everything Raft needs; the production driver is rusd/server/runtime.py's job.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc

from rusd.core.raft import Config, ConfState, EntryKind, Message, MessageType, RawNode, StateType
from rusd.core.raft.memory import MemoryStorage
from rusd.server.peer import PEER_SERVER_OPTIONS, PeerTransport
from tests.peer.harness import url, wait_for
from tests.servers import free_port

VOTERS = (1, 2, 3)


class RaftMember:
    def __init__(self, mid: int, ports: dict[int, int], tmp: Path) -> None:
        self.id = mid
        self.ports = ports
        self.dir = tmp / f"r{mid}"
        self.storage = MemoryStorage(ConfState(voters=VOTERS))
        cfg = Config(id=mid, election_tick=10, heartbeat_tick=1, pre_vote=True, check_quorum=True)
        self.raw = RawNode(cfg, self.storage, random.Random(mid))
        self.applied: list[bytes] = []
        self.installed: list[bytes] = []  # images received with a MsgSnap
        self.transport: PeerTransport | None = None
        self.server: grpc.aio.Server | None = None
        self.driver: asyncio.Task[None] | None = None
        self.sends: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.transport = PeerTransport(
            self.id, 0x5AFE, {i: url(p) for i, p in self.ports.items()},
            self.on_messages, self.on_snapshot, self.raw.report_unreachable, snapshot_dir=self.dir / "snap",
        )
        self.server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
        self.transport.add_servicer(self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.ports[self.id]}")
        await self.server.start()
        self.driver = asyncio.get_running_loop().create_task(self.drive())

    async def stop(self) -> None:
        """As a crash: nothing is flushed, the Raft state stays as it was (it is "durable")."""
        if self.driver is not None:
            self.driver.cancel()
        for t in list(self.sends):
            t.cancel()
        if self.transport is not None:
            await self.transport.close()
        if self.server is not None:
            await self.server.stop(None)

    def on_messages(self, messages: list[Message]) -> None:
        for m in messages:
            self.raw.step(m)

    async def on_snapshot(self, m: Message, path: Path) -> None:
        self.installed.append(path.read_bytes())
        path.unlink()
        self.raw.step(m)

    async def drive(self) -> None:
        while True:
            self.raw.tick()
            self.process()
            await asyncio.sleep(0.01)

    def process(self) -> None:
        assert self.transport is not None
        while self.raw.has_ready():
            rd = self.raw.ready()
            if rd.snapshot is not None:
                self.storage.apply_snapshot(rd.snapshot)
                self.applied = [x for x in rd.snapshot.data.split(b"\n") if x]
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
            self.storage.append(rd.entries)
            out = rd.messages + rd.messages_after_persist
            self.transport.send([m for m in out if m.type is not MessageType.SNAP])
            for m in out:
                if m.type is MessageType.SNAP:
                    task = asyncio.get_running_loop().create_task(self.send_snapshot(m))
                    self.sends.add(task)
                    task.add_done_callback(self.sends.discard)
            for e in rd.committed_entries:
                if e.kind is EntryKind.NORMAL and e.data:
                    self.applied.append(e.data)
            self.raw.advance(rd)

    async def send_snapshot(self, m: Message) -> None:
        assert self.transport is not None and m.snapshot is not None
        image = self.dir / f"image-{m.snapshot.metadata.index}"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"image:" + m.snapshot.data)
        ok = await self.transport.send_snapshot(m, image)
        self.raw.report_snapshot(m.to, failed=not ok)

    def snapshot_and_compact(self) -> None:
        index = self.raw.raft.log.applied
        self.storage.create_snapshot(index, self.raw.conf_state(), b"\n".join(self.applied))
        self.storage.compact(index)


def leader_of(members: list[RaftMember]) -> RaftMember | None:
    leaders = [m for m in members if m.raw.state is StateType.LEADER]
    if len(leaders) == 1 and all(m.raw.lead == leaders[0].id for m in members):
        return leaders[0]
    return None


def test_raft_over_the_transport(tmp_path: Path) -> None:
    async def run() -> None:
        ports = {i: free_port() for i in VOTERS}
        members = [RaftMember(i, ports, tmp_path) for i in VOTERS]
        for m in members:
            await m.start()
        try:
            await wait_for(lambda: leader_of(members) is not None, "a leader")
            lead = leader_of(members)
            assert lead is not None
            lead.raw.propose(b"a")
            await wait_for(lambda: all(m.applied == [b"a"] for m in members), "a applied everywhere")

            # A follower goes down; the others go on and compact their logs past it.
            behind = next(m for m in members if m is not lead)
            await behind.stop()
            up = [m for m in members if m is not behind]
            for i in range(20):
                lead.raw.propose(b"b%d" % i)
            want = [b"a"] + [b"b%d" % i for i in range(20)]
            await wait_for(lambda: all(m.applied == want for m in up), "b applied on the majority")
            for m in up:
                m.snapshot_and_compact()

            # It comes back: the leader can only send it a snapshot.
            await behind.start()
            lead.raw.propose(b"c")
            await wait_for(lambda: behind.applied == [*want, b"c"], "the lagging member caught up")
            assert behind.installed == [b"image:" + b"\n".join(want)]

            # The leader dies: the other two elect a new one and commit without it.
            await lead.stop()
            rest = [m for m in members if m is not lead]
            await wait_for(lambda: leader_of(rest) is not None, "a new leader")
            new = leader_of(rest)
            assert new is not None and new is not lead
            new.raw.propose(b"d")
            await wait_for(lambda: all(m.applied == [*want, b"c", b"d"] for m in rest), "d applied")
        finally:
            for m in members:
                await m.stop()

    asyncio.run(run())
