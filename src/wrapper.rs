//! Hook mode: what `dispatch` does when Juju runs it (no arguments).
//!
//! Order of work, and why:
//! 1. Decide whether to trace at all (`OPERATOR_DISPATCH`, a nested dispatch,
//!    `OTEL_SDK_DISABLED`, `enabled: false`, `dispatch disable`): if not, exec the target so
//!    nothing of ours stays in the process tree. Whatever the mode, never run a target that is
//!    this program, nor anything once dispatches nest `MAX_EXEC_DEPTH` deep (README "What
//!    runs"): either would spin forever.
//! 2. Before the spawn, only what must precede the child: the dispatch lock and the started
//!    record (`inflight`), the hook-tool shims, the record channel and the custom-span
//!    listener (`loopback`; bound on the reader's thread while this one goes on, since the
//!    child's environment needs its port). Any failure here is a problem to report, never a
//!    reason not to run the charm.
//! 3. While the child runs (it has the other core): open the store and import the records of
//!    killed wrappers, off the hook's critical path; drain tool records and answer the
//!    charm's own spans on the same thread.
//! 4. After the child: build the trace (custom spans included), store it in one
//!    transaction, mirror the child's end.
//!    After the spawn our problems are warnings: everything runs inside `catch_unwind` and
//!    cannot change the exit, the output or the signal the hook ends with.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dispatch_shim::child;
use dispatch_shim::{changes_state, ENV_CHANNEL, ENV_LOG_TEXT, ENV_NONCE, ENV_TOOLS_DIR};
use opentelemetry::KeyValue;

use crate::channel::{self, Channel, Collected, Reader};
use crate::config::{Config, TraceContextMode};
use crate::destination;
use crate::export;
use crate::inflight::{self, Inflight, OrphanScan, Started};
use crate::juju::{EventKind, HookEnv};
use crate::metadata::CharmMetadata;
use crate::operator::{self, Operator, Problem};
use crate::relation;
use crate::shims;
use crate::spans::{self, DispatchIds, RootFacts, TraceBuilder};
use crate::state_dir;
use crate::store::{self, NewChunk, Priority, Store};
use crate::supervise::{self, ChildEnd, ChildRun, InheritedSignals, Launch};
use crate::target::{self, Target, ENV_EXEC_DEPTH, MAX_EXEC_DEPTH, REFUSED_EXIT};
use crate::transport::Http;

/// How long a dispatch waits for the dispatch lock (held by a concurrent `flush`).
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// The last panic message from tracing code, so it can be reported on the trace.
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

pub fn run(argv0: OsString, inherited: InheritedSignals) -> ChildEnd {
    let start = SystemTime::now();
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            *slot = Some(info.to_string().replace('\n', " "));
        }
    }));
    let plan = catch_unwind(AssertUnwindSafe(|| plan(&argv0, start)));
    let plan = match plan {
        Ok(plan) => plan,
        Err(_) => return ChildEnd::Exited(fallback_exec(&argv0, &inherited)),
    };
    match plan {
        Plan::Refuse { reason, env } => ChildEnd::Exited(refuse(&reason, &env)),
        Plan::Passthrough {
            target,
            env,
            nothing_at_all,
        } => {
            if let Some(charm_dir) = nothing_at_all {
                warn_nothing_at_all(&charm_dir, &env);
            }
            ChildEnd::Exited(passthrough(&target, &argv0, &env, &inherited))
        }
        Plan::Trace(prepared) => traced(*prepared, &argv0, &inherited),
    }
}

enum Plan {
    /// Run nothing, exit `REFUSED_EXIT` with this reason: dispatches nested too deep.
    Refuse {
        reason: String,
        env: HookEnv,
    },
    Passthrough {
        target: Target,
        env: HookEnv,
        /// The charm dir, when the charm has nothing to run for any event.
        nothing_at_all: Option<PathBuf>,
    },
    Trace(Box<Prepared>),
}

struct Prepared {
    charm_dir: PathBuf,
    config: Config,
    env: HookEnv,
    target: Target,
    problems: Vec<Problem>,
    state_dir: Option<PathBuf>,
    store_path: PathBuf,
    /// Opened while the child runs (or after, when there was no child to overlap with).
    store: Option<Store>,
    store_tried: bool,
    store_newer: bool,
    stored_destination: Option<destination::Stored>,
    endpoints: relation::Endpoints,
    /// Juju's real hook-tool directory, when found.
    tools_dir: Option<PathBuf>,
    /// The relations' answer: discovered in this dispatch, or cached in the store.
    relation: Option<relation::Answer>,
    relation_discovered: bool,
    inflight: Option<Inflight>,
    start: SystemTime,
}

fn locate_charm_dir(argv0: &OsString) -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe()
        .or_else(|_| std::fs::canonicalize(argv0))
        .unwrap_or_else(|_| PathBuf::from(argv0));
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    (exe, dir)
}

