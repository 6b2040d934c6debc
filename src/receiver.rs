//! The wire side of the loopback OTLP/HTTP receiver (README, *Your own spans and events*): what charm code's OpenTelemetry
//! SDK sends to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` during a dispatch, and what it gets back.
//!
//! Pure bytes in, bytes out: a [`Conversation`] is one HTTP/1.1 connection's state, fed what
//! the socket read and returning what to write; `loopback` owns the sockets. Everything that
//! parses untrusted input is here, so it is unit-tested here (and fuzzed: `fuzz/`, README *Tests and benchmarks*).
//!
//! It answers like a real collector's OTLP/HTTP receiver, so SDKs behave as they would in
//! production: `POST <path>` with `application/x-protobuf` or `application/json`, optionally
//! `Content-Encoding: gzip` or `deflate` (what the Python, Go and JS exporters can send),
//! `Content-Length` or chunked framing, `Expect: 100-continue` (curl), keep-alive and
//! pipelining. 200 with an empty `ExportTraceServiceResponse` in the request's encoding (with a
//! partial success when spans were turned away: SDKs do not retry those); 400 for a body that
//! does not decode (with a `google.rpc.Status` in the request's encoding, as the OTLP spec
//! asks), 404 for another path (the path carries the dispatch's nonce), 405 for another
//! method, 413 above the size caps, 415 for another content type or encoding, 431 for
//! oversized headers (these, found before the body is read, with a line of text, and the
//! connection closed).
//!
//! Bounds, because a charm is not trusted to be small: each request's body is capped as sent
//! and after decompression, and what a dispatch keeps is capped in spans and in bytes
//! ([`Received::accept`]); the overflow is counted, for the root span.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;

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

/// Where a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading requests.
    Open,
    /// An error was answered before the body was read: what the client still sends is read
    /// and thrown away (closing with unread data would reset the connection, and the client
    /// could lose the answer), up to `left` bytes; then the connection is closed.
    Draining { left: usize },
    /// Nothing more to read: close once the output is written.
    Closed,
}

/// Beyond this, an early error's body is not drained: the connection is just closed.
const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conversation {
    buffer: Vec<u8>,
    state: State,
    /// `100 Continue` already sent for the request being received.
    continue_sent: bool,
    answered: u64,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation::new()
    }
}

