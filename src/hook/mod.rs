//! Hook mode: what `dispatch` does when Juju runs it (no arguments). This file is the order of
//! work; each phase is a call into the module that owns it (README, *How it works*).
//!
//! 1. Decide (`decide`): what runs, and whether to trace it. Not traced: exec the target, so
//!    nothing of ours stays in the process tree.
//! 2. Prepare (`prepare`): only what must come before the child: the dispatch lock and the
//!    started record, the hook-tool shims and the thread that runs beside the child (records,
//!    the custom-span listener, the store), the trace's ids, the relations on the events that
//!    change them, the child's environment (`child_env`).
//! 3. Run the child (`supervise`): signals forwarded, its end recorded; meanwhile the store is
//!    opened off the hook's critical path (`persist`).
//! 4. Finish: build the trace (`spans`), store it in one transaction (`persist`), ship it and
//!    the backlog within the budget (`ship`), tell the operator (`operator`): once, at the end.
//! 5. End as the child ended: `run` returns its exit code or its signal, and `main` ends the
//!    process that way (`dispatch_shim::child::end_as`).
//!
//! After the spawn our problems are warnings: phases 2 to 4 run inside `catch_unwind` and
//! cannot change the exit, the output or the signal the hook ends with.

pub mod beside_child;
pub mod child_env;
pub mod decide;
pub mod own_tools;
pub mod prepare;
pub mod stderr_tail;

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::intercept::channel::Collected;
use crate::juju::EventKind;
use crate::operator::{self, Operator, Problem};
use crate::relation;
use crate::ship;
use crate::store::inflight::Inflight;
use crate::store::persist::{self, OpenedStore};
use crate::store::settings;
use crate::store::NewChunk;
use crate::supervise::{self, ChildEnd, ChildRun, InheritedSignals, Launch};
use crate::target::{Target, ENV_EXEC_DEPTH, REFUSED_EXIT};
use crate::trace::failure::Exception;
use crate::trace::spans;
use decide::{Decision, Dispatch};
use own_tools::HookTools;
use prepare::{Prepared, CUSTOM_SPANS_ERROR};
use stderr_tail::StderrTail;

/// The last panic message from tracing code, so it can be reported on the trace.
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

pub fn run(argv0: OsString, inherited: InheritedSignals) -> ChildEnd {
    let start = SystemTime::now();
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            *slot = Some(info.to_string().replace('\n', " "));
        }
    }));
    let decision = match catch_unwind(AssertUnwindSafe(|| decide::decide(&argv0, start))) {
        Ok(decision) => decision,
        Err(_) => return ChildEnd::Exited(decide::fallback_exec(&argv0, &inherited)),
    };
    match decision {
        Decision::Refuse { reason, env } => ChildEnd::Exited(decide::refuse(&reason, &env)),
        Decision::PassThrough {
            target,
            env,
            nothing_at_all,
        } => {
            if let Some(charm_dir) = nothing_at_all {
                decide::warn_nothing_at_all(&charm_dir, &env);
            }
            ChildEnd::Exited(decide::pass_through(&target, &argv0, &env, &inherited))
        }
        Decision::Trace(dispatch) => traced(*dispatch, &argv0, &inherited),
    }
}