fn plan(argv0: &OsString, start: SystemTime) -> Plan {
    let env = HookEnv::from_vars(std::env::vars_os(), argv0);
    let depth = exec_depth();
    if depth >= MAX_EXEC_DEPTH {
        return Plan::Refuse {
            reason: format!(
                "the charm's own entrypoint is missing: what dispatch runs starts dispatch \
                 again ({ENV_EXEC_DEPTH}={depth} nested dispatches), so nothing was run; put \
                 the charm's original dispatch back as {}",
                target::ORIGINAL_DISPATCH
            ),
            env,
        };
    }
    let (exe, charm_dir) = locate_charm_dir(argv0);
    let loaded = Config::load(&charm_dir);
    let mut said: Vec<String> = loaded.problem.into_iter().collect();
    let target = target::resolve(&charm_dir, &loaded.config, &env, &exe, &mut said);
    let mut problems: Vec<Problem> = said.into_iter().map(Problem::from).collect();
    // Only a charm with no target for this event pays for looking at the others.
    let nothing_at_all = target == Target::Nothing && target::runs_nothing_at_all(&charm_dir, &exe);
    match &target {
        // First in the line: it is why the hook fails.
        Target::Itself(itself) => problems.insert(0, itself.reason().into()),
        Target::Nothing if nothing_at_all => problems.push(target::nothing_at_all_reason().into()),
        _ => {}
    }

    let sdk_disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let nested =
        std::env::var_os("OPERATOR_DISPATCH").is_some() || std::env::var_os(ENV_NONCE).is_some();
    let untraced = |target, env| Plan::Passthrough {
        target,
        env,
        nothing_at_all: nothing_at_all.then(|| charm_dir.clone()),
    };
    if nested || sdk_disabled || !loaded.config.enabled {
        return untraced(target, env);
    }

    let state_dir = state_dir::path(&charm_dir);
    let state_dir = match state_dir::ensure_private_dir(&state_dir) {
        Ok(()) => Some(state_dir),
        Err(e) => {
            problems.push(
                format!(
                    "cannot use {}: {e}; hook tools are not traced",
                    state_dir.display()
                )
                .into(),
            );
            None
        }
    };
    let store_path = loaded.config.store_file(&charm_dir);
    if store::disabled_flag(&store_path).exists() {
        return untraced(target, env);
    }
    Plan::Trace(Box::new(Prepared {
        charm_dir,
        config: loaded.config,
        env,
        target,
        problems,
        state_dir,
        store_path,
        store: None,
        store_tried: false,
        store_newer: false,
        stored_destination: None,
        endpoints: relation::Endpoints::default(),
        tools_dir: None,
        relation: None,
        relation_discovered: false,
        inflight: None,
        start,
    }))
}

/// Exec the target with nothing of ours around it (pass-through modes).
fn passthrough(
    target: &Target,
    argv0: &OsString,
    env: &HookEnv,
    inherited: &InheritedSignals,
) -> i32 {
    match target {
        Target::Nothing => 0,
        Target::Itself(itself) => refuse(&itself.reason(), env),
        Target::Program(program) => {
            if env.dispatch_path_derived {
                std::env::set_var("JUJU_DISPATCH_PATH", &env.dispatch_path);
            }
            std::env::set_var(ENV_EXEC_DEPTH, child_exec_depth());
            let error = supervise::exec(program, argv0, inherited);
            if env.event_kind() != EventKind::Action {
                eprintln!("dispatch: cannot run {}: {error}", program.display());
            }
            child::exec_failure_code(error.raw_os_error())
        }
    }
}

/// Runs nothing and fails the hook, saying why (every time: each failed hook must explain
/// itself in the log), except during actions (DESIGN §2).
fn refuse(reason: &str, env: &HookEnv) -> i32 {
    if env.event_kind() != EventKind::Action {
        eprintln!("dispatch: {reason}");
    }
    REFUSED_EXIT
}

/// An untraced charm with nothing to run for any event still earns its one line (repeats
/// suppressed like any other), so a broken install shows even with tracing off.
fn warn_nothing_at_all(charm_dir: &Path, env: &HookEnv) {
    let state_dir = state_dir::path(charm_dir);
    let memory = state_dir::ensure_private_dir(&state_dir)
        .ok()
        .map(|()| state_dir.join(operator::LAST_WARNING));
    let silent = env.event_kind() == EventKind::Action;
    Operator::new(memory.as_deref(), silent).report(&[target::nothing_at_all_reason().into()]);
}

/// How many dispatches run this one, one inside the other (`ENV_EXEC_DEPTH`).
fn exec_depth() -> u32 {
    std::env::var(ENV_EXEC_DEPTH)
        .ok()
        .and_then(|depth| depth.trim().parse().ok())
        .unwrap_or(0)
}

/// The depth the child of this dispatch gets.
fn child_exec_depth() -> String {
    exec_depth().saturating_add(1).to_string()
}

/// Last resort when planning itself failed: run `dispatch.orig` beside us, untraced.
fn fallback_exec(argv0: &OsString, inherited: &InheritedSignals) -> i32 {
    let (_, charm_dir) = locate_charm_dir(argv0);
    let original = charm_dir.join(target::ORIGINAL_DISPATCH);
    let in_action = std::env::var_os("JUJU_ACTION_NAME").is_some();
    if !in_action {
        eprintln!("dispatch: internal error while preparing the trace; running the charm untraced");
    }
    std::env::set_var(ENV_EXEC_DEPTH, child_exec_depth());
    let error = supervise::exec(&original, argv0, inherited);
    if !in_action {
        eprintln!("dispatch: cannot run {}: {error}", original.display());
    }
    child::exec_failure_code(error.raw_os_error())
}

/// What was set up before the spawn and is finished after it.
struct Tracing {
    builder: TraceBuilder,
    facts: RootFacts,
    reader: Option<Reader<OpenedStore>>,
    /// The wrapper's own hook-tool calls (relation publishing and discovery), before and
    /// after the charm: one allowance of time and one record list for the whole dispatch.
    own_tools: Option<HookTools>,
}

