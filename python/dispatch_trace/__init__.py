"""Read what Juju hooks did from the traces ``dispatch`` stores on each unit.

``dispatch`` (the drop-in entrypoint that records one OpenTelemetry trace per hook) keeps its
traces on the unit; ``./dispatch traces --format json`` prints them. This package runs that
through ``juju exec`` (with jubilant or the ``juju`` CLI) and turns the JSON into typed
objects and assertions for integration tests. It depends on nothing but the standard library.
"""

from .assertions import (
    assert_failed,
    assert_hook_called,
    assert_hook_not_called,
    assert_succeeded,
)
from .fetch import JujuExecError, get_traces, wait_for_trace
from .model import (
    SCHEMA_VERSIONS,
    ExceptionInfo,
    Span,
    SpanEvent,
    SpanLink,
    ToolCall,
    Trace,
    TraceFormatError,
    parse_traces,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSIONS",
    "ExceptionInfo",
    "JujuExecError",
    "Span",
    "SpanEvent",
    "SpanLink",
    "ToolCall",
    "Trace",
    "TraceFormatError",
    "assert_failed",
    "assert_hook_called",
    "assert_hook_not_called",
    "assert_succeeded",
    "get_traces",
    "parse_traces",
    "wait_for_trace",
]
