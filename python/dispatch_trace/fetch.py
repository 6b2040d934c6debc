"""Reading a unit's stored traces: ``./dispatch traces --format json`` run through ``juju exec``.

``juju exec`` runs its command in the unit's charm directory, where ``dispatch`` is. Given one
word after ``--``, Juju runs it as the shell command it is; given several, it joins them with
its own quoting, which leaves globs (``*-relation-changed``) to the unit's shell. So the
command is always built here as one string with every argument quoted (``shlex.join``), and
passed as one word, through jubilant or through the ``juju`` CLI alike.

The CLI is asked for ``--format json``: Juju's plain format prints the command's stderr on
its own stdout (after the command's stdout), which would break the JSON.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from .model import Trace, parse_traces

#: How many of the newest traces are asked for first when the selection is not all done by
#: ``dispatch traces`` itself (``since``, ``failed=False``); each next window is four times
#: larger, until one holds enough, reaches ``since`` or holds every stored trace.
FIRST_WINDOW = 16


class ExecTask(Protocol):
    """What a ``juju.exec`` call returns (``jubilant.Task``): the command's stdout."""

    @property
    def stdout(self) -> str: ...


class JujuExec(Protocol):
    """Anything with jubilant's ``Juju.exec(command, *args, unit=...)``, which raises when
    the command fails."""

    def exec(self, command: str, *args: str, unit: str) -> ExecTask: ...


#: A ``jubilant.Juju``, a model name for the ``juju`` CLI, or None for the CLI's current model.
JujuTarget = JujuExec | str | None

#: Runs a shell command in the unit's charm directory and returns its stdout.
Run = Callable[[str], str]


