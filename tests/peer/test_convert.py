"""Core Raft messages survive the peer protocol unchanged, every type and every field."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from rusd.server.peer_convert import PeerDecodeError, batch_from_pb, batch_to_pb, message_from_pb, message_to_pb

U64 = st.integers(min_value=0, max_value=2**64 - 1)
IDS = st.lists(st.integers(min_value=1, max_value=2**64 - 1), max_size=5, unique=True).map(tuple)

entries = st.builds(Entry, index=U64, term=U64, data=st.binary(max_size=64), kind=st.sampled_from(EntryKind))
snapshots = st.builds(
    Snapshot,
    data=st.binary(max_size=64),
    metadata=st.builds(
        SnapshotMetadata, index=U64, term=U64, conf_state=st.builds(ConfState, voters=IDS, learners=IDS)
    ),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=U64,
    from_=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    context=st.binary(max_size=32),
    snapshot=st.none() | snapshots,
)


@given(messages)
def test_message_round_trip(m: Message) -> None:
    wire = message_to_pb(m).SerializeToString()
    assert message_from_pb(pb.Message.FromString(wire)) == m


@given(st.lists(messages, max_size=8))
def test_batch_round_trip(ms: list[Message]) -> None:
    wire = batch_to_pb(ms).SerializeToString()
    assert batch_from_pb(pb.MessageBatch.FromString(wire)) == ms


def test_an_empty_snapshot_is_not_no_snapshot() -> None:
    for snap in (None, Snapshot()):
        m = Message(MessageType.SNAP, to=2, from_=1, snapshot=snap)
        assert message_from_pb(pb.Message.FromString(message_to_pb(m).SerializeToString())).snapshot == snap


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_core_field_has_a_wire_field() -> None:
    """A field added to the core's types must be added to raft.proto and peer_convert.py."""
    aliases = {"from_": "from", "kind": "type"}
    for core, wire in [
        (Message, pb.Message),
        (Entry, pb.Entry),
        (Snapshot, pb.Snapshot),
        (SnapshotMetadata, pb.SnapshotMetadata),
        (ConfState, pb.ConfState),
    ]:
        assert {aliases.get(n, n) for n in _names(core)} == set(wire.DESCRIPTOR.fields_by_name), core.__name__


def test_message_type_numbers_follow_etcd_raftpb() -> None:
    assert message_to_pb(Message(MessageType.APP)).type == 3
    assert message_to_pb(Message(MessageType.SNAP)).type == 7
    assert message_to_pb(Message(MessageType.PRE_VOTE_RESP)).type == 18
    assert len(pb.MessageType.keys()) == len(MessageType)


@pytest.mark.parametrize(
    "bad",
    [
        pb.Message(type=19),  # type: ignore[arg-type]
        pb.Message(type=pb.MsgApp, entries=[pb.Entry(type=5, index=1)]),  # type: ignore[list-item]
    ],
)
def test_unknown_enum_values_are_decode_errors(bad: pb.Message) -> None:
    with pytest.raises(PeerDecodeError, match="unknown"):
        message_from_pb(bad)


def test_the_raft_service_streams() -> None:
    service = pb.DESCRIPTOR.services_by_name["Raft"]
    assert service.full_name == "rusdraftpb.Raft"
    got = {m.name: (m.client_streaming, m.server_streaming, m.input_type.name) for m in service.methods}
    assert got == {"Send": (True, False, "MessageBatch"), "SendSnapshot": (True, False, "SnapshotChunk")}
