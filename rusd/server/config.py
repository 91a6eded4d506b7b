"""Server configuration from an etcd 3.4 style command line and ETCD_* environment.

The parser follows etcd 3.4.23 (`etcdmain/config.go`, `pkg/flags`, Go's `flag` package)
closely, messages included, so that scripts written for etcd behave the same with rusd:

* Go flag syntax: `-name v`, `--name v`, `-name=v`, `--name=v`; bool flags take no
  separate argument; parsing stops at the first non-flag argument or at `--`.
* `ETCD_<FLAG>` environment variables fill in flags not given on the command line; as in
  etcd 3.4 an ETCD_* variable for a flag that *is* given on the command line is an error,
  and unknown ETCD_* variables only produce a warning.
* Validation in the order etcd does it (flag syntax, environment, `embed.Config.Validate`,
  then the start-up checks).

Flags rusd does not implement (see `rusd.server.flags`) are accepted only with their
default value, so that no setting is ever silently ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from rusd.server import flags as flagcat
from rusd.server.flags import FlagSpec, Kind
from rusd.server.tls_settings import NO_TLS, TLSInfo, grpc_cipher_list

Warn = Callable[[str], None]
Value = str | bool | int | tuple[str, ...]

DEFAULT_NAME = "default"
DEFAULT_INITIAL_CLUSTER = "default=http://localhost:2380"
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024  # what --quota-backend-bytes=0 means
MAX_ELECTION_MS = 50000
MIN_WATCH_PROGRESS_NOTIFY_INTERVAL = 0.1  # seconds; etcd raises smaller values to this
DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL = 600.0  # seconds; what 0 (or less) means in etcd
LOG_LEVELS = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")
COMPACTION_MODES = ("periodic", "revision")


class ConfigError(Exception):
    """A bad command line or environment; `message` is one line, fit to show the user.

    `exit_code` is what etcd exits with for the same mistake: 2 for flag syntax errors
    reported by Go's flag package, 1 for everything else.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class HelpRequested(Exception):
    """`-h`/`--help` was given (Go's flag.ErrHelp); the caller prints the usage text."""


