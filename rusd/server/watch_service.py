"""The bidi Watch stream on grpc.aio, over the core's WatchHub.

Per stream two tasks: a reader that turns WatchRequests into hub calls, and the
handler itself, which writes the hub's responses one at a time as the client takes
them (each `yield` waits for the transport), so a slow consumer only slows itself:
its watchers fall back to "unsynced" in the hub and are caught up from the store
when it reads again. The hub is fed by the runtime's `on_events` hook, in the loop
thread, after the snapshot holding those revisions is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from rusd.api.mvccpb import kv_pb2
from rusd.core.auth import check
from rusd.core.auth.types import AuthInfo
from rusd.core.errors import Code, EtcdError
from rusd.core.mvcc.types import Event
from rusd.core.watch.hub import CreateRequest, WatchHub, WatchResponse
from rusd.server import convert
from rusd.server.auth_guard import AuthGuard
from rusd.server.runtime import Runtime


def create_request(r: pb.WatchCreateRequest) -> CreateRequest:
    return CreateRequest(
        key=r.key,
        range_end=r.range_end,
        start_revision=r.start_revision,
        progress_notify=r.progress_notify,
        filters=tuple(int(f) for f in r.filters),
        prev_kv=r.prev_kv,
        watch_id=r.watch_id,
        fragment=r.fragment,
    )


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint (int64 two's complement for negatives)."""
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_CACHE_BYTES = 4 << 20
# grpc-go's names of the codes a refused watch create can carry.
_GO_CODES = {
    Code.INVALID_ARGUMENT: "InvalidArgument",
    Code.PERMISSION_DENIED: "PermissionDenied",
    Code.UNAUTHENTICATED: "Unauthenticated",
    Code.FAILED_PRECONDITION: "FailedPrecondition",
}


def _serialize(resp: pb.WatchResponse | bytes) -> bytes:
    return resp if isinstance(resp, bytes) else resp.SerializeToString()


