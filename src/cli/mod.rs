//! Tool mode: `dispatch <command>`, run by a person (`juju ssh`, `juju exec`) or a test.
//! Juju never passes arguments, so any argument means tool mode.
//!
//! The store is found from the binary's own directory, so the commands work from any cwd.
//! Bad usage prints a clear message and exits 2; other failures exit 1.
// Tool mode prints: it is the one place in `dispatch` allowed to write to stdout.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

pub mod human;
pub mod view;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Config, CONFIG_FILE};
use crate::metadata::CharmMetadata;
use crate::ship::destination;
use crate::ship::export;
use crate::ship::Outcome;
use crate::store::{ChunkFilter, Store};
use crate::target::{self, Target};

/// One tool-mode command: how it is called, one line on what it does, and the details
/// `dispatch <command> --help` adds.
struct CommandHelp {
    name: &'static str,
    usage: &'static str,
    summary: &'static str,
    details: &'static str,
}

const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "traces",
        usage: "dispatch traces [--last N] [--event E] [--failed] [--format tree|json|otlp-json]",
        summary: "show recorded dispatches, oldest first (default: --last 10, tree)",
        details: "\
\x20 --last N        the newest N dispatches (0: all; default 10)
  --event E       only this event: `install`, `hooks/install`, `backup` (an action), or a
                  glob such as '*-relation-changed' or 'db-relation-*' (quote it)
  --failed        only dispatches whose charm failed or that were interrupted
  --format F      tree (default), json (one array, for tests and jq) or otlp-json (one OTLP/JSON
                  ExportTraceServiceRequest per line, for collectors)
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

