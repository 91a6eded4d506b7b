"""The pure auth core: range permission merging, the permission checks, the auth
store's apply (etcd's refusals, revision bumps, quirks), the Member's second check
at apply time, and the token effects every member's apply reports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rusd.core import codec, errors
from rusd.core.auth import apply as auth_apply
from rusd.core.auth import check, store
from rusd.core.auth.perms import RangePerms
from rusd.core.auth.store import AuthState
from rusd.core.auth.types import (
    AuthDisableRequest,
    Authed,
    AuthEnableRequest,
    AuthenticateRequest,
    AuthInfo,
    AuthRequest,
    AuthResponse,
    Permission,
    PermType,
    RoleAddRequest,
    RoleDeleteRequest,
    RoleGetRequest,
    RoleGetResponse,
    RoleGrantPermissionRequest,
    RoleRevokePermissionRequest,
    TokenAssigned,
    TokensRevoked,
    UserAddRequest,
    UserChangePasswordRequest,
    UserDeleteRequest,
    UserGetRequest,
    UserGetResponse,
    UserGrantRoleRequest,
    UserListRequest,
    UserListResponse,
    UserRevokeRoleRequest,
    UserTokensRevoked,
)
from rusd.core.errors import EtcdError
from rusd.core.lease.types import LeaseGrantRequest, LeaseRevokeRequest
from rusd.core.mvcc.types import PutRequest, PutResponse, RangeRequest, TxnRequest
from rusd.core.node import Applied, Member, Proposal
from rusd.core.raft import Entry
from rusd.storage.memory import MemoryBackend
from tests.unit.test_node import Disk
from tests.unit.test_node_cluster import elected

R, W, RW = PermType.READ, PermType.WRITE, PermType.READWRITE


def perms(*ps: tuple[int, bytes, bytes]) -> RangePerms:
    return RangePerms.merge(Permission(t, k, e) for t, k, e in ps)


# -- range permission merging ------------------------------------------------------


def test_single_key_permission_allows_that_key_only() -> None:
    p = perms((R, b"a", b""))
    assert p.allows(b"a", b"", write=False)
    assert not p.allows(b"a", b"", write=True)
    assert not p.allows(b"ab", b"", write=False)
    assert p.allows(b"a", b"a\x00", write=False)  # the range holding only "a"
    assert not p.allows(b"a", b"b", write=False)


def test_prefix_and_from_key_permissions() -> None:
    p = perms((RW, b"a/", b"a0"), (W, b"z", b"\x00"))
    assert p.allows(b"a/x", b"", write=True) and p.allows(b"a/", b"a0", write=False)
    assert not p.allows(b"a", b"a0", write=False)  # starts before the prefix
    assert p.allows(b"zz", b"", write=True) and p.allows(b"z", b"\x00", write=True)
    assert not p.allows(b"z", b"\x00", write=False)
    assert not p.allows(b"y", b"\x00", write=True)


def test_a_range_is_allowed_by_the_union_of_permissions_without_gap() -> None:
    p = perms((R, b"a", b"c"), (R, b"c", b"e"), (R, b"b", b"d"))
    assert p.allows(b"a", b"e", write=False)  # adjacent and overlapping pieces join
    assert not p.allows(b"a", b"f", write=False)
    gap = perms((R, b"a", b"c"), (R, b"c\x00", b"e"))
    assert not gap.allows(b"a", b"e", write=False)  # "c" itself is missing
    assert perms((R, b"a", b"c"), (R, b"c", b""), (R, b"c\x00", b"e")).allows(b"a", b"e", write=False)


def test_permissions_of_different_types_do_not_combine() -> None:
    p = perms((R, b"a", b"c"), (W, b"c", b"e"))
    assert not p.allows(b"a", b"e", write=False) and not p.allows(b"a", b"e", write=True)


def test_the_empty_key_is_above_every_key_as_in_etcd() -> None:
    """etcd's BytesAffineComparable: a request starting at b"" starts at +infinity."""
    everything = perms((RW, b"\x00", b"\x00"))
    assert everything.allows(b"\x00", b"\x00", write=False)
    assert not everything.allows(b"", b"\x00", write=False)