fn traced(mut prepared: Prepared, argv0: &OsString, inherited: &InheritedSignals) -> ChildEnd {
    // Signals are blocked before any thread exists, so only our sigwait sees them.
    supervise::block_signals();
    let setup = catch_unwind(AssertUnwindSafe(|| set_up(&mut prepared)));
    let (mut tracing, mut env_changes) = match setup {
        Ok(ready) => ready,
        Err(_) => {
            prepared
                .problems
                .push(panic_problem("preparing the trace").into());
            (None, Vec::new())
        }
    };
    env_changes.push((ENV_EXEC_DEPTH.into(), child_exec_depth().into()));

    let run = match prepared.target.clone() {
        Target::Nothing | Target::Itself(_) => None,
        Target::Program(program) => {
            let launch = Launch {
                program: &program,
                argv0,
                env_changes,
            };
            // The record reader opens the store on its thread; without one, do it here.
            let reader_opens = tracing.as_ref().is_some_and(|t| t.reader.is_some());
            let mut while_running = || {
                if !reader_opens {
                    let _ = catch_unwind(AssertUnwindSafe(|| open_store(&mut prepared)));
                }
            };
            match supervise::run(&launch, inherited, &mut while_running) {
                Ok(run) => Some(run),
                Err(unavailable) => {
                    // Could not fork at all: the charm must still run, so become it.
                    prepared.problems.push(
                        format!(
                            "cannot start the charm under the wrapper ({}); ran it untraced",
                            unavailable.0
                        )
                        .into(),
                    );
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        finish(&mut prepared, tracing.take(), None)
                    }));
                    let code = passthrough(&prepared.target, argv0, &prepared.env, inherited);
                    return ChildEnd::Exited(code);
                }
            }
        }
    };

    let finished = catch_unwind(AssertUnwindSafe(|| {
        finish(&mut prepared, tracing, run.as_ref())
    }));
    if finished.is_err() {
        prepared
            .problems
            .push(panic_problem("recording the trace").into());
        let _ = catch_unwind(AssertUnwindSafe(|| report(&prepared)));
    }
    match (run, &prepared.target) {
        (Some(run), _) => run.end,
        (None, Target::Itself(_)) => ChildEnd::Exited(REFUSED_EXIT),
        (None, _) => ChildEnd::Exited(0),
    }
}

fn panic_problem(phase: &str) -> String {
    let message = PANIC_MESSAGE
        .lock()
        .ok()
        .and_then(|mut m| m.take())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error while {phase} ({message}); the charm's run was not affected")
}

