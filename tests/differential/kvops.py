"""Random KV requests for the differential test, and how to compare the answers.

`OpGenerator` draws a seeded sequence of KV gRPC requests (Range, Put,
DeleteRange, Txn, Compact) over a small key space, so that operations interact:
ranges see earlier puts, txn compares hit existing and missing keys, compactions
make earlier revisions unreadable. It follows the reference server's revision and
compact revision (`observe`) so that it can aim reads and compactions at past,
current, future and compacted revisions.

Sorting: every range returns at most len(KEYS) = 11 kvs. etcd 3.4.23 is built with
Go 1.19, whose sort.Sort is an insertion sort for n <= 12, i.e. stable; rusd sorts
with Python's stable sort. So kvs that tie on the sort target come back in key order
from both, and the comparison can be exact also for VERSION/CREATE/MOD/VALUE sorts.
Do not grow KEYS past 12 without revisiting this.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import text_format
from google.protobuf.message import Message

from rusd.api.etcdserverpb import rpc_pb2 as pb

# At most 12 keys (see the module docstring). Chosen to straddle the interesting
# bounds: b"\x00" (smallest key), prefixes of each other, a NUL after a prefix,
# b"\xff"... (largest; no prefix end exists for b"\xff\xff").
KEYS = [b"\x00", b"a", b"a\x00", b"a/", b"a/1", b"a/2", b"ab", b"b", b"c", b"\xff", b"\xff\xff"]
# Arbitrary range ends, some below some keys (empty ranges) and b"\x01".
ENDS = [b"\x01", b"a", b"a/", b"a/2", b"a0", b"b", b"b\x00", b"c", b"d", b"\xff", b"\xff\xff", b"\xff\xff\xff"]
VALUES = [b"", b"v", b"w", b"x", b"\x00", b"\xff", b"vv", b"a/1"]

MAX_REQUEST_BYTES = 1572864  # etcd's default --max-request-bytes, also rusd's
MAX_TXN_OPS = 128

# Lease ids nothing ever grants.
UNKNOWN_LEASES = [1, 7, 0x7FFF_FFFF_FFFF_FFFF, -1, 123456789]
# Client-chosen lease ids that LeaseGrant ops use (server-chosen ids would differ),
# so puts can attach keys and revokes delete them on both servers alike. TTLs are
# long enough that nothing expires during a run.
LEASES = [0x100, 0x101, 0x102]
LEASE_TTLS = [3600, 7200, 9_000_000_001]

# Invalid enum numbers (proto3 enums are open, they reach the server).
INVALID_ENUM = 7


def prefix_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: last byte < 0xff incremented; b"\\x00" when none."""
    k = bytearray(key)
    for i in range(len(k) - 1, -1, -1):
        if k[i] < 0xFF:
            k[i] += 1
            return bytes(k[: i + 1])
    return b"\x00"


@dataclass
class Op:
    method: str  # rpc name
    request: Message
    service: str = "KV"  # or "Lease"


@dataclass
class State:
    """What the generator knows of the servers (from the reference's answers)."""

    rev: int = 1
    compacted: int = -1  # etcd's compactMainRev before the first compaction


