"""The assertions pass on what the hook did and fail, with the dispatch's tree, on what it
did not."""

from __future__ import annotations

import pytest

from dispatch_trace import (
    Trace,
    assert_failed,
    assert_hook_called,
    assert_hook_not_called,
    assert_succeeded,
    parse_traces,
)
from harness import Unit


def last_trace(unit: Unit) -> Trace:
    return parse_traces(unit.traces_cli("--last", "1", "--format", "json"))[-1]


def test_a_successful_or_skipped_hook_succeeds_and_a_failed_one_does_not(unit: Unit) -> None:
    unit.dispatch("install")
    assert_succeeded(last_trace(unit))
    with pytest.raises(AssertionError) as raised:
        assert_failed(last_trace(unit))
    assert str(raised.value).startswith("install did not fail (ok)\n\ninstall  ")
    assert str(raised.value).endswith(last_trace(unit).tree())

    unit.dispatch_raising_like_ops("config-changed")
    failed = last_trace(unit)
    assert_failed(failed)
    assert_failed(failed, exception_type="KeyError")
    with pytest.raises(AssertionError) as raised:
        assert_succeeded(failed)
    assert str(raised.value) == (
        f"config-changed failed (exit 1): KeyError: 'port'\n\n{failed.tree()}"
    )
    assert "exception: KeyError: 'port'" in str(raised.value)

    (unit.charm / "dispatch.orig").unlink()
    unit.dispatch("update-status")
    assert_succeeded(last_trace(unit))


def test_a_failure_of_another_exception_or_none_is_not_the_one_expected(unit: Unit) -> None:
    unit.dispatch_raising_like_ops("config-changed")
    with pytest.raises(AssertionError, match="failed with KeyError: 'port', not ValueError\n"):
        assert_failed(last_trace(unit), exception_type="ValueError")

    unit.dispatch("stop", CHARM_KILL="TERM")
    with pytest.raises(AssertionError, match="killed by SIGTERM. without reporting an exception"):
        assert_failed(last_trace(unit), exception_type="KeyError")


def test_a_call_matches_its_arguments_in_order_and_redacted_values_by_key(unit: Unit) -> None:
    run = "status-set --application active 'port 8080'; leader-set password=hunter2 mode=primary"
    unit.dispatch("config-changed", CHARM_RUN=run)
    trace = last_trace(unit)

    assert_hook_called(trace, "status-set")
    assert_hook_called(trace, "status-set", "--application", "port 8080")
    assert_hook_called(trace, "leader-set", "password=anything", "mode=<redacted>")
    assert_hook_not_called(trace, "relation-set")

    with pytest.raises(AssertionError) as raised:
        assert_hook_called(trace, "status-set", "port 8080", "active")
    assert str(raised.value) == (
        "config-changed called status-set, never as status-set port 8080 active:\n"
        f"  status-set --application active port 8080\n\n{trace.tree()}"
    )
    with pytest.raises(AssertionError, match="never as leader-set user=x"):
        assert_hook_called(trace, "leader-set", "user=x")
    with pytest.raises(AssertionError, match="never as leader-set password:"):
        assert_hook_called(trace, "leader-set", "password")


def test_a_tool_never_called_or_called_when_it_should_not_be_is_named(unit: Unit) -> None:
    unit.dispatch("install", CHARM_RUN="is-leader; is-leader")
    trace = last_trace(unit)

    with pytest.raises(AssertionError) as raised:
        assert_hook_called(trace, "open-port", "80")
    assert str(raised.value).startswith("install never called open-port (wanted: open-port 80)")
    with pytest.raises(AssertionError) as raised:
        assert_hook_not_called(trace, "is-leader")
    assert str(raised.value) == (
        f"install called is-leader 2 time(s):\n  is-leader\n  is-leader\n\n{trace.tree()}"
    )