fn set_up(prepared: &mut Prepared) -> (Option<Tracing>, Vec<(OsString, OsString)>) {
    let env = prepared.env.clone();
    let env = &env;

    // First the lock and the record reader: the reader opens the store on its thread, and
    // the sooner it starts, the more of that overlaps with the rest of the setup and the child.
    let started_at = spans::time_to_unix_nanos(prepared.start) as i64;
    match Inflight::lock(&prepared.store_path, LOCK_WAIT, started_at) {
        Ok(inflight) => prepared.inflight = Some(inflight),
        Err(e) => prepared.problems.push(
            format!(
                "cannot take the dispatch lock beside {}: {e}",
                prepared.store_path.display()
            )
            .into(),
        ),
    }
    let nonce = spans::new_nonce();
    let mut env_changes: Vec<(OsString, OsString)> = Vec::new();
    let mut reader = None;
    let mut tools_dir: Option<PathBuf> = None;
    let program = matches!(prepared.target, Target::Program(_));
    let interception = match (&prepared.state_dir, program) {
        (Some(state_dir), true) => {
            intercept(&prepared.charm_dir, state_dir).unwrap_or_else(|problem| {
                prepared.problems.push(problem.into());
                None
            })
        }
        _ => None,
    };
    // The listener for the charm's own spans (README, *Your own spans*), opened on the reader's thread.
    let listen = program && prepared.config.custom_spans;
    if interception.is_some() || listen {
        let store_path = prepared.store_path.clone();
        let scan = prepared.inflight.as_ref().map(Inflight::orphan_scan);
        let max_bytes = prepared.config.store_max_bytes;
        let open_early = move || open_store_at(&store_path, scan.as_ref(), max_bytes);
        let (channel, interception) = match interception {
            Some(interception) => {
                let env = interception.env(&nonce, prepared.config.record_log_messages);
                (
                    Some(interception.channel),
                    Some((env, interception.tools_dir)),
                )
            }
            None => (None, None),
        };
        match channel::start_reader(channel, listen, nonce.clone(), open_early) {
            Ok(started) => {
                reader = Some(started);
                if let Some((env, tools)) = interception {
                    env_changes.extend(env);
                    tools_dir = Some(tools);
                }
            }
            Err(e) => prepared
                .problems
                .push(format!("cannot start the record reader: {e}").into()),
        }
    }
    if !env_changes.iter().any(|(key, _)| key == ENV_NONCE) {
        // Still marks the environment as inside a traced dispatch, so a nested dispatch
        // (a charm running `hooks/<event>` itself) is not traced a second time.
        env_changes.push((ENV_NONCE.into(), nonce.into()));
    }

    let metadata = match CharmMetadata::load(&prepared.charm_dir) {
        Ok(meta) => meta,
        Err(problem) => {
            prepared.problems.push(problem.into());
            None
        }
    };
    let charm_name = metadata.as_ref().and_then(|m| m.name.clone());
    prepared.endpoints = relation::Endpoints::find(metadata.as_ref(), &prepared.config);
    let incoming = spans::incoming_context(env);
    let continued = incoming.is_some()
        && (prepared.config.juju_trace_context == TraceContextMode::Continue
            || ships_to_juju_collector(prepared));
    let ids = DispatchIds::new(if continued { incoming.as_ref() } else { None });
    let builder = TraceBuilder::new(
        ids,
        env,
        charm_name.as_deref(),
        prepared.config.service_name.as_deref(),
    );
    let mut facts = RootFacts {
        start: Some(prepared.start),
        target: match &prepared.target {
            Target::Program(p) => Some(p.display().to_string()),
            Target::Itself(itself) => Some(itself.path.display().to_string()),
            Target::Nothing => None,
        },
        skipped: (prepared.target == Target::Nothing)
            .then(|| format!("no target for {}", env.event_name())),
        incoming,
        continued,
        ..RootFacts::default()
    };
    env_changes.push(("TRACEPARENT".into(), ids.child_traceparent().into()));
    if env.dispatch_path_derived {
        env_changes.push((
            "JUJU_DISPATCH_PATH".into(),
            env.dispatch_path.clone().into(),
        ));
    }

    // The started record: written before the child runs, so a wrapper killed from here on
    // still leaves a trace.
    let provisional = builder.encode(vec![builder.root_span(
        &facts,
        prepared.start,
        Some(
            "dispatch interrupted: the wrapper was killed before the charm's run was recorded"
                .into(),
        ),
        vec![KeyValue::new("dispatch.interrupted", true)],
    )]);
    let trace_id = ids.trace_id.to_string();
    let started = Started {
        started_at,
        trace_id: &trace_id,
        event: env.event_name(),
        provisional: &provisional,
    };
    if let Some(inflight) = prepared.inflight.as_mut() {
        if let Err(e) = inflight.record(&started) {
            prepared.problems.push(
                format!(
                    "cannot record the dispatch as started beside {}: {e}",
                    prepared.store_path.display()
                )
                .into(),
            );
        }
    }
    // The relations, on the events that can change them: read (and, as leader, our side
    // published) before the charm runs, so its own writes come later and win.
    prepared.tools_dir = tools_dir.clone();
    let mut own_tools = None;
    if let Some(tools_dir) = &tools_dir {
        let trigger = relation::event_can_change_answer(
            env.event_name(),
            env.get("JUJU_RELATION"),
            &prepared.endpoints,
        );
        if trigger {
            let root = format!("00-{}-{}-01", ids.trace_id, ids.root_span_id);
            let tools = own_tools.insert(HookTools::new(tools_dir, root));
            let broken = broken_relation(env);
            if prepared.config.publish_requirer_data {
                if let Some(app) = env.application_name() {
                    relation::publish(tools, &prepared.endpoints, app, broken.as_deref());
                }
            }
            if let Some(answer) = relation::discover(tools, &prepared.endpoints, broken.as_deref())
            {
                prepared.relation = Some(answer);
                prepared.relation_discovered = true;
            }
        }
    }
    // Asked for last, so that the reader's thread has long since bound it: the bind stays off
    // the hook's critical path. Failing to bind is nothing the operator can act on: it goes
    // on the root span, not to stderr.
    match reader.as_mut().and_then(Reader::endpoint) {
        Some(Ok(endpoint)) => env_changes.extend(custom_span_env(&endpoint)),
        Some(Err(e)) => {
            facts.custom_spans_error =
                Some(format!("cannot listen on 127.0.0.1 for custom spans: {e}"))
        }
        None => {}
    }
    facts.problems = operator::texts(&prepared.problems);
    (
        Some(Tracing {
            builder,
            facts,
            reader,
            own_tools,
        }),
        env_changes,
    )
}

/// Opens the store (while the child runs) and imports the started records of wrappers that
/// were killed. Problems are reported, never fatal.
fn open_store(prepared: &mut Prepared) {
    if prepared.store_tried {
        return;
    }
    prepared.store_tried = true;
    let scan = prepared.inflight.as_ref().map(Inflight::orphan_scan);
    let opened = open_store_at(
        &prepared.store_path,
        scan.as_ref(),
        prepared.config.store_max_bytes,
    );
    prepared.store = opened.store;
    prepared.store_newer = opened.newer_schema;
    prepared.stored_destination = opened.stored_destination;
    if !prepared.relation_discovered {
        prepared.relation = opened.relation;
    }
    prepared.problems.extend(opened.problems);
}

/// The store, opened and tidied (WAL kept short, orphans of killed wrappers imported), with
/// what went wrong on the way. Runs on the record reader's thread while the child runs.
struct OpenedStore {
    store: Option<Store>,
    problems: Vec<Problem>,
    /// The store belongs to a newer dispatch: nothing is kept for it.
    newer_schema: bool,
    /// What `dispatch set-destination` stored, read while the child runs.
    stored_destination: Option<destination::Stored>,
    /// The relations' cached answer.
    relation: Option<relation::Answer>,
}

