//! What an OTLP/HTTP trace request means (README, *Your own spans and events*), once `http`
//! has its body and `inflate` has decompressed it: the body decoded by its content type
//! (protobuf with prost, JSON with `otlp_json`) into an `ExportTraceServiceRequest`, the
//! dispatch's bounds on what is kept, and the body of the answer.
//!
//! It answers like a real collector's OTLP/HTTP receiver, so SDKs behave as they would in
//! production: an empty `ExportTraceServiceResponse` in the request's encoding, with a
//! partial success when spans were turned away (SDKs do not retry those); for a body that
//! does not decode, a `google.rpc.Status` in the request's encoding, as the OTLP spec asks.
//!
//! Bounds, because a charm is not trusted to be small: what a dispatch keeps is capped in
//! spans and in bytes ([`Received::accept`]); the overflow is counted, for the root span.
//! (Each request's body is capped too, as sent by `http` and decompressed by `inflate`.)

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;

use super::{Limits, Refusal};

/// Spans accepted so far in this dispatch, and what was turned away.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// As sent: their own resources, scopes, ids, parents, events and links.
    pub resource_spans: Vec<ResourceSpans>,
    pub spans: usize,
    pub bytes: usize,
    /// Spans not kept: over the dispatch's bounds, or without valid ids.
    pub dropped: u64,
    /// Requests answered with an error status.
    pub refused: u64,
}

impl Received {
    /// Keeps the spans of `request` that fit the bounds (first come, first kept); returns how
    /// many were not kept. A resource or scope counts towards the bytes once, with its first
    /// kept span; resources and scopes left without spans are not kept.
    pub fn accept(&mut self, request: ExportTraceServiceRequest, limits: &Limits) -> u64 {
        let mut rejected = 0u64;
        for mut resource_spans in request.resource_spans {
            let resource_cost = resource_spans
                .resource
                .as_ref()
                .map_or(0, Message::encoded_len)
                + resource_spans.schema_url.len();
            let mut resource_charged = false;
            let mut kept_scopes = Vec::new();
            for mut scope_spans in std::mem::take(&mut resource_spans.scope_spans) {
                let scope_cost = scope_spans.scope.as_ref().map_or(0, Message::encoded_len)
                    + scope_spans.schema_url.len();
                let mut scope_charged = false;
                for span in std::mem::take(&mut scope_spans.spans) {
                    if !has_valid_ids(&span) {
                        rejected += 1;
                        continue;
                    }
                    let mut cost = span.encoded_len() + FRAMING_BYTES;
                    if !resource_charged {
                        cost += resource_cost + FRAMING_BYTES;
                    }
                    if !scope_charged {
                        cost += scope_cost + FRAMING_BYTES;
                    }
                    if self.spans >= limits.max_spans || self.bytes + cost > limits.max_span_bytes {
                        rejected += 1;
                        continue;
                    }
                    self.spans += 1;
                    self.bytes += cost;
                    resource_charged = true;
                    scope_charged = true;
                    scope_spans.spans.push(span);
                }
                if !scope_spans.spans.is_empty() {
                    kept_scopes.push(scope_spans);
                }
            }
            if !kept_scopes.is_empty() {
                resource_spans.scope_spans = kept_scopes;
                self.resource_spans.push(resource_spans);
            }
        }
        self.dropped += rejected;
        rejected
    }
}

/// Tag and length of an embedded message: an upper bound on what protobuf adds per message.
const FRAMING_BYTES: usize = 6;

/// A trace id of 16 bytes and a span id of 8, neither all zeroes, and a parent that is empty
/// or 8 bytes: what every backend requires.
fn has_valid_ids(span: &Span) -> bool {
    let nonzero = |id: &[u8]| id.iter().any(|&b| b != 0);
    span.trace_id.len() == 16
        && nonzero(&span.trace_id)
        && span.span_id.len() == 8
        && nonzero(&span.span_id)
        && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8)
}

/// The body's encoding, from `Content-Type`: the two the OTLP/HTTP spec defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Protobuf,
    Json,
}

