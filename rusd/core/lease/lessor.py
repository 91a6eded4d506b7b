"""The lessor: leases, their TTLs and attached keys, over handed-in time.

Follows etcd 3.4's lease/lessor.go. Time is a float of seconds handed in by the
driver (monotonic in the server, the fake clock in the simulator and tests).

- Only the primary (the leader) tracks expiries. A lease restored from storage, or
  granted while not primary, never expires until `promote(now, extend)` gives every
  lease a fresh `now + extend + ttl`: after a restart or leader change no lease
  expires early because of the failover.
- `grant` raises a TTL below the minimum to it (and the granted TTL shows it);
  a TTL above MAX_LEASE_TTL is refused.
- Attached keys are kept in memory only: the keys' own lease field is the source of
  truth, and the member rebuilds the attachments from it at start (as etcd does).
- Leases (id, ttl) are persisted in the backend's meta table under `lease/` + be64(id)
  by `save`/`remove`, in the same batch as the apply that changed them.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc.backend import KVBackend, KVReader

# etcd's lease.MaxLeaseTTL (9e9 s, ~285 years).
MAX_LEASE_TTL = 9_000_000_000
FOREVER = math.inf
META_PREFIX = b"lease/"
_ID = struct.Struct(">q")


def min_lease_ttl(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum lease TTL: ceil(1.5 x election timeout) seconds, where 1.5 x is
    computed in whole ticks: ((3 * election_ticks) // 2) * heartbeat."""
    ms = ((3 * election_ticks) // 2) * heartbeat_ms
    return max(-(-ms // 1000), 1)


@dataclass
class Lease:
    id: int
    ttl: int
    expiry: float = FOREVER
    keys: set[bytes] = field(default_factory=set)

    def remaining(self, now: float) -> int:
        """Whole seconds left, truncated toward zero (Go's int64(d.Seconds()))."""
        if self.expiry == FOREVER:
            return 2**63 - 1
        return int(self.expiry - now)


class Lessor:
    """Implements the MVCC store's LeaseBook (exists/attach/detach)."""

    def __init__(self, min_ttl: int = 2) -> None:
        self.min_ttl = min_ttl
        self.primary = False
        self._leases: dict[int, Lease] = {}
        # (expiry, seq, id); entries go stale on renew/revoke and are skipped lazily.
        self._heap: list[tuple[float, int, int]] = []
        self._seq = 0

    # -- LeaseBook ---------------------------------------------------------------
    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise EtcdError(errors.LEASE_NOT_FOUND)
        lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -- applied through the log -------------------------------------------------
    def grant(self, lease_id: int, ttl: int, now: float) -> Lease:
        if lease_id == 0:
            raise EtcdError(errors.LEASE_NOT_FOUND)
        if ttl > MAX_LEASE_TTL:
            raise EtcdError(errors.LEASE_TTL_TOO_LARGE)
        if lease_id in self._leases:
            raise EtcdError(errors.LEASE_EXISTS)
        lease = Lease(lease_id, max(ttl, self.min_ttl))
        self._leases[lease_id] = lease
        if self.primary:
            self._refresh(lease, now)
        return lease

    def restore(self, lease_id: int, ttl: int) -> None:
        """A lease loaded from storage: it does not expire until the next promote."""
        self._leases[lease_id] = Lease(lease_id, ttl)

    def revoke(self, lease_id: int) -> list[bytes]:
        """Forget the lease; returns its keys in key order (the caller deletes them,
        all in one revision)."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise EtcdError(errors.LEASE_NOT_FOUND)
        return sorted(lease.keys)

    # -- leader-local ------------------------------------------------------------
    def renew(self, lease_id: int, now: float) -> int:
        """KeepAlive: expiry = now + ttl; returns the TTL. An expired lease is about to
        be revoked: it is not found (etcd waits for the revocation, then says so)."""
        lease = self._leases.get(lease_id)
        if lease is None or lease.expiry <= now:
            raise EtcdError(errors.LEASE_NOT_FOUND)
        self._refresh(lease, now)
        return lease.ttl

    def time_to_live(self, lease_id: int, now: float) -> tuple[int, int, tuple[bytes, ...]]:
        """(remaining seconds, granted TTL, attached keys in key order)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise EtcdError(errors.LEASE_NOT_FOUND)
        return lease.remaining(now), lease.ttl, tuple(sorted(lease.keys))

    def leases(self) -> list[int]:
        """Every lease id, soonest expiry first (ties by id), as etcd's Leases()."""
        return [lease.id for lease in sorted(self._leases.values(), key=lambda le: (le.expiry, le.id))]

    def expired(self, now: float) -> list[int]:
        """Leases whose expiry is at or before `now`, soonest first. Each is reported
        once per expiry: a renew or a promote re-arms it."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expiry, _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is not None and lease.expiry == expiry:
                out.append(lease_id)
        return out

    def promote(self, now: float, extend: float = 0.0) -> None:
        """Become primary: every lease expires `extend + ttl` from now."""
        self.primary = True
        self._heap = []
        for lease_id in sorted(self._leases):
            self._refresh(self._leases[lease_id], now + extend)

    def demote(self) -> None:
        """Stop expiring: leases live forever until the next promote."""
        self.primary = False
        self._heap = []
        for lease in self._leases.values():
            lease.expiry = FOREVER

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def __len__(self) -> int:
        return len(self._leases)

    def _refresh(self, lease: Lease, now: float) -> None:
        """Set a new expiry. The heap keeps stale entries (skipped by `expired`); it is
        rebuilt when they outnumber the live ones, so keepalives cannot grow it."""
        lease.expiry = now + lease.ttl
        self._seq += 1
        heapq.heappush(self._heap, (lease.expiry, self._seq, lease.id))
        if len(self._heap) > 2 * len(self._leases) + 64:
            live: dict[int, tuple[float, int, int]] = {}
            for item in self._heap:
                current = self._leases.get(item[2])
                if current is not None and current.expiry == item[0]:
                    live[item[2]] = item
            self._heap = list(live.values())
            heapq.heapify(self._heap)


class IdGenerator:
    """etcd's idutil.Generator: member id's low 16 bits in the top 16 bits, then the
    start time's low 40 bits of unix milliseconds, then an 8-bit counter; the 48-bit
    suffix is incremented per id. Lease ids keep it positive (& 2**63-1, never 0)."""

    def __init__(self, member_id: int, unix_ms: int) -> None:
        self._prefix = (member_id & 0xFFFF) << 48
        self._suffix = (unix_ms & ((1 << 40) - 1)) << 8

    def next(self) -> int:
        self._suffix = (self._suffix + 1) & ((1 << 48) - 1)
        return self._prefix | self._suffix

    def next_lease_id(self) -> int:
        while True:
            lease_id = self.next() & ((1 << 63) - 1)
            if lease_id:
                return lease_id


# -- persistence -------------------------------------------------------------------
def _name(lease_id: int) -> bytes:
    return META_PREFIX + _ID.pack(lease_id)


def save(backend: KVBackend, lease_id: int, ttl: int) -> None:
    backend.put_meta(_name(lease_id), _ID.pack(ttl))


def remove(backend: KVBackend, lease_id: int) -> None:
    backend.delete_meta(_name(lease_id))


def load(view: KVReader) -> Iterable[tuple[int, int]]:
    """Stored leases as (id, ttl), in id order."""
    for name, value in view.meta_items(META_PREFIX):
        yield _ID.unpack(name[len(META_PREFIX) :])[0], _ID.unpack(value)[0]
