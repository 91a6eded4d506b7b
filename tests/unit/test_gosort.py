"""rusd.core.gosort against go1.19's sort.Sort: the same order, ties included.

data/gosort_go119.json holds, per case, the permutation Go's sort.Sort (or
sort.Reverse) leaves a slice of (value, original index) pairs in when Less compares
the value only; the inputs are regenerated here from (kind, n, k, seed), so Go is
not needed at test time. "z" is base64(zlib(permutation as uint16 little-endian)).

To regenerate (go1.19.x, as etcd 3.4.23 is built with): `go run main.go fixture >
tests/unit/data/gosort_go119.json` with main.go below (`go run main.go all` emits a
far larger set, every length 0..300 plus 1000..5000, as JSON lines with "perm").
The essentials of main.go:

    type pair struct{ v, idx int }
    type byV []pair
    func (s byV) Len() int           { return len(s) }
    func (s byV) Less(i, j int) bool { return s[i].v < s[j].v }
    func (s byV) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }

    type rng struct{ s uint64 }
    func (r *rng) next() uint64 { // splitmix64
        r.s += 0x9e3779b97f4a7c15
        z := r.s
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb
        return z ^ (z >> 31)
    }

    // McIlroy's antiquicksort (go1.19 sort_test.go), candidate tracked by element.
    type adversary struct{ data []pair; nsolid, cand, gas int }
    func (d *adversary) Len() int      { return len(d.data) }
    func (d *adversary) Swap(i, j int) { d.data[i], d.data[j] = d.data[j], d.data[i] }
    func (d *adversary) Less(i, j int) bool {
        if d.data[i].v == d.gas && d.data[j].v == d.gas {
            if d.data[i].idx == d.cand { d.data[i].v = d.nsolid } else { d.data[j].v = d.nsolid }
            d.nsolid++
        }
        if d.data[i].v == d.gas { d.cand = d.data[i].idx } else if d.data[j].v == d.gas { d.cand = d.data[j].idx }
        return d.data[i].v < d.data[j].v
    }
    func adversaryValues(n int) []int {
        d := &adversary{data: make([]pair, n), gas: n - 1}
        for i := range d.data { d.data[i] = pair{n - 1, i} }
        sort.Sort(d)
        v := make([]int, n)
        for _, p := range d.data { v[p.idx] = p.v }
        return v
    }

    func gen(kind, n, k int, seed uint64) []int   // exactly as gen() below

    func perm(kind, n, k int, seed uint64, rev bool) []int {
        s := make(byV, n)
        for i, x := range gen(kind, n, k, seed) { s[i] = pair{x, i} }
        if rev { sort.Sort(sort.Reverse(s)) } else { sort.Sort(s) }
        out := make([]int, n)
        for i, p := range s { out[i] = p.idx }
        return out
    }

    // fixture: seed starts at 1000 and each add() takes the next one.
    for i, n := range []int{0, 1, 2, 12, 13, 20, 49, 50, 51, 64, 100, 150, 200, 257, 300} {
        add(i%12, n, 3, i%2 == 1)
        add((i+3)%12, n, n/4+1, i%2 == 0)
    }
    add(0, 120, 2, false); add(0, 120, 2, true); add(5, 200, 4, false); add(6, 200, 4, true)
    add(8, 180, 3, false); add(2, 90, 1000, true); add(10, 300, 1, false); add(11, 1000, 3, true)
    add(0, 1000, 7, false); add(5, 1100, 300, true)
    // each case: {"kind","n","k","seed","rev","z"}, z = base64(zlib(BestCompression, uint16 LE perm))
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rusd.core.gosort import go_sort, reverse
from rusd.core.mvcc.types import KeyValue

FIXTURE = Path(__file__).parent / "data" / "gosort_go119.json"
MASK64 = (1 << 64) - 1


def splitmix64(seed: int) -> Iterator[int]:
    s = seed
    while True:
        s = (s + 0x9E3779B97F4A7C15) & MASK64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


class Box:
    __slots__ = ("idx", "v")

    def __init__(self, v: int, idx: int) -> None:
        self.v, self.idx = v, idx


def adversary_values(n: int) -> list[int]:
    """The values McIlroy's adversary settles on while go_sort sorts it (it forces heapSort)."""
    gas = n - 1
    nsolid = 0
    cand: Box | None = None

    def less(x: Box, y: Box) -> bool:
        nonlocal nsolid, cand
        if x.v == gas and y.v == gas:
            (x if x is cand else y).v = nsolid
            nsolid += 1
        if x.v == gas:
            cand = x
        elif y.v == gas:
            cand = y
        return x.v < y.v

    data = [Box(gas, i) for i in range(n)]
    go_sort(data, less)
    values = [0] * n
    for b in data:
        values[b.idx] = b.v
    return values


