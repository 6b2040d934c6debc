//! The second phase of a traced hook: only what must come before the child (README, *How it
//! works*). Nothing here may stop the charm from running: a failure is a problem to report.
//!
//! In order, and why:
//! 1. the dispatch lock and the started record (`inflight`), so that a wrapper killed from
//!    here on still leaves a trace;
//! 2. the hook-tool interception (`child_env::intercept`) and the thread that runs while the
//!    child runs (`beside_child`): it opens the store (`persist::open_store_at`),
//!    drains tool records and answers the charm's own spans. Started first, so that as much
//!    as possible of its work overlaps with the rest of this phase and with the child;
//! 3. the charm's metadata (which relation endpoints to read), the trace's ids (continuing
//!    Juju's context or linking to it, DESIGN §4) and the span builder;
//! 4. the relations, on the events that can change them: read (and, as leader, our side
//!    published) before the charm runs, so that its own writes come later and win (DESIGN §3);
//! 5. the child's environment, the custom-span endpoint asked for last, so that the reader's
//!    thread has long since bound it;
//! 6. with `stderr_tail`, the relay between the charm's stderr and the hook's
//!    (`stderr_tail`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use dispatch_shim::ENV_NONCE;
use opentelemetry::KeyValue;

use crate::config::TraceContextMode;
use crate::hook::beside_child::{self, BesideChild};
use crate::hook::child_env;
use crate::hook::decide::Dispatch;
use crate::hook::own_tools::{self, HookTools};
use crate::hook::stderr_tail::StderrTail;
use crate::intercept::shims::SHIM_BINARY;
use crate::metadata::CharmMetadata;
use crate::operator::{self, Problem};
use crate::relation::{self, Answer, Endpoints};
use crate::ship;
use crate::ship::destination;
use crate::store::inflight::{Inflight, Started};
use crate::store::persist::{self, OpenedStore};
use crate::store::settings;
use crate::store::Store;
use crate::target::Target;
use crate::trace::context::{self, DispatchIds};
use crate::trace::spans::{self, RootFacts, TraceBuilder};

/// The root span's attribute for a custom-span listener that could not be opened or stopped:
/// for the trace only, nothing the operator can act on (README, *Your own spans and events*).
pub const CUSTOM_SPANS_ERROR: &str = "dispatch.custom_spans_error";

/// How long a dispatch waits for the dispatch lock (held by a concurrent `flush`).
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// What was set up before the child, for the phases after it.
pub struct Prepared {
    pub builder: TraceBuilder,
    pub facts: RootFacts,
    /// The thread that runs while the child runs; it opens the store.
    pub beside: Option<BesideChild<OpenedStore>>,
    /// The wrapper's own hook-tool calls, when the relations were read before the charm.
    pub own_tools: Option<HookTools>,
    pub endpoints: Endpoints,
    /// Juju's real hook-tool directory, when found.
    pub tools_dir: Option<PathBuf>,
    /// The relations' answer, when read in this dispatch (before the charm).
    pub discovered: Option<Answer>,
    /// The child's environment: the hook's, with these changes.
    pub env_changes: Vec<(OsString, OsString)>,
    /// The relay the child's stderr goes through (`stderr_tail`).
    pub stderr_tail: Option<StderrTail>,
}

