//! Tool mode: `dispatch <command>`, run by a person (`juju ssh`, `juju exec`) or a test.
//! Juju never passes arguments, so any argument means tool mode.
//!
//! The store is found from the binary's own directory, so the commands work from any cwd.
//! Bad usage prints a clear message and exits 2; other failures exit 1.
#![allow(clippy::print_stdout)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Config, CONFIG_FILE};
use crate::destination;
use crate::export;
use crate::metadata::CharmMetadata;
use crate::store::{ChunkFilter, Store};
use crate::target::{self, Target};
use crate::view;

const USAGE: &str = "\
dispatch: a traced Juju charm dispatch.

Run by Juju without arguments, it runs the charm's original dispatch and records an
OpenTelemetry trace of the event. With arguments it is a tool:

  dispatch traces [--last N] [--event E] [--failed] [--format tree|json|otlp-json]
                          show recorded dispatches, oldest first (default: --last 10, tree)
  dispatch status         where traces are kept, where they go, and what is waiting
  dispatch set-destination URL [--ca-file F]
                          ship traces to this OTLP/HTTP traces URL (persisted)
  dispatch clear-destination
                          forget the destination set with set-destination
  dispatch flush          ship everything waiting now, ignoring any backoff
  dispatch disable        stop tracing (persisted; the charm runs exactly as without us)
  dispatch enable         trace again
  dispatch check-config   validate dispatch-trace.yaml and the charm layout (exit 1 if bad)
  dispatch --help | --version
";

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
    let charm_dir = charm_dir()?;
    match command.as_str() {
        "--help" | "-h" | "help" => {
            print(USAGE)?;
            Ok(0)
        }
        "--version" | "-V" => {
            print(&format!("dispatch {}\n", env!("CARGO_PKG_VERSION")))?;
            Ok(0)
        }
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
        other => Err(usage(format!("unknown command {other:?}"))),
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

fn store_path(charm_dir: &Path) -> PathBuf {
    Config::load(charm_dir).config.store_file(charm_dir)
}

/// Opens the store for reading commands; `None` when no dispatch has created it yet.
fn existing_store(charm_dir: &Path) -> Result<Option<Store>> {
    let path = store_path(charm_dir);
    if !path.exists() {
        return Ok(None);
    }
    Store::open(&path)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Tree,
    Json,
    OtlpJson,
}

fn traces(charm_dir: &Path, args: &[String]) -> Result<i32> {
    let mut filter = ChunkFilter {
        last: Some(10),
        ..ChunkFilter::default()
    };
    let mut format = Format::Tree;
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
            "--event" => filter.event = Some(value("--event")?),
            "--failed" if inline.is_none() => filter.failed_only = true,
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
            other => return Err(usage(format!("traces: unknown option {other:?}"))),
        }
    }
    let chunks = match existing_store(charm_dir)? {
        Some(store) => store.chunks(&filter).context("reading the trace store")?,
        None => Vec::new(),
    };
    let text = match format {
        Format::Tree if chunks.is_empty() => {
            eprintln!(
                "dispatch: no traces recorded (store: {})",
                store_path(charm_dir).display()
            );
            String::new()
        }
        Format::Tree => view::tree(&chunks)?,
        Format::Json => view::json(&chunks)?,
        Format::OtlpJson => view::otlp_json(&chunks)?,
    };
    print(&text)?;
    Ok(0)
}

fn status(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let path = loaded.config.store_file(charm_dir);
    let mut out = String::new();
    let store = existing_store(charm_dir)?;
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
            (Some(problem), _) => format!("PROBLEM: {problem}"),
            (None, true) => format!("{} (ok)", charm_dir.join(CONFIG_FILE).display()),
            (None, false) => "defaults (no dispatch-trace.yaml)".to_string(),
        }
    ));
    match &store {
        None => out.push_str(&format!("store: {} (not created yet)\n", path.display())),
        Some(store) => {
            let stats = store.stats()?;
            out.push_str(&format!(
                "store: {} ({} on disk; {} of traces, cap {})\n",
                path.display(),
                human_bytes(stats.file_bytes),
                human_bytes(stats.used_bytes.max(0) as u64),
                human_bytes(loaded.config.store_max_bytes)
            ));
            out.push_str(&format!(
                "dispatches: {} stored, {} waiting to be shipped, {} shipped, {} in flight\n",
                stats.chunks,
                stats.pending,
                stats.shipped,
                in_flight(&path)
            ));
        }
    }
    let env = crate::wrapper::export_environment();
    let stored = match &store {
        Some(store) => stored_destination(store)?,
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
                    Some(url) => format!("provider publishes {url}"),
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
    match destination::resolve(&env, &loaded.config, stored.as_ref(), relation.as_ref()) {
        None if destination::waits_for_ca(relation.as_ref()) => out.push_str(
            "destination: waiting for the CA certificate from the certificate_transfer relation \
             (the tracing relation's URL is https; traces are kept in the local store)\n",
        ),
        None => out.push_str("destination: none (traces are kept in the local store only)\n"),
        Some(destination) => {
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
                    out.push_str(&format!(
                        "backoff: {failures} failed export(s); next try after unix time {until}\n"
                    ));
                }
            }
        }
    }
    if let Some(last) = store.as_ref().and_then(export::last_result) {
        out.push_str(&format!("last export: {last}\n"));
    }
    print(&out)?;
    Ok(0)
}

