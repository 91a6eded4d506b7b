"""What every etcd gRPC service here shares: response headers, etcd errors as gRPC
statuses, and the request-size check etcd makes before proposing."""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

import grpc

from rusd.api.etcdserverpb import rpc_pb2 as pb
from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.node import Result, WriteRequest, check_request
from rusd.server.runtime import Runtime

# The etcd API version this server speaks (what Status.version reports).
ETCD_API_VERSION = "3.4.0"
# What etcd's InternalRaftRequest adds around a request: a header with a 64-bit id
# plus the field tags and lengths.
_RAFT_ENVELOPE_BYTES = 16

_STATUS = {code.value[0]: code for code in grpc.StatusCode}

R = TypeVar("R")


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: EtcdError) -> NoReturn:
    await context.abort(_STATUS[int(err.code)], err.message)
    raise AssertionError("unreachable")


class ServiceBase:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def header(self, revision: int) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            cluster_id=self.rt.config.cluster_id,
            member_id=self.rt.config.member.id,
            revision=revision,
            raft_term=self.rt.status.term,
        )

    async def answer(
        self,
        result: Result,
        expected: type[R],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> R:
        if isinstance(result, EtcdError):
            await abort(context, result)
        assert isinstance(result, expected)
        return result

    async def check_size(
        self, request: Any, req: WriteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """etcd refuses a proposal whose encoded size passes --max-request-bytes, but
        only after its gRPC handler has checked the request itself."""
        if request.ByteSize() + _RAFT_ENVELOPE_BYTES > self.rt.max_request_bytes:
            try:
                check_request(req, self.rt.config.max_txn_ops)
            except EtcdError as e:
                await abort(context, e)
            await abort(context, EtcdError(errors.REQUEST_TOO_LARGE))
