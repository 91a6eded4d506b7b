"""Fixtures: a rusd and a real etcd side by side, driven by the real etcdctl.

- `pair`: one rusd + one etcd per test module (fast). Before each test the two are
  brought to the same revision (padding writes go to a key no test reads), so one
  divergence cannot cascade into every later comparison. Tests use their own key
  prefixes.
- `fresh_pair`: a new rusd + etcd for one test, for scenarios where absolute
  revisions, compaction or the whole key space matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import Pair, start_pair, stop_pair


@pytest.fixture(scope="module")
def module_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("pair"))
    try:
        yield pair
    finally:
        stop_pair(pair)


@pytest.fixture
def pair(module_pair: Pair) -> Pair:
    module_pair.sync_revisions()
    return module_pair


@pytest.fixture
def fresh_pair(tmp_path: Path) -> Iterator[Pair]:
    pair = start_pair(tmp_path)
    try:
        yield pair
    finally:
        stop_pair(pair)