KEYS = st.lists(st.sampled_from([b"a", b"b", b"\x00"]), min_size=1, max_size=3).map(b"".join)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[bytes, bytes]:
    key = draw(KEYS)
    kind = draw(st.sampled_from(["key", "range", "from"]))
    if kind == "key":
        return key, b""
    if kind == "from":
        return key, b"\x00"
    end = draw(KEYS.filter(lambda e: e > key))
    return key, end


def _bounds(key: bytes, end: bytes) -> tuple[bytes, bytes | None]:
    """[key, end) with None for +infinity."""
    if not end:
        return key, key + b"\x00"
    return key, None if end == b"\x00" else end


def _covered(x: bytes, ivls: list[tuple[bytes, bytes | None]]) -> bool:
    return any(lo <= x and (hi is None or x < hi) for lo, hi in ivls)


@given(st.lists(intervals(), max_size=5), intervals())
def test_range_check_equals_pointwise_coverage(granted: list[tuple[bytes, bytes]], want: tuple[bytes, bytes]) -> None:
    """A range is allowed iff every key in it is held by some permission: for
    half-open intervals it is enough to look at its start and at every permission end
    inside it (the first uncovered key is always one of those)."""
    p = perms(*((R, k, e) for k, e in granted))
    ivls = [_bounds(k, e) for k, e in granted]
    lo, hi = _bounds(*want)
    points = [lo] + [e for _, e in ivls if e is not None and lo <= e and (hi is None or e < hi)]
    assert p.allows(want[0], want[1], write=False) == all(_covered(x, ivls) for x in points)


# -- checks ------------------------------------------------------------------------


def state_with(enabled: bool = True) -> tuple[MemoryBackend, AuthState]:
    backend = MemoryBackend()
    s = store.load(backend)
    for req in (
        UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"), UserAddRequest("alice", b"h"),
        RoleAddRequest("r"), RoleGrantPermissionRequest("r", Permission(RW, b"a", b"b")),
        UserGrantRoleRequest("alice", "r"),
    ):
        _, s = auth_apply.apply(backend, s, req, 1)
    if enabled:
        _, s = auth_apply.apply(backend, s, AuthEnableRequest(), 1)
    return backend, s


def test_checks_when_enabled() -> None:
    _, s = state_with()
    alice, root = AuthInfo("alice", s.revision), AuthInfo("root", s.revision)
    check.check_op(s, alice, b"a1", b"", write=True)
    check.check_op(s, root, b"zzz", b"\x00", write=True)
    cases = [
        (AuthInfo(), errors.USER_EMPTY),
        (AuthInfo("alice", s.revision - 1), errors.AUTH_OLD_REVISION),
        (AuthInfo("ghost", s.revision), errors.PERMISSION_DENIED),
    ]
    for info, kind in cases:
        with pytest.raises(EtcdError) as e:
            check.check_op(s, info, b"a1", b"", write=False)
        assert e.value.kind == kind
    with pytest.raises(EtcdError, match="permission denied"):
        check.check_op(s, alice, b"b", b"", write=False)
    with pytest.raises(EtcdError, match="permission denied"):
        check.check_admin(s, alice)
    with pytest.raises(EtcdError, match="user name not found"):
        check.check_admin(s, AuthInfo("ghost", s.revision))
    check.check_admin(s, root)


def test_nothing_is_checked_while_auth_is_disabled() -> None:
    _, s = state_with(enabled=False)
    check.check_op(s, AuthInfo(), b"zzz", b"", write=True)
    check.check_admin(s, AuthInfo())


def test_txn_needs_every_compare_and_both_branches_nested_included() -> None:
    _, s = state_with()
    alice = AuthInfo("alice", s.revision)
    inner = TxnRequest(success=(PutRequest(b"z"),))
    with pytest.raises(EtcdError, match="permission denied"):
        check.check_txn(s, alice, TxnRequest(success=(RangeRequest(b"a1"),), failure=(inner,)))
    check.check_txn(s, alice, TxnRequest(success=(RangeRequest(b"a1"),), failure=(PutRequest(b"a2"),)))


# -- apply -------------------------------------------------------------------------


def apply_all(backend: MemoryBackend, s: AuthState, *reqs: AuthRequest) -> tuple[list[object], AuthState]:
    out: list[object] = []
    for req in reqs:
        try:
            answer, s = auth_apply.apply(backend, s, req, 7)
            out.append(answer)
        except EtcdError as e:
            out.append(e.kind)
    return out, s