impl Conversation {
    pub fn new() -> Conversation {
        Conversation {
            buffer: Vec::new(),
            state: State::Open,
            continue_sent: false,
            answered: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a request is on its way: partly received, or none yet on a new connection.
    /// (An idle keep-alive connection between requests is not.)
    pub fn in_flight(&self) -> bool {
        self.state == State::Open && (!self.buffer.is_empty() || self.answered == 0)
    }

    /// The peer closed its side: a partial request is abandoned.
    pub fn end_of_input(&mut self) {
        self.state = State::Closed;
        self.buffer = Vec::new();
    }

    /// Takes bytes read from the connection; answers every request they complete. Returns
    /// what to write (possibly nothing).
    pub fn feed(
        &mut self,
        bytes: &[u8],
        path: &str,
        limits: &Limits,
        received: &mut Received,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        match self.state {
            State::Closed => return out,
            State::Draining { left } => {
                let left = left.saturating_sub(bytes.len());
                self.state = if left == 0 {
                    State::Closed
                } else {
                    State::Draining { left }
                };
                return out;
            }
            State::Open => {}
        }
        self.buffer.extend_from_slice(bytes);
        while !self.buffer.is_empty() && self.state == State::Open {
            match self.next_request(path, limits, received) {
                Step::NeedMore(interim) => {
                    out.extend(interim);
                    break;
                }
                Step::Answered(answer) => out.extend(answer),
            }
        }
        out
    }

    fn next_request(&mut self, path: &str, limits: &Limits, received: &mut Received) -> Step {
        let head = match parse_head(&self.buffer, limits) {
            Parsed::Partial => return Step::NeedMore(Vec::new()),
            Parsed::Bad(refusal) => return self.refuse(refusal, Framing::Unknown, 0, received),
            Parsed::Complete(head) => head,
        };
        let body_start = head.length;
        // What was found wrong before reading the body is answered at once.
        if let Err(refusal) = head.check(path, limits) {
            let buffered = self.buffer.len() - body_start;
            return self.refuse(refusal, head.framing, buffered, received);
        }
        let body_range = match head.framing {
            Framing::Length(length) => {
                let end = body_start + length;
                if self.buffer.len() < end {
                    return Step::NeedMore(self.interim(&head));
                }
                Ok((self.buffer[body_start..end].to_vec(), end))
            }
            Framing::Chunked => match dechunk(&self.buffer[body_start..], limits) {
                // Chunk framing can outweigh the data it frames: bound what is buffered too.
                Dechunked::Partial
                    if self.buffer.len() - body_start > 2 * limits.max_body_bytes =>
                {
                    Err(too_large(limits))
                }
                Dechunked::Partial => return Step::NeedMore(self.interim(&head)),
                Dechunked::Complete { body, used } => Ok((body, body_start + used)),
                Dechunked::Refused(refusal) => Err(refusal),
            },
            // `check` refused these.
            Framing::Unknown | Framing::Unsupported => {
                Err(Refusal::new(400, "the request has no usable framing"))
            }
        };
        let (body, used) = match body_range {
            Ok(found) => found,
            Err(refusal) => {
                let buffered = self.buffer.len() - body_start;
                return self.refuse(refusal, Framing::Chunked, buffered, received);
            }
        };
        self.buffer.drain(..used);
        self.continue_sent = false;
        self.answered += 1;
        let encoding = head.encoding.clone().unwrap_or(Encoding::Identity);
        let (status, response) = match decode(head.content, encoding, &body, limits) {
            Ok(request) => {
                let rejected = received.accept(request, limits);
                (200, success_body(head.content, rejected, limits))
            }
            Err(refusal) => {
                received.refused += 1;
                (refusal.status, error_body(head.content, &refusal))
            }
        };
        let close = !head.keep_alive;
        if close {
            self.state = State::Closed;
        }
        Step::Answered(http_response(
            status,
            content_type_name(head.content),
            &response,
            close,
        ))
    }

    /// `100 Continue` for a client that waits for it before sending the body (once).
    fn interim(&mut self, head: &Head) -> Vec<u8> {
        if head.expects_continue && !self.continue_sent {
            self.continue_sent = true;
            return b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        }
        Vec::new()
    }

    /// Answers an error found before the body was read, and closes: the rest of the body
    /// (what the framing says is still to come, bounded) is drained first.
    fn refuse(
        &mut self,
        refusal: Refusal,
        framing: Framing,
        buffered: usize,
        received: &mut Received,
    ) -> Step {
        received.refused += 1;
        self.answered += 1;
        self.buffer = Vec::new();
        let left = match framing {
            Framing::Length(length) if length <= MAX_DRAIN_BYTES => length.saturating_sub(buffered),
            Framing::Length(_) | Framing::Chunked => MAX_DRAIN_BYTES,
            Framing::Unknown | Framing::Unsupported => 0,
        };
        self.state = if left == 0 {
            State::Closed
        } else {
            State::Draining { left }
        };
        let body = format!("{}\n", refusal.message);
        Step::Answered(http_response(
            refusal.status,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            true,
        ))
    }
}

enum Step {
    /// The request is incomplete; write this meanwhile (a `100 Continue`, or nothing).
    NeedMore(Vec<u8>),
    Answered(Vec<u8>),
}

/// Why a request is refused, as the status and a message for the client.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// A transfer coding other than chunked: the body's end cannot be found.
    Unsupported,
    /// The head itself could not be read.
    Unknown,
}

/// What the request line and headers say.
#[derive(Debug)]
struct Head {
    /// Bytes of the request line and headers, blank line included.
    length: usize,
    method: String,
    path: String,
    content: Option<Content>,
    /// `Err` holds the unsupported value.
    encoding: Result<Encoding, String>,
    framing: Framing,
    expects_continue: bool,
    keep_alive: bool,
}

impl Head {
    /// Refusals that need no body, in the order a collector checks them.
    fn check(&self, path: &str, limits: &Limits) -> Result<(), Refusal> {
        let requested = self.path.split('?').next().unwrap_or_default();
        if requested != path {
            return Err(Refusal::new(404, "not found"));
        }
        if self.method != "POST" {
            return Err(Refusal::new(405, "only POST is supported"));
        }
        if self.content.is_none() {
            return Err(Refusal::new(
                415,
                "Content-Type must be application/x-protobuf or application/json",
            ));
        }
        if let Err(value) = &self.encoding {
            return Err(Refusal::new(
                415,
                format!("Content-Encoding {value:?} is not supported (gzip, deflate or none)"),
            ));
        }
        match self.framing {
            Framing::Length(length) if length > limits.max_body_bytes => Err(too_large(limits)),
            Framing::Unsupported => Err(Refusal::new(
                501,
                "only chunked transfer coding is supported",
            )),
            Framing::Unknown => Err(Refusal::new(400, "bad request framing")),
            _ => Ok(()),
        }
    }
}

enum Parsed {
    Partial,
    Complete(Head),
    Bad(Refusal),
}

fn parse_head(buffer: &[u8], limits: &Limits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    // Only as much as a head may take (and one byte more, to know it is too long): what lies
    // beyond must not decide the answer, or it would depend on how the reads split the input
    // (found by fuzzing: a malformed line past the limit gave 400 or 431).
    let window = &buffer[..buffer.len().min(limits.max_head_bytes + 1)];
    let length = match request.parse(window) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() > limits.max_head_bytes => {
            return Parsed::Bad(Refusal::new(431, "request headers too large"))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Refusal::new(431, "too many request headers"))
        }
        Err(_) => return Parsed::Bad(Refusal::new(400, "malformed HTTP request")),
    };
    if length > limits.max_head_bytes {
        return Parsed::Bad(Refusal::new(431, "request headers too large"));
    }
    let version = request.version.unwrap_or(1);
    let mut content = None;
    let mut encoding_found = Ok(Encoding::Identity);
    let mut length_header: Option<Result<usize, ()>> = None;
    let mut transfer: Option<String> = None;
    let mut expects_continue = false;
    let mut connection = String::new();
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value)
            .trim()
            .to_ascii_lowercase();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-type") {
            content = match value.split(';').next().unwrap_or_default().trim() {
                "application/x-protobuf" | "application/protobuf" => Some(Content::Protobuf),
                "application/json" => Some(Content::Json),
                _ => None,
            };
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoding_found = match value.as_str() {
                "" | "identity" => Ok(Encoding::Identity),
                "gzip" | "x-gzip" => Ok(Encoding::Gzip),
                "deflate" => Ok(Encoding::Deflate),
                other => Err(other.to_string()),
            };
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = value
                .parse::<usize>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
            // Two different lengths: the framing cannot be trusted (request smuggling).
            length_header = match (length_header, parsed) {
                (None, Some(n)) => Some(Ok(n)),
                (Some(Ok(m)), Some(n)) if m == n => Some(Ok(n)),
                _ => Some(Err(())),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer = Some(match transfer {
                Some(before) => format!("{before}, {value}"),
                None => value,
            });
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value == "100-continue";
        } else if name.eq_ignore_ascii_case("connection") {
            connection = value;
        }
    }
    let framing = match (&transfer, length_header) {
        (Some(codings), _) => {
            let last = codings.rsplit(',').next().unwrap_or_default().trim();
            if last == "chunked" {
                Framing::Chunked
            } else {
                Framing::Unsupported
            }
        }
        (None, Some(Ok(n))) => Framing::Length(n),
        (None, Some(Err(()))) => Framing::Unknown,
        (None, None) => Framing::Length(0),
    };
    let closes = connection.split(',').any(|t| t.trim() == "close");
    let keeps = connection.split(',').any(|t| t.trim() == "keep-alive");
    let keep_alive = if version == 0 { keeps } else { !closes };
    Parsed::Complete(Head {
        length,
        method: request.method.unwrap_or_default().to_string(),
        path: request.path.unwrap_or_default().to_string(),
        content,
        encoding: encoding_found,
        framing,
        expects_continue,
        keep_alive,
    })
}

