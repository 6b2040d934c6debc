"""Fixtures: a units directory served by the stand-in ``juju`` (``fixtures/juju-cli/juju``,
first on PATH), a unit in it, a real ``jubilant.Juju`` driving the stand-in, the calls the
stand-in received, and threads for hooks that run while a test waits."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jubilant
import pytest

from harness import MODEL, STANDIN_DIR, Calls, Unit


@pytest.fixture
def units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in juju's units directory, with the stand-in first on PATH."""
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.setenv("JUJU_STANDIN_UNITS", str(units))
    monkeypatch.setenv("JUJU_STANDIN_MODEL", MODEL)
    monkeypatch.setenv("JUJU_STANDIN_LOG", str(tmp_path / "juju-calls.jsonl"))
    monkeypatch.setenv("PATH", f"{STANDIN_DIR}{os.pathsep}{os.environ['PATH']}")
    return units


@pytest.fixture
def unit(units: Path) -> Unit:
    """``myapp/0``, the shell fixture charm wrapped with our dispatch."""
    return Unit.create(units, "myapp/0")


@pytest.fixture
def juju(units: Path) -> jubilant.Juju:
    """A real jubilant.Juju on the model the stand-in serves (its ``juju`` is on PATH)."""
    return jubilant.Juju(model=MODEL)


@pytest.fixture
def juju_calls(tmp_path: Path, units: Path) -> Calls:
    """The calls the stand-in juju received so far: ``argv`` and the ``command`` it ran."""

    def calls() -> list[dict[str, Any]]:
        log = tmp_path / "juju-calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return calls


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], object]], None]]:
    """Runs functions on threads (a hook Juju runs while the test waits); each is waited for
    at the end, and what it raised fails the test."""
    futures: list[Future[object]] = []
    with ThreadPoolExecutor() as pool:

        def start(function: Callable[[], object]) -> None:
            futures.append(pool.submit(function))

        yield start
    for future in futures:
        future.result()
