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

In a cluster the writer also steps the peers' Raft messages (posted by the peer
transport on the loop thread), sends each turn's messages only once the turn is
durable, installs snapshot images received from the leader, and serves linearizable
reads once Raft's ReadIndex confirmed them (a member alone in its cluster is always
the leader and serves them from its snapshot at once, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rusd.core import errors
from rusd.core.auth.types import AuthEffect
from rusd.core.cluster import MemberInfo
from rusd.core.errors import EtcdError
from rusd.core.lease.types import LeaseLeasesRequest
from rusd.core.mvcc import store as mvcc
from rusd.core.mvcc.types import Event, RangeRequest, TxnRequest
from rusd.core.node import (
    LOCAL_REQUESTS,
    META_HARD_STATE,
    LocalRequest,
    Member,
    MemberConfig,
    MemberStatus,
    Result,
    WriteRequest,
    unapplied_entries,
)
from rusd.core.raft import Message, MessageType, RaftError
from rusd.server import forward
from rusd.server.peer import PeerTransport
from rusd.storage.lmdb import LmdbStore, LmdbView

log = logging.getLogger("rusd.runtime")


class RemovedError(Exception):
    """This member was removed from the cluster: it stops, as etcd's does."""

    MESSAGE = "the member has been permanently removed from the cluster"


# The member's identity record (written at bootstrap); it stays when a leader's image
# replaces the store, as does Raft's hard state.
META_IDENTITY = b"identity"


@dataclass(frozen=True, slots=True)
class _Defragment:
    """A barrier in the writer's inbox: rewrite the file between two batches."""


@dataclass(frozen=True, slots=True)
class _Read:
    """A linearizable read waiting for Raft's ReadIndex: answered (None) once the
    published snapshot holds everything committed when it arrived."""


@dataclass(frozen=True, slots=True)
class _Step:
    """Raft messages from peers."""

    messages: list[Message]


@dataclass(frozen=True, slots=True)
class _Report:
    """The transport could not reach `to` (snapshot_failed None), or a snapshot sent to
    it arrived (False) or did not (True)."""

    to: int
    snapshot_failed: bool | None = None


@dataclass(frozen=True, slots=True)
class _Transfer:
    """MoveLeader: hand leadership to `to`."""

    to: int


_Item = WriteRequest | LocalRequest | _Defragment | _Read | _Step | _Report | _Transfer


# How often a follower retries forwarding a lease request while there is no leader.
FORWARD_RETRY = 0.05


def _leaderless(result: Result) -> bool:
    return isinstance(result, EtcdError) and result.kind in (errors.NOT_LEADER, errors.NO_LEADER)


def is_serializable(req: RangeRequest | TxnRequest) -> bool:
    """Served from local state without a ReadIndex: a serializable range, or a txn whose
    ranges are all serializable (etcd's isTxnSerializable)."""
    if isinstance(req, RangeRequest):
        return req.serializable
    return all(isinstance(op, RangeRequest) and op.serializable for op in (*req.success, *req.failure))