def gen(kind: int, n: int, k: int, seed: int) -> list[int]:
    """The Go program's gen: kind picks a shape, k the number of distinct values."""
    if kind in (10, 11):
        v = adversary_values(n)
        return v if kind == 10 else [x // k for x in v]
    r = splitmix64(seed)
    t = n // k + 1
    v = []
    for i in range(n):
        if kind == 0:  # random
            x = next(r) % k
        elif kind in (1, 5):  # ascending runs (5: then a few swaps)
            x = i // t
        elif kind in (2, 6):  # descending runs (6: then a few swaps)
            x = (n - i) // t
        elif kind == 3:  # sawtooth
            x = i % k
        elif kind == 4:  # organ pipe
            x = min(i, n - i) // t
        elif kind == 7:  # all equal
            x = 7
        elif kind == 8:  # ascending with a random tail
            x = i // t if i < n * 3 // 4 else next(r) % k
        else:  # 9: reversed sawtooth
            x = (n - i) % k
        v.append(x)
    if kind in (5, 6) and n > 0:
        for _ in range(1 + n // 50):
            a, b = next(r) % n, next(r) % n
            v[a], v[b] = v[b], v[a]
    return v


def by_value(x: tuple[int, int], y: tuple[int, int]) -> bool:
    return x[0] < y[0]


def kv_by_value(a: KeyValue, b: KeyValue) -> bool:
    return a.value < b.value


CASES = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: "kind{kind}-n{n}-k{k}-{rev}".format(**c))
def test_same_permutation_as_go(case: dict[str, Any]) -> None:
    raw = zlib.decompress(base64.b64decode(case["z"]))
    expected = list(struct.unpack(f"<{len(raw) // 2}H", raw))
    values = gen(case["kind"], case["n"], case["k"], case["seed"])
    items = list(zip(values, range(len(values)), strict=True))
    go_sort(items, reverse(by_value) if case["rev"] else by_value)
    assert [i for _, i in items] == expected


def test_fixture_covers_ties_and_large_inputs() -> None:
    assert len(CASES) >= 40
    assert sum(c["n"] >= 1000 for c in CASES) >= 2
    assert {c["kind"] for c in CASES} == set(range(12))


@given(st.lists(st.integers(0, 5), max_size=200), st.booleans())
def test_sorts(values: list[int], rev: bool) -> None:
    items = list(zip(values, range(len(values)), strict=True))
    go_sort(items, reverse(by_value) if rev else by_value)
    assert [v for v, _ in items] == sorted(values, reverse=rev)
    assert sorted(i for _, i in items) == list(range(len(values)))


def test_key_values_by_value_like_etcd() -> None:
    """etcd's kvSortByValue on 40 keys in 3 tie groups (as tests/conformance/test_get.py puts
    them); the expected key orders come from go1.19 sort.Sort / sort.Sort(sort.Reverse(...))
    on the same slice. Neither is the stable order."""
    want = {
        False: "15 39 36 03 33 30 06 27 24 09 00 21 12 18 10 04 16 01 13 19 "
        "37 34 22 31 28 25 07 14 08 29 05 23 32 26 11 35 02 20 38 17",
        True: "14 38 02 35 32 05 29 26 08 23 20 11 17 10 04 01 16 37 34 19 "
        "13 31 22 28 07 25 00 24 09 06 30 21 27 33 36 03 18 12 15 39",
    }
    for rev, keys in want.items():
        kvs = [KeyValue(b"k%02d" % i, i + 1, i + 1, 1, b"v%d" % (i * 7 % 3)) for i in range(40)]
        stable = sorted(kvs, key=lambda kv: kv.value, reverse=rev)
        go_sort(kvs, reverse(kv_by_value) if rev else kv_by_value)
        assert " ".join(kv.key[1:].decode() for kv in kvs) == keys
        assert kvs != stable