enum Dechunked {
    Partial,
    Complete { body: Vec<u8>, used: usize },
    Refused(Refusal),
}

const MAX_CHUNKS: usize = 4096;

fn too_large(limits: &Limits) -> Refusal {
    Refusal::new(
        413,
        format!("the body is over {} bytes", limits.max_body_bytes),
    )
}

/// Reads a chunked body from the start of `data` (RFC 9112 §7.1). Data is copied only once
/// the body is complete, so a large body arriving in many reads is not copied each time.
fn dechunk(data: &[u8], limits: &Limits) -> Dechunked {
    let malformed = || Dechunked::Refused(Refusal::new(400, "malformed chunked body"));
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut total = 0usize;
    let mut at = 0usize;
    loop {
        let Some(line_end) = find_crlf(&data[at..]) else {
            return if data.len() - at > limits.max_head_bytes {
                malformed()
            } else {
                Dechunked::Partial
            };
        };
        let line = &data[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).unwrap_or("").trim();
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return malformed();
        }
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return malformed();
        };
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, then a blank line.
            let trailers_start = at;
            loop {
                let Some(end) = find_crlf(&data[at..]) else {
                    return if data.len() - trailers_start > limits.max_head_bytes {
                        malformed()
                    } else {
                        Dechunked::Partial
                    };
                };
                at += end + 2;
                if end == 0 {
                    break;
                }
            }
            let mut body = Vec::with_capacity(total);
            for (start, end) in pieces {
                body.extend_from_slice(&data[start..end]);
            }
            return Dechunked::Complete { body, used: at };
        }
        total += size;
        if total > limits.max_body_bytes {
            return Dechunked::Refused(too_large(limits));
        }
        if data.len() < at + size + 2 {
            return Dechunked::Partial;
        }
        // Each read rescans the chunk headers: their number is bounded so that stays cheap
        // (exporters stream in chunks of kilobytes; a few thousand is megabytes).
        if pieces.len() == MAX_CHUNKS {
            return Dechunked::Refused(too_large(limits));
        }
        pieces.push((at, at + size));
        at += size;
        if &data[at..at + 2] != b"\r\n" {
            return malformed();
        }
        at += 2;
    }
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
}

