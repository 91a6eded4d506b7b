"""The catalogue of etcd 3.4.23's server flags, and which of them rusd implements.

Every flag etcd's `etcdmain/config.go` registers is listed here with etcd's name, value
syntax and default, so that `rusd` accepts any etcd command line (or ETCD_* environment)
syntactically. A flag that is not implemented may still be given with its default value;
any other value is refused by `rusd.server.config` instead of being silently ignored.

The source of truth is `etcd --help` (3.4.23) plus etcd's `etcdmain/config.go`, which also
registers a few flags `--help` does not list (`hidden`), and some long-gone flags that etcd
accepts and ignores with a warning (`Kind.IGNORED`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """How a flag's value is parsed: the Go flag.Value type etcd registers it with."""

    STRING = "string"  # flag.StringVar
    BOOL = "bool"  # flag.BoolVar: `--x`, `--x=true|false`; never consumes the next argument
    UINT = "uint"  # flag.UintVar (64-bit): strconv.ParseUint(s, 0, 64)
    UINT64 = "uint64"  # flag.Uint64Var
    UINT32 = "uint32"  # etcd's flags.uint32Value (its own error messages)
    INT = "int"  # flag.IntVar (64-bit)
    INT64 = "int64"  # flag.Int64Var
    DURATION = "duration"  # flag.DurationVar: Go time.ParseDuration syntax
    URLS = "urls"  # etcd's flags.UniqueURLs: comma-separated URLs, with literal exceptions
    STRINGS = "strings"  # etcd's flags.StringsValue: comma-separated, kept in order
    UNIQUE_STRINGS = "unique-strings"  # etcd's flags.UniqueStringsValue: comma-separated set
    CHOICE = "choice"  # etcd's flags.SelectiveStringValue: one of `choices`
    IGNORED = "ignored"  # etcd's flags.IgnoredFlag: bool-like, any value, warns and ignores


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One etcd server flag.

    `default` is etcd's default in command-line syntax (parseable by the flag's kind);
    `shown_default` is how `etcd --help` prints it when that differs. `equivalents` are
    other values etcd treats exactly like the default (e.g. a zero that means "default").
    """

    name: str
    kind: Kind
    default: str
    help: str
    section: str
    implemented: bool
    hidden: bool = False
    choices: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()
    shown_default: str | None = None
    equivalents: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        """The environment variable etcd reads this flag from (etcd's flags.FlagToEnv)."""
        return flag_to_env(self.name)

    @property
    def takes_value(self) -> bool:
        """Whether `--name value` consumes the next argument (Go: not for bool flags)."""
        return self.kind not in (Kind.BOOL, Kind.IGNORED)


def flag_to_env(name: str) -> str:
    """ETCD_ + the flag name upper-cased with dashes as underscores, as etcd does."""
    return "ETCD_" + name.replace("-", "_").upper()


MEMBER = "Member"
CLUSTERING = "Clustering"
SECURITY = "Security"
AUTH = "Auth"
PROFILING = "Profiling and Monitoring"
LOGGING = "Logging"
PROXY = "v2 Proxy (to be deprecated in v4)"
EXPERIMENTAL = "Experimental feature"
UNSAFE = "Unsafe feature"
DEPRECATED = "TO BE DEPRECATED"
OTHER = "Other"

# Sections in the order `etcd --help` prints them.
SECTIONS: tuple[str, ...] = (
    MEMBER,
    CLUSTERING,
    SECURITY,
    AUTH,
    PROFILING,
    LOGGING,
    PROXY,
    EXPERIMENTAL,
    UNSAFE,
    DEPRECATED,
)


def _f(
    name: str,
    kind: Kind,
    default: str,
    section: str,
    help: str,
    *,
    impl: bool = False,
    hidden: bool = False,
    choices: tuple[str, ...] = (),
    exceptions: tuple[str, ...] = (),
    shown: str | None = None,
    equivalents: tuple[str, ...] = (),
) -> FlagSpec:
    return FlagSpec(
        name=name,
        kind=kind,
        default=default,
        help=help,
        section=section,
        implemented=impl,
        hidden=hidden,
        choices=choices,
        exceptions=exceptions,
        shown_default=shown,
        equivalents=equivalents,
    )


S, B, U, U32, U64, INT, I64, D = (
    Kind.STRING,
    Kind.BOOL,
    Kind.UINT,
    Kind.UINT32,
    Kind.UINT64,
    Kind.INT,
    Kind.INT64,
    Kind.DURATION,
)
URLS = Kind.URLS
NO_URL = ("",)  # etcd's URL flags accept "" as a no-op value

_FLAGS: tuple[FlagSpec, ...] = (
    # --- Member
    _f("name", S, "default", MEMBER, "Human-readable name for this member.", impl=True),
    _f("data-dir", S, "", MEMBER, "Path to the data directory.", impl=True, shown="${name}.etcd"),
    _f("wal-dir", S, "", MEMBER, "Path to the dedicated wal directory."),
    _f(
        "snapshot-count",
        U64,
        "100000",
        MEMBER,
        "Number of committed transactions to trigger a snapshot to disk.",
        impl=True,
    ),
    _f(
        "heartbeat-interval",
        U,
        "100",
        MEMBER,
        "Time (in milliseconds) of a heartbeat interval.",
        impl=True,
    ),
    _f(
        "election-timeout",
        U,
        "1000",
        MEMBER,
        "Time (in milliseconds) for an election to timeout. See tuning documentation for details.",
        impl=True,
    ),
    _f(
        "initial-election-tick-advance",
        B,
        "true",
        MEMBER,
        "Whether to fast-forward initial election ticks on boot for faster election.",
    ),
    _f(
        "listen-peer-urls",
        URLS,
        "http://localhost:2380",
        MEMBER,
        "List of URLs to listen on for peer traffic.",
        impl=True,
        exceptions=NO_URL,
    ),
    _f(
        "listen-client-urls",
        URLS,
        "http://localhost:2379",
        MEMBER,
        "List of URLs to listen on for client traffic.",
        impl=True,
        exceptions=NO_URL,
    ),
    _f("max-snapshots", U, "5", MEMBER, "Maximum number of snapshot files to retain (0 is unlimited)."),
    _f("max-wals", U, "5", MEMBER, "Maximum number of wal files to retain (0 is unlimited)."),
    _f(
        "quota-backend-bytes",
        I64,
        "0",
        MEMBER,
        "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).",
        impl=True,
    ),
    _f(
        "backend-batch-interval",
        D,
        "0s",
        MEMBER,
        "BackendBatchInterval is the maximum time before commit the backend transaction.",
        shown="",
    ),
    _f(
        "backend-batch-limit",
        INT,
        "0",
        MEMBER,
        "BackendBatchLimit is the maximum operations before commit the backend transaction.",
    ),
    _f(
        "max-txn-ops",
        U,
        "128",
        MEMBER,
        "Maximum number of operations permitted in a transaction.",
        impl=True,
    ),
    _f(
        "max-request-bytes",
        U,
        "1572864",
        MEMBER,
        "Maximum client request size in bytes the server will accept.",
        impl=True,
    ),
    _f(
        "max-concurrent-streams",
        U32,
        "4294967295",
        MEMBER,
        "Maximum concurrent streams that each client can open at a time.",
        shown="math.MaxUint32",
    ),
    _f(
        "grpc-keepalive-min-time",
        D,
        "5s",
        MEMBER,
        "Minimum duration interval that a client should wait before pinging server.",
    ),
    _f(
        "grpc-keepalive-interval",
        D,
        "2h",
        MEMBER,
        "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).",
    ),
    _f(
        "grpc-keepalive-timeout",
        D,
        "20s",
        MEMBER,
        "Additional duration of wait before closing a non-responsive connection (0 to disable).",
    ),
    # --- Clustering
    _f(
        "initial-advertise-peer-urls",
        URLS,
        "http://localhost:2380",
        CLUSTERING,
        "List of this member's peer URLs to advertise to the rest of the cluster.",
        impl=True,
        exceptions=NO_URL,
    ),
    _f(
        "initial-cluster",
        S,
        "default=http://localhost:2380",
        CLUSTERING,
        "Initial cluster configuration for bootstrapping.",
        impl=True,
    ),
    _f(
        "initial-cluster-state",
        Kind.CHOICE,
        "new",
        CLUSTERING,
        "Initial cluster state ('new' or 'existing').",
        impl=True,
        choices=("new", "existing"),
    ),
    _f(
        "initial-cluster-token",
        S,
        "etcd-cluster",
        CLUSTERING,
        "Initial cluster token for the etcd cluster during bootstrap.\n"
        "Specifying this can protect you from unintended cross-cluster interaction "
        "when running multiple clusters.",
        impl=True,
    ),
    _f(
        "advertise-client-urls",
        URLS,
        "http://localhost:2379",
        CLUSTERING,
        "List of this member's client URLs to advertise to the public.\n"
        "The client URLs advertised should be accessible to machines that talk to etcd cluster. "
        "etcd client libraries parse these URLs to connect to the cluster.",
        impl=True,
        exceptions=NO_URL,
    ),
    _f("discovery", S, "", CLUSTERING, "Discovery URL used to bootstrap the cluster."),
    _f(
        "discovery-fallback",
        Kind.CHOICE,
        "proxy",
        CLUSTERING,
        "Expected behavior ('exit' or 'proxy') when discovery services fails.\n\"proxy\" supports v2 API only.",
        choices=("proxy", "exit"),
    ),
    _f("discovery-proxy", S, "", CLUSTERING, "HTTP proxy to use for traffic to discovery service."),
    _f("discovery-srv", S, "", CLUSTERING, "DNS srv domain used to bootstrap the cluster."),
    _f("discovery-srv-name", S, "", CLUSTERING, "Suffix to the dns srv name queried when bootstrapping."),
    _f(
        "strict-reconfig-check",
        B,
        "true",
        CLUSTERING,
        "Reject reconfiguration requests that would cause quorum loss.",
        impl=True,
    ),
    _f("pre-vote", B, "false", CLUSTERING, "Enable to run an additional Raft election phase."),
    _f(
        "auto-compaction-retention",
        S,
        "0",
        CLUSTERING,
        "Auto compaction retention length. 0 means disable auto compaction.",
        impl=True,
    ),
    _f(
        "auto-compaction-mode",
        S,
        "periodic",
        CLUSTERING,
        "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration "
        "based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' "
        "for revision number based retention.",
        impl=True,
    ),
    _f("enable-v2", B, "false", CLUSTERING, "Accept etcd V2 client requests."),
    # --- Security
    _f("cert-file", S, "", SECURITY, "Path to the client server TLS cert file.", impl=True),
    _f("key-file", S, "", SECURITY, "Path to the client server TLS key file.", impl=True),
    _f("client-cert-auth", B, "false", SECURITY, "Enable client cert authentication.", impl=True),
    _f("client-crl-file", S, "", SECURITY, "Path to the client certificate revocation list file.", impl=True),
    _f(
        "client-cert-allowed-hostname",
        S,
        "",
        SECURITY,
        "Allowed TLS hostname for client cert authentication.",
    ),
    _f("trusted-ca-file", S, "", SECURITY, "Path to the client server TLS trusted CA cert file.", impl=True),
    _f("auto-tls", B, "false", SECURITY, "Client TLS using generated certificates.", impl=True),
    _f("peer-cert-file", S, "", SECURITY, "Path to the peer server TLS cert file.", impl=True),
    _f("peer-key-file", S, "", SECURITY, "Path to the peer server TLS key file.", impl=True),
    _f("peer-client-cert-auth", B, "false", SECURITY, "Enable peer client cert authentication.", impl=True),
    _f("peer-trusted-ca-file", S, "", SECURITY, "Path to the peer server TLS trusted CA file.", impl=True),
    _f(
        "peer-cert-allowed-cn",
        S,
        "",
        SECURITY,
        "Required CN for client certs connecting to the peer endpoint.",
    ),
    _f(
        "peer-cert-allowed-hostname",
        S,
        "",
        SECURITY,
        "Allowed TLS hostname for inter peer authentication.",
    ),
    _f(
        "peer-auto-tls",
        B,
        "false",
        SECURITY,
        "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.",
        impl=True,
    ),
    _f("peer-crl-file", S, "", SECURITY, "Path to the peer certificate revocation list file.", impl=True),
    _f(
        "cipher-suites",
        Kind.STRINGS,
        "",
        SECURITY,
        "Comma-separated list of supported TLS cipher suites between client/server and peers "
        "(empty will be auto-populated by Go).",
        impl=True,
    ),
    _f(
        "cors",
        URLS,
        "*",
        SECURITY,
        "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, "
        "(empty or * means allow all).",
        exceptions=("*",),
    ),
    _f(
        "host-whitelist",
        Kind.UNIQUE_STRINGS,
        "*",
        SECURITY,
        "Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all).",
    ),
    # --- Auth
    _f(
        "auth-token",
        S,
        "simple",
        AUTH,
        "Specify a v3 authentication token type and its options ('simple' or 'jwt').",
        impl=True,
    ),
    _f(
        "bcrypt-cost",
        U,
        "10",
        AUTH,
        "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. "
        "Valid values are between 4 and 31.",
        impl=True,
    ),
    _f("auth-token-ttl", U, "300", AUTH, "Time (in seconds) of the auth-token-ttl.", impl=True),
    # --- Profiling and Monitoring
    _f(
        "enable-pprof",
        B,
        "false",
        PROFILING,
        'Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"',
    ),
    _f(
        "metrics",
        S,
        "basic",
        PROFILING,
        "Set level of detail for exported metrics, specify 'extensive' to include histogram metrics.",
    ),
    _f(
        "listen-metrics-urls",
        URLS,
        "",
        PROFILING,
        "List of URLs to listen on for the metrics and health endpoints.",
        exceptions=NO_URL,
    ),
    # --- Logging
    _f(
        "logger",
        S,
        "capnslog",
        LOGGING,
        "Specify 'zap' for structured logging or 'capnslog'. [WARN] 'capnslog' will be deprecated in v3.5.",
        impl=True,
    ),
    _f(
        "log-outputs",
        Kind.UNIQUE_STRINGS,
        "default",
        LOGGING,
        "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, "
        "or list of comma separated output targets.",
        impl=True,
    ),
    _f(
        "log-level",
        S,
        "info",
        LOGGING,
        "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
        impl=True,
    ),
    # --- v2 proxy
    _f(
        "proxy",
        Kind.CHOICE,
        "off",
        PROXY,
        "Proxy mode setting ('off', 'readonly' or 'on').",
        choices=("off", "readonly", "on"),
    ),
    _f(
        "proxy-failure-wait",
        U,
        "5000",
        PROXY,
        "Time (in milliseconds) an endpoint will be held in a failed state.",
    ),
    _f(
        "proxy-refresh-interval",
        U,
        "30000",
        PROXY,
        "Time (in milliseconds) of the endpoints refresh interval.",
    ),
    _f("proxy-dial-timeout", U, "1000", PROXY, "Time (in milliseconds) for a dial to timeout."),
    _f("proxy-write-timeout", U, "5000", PROXY, "Time (in milliseconds) for a write to timeout."),
    _f("proxy-read-timeout", U, "0", PROXY, "Time (in milliseconds) for a read to timeout."),
    # --- Experimental
    _f(
        "experimental-initial-corrupt-check",
        B,
        "false",
        EXPERIMENTAL,
        "Enable to check data corruption before serving any client/peer traffic.",
        impl=True,
    ),
    _f(
        "experimental-corrupt-check-time",
        D,
        "0s",
        EXPERIMENTAL,
        "Duration of time between cluster corruption check passes.",
        impl=True,
    ),
    _f(
        "experimental-enable-v2v3",
        S,
        "",
        EXPERIMENTAL,
        "Serve v2 requests through the v3 backend under a given prefix.",
    ),
    _f(
        "experimental-backend-bbolt-freelist-type",
        S,
        "array",
        EXPERIMENTAL,
        "ExperimentalBackendFreelistType specifies the type of freelist that boltdb backend "
        "uses(array and map are supported types).",
        equivalents=("",),  # etcd's real flag default is "", which means array
    ),
    _f(
        "experimental-enable-lease-checkpoint",
        B,
        "false",
        EXPERIMENTAL,
        "ExperimentalEnableLeaseCheckpoint enables primary lessor to persist lease remainingTTL "
        "to prevent indefinite auto-renewal of long lived leases.",
    ),
    _f(
        "experimental-enable-lease-checkpoint-persist",
        B,
        "false",
        EXPERIMENTAL,
        "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived leases. "
        "Requires experimental-enable-lease-checkpoint to be enabled.",
        hidden=True,
    ),
    _f(
        "experimental-compaction-batch-limit",
        INT,
        "1000",
        EXPERIMENTAL,
        "ExperimentalCompactionBatchLimit sets the maximum revisions deleted in each compaction batch.",
        equivalents=("0",),  # etcd's real flag default is 0, which means 1000
    ),
    _f(
        "experimental-peer-skip-client-san-verification",
        B,
        "false",
        EXPERIMENTAL,
        "Skip verification of SAN field in client certificate for peer connections.",
    ),
    _f(
        "experimental-watch-progress-notify-interval",
        D,
        "10m",
        EXPERIMENTAL,
        "Duration of periodical watch progress notification.",
        impl=True,
    ),
    _f(
        "experimental-snapshot-catchup-entries",
        U64,
        "5000",
        EXPERIMENTAL,
        "Number of entries for a slow follower to catch-up after compacting the raft storage entries "
        "(etcd 3.5's flag; rusd accepts it too).",
        impl=True,
        hidden=True,
    ),
    _f(
        "experimental-warning-apply-duration",
        D,
        "100ms",
        EXPERIMENTAL,
        "Warning is generated if requests take more than this duration.",
    ),
    # --- Unsafe
    _f("force-new-cluster", B, "false", UNSAFE, "Force to create a new one-member cluster.", impl=True),
    _f(
        "unsafe-no-fsync",
        B,
        "false",
        UNSAFE,
        "Disables fsync, unsafe, will cause data loss.",
        hidden=True,
    ),
    # --- To be deprecated
    _f(
        "debug",
        B,
        "false",
        DEPRECATED,
        "Enable debug-level logging for etcd. [WARN] Will be deprecated in v3.5. Use '--log-level=debug' instead.",
    ),
    _f(
        "log-package-levels",
        S,
        "",
        DEPRECATED,
        "Specify a particular log level for each etcd package (eg: 'etcdmain=CRITICAL,etcdserver=DEBUG').",
    ),
    # --- Registered by etcd but not listed in its --help flag sections
    _f(
        "config-file",
        S,
        "",
        OTHER,
        "Path to the server configuration file. Note that if a configuration file is provided, "
        "other command line flags and environment variables will be ignored.",
        hidden=True,
    ),
    _f(
        "log-output",
        Kind.UNIQUE_STRINGS,
        "default",
        LOGGING,
        "[TO BE DEPRECATED IN v3.5] use '--log-outputs'.",
        hidden=True,
    ),
    _f("enable-grpc-gateway", B, "true", OTHER, "Enable GRPC gateway.", hidden=True),
    _f("version", B, "false", OTHER, "Print the version and exit.", impl=True, hidden=True),
)

# Flags etcd 3.4 still accepts (anywhere, with or without a value) only to warn that they
# are "no longer supported - ignoring"; rusd does the same, so they count as implemented.
IGNORED_NAMES: tuple[str, ...] = (
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
    "test.coverprofile",
    "test.outputdir",
)

FLAGS: tuple[FlagSpec, ...] = _FLAGS + tuple(
    _f(n, Kind.IGNORED, "", OTHER, "No longer supported; ignored with a warning.", impl=True, hidden=True)
    for n in IGNORED_NAMES
)

BY_NAME: dict[str, FlagSpec] = {spec.name: spec for spec in FLAGS}

IMPLEMENTED: frozenset[str] = frozenset(s.name for s in FLAGS if s.implemented)


def lookup(name: str) -> FlagSpec | None:
    """The flag called `name` (without dashes), or None if etcd does not define it."""
    return BY_NAME.get(name)
