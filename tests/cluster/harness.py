"""Real multi-member clusters on loopback: rusd processes, or etcd 3.4 ones for comparison,
started with etcd's own cluster flags (client and peer URLs http, or https with the TLS
flags in `extra` and the clients' `credentials`). Members are stopped by their own pid only."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.storage.lmdb import LmdbStore
from tests.servers import ETCD, ServerProcess, free_port


def channel(endpoint: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A client channel: TLS when given credentials (an https client URL)."""
    if credentials is None:
        return grpc.insecure_channel(endpoint)
    return grpc.secure_channel(endpoint, credentials)


def serializable_probe(endpoint: str, credentials: grpc.ChannelCredentials | None = None) -> None:
    """A member answers (a learner serves only serializable reads; a linearizable read
    would also wait for a leader)."""
    with channel(endpoint, credentials) as ch:
        pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"health", serializable=True), timeout=1)


@dataclass
class Node:
    name: str
    client_port: int
    peer_port: int
    process: ServerProcess | None = None
    client_scheme: str = "http"
    peer_scheme: str = "http"
    extra: tuple[str, ...] = ()  # this member's own flags, after the cluster's

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.client_scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"


@dataclass
class Cluster:
    """`kind` is "rusd" or "etcd"; nodes are named m1..mN. With https URLs, `extra` carries
    the TLS flags and `credentials` are what this harness's own gRPC calls present."""

    tmp: Path
    kind: str = "rusd"
    token: str = "tok"
    extra: tuple[str, ...] = ()
    nodes: dict[str, Node] = field(default_factory=dict)
    client_scheme: str = "http"
    peer_scheme: str = "http"
    credentials: grpc.ChannelCredentials | None = None

    def add_node(self, name: str, ports: tuple[int, int] | None = None) -> Node:
        client, peer = ports or (free_port(), free_port())
        node = Node(name, client, peer, client_scheme=self.client_scheme, peer_scheme=self.peer_scheme)
        self.nodes[name] = node
        return node

    def initial_cluster(self) -> str:
        return ",".join(f"{n.name}={n.peer_url}" for n in self.nodes.values())

    def argv(self, node: Node, state: str) -> list[str]:
        program = [ETCD] if self.kind == "etcd" else [sys.executable, "-m", "rusd"]
        return [
            *program,
            "--name", node.name,
            "--data-dir", str(self.tmp / f"{self.kind}-{node.name}.data"),
            "--listen-client-urls", node.client_url,
            "--advertise-client-urls", node.client_url,
            "--listen-peer-urls", node.peer_url,
            "--initial-advertise-peer-urls", node.peer_url,
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            *self.extra,
            *node.extra,
        ]

    def start(self, node: Node, state: str = "new", wait: bool = True) -> ServerProcess:
        """Start (or restart with the same flags) one member; with `wait`, until it answers."""
        if node.process is None:
            node.process = ServerProcess(
                self.argv(node, state), node.endpoint, self.tmp / f"{self.kind}-{node.name}.data",
                self.tmp / f"{self.kind}-{node.name}.log", probe=self.probe,
            )
        node.process.start_only()
        if wait:
            node.process.wait_ready(60)
        return node.process

    def probe(self, endpoint: str) -> None:
        serializable_probe(endpoint, self.credentials)

    def start_all(self, n: int) -> Cluster:
        for i in range(1, n + 1):
            self.add_node(f"m{i}")
        for node in self.nodes.values():
            self.start(node, wait=False)
        for node in self.nodes.values():
            assert node.process is not None
            node.process.wait_ready(60)
        self.leader()
        return self

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.proc is not None:
                node.process.kill()

    def endpoints(self, alive_only: bool = True) -> list[str]:
        return [n.endpoint for n in self.nodes.values() if not alive_only or self.alive(n)]

    @staticmethod
    def alive(node: Node) -> bool:
        return node.process is not None and node.process.proc is not None and node.process.proc.poll() is None

    def status(self, node: Node) -> pb.StatusResponse | None:
        try:
            with channel(node.endpoint, self.credentials) as ch:
                got: pb.StatusResponse = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=2)
                return got
        except grpc.RpcError:
            return None

    def leader(self, timeout: float = 30.0) -> Node:
        """The member every live member agrees leads (waits for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes.values() if n.endpoint in self.endpoints()]
            statuses = [self.status(n) for n in live]
            leaders = {s.leader for s in statuses if s is not None}
            if len(leaders) == 1 and None not in statuses and 0 not in leaders:
                (lead,) = leaders
                for n, s in zip(live, statuses, strict=True):
                    if s is not None and s.header.member_id == lead:
                        return n
            time.sleep(0.1)
        raise AssertionError(f"no agreed leader within {timeout}s")

    def converged(self, timeout: float = 30.0) -> list[pb.StatusResponse]:
        """Waits until every live member has applied the same raft index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [self.status(n) for n in self.nodes.values() if n.endpoint in self.endpoints()]
            if None not in statuses and len({s.raftAppliedIndex for s in statuses if s is not None}) == 1:
                return [s for s in statuses if s is not None]
            time.sleep(0.1)
        raise AssertionError("members did not converge")


def put(endpoint: str, key: bytes, value: bytes, timeout: float = 5.0) -> int:
    """A Put; returns the revision (raises grpc.RpcError when it fails)."""
    with grpc.insecure_channel(endpoint) as ch:
        r: pb.PutResponse = pb_grpc.KVStub(ch).Put(pb.PutRequest(key=key, value=value), timeout=timeout)
        return int(r.header.revision)


def get(endpoint: str, key: bytes, serializable: bool = False, prefix: bool = False) -> list[tuple[bytes, bytes]]:
    end = b"" if not prefix else key[:-1] + bytes([key[-1] + 1])
    with grpc.insecure_channel(endpoint) as ch:
        r = pb_grpc.KVStub(ch).Range(
            pb.RangeRequest(key=key, range_end=end, serializable=serializable), timeout=10
        )
        return [(kv.key, kv.value) for kv in r.kvs]


def hash_kv(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        return int(pb_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(), timeout=10).hash)


def change_behind_its_back(data_dir: Path, key: bytes, value: bytes) -> None:
    """Change a stopped rusd member's value of `key` on disk, outside Raft (its data now
    differs from its peers': what the corruption checks must find)."""
    store = LmdbStore(str(data_dir / "member" / "rusd"), map_size=1 << 30)
    try:
        kv = store.snapshot().get(key)
        assert kv is not None
        batch = store.begin()
        batch.write(0, dataclasses.replace(kv, value=value))
        batch.commit()
    finally:
        store.close()
