"""Assertions on a trace for integration tests: each failure says what was expected and shows
the dispatch as ``dispatch traces`` would, so the test log alone tells what the hook did."""

from __future__ import annotations

from typing import NoReturn

from .model import ToolCall, Trace

#: How the wrapper shows the value of a ``key=value`` argument it must not record.
REDACTED = "<redacted>"


def assert_succeeded(trace: Trace) -> None:
    """The dispatch did not fail (the charm exited 0, or there was nothing to run)."""
    if trace.failed:
        _fail(f"{trace.event} failed ({trace.outcome}){_exception_text(trace)}", trace)


def assert_failed(trace: Trace, exception_type: str | None = None) -> None:
    """The dispatch failed; with ``exception_type`` (``ValueError``, ``ops.model.ModelError``,
    as Python prints the class), the charm reported an exception of exactly that type."""
    if not trace.failed:
        _fail(f"{trace.event} did not fail ({trace.outcome})", trace)
    if exception_type is None:
        return
    exception = trace.exception
    if exception is None:
        _fail(f"{trace.event} failed ({trace.outcome}) without reporting an exception", trace)
    elif exception.type != exception_type:
        _fail(
            f"{trace.event} failed with {exception.type or 'an exception'}: "
            f"{exception.message}, not {exception_type}",
            trace,
        )


def assert_hook_called(trace: Trace, tool: str, *args: str) -> None:
    """The charm called hook tool ``tool`` with ``args`` among its arguments, in this order
    (others may come before, between and after). An expected ``key=value`` matches a
    recorded ``key=<redacted>``: the wrapper keeps only the key, so only the key is checked."""
    calls = trace.tool_calls(tool)
    if any(_has_in_order(call.args, args) for call in calls):
        return
    wanted = " ".join([tool, *args])
    if not calls:
        _fail(f"{trace.event} never called {tool} (wanted: {wanted})", trace)
    _fail(f"{trace.event} called {tool}, never as {wanted}:{_calls_text(calls)}", trace)


def assert_hook_not_called(trace: Trace, tool: str) -> None:
    """The charm never called hook tool ``tool``."""
    calls = trace.tool_calls(tool)
    if calls:
        _fail(f"{trace.event} called {tool} {len(calls)} time(s):{_calls_text(calls)}", trace)


def _has_in_order(recorded: list[str], expected: tuple[str, ...]) -> bool:
    remaining = iter(recorded)
    return all(any(_arg_matches(got, want) for got in remaining) for want in expected)


def _arg_matches(recorded: str, expected: str) -> bool:
    key, _, value = recorded.partition("=")
    if value == REDACTED:
        return expected.startswith(f"{key}=")
    return recorded == expected


def _calls_text(calls: list[ToolCall]) -> str:
    return "".join(f"\n  {' '.join([call.name, *call.args])}" for call in calls)


def _exception_text(trace: Trace) -> str:
    exception = trace.exception
    if exception is None:
        return ""
    named = f"{exception.type}: " if exception.type else ""
    return f": {named}{exception.message}"


def _fail(message: str, trace: Trace) -> NoReturn:
    raise AssertionError(f"{message}\n\n{trace.tree()}")