def warn_to_stderr(message: str) -> None:
    """Default warning sink: one line on stderr, as etcd logs its flag warnings."""
    print(f"rusd: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- URLs


class URL(NamedTuple):
    """A listen or advertise URL: scheme (http, https, unix, unixs), host, port.

    `host` is as written in the URL, so an IPv6 address keeps its brackets ("[::1]");
    `str(url)` gives back the URL etcd would print.
    """

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def hostname(self) -> str:
        """The host without IPv6 brackets, as needed for binding or connecting."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "unixs")

    @property
    def is_unix(self) -> bool:
        return self.scheme in ("unix", "unixs")


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_HOST_CHAR_RE = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:\-]")
_URL_SCHEMES = ("http", "https", "unix", "unixs")


def parse_url(text: str) -> URL:
    """Parse one URL as etcd's types.NewURLs does; raise ValueError with etcd's message.

    rusd is a little stricter than Go's url.Parse: it also refuses an empty or out of
    range port, a query, a fragment and user info, which etcd would carry along unused.
    """
    s = text.strip()
    m = _SCHEME_RE.match(s)
    if m is None:
        if s.startswith(":"):
            raise ValueError(f"parse {_q(s)}: missing protocol scheme")
        if ":" in s.split("/", 1)[0]:
            raise ValueError(f"parse {_q(s)}: first path segment in URL cannot contain colon")
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {s}")
    scheme, rest = m.group(0)[:-1].lower(), s[m.end() :]
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {s}")
    if not rest.startswith("//"):  # e.g. "http:host:1" has no host at all
        raise ValueError(f'URL address does not have the form "host:port": {s}')
    cut = re.search(r"[/?#]", rest[2:])
    authority, tail = (rest[2:], "") if cut is None else (rest[2 : 2 + cut.start()], rest[2 + cut.start() :])
    if "@" in authority:
        raise ValueError(f"URL must not contain user info: {s}")
    # Go's url.Parse: split off ":port" (digits, possibly none) and check the host.
    if authority.startswith("["):
        end = authority.rfind("]")
        if end < 0:
            raise ValueError(f"parse {_q(s)}: missing ']' in host")
        host, colon_port = authority[: end + 1], authority[end + 1 :]
    else:
        i = authority.rfind(":")
        host, colon_port = (authority, "") if i < 0 else (authority[:i], authority[i:])
    if colon_port and not re.fullmatch(r":[0-9]*", colon_port):
        raise ValueError(f"parse {_q(s)}: invalid port {_q(colon_port)} after host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"parse {_q(s)}: invalid IPv6 address in host {_q(host)}") from None
    else:
        bad = [c for c in host if not _HOST_CHAR_RE.fullmatch(c)]
        if bad:
            raise ValueError(f"parse {_q(s)}: invalid character {_q(bad[0])} in host name")
    if tail.startswith("/"):
        raise ValueError(f"URL must not contain a path: {s}")
    if tail:
        raise ValueError(f"URL must not contain a query or fragment: {s}")
    # Go's net.SplitHostPort (plus, in rusd, a port must be given).
    if colon_port in ("", ":") or (":" in host and not host.startswith("[")):
        raise ValueError(f'URL address does not have the form "host:port": {s}')
    port = int(colon_port[1:])
    if port > 65535:
        raise ValueError(f"URL port out of range: {s}")
    return URL(scheme, host, port)


def parse_urls(text: str) -> tuple[URL, ...]:
    """Comma-separated URLs, de-duplicated and sorted like etcd's flags.UniqueURLs."""
    urls = {str(u): u for u in (parse_url(part) for part in text.split(","))}
    return tuple(urls[k] for k in sorted(urls))


def parse_initial_cluster(text: str) -> dict[str, tuple[URL, ...]]:
    """`name=url,name=url,...` into name -> sorted URLs, as etcd's types.NewURLsMap."""
    pairs: dict[str, list[str]] = {}
    for item in text.split(","):
        if not item:
            continue
        name, _, url = item.partition("=")
        pairs.setdefault(name, []).append(url)
    out: dict[str, tuple[URL, ...]] = {}
    for name, raw in pairs.items():
        urls = sorted((parse_url(u) for u in raw), key=str)
        out[name] = tuple(urls)
    return out


def initial_cluster_from_name(name: str, peer_urls: Sequence[URL]) -> str:
    """etcd's Config.InitialClusterFromName: `name=url` for each advertised peer URL."""
    n = name or DEFAULT_NAME
    return ",".join(f"{n}={u}" for u in peer_urls)


# --------------------------------------------------------------------------- config


def _urls(*texts: str) -> tuple[URL, ...]:
    return tuple(parse_url(t) for t in texts)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The settings of one rusd member, from the implemented flags (etcd's names/defaults).

    Units follow etcd's flags (milliseconds for the raft timings, bytes for sizes) except
    durations, which are float seconds.
    """

    name: str = DEFAULT_NAME
    data_dir: str = "default.etcd"  # "${name}.etcd" unless --data-dir is given
    listen_client_urls: tuple[URL, ...] = _urls("http://localhost:2379")
    advertise_client_urls: tuple[URL, ...] = _urls("http://localhost:2379")
    listen_peer_urls: tuple[URL, ...] = _urls("http://localhost:2380")
    initial_advertise_peer_urls: tuple[URL, ...] = _urls("http://localhost:2380")
    initial_cluster: str = DEFAULT_INITIAL_CLUSTER  # validated; see initial_cluster_members
    initial_cluster_state: str = "new"  # "new" or "existing"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100000
    snapshot_catchup_entries: int = 5000
    strict_reconfig_check: bool = True
    force_new_cluster: bool = False
    initial_corrupt_check: bool = False
    corrupt_check_interval: float = 0.0  # seconds; 0: off
    quota_backend_bytes: int = 0  # 0: DEFAULT_QUOTA_BACKEND_BYTES; negative: no quota
    max_request_bytes: int = 1572864
    max_txn_ops: int = 128
    logger: str = "capnslog"  # "capnslog" or "zap"
    log_level: str = "info"  # one of LOG_LEVELS
    log_outputs: tuple[str, ...] = ("default",)
    auto_compaction_mode: str = "periodic"  # "periodic", "revision" (or "": off)
    # periodic: retention in seconds; revision: revisions to keep; 0: auto compaction off
    auto_compaction_retention: float = 0.0
    watch_progress_notify_interval: float = DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL  # seconds
    auth_token: str = "simple"  # "simple" or "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=..."
    auth_token_ttl: int = 300  # seconds a simple token lives unused
    bcrypt_cost: int = 10
    client_tls: TLSInfo = NO_TLS  # --cert-file, --key-file, --trusted-ca-file, ...
    peer_tls: TLSInfo = NO_TLS  # --peer-cert-file, --peer-key-file, ...
    client_auto_tls: bool = False
    peer_auto_tls: bool = False
    cipher_suites: tuple[str, ...] = ()  # Go names, validated (see rusd.server.tls_settings)

    @property
    def initial_cluster_members(self) -> dict[str, tuple[URL, ...]]:
        """--initial-cluster as member name -> peer URLs."""
        return parse_initial_cluster(self.initial_cluster)

    @property
    def is_new_cluster(self) -> bool:
        return self.initial_cluster_state == "new"

    @property
    def election_ticks(self) -> int:
        """Election timeout in heartbeat ticks, as etcd computes it (integer division)."""
        return self.election_timeout_ms // self.heartbeat_interval_ms

    @property
    def effective_quota_backend_bytes(self) -> int | None:
        """The backend size quota in bytes, or None when a negative value disables it."""
        if self.quota_backend_bytes < 0:
            return None
        return self.quota_backend_bytes or DEFAULT_QUOTA_BACKEND_BYTES


# --------------------------------------------------------------------------- Go value parsing


class _SetError(Exception):
    """A flag value the flag's type refuses; str() is the reason etcd would print."""


def _q(s: str) -> str:
    """Go's %q for a plain string (close enough: quotes and backslashes escaped)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _q_list(items: Sequence[str]) -> str:
    """Go's %q for a []string: ["a" "b"]."""
    return "[" + " ".join(_q(i) for i in items) + "]"


def parse_go_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean {_q(s)}")


def _underscore_ok(s: str) -> bool:
    """strconv's underscoreOK: `_` only between digits or after a base prefix."""
    saw = "^"
    i = 0
    if s[:1] in ("-", "+"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


class _NumError(ValueError):
    def __init__(self, kind: str) -> None:  # kind: "syntax" or "range"
        super().__init__(kind)
        self.kind = kind


def parse_go_uint(s: str, bits: int = 64) -> int:
    """strconv.ParseUint(s, 0, bits): 0x/0o/0b prefixes, leading-0 octal, `_` separators."""
    if not s:
        raise _NumError("syntax")
    s0 = s
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "b":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "x":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
    n = 0
    underscores = False
    for c in s:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - ord("0")
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - ord("a") + 10
        else:
            raise _NumError("syntax")
        if d >= base:
            raise _NumError("syntax")
        n = n * base + d
    if underscores and not _underscore_ok(s0):
        raise _NumError("syntax")
    if n >= 1 << bits:
        raise _NumError("range")
    return n


def parse_go_int(s: str, bits: int = 64) -> int:
    """strconv.ParseInt(s, 0, bits)."""
    neg = s[:1] == "-"
    body = s[1:] if s[:1] in ("+", "-") else s
    n = parse_go_uint(body, 64)
    cutoff = 1 << (bits - 1)
    if (not neg and n >= cutoff) or (neg and n > cutoff):
        raise _NumError("range")
    return -n if neg else n


def _go_atoi(s: str) -> int | None:
    """strconv.Atoi (decimal, optional sign, int64 range); None where Go returns an error."""
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        return None
    n = int(s)
    return n if -(1 << 63) <= n < (1 << 63) else None


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_NUM_RE = re.compile(r"([0-9]*)(\.([0-9]*))?")


def parse_go_duration(s: str) -> int:
    """time.ParseDuration: "300ms", "-1.5h", "2h45m"; returns nanoseconds.

    Raises ValueError with Go's message (e.g. `time: missing unit in duration "5"`).
    """
    orig = s
    invalid = ValueError(f"time: invalid duration {_q(orig)}")
    neg = False
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = Fraction(0)
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        m = _DURATION_NUM_RE.match(s)
        assert m is not None  # the pattern matches the empty string
        whole, frac = m.group(1), m.group(3) or ""
        if not whole and not frac:
            raise invalid
        s = s[m.end() :]
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_q(orig)}")
        unit_name, s = s[:i], s[i:]
        unit = _DURATION_UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_q(unit_name)} in duration {_q(orig)}")
        value = int(whole or "0") * unit
        if frac:
            value += int(Fraction(int(frac), 10 ** len(frac)) * unit)
        total += value
        if total > 1 << 63:
            raise invalid
    if not neg and total > (1 << 63) - 1:
        raise invalid
    return -int(total) if neg else int(total)


# --------------------------------------------------------------------------- flag values


def _set_value(spec: FlagSpec, raw: str, current: Value, warn: Warn) -> Value:
    """The flag's new value after etcd's `flag.Value.Set(raw)`; _SetError if refused."""
    kind = spec.kind
    try:
        if kind is Kind.STRING:
            return raw
        if kind is Kind.BOOL:
            return parse_go_bool(raw)
        if kind in (Kind.UINT, Kind.UINT64):
            return parse_go_uint(raw, 64)
        if kind in (Kind.INT, Kind.INT64):
            return parse_go_int(raw, 64)
        if kind is Kind.DURATION:
            return parse_go_duration(raw)
    except _NumError as e:
        raise _SetError("parse error" if e.kind == "syntax" else "value out of range") from None
    except ValueError:
        raise _SetError("parse error") from None
    if kind is Kind.UINT32:
        try:
            return parse_go_uint(raw, 32)
        except _NumError as e:
            reason = "invalid syntax" if e.kind == "syntax" else "value out of range"
            raise _SetError(f"strconv.ParseUint: parsing {_q(raw)}: {reason}") from None
    if kind is Kind.CHOICE:
        if raw not in spec.choices:
            raise _SetError("invalid value")
        return raw
    if kind is Kind.URLS:
        if raw in spec.exceptions:
            # etcd records the exception but keeps the URL list: "" is a no-op.
            return current if raw == "" else (raw,)
        try:
            return tuple(str(u) for u in parse_urls(raw))
        except ValueError as e:
            raise _SetError(str(e)) from None
    if kind is Kind.STRINGS:
        return tuple(raw.split(","))
    if kind is Kind.UNIQUE_STRINGS:
        return tuple(sorted(set(raw.split(","))))
    # Kind.IGNORED
    warn(f'flag "-{spec.name}" is no longer supported - ignoring.')
    return ""


@functools.cache
def _initial_value(spec: FlagSpec, raw: str) -> Value:
    """The value a flag starts with when etcd registers it with default `raw`."""
    if spec.kind is Kind.IGNORED:
        return ""
    if raw == "" and spec.kind in (Kind.URLS, Kind.STRINGS, Kind.UNIQUE_STRINGS):
        return ()
    return _set_value(spec, raw, (), warn_to_stderr)


def _default_value(spec: FlagSpec) -> Value:
    return _initial_value(spec, spec.default)


def _is_default(spec: FlagSpec, value: Value) -> bool:
    """Whether `value` means the same to etcd as the flag's default."""
    return any(value == _initial_value(spec, raw) for raw in (spec.default, *spec.equivalents))


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True, slots=True)
class CommandLine:
    """The flags given on the command line (last occurrence wins), in first-given order."""

    values: Mapping[str, Value]
    help: bool = False

    @property
    def version(self) -> bool:
        return self.values.get("version") is True


