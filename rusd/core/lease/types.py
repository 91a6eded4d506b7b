"""Lease requests and responses, independent of protobuf.

Grant and Revoke go through the log (they change state every member must agree on);
KeepAlive, TimeToLive and Leases are answered by the leader's lessor alone, as etcd's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    """`id` 0 asks the member to choose one; it does so before proposing."""

    ttl: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    revision: int
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    """`ttl` 0: the lease is unknown (or expired and waiting for its revocation)."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveRequest:
    id: int
    keys: bool = False


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    """`ttl` -1 (and granted_ttl 0): the lease is unknown."""

    id: int
    ttl: int
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseLeasesRequest:
    pass


@dataclass(frozen=True, slots=True)
class LeaseLeasesResponse:
    ids: tuple[int, ...]
