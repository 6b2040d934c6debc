//! The record channel: the bytes any process that can open the FIFO writes, as the wrapper's
//! reader gets them (`channel::Collector`, `dispatch_shim::Record::decode`), and what the
//! wrapper makes of the records it keeps (a CLIENT span each, encoded into the store's chunk).
//!
//! Input: the raw stream, newline-separated records (seeds are real shim output).
#![no_main]

use dispatch::intercept::channel::{Collector, MAX_LINE};
use dispatch_fuzz::{builder, NONCE};
use dispatch_shim::{Record, MAX_LOG_TEXT, MAX_RECORD};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // The same stream read at once and in small pieces: where the reads split it must not
    // change what is kept (lines too long to be records are the one documented exception).
    let whole = collect(data, data.len().max(1));
    let pieces = collect(data, 1 + data.len() % 61);
    if data
        .split(|&b| b == b'\n')
        .all(|line| line.len() <= MAX_LINE)
    {
        assert_eq!(whole.records, pieces.records);
        assert_eq!(whole.ignored, pieces.ignored);
    }
    assert!(whole.records.iter().all(|r| r.nonce == NONCE));

    for line in data.split(|&b| b == b'\n') {
        let Some(record) = Record::decode(line) else {
            continue;
        };
        // What a shim could have written encodes to one atomic line that decodes back.
        let encoded = record.encode();
        assert!(encoded.len() <= MAX_RECORD);
        assert_eq!(encoded.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(encoded.last(), Some(&b'\n'));
        if record.nonce.len() <= 64 && record.log_text.len() <= MAX_LOG_TEXT {
            let again = Record::decode(&encoded[..encoded.len() - 1]).expect("re-encoded record");
            assert_eq!(
                (&again.nonce, &again.tool, again.pid, again.end),
                (&record.nonce, &record.tool, record.pid, record.end)
            );
            assert_eq!(
                (
                    again.start_unix_nanos,
                    again.end_unix_nanos,
                    again.arg_count
                ),
                (
                    record.start_unix_nanos,
                    record.end_unix_nanos,
                    record.arg_count
                )
            );
            assert!(record.args.starts_with(&again.args));
            assert!(record.traceparent.starts_with(&again.traceparent));
            assert_eq!(again.log_text, record.log_text);
        }
    }

    // Every kept record becomes a span of the dispatch's chunk.
    let builder = builder();
    let spans = whole.records.iter().map(|r| builder.tool_span(r)).collect();
    let payload = builder.encode(spans);
    let request = ExportTraceServiceRequest::decode(payload.as_slice()).expect("our own chunk");
    let kept: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(kept, whole.records.len());
});

fn collect(data: &[u8], step: usize) -> dispatch::intercept::channel::Collected {
    let mut collector = Collector::new(NONCE.to_string());
    for piece in data.chunks(step) {
        collector.feed(piece);
    }
    collector.finish(None)
}
