"""Typed views of what ``dispatch traces --format json`` prints.

The JSON shape is the project README's (*Traces in integration tests* and *Span model*): an
array, oldest first, with one object per dispatch. Its ``schema_version`` goes up only when a
field is removed or changes meaning, so this module reads exactly the versions in
``SCHEMA_VERSIONS`` and refuses any other rather than misreading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .tree import render

#: The ``schema_version`` values this library reads (a document without one is version 1).
SCHEMA_VERSIONS = (1,)

#: The instrumentation scope of the spans ``dispatch`` makes itself (root, ``charm``, tools);
#: spans the charm's own code sent keep their own scope.
DISPATCH_SCOPE = "juju-dispatch-trace"


class TraceFormatError(ValueError):
    """What ``dispatch traces`` printed cannot be read as traces of a known schema."""


@dataclass
class SpanEvent:
    """An event on a span (``exception``, or one the charm's own code added)."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass
class SpanLink:
    """A link to a span of another trace (an incoming ``TRACEPARENT``, say)."""

    trace_id: str
    span_id: str


@dataclass
class Span:
    """One span of a dispatch; ``parent`` and ``children`` are filled in by its `Trace`."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    start_unix_nano: int
    end_unix_nano: int
    duration_ms: float
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[SpanLink]
    scope: str
    parent: Span | None = field(default=None, repr=False, compare=False)
    #: Direct children, in start order (as the tree view shows them).
    children: list[Span] = field(default_factory=list, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        """Whether the span's status is ERROR."""
        return self.status == "ERROR"


@dataclass(frozen=True)
class ExceptionInfo:
    """The exception a failed charm reported (an ``exception`` event on the ``charm`` span).

    ``type`` is the exception's class as Python prints it (``ValueError``,
    ``ops.model.ModelError``), empty when the log named none.
    """

    type: str
    message: str
    stacktrace: str


@dataclass(frozen=True)
class ToolCall:
    """One hook-tool call the charm made (a CLIENT span of ``dispatch``'s own scope).

    ``args`` are the arguments after the tool's name, as the wrapper recorded them: the values
    of ``key=value`` arguments of the data-writing tools as ``key=<redacted>``, log text as
    ``<N bytes>`` (unless the charm opted in to ``record_log_messages``).
    """

    name: str
    args: list[str]
    exit_code: int | None
    span: Span


@dataclass
class Trace:
    """One dispatch: the event, where it is in the store, and its spans."""

    id: int
    event: str
    trace_id: str
    state: str
    priority: str
    started_at: datetime
    resource: dict[str, Any]
    #: Every span, in the order ``dispatch traces`` printed them.
    spans: list[Span]
    schema_version: int = 1
    #: The dispatch's own root span (named after the event).
    root: Span = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _link(self.spans)
        self.root = _root(self)

    @property
    def charm(self) -> Span | None:
        """The ``charm`` span (the charm's process); None when nothing ran."""
        return next((s for s in self.root.children if s.name == "charm"), None)

    @property
    def failed(self) -> bool:
        """Whether the dispatch failed, as ``dispatch traces --failed`` counts it."""
        return self.priority == "failed"

    @property
    def exit_code(self) -> int | None:
        """The exit code recorded for the dispatch; None when the charm did not exit itself
        (killed by a signal, nothing to run, or the wrapper was interrupted)."""
        code = self.root.attributes.get("dispatch.exit_code")
        return code if isinstance(code, int) else None

    @property
    def outcome(self) -> str:
        """How the dispatch ended, in words: ``ok``, ``exit N``, ``killed by SIGTERM``,
        ``skipped`` (no target for the event), ``interrupted`` (the wrapper was killed before
        it recorded the run), or ``unknown`` (a root span that says none of these)."""
        attributes = self.root.attributes
        if attributes.get("dispatch.interrupted") is True:
            return "interrupted"
        if attributes.get("dispatch.skipped") is True:
            return "skipped"
        code = self.exit_code
        if code is not None:
            return "ok" if code == 0 else f"exit {code}"
        error_type = self.charm.attributes.get("error.type") if self.charm else None
        if isinstance(error_type, str) and error_type.startswith("SIG"):
            return f"killed by {error_type}"
        return "unknown"

    @property
    def duration_ms(self) -> float:
        """The dispatch's duration (its root span's), in milliseconds."""
        return self.root.duration_ms

    @property
    def exception(self) -> ExceptionInfo | None:
        """The exception the charm reported before failing; None when there is none."""
        charm = self.charm
        events = [e for e in charm.events if e.name == "exception"] if charm else []
        if not events:
            return None
        attributes = events[0].attributes
        return ExceptionInfo(
            type=str(attributes.get("exception.type", "")),
            message=str(attributes.get("exception.message", "")),
            stacktrace=str(attributes.get("exception.stacktrace", "")),
        )

    def find(self, name: str) -> Span | None:
        """The first span (in start order) called ``name``, or None."""
        spans = self.find_all(name)
        return spans[0] if spans else None

    def find_all(self, name: str) -> list[Span]:
        """Every span called ``name``, in start order."""
        return [s for s in _by_start(self.spans) if s.name == name]

    def tool_calls(self, name: str | None = None) -> list[ToolCall]:
        """The charm's hook-tool calls in start order, only those of tool ``name`` if given."""
        calls = [_tool_call(s) for s in _by_start(self.spans) if _is_tool_span(s)]
        return [c for c in calls if name is None or c.name == name]

    def tree(self) -> str:
        """This dispatch as ``dispatch traces --format tree`` shows it (a block ending with an
        empty line), so a failed assertion reads like the command line."""
        return render(self)


def parse_traces(text: str) -> list[Trace]:
    """The traces in the output of ``dispatch traces --format json``, oldest first."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TraceFormatError(
            f"`dispatch traces --format json` printed no JSON ({error}): {text[:200]!r}"
        ) from None
    if not isinstance(document, list):
        raise TraceFormatError(f"expected a JSON array of traces, got {type(document).__name__}")
    return [_parse_trace(item) for item in document]


def _parse_trace(item: Any) -> Trace:
    """One dispatch object of the JSON array."""
    if not isinstance(item, dict):
        raise TraceFormatError(f"expected a trace object, got {item!r:.200}")
    version = item.get("schema_version", 1)
    if version not in SCHEMA_VERSIONS:
        raise TraceFormatError(
            f"trace {item.get('id')} has schema_version {version!r}; this dispatch-trace reads "
            f"{', '.join(map(str, SCHEMA_VERSIONS))}: upgrade the dispatch-trace package"
        )
    if "error" in item:
        raise TraceFormatError(
            f"stored trace {item.get('id')} ({item.get('event')}, trace {item.get('trace_id')}) "
            f"cannot be read: {item['error']}"
        )
    try:
        return Trace(
            id=item["id"],
            event=item["event"],
            trace_id=item["trace_id"],
            state=item["state"],
            priority=item["priority"],
            started_at=parse_time(item["started_at"]),
            resource=item["resource"],
            spans=[_span(s) for s in item["spans"]],
            schema_version=version,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TraceFormatError(
            f"trace {item.get('id')} is not of schema {version}: {error!r}"
        ) from None


def parse_time(text: str) -> datetime:
    """``2026-12-04T15:02:11.123Z`` (how ``dispatch`` writes ``started_at``) as an aware UTC
    datetime; Python 3.10's ``fromisoformat`` does not take the ``Z``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _span(item: dict[str, Any]) -> Span:
    return Span(
        name=item["name"],
        trace_id=item["trace_id"],
        span_id=item["span_id"],
        parent_span_id=item["parent_span_id"],
        kind=item["kind"],
        start_unix_nano=item["start_unix_nano"],
        end_unix_nano=item["end_unix_nano"],
        duration_ms=item["duration_ms"],
        status=item["status"],
        status_message=item["status_message"],
        attributes=item["attributes"],
        events=[
            SpanEvent(e["name"], e["time_unix_nano"], e["attributes"]) for e in item["events"]
        ],
        links=[SpanLink(link["trace_id"], link["span_id"]) for link in item["links"]],
        scope=item["scope"],
    )


def _link(spans: list[Span]) -> None:
    """Fills in ``parent`` and ``children`` the way the tree view builds its tree: a span
    whose parent is not in the trace is a root of its own."""
    by_id = {s.span_id: s for s in spans}
    for span in _by_start(spans):
        parent = by_id.get(span.parent_span_id)
        if parent is not None:
            span.parent = parent
            parent.children.append(span)


def _root(trace: Trace) -> Span:
    """The dispatch's root span: ours, in the dispatch's trace, with no parent in it (its
    parent is Juju's span when the trace continues Juju's)."""
    for span in trace.spans:
        ours = span.scope == DISPATCH_SCOPE and span.trace_id == trace.trace_id
        if ours and span.parent is None:
            return span
    raise ValueError(f"no root span among {[s.name for s in trace.spans]}")


def _by_start(spans: list[Span]) -> list[Span]:
    return sorted(spans, key=lambda s: s.start_unix_nano)


def _is_tool_span(span: Span) -> bool:
    return span.kind == "SPAN_KIND_CLIENT" and span.scope == DISPATCH_SCOPE


def _tool_call(span: Span) -> ToolCall:
    # The first element is the tool's name, as argv[0] would be.
    args = [str(arg) for arg in span.attributes.get("process.command_args", [])[1:]]
    code = span.attributes.get("process.exit.code")
    return ToolCall(span.name, args, code if isinstance(code, int) else None, span)
