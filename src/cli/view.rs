//! Showing stored traces to people and programs: the indented `tree` view, a simplified `json`
//! document, and OTLP/JSON lines (`otlp-json`, produced by opentelemetry-proto's serde support,
//! so a test or a collector can consume them as any OTLP/JSON).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use prost::Message;
use serde_json::{json, Value};

use crate::store::{StoredChunk, STATE_PENDING, STATE_SHIPPED};

pub fn decode(chunk: &StoredChunk) -> Result<ExportTraceServiceRequest> {
    ExportTraceServiceRequest::decode(chunk.payload.as_slice())
        .with_context(|| format!("chunk {} is not a valid OTLP request", chunk.id))
}

pub(super) fn state_name(state: i64) -> &'static str {
    match state {
        STATE_PENDING => "pending",
        STATE_SHIPPED => "shipped",
        _ => "unknown",
    }
}

pub(super) fn priority_name(priority: i64) -> &'static str {
    match priority {
        2 => "failed",
        1 => "changed",
        _ => "quiet",
    }
}

/// All spans of a request with their scope's name, flattened.
pub(super) fn scoped_spans(request: &ExportTraceServiceRequest) -> Vec<(&str, &Span)> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| {
            let scope = s.scope.as_ref().map_or("", |scope| scope.name.as_str());
            s.spans.iter().map(move |span| (scope, span))
        })
        .collect()
}

/// All spans of a request, flattened.
pub(super) fn spans(request: &ExportTraceServiceRequest) -> Vec<&Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .collect()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

pub(super) fn duration_ms(span: &Span) -> f64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e6
}

pub(super) fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == status::StatusCode::Error as i32)
}

pub(super) fn value_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format!("{d}"),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a
                .values
                .iter()
                .map(|v| value_text(&Some(v.clone())))
                .collect();
            items.join(" ")
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn value_json(value: &Option<AnyValue>) -> Value {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(
            a.values
                .iter()
                .map(|v| value_json(&Some(v.clone())))
                .collect(),
        ),
        Some(other) => json!(format!("{other:?}")),
        None => Value::Null,
    }
}

fn attributes_json(attributes: &[KeyValue]) -> serde_json::Map<String, Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), value_json(&kv.value)))
        .collect()
}

pub(super) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Option<AnyValue>> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

/// `Type: message` of an `exception` event, on one line and at most 200 characters.
pub(super) fn exception_summary(attributes: &[KeyValue]) -> String {
    let text = |key| {
        attribute(attributes, key)
            .map(value_text)
            .unwrap_or_default()
    };
    let exception = crate::trace::failure::Exception {
        kind: text("exception.type"),
        message: text("exception.message"),
        stacktrace: String::new(),
    };
    one_line(&exception.summary())
}

/// `text` on one line of at most 200 characters.
pub(super) fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        line.chars().take(199).collect::<String>() + "…"
    } else {
        line
    }
}

pub(super) fn format_time(unix_nanos: i64) -> String {
    crate::cli::human::utc_millis(unix_nanos)
}

/// The shape of `--format json` (README, *Traces in integration tests*): bumped when a field
/// is removed or changes meaning; new fields do not bump it.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// A simplified JSON document: an array with one object per dispatch (`dispatch_json`).
pub fn json(chunks: &[StoredChunk]) -> Result<String> {
    let dispatches: Vec<Value> = chunks.iter().map(dispatch_json).collect();
    Ok(serde_json::to_string_pretty(&Value::Array(dispatches))? + "\n")
}

