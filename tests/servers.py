"""Start real server processes on loopback for tests: rusd, and etcd as reference."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


# Ports handed out in this test session: a port is given once.
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+): a port taken from
    that range can be grabbed, before the server binds it, as the local end of some other
    process's outgoing connection (cluster members dial each other while starting)."""
    while True:
        port = random.randrange(15_000, 32_000)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port


def plain_probe(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"health"), timeout=1)


class ServerProcess:
    """A server we started; we stop it by its own pid only."""

    def __init__(self, argv: list[str], endpoint: str, data_dir: Path, log_path: Path,
                 env: dict[str, str] | None = None, probe: Callable[[str], None] | None = None) -> None:
        self.argv = argv
        self.endpoint = endpoint
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.probe = probe or plain_probe  # raises grpc.RpcError / OSError until the server answers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.start_only()
        self.wait_ready(timeout)
        return self

    def start_only(self) -> ServerProcess:
        """Start the process without waiting for it to answer (cluster members wait for peers)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.probe(self.endpoint)
                return
            except (grpc.RpcError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def rusd(tmp: Path, *extra: str, data_dir: Path | None = None, scheme: str = "http",
         probe: Callable[[str], None] | None = None) -> ServerProcess:
    port, peer = free_port(), free_port()
    data_dir = data_dir or tmp / "rusd.data"
    argv = [
        sys.executable, "-m", "rusd",
        "--name", "default",
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"{scheme}://127.0.0.1:{port}",
        "--advertise-client-urls", f"{scheme}://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        *extra,
    ]
    return ServerProcess(argv, f"127.0.0.1:{port}", data_dir, tmp / "rusd.log", probe=probe)


def etcd(tmp: Path, *extra: str, scheme: str = "http", probe: Callable[[str], None] | None = None) -> ServerProcess:
    port, peer = free_port(), free_port()
    data_dir = tmp / "etcd.data"
    argv = [
        ETCD,
        "--name", "default",
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"{scheme}://127.0.0.1:{port}",
        "--advertise-client-urls", f"{scheme}://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        *extra,
    ]
    return ServerProcess(argv, f"127.0.0.1:{port}", data_dir, tmp / "etcd.log", probe=probe)


def etcdctl(
    endpoint: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "10s", *args],
        input=stdin, capture_output=True, text=True, env=env, check=check, timeout=30,
    )
