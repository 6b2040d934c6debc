//! What `dispatch --help` and `dispatch <command> --help` say: one table of the commands,
//! so that the usage text, per-command help and "did you mean" cannot disagree.

/// One tool-mode command: how it is called, one line on what it does, and the details
/// `dispatch <command> --help` adds.
pub(super) struct CommandHelp {
    pub(super) name: &'static str,
    usage: &'static str,
    summary: &'static str,
    details: &'static str,
}

pub(super) const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "traces",
        usage: "dispatch traces [--last N] [--event E] [--failed] [--since T] [--until T] \
                [--trace-id ID] [--summary | --format tree|json|otlp-json] [-v] \
                [--follow [--count N]]",
        summary: "show recorded dispatches, oldest first (default: --last 10, tree)",
        details: "\
\x20 --last N        the newest N dispatches (0: all; default 10, or all with --since, --until
                  or --trace-id)
  --event E       only this event: `install`, `hooks/install`, `backup` (an action), or a
                  glob such as '*-relation-changed' or 'db-relation-*' (quote it)
  --failed        only dispatches whose charm failed or that were interrupted
  --since T       only dispatches started at or after T: an RFC 3339 time
                  (2026-12-04T15:02:11Z) or a duration back from now (90s, 10m, 2h, 1d, 1w)
  --until T       only dispatches started at or before T (as --since)
  --trace-id ID   the dispatch with this trace id (its first hex digits are enough when
                  they are its alone)
  --summary       one line per dispatch: when, event, how long, how it ended, hook-tool
                  calls, shipped or pending, and a failed hook's exception
  --format F      tree (default), json (one array, for tests and jq) or otlp-json (one OTLP/JSON
                  ExportTraceServiceRequest per line, for collectors)
  -v, --verbose   in the tree, every span's attributes and events, and the resource
  -f, --follow    after the last N (--last 0: none), print each dispatch as it starts
                  (running) and as it is stored, until Ctrl-C (exit 130) or SIGTERM (exit 0);
                  json is one object per line. Only reads: never holds up a hook
  --count N       with --follow: exit 0 after N new dispatches
Colour only at a terminal, and not with NO_COLOR set.
Reads the store only: never creates, moves or repairs it.
",
    },
    CommandHelp {
        name: "status",
        usage: "dispatch status",
        summary: "where traces are kept, where they go, and what is waiting",
        details: "\
Shows whether tracing is on, the config file, the store (size, counts, damaged stores moved
aside), the relations, the destination with its source and CA, the backoff and the last
export. Exits 1 when something needs fixing (it says PROBLEM). Reads the store only.
",
    },
    CommandHelp {
        name: "set-destination",
        usage: "dispatch set-destination URL [--ca-file F]",
        summary: "ship traces to this OTLP/HTTP traces URL (persisted)",
        details: "\
\x20 URL             the collector's OTLP/HTTP traces URL, e.g. http://tempo:4318/v1/traces
  --ca-file F     a PEM bundle to verify an https URL with (default: the system trust store)
The environment's OTEL_EXPORTER_OTLP_*ENDPOINT and `endpoint` in dispatch-trace.yaml take
precedence over it; the tracing relation and Juju's trace config come after it.
",
    },
    CommandHelp {
        name: "clear-destination",
        usage: "dispatch clear-destination",
        summary: "forget the destination set with set-destination",
        details: "The URL (and any credential in it) is erased from the store's files.\n",
    },
    CommandHelp {
        name: "flush",
        usage: "dispatch flush",
        summary: "ship everything waiting now, ignoring any backoff",
        details: "Exits 1, with the cause, if something could not be sent.\n",
    },
    CommandHelp {
        name: "disable",
        usage: "dispatch disable",
        summary: "stop tracing (persisted; the charm runs exactly as without us)",
        details: "Undo with `dispatch enable`.\n",
    },
    CommandHelp {
        name: "enable",
        usage: "dispatch enable",
        summary: "trace again",
        details: "Undoes `dispatch disable` (not `enabled: false` in dispatch-trace.yaml).\n",
    },
    CommandHelp {
        name: "check-config",
        usage: "dispatch check-config",
        summary: "validate dispatch-trace.yaml and the charm layout (exit 1 if bad)",
        details: "\
Checks the config file, the charm's metadata, what a hook would run, the shim beside dispatch
and the store path. Changes nothing. charmcraft-part.yaml runs it at pack time.
",
    },
];

pub(super) fn usage_text() -> String {
    let mut text = String::from(
        "dispatch: a traced Juju charm dispatch.\n\n\
         Run by Juju without arguments, it runs the charm's original dispatch and records an\n\
         OpenTelemetry trace of the event. With arguments it is a tool:\n\n",
    );
    for command in COMMANDS {
        text.push_str(&format!("  {}\n", command.usage));
        text.push_str(&format!("      {}\n", command.summary));
    }
    text.push_str("  dispatch --help | --version\n\n");
    text.push_str("`dispatch <command> --help` tells more about one command.\n");
    text
}

pub(super) fn command_help(name: &str) -> Option<String> {
    let command = COMMANDS.iter().find(|c| c.name == name)?;
    Some(format!(
        "usage: {}\n\n{}.\n\n{}",
        command.usage,
        capitalized(command.summary),
        command.details
    ))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