def test_apply_refusals_and_revisions_as_etcd() -> None:
    backend = MemoryBackend()
    s = store.load(backend)
    assert s.revision == 1
    out, s = apply_all(
        backend, s,
        AuthEnableRequest(), UserAddRequest("root", b"h"), AuthEnableRequest(), UserAddRequest("root", b"h"),
        UserAddRequest("", b"h"), RoleAddRequest(""), UserGrantRoleRequest("root", "root"),
        UserGrantRoleRequest("root", "root"), UserGrantRoleRequest("root", "nope"), AuthEnableRequest(),
        UserDeleteRequest("root"), UserRevokeRoleRequest("root", "root"), RoleDeleteRequest("root"),
        UserRevokeRoleRequest("nobody", "x"), RoleRevokePermissionRequest("nope", b"k"),
        AuthenticateRequest("root"), AuthenticateRequest("ghost"), AuthDisableRequest(), AuthDisableRequest(),
        UserListRequest(),
    )
    assert out == [
        errors.ROOT_USER_NOT_EXIST, AuthResponse(7, 2), errors.ROOT_ROLE_NOT_EXIST, errors.USER_ALREADY_EXIST,
        errors.USER_EMPTY, errors.ROLE_EMPTY,
        AuthResponse(7, 3),  # granting root needs no root role to exist
        AuthResponse(7, 3),  # already granted: no change, no new revision
        errors.ROLE_NOT_FOUND,
        AuthResponse(7, 3),  # enabling does not move the revision
        errors.INVALID_AUTH_MGMT, errors.INVALID_AUTH_MGMT, errors.INVALID_AUTH_MGMT,
        errors.USER_NOT_FOUND, errors.ROLE_NOT_FOUND,
        AuthResponse(7, 3), errors.AUTH_FAILED, AuthResponse(7, 4), AuthResponse(7, 4),
        UserListResponse(7, ("root",)),
    ]
    assert store.load(backend) == s and not s.enabled and s.revision == 4


def test_grant_permission_updates_or_inserts_sorted_and_role_delete_revokes_it() -> None:
    backend, s = state_with(enabled=False)
    out, s = apply_all(
        backend, s,
        RoleGrantPermissionRequest("r", Permission(R, b"a", b"b")),  # same range: type updated
        RoleGrantPermissionRequest("r", Permission(W, b"0", b"")),
        RoleGetRequest("r"), RoleRevokePermissionRequest("r", b"0", b"\x00"), RoleDeleteRequest("r"),
        UserGetRequest("alice"),
    )
    assert out[2] == RoleGetResponse(7, (Permission(W, b"0", b""), Permission(R, b"a", b"b")))
    assert out[3] == errors.PERMISSION_NOT_GRANTED
    assert out[5] == UserGetResponse(7, ())


# -- the member checks again at apply time -------------------------------------------


def test_a_permission_revoked_between_check_and_apply_is_refused() -> None:
    disk = Disk()
    m = disk.member()
    setup = [UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"), UserAddRequest("alice", b"h"),
             RoleAddRequest("r"), RoleGrantPermissionRequest("r", Permission(RW, b"a", b"b")),
             UserGrantRoleRequest("alice", "r"), AuthEnableRequest()]
    for i, req in enumerate(setup, start=1):
        m.submit(i, req, 0)
    disk.turn(m)
    rev = m.auth.revision
    m.submit(1, Authed("alice", rev, PutRequest(b"a1", b"v")), 0)
    m.submit(2, Authed("root", rev, UserRevokeRoleRequest("alice", "r")), 0)
    m.submit(3, Authed("alice", rev, PutRequest(b"a2", b"v")), 0)  # checked at rev, applied after it moved
    m.submit(4, PutRequest(b"a3", b"v"), 0)  # no identity: the member's own proposals are trusted
    m.submit(5, Authed("", 0, PutRequest(b"a4", b"v")), 0)
    answers = dict(disk.turn(m))
    assert isinstance(answers[1], PutResponse) and isinstance(answers[2], AuthResponse)
    assert answers[3] == EtcdError(errors.AUTH_OLD_REVISION)
    assert isinstance(answers[4], PutResponse)
    assert answers[5] == EtcdError(errors.USER_EMPTY)
    assert disk.backend.get(b"a2") is None and disk.backend.get(b"a4") is None