fn usage_text() -> String {
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

fn command_help(name: &str) -> Option<String> {
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

/// Exit codes of tool mode.
const EXIT_USAGE: i32 = 2;

#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// `dispatch` run at a terminal with no arguments, outside any hook: say what it is.
pub fn not_run_by_juju() -> i32 {
    eprintln!(
        "dispatch: run without arguments, dispatch is what Juju runs for each event of the charm, \
         and runs the charm's own dispatch under a trace; outside a hook (no JUJU_* variables) \
         it does nothing. Try `dispatch status`, `dispatch traces` or `dispatch --help`."
    );
    EXIT_USAGE
}

pub fn run(args: Vec<OsString>) -> i32 {
    let args: Result<Vec<String>> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect();
    let result = args.and_then(|args| dispatch_command(&args));
    match result {
        Ok(code) => code,
        Err(error) => {
            if error.downcast_ref::<UsageError>().is_some() {
                eprintln!("dispatch: {error}\nRun `dispatch --help` for usage.");
                EXIT_USAGE
            } else {
                eprintln!("dispatch: {error:#}");
                1
            }
        }
    }
}

fn dispatch_command(args: &[String]) -> Result<i32> {
    let (command, rest) = args.split_first().ok_or_else(|| usage("no command"))?;
    let asks_help = |arg: &String| matches!(arg.as_str(), "--help" | "-h");
    match command.as_str() {
        "--help" | "-h" => {
            print(&usage_text())?;
            return Ok(0);
        }
        "help" => {
            let text = match rest.first() {
                None => usage_text(),
                Some(name) => {
                    command_help(name).ok_or_else(|| usage(format!("unknown command {name:?}")))?
                }
            };
            print(&text)?;
            return Ok(0);
        }
        "--version" | "-V" => {
            print(&format!("dispatch {}\n", env!("CARGO_PKG_VERSION")))?;
            return Ok(0);
        }
        name if rest.iter().any(asks_help) => {
            if let Some(text) = command_help(name) {
                print(&text)?;
                return Ok(0);
            }
        }
        _ => {}
    }
    let charm_dir = charm_dir()?;
    if command != "check-config" && COMMANDS.iter().any(|c| c.name == command) {
        if let Some(why) = not_a_charm(&charm_dir) {
            bail!("{why}");
        }
        // Hooks keep their traces in the default store while `store_path` names something
        // not ours; a person asking about the store is told to fix it first.
        let loaded = Config::load(&charm_dir);
        if loaded.store_path_refused && command != "status" {
            bail!("{}", loaded.problem.unwrap_or_default());
        }
        if let Some(why) = another_users_store(&store_path(&charm_dir)) {
            bail!("{why}");
        }
    }
    match command.as_str() {
        "traces" => traces(&charm_dir, rest),
        "status" => {
            no_more(command, rest)?;
            status(&charm_dir)
        }
        "set-destination" => set_destination(&charm_dir, rest),
        "clear-destination" => {
            no_more(command, rest)?;
            clear_destination(&charm_dir)
        }
        "flush" => {
            no_more(command, rest)?;
            flush(&charm_dir)
        }
        "disable" | "enable" => {
            no_more(command, rest)?;
            set_enabled(&charm_dir, command == "enable")
        }
        "check-config" => {
            no_more(command, rest)?;
            check_config(&charm_dir)
        }
        other => Err(usage(format!(
            "unknown command {other:?}{}",
            did_you_mean(other)
        ))),
    }
}

/// ` (did you mean "traces"?)` for a mistyped command or option, else nothing.
fn did_you_mean(typed: &str) -> String {
    const OPTIONS: [&str; 5] = ["--last", "--event", "--failed", "--format", "--ca-file"];
    let known = COMMANDS.iter().map(|c| c.name).chain(OPTIONS);
    match crate::config::closest(typed, known) {
        Some(word) if word != typed => format!(" (did you mean {word:?}?)"),
        _ => String::new(),
    }
}

fn no_more(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(extra) => Err(usage(format!(
            "{command} takes no arguments (got {extra:?})"
        ))),
        None => Ok(()),
    }
}

fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // A closed pipe (`dispatch traces | head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn charm_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's own path")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// Why the directory of this binary is not a charm it can work on, if it is not: a copy of
/// `dispatch` run from somewhere else (`/usr/local/bin`, a home directory) would otherwise
/// report an empty store of its own, or create one there.
fn not_a_charm(dir: &Path) -> Option<String> {
    const SIGNS: [&str; 8] = [
        "metadata.yaml",
        "charmcraft.yaml",
        target::ORIGINAL_DISPATCH,
        "hooks",
        "actions",
        CONFIG_FILE,
        crate::config::DEFAULT_STORE_FILE,
        crate::state_dir::STATE_DIR,
    ];
    if SIGNS
        .iter()
        .any(|sign| dir.join(sign).symlink_metadata().is_ok())
    {
        return None;
    }
    Some(format!(
        "{} is not a charm directory (no metadata.yaml, {} or hooks/ beside this dispatch): tool \
         mode works on the charm the binary is installed in; run that charm's dispatch, e.g. \
         /var/lib/juju/agents/unit-<app>-<n>/charm/dispatch",
        dir.display(),
        target::ORIGINAL_DISPATCH
    ))
}

/// Why this user may not work on the store, if the store belongs to another: it is the hook
/// user's alone, and another user's reads and writes would be refused piecemeal, or leave
/// files the hooks then refuse. (Files planted beside a store of ours are the hook's business:
/// it refuses them and says so.)
fn another_users_store(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::store::file::my_uid();
    let meta = path.symlink_metadata().ok()?;
    (meta.uid() != me).then(|| {
        format!(
            "{} belongs to uid {}, and this dispatch runs as uid {me}: run dispatch as the user \
             the hooks run as (root on machines), e.g. with `juju exec` or `sudo`",
            path.display(),
            meta.uid()
        )
    })
}

fn store_path(charm_dir: &Path) -> PathBuf {
    Config::load(charm_dir).config.store_file(charm_dir)
}

/// The store for a command that only reads (`status`, `traces`): `None` when no hook has
/// created it yet. Nothing is created, migrated, moved aside or repaired.
fn store_to_read(path: &Path) -> Result<Option<Store>> {
    Store::open_to_read(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The store for a command that exists to write: created if needed; a damaged one is moved
/// aside and a new one started, which the person is told.
fn store_to_write(path: &Path) -> Result<Store> {
    let mut store = Store::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in store.notes.drain(..) {
        eprintln!("dispatch: {note}");
    }
    Ok(store)
}

/// The dispatch lock, so that a command that rewrites what a dispatch reads (or ships what it
/// ships) never runs beside one.
fn hold_dispatch_lock(path: &Path) -> Result<crate::store::inflight::Inflight> {
    let lock = crate::store::inflight::Inflight::lock(path, std::time::Duration::from_secs(10), 0)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot take the dispatch lock beside {}: {e}",
                path.display()
            )
        })?;
    if !lock.holds_lock() {
        bail!("a dispatch is running and holds the store; try again");
    }
    Ok(lock)
}