def parse_command_line(argv: Sequence[str], *, warn: Warn = warn_to_stderr) -> CommandLine:
    """Parse argv like Go's flag.FlagSet.Parse followed by etcd's positional check.

    Syntax errors carry exit code 2 (etcd exits 2 on them); a positional argument is
    etcd's "'x' is not a valid flag" (exit code 1). `-h`/`-help` stops parsing at once.
    """
    values: dict[str, Value] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        s = args[i]
        if len(s) < 2 or s[0] != "-":
            break
        dashes = 1
        if s[1] == "-":
            dashes = 2
            if len(s) == 2:  # "--" terminates the flags
                i += 1
                break
        name = s[dashes:]
        if not name or name[0] in "-=":
            raise ConfigError(f"bad flag syntax: {s}", exit_code=2)
        i += 1
        has_value, value = False, ""
        eq = name.find("=", 1)
        if eq >= 0:
            name, value, has_value = name[:eq], name[eq + 1 :], True
        spec = flagcat.lookup(name)
        if spec is None:
            if name in ("help", "h"):
                return CommandLine(values=values, help=True)
            raise ConfigError(f"flag provided but not defined: -{name}", exit_code=2)
        current = values.get(name, _default_value(spec))
        if not spec.takes_value:
            try:
                values[name] = _set_value(spec, value if has_value else "true", current, warn)
            except _SetError as e:
                message = f"invalid boolean value {_q(value)} for -{name}: {e}"
                raise ConfigError(message, exit_code=2) from None
            continue
        if not has_value:
            if i >= len(args):
                raise ConfigError(f"flag needs an argument: -{name}", exit_code=2)
            value = args[i]
            i += 1
        try:
            values[name] = _set_value(spec, value, current, warn)
        except _SetError as e:
            raise ConfigError(f"invalid value {_q(value)} for flag -{name}: {e}", exit_code=2) from None
    if i < len(args):
        raise ConfigError(f"'{args[i]}' is not a valid flag")
    return CommandLine(values=values)


