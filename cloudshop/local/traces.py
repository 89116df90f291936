"""`cloudshop trace <order-id>`: the local span file (`.cloudshop/traces/spans.jsonl`, appended by
every process `cloudshop up` starts; see `cloudshop.tracing`) read back as span trees.

The traces shown are those with a span tagged `order.id` = the order: the checkout that wrote its
first event, and the later requests that changed it (payment, cancel, refund), each a trace of its
own. Each prints as a tree: offset from the trace's first span, duration, service and span name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Span = dict[str, Any]


def read_spans(path: Path) -> Iterator[Span]:
    """Every span in the file; a line cut short (a process killed mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                span = json.loads(line)
            except ValueError:
                continue
            if isinstance(span, dict) and "trace_id" in span and "span_id" in span:
                yield span


def traces_of_order(spans: Iterable[Span], order_id: str) -> dict[str, list[Span]]:
    """trace id → its spans, for every trace in which some span carries `order.id` = `order_id`."""
    by_trace: dict[str, list[Span]] = {}
    wanted: set[str] = set()
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
        if (span.get("attributes") or {}).get("order.id") == order_id:
            wanted.add(span["trace_id"])
    ordered = sorted(wanted, key=lambda trace_id: min(s["start_ns"] for s in by_trace[trace_id]))
    return {trace_id: by_trace[trace_id] for trace_id in ordered}


def roots_and_children(spans: list[Span]) -> tuple[list[Span], dict[str, list[Span]]]:
    """The trace's roots (spans whose parent is not in it) and each span's children, by start time."""
    ids = {span["span_id"] for span in spans}
    children: dict[str, list[Span]] = {}
    roots = []
    for span in sorted(spans, key=lambda s: s["start_ns"]):
        parent = span.get("parent_id")
        if parent and parent in ids:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    return roots, children


def render_trace(trace_id: str, spans: list[Span]) -> str:
    """One trace as an indented tree: offset (ms from the first span), duration, service, name."""
    roots, children = roots_and_children(spans)
    start = min(span["start_ns"] for span in spans)
    end = max(span["start_ns"] + span["duration_ms"] * 1e6 for span in spans)
    services = sorted({span["service"] for span in spans})
    lines = [
        f"trace {trace_id}  {len(spans)} spans  {(end - start) / 1e6:.1f} ms  ({', '.join(services)})",
        f"{'offset':>10} {'duration':>10}  {'service':<14} span",
    ]

    def walk(span: Span, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        marks = []
        if span.get("status") == "error":
            marks.append("ERROR")
        order_id = (span.get("attributes") or {}).get("order.id")
        if order_id:
            marks.append(f"order.id={order_id}")
        suffix = f"  [{' '.join(marks)}]" if marks else ""
        offset = (span["start_ns"] - start) / 1e6
        lines.append(
            f"{offset:>8.1f}ms {span['duration_ms']:>8.1f}ms  {span['service']:<14} "
            f"{prefix}{branch}{span['name']} ({span.get('kind', 'internal')}){suffix}"
        )
        below = children.get(span["span_id"], [])
        inner = prefix if depth == 0 else prefix + ("   " if last else "│  ")
        for index, child in enumerate(below):
            walk(child, inner, index == len(below) - 1, depth + 1)

    for root in roots:
        if root.get("parent_id"):
            lines.append(f"{'':>21}  (parent {root['parent_id']} not recorded)")
        walk(root, "", True, 0)
    return "\n".join(lines)


def show_order(path: Path, order_id: str) -> tuple[str, int]:
    """What `cloudshop trace` prints, and its exit status (1 when no trace names the order)."""
    traces = traces_of_order(read_spans(path), order_id)
    if not traces:
        return f"no trace names order {order_id} in {path} (is `cloudshop up` running with tracing on?)", 1
    return "\n\n".join(render_trace(trace_id, spans) for trace_id, spans in traces.items()), 0
