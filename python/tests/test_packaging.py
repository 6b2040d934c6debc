"""What a user gets: the installed wheel (not this source tree), an install from a git URL's
subdirectory, and the README's example, run as it is written there."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jubilant
import pytest

import dispatch_trace
from harness import REPO, Unit

PYTHON_DIR = REPO / "python"


def readme_example() -> str:
    """The README's fenced block that follows its ``<!-- test: readme-example`` marker."""
    readme = (PYTHON_DIR / "README.md").read_text()
    found = re.search(r"<!-- test: readme-example.*?-->\n```python\n(.*?)```", readme, re.S)
    assert found, "python/README.md has no block marked `<!-- test: readme-example -->`"
    return found.group(1)


def test_the_tests_run_on_the_installed_wheel_not_on_the_source_tree() -> None:
    installed = Path(dispatch_trace.__file__).resolve().parent

    assert not installed.is_relative_to(PYTHON_DIR)
    assert (installed / "py.typed").exists()
    assert importlib.metadata.version("dispatch-trace") == dispatch_trace.__version__


def test_the_package_installs_from_a_subdirectory_of_a_git_repository(tmp_path: Path) -> None:
    # The same URL as `dispatch-trace @ git+https://...#subdirectory=python`, on a local
    # repository (a PEP 508 `name @` URL must name a host, which a local file URL does not).
    repo = tmp_path / "repo"
    ignored = shutil.ignore_patterns("__pycache__", ".*_cache")
    shutil.copytree(PYTHON_DIR, repo / "python", ignore=ignored)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *args], check=True)

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"),
         f"git+file://{repo}#subdirectory=python"],
        check=True,
    )

    [wheel] = (tmp_path / "wheels").iterdir()
    assert wheel.name == f"dispatch_trace-{dispatch_trace.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "dispatch_trace/py.typed" in names and "dispatch_trace/fetch.py" in names
    assert not [n for n in names if n.startswith("tests/")]


@pytest.fixture
def my_app(
    units: Path,
    juju: jubilant.Juju,
    monkeypatch: pytest.MonkeyPatch,
    background: Callable[[Callable[[], object]], None],
) -> Unit:
    """``my-app/0``, whose ``juju.config`` does what Juju does (the stand-in implements only
    ``juju exec``): stores the config and, a moment later, runs ``config-changed``, whose
    charm sets its status from ``config-get`` (failing, as a charm would, on port 0)."""
    unit = Unit.create(units, "my-app/0")
    charm = 'port=$(config-get port); status-set active "port $port"; [ "$port" != 0 ] || exit 1'

    def config(app: str, values: Mapping[str, Any]) -> None:
        assert app == "my-app"
        unit.write_state({"unit": unit.name, "leader": True, "config": dict(values)})

        def hook() -> None:
            time.sleep(0.3)
            unit.dispatch("config-changed", CHARM_RUN=charm)

        background(hook)

    monkeypatch.setattr(juju, "config", config)
    return unit


def run_example(code: str, juju: jubilant.Juju) -> None:
    """Runs the test function that ``code`` defines, as pytest would, with ``juju``."""
    namespace: dict[str, Any] = {}
    exec(compile(code, "python/README.md (readme-example)", "exec"), namespace)
    [test] = [v for k, v in namespace.items() if k.startswith("test_")]
    test(juju)


def test_the_readme_example_runs_as_written(my_app: Unit, juju: jubilant.Juju) -> None:
    run_example(readme_example(), juju)

    [trace] = dispatch_trace.get_traces(juju, "my-app/0")
    assert [c.args for c in trace.tool_calls("status-set")] == [["active", "port 8080"]]


def test_the_readme_example_fails_showing_the_tree_when_the_hook_fails(
    my_app: Unit, juju: jubilant.Juju
) -> None:
    example = readme_example().replace('{"port": 8080}', '{"port": 0}')
    assert example != readme_example()

    with pytest.raises(AssertionError) as raised:
        run_example(example, juju)

    assert str(raised.value).startswith("config-changed failed (exit 1)\n\nconfig-changed  ")
    assert "status-set active port 0  " in str(raised.value)
