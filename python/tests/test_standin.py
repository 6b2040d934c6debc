"""The stand-in ``juju`` (fixtures/juju-cli/juju) behaves as the real CLI does where jubilant and
the library depend on it: plain and JSON output, how the command's words become a shell
command, the hook context, failures, timeouts and bad usage."""

from __future__ import annotations

import json
import subprocess

import jubilant
import pytest

from harness import Unit


def juju_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["juju", *args], capture_output=True, text=True, check=False)


def test_plain_output_is_the_commands_stdout_then_its_stderr(unit: Unit) -> None:
    done = juju_cli("exec", "--unit", "myapp/0", "--", "echo out; echo err >&2; printf more")

    assert (done.returncode, done.stdout, done.stderr) == (0, "out\nmore\nerr\n", "")


def test_json_output_is_one_task_per_unit_with_empty_streams_left_out(unit: Unit) -> None:
    done = juju_cli("exec", "--format", "json", "--unit", "myapp/0", "--", "echo '<a&b>'")

    assert done.stdout.count("\n") == 1 and "\\u003ca\\u0026b\\u003e" in done.stdout
    task = json.loads(done.stdout)["myapp/0"]
    assert task["results"] == {"return-code": 0, "stdout": "<a&b>\n"}
    assert (task["status"], task["unit"]) == ("completed", "myapp/0")
    binary = json.loads(juju_cli("exec", "--format=json", "-u", "myapp/0", "printf '\\377'").stdout)
    assert binary["myapp/0"]["results"]["stdout-encoding"] == "base64"


def test_several_words_are_joined_as_juju_joins_them_leaving_globs_to_the_shell(
    unit: Unit,
) -> None:
    done = juju_cli("exec", "--unit", "myapp/0", "--", "echo", "*.yaml", "$HOME", "a  b")

    assert done.stdout == "actions.yaml metadata.yaml $HOME a  b\n"


def test_the_command_runs_in_the_charm_dir_in_the_units_hook_context(unit: Unit) -> None:
    done = juju_cli("exec", "--unit", "myapp/0", "--", "pwd; echo $JUJU_UNIT_NAME; is-leader")

    assert done.stdout.splitlines() == [str(unit.charm), "myapp/0", "True"]


def test_jubilant_sees_a_failed_command_as_a_task_error(unit: Unit, juju: jubilant.Juju) -> None:
    with pytest.raises(jubilant.TaskError) as raised:
        juju.exec("echo partial; exit 3", unit="myapp/0")

    assert (raised.value.task.return_code, raised.value.task.stdout) == (3, "partial\n")
    done = juju_cli("exec", "--unit", "myapp/0", "--", "exit 3")
    assert done.returncode == 1
    assert done.stderr.startswith("ERROR the following task failed:\n - id ")


def test_jubilant_sees_the_wait_running_out_as_a_timeout(unit: Unit, juju: jubilant.Juju) -> None:
    with pytest.raises(TimeoutError):
        juju.exec("sleep 10", unit="myapp/0", wait=0.3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exec", "--", "true"], "You must specify a target"),
        (["exec", "--unit", "myapp/0"], "no commands specified"),
        (["exec", "--unit", "MyApp", "--", "true"], '"MyApp" is not a valid unit name'),
        (["exec", "--color", "--unit", "myapp/0", "--", "true"], "not defined: --color"),
        (["exec", "--format", "xml", "--unit", "myapp/0", "--", "true"], 'unknown format "xml"'),
        (["exec", "--wait", "soon", "--unit", "myapp/0", "--", "true"], "invalid duration"),
        (["status"], "implements only `juju exec`"),
    ],
)
def test_bad_usage_exits_2_naming_the_mistake(unit: Unit, args: list[str], message: str) -> None:
    done = juju_cli(*args)

    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("ERROR ") and message in done.stderr
