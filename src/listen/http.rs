//! One HTTP/1.1 connection of the loopback receiver (README, *Your own spans and events*):
//! what charm code's OpenTelemetry SDK sends to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` during a
//! dispatch, and what it gets back.
//!
//! Pure bytes in, bytes out: a [`Conversation`] is one connection's state, fed what the socket
//! read and returning what to write; `server` owns the sockets. So every way a client can
//! frame a request is unit-tested here and fuzzed (`fuzz/fuzz_targets/receiver_http.rs`).
//!
//! It frames requests like a real collector's OTLP/HTTP receiver, so SDKs behave as they
//! would in production: `POST <path>` with `Content-Length` or chunked framing,
//! `Expect: 100-continue` (curl), keep-alive and pipelining. What can be refused from the head
//! alone is answered before the body is read, with a line of text, and the connection closed
//! (after draining what the client still sends, bounded): 404 for another path (the path
//! carries the dispatch's nonce), 405 for another method, 413 above the size cap, 415 for
//! another content type or encoding, 431 for oversized headers, 501 for a transfer coding
//! other than chunked. The body's meaning and its answer are `otlp`'s.
//!
//! Heads are parsed by httparse (ureq links it for responses); the framing around them is
//! ours: the sans-IO server in ureq's protocol crate (ureq-proto) is a feature ureq leaves
//! off, so using it would add its code rather than reuse it, and what this receiver answers
//! before reading a body, and how much it buffers, are its contract with untrusted clients,
//! pinned by the tests below and by fuzzing.

use super::inflate::{self, Encoding};
use super::otlp::{self, Content};
use super::{Limits, Received, Refusal};

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
        let request = inflate::inflate(encoding, &body, limits)
            .and_then(|bytes| otlp::decode(head.content, &bytes));
        let (status, response) = match request {
            Ok(request) => {
                let rejected = received.accept(request, limits);
                (200, otlp::success_body(head.content, rejected, limits))
            }
            Err(refusal) => {
                received.refused += 1;
                (refusal.status, otlp::error_body(head.content, &refusal))
            }
        };
        let close = !head.keep_alive;
        if close {
            self.state = State::Closed;
        }
        Step::Answered(http_response(
            status,
            otlp::content_type_name(head.content),
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
            content = Content::from_header(&value);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoding_found = Encoding::from_header(&value);
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
            return if over_head_limit(data.len() - at, limits) {
                malformed()
            } else {
                Dechunked::Partial
            };
        };
        if over_head_limit(line_end + 1, limits) {
            return malformed();
        }
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
                    return if over_head_limit(data.len() - trailers_start, limits) {
                        malformed()
                    } else {
                        Dechunked::Partial
                    };
                };
                if over_head_limit(at + end + 1 - trailers_start, limits) {
                    return malformed();
                }
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

/// Whether a chunk-size line, or the trailer section, is over the head limit, given how many
/// of its bytes came before its final LF. A complete line is measured the way a partial one
/// is (everything up to its CRLF's LF may have arrived alone), so the answer is the same
/// whether the request came in one read or in many.
fn over_head_limit(bytes_before_final_lf: usize, limits: &Limits) -> bool {
    bytes_before_final_lf > limits.max_head_bytes
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
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
    use crate::listen::test_requests::{exchange, post, request, span, status_of, PATH};
    use crate::listen::LIMITS;
    use prost::Message;

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

    /// Found by fuzzing: chunked trailers (or a chunk-size line) longer than the head limit
    /// were accepted when they arrived in one read and refused when they arrived in pieces.
    #[test]
    fn long_chunk_lines_and_trailers_get_the_same_answer_however_the_reads_split_them() {
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let long = "x".repeat(LIMITS.max_head_bytes);
        // Up to the final LF of the blank line that ends the trailers.
        let just_fits = "x".repeat(LIMITS.max_head_bytes - "X-T: \r\n\r".len());
        for (chunks, status) in [
            (format!("2\r\n{{}}\r\n0\r\nX-T: {long}\r\n\r\n"), 400),
            (format!("2;{long}\r\n{{}}\r\n0\r\n\r\n"), 400),
            (format!("2\r\n{{}}\r\n0\r\nX-T: {just_fits}\r\n\r\n"), 200),
        ] {
            let input = format!("{head}{chunks}").into_bytes();
            let (at_once, _, _) = exchange(&input);
            assert_eq!(status_of(&at_once), status, "{at_once}");
            for step in [1, 7, 100] {
                let mut conversation = Conversation::new();
                let mut received = Received::default();
                let mut in_pieces = Vec::new();
                for piece in input.chunks(step) {
                    in_pieces.extend(conversation.feed(piece, PATH, &LIMITS, &mut received));
                }
                assert_eq!(
                    at_once,
                    String::from_utf8_lossy(&in_pieces),
                    "in pieces of {step}"
                );
            }
        }
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
}
