"""``Trace.tree()`` against ``dispatch traces --format tree``, byte for byte, on dispatches that
take every path of the CLI's view: tool calls with redacted and hidden arguments, a failure
with the exception ops logged, a stderr tail, a kill after a second (written in seconds), a
skip, and the charm's own spans (nested, several events, an error with a long exception, a
CLIENT span with a float exit code and a stderr tail, a span of another trace)."""

from __future__ import annotations

import sys
from pathlib import Path

from dispatch_trace import parse_traces
from harness import LOG_TRACEBACK, OPS_TRACEBACK, Unit

CUSTOM_SPANS = Path(__file__).with_name("custom_spans.py")


def test_every_dispatch_block_is_the_clis_byte_for_byte(unit: Unit) -> None:
    unit.dispatch("install", CHARM_RUN="status-set active ready; leader-set token=s3cret")
    long_traceback = OPS_TRACEBACK.replace("'port'", "'port'  \u00e9\t" + "x" * 300)
    unit.dispatch(
        "config-changed",
        CHARM_RUN=f"{LOG_TRACEBACK}; juju-log hello",
        TRACEBACK=long_traceback,
        CHARM_EXIT="1",
    )
    (unit.charm / "dispatch-trace.yaml").write_text("stderr_tail: 4096\n")
    unit.dispatch("db-relation-changed", CHARM_STDERR="oops\nfatal: disk full\n\n", CHARM_EXIT="2")
    unit.dispatch("stop", CHARM_KILL="TERM", CHARM_SLEEP="1.05")
    unit.dispatch("start", CHARM_RUN=f"{sys.executable} {CUSTOM_SPANS}")
    (unit.charm / "dispatch.orig").rename(unit.charm / "charm-elsewhere")
    unit.dispatch("update-status")

    traces = parse_traces(unit.traces_cli("--last", "0", "--format", "json"))
    cli = unit.traces_cli("--last", "0", "--format", "tree")

    blocks = [f"{block}\n\n" for block in cli.removesuffix("\n\n").split("\n\n")]
    assert [t.event for t in traces] == [
        "install",
        "config-changed",
        "db-relation-changed",
        "stop",
        "start",
        "update-status",
    ]
    assert len(blocks) == len(traces)
    for trace, block in zip(traces, blocks):
        assert trace.tree() == block
    # What each case put in the tree, so that the comparison above covers it.
    assert "leader-set token=<redacted>" in blocks[0]
    assert "exception: KeyError: 'port' é x" in blocks[1] and "…" in blocks[1]
    assert "stderr: fatal: disk full" in blocks[2]
    assert "ERROR killed by SIGTERM" in blocks[3]
    assert "\n  stop  1.0" in blocks[3] and " s  ERROR killed" in blocks[3]
    assert "check --fast db  2.50 ms  exit 1\n" in blocks[4]
    assert "reconcile  10.12 ms" in blocks[4] and "render  0.38 ms" in blocks[4]
    assert "(trace " in blocks[4] and "2 events" in blocks[4]
    assert "skipped: no target for update-status" in blocks[5]
