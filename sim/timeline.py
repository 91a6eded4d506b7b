"""An HTML timeline of a members-engine run: one lane per client, each call a bar from its
call to its return (green: answered, orange: refused, grey: indeterminate), the operation
that could not be placed in red, faults as vertical lines. Open it in a browser."""

from __future__ import annotations

import html

from sim import history as h
from sim.members import EXPIRY_CLIENT

_LANE = 18
_WIDTH = 1400


def render(title: str, ops: list[h.Operation], faults: list[tuple[int, str]], failed: h.Operation | None) -> str:
    shown = [op for op in ops if op.client < EXPIRY_CLIENT]  # clients, not the lessor or watches
    clients = sorted({op.client for op in shown})
    end = max([op.ret or op.call for op in shown] + [t for t, _ in faults] + [1])
    scale = (_WIDTH - 120) / end
    lane = {c: i for i, c in enumerate(clients)}
    height = _LANE * (len(clients) + 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" font-size="10">']
    for c, i in lane.items():
        parts.append(f'<text x="2" y="{_LANE * (i + 1) + 12}">client {c}</text>')
    for t, what in faults:
        x = 100 + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="purple" stroke-dasharray="3"/>'
                     f'<text x="{x + 2:.1f}" y="10" fill="purple">{html.escape(what)}</text>')
    for op in shown:
        x1 = 100 + op.call * scale
        x2 = 100 + (op.ret if op.ret is not None else end) * scale
        color = ("red" if op is failed else "grey" if op.indeterminate
                 else "orange" if op.error is not None else "green")
        y = _LANE * (lane[op.client] + 1) + 2
        tip = html.escape(h.describe(op))
        parts.append(f'<rect x="{x1:.1f}" y="{y}" width="{max(x2 - x1, 1.5):.1f}" height="{_LANE - 5}" '
                     f'fill="{color}" opacity="0.7"><title>{tip}</title></rect>')
    parts.append("</svg>")
    failed_text = html.escape(h.describe(failed)) if failed is not None else "none"
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h3>{html.escape(title)}</h3><p>first operation that cannot be placed: {failed_text}</p>"
            + "".join(parts))
