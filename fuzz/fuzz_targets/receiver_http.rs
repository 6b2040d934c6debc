//! The loopback OTLP/HTTP receiver for custom spans (`listen::Conversation::feed`): any
//! process in the unit can connect to it, so every byte of the connection is outside input
//! (request line, headers, framing, chunking, gzip/deflate, protobuf and JSON bodies).
//!
//! Input: what a client writes on one connection (seeds post to `dispatch_fuzz::TRACES_PATH`).
//! It is fed at once and in small pieces, with the dispatch's real limits and with small ones:
//! the answers must not depend on how the reads split the stream, and the bounds must hold.
#![no_main]

use dispatch::listen::{Conversation, Limits, Received, LIMITS};
use dispatch_fuzz::{SMALL_LIMITS, TRACES_PATH};
use libfuzzer_sys::fuzz_target;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    for limits in [LIMITS, SMALL_LIMITS] {
        let (whole, whole_received) = converse(data, data.len().max(1), &limits);
        let (pieces, pieces_received) = converse(data, 1 + data.len() % 53, &limits);
        // `100 Continue` is only for a request whose body has not all arrived yet.
        assert_eq!(
            without_continue(&whole),
            without_continue(&pieces),
            "answers differ by how the reads split the input"
        );
        for received in [&whole_received, &pieces_received] {
            assert!(received.spans <= limits.max_spans);
            assert!(received.bytes <= limits.max_span_bytes);
        }
        assert_eq!(whole_received.spans, pieces_received.spans);
        assert_eq!(whole_received.refused, pieces_received.refused);
    }
});

fn converse(data: &[u8], step: usize, limits: &Limits) -> (Vec<u8>, Received) {
    let mut conversation = Conversation::new();
    let mut received = Received::default();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        let answer = conversation.feed(piece, TRACES_PATH, limits, &mut received);
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 "));
        out.extend(answer);
    }
    conversation.end_of_input();
    (out, received)
}

fn without_continue(out: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(out.len());
    let mut rest = out;
    while !rest.is_empty() {
        if rest.starts_with(CONTINUE) {
            rest = &rest[CONTINUE.len()..];
        } else {
            kept.push(rest[0]);
            rest = &rest[1..];
        }
    }
    kept
}