impl Content {
    /// From a `Content-Type` value (lowercase); `None` for any other type.
    pub(super) fn from_header(value: &str) -> Option<Content> {
        match value.split(';').next().unwrap_or_default().trim() {
            "application/x-protobuf" | "application/protobuf" => Some(Content::Protobuf),
            "application/json" => Some(Content::Json),
            _ => None,
        }
    }
}

/// Decodes a (decompressed) request body.
pub(super) fn decode(
    content: Option<Content>,
    bytes: &[u8],
) -> Result<ExportTraceServiceRequest, Refusal> {
    match content {
        Some(Content::Protobuf) => ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            Refusal::new(
                400,
                format!("the body is not an OTLP protobuf ExportTraceServiceRequest: {e}"),
            )
        }),
        Some(Content::Json) => super::otlp_json::decode(bytes).map_err(|e| {
            Refusal::new(
                400,
                format!("the body is not an OTLP/JSON ExportTraceServiceRequest: {e}"),
            )
        }),
        None => Err(Refusal::new(415, "unsupported content type")),
    }
}

/// The answer's `Content-Type`: the request's, protobuf when it had none we take.
pub(super) fn content_type_name(content: Option<Content>) -> &'static str {
    match content {
        Some(Content::Json) => "application/json",
        _ => "application/x-protobuf",
    }
}