/// Why no store could be created at `path`, if it could not.
fn why_not_creatable(path: &Path) -> Option<String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its directory {} does not exist", dir.display()))
        }
        Err(e) => Some(format!("{}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Some(format!("{} is not a directory", dir.display())),
        Ok(_) => nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .err()
        .map(|e| {
            format!(
                "{} is not writable by uid {} ({e})",
                dir.display(),
                crate::store::file::my_uid()
            )
        }),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Tree,
    Json,
    OtlpJson,
}

/// `--event` as people write it: `install`, `hooks/install`, `actions/backup`, or a glob
/// (`*-relation-changed`, `db-relation-*`), matched with SQLite's GLOB (case-sensitive, as
/// event names are).
fn event_glob(event: &str) -> String {
    let event = event.trim();
    event
        .strip_prefix("hooks/")
        .or_else(|| event.strip_prefix("actions/"))
        .unwrap_or(event)
        .to_string()
}

fn traces(charm_dir: &Path, args: &[String]) -> Result<i32> {
    let mut filter = ChunkFilter {
        last: Some(10),
        ..ChunkFilter::default()
    };
    let mut format = Format::Tree;
    // The filters as given, to say what matched nothing.
    let mut asked = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match flag {
            "--last" => {
                let n = value("--last")?;
                let n: usize = n
                    .parse()
                    .map_err(|_| usage(format!("--last takes a whole number, not {n:?}")))?;
                filter.last = if n == 0 { None } else { Some(n) };
            }
            "--event" => {
                let event = value("--event")?;
                if event_glob(&event).is_empty() {
                    return Err(usage("--event needs an event name or a glob"));
                }
                filter.event = Some(event_glob(&event));
                asked.push(format!("--event {event}"));
            }
            "--failed" if inline.is_none() => {
                filter.failed_only = true;
                asked.push("--failed".to_string());
            }
            "--format" => {
                format = match value("--format")?.as_str() {
                    "tree" => Format::Tree,
                    "json" => Format::Json,
                    "otlp-json" => Format::OtlpJson,
                    other => {
                        return Err(usage(format!(
                            "--format must be tree, json or otlp-json, not {other:?}"
                        )))
                    }
                }
            }
            other => {
                return Err(usage(format!(
                    "traces: unknown option {other:?}{}",
                    did_you_mean(other)
                )))
            }
        }
    }
    let path = store_path(charm_dir);
    let (chunks, stored) = match store_to_read(&path)? {
        Some(store) => {
            let chunks = store.chunks(&filter).map_err(|e| store.read_error(e))?;
            let stored = if chunks.is_empty() {
                store.stats().map_err(|e| store.read_error(e))?.chunks
            } else {
                0
            };
            (chunks, stored)
        }
        None => (Vec::new(), 0),
    };
    if chunks.is_empty() {
        // Said on stderr, so that stdout stays what the format promises (`[]` for json).
        let since = match crate::store::file::moved_aside(&path).first() {
            Some(copy) => format!(
                " since the damaged store was moved aside to {} ({})",
                copy.path.display(),
                human::utc_and_relative(copy.when, std::time::SystemTime::now())
            ),
            None => String::new(),
        };
        if stored == 0 {
            eprintln!(
                "dispatch: no traces recorded{since} (store: {})",
                path.display()
            );
        } else {
            eprintln!(
                "dispatch: no trace matches {}; {stored} stored{since}",
                asked.join(" ")
            );
        }
    }
    let text = match format {
        Format::Tree if chunks.is_empty() => String::new(),
        Format::Tree => view::tree(&chunks)?,
        Format::Json => view::json(&chunks)?,
        Format::OtlpJson => view::otlp_json(&chunks)?,
    };
    print(&text)?;
    Ok(0)
}