def test_lease_revoke_needs_write_access_to_every_attached_key() -> None:
    disk = Disk()
    m = disk.member()
    setup = [UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"), UserAddRequest("alice", b"h"),
             RoleAddRequest("r"), RoleGrantPermissionRequest("r", Permission(RW, b"a", b"b")),
             UserGrantRoleRequest("alice", "r"), AuthEnableRequest(), LeaseGrantRequest(100, 5),
             PutRequest(b"a1", b"v", lease=5), PutRequest(b"z", b"v", lease=5)]
    for i, req in enumerate(setup, start=1):
        m.submit(i, req, 0)
    disk.turn(m)
    rev = m.auth.revision
    m.submit(1, Authed("alice", rev, LeaseRevokeRequest(5)), 0)
    m.submit(2, Authed("alice", rev, PutRequest(b"a2", b"v", lease=5)), 0)  # joining a lease alice can't revoke
    assert dict(disk.turn(m)) == {1: EtcdError(errors.PERMISSION_DENIED), 2: EtcdError(errors.PERMISSION_DENIED)}
    assert m.lessor.exists(5)


# -- token effects -----------------------------------------------------------------


def test_apply_reports_what_each_change_means_for_tokens_as_etcd() -> None:
    """etcd's auth store calls its token provider from the apply: assign on
    Authenticate (prefix + entry index), invalidateUser on user delete and password
    change, disable on AuthDisable; refusals and no-ops call nothing."""
    backend, s = state_with()
    cases: list[tuple[AuthRequest, list[object]]] = [
        (AuthenticateRequest("alice", "Prefix"), [TokenAssigned("alice", "Prefix.40")]),
        (AuthenticateRequest("alice"), []),  # JWT, or an entry logged before tokens were
        (AuthenticateRequest("ghost", "P"), []),  # refused: authentication failed
        (UserChangePasswordRequest("alice", b"h2"), [UserTokensRevoked("alice")]),
        (UserChangePasswordRequest("ghost", b"h2"), []),
        (UserGrantRoleRequest("alice", "r"), []),
        (UserDeleteRequest("alice"), [UserTokensRevoked("alice")]),
        (UserDeleteRequest("root"), []),  # refused while auth is enabled
        (AuthDisableRequest(), [TokensRevoked()]),
        (AuthDisableRequest(), []),  # already disabled: no change
        (AuthenticateRequest("root", "P"), []),  # auth is not enabled
    ]
    for req, expected in cases:
        effects: list[object] = []
        try:
            answer, s = auth_apply.apply(backend, s, req, 7, index=40, effects=effects)  # type: ignore[arg-type]
        except EtcdError:
            answer = None
        assert effects == expected, req
        if isinstance(req, AuthenticateRequest) and answer is not None:
            # the member that took the request hands the client the token it assigned
            assert isinstance(answer, AuthResponse) and answer.token == (f"{req.simple_token}.40" if expected else "")


def test_an_installed_image_revokes_what_the_skipped_entries_would_have() -> None:
    backend, before = state_with()
    _, after = apply_all(backend, before, UserChangePasswordRequest("alice", b"h2"), UserAddRequest("bob", b"h"))
    assert auth_apply.revoked_between(before, after) == [UserTokensRevoked("alice")]
    _, gone = apply_all(backend, after, UserDeleteRequest("bob"))
    assert auth_apply.revoked_between(after, gone) == [UserTokensRevoked("bob")]
    _, disabled = apply_all(backend, gone, AuthDisableRequest())
    assert auth_apply.revoked_between(gone, disabled) == [TokensRevoked()]
    assert auth_apply.revoked_between(disabled, disabled) == []


def _enabled_root(disk: Disk, m: Member) -> None:
    for i, req in enumerate([UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"),
                             AuthEnableRequest()], start=1):
        m.submit(i, req, 0)
    disk.turn(m)


def _turns(disk: Disk, m: Member) -> Applied:
    """Turns until the member is idle; everything its applies produced."""
    out = Applied([], [])
    while rd := m.ready():
        disk.log.append_entries(rd.entries)
        applied = m.apply(disk.backend, rd.committed)
        m.advance(rd)
        out.answers += list(rd.responses) + applied.answers
        out.auth += applied.auth
    return out


