//! Shipping stored traces over OTLP/HTTP within a hard time budget (DESIGN §5).
//!
//! Rules, in the order they matter:
//! - One wall-clock deadline for all export work of a dispatch; every request's timeout is what
//!   is left of it. The current trace goes first, then the backlog, best priority and oldest
//!   first, several chunks per request up to ~1 MiB (protobuf messages concatenate: the bytes of
//!   two `ExportTraceServiceRequest`s form one with both lists of spans).
//! - A chunk is marked shipped only after a 2xx. The first failure ends the export for this
//!   dispatch (nothing is retried now) and starts a backoff for the destination that grows with
//!   each failure, capped; `Retry-After` (429/503) sets it instead. While backing off, a
//!   dispatch makes no request at all. A new destination or `dispatch flush` resets it.
//! - Transport is a seam (`Transport`), so the rules are unit-tested without sockets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

use crate::config::Protocol;
use crate::destination::Destination;
use crate::store::{Store, StoredChunk};

/// Requests are kept under this many bytes (more chunks wait for the next request).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// First backoff after a failure, doubled per consecutive failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: String,
    /// Something the operator can fix (TLS, 4xx, bad URL), as opposed to an outage.
    pub actionable: bool,
    pub retry_after: Option<Duration>,
}

/// What the backend answered.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

/// Sends one request; `timeout` is the time left in the budget.
pub trait Transport {
    fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, Failure>;
}

/// The result of one export run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub chunks_sent: usize,
    pub requests: usize,
    pub failure: Option<Failure>,
    /// Export skipped: the destination is backing off until this unix time (seconds).
    pub backing_off_until: Option<u64>,
    /// Chunks left for later because the budget ran out.
    pub out_of_budget: bool,
    /// Stored chunks that do not decode and so can never be sent.
    pub unsendable: usize,
}

/// Backoff state kept in the store's settings.
const KEY_BACKOFF: &str = "export.backoff";
const KEY_LAST: &str = "export.last";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `<url>\t<failures>\t<until unix secs>`
#[derive(Debug, Clone, PartialEq, Eq)]
struct Backoff {
    url: String,
    failures: u32,
    until: u64,
}

impl Backoff {
    fn load(store: &Store) -> Option<Backoff> {
        let text = store.setting(KEY_BACKOFF).ok()??;
        let mut parts = text.split('\t');
        Some(Backoff {
            url: parts.next()?.to_string(),
            failures: parts.next()?.parse().ok()?,
            until: parts.next()?.parse().ok()?,
        })
    }

    fn save(&self, store: &Store) {
        let _ = store.set_setting(
            KEY_BACKOFF,
            Some(&format!("{}\t{}\t{}", self.url, self.failures, self.until)),
        );
    }
}

/// Forgets any backoff (destination changed, or `dispatch flush`).
pub fn reset_backoff(store: &Store) {
    let _ = store.set_setting(KEY_BACKOFF, None);
}

/// The last export's outcome, for `dispatch status`.
pub fn last_result(store: &Store) -> Option<String> {
    store.setting(KEY_LAST).ok().flatten()
}

/// What identifies a destination for its backoff: the URL and its CA, so that fixing either
/// (a new certificate from the relation, another `--ca-file`) counts as a new destination.
pub fn backoff_key(destination: &Destination) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    destination.ca.hash(&mut hasher);
    format!("{}#{:016x}", destination.url, hasher.finish())
}

/// Whether the destination is backing off now (no request should be made).
pub fn backing_off(store: &Store, destination: &Destination) -> bool {
    backoff_state(store, destination).is_some_and(|(_, until)| until > now_secs())
}

/// Backoff for the destination, if any: (consecutive failures, until unix secs).
pub fn backoff_state(store: &Store, destination: &Destination) -> Option<(u32, u64)> {
    let key = backoff_key(destination);
    Backoff::load(store)
        .filter(|b| b.url == key)
        .map(|b| (b.failures, b.until))
}