def parse_config(argv: Sequence[str], env: Mapping[str, str], *, warn: Warn = warn_to_stderr) -> ServerConfig:
    """The server configuration from argv (without the program name) and the environment.

    Raises ConfigError for anything etcd 3.4 would refuse, and for flags rusd does not
    implement given with a non-default value; HelpRequested for `-h`/`--help`.
    `--version` is accepted and otherwise ignored here (the CLI handles it).
    """
    cmd = parse_command_line(argv, warn=warn)
    if cmd.help:
        raise HelpRequested()
    return build_config(cmd, env, warn=warn)


def build_config(cmd: CommandLine, env: Mapping[str, str], *, warn: Warn = warn_to_stderr) -> ServerConfig:
    """The second half of parse_config: environment, validation, derived defaults."""
    # etcd reads --config-file (or ETCD_CONFIG_FILE) first and then ignores all other settings.
    if cmd.values.get("config-file"):
        raise ConfigError("flag --config-file is not implemented yet in rusd")
    if env.get("ETCD_CONFIG_FILE"):
        raise ConfigError("flag --config-file is not implemented yet in rusd (set by ETCD_CONFIG_FILE)")

    values: dict[str, Value] = {s.name: _default_value(s) for s in flagcat.FLAGS}
    values.update(cmd.values)
    is_set = set(cmd.values)
    env_sources = _apply_env(values, is_set, env, warn)
    _refuse_unimplemented(values, list(cmd.values) + list(env_sources), env_sources)

    def s(name: str) -> str:
        v = values[name]
        assert isinstance(v, str)
        return v

    def n(name: str) -> int:
        v = values[name]
        assert isinstance(v, int) and not isinstance(v, bool)
        return v

    def u(name: str) -> tuple[URL, ...]:
        v = values[name]
        assert isinstance(v, tuple)
        return tuple(parse_url(x) for x in v)

    def b(name: str) -> bool:
        v = values[name]
        assert isinstance(v, bool)
        return v

    def strs(name: str) -> tuple[str, ...]:
        v = values[name]
        assert isinstance(v, tuple)
        return v

    lpurls, lcurls = u("listen-peer-urls"), u("listen-client-urls")
    apurls, acurls = u("initial-advertise-peer-urls"), u("advertise-client-urls")
    # etcd drops the default advertise-client-urls once listen-client-urls is set.
    missing_ac = "listen-client-urls" in is_set and "advertise-client-urls" not in is_set

    # --- embed.Config.Validate
    logger, level, outputs = s("logger"), s("log-level"), strs("log-outputs")
    _check_logging(logger, level, outputs)
    _check_bind_urls(lpurls)
    _check_bind_urls(lcurls)
    _check_host_urls("--initial-advertise-peer-urls", apurls)
    if not missing_ac:
        _check_host_urls("--advertise-client-urls", acurls)
    tick, election = n("heartbeat-interval"), n("election-timeout")
    if tick <= 0:
        raise ConfigError(f"--heartbeat-interval must be >0 (set to {tick}ms)")
    if election <= 0:
        raise ConfigError(f"--election-timeout must be >0 (set to {election}ms)")
    if 5 * tick > election:
        raise ConfigError(
            f"--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{tick}ms]"
        )
    if election > MAX_ELECTION_MS:
        raise ConfigError(
            f"--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
        )
    if missing_ac:
        raise ConfigError("--advertise-client-urls is required when --listen-client-urls is set explicitly")
    mode = s("auto-compaction-mode")
    if mode not in ("", *COMPACTION_MODES):
        raise ConfigError(f"unknown auto-compaction-mode {_q(mode)}")

    # --- start-up (etcdmain.startEtcdOrProxyV2, embed.StartEtcd)
    name = s("name")
    initial_cluster = s("initial-cluster")
    if name != DEFAULT_NAME and initial_cluster == DEFAULT_INITIAL_CLUSTER:
        initial_cluster = initial_cluster_from_name(name, apurls)
    data_dir = s("data-dir") or f"{name}.etcd"
    client_tls = TLSInfo(
        cert_file=s("cert-file"),
        key_file=s("key-file"),
        trusted_ca_file=s("trusted-ca-file"),
        client_cert_auth=b("client-cert-auth"),
        crl_file=s("client-crl-file"),
    )
    peer_tls = TLSInfo(
        cert_file=s("peer-cert-file"),
        key_file=s("peer-key-file"),
        trusted_ca_file=s("peer-trusted-ca-file"),
        client_cert_auth=b("peer-client-cert-auth"),
        crl_file=s("peer-crl-file"),
    )
    cipher_suites = strs("cipher-suites")
    try:
        grpc_cipher_list(cipher_suites)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for url in lpurls:
        if url.is_secure and peer_tls.empty and not b("peer-auto-tls"):
            raise ConfigError(f"cannot listen on TLS for {url.host}:{url.port}: KeyFile and CertFile are not presented")
    for url in lcurls:
        if url.is_secure and client_tls.empty and not b("auto-tls"):
            raise ConfigError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            )
    try:
        parse_initial_cluster(initial_cluster)
    except ValueError as e:
        raise ConfigError(f"error setting up initial cluster: {e}") from None
    retention = parse_compaction_retention(mode, s("auto-compaction-retention"))

    return ServerConfig(
        name=name,
        data_dir=data_dir,
        listen_client_urls=lcurls,
        advertise_client_urls=acurls,
        listen_peer_urls=lpurls,
        initial_advertise_peer_urls=apurls,
        initial_cluster=initial_cluster,
        initial_cluster_state=s("initial-cluster-state"),
        initial_cluster_token=s("initial-cluster-token"),
        heartbeat_interval_ms=tick,
        election_timeout_ms=election,
        snapshot_count=n("snapshot-count"),
        snapshot_catchup_entries=n("experimental-snapshot-catchup-entries"),
        strict_reconfig_check=values["strict-reconfig-check"] is True,
        force_new_cluster=values["force-new-cluster"] is True,
        initial_corrupt_check=values["experimental-initial-corrupt-check"] is True,
        corrupt_check_interval=n("experimental-corrupt-check-time") / 1e9,
        quota_backend_bytes=n("quota-backend-bytes"),
        max_request_bytes=n("max-request-bytes"),
        max_txn_ops=n("max-txn-ops"),
        logger=logger,
        log_level=level,
        log_outputs=outputs,
        auto_compaction_mode=mode,
        auto_compaction_retention=retention,
        watch_progress_notify_interval=_watch_progress_interval(n("experimental-watch-progress-notify-interval"), warn),
        auth_token=s("auth-token"),
        auth_token_ttl=n("auth-token-ttl"),
        bcrypt_cost=_bcrypt_cost(n("bcrypt-cost"), warn),
        client_tls=client_tls,
        peer_tls=peer_tls,
        client_auto_tls=b("auto-tls"),
        peer_auto_tls=b("peer-auto-tls"),
        cipher_suites=cipher_suites,
    )


