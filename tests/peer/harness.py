"""Peer transports on loopback for tests: each with its own peer server, recording what
it receives, and a way to wait on a condition without timing anything."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from rusd.core.raft.types import Entry, Message, MessageType
from rusd.server.peer import PEER_SERVER_OPTIONS, PeerTransport
from tests.servers import free_port

DEADLINE = 20.0  # generous: only a broken transport comes near it


async def wait_for(cond: Callable[[], bool], what: str, tick: Callable[[], None] | None = None) -> None:
    """Wait until cond() holds, calling tick() (e.g. a resend) between polls."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"gave up waiting: {what}")
        if tick is not None:
            tick()
        await asyncio.sleep(0.01)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def app(to: int, frm: int, index: int, payload: bytes = b"x" * 100, n: int = 1) -> Message:
    """A MsgApp carrying n entries (what a leader sends most)."""
    entries = tuple(Entry(index=index + i, term=3, data=payload) for i in range(n))
    return Message(MessageType.APP, to=to, from_=frm, term=3, log_term=3, index=index, entries=entries, commit=index)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Node:
    """One member's transport and peer server, recording every callback."""

    def __init__(self, member_id: int, port: int, peers: dict[int, str], tmp: Path, cluster_id: int = 0xC1,
                 server_credentials: grpc.ServerCredentials | None = None, **kwargs: Any) -> None:
        self.id = member_id
        self.server_credentials = server_credentials  # serve https peer URLs with these
        self.port = port
        self.peers = peers
        self.cluster_id = cluster_id
        self.kwargs = kwargs
        self.dir = tmp / f"m{member_id:x}"
        self.received: list[Message] = []
        self.unreachable: list[int] = []
        self.snapshots: list[tuple[Message, Path]] = []
        self.fail_install = False
        self.transport: PeerTransport | None = None
        self.server: grpc.aio.Server | None = None

    async def on_snapshot(self, message: Message, path: Path) -> None:
        if self.fail_install:
            raise RuntimeError("install failed (test)")
        kept = self.dir / f"installed-{len(self.snapshots)}"
        shutil.move(path, kept)
        self.snapshots.append((message, kept))

    async def start(self, serve: bool = True) -> Node:
        self.transport = PeerTransport(
            self.id,
            self.cluster_id,
            self.peers,
            on_messages=self.received.extend,
            on_snapshot=self.on_snapshot,
            on_unreachable=self.unreachable.append,
            snapshot_dir=self.dir / "snap",
            **self.kwargs,
        )
        if serve:
            await self.serve()
        return self

    async def serve(self) -> None:
        assert self.transport is not None
        self.server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
        self.transport.add_servicer(self.server)
        if self.server_credentials is not None:
            self.server.add_secure_port(f"127.0.0.1:{self.port}", self.server_credentials)
        else:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    @property
    def t(self) -> PeerTransport:
        assert self.transport is not None
        return self.transport

    def from_peer(self, peer: int) -> list[Message]:
        return [m for m in self.received if m.from_ == peer]

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        if self.server is not None:
            await self.server.stop(None)


async def cluster(tmp: Path, n: int, **kwargs: Any) -> list[Node]:
    ports = [free_port() for _ in range(n)]
    peers = {i + 1: url(p) for i, p in enumerate(ports)}
    return [await Node(i + 1, ports[i], peers, tmp, **kwargs).start() for i in range(n)]


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


async def connected(nodes: list[Node]) -> None:
    """Wait until every node's streams to every other node are up."""
    for node in nodes:
        others = {n.id for n in nodes if n.id != node.id}
        await wait_for(lambda node=node, others=others: others <= node.t.active(), f"{node.id} connected")
