"""Core Raft messages <-> the peer protocol (proto/rusdraftpb/raft.proto).

The transport only moves bytes; this module is where a field of the core's Message
either crosses the wire or is lost, so every field is carried and
tests/peer/test_convert.py fails when the core grows one this module does not know.
Decoding never trusts the peer: an unknown message or entry type raises
PeerDecodeError, which the servicer turns into INVALID_ARGUMENT.
"""

from __future__ import annotations

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.core.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)


class PeerDecodeError(ValueError):
    """A peer sent a message the core cannot represent."""


# etcd-io/raft's raftpb numbering (the proto's enum values).
_TYPE_TO_PB: dict[MessageType, pb.MessageType] = {
    MessageType.HUP: pb.MsgHup,
    MessageType.BEAT: pb.MsgBeat,
    MessageType.PROP: pb.MsgProp,
    MessageType.APP: pb.MsgApp,
    MessageType.APP_RESP: pb.MsgAppResp,
    MessageType.VOTE: pb.MsgVote,
    MessageType.VOTE_RESP: pb.MsgVoteResp,
    MessageType.SNAP: pb.MsgSnap,
    MessageType.HEARTBEAT: pb.MsgHeartbeat,
    MessageType.HEARTBEAT_RESP: pb.MsgHeartbeatResp,
    MessageType.UNREACHABLE: pb.MsgUnreachable,
    MessageType.SNAP_STATUS: pb.MsgSnapStatus,
    MessageType.CHECK_QUORUM: pb.MsgCheckQuorum,
    MessageType.TRANSFER_LEADER: pb.MsgTransferLeader,
    MessageType.TIMEOUT_NOW: pb.MsgTimeoutNow,
    MessageType.READ_INDEX: pb.MsgReadIndex,
    MessageType.READ_INDEX_RESP: pb.MsgReadIndexResp,
    MessageType.PRE_VOTE: pb.MsgPreVote,
    MessageType.PRE_VOTE_RESP: pb.MsgPreVoteResp,
}
_TYPE_FROM_PB: dict[int, MessageType] = {v: k for k, v in _TYPE_TO_PB.items()}

_KIND_TO_PB: dict[EntryKind, pb.EntryType] = {
    EntryKind.NORMAL: pb.EntryNormal,
    EntryKind.CONF_CHANGE: pb.EntryConfChange,
}
_KIND_FROM_PB: dict[int, EntryKind] = {v: k for k, v in _KIND_TO_PB.items()}


def snapshot_to_pb(s: Snapshot) -> pb.Snapshot:
    md = s.metadata
    cs = md.conf_state
    return pb.Snapshot(
        data=s.data,
        metadata=pb.SnapshotMetadata(
            conf_state=pb.ConfState(voters=cs.voters, learners=cs.learners),
            index=md.index,
            term=md.term,
        ),
    )


def snapshot_from_pb(p: pb.Snapshot) -> Snapshot:
    md = p.metadata
    cs = md.conf_state
    return Snapshot(
        data=p.data,
        metadata=SnapshotMetadata(
            index=md.index,
            term=md.term,
            conf_state=ConfState(voters=tuple(cs.voters), learners=tuple(cs.learners)),
        ),
    )


def message_to_pb(m: Message) -> pb.Message:
    out = pb.Message(
        type=_TYPE_TO_PB[m.type],
        to=m.to,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )
    # "from" is a Python keyword: the generated class takes it only through setattr.
    setattr(out, "from", m.from_)
    if m.entries:
        kinds = _KIND_TO_PB
        out.entries.extend(
            [pb.Entry(type=kinds[e.kind], term=e.term, index=e.index, data=e.data) for e in m.entries]
        )
    if m.snapshot is not None:
        out.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
    return out


def message_from_pb(p: pb.Message) -> Message:
    t = _TYPE_FROM_PB.get(p.type)
    if t is None:
        raise PeerDecodeError(f"unknown message type {p.type}")
    entries: tuple[Entry, ...] = ()
    if p.entries:
        kinds = _KIND_FROM_PB
        try:
            entries = tuple([Entry(e.index, e.term, e.data, kinds[e.type]) for e in p.entries])
        except KeyError as exc:
            raise PeerDecodeError(f"unknown entry type {exc.args[0]}") from None
    return Message(
        type=t,
        to=p.to,
        from_=getattr(p, "from"),
        term=p.term,
        log_term=p.log_term,
        index=p.index,
        entries=entries,
        commit=p.commit,
        reject=p.reject,
        reject_hint=p.reject_hint,
        context=p.context,
        snapshot=snapshot_from_pb(p.snapshot) if p.HasField("snapshot") else None,
    )


def batch_to_pb(messages: list[Message]) -> pb.MessageBatch:
    return pb.MessageBatch(messages=[message_to_pb(m) for m in messages])


def batch_from_pb(p: pb.MessageBatch) -> list[Message]:
    return [message_from_pb(m) for m in p.messages]