/// What `status` says of the store, and whether it is a problem.
fn describe_store(path: &Path, cap: u64, out: &mut String) -> (Option<Store>, bool) {
    let store = match Store::open_to_read(path) {
        Ok(Some(store)) => store,
        Ok(None) => {
            return match why_not_creatable(path) {
                None => {
                    out.push_str(&format!(
                        "store: {} (not created yet; the first hook creates it)\n",
                        path.display()
                    ));
                    (None, false)
                }
                Some(why) => {
                    out.push_str(&format!(
                        "store: {}: PROBLEM: it cannot be created: {why}\n",
                        path.display()
                    ));
                    (None, true)
                }
            };
        }
        Err(e) => {
            out.push_str(&format!("store: {}: PROBLEM: {e}\n", path.display()));
            return (None, true);
        }
    };
    match store.stats() {
        Ok(stats) => {
            out.push_str(&format!(
                "store: {} ({} on disk, {} in use, cap {})\n",
                path.display(),
                human::bytes(stats.file_bytes),
                human::bytes(stats.used_bytes.max(0) as u64),
                human::bytes(cap)
            ));
            out.push_str(&format!(
                "dispatches: {} stored ({} of traces), {} waiting to be shipped, {} shipped, {} in \
                 flight\n",
                stats.chunks,
                human::bytes(stats.trace_bytes.max(0) as u64),
                stats.pending,
                stats.shipped,
                in_flight(path)
            ));
            (Some(store), false)
        }
        Err(e) => {
            out.push_str(&format!(
                "store: {}: PROBLEM: {}\n",
                path.display(),
                store.read_error(e)
            ));
            (None, true)
        }
    }
}

