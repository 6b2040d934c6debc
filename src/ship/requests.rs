//! How the traces waiting in the store become HTTP request bodies (DESIGN §5: requests above
//! ~1 MiB are split).
//!
//! - Several chunks go in one request up to the destination's size (protobuf messages
//!   concatenate: the bytes of two `ExportTraceServiceRequest`s form one with both lists of
//!   spans, so a batch costs no decoding unless it must be cut or sent as JSON).
//! - A chunk larger than that is split into parts, each keeping its spans' resource and scope.
//! - What a destination refused for its content teaches its shape (`RequestShape`, kept in the
//!   store by `settings`): after a 413 its requests stay under half the refused size (never
//!   below `MIN_REQUEST_BYTES`), after a 400/422 on several chunks each chunk travels alone.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

use crate::config::Protocol;
use crate::store::settings::RequestShape;
use crate::store::{Queued, Store};

/// Requests are kept under this many bytes (more chunks wait for the next request).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Requests never shrink below this after a 413 (a single span larger than it still goes alone).
const MIN_REQUEST_BYTES: usize = 16 * 1024;

impl RequestShape {
    /// What was learnt about the destination with `key`, or the default shape.
    pub fn for_destination(store: &Store, key: &str) -> RequestShape {
        RequestShape::load(store, key).unwrap_or(RequestShape {
            max_bytes: MAX_REQUEST_BYTES,
            one_chunk_per_request: false,
        })
    }

    /// What a refusal of a request of `body_len` bytes holding `chunks` chunks teaches.
    pub fn learn(&mut self, status: u16, body_len: usize, chunks: usize) -> bool {
        let before = self.clone();
        match status {
            413 => self.max_bytes = (body_len / 2).clamp(MIN_REQUEST_BYTES, self.max_bytes),
            400 | 422 if chunks > 1 => self.one_chunk_per_request = true,
            _ => {}
        }
        *self != before
    }
}

/// Takes the next chunks that fit in one request (always at least one).
pub fn take_batch(pending: &mut Vec<Queued>, one_by_one: bool, max_bytes: usize) -> Vec<Queued> {
    let mut size = 0;
    let mut count = 0;
    for chunk in pending.iter() {
        if count > 0 && (one_by_one || size + chunk.size > max_bytes) {
            break;
        }
        size += chunk.size;
        count += 1;
    }
    pending.drain(..count).collect()
}

/// The request bodies for a batch: concatenated protobuf (or OTLP/JSON of the merged
/// request), split into parts under `max_bytes` when a single chunk is bigger.
pub fn encode(
    payloads: &[Vec<u8>],
    protocol: Protocol,
    max_bytes: usize,
) -> Result<(&'static str, Vec<Vec<u8>>), String> {
    let body = payloads.concat();
    if body.len() <= max_bytes && protocol == Protocol::HttpProtobuf {
        return Ok(("application/x-protobuf", vec![body]));
    }
    let request = ExportTraceServiceRequest::decode(body.as_slice())
        .map_err(|e| format!("a stored trace is not valid OTLP: {e}"))?;
    let parts = if body.len() <= max_bytes {
        vec![request]
    } else {
        split(request, max_bytes)
    };
    match protocol {
        Protocol::HttpProtobuf => Ok((
            "application/x-protobuf",
            parts.iter().map(Message::encode_to_vec).collect(),
        )),
        Protocol::HttpJson => {
            let bodies = parts
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(("application/json", bodies))
        }
    }
}

/// Splits a request into several whose encoded size stays under `max` (a single span larger
/// than that still travels alone), keeping every span's resource and scope.
pub fn split(request: ExportTraceServiceRequest, max: usize) -> Vec<ExportTraceServiceRequest> {
    let mut parts = Vec::new();
    let mut part = ExportTraceServiceRequest::default();
    let mut size = 0usize;
    // Which (resource, scope) the part's last group holds.
    let mut origin: Option<(usize, usize)> = None;
    for (ri, resource_spans) in request.resource_spans.into_iter().enumerate() {
        for (si, scope_spans) in resource_spans.scope_spans.into_iter().enumerate() {
            for span in scope_spans.spans {
                // The span plus its framing inside the request.
                let cost = span.encoded_len() + 16;
                if size > 0 && size + cost > max {
                    parts.push(std::mem::take(&mut part));
                    size = 0;
                    origin = None;
                }
                if origin != Some((ri, si)) {
                    let group = ResourceSpans {
                        resource: resource_spans.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: scope_spans.scope.clone(),
                            spans: Vec::new(),
                            schema_url: scope_spans.schema_url.clone(),
                        }],
                        schema_url: resource_spans.schema_url.clone(),
                    };
                    size += group.encoded_len() + 16;
                    part.resource_spans.push(group);
                    origin = Some((ri, si));
                }
                size += cost;
                if let Some(scope) = part
                    .resource_spans
                    .last_mut()
                    .and_then(|group| group.scope_spans.last_mut())
                {
                    scope.spans.push(span);
                }
            }
        }
    }
    if !part.resource_spans.is_empty() {
        parts.push(part);
    }
    parts
}
