"""Raft as a pure, deterministic sans-IO machine in the shape of etcd-io/raft's RawNode."""

from rusd.core.raft.log import RaftLog, Unstable
from rusd.core.raft.progress import Inflights, Progress, ProgressState, ProgressTracker, VoteResult
from rusd.core.raft.raft import Raft
from rusd.core.raft.rawnode import RawNode
from rusd.core.raft.storage import Storage
from rusd.core.raft.types import (
    NONE,
    CompactedError,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
    Ready,
    Rng,
    SoftState,
    StateType,
    UnavailableError,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "Inflights",
    "Message",
    "MessageType",
    "Progress",
    "ProgressState",
    "ProgressTracker",
    "ProposalDroppedError",
    "Raft",
    "RaftError",
    "RaftLog",
    "RawNode",
    "Ready",
    "Rng",
    "SoftState",
    "StateType",
    "Storage",
    "UnavailableError",
    "Unstable",
    "VoteResult",
]
