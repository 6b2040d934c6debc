//! Requests and one-shot conversations for the listener's unit tests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::{Conversation, Received, LIMITS};

pub const PATH: &str = "/0123456789abcdef/v1/traces";

pub fn span(name: &str, id: u8) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: name.into(),
        ..Span::default()
    }
}

pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("mine".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

pub fn post(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Feeds `input` in one go; returns the output as text and what was received.
pub fn exchange(input: &[u8]) -> (String, Received, Conversation) {
    let mut conversation = Conversation::new();
    let mut received = Received::default();
    let out = conversation.feed(input, PATH, &LIMITS, &mut received);
    (
        String::from_utf8_lossy(&out).into_owned(),
        received,
        conversation,
    )
}

pub fn status_of(response: &str) -> u16 {
    response[9..12].parse().unwrap()
}
