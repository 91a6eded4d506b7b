"""The reference for tiny histories: try every order that respects real time (and every
subset of the indeterminate operations), with none of the search's pruning, forced moves or
memoization. Exponential; tests only."""

from __future__ import annotations

from collections.abc import Sequence

from sim.history import Operation, Range
from sim.model import Model, matches, step

INF = float("inf")


def brute_force_linearizable(operations: Sequence[Operation]) -> bool:
    spans: list[tuple[float, float]] = []
    for op in operations:
        stale = isinstance(op.request, Range) and op.request.serializable and not op.indeterminate
        call = -INF if stale else op.call
        ret = INF if stale or op.indeterminate or op.ret is None else op.ret
        spans.append((call, ret))

    def search(state: Model, remaining: frozenset[int]) -> bool:
        if all(operations[i].indeterminate for i in remaining):
            return True  # the indeterminate ones left never took effect
        earliest_return = min(spans[i][1] for i in remaining)
        for i in sorted(remaining):
            if spans[i][0] > earliest_return:
                continue  # another remaining operation returned before this one was called
            op = operations[i]
            new, out = step(state, op.request, op.response)
            if (op.indeterminate or matches(out, op.response, op.error)) and search(new, remaining - {i}):
                return True
        return False

    return search(Model(), frozenset(range(len(operations))))