/// Records a failure that happened before any request (the client could not be built: a CA
/// that does not load, a bad proxy), with the same backoff as a failed request.
pub fn record_setup_failure(store: &Store, destination: &Destination, failure: Failure) {
    let backoff = Backoff::load(store).filter(|b| b.url == backoff_key(destination));
    let report = Report {
        failure: Some(failure),
        requests: 1,
        ..Report::default()
    };
    record(store, destination, &report, backoff);
}

fn backoff_after(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// Ships `first` (this dispatch's chunk id, if any) and then the backlog, until done, the
/// budget is spent, or a request fails. `ignore_backoff` is `dispatch flush`.
pub fn export(
    store: &mut Store,
    destination: &Destination,
    protocol: Protocol,
    transport: &dyn Transport,
    budget: Duration,
    first: Option<i64>,
    ignore_backoff: bool,
) -> Report {
    let deadline = Instant::now() + budget;
    let mut report = Report::default();
    let backoff = Backoff::load(store).filter(|b| b.url == backoff_key(destination));
    if let Some(backoff) = &backoff {
        if !ignore_backoff && backoff.until > now_secs() {
            report.backing_off_until = Some(backoff.until);
            return report;
        }
    }
    let mut one_by_one = false;
    let mut pending = match store.pending_chunks(first) {
        Ok(chunks) => chunks,
        Err(e) => {
            report.failure = Some(Failure {
                cause: format!("cannot read the trace store: {e}"),
                actionable: false,
                retry_after: None,
            });
            return report;
        }
    };
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            report.out_of_budget = true;
            break;
        }
        let batch = take_batch(&mut pending, one_by_one);
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let (content_type, parts) = match encode(&batch, protocol) {
            Ok(encoded) => encoded,
            Err(_) if batch.len() > 1 => {
                // One of them does not decode: go on one chunk at a time, so it holds back
                // nobody else.
                one_by_one = true;
                pending.splice(0..0, batch);
                continue;
            }
            Err(_) => {
                // This chunk can never be sent (eviction will take it); not the destination's
                // fault, so no failure and no backoff.
                report.unsendable += 1;
                continue;
            }
        };
        // A chunk too big for one request goes in parts; it counts as shipped once all are.
        let mut result = Ok(());
        for body in &parts {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                report.out_of_budget = true;
                result = Err(None);
                break;
            }
            report.requests += 1;
            if let Err(failure) = transport
                .post(&destination.url, content_type, body, left)
                .and_then(|answer| classify(answer, &destination.url))
            {
                result = Err(Some(failure));
                break;
            }
        }
        match result {
            Ok(()) => {
                if store.mark_shipped(&ids).is_ok() {
                    report.chunks_sent += ids.len();
                }
            }
            Err(failure) => {
                report.failure = failure;
                break;
            }
        }
    }
    record(store, destination, &report, backoff);
    report
}

/// Turns a status into success or a failure with its cause.
fn classify(answer: Answer, url: &str) -> Result<(), Failure> {
    let url = &crate::destination::redact_url(url);
    match answer.status {
        200..=299 => Ok(()),
        429 | 502..=504 => Err(Failure {
            cause: format!("{url} answered {} (busy or unavailable)", answer.status),
            actionable: false,
            // Retry-After only counts on 429 and 503 (DESIGN §5).
            retry_after: answer
                .retry_after
                .filter(|_| matches!(answer.status, 429 | 503)),
        }),
        400..=499 => Err(Failure {
            cause: format!("{url} rejected the traces with HTTP {}", answer.status),
            actionable: true,
            retry_after: None,
        }),
        status => Err(Failure {
            cause: format!("{url} answered HTTP {status}"),
            actionable: false,
            // Retry-After only counts on 429 and 503 (DESIGN §5); other errors back off.
            retry_after: None,
        }),
    }
}

