"""Auth tokens, as etcd's auth/simple_token.go and auth/jwt.go.

- simple: "<16 random letters>.<log index>", known to every member. The member that
  takes Authenticate draws the random prefix (`token_prefix`) and proposes it with
  the user name; every member, when it applies that entry, assigns the token with the
  entry's index (core `TokenAssigned`, handed here as `learn` by the runtime), so a
  client may use it on any member. A member that has not applied that index yet waits
  for it before looking the token up (`applied_index`, etcd's indexWaiter). Each member
  keeps its tokens in memory, valid while used at least once every --auth-token-ttl
  seconds counted from its own apply; user delete, password change and auth disable
  end them on every member as they apply (`invalidate_user`, `disable`). A restart
  forgets them, except those of entries it applies again after its applied index.
  A simple token carries no revision: requests made with it run at the auth revision
  current when they arrive.
- jwt: a signed {username, revision, exp} minted by the member that took Authenticate
  (`assign`, after the apply) and verified by any member with the public key alone.
  Its revision is the auth revision when it was issued, so any later auth change makes
  it stale ("revision of auth store is old"); the client then authenticates again.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from jwt.algorithms import get_default_algorithms

from rusd.core.auth.types import AuthEffect, AuthInfo, TokenAssigned, TokensRevoked, UserTokensRevoked
from rusd.server.config import parse_go_duration

DEFAULT_JWT_TTL = 300.0
_LETTERS = string.ascii_letters
_SIMPLE_TOKEN_LENGTH = 16
_JWT_METHODS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512",
)


class TokenError(ValueError):
    """--auth-token cannot be used (etcd refuses to start with these)."""


class TokenProvider(Protocol):
    def token_prefix(self) -> str:
        """What an Authenticate proposal carries (etcd's genTokenPrefix): a fresh random
        prefix of a simple token, or "" when tokens are not assigned by the apply."""

    def assign(self, user: str, auth_revision: int) -> str:
        """A token minted by this member for a user whose Authenticate applied without
        assigning one (JWT)."""

    def learn(self, user: str, token: str) -> None:
        """An applied Authenticate assigned this simple token."""

    def applied_index(self, token: str) -> int:
        """The log index a member must have applied to know the token (0: none)."""

    def info(self, token: str, auth_revision: int) -> AuthInfo | None:
        """Who the token stands for, or None if it is not (or no longer) valid."""

    def invalidate_user(self, user: str) -> None:
        """The user was deleted or its password changed."""

    def disable(self) -> None:
        """Auth was disabled: every token is forgotten."""


def apply_effects(tokens: TokenProvider, effects: list[AuthEffect]) -> None:
    """Applied auth changes, in log order, to this member's tokens."""
    for effect in effects:
        if isinstance(effect, TokenAssigned):
            tokens.learn(effect.user, effect.token)
        elif isinstance(effect, UserTokensRevoked):
            tokens.invalidate_user(effect.user)
        else:
            assert isinstance(effect, TokensRevoked), effect
            tokens.disable()


class SimpleTokens:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def token_prefix(self) -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(_SIMPLE_TOKEN_LENGTH))

    def assign(self, user: str, auth_revision: int) -> str:
        """Never needed: Authenticate proposes a prefix, so its apply assigns the token."""
        raise TokenError("auth: a simple token is assigned when its Authenticate applies")

    def learn(self, user: str, token: str) -> None:
        # The TTL starts here, when this member applied the entry (etcd's keeper is
        # per member too).
        self._purge()
        self._tokens[token] = (user, self._clock() + self.ttl)

    def applied_index(self, token: str) -> int:
        """The index after the dot (etcd's isValidSimpleToken); 0 when malformed."""
        _, dot, index = token.partition(".")
        if not dot or not index.isdigit() or not index.isascii():
            return 0
        return int(index)

    def info(self, token: str, auth_revision: int) -> AuthInfo | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        user, expiry = entry
        now = self._clock()
        if now >= expiry:
            del self._tokens[token]
            return None
        # etcd's TTL keeper restarts a token's TTL whenever it is used.
        self._tokens[token] = (user, now + self.ttl)
        return AuthInfo(user, auth_revision)

    def invalidate_user(self, user: str) -> None:
        for token in [t for t, (u, _) in self._tokens.items() if u == user]:
            del self._tokens[token]

    def disable(self) -> None:
        self._tokens.clear()

    def _purge(self) -> None:
        now = self._clock()
        for token in [t for t, (_, expiry) in self._tokens.items() if now >= expiry]:
            del self._tokens[token]