class OpGenerator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.state = State()

    # -- state ------------------------------------------------------------------
    def observe(self, op: Op, response: Message | None) -> None:
        """Follow the reference's answer (None for an error)."""
        if response is None:
            return
        self.state.rev = response.header.revision  # type: ignore[attr-defined]
        if op.method == "Compact":
            self.state.compacted = op.request.revision  # type: ignore[attr-defined]

    # -- small choices ------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def key(self, empty_p: float = 0.02) -> bytes:
        if self.chance(empty_p):
            return b""
        return self.rng.choice(KEYS)

    def value(self) -> bytes:
        if self.chance(0.15):
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 9)))
        return self.rng.choice(VALUES)

    def range_end(self, key: bytes) -> bytes:
        kind = self.rng.random()
        if kind < 0.25:
            return b""
        if kind < 0.55:
            return b"\x00"
        if kind < 0.75:
            return prefix_end(key)
        return self.rng.choice(ENDS)

    def revision(self) -> int:
        """Any revision a client might ask for: latest, past, current, future,
        compacted, exactly the compact revision, negative."""
        s = self.state
        r = self.rng.random()
        if r < 0.40:
            return 0
        if r < 0.45:
            return self.rng.choice([-1, -2, -100])
        if r < 0.65:
            return self.rng.randint(max(s.compacted, 1), s.rev)  # still readable
        if r < 0.75:
            return s.rev
        if r < 0.85:
            return s.rev + self.rng.choice([1, 1, 2, 50])
        if s.compacted > 0 and r < 0.95:
            return self.rng.randint(0, s.compacted)
        return max(s.compacted, 1)

    def small_rev(self) -> int:
        """A mod/create revision filter or compare operand near the live range."""
        if self.chance(0.5):
            return 0
        return self.rng.randint(-1, self.state.rev + 2)

    # -- requests -------------------------------------------------------------------
    def range_request(self) -> pb.RangeRequest:
        key = self.key()
        r = pb.RangeRequest(key=key, range_end=self.range_end(key))
        if self.chance(0.35):
            r.limit = self.rng.choice([-1, 1, 1, 2, 2, 3, 5, 20])
        if self.chance(0.35):
            r.revision = self.revision()
        if self.chance(0.4):
            order, target = self._sort()
            r.sort_order = order  # type: ignore[assignment]
            r.sort_target = target  # type: ignore[assignment]
        r.serializable = self.chance(0.2)
        r.keys_only = self.chance(0.15)
        r.count_only = self.chance(0.1)
        if self.chance(0.25):
            r.min_mod_revision = self.small_rev()
            r.max_mod_revision = self.small_rev()
        if self.chance(0.25):
            r.min_create_revision = self.small_rev()
            r.max_create_revision = self.small_rev()
        return r

    def _sort(self) -> tuple[int, int]:
        """Sort order and target, valid or not.

        An invalid sort_target is only ever combined with an invalid sort_order:
        etcd 3.4 nil-derefs (the whole server panics) when it has to sort by an
        unknown target, which is any order but an unknown one (NONE sorts
        ASCEND for targets other than KEY). rusd answers those with "invalid sort
        option" (etcd 3.6's check); nothing to compare them with.
        """
        order = self.rng.choice([0, 1, 2, 0, 1, 2, INVALID_ENUM, 3])
        target = self.rng.choice([0, 1, 2, 3, 4])
        if order not in (0, 1, 2) and self.chance(0.3):
            target = self.rng.choice([5, INVALID_ENUM])
        return order, target

    def put_request(self) -> pb.PutRequest:
        r = pb.PutRequest(key=self.key(), value=self.value(), prev_kv=self.chance(0.4))
        x = self.rng.random()
        if x < 0.08:
            r.ignore_value = True
            if not self.chance(0.25):  # else: value provided -> error
                r.value = b""
        elif x < 0.14:
            r.ignore_lease = True
            if self.chance(0.25):  # lease provided -> error
                r.lease = self.rng.choice(UNKNOWN_LEASES)
        elif x < 0.17:
            r.ignore_value = r.ignore_lease = True
            r.value = b""
        elif x < 0.21:
            r.lease = self.rng.choice(UNKNOWN_LEASES)  # lease not found
        elif x < 0.31:
            r.lease = self.rng.choice(LEASES)  # granted, or not (yet / any more)
        return r

    def delete_request(self) -> pb.DeleteRangeRequest:
        key = self.key()
        return pb.DeleteRangeRequest(key=key, range_end=self.range_end(key), prev_kv=self.chance(0.5))

    def compare(self) -> pb.Compare:
        key = self.key(empty_p=0.01)
        c = pb.Compare(key=key)
        if self.chance(0.25):
            c.range_end = self.range_end(key)
        c.target = self.rng.choice([0, 1, 2, 3, 4, 0, 3]) if not self.chance(0.03) else INVALID_ENUM  # type: ignore[assignment]
        c.result = self.rng.choice([0, 1, 2, 3]) if not self.chance(0.03) else INVALID_ENUM  # type: ignore[assignment]
        # The operand, usually in the oneof member matching the target; sometimes in
        # another member (then etcd compares against zero / b""), sometimes unset.
        member: int = c.target
        x = self.rng.random()
        if x < 0.12:
            member = self.rng.choice([0, 1, 2, 3, 4])
        elif x < 0.17:
            return c
        setters: dict[int, Callable[[], None]] = {
            pb.Compare.VERSION: lambda: setattr(c, "version", self.rng.choice([0, 1, 2, 3, -1])),
            pb.Compare.CREATE: lambda: setattr(c, "create_revision", self.small_rev()),
            pb.Compare.MOD: lambda: setattr(c, "mod_revision", self.small_rev()),
            pb.Compare.VALUE: lambda: setattr(c, "value", self.value()),
            pb.Compare.LEASE: lambda: setattr(c, "lease", self.rng.choice([0, 0, 1, -1, *LEASES])),
        }
        setters.get(member, setters[pb.Compare.VALUE])()
        return c

    def request_op(self, depth: int) -> pb.RequestOp:
        x = self.rng.random()
        if x < 0.01:
            return pb.RequestOp()  # empty op
        if x < 0.35:
            return pb.RequestOp(request_range=self.range_request())
        if x < 0.70:
            return pb.RequestOp(request_put=self._txn_put())
        if x < 0.88 or depth >= 2:
            return pb.RequestOp(request_delete_range=self.delete_request())
        return pb.RequestOp(request_txn=self.txn_request(depth + 1))

    def _txn_put(self) -> pb.PutRequest:
        r = self.put_request()
        if r.lease and self.chance(0.6):  # keep most txns alive
            r.lease = 0
        return r

    def txn_request(self, depth: int = 0) -> pb.TxnRequest:
        r = pb.TxnRequest(compare=[self.compare() for _ in range(self.rng.choice([0, 1, 1, 2, 3]))])
        for branch in (r.success, r.failure):
            n = self.rng.choice([0, 1, 1, 2, 2, 3, 4])
            branch.extend(self.request_op(depth) for _ in range(n))
        return r

    def big_txn(self) -> pb.TxnRequest:
        """Around max-txn-ops: 128 compares/ops per level is fine, 129 is not, and a
        nested txn gets only what is left after its parent's widest list."""

        def ranges(n: int) -> list[pb.RequestOp]:
            return [pb.RequestOp(request_range=pb.RangeRequest(key=self.key(0))) for _ in range(n)]

        x = self.rng.random()
        n = self.rng.choice([MAX_TXN_OPS, MAX_TXN_OPS + 1])
        if x < 0.33:
            return pb.TxnRequest(compare=[pb.Compare(key=self.key(0)) for _ in range(n)])
        if x < 0.66:
            r = pb.TxnRequest(compare=[pb.Compare(key=self.key(0))])
            (r.success if self.chance(0.5) else r.failure).extend(ranges(n))
            return r
        outer = self.rng.randint(1, MAX_TXN_OPS - 1)
        inner = MAX_TXN_OPS - outer + self.rng.choice([-1, 0, 1])
        nested = pb.TxnRequest(success=ranges(inner))
        return pb.TxnRequest(success=[*ranges(outer - 1), pb.RequestOp(request_txn=nested)])

    def dup_txn(self) -> pb.TxnRequest:
        """Txns aimed at etcd's checkIntervals (put twice, put in a deleted range,
        across nesting levels and branches)."""
        k = self.key(0)
        put = pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"d"))
        other = pb.RequestOp(request_put=pb.PutRequest(key=self.key(0), value=b"e"))
        delete = pb.RequestOp(request_delete_range=self.delete_request())
        nested = pb.TxnRequest(compare=[self.compare()])
        (nested.success if self.chance(0.5) else nested.failure).append(put)
        if self.chance(0.5):
            (nested.success if self.chance(0.5) else nested.failure).append(other)
        if self.chance(0.3):
            nested.failure.append(delete)
        level = [put, other, delete, pb.RequestOp(request_txn=nested)]
        self.rng.shuffle(level)
        level = level[: self.rng.randint(2, 4)]
        r = pb.TxnRequest(compare=[self.compare()])
        (r.success if self.chance(0.5) else r.failure).extend(level)
        return r

    def compact_request(self) -> pb.CompactionRequest:
        s = self.state
        x = self.rng.random()
        if x < 0.45:
            rev = self.rng.randint(min(max(s.compacted + 1, 1), s.rev), s.rev)  # usually a valid one
        elif x < 0.55:
            rev = s.rev
        elif x < 0.65:
            rev = s.rev + self.rng.choice([1, 5])
        elif x < 0.80:
            rev = self.rng.randint(min(s.compacted, 0), max(s.compacted, 0))  # already compacted
        else:
            rev = self.rng.choice([0, -1, s.compacted - 1, s.compacted + 1])
        return pb.CompactionRequest(revision=rev, physical=self.chance(0.5))

    def oversize(self) -> Op:
        """Just above --max-request-bytes (the proposal adds a few header bytes
        on top of the request, so at the limit is already over), or a bad request
        that is also too big (the request checks come first in etcd)."""
        big = bytes(self.rng.randrange(256) for _ in range(16)) * (MAX_REQUEST_BYTES // 16)
        big += b"x" * self.rng.randint(0, 64)
        x = self.rng.random()
        if x < 0.3:
            return Op("Put", pb.PutRequest(key=self.key(0.3), value=big))
        if x < 0.4:
            return Op("Put", pb.PutRequest(key=self.key(0), value=big, ignore_value=True))
        if x < 0.55:
            return Op("DeleteRange", pb.DeleteRangeRequest(key=big))
        if x < 0.75:
            # (One copy only: two would pass gRPC's own message limit, max-request-bytes
            # + 512 KiB, whose error text is the gRPC library's, not etcd's.)
            put = pb.RequestOp(request_put=pb.PutRequest(key=self.key(0), value=big))
            branch = "success" if self.chance(0.5) else "failure"
            return Op("Txn", pb.TxnRequest(compare=[self.compare()], **{branch: [put]}))
        if x < 0.85:
            # A read-only txn never becomes a proposal: no size limit (below the
            # gRPC message limit) in etcd.
            return Op("Txn", pb.TxnRequest(compare=[pb.Compare(key=self.key(0), target=pb.Compare.VALUE, value=big)]))
        # etcd 3.4 proposes every txn that holds a nested txn (isTxnReadonly looks
        # only for ranges), so this read-only one is size-checked.
        nested = pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=big))])
        return Op("Txn", pb.TxnRequest(success=[pb.RequestOp(request_txn=nested)]))

    def near_limit_put(self) -> Op:
        """A put that is big but fits (etcd's proposal envelope is < 32 bytes)."""
        value = b"n" * (MAX_REQUEST_BYTES - 64 - self.rng.randint(0, 64))
        return Op("Put", pb.PutRequest(key=self.key(0), value=value))

    def next(self) -> Op:
        op = self._next()
        if isinstance(op.request, pb.TxnRequest):
            avoid_etcd_panic(op.request)
        return op

    def _next(self) -> Op:
        x = self.rng.random()
        if x < 0.30:
            return Op("Range", self.range_request())
        if x < 0.52:
            return Op("Put", self.put_request())
        if x < 0.62:
            return Op("DeleteRange", self.delete_request())
        if x < 0.86:
            return Op("Txn", self.txn_request())
        if x < 0.90:
            return Op("Txn", self.dup_txn())
        if x < 0.91:
            return Op("Txn", self.big_txn())
        if x < 0.93:
            return Op("Compact", self.compact_request())
        if x < 0.936:
            return self.oversize()
        if x < 0.937:
            return self.near_limit_put()
        if x < 0.95:
            return self.lease_op()
        return self.bad_request()

    def lease_op(self) -> Op:
        """Grant (new or existing id, or a too large TTL), revoke (attached keys go in
        one revision), TimeToLive (the remaining TTL is compared loosely)."""
        x = self.rng.random()
        lease_id = self.rng.choice(LEASES)
        if x < 0.45:
            return Op("LeaseGrant", pb.LeaseGrantRequest(ID=lease_id, TTL=self.rng.choice(LEASE_TTLS)), "Lease")
        if x < 0.75:
            return Op("LeaseRevoke", pb.LeaseRevokeRequest(ID=self.rng.choice([*LEASES, 1])), "Lease")
        return Op("LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=lease_id, keys=self.chance(0.5)), "Lease")

    def bad_request(self) -> Op:
        """Empty keys everywhere, and requests that contradict themselves."""
        x = self.rng.random()
        if x < 0.15:
            return Op("Range", pb.RangeRequest(key=b"", range_end=self.rng.choice([b"", b"\x00", b"a"])))
        if x < 0.3:
            return Op("Put", pb.PutRequest(key=b"", value=self.value()))
        if x < 0.4:
            return Op("DeleteRange", pb.DeleteRangeRequest(key=b"", range_end=self.rng.choice([b"", b"\x00"])))
        if x < 0.5:
            return Op("Put", pb.PutRequest(key=self.key(0), value=b"v", ignore_value=True))
        if x < 0.6:
            return Op("Put", pb.PutRequest(key=self.key(0), lease=self.rng.choice(UNKNOWN_LEASES), ignore_lease=True))
        # A txn with one bad spot: an empty compare key, an empty key in an op, an
        # empty RequestOp, at this level or nested.
        r = self.txn_request(depth=1)
        bad = self.rng.choice(["compare", "range", "put", "delete", "empty"])
        if bad == "compare":
            r.compare.append(pb.Compare(key=b"", target=pb.Compare.VERSION, version=0))
            return Op("Txn", r)
        op = {
            "range": pb.RequestOp(request_range=pb.RangeRequest(key=b"")),
            "put": pb.RequestOp(request_put=pb.PutRequest(key=b"", value=b"v")),
            "delete": pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"")),
            "empty": pb.RequestOp(),
        }[bad]
        branch = r.success if self.chance(0.5) else r.failure
        branch.insert(self.rng.randint(0, len(branch)), op)
        if self.chance(0.3):
            return Op("Txn", pb.TxnRequest(failure=[pb.RequestOp(request_txn=r)]))
        return Op("Txn", r)


