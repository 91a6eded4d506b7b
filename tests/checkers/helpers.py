"""Short constructors for hand-written histories."""

from __future__ import annotations

from sim.history import (
    KV,
    Delete,
    DeleteResult,
    Operation,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Response,
    Result,
)


def ok(client: int, call: int, ret: int, req: Request, rev: int, result: Result) -> Operation:
    return Operation(client, call, ret, req, Response(rev, result))


def put(client: int, call: int, ret: int, key: str, value: str, rev: int) -> Operation:
    return ok(client, call, ret, Put(key.encode(), value.encode()), rev, PutResult())


def get(
    client: int, call: int, ret: int, key: str, rev: int, *kvs: KV, serializable: bool = False
) -> Operation:
    return ok(client, call, ret, Range(key.encode(), serializable=serializable), rev, RangeResult(kvs, len(kvs)))


def delete(client: int, call: int, ret: int, key: str, rev: int, deleted: int) -> Operation:
    return ok(client, call, ret, Delete(key.encode()), rev, DeleteResult(deleted))


def kv(key: str, value: str, create: int, mod: int, version: int, lease: int = 0) -> KV:
    return KV(key.encode(), value.encode(), create, mod, version, lease)


def timed_out(client: int, call: int, req: Request) -> Operation:
    return Operation.failed(client, call, call + 1000, req, "context deadline exceeded")