fn traced(mut dispatch: Dispatch, argv0: &OsString, inherited: &InheritedSignals) -> ChildEnd {
    // Signals are blocked before any thread exists, so only our sigwait sees them.
    supervise::block_signals();
    let mut inflight: Option<Inflight> = None;
    let prepared = catch_unwind(AssertUnwindSafe(|| {
        prepare::prepare(&mut dispatch, &mut inflight)
    }));
    let mut prepared = match prepared {
        Ok(prepared) => Some(prepared),
        Err(_) => {
            dispatch
                .problems
                .push(panic_problem("preparing the trace").into());
            None
        }
    };
    let mut env_changes = prepared
        .as_mut()
        .map(|p| std::mem::take(&mut p.env_changes))
        .unwrap_or_default();
    env_changes.push((ENV_EXEC_DEPTH.into(), decide::child_exec_depth().into()));
    let mut stderr_tail = prepared.as_mut().and_then(|p| p.stderr_tail.take());

    // The store is opened while the child runs: by the reader's thread, or else here.
    let mut opened: Option<OpenedStore> = None;
    let run = match dispatch.target.clone() {
        Target::Nothing | Target::Itself(_) => None,
        Target::Program(program) => {
            let launch = Launch {
                program: &program,
                argv0,
                env_changes,
                stderr: stderr_tail.as_ref().and_then(StderrTail::charm_stderr),
            };
            let reader_opens = prepared.as_ref().is_some_and(|p| p.beside.is_some());
            let mut while_running = || {
                if let Some(tail) = stderr_tail.as_mut() {
                    tail.child_started();
                }
                if !reader_opens {
                    opened =
                        catch_unwind(AssertUnwindSafe(|| open_store(&dispatch, &inflight))).ok();
                }
            };
            match supervise::run(&launch, inherited, &mut while_running) {
                Ok(run) => Some(run),
                Err(unavailable) => {
                    // Could not fork at all: the charm must still run, so become it.
                    dispatch.problems.push(
                        format!(
                            "cannot start the charm under the wrapper ({}); ran it untraced",
                            unavailable.0
                        )
                        .into(),
                    );
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        finish(
                            &mut dispatch,
                            prepared.take(),
                            inflight.take(),
                            opened.take(),
                            None,
                            None,
                        )
                    }));
                    let code =
                        decide::pass_through(&dispatch.target, argv0, &dispatch.env, inherited);
                    return ChildEnd::Exited(code);
                }
            }
        }
    };

    let finished = catch_unwind(AssertUnwindSafe(|| {
        finish(
            &mut dispatch,
            prepared,
            inflight,
            opened,
            run.as_ref(),
            stderr_tail,
        )
    }));
    if finished.is_err() {
        dispatch
            .problems
            .push(panic_problem("recording the trace").into());
        let _ = catch_unwind(AssertUnwindSafe(|| report(&dispatch)));
    }
    match (run, &dispatch.target) {
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

/// Opens the store and imports the started records of wrappers that were killed.
fn open_store(dispatch: &Dispatch, inflight: &Option<Inflight>) -> OpenedStore {
    let scan = inflight.as_ref().map(Inflight::orphan_scan);
    persist::open_store_at(
        &dispatch.store_path,
        scan.as_ref(),
        dispatch.config.store_max_bytes,
    )
}

/// Phase 4: the trace built, stored and shipped, the operator told.
fn finish(
    dispatch: &mut Dispatch,
    prepared: Option<Prepared>,
    inflight: Option<Inflight>,
    opened: Option<OpenedStore>,
    run: Option<&ChildRun>,
    stderr_tail: Option<StderrTail>,
) {
    let Some(mut prepared) = prepared else {
        // Preparing failed half-way: there is no trace to store, and this dispatch must not
        // be imported later as an interrupted one.
        if let Some(inflight) = inflight {
            inflight.finish();
        }
        report(dispatch);
        return;
    };
    let (collected, opened) = match prepared.beside.take() {
        Some(reader) => reader.finish(),
        None => (Collected::default(), opened),
    };
    let mut opened = opened.unwrap_or_else(|| open_store(dispatch, &inflight));
    dispatch.problems.append(&mut opened.problems);
    if let (Some(run), Target::Program(program)) = (run, &dispatch.target) {
        if let Some(error) = &run.spawn_error {
            dispatch
                .problems
                .push(format!("cannot run {}: {error}", program.display()).into());
        }
    }
    if collected.dropped > 0 {
        dispatch.problems.push(Problem::of_kind(
            "records-dropped",
            format!(
                "{} hook-tool call records were dropped (record channel full)",
                collected.dropped
            ),
        ));
    }

    // The relations' answer: read in this dispatch, or cached. Nothing cached yet (a charm's
    // first dispatch under us, or a new store): read them now, after the charm. (Without a
    // store nothing could be cached or shipped: no calls then. Nor when they were read before
    // the charm and that failed: their answers do not change within a hook.)
    let mut discovered = prepared.discovered.take();
    if discovered.is_none()
        && opened.relation.is_none()
        && prepared.own_tools.is_none()
        && !prepared.endpoints.is_empty()
        && opened.store.is_some()
    {
        if let Some(tools_dir) = &prepared.tools_dir {
            let tools = prepared.own_tools.insert(HookTools::new(
                tools_dir,
                prepared.builder.root_traceparent(),
            ));
            let broken = own_tools::broken_relation(&dispatch.env);
            discovered = relation::discover(tools, &prepared.endpoints, broken.as_deref());
        }
    }

    if collected.custom_failed {
        dispatch.problems.push(Problem::for_the_trace(
            CUSTOM_SPANS_ERROR,
            panic_problem("receiving custom spans (the listener stopped)"),
        ));
    }
    let mut facts = prepared.facts;
    facts.problems = operator::texts(&dispatch.problems);
    facts.custom_spans_error = operator::for_the_trace(&dispatch.problems, CUSTOM_SPANS_ERROR);
    facts.records_dropped = collected.dropped;
    facts.records_ignored = collected.ignored;
    facts.custom_spans = collected.custom.spans;
    facts.custom_spans_dropped = collected.custom.dropped;
    facts.custom_requests_refused = collected.custom.refused;
    let itself = match &dispatch.target {
        Target::Itself(itself) => Some((itself.reason(), REFUSED_EXIT)),
        _ => None,
    };
    let own_calls = prepared
        .own_tools
        .as_ref()
        .map_or(&[][..], |t| &t.records[..]);
    // What the charm last wrote to stderr, asked for only when it failed.
    let stderr = match (stderr_tail, run) {
        (Some(tail), Some(run)) if run.end.failed() => match tail.take() {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(problem) => {
                dispatch.problems.push(Problem::for_the_trace(
                    "stderr-tail",
                    format!("stderr_tail: {problem}"),
                ));
                None
            }
        },
        _ => None,
    };
    let exception = collected
        .uncaught_exception
        .as_deref()
        .filter(|_| dispatch.config.record_exceptions)
        .and_then(Exception::from_ops_log);
    let (payload, priority) = prepared.builder.finished(
        &facts,
        &collected.records,
        own_calls,
        collected.custom.resource_spans,
        spans::CharmEnd {
            run,
            exception: exception.as_ref(),
            stderr_tail: stderr.as_deref(),
            itself,
        },
    );
    let chunk = NewChunk {
        started_at: spans::time_to_unix_nanos(dispatch.start) as i64,
        event: dispatch.env.event_name().to_string(),
        trace_id: prepared.builder.ids.trace_id.to_string(),
        payload,
        priority,
    };
    let (store, stored_id) = persist::store_trace(
        opened.store.take(),
        &dispatch.store_path,
        opened.newer_schema,
        inflight,
        chunk,
        dispatch.config.store_max_bytes,
        &mut dispatch.problems,
    );
    if let Some(mut store) = store {
        let relation = match &discovered {
            Some(answer) => {
                settings::set_relation_answer(&store, Some(answer));
                Some(answer.clone())
            }
            None if prepared.endpoints.is_empty() && opened.relation.is_some() => {
                // The charm no longer declares the relations (an upgrade removed them): what
                // they said no longer holds, for this dispatch or for tool mode.
                settings::set_relation_answer(&store, None);
                None
            }
            None => opened.relation.take(),
        };
        let problem = ship::after_hook(
            &mut store,
            &dispatch.config,
            opened.stored_destination.as_ref(),
            relation.as_ref(),
            stored_id,
            Some(prepared.builder.ids.root_span_id),
        );
        dispatch.problems.extend(problem);
    }
    report(dispatch);
}

/// Tells the operator, once, at the end (`operator`): a hook that fails because of us says so
/// every time; anything else is not said again while it lasts.
fn report(dispatch: &Dispatch) {
    let silent = dispatch.env.event_kind() == EventKind::Action;
    let operator = Operator::new(Some(&dispatch.warning_memory()), silent);
    if matches!(dispatch.target, Target::Itself(_)) {
        operator.report_failure(&dispatch.problems);
    } else {
        operator.report(&dispatch.problems);
    }
}
