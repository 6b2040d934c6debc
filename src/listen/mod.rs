//! The loopback OTLP/HTTP receiver for custom spans (README, *Your own spans and events*):
//! during a traced dispatch, charm code in any language exports its own spans with a standard
//! OpenTelemetry SDK to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which points here, and they
//! join the dispatch's trace.
//!
//! One file per layer, outermost first:
//! - `server`: the sockets (bind, poll, accept, read, write) and when to stop listening.
//! - `http`: one HTTP/1.1 connection as a [`Conversation`]: request heads, body framing,
//!   keep-alive, `100 Continue`, and the answers that need no body.
//! - `inflate`: `Content-Encoding: gzip` and `deflate` bodies.
//! - `otlp`: what a request means: the body decoded as an `ExportTraceServiceRequest`, the
//!   dispatch's bounds on what is kept ([`Received::accept`]), and the answer's body.
//! - `otlp_json`: the OTLP/JSON decoder `otlp` uses for `application/json`.
//!
//! Only `server` does I/O. Everything that reads untrusted input (any process in the unit can
//! connect) is pure, bytes in and bytes out, so it is unit-tested here and fuzzed by
//! `fuzz/fuzz_targets/receiver_http.rs` and `otlp_body.rs` (README *Tests and benchmarks*).
//! The caps every layer keeps ([`LIMITS`]) and the refusal they answer with are here.

mod http;
mod inflate;
mod otlp;
pub mod otlp_json;
mod server;
#[cfg(test)]
mod test_requests;

pub use http::{Conversation, State};
pub use otlp::Received;
pub use server::{poll_timeout, Server, GRACE};

/// Why a request is refused, as the HTTP status and a message for the client. Each layer
/// refuses what it finds wrong; `http` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The caps; see `LIMITS` for the values a dispatch uses.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers (and chunked trailers).
    pub max_head_bytes: usize,
    /// A request's body as sent (compressed or not).
    pub max_body_bytes: usize,
    /// A request's body after decompression.
    pub max_decoded_bytes: usize,
    /// Spans kept per dispatch.
    pub max_spans: usize,
    /// Encoded bytes of spans kept per dispatch (with their resources and scopes).
    pub max_span_bytes: usize,
}

/// A Python SDK batch is at most 512 spans (a few hundred KB); a dispatch's whole trace is
/// one store chunk and one export request, which must stay reasonable for the store's
/// 40 MiB and for a backend's request limit.
pub const LIMITS: Limits = Limits {
    max_head_bytes: 16 * 1024,
    max_body_bytes: 4 * 1024 * 1024,
    max_decoded_bytes: 8 * 1024 * 1024,
    max_spans: 5_000,
    max_span_bytes: 2 * 1024 * 1024,
};

/// The path that accepts traces: it carries the dispatch's nonce, so a process that does not
/// know it (it is only in the child's environment) cannot add spans.
pub fn traces_path(nonce: &str) -> String {
    format!("/{nonce}/v1/traces")
}
