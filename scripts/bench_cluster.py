"""Benchmark a 3-member rusd cluster against a 3-member etcd 3.4 cluster in the same run.

Both clusters run on loopback, one after the other, started with the same etcd flags;
../shared/tools/loadgen drives the load against all three client endpoints. Reports put
throughput at 1 and 64 clients, linearizable and serializable range at 64 clients, and
failover time (kill -9 of the leader to the first successful write), with rusd/etcd ratios.

    python scripts/bench_cluster.py [--rounds 3] [--loadgen /tmp/loadgen] [--total 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
WORKLOADS = [
    ("put 1 client", ["--op", "put", "--clients", "1", "--conns", "1"], 0.25),
    ("put 64 clients", ["--op", "put", "--clients", "64", "--conns", "8"], 1.0),
    ("range 64 clients (linearizable)", ["--op", "range", "--clients", "64", "--conns", "8", "--prefill",
                                         "--key-space", "1000"], 1.0),
    ("range 64 clients (serializable)", ["--op", "range-serializable", "--clients", "64", "--conns", "8",
                                         "--prefill", "--key-space", "1000"], 1.0),
]


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+), where the
    members' own outgoing connections cannot take it before the member binds it."""
    while True:
        port = random.randrange(15_000, 32_000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port


class Cluster:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.ports = [(free_port(), free_port()) for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def argv(self, i: int) -> list[str]:
        cluster = ",".join(f"m{j}=http://127.0.0.1:{p}" for j, (_, p) in enumerate(self.ports))
        client, peer = self.ports[i]
        program = [ETCD] if self.kind == "etcd" else [sys.executable, "-m", "rusd"]
        return [*program, "--name", f"m{i}", "--data-dir", str(self.root / f"{self.kind}-{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", cluster, "--initial-cluster-token", "bench"]

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{c}" for c, _ in self.ports)

    def start(self, i: int) -> None:
        log = open(self.root / f"{self.kind}-{i}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[i] = subprocess.Popen(self.argv(i), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self) -> None:
        for i in range(3):
            self.start(i)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.put_ok(self.endpoints, timeout="2s"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} cluster did not start")

    def put_ok(self, endpoints: str, timeout: str = "1s") -> bool:
        r = subprocess.run([ETCDCTL, "--endpoints", endpoints, "--command-timeout", timeout, "--dial-timeout", timeout,
                            "put", "bench-probe", "x"], capture_output=True, env=dict(os.environ, ETCDCTL_API="3"),
                           check=False)
        return r.returncode == 0

    def leader(self) -> int:
        r = subprocess.run([ETCDCTL, "--endpoints", self.endpoints, "endpoint", "status", "-w", "json"],
                           capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"), check=True)
        for i, st in enumerate(json.loads(r.stdout)):
            if st["Status"]["leader"] == st["Status"]["header"]["member_id"]:
                return i
        raise RuntimeError("no leader")

    def failover_seconds(self) -> float:
        """kill -9 the leader, then time until a write succeeds on the survivors."""
        lead = self.leader()
        others = ",".join(f"127.0.0.1:{c}" for j, (c, _) in enumerate(self.ports) if j != lead)
        os.kill(self.procs[lead].pid, signal.SIGKILL)
        self.procs[lead].wait()
        start = time.monotonic()
        while not self.put_ok(others, timeout="1s"):
            pass
        took = time.monotonic() - start
        self.start(lead)
        return took

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def loadgen(binary: str, endpoints: str, args: list[str], total: int) -> float:
    r = subprocess.run([binary, "--endpoints", endpoints, "--total", str(total), "--json", *args],
                       capture_output=True, text=True, timeout=900, check=True)
    return float(json.loads(r.stdout)["throughput"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loadgen", default=os.environ.get("LOADGEN", "/tmp/loadgen"))
    ap.add_argument("--total", type=int, default=20_000)
    opts = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {"etcd": {}, "rusd": {}}
    for _ in range(opts.rounds):
        for kind in ("etcd", "rusd"):
            with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
                c = Cluster(kind, Path(tmp))
                try:
                    c.start_all()
                    for name, args, share in WORKLOADS:
                        got = loadgen(opts.loadgen, c.endpoints, args, max(1000, int(opts.total * share)))
                        results[kind].setdefault(name, []).append(got)
                    results[kind].setdefault("failover (s)", []).append(c.failover_seconds())
                finally:
                    c.stop()
    print(f"{'workload':36} {'etcd':>10} {'rusd':>10} {'rusd/etcd':>10}")
    for name in results["etcd"]:
        e, r = statistics.median(results["etcd"][name]), statistics.median(results["rusd"][name])
        print(f"{name:36} {e:10.2f} {r:10.2f} {r / e:10.2f}")


if __name__ == "__main__":
    main()
