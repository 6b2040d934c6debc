"""Reading traces through a real ``jubilant.Juju`` (pinned in tests/python-lib-requirements.txt),
which runs the stand-in ``juju exec`` exactly as it runs the real one: filters, quoting,
``since``, and waiting for a hook that has not run yet."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import jubilant
import pytest

from dispatch_trace import get_traces, wait_for_trace
from dispatch_trace.fetch import FIRST_WINDOW
from harness import MODEL, Calls, Unit


def test_every_trace_comes_back_oldest_first_through_one_juju_exec(
    unit: Unit, juju: jubilant.Juju, juju_calls: Calls
) -> None:
    for event in ("install", "config-changed", "start"):
        unit.dispatch(event)

    traces = get_traces(juju, "myapp/0")

    assert [t.event for t in traces] == ["install", "config-changed", "start"]
    assert [t.id for t in traces] == sorted(t.id for t in traces)
    # jubilant's argv, and one word after `--`: the command as the unit's shell must read it.
    assert [c["argv"] for c in juju_calls()] == [
        ["juju", "exec", "--model", MODEL, "--format", "json", "--unit", "myapp/0", "--",
         "./dispatch traces --format json --last 0"],
    ]


def test_an_event_glob_reaches_dispatch_quoted_whatever_the_charm_dir_holds(
    unit: Unit, juju: jubilant.Juju, juju_calls: Calls
) -> None:
    for event in ("db-relation-changed", "install", "web-relation-changed"):
        unit.dispatch(event)
    # Unquoted, the unit's shell would expand the glob to this file's name.
    (unit.charm / "x-relation-changed").touch()

    traces = get_traces(juju, "myapp/0", event="*-relation-changed")

    assert [t.event for t in traces] == ["db-relation-changed", "web-relation-changed"]
    assert "--event '*-relation-changed'" in juju_calls()[-1]["command"]


def test_failed_and_last_select_as_the_cli_does(unit: Unit, juju: jubilant.Juju) -> None:
    unit.dispatch("install", CHARM_EXIT="1")
    unit.dispatch("config-changed")
    unit.dispatch("config-changed", CHARM_EXIT="2")
    unit.dispatch("start")

    assert [t.outcome for t in get_traces(juju, "myapp/0", failed=True)] == ["exit 1", "exit 2"]
    assert [t.event for t in get_traces(juju, "myapp/0", last=2)] == ["config-changed", "start"]
    [newest_failure] = get_traces(juju, "myapp/0", event="config-changed", failed=True, last=1)
    assert newest_failure.outcome == "exit 2"
    assert get_traces(juju, "myapp/0", event="remove") == []


def test_since_keeps_what_started_after_it_however_many_came_before(
    unit: Unit, juju: jubilant.Juju, juju_calls: Calls
) -> None:
    unit.dispatch("install")
    since = datetime.now(timezone.utc)
    for _ in range(FIRST_WINDOW + 4):
        unit.dispatch("update-status")

    newer = get_traces(juju, "myapp/0", since=since)

    assert [t.event for t in newer] == ["update-status"] * (FIRST_WINDOW + 4)
    # The first window held only newer traces: a larger one reached `since`.
    assert [c["command"].rsplit(" ", 1)[1] for c in juju_calls()] == [
        str(FIRST_WINDOW),
        str(FIRST_WINDOW * 4),
    ]
    assert len(get_traces(juju, "myapp/0", since=since, last=3)) == 3
    assert get_traces(juju, "myapp/0", since=datetime.now(timezone.utc)) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        get_traces(juju, "myapp/0", since=datetime.now())


def test_waiting_returns_at_once_when_the_trace_is_already_stored(
    unit: Unit, juju: jubilant.Juju, juju_calls: Calls
) -> None:
    unit.dispatch("config-changed", CHARM_RUN="status-set active")
    unit.dispatch("update-status")

    start = time.monotonic()
    trace = wait_for_trace(juju, "myapp/0", "config-changed", poll=5)

    assert time.monotonic() - start < 5
    assert trace.event == "config-changed" and trace.tool_calls("status-set")
    assert len(juju_calls()) == 1


def test_waiting_polls_until_a_hook_run_meanwhile_is_stored(
    unit: Unit,
    juju: jubilant.Juju,
    juju_calls: Calls,
    background: Callable[[Callable[[], object]], None],
) -> None:
    unit.dispatch("config-changed")  # older than `since`: not the one awaited
    since = datetime.now(timezone.utc)

    def juju_runs_the_hook() -> None:
        time.sleep(0.5)
        unit.dispatch("config-changed", CHARM_RUN="status-set active 'port 8080'")

    background(juju_runs_the_hook)
    trace = wait_for_trace(juju, "myapp/0", "config-changed", since=since, timeout=20, poll=0.1)

    assert trace.started_at >= since
    assert [c.args for c in trace.tool_calls()] == [["active", "port 8080"]]
    assert len(juju_calls()) > 1


def test_waiting_for_a_failure_or_a_success_skips_the_other(
    unit: Unit, juju: jubilant.Juju
) -> None:
    unit.dispatch("config-changed")
    unit.dispatch("config-changed", CHARM_EXIT="1")

    assert wait_for_trace(juju, "myapp/0", "config-changed", failed=True).outcome == "exit 1"
    assert wait_for_trace(juju, "myapp/0", "config-changed", failed=False).outcome == "ok"
    assert wait_for_trace(juju, "myapp/0", "config-changed").outcome == "exit 1"


def test_waiting_in_vain_times_out_listing_the_newest_traces(
    unit: Unit, juju: jubilant.Juju
) -> None:
    unit.dispatch("install")
    unit.dispatch("start", CHARM_EXIT="4")

    start = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        wait_for_trace(juju, "myapp/0", "config-changed", timeout=0.5, poll=0.1)

    assert 0.5 <= time.monotonic() - start < 5
    message = str(raised.value)
    assert "no trace on myapp/0 (event config-changed) within 0.5 s" in message
    assert "install" in message and "start" in message and "exit 4" in message


def test_a_command_that_fails_on_the_unit_raises_jubilants_task_error(
    unit: Unit, juju: jubilant.Juju
) -> None:
    (unit.charm / "dispatch").unlink()

    with pytest.raises(jubilant.TaskError) as raised:
        get_traces(juju, "myapp/0")

    assert raised.value.task.return_code == 127


def test_an_unknown_unit_raises_jubilants_value_error(unit: Unit, juju: jubilant.Juju) -> None:
    with pytest.raises(ValueError, match='unit "other/0" not found'):
        get_traces(juju, "other/0")