fn status(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let path = loaded.config.store_file(charm_dir);
    let now = std::time::SystemTime::now();
    let mut out = String::new();
    let mut problems = 0;
    let disabled_in_store = crate::store::disabled_flag(&path).exists();
    let tracing = if !loaded.config.enabled {
        format!("disabled (enabled: false in {CONFIG_FILE})")
    } else if disabled_in_store {
        "disabled (by `dispatch disable`)".to_string()
    } else {
        "enabled".to_string()
    };
    out.push_str(&format!("tracing: {tracing}\n"));
    out.push_str(&format!(
        "config: {}\n",
        match (&loaded.problem, loaded.present) {
            (Some(problem), _) => {
                problems += 1;
                format!("PROBLEM: {problem}")
            }
            (None, true) => format!("{} (ok)", charm_dir.join(CONFIG_FILE).display()),
            (None, false) => "defaults (no dispatch-trace.yaml)".to_string(),
        }
    ));
    let (store, store_problem) = describe_store(&path, loaded.config.store_max_bytes, &mut out);
    problems += usize::from(store_problem);
    for copy in crate::store::file::moved_aside(&path) {
        out.push_str(&format!(
            "moved aside: {} ({}, {}): a damaged store, kept for a look\n",
            copy.path.display(),
            human::bytes(copy.bytes),
            human::utc_and_relative(copy.when, now)
        ));
    }
    let env = crate::ship::environment();
    let stored = match &store {
        Some(store) => stored_destination(store).map_err(|e| store.read_error(e))?,
        None => None,
    };
    let relation = store.as_ref().and_then(cached_relation);
    if let Some(answer) = &relation {
        match &answer.relation_id {
            Some(id) => out.push_str(&format!(
                "tracing relation: {id}{} ({})\n",
                if answer.relations > 1 {
                    format!(" (lowest of {} relations)", answer.relations)
                } else {
                    String::new()
                },
                match &answer.url {
                    Some(url) => format!("provider publishes {}", destination::redact_url(url)),
                    None => "no otlp_http receiver published yet".to_string(),
                }
            )),
            None => out.push_str("tracing relation: none\n"),
        }
        if answer.ca_relation {
            out.push_str(&format!(
                "certificate_transfer relation: {} CA certificate(s)\n",
                answer.ca.len()
            ));
        }
    }
    let resolved = destination::resolve(&env, &loaded.config, stored.as_ref(), relation.as_ref());
    match resolved.map(destination::usable) {
        None if destination::waits_for_ca(relation.as_ref()) => out.push_str(
            "destination: waiting for the CA certificate from the certificate_transfer relation \
             (the tracing relation's URL is https; traces are kept in the local store)\n",
        ),
        None => out.push_str("destination: none (traces are kept in the local store only)\n"),
        Some(Err(why)) => {
            problems += 1;
            out.push_str(&format!(
                "destination: PROBLEM: {why}; traces are kept in the local store\n"
            ));
        }
        Some(Ok(destination)) => {
            out.push_str(&format!(
                "destination: {} (from {}; CA: {})\n",
                destination::redact_url(&destination.url),
                destination.source.describe(),
                destination.ca.describe()
            ));
            let protocol = match destination::protocol(&env, &loaded.config) {
                crate::config::Protocol::HttpProtobuf => "http/protobuf",
                crate::config::Protocol::HttpJson => "http/json",
            };
            out.push_str(&format!("protocol: {protocol}\n"));
            if let Some(store) = &store {
                if let Some((failures, until)) = export::backoff_state(store, &destination) {
                    let until = human::from_unix_secs(until);
                    let next = if until > now {
                        format!("next try {}", human::utc_and_relative(until, now))
                    } else {
                        "the next hook tries again".to_string()
                    };
                    out.push_str(&format!(
                        "backoff: {failures} failed export(s) in a row; {next}\n"
                    ));
                }
            }
        }
    }
    if let Some((last, when)) = store
        .as_ref()
        .and_then(crate::store::settings::LastExport::load)
    {
        let when = when.map_or(String::new(), |when| {
            format!(" ({})", human::utc_and_relative(when, now))
        });
        out.push_str(&format!("last export: {last}{when}\n"));
    }
    print(&out)?;
    Ok(if problems > 0 { 1 } else { 0 })
}

/// The relations' answer cached by the last dispatch that read them.
fn cached_relation(store: &Store) -> Option<crate::relation::Answer> {
    crate::store::settings::relation_answer(store)
}

fn stored_destination(store: &Store) -> rusqlite::Result<Option<destination::Stored>> {
    crate::store::settings::destination(store)
}