fn open_store_at(path: &Path, scan: Option<&OrphanScan>, max_bytes: u64) -> OpenedStore {
    let mut problems: Vec<Problem> = Vec::new();
    let mut store = match Store::open(path) {
        Ok(store) => store,
        Err(e) => {
            problems.push(e.to_string().into());
            return OpenedStore {
                store: None,
                problems,
                newer_schema: matches!(e, store::OpenError::NewerSchema { .. }),
                stored_destination: None,
                relation: None,
            };
        }
    };
    problems.extend(store_notes(&mut store));
    let stored_destination = store
        .setting(destination::SETTING)
        .ok()
        .flatten()
        .map(|text| destination::Stored::decode(&text));
    let relation = store
        .setting(relation::SETTING)
        .ok()
        .flatten()
        .and_then(|json| serde_json::from_str(&json).ok());
    if let Err(e) = store.maintain() {
        problems.push(
            format!(
                "cannot checkpoint the trace store {}: {e}",
                store.path().display()
            )
            .into(),
        );
    }
    let orphans = scan.map(OrphanScan::orphans).unwrap_or_default();
    if orphans.is_empty() {
        return OpenedStore {
            store: Some(store),
            problems,
            newer_schema: false,
            stored_destination,
            relation,
        };
    }
    let (paths, chunks): (Vec<PathBuf>, Vec<NewChunk>) = orphans.into_iter().unzip();
    let mut store = store;
    match store.import_started(&chunks, max_bytes) {
        Ok(_) => inflight::forget(&paths),
        Err(e) => problems.push(
            format!(
                "cannot import interrupted dispatches into {}: {e}",
                store.path().display()
            )
            .into(),
        ),
    }
    OpenedStore {
        store: Some(store),
        problems,
        newer_schema: false,
        stored_destination,
        relation,
    }
}

/// Adds chunks; a store found damaged only now (a write fails "malformed") is moved aside and
/// replaced once. Returns the store to go on with (if any) and the id of the last chunk added
/// (`None`: not added).
/// The store to write this dispatch's trace into: the one opened while the charm ran, or,
/// if its path was deleted or replaced meanwhile (an operator resetting it, a backup put
/// back), whatever the path names now, so the trace is not written into a file that is gone.
fn at_its_path(store: Store, prepared: &mut Prepared) -> Option<Store> {
    if !store.moved_away() {
        return Some(store);
    }
    drop(store);
    match Store::open(&prepared.store_path) {
        Ok(mut fresh) => {
            prepared.problems.extend(store_notes(&mut fresh));
            Some(fresh)
        }
        Err(e) => {
            prepared.problems.push(e.to_string().into());
            None
        }
    }
}

fn add_with_recovery(
    store: Store,
    chunks: &[NewChunk],
    max_bytes: u64,
    problems: &mut Vec<Problem>,
) -> (Option<Store>, Option<i64>) {
    let cannot = |path: &Path, e: &rusqlite::Error| {
        format!("cannot store the trace in {}: {e}", path.display())
    };
    let mut store = store;
    match store.add_chunks_returning_last(chunks, max_bytes) {
        Ok((_, last)) => (Some(store), last),
        Err(e) if store::is_corruption(&e) => match store.quarantine_and_reopen(&e) {
            Ok(mut fresh) => {
                problems.extend(store_notes(&mut fresh));
                match fresh.add_chunks_returning_last(chunks, max_bytes) {
                    Ok((_, last)) => (Some(fresh), last),
                    Err(e) => {
                        problems.push(cannot(fresh.path(), &e).into());
                        (None, None)
                    }
                }
            }
            Err(open) => {
                problems.push(open.to_string().into());
                (None, None)
            }
        },
        Err(e) => {
            problems.push(cannot(store.path(), &e).into());
            (Some(store), None)
        }
    }
}

/// What the store has to tell the operator after opening (a damaged store moved aside). A
/// store damaged again and again is the same problem every time, whatever the copy is called.
fn store_notes(store: &mut Store) -> Vec<Problem> {
    store
        .notes
        .drain(..)
        .map(|note| Problem::of_kind("store-moved-aside", note))
        .collect()
}

/// Whether traces go to Juju's own collector (`JUJU_CHARM_TRACE_CONFIG_HTTP`), where Juju's
/// spans are too: then the dispatch continues Juju's trace instead of linking to it (DESIGN
/// §4). Only asked when Juju sent both a context and a trace config (Juju 4), so only then is
/// the store peeked at before the child, for a destination that would take precedence.
fn ships_to_juju_collector(prepared: &Prepared) -> bool {
    if prepared.env.get("JUJU_CHARM_TRACE_CONFIG_HTTP").is_none() {
        return false;
    }
    let (stored, relation) = match Store::open_to_read(&prepared.store_path) {
        Ok(Some(store)) => (
            store
                .setting(destination::SETTING)
                .ok()
                .flatten()
                .map(|text| destination::Stored::decode(&text)),
            store
                .setting(relation::SETTING)
                .ok()
                .flatten()
                .and_then(|json| serde_json::from_str::<relation::Answer>(&json).ok()),
        ),
        _ => (None, None),
    };
    destination::resolve(
        &export_environment(),
        &prepared.config,
        stored.as_ref(),
        relation.as_ref(),
    )
    .is_some_and(|d| d.source == destination::Source::JujuTraceConfig)
}

/// The relation being broken in a `<endpoint>-relation-broken` event: gone, not to be read.
fn broken_relation(env: &HookEnv) -> Option<String> {
    env.event_name()
        .ends_with("-relation-broken")
        .then(|| env.get("JUJU_RELATION_ID").map(String::from))
        .flatten()
}

/// Runs Juju's real hook tools for the wrapper's own calls, and records each like a shim
/// would (redacted), so they appear in the trace under the root span.
struct HookTools {
    tools_dir: PathBuf,
    traceparent: String,
    records: Vec<dispatch_shim::Record>,
    spent: Duration,
    /// `relation-ids` answers, failures included (`None`): relation ids do not change within
    /// a hook, publishing and discovering (before and after the charm) all need them, and a
    /// tool that failed or timed out once would only cost the hook again.
    relation_ids: Vec<(String, Option<Vec<u8>>)>,
}

impl HookTools {
    fn new(tools_dir: &Path, traceparent: String) -> HookTools {
        HookTools {
            tools_dir: tools_dir.to_path_buf(),
            traceparent,
            records: Vec::new(),
            spent: Duration::ZERO,
            relation_ids: Vec::new(),
        }
    }
}