/// Saves the outcome and the destination's backoff.
fn record(store: &Store, destination: &Destination, report: &Report, backoff: Option<Backoff>) {
    let summary = match &report.failure {
        None if report.requests == 0 => return,
        None => format!(
            "ok: {} dispatches sent to {}",
            report.chunks_sent, destination.url
        ),
        Some(failure) => format!(
            "failed after sending {} dispatches: {}",
            report.chunks_sent, failure.cause
        ),
    };
    let _ = store.set_setting(KEY_LAST, Some(&format!("{} at {}", summary, now_secs())));
    match &report.failure {
        None => reset_backoff(store),
        Some(failure) => {
            let failures = backoff.map_or(0, |b| b.failures) + 1;
            let wait = failure
                .retry_after
                .map(|r| r.min(MAX_BACKOFF))
                .unwrap_or_else(|| backoff_after(failures));
            Backoff {
                url: backoff_key(destination),
                failures,
                until: now_secs() + wait.as_secs().max(1),
            }
            .save(store);
        }
    }
}

/// Takes the next chunks that fit in one request (always at least one).
fn take_batch(pending: &mut Vec<StoredChunk>, one_by_one: bool) -> Vec<StoredChunk> {
    let mut size = 0;
    let mut count = 0;
    for chunk in pending.iter() {
        if count > 0 && (one_by_one || size + chunk.payload.len() > MAX_REQUEST_BYTES) {
            break;
        }
        size += chunk.payload.len();
        count += 1;
    }
    pending.drain(..count).collect()
}

