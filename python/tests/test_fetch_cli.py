"""Reading traces through the ``juju`` CLI, without jubilant: on the current model (``juju``
is None) or a named one, and what a failure says."""

from __future__ import annotations

import pytest

from dispatch_trace import JujuExecError, get_traces, wait_for_trace
from harness import MODEL, Calls, Unit


def test_the_cli_reads_the_current_models_unit(unit: Unit, juju_calls: Calls) -> None:
    unit.dispatch("install", CHARM_RUN="status-set active")
    unit.dispatch("db-relation-changed")

    traces = get_traces(None, "myapp/0", event="*-relation-changed")

    assert [t.event for t in traces] == ["db-relation-changed"]
    assert juju_calls()[-1]["argv"] == [
        "juju", "exec", "--format", "json", "--unit", "myapp/0", "--",
        "./dispatch traces --format json --last 0 --event '*-relation-changed'",
    ]
    assert wait_for_trace(None, "myapp/0", "install").tool_calls("status-set")


def test_a_model_name_is_given_to_the_cli(unit: Unit, juju_calls: Calls) -> None:
    unit.dispatch("install", CHARM_EXIT="1")

    [trace] = get_traces(MODEL, "myapp/0", failed=True)

    assert trace.outcome == "exit 1"
    assert juju_calls()[-1]["argv"][:4] == ["juju", "exec", "-m", MODEL]
    with pytest.raises(JujuExecError, match='model "other-model" not found'):
        get_traces("other-model", "myapp/0")


def test_what_dispatch_says_on_stderr_leaves_the_json_intact(unit: Unit) -> None:
    # `dispatch traces` says on stderr that nothing matched; Juju's plain format would have
    # printed it on stdout, after the JSON.
    unit.dispatch("install")

    assert get_traces(None, "myapp/0", event="remove") == []


def test_a_command_that_fails_on_the_unit_raises_with_its_stderr(unit: Unit) -> None:
    (unit.charm / "dispatch").unlink()

    with pytest.raises(JujuExecError, match="exit 127.*dispatch") as raised:
        get_traces(None, "myapp/0")

    assert raised.value.returncode == 127
    assert "No such file" in raised.value.stderr or "not found" in raised.value.stderr


def test_an_unknown_unit_is_an_error_not_an_empty_list(unit: Unit) -> None:
    with pytest.raises(JujuExecError, match='(?s)ran nothing: .*unit "other/0" not found'):
        get_traces(None, "other/0")