def _apply_env(values: dict[str, Value], is_set: set[str], env: Mapping[str, str], warn: Warn) -> dict[str, str]:
    """etcd's flags.SetFlagsFromEnv: returns {flag name: env var} for the flags it set.

    Flags are visited in name order (Go's VisitAll); the last bad value is reported, but
    only after the check for variables shadowed by command-line flags, as in etcd.
    """
    used: dict[str, str] = {}
    error: str | None = None
    for spec in sorted(flagcat.FLAGS, key=lambda f: f.name):
        key = spec.env_var
        raw = env.get(key, "")
        if spec.name in is_set or raw == "":
            continue
        used[spec.name] = key
        try:
            values[spec.name] = _set_value(spec, raw, values[spec.name], warn)
        except _SetError as e:
            error = f"invalid value {_q(raw)} for {key}: {e}"
            continue
        is_set.add(spec.name)
    used_keys = set(used.values())
    shadowed = {flagcat.flag_to_env(name) for name in is_set if name not in used}
    for key, raw in env.items():
        if key in used_keys:
            continue
        if key in shadowed:
            raise ConfigError(
                f"conflicting environment variable {_q(key)} is shadowed by corresponding command-line "
                "flag (either unset environment variable or disable flag)"
            )
        if key.startswith("ETCD_"):
            warn(f"unrecognized environment variable {key}={raw}")
    if error is not None:
        raise ConfigError(error)
    return used


