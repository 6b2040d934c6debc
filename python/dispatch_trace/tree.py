"""The tree view of ``dispatch traces --format tree``, reproduced byte for byte.

A port of the tree view without ``-v`` (``dispatch``, ``Drawing::span`` and
``Drawing::span_line`` in the project's ``src/cli/tree.rs``; ``exception_summary``,
``one_line`` and ``value_text`` in ``src/cli/view.rs``; ``took`` in ``src/cli/human.rs``): when an assertion fails, the message
shows the dispatch exactly as ``juju exec -- ./dispatch traces`` would. The tests compare the
two outputs on real traces, so a change to the Rust view shows up there.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model.py imports this module for `Trace.tree`
    from .model import Span, Trace

# Rust's `char::is_whitespace` (Unicode White_Space), which `split_whitespace` and `trim`
# use. Python's `str.split()` also splits on U+001C..U+001F: not the same set.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WORDS = re.compile(f"[^{_WHITESPACE}]+")
_TRIM = re.compile(f"^[{_WHITESPACE}]+|[{_WHITESPACE}]+$")

# At most this many characters on an `exception:` or `stderr:` line.
_MAX_LINE = 200


def render(trace: Trace) -> str:
    """One dispatch block: the header line, its spans as a tree, and an empty line."""
    header = (
        f"{trace.event}  {format_time(trace.started_at)}  trace {trace.trace_id}  "
        f"[{trace.state}, {trace.priority}]\n"
    )
    roots = [s for s in trace.spans if s.parent is None]
    return header + "".join(_subtree(root, trace.trace_id) for root in roots) + "\n"


def format_time(when: datetime) -> str:
    """``started_at`` as ``dispatch`` writes it: UTC, to the millisecond the store keeps."""
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def _subtree(root: Span, trace_id: str) -> str:
    """A top-level span and everything under it, depth first (iterative: a charm's own spans
    may nest deeper than Python's recursion limit)."""
    lines = []
    # (span, prefix of its line, prefix of its children's lines, top of a tree)
    stack: list[tuple[Span, str, str, bool]] = [(root, "", "", True)]
    while stack:
        span, prefix, child_prefix, top = stack.pop()
        line = f"  {prefix}{_span_line(span)}"
        if top and span.trace_id != trace_id:
            # A span of another trace: custom spans the charm started in a trace of its own.
            line += f"  (trace {span.trace_id}, not {trace_id})"
        lines.append(line)
        lines.extend(_failure_lines(span, child_prefix))
        for i, kid in reversed(list(enumerate(span.children))):
            last = i + 1 == len(span.children)
            branch, continued = ("└─ ", "   ") if last else ("├─ ", "│  ")
            stack.append((kid, child_prefix + branch, child_prefix + continued, False))
    return "".join(f"{line}\n" for line in lines)


def _failure_lines(span: Span, child_prefix: str) -> list[str]:
    """Why a failed charm failed, under its span (the children's line continues past it)."""
    bar = "│" if span.children else " "
    lines = [
        f"  {child_prefix}{bar}  exception: {_exception_summary(event.attributes)}"
        for event in span.events
        if event.name == "exception"
    ]
    if "dispatch.child.stderr_tail" in span.attributes:
        tail = _value_text(span.attributes["dispatch.child.stderr_tail"])
        written = [line for line in tail.split("\n") if _trim(line)]
        if written:
            lines.append(f"  {child_prefix}{bar}  stderr: {_one_line(written[-1])}")
    return lines


def _span_line(span: Span) -> str:
    """One line summary of a span: name (and a tool's arguments), duration, events, exit,
    skip reason, and the error."""
    line = span.name
    if span.kind == "SPAN_KIND_CLIENT" and "process.command_args" in span.attributes:
        text = _value_text(span.attributes["process.command_args"])
        rest = _trim(text.removeprefix(span.name))
        if rest:
            line += f" {rest}"
    line += f"  {_took(span.duration_ms)}"
    if len(span.events) == 1:
        line += "  1 event"
    elif span.events:
        line += f"  {len(span.events)} events"
    if "process.exit.code" in span.attributes:
        line += f"  exit {_value_text(span.attributes['process.exit.code'])}"
    if "dispatch.skip_reason" in span.attributes:
        line += f"  skipped: {_value_text(span.attributes['dispatch.skip_reason'])}"
    if span.status == "ERROR":
        line += f"  ERROR {span.status_message}"
    return line


def _took(ms: float) -> str:
    """A duration as the CLI writes it: milliseconds below a second, seconds from there."""
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.2f} ms"


def _value_text(value: Any) -> str:
    """An attribute value as Rust's ``value_text`` prints the OTLP value that the JSON
    ``value`` came from (arrays joined with spaces, floats as Rust's ``Display``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _rust_float(value)
    if isinstance(value, list):
        return " ".join(_value_text(item) for item in value)
    return str(value)


def _rust_float(value: float) -> str:
    """Rust's ``Display`` for f64: the shortest digits that read back, never an exponent,
    no ``.0`` on whole numbers (``1``, ``0.0000001``, ``100000000000000000000``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _exception_summary(attributes: dict[str, Any]) -> str:
    """``Type: message`` of an ``exception`` event, or whichever of the two there is."""
    kind = _value_text(attributes.get("exception.type"))
    message = _value_text(attributes.get("exception.message"))
    if kind and message:
        summary = f"{kind}: {message}"
    else:
        summary = kind or message
    return _one_line(summary)


def _one_line(text: str) -> str:
    """``text`` on one line of at most 200 characters."""
    line = " ".join(_WORDS.findall(text))
    return line[: _MAX_LINE - 1] + "…" if len(line) > _MAX_LINE else line


def _trim(text: str) -> str:
    return _TRIM.sub("", text)
