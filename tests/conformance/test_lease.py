"""etcdctl lease commands against rusd and a real etcd.

Both servers run with etcd's default timing (heartbeat 100 ms, election 1000 ms), so
the minimum lease TTL is 2 s on both. Lease ids are server-chosen and differ: each
granted id is read from each server's own output and replaced by a placeholder
(<LA>, <LB>, ... in grant order) in hex and decimal before comparing. Remaining TTLs
depend on when each server answered: they are compared as placeholders, and rusd's
own value is checked against the granted TTL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import Identity, Normaliser, Out, Pair, _finish, _start, require_etcd
from tests.servers import etcd, rusd

UNKNOWN = "1234"


class LeaseIds:
    def __init__(self) -> None:
        self.by_endpoint: dict[str, list[int]] = {}

    def add(self, endpoint: str, lease_id: int) -> None:
        self.by_endpoint.setdefault(endpoint, []).append(lease_id)

    def __call__(self, text: str, ident: Identity) -> str:
        for n, lease_id in enumerate(self.by_endpoint.get(ident.endpoint, []), start=1):
            name = f"<L{chr(64 + n)}>"
            text = text.replace(format(lease_id, "016x"), name).replace(format(lease_id, "x"), name)
            text = re.sub(rf"\b{lease_id}\b", name, text)
        return text


_REMAINING = [
    (re.compile(r"remaining\(\d+s\)"), "remaining(<N>s)"),
    (re.compile(r'"ttl":\d+'), '"ttl":<N>'),
]


def remaining(text: str, ident: Identity) -> str:
    for pattern, repl in _REMAINING:
        text = pattern.sub(repl, text)
    return text


@pytest.fixture(scope="module")
def lease_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_etcd()
    tmp: Path = tmp_path_factory.mktemp("lease")
    r = rusd(tmp).start()
    try:
        e = etcd(tmp).start()
    except BaseException:
        r.stop()
        raise
    pair = Pair(r, e)
    try:
        yield pair
    finally:
        for server in (r, e):
            server.stop()


@pytest.fixture
def pair(lease_pair: Pair) -> Pair:
    lease_pair.sync_revisions()
    return lease_pair


@pytest.fixture
def ids() -> LeaseIds:
    return LeaseIds()


_GRANTED = re.compile(r"^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n$")


def grant(pair: Pair, ids: LeaseIds, ttl: str) -> Out:
    r, e = pair.raw("lease", "grant", ttl)
    for out, server in ((r, pair.rusd), (e, pair.etcd)):
        m = _GRANTED.match(out.out)
        assert m, out
        ids.add(server.endpoint, int(m.group(1), 16))
    return pair.compare(r, e, f"etcdctl lease grant {ttl}", ids)


def rusd_id(pair: Pair, ids: LeaseIds, n: int) -> str:
    return format(ids.by_endpoint[pair.rusd.endpoint][n - 1], "x")


def ctl_each(pair: Pair, ids: LeaseIds, n: int, *args: str, norm: tuple[Normaliser, ...] = ()) -> Out:
    """Run `args` with {id} replaced by each server's own n-th lease id."""
    r_args = [a.format(id=rusd_id(pair, ids, n)) for a in args]
    e_args = [a.format(id=format(ids.by_endpoint[pair.etcd.endpoint][n - 1], "x")) for a in args]
    rp, ep = _start(pair.rusd.endpoint, tuple(r_args)), _start(pair.etcd.endpoint, tuple(e_args))
    r, e = _finish(rp, b""), _finish(ep, b"")
    return pair.compare(r, e, "etcdctl " + " ".join(args), (ids, *norm))


def test_grant_put_timetolive_keepalive_revoke(pair: Pair, ids: LeaseIds) -> None:
    assert grant(pair, ids, "100").out == "lease <LA> granted with TTL(100s)\n"
    assert ctl_each(pair, ids, 1, "put", "--lease={id}", "lease1/k", "v").out == "OK\n"
    got = ctl_each(pair, ids, 1, "get", "lease1/k", "-w", "json").json()
    assert got["kvs"][0]["lease"] == "<LA>"

    r = ctl_each(pair, ids, 1, "lease", "timetolive", "{id}", norm=(remaining,))
    assert r.out == "lease <LA> granted with TTL(100s), remaining(<N>s)\n"
    r = ctl_each(pair, ids, 1, "lease", "timetolive", "--keys", "{id}", norm=(remaining,))
    assert r.out == "lease <LA> granted with TTL(100s), remaining(<N>s), attached keys([lease1/k])\n"
    r = ctl_each(pair, ids, 1, "lease", "timetolive", "--keys", "{id}", "-w", "json", norm=(remaining,))
    assert r.json()["keys"] == ["bGVhc2UxL2s="] and r.json()["granted-ttl"] == 100
    # rusd's own remaining TTL: truncated whole seconds, as etcd's
    raw = Pair.normalise(*pair.raw("lease", "timetolive", rusd_id(pair, ids, 1))[:1], pair.ids()[0])
    left = int(re.search(r"remaining\((\d+)s\)", raw.out).group(1))  # type: ignore[union-attr]
    assert 90 <= left <= 99

    assert ctl_each(pair, ids, 1, "lease", "keep-alive", "--once", "{id}").out == (
        "lease <LA> keepalived with TTL(100)\n"
    )
    r = ctl_each(pair, ids, 1, "lease", "keep-alive", "--once", "{id}", "-w", "json")
    assert r.json()["TTL"] == 100 and r.json()["ID"] == "<LA>"

    assert ctl_each(pair, ids, 1, "lease", "revoke", "{id}").out == "lease <LA> revoked\n"
    assert pair.ctl("get", "lease1/", "--prefix").out == ""
    r = ctl_each(pair, ids, 1, "lease", "timetolive", "{id}")
    assert r.out == "lease <LA> already expired\n"


