//! Shipping what waits in the store: the gate every export goes through (DESIGN §5; README
//! *Shipping*). A hook ships after storing its trace (`after_hook`); `dispatch flush` ships
//! when a person asks (`flush`). Both pass the same gate, in this order:
//!
//! 1. which destination is in force (`destination::resolve`: environment, config file,
//!    `set-destination`, the tracing relation, Juju's trace config) — none: the traces wait;
//! 2. whether its URL can be used (`destination::usable`) — if not, the operator is told;
//! 3. whether it is backing off after failures (a hook makes no request then; a flush
//!    forgets the backoff);
//! 4. the client for it (its CA, the proxy to use: `transport::Http`);
//! 5. the send loop within the time budget (`export::export`).
//!
//! "Why was my trace not shipped?": the answer is one of these steps. A hook puts a failure on
//! its own trace's root span (`dispatch.export.error`) and, when the operator can act on it (a
//! TLS failure, a 4xx, a bad URL; not an outage), into its one stderr line; `dispatch status`
//! shows the backoff and the last export (`settings`).

pub mod destination;
pub mod export;
pub mod forward_proxy;
pub mod requests;
pub mod transport;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::trace::SpanId;

use crate::config::Config;
use crate::operator::Problem;
use crate::relation::Answer;
use crate::ship::transport::Http;
use crate::store::settings;
use crate::store::Store;
use crate::trace::spans;
use destination::Destination;
use export::{Failure, Report};

/// A person waiting on `dispatch flush` gets at least this long.
const FLUSH_BUDGET: Duration = Duration::from_secs(10);

/// How far shipping got.
pub enum Outcome {
    /// No destination: the traces wait in the store. `waits_for_ca`: the tracing relation's
    /// URL is https and the certificate_transfer relation has not delivered its CA yet.
    Nowhere { waits_for_ca: bool },
    /// The destination's URL cannot be used: why.
    Unusable(Failure),
    /// The destination is backing off after failures: no request was made.
    BackingOff,
    /// The client could not be built (a CA that does not load, a bad proxy).
    NoClient(Destination, Failure),
    /// Requests were made (or there was nothing to send).
    Exported(Destination, Report),
}

impl Outcome {
    /// The failure that stopped or ended shipping, if any.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Unusable(failure) | Outcome::NoClient(_, failure) => Some(failure),
            Outcome::Exported(_, report) => report.failure.as_ref(),
            Outcome::Nowhere { .. } | Outcome::BackingOff => None,
        }
    }
}

/// Where a shipment comes from, and what it may do.
struct Asked {
    /// A person asked (`dispatch flush`): the backoff is forgotten, not obeyed.
    by_a_person: bool,
    budget: Duration,
    /// The chunk to send first (the hook's own trace).
    first: Option<i64>,
}

/// After a hook stored its trace (`current`, whose root span is `root`): ships it and the
/// backlog within the export budget. A failure goes on that trace's root span; one the
/// operator can act on is returned for the hook's one line.
pub fn after_hook(
    store: &mut Store,
    config: &Config,
    stored: Option<&destination::Stored>,
    relation: Option<&Answer>,
    current: Option<i64>,
    root: Option<SpanId>,
) -> Option<Problem> {
    let asked = Asked {
        by_a_person: false,
        budget: Duration::from_millis(config.export_budget_ms),
        first: current,
    };
    let outcome = ship(store, config, stored, relation, &asked);
    let failure = outcome.failure()?;
    // The cause goes on this dispatch's root span too, where whoever reads the trace later
    // (after a successful flush, say) will find it.
    if let (Some(id), Some(root)) = (current, root) {
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
    failure
        .actionable
        .then(|| format!("cannot ship traces: {}", failure.cause).into())
}

/// What `dispatch flush` does: ships everything waiting, whatever the backoff, giving a
/// person at least `FLUSH_BUDGET`.
pub fn flush(store: &mut Store, config: &Config) -> Outcome {
    let stored = settings::destination(store).ok().flatten();
    let relation = settings::relation_answer(store);
    let asked = Asked {
        by_a_person: true,
        budget: Duration::from_millis(config.export_budget_ms).max(FLUSH_BUDGET),
        first: None,
    };
    ship(store, config, stored.as_ref(), relation.as_ref(), &asked)
}

/// The gate, then the send loop (see the module docs).
fn ship(
    store: &mut Store,
    config: &Config,
    stored: Option<&destination::Stored>,
    relation: Option<&Answer>,
    asked: &Asked,
) -> Outcome {
    let env = environment();
    let Some(destination) = destination::resolve(&env, config, stored, relation) else {
        return Outcome::Nowhere {
            waits_for_ca: destination::waits_for_ca(relation),
        };
    };
    let destination = match destination::usable(destination) {
        Ok(destination) => destination,
        Err(why) => {
            // Nothing can be sent until it is fixed: the traces wait in the store.
            return Outcome::Unusable(Failure {
                cause: why,
                actionable: true,
                retry_after: None,
            });
        }
    };
    if asked.by_a_person {
        // Whatever backoff there was is over, sent or not.
        export::reset_backoff(store);
    } else if export::backing_off(store, &destination) {
        // Backing off costs nothing, not even building the client.
        return Outcome::BackingOff;
    }
    let http = match Http::new(&destination, &env) {
        Ok(http) => http,
        Err(failure) => {
            if !asked.by_a_person {
                export::record_setup_failure(store, &destination, failure.clone());
            }
            return Outcome::NoClient(destination, failure);
        }
    };
    let report = export::export(
        store,
        &destination,
        destination::protocol(&env, config),
        &http,
        asked.budget,
        asked.first,
        asked.by_a_person,
    );
    Outcome::Exported(destination, report)
}

/// The variables that configure shipping: OTLP, Juju's trace config and proxies. The wrapper
/// reads its own environment (the hook's); tool mode reads the person's.
pub fn environment() -> BTreeMap<String, String> {
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
