"""Fewer, larger Raft messages: what one turn sends to a peer, merged where Raft cannot
tell the difference.

A leader that takes several proposals or acks in one turn appends and sends once per
step, and a follower answers each append; in a turn's outbox that is a run of MsgApps
to one follower, each continuing the previous one, and a run of MsgAppResps back.
Every message costs encoding, a gRPC write share, decoding and a Raft step on both
sides, so per put costs fall when they are merged:

- consecutive MsgApps to a peer in one term, each starting where the previous ended,
  become one MsgApp with all their entries and the latest commit (up to
  MAX_MERGED_BYTES of entry data, etcd's MaxSizePerMsg): the follower would have
  appended them one after another, and the leader's inflight window frees them all
  when the one answer acknowledges the last index;
- consecutive successful MsgAppResps to a peer in one term keep only the one with the
  highest index: it acknowledges everything the others did (a dropped message is
  something Raft tolerates anyway).

Only messages adjacent in the sequence addressed to one peer are merged, so the order
each peer sees is kept.
"""

from __future__ import annotations

from dataclasses import replace

from rusd.core.raft.types import Message, MessageType

MAX_MERGED_BYTES = 1 << 20


def _data_bytes(m: Message) -> int:
    return sum(len(e.data) for e in m.entries)


def coalesce(messages: list[Message]) -> list[Message]:
    """`messages` with the merges above applied, in order."""
    if len(messages) < 2:
        return messages
    out: list[Message] = []
    last_to: dict[int, int] = {}  # peer -> position in `out` of the last message to it
    sizes: dict[int, int] = {}  # position -> entry bytes of a MsgApp there
    for m in messages:
        k = last_to.get(m.to)
        prev = out[k] if k is not None else None
        if prev is not None and k is not None and prev.term == m.term and prev.type is m.type:
            if m.type is MessageType.APP and prev.entries and m.entries:
                size = sizes.get(k, -1)
                if size < 0:
                    size = _data_bytes(prev)
                added = _data_bytes(m)
                if (
                    m.index == prev.index + len(prev.entries)
                    and m.log_term == prev.entries[-1].term
                    and size + added <= MAX_MERGED_BYTES
                ):
                    out[k] = replace(prev, entries=prev.entries + m.entries, commit=max(prev.commit, m.commit))
                    sizes[k] = size + added
                    continue
            elif m.type is MessageType.APP_RESP and not m.reject and not prev.reject:
                if m.index >= prev.index:
                    out[k] = m
                continue
        last_to[m.to] = len(out)
        out.append(m)
    return out
