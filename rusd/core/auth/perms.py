"""etcd's range permission checks (auth/range_perm_cache.go over pkg/adt).

A user's permissions are merged across its roles into two sets of intervals, read
and write. A single key is allowed if some interval holds it; a range [key, end) if
the intervals overlapping it, taken in order of their start, join without a gap and
reach from at or before `key` to at or past `end`. Bounds compare as etcd's
BytesAffineComparable: the empty byte string is greater than every other (a from-key
permission, range_end b"\\x00", ends there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rusd.core.auth.types import Permission, PermType

_Bound = tuple[int, bytes]
_Interval = tuple[_Bound, _Bound]


def _bound(b: bytes) -> _Bound:
    """Affine order: b"" sorts after everything."""
    return (1, b"") if not b else (0, b)


def _point(key: bytes) -> _Interval:
    return _bound(key), _bound(key + b"\x00")


def _overlaps(a: _Interval, b: _Interval) -> bool:
    """adt.Interval.Compare(a, b) == 0, taken literally (it also decides for empty
    and inverted intervals)."""
    left = a[0] < b[0] and a[1] <= b[0]
    right = a[0] >= b[1]
    return not left and not right


def permission_interval(perm: Permission) -> _Interval:
    end = b"" if perm.range_end == b"\x00" else perm.range_end
    if not perm.range_end:
        return _point(perm.key)
    return _bound(perm.key), _bound(end)


@dataclass(frozen=True, slots=True)
class RangePerms:
    """One user's merged permissions; intervals sorted by start."""

    read: tuple[_Interval, ...]
    write: tuple[_Interval, ...]

    @classmethod
    def merge(cls, perms: Iterable[Permission]) -> RangePerms:
        read: list[_Interval] = []
        write: list[_Interval] = []
        for perm in perms:
            ivl = permission_interval(perm)
            if perm.perm_type in (PermType.READ, PermType.READWRITE):
                read.append(ivl)
            if perm.perm_type in (PermType.WRITE, PermType.READWRITE):
                write.append(ivl)
        return cls(tuple(sorted(read)), tuple(sorted(write)))

    def allows(self, key: bytes, range_end: bytes, write: bool) -> bool:
        """etcd's isRangeOpPermitted for one permission type."""
        intervals = self.write if write else self.read
        if not range_end:
            pt = _point(key)
            return any(_overlaps(pt, ivl) for ivl in intervals)
        want = (_bound(key), _bound(b"" if range_end == b"\x00" else range_end))
        return covers(intervals, want)


def covers(intervals: Iterable[_Interval], want: _Interval) -> bool:
    """adt.IntervalTree.Contains: the intervals overlapping `want`, by start, must be
    contiguous and span it."""
    lo: _Bound | None = None
    hi: _Bound | None = None
    for ivl in intervals:
        if not _overlaps(want, ivl):
            continue
        if lo is None or hi is None:
            lo, hi = ivl
            continue
        if hi < ivl[0]:
            return False
        hi = max(hi, ivl[1])
    return lo is not None and hi is not None and hi >= want[1] and lo <= want[0]
