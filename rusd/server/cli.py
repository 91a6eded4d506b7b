"""The `rusd` command: an etcd 3.4 compatible server command line.

`rusd [flags]` takes etcd's server flags (Go flag syntax, ETCD_* environment variables,
see rusd.server.config) and starts the server; `rusd --version` and `rusd --help` behave
like etcd's. `rusd snapshot restore ...` is rusd.server.snapshot_cli.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import textwrap
from collections.abc import Sequence

import rusd
from rusd.server import flags as flagcat
from rusd.server.config import ConfigError, build_config, parse_command_line, warn_to_stderr
from rusd.server.tls_settings import export_cipher_suites

USAGE = """Usage:

  rusd [flags]
    Start a rusd server (etcd v3 API compatible).

  rusd --version
    Show the version of rusd.

  rusd -h | --help
    Show the help information about rusd.

  rusd snapshot restore <filename> [options]
    Restore an etcd snapshot into a new data directory.
"""

INDENT = "    "
NOT_IMPLEMENTED_NOTE = "[rusd] not implemented yet: only the default value is accepted."


def version_text() -> str:
    """What `rusd --version` prints, in the shape of `etcd --version`."""
    return (
        f"rusd Version: {rusd.__version__}\n"
        "etcd API: 3.4\n"
        f"Python Version: {platform.python_version()}\n"
        f"Python OS/Arch: {sys.platform}/{platform.machine().lower()}\n"
    )


def help_text() -> str:
    """What `rusd --help` prints: etcd's usage and flag list, marking what rusd lacks."""
    lines = [USAGE.rstrip("\n")]
    for section in flagcat.SECTIONS:
        specs = [s for s in flagcat.FLAGS if s.section == section and not s.hidden]
        if not specs:
            continue
        lines.append(f"\n{section}:")
        for spec in specs:
            shown = spec.default if spec.shown_default is None else spec.shown_default
            lines.append(f"  --{spec.name} '{shown}'")
            for paragraph in spec.help.split("\n"):
                lines.append(textwrap.fill(paragraph, width=100, initial_indent=INDENT, subsequent_indent=INDENT))
            if not spec.implemented:
                lines.append(f"    {NOT_IMPLEMENTED_NOTE}")
    lines.append(
        "\nEvery flag can also be set by an environment variable ETCD_<FLAG>, the flag name in\n"
        "upper case with '-' as '_' (e.g. ETCD_DATA_DIR); a flag given on the command line must\n"
        "not also be set in the environment."
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with etcd's exit codes (2: flag syntax, 1: other errors)."""
    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


def run_cli(argv: Sequence[str]) -> int:
    """The whole command, returning the exit status instead of exiting."""
    args = list(argv)
    if args and args[0] == "snapshot":
        return _snapshot(args[1:])
    if args and args[0] in ("gateway", "grpc-proxy"):
        print(f"rusd {args[0]}: not implemented yet", file=sys.stderr)
        return 1
    try:
        cmd = parse_command_line(args, warn=warn_to_stderr)
        if cmd.help:
            sys.stdout.write(help_text())
            return 0
        if cmd.version:
            sys.stdout.write(version_text())
            return 0
        config = build_config(cmd, os.environ, warn=warn_to_stderr)
    except ConfigError as e:
        if e.exit_code == 2:  # as Go's flag package: the error, then the usage
            print(e.message, file=sys.stderr)
            print(USAGE, file=sys.stderr)
        else:
            print(f"rusd: error verifying flags, {e.message}. See 'rusd --help'.", file=sys.stderr)
        return e.exit_code

    # gRPC core reads its cipher list once, when it loads: export it before importing it.
    export_cipher_suites(config.cipher_suites, os.environ, grpc_loaded="grpc" in sys.modules)
    from rusd.server.app import run

    try:
        run(config)
    except ConfigError as e:  # start-up checks, e.g. verify_bootstrap
        print(f"rusd: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


def _snapshot(args: list[str]) -> int:
    """`rusd snapshot <args>` (rusd.server.snapshot_cli, imported only when used)."""
    result = importlib.import_module("rusd.server.snapshot_cli").main(args)
    return result if isinstance(result, int) else 1