def _refuse_unimplemented(values: Mapping[str, Value], order: Sequence[str], env_sources: Mapping[str, str]) -> None:
    """The rusd rule: a flag rusd does not implement may only be given its default."""
    for name in dict.fromkeys(order):
        spec = flagcat.BY_NAME[name]
        if spec.implemented or _is_default(spec, values[name]):
            continue
        where = f" (set by {env_sources[name]})" if name in env_sources else ""
        raise ConfigError(f"flag --{name} is not implemented yet in rusd{where}")


def _check_logging(logger: str, level: str, outputs: Sequence[str]) -> None:
    """embed.Config.setupLogging's checks (etcd panics on a bad level; rusd reports it)."""
    if logger not in ("capnslog", "zap"):
        raise ConfigError(f"unknown logger option {_q(logger)}")
    if level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {_q(level)} (only supports debug, info, warn, error, panic, or fatal)")
    if logger == "capnslog":
        if len(outputs) != 1:
            raise ConfigError(f"--logger=capnslog supports only 1 value in '--log-outputs', got {_q_list(outputs)}")
        if outputs[0] not in ("default", "stderr", "stdout"):
            raise ConfigError(f'unknown log-output {_q(outputs[0])} (only supports "default", "stderr", "stdout")')
        return
    if len(outputs) > 1 and "default" in outputs:
        raise ConfigError('multi logoutput for "default" is not supported yet')
    if len(outputs) > 1 and "systemd/journal" in outputs:
        raise ConfigError(
            f"running with systemd/journal but other '--log-outputs' values ({_q_list(outputs)}) are "
            "configured with 'default'; override 'default' value with something else"
        )