def test_a_restart_assigns_tokens_only_from_entries_after_its_applied_index() -> None:
    disk = Disk()
    m = disk.member()
    _enabled_root(disk, m)
    m.submit(1, AuthenticateRequest("root", "Applied"), 0)
    first = _turns(disk, m)
    ((_, answer),) = first.answers
    assert isinstance(answer, AuthResponse) and answer.token == f"Applied.{m.applied_index}"
    assert first.auth == [TokenAssigned("root", answer.token)]
    m.submit(2, AuthenticateRequest("root", "Pending"), 0)
    rd = m.ready()
    disk.log.append_entries(rd.entries)  # crash: in the durable log, not applied
    pending = rd.entries[-1].index
    restarted = disk.member()
    # the applied entry is not applied again, so its token is not assigned again
    assert _turns(disk, restarted).auth == [TokenAssigned("root", f"Pending.{pending}")]
    assert _turns(disk, disk.member()).auth == []


def test_an_authenticate_entry_logged_before_tokens_were_replays_without_one() -> None:
    """Data dirs from before the token was logged hold AuthenticateRequest records
    under the old type number, with the user name only."""
    disk = Disk()
    m = disk.member()
    _enabled_root(disk, m)
    last = disk.log.last_index()
    old = b"\x07\x01\x03\x02\x03\x0e\x07\x1a\x05\x04root"  # Proposal(1, 7, AuthenticateRequest("root"))
    assert codec.decode(old) == Proposal(1, 7, AuthenticateRequest("root"))
    disk.log.append_entries([Entry(last + 1, m.term, old)])
    replayed = _turns(disk, disk.member())
    assert replayed.auth == [] and replayed.answers == []
    assert disk.member().applied_index > last


def test_every_member_assigns_and_revokes_tokens_as_it_applies() -> None:
    peers = elected(3)
    effects: dict[int, list[object]] = {i: [] for i in peers.ids}
    for i, member in peers.members.items():
        apply = member.apply

        def spy(backend: object, entries: list[Entry], now: float | None = None,
                apply: object = apply, i: int = i) -> Applied:
            got: Applied = apply(backend, entries, now)  # type: ignore[operator]
            effects[i] += got.auth
            return got

        member.apply = spy  # type: ignore[method-assign]
    via = peers.members[2]  # a follower takes every request
    for n, req in enumerate([UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"),
                             UserAddRequest("alice", b"h"), AuthEnableRequest(),
                             AuthenticateRequest("alice", "Tok"), UserChangePasswordRequest("alice", b"h2"),
                             AuthDisableRequest()], start=1):
        via.submit(n, req, 0)
        peers.run()
    token = next(a.token for _, a in peers.answers[2] if isinstance(a, AuthResponse) and a.token)
    expected = [TokenAssigned("alice", token), UserTokensRevoked("alice"), TokensRevoked()]
    assert token.startswith("Tok.") and all(effects[i] == expected for i in peers.ids)


def test_a_member_that_skipped_a_password_change_by_snapshot_revokes_the_tokens() -> None:
    peers = elected(3, snapshot_count=3, catch_up_entries=0)
    leader = peers.members[1]
    for n, req in enumerate([UserAddRequest("root", b"h"), UserGrantRoleRequest("root", "root"),
                             UserAddRequest("alice", b"h"), AuthEnableRequest()], start=1):
        leader.submit(n, req, 0)
        peers.run()
    peers.run(cut=frozenset({3}))
    lagging = peers.members[3]
    assert lagging.auth.enabled
    installs: list[Applied] = []
    apply = lagging.apply

    def spy(backend: MemoryBackend, entries: list[Entry], now: float | None = None) -> Applied:
        got = apply(backend, entries, now)
        installs.append(got)
        return got

    lagging.apply = spy  # type: ignore[method-assign]
    leader.submit(10, UserChangePasswordRequest("alice", b"h2"), 0)
    peers.run(cut=frozenset({3}))
    for n in range(6):  # push the change out of the leader's log
        leader.submit(20 + n, PutRequest(b"k", b"v%d" % n), 0)
        peers.run(cut=frozenset({3}))
    assert peers.logs[1].first_index() > peers.logs[3].last_index() + 1
    leader.tick(peers.now, 0)
    peers.run()
    assert peers.snapshots_sent >= 1 and lagging.auth.users["alice"].password == b"h2"
    assert [e for a in installs for e in a.auth] == [UserTokensRevoked("alice")]
