"""Peer transport: Raft messages between members over grpc.aio (proto/rusdraftpb/raft.proto).

Shaped after etcd's rafthttp, on one gRPC service instead of HTTP streams and pipelines:

- one long-lived client stream per peer (`Raft.Send`); `send()` never blocks: it
  queues per peer and the peer's task writes everything queued as one MessageBatch
  (split only to keep a write near `batch_bytes`), so messages to one peer arrive
  in order and a burst costs one write;
- a bounded queue per peer: when it is full, or the stream is down, messages are
  dropped and the peer is reported unreachable (Raft retries; etcd drops likewise);
- a broken or refused stream is re-opened with capped exponential backoff;
- snapshots go on their own call (`Raft.SendSnapshot`): the MsgSnap, then the image
  file in chunks, then its SHA-256, so an image of any size streams in bounded memory;
  the receiver stores it in `snapshot_dir`, fsyncs it and hands it on;
- every call carries the sender's cluster id and the addressee's member id; the
  receiver refuses a call from another cluster ("cluster ID mismatch", as etcd does)
  or meant for another member (`check_call`, shared with the unary peer services);
- unary calls to a member (`call`: lease forwarding, the corruption checks' HashKV)
  try each of its peer URLs in order until one answers, as etcd's peer round trips
  do, over the stream's own channel for the URL it uses (one kept per other URL);
- https URLs use the peer credentials; when this member's peer TLS is self-signed
  (--peer-auto-tls), etcd does not verify the remote at all, so each channel instead
  trusts exactly the certificate the remote presents (`tls.CertificatePinner`, fetched
  again whenever the channel must connect anew; a failed fetch is a failed connection).

All methods must be called on the event loop's thread; the callbacks run on it too.
Serve the servicer on its own server (etcd's --listen-peer-urls) created with
PEER_SERVER_OPTIONS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import grpc

from rusd.api.rusdraftpb import raft_pb2 as pb
from rusd.api.rusdraftpb import raft_pb2_grpc as pb_grpc
from rusd.core.raft.types import LOCAL_MESSAGES, Message, MessageType
from rusd.server.peer_convert import PeerDecodeError, message_from_pb, message_to_pb
from rusd.server.tls import CertificatePinner, PinnedCredentials

log = logging.getLogger("rusd.peer")

MD_CLUSTER = "rusd-cluster-id"
MD_FROM = "rusd-from"
MD_TO = "rusd-to"
MD_ACCEPTED = "rusd-accepted"  # the receiver's initial metadata: the stream passed its checks

CLUSTER_MISMATCH = "cluster ID mismatch"
# Told to a member the cluster removed that still sends (etcd answers 410 Gone); the
# member stops when it hears it.
MEMBER_REMOVED = "the member has been permanently removed from the cluster"

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")

# A unary call failing with these may not have reached the member: try its next peer URL
# (what is asked this way is safe to ask twice: a renewal, a hash).
_UNREACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

# Options for the grpc.aio server that serves peers: Raft messages (and the first
# snapshot chunk) may be far larger than gRPC's 4 MiB default, and the senders'
# keepalive pings must not be punished as abuse.
PEER_SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]

_PART = ".part"  # suffix of a snapshot image still being received


def _channel_options(backoff_initial: float, backoff_max: float) -> list[tuple[str, Any]]:
    """gRPC's own reconnect backoff must not outlast ours (its default cap is 2 minutes)."""
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.initial_reconnect_backoff_ms", int(backoff_initial * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(backoff_initial * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(backoff_max * 1000)),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", 0),
    ]


def peer_target(url: str, secure: bool) -> str:
    """'http://127.0.0.1:2380' -> '127.0.0.1:2380' (a gRPC target)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"peer URL {url!r}: want http(s)://host:port")
    if parts.scheme == "https" and not secure:
        raise ValueError(f"peer URL {url!r}: https needs channel credentials")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def peer_address(url: str) -> tuple[str, int]:
    """'https://127.0.0.1:2380' -> ('127.0.0.1', 2380): where to fetch a certificate from."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"peer URL {url!r}: want http(s)://host:port")
    return parts.hostname, parts.port


