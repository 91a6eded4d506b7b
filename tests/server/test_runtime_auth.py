"""The runtime's side of applied auth changes, in process over a real LMDB store: the
token effects reach `on_auth` before the answer is released, and a wait for an applied
index (what a member does with a simple token it has not applied yet) ends when the
index is applied, or with False when it never is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rusd.core.auth.types import (
    AuthEffect,
    AuthEnableRequest,
    AuthenticateRequest,
    AuthResponse,
    TokenAssigned,
    UserAddRequest,
    UserDeleteRequest,
    UserGrantRoleRequest,
    UserTokensRevoked,
)
from rusd.core.cluster import MemberInfo
from rusd.core.mvcc.types import PutRequest
from rusd.core.node import MemberConfig
from rusd.server.runtime import Runtime
from rusd.storage.lmdb import LmdbStore

INFO = MemberInfo(1, "m", ("http://127.0.0.1:2380",), ("http://127.0.0.1:2379",))


def test_effects_precede_answers_and_applied_index_waits(tmp_path: Path) -> None:
    async def scenario(store: LmdbStore) -> None:
        rt = Runtime(store, MemberConfig(INFO, 9), tick_interval=0.01)
        seen: list[AuthEffect] = []
        rt.on_auth = seen.extend
        rt.start()
        try:
            for req in (UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"),
                        UserAddRequest("alice", b"h"), AuthEnableRequest()):
                assert isinstance(await rt.write(req), AuthResponse)
            answer = await rt.write(AuthenticateRequest("alice", "Prefix"))
            assert isinstance(answer, AuthResponse) and answer.token.startswith("Prefix.")
            # the member that took the request knows the token when its client gets it
            assert seen == [TokenAssigned("alice", answer.token)]
            await rt.write(UserDeleteRequest("alice"))
            assert seen[-1] == UserTokensRevoked("alice")

            applied = rt.status.applied_index
            assert await rt.wait_applied(applied)
            waiting = asyncio.ensure_future(rt.wait_applied(applied + 1))
            await asyncio.sleep(0)
            assert not waiting.done()
            await rt.write(PutRequest(b"k", b"v"))
            assert await waiting
            rt.request_timeout = 0.05
            assert not await rt.wait_applied(10**9)  # never applied: the token is refused
            assert rt._applied_waiters == []
        finally:
            await rt.stop()

    with LmdbStore(tmp_path / "db", 1 << 30) as store:
        asyncio.run(scenario(store))