impl relation::Tools for HookTools {
    fn run(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
        if tool != "relation-ids" {
            return self.run_traced(tool, args);
        }
        let question = args.join(" ");
        if let Some((_, known)) = self.relation_ids.iter().find(|(q, _)| *q == question) {
            return known.clone();
        }
        let stdout = self.run_traced(tool, args);
        self.relation_ids.push((question, stdout.clone()));
        stdout
    }
}

impl HookTools {
    /// Runs a tool within what is left of `OWN_CALLS_BUDGET`, recording it as a tool span.
    fn run_traced(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
        let start = spans::time_to_unix_nanos(SystemTime::now());
        let left = OWN_CALLS_BUDGET.saturating_sub(self.spent);
        let begun = Instant::now();
        let outcome = if left.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            run_bounded(&self.tools_dir.join(tool), args, left)
        };
        self.spent += begun.elapsed();
        let end = spans::time_to_unix_nanos(SystemTime::now());
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let summary = dispatch_shim::summarize_args(tool, &raw, false);
        let (call_end, stdout) = match outcome {
            Ok((status, stdout)) => match status.code() {
                Some(code) => (
                    dispatch_shim::CallEnd::Exited(code),
                    (code == 0).then_some(stdout),
                ),
                None => (
                    dispatch_shim::CallEnd::Signaled(
                        std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
                    ),
                    None,
                ),
            },
            Err(e) => (
                dispatch_shim::CallEnd::SpawnFailed(e.raw_os_error().unwrap_or(libc::ETIMEDOUT)),
                None,
            ),
        };
        self.records.push(dispatch_shim::Record {
            nonce: String::new(),
            tool: tool.to_string(),
            pid: 0,
            start_unix_nanos: start,
            end_unix_nanos: end,
            end: call_end,
            traceparent: self.traceparent.clone(),
            log_level: summary.log_level,
            log_length: summary.log_length,
            log_text: String::new(),
            arg_count: args.len(),
            args: summary.args,
        });
        stdout
    }
}

/// All of the wrapper's own hook-tool calls in one dispatch share this much time: a hook tool
/// that hangs (an agent in trouble) must not hold the hook up on our account.
const OWN_CALLS_BUDGET: Duration = Duration::from_secs(5);

/// Runs a tool with its stdout captured, killing it if it outlives `limit`.
fn run_bounded(
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>)> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Read on a thread so a large answer cannot fill the pipe while we wait.
    let mut pipe = child.stdout.take();
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.read_to_end(&mut out);
        }
        let _ = sender.send(out);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // Not a join: a process the tool left behind may hold its stdout open. Past the deadline
    // the reader is abandoned (it ends with the wrapper) and the call counts as timed out.
    let left = deadline.saturating_duration_since(Instant::now());
    let stdout = answer
        .recv_timeout(left)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    Ok((status, stdout))
}

struct Interception {
    shim_dir: PathBuf,
    tools_dir: PathBuf,
    channel: Channel,
    path_var: OsString,
}

impl Interception {
    fn env(&self, nonce: &str, log_text: bool) -> Vec<(OsString, OsString)> {
        let mut env = vec![
            (
                "PATH".into(),
                shims::child_path(&self.shim_dir, &self.path_var),
            ),
            (
                ENV_TOOLS_DIR.into(),
                self.tools_dir.clone().into_os_string(),
            ),
            (
                ENV_CHANNEL.into(),
                self.channel.path.clone().into_os_string(),
            ),
            (ENV_NONCE.into(), nonce.into()),
        ];
        if log_text {
            env.push((ENV_LOG_TEXT.into(), "1".into()));
        }
        env
    }
}

/// The child's standard OpenTelemetry variables for the custom-span listener (README, *Your own spans and events*).
///
/// Traces only: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL, used as is by every SDK)
/// and `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf` (SDKs that default to gRPC, and
/// the Python SDK's `OTEL_TRACES_EXPORTER=otlp` auto-configuration, pick OTLP/HTTP from it).
/// Never `OTEL_EXPORTER_OTLP_ENDPOINT`, which would send metrics and logs here too, to be
/// refused; and no `OTEL_METRICS_EXPORTER`/`OTEL_LOGS_EXPORTER`: left alone, an SDK does with
/// metrics and logs exactly what it did before the charm was wrapped. An endpoint the hook
/// already had (the operator's destination) is replaced for the child, since we forward
/// everything there ourselves; the wrapper reads its own environment, which keeps it. The
/// names go into `DISPATCH_TRACE_INJECTED`, so our tool mode run inside the hook
/// (`dispatch status`, `dispatch flush`) never takes them for a destination.
fn custom_span_env(endpoint: &str) -> Vec<(OsString, OsString)> {
    const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    vec![
        (ENDPOINT.into(), endpoint.into()),
        (PROTOCOL.into(), "http/protobuf".into()),
        (
            destination::ENV_INJECTED.into(),
            format!("{ENDPOINT},{PROTOCOL}").into(),
        ),
    ]
}

