"""Server interceptors for what etcd's gRPC layer does before any handler runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

LEARNER_REFUSED = "etcdserver: rpc not supported for learner"
NO_LEADER = "etcdserver: no leader"
# etcd's maxNoLeaderCnt: election timeouts without a leader before leader-requiring
# streams are ended (reconnecting costs more than refusing new calls).
NO_LEADER_ROUNDS = 3


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as e:
            return _Undecodable(e)

    return parse


def _guarded(behavior: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {request.error}")
        return await behavior(request, context)

    return call


class UnmarshalErrors(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Garbage request bytes get INTERNAL "grpc: error unmarshalling request: ..." as
    from etcd's grpc-go, instead of an UNKNOWN status and a logged traceback."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class LeaderChecks(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """etcd's unary and stream interceptors. A learner answers only Status and
    serializable Range ("rpc not supported for learner") and no stream at all. A call
    with the `hasleader: true` metadata (clientv3.WithRequireLeader, which Kubernetes
    puts on its watches) fails at once with "no leader" while there is none; such a
    stream, once open, ends with "no leader" when the member has known no leader for
    NO_LEADER_ROUNDS election timeouts in a row (etcd's monitorLeader), so the client
    moves to a member that is still in the cluster."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self.status = status  # the runtime's MemberStatus, read on the loop thread
        # Open streams that asked for a leader: each entry ends its stream.
        self._leader_streams: set[Callable[[], None]] = set()

    async def monitor_leader(self, election_timeout: float) -> None:
        """Run for the server's life: end the leader-requiring streams after
        NO_LEADER_ROUNDS election timeouts without a leader."""
        rounds = 0
        while True:
            await asyncio.sleep(election_timeout)
            rounds = rounds + 1 if self.status().leader == 0 else 0
            if rounds >= NO_LEADER_ROUNDS:
                ends, self._leader_streams = self._leader_streams, set()
                for end in ends:
                    end()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/etcdserverpb."):
            return handler
        require_leader = ("hasleader", "true") in tuple(handler_call_details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return self._unary(handler.unary_unary, handler, require_leader)
        # A stream: checked once, as it opens (this runs for every call).
        status = self.status()
        if status.is_learner:
            return _stream_handler(handler, _refuse(LEARNER_REFUSED))
        if not require_leader:
            return handler
        if status.leader == 0:
            return _stream_handler(handler, _refuse(NO_LEADER))
        behavior: Callable[[Any, Any], Any] | None = handler.unary_stream or handler.stream_stream
        if behavior is None:
            return handler

        async def until_leaderless(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            # gRPC streams from async generator functions only: this must be one itself.
            async for item in self._until_leaderless(behavior(request, context), context):
                yield item

        return _stream_handler(handler, until_leaderless)

    def _unary(
        self, behavior: Callable[[Any, Any], Any], handler: grpc.RpcMethodHandler[Any, Any], require_leader: bool
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            status = self.status()
            if status.is_learner and not _learner_may_serve(request):
                await context.abort(grpc.StatusCode.UNAVAILABLE, LEARNER_REFUSED)
            if require_leader and status.leader == 0:
                await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _until_leaderless(
        self, responses: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """The handler's responses, until the monitor ends the stream: the handler runs
        in its own task (so ending it never lands inside gRPC's own awaits) and hands
        each response over a one-slot queue (so it still waits for the client)."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

        async def pump() -> None:
            try:
                async for item in responses:
                    await queue.put(("item", item))
            except Exception as exc:  # re-raised in the RPC's task (aborts included)
                await queue.put(("error", exc))
            else:
                await queue.put(("done", None))

        task = asyncio.ensure_future(pump())
        rpc = asyncio.current_task()
        stopping: list[bool] = []  # set once this side ends the handler

        def cancelled_elsewhere(done: asyncio.Future[None]) -> None:
            # The handler was cancelled by something else than this stream: so is the RPC
            # (else it would wait forever for a response the handler will never give).
            if done.cancelled() and not stopping and rpc is not None:
                rpc.cancel()

        task.add_done_callback(cancelled_elsewhere)

        def end() -> None:
            stopping.append(True)
            task.cancel()
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(("leaderless", None))

        self._leader_streams.add(end)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                elif kind == "done":
                    return
                else:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
        finally:
            stopping.append(True)
            self._leader_streams.discard(end)
            task.cancel()


def _refuse(details: str) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAVAILABLE, details)
        yield  # an async generator, as gRPC expects of a streaming handler

    return refuse


def _stream_handler(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: Callable[[Any, Any], AsyncIterator[Any]]
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler`'s stream kind and (de)serializers with another behaviour."""
    make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return make(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _learner_may_serve(request: Any) -> bool:
    """etcd 3.4's isRPCSupportedForLearner."""
    name = type(request).__name__
    return name == "StatusRequest" or (name == "RangeRequest" and bool(request.serializable))
