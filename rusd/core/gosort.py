"""A faithful port of Go 1.19's `sort.Sort` (pattern-defeating quicksort).

etcd 3.4 (built with go1.19) sorts Range results with `sort.Sort`, which is not
stable: the order it leaves tied elements in (equal values, versions, ...) is an
artefact of the exact algorithm, and clients can see it. To answer like etcd we
replay that algorithm step for step: same pivots, same comparisons, same swaps
(src/sort/zsortinterface.go and sort.go of go1.19.8). Deterministic, no
randomness beyond Go's own xorshift seeded from the length.

`less(x, y)` plays the part of `Less(i, j)` on the elements at i and j; Swap is a
list element swap. Moving one element through a run of swaps (insertion sort) is
done as a shift, which leaves the list exactly as the swaps would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Less = Callable[[T, T], bool]

_MAX_INSERTION = 12
_SHORTEST_NINTHER = 50
_MAX_SWAPS = 4 * 3
_MAX_STEPS = 5
_SHORTEST_SHIFTING = 50
_MASK64 = (1 << 64) - 1

_UNKNOWN_HINT = 0
_INCREASING_HINT = 1
_DECREASING_HINT = 2


def go_sort(data: list[T], less: Less[T]) -> None:
    """Sort `data` in place exactly as go1.19's sort.Sort would, given `less`."""
    n = len(data)
    if n <= 1:
        return
    _pdqsort(data, less, 0, n, n.bit_length())


def reverse(less: Less[T]) -> Less[T]:
    """The order of Go's sort.Reverse: Less(i, j) = less(j, i)."""
    return lambda x, y: less(y, x)


def _insertion_sort(data: list[T], less: Less[T], a: int, b: int) -> None:
    for i in range(a + 1, b):
        x = data[i]
        j = i
        while j > a and less(x, data[j - 1]):
            data[j] = data[j - 1]
            j -= 1
        data[j] = x


def _sift_down(data: list[T], less: Less[T], lo: int, hi: int, first: int) -> None:
    root = lo
    while True:
        child = 2 * root + 1
        if child >= hi:
            return
        if child + 1 < hi and less(data[first + child], data[first + child + 1]):
            child += 1
        if not less(data[first + root], data[first + child]):
            return
        data[first + root], data[first + child] = data[first + child], data[first + root]
        root = child


