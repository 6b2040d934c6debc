//! The trace context of a dispatch (DESIGN §4): the ids fixed at its start, the context Juju
//! hands the hook, and the per-dispatch nonce.
//!
//! - Ids are chosen before the child runs: the child's `TRACEPARENT` names the `charm` span,
//!   and the started record (`inflight`) the root, so an interrupted dispatch can still be
//!   shipped under the same ids.
//! - Incoming context: a W3C `TRACEPARENT`/`TRACESTATE`, or Juju 4's `JUJU_TRACE_ID`,
//!   `JUJU_SPAN_ID` and `JUJU_TRACE_FLAGS` (decimal). Juju exports its own spans to the
//!   controller's collector, which need not be the charm's backend, so the wrapper decides
//!   whether the root continues that trace or starts its own with a link to it; with
//!   `continue_from`, [`DispatchIds::new`] reuses its trace id and parents the root to it.
//!   Malformed values are ignored: a bad variable never stops the charm.
//! - The nonce (random, 64 bits) marks what belongs to this dispatch: records on the shared
//!   record channel, and the custom-span listener's path. Anything without it is ignored.
//!
//! Ids and nonces come from opentelemetry_sdk's random id generator (no random crate of our
//! own). `traceparent` is parsed here, in a few lines, rather than by opentelemetry_sdk's
//! `TraceContextPropagator`, which takes ids of any length up to 32 and 16 digits (`00-1-2-01`
//! would be a context) and is not compiled in today; Juju 4's variables need their own
//! parsing anyway.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::juju::HookEnv;

/// Ids fixed at the start of a dispatch: the child's `TRACEPARENT` needs the `charm` span id
/// before the child runs, and the "started" record needs the root's.
#[derive(Debug, Clone, Copy)]
pub struct DispatchIds {
    pub trace_id: TraceId,
    pub root_span_id: SpanId,
    pub charm_span_id: SpanId,
    /// Parent of the root when continuing Juju's trace.
    pub root_parent: Option<SpanId>,
}

/// The trace context Juju handed us, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingContext {
    pub context: SpanContext,
    /// Which variables it came from, for the link's attributes.
    pub source: &'static str,
}

impl DispatchIds {
    /// Fresh ids; with `continue_from`, the trace id of the incoming context is reused.
    pub fn new(continue_from: Option<&IncomingContext>) -> DispatchIds {
        let ids = RandomIdGenerator::default();
        let (trace_id, root_parent) = match continue_from {
            Some(incoming) => (
                incoming.context.trace_id(),
                Some(incoming.context.span_id()),
            ),
            None => (ids.new_trace_id(), None),
        };
        DispatchIds {
            trace_id,
            root_span_id: ids.new_span_id(),
            charm_span_id: ids.new_span_id(),
            root_parent,
        }
    }

    /// W3C `traceparent` pointing at the `charm` span, for the child's environment.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.charm_span_id)
    }
}

/// A random 64-bit nonce in hex, for the record channel.
pub fn new_nonce() -> String {
    format!("{}", RandomIdGenerator::default().new_span_id())
}

/// Parses a W3C `traceparent` (version 00 layout; later versions may append fields).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || u8::from_str_radix(version, 16).is_err() {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::NONE,
    ))
}

/// The incoming context: W3C `TRACEPARENT` first, else Juju 4's `JUJU_TRACE_ID`,
/// `JUJU_SPAN_ID` and `JUJU_TRACE_FLAGS` (decimal). Malformed values are ignored.
pub fn incoming_context(env: &HookEnv) -> Option<IncomingContext> {
    if let Some(context) = env.get("TRACEPARENT").and_then(parse_traceparent) {
        let context = match env
            .get("TRACESTATE")
            .and_then(|s| s.parse::<TraceState>().ok())
        {
            Some(state) => SpanContext::new(
                context.trace_id(),
                context.span_id(),
                context.trace_flags(),
                true,
                state,
            ),
            None => context,
        };
        return Some(IncomingContext {
            context,
            source: "TRACEPARENT",
        });
    }
    let trace = env.get("JUJU_TRACE_ID")?;
    let span = env.get("JUJU_SPAN_ID")?;
    if trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = env
        .get("JUJU_TRACE_FLAGS")
        .and_then(|f| f.parse::<u8>().ok())
        .unwrap_or(0);
    Some(IncomingContext {
        context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::NONE,
        ),
        source: "JUJU_TRACE_ID",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::hook_env as env;

    #[test]
    fn traceparent_parsing_accepts_w3c_and_rejects_garbage() {
        let ok =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(
            ok.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert!(ok.is_sampled());
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-xyz7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-ab")
                .is_some()
        );
    }

    #[test]
    fn juju4_trace_variables_are_an_incoming_context() {
        let incoming = incoming_context(&env(&[
            ("JUJU_TRACE_ID", "0af7651916cd43dd8448eb211c80319c"),
            ("JUJU_SPAN_ID", "b7ad6b7169203331"),
            ("JUJU_TRACE_FLAGS", "1"),
        ]))
        .unwrap();
        assert_eq!(incoming.source, "JUJU_TRACE_ID");
        assert!(incoming.context.is_sampled());
        assert!(incoming_context(&env(&[("JUJU_TRACE_ID", "nothex")])).is_none());
    }

    #[test]
    fn continuing_reuses_the_incoming_trace_id() {
        let incoming = incoming_context(&env(&[(
            "TRACEPARENT",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]))
        .unwrap();
        let ids = DispatchIds::new(Some(&incoming));
        assert_eq!(ids.trace_id, incoming.context.trace_id());
        assert_eq!(ids.root_parent, Some(incoming.context.span_id()));
        let fresh = DispatchIds::new(None);
        assert_ne!(fresh.trace_id, incoming.context.trace_id());
        assert!(fresh
            .child_traceparent()
            .ends_with(&format!("-{}-01", fresh.charm_span_id)));
    }
}