class JujuExecError(RuntimeError):
    """``juju exec`` (the CLI) failed, or the command it ran on the unit did."""

    def __init__(self, message: str, *, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def get_traces(
    juju: JujuTarget,
    unit: str,
    event: str | None = None,
    failed: bool = False,
    last: int | None = None,
    since: datetime | None = None,
) -> list[Trace]:
    """The traces stored on ``unit``, oldest first.

    Args:
        juju: a ``jubilant.Juju``; else the ``juju`` CLI is run, with ``-m MODEL`` when it
            is a model name, on the current model when None.
        unit: the unit, such as ``my-app/0``.
        event: only this event (``config-changed``, ``hooks/install``, ``backup``) or a glob
            (``*-relation-changed``), as ``dispatch traces --event`` takes it.
        failed: only the dispatches that failed (``--failed``).
        last: only the newest ``last`` of those; all when None.
        since: only those started after this aware datetime (compared at the millisecond
            the store records ``started_at``, against the unit's clock).

    Raises:
        TraceFormatError: the output is not traces of a schema this package reads.
        JujuExecError: through the CLI, ``juju exec`` or the command failed; through
            jubilant, its own errors (``TaskError``, ``CLIError``) are raised instead.
    """
    return _select(_runner(juju, unit), event, failed, last, since, lambda _: True)


def wait_for_trace(
    juju: JujuTarget,
    unit: str,
    event: str | None = None,
    timeout: float = 60.0,
    since: datetime | None = None,
    failed: bool | None = None,
    poll: float = 1.0,
) -> Trace:
    """The newest trace on ``unit`` of ``event`` (a name or glob, any when None), newer than
    ``since`` when given, that failed (``failed=True``) or did not (``failed=False``) or
    either (None). Returns as soon as one is stored, asking every ``poll`` seconds.

    Raises:
        TimeoutError: none came within ``timeout`` seconds; the message lists the unit's
            newest traces, whatever they are.
    """
    run = _runner(juju, unit)
    deadline = time.monotonic() + timeout

    def wanted(trace: Trace) -> bool:
        return failed is None or trace.failed == failed

    while True:
        found = _select(run, event, failed is True, 1, since, wanted)
        if found:
            return found[0]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(_nothing_came(run, unit, event, timeout, since, failed))
        time.sleep(min(poll, remaining))


def _traces_command(event: str | None, failed: bool, last: int) -> str:
    """``./dispatch traces ... --format json`` as one shell command, every argument quoted."""
    argv = ["./dispatch", "traces", "--format", "json", "--last", str(last)]
    if event is not None:
        argv += ["--event", event]
    if failed:
        argv.append("--failed")
    return shlex.join(argv)


def _runner(juju: JujuTarget, unit: str) -> Run:
    # New names, typed as narrowed here: a lambda does not keep the narrowing of `juju`.
    if juju is None or isinstance(juju, str):
        model = juju
        return lambda command: _cli_exec(model, unit, command)
    jubilant = juju
    return lambda command: jubilant.exec(command, unit=unit).stdout


def _cli_exec(model: str | None, unit: str, command: str) -> str:
    """``juju exec --format json`` of ``command`` on ``unit``: the command's stdout.

    The JSON is Juju's for one unit: ``{"app/0": {"id": ..., "status": "completed",
    "results": {"return-code": N, "stdout": ..., "stderr": ...}, ...}}``, with ``stdout``
    and ``stderr`` left out when empty. A non-zero return code also makes ``juju exec`` exit
    1 ("the following task failed"); an unknown unit gives no JSON at all.
    """
    argv = ["juju", "exec", *(["-m", model] if model else []), "--format", "json"]
    argv += ["--unit", unit, "--", command]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        tasks = json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        tasks = {}
    if not tasks:
        raise JujuExecError(
            f"{shlex.join(argv)} exited {done.returncode} and ran nothing: "
            f"{(done.stderr or done.stdout).strip()}",
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
    task = next(iter(tasks.values()))
    results = task.get("results", {})
    code = results.get("return-code", 0)
    stdout, stderr = results.get("stdout", ""), results.get("stderr", "")
    if task.get("status") != "completed" or code != 0:
        raise JujuExecError(
            f"{command} on {unit}: task {task.get('status')}, exit {code}: "
            f"{(stderr or task.get('message', '')).strip()}",
            returncode=code,
            stdout=stdout,
            stderr=stderr,
        )
    return str(stdout)


def _select(
    run: Run,
    event: str | None,
    failed: bool,
    last: int | None,
    since: datetime | None,
    keep: Callable[[Trace], bool],
) -> list[Trace]:
    """The newest ``last`` (all when None) traces that ``keep`` keeps and that started after
    ``since``. ``dispatch traces`` filters by event and failure itself; the rest is done
    here, on windows of the newest traces (the store's order, by id, taken as the order in
    time) that grow until they hold enough, reach ``since`` or reach the oldest stored
    trace, so that polling a long-lived unit does not read its whole store every time."""
    if since is not None and since.tzinfo is None:
        raise ValueError("since must be timezone-aware, such as datetime.now(timezone.utc)")
    if last is not None and last < 1:
        raise ValueError(f"last must be at least 1 (None for all), not {last}")
    if last is None and since is None:
        return [t for t in parse_traces(run(_traces_command(event, failed, 0))) if keep(t)]
    window = max(last or 0, FIRST_WINDOW)
    while True:
        traces = parse_traces(run(_traces_command(event, failed, window)))
        chosen = [t for t in traces if keep(t) and _started_after(t, since)]
        reached_start = len(traces) < window
        reached_since = since is not None and not all(_started_after(t, since) for t in traces)
        enough = last is not None and len(chosen) >= last
        if reached_start or reached_since or enough:
            return chosen[-last:] if last else chosen
        window *= 4


def _started_after(trace: Trace, since: datetime | None) -> bool:
    """Whether ``trace`` started after ``since``, as far as its ``started_at`` can tell: it
    is cut to the millisecond, so a dispatch in the same millisecond as ``since`` counts."""
    if since is None:
        return True
    return trace.started_at >= since - timedelta(microseconds=since.microsecond % 1000)


def _nothing_came(
    run: Run,
    unit: str,
    event: str | None,
    timeout: float,
    since: datetime | None,
    failed: bool | None,
) -> str:
    """Why `wait_for_trace` gave up: what it waited for, and the unit's newest traces."""
    wanted = [f"event {event}" if event else "any event"]
    if since is not None:
        wanted.append(f"started after {since.isoformat()}")
    if failed is not None:
        wanted.append("failed" if failed else "not failed")
    newest = parse_traces(run(_traces_command(None, False, 10)))
    seen = "".join(f"\n  {t.event}  {t.started_at.isoformat()}  {t.outcome}" for t in newest)
    return (
        f"no trace on {unit} ({', '.join(wanted)}) within {timeout} s; "
        f"its newest traces: {seen or 'none'}"
    )
