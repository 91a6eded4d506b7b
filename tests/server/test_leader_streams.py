"""LeaderChecks' handling of streams that require a leader, driven without gRPC: the
handler's responses pass through in order, the leader monitor ends the stream with
"etcdserver: no leader", and a handler cancelled by something else cancels the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from rusd.server.interceptors import NO_LEADER, LeaderChecks


class Aborted(Exception):
    pass


class Context:
    """What the stream wrapper uses of a grpc.aio servicer context."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted(details)


@dataclass
class Status:
    leader: int = 1
    is_learner: bool = False


async def responses(items: list[int], hold: asyncio.Event) -> AsyncIterator[int]:
    for item in items:
        yield item
    await hold.wait()


def test_responses_pass_through_until_the_monitor_ends_the_stream() -> None:
    async def body() -> None:
        status = Status()
        checks = LeaderChecks(lambda: status)
        context = Context()
        stream = checks._until_leaderless(responses([1, 2, 3], asyncio.Event()), context)  # type: ignore[arg-type]
        got = [await anext(stream) for _ in range(3)]
        assert got == [1, 2, 3]
        status.leader = 0
        monitor = asyncio.ensure_future(checks.monitor_leader(0.001))
        with pytest.raises(Aborted):
            await anext(stream)
        monitor.cancel()
        assert context.status == (grpc.StatusCode.UNAVAILABLE, NO_LEADER)

    asyncio.run(body())


def test_a_handler_cancelled_elsewhere_cancels_the_call() -> None:
    async def body() -> None:
        checks = LeaderChecks(lambda: Status())
        started = asyncio.Event()
        inner: list[asyncio.Task[Any]] = []

        async def handler() -> AsyncIterator[int]:
            inner.append(asyncio.current_task())  # type: ignore[arg-type]
            started.set()
            await asyncio.Event().wait()
            yield 0

        async def call() -> list[int]:
            return [item async for item in checks._until_leaderless(handler(), Context())]  # type: ignore[arg-type]

        rpc = asyncio.ensure_future(call())
        await started.wait()
        inner[0].cancel()
        await asyncio.wait({rpc}, timeout=10)  # a guard: without the fix the call never ends
        assert rpc.cancelled()

    asyncio.run(body())