/// The relations' answer cached by the last dispatch that read them.
fn cached_relation(store: &Store) -> Option<crate::relation::Answer> {
    store
        .setting(crate::relation::SETTING)
        .ok()
        .flatten()
        .and_then(|json| serde_json::from_str(&json).ok())
}

fn stored_destination(store: &Store) -> Result<Option<destination::Stored>> {
    Ok(store
        .setting(destination::SETTING)?
        .map(|text| destination::Stored::decode(&text)))
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
            extra => return Err(usage(format!("set-destination: unexpected {extra:?}"))),
        }
    }
    let url = url.ok_or_else(|| usage("set-destination needs a URL"))?;
    destination::validate_url(&url).map_err(usage)?;
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
    let store = Store::open(&store_path(charm_dir)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if stored_destination(&store)?.as_ref() == Some(&wanted) {
        print("destination unchanged\n")?;
        return Ok(0);
    }
    store.set_setting(destination::SETTING, Some(&wanted.encode()))?;
    export::reset_backoff(&store);
    print(&format!(
        "destination set to {}\n",
        destination::redact_url(&wanted.url)
    ))?;
    Ok(0)
}

fn clear_destination(charm_dir: &Path) -> Result<i32> {
    let Some(store) = existing_store(charm_dir)? else {
        print("no destination was set\n")?;
        return Ok(0);
    };
    if stored_destination(&store)?.is_none() {
        print("no destination was set\n")?;
        return Ok(0);
    }
    store.set_setting(destination::SETTING, None)?;
    export::reset_backoff(&store);
    print("destination cleared\n")?;
    Ok(0)
}

/// Ships everything waiting, ignoring backoff; exit 1 if something could not be sent.
fn flush(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let Some(mut store) = existing_store(charm_dir)? else {
        print("nothing to ship: no traces recorded yet\n")?;
        return Ok(0);
    };
    let env = crate::wrapper::export_environment();
    let stored = stored_destination(&store)?;
    let relation = cached_relation(&store);
    let Some(destination) =
        destination::resolve(&env, &loaded.config, stored.as_ref(), relation.as_ref())
    else {
        if destination::waits_for_ca(relation.as_ref()) {
            bail!("not sending yet: the tracing relation's URL is https and the certificate_transfer relation has not delivered its CA certificate");
        }
        bail!("no destination: set one with `dispatch set-destination URL` or relate the charm to a tracing provider");
    };
    // Not while a dispatch exports the same backlog (both would send it): wait for its lock.
    let _lock = crate::inflight::Inflight::lock(
        &store_path(charm_dir),
        std::time::Duration::from_secs(10),
        0,
    )
    .ok()
    .filter(crate::inflight::Inflight::holds_lock)
    .ok_or_else(|| anyhow::anyhow!("a dispatch is running and holds the store; try again"))?;
    // A person asked: whatever backoff there was is over, sent or not.
    export::reset_backoff(&store);
    let http = crate::transport::Http::new(&destination, &env)
        .map_err(|failure| anyhow::anyhow!("{}", failure.cause))?;
    // A person is waiting: give it time, but not forever.
    let budget = std::time::Duration::from_millis(loaded.config.export_budget_ms.max(10_000));
    let report = export::export(
        &mut store,
        &destination,
        destination::protocol(&env, &loaded.config),
        &http,
        budget,
        None,
        true,
    );
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

fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

/// Dispatches recorded as started and not finished: running now, or killed and waiting for
/// the next dispatch to import them.
fn in_flight(store: &Path) -> usize {
    std::fs::read_dir(crate::inflight::dir_path(store)).map_or(0, |d| d.count())
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

fn check_config(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let mut problems: Vec<String> = loaded.problem.into_iter().collect();
    let mut notes = Vec::new();
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
    if !charm_dir.join(crate::shims::SHIM_BINARY).exists() {
        problems.push(format!(
            "{} is missing beside dispatch: hook-tool calls would not be traced",
            crate::shims::SHIM_BINARY
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
