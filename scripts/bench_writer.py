"""CPU per put of the writer side of a 3-member cluster, without gRPC: three Members over
LMDB stores in one process, their Raft messages passed directly (through the peer
protobuf conversion, as on the wire), `--batch` puts proposed per leader turn, then one
turn of each follower and one of the leader (commit and apply). Measures the Raft,
apply, codec and LMDB work a put costs all three members together.

    python -m scripts.bench_writer [--batch 32] [--rounds 200] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import tempfile
import time

from rusd.core.cluster import MemberInfo
from rusd.core.mvcc.types import PutRequest
from rusd.core.node import Member, MemberConfig, unapplied_entries
from rusd.core.raft import Message
from rusd.server.peer_convert import message_from_pb, message_to_pb
from rusd.storage.lmdb import LmdbStore


class Trio:
    """Three members of one cluster, each on its own LMDB store in `root`."""

    def __init__(self, root: str) -> None:
        infos = tuple(MemberInfo(i, f"m{i}", (f"http://127.0.0.1:{9000 + i}",), ()) for i in (1, 2, 3))
        self.stores: dict[int, LmdbStore] = {}
        self.members: dict[int, Member] = {}
        for info in infos:
            store = LmdbStore(os.path.join(root, info.name))
            view = store.snapshot()
            self.stores[info.id] = store
            self.members[info.id] = Member(
                MemberConfig(info, 1), view, unapplied_entries(view, view), 0.0, unix_ms=1,
                rng=random.Random(info.id), initial_cluster=infos,
            )
        self.inbox: dict[int, list[Message]] = {i: [] for i in self.members}
        self.now = 0.0

    def turn(self, i: int) -> None:
        """One driver turn of member i: step its inbox, persist and apply, send."""
        member, store = self.members[i], self.stores[i]
        inbox, self.inbox[i] = self.inbox[i], []
        for m in inbox:
            member.step(m)
        rd = member.ready()
        if rd.entries or rd.committed or rd.hard_state is not None:
            batch = store.begin()
            batch.append_entries(rd.entries)
            member.apply(batch, rd.committed, self.now)
            batch.commit()
            store.snapshot().close()
        member.advance(rd)
        for m in [*rd.early_messages, *rd.messages]:
            self.inbox[m.to].append(message_from_pb(message_to_pb(m)))

    def elect(self) -> int:
        for _ in range(300):
            self.now += 0.1
            for i, member in self.members.items():
                member.tick(self.now, 0)
                self.turn(i)
            leaders = [i for i, m in self.members.items() if m.is_leader]
            if leaders:
                for _ in range(5):
                    for i in self.members:
                        self.turn(i)
                return leaders[0]
        raise RuntimeError("no leader")

    def round(self, leader: int, batch: int, rng: random.Random, first_id: int) -> None:
        for k in range(batch):
            key = b"/bench/%08d" % rng.randrange(100_000)
            self.members[leader].submit(first_id + k, PutRequest(key, rng.randbytes(256)), 0)
        self.turn(leader)
        for i in self.members:
            if i != leader:
                self.turn(i)
        self.turn(leader)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as root:
        trio = Trio(root)
        leader = trio.elect()
        rng = random.Random(1)
        for r in range(20):  # warm up
            trio.round(leader, opts.batch, rng, 1 + r * opts.batch)
        profiler = cProfile.Profile() if opts.profile else None
        start = time.process_time()
        if profiler is not None:
            profiler.enable()
        for r in range(opts.rounds):
            trio.round(leader, opts.batch, rng, 1_000_000 + r * opts.batch)
        if profiler is not None:
            profiler.disable()
        took = time.process_time() - start
        print(f"{took / (opts.rounds * opts.batch) * 1e6:.1f} us of CPU per put (three members, batch {opts.batch})")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        for store in trio.stores.values():
            store.close()


if __name__ == "__main__":
    main()
