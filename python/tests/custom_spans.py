"""Charm code sending its own spans to the wrapper's listener, as OTLP/JSON by hand (as
fixtures/charms/otel/src/otlp_json.py does): spans whose shapes the tree view treats each in
its own way, for the test that compares the library's tree with the CLI's.

Under the ``charm`` span (from ``TRACEPARENT``): ``reconcile`` (float, bool and array
attributes, two events) with ``render`` (ERROR with an ``exception`` event) over ``deep``,
and ``check``, a CLIENT span with command arguments, a float exit code and a stderr tail. In
a trace of its own: ``orphan``, which the tree marks as another trace's.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from typing import Any

_, TRACE_ID, CHARM_SPAN, _ = os.environ["TRACEPARENT"].split("-")
NOW = time.time_ns()


def value(item: object) -> dict[str, Any]:
    """An OTLP/JSON AnyValue."""
    if isinstance(item, bool):
        return {"boolValue": item}
    if isinstance(item, int):
        return {"intValue": str(item)}
    if isinstance(item, float):
        return {"doubleValue": item}
    if isinstance(item, list):
        return {"arrayValue": {"values": [value(v) for v in item]}}
    return {"stringValue": str(item)}


def attributes(items: dict[str, object]) -> list[dict[str, Any]]:
    return [{"key": k, "value": value(v)} for k, v in items.items()]


def span(
    name: str,
    span_id: str,
    parent: str,
    start_ms: int,
    duration_ns: int,
    trace_id: str = TRACE_ID,
    kind: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(NOW - 50_000_000 + start_ms * 1_000_000),
        "endTimeUnixNano": str(NOW - 50_000_000 + start_ms * 1_000_000 + duration_ns),
        **extra,
    }


def main() -> None:
    reconcile, render, deep, check = (secrets.token_hex(8) for _ in range(4))
    spans = [
        span(
            "reconcile",
            reconcile,
            CHARM_SPAN,
            1,
            10_125_000,  # 10.125 ms, exactly: a tie, rounded to even (10.12) by both
            attributes=attributes(
                {"charm.load": 0.25, "charm.leader": True, "charm.ports": [80, 443]}
            ),
            events=[
                {"name": "config-written", "timeUnixNano": str(NOW)},
                {"name": "restarted", "timeUnixNano": str(NOW)},
            ],
        ),
        span(
            "render",
            render,
            reconcile,
            2,
            375_000,
            status={"code": 2, "message": "template broken"},
            events=[
                {
                    "name": "exception",
                    "timeUnixNano": str(NOW),
                    "attributes": attributes(
                        {
                            "exception.type": "jinja2.TemplateError",
                            "exception.message": "unexpected '}'\n  at line 3\u00a0and  " * 12,
                        }
                    ),
                }
            ],
        ),
        span("deep", deep, render, 3, 1_005_000),
        span(
            "check",
            check,
            reconcile,
            4,
            2_500_000,
            kind=3,
            attributes=attributes(
                {
                    "process.command_args": ["check", "--fast", "db"],
                    "process.exit.code": 1.0,
                    "dispatch.child.stderr_tail": "first line\nlast  words\u2003here\n\n",
                }
            ),
        ),
        span("orphan", secrets.token_hex(8), "", 5, 1, trace_id=secrets.token_hex(16)),
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes({"service.name": "custom"})},
                "scopeSpans": [{"scope": {"name": "custom-code"}, "spans": spans}],
            }
        ]
    }
    request = urllib.request.Request(
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        assert answer.status == 200, answer.read()


if __name__ == "__main__":
    main()