/// The request bodies for a batch: concatenated protobuf (or OTLP/JSON of the merged
/// request), split into parts under `MAX_REQUEST_BYTES` when a single chunk is bigger.
fn encode(
    batch: &[StoredChunk],
    protocol: Protocol,
) -> Result<(&'static str, Vec<Vec<u8>>), String> {
    let mut body = Vec::with_capacity(batch.iter().map(|c| c.payload.len()).sum());
    for chunk in batch {
        body.extend_from_slice(&chunk.payload);
    }
    if body.len() <= MAX_REQUEST_BYTES && protocol == Protocol::HttpProtobuf {
        return Ok(("application/x-protobuf", vec![body]));
    }
    let request = ExportTraceServiceRequest::decode(body.as_slice())
        .map_err(|e| format!("a stored trace is not valid OTLP: {e}"))?;
    let parts = if body.len() <= MAX_REQUEST_BYTES {
        vec![request]
    } else {
        split(request, MAX_REQUEST_BYTES)
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
fn split(request: ExportTraceServiceRequest, max: usize) -> Vec<ExportTraceServiceRequest> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{Ca, Source};
    use crate::store::{NewChunk, Priority};
    use crate::test_support::Scratch;
    use std::cell::RefCell;

    struct Scripted {
        answers: RefCell<Vec<Result<Answer, Failure>>>,
        bodies: RefCell<Vec<Vec<u8>>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Answer, Failure>>) -> Scripted {
            Scripted {
                answers: RefCell::new(answers),
                bodies: RefCell::new(Vec::new()),
            }
        }
    }

    impl Transport for Scripted {
        fn post(&self, _: &str, _: &str, body: &[u8], _: Duration) -> Result<Answer, Failure> {
            self.bodies.borrow_mut().push(body.to_vec());
            let mut answers = self.answers.borrow_mut();
            if answers.is_empty() {
                return Ok(Answer {
                    status: 200,
                    retry_after: None,
                });
            }
            answers.remove(0)
        }
    }

    fn ok() -> Result<Answer, Failure> {
        Ok(Answer {
            status: 200,
            retry_after: None,
        })
    }

    fn status(code: u16, retry_after: Option<u64>) -> Result<Answer, Failure> {
        Ok(Answer {
            status: code,
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn store(name: &str, chunks: &[(Priority, usize)]) -> (Scratch, Store) {
        let scratch = Scratch::new(name);
        let mut store = Store::open(&scratch.path("t.db")).unwrap();
        let new: Vec<NewChunk> = chunks
            .iter()
            .enumerate()
            .map(|(i, (priority, size))| NewChunk {
                started_at: i as i64,
                event: format!("e{i}"),
                trace_id: format!("t{i}"),
                payload: vec![0x0a; *size],
                priority: *priority,
            })
            .collect();
        store.add_chunks(&new, 1 << 30).unwrap();
        (scratch, store)
    }

    fn destination() -> Destination {
        Destination {
            url: "http://127.0.0.1:9/v1/traces".into(),
            ca: Ca::System,
            source: Source::ConfigFile,
        }
    }

    /// A protobuf export of the whole backlog to `destination()`.
    fn run(
        store: &mut Store,
        transport: &Scripted,
        budget: Duration,
        ignore_backoff: bool,
    ) -> Report {
        export(
            store,
            &destination(),
            Protocol::HttpProtobuf,
            transport,
            budget,
            None,
            ignore_backoff,
        )
    }

    fn pending(store: &Store) -> usize {
        store.pending_chunks(None).unwrap().len()
    }

    #[test]
    fn everything_pending_is_sent_and_marked_shipped_after_a_2xx() {
        let (_s, mut store) = store("all", &[(Priority::Quiet, 10), (Priority::Failed, 10)]);
        let transport = Scripted::new(vec![]);
        let report = run(&mut store, &transport, Duration::from_secs(1), false);
        assert_eq!(report.chunks_sent, 2);
        assert_eq!(report.requests, 1, "small chunks share one request");
        assert_eq!(pending(&store), 0);
    }

    #[test]
    fn a_failure_stops_the_export_keeps_the_chunks_and_backs_off() {
        let (_s, mut store) = store("fail", &[(Priority::Quiet, 10)]);
        let transport = Scripted::new(vec![status(500, None)]);
        let report = run(&mut store, &transport, Duration::from_secs(1), false);
        assert_eq!(report.chunks_sent, 0);
        assert!(report.failure.is_some());
        assert_eq!(pending(&store), 1);
        // The next dispatch makes no request at all.
        let again = Scripted::new(vec![]);
        let report = run(&mut store, &again, Duration::from_secs(1), false);
        assert!(report.backing_off_until.is_some());
        assert!(again.bodies.borrow().is_empty());
        // `dispatch flush` ignores the backoff; success clears it.
        let report = run(&mut store, &again, Duration::from_secs(1), true);
        assert_eq!(report.chunks_sent, 1);
        assert_eq!(backoff_state(&store, &destination()), None);
    }

    #[test]
    fn retry_after_sets_the_backoff_and_a_new_destination_ignores_it() {
        let (_s, mut store) = store("retry", &[(Priority::Quiet, 10)]);
        let transport = Scripted::new(vec![status(429, Some(120))]);
        run(&mut store, &transport, Duration::from_secs(1), false);
        let (failures, until) = backoff_state(&store, &destination()).unwrap();
        assert_eq!(failures, 1);
        assert!(until >= now_secs() + 119);
        let other = Destination {
            url: "http://127.0.0.1:10/v1/traces".into(),
            ..destination()
        };
        let report = export(
            &mut store,
            &other,
            Protocol::HttpProtobuf,
            &Scripted::new(vec![]),
            Duration::from_secs(1),
            None,
            false,
        );
        assert_eq!(report.chunks_sent, 1);
    }

    #[test]
    fn backoff_grows_per_failure_and_is_capped() {
        assert_eq!(backoff_after(1), FIRST_BACKOFF);
        assert_eq!(backoff_after(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff_after(40), MAX_BACKOFF);
    }

    #[test]
    fn the_current_dispatch_goes_first_then_failed_then_oldest() {
        let (_s, mut store) = store(
            "order",
            &[
                (Priority::Quiet, 700_000),
                (Priority::Failed, 700_000),
                (Priority::Quiet, 700_000),
            ],
        );
        let mut ids: Vec<i64> = store
            .pending_chunks(None)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        let current = *ids.last().unwrap();
        let order: Vec<i64> = store
            .pending_chunks(Some(current))
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(order, [current, ids[1], ids[0]]);
        // Each ~700 KB chunk needs its own request (1 MiB limit).
        let transport = Scripted::new(vec![ok(), ok(), status(503, None)]);
        let report = export(
            &mut store,
            &destination(),
            Protocol::HttpProtobuf,
            &transport,
            Duration::from_secs(1),
            Some(current),
            false,
        );
        assert_eq!(report.requests, 3);
        assert_eq!(report.chunks_sent, 2);
        assert_eq!(store.pending_chunks(None).unwrap()[0].id, ids[0]);
    }

    fn big_request(spans: usize, attribute_bytes: usize) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::Span;
        let span = |i: usize| Span {
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("s{i}"),
            attributes: vec![KeyValue {
                key: "blob".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(attribute_bytes))),
                }),
                ..KeyValue::default()
            }],
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans).map(span).collect(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn an_oversized_chunk_goes_in_parts_under_the_limit_with_every_span() {
        let request = big_request(3000, 1000);
        let total = request.encoded_len();
        assert!(total > 2 * MAX_REQUEST_BYTES);
        let parts = split(request, MAX_REQUEST_BYTES);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut names = Vec::new();
        for part in &parts {
            assert!(
                part.encoded_len() <= MAX_REQUEST_BYTES,
                "{}",
                part.encoded_len()
            );
            for group in &part.resource_spans {
                for scope in &group.scope_spans {
                    names.extend(scope.spans.iter().map(|s| s.name.clone()));
                }
            }
        }
        assert_eq!(names.len(), 3000);
        assert_eq!(names[2999], "s2999");
    }

    #[test]
    fn a_chunk_in_parts_is_shipped_only_when_every_part_was_accepted() {
        let (_s, mut store) = store("parts", &[]);
        let payload = big_request(3000, 1000).encode_to_vec();
        store
            .add_chunks(
                &[NewChunk {
                    started_at: 1,
                    event: "big".into(),
                    trace_id: "t".into(),
                    payload,
                    priority: Priority::Quiet,
                }],
                1 << 30,
            )
            .unwrap();
        let transport = Scripted::new(vec![ok(), status(500, None)]);
        let report = run(&mut store, &transport, Duration::from_secs(5), false);
        assert_eq!(report.chunks_sent, 0);
        assert_eq!(pending(&store), 1);
        let report = run(
            &mut store,
            &Scripted::new(vec![]),
            Duration::from_secs(5),
            true,
        );
        assert_eq!(report.chunks_sent, 1);
        assert!(report.requests >= 3);
    }

    #[test]
    fn an_undecodable_chunk_holds_back_nobody_and_does_not_back_off() {
        let (_s, mut store) = store("bad", &[]);
        let good = big_request(2, 10).encode_to_vec();
        let chunk = |payload: Vec<u8>| NewChunk {
            started_at: 1,
            event: "e".into(),
            trace_id: "t".into(),
            payload,
            priority: Priority::Quiet,
        };
        store
            .add_chunks(
                &[chunk(good.clone()), chunk(vec![0xff; 9]), chunk(good)],
                1 << 30,
            )
            .unwrap();
        let transport = Scripted::new(vec![]);
        let report = export(
            &mut store,
            &destination(),
            Protocol::HttpJson,
            &transport,
            Duration::from_secs(1),
            None,
            false,
        );
        assert_eq!(report.chunks_sent, 2);
        assert_eq!(report.unsendable, 1);
        assert!(report.failure.is_none());
        assert_eq!(backoff_state(&store, &destination()), None);
    }

    #[test]
    fn an_exhausted_budget_leaves_the_rest_for_later() {
        let (_s, mut store) = store("budget", &[(Priority::Quiet, 10)]);
        let report = export(
            &mut store,
            &destination(),
            Protocol::HttpProtobuf,
            &Scripted::new(vec![]),
            Duration::ZERO,
            None,
            false,
        );
        assert!(report.out_of_budget);
        assert_eq!(pending(&store), 1);
    }

    #[test]
    fn client_errors_are_actionable_and_outages_are_not() {
        let url = "http://x/v1/traces";
        let a = |status| {
            classify(
                Answer {
                    status,
                    retry_after: None,
                },
                url,
            )
        };
        assert!(a(204).is_ok());
        assert!(a(400).unwrap_err().actionable);
        assert!(a(404).unwrap_err().actionable);
        assert!(!a(429).unwrap_err().actionable);
        assert!(!a(500).unwrap_err().actionable);
        assert!(!a(503).unwrap_err().actionable);
    }
}