/// One dispatch with its spans, as `--format json` shows it (one per line while following).
pub fn dispatch_json(chunk: &StoredChunk) -> Value {
    let request = match decode(chunk) {
        Ok(request) => request,
        Err(e) => {
            return json!({
                "schema_version": JSON_SCHEMA_VERSION,
                "id": chunk.id,
                "event": chunk.event,
                "trace_id": chunk.trace_id,
                "error": format!("{e:#}"),
            })
        }
    };
    let resource: serde_json::Map<String, Value> = request
        .resource_spans
        .first()
        .and_then(|r| r.resource.as_ref())
        .map(|r| {
            r.attributes
                .iter()
                .map(|kv| (kv.key.clone(), value_json(&kv.value)))
                .collect()
        })
        .unwrap_or_default();
    let spans: Vec<Value> = scoped_spans(&request)
            .into_iter()
            .map(|(scope, s)| {
                let attributes = attributes_json(&s.attributes);
                let events: Vec<Value> = s
                    .events
                    .iter()
                    .map(|e| {
                        json!({
                            "name": e.name,
                            "time_unix_nano": e.time_unix_nano,
                            "attributes": attributes_json(&e.attributes),
                        })
                    })
                    .collect();
                let links: Vec<Value> = s
                    .links
                    .iter()
                    .map(|l| json!({"trace_id": hex(&l.trace_id), "span_id": hex(&l.span_id)}))
                    .collect();
                json!({
                    "name": s.name,
                    "trace_id": hex(&s.trace_id),
                    "span_id": hex(&s.span_id),
                    "parent_span_id": hex(&s.parent_span_id),
                    "kind": span::SpanKind::try_from(s.kind).map(|k| k.as_str_name()).unwrap_or("SPAN_KIND_UNSPECIFIED"),
                    "start_unix_nano": s.start_time_unix_nano,
                    "end_unix_nano": s.end_time_unix_nano,
                    "duration_ms": duration_ms(s),
                    "status": if is_error(s) { "ERROR" } else { "OK" },
                    "status_message": s.status.as_ref().map(|st| st.message.clone()).unwrap_or_default(),
                    "attributes": attributes,
                    "events": events,
                    "links": links,
                    "scope": scope,
                })
            })
            .collect();
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "id": chunk.id,
        "event": chunk.event,
        "trace_id": chunk.trace_id,
        "state": state_name(chunk.state),
        "priority": priority_name(chunk.priority),
        "started_at": format_time(chunk.started_at),
        "resource": resource,
        "spans": spans,
    })
}

/// One OTLP/JSON `ExportTraceServiceRequest` per line; chunks that do not decode are left out
/// (the other views name them).
pub fn otlp_json(chunks: &[StoredChunk]) -> Result<String> {
    let mut out = String::new();
    for chunk in chunks {
        let Ok(request) = decode(chunk) else {
            continue;
        };
        out.push_str(&serde_json::to_string(&request)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_chunk_is_named_not_fatal() {
        let chunk = StoredChunk {
            id: 1,
            state: STATE_PENDING,
            priority: 0,
            started_at: 0,
            event: "install".into(),
            trace_id: "abc".into(),
            payload: vec![0xff, 0xff, 0xff],
        };
        assert!(json(std::slice::from_ref(&chunk))
            .unwrap()
            .contains("\"error\""));
        assert_eq!(otlp_json(&[chunk]).unwrap(), "");
    }

    #[test]
    fn custom_spans_keep_their_scope_and_trace_in_json() {
        use crate::cli::tree::tests::{chunk_of, make};
        use opentelemetry_proto::tonic::trace::v1::span::Event;
        let ours = [7u8; 16];
        let mut custom = make(ours, 3, Some(2), "reconcile");
        custom.events.push(Event {
            name: "done".into(),
            ..Event::default()
        });
        let chunk = chunk_of(
            ours,
            vec![
                (
                    "juju-dispatch-trace",
                    vec![
                        make(ours, 1, None, "install"),
                        make(ours, 2, Some(1), "charm"),
                    ],
                ),
                ("mine", vec![custom, make([9; 16], 4, None, "elsewhere")]),
            ],
        );
        let document: Value = serde_json::from_str(&json(&[chunk]).unwrap()).unwrap();
        let spans = document[0]["spans"].as_array().unwrap();
        let reconcile = spans.iter().find(|s| s["name"] == "reconcile").unwrap();
        assert_eq!(reconcile["scope"], "mine");
        assert_eq!(reconcile["trace_id"], hex(&ours));
        assert_eq!(reconcile["events"][0]["name"], "done");
    }

    #[test]
    fn times_are_rendered_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_time(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
