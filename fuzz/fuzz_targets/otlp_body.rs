//! Custom-span request bodies once the HTTP layer is done with them: OTLP protobuf (prost)
//! and OTLP/JSON (`listen::otlp_json::decode`, by hand), the dispatch's bounds on what is kept
//! (`listen::Received::accept`), the store chunk they end up in
//! (`spans::TraceBuilder::encode_with_custom`), and `dispatch traces` showing that chunk
//! (`tree::dispatch` plain and verbose, `view::json`, `view::otlp_json`), since the spans are the charm's.
//!
//! Input: one `ExportTraceServiceRequest`, protobuf or JSON (both decoders try every input).
//! A JSON request must also survive the trip through our own OTLP/JSON output unchanged.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use dispatch::cli::tree::{self, TreeStyle};
use dispatch::cli::view;
use dispatch::listen::{otlp_json, Received, LIMITS};
use dispatch::store::StoredChunk;
use dispatch::trace::spans::RootFacts;
use dispatch_fuzz::{builder, SMALL_LIMITS, TRACE_ID};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = otlp_json::decode(data) {
        if all_finite(&request) {
            // `dispatch traces --format otlp-json` writes what a collector (and we) can read.
            let json = serde_json::to_vec(&request).expect("serializes");
            let again = otlp_json::decode(&json).expect("our own OTLP/JSON decodes");
            assert_eq!(again, request, "{}", String::from_utf8_lossy(&json));
        }
        keep_and_show(request);
    }
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        keep_and_show(request);
    }
});

fn keep_and_show(request: ExportTraceServiceRequest) {
    let total: usize = spans_in(&request);
    let mut kept = Received::default();
    for limits in [SMALL_LIMITS, LIMITS] {
        let mut received = Received::default();
        let rejected = received.accept(request.clone(), &limits);
        assert!(received.spans <= limits.max_spans);
        assert!(received.bytes <= limits.max_span_bytes);
        assert_eq!(received.spans + rejected as usize, total);
        assert_eq!(spans_in_all(&received.resource_spans), received.spans);
        kept = received;
    }

    let builder = builder();
    let facts = RootFacts {
        start: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        ..RootFacts::default()
    };
    let end = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
    let root = builder.root_span(&facts, end, None, Vec::new());
    let payload = builder.encode_with_custom(vec![root], kept.resource_spans);
    let chunk = StoredChunk {
        id: 1,
        state: 0,
        priority: 0,
        started_at: 1_700_000_000_000_000_000,
        event: "install".into(),
        trace_id: TRACE_ID.into(),
        payload,
    };
    let chunks = [chunk];
    // The tree as people see it: plain, and with every attribute and event in colour.
    for verbose in [false, true] {
        tree::dispatch(
            &chunks[0],
            TreeStyle {
                verbose,
                colour: verbose,
            },
        );
    }
    view::json(&chunks).expect("json");
    view::otlp_json(&chunks).expect("otlp-json");
}

fn spans_in(request: &ExportTraceServiceRequest) -> usize {
    spans_in_all(&request.resource_spans)
}

fn spans_in_all(resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// JSON has no NaN or infinity (serde_json writes `null`), so those cannot make the trip.
fn all_finite(request: &ExportTraceServiceRequest) -> bool {
    fn value_ok(value: &AnyValue) -> bool {
        match &value.value {
            Some(any_value::Value::DoubleValue(d)) => d.is_finite(),
            Some(any_value::Value::ArrayValue(a)) => a.values.iter().all(value_ok),
            Some(any_value::Value::KvlistValue(l)) => attributes_ok(&l.values),
            _ => true,
        }
    }
    fn attributes_ok(attributes: &[KeyValue]) -> bool {
        attributes.iter().flat_map(|kv| &kv.value).all(value_ok)
    }
    request.resource_spans.iter().all(|r| {
        r.resource
            .as_ref()
            .is_none_or(|r| attributes_ok(&r.attributes))
            && r.scope_spans.iter().all(|s| {
                s.scope
                    .as_ref()
                    .is_none_or(|s| attributes_ok(&s.attributes))
                    && s.spans.iter().all(|span| {
                        attributes_ok(&span.attributes)
                            && span.events.iter().all(|e| attributes_ok(&e.attributes))
                            && span.links.iter().all(|l| attributes_ok(&l.attributes))
                    })
            })
    })
}