fn set_destination(charm_dir: &Path, args: &[String]) -> Result<i32> {
    let mut url = None;
    let mut ca_file = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca-file" => {
                let path = args.next().ok_or_else(|| usage("--ca-file needs a path"))?;
                ca_file = Some(PathBuf::from(path));
            }
            flag if flag.starts_with("--ca-file=") => {
                ca_file = Some(PathBuf::from(&flag["--ca-file=".len()..]));
            }
            flag if flag.starts_with('-') => {
                return Err(usage(format!("set-destination: unknown option {flag:?}")))
            }
            value if url.is_none() => url = Some(value.to_string()),
            extra => {
                return Err(usage(format!(
                    "set-destination: unexpected {:?}",
                    destination::redact_url(extra)
                )))
            }
        }
    }
    let url = url.ok_or_else(|| usage("set-destination needs a URL"))?;
    let url =
        destination::parse_url(&url).map_err(|why| usage(destination::bad_url(&url, &why)))?;
    let ca_file = match ca_file {
        Some(path) => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            let pem = std::fs::read(&path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("{} holds no PEM certificate", path.display());
            }
            Some(path)
        }
        None => None,
    };
    let wanted = destination::Stored { url, ca_file };
    let path = store_path(charm_dir);
    let _lock = hold_dispatch_lock(&path)?;
    let store = store_to_write(&path)?;
    if stored_destination(&store)?.as_ref() == Some(&wanted) {
        print("destination unchanged\n")?;
    } else {
        // The old URL may hold a credential: no copy of it may stay behind.
        crate::store::settings::set_destination(&store, Some(&wanted))
            .context("storing the destination")?;
        export::reset_backoff(&store);
        print(&format!(
            "destination set to {}\n",
            destination::redact_url(&wanted.url)
        ))?;
    }
    // Say so when another source wins over what was just set.
    let loaded = Config::load(charm_dir);
    let env = crate::ship::environment();
    if let Some(winner) = destination::resolve(&env, &loaded.config, Some(&wanted), None) {
        if winner.source != destination::Source::SetDestination {
            eprintln!(
                "dispatch: note: {} takes precedence over set-destination: traces go to {} while \
                 it is set",
                winner.source.describe(),
                destination::redact_url(&winner.url)
            );
        }
    }
    Ok(0)
}

fn clear_destination(charm_dir: &Path) -> Result<i32> {
    let path = store_path(charm_dir);
    let set = match store_to_read(&path)? {
        Some(store) => stored_destination(&store)
            .map_err(|e| store.read_error(e))?
            .is_some(),
        None => false,
    };
    if !set {
        print("no destination was set\n")?;
        return Ok(0);
    }
    let _lock = hold_dispatch_lock(&path)?;
    let store = store_to_write(&path)?;
    crate::store::settings::set_destination(&store, None).context("erasing the destination")?;
    export::reset_backoff(&store);
    print("destination cleared\n")?;
    Ok(0)
}

/// Ships everything waiting, ignoring backoff; exit 1 if something could not be sent.
fn flush(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let path = loaded.config.store_file(charm_dir);
    // Flush writes (what was shipped), but it never creates a store to ship nothing from.
    if path.symlink_metadata().is_err() {
        print("nothing to ship: no traces recorded yet\n")?;
        return Ok(0);
    }
    // Not while a dispatch exports the same backlog (both would send it): wait for its lock.
    let _lock = hold_dispatch_lock(&path)?;
    let mut store = store_to_write(&path)?;
    let (destination, report) = match crate::ship::flush(&mut store, &loaded.config) {
        Outcome::Nowhere { waits_for_ca: true } => bail!(
            "not sending yet: the tracing relation's URL is https and the certificate_transfer \
             relation has not delivered its CA certificate"
        ),
        Outcome::Nowhere {
            waits_for_ca: false,
        } => bail!(
            "no destination: set one with `dispatch set-destination URL` or relate the charm to \
             a tracing provider"
        ),
        Outcome::Unusable(failure) | Outcome::NoClient(_, failure) => bail!("{}", failure.cause),
        // A flush never backs off.
        Outcome::BackingOff => bail!("the destination is backing off"),
        Outcome::Exported(destination, report) => (destination, report),
    };
    print(&format!(
        "sent {} dispatch(es) to {} in {} request(s)\n",
        report.chunks_sent,
        destination::redact_url(&destination.url),
        report.requests
    ))?;
    if let Some(failure) = report.failure {
        bail!("{}", failure.cause);
    }
    if report.out_of_budget {
        bail!("ran out of time; run `dispatch flush` again to send the rest");
    }
    Ok(0)
}

/// Dispatches recorded as started and not finished: running now, or killed and waiting for
/// the next dispatch to import them.
fn in_flight(store: &Path) -> usize {
    std::fs::read_dir(crate::store::inflight::dir_path(store)).map_or(0, |d| d.count())
}

