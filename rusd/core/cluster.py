"""The cluster's member list, as etcd's membership package keeps it: who is in the cluster
(id, name, peer and client URLs, learner or voter) and which ids were removed for good.

Members change only through the log, so every member holds the same list at the same
applied index: a conf change entry adds, promotes or removes one (Raft's configuration
changes with it), a normal proposal updates peer URLs or publishes a member's name and
client URLs after it starts. The list lives in the backend's meta, in the batch of the
apply that changed it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from rusd.core import codec, errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc.backend import KVBackend, KVReader

_MEMBER = b"member/"
_REMOVED = b"removed_member/"
_ID = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberAddRequest:
    """`id` is chosen by the member that takes the request (from the peer URLs, the
    cluster token and its clock, as etcd's NewMember), so all members apply the same one."""

    peer_urls: tuple[str, ...]
    is_learner: bool = False
    id: int = 0
    name: str = ""  # known only for the members of a new cluster (--initial-cluster)


@dataclass(frozen=True, slots=True)
class MemberRemoveRequest:
    id: int


@dataclass(frozen=True, slots=True)
class MemberUpdateRequest:
    id: int
    peer_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberPromoteRequest:
    id: int


@dataclass(frozen=True, slots=True)
class MemberPublishRequest:
    """A started member announces its name and client URLs (etcd's publish)."""

    id: int
    name: str
    client_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberListResponse:
    members: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class MemberAddResponse:
    member: MemberInfo
    members: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class MemberChangeResponse:
    """The answer to a remove, update or promote: the member list after it."""

    members: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class MemberPublishResponse:
    pass


ConfRequest = MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest
MemberRequest = ConfRequest | MemberUpdateRequest | MemberPublishRequest
MemberResponse = MemberAddResponse | MemberChangeResponse | MemberPublishResponse
MEMBER_REQUESTS = (MemberAddRequest, MemberRemoveRequest, MemberPromoteRequest, MemberUpdateRequest,
                   MemberPublishRequest)

# etcd 3.4 allows one learner at a time (membership.maxLearners).
MAX_LEARNERS = 1


class Roster:
    """The member list in memory, loaded from the backend at start and after a snapshot
    install, changed by `apply` (which also writes the change to the open batch)."""

    def __init__(self, view: KVReader) -> None:
        self.members: dict[int, MemberInfo] = {}
        for _, raw in view.meta_items(_MEMBER):
            info: MemberInfo = codec.decode(raw)
            self.members[info.id] = info
        self.removed = {_ID.unpack(name[len(_REMOVED):])[0] for name, _ in view.meta_items(_REMOVED)}

    def listed(self) -> tuple[MemberInfo, ...]:
        """The member list in id order (etcd sorts MemberList by id)."""
        return tuple(self.members[i] for i in sorted(self.members))

    def voters(self) -> list[MemberInfo]:
        return [m for m in self.listed() if not m.is_learner]

    def validate(self, req: ConfRequest) -> None:
        """The checks etcd makes before and again when applying a configuration change
        (membership.ValidateConfigurationChange), with the errors its clients see."""
        current = self.members
        if isinstance(req, MemberAddRequest):
            if req.id in self.removed or req.id in current:
                raise EtcdError(errors.MEMBER_EXIST)
            taken = {url for m in current.values() for url in m.peer_urls}
            if taken & set(req.peer_urls):
                raise EtcdError(errors.PEER_URL_EXIST)
            if req.is_learner and sum(m.is_learner for m in current.values()) >= MAX_LEARNERS:
                raise EtcdError(errors.TOO_MANY_LEARNERS)
            return
        if req.id not in current:
            raise EtcdError(errors.MEMBER_NOT_FOUND)
        if isinstance(req, MemberRemoveRequest) and [m.id for m in self.voters()] == [req.id]:
            raise EtcdError(errors.MEMBER_NOT_ENOUGH_STARTED)  # Raft cannot lose its last voter
        if isinstance(req, MemberPromoteRequest) and not current[req.id].is_learner:
            raise EtcdError(errors.MEMBER_NOT_LEARNER)

    def check_started(self, req: ConfRequest) -> None:
        """--strict-reconfig-check: refuse a change that would leave fewer started members
        (those that published their name) than a quorum (etcd's IsReadyTo*VotingMember)."""
        voters = self.voters()
        if isinstance(req, MemberAddRequest | MemberPromoteRequest):
            if isinstance(req, MemberAddRequest) and req.is_learner:
                return
            started = sum(1 for m in voters if m.name)
            total = len(voters) + 1
            if started == 1 and total == 2:
                return  # a one-member cluster may always grow to two
        else:
            others = [m for m in voters if m.id != req.id]
            started = sum(1 for m in others if m.name)
            total = len(others)
        if started < total // 2 + 1:
            raise EtcdError(errors.MEMBER_NOT_ENOUGH_STARTED)

    def applied_before(self, req: ConfRequest) -> bool:
        """Whether a change the backend already holds (it came from a leader's image newer
        than Raft's snapshot) took effect, so that Raft's configuration follows it too."""
        if isinstance(req, MemberRemoveRequest):
            return req.id in self.removed
        if isinstance(req, MemberAddRequest):
            return req.id in self.members or req.id in self.removed
        info = self.members.get(req.id)
        return info is None or not info.is_learner

    def apply(self, backend: KVBackend, req: MemberRequest) -> MemberResponse:
        """Apply a committed member change (validated again: the list may have moved since)."""
        if isinstance(req, MemberPublishRequest):
            info = self.members.get(req.id)
            if info is not None:  # a member removed meanwhile publishes nothing
                self._save(backend, replace(info, name=req.name, client_urls=req.client_urls))
            return MemberPublishResponse()
        if isinstance(req, MemberUpdateRequest):
            if req.id not in self.members:
                raise EtcdError(errors.MEMBER_NOT_FOUND)
            taken = {url for m in self.members.values() if m.id != req.id for url in m.peer_urls}
            if taken & set(req.peer_urls):
                raise EtcdError(errors.PEER_URL_EXIST)
            self._save(backend, replace(self.members[req.id], peer_urls=req.peer_urls))
            return MemberChangeResponse(self.listed())
        self.validate(req)
        if isinstance(req, MemberAddRequest):
            added = MemberInfo(req.id, req.name, req.peer_urls, (), req.is_learner)
            self._save(backend, added)
            return MemberAddResponse(added, self.listed())
        if isinstance(req, MemberPromoteRequest):
            self._save(backend, replace(self.members[req.id], is_learner=False))
            return MemberChangeResponse(self.listed())
        del self.members[req.id]
        self.removed.add(req.id)
        backend.delete_meta(_MEMBER + _ID.pack(req.id))
        backend.put_meta(_REMOVED + _ID.pack(req.id), b"")
        return MemberChangeResponse(self.listed())

    def _save(self, backend: KVBackend, info: MemberInfo) -> None:
        self.members[info.id] = info
        backend.put_meta(_MEMBER + _ID.pack(info.id), codec.encode(info))
