//! What the fuzz targets share: a dispatch's trace builder with fixed ids (so an input means
//! the same thing on every run, and the fuzzer can reach "this record belongs to our trace"),
//! and small receiver limits that inputs of a few kilobytes can reach.

use std::ffi::OsString;

use dispatch::juju::HookEnv;
use dispatch::listen::Limits;
use dispatch::trace::context::DispatchIds;
use dispatch::trace::spans::TraceBuilder;
use opentelemetry::trace::{SpanId, TraceId};

/// The trace of the fixed dispatch; seeds use it in `TRACEPARENT`s that belong to it.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const ROOT_SPAN_ID: &str = "00f067aa0ba902b7";
pub const CHARM_SPAN_ID: &str = "b7ad6b7169203331";
/// The record channel's nonce the seeds were written with.
pub const NONCE: &str = "5f1c0e9a7d3b2468";
/// The custom-span path the receiver seeds post to (`listen::traces_path(NONCE)`).
pub const TRACES_PATH: &str = "/5f1c0e9a7d3b2468/v1/traces";

/// The ids of the fixed dispatch.
pub fn ids() -> DispatchIds {
    DispatchIds {
        trace_id: TraceId::from_hex(TRACE_ID).expect("hex"),
        root_span_id: SpanId::from_hex(ROOT_SPAN_ID).expect("hex"),
        charm_span_id: SpanId::from_hex(CHARM_SPAN_ID).expect("hex"),
        root_parent: None,
    }
}

/// The hook environment of an ordinary relation event.
pub fn hook_env() -> HookEnv {
    let vars = [
        ("JUJU_DISPATCH_PATH", "hooks/charm-tracing-relation-changed"),
        ("JUJU_UNIT_NAME", "myapp/0"),
        ("JUJU_MODEL_NAME", "dev"),
        ("JUJU_MODEL_UUID", "c1a2b3c4-0000-4000-8000-000000000001"),
        ("JUJU_RELATION", "charm-tracing"),
        ("JUJU_RELATION_ID", "charm-tracing:5"),
    ];
    HookEnv::from_vars(
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        &OsString::from("./dispatch"),
    )
}

/// The trace builder of the fixed dispatch.
pub fn builder() -> TraceBuilder {
    TraceBuilder::new(ids(), &hook_env(), Some("my-charm"), None)
}

/// Limits a few kilobytes of input can cross, so every cap's edge is reachable.
pub const SMALL_LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_body_bytes: 2048,
    max_decoded_bytes: 4096,
    max_spans: 8,
    max_span_bytes: 2048,
};
