"""The client-visible history: what the simulator (and later the real-process harness)
records and what the checkers read.

One JSON object per line. An operation line::

    {"kind": "op", "client": 3, "call": 1200, "return": 1450, "member": 2,
     "request": {"type": "put", "key": "k1", "value": "v7", "lease": 0, "prev_kv": false},
     "response": {"revision": 57, "result": {"type": "put", "prev_kv": null}},
     "error": null, "indeterminate": false}

A watch stream line holds the stream's request and every response it received. Keys and
values are byte strings written as latin-1 text (one character per byte, so any bytes
round-trip and ASCII keys stay readable). Times are integers (microseconds of simulated or
wall time) on one clock shared by all clients.

An operation is *indeterminate* when the client cannot know whether it took effect: a
timeout, "leader changed", a lost connection. The checker lets an indeterminate write take
effect at any point after its call, or never; `classify_error` decides which errors are
indeterminate (every error the etcd model cannot produce itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias


class HistoryError(ValueError):
    """A history line that cannot be decoded, or an operation that contradicts itself."""


class KV(NamedTuple):
    """A key at one revision (etcd's mvccpb.KeyValue)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """range_end b"" is one key; b"\\x00" is every key >= key. revision 0 reads the latest.
    A serializable range may be answered from a member's local, possibly stale, state."""

    key: bytes
    range_end: bytes = b""
    revision: int = 0
    limit: int = 0
    count_only: bool = False
    serializable: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


COMPARE_TARGETS = ("value", "version", "create", "mod", "lease")
COMPARE_RESULTS = ("=", "!=", ">", "<")


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn guard on one key; `operand` is bytes for the "value" target, an int otherwise."""

    key: bytes
    target: str
    result: str
    operand: bytes | int

    def __post_init__(self) -> None:
        if self.target not in COMPARE_TARGETS:
            raise HistoryError(f"compare target {self.target!r} is not one of {COMPARE_TARGETS}")
        if self.result not in COMPARE_RESULTS:
            raise HistoryError(f"compare result {self.result!r} is not one of {COMPARE_RESULTS}")
        if (self.target == "value") != isinstance(self.operand, bytes):
            raise HistoryError(f"compare on {self.target} needs a {'bytes' if self.target == 'value' else 'int'}")


TxnOp: TypeAlias = Range | Put | Delete


@dataclass(frozen=True, slots=True)
class Txn:
    compares: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()


@dataclass(frozen=True, slots=True)
class Compact:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """id 0 lets the server choose; the response says which."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    id: int


Request: TypeAlias = Range | Put | Delete | Txn | Compact | LeaseGrant | LeaseRevoke

# -- responses --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KV, ...] = ()
    count: int = 0
    more: bool = False


@dataclass(frozen=True, slots=True)
class PutResult:
    prev_kv: KV | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int = 0
    prev_kvs: tuple[KV, ...] = ()


TxnOpResult: TypeAlias = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    results: tuple[TxnOpResult, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactResult:
    pass


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    pass


Result: TypeAlias = (
    RangeResult | PutResult | DeleteResult | TxnResult | CompactResult | LeaseGrantResult | LeaseRevokeResult
)


@dataclass(frozen=True, slots=True)
class Response:
    """`revision` is the header revision: the store's revision right after the request
    applied (member id and raft term are not recorded: a client cannot predict them)."""

    revision: int
    result: Result


# -- operations -------------------------------------------------------------------------------

# Substrings of the errors the etcd model produces itself: an operation that failed with
# one of them did not take effect, and the model must agree it fails.
DETERMINATE_ERRORS = (
    "mvcc: required revision has been compacted",
    "mvcc: required revision is a future revision",
    "requested lease not found",
    "lease already exists",
)


def classify_error(message: str) -> bool:
    """True when an operation that failed with `message` may still have taken effect."""
    return not any(e in message for e in DETERMINATE_ERRORS)


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call. `ret` is None when the client never saw an answer (it gave up or
    crashed); such an operation must be indeterminate."""

    client: int
    call: int
    ret: int | None
    request: Request
    response: Response | None = None
    error: str | None = None
    member: int | None = None
    indeterminate: bool = False

    def __post_init__(self) -> None:
        if self.ret is not None and self.ret < self.call:
            raise HistoryError(f"client {self.client}: operation returns at {self.ret} before its call at {self.call}")
        if self.indeterminate:
            if self.response is not None:
                raise HistoryError(f"client {self.client}: an indeterminate operation has no response")
            return
        if self.ret is None:
            raise HistoryError(f"client {self.client}: a determinate operation needs a return time")
        if (self.response is None) == (self.error is None):
            raise HistoryError(f"client {self.client}: a determinate operation has exactly one of response, error")

    @classmethod
    def failed(
        cls, client: int, call: int, ret: int | None, request: Request, error: str, member: int | None = None
    ) -> Operation:
        """An operation that ended with `error`, marked indeterminate when it may have applied."""
        return cls(client, call, ret, request, None, error, member, classify_error(error))


# -- watch streams ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """type "PUT" or "DELETE"; a DELETE's kv holds the key and the delete revision only."""

    type: str
    kv: KV
    prev_kv: KV | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchResponse:
    revision: int  # header revision
    events: tuple[WatchEvent, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    progress_notify: bool = False


@dataclass(frozen=True, slots=True)
class WatchStream:
    """One watch (one watch id) and every response it received, in arrival order.
    start_revision 0 means "from the revision after the one current at creation"."""

    client: int
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    responses: tuple[WatchResponse, ...] = ()
    member: int | None = None


@dataclass(frozen=True)
class History:
    operations: tuple[Operation, ...] = ()
    watches: tuple[WatchStream, ...] = ()


# -- describing -------------------------------------------------------------------------------


def _t(b: bytes) -> str:
    return b.decode("latin-1")


def _span(key: bytes, range_end: bytes) -> str:
    if not range_end:
        return _t(key)
    if range_end == b"\x00":
        return f"[{_t(key)}..)"
    return f"[{_t(key)}..{_t(range_end)})"


def describe_request(r: Request) -> str:
    if isinstance(r, Range):
        extra = "".join(
            [
                f" @{r.revision}" if r.revision else "",
                f" limit {r.limit}" if r.limit else "",
                " count" if r.count_only else "",
                " serializable" if r.serializable else "",
            ]
        )
        return f"range {_span(r.key, r.range_end)}{extra}"
    if isinstance(r, Put):
        return f"put {_t(r.key)}={_t(r.value)}" + (f" lease {r.lease}" if r.lease else "")
    if isinstance(r, Delete):
        return f"delete {_span(r.key, r.range_end)}"
    if isinstance(r, Txn):
        cs = " && ".join(
            f"{c.target}({_t(c.key)}) {c.result} {_t(c.operand) if isinstance(c.operand, bytes) else c.operand}"
            for c in r.compares
        )
        ok = "; ".join(describe_request(o) for o in r.success)
        ko = "; ".join(describe_request(o) for o in r.failure)
        return f"txn if {cs or 'true'} then {ok or '-'} else {ko or '-'}"
    if isinstance(r, Compact):
        return f"compact {r.revision}"
    if isinstance(r, LeaseGrant):
        return f"lease grant {r.id} ttl {r.ttl}"
    return f"lease revoke {r.id}"


def _describe_kv(kv: KV) -> str:
    return f"{_t(kv.key)}={_t(kv.value)}(c{kv.create_revision} m{kv.mod_revision} v{kv.version})"


def describe_result(r: Result) -> str:
    if isinstance(r, RangeResult):
        kvs = ", ".join(_describe_kv(kv) for kv in r.kvs)
        return f"[{kvs}] count {r.count}" + (" more" if r.more else "")
    if isinstance(r, PutResult):
        return "ok" + (f" prev {_describe_kv(r.prev_kv)}" if r.prev_kv else "")
    if isinstance(r, DeleteResult):
        return f"deleted {r.deleted}"
    if isinstance(r, TxnResult):
        return ("succeeded" if r.succeeded else "failed") + "".join(f"; {describe_result(x)}" for x in r.results)
    if isinstance(r, LeaseGrantResult):
        return f"lease {r.id} ttl {r.ttl}"
    return "ok"


def describe_outcome(response: Response | None, error: str | None) -> str:
    if response is not None:
        return f"{describe_result(response.result)} @rev {response.revision}"
    return f"error {error!r}" if error is not None else "unknown"


def describe(op: Operation) -> str:
    """One line a human can read in a failure report."""
    end = "?" if op.ret is None else str(op.ret)
    outcome = "indeterminate" if op.indeterminate else describe_outcome(op.response, op.error)
    member = f" via member {op.member}" if op.member is not None else ""
    return f"client {op.client} [{op.call}..{end}]{member}: {describe_request(op.request)} -> {outcome}"


# -- JSON lines -------------------------------------------------------------------------------

Json: TypeAlias = Any


def _kv_json(kv: KV | None) -> Json:
    if kv is None:
        return None
    return {
        "key": _t(kv.key), "value": _t(kv.value), "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision, "version": kv.version, "lease": kv.lease,
    }


def _b(s: Json) -> bytes:
    if not isinstance(s, str):
        raise HistoryError(f"expected a string, got {s!r}")
    return s.encode("latin-1")


def _i(x: Json) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise HistoryError(f"expected an integer, got {x!r}")
    return x


def _bool(x: Json) -> bool:
    if not isinstance(x, bool):
        raise HistoryError(f"expected true or false, got {x!r}")
    return x


def _kv(d: Json) -> KV | None:
    if d is None:
        return None
    return KV(
        _b(d["key"]), _b(d["value"]), _i(d["create_revision"]), _i(d["mod_revision"]), _i(d["version"]),
        _i(d["lease"]),
    )


def _kvs(x: Json) -> tuple[KV, ...]:
    out = []
    for d in x:
        kv = _kv(d)
        if kv is None:
            raise HistoryError("a key-value list holds null")
        out.append(kv)
    return tuple(out)


def request_json(r: Request) -> Json:
    if isinstance(r, Range):
        return {
            "type": "range", "key": _t(r.key), "range_end": _t(r.range_end), "revision": r.revision,
            "limit": r.limit, "count_only": r.count_only, "serializable": r.serializable,
        }
    if isinstance(r, Put):
        return {"type": "put", "key": _t(r.key), "value": _t(r.value), "lease": r.lease, "prev_kv": r.prev_kv}
    if isinstance(r, Delete):
        return {"type": "delete", "key": _t(r.key), "range_end": _t(r.range_end), "prev_kv": r.prev_kv}
    if isinstance(r, Txn):
        return {
            "type": "txn",
            "compares": [
                {
                    "key": _t(c.key), "target": c.target, "result": c.result,
                    "operand": _t(c.operand) if isinstance(c.operand, bytes) else c.operand,
                }
                for c in r.compares
            ],
            "success": [request_json(o) for o in r.success],
            "failure": [request_json(o) for o in r.failure],
        }
    if isinstance(r, Compact):
        return {"type": "compact", "revision": r.revision}
    if isinstance(r, LeaseGrant):
        return {"type": "lease_grant", "id": r.id, "ttl": r.ttl}
    return {"type": "lease_revoke", "id": r.id}


def _txn_op(d: Json) -> TxnOp:
    r = request_from_json(d)
    if not isinstance(r, Range | Put | Delete):
        raise HistoryError(f"a txn branch holds a {d.get('type')!r} request")
    return r


def request_from_json(d: Json) -> Request:
    kind = d["type"]
    if kind == "range":
        return Range(
            _b(d["key"]), _b(d["range_end"]), _i(d["revision"]), _i(d["limit"]), _bool(d["count_only"]),
            _bool(d["serializable"]),
        )
    if kind == "put":
        return Put(_b(d["key"]), _b(d["value"]), _i(d["lease"]), _bool(d["prev_kv"]))
    if kind == "delete":
        return Delete(_b(d["key"]), _b(d["range_end"]), _bool(d["prev_kv"]))
    if kind == "txn":
        compares = tuple(
            Compare(
                _b(c["key"]), c["target"], c["result"], _b(c["operand"]) if c["target"] == "value" else _i(c["operand"])
            )
            for c in d["compares"]
        )
        return Txn(compares, tuple(_txn_op(o) for o in d["success"]), tuple(_txn_op(o) for o in d["failure"]))
    if kind == "compact":
        return Compact(_i(d["revision"]))
    if kind == "lease_grant":
        return LeaseGrant(_i(d["id"]), _i(d["ttl"]))
    if kind == "lease_revoke":
        return LeaseRevoke(_i(d["id"]))
    raise HistoryError(f"unknown request type {kind!r}")


def result_json(r: Result) -> Json:
    if isinstance(r, RangeResult):
        return {"type": "range", "kvs": [_kv_json(kv) for kv in r.kvs], "count": r.count, "more": r.more}
    if isinstance(r, PutResult):
        return {"type": "put", "prev_kv": _kv_json(r.prev_kv)}
    if isinstance(r, DeleteResult):
        return {"type": "delete", "deleted": r.deleted, "prev_kvs": [_kv_json(kv) for kv in r.prev_kvs]}
    if isinstance(r, TxnResult):
        return {"type": "txn", "succeeded": r.succeeded, "results": [result_json(x) for x in r.results]}
    if isinstance(r, CompactResult):
        return {"type": "compact"}
    if isinstance(r, LeaseGrantResult):
        return {"type": "lease_grant", "id": r.id, "ttl": r.ttl}
    return {"type": "lease_revoke"}


def _txn_op_result(d: Json) -> TxnOpResult:
    r = result_from_json(d)
    if not isinstance(r, RangeResult | PutResult | DeleteResult):
        raise HistoryError(f"a txn result holds a {d.get('type')!r} result")
    return r


def result_from_json(d: Json) -> Result:
    kind = d["type"]
    if kind == "range":
        return RangeResult(_kvs(d["kvs"]), _i(d["count"]), _bool(d["more"]))
    if kind == "put":
        return PutResult(_kv(d["prev_kv"]))
    if kind == "delete":
        return DeleteResult(_i(d["deleted"]), _kvs(d["prev_kvs"]))
    if kind == "txn":
        return TxnResult(_bool(d["succeeded"]), tuple(_txn_op_result(x) for x in d["results"]))
    if kind == "compact":
        return CompactResult()
    if kind == "lease_grant":
        return LeaseGrantResult(_i(d["id"]), _i(d["ttl"]))
    if kind == "lease_revoke":
        return LeaseRevokeResult()
    raise HistoryError(f"unknown result type {kind!r}")


def operation_json(op: Operation) -> Json:
    return {
        "kind": "op", "client": op.client, "call": op.call, "return": op.ret, "member": op.member,
        "request": request_json(op.request),
        "response": None if op.response is None else {
            "revision": op.response.revision, "result": result_json(op.response.result),
        },
        "error": op.error, "indeterminate": op.indeterminate,
    }


def operation_from_json(d: Json) -> Operation:
    resp = d["response"]
    error = d["error"]
    if error is not None and not isinstance(error, str):
        raise HistoryError(f"error must be a string, got {error!r}")
    return Operation(
        client=_i(d["client"]),
        call=_i(d["call"]),
        ret=None if d["return"] is None else _i(d["return"]),
        request=request_from_json(d["request"]),
        response=None if resp is None else Response(_i(resp["revision"]), result_from_json(resp["result"])),
        error=error,
        member=None if d["member"] is None else _i(d["member"]),
        indeterminate=_bool(d["indeterminate"]),
    )


def _event_json(e: WatchEvent) -> Json:
    return {"type": e.type, "kv": _kv_json(e.kv), "prev_kv": _kv_json(e.prev_kv)}


def _event(d: Json) -> WatchEvent:
    kv = _kv(d["kv"])
    if kv is None or d["type"] not in ("PUT", "DELETE"):
        raise HistoryError(f"bad watch event {d!r}")
    return WatchEvent(d["type"], kv, _kv(d["prev_kv"]))


def watch_json(w: WatchStream) -> Json:
    return {
        "kind": "watch", "client": w.client, "member": w.member, "key": _t(w.key), "range_end": _t(w.range_end),
        "start_revision": w.start_revision, "prev_kv": w.prev_kv, "no_put": w.no_put, "no_delete": w.no_delete,
        "responses": [
            {
                "revision": r.revision, "events": [_event_json(e) for e in r.events], "created": r.created,
                "canceled": r.canceled, "compact_revision": r.compact_revision,
                "progress_notify": r.progress_notify,
            }
            for r in w.responses
        ],
    }


def watch_from_json(d: Json) -> WatchStream:
    return WatchStream(
        client=_i(d["client"]),
        key=_b(d["key"]),
        range_end=_b(d["range_end"]),
        start_revision=_i(d["start_revision"]),
        prev_kv=_bool(d["prev_kv"]),
        no_put=_bool(d["no_put"]),
        no_delete=_bool(d["no_delete"]),
        responses=tuple(
            WatchResponse(
                _i(r["revision"]), tuple(_event(e) for e in r["events"]), _bool(r["created"]),
                _bool(r["canceled"]), _i(r["compact_revision"]), _bool(r["progress_notify"]),
            )
            for r in d["responses"]
        ),
        member=None if d["member"] is None else _i(d["member"]),
    )


def dump_lines(history: History) -> Iterable[str]:
    """The history as JSON lines (no trailing newlines): operations first, then watches."""
    for op in history.operations:
        yield json.dumps(operation_json(op), separators=(",", ":"))
    for w in history.watches:
        yield json.dumps(watch_json(w), separators=(",", ":"))


def dumps(history: History) -> str:
    return "".join(line + "\n" for line in dump_lines(history))


def loads(text: str) -> History:
    """Parse JSON lines; a bad line raises HistoryError naming its line number."""
    ops: list[Operation] = []
    watches: list[WatchStream] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            kind = d["kind"]
            if kind == "op":
                ops.append(operation_from_json(d))
            elif kind == "watch":
                watches.append(watch_from_json(d))
            else:
                raise HistoryError(f"unknown line kind {kind!r}")
        except HistoryError as e:
            raise HistoryError(f"line {n}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as e:
            raise HistoryError(f"line {n}: malformed ({type(e).__name__}: {e})") from None
    return History(tuple(ops), tuple(watches))
