"""Pending linearizable reads on the leader (ReadIndex, Raft thesis §6.4), as etcd-io/raft's
read_only.go: each read records the commit index when it arrived and waits until a quorum
acknowledged a heartbeat carrying its context."""

from __future__ import annotations

from dataclasses import dataclass, field

from rusd.core.raft.types import Message


@dataclass
class ReadIndexStatus:
    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        """Record a read (m.context identifies it) that can be answered with `index`."""
        if m.context in self.pending:
            return
        self.pending[m.context] = ReadIndexStatus(req=m, index=index)
        self.queue.append(m.context)

    def recv_ack(self, id_: int, ctx: bytes) -> dict[int, bool] | None:
        """Record that id_ acknowledged the heartbeat for ctx; the acks so far (None if unknown)."""
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[id_] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """ctx is confirmed: pop it and every read queued before it (they are confirmed too)."""
        if ctx not in self.pending:
            return []
        k = self.queue.index(ctx) + 1
        done, self.queue = self.queue[:k], self.queue[k:]
        return [self.pending.pop(c) for c in done]

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