/// `disable` leaves a flag file beside the store (one `stat` per dispatch to check).
fn set_enabled(charm_dir: &Path, enabled: bool) -> Result<i32> {
    let flag = crate::store::disabled_flag(&store_path(charm_dir));
    if enabled {
        match std::fs::remove_file(&flag) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", flag.display())),
        }
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&flag)
            .with_context(|| format!("creating {}", flag.display()))?;
    }
    let note = if enabled {
        "tracing enabled"
    } else {
        "tracing disabled: dispatches now run the charm directly, untraced"
    };
    print(&format!("{note}\n"))?;
    if enabled && !Config::load(charm_dir).config.enabled {
        eprintln!("dispatch: note: {CONFIG_FILE} still says enabled: false");
    }
    Ok(0)
}

/// Whether hooks will be able to keep their traces at `store_path`: a store of ours, or a
/// place one can be created. (An absolute path whose directory does not exist here may be
/// charm storage that exists only on the unit: a note, not a problem.)
fn check_store_path(
    charm_dir: &Path,
    config: &Config,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let path = config.store_file(charm_dir);
    match Store::open_to_read(&path) {
        Ok(Some(_)) => notes.push(format!("store: {} (a trace store)", path.display())),
        Ok(None) => match why_not_creatable(&path) {
            None => notes.push(format!(
                "store: {} (the first hook creates it)",
                path.display()
            )),
            Some(why)
                if config.store_path.as_ref().is_some_and(|p| p.is_absolute())
                    && path.parent().is_some_and(|dir| !dir.exists()) =>
            {
                notes.push(format!(
                    "store: {} ({why} here; it must exist on the unit, e.g. as charm storage)",
                    path.display()
                ))
            }
            Some(why) => problems.push(format!(
                "store_path {}: no store can be created there: {why}",
                path.display()
            )),
        },
        Err(e) => problems.push(e.to_string()),
    }
}

fn check_config(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let mut problems: Vec<String> = loaded.problem.into_iter().collect();
    let mut notes = Vec::new();
    problems.extend(not_a_charm(charm_dir));
    if let Err(problem) = CharmMetadata::load(charm_dir) {
        problems.push(problem);
    }
    let exe = std::env::current_exe().context("cannot find this binary's own path")?;
    let env = crate::juju::HookEnv::from_vars(std::iter::empty(), &OsString::from("dispatch"));
    match target::resolve(charm_dir, &loaded.config, &env, &exe, &mut problems) {
        Target::Program(program) => {
            if nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK).is_err() {
                problems.push(format!("target {} is not executable", program.display()));
            } else {
                notes.push(format!("target: {}", program.display()));
            }
        }
        Target::Itself(itself) => problems.push(itself.reason()),
        Target::Nothing if target::runs_nothing_at_all(charm_dir, &exe) => {
            problems.push(target::nothing_at_all_reason())
        }
        Target::Nothing => notes.push(format!(
            "target: none ({} missing; only hooks/<event> scripts will run)",
            target::ORIGINAL_DISPATCH
        )),
    }
    check_store_path(charm_dir, &loaded.config, &mut notes, &mut problems);
    if !charm_dir
        .join(crate::intercept::shims::SHIM_BINARY)
        .exists()
    {
        problems.push(format!(
            "{} is missing beside dispatch: hook-tool calls would not be traced",
            crate::intercept::shims::SHIM_BINARY
        ));
    }
    let mut out = String::new();
    for note in &notes {
        out.push_str(&format!("ok: {note}\n"));
    }
    for problem in &problems {
        out.push_str(&format!("PROBLEM: {problem}\n"));
    }
    if problems.is_empty() {
        out.push_str("config ok\n");
        print(&out)?;
        Ok(0)
    } else {
        print(&out)?;
        bail!("{} problem(s) found", problems.len())
    }
}
