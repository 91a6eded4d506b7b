"""etcd's range permission checks (auth/range_perm_cache.go over pkg/adt).

A user's permissions are merged across its roles into two interval trees, read and
write, in etcd's insertion order (roles sorted, each role's permissions in order). A
single key is allowed if some interval holds it (`Intersects`); a range [key, end) if
the intervals the tree visits for it join without a gap and span it (`Contains`).
Bounds compare as etcd's BytesAffineComparable: the empty byte string is greater than
every other (a from-key permission, range_end b"\\x00", ends there).

The tree is etcd's red-black interval tree, ported node for node: for a request range
that is empty or inverted (end <= key, which reads or deletes nothing) what etcd
decides depends on the tree's shape, and this keeps even those decisions the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rusd.core.auth.types import Permission, PermType

_Bound = tuple[int, bytes]
_Interval = tuple[_Bound, _Bound]


def _bound(b: bytes) -> _Bound:
    """Affine order: b"" sorts after everything."""
    return (1, b"") if not b else (0, b)


def _cmp(a: _Bound, b: _Bound) -> int:
    return -1 if a < b else (1 if a > b else 0)


def _point(key: bytes) -> _Interval:
    return _bound(key), _bound(key + b"\x00")


def _compare(a: _Interval, b: _Interval) -> int:
    """adt.Interval.Compare: -1 if a is left of b, 1 if right of it, 0 if they overlap
    (taken literally: it also decides for empty and inverted intervals)."""
    if _cmp(a[0], b[0]) < 0 and _cmp(a[1], b[0]) <= 0:
        return -1
    if _cmp(a[0], b[1]) >= 0:
        return 1
    return 0


class _Node:
    __slots__ = ("ivl", "left", "max", "parent", "red", "right")

    def __init__(self, ivl: _Interval, sentinel: _Node | None) -> None:
        self.ivl = ivl
        self.max = ivl[1]
        self.red = sentinel is not None
        self.left: _Node = sentinel or self
        self.right: _Node = sentinel or self
        self.parent: _Node = sentinel or self


class IntervalTree:
    """adt.intervalTree, insert and queries only (etcd rebuilds it on every change)."""

    def __init__(self) -> None:
        self.nil = _Node(((1, b""), (1, b"")), None)
        self.root = self.nil

    def _update_max(self, x: _Node) -> None:
        nil = self.nil
        while x is not nil:
            top = x.ivl[1]
            if x.left is not nil and x.left.max > top:
                top = x.left.max
            if x.right is not nil and x.right.max > top:
                top = x.right.max
            if x.max == top:
                break
            x.max = top
            x = x.parent

    def insert(self, ivl: _Interval) -> None:
        nil = self.nil
        y, z, x = nil, _Node(ivl, nil), self.root
        while x is not nil:
            y = x
            x = x.left if z.ivl[0] < x.ivl[0] else x.right
        z.parent = y
        if y is nil:
            self.root = z
        else:
            if z.ivl[0] < y.ivl[0]:
                y.left = z
            else:
                y.right = z
            self._update_max(y)
        z.red = True
        self._insert_fixup(z)

    def _insert_fixup(self, z: _Node) -> None:
        while z.parent.red:
            grand = z.parent.parent
            if z.parent is grand.left:
                y = grand.right
                if y.red:
                    y.red = z.parent.red = False
                    grand.red = True
                    z = grand
                    continue
                if z is z.parent.right:
                    z = z.parent
                    self._rotate_left(z)
                z.parent.red = False
                z.parent.parent.red = True
                self._rotate_right(z.parent.parent)
            else:
                y = grand.left
                if y.red:
                    y.red = z.parent.red = False
                    grand.red = True
                    z = grand
                    continue
                if z is z.parent.left:
                    z = z.parent
                    self._rotate_right(z)
                z.parent.red = False
                z.parent.parent.red = True
                self._rotate_left(z.parent.parent)
        self.root.red = False

    def _rotate_left(self, x: _Node) -> None:
        nil = self.nil
        if x.right is nil:
            return
        y = x.right
        x.right = y.left
        if y.left is not nil:
            y.left.parent = x
        self._update_max(x)
        self._replace_parent(x, y)
        y.left = x
        self._update_max(y)

    def _rotate_right(self, x: _Node) -> None:
        nil = self.nil
        if x.left is nil:
            return
        y = x.left
        x.left = y.right
        if y.right is not nil:
            y.right.parent = x
        self._update_max(x)
        self._replace_parent(x, y)
        y.right = x
        self._update_max(y)

    def _replace_parent(self, x: _Node, y: _Node) -> None:
        y.parent = x.parent
        if x.parent is self.nil:
            self.root = y
        else:
            if x is x.parent.left:
                x.parent.left = y
            else:
                x.parent.right = y
            self._update_max(x.parent)
        x.parent = y

    def _visit(self, x: _Node, ivl: _Interval, visitor: Callable[[_Node], bool]) -> bool:
        if x is self.nil:
            return True
        v = _compare(ivl, x.ivl)
        if v < 0:
            return self._visit(x.left, ivl, visitor)
        if v > 0:
            if _compare((x.ivl[0], x.max), ivl) == 0:
                return self._visit(x.left, ivl, visitor) and self._visit(x.right, ivl, visitor)
            return True
        return self._visit(x.left, ivl, visitor) and visitor(x) and self._visit(x.right, ivl, visitor)

    def intersects(self, ivl: _Interval) -> bool:
        x, nil = self.root, self.nil
        while x is not nil and _compare(ivl, x.ivl) != 0:
            x = x.left if x.left is not nil and x.left.max > ivl[0] else x.right
        return x is not nil

    def contains(self, ivl: _Interval) -> bool:
        """The visited intervals, in start order, join up and span `ivl`."""
        span: list[_Bound] = []  # [lowest start, highest end] once something is visited
        gap = False

        def visit(n: _Node) -> bool:
            nonlocal gap
            if not span:
                span.extend(n.ivl)
                return True
            if span[1] < n.ivl[0]:
                gap = True
                return False
            span[1] = max(span[1], n.ivl[1])
            return True

        self._visit(self.root, ivl, visit)
        return not gap and bool(span) and span[1] >= ivl[1] and span[0] <= ivl[0]


def permission_interval(perm: Permission) -> _Interval:
    if not perm.range_end:
        return _point(perm.key)
    return _bound(perm.key), _bound(b"" if perm.range_end == b"\x00" else perm.range_end)


@dataclass(frozen=True, slots=True)
class RangePerms:
    """One user's merged permissions (etcd's unifiedRangePermissions)."""

    read: IntervalTree
    write: IntervalTree

    @classmethod
    def merge(cls, perms: Iterable[Permission]) -> RangePerms:
        """`perms` in etcd's order: the user's roles sorted, each role's permissions."""
        read, write = IntervalTree(), IntervalTree()
        for perm in perms:
            ivl = permission_interval(perm)
            if perm.perm_type in (PermType.READ, PermType.READWRITE):
                read.insert(ivl)
            if perm.perm_type in (PermType.WRITE, PermType.READWRITE):
                write.insert(ivl)
        return cls(read, write)

    def allows(self, key: bytes, range_end: bytes, write: bool) -> bool:
        """etcd's isRangeOpPermitted for one permission type."""
        tree = self.write if write else self.read
        if not range_end:
            return tree.intersects(_point(key))
        return tree.contains((_bound(key), _bound(b"" if range_end == b"\x00" else range_end)))
