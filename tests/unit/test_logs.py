"""--logger / --log-outputs do what etcd's do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rusd.server import logs
from rusd.server.config import ConfigError, parse_config


def test_zap_logger_writes_json_lines_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "rusd.log"
    logs.setup(parse_config(["--logger", "zap", "--log-outputs", str(out), "--log-level", "warn"], {}))
    logging.getLogger("rusd").info("hidden below the level")
    logging.getLogger("rusd").warning("disk %s", "slow")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["level"], line["msg"]) for line in lines] == [("warn", "disk slow")]
    assert lines[0]["ts"].endswith("Z")


def test_unwritable_log_output_is_a_config_error(tmp_path: Path) -> None:
    config = parse_config(["--logger", "zap", "--log-outputs", str(tmp_path / "missing" / "x.log")], {})
    with pytest.raises(ConfigError, match="cannot open log output"):
        logs.setup(config)