/// The `ExportTraceServiceResponse`: empty, or a partial success naming the spans not kept.
pub(super) fn success_body(content: Option<Content>, rejected: u64, limits: &Limits) -> Vec<u8> {
    let message = format!(
        "{rejected} span(s) not kept: invalid ids, or over this dispatch's bounds ({} spans, {} bytes)",
        limits.max_spans, limits.max_span_bytes
    );
    match content {
        Some(Content::Json) if rejected == 0 => b"{}".to_vec(),
        // int64 is a string in OTLP/JSON (proto3 JSON mapping).
        Some(Content::Json) => serde_json::json!({
            "partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": message}
        })
        .to_string()
        .into_bytes(),
        _ => ExportTraceServiceResponse {
            partial_success: (rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: rejected as i64,
                error_message: message,
            }),
        }
        .encode_to_vec(),
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP servers answer errors with.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The body of an error answer, in the request's encoding.
pub(super) fn error_body(content: Option<Content>, refusal: &Refusal) -> Vec<u8> {
    // gRPC codes: INVALID_ARGUMENT, RESOURCE_EXHAUSTED.
    let code = if refusal.status == 413 { 8 } else { 3 };
    match content {
        Some(Content::Json) => serde_json::json!({"code": code, "message": refusal.message})
            .to_string()
            .into_bytes(),
        _ => RpcStatus {
            code,
            message: refusal.message.clone(),
        }
        .encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::test_requests::{exchange, post, request, span, status_of, PATH};
    use crate::listen::{Conversation, State, LIMITS};
    use opentelemetry_proto::tonic::common::v1::any_value;

    #[test]
    fn a_protobuf_request_is_kept_and_answered_with_an_empty_response() {
        let body = request(vec![span("a", 1), span("b", 2)]).encode_to_vec();
        let (out, received, conversation) = exchange(&post("application/x-protobuf", "", &body));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: application/x-protobuf\r\n"));
        assert!(out.ends_with("Content-Length: 0\r\n\r\n"), "{out}");
        assert_eq!(received.spans, 2);
        assert_eq!(received.resource_spans.len(), 1);
        assert_eq!(conversation.state(), State::Open);
        assert!(!conversation.in_flight(), "an idle keep-alive connection");
    }

    #[test]
    fn json_as_sdks_send_it_decodes_hex_ids_integer_enums_and_string_integers() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"otel-cli"}}]},
          "scopeSpans":[{"scope":{"name":"my-lib","version":"1.0"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "parentSpanId":"eee19b7ec3c1b173","name":"render","kind":3,
            "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
            "attributes":[{"key":"n","value":{"intValue":"42"}},
                          {"key":"ok","value":{"boolValue":true}},
                          {"key":"list","value":{"arrayValue":{"values":[{"doubleValue":1.5}]}}}],
            "events":[{"timeUnixNano":"1544712660500000000","name":"written",
                       "attributes":[{"key":"bytes","value":{"intValue":10}}]}],
            "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}],
            "status":{"code":2,"message":"boom"},
            "unknownField":"ignored"}]}]}]}"#;
        let (out, received, _) = exchange(&post("application/json; charset=utf-8", "", body));
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("Content-Type: application/json"));
        assert!(out.ends_with("\r\n\r\n{}"), "{out}");
        let scope = &received.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "my-lib");
        let span = &scope.spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(
            span.parent_span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
        );
        assert_eq!(span.kind, 3);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        assert_eq!(span.events[0].name, "written");
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn a_malformed_body_is_a_400_with_a_status_and_the_connection_stays_usable() {
        let mut input = post("application/x-protobuf", "", b"\xff\xff\xff\xff");
        input.extend(post(
            "application/x-protobuf",
            "",
            &request(vec![span("a", 1)]).encode_to_vec(),
        ));
        let (out, received, conversation) = exchange(&input);
        assert_eq!(status_of(&out), 400, "{out}");
        let status_body = &out[out.find("\r\n\r\n").unwrap() + 4..out.rfind("HTTP/1.1").unwrap()];
        let status = RpcStatus::decode(status_body.as_bytes()).unwrap();
        assert_eq!(status.code, 3);
        assert!(status.message.contains("protobuf"));
        assert!(out.contains("HTTP/1.1 200 OK"), "the next request: {out}");
        assert_eq!((received.refused, received.spans), (1, 1));
        assert_eq!(conversation.state(), State::Open);

        let (out, _, _) = exchange(&post("application/json", "", b"{not json"));
        assert_eq!(status_of(&out), 400);
        assert!(out.contains(r#""code":3"#), "{out}");
    }

    #[test]
    fn the_dispatch_bounds_keep_the_first_spans_and_answer_a_partial_success() {
        let limits = Limits {
            max_spans: 3,
            ..LIMITS
        };
        let mut received = Received::default();
        let spans = (1..=5).map(|i| span("s", i)).collect();
        assert_eq!(received.accept(request(spans), &limits), 2);
        assert_eq!((received.spans, received.dropped), (3, 2));
        assert_eq!(received.accept(request(vec![span("t", 9)]), &limits), 1);
        assert_eq!(
            received.resource_spans.len(),
            1,
            "nothing left of the second"
        );

        let mut conversation = Conversation::new();
        let mut received = Received::default();
        let body = request((1..=5).map(|i| span("s", i)).collect()).encode_to_vec();
        let out = conversation.feed(
            &post("application/x-protobuf", "", &body),
            PATH,
            &limits,
            &mut received,
        );
        let text = String::from_utf8_lossy(&out);
        let response =
            ExportTraceServiceResponse::decode(&out[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(response.partial_success.unwrap().rejected_spans, 2);
        let out = conversation.feed(
            &post("application/json", "", br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"07070707070707070707070707070707","spanId":"0909090909090909"}]}]}]}"#),
            PATH,
            &limits,
            &mut received,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with(r#""rejectedSpans":"1"}}"#) || text.contains(r#""rejectedSpans":"1""#),
            "{text}"
        );

        let bytes = Limits {
            max_span_bytes: 200,
            ..LIMITS
        };
        let mut received = Received::default();
        let big = Span {
            name: "x".repeat(300),
            ..span("big", 1)
        };
        assert_eq!(
            received.accept(request(vec![span("a", 2), big, span("b", 3)]), &bytes),
            1
        );
        assert!(received.bytes <= 200);
        assert_eq!(received.spans, 2);
    }

    #[test]
    fn spans_without_valid_ids_are_not_kept() {
        let mut received = Received::default();
        let bad = [
            Span {
                trace_id: vec![0; 16],
                ..span("zero trace", 1)
            },
            Span {
                span_id: vec![1; 4],
                ..span("short span id", 1)
            },
            Span {
                parent_span_id: vec![1; 3],
                ..span("bad parent", 1)
            },
        ];
        assert_eq!(received.accept(request(bad.to_vec()), &LIMITS), 3);
        assert!(received.resource_spans.is_empty());
        assert_eq!(received.bytes, 0);
    }
}
