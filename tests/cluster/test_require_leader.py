"""clientv3.WithRequireLeader on streams (Kubernetes puts it on its watches): a member
that lost its leader ends such streams with "etcdserver: no leader" so the client moves
to a member still in the cluster, and refuses new ones at once; streams without it stay
open. Checked against etcd 3.4 and rusd alike. A learner serves no stream at all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster

REQUIRE_LEADER = (("hasleader", "true"),)


class WatchStream:
    """A watch on one key, read in a thread until the stream ends."""

    def __init__(self, endpoint: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.created = threading.Event()
        self.ended = threading.Event()
        self.error: grpc.RpcError | None = None
        requests = iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k"))])
        self._call = pb_grpc.WatchStub(self.channel).Watch(_then_wait(requests, self.ended), metadata=metadata)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                if response.created:
                    self.created.set()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()

    def close(self) -> None:
        self._call.cancel()
        self.channel.close()


def _then_wait(requests: Iterator[pb.WatchRequest], ended: threading.Event) -> Iterator[pb.WatchRequest]:
    """Send the requests, then keep the request side open until the stream ends."""
    yield from requests
    ended.wait()


@pytest.mark.parametrize("kind", ["etcd", "rusd"])
def test_a_member_without_a_leader_ends_require_leader_watches(tmp_path: Path, kind: str) -> None:
    cluster = Cluster(tmp_path, kind=kind)
    watches: list[WatchStream] = []
    try:
        cluster.start_all(3)
        survivor = cluster.nodes["m3"]
        required = WatchStream(survivor.endpoint, REQUIRE_LEADER)
        plain = WatchStream(survivor.endpoint)
        watches += [required, plain]
        assert required.created.wait(10) and plain.created.wait(10)
        for name in ("m1", "m2"):
            process = cluster.nodes[name].process
            assert process is not None
            process.kill()
        # etcd ends them after three election timeouts without a leader (1 s each here)
        assert required.ended.wait(60), "the require-leader watch is still open"
        assert required.error is not None
        assert required.error.code() is grpc.StatusCode.UNAVAILABLE
        assert required.error.details() == "etcdserver: no leader"
        assert not plain.ended.is_set()
        # a new one is refused at once
        again = WatchStream(survivor.endpoint, REQUIRE_LEADER)
        watches.append(again)
        assert again.ended.wait(10)
        assert again.error is not None and again.error.details() == "etcdserver: no leader"
        assert not again.created.is_set()
    finally:
        for w in watches:
            w.close()
        cluster.stop_all()
