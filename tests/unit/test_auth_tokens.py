"""Token providers on a handed-in clock: the simple token's sliding TTL, its
assignment and invalidation by applied effects, --auth-token parsing, JWT claims."""

from __future__ import annotations

import pytest

from rusd.core.auth.types import AuthInfo, TokenAssigned, TokensRevoked, UserTokensRevoked
from rusd.server.auth_tokens import SimpleTokens, TokenError, apply_effects, parse_options, provider


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_simple_token_lives_while_used_within_its_ttl() -> None:
    clock = Clock()
    tokens = SimpleTokens(ttl=300, clock=clock)
    prefix = tokens.token_prefix()
    assert len(prefix) == 16 and prefix.isalpha() and prefix != tokens.token_prefix()
    t = f"{prefix}.12"
    assert tokens.info(t, 9) is None  # not applied here yet
    tokens.learn("alice", t)
    assert tokens.applied_index(t) == 12
    clock.now += 299
    # the revision is the store's current one, not the one at issue
    assert tokens.info(t, 9) == AuthInfo("alice", 9)
    clock.now += 299  # the use above restarted the TTL
    assert tokens.info(t, 9) == AuthInfo("alice", 9)
    clock.now += 300
    assert tokens.info(t, 9) is None
    assert tokens.info("unknown.1", 9) is None


def test_a_simple_token_is_only_assigned_by_the_apply() -> None:
    """Authenticate proposes a prefix, so a member never mints a simple token alone."""
    with pytest.raises(TokenError):
        SimpleTokens(ttl=300).assign("alice", 1)


def test_the_index_a_simple_token_waits_for() -> None:
    """etcd's isValidSimpleToken: exactly one dot, then the index."""
    tokens = SimpleTokens(ttl=300)
    assert tokens.applied_index("abc.42") == 42
    for bad in ("abc", "abc.", "abc.4x", "a.b.3", "abc.\u0663"):
        assert tokens.applied_index(bad) == 0


def test_simple_tokens_end_with_their_user_and_with_auth() -> None:
    tokens = SimpleTokens(ttl=300, clock=Clock())
    a1, a2, b = "a.1", "a.2", "b.3"
    apply_effects(tokens, [TokenAssigned("alice", a1), TokenAssigned("alice", a2), TokenAssigned("bob", b)])
    apply_effects(tokens, [UserTokensRevoked("alice")])
    assert tokens.info(a1, 1) is None and tokens.info(a2, 1) is None
    assert tokens.info(b, 1) == AuthInfo("bob", 1)
    apply_effects(tokens, [TokensRevoked()])
    assert tokens.info(b, 1) is None


def test_effects_apply_in_log_order() -> None:
    """A token assigned after its user's revocation in the same batch stays valid."""
    tokens = SimpleTokens(ttl=300, clock=Clock())
    apply_effects(tokens, [TokenAssigned("alice", "a.1"), UserTokensRevoked("alice"), TokenAssigned("alice", "a.3")])
    assert tokens.info("a.1", 1) is None
    assert tokens.info("a.3", 1) == AuthInfo("alice", 1)


def test_auth_token_option_parsing_as_etcd() -> None:
    assert parse_options("simple") == ("simple", {})
    assert parse_options("jwt,sign-method=RS256,ttl=5m") == ("jwt", {"sign-method": "RS256", "ttl": "5m"})
    for bad in ("jwt,ttl", "jwt,ttl=1=2", "jwt,ttl=1s,ttl=2s"):
        with pytest.raises(TokenError, match="invalid auth options"):
            parse_options(bad)
    assert isinstance(provider("simple", 60), SimpleTokens)
    with pytest.raises(TokenError, match="missing key data"):
        provider("jwt,sign-method=HS256", 60)


def test_hmac_jwt_round_trip_and_claims() -> None:
    import jwt as pyjwt

    from rusd.server.auth_tokens import JwtTokens

    secret, other = b"s" * 32, b"o" * 32
    tokens = JwtTokens("HS256", secret, secret, 60.0)
    # the apply assigns nothing and a member needs no index to verify one
    assert tokens.token_prefix() == ""
    t = tokens.assign("alice", 7)
    assert tokens.applied_index(t) == 0
    assert tokens.info(t, 99) == AuthInfo("alice", 7)
    assert tokens.info(pyjwt.encode({"username": 1, "revision": 7}, secret, algorithm="HS256"), 1) is None
    assert tokens.info(pyjwt.encode({"username": "a"}, secret, algorithm="HS256"), 1) is None
    assert tokens.info(pyjwt.encode({"username": "a", "revision": 1}, other, algorithm="HS256"), 1) is None


def test_a_cached_jwt_still_expires() -> None:
    import time

    from rusd.server.auth_tokens import JwtTokens

    offset = [0.0]
    secret = b"s" * 32
    tokens = JwtTokens("HS256", secret, secret, 60.0, clock=lambda: time.time() + offset[0])
    t = tokens.assign("alice", 3)
    assert tokens.info(t, 3) == AuthInfo("alice", 3)  # verified once, then cached
    offset[0] = 61.0
    assert tokens.info(t, 3) is None


def test_failed_authentications_are_limited_per_client_and_user() -> None:
    from rusd.server.auth_service import FailureLimiter

    clock = Clock()
    limiter = FailureLimiter(burst=3, refill=2.0, clock=clock)
    key = ("ipv4:127.0.0.1", "alice")
    for _ in range(3):
        assert limiter.allowed(key)
        limiter.failed(key)
    assert not limiter.allowed(key)
    assert limiter.allowed(("ipv4:127.0.0.1", "bob")) and limiter.allowed(("ipv4:10.0.0.1", "alice"))
    clock.now += 2.0  # one more attempt per refill period
    assert limiter.allowed(key)
    limiter.failed(key)
    assert not limiter.allowed(key)