def _check_bind_urls(urls: Sequence[URL]) -> None:
    """etcd's checkBindURLs: listen URLs need an IP address (or localhost)."""
    for url in urls:
        if url.is_unix or url.hostname == "localhost" or _is_ip(url.hostname):
            continue
        raise ConfigError(f"expected IP in URL for binding ({url})")


def _is_ip(host: str) -> bool:
    """Go's net.ParseIP(host) != nil (which, unlike Python, refuses IPv6 zones)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return "%" not in host


def _check_host_urls(flag: str, urls: Sequence[URL]) -> None:
    """etcd's checkHostURLs: advertised URLs need a host."""
    for url in urls:
        if not url.hostname:
            joined = ",".join(str(x) for x in urls)
            raise ConfigError(f'{flag} {_q(joined)} must be "host:port" (unexpected empty host ({url}))')


def parse_compaction_retention(mode: str, retention: str) -> float:
    """--auto-compaction-retention as etcd's parseCompactionRetention reads it.

    A bare integer is hours in periodic mode and a revision count in revision mode;
    otherwise a Go duration (periodic only). Returns seconds (periodic) or a revision
    count (revision); 0 means off. Stricter than etcd: negative durations, and durations
    in revision mode (which etcd would take as a count of nanoseconds), are refused.
    """
    retention = retention or "0"
    hours = _go_atoi(retention)
    if hours is not None and hours >= 0:
        if mode == "revision":
            return float(hours)
        if mode == "periodic":
            return hours * 3600.0
        return 0.0  # etcd ignores an integer retention without a mode
    try:
        ns = parse_go_duration(retention)
    except ValueError as e:
        raise ConfigError(f"error parsing CompactionRetention: {e}") from None
    if ns == 0:
        return 0.0
    if mode == "":
        raise ConfigError("unsupported compaction mode ")
    if ns < 0:
        raise ConfigError(f"error parsing CompactionRetention: negative retention {_q(retention)}")
    if mode == "revision":
        raise ConfigError(
            f"error parsing CompactionRetention: {_q(retention)} is not a revision count "
            "(auto-compaction-mode is revision)"
        )
    return ns / 1e9