def avoid_etcd_panic(txn: pb.TxnRequest) -> None:
    """Turn from-key deletes into single-key ones in a txn that also has an
    ignore_value/ignore_lease put.

    etcd 3.4 checks such a put's key against the state before the txn, but its
    duplicate-key check misses from-key deletes (range_end b"\x00" is an empty
    string interval there): when such a delete runs first and removes the key, the
    put fails while the txn is applied, and etcd panics (the whole server exits).
    rusd refuses those txns with "key not found" instead; there is nothing to compare.
    """
    deletes: list[pb.DeleteRangeRequest] = []
    ignoring = False

    def walk(t: pb.TxnRequest) -> None:
        nonlocal ignoring
        for op in (*t.success, *t.failure):
            which = op.WhichOneof("request")
            if which == "request_delete_range" and op.request_delete_range.range_end == b"\x00":
                deletes.append(op.request_delete_range)
            elif which == "request_put" and (op.request_put.ignore_value or op.request_put.ignore_lease):
                ignoring = True
            elif which == "request_txn":
                walk(op.request_txn)

    walk(txn)
    if ignoring:
        for d in deletes:
            d.range_end = b""


# -- comparing ------------------------------------------------------------------


def strip_identity(resp: Message) -> Message:
    """A copy without what legitimately differs between two clusters: the
    top-level header's cluster_id, member_id and raft_term. Everything else,
    nested headers included, must be identical."""
    out = type(resp)()
    out.CopyFrom(resp)
    header = out.header  # type: ignore[attr-defined]
    header.cluster_id = header.member_id = header.raft_term = 0
    return out


def abbreviate(msg: Message, limit: int = 64) -> Message:
    """A copy with long bytes fields cut, for printing."""
    out = type(msg)()
    out.CopyFrom(msg)
    _cut(out, limit)
    return out


def _cut(msg: Message, limit: int) -> None:
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            for sub in value if fd.is_repeated else [value]:
                _cut(sub, limit)
        elif isinstance(value, bytes) and len(value) > limit:
            setattr(msg, fd.name, value[:16] + f"...<{len(value)} bytes>".encode())


def show(msg: Message) -> str:
    return text_format.MessageToString(abbreviate(msg), as_utf8=False) or "<empty>"