/// Sets up hook-tool interception; `Ok(None)` when there are no hook tools on PATH (not a
/// problem: `juju exec` style runs and tests without tools).
fn intercept(charm_dir: &Path, state_dir: &Path) -> Result<Option<Interception>, String> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let shim_dir_path = state_dir.join("shims");
    let Some(tools_dir) = shims::find_tools_dir(&path_var, &shim_dir_path) else {
        return Ok(None);
    };
    let shim_binary = charm_dir.join(shims::SHIM_BINARY);
    if !shim_binary.exists() {
        return Err(format!(
            "{} is missing, so hook-tool calls are not traced (install it beside dispatch)",
            shim_binary.display()
        ));
    }
    let shim_dir = shims::ensure_shim_dir(state_dir, &tools_dir, &shim_binary).map_err(|e| {
        format!(
            "cannot prepare the hook-tool shims in {}: {e}",
            state_dir.display()
        )
    })?;
    let channel = Channel::open(state_dir).map_err(|e| {
        format!(
            "cannot open the record channel in {}: {e}",
            state_dir.display()
        )
    })?;
    Ok(Some(Interception {
        shim_dir,
        tools_dir,
        channel,
        path_var,
    }))
}

fn finish(prepared: &mut Prepared, tracing: Option<Tracing>, run: Option<&ChildRun>) {
    let Some(mut tracing) = tracing else {
        // Setup failed half-way: there is no trace to store, and this dispatch must not be
        // imported later as an interrupted one.
        if let Some(inflight) = prepared.inflight.take() {
            inflight.finish();
        }
        report(prepared);
        return;
    };
    let collected = match tracing.reader.take() {
        Some(reader) => {
            let (collected, opened) = reader.finish();
            if let Some(opened) = opened {
                prepared.store_tried = true;
                prepared.store_newer = opened.newer_schema;
                prepared.stored_destination = opened.stored_destination;
                if !prepared.relation_discovered {
                    prepared.relation = opened.relation;
                }
                prepared.store = opened.store;
                prepared.problems.extend(opened.problems);
            }
            collected
        }
        None => Collected::default(),
    };
    if let Some(run) = run {
        if let Some(error) = &run.spawn_error {
            if let Target::Program(program) = &prepared.target {
                prepared
                    .problems
                    .push(format!("cannot run {}: {error}", program.display()).into());
            }
        }
    }
    if collected.dropped > 0 {
        prepared.problems.push(Problem::of_kind(
            "records-dropped",
            format!(
                "{} hook-tool call records were dropped (record channel full)",
                collected.dropped
            ),
        ));
    }
    let builder = &tracing.builder;
    let mut facts = tracing.facts;
    facts.problems = operator::texts(&prepared.problems);
    facts.records_dropped = collected.dropped;
    facts.records_ignored = collected.ignored;
    facts.custom_spans = collected.custom.spans;
    facts.custom_spans_dropped = collected.custom.dropped;
    facts.custom_requests_refused = collected.custom.refused;
    if collected.custom_failed {
        facts.custom_spans_error = Some(panic_problem(
            "receiving custom spans (the listener stopped)",
        ));
    }

    let mut spans = Vec::with_capacity(collected.records.len() + 2);
    let mut changed = false;
    let mut extra = vec![KeyValue::new(
        "dispatch.tool_calls",
        collected.records.len() as i64,
    )];
    // Nothing cached yet (a charm's first dispatch under us, or a new store): read the
    // relations now, after the charm (publishing waits for an event that allows it first).
    open_store(prepared);
    // (Without a store nothing could be cached or shipped: no calls then. Nor when they were
    // read before the charm and that failed: their answers do not change within a hook.)
    let read_before = tracing.own_tools.is_some();
    if prepared.relation.is_none()
        && !read_before
        && !prepared.endpoints.is_empty()
        && prepared.store.is_some()
    {
        if let Some(tools_dir) = prepared.tools_dir.clone() {
            let root = format!(
                "00-{}-{}-01",
                builder.ids.trace_id, builder.ids.root_span_id
            );
            let tools = tracing.own_tools.insert(HookTools::new(&tools_dir, root));
            let broken = broken_relation(&prepared.env);
            if let Some(answer) = relation::discover(tools, &prepared.endpoints, broken.as_deref())
            {
                prepared.relation = Some(answer);
                prepared.relation_discovered = true;
            }
        }
    }
    let own_calls = tracing.own_tools.iter().flat_map(|tools| &tools.records);
    for record in collected.records.iter().chain(own_calls) {
        changed |= changes_state(&record.tool);
        spans.push(builder.tool_span(record));
    }
    let failure = match run {
        Some(run) => {
            let target = facts.target.clone().unwrap_or_default();
            spans.push(builder.charm_span(run, &target));
            match run.end {
                ChildEnd::Exited(0) => None,
                ChildEnd::Exited(code) => Some(format!("charm exited with code {code}")),
                ChildEnd::Signaled(signal) => Some(format!(
                    "charm killed by {}",
                    supervise::signal_name(signal)
                )),
            }
        }
        None => match &prepared.target {
            Target::Itself(itself) => {
                extra.push(KeyValue::new("dispatch.exit_code", REFUSED_EXIT as i64));
                Some(itself.reason())
            }
            _ => None,
        },
    };
    if let Some(run) = run {
        if let ChildEnd::Exited(code) = run.end {
            extra.push(KeyValue::new("dispatch.exit_code", code as i64));
        }
    }
    let failed = failure.is_some();
    spans.push(builder.root_span(&facts, SystemTime::now(), failure, extra));
    let payload = builder.encode_with_custom(spans, collected.custom.resource_spans);
    let priority = if failed {
        Priority::Failed
    } else if changed {
        Priority::Changed
    } else {
        Priority::Quiet
    };

    open_store(prepared);
    let mut stored_id = None;
    let trace_id = builder.ids.trace_id.to_string();
    let payload_kept = payload.clone();
    if let Some(store) = prepared.store.take().and_then(|s| at_its_path(s, prepared)) {
        let chunk = NewChunk {
            started_at: spans::time_to_unix_nanos(prepared.start) as i64,
            event: prepared.env.event_name().to_string(),
            trace_id: trace_id.clone(),
            payload,
            priority,
        };
        let max = prepared.config.store_max_bytes;
        let (kept, id) = add_with_recovery(store, &[chunk], max, &mut prepared.problems);
        prepared.store = kept;
        stored_id = id;
    }
    if let Some(inflight) = prepared.inflight.take() {
        match stored_id {
            Some(_) => inflight.finish(),
            // Newer schema: nobody here can ever import it.
            None if prepared.store_newer => inflight.finish(),
            // Locked, disk full...: the next dispatch that can, stores it.
            None => {
                let kept = inflight.keep_final(
                    &trace_id,
                    prepared.env.event_name(),
                    &payload_kept,
                    priority,
                );
                if let Err(e) = kept {
                    prepared.problems.push(
                        format!(
                            "this dispatch's trace is lost: it could not wait beside {} either \
                             ({e})",
                            prepared.store_path.display()
                        )
                        .into(),
                    );
                }
            }
        }
    }
    if let Some(store) = prepared.store.as_mut() {
        let stored = prepared.stored_destination.take();
        let root = Some(builder.ids.root_span_id);
        if prepared.relation_discovered {
            if let Some(answer) = &prepared.relation {
                if let Ok(json) = serde_json::to_string(answer) {
                    let _ = store.set_setting(relation::SETTING, Some(&json));
                }
            }
        } else if prepared.endpoints.is_empty() && prepared.relation.take().is_some() {
            // The charm no longer declares the relations (an upgrade removed them): what they
            // said no longer holds, for this dispatch or for tool mode.
            let _ = store.set_setting(relation::SETTING, None);
        }
        let answer = prepared.relation.clone();
        ship(
            store,
            &prepared.config,
            stored,
            answer.as_ref(),
            stored_id,
            root,
            &mut prepared.problems,
        );
    }
    report(prepared);
}