class PeerCallError(Exception):
    """A unary call to a member failed: refused by it (`code` is its status), or none of
    its peer URLs could be reached (`code` of the last attempt; None if none was tried)."""

    def __init__(self, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


async def check_call(context: grpc.aio.ServicerContext[Any, Any], cluster_id: int, member_id: int) -> None:
    """Refuse a peer call from another cluster ("cluster ID mismatch", etcd's text) or
    meant for another member: every service on the peer listener but Membership (whose
    callers, joining members, do not know the cluster id yet) checks this first."""
    md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    if md.get(MD_CLUSTER) != f"{cluster_id:x}":
        log.warning("refused a call from peer %s: cluster ID mismatch (%s)", md.get(MD_FROM), md.get(MD_CLUSTER))
        await abort_call(context, grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_MISMATCH)
    if md.get(MD_TO) != f"{member_id:x}":
        await abort_call(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            f"member ID mismatch: sent to {md.get(MD_TO)}, this is {member_id:x}",
        )


class _State(enum.Enum):
    CONNECTING = "connecting"  # a stream is being opened: queue
    ACTIVE = "active"  # the receiver accepted the stream: queue and write
    DOWN = "down"  # waiting to retry: drop and report unreachable


class PeerUnreachable(Exception):
    """A self-signed peer's certificate could not be fetched: the peer is down or speaks
    no TLS there. Handled as any connection failure (backoff, unreachable)."""


class _Link:
    """The channel to one peer URL.

    Plaintext, or TLS with the peer credentials: opened once (gRPC reconnects it). With a
    pinner (this member's peer TLS is self-signed): opened for the certificate the remote
    presents, fetched again whenever the channel is not connected, and opened anew when
    that certificate changed, since a peer restarted with a new data dir has a new one.
    """

    def __init__(self, transport: PeerTransport, url: str) -> None:
        self.t = transport
        self.url = url
        self.pinning = transport.pinner is not None and urlsplit(url).scheme == "https"
        self.channel: grpc.aio.Channel | None = None if self.pinning else transport.open_channel(url)
        self.certificate: bytes | None = None  # the pinned one
        self._pinning: asyncio.Task[grpc.aio.Channel] | None = None  # the fetch under way
        self._closed = False

    async def get(self) -> grpc.aio.Channel:
        """The channel, (re)pinned first if needed; raises PeerUnreachable. Callers that
        need it at the same time (the stream, a unary call) share one fetch."""
        if self._usable():
            assert self.channel is not None
            return self.channel
        if self._pinning is None or self._pinning.done():
            self._pinning = asyncio.get_running_loop().create_task(self._repin())
            self._pinning.add_done_callback(_retrieve)
        return await asyncio.shield(self._pinning)

    async def _repin(self) -> grpc.aio.Channel:
        assert self.t.pinner is not None
        host, port = peer_address(self.url)
        try:
            pinned = await self.t.pinner.pin(host, port, self.t.connect_timeout)
        except TimeoutError:  # e.g. a stopped process: the kernel accepts, nobody answers
            raise PeerUnreachable(f"{self.url}: no TLS handshake in {self.t.connect_timeout}s") from None
        except OSError as exc:
            raise PeerUnreachable(f"{self.url}: {str(exc) or type(exc).__name__}") from None
        if self._closed:
            raise PeerUnreachable(f"{self.url}: the peer transport is closed")
        if self.channel is None or pinned.certificate != self.certificate:
            old, self.channel = self.channel, self.t.open_channel(self.url, pinned)
            if old is not None:
                log.info("peer URL %s presents a new certificate", self.url)
                self.t._close_later(old.close(self.t.connect_timeout))  # calls on it may finish
            self.certificate = pinned.certificate
        return self.channel

    def _usable(self) -> bool:
        """Whether the channel may be used as it is: a pinned one only while connected
        (connecting, it may be trying a certificate the peer no longer has)."""
        if self.channel is None:
            return False
        return not self.pinning or self.channel.get_state() is grpc.ChannelConnectivity.READY

    async def close(self) -> None:
        self._closed = True
        if self._pinning is not None:
            self._pinning.cancel()
        if self.channel is not None:
            await self.channel.close(None)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared fetch's failure as seen: its callers may all have gone."""
    if not task.cancelled():
        task.exception()


class _Peer:
    """The stream to one peer: its queue, its writer task, its channel."""

    def __init__(self, transport: PeerTransport, peer_id: int, url: str) -> None:
        self.t = transport
        self.id = peer_id
        self.url = url
        self.link = _Link(transport, url)
        self.queue: collections.deque[Message] = collections.deque()
        self.wake = asyncio.Event()
        self.state = _State.CONNECTING
        self.active_since = 0.0  # monotonic time the current stream became active
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"peer-{peer_id:x}")

    def offer(self, messages: list[Message]) -> bool:
        """Queue what fits; False if anything was dropped."""
        if self.state is _State.DOWN:
            return False
        room = self.t.queue_size - len(self.queue)
        self.queue.extend(messages[:room] if room < len(messages) else messages)
        self.wake.set()
        return room >= len(messages)

    def metadata(self) -> Metadata:
        return self.t.call_metadata(self.id)

    async def _run(self) -> None:
        delay = self.t.backoff_initial
        was_active = True  # log the first failure
        while True:
            self.state = _State.CONNECTING
            call: Any = None
            try:
                channel = await self.link.get()
                call = pb_grpc.RaftStub(channel).Send(metadata=self.metadata())
                await self._handshake(call)
                if not was_active:
                    log.info("peer %x: stream to %s is up", self.id, self.url)
                self.state = _State.ACTIVE
                self.active_since = time.monotonic()
                was_active = True
                delay = self.t.backoff_initial
                await self._pump(call)
            except grpc.aio.AioRpcError as exc:
                if was_active or exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
                    code, details = exc.code().name, exc.details()
                    log.warning("peer %x: stream to %s failed: %s: %s", self.id, self.url, code, details)
                if exc.code() is grpc.StatusCode.FAILED_PRECONDITION and exc.details() == MEMBER_REMOVED:
                    self.t.on_removed()
            except PeerUnreachable as exc:
                if was_active:
                    log.warning("peer %x: stream to %s failed: %s", self.id, self.url, exc)
            except asyncio.InvalidStateError:  # written after the call ended
                if was_active:
                    log.warning("peer %x: stream to %s ended", self.id, self.url)
            except Exception:
                log.exception("peer %x: stream to %s failed", self.id, self.url)
            finally:
                if call is not None:
                    call.cancel()
            was_active = False
            self.state = _State.DOWN
            self.queue.clear()
            self.t.on_unreachable(self.id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.t.backoff_max)

    async def _handshake(self, call: Any) -> None:
        """Wait until the receiver accepted the stream (or raise its refusal)."""
        md = await call.initial_metadata()
        if md is None or not any(k == MD_ACCEPTED for k, _ in md):
            await call  # raises the refusal (or the connection error)
            raise asyncio.InvalidStateError("the peer closed the stream")

    async def _pump(self, call: Any) -> None:
        call.add_done_callback(lambda _c: self.wake.set())
        queue = self.queue
        limit = self.t.batch_bytes
        while True:
            await self.wake.wait()
            self.wake.clear()
            if call.done():
                await call
                raise asyncio.InvalidStateError("the peer closed the stream")
            while queue:
                batch = pb.MessageBatch()
                out = batch.messages
                size = 0
                while queue and (size < limit or not out):
                    m = queue.popleft()
                    out.append(message_to_pb(m))
                    size += 64 + sum(len(e.data) for e in m.entries)
                await call.write(batch)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.link.close()