def test_revoke_deletes_every_attached_key_in_one_revision(pair: Pair, ids: LeaseIds) -> None:
    grant(pair, ids, "300")
    for key in ("lease2/b", "lease2/a", "lease2/c"):
        ctl_each(pair, ids, 1, "put", "--lease={id}", key, "v")
    pair.ctl("put", "lease2/z", "keep")
    before = pair.ctl("get", "lease2/z", "-w", "json").json()["header"]["revision"]
    r = ctl_each(pair, ids, 1, "lease", "revoke", "{id}", "-w", "json")
    assert r.json()["header"]["revision"] == before + 1
    got = pair.ctl("get", "lease2/", "--prefix", "-w", "json").json()
    assert [kv["key"] for kv in got["kvs"]] == ["bGVhc2UyL3o="]
    assert got["header"]["revision"] == before + 1


def test_list(pair: Pair, ids: LeaseIds) -> None:
    grant(pair, ids, "500")
    grant(pair, ids, "400")
    r = pair.ctl("lease", "list", norm=ids)
    # etcd lists soonest expiry first
    assert r.out == "found 2 leases\n<LB>\n<LA>\n"
    r = pair.ctl("lease", "list", "-w", "json", norm=ids)
    assert [le["id"] for le in r.json()["leases"]] == ["<LB>", "<LA>"]
    for n in (1, 2):
        ctl_each(pair, ids, n, "lease", "revoke", "{id}")
    assert pair.ctl("lease", "list").out == "found 0 leases\n"


def test_ttl_below_the_minimum_is_raised(pair: Pair, ids: LeaseIds) -> None:
    assert grant(pair, ids, "1").out == "lease <LA> granted with TTL(2s)\n"
    r = pair.ctl("lease", "grant", "9000000001")
    assert (r.rc, r.err.splitlines()[-1]) == (1, "Error: failed to grant lease (etcdserver: too large lease TTL)")
    ctl_each(pair, ids, 1, "lease", "revoke", "{id}")


def test_unknown_lease(pair: Pair) -> None:
    r = pair.ctl("lease", "revoke", UNKNOWN)
    not_found = "Error: failed to revoke lease (etcdserver: requested lease not found)"
    assert (r.rc, r.err.splitlines()[-1]) == (1, not_found)
    assert pair.ctl("lease", "timetolive", UNKNOWN).out == "lease 0000000000001234 already expired\n"
    r = pair.ctl("lease", "timetolive", "--keys", UNKNOWN, "-w", "json")
    assert (r.json()["ttl"], r.json()["granted-ttl"], r.json()["keys"]) == (-1, 0, None)
    r = pair.ctl("lease", "keep-alive", "--once", UNKNOWN)
    assert (r.rc, r.err) == (2, "Error: etcdserver: requested lease not found\n")
    r = pair.ctl("put", "--lease", UNKNOWN, "lease3/k", "v")
    assert (r.rc, r.err.splitlines()[-1]) == (1, "Error: etcdserver: requested lease not found")
    assert pair.ctl("get", "lease3/k").out == ""



def test_keep_alive_stream_until_revoked(pair: Pair, ids: LeaseIds) -> None:
    """`etcdctl lease keep-alive` (no --once) renews every TTL/3 over one stream and
    stops by itself once the lease is revoked elsewhere. How many renewals each
    printed depends on timing, so repeated lines are collapsed before comparing."""
    grant(pair, ids, "3")
    servers = (pair.rusd, pair.etcd)
    procs = [_start(s.endpoint, ("lease", "keep-alive", format(ids.by_endpoint[s.endpoint][0], "x"))) for s in servers]
    time.sleep(2.5)  # one renewal per second (TTL/3): at least two each
    ctl_each(pair, ids, 1, "lease", "revoke", "{id}")
    seen = []
    for proc, ident in zip(procs, pair.ids(), strict=True):
        out = Pair.normalise(_finish(proc, b"", timeout=15), ident, ids)
        lines = out.out.splitlines()
        assert out.rc == 0 and len(lines) >= 3, out
        seen.append([line for n, line in enumerate(lines) if n == 0 or line != lines[n - 1]])
    assert seen[0] == seen[1] == ["lease <LA> keepalived with TTL(3)", "lease <LA> expired or revoked."]