/// Decompresses and decodes a request body.
fn decode(
    content: Option<Content>,
    encoding: Encoding,
    body: &[u8],
    limits: &Limits,
) -> Result<ExportTraceServiceRequest, Refusal> {
    let inflated;
    let bytes = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => {
            inflated = gunzip(body, limits)?;
            &inflated
        }
        Encoding::Deflate => {
            // HTTP's `deflate` is zlib-wrapped; some clients send raw deflate instead.
            use miniz_oxide::inflate::{
                decompress_to_vec_with_limit, decompress_to_vec_zlib_with_limit,
            };
            let max = limits.max_decoded_bytes;
            let result = if looks_like_zlib(body) {
                decompress_to_vec_zlib_with_limit(body, max)
            } else {
                decompress_to_vec_with_limit(body, max)
            };
            inflated = result.map_err(|e| inflate_refusal(&e, "deflate", limits))?;
            &inflated
        }
    };
    match content {
        Some(Content::Protobuf) => ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            Refusal::new(
                400,
                format!("the body is not an OTLP protobuf ExportTraceServiceRequest: {e}"),
            )
        }),
        Some(Content::Json) => crate::otlp_json::decode(bytes).map_err(|e| {
            Refusal::new(
                400,
                format!("the body is not an OTLP/JSON ExportTraceServiceRequest: {e}"),
            )
        }),
        None => Err(Refusal::new(415, "unsupported content type")),
    }
}

fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn inflate_refusal(
    error: &miniz_oxide::inflate::DecompressError,
    name: &str,
    limits: &Limits,
) -> Refusal {
    if error.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput {
        Refusal::new(
            413,
            format!(
                "the body is over {} bytes once decompressed",
                limits.max_decoded_bytes
            ),
        )
    } else {
        Refusal::new(400, format!("the body is not valid {name}: {error}"))
    }
}

