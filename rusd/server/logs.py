"""Logging set up as etcd's --logger / --log-level / --log-outputs describe it.

capnslog: one text line per record on stderr or stdout. zap: one JSON object per
line (level, ts, caller, msg), to each listed output: stderr, stdout or a file path.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from rusd.server.config import ConfigError, ServerConfig

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class ZapFormatter(logging.Formatter):
    """The shape of etcd's zap JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = {
            "level": record.levelname.lower().replace("warning", "warn"),
            "ts": ts,
            "caller": f"{record.name}/{record.module}.py:{record.lineno}",
            "msg": record.getMessage(),
        }
        return json.dumps(line)


def _handler(output: str) -> logging.Handler:
    if output in ("default", "stderr"):
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    if output == "systemd/journal":
        raise ConfigError("--log-outputs=systemd/journal is not implemented yet in rusd")
    try:
        return logging.FileHandler(output, mode="a", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot open log output {output}: {e.strerror}") from e


def setup(config: ServerConfig) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(_LEVELS.get(config.log_level, logging.INFO))
    if config.logger == "zap":
        formatter: logging.Formatter = ZapFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname).1s | %(name)s: %(message)s")
    for output in config.log_outputs:
        handler = _handler(output)
        handler.setFormatter(formatter)
        root.addHandler(handler)
