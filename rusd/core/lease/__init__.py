"""Leases: the lessor (a deterministic machine over handed-in time) and its types."""

from rusd.core.lease.lessor import MAX_LEASE_TTL, IdGenerator, Lessor, min_lease_ttl
from rusd.core.lease.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
)

__all__ = [
    "MAX_LEASE_TTL",
    "IdGenerator",
    "LeaseGrantRequest",
    "LeaseGrantResponse",
    "LeaseKeepAliveRequest",
    "LeaseKeepAliveResponse",
    "LeaseLeasesRequest",
    "LeaseLeasesResponse",
    "LeaseRevokeRequest",
    "LeaseRevokeResponse",
    "LeaseTimeToLiveRequest",
    "LeaseTimeToLiveResponse",
    "Lessor",
    "min_lease_ttl",
]