/// A gzip member (RFC 1952) as exporters send it: one member, its CRC-32 and length
/// checked. (Several concatenated members, which no OTLP exporter sends, are refused.)
fn gunzip(body: &[u8], limits: &Limits) -> Result<Vec<u8>, Refusal> {
    let bad = |why: &str| Refusal::new(400, format!("the body is not valid gzip: {why}"));
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let [0x1f, 0x8b, 8, flags, _, _, _, _, _, _, rest @ ..] = body else {
        return Err(bad("no gzip header"));
    };
    let mut rest = rest;
    if flags & FEXTRA != 0 {
        let [low, high, tail @ ..] = rest else {
            return Err(bad("truncated header"));
        };
        let length = usize::from(*low) | usize::from(*high) << 8;
        rest = tail.get(length..).ok_or_else(|| bad("truncated header"))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("truncated header"))?;
            rest = &rest[end + 1..];
        }
    }
    if flags & FHCRC != 0 {
        rest = rest.get(2..).ok_or_else(|| bad("truncated header"))?;
    }
    let split = rest.len().checked_sub(8).ok_or_else(|| bad("truncated"))?;
    let (deflated, trailer) = rest.split_at(split);
    let out =
        miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, limits.max_decoded_bytes)
            .map_err(|e| inflate_refusal(&e, "gzip", limits))?;
    let word = |at: usize| {
        u32::from_le_bytes([
            trailer[at],
            trailer[at + 1],
            trailer[at + 2],
            trailer[at + 3],
        ])
    };
    if word(0) != crc32(&out) || word(4) != out.len() as u32 {
        return Err(bad("checksum or length mismatch"));
    }
    Ok(out)
}

/// CRC-32 (IEEE), byte at a time: gzip bodies are small, and a 1 KB table built at compile
/// time beats a dependency's 16 KB one.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

fn content_type_name(content: Option<Content>) -> &'static str {
    match content {
        Some(Content::Json) => "application/json",
        _ => "application/x-protobuf",
    }
}

/// The `ExportTraceServiceResponse`: empty, or a partial success naming the spans not kept.
fn success_body(content: Option<Content>, rejected: u64, limits: &Limits) -> Vec<u8> {
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

fn error_body(content: Option<Content>, refusal: &Refusal) -> Vec<u8> {
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Error",
    }
}