/// Prepares the trace. `inflight` receives the dispatch lock and the started record as soon as
/// they exist: the caller keeps them even if this panics half-way (a dispatch that could not be
/// traced must not be imported later as an interrupted one).
pub fn prepare(dispatch: &mut Dispatch, inflight: &mut Option<Inflight>) -> Prepared {
    let env = dispatch.env.clone();
    let env = &env;

    let started_at = spans::time_to_unix_nanos(dispatch.start) as i64;
    *inflight = match Inflight::lock(&dispatch.store_path, LOCK_WAIT, started_at) {
        Ok(inflight) => Some(inflight),
        Err(e) => {
            dispatch.problems.push(
                format!(
                    "cannot take the dispatch lock beside {}: {e}",
                    dispatch.store_path.display()
                )
                .into(),
            );
            None
        }
    };
    let nonce = context::new_nonce();
    let mut env_changes: Vec<(OsString, OsString)> = Vec::new();
    let mut reader = None;
    let mut tools_dir: Option<PathBuf> = None;
    let program = matches!(dispatch.target, Target::Program(_));
    let interception = match (&dispatch.state_dir, program) {
        (Some(state_dir), true) => child_env::intercept(&dispatch.charm_dir, state_dir)
            .unwrap_or_else(|problem| {
                dispatch.problems.push(problem.into());
                None
            }),
        _ => None,
    };
    // The listener for the charm's own spans (README, *Your own spans and events*), opened on
    // the reader's thread.
    let listen = program && dispatch.config.custom_spans;
    if interception.is_some() || listen {
        let store_path = dispatch.store_path.clone();
        let scan = inflight.as_ref().map(Inflight::orphan_scan);
        let max_bytes = dispatch.config.store_max_bytes;
        let open_early = move || persist::open_store_at(&store_path, scan.as_ref(), max_bytes);
        let (channel, interception) = match interception {
            Some(interception) => {
                let env = interception.env(&nonce, &dispatch.config);
                (
                    Some(interception.channel),
                    Some((env, interception.tools_dir)),
                )
            }
            None => (None, None),
        };
        match beside_child::start(channel, listen, nonce.clone(), open_early) {
            Ok(started) => {
                reader = Some(started);
                if let Some((env, tools)) = interception {
                    env_changes.extend(env);
                    tools_dir = Some(tools);
                }
            }
            Err(e) => dispatch
                .problems
                .push(format!("cannot start the record reader: {e}").into()),
        }
    }
    if !env_changes.iter().any(|(key, _)| key == ENV_NONCE) {
        // Still marks the environment as inside a traced dispatch, so a nested dispatch
        // (a charm running `hooks/<event>` itself) is not traced a second time.
        env_changes.push((ENV_NONCE.into(), nonce.into()));
    }

    let metadata = match CharmMetadata::load(&dispatch.charm_dir) {
        Ok(meta) => meta,
        Err(problem) => {
            dispatch.problems.push(problem.into());
            None
        }
    };
    let charm_name = metadata.as_ref().and_then(|m| m.name.clone());
    let endpoints = Endpoints::find(metadata.as_ref(), &dispatch.config);
    let incoming = context::incoming_context(env);
    let continued = incoming.is_some()
        && (dispatch.config.juju_trace_context == TraceContextMode::Continue
            || ships_to_juju_collector(dispatch));
    let ids = DispatchIds::new(if continued { incoming.as_ref() } else { None });
    let builder = TraceBuilder::new(
        ids,
        env,
        charm_name.as_deref(),
        dispatch.config.service_name.as_deref(),
    );
    let mut facts = RootFacts {
        start: Some(dispatch.start),
        target: match &dispatch.target {
            Target::Program(p) => Some(p.display().to_string()),
            Target::Itself(itself) => Some(itself.path.display().to_string()),
            Target::Nothing => None,
        },
        skipped: (dispatch.target == Target::Nothing)
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
        dispatch.start,
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
    if let Some(inflight) = inflight.as_mut() {
        if let Err(e) = inflight.record(&started) {
            dispatch.problems.push(
                format!(
                    "cannot record the dispatch as started beside {}: {e}",
                    dispatch.store_path.display()
                )
                .into(),
            );
        }
    }
    // The relations, on the events that can change them: read (and, as leader, our side
    // published) before the charm runs, so its own writes come later and win.
    let mut own_tools = None;
    let mut discovered = None;
    if let Some(tools_dir) = &tools_dir {
        let trigger = relation::event_can_change_answer(
            env.event_name(),
            env.get("JUJU_RELATION"),
            &endpoints,
        );
        if trigger {
            let tools = own_tools.insert(HookTools::new(tools_dir, builder.root_traceparent()));
            let broken = own_tools::broken_relation(env);
            if dispatch.config.publish_requirer_data {
                if let Some(app) = env.application_name() {
                    relation::publish(tools, &endpoints, app, broken.as_deref());
                }
            }
            discovered = relation::discover(tools, &endpoints, broken.as_deref());
        }
    }
    // Asked for last, so that the reader's thread has long since bound it: the bind stays off
    // the hook's critical path. Failing to bind is nothing the operator can act on: it goes
    // on the root span, not to stderr.
    match reader.as_mut().and_then(BesideChild::endpoint) {
        Some(Ok(endpoint)) => env_changes.extend(child_env::custom_span_env(&endpoint)),
        Some(Err(e)) => dispatch.problems.push(Problem::for_the_trace(
            CUSTOM_SPANS_ERROR,
            format!("cannot listen on 127.0.0.1 for custom spans: {e}"),
        )),
        None => {}
    }
    let stderr_tail = match dispatch.config.stderr_tail {
        0 => None,
        _ if !program => None,
        bytes => {
            let shim = dispatch.charm_dir.join(SHIM_BINARY);
            StderrTail::start(&shim, bytes).unwrap_or_else(|problem| {
                dispatch.problems.push(
                    format!("stderr_tail: {problem}; the charm's stderr is left as it is").into(),
                );
                None
            })
        }
    };
    facts.problems = operator::texts(&dispatch.problems);
    facts.custom_spans_error = operator::for_the_trace(&dispatch.problems, CUSTOM_SPANS_ERROR);
    Prepared {
        builder,
        facts,
        beside: reader,
        own_tools,
        endpoints,
        tools_dir,
        discovered,
        env_changes,
        stderr_tail,
    }
}

/// Whether traces go to Juju's own collector (`JUJU_CHARM_TRACE_CONFIG_HTTP`), where Juju's
/// spans are too: then the dispatch continues Juju's trace instead of linking to it (DESIGN
/// §4). Only asked when Juju sent both a context and a trace config (Juju 4), so only then is
/// the store peeked at before the child, for a destination that would take precedence.
fn ships_to_juju_collector(dispatch: &Dispatch) -> bool {
    if dispatch.env.get("JUJU_CHARM_TRACE_CONFIG_HTTP").is_none() {
        return false;
    }
    let (stored, relation) = match Store::open_to_read(&dispatch.store_path) {
        Ok(Some(store)) => (
            settings::destination(&store).ok().flatten(),
            settings::relation_answer(&store),
        ),
        _ => (None, None),
    };
    destination::resolve(
        &ship::environment(),
        &dispatch.config,
        stored.as_ref(),
        relation.as_ref(),
    )
    .is_some_and(|d| d.source == destination::Source::JujuTraceConfig)
}