class Runtime:
    """Owns the storage and the Member; see the module docstring for the threads."""

    def __init__(
        self,
        store: LmdbStore,
        config: MemberConfig,
        max_request_bytes: int = 1572864,
        clock: Callable[[], float] = time.monotonic,
        tick_interval: float = 0.1,
        initial_cluster: tuple[MemberInfo, ...] = (),
        join: bool = False,
        cluster_token: str = "etcd-cluster",
        force_new_cluster: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.max_request_bytes = max_request_bytes
        self._clock = clock
        self._tick_interval = tick_interval
        view = store.snapshot()
        replay = unapplied_entries(view, view)
        self.member = Member(
            config, view, replay, clock(), unix_ms=time.time_ns() // 1_000_000, rng=random.Random(),
            initial_cluster=initial_cluster, join=join, force_new_cluster=force_new_cluster,
        )
        # Raft messages of durable turns go out through this (None: a member alone).
        self.transport: PeerTransport | None = None
        # New members' ids hash their peer URLs with this (--initial-cluster-token).
        self.cluster_token = cluster_token
        # etcd's ReqTimeout: how long MoveLeader waits for the new leader.
        self.request_timeout = config.request_timeout_ticks * tick_interval
        self.snapshot_dir = os.path.join(os.path.dirname(store.path), "snap")
        # Where scratch copies of the store go (same file system as the data dir).
        self.snapshot_parent = os.path.dirname(store.path)
        self._snapshot_files: list[str] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self.alone = self.member.alone
        self._revision = mvcc.current_revision(view)
        self._size = view.size()
        self._view: LmdbView | None = view
        # The member's durable status, for the loop thread (the Member is the writer's).
        self.status: MemberStatus = self.member.status()
        self._view_changed = asyncio.Event()
        self._cond = threading.Condition()
        self._inbox: list[tuple[int, _Item]] = []
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
        # Called in the loop thread with each durable turn's token effects (in log
        # order), before its answers are released (the auth guard's tokens subscribe).
        self.on_auth: Callable[[list[AuthEffect]], None] = lambda effects: None
        # Loop-thread waiters for an applied index: (index, sequence, future).
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()

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
        """A lease request answered without a log entry by the Member in the writer
        thread: any member lists leases; keepalive and time-to-live are the leader's, and
        a follower forwards them over the peer transport."""
        result = await self.answer_forwarded(req)
        if isinstance(req, LeaseLeasesRequest) or not _leaderless(result):
            return result
        # etcd's LeaseRenew: wait for a leader and retry the forward (every 50 ms) for up
        # to its request timeout, so an election delays keepalives instead of failing them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        known = False
        while loop.time() < deadline and not self._stopping:
            leader = self._leader()
            if leader is not None:
                known = True
                result = await forward.forward(req, leader, self.transport)
                if not _leaderless(result):
                    return result
            await asyncio.sleep(FORWARD_RETRY)
            result = await self.answer_forwarded(req)  # maybe this member leads now
            if not _leaderless(result):
                return result
        return EtcdError(errors.REQUEST_TIMEOUT if known else errors.NO_LEADER)

    async def answer_forwarded(self, req: LocalRequest) -> Result:
        """This member's own answer to a lease request, never forwarded: what a follower
        that forwarded it gets back ("not leader" included, so a stale view of who leads
        never bounces a request between members)."""
        result = await self._enqueue(req)
        assert result is not None
        return result

    def _leader(self) -> MemberInfo | None:
        status = self.status
        for m in status.members:
            if m.id == status.leader and m.id != self.config.member.id:
                return m
        return None

    async def defragment(self) -> None:
        await self._enqueue(_Defragment())

    def post(self, item: _Step | _Report | _Transfer) -> None:
        """Hand the writer something nobody waits for (peer messages, reports)."""
        with self._cond:
            self._inbox.append((0, item))
            self._cond.notify()

    def step(self, messages: list[Message]) -> None:
        """The transport's callback: messages from peers."""
        self.post(_Step(messages))

    def unreachable(self, peer: int) -> None:
        self.post(_Report(peer))

    def transfer_leader(self, to: int) -> None:
        self.post(_Transfer(to))

    async def receive_snapshot(self, message: Message, path: Path) -> None:
        """The transport's callback: a leader's image arrived in the file `path`; the
        writer installs it when Raft accepts the snapshot (or deletes it)."""
        assert message.snapshot is not None
        data = os.fspath(path).encode()
        self.post(_Step([replace(message, snapshot=replace(message.snapshot, data=data))]))

    def _send(self, messages: list[Message]) -> None:
        """Loop thread: a durable turn's messages to the peers."""
        transport = self.transport
        if transport is None:
            return
        plain = [m for m in messages if m.type is not MessageType.SNAP]
        if plain:
            transport.send(plain)
        for m in messages:
            if m.type is MessageType.SNAP:
                task = asyncio.ensure_future(self._send_snapshot(transport, m))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send_snapshot(self, transport: PeerTransport, message: Message) -> None:
        """Send the store (applied at least to the snapshot's index) as the image."""
        os.makedirs(self.snapshot_dir, exist_ok=True)
        path = os.path.join(self.snapshot_dir, f"out-{message.to:x}")
        ok = False
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.store.write_image, path)
            ok = await transport.send_snapshot(message, path)
        except Exception:
            log.exception("sending a snapshot to %x failed", message.to)
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.post(_Report(message.to, snapshot_failed=not ok))

    async def _enqueue(self, req: _Item) -> Result | None:
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

    def connected_voters(self, since: float) -> int:
        """Voting members (this one included) whose peer stream has been up since the
        monotonic time `since` (etcd's numConnectedSince over the transport)."""
        me = self.config.member.id
        voters = [m.id for m in self.status.members if not m.is_learner]
        transport = self.transport
        up = 0
        for v in voters:
            start = None if transport is None else transport.active_since(v)
            up += v == me or (start is not None and start <= since)
        return up

    async def linearize(self, req: RangeRequest | TxnRequest) -> EtcdError | None:
        """Wait until a linearizable read may be served from the snapshot: at once when
        this member is alone or the read is serializable, else after a ReadIndex round.
        An error (no leader, timeout) says the read cannot be served."""
        if self.alone or is_serializable(req):
            return None
        result = await self._enqueue(_Read())
        assert result is None or isinstance(result, EtcdError)
        return result

    async def wait_applied(self, index: int) -> bool:
        """Wait, at most etcd's request timeout, until this member has applied `index`
        (a simple token names the entry that assigned it, which this member may not have
        applied yet: etcd's indexWaiter). False if it did not in time."""
        if self.status.applied_index >= index:
            return True
        if self._failed is not None or self._stopping:
            return False
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        entry = (index, next(self._waiter_seq), fut)
        heapq.heappush(self._applied_waiters, entry)
        try:
            await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError:
            pass
        finally:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._applied_waiters.remove(entry)
                    heapq.heapify(self._applied_waiters)
        return self.status.applied_index >= index

    def _wake_applied(self, everyone: bool = False) -> None:
        """Release the waiters whose index is applied (all of them when stopping)."""
        waiters = self._applied_waiters
        applied = self.status.applied_index
        while waiters and (everyone or waiters[0][0] <= applied):
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def removed_by_peer(self) -> None:
        """A peer refused this member as removed (it missed its own removal, e.g. while
        down): it stops, as etcd's does when a peer answers 410 Gone."""
        if self._failed is None:
            log.warning("a peer says %s; stopping", RemovedError.MESSAGE)
            self._fail(RemovedError(RemovedError.MESSAGE))

    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def removed(self) -> bool:
        """Stopped because the cluster removed this member (not a failure)."""
        return isinstance(self._failed, RemovedError)

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
        self._wake_applied(everyone=True)
        if self._view is not None:
            self._view.close()
            self._view = None

    def _publish(
        self,
        answers: list[tuple[int, Result | None]],
        view: LmdbView | None,
        events: list[Event] | None = None,
        status: MemberStatus | None = None,
        alone: bool | None = None,
        auth: list[AuthEffect] | None = None,
    ) -> None:
        if status is not None:
            if self.transport is not None and status.members != self.status.members:
                me = self.config.member.id
                peers = {m.id: m.peer_urls[0] for m in status.members if m.id != me and m.peer_urls}
                self.transport.update_peers(peers)
            self.status = status
        if alone is not None:
            self.alone = alone
        if view is not None:
            if self._view is not None:
                self._view.close()
            self._view = view
            self._view_changed.set()
        if auth:
            # Before the answers: the member that took an Authenticate knows its token
            # when the client gets it, and a revocation has taken effect when acknowledged.
            try:
                self.on_auth(auth)
            except Exception as exc:
                log.exception("applying auth effects to the tokens failed")
                self._fail(exc)
        if status is not None:
            self._wake_applied()
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

    def _send_and_publish(
        self,
        messages: list[Message],
        answers: list[tuple[int, Result | None]],
        view: LmdbView | None,
        events: list[Event],
        status: MemberStatus,
        alone: bool,
        auth: list[AuthEffect],
    ) -> None:
        if messages:
            self._send(messages)
        self._publish(answers, view, events, status, alone, auth)

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
        self._wake_applied(everyone=True)
        self._view_changed.set()
        self._stopped.set()
        self.on_fatal(exc)

    # -- writer thread -------------------------------------------------------------
    def _writer(self) -> None:
        try:
            self._writer_loop()
        except RemovedError as exc:
            log.warning("%s; stopping", exc)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._fail, exc)
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
                self._take(req_id, req, now)
            self._turn()
            if defrags:
                self._defragment()
                done: list[tuple[int, Result | None]] = [(i, None) for i in defrags]
                self._loop.call_soon_threadsafe(self._publish, done, None)
            if stopping:
                with self._cond:
                    if not self._inbox:
                        return

    def _take(self, req_id: int, req: _Item, now: float) -> None:
        """One inbox item into the Member."""
        member = self.member
        if isinstance(req, _Step):
            for m in req.messages:
                try:
                    member.step(m)
                except RaftError as e:  # a malformed message from a peer: drop it
                    log.warning("dropped a Raft message from %x: %s", m.from_, e)
                if m.snapshot is not None and m.snapshot.data:
                    self._snapshot_files.append(m.snapshot.data.decode())
        elif isinstance(req, _Report):
            if req.snapshot_failed is None:
                member.report_unreachable(req.to)
            else:
                member.report_snapshot(req.to, req.snapshot_failed)
        elif isinstance(req, _Transfer):
            member.transfer_leader(req.to)
        elif isinstance(req, _Read):
            member.read(req_id)
        elif isinstance(req, LOCAL_REQUESTS):
            member.local(req_id, req, now)
        elif not isinstance(req, _Defragment):
            member.submit(req_id, req, self._size)

    def _install(self, path: str, index: int) -> None:
        """Replace the store with a leader's image (the loop's snapshot is released first)."""
        assert self._loop is not None
        released = threading.Event()
        self._loop.call_soon_threadsafe(self._release_view, released)
        released.wait()
        self.store.install_image(path, log_after=index, keep_meta=(META_IDENTITY, META_HARD_STATE))
        log.info("installed a snapshot at index %d from the leader", index)

    def _turn(self) -> None:
        """One Ready: persist + apply in one batch, one fsync, then answer and send."""
        assert self._loop is not None
        rd = self.member.ready()
        if rd.early_messages:  # overlap the peers' appends with this turn's fsync
            self._loop.call_soon_threadsafe(self._send, rd.early_messages)
        answers: list[tuple[int, Result | None]] = list(rd.responses)
        events: list[Event] = []
        auth: list[AuthEffect] = []
        view: LmdbView | None = None
        if rd.snapshot is not None:
            self._install(rd.snapshot.data.decode(), rd.snapshot.metadata.index)
        for path in self._snapshot_files:  # images Raft did not take (or already installed)
            with contextlib.suppress(OSError):
                os.remove(path)
        self._snapshot_files.clear()
        if rd.entries or rd.committed or rd.hard_state is not None or rd.snapshot is not None:
            batch = self.store.begin()
            try:
                if rd.snapshot is not None:
                    self.member.install_snapshot(batch)
                batch.append_entries(rd.entries)
                applied = self.member.apply(batch, rd.committed, self._clock())
                answers.extend(applied.answers)
                events = applied.events
                auth = applied.auth
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
        # The reads' barrier lifts when _publish has put this turn's snapshot in place.
        answers.extend((req_id, None) for req_id in rd.reads)
        if answers or view is not None or rd.messages:
            # One wake-up of the loop per turn: send, then publish.
            self._loop.call_soon_threadsafe(
                self._send_and_publish, rd.messages, answers, view, events, self.member.status(), self.member.alone,
                auth,
            )
        if self.member.removed:
            raise RemovedError(RemovedError.MESSAGE)

    def _defragment(self) -> None:
        assert self._loop is not None
        released = threading.Event()
        self._loop.call_soon_threadsafe(self._release_view, released)
        released.wait()
        self.store.defragment()
        view = self.store.snapshot()
        self._size = view.size()
        self._loop.call_soon_threadsafe(self._publish, [], view)