fn http_response(status: u16, content_type: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: POST\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use std::io::Write;

    const PATH: &str = "/0123456789abcdef/v1/traces";

    fn span(name: &str, id: u8) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            name: name.into(),
            ..Span::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
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

    fn post(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Feeds `input` in one go; returns the output as text and what was received.
    fn exchange(input: &[u8]) -> (String, Received, Conversation) {
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        let out = conversation.feed(input, PATH, &LIMITS, &mut received);
        (
            String::from_utf8_lossy(&out).into_owned(),
            received,
            conversation,
        )
    }

    fn status_of(response: &str) -> u16 {
        response[9..12].parse().unwrap()
    }

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

    /// Found by fuzzing: a head over the limit whose malformed line lay past the limit was
    /// answered 400 when read at once and 431 when read in pieces.
    #[test]
    fn a_head_over_the_limit_gets_the_same_answer_however_the_reads_split_it() {
        let mut input = format!("POST {PATH} HTTP/1.1\r\nHost: ").into_bytes();
        input.resize(LIMITS.max_head_bytes + 100, b'x');
        input.extend_from_slice(b"\r\nbad header line\r\n\r\n");
        let (at_once, _, _) = exchange(&input);
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        let mut in_pieces = Vec::new();
        for piece in input.chunks(7) {
            in_pieces.extend(conversation.feed(piece, PATH, &LIMITS, &mut received));
        }
        assert_eq!(status_of(&at_once), 431, "{at_once}");
        assert_eq!(at_once, String::from_utf8_lossy(&in_pieces));
    }

    #[test]
    fn a_request_split_across_reads_is_answered_once_complete() {
        let input = post(
            "application/x-protobuf",
            "",
            &request(vec![span("a", 1)]).encode_to_vec(),
        );
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        for (i, byte) in input.iter().enumerate() {
            let out = conversation.feed(&[*byte], PATH, &LIMITS, &mut received);
            assert_eq!(out.is_empty(), i + 1 < input.len(), "byte {i}");
            if i + 1 < input.len() {
                assert!(conversation.in_flight());
            }
        }
        assert_eq!(received.spans, 1);
    }

    #[test]
    fn pipelined_requests_are_all_answered_and_connection_close_is_honoured() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let mut input = post("application/x-protobuf", "", &body);
        input.extend(post(
            "application/x-protobuf",
            "Connection: close\r\n",
            &body,
        ));
        input.extend(post("application/x-protobuf", "", &body));
        let (out, received, conversation) = exchange(&input);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.contains("Connection: close"));
        assert_eq!(received.spans, 2, "nothing after Connection: close");
        assert_eq!(conversation.state(), State::Closed);
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
    fn gzip_and_deflate_bodies_are_inflated() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&body).unwrap();
        let raw = raw.finish().unwrap();
        for (encoding, bytes) in [("gzip", &gz), ("deflate", &zlib), ("deflate", &raw)] {
            let extra = format!("Content-Encoding: {encoding}\r\n");
            let (out, received, _) = exchange(&post("application/x-protobuf", &extra, bytes));
            assert!(out.starts_with("HTTP/1.1 200"), "{encoding}: {out}");
            assert_eq!(received.spans, 1, "{encoding}");
        }
        let (out, _, _) = exchange(&post(
            "application/x-protobuf",
            "Content-Encoding: gzip\r\n",
            &body,
        ));
        assert_eq!(status_of(&out), 400, "not gzip at all: {out}");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gzip_headers_with_optional_fields_and_bad_trailers() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let mut named = flate2::GzBuilder::new()
            .filename("spans.pb")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(&body).unwrap();
        let named = named.finish().unwrap();
        assert_eq!(gunzip(&named, &LIMITS).unwrap(), body);
        let mut corrupt = named.clone();
        let at = corrupt.len() - 8;
        corrupt[at] ^= 1;
        assert!(gunzip(&corrupt, &LIMITS)
            .unwrap_err()
            .message
            .contains("checksum"));
        for truncated in [
            &named[..5],
            &named[..named.len() - 3],
            &[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0, 9, 0][..],
        ] {
            assert_eq!(gunzip(truncated, &LIMITS).unwrap_err().status, 400);
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_decompressed_cap() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; LIMITS.max_decoded_bytes + 1])
            .unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < LIMITS.max_body_bytes);
        let (out, received, _) = exchange(&post(
            "application/x-protobuf",
            "Content-Encoding: gzip\r\n",
            &gz,
        ));
        assert_eq!(status_of(&out), 413, "{out}");
        assert_eq!(received.refused, 1);
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
    fn wrong_path_method_and_content_type_are_refused_before_the_body() {
        let cases: [(&str, u16); 5] = [
            ("POST /ffffffffffffffff/v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: 3\r\n\r\nabc", 404),
            ("POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: 3\r\n\r\nabc", 404),
            ("GET /0123456789abcdef/v1/traces HTTP/1.1\r\n\r\n", 405),
            ("POST /0123456789abcdef/v1/traces HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc", 415),
            ("POST /0123456789abcdef/v1/traces HTTP/1.1\r\nContent-Type: application/json\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc", 415),
        ];
        for (input, status) in cases {
            let (out, received, conversation) = exchange(input.as_bytes());
            assert_eq!(status_of(&out), status, "{input}: {out}");
            assert!(out.contains("Connection: close"));
            assert_eq!(received.refused, 1);
            assert_eq!(received.spans, 0);
            assert_eq!(conversation.state(), State::Closed, "{input}");
        }
        let (out, _, _) = exchange(b"GET /0123456789abcdef/v1/traces HTTP/1.1\r\n\r\n");
        assert!(out.contains("Allow: POST"));
        // The query string is not part of the path.
        let (out, _, _) = exchange(
            format!("POST {PATH}?x=1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        );
        assert_eq!(status_of(&out), 200, "{out}");
    }

    #[test]
    fn an_oversized_body_is_refused_from_its_length_and_the_rest_drained() {
        let length = LIMITS.max_body_bytes + 1;
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {length}\r\n\r\n"
        );
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        let out = conversation.feed(head.as_bytes(), PATH, &LIMITS, &mut received);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(status_of(&out), 413, "{out}");
        assert_eq!(conversation.state(), State::Draining { left: length });
        assert!(!conversation.in_flight());
        let out = conversation.feed(&vec![0; length - 10], PATH, &LIMITS, &mut received);
        assert!(out.is_empty());
        conversation.feed(&[0; 10], PATH, &LIMITS, &mut received);
        assert_eq!(conversation.state(), State::Closed);
    }

    #[test]
    fn expect_100_continue_gets_an_interim_answer_once() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        let out = conversation.feed(head.as_bytes(), PATH, &LIMITS, &mut received);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        let out = conversation.feed(&body[..1], PATH, &LIMITS, &mut received);
        assert!(out.is_empty());
        let out = conversation.feed(&body[1..], PATH, &LIMITS, &mut received);
        assert!(out.starts_with(b"HTTP/1.1 200 OK"));
    }

    #[test]
    fn chunked_bodies_are_reassembled_and_bad_chunks_refused() {
        let body = request(vec![span("a", 1)]).encode_to_vec();
        let (first, second) = body.split_at(5);
        let mut input = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
            first.len()
        )
        .into_bytes();
        input.extend(first);
        input.extend(format!("\r\n{:X}\r\n", second.len()).as_bytes());
        input.extend(second);
        input.extend(b"\r\n0\r\nTrailer: x\r\n\r\n");
        let (out, received, _) = exchange(&input);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!(received.spans, 1);
        // Fed byte by byte too.
        let mut conversation = Conversation::new();
        let mut received = Received::default();
        for byte in &input {
            conversation.feed(&[*byte], PATH, &LIMITS, &mut received);
        }
        assert_eq!(received.spans, 1);

        for bad in ["zz\r\nab\r\n0\r\n\r\n", "2\r\nabc\r\n0\r\n\r\n"] {
            let input = format!(
                "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n{bad}"
            );
            let (out, _, conversation) = exchange(input.as_bytes());
            assert_eq!(status_of(&out), 400, "{bad}: {out}");
            assert_ne!(conversation.state(), State::Open);
        }
        let input = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            LIMITS.max_body_bytes + 1
        );
        let (out, _, _) = exchange(input.as_bytes());
        assert_eq!(status_of(&out), 413, "{out}");
        // Framing that outweighs its data is bounded too.
        let mut input = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        input.extend(b"1\r\nx\r\n".repeat(MAX_CHUNKS + 1));
        let (out, _, _) = exchange(&input);
        assert_eq!(status_of(&out), 413, "{out}");
    }

    #[test]
    fn garbage_and_oversized_heads_are_refused_and_close() {
        for input in [
            b"\x00\x01\x02 not http\r\n\r\n".to_vec(),
            format!("POST {PATH} HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n").into_bytes(),
            format!("POST {PATH} HTTP/1.1\r\nContent-Length: -1\r\nContent-Type: application/json\r\n\r\n").into_bytes(),
        ] {
            let (out, received, conversation) = exchange(&input);
            assert_eq!(status_of(&out), 400, "{out}");
            assert_eq!(received.refused, 1);
            assert_eq!(conversation.state(), State::Closed);
        }
        let long = format!(
            "POST {PATH} HTTP/1.1\r\nX-Long: {}\r\n",
            "a".repeat(LIMITS.max_head_bytes)
        );
        let (out, _, conversation) = exchange(long.as_bytes());
        assert_eq!(status_of(&out), 431, "{out}");
        assert_eq!(conversation.state(), State::Closed);
        let (out, _, _) = exchange(
            format!("POST {PATH} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&out), 501, "{out}");
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        let input = format!(
            "POST {PATH} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (out, _, conversation) = exchange(input.as_bytes());
        assert!(out.contains("Connection: close"), "{out}");
        assert_eq!(conversation.state(), State::Closed);
        let input = input.replace("HTTP/1.0\r\n", "HTTP/1.0\r\nConnection: keep-alive\r\n");
        let (_, _, conversation) = exchange(input.as_bytes());
        assert_eq!(conversation.state(), State::Open);
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
