"""The runtime loop: drives the core Member over LMDB with group commit.

Threads and why:
- the asyncio loop thread runs gRPC and answers reads from a pinned LMDB snapshot
  (a read transaction opened right after the last durable commit, so it holds every
  acknowledged write and nothing that is not yet durable);
- one writer thread owns the Member and the write batch. Each turn it takes every
  request that arrived meanwhile, asks the Member for a Ready, appends the entries,
  applies the committed ones in the same LMDB transaction and commits it with one
  fsync (group commit), then hands the answers and a fresh snapshot to the loop.
  The fsync releases the GIL, so the loop keeps accepting requests during it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rusd.core import errors
from rusd.core.errors import EtcdError
from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc.types import Event, RangeRequest, TxnRequest
from rusd.core.node import (
    LOCAL_REQUESTS,
    LocalRequest,
    Member,
    MemberConfig,
    MemberStatus,
    Result,
    WriteRequest,
    serve_read,
    unapplied_entries,
)
from rusd.storage.lmdb import LmdbStore, LmdbView

log = logging.getLogger("rusd.runtime")


@dataclass(frozen=True, slots=True)
class _Defragment:
    """A barrier in the writer's inbox: rewrite the file between two batches."""


class Runtime:
    """Owns the storage and the Member; see the module docstring for the threads."""

    def __init__(
        self,
        store: LmdbStore,
        config: MemberConfig,
        max_request_bytes: int = 1572864,
        clock: Callable[[], float] = time.monotonic,
        tick_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.config = config
        self.max_request_bytes = max_request_bytes
        self._clock = clock
        self._tick_interval = tick_interval
        view = store.snapshot()
        replay = unapplied_entries(view, view)
        self.member = Member(config, view, replay, clock(), unix_ms=time.time_ns() // 1_000_000)
        self._revision = mvcc.current_revision(view)
        self._size = view.size()
        self._view: LmdbView | None = view
        # The member's durable status, for the loop thread (the Member is the writer's).
        self.status: MemberStatus = self.member.status()
        self._view_changed = asyncio.Event()
        self._cond = threading.Condition()
        self._inbox: list[tuple[int, WriteRequest | LocalRequest | _Defragment]] = []
        self._stopping = False
        self._failed: BaseException | None = None
        self._futures: dict[int, asyncio.Future[Result | None]] = {}
        self._next_id = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = asyncio.Event()
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None
        # Called in the loop thread with each durable turn's changes, after the
        # snapshot that holds them is in place (the watch hub subscribes here).
        self.on_events: Callable[[list[Event]], None] = lambda events: None

    # -- loop thread API ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer, name="rusd-writer", daemon=True)
        self._thread.start()

    async def write(self, req: WriteRequest) -> Result:
        result = await self._enqueue(req)
        assert result is not None
        return result

    async def local(self, req: LocalRequest) -> Result:
        """A leader-local lease request (keepalive, time-to-live, list): answered by the
        Member in the writer thread, without a log entry."""
        result = await self._enqueue(req)
        assert result is not None
        return result

    async def defragment(self) -> None:
        await self._enqueue(_Defragment())

    async def _enqueue(self, req: WriteRequest | LocalRequest | _Defragment) -> Result | None:
        if self._failed is not None or self._stopping:
            return EtcdError(errors.STOPPED)
        assert self._loop is not None
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Result | None] = self._loop.create_future()
        self._futures[req_id] = fut
        with self._cond:
            self._inbox.append((req_id, req))
            self._cond.notify()
        return await fut

    async def snapshot(self) -> LmdbView:
        """The current durable snapshot (waits while a defragmentation swaps files)."""
        while self._view is None:
            if self._failed is not None or self._stopping:
                raise EtcdError(errors.STOPPED)
            self._view_changed.clear()
            await self._view_changed.wait()
        return self._view

    async def read(self, req: RangeRequest | TxnRequest) -> Result:
        """A Range or read-only Txn from the snapshot."""
        view = await self.snapshot()
        try:
            return serve_read(view, req, self.config.max_txn_ops)
        except EtcdError as e:
            return e

    @property
    def failed(self) -> bool:
        return self._failed is not None

    async def stopped(self) -> None:
        """Returns once the runtime stops or fails."""
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._answer_all(EtcdError(errors.STOPPED))
        if self._view is not None:
            self._view.close()
            self._view = None

    def _publish(
        self,
        answers: list[tuple[int, Result | None]],
        view: LmdbView | None,
        events: list[Event] | None = None,
        status: MemberStatus | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        if view is not None:
            if self._view is not None:
                self._view.close()
            self._view = view
            self._view_changed.set()
        for req_id, result in answers:
            fut = self._futures.pop(req_id, None)
            if fut is not None and not fut.done():
                fut.set_result(result)
        if events:
            try:
                self.on_events(events)
            except Exception as exc:  # a watcher bug must not hang writers; stop loudly
                log.exception("delivering events to watchers failed")
                self._fail(exc)

    def _answer_all(self, result: Result) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_result(result)
        self._futures.clear()

    def _release_view(self, done: threading.Event) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None
        done.set()

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        self._answer_all(EtcdError(errors.STOPPED))
        self._view_changed.set()
        self._stopped.set()
        self.on_fatal(exc)

    # -- writer thread -------------------------------------------------------------
    def _writer(self) -> None:
        try:
            self._writer_loop()
        except BaseException as exc:  # storage failures are fatal, as in etcd
            log.exception("writer stopped: %s", exc)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._fail, exc)

    def _writer_loop(self) -> None:
        assert self._loop is not None
        next_tick = self._clock()
        while True:
            with self._cond:
                while not self._inbox and not self._stopping:
                    timeout = next_tick - self._clock()
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                inbox, self._inbox = self._inbox, []
                stopping = self._stopping
            now = self._clock()
            if now >= next_tick:
                self.member.tick(now, self._revision)
                next_tick = now + self._tick_interval
            defrags = [req_id for req_id, req in inbox if isinstance(req, _Defragment)]
            for req_id, req in inbox:
                if isinstance(req, LOCAL_REQUESTS):
                    self.member.local(req_id, req, now)
                elif not isinstance(req, _Defragment):
                    self.member.submit(req_id, req, self._size)
            self._turn()
            if defrags:
                self._defragment()
                done: list[tuple[int, Result | None]] = [(i, None) for i in defrags]
                self._loop.call_soon_threadsafe(self._publish, done, None)
            if stopping:
                with self._cond:
                    if not self._inbox:
                        return

    def _turn(self) -> None:
        """One Ready: persist + apply in one batch, one fsync, then answer."""
        assert self._loop is not None
        rd = self.member.ready()
        answers: list[tuple[int, Result | None]] = list(rd.responses)
        events: list[Event] = []
        view: LmdbView | None = None
        if rd.entries or rd.committed or rd.hard_state is not None:
            batch = self.store.begin()
            try:
                batch.append_entries(rd.entries)
                applied = self.member.apply(batch, rd.committed, self._clock())
                answers.extend(applied.answers)
                events = applied.events
                if rd.compact_log_to:
                    batch.compact_log(rd.compact_log_to)
            except BaseException:
                batch.abort()
                raise
            batch.commit()
            view = self.store.snapshot()
            self._revision = mvcc.current_revision(view)
            self._size = view.size()
        self.member.advance(rd)
        if answers or view is not None:
            self._loop.call_soon_threadsafe(self._publish, answers, view, events, self.member.status())

    def _defragment(self) -> None:
        assert self._loop is not None
        released = threading.Event()
        self._loop.call_soon_threadsafe(self._release_view, released)
        released.wait()
        self.store.defragment()
        view = self.store.snapshot()
        self._size = view.size()
        self._loop.call_soon_threadsafe(self._publish, [], view)
