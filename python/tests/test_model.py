"""The typed objects, made from what real dispatches stored: outcomes, tool calls, the
exception, the span tree, and what the JSON may and may not hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from dispatch_trace import Trace, TraceFormatError, parse_traces
from harness import OPS_TRACEBACK, Unit


def stored(unit: Unit) -> list[Trace]:
    return parse_traces(unit.traces_cli("--last", "0", "--format", "json"))


def test_a_hook_that_succeeded_reads_as_ok_with_its_calls_in_order(unit: Unit) -> None:
    before = datetime.now(timezone.utc)
    run = "status-set maintenance installing; is-leader > /dev/null; status-set active ready"
    assert unit.dispatch("install", CHARM_RUN=run).returncode == 0

    [trace] = stored(unit)

    assert (trace.event, trace.outcome, trace.exit_code) == ("install", "ok", 0)
    assert not trace.failed
    assert (trace.state, trace.priority, trace.schema_version) == ("pending", "changed", 1)
    assert before - timedelta(seconds=1) < trace.started_at < datetime.now(timezone.utc)
    assert trace.resource["juju_unit"] == "myapp/0"
    calls = trace.tool_calls()
    assert [(c.name, c.args, c.exit_code) for c in calls] == [
        ("status-set", ["maintenance", "installing"], 0),
        ("is-leader", [], 0),
        ("status-set", ["active", "ready"], 0),
    ]
    assert [c.args for c in trace.tool_calls("status-set")] == [
        ["maintenance", "installing"],
        ["active", "ready"],
    ]
    assert trace.root.name == "install" and trace.root.parent is None
    assert trace.charm is not None and trace.charm.parent is trace.root
    assert trace.charm.children == [c.span for c in calls]
    assert trace.find("status-set") is calls[0].span
    assert trace.find_all("status-set") == [calls[0].span, calls[2].span]
    assert trace.find("nothing-called-this") is None
    assert trace.duration_ms == trace.root.duration_ms >= trace.charm.duration_ms > 0
    assert trace.exception is None


def test_redacted_arguments_read_as_the_wrapper_recorded_them(unit: Unit) -> None:
    unit.dispatch("leader-elected", CHARM_RUN="leader-set password=hunter2 mode=primary")

    [call] = stored(unit)[0].tool_calls("leader-set")

    assert call.args == ["password=<redacted>", "mode=<redacted>"]
    assert "hunter2" not in repr(stored(unit))


def test_a_hook_that_failed_reads_as_exit_n_with_the_exception_ops_logged(unit: Unit) -> None:
    assert unit.dispatch_raising_like_ops("install", exit_code=3).returncode == 3

    [trace] = stored(unit)

    assert (trace.outcome, trace.exit_code, trace.failed, trace.priority) == (
        "exit 3",
        3,
        True,
        "failed",
    )
    assert trace.exception is not None
    assert (trace.exception.type, trace.exception.message) == ("KeyError", "'port'")
    assert trace.exception.stacktrace == OPS_TRACEBACK.split("\n", 1)[1]
    assert trace.root.failed and trace.root.status_message == "charm exited with code 3"


def test_a_charm_killed_by_a_signal_reads_as_killed(unit: Unit) -> None:
    assert unit.dispatch("stop", CHARM_KILL="TERM").returncode == -signal.SIGTERM

    [trace] = stored(unit)

    assert (trace.outcome, trace.exit_code, trace.failed) == ("killed by SIGTERM", None, True)


def test_an_event_with_nothing_to_run_reads_as_skipped(unit: Unit) -> None:
    (unit.charm / "dispatch.orig").unlink()
    assert unit.dispatch("update-status").returncode == 0

    [trace] = stored(unit)

    assert (trace.outcome, trace.exit_code, trace.failed) == ("skipped", None, False)
    assert trace.charm is None and trace.exception is None and trace.tool_calls() == []


def test_a_dispatch_whose_wrapper_was_killed_reads_as_interrupted(unit: Unit) -> None:
    inflight = unit.charm / ".dispatch-trace.db.inflight"
    wrapper = subprocess.Popen(
        ["./dispatch"],
        cwd=unit.charm,
        env=unit.hook_env("start", CHARM_SLEEP="2"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (inflight.is_dir() and any(inflight.iterdir())):
        assert time.monotonic() < deadline, "the dispatch never recorded itself as started"
        time.sleep(0.01)
    os.kill(wrapper.pid, signal.SIGKILL)
    wrapper.wait()
    # The next dispatch imports what the killed one left.
    unit.dispatch("update-status")

    interrupted = [t for t in stored(unit) if t.event == "start"]

    assert [(t.outcome, t.exit_code, t.failed) for t in interrupted] == [
        ("interrupted", None, True)
    ]


def test_a_root_span_that_says_nothing_of_the_end_reads_as_unknown(unit: Unit) -> None:
    unit.dispatch("install")
    [document] = json.loads(unit.traces_cli("--format", "json"))
    [root] = [s for s in document["spans"] if s["parent_span_id"] == ""]
    del root["attributes"]["dispatch.exit_code"]

    assert parse_traces(json.dumps([document]))[0].outcome == "unknown"


def test_a_schema_version_this_package_does_not_know_is_refused(unit: Unit) -> None:
    unit.dispatch("install")
    [document] = json.loads(unit.traces_cli("--format", "json"))

    with pytest.raises(TraceFormatError, match="schema_version 2.*upgrade"):
        parse_traces(json.dumps([document | {"schema_version": 2}]))
    del document["schema_version"]
    assert parse_traces(json.dumps([document]))[0].schema_version == 1


def test_a_stored_trace_that_cannot_be_decoded_is_named_not_skipped() -> None:
    # The object `dispatch traces --format json` prints for such a trace (src/cli/view.rs).
    unreadable = {
        "schema_version": 1,
        "id": 7,
        "event": "install",
        "trace_id": "ab" * 16,
        "error": "chunk 7 is not a valid OTLP request",
    }

    with pytest.raises(TraceFormatError, match="stored trace 7 \\(install.*not a valid OTLP"):
        parse_traces(json.dumps([unreadable]))


def test_output_that_is_not_traces_is_refused_clearly() -> None:
    with pytest.raises(TraceFormatError, match="printed no JSON"):
        parse_traces("Usage: dispatch [--help]\n")
    with pytest.raises(TraceFormatError, match="is not of schema 1.*'spans'"):
        parse_traces('[{"id": 1, "event": "install", "trace_id": "x", "state": "pending",'
                     ' "priority": "quiet", "started_at": "2026-12-04T15:02:11.123Z",'
                     ' "resource": {}}]')
