"""Fixtures: a rusd and a real etcd side by side, driven by the real etcdctl.

- `pair`: one rusd + one etcd per test module (fast). Before each test the two are
  brought to the same revision (padding writes go to a key no test reads), so one
  divergence cannot cascade into every later comparison. Tests use their own key
  prefixes.
- `fresh_pair`: a new rusd + etcd for one test, for scenarios where absolute
  revisions, compaction or the whole key space matter.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import Pair
from tests.servers import ETCD, ETCDCTL, etcd, rusd

# A single-member etcd waits one election timeout before it leads; shorten it so a
# fresh etcd is ready in ~0.1 s instead of ~1 s. Nothing the KV commands print
# depends on these (raft term is normalised anyway).
ETCD_FAST = ("--heartbeat-interval", "10", "--election-timeout", "100")

if not (shutil.which(ETCDCTL) and shutil.which(ETCD)):  # pragma: no cover
    pytest.skip("etcd and etcdctl are needed for the conformance suite", allow_module_level=True)


def start_pair(tmp: Path) -> Pair:
    r = rusd(tmp).start()
    try:
        e = etcd(tmp, *ETCD_FAST).start()
    except BaseException:
        r.stop()
        raise
    return Pair(r, e)


def stop_pair(pair: Pair) -> None:
    for server in (pair.rusd, pair.etcd):
        server.stop()


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