def _heap_sort(data: list[T], less: Less[T], a: int, b: int) -> None:
    first = a
    hi = b - a
    for i in range((hi - 1) // 2, -1, -1):
        _sift_down(data, less, i, hi, first)
    for i in range(hi - 1, -1, -1):
        data[first], data[first + i] = data[first + i], data[first]
        _sift_down(data, less, 0, i, first)


def _pdqsort(data: list[T], less: Less[T], a: int, b: int, limit: int) -> None:
    was_balanced = True
    was_partitioned = True
    while True:
        length = b - a
        if length <= _MAX_INSERTION:
            _insertion_sort(data, less, a, b)
            return
        if limit == 0:
            _heap_sort(data, less, a, b)
            return
        if not was_balanced:
            _break_patterns(data, a, b)
            limit -= 1

        pivot, hint = _choose_pivot(data, less, a, b)
        if hint == _DECREASING_HINT:
            data[a:b] = data[a:b][::-1]  # reverseRange
            pivot = (b - 1) - (pivot - a)
            hint = _INCREASING_HINT

        if was_balanced and was_partitioned and hint == _INCREASING_HINT and _partial_insertion_sort(data, less, a, b):
            return

        if a > 0 and not less(data[a - 1], data[pivot]):
            a = _partition_equal(data, less, a, b, pivot)
            continue

        mid, was_partitioned = _partition(data, less, a, b, pivot)
        left_len, right_len = mid - a, b - mid
        balance_threshold = length // 8
        if left_len < right_len:
            was_balanced = left_len >= balance_threshold
            _pdqsort(data, less, a, mid, limit)
            a = mid + 1
        else:
            was_balanced = right_len >= balance_threshold
            _pdqsort(data, less, mid + 1, b, limit)
            b = mid


def _partition(data: list[T], less: Less[T], a: int, b: int, pivot: int) -> tuple[int, bool]:
    data[a], data[pivot] = data[pivot], data[a]
    p = data[a]  # stays at a until the final swap
    i, j = a + 1, b - 1
    while i <= j and less(data[i], p):
        i += 1
    while i <= j and not less(data[j], p):
        j -= 1
    if i > j:
        data[j], data[a] = data[a], data[j]
        return j, True
    data[i], data[j] = data[j], data[i]
    i += 1
    j -= 1
    while True:
        while i <= j and less(data[i], p):
            i += 1
        while i <= j and not less(data[j], p):
            j -= 1
        if i > j:
            break
        data[i], data[j] = data[j], data[i]
        i += 1
        j -= 1
    data[j], data[a] = data[a], data[j]
    return j, False


def _partition_equal(data: list[T], less: Less[T], a: int, b: int, pivot: int) -> int:
    data[a], data[pivot] = data[pivot], data[a]
    p = data[a]
    i, j = a + 1, b - 1
    while True:
        while i <= j and not less(p, data[i]):
            i += 1
        while i <= j and less(p, data[j]):
            j -= 1
        if i > j:
            return i
        data[i], data[j] = data[j], data[i]
        i += 1
        j -= 1


def _partial_insertion_sort(data: list[T], less: Less[T], a: int, b: int) -> bool:
    i = a + 1
    for _ in range(_MAX_STEPS):
        while i < b and not less(data[i], data[i - 1]):
            i += 1
        if i == b:
            return True
        if b - a < _SHORTEST_SHIFTING:
            return False
        data[i], data[i - 1] = data[i - 1], data[i]
        # Shift the smaller one to the left (Go's loop runs down to index 1, not a + 1).
        if i - a >= 2:
            j = i - 1
            while j >= 1:
                if not less(data[j], data[j - 1]):
                    break
                data[j], data[j - 1] = data[j - 1], data[j]
                j -= 1
        # Shift the greater one to the right.
        if b - i >= 2:
            j = i + 1
            while j < b:
                if not less(data[j], data[j - 1]):
                    break
                data[j], data[j - 1] = data[j - 1], data[j]
                j += 1
    return False


def _break_patterns(data: list[T], a: int, b: int) -> None:
    length = b - a
    if length >= 8:
        random = length  # xorshift seeded with the length
        mask = (1 << length.bit_length()) - 1  # nextPowerOfTwo(length) - 1
        start = a + (length // 4) * 2
        for idx in range(start - 1, start + 2):
            random ^= (random << 13) & _MASK64
            random ^= random >> 17
            random ^= (random << 5) & _MASK64
            other = random & mask
            if other >= length:
                other -= length
            data[idx], data[a + other] = data[a + other], data[idx]


def _choose_pivot(data: list[T], less: Less[T], a: int, b: int) -> tuple[int, int]:
    n = b - a
    swaps = 0
    i = a + n // 4 * 1
    j = a + n // 4 * 2
    k = a + n // 4 * 3
    if n >= 8:
        if n >= _SHORTEST_NINTHER:
            i, s1 = _median(data, less, i - 1, i, i + 1)
            j, s2 = _median(data, less, j - 1, j, j + 1)
            k, s3 = _median(data, less, k - 1, k, k + 1)
            swaps = s1 + s2 + s3
        j, s = _median(data, less, i, j, k)
        swaps += s
    if swaps == 0:
        return j, _INCREASING_HINT
    if swaps == _MAX_SWAPS:
        return j, _DECREASING_HINT
    return j, _UNKNOWN_HINT


def _median(data: list[T], less: Less[T], a: int, b: int, c: int) -> tuple[int, int]:
    """Go's median: the index of the median of three, and how many order2 swaps it took."""
    swaps = 0
    if less(data[b], data[a]):
        swaps += 1
        a, b = b, a
    if less(data[c], data[b]):
        swaps += 1
        b, c = c, b
    if less(data[b], data[a]):
        swaps += 1
        a, b = b, a
    return b, swaps