def _bcrypt_cost(cost: int, warn: Warn) -> int:
    """etcd's NewAuthStore falls back to bcrypt's default cost outside [4, 31]."""
    if 4 <= cost <= 31:
        return cost
    warn(f"use default bcrypt cost instead of the invalid given cost {cost}")
    return 10


def _watch_progress_interval(ns: int, warn: Warn) -> float:
    """etcd uses its 10m default for 0 (or less) and raises values under 100ms."""
    if ns <= 0:
        return DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL
    seconds = ns / 1e9
    if seconds < MIN_WATCH_PROGRESS_NOTIFY_INTERVAL:
        warn("adjusting watch progress notify interval to minimum period 100ms")
        return MIN_WATCH_PROGRESS_NOTIFY_INTERVAL
    return seconds


# --------------------------------------------------------------------------- bootstrap checks


def verify_bootstrap(config: ServerConfig) -> None:
    """etcd's ServerConfig.VerifyBootstrap, for starting a new cluster from an empty data dir.

    Unlike etcd, host names other than localhost are not resolved through DNS before the
    peer URLs are compared, so they must be written the same way in both flags.
    """
    members = config.initial_cluster_members
    _verify_local_member(config, members)
    _verify_advertise_matches_cluster(config, members)
    _verify_no_duplicate_url(members)
    if not members:
        raise ConfigError("initial cluster unset and no discovery URL found")


def verify_join_existing(config: ServerConfig) -> None:
    """etcd's ServerConfig.VerifyJoinExisting, for joining an existing cluster."""
    members = config.initial_cluster_members
    _verify_local_member(config, members)
    _verify_no_duplicate_url(members)


def _urls_map_string(members: Mapping[str, Sequence[URL]]) -> str:
    return ",".join(sorted(f"{name}={u}" for name, urls in members.items() for u in urls))


def _verify_local_member(config: ServerConfig, members: Mapping[str, Sequence[URL]]) -> None:
    if config.name not in members:
        raise ConfigError(f"couldn't find local name {_q(config.name)} in the initial cluster configuration")


def _verify_no_duplicate_url(members: Mapping[str, Sequence[URL]]) -> None:
    all_urls = [str(u) for urls in members.values() for u in urls]
    if len(all_urls) != len(set(all_urls)):
        raise ConfigError(f"initial cluster {_urls_map_string(members)} has duplicate url")


def _verify_advertise_matches_cluster(config: ServerConfig, members: Mapping[str, Sequence[URL]]) -> None:
    cluster = sorted(str(u) for u in members[config.name])
    advertised = sorted(str(u) for u in config.initial_advertise_peer_urls)
    if cluster == advertised:
        return
    if len(cluster) != len(advertised):
        why = f"len({_q_list(advertised)}) != len({_q_list(cluster)})"
    else:
        a, b = next((a, b) for a, b in zip(advertised, cluster, strict=True) if a != b)
        why = f"resolved urls: {_q(a)} != {_q(b)}"
    ap = ",".join(advertised)
    missing = [f"{config.name}={u}" for u in cluster if u not in advertised]
    if missing:
        raise ConfigError(
            f"--initial-cluster has {','.join(missing)} but missing from --initial-advertise-peer-urls={ap} ({why})"
        )
    extra = [u for u in advertised if u not in cluster]
    own = _urls_map_string({config.name: config.initial_advertise_peer_urls})
    if extra:
        raise ConfigError(
            f"--initial-advertise-peer-urls has {','.join(extra)} but missing from --initial-cluster={own}"
        )
    raise ConfigError(f"failed to resolve {ap} to match --initial-cluster={own} ({why})")