class PeerTransport:
    """Sends this member's Raft messages to its peers and receives theirs.

    Construct it on the running event loop: it opens the streams to `peers` at once.

    - `on_messages(messages)`: a received batch, every message addressed to this member;
    - `on_snapshot(message, path)`: a received MsgSnap and its image, complete and
      fsynced at `path` in `snapshot_dir`; the callee owns the file from then on (moves
      or deletes it). The sender is answered once the callback returns; if it raises,
      the sender is told the transfer failed and the file is removed;
    - `on_unreachable(peer_id)`: a message to that peer was dropped (stream down or
      queue full); the driver calls RawNode.report_unreachable.
    """

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        peers: dict[int, str],
        on_messages: Callable[[list[Message]], None],
        on_snapshot: Callable[[Message, Path], Awaitable[None]],
        on_unreachable: Callable[[int], None],
        *,
        snapshot_dir: str | os.PathLike[str],
        credentials: grpc.ChannelCredentials | None = None,
        pinner: CertificatePinner | None = None,
        queue_size: int = 4096,
        batch_bytes: int = 4 << 20,
        chunk_size: int = 1 << 20,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if queue_size <= 0 or batch_bytes <= 0 or chunk_size <= 0:
            raise ValueError("queue_size, batch_bytes and chunk_size must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("want 0 < backoff_initial <= backoff_max")
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.on_messages = on_messages
        self.on_snapshot = on_snapshot
        self.on_unreachable = on_unreachable
        # Whether the cluster removed a member (its streams are refused), and what to do
        # when a peer says this member was removed: the driver sets both.
        self.is_removed: Callable[[int], bool] = lambda member_id: False
        self.on_removed: Callable[[], None] = lambda: None
        self.snapshot_dir = Path(snapshot_dir)
        self.credentials = credentials
        # Set when this member's peer TLS is self-signed: https peers are dialled with the
        # certificate they present pinned (etcd skips verifying them), not `credentials`.
        self.pinner = pinner
        self.queue_size = queue_size
        self.batch_bytes = batch_bytes
        self.chunk_size = chunk_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # How long a unary call waits for a connection to one peer URL before it tries the
        # next (etcd's peer dial timeout at default flags: 1 s + an election timeout).
        self.connect_timeout = connect_timeout
        self._peers: dict[int, _Peer] = {}
        # Channels for unary calls to a member's peer URLs other than its stream's.
        self._channels: dict[tuple[int, str], _Link] = {}
        self._closed = False
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.snapshot_dir.glob(f"*{_PART}"):  # a receive cut short by a crash
            stale.unlink()
        self._closing: set[asyncio.Task[None]] = set()
        self.update_peers(peers)

    # -- sending ------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        """Whether https peer URLs can be dialled (this member has peer TLS)."""
        return self.credentials is not None or self.pinner is not None

    def open_channel(self, url: str, pinned: PinnedCredentials | None = None) -> grpc.aio.Channel:
        """A channel to a peer URL: TLS for https (with `pinned` credentials if given, else
        the peer credentials), plaintext for http (the scheme decides, as in etcd)."""
        target = peer_target(url, self.secure)
        options = _channel_options(self.backoff_initial, self.backoff_max)
        if urlsplit(url).scheme != "https":
            return grpc.aio.insecure_channel(target, options=options)
        if pinned is not None:
            return grpc.aio.secure_channel(target, pinned.credentials, options=[*options, *pinned.options])
        if self.credentials is None:
            raise ValueError(f"peer URL {url!r}: with self-signed peer TLS, dial it with the certificate it presents")
        return grpc.aio.secure_channel(target, self.credentials, options=options)

    def update_peers(self, peers: dict[int, str]) -> None:
        """Make the set of peers exactly `peers` (this member's own id is ignored)."""
        self._check_open()
        wanted = {pid: url for pid, url in peers.items() if pid != self.member_id}
        for url in wanted.values():
            peer_target(url, self.secure)
        for pid in sorted(self._peers):
            peer = self._peers[pid]
            if wanted.get(pid) != peer.url:
                del self._peers[pid]
                self._close_later(peer.close())
        for key in sorted(self._channels):
            if key[0] not in self._peers:  # the member left, or its peer URLs changed
                self._close_later(self._channels.pop(key).close())
        for pid in sorted(wanted):
            if pid not in self._peers:
                self._peers[pid] = _Peer(self, pid, wanted[pid])

    def _close_later(self, closing: Coroutine[Any, Any, None]) -> None:
        """Close a dropped peer's stream or channel without blocking update_peers."""
        task = asyncio.get_running_loop().create_task(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def peers(self) -> dict[int, str]:
        return {pid: p.url for pid, p in self._peers.items()}

    def active(self) -> set[int]:
        """The peers whose stream is open and accepted (etcd's "active" peers)."""
        return {pid for pid, p in self._peers.items() if p.state is _State.ACTIVE}

    def active_since(self, peer_id: int) -> float | None:
        """Since when (time.monotonic) the stream to a peer is up; None if it is not."""
        p = self._peers.get(peer_id)
        return p.active_since if p is not None and p.state is _State.ACTIVE else None

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for their peers; never blocks. MsgSnap goes via send_snapshot."""
        self._check_open()
        by_peer: dict[int, list[Message]] = {}
        for m in messages:
            if m.type is MessageType.SNAP:
                raise ValueError("MsgSnap needs its image: use send_snapshot")
            by_peer.setdefault(m.to, []).append(m)
        for pid, msgs in by_peer.items():
            peer = self._peers.get(pid)
            if peer is None:
                log.debug("dropped %d message(s) to unknown peer %x", len(msgs), pid)
                continue
            if not peer.offer(msgs):
                self.on_unreachable(pid)

    async def send_snapshot(self, message: Message, image: str | os.PathLike[str]) -> bool:
        """Stream a MsgSnap and its image file to message.to; True once the peer took it.

        On False (peer unknown or unreachable, file unreadable, receiver refused) the
        peer is also reported unreachable; either way the driver reports the outcome
        with RawNode.report_snapshot.
        """
        self._check_open()
        if message.type is not MessageType.SNAP or message.snapshot is None:
            raise ValueError("send_snapshot needs a MsgSnap carrying a snapshot")
        peer = self._peers.get(message.to)
        if peer is None:
            log.warning("snapshot to unknown peer %x not sent", message.to)
            return False
        try:
            channel = await peer.link.get()
        except PeerUnreachable as exc:
            log.warning("snapshot to peer %x not sent: %s", message.to, exc)
            self.on_unreachable(message.to)
            return False
        try:
            f = await asyncio.to_thread(open, image, "rb")
        except OSError as exc:
            log.warning("snapshot to peer %x not sent: %s", message.to, exc)
            return False
        try:
            await pb_grpc.RaftStub(channel).SendSnapshot(self._snapshot_chunks(message, f), metadata=peer.metadata())
        except grpc.aio.AioRpcError as exc:
            log.warning("snapshot to peer %x failed: %s: %s", message.to, exc.code().name, exc.details())
        else:
            log.info("snapshot at index %d sent to peer %x", message.snapshot.metadata.index, message.to)
            return True
        self.on_unreachable(message.to)
        return False

    async def _snapshot_chunks(self, message: Message, f: IO[bytes]) -> AsyncIterator[pb.SnapshotChunk]:
        try:
            size = await asyncio.to_thread(os.fstat, f.fileno())
            yield pb.SnapshotChunk(message=message_to_pb(message), image_size=size.st_size)
            digest = hashlib.sha256()
            while True:
                data = await asyncio.to_thread(_read_hashed, f, self.chunk_size, digest)
                if not data:
                    break
                yield pb.SnapshotChunk(data=data)
            yield pb.SnapshotChunk(sha256=digest.digest())
        finally:
            f.close()

    def call_metadata(self, to: int) -> Metadata:
        return ((MD_CLUSTER, f"{self.cluster_id:x}"), (MD_FROM, f"{self.member_id:x}"), (MD_TO, f"{to:x}"))

    async def channel(self, peer_id: int, url: str) -> grpc.aio.Channel:
        """The channel for unary calls to one of a member's peer URLs: its Raft stream's
        when the stream uses that URL (one connection per peer), else one opened on first
        use and kept until the member leaves or changes its URLs. Raises PeerUnreachable
        when a self-signed peer's certificate cannot be fetched."""
        self._check_open()
        peer = self._peers.get(peer_id)
        if peer is not None and peer.url == url:
            return await peer.link.get()
        link = self._channels.get((peer_id, url))
        if link is None:
            link = self._channels[(peer_id, url)] = _Link(self, url)
        return await link.get()

    async def call(
        self, peer_id: int, urls: Sequence[str], invoke: Callable[[grpc.aio.Channel, Metadata], Awaitable[T]]
    ) -> T:
        """One unary call to member `peer_id`: `invoke(channel, metadata)` over each of its
        peer URLs in order until one reaches it (etcd tries every peer URL likewise; a URL
        gets `connect_timeout` to connect, the call's own deadline is `invoke`'s); the
        metadata carries the cluster and member ids the receiver checks. A refusal by the
        member is its answer and is not retried elsewhere. Raises PeerCallError."""
        if self._closed:
            raise PeerCallError(None, "the peer transport is closed")
        error = PeerCallError(None, f"member {peer_id:x} has no usable peer URL")
        for url in urls:
            try:
                channel = await self.channel(peer_id, url)
            except ValueError as exc:  # e.g. an https URL while this member has no peer TLS
                error = PeerCallError(None, str(exc))
                continue
            except PeerUnreachable as exc:
                error = PeerCallError(grpc.StatusCode.UNAVAILABLE, str(exc))
                continue
            try:
                await self._connected(channel)
            except TimeoutError:
                error = PeerCallError(grpc.StatusCode.UNAVAILABLE, f"{url}: no connection in {self.connect_timeout}s")
                continue
            try:
                return await invoke(channel, self.call_metadata(peer_id))
            except grpc.aio.AioRpcError as exc:
                error = PeerCallError(exc.code(), f"{url}: {exc.code().name}: {exc.details()}")
                if exc.code() not in _UNREACHED:
                    raise error from None
        raise error

    async def _connected(self, channel: grpc.aio.Channel) -> None:
        """Wait (up to connect_timeout) for the channel to connect. A fail-fast call on a
        channel in reconnect backoff (the stream's, after the peer restarted) would fail at
        once without trying; waiting keeps one dead URL from costing more than this."""
        if channel.get_state(try_to_connect=True) is not grpc.ChannelConnectivity.READY:
            await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)

    # -- receiving ----------------------------------------------------------------------

    def add_servicer(self, server: grpc.aio.Server) -> None:
        """Serve the Raft service on `server` (create it with PEER_SERVER_OPTIONS)."""
        pb_grpc.add_RaftServicer_to_server(_Servicer(self), server)

    async def close(self) -> None:
        """Stop every stream; calls received afterwards are refused."""
        if self._closed:
            return
        self._closed = True
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await peer.close()
        links = list(self._channels.values())
        self._channels.clear()
        for link in links:
            await link.close()
        if self._closing:
            await asyncio.wait(self._closing)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the peer transport is closed")


def _read_hashed(f: IO[bytes], n: int, digest: Any) -> bytes:
    data = f.read(n)
    digest.update(data)
    return data


def _write_hashed(f: IO[bytes], data: bytes, digest: Any) -> None:
    f.write(data)
    digest.update(data)


def _finish_file(f: IO[bytes], part: Path, final: Path) -> None:
    """Make a received image durable under its final name."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.rename(part, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Servicer(pb_grpc.RaftServicer):
    def __init__(self, transport: PeerTransport) -> None:
        self.t = transport

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Refuse calls from another cluster, meant for another member, or from a member
        the cluster removed (which then stops, as etcd's does on 410 Gone)."""
        if self.t._closed:
            await abort_call(context, grpc.StatusCode.UNAVAILABLE, "the peer transport is closed")
        await check_call(context, self.t.cluster_id, self.t.member_id)
        sender = next((v for k, v in context.invocation_metadata() or () if k == MD_FROM), None)
        try:
            removed = isinstance(sender, str) and self.t.is_removed(int(sender, 16))
        except ValueError:
            removed = False
        if removed:
            log.warning("refused a stream from removed member %s", sender)
            await abort_call(context, grpc.StatusCode.FAILED_PRECONDITION, MEMBER_REMOVED)

    def _refusal(self, p: pb.Message) -> tuple[grpc.StatusCode, str] | Message:
        """The message, or why it is refused (a plain function: it runs for every message)."""
        try:
            m = message_from_pb(p)
        except PeerDecodeError as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        if m.type in LOCAL_MESSAGES:  # RawNode.step refuses these: never let a peer inject one
            return grpc.StatusCode.INVALID_ARGUMENT, f"{m.type.value} is local to a member"
        if m.to != self.t.member_id:
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                f"member ID mismatch: message to {m.to:x}, this is {self.t.member_id:x}",
            )
        return m

    async def _decode(self, context: grpc.aio.ServicerContext[Any, Any], p: pb.Message) -> Message:
        got = self._refusal(p)
        if not isinstance(got, Message):
            await abort_call(context, *got)
        return got

    async def Send(
        self, request_iterator: AsyncIterator[pb.MessageBatch], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendResponse:
        await self._check(context)
        await context.send_initial_metadata(((MD_ACCEPTED, "1"),))
        async for batch in request_iterator:
            if self.t._closed:
                await abort_call(context, grpc.StatusCode.UNAVAILABLE, "the peer transport is closed")
            messages: list[Message] = []
            for p in batch.messages:
                got = self._refusal(p)
                if not isinstance(got, Message):
                    await abort_call(context, *got)
                messages.append(got)
            if messages:
                self.t.on_messages(messages)
        return pb.SendResponse()

    async def SendSnapshot(
        self, request_iterator: AsyncIterator[pb.SnapshotChunk], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SnapshotResponse:
        await self._check(context)
        chunks = aiter(request_iterator)
        first = await anext(chunks, None)
        if first is None or not first.HasField("message"):
            await abort_call(context, grpc.StatusCode.INVALID_ARGUMENT, "a snapshot stream starts with its MsgSnap")
        message = await self._decode(context, first.message)
        if message.type is not MessageType.SNAP or message.snapshot is None:
            await abort_call(context, grpc.StatusCode.INVALID_ARGUMENT, f"expected MsgSnap, got {message.type.value}")
        index = message.snapshot.metadata.index
        fd, name = tempfile.mkstemp(dir=self.t.snapshot_dir, prefix=f"{index:016x}-", suffix=f".snap{_PART}")
        part = Path(name)
        final = part.with_name(part.name[: -len(_PART)])
        f = os.fdopen(fd, "wb")
        handed_on = False
        try:
            digest = hashlib.sha256()
            received = 0
            checksum = b""
            if first.data:
                await asyncio.to_thread(_write_hashed, f, first.data, digest)
                received += len(first.data)
            async for chunk in chunks:
                if checksum:
                    await abort_call(context, grpc.StatusCode.INVALID_ARGUMENT, "snapshot data after its checksum")
                if chunk.data:
                    await asyncio.to_thread(_write_hashed, f, chunk.data, digest)
                    received += len(chunk.data)
                checksum = chunk.sha256
            if received != first.image_size or checksum != digest.digest():
                await abort_call(
                    context,
                    grpc.StatusCode.DATA_LOSS,
                    f"snapshot image damaged: {received} of {first.image_size} bytes, "
                    f"checksum {'matches' if checksum == digest.digest() else 'differs'}",
                )
            await asyncio.to_thread(_finish_file, f, part, final)
            log.info("received snapshot at index %d (%d bytes) from peer %x", index, received, message.from_)
            handed_on = True
            try:
                await self.t.on_snapshot(message, final)
            except Exception as exc:
                log.exception("installing the snapshot from peer %x failed", message.from_)
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
                await abort_call(context, grpc.StatusCode.INTERNAL, f"snapshot not installed: {exc}")
        finally:
            if not handed_on:
                f.close()
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
        return pb.SnapshotResponse()


async def abort_call(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> NoReturn:
    """End a peer call with a status (typed NoReturn, which context.abort is not)."""
    await context.abort(code, details)
    raise AssertionError("unreachable")