def add_to_server(servicer: WatchService, server: Any) -> None:
    """As `add_WatchServicer_to_server`, but the handler may yield responses already
    encoded (bytes), which go out as they are."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Watch,
        request_deserializer=pb.WatchRequest.FromString,
        response_serializer=_serialize,
    )
    handlers = {"Watch": handler}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.Watch", handlers),))
    server.add_registered_method_handlers("etcdserverpb.Watch", handlers)


def _event(ev: Event) -> kv_pb2.Event:
    out = kv_pb2.Event(
        type=kv_pb2.Event.DELETE if ev.is_delete else kv_pb2.Event.PUT,
        kv=convert.key_value(ev.kv),
    )
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(convert.key_value(ev.prev_kv))
    return out


class WatchService(pb_grpc.WatchServicer):
    def __init__(
        self,
        runtime: Runtime,
        progress_interval: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        guard: AuthGuard | None = None,
    ) -> None:
        self.rt = runtime
        self.guard = guard or AuthGuard(runtime)
        self._clock = clock
        self.hub = WatchHub(
            progress_interval=progress_interval,
            max_response_bytes=runtime.max_request_bytes,
            size=lambda r: self.response(r).ByteSize(),
        )
        self._wake: dict[int, asyncio.Event] = {}
        self._converted: dict[int, tuple[Event, kv_pb2.Event]] = {}
        # Encoded pieces shared by the responses of many watchers: each event's
        # `events` field, each event tuple's fields, each header field.
        self._event_fields: dict[int, tuple[Event, bytes]] = {}
        self._tuple_fields: dict[int, tuple[tuple[Event, ...], bytes]] = {}
        self._cached_bytes = 0  # in the two caches above; both are dropped past _CACHE_BYTES
        self._headers: dict[tuple[int, int, int, int], bytes] = {}

    def on_events(self, events: list[Event]) -> None:
        """Runtime hook (loop thread): queue for synced watchers, wake their streams."""
        for sid in self.hub.on_events(events):
            wake = self._wake.get(sid)
            if wake is not None:
                wake.set()

    def response(self, r: WatchResponse) -> pb.WatchResponse:
        return pb.WatchResponse(
            header=pb.ResponseHeader(
                cluster_id=self.rt.config.cluster_id,
                member_id=self.rt.config.member.id,
                revision=r.revision,
                raft_term=self.rt.status.term,
            ),
            watch_id=r.watch_id,
            created=r.created,
            canceled=r.canceled,
            compact_revision=r.compact_revision,
            cancel_reason=r.cancel_reason,
            fragment=r.fragment,
            events=[self._event(ev) for ev in r.events],
        )

    def encode(self, r: WatchResponse) -> bytes:
        """`response(r).SerializeToString()`, byte for byte, built from cached pieces:
        header (field 1), watch_id (2), events (11) in field order; the rarer
        responses (created, canceled, fragments) go through protobuf."""
        if r.created or r.canceled or r.fragment or r.compact_revision or r.cancel_reason:
            return self.response(r).SerializeToString()
        hkey = (self.rt.config.cluster_id, self.rt.config.member.id, r.revision, self.rt.status.term)
        header = self._headers.get(hkey)
        if header is None:
            h = pb.ResponseHeader(
                cluster_id=hkey[0], member_id=hkey[1], revision=hkey[2], raft_term=hkey[3]
            ).SerializeToString()
            header = b"\x0a" + _varint(len(h)) + h
            if len(self._headers) >= 1024:
                self._headers.clear()
            self._headers[hkey] = header
        wid = b"\x10" + _varint(r.watch_id) if r.watch_id else b""
        evs = r.events
        if not evs:
            return header + wid
        tcache = self._tuple_fields
        hit = tcache.get(id(evs))
        if hit is not None and hit[0] is evs:
            body = hit[1]
        else:
            body = b"".join([self._event_field(ev) for ev in evs])
            self._cache_room(len(body))
            self._tuple_fields[id(evs)] = (evs, body)
        return header + wid + body

    def _event_field(self, ev: Event) -> bytes:
        cache = self._event_fields
        hit = cache.get(id(ev))
        if hit is not None and hit[0] is ev:
            return hit[1]
        e = _event(ev).SerializeToString()
        out = b"\x5a" + _varint(len(e)) + e
        self._cache_room(len(out))
        self._event_fields[id(ev)] = (ev, out)
        return out

    def _cache_room(self, size: int) -> None:
        """Account `size` more cached bytes; past the budget, drop both caches (a
        miss only costs a re-encode; merged backlogs are rarely reused)."""
        self._cached_bytes += size
        if self._cached_bytes > _CACHE_BYTES or len(self._event_fields) + len(self._tuple_fields) >= 8192:
            self._event_fields.clear()
            self._tuple_fields.clear()
            self._cached_bytes = size

    def _event(self, ev: Event) -> kv_pb2.Event:
        # Watchers of one revision share its Event objects: convert each once.
        cache = self._converted
        hit = cache.get(id(ev))
        if hit is not None and hit[0] is ev:
            return hit[1]
        out = _event(ev)
        if len(cache) >= 8192:
            cache.clear()
        cache[id(ev)] = (ev, out)
        return out

    async def Watch(
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: Any
    ) -> AsyncIterator[bytes]:
        hub = self.hub
        sid = hub.open_stream(self._clock())
        wake = asyncio.Event()
        self._wake[sid] = wake
        reader = asyncio.create_task(self._read(sid, request_iterator, wake, context))
        try:
            while True:
                wake.clear()
                view = await self.rt.snapshot()
                # No await between taking the snapshot and using it: the runtime
                # closes a snapshot when it publishes the next one.
                resp = hub.next_response(sid, view)
                if resp is not None:
                    yield self.encode(resp)
                    continue
                if reader.done() and reader.exception() is not None:
                    return
                deadline = hub.next_deadline(sid)
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                hub.tick(sid, self._clock())
        finally:
            reader.cancel()
            self._wake.pop(sid, None)
            hub.close_stream(sid)

    async def _read(
        self, sid: int, requests: AsyncIterator[pb.WatchRequest], wake: asyncio.Event, context: Any
    ) -> None:
        hub = self.hub
        try:
            async for req in requests:
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    create = create_request(req.create_request)
                    # etcd resolves the stream's token again for every create.
                    info: AuthInfo | EtcdError
                    try:
                        info = await self.guard.info(context)
                    except EtcdError as e:
                        info = e
                    view = await self.rt.snapshot()
                    refusal = self._refusal(info, create, view)
                    if refusal is not None:
                        hub.refuse(sid, refusal, view)
                    else:
                        hub.create(sid, create, view)
                elif which == "cancel_request":
                    hub.cancel(sid, req.cancel_request.watch_id)
                elif which == "progress_request":
                    hub.request_progress(sid)
                else:
                    continue
                wake.set()
        finally:
            # A client that only half-closes keeps receiving, as from etcd; the
            # handler ends when the RPC does.
            wake.set()

    def _refusal(self, info: AuthInfo | EtcdError, create: CreateRequest, view: Any) -> str | None:
        """Why a watch may not be created, or None (etcd's isWatchPermitted). Unlike
        etcd 3.4, which checks a from-key watch as the single key, the whole watched
        range [key, end) must be readable."""
        try:
            if isinstance(info, EtcdError):
                raise info
            check.check_range(self.guard.state(view), info, create.key or b"\x00", create.range_end)
        except EtcdError as e:
            # etcd puts the Go text of the gRPC status error in the cancel reason.
            return f"rpc error: code = {_GO_CODES.get(e.code, 'Unknown')} desc = {e.message}"
        return None
