"""Tests of the `rusd` command line: etcd 3.4 flag syntax, environment, validation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import rusd
from rusd.server import cli
from rusd.server import flags as flagcat
from rusd.server.config import (
    URL,
    ConfigError,
    HelpRequested,
    ServerConfig,
    parse_compaction_retention,
    parse_config,
    parse_go_duration,
    parse_go_int,
    parse_go_uint,
    parse_url,
    verify_bootstrap,
    verify_join_existing,
)
from rusd.server.flags import Kind

ETCD = shutil.which("etcd")
LOCAL = ["--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379"]


def parse(*argv: str, env: dict[str, str] | None = None, warnings: list[str] | None = None) -> ServerConfig:
    sink = warnings if warnings is not None else []
    return parse_config(list(argv), env or {}, warn=sink.append)


def error(*argv: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(*argv, env=env)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_defaults_are_etcds() -> None:
    config = parse()
    assert config == ServerConfig()
    assert config.name == "default"
    assert config.data_dir == "default.etcd"
    assert config.listen_client_urls == (URL("http", "localhost", 2379),)
    assert config.advertise_client_urls == (URL("http", "localhost", 2379),)
    assert config.listen_peer_urls == (URL("http", "localhost", 2380),)
    assert config.initial_advertise_peer_urls == (URL("http", "localhost", 2380),)
    assert config.initial_cluster == "default=http://localhost:2380"
    assert config.initial_cluster_members == {"default": (URL("http", "localhost", 2380),)}
    assert config.initial_cluster_state == "new" and config.is_new_cluster
    assert config.initial_cluster_token == "etcd-cluster"
    assert (config.heartbeat_interval_ms, config.election_timeout_ms, config.election_ticks) == (100, 1000, 10)
    assert config.snapshot_count == 100000
    assert config.quota_backend_bytes == 0
    assert config.effective_quota_backend_bytes == 2 * 1024**3
    assert config.max_request_bytes == 1572864
    assert config.max_txn_ops == 128
    assert (config.logger, config.log_level, config.log_outputs) == ("capnslog", "info", ("default",))
    assert (config.auto_compaction_mode, config.auto_compaction_retention) == ("periodic", 0.0)
    assert config.watch_progress_notify_interval == 600.0


def test_implemented_flags_set_every_field() -> None:
    config = parse(
        "--name=n1",
        "--data-dir=/var/lib/n1",
        "--listen-client-urls=http://127.0.0.1:12379",
        "--advertise-client-urls=http://10.0.0.1:12379",
        "--listen-peer-urls=http://127.0.0.1:12380",
        "--initial-advertise-peer-urls=http://10.0.0.1:12380",
        "--initial-cluster=n1=http://10.0.0.1:12380,n2=http://10.0.0.2:12380",
        "--initial-cluster-state=existing",
        "--initial-cluster-token=tok",
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--snapshot-count=7",
        "--quota-backend-bytes=-1",
        "--max-request-bytes=1024",
        "--max-txn-ops=4",
        "--logger=zap",
        "--log-level=debug",
        "--log-outputs=stderr,stdout",
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=1000",
        "--experimental-watch-progress-notify-interval=30s",
    )
    assert config == ServerConfig(
        name="n1",
        data_dir="/var/lib/n1",
        listen_client_urls=(URL("http", "127.0.0.1", 12379),),
        advertise_client_urls=(URL("http", "10.0.0.1", 12379),),
        listen_peer_urls=(URL("http", "127.0.0.1", 12380),),
        initial_advertise_peer_urls=(URL("http", "10.0.0.1", 12380),),
        initial_cluster="n1=http://10.0.0.1:12380,n2=http://10.0.0.2:12380",
        initial_cluster_state="existing",
        initial_cluster_token="tok",
        heartbeat_interval_ms=50,
        election_timeout_ms=500,
        snapshot_count=7,
        quota_backend_bytes=-1,
        max_request_bytes=1024,
        max_txn_ops=4,
        logger="zap",
        log_level="debug",
        log_outputs=("stderr", "stdout"),
        auto_compaction_mode="revision",
        auto_compaction_retention=1000.0,
        watch_progress_notify_interval=30.0,
    )
    assert config.effective_quota_backend_bytes is None
    assert not config.is_new_cluster


# --------------------------------------------------------------------------- Go flag syntax


@pytest.mark.parametrize(
    "argv", [["--name", "x"], ["-name", "x"], ["--name=x"], ["-name=x"], ["--name", "a", "--name", "x"]]
)
def test_go_flag_forms(argv: list[str]) -> None:
    assert parse(*argv).name == "x"


def test_value_may_start_with_dash_or_be_empty() -> None:
    assert parse("--name", "-x").name == "-x"
    assert parse("--name=").name == ""
    assert parse("--data-dir=a=b").data_dir == "a=b"


def test_bool_flag_does_not_consume_next_argument() -> None:
    e = error("--strict-reconfig-check", "false")
    assert (e.message, e.exit_code) == ("'false' is not a valid flag", 1)
    assert parse("--strict-reconfig-check").name == "default"  # true is its default
    assert parse("-strict-reconfig-check=T").name == "default"
    e = error("--strict-reconfig-check=yes")
    assert (e.message, e.exit_code) == ('invalid boolean value "yes" for -strict-reconfig-check: parse error', 2)


@pytest.mark.parametrize(
    ("argv", "message", "code"),
    [
        (["--foo"], "flag provided but not defined: -foo", 2),
        (["-foo=1"], "flag provided but not defined: -foo", 2),
        (["--name", "x", "--foo"], "flag provided but not defined: -foo", 2),
        (["---name", "x"], "bad flag syntax: ---name", 2),
        (["-=x"], "bad flag syntax: -=x", 2),
        (["--name"], "flag needs an argument: -name", 2),
        (["--snapshot-count", "abc"], 'invalid value "abc" for flag -snapshot-count: parse error', 2),
        (["--snapshot-count", "-1"], 'invalid value "-1" for flag -snapshot-count: parse error', 2),
        (
            ["--snapshot-count", "99999999999999999999"],
            'invalid value "99999999999999999999" for flag -snapshot-count: value out of range',
            2,
        ),
        (
            ["--max-concurrent-streams", "4294967296"],
            'invalid value "4294967296" for flag -max-concurrent-streams: '
            'strconv.ParseUint: parsing "4294967296": value out of range',
            2,
        ),
        (
            ["--initial-cluster-state", "foo"],
            'invalid value "foo" for flag -initial-cluster-state: invalid value',
            2,
        ),
        (
            ["--grpc-keepalive-min-time", "5"],
            'invalid value "5" for flag -grpc-keepalive-min-time: parse error',
            2,
        ),
        (["foo"], "'foo' is not a valid flag", 1),
        (["foo", "--bar"], "'foo' is not a valid flag", 1),
        (["--name", "x", "foo"], "'foo' is not a valid flag", 1),
        (["--", "--name"], "'--name' is not a valid flag", 1),
        (["-"], "'-' is not a valid flag", 1),
        (["--version", "foo"], "'foo' is not a valid flag", 1),
    ],
)
def test_syntax_errors(argv: list[str], message: str, code: int) -> None:
    e = error(*argv)
    assert (e.message, e.exit_code) == (message, code)


def test_double_dash_alone_ends_flags() -> None:
    assert parse("--name", "x", "--").name == "x"


def test_help() -> None:
    for argv in (["-h"], ["--help"], ["-help"], ["--name", "x", "-h", "--foo"], ["-h=1"]):
        with pytest.raises(HelpRequested):
            parse(*argv)
    assert error("--foo", "-h").message == "flag provided but not defined: -foo"


def test_ignored_flags_warn() -> None:
    warnings: list[str] = []
    parse("--v", "-snapshot=3", "--config", warnings=warnings)
    assert warnings == [
        'flag "-v" is no longer supported - ignoring.',
        'flag "-snapshot" is no longer supported - ignoring.',
        'flag "-config" is no longer supported - ignoring.',
    ]
    assert error("--snapshot", "x").message == "'x' is not a valid flag"


def test_version_flag_is_accepted() -> None:
    assert parse("--version").name == "default"


# --------------------------------------------------------------------------- Go value syntax


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("10", 10), ("0x1F4", 500), ("0X1_f4", 500), ("0b101", 5), ("0o17", 15), ("017", 15), ("1_000", 1000)],
)
def test_go_uint(text: str, value: int) -> None:
    assert parse_go_uint(text) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", "1_", "_1", "1__0", "0x", "08", "1.0", " 1", "abc"])
def test_go_uint_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError, match="syntax"):
        parse_go_uint(text)


def test_go_int() -> None:
    assert parse_go_int("-0x10") == -16
    assert parse_go_int("+7") == 7
    assert parse_go_int("-9223372036854775808") == -(2**63)
    with pytest.raises(ValueError, match="range"):
        parse_go_int("9223372036854775808")
    with pytest.raises(ValueError, match="syntax"):
        parse_go_int("-")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("10s", 10 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 3 * 10**8),
        ("-1.5s", -15 * 10**8),
        (".5s", 5 * 10**8),
        ("1.s", 10**9),
        ("2us", 2000),
        ("2\u00b5s", 2000),
        ("1ns", 1),
        ("10m", 600 * 10**9),
    ],
)
def test_go_duration(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("5", 'time: missing unit in duration "5"'),
        ("-1", 'time: missing unit in duration "-1"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("abc", 'time: invalid duration "abc"'),
        (".s", 'time: invalid duration ".s"'),
        ("1h ", 'time: unknown unit "h " in duration "1h "'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:2379", URL("http", "127.0.0.1", 2379)),
        ("https://example.com:443", URL("https", "example.com", 443)),
        ("HTTP://localhost:1 ", URL("http", "localhost", 1)),
        ("http://[::1]:2379", URL("http", "[::1]", 2379)),
        ("unix://localhost:2379", URL("unix", "localhost", 2379)),
        ("unixs://sock:1", URL("unixs", "sock", 1)),
        ("http://:2379", URL("http", "", 2379)),
    ],
)
def test_parse_url(text: str, url: URL) -> None:
    assert parse_url(text) == url


def test_url_helpers() -> None:
    url = parse_url("https://[::1]:2379")
    assert str(url) == "https://[::1]:2379"
    assert url.hostname == "::1"
    assert url.is_secure and not url.is_unix
    assert parse_url("unix://a:1").is_unix


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://127.0.0.1", 'URL address does not have the form "host:port": http://127.0.0.1'),
        ("http://127.0.0.1:", 'URL address does not have the form "host:port": http://127.0.0.1:'),
        ("http://::1:2379", 'URL address does not have the form "host:port": http://::1:2379'),
        ("http:127.0.0.1:2379", 'URL address does not have the form "host:port": http:127.0.0.1:2379'),
        ("ftp://127.0.0.1:1", "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1"),
        ("localhost:2379", "URL scheme must be http, https, unix, or unixs: localhost:2379"),
        ("", "URL scheme must be http, https, unix, or unixs: "),
        ("127.0.0.1:2379", 'parse "127.0.0.1:2379": first path segment in URL cannot contain colon'),
        ("http://127.0.0.1:abc", 'parse "http://127.0.0.1:abc": invalid port ":abc" after host'),
        ("http://127.0.0.1:1/x", "URL must not contain a path: http://127.0.0.1:1/x"),
        ("http://127.0.0.1:1/", "URL must not contain a path: http://127.0.0.1:1/"),
        ("http://127.0.0.1:1?x=1", "URL must not contain a query or fragment: http://127.0.0.1:1?x=1"),
        ("http://u@127.0.0.1:1", "URL must not contain user info: http://u@127.0.0.1:1"),
        ("http://[::1:1", "parse \"http://[::1:1\": missing ']' in host"),
        ("http://127.0.0.1:65536", "URL port out of range: http://127.0.0.1:65536"),
        ("http://a b:1", 'parse "http://a b:1": invalid character " " in host name'),
    ],
)
def test_parse_url_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_url(text)
    assert str(info.value) == message


def test_url_lists_are_sorted_and_unique() -> None:
    config = parse(
        "--listen-client-urls",
        "http://127.0.0.2:1, http://127.0.0.1:1,http://127.0.0.2:1",
        "--advertise-client-urls=http://b:1,http://a:1",
    )
    assert [str(u) for u in config.listen_client_urls] == ["http://127.0.0.1:1", "http://127.0.0.2:1"]
    assert [str(u) for u in config.advertise_client_urls] == ["http://a:1", "http://b:1"]


def test_url_flag_error_message() -> None:
    e = error("--listen-client-urls", "http://127.0.0.1")
    assert e.exit_code == 2
    assert e.message == (
        'invalid value "http://127.0.0.1" for flag -listen-client-urls: '
        'URL address does not have the form "host:port": http://127.0.0.1'
    )


def test_empty_url_flag_keeps_the_list_but_counts_as_set() -> None:
    e = error("--listen-client-urls", "")
    assert e.message == "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    assert parse("--listen-peer-urls=").listen_peer_urls == (URL("http", "localhost", 2380),)


def test_listen_urls_need_ip_addresses() -> None:
    e = error("--listen-client-urls=http://example.com:1", "--advertise-client-urls=http://a:1")
    assert e.message == "expected IP in URL for binding (http://example.com:1)"
    e = error("--listen-peer-urls=http://:1")
    assert e.message == "expected IP in URL for binding (http://:1)"
    e = error("--listen-peer-urls=http://[fe80::1%25eth0]:1")  # Go's net.ParseIP refuses zones
    assert e.message == "expected IP in URL for binding (http://[fe80::1%25eth0]:1)"
    config = parse("--listen-peer-urls=http://0.0.0.0:1,http://[::]:2,unix://sock:3")
    assert len(config.listen_peer_urls) == 3


def test_advertised_urls_need_a_host() -> None:
    e = error("--advertise-client-urls", "http://:2379")
    assert (
        e.message == '--advertise-client-urls "http://:2379" must be "host:port" (unexpected empty host (http://:2379))'
    )
    e = error("--initial-advertise-peer-urls", "http://:2380")
    assert e.message.startswith('--initial-advertise-peer-urls "http://:2380" must be "host:port"')


def test_listen_client_urls_require_advertise_client_urls() -> None:
    e = error("--listen-client-urls", "http://127.0.0.1:2379")
    assert e.message == "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    e = error("--listen-client-urls", "http://localhost:2379")  # even the default value
    assert e.exit_code == 1
    parse(*LOCAL)


def test_https_listen_urls_need_tls() -> None:
    e = error("--listen-client-urls=https://127.0.0.1:2379", "--advertise-client-urls=https://127.0.0.1:2379")
    assert e.message.startswith(
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 "
        "with HTTPS scheme"
    )
    e = error("--listen-peer-urls=https://127.0.0.1:2380")
    assert e.message == "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
    # --auto-tls / --peer-auto-tls stand in for the files (certificates are made at start-up).
    parse("--listen-peer-urls=https://127.0.0.1:2380", "--peer-auto-tls")
    e = error("--listen-client-urls=unixs://sock:1", "--advertise-client-urls=http://a:1")
    assert "must be provided for client url unixs://sock:1" in e.message
    # Advertising https is allowed, as in etcd (e.g. behind a TLS proxy).
    assert parse("--advertise-client-urls=https://a:1").advertise_client_urls == (URL("https", "a", 1),)


# --------------------------------------------------------------------------- environment


def test_environment_sets_flags() -> None:
    config = parse(
        env={
            "ETCD_NAME": "envname",
            "ETCD_DATA_DIR": "/d",
            "ETCD_HEARTBEAT_INTERVAL": "10",
            "ETCD_ELECTION_TIMEOUT": "50",
            "ETCD_INITIAL_CLUSTER_STATE": "existing",
            "ETCD_STRICT_RECONFIG_CHECK": "true",
            "PATH": "/bin",
        }
    )
    assert (config.name, config.data_dir) == ("envname", "/d")
    assert (config.heartbeat_interval_ms, config.election_timeout_ms) == (10, 50)
    assert config.initial_cluster_state == "existing"
    assert config.initial_cluster == "envname=http://localhost:2380"


def test_environment_shadowed_by_command_line_is_an_error() -> None:
    message = (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag '
        "(either unset environment variable or disable flag)"
    )
    assert error("--name", "b", env={"ETCD_NAME": "a"}).message == message
    assert error("--name", "b", env={"ETCD_NAME": ""}).message == message


def test_unknown_environment_variables_warn() -> None:
    warnings: list[str] = []
    parse(env={"ETCD_FOO": "1", "ETCD_NAME": "", "ETCDCTL_API": "3", "HOME": "/"}, warnings=warnings)
    assert warnings == [
        "unrecognized environment variable ETCD_FOO=1",
        "unrecognized environment variable ETCD_NAME=",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETCD_SNAPSHOT_COUNT": "abc"}, 'invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'),
        ({"ETCD_STRICT_RECONFIG_CHECK": "x"}, 'invalid value "x" for ETCD_STRICT_RECONFIG_CHECK: parse error'),
        ({"ETCD_INITIAL_CLUSTER_STATE": "x"}, 'invalid value "x" for ETCD_INITIAL_CLUSTER_STATE: invalid value'),
        (
            {"ETCD_MAX_CONCURRENT_STREAMS": "abc"},
            'invalid value "abc" for ETCD_MAX_CONCURRENT_STREAMS: strconv.ParseUint: parsing "abc": invalid syntax',
        ),
        (
            {"ETCD_LISTEN_CLIENT_URLS": "http://x"},
            'invalid value "http://x" for ETCD_LISTEN_CLIENT_URLS: '
            'URL address does not have the form "host:port": http://x',
        ),
        # etcd visits flags in name order and reports the last bad one
        (
            {"ETCD_SNAPSHOT_COUNT": "a", "ETCD_MAX_TXN_OPS": "b"},
            'invalid value "a" for ETCD_SNAPSHOT_COUNT: parse error',
        ),
    ],
)
def test_bad_environment_values(env: dict[str, str], message: str) -> None:
    e = error(env=env)
    assert (e.message, e.exit_code) == (message, 1)


def test_environment_url_flags_count_as_set() -> None:
    e = error(env={"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:2379"})
    assert e.message == "--advertise-client-urls is required when --listen-client-urls is set explicitly"


def test_environment_only_for_flags_not_on_the_command_line() -> None:
    config = parse("--name", "cli", env={"ETCD_DATA_DIR": "/env"})
    assert (config.name, config.data_dir) == ("cli", "/env")


def test_config_file_is_not_implemented() -> None:
    assert error("--config-file", "x.yml").message == "flag --config-file is not implemented yet in rusd"
    e = error(env={"ETCD_CONFIG_FILE": "x.yml"})
    assert e.message == "flag --config-file is not implemented yet in rusd (set by ETCD_CONFIG_FILE)"
    parse("--config-file=")


# --------------------------------------------------------------------------- not implemented flags

UNIMPLEMENTED = [s for s in flagcat.FLAGS if not s.implemented]

OTHER_VALUE = {
    Kind.STRING: "something-else",
    Kind.BOOL: "x",  # placeholder: see _other_value
    Kind.UINT: "12345",
    Kind.UINT64: "12345",
    Kind.UINT32: "12345",
    Kind.INT: "12345",
    Kind.INT64: "12345",
    Kind.DURATION: "12345s",
    Kind.URLS: "http://127.0.0.1:1",
    Kind.STRINGS: "a,b",
    Kind.UNIQUE_STRINGS: "a,b",
}


def _other_value(spec: flagcat.FlagSpec) -> str:
    if spec.kind is Kind.BOOL:
        return "false" if spec.default == "true" else "true"
    if spec.kind is Kind.CHOICE:
        return next(c for c in spec.choices if c != spec.default)
    return OTHER_VALUE[spec.kind]


@pytest.mark.parametrize("spec", UNIMPLEMENTED, ids=lambda s: s.name)
def test_unimplemented_flag_accepts_its_default(spec: flagcat.FlagSpec) -> None:
    for value in (spec.default, *spec.equivalents):
        if spec.kind is Kind.STRINGS and value == "":
            continue  # etcd: --cipher-suites= is [""], "unexpected TLS cipher suite"
        parse(f"--{spec.name}={value}")
        if value:
            parse(env={spec.env_var: value})


@pytest.mark.parametrize("spec", UNIMPLEMENTED, ids=lambda s: s.name)
def test_unimplemented_flag_refuses_other_values(spec: flagcat.FlagSpec) -> None:
    value = _other_value(spec)
    assert error(f"--{spec.name}={value}").message == f"flag --{spec.name} is not implemented yet in rusd"
    e = error(env={spec.env_var: value})
    assert e.message == f"flag --{spec.name} is not implemented yet in rusd (set by {spec.env_var})"


def test_unimplemented_flags_compare_values_not_text() -> None:
    parse("--max-concurrent-streams=0xFFFFFFFF", "--grpc-keepalive-interval=120m", "--enable-v2=0")
    parse("--cors=*", "--host-whitelist=*,*", "--listen-metrics-urls=", "--enable-grpc-gateway")
    assert error("--cipher-suites=").message == 'unexpected TLS cipher suite ""'
    assert error("--enable-grpc-gateway=false").message == "flag --enable-grpc-gateway is not implemented yet in rusd"
    assert error("--bare-flag-does-not-exist").exit_code == 2
    assert error("--pre-vote").message == "flag --pre-vote is not implemented yet in rusd"


def test_first_unimplemented_flag_on_the_command_line_is_named() -> None:
    assert error("--pre-vote", "--enable-v2").message == "flag --pre-vote is not implemented yet in rusd"


# --------------------------------------------------------------------------- raft timing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heartbeat-interval=0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--election-timeout=0"], "--election-timeout must be >0 (set to 0ms)"),
        (
            ["--election-timeout=499"],
            "--election-timeout[499ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        (
            ["--heartbeat-interval=300"],
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
        ),
        (["--election-timeout=50001"], "--election-timeout[50001ms] is too long, and should be set less than 50000ms"),
    ],
)
def test_raft_timing_validation(argv: list[str], message: str) -> None:
    assert error(*argv).message == message


def test_raft_timing_limits_are_inclusive() -> None:
    assert parse("--election-timeout=500").election_timeout_ms == 500
    assert parse("--election-timeout=50000", "--heartbeat-interval=10000").election_ticks == 5


# --------------------------------------------------------------------------- cluster


def test_initial_cluster_follows_name() -> None:
    assert parse("--name", "n1").initial_cluster == "n1=http://localhost:2380"
    config = parse("--name", "n1", "--initial-advertise-peer-urls", "http://10.0.0.2:2380,http://10.0.0.1:2380")
    assert config.initial_cluster == "n1=http://10.0.0.1:2380,n1=http://10.0.0.2:2380"
    # etcd compares with the default string: given explicitly, it is still rewritten
    config = parse("--name", "n1", "--initial-cluster", "default=http://localhost:2380")
    assert config.initial_cluster == "n1=http://localhost:2380"
    config = parse("--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380")
    assert config.initial_cluster == "n1=http://127.0.0.1:2380"
    # with the default name etcd keeps the default (and later fails to bootstrap)
    config = parse("--initial-advertise-peer-urls", "http://127.0.0.1:2380")
    assert config.initial_cluster == "default=http://localhost:2380"
    assert parse("--name=").initial_cluster == "default=http://localhost:2380"


def test_data_dir_defaults_to_name() -> None:
    assert parse("--name", "n1").data_dir == "n1.etcd"
    assert parse("--name", "n1", "--data-dir", "").data_dir == "n1.etcd"
    assert parse("--name=").data_dir == ".etcd"


def test_initial_cluster_members() -> None:
    config = parse("--initial-cluster", "a=http://1.1.1.1:2,b=http://2.2.2.2:2,a=http://0.0.0.0:1,")
    assert config.initial_cluster_members == {
        "a": (URL("http", "0.0.0.0", 1), URL("http", "1.1.1.1", 2)),
        "b": (URL("http", "2.2.2.2", 2),),
    }
    assert parse("--initial-cluster=").initial_cluster_members == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a", "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: "),
        (
            "a=http://1.1.1.1",
            'error setting up initial cluster: URL address does not have the form "host:port": http://1.1.1.1',
        ),
    ],
)
def test_bad_initial_cluster(value: str, message: str) -> None:
    assert error("--initial-cluster", value).message == message


def test_verify_bootstrap() -> None:
    verify_bootstrap(parse())
    verify_bootstrap(parse("--name=n1", "--initial-cluster=n1=http://localhost:2380,n2=http://10.0.0.2:2380"))
    with pytest.raises(ConfigError) as e:
        verify_bootstrap(parse("--initial-advertise-peer-urls=http://127.0.0.1:42381"))
    assert e.value.message == (
        "--initial-cluster has default=http://localhost:2380 but missing from "
        '--initial-advertise-peer-urls=http://127.0.0.1:42381 (resolved urls: "http://127.0.0.1:42381" != '
        '"http://localhost:2380")'
    )
    with pytest.raises(ConfigError) as e:
        verify_bootstrap(parse("--name=x", "--initial-cluster=y=http://a:1"))
    assert e.value.message == 'couldn\'t find local name "x" in the initial cluster configuration'
    config = parse(
        "--initial-advertise-peer-urls=http://localhost:2380,http://10.0.0.1:2380",
        "--initial-cluster=default=http://localhost:2380",
    )
    with pytest.raises(ConfigError) as e:
        verify_bootstrap(config)
    assert e.value.message == (
        "--initial-advertise-peer-urls has http://10.0.0.1:2380 but missing from "
        "--initial-cluster=default=http://10.0.0.1:2380,default=http://localhost:2380"
    )
    config = parse("--initial-cluster=default=http://localhost:2380,b=http://localhost:2380")
    with pytest.raises(ConfigError) as e:
        verify_bootstrap(config)
    assert e.value.message == (
        "initial cluster b=http://localhost:2380,default=http://localhost:2380 has duplicate url"
    )
    verify_join_existing(parse("--initial-cluster-state=existing"))
    with pytest.raises(ConfigError):
        verify_join_existing(parse("--name=x", "--initial-cluster=y=http://a:1"))


# --------------------------------------------------------------------------- compaction


@pytest.mark.parametrize(
    ("mode", "retention", "value"),
    [
        ("periodic", "0", 0.0),
        ("periodic", "", 0.0),
        ("periodic", "1", 3600.0),
        ("periodic", "+2", 7200.0),
        ("periodic", "30m", 1800.0),
        ("periodic", "1h30m", 5400.0),
        ("periodic", "10s", 10.0),
        ("periodic", "1.5h", 5400.0),
        ("periodic", "0s", 0.0),
        ("revision", "0", 0.0),
        ("revision", "1000", 1000.0),
        ("revision", "0s", 0.0),
        ("", "5", 0.0),
        ("", "0s", 0.0),
    ],
)
def test_compaction_retention(mode: str, retention: str, value: float) -> None:
    assert parse_compaction_retention(mode, retention) == value


@pytest.mark.parametrize(
    ("mode", "retention", "message"),
    [
        ("periodic", "abc", 'error parsing CompactionRetention: time: invalid duration "abc"'),
        ("periodic", "-1", 'error parsing CompactionRetention: time: missing unit in duration "-1"'),
        ("periodic", "1x", 'error parsing CompactionRetention: time: unknown unit "x" in duration "1x"'),
        ("periodic", "-1h", 'error parsing CompactionRetention: negative retention "-1h"'),
        ("revision", "1h", 'error parsing CompactionRetention: "1h" is not a revision count'),
        ("", "1h", "unsupported compaction mode "),
    ],
)
def test_compaction_retention_errors(mode: str, retention: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_compaction_retention(mode, retention)
    assert info.value.message.startswith(message)


def test_compaction_flags() -> None:
    config = parse("--auto-compaction-retention", "5")
    assert (config.auto_compaction_mode, config.auto_compaction_retention) == ("periodic", 18000.0)
    config = parse("--auto-compaction-mode=revision", "--auto-compaction-retention=10")
    assert (config.auto_compaction_mode, config.auto_compaction_retention) == ("revision", 10.0)
    assert error("--auto-compaction-mode=foo").message == 'unknown auto-compaction-mode "foo"'
    assert parse("--auto-compaction-mode=").auto_compaction_mode == ""


# --------------------------------------------------------------------------- logging and watch


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--logger=foo"], 'unknown logger option "foo"'),
        (["--log-level=foo"], 'unknown log level "foo"'),
        (["--log-outputs=stderr,stdout"], "--logger=capnslog supports only 1 value in '--log-outputs', got"),
        (["--log-outputs=/tmp/x"], 'unknown log-output "/tmp/x"'),
        (["--logger=zap", "--log-outputs=default,stderr"], 'multi logoutput for "default" is not supported yet'),
    ],
)
def test_logging_validation(argv: list[str], message: str) -> None:
    assert error(*argv).message.startswith(message)


def test_logging_accepted() -> None:
    for level in ("debug", "info", "warn", "error", "panic", "fatal"):
        assert parse(f"--log-level={level}").log_level == level
    config = parse("--logger=zap", "--log-outputs=/tmp/x.log,stderr,stderr")
    assert config.log_outputs == ("/tmp/x.log", "stderr")
    assert parse("--log-outputs=stdout").log_outputs == ("stdout",)


def test_watch_progress_notify_interval() -> None:
    assert parse("--experimental-watch-progress-notify-interval=1h").watch_progress_notify_interval == 3600.0
    assert parse("--experimental-watch-progress-notify-interval=0").watch_progress_notify_interval == 600.0
    assert parse("--experimental-watch-progress-notify-interval=-1s").watch_progress_notify_interval == 600.0
    warnings: list[str] = []
    config = parse("--experimental-watch-progress-notify-interval=10ms", warnings=warnings)
    assert config.watch_progress_notify_interval == 0.1
    assert warnings == ["adjusting watch progress notify interval to minimum period 100ms"]


# --------------------------------------------------------------------------- catalogue


def test_catalogue_is_consistent() -> None:
    assert len(flagcat.BY_NAME) == len(flagcat.FLAGS)
    for spec in flagcat.FLAGS:
        assert spec.env_var == "ETCD_" + spec.name.upper().replace("-", "_")
        if spec.kind is Kind.CHOICE:
            assert spec.default in spec.choices
    assert {
        "name",
        "data-dir",
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "heartbeat-interval",
        "election-timeout",
        "snapshot-count",
        "quota-backend-bytes",
        "max-request-bytes",
        "max-txn-ops",
        "log-level",
        "logger",
        "log-outputs",
        "auto-compaction-mode",
        "auto-compaction-retention",
        "experimental-watch-progress-notify-interval",
    } <= flagcat.IMPLEMENTED


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
def test_catalogue_matches_etcd_help() -> None:
    assert ETCD is not None
    out = subprocess.run([ETCD, "--help"], capture_output=True, text=True, timeout=30, check=False)
    listed = re.findall(r"^  --([a-z0-9.-]+) '?([^'\n]*)'?$", out.stdout + out.stderr, re.MULTILINE)
    assert len(listed) >= 70
    for name, default in listed:
        spec = flagcat.BY_NAME[name]
        assert not spec.hidden, name
        assert (spec.default if spec.shown_default is None else spec.shown_default) == default, name
    assert {n for n, _ in listed} == {s.name for s in flagcat.FLAGS if not s.hidden}


# Cases where etcd 3.4 fails before it would start serving; rusd must fail the same way.
ETCD_SAME_ERROR: list[tuple[list[str], dict[str, str]]] = [
    (["--foo"], {}),
    (["---name"], {}),
    (["--name"], {}),
    (["foo", "--name", "x"], {}),
    (["--strict-reconfig-check", "false"], {}),
    (["--strict-reconfig-check=yes"], {}),
    (["--snapshot-count", "99999999999999999999"], {}),
    (["--initial-cluster-state", "foo"], {}),
    (["--max-concurrent-streams", "abc"], {}),
    (["--listen-client-urls", "http://127.0.0.1"], {}),
    (["--listen-client-urls", "ftp://127.0.0.1:1"], {}),
    (["--listen-client-urls", "http://127.0.0.1:1/x"], {}),
    (["--listen-client-urls", "127.0.0.1:2379"], {}),
    (["--listen-client-urls", "http://127.0.0.1:abc"], {}),
    (["--listen-client-urls", "http://example.com:1"], {}),
    (["--listen-client-urls", "http://127.0.0.1:2379"], {}),
    (["--advertise-client-urls", "http://:2379"], {}),
    (["--election-timeout", "499"], {}),
    (["--election-timeout", "500000"], {}),
    (["--heartbeat-interval", "0"], {}),
    (["--logger", "foo"], {}),
    (["--auto-compaction-mode", "foo"], {}),
    (["--name", "b"], {"ETCD_NAME": "a"}),
    ([], {"ETCD_SNAPSHOT_COUNT": "abc"}),
    ([], {"ETCD_ELECTION_TIMEOUT": "400"}),
    ([], {"ETCD_LISTEN_CLIENT_URLS": "http://x"}),
]


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
@pytest.mark.parametrize(("argv", "env"), ETCD_SAME_ERROR)
def test_same_error_as_etcd(argv: list[str], env: dict[str, str], tmp_path: Path) -> None:
    assert ETCD is not None
    try:
        run = subprocess.run(
            [ETCD, *argv],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            check=False,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - etcd started: the case list is wrong
        pytest.fail(f"etcd started with {argv} {env}")
    with pytest.raises(ConfigError) as info:
        parse(*argv, env=env)
    assert info.value.exit_code == run.returncode
    assert info.value.message in run.stderr


# --------------------------------------------------------------------------- the rusd command


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.run_cli(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"rusd Version: {rusd.__version__}"
    assert lines[1] == "etcd API: 3.4"
    assert lines[2].startswith("Python Version: 3.")
    assert run_cli(["-version", "--foo"], capsys)[0] == 2


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    assert out.startswith("Usage:")
    assert "\nMember:\n  --name 'default'\n    Human-readable name for this member.\n" in out
    assert "  --max-concurrent-streams 'math.MaxUint32'\n" in out
    assert "  --pre-vote 'false'\n    Enable to run an additional Raft election phase.\n    [rusd] not impl" in out
    for spec in flagcat.FLAGS:
        assert (f"  --{spec.name} '" in out) != spec.hidden, spec.name


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--foo"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("flag provided but not defined: -foo\nUsage:")
    code, _, err = run_cli(["--pre-vote"], capsys)
    assert code == 1
    assert err == ("rusd: error verifying flags, flag --pre-vote is not implemented yet in rusd. See 'rusd --help'.\n")


def test_cli_runs_app(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ServerConfig] = []
    app = types.ModuleType("rusd.server.app")
    app.run = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rusd.server.app", app)
    monkeypatch.setattr(os, "environ", {"ETCD_DATA_DIR": "/d", "ETCD_BOGUS": "1"})
    code, _, err = run_cli(["--name", "n1"], capsys)
    assert code == 0
    assert seen == [parse("--name", "n1", "--data-dir", "/d")]
    assert err == "rusd: warning: unrecognized environment variable ETCD_BOGUS=1\n"


def test_cli_reports_start_up_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    app = types.ModuleType("rusd.server.app")
    app.run = verify_bootstrap  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rusd.server.app", app)
    monkeypatch.setattr(os, "environ", {})
    code, _, err = run_cli(["--name", "x", "--initial-cluster", "y=http://a:1"], capsys)
    assert (code, err) == (1, 'rusd: couldn\'t find local name "x" in the initial cluster configuration\n')


def test_cli_snapshot(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def snapshot_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    module = types.ModuleType("rusd.server.snapshot_cli")
    module.main = snapshot_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rusd.server.snapshot_cli", module)
    assert run_cli(["snapshot", "restore", "x.db"], capsys)[0] == 3
    assert seen == [["restore", "x.db"]]


def test_cli_gateway_not_implemented(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["gateway", "start"], capsys) == (1, "", "rusd gateway: not implemented yet\n")


def test_main_exits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    monkeypatch.setattr(sys, "argv", ["rusd", "--nope"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