_VERIFIED_CACHE = 4096


@dataclass(frozen=True)
class JwtTokens:
    method: str
    verify_key: Any
    sign_key: Any | None
    ttl: float
    clock: Callable[[], float] = time.time
    # Tokens whose signature already checked out, with their claims and expiry: a
    # client sends the same token on every request, and verifying RSA/ECDSA costs more
    # than the request. Only the exact same string hits; expiry is checked each time.
    _verified: dict[str, tuple[AuthInfo, float | None]] = field(default_factory=dict, compare=False, repr=False)

    def token_prefix(self) -> str:
        """etcd's tokenJWT.genTokenPrefix: none, the apply assigns nothing."""
        return ""

    def learn(self, user: str, token: str) -> None:
        """A simple token proposed by a member configured differently: not honoured."""

    def applied_index(self, token: str) -> int:
        return 0

    def assign(self, user: str, auth_revision: int) -> str:
        if self.sign_key is None:
            raise TokenError("auth: token signing attempted with verify-only key")
        claims = {"username": user, "revision": auth_revision, "exp": int(time.time() + self.ttl)}
        return jwt.encode(claims, self.sign_key, algorithm=self.method)

    def info(self, token: str, auth_revision: int) -> AuthInfo | None:
        hit = self._verified.get(token)
        if hit is not None:
            info, exp = hit
            if exp is None or self.clock() < exp:
                return info
            del self._verified[token]
            return None
        try:
            claims = jwt.decode(token, self.verify_key, algorithms=[self.method])
        except jwt.PyJWTError:
            return None
        user, revision, exp = claims.get("username"), claims.get("revision"), claims.get("exp")
        if not isinstance(user, str) or isinstance(revision, bool) or not isinstance(revision, (int, float)):
            return None
        info = AuthInfo(user, int(revision))
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = (info, float(exp) if isinstance(exp, (int, float)) else None)
        return info

    def invalidate_user(self, user: str) -> None:
        """A JWT cannot be recalled; the revision it carries is already stale."""

    def disable(self) -> None:
        """Likewise: tokens issued before are stale by revision."""


def parse_options(spec: str) -> tuple[str, dict[str, str]]:
    """etcd's decomposeOpts: "type,k=v,...", no duplicate or malformed option."""
    kind, *rest = spec.split(",")
    opts: dict[str, str] = {}
    for item in rest:
        pair = item.split("=")
        if len(pair) != 2 or pair[0] in opts:
            raise TokenError("auth: invalid auth options")
        opts[pair[0]] = pair[1]
    return kind, opts


def provider(spec: str, simple_ttl: float) -> TokenProvider:
    """The token provider --auth-token asks for."""
    kind, opts = parse_options(spec)
    if kind == "simple":
        return SimpleTokens(simple_ttl)
    if kind == "jwt":
        return _jwt(opts)
    raise TokenError("auth: invalid auth options")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TokenError(f"open {path}: {(e.strerror or str(e)).lower()}") from None


def _jwt(opts: dict[str, str]) -> JwtTokens:
    ttl = DEFAULT_JWT_TTL
    if opts.get("ttl"):
        try:
            ttl = parse_go_duration(opts["ttl"]) / 1e9
        except ValueError as e:
            raise TokenError(str(e)) from None
    public = _read(opts["pub-key"]) if opts.get("pub-key") else b""
    private = _read(opts["priv-key"]) if opts.get("priv-key") else b""
    method = opts.get("sign-method", "")
    if method not in _JWT_METHODS:
        raise TokenError("auth: invalid auth signature method")
    if method.startswith("HS"):
        if not private:
            raise TokenError("auth: missing key data")
        return JwtTokens(method, private, private, ttl)
    algorithm = get_default_algorithms()[method]
    try:
        sign = algorithm.prepare_key(private) if private else None
        verify = algorithm.prepare_key(public) if public else None
    except (ValueError, TypeError, jwt.PyJWTError) as e:
        raise TokenError(f"auth: cannot load the {method} key: {e}") from None
    if sign is None and verify is None:
        raise TokenError("auth: missing key data")
    if sign is not None:
        derived = sign.public_key()
        if verify is not None and verify.public_numbers() != derived.public_numbers():
            raise TokenError("auth: public and private keys don't match")
        verify = derived
    return JwtTokens(method, verify, sign, ttl)
