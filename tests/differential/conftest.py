"""A fresh real etcd and a fresh rusd, side by side, for each differential test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[servers.ServerProcess, servers.ServerProcess]]:
    (tmp_path / "etcd").mkdir()
    (tmp_path / "rusd").mkdir()
    etcd = servers.etcd(tmp_path / "etcd").start()
    try:
        rusd = servers.rusd(tmp_path / "rusd").start()
    except BaseException:
        etcd.stop()
        raise
    try:
        yield etcd, rusd
    finally:
        rusd.stop()
        etcd.stop()
