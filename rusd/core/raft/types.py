"""Value types of the Raft machine: messages, entries, hard and soft state, configuration.

Node ids are positive ints; 0 (NONE) means "no node" (no leader, no vote), as in etcd-io/raft.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Protocol

NONE = 0


class Rng(Protocol):
    """The randomness handed in by the driver (random.Random fits)."""

    def randrange(self, start: int, stop: int) -> int:
        """An int in [start, stop)."""
        ...


class MessageType(enum.Enum):
    HUP = "MsgHup"  # local: start an election
    BEAT = "MsgBeat"  # local: leader sends heartbeats
    CHECK_QUORUM = "MsgCheckQuorum"  # local: leader checks it still hears from a quorum
    PROP = "MsgProp"  # proposal (local, or forwarded by a follower to the leader)
    APP = "MsgApp"
    APP_RESP = "MsgAppResp"
    VOTE = "MsgVote"
    VOTE_RESP = "MsgVoteResp"
    PRE_VOTE = "MsgPreVote"
    PRE_VOTE_RESP = "MsgPreVoteResp"
    HEARTBEAT = "MsgHeartbeat"
    HEARTBEAT_RESP = "MsgHeartbeatResp"
    SNAP = "MsgSnap"  # leader -> lagging follower: install this snapshot
    TIMEOUT_NOW = "MsgTimeoutNow"  # leader -> transferee: campaign now (leader transfer)
    READ_INDEX = "MsgReadIndex"  # local, or forwarded by a follower: a linearizable read
    READ_INDEX_RESP = "MsgReadIndexResp"  # leader -> follower: the read index for its context
    TRANSFER_LEADER = "MsgTransferLeader"  # local or forwarded; from_ is the transferee
    SNAP_STATUS = "MsgSnapStatus"  # local: the driver reports whether a MsgSnap was delivered
    UNREACHABLE = "MsgUnreachable"  # local: the driver could not reach a peer


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.SNAP_STATUS,
        MessageType.UNREACHABLE,
    }
)

# Context of the MsgVote of a campaign started by MsgTimeoutNow: voters ignore their leader
# lease for it (the leader itself asked for the election).
CAMPAIGN_TRANSFER = b"CampaignTransfer"
RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.READ_INDEX_RESP,
    }
)


def vote_resp_type(t: MessageType) -> MessageType:
    if t is MessageType.VOTE:
        return MessageType.VOTE_RESP
    if t is MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESP
    raise ValueError(f"not a vote message: {t}")


class EntryKind(enum.Enum):
    NORMAL = 0
    CONF_CHANGE = 1  # data is ConfChange.encode(); applied with RawNode.apply_conf_change


class ConfChangeType(enum.Enum):
    ADD_NODE = 0  # add a voter, or promote a learner to voter
    REMOVE_NODE = 1
    ADD_LEARNER_NODE = 2  # add a learner (or demote a voter to learner)


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change (a simple change: at most one voter changes at a time)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    _HEADER = struct.Struct(">BQ")

    def encode(self) -> bytes:
        return self._HEADER.pack(self.type.value, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        t, node_id = cls._HEADER.unpack_from(data)
        return cls(type=ConfChangeType(t), node_id=node_id, context=bytes(data[cls._HEADER.size :]))


@dataclass(frozen=True, slots=True)
class Entry:
    """One Raft log entry. `data` is empty for the leader's entry at the start of its term."""

    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application state as of metadata.index (data is opaque to Raft)."""

    data: bytes = b""
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches `index`.

    A Ready carries a ReadState only once the log's commit index reached `index`, so it is
    safe to serve after applying that Ready's committed_entries."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before the node answers votes and appends."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class StateType(enum.Enum):
    FOLLOWER = "StateFollower"
    CANDIDATE = "StateCandidate"
    LEADER = "StateLeader"
    PRE_CANDIDATE = "StatePreCandidate"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state, reported for information (not persisted)."""

    lead: int = NONE
    state: StateType = StateType.FOLLOWER


# Test-only switches for Config.bugs, each breaking one rule of Raft:
PLANTED_BUGS = frozenset(
    {
        "commit_old_term",  # the leader commits a previous-term entry by counting replicas (§5.4.2)
        "forget_vote",  # the vote is not part of the persisted HardState (a restart forgets it)
        "no_log_truncation",  # a follower keeps its conflicting entries instead of truncating (§5.3)
    }
)


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    # The highest index the application has applied (on restart); entries after it are replayed.
    applied: int = 0
    pre_vote: bool = False
    check_quorum: bool = False
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 256
    # Test-only: planted bugs (names from PLANTED_BUGS) that break Raft on purpose, so that the
    # simulator's tests can prove its checkers find them. Always empty outside those tests.
    bugs: frozenset[str] = frozenset()

    def validate(self) -> None:
        if not self.bugs <= PLANTED_BUGS:
            raise ValueError(f"unknown planted bugs: {sorted(self.bugs - PLANTED_BUGS)}")
        if self.id == NONE:
            raise ValueError("cannot use 0 as a node id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        if self.max_entries_per_msg <= 0:
            raise ValueError("max entries per message must be greater than 0")


@dataclass
class Ready:
    """One batch of work for the driver, in this order:

    1. persist `snapshot` (if not None: it replaces the whole log, e.g.
       MemoryStorage.apply_snapshot, and the state machine is restored from it), then
       `hard_state` (if not None) and `entries` (fsync when `must_sync`);
    2. send `messages` (may be sent before step 1 completes) and, once step 1 is
       durable, `messages_after_persist`; for every MsgSnap sent, report the outcome with
       `RawNode.report_snapshot(to, failed)` (the leader waits for it);
    3. apply `committed_entries` (they may include entries of this Ready's `entries`,
       so apply them after step 1); a CONF_CHANGE entry is applied with
       `RawNode.apply_conf_change(ConfChange.decode(entry.data))`;
    4. serve the linearizable reads in `read_states` (the state machine has now applied
       at least up to their index);
    5. call `RawNode.advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    must_sync: bool = False
    # Linearizable reads that may be served once this Ready's committed_entries are applied.
    read_states: list[ReadState] = field(default_factory=list)
    # A snapshot to persist (and install into the state machine) before `entries`.
    snapshot: Snapshot | None = None


class RaftError(Exception):
    pass


class ProposalDroppedError(RaftError):
    """The proposal was not accepted (no leader known, or not a member)."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first retained entry."""


class UnavailableError(RaftError):
    """The requested index is past the last entry."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the leader retries later."""