/// Ships this dispatch's trace and the backlog to the destination, if there is one, within
/// the export budget. Only causes the operator can act on become problems (stderr); outages
/// are the backoff's business and show in `dispatch status`.
#[allow(clippy::too_many_arguments)]
fn ship(
    store: &mut Store,
    config: &Config,
    stored: Option<destination::Stored>,
    relation: Option<&relation::Answer>,
    current: Option<i64>,
    root_span: Option<opentelemetry::trace::SpanId>,
    problems: &mut Vec<Problem>,
) {
    let env = export_environment();
    let Some(destination) = destination::resolve(&env, config, stored.as_ref(), relation) else {
        return;
    };
    let destination = match destination::usable(destination) {
        Ok(destination) => destination,
        Err(why) => {
            // Nothing can be sent until it is fixed: the traces wait in the store.
            let failure = export::Failure {
                cause: why,
                actionable: true,
                retry_after: None,
            };
            note_export_failure(store, current, root_span, &failure, problems);
            return;
        }
    };
    // Backing off costs nothing, not even building the client.
    if export::backing_off(store, &destination) {
        return;
    }
    let budget = Duration::from_millis(config.export_budget_ms);
    let failure = match Http::new(&destination, &env) {
        Ok(http) => {
            let report = export::export(
                store,
                &destination,
                destination::protocol(&env, config),
                &http,
                budget,
                current,
                false,
            );
            report.failure
        }
        Err(failure) => {
            export::record_setup_failure(store, &destination, failure.clone());
            Some(failure)
        }
    };
    if let Some(failure) = failure {
        note_export_failure(store, current, root_span, &failure, problems);
    }
}

/// Tells of a failed export: on this dispatch's root span (`dispatch.export.error`), where
/// whoever reads the trace later (after a successful flush, say) will find it, and in the
/// operator's line when it is something they can fix.
fn note_export_failure(
    store: &mut Store,
    current: Option<i64>,
    root_span: Option<opentelemetry::trace::SpanId>,
    failure: &export::Failure,
    problems: &mut Vec<Problem>,
) {
    if let (Some(id), Some(root)) = (current, root_span) {
        if let Some(chunk) = store.chunk(id).ok().flatten() {
            if let Some(payload) = spans::annotate_span(
                &chunk.payload,
                root,
                "dispatch.export.error",
                &failure.cause,
            ) {
                let _ = store.replace_payload(id, &payload);
            }
        }
    }
    if failure.actionable {
        problems.push(format!("cannot ship traces: {}", failure.cause).into());
    }
}

/// The variables that configure shipping: OTLP, Juju's trace config and proxies.
pub fn export_environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            k.starts_with("OTEL_")
                || k.starts_with("JUJU_CHARM_")
                || k == destination::ENV_INJECTED
                || matches!(
                    k.as_str(),
                    "http_proxy"
                        | "HTTP_PROXY"
                        | "https_proxy"
                        | "HTTPS_PROXY"
                        | "no_proxy"
                        | "NO_PROXY"
                )
        })
        .collect()
}

fn report(prepared: &Prepared) {
    let silent = prepared.env.event_kind() == EventKind::Action;
    // Without a state dir, remember beside the store: an unusable state dir must not turn
    // into the same line on every hook.
    let memory = match &prepared.state_dir {
        Some(dir) => dir.join(operator::LAST_WARNING),
        None => store::with_suffix(&prepared.store_path, ".last-warning"),
    };
    let operator = Operator::new(Some(&memory), silent);
    if matches!(prepared.target, Target::Itself(_)) {
        operator.report_failure(&prepared.problems);
    } else {
        operator.report(&prepared.problems);
    }
}
