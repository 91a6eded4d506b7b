"""Server interceptors for what etcd's gRPC layer does before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


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
    """etcd's unary interceptor: a learner answers only Status and serializable Range
    ("rpc not supported for learner"), and a call with the `hasleader: true` metadata
    (clientv3.WithRequireLeader) fails at once with "no leader" while there is none."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self.status = status  # the runtime's MemberStatus, read on the loop thread

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not handler_call_details.method.startswith(
            "/etcdserverpb."
        ):
            return handler
        behavior: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary
        require_leader = ("hasleader", "true") in tuple(handler_call_details.invocation_metadata or ())

        async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            status = self.status()
            if status.is_learner and not _learner_may_serve(request):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")
            if require_leader and status.leader == 0:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _learner_may_serve(request: Any) -> bool:
    """etcd 3.4's isRPCSupportedForLearner."""
    name = type(request).__name__
    return name == "StatusRequest" or (name == "RangeRequest" and bool(request.serializable))
