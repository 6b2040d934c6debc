"""The tests' harness: units made of a fixture charm wrapped with the real ``dispatch`` binaries
(``target/debug``, built by ``cargo build --workspace``) and fake hook tools, laid out where
the stand-in ``juju`` (``fixtures/juju-cli/juju``) finds them. Hooks are run as Juju runs
them: environment built from scratch, cwd the charm directory, stdin empty, and no
destination to ship to (nothing leaves the machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARIES = REPO / "target" / "debug"
STANDIN_DIR = REPO / "fixtures" / "juju-cli"
MODEL = "test-model"

#: The ``juju_calls`` fixture: the calls the stand-in juju received so far.
Calls = Callable[[], list[dict[str, Any]]]

# What ops logs through juju-log when a handler raises (as tests/it/failed_hooks.rs has it).
OPS_TRACEBACK = """Uncaught exception while in charm code:
Traceback (most recent call last):
  File "/charm/src/charm.py", line 12, in _on_install
    port = config["port"]
KeyError: 'port'"""

# A charm step that logs OPS_TRACEBACK (given as $TRACEBACK) the way ops does.
LOG_TRACEBACK = 'juju-log --log-level ERROR -- "$TRACEBACK"'


def built(name: str) -> Path:
    """A binary of the workspace's debug build."""
    path = BINARIES / name
    if not path.exists():
        pytest.exit(f"{path} is missing: run `cargo build --workspace` first", returncode=1)
    return path


def install_binary(name: str, charm: Path) -> None:
    """A hard link to the built binary when the file system allows (fast), else a copy; never
    a symlink: dispatch finds its store and shim beside its real path."""
    try:
        os.link(built(name), charm / name)
    except OSError:
        shutil.copy2(built(name), charm / name)


@dataclass
class Unit:
    """A unit's directory as the stand-in juju sees it: ``charm/`` (the charm, wrapped),
    ``tools/`` (fake hook tools) and ``state/`` (their state)."""

    name: str
    home: Path

    @property
    def charm(self) -> Path:
        return self.home / "charm"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @classmethod
    def create(cls, units: Path, name: str, fixture: str = "shell") -> Unit:
        """The fixture charm under ``fixtures/charms`` wrapped with our dispatch: its own
        entrypoint stays ``dispatch.orig``, ``dispatch`` and ``dispatch-shim`` beside it."""
        unit = cls(name, units / name.replace("/", "-"))
        shutil.copytree(REPO / "fixtures" / "charms" / fixture, unit.charm, symlinks=True)
        for binary in ("dispatch", "dispatch-shim"):
            install_binary(binary, unit.charm)
        subprocess.run(
            [built("fake-jujuc"), "--install-tools", unit.home / "tools"],
            check=True,
            capture_output=True,
        )
        unit.state.mkdir()
        unit.write_state({"unit": name, "leader": True})
        return unit

    def write_state(self, state: dict[str, Any]) -> None:
        """The fake hook tools' model (``state.json``: config, relations, leadership...)."""
        (self.state / "state.json").write_text(json.dumps(state))

    def hook_env(self, event: str, **extra: str) -> dict[str, str]:
        """The environment Juju gives a hook for ``event`` (``install``, ``actions/backup``)."""
        dispatch_path = event if event.startswith("actions/") else f"hooks/{event}"
        env = {
            "PATH": f"{self.home / 'tools'}:/usr/local/bin:/usr/bin:/bin",
            "FAKE_JUJU_STATE": str(self.state),
            "JUJU_DISPATCH_PATH": dispatch_path,
            "JUJU_UNIT_NAME": self.name,
            "JUJU_MODEL_NAME": MODEL,
            "JUJU_MODEL_UUID": "f00dfeed-0000-4000-8000-000000000001",
            "JUJU_CHARM_DIR": str(self.charm),
            "JUJU_VERSION": "3.6.4",
            "JUJU_CONTEXT_ID": f"{self.name}-{event}-123",
        }
        if dispatch_path.startswith("hooks/"):
            env["JUJU_HOOK_NAME"] = event
        else:
            env |= {"JUJU_ACTION_NAME": event.removeprefix("actions/"), "JUJU_ACTION_UUID": "1"}
        return env | extra

    def dispatch(self, event: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
        """Runs our dispatch for ``event`` as Juju would; ``extra`` drives the shell charm
        (``CHARM_RUN``, ``CHARM_EXIT``, ... in fixtures/README.md)."""
        return subprocess.run(
            ["./dispatch"],
            cwd=self.charm,
            env=self.hook_env(event, **extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )

    def dispatch_raising_like_ops(
        self, event: str, exit_code: int = 1, traceback: str = OPS_TRACEBACK
    ) -> subprocess.CompletedProcess[bytes]:
        """A hook whose charm reports ``traceback`` as ops reports an uncaught exception,
        then exits ``exit_code``."""
        return self.dispatch(
            event, CHARM_RUN=LOG_TRACEBACK, TRACEBACK=traceback, CHARM_EXIT=str(exit_code)
        )

    def traces_cli(self, *args: str) -> str:
        """``./dispatch traces ARGS`` run directly in the charm directory: the CLI's own
        output, to compare with what the library makes of it."""
        done = subprocess.run(
            ["./dispatch", "traces", *args],
            cwd=self.charm,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout


