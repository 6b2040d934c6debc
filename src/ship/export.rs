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
//! - A request the backend refuses for its content teaches us its shape (`requests`): after a
//!   413 requests for that destination stay under half the refused size (a chunk larger than
//!   that goes in parts), and after a 400/422 on a request that held several chunks each chunk
//!   travels alone, so one chunk the backend cannot take holds back no other.
//! - What is persisted between dispatches (backoff, learnt shape, refused chunks, the last
//!   outcome) is `settings`'; how chunks become request bodies is `requests`'.
//! - Transport is a seam (`Transport`), so the rules are unit-tested without sockets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Protocol;
use crate::ship::destination::Destination;
use crate::ship::requests::{encode, take_batch};
use crate::store::settings::{Backoff, LastExport, Refused, RequestShape};
use crate::store::Store;

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
    /// The proxy the request went through (its URL, credentials redacted), if any.
    pub proxy: Option<String>,
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
    /// Chunks the backend refused for their content (400, 413, 422): kept, sent later.
    pub refused: usize,
    /// The export ended at a failed request (rather than going on past refused chunks).
    pub stopped_by_failure: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Forgets any backoff (destination changed, or `dispatch flush`).
pub fn reset_backoff(store: &Store) {
    Backoff::clear(store);
}

/// What identifies a destination for its backoff and what it refused (`destination::key`).
pub fn backoff_key(destination: &Destination) -> String {
    crate::ship::destination::key(destination)
}

/// Whether the destination is backing off now (no request should be made).
pub fn backing_off(store: &Store, destination: &Destination) -> bool {
    backoff_state(store, destination).is_some_and(|(_, until)| until > now_secs())
}

/// Backoff for the destination, if any: (consecutive failures, until unix secs).
pub fn backoff_state(store: &Store, destination: &Destination) -> Option<(u32, u64)> {
    let key = backoff_key(destination);
    Backoff::load(store)
        .filter(|b| b.key == key)
        .map(|b| (b.failures, b.until))
}

/// Records a failure that happened before any request (the client could not be built: a CA
/// that does not load, a bad proxy), with the same backoff as a failed request.
pub fn record_setup_failure(store: &Store, destination: &Destination, failure: Failure) {
    let backoff = Backoff::load(store).filter(|b| b.key == backoff_key(destination));
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
    let backoff = Backoff::load(store).filter(|b| b.key == backoff_key(destination));
    if let Some(backoff) = &backoff {
        if !ignore_backoff && backoff.until > now_secs() {
            report.backing_off_until = Some(backoff.until);
            return report;
        }
    }
    let key = backoff_key(destination);
    let mut shape = RequestShape::for_destination(store, &key);
    let mut one_by_one = false;
    let mut refused = Refused::load(store, &key);
    let mut pending = match store.pending_queue(first) {
        Ok(mut chunks) => {
            // Chunks the destination refused before go last (the sort is stable).
            chunks.sort_by_key(|chunk| refused.contains(&chunk.id));
            refused.retain(|id| chunks.iter().any(|chunk| chunk.id == *id));
            chunks
        }
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
        let batch = take_batch(
            &mut pending,
            one_by_one || shape.one_chunk_per_request,
            shape.max_bytes,
        );
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let loaded: rusqlite::Result<Vec<Option<Vec<u8>>>> =
            ids.iter().map(|id| store.payload(*id)).collect();
        let payloads: Vec<Vec<u8>> = match loaded {
            // (None: gone since the queue was read; only eviction removes chunks.)
            Ok(payloads) => payloads.into_iter().flatten().collect(),
            Err(e) => {
                report.failure = Some(Failure {
                    cause: format!("cannot read the trace store: {e}"),
                    actionable: false,
                    retry_after: None,
                });
                break;
            }
        };
        let (content_type, parts) = match encode(&payloads, protocol, shape.max_bytes) {
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
        let mut outcome = Sent::Accepted;
        for body in &parts {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                report.out_of_budget = true;
                outcome = Sent::OutOfBudget;
                break;
            }
            report.requests += 1;
            let answer = transport.post(&destination.url, content_type, body, left);
            let status = answer.as_ref().map_or(0, |answer| answer.status);
            if let Err(failure) = answer.and_then(|answer| classify(answer, &destination.url)) {
                outcome = if refused_for_content(status) {
                    if shape.learn(status, body.len(), ids.len()) {
                        shape.save(store, &key);
                    }
                    Sent::Refused(failure)
                } else {
                    Sent::Failed(failure)
                };
                break;
            }
        }
        match outcome {
            Sent::Accepted => {
                if store.mark_shipped(&ids).is_ok() {
                    report.chunks_sent += ids.len();
                    refused.retain(|id| !ids.contains(id));
                }
            }
            Sent::Refused(failure) => {
                // The destination works but will not take these: they wait at the back of the
                // queue (in a smaller request next time, if that is what it wants) and the rest
                // goes on now. They are not sent again in this dispatch.
                report.refused += ids.len();
                for id in &ids {
                    if !refused.contains(id) {
                        refused.push(*id);
                    }
                }
                report.failure = Some(failure);
            }
            Sent::Failed(failure) => {
                report.failure = Some(failure);
                report.stopped_by_failure = true;
                break;
            }
            Sent::OutOfBudget => break,
        }
    }
    Refused::save(store, &key, &refused);
    record(store, destination, &report, backoff);
    report
}

/// What became of one request's chunks.
enum Sent {
    Accepted,
    /// The backend refused the content (not the destination's health): others may go on.
    Refused(Failure),
    Failed(Failure),
    OutOfBudget,
}

/// Statuses by which a working backend says it will not take this request's content.
fn refused_for_content(status: u16) -> bool {
    matches!(status, 400 | 413 | 422)
}

/// Turns a status into success or a failure with its cause.
///
/// Through a proxy, only a 407 is surely the proxy's own answer; any other status may be the
/// backend's, relayed, or the proxy's (squid's 403 for a destination it does not allow, its
/// 502-504 when it cannot reach the backend), so it is classified as the backend's and the
/// cause names the proxy too: a 4xx from either is the operator's to fix, a 5xx from either
/// an outage.
fn classify(answer: Answer, url: &str) -> Result<(), Failure> {
    let url = &crate::ship::destination::redact_url(url);
    let through = answer
        .proxy
        .as_ref()
        .map_or(String::new(), |proxy| format!(" (through proxy {proxy})"));
    match answer.status {
        200..=299 => Ok(()),
        407 if answer.proxy.is_some() => Err(Failure {
            cause: proxy_wants_credentials(answer.proxy.as_deref().unwrap_or_default(), url),
            actionable: true,
            retry_after: None,
        }),
        429 | 502..=504 => Err(Failure {
            cause: format!(
                "{url} answered {} (busy or unavailable){through}",
                answer.status
            ),
            actionable: false,
            // Retry-After only counts on 429 and 503 (DESIGN §5).
            retry_after: answer
                .retry_after
                .filter(|_| matches!(answer.status, 429 | 503)),
        }),
        400..=499 => Err(Failure {
            cause: format!(
                "{url} rejected the traces with HTTP {}{through}",
                answer.status
            ),
            actionable: true,
            retry_after: None,
        }),
        status => Err(Failure {
            cause: format!("{url} answered HTTP {status}{through}"),
            actionable: false,
            // Retry-After only counts on 429 and 503 (DESIGN §5); other errors back off.
            retry_after: None,
        }),
    }
}

/// The cause for a proxy's 407, to a tunnel or to an absolute-form request alike.
pub fn proxy_wants_credentials(proxy: &str, url: &str) -> String {
    format!("proxy {proxy} requires authentication (HTTP 407; sending to {url})")
}

/// Saves the outcome and the destination's backoff.
fn record(store: &Store, destination: &Destination, report: &Report, backoff: Option<Backoff>) {
    let summary = match &report.failure {
        None if report.requests == 0 => return,
        None => format!(
            "ok: {} dispatches sent to {}",
            report.chunks_sent,
            crate::ship::destination::redact_url(&destination.url)
        ),
        Some(failure) => format!(
            "failed after sending {} dispatches: {}",
            report.chunks_sent, failure.cause
        ),
    };
    LastExport::save(store, &summary, SystemTime::now());
    // A destination that took some chunks and refused others for their content is working:
    // no backoff for it. One that refuses everything may well be misconfigured: back off.
    let working = !report.stopped_by_failure && report.chunks_sent > 0;
    match &report.failure {
        None => reset_backoff(store),
        Some(_) if working => reset_backoff(store),
        Some(failure) => {
            let failures = backoff.map_or(0, |b| b.failures) + 1;
            let wait = failure
                .retry_after
                .map(|r| r.min(MAX_BACKOFF))
                .unwrap_or_else(|| backoff_after(failures));
            Backoff {
                key: backoff_key(destination),
                failures,
                until: now_secs() + wait.as_secs().max(1),
            }
            .save(store);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::destination::{Ca, Source};
    use crate::ship::requests::{split, MAX_REQUEST_BYTES};
    use crate::store::{NewChunk, Priority};
    use crate::test_support::Scratch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
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
                    proxy: None,
                });
            }
            answers.remove(0)
        }
    }

    fn ok() -> Result<Answer, Failure> {
        Ok(Answer {
            status: 200,
            retry_after: None,
            proxy: None,
        })
    }

    fn status(code: u16, retry_after: Option<u64>) -> Result<Answer, Failure> {
        Ok(Answer {
            status: code,
            retry_after: retry_after.map(Duration::from_secs),
            proxy: None,
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
        store.pending_queue(None).unwrap().len()
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
            .pending_queue(None)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        let current = *ids.last().unwrap();
        let order: Vec<i64> = store
            .pending_queue(Some(current))
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
        assert_eq!(store.pending_queue(None).unwrap()[0].id, ids[0]);
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

    fn add(store: &mut Store, payloads: Vec<Vec<u8>>) {
        let chunks: Vec<NewChunk> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| NewChunk {
                started_at: i as i64,
                event: format!("e{i}"),
                trace_id: format!("t{i}"),
                payload,
                priority: Priority::Quiet,
            })
            .collect();
        store.add_chunks(&chunks, 1 << 30).unwrap();
    }

    #[test]
    fn a_413_makes_later_requests_smaller_and_then_everything_goes() {
        let (_s, mut store) = store("413", &[]);
        let chunk = big_request(200, 1000).encode_to_vec();
        add(&mut store, vec![chunk.clone(), chunk.clone(), chunk]);
        let transport = Scripted::new(vec![status(413, None)]);
        let report = run(&mut store, &transport, Duration::from_secs(5), false);
        let refused_size = transport.bodies.borrow()[0].len();
        assert_eq!((report.chunks_sent, report.refused), (0, 3));
        assert!(report.failure.unwrap().actionable);
        assert!(
            backing_off(&store, &destination()),
            "refusing all backs off"
        );

        let transport = Scripted::new(vec![]);
        let report = run(&mut store, &transport, Duration::from_secs(5), true);
        assert_eq!(report.chunks_sent, 3);
        let bodies = transport.bodies.borrow();
        assert!(bodies.len() >= 3, "{} requests", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= refused_size / 2));
        assert_eq!(pending(&store), 0);
        assert!(Refused::load(&store, &backoff_key(&destination())).is_empty());
    }

    #[test]
    fn a_chunk_refused_for_its_content_goes_last_and_holds_back_no_other() {
        let (_s, mut store) = store("400", &[]);
        let small = |spans| big_request(spans, 10).encode_to_vec();
        add(&mut store, vec![small(1), small(2), small(3)]);
        let ids: Vec<i64> = store
            .pending_queue(None)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        // Three chunks in one request, refused: next time each goes alone.
        let transport = Scripted::new(vec![status(400, None)]);
        let report = run(&mut store, &transport, Duration::from_secs(1), false);
        assert_eq!((transport.bodies.borrow().len(), report.refused), (1, 3));

        // The first one is the one the backend cannot take; the others go through, and a
        // destination that accepts chunks is not backed off.
        let transport = Scripted::new(vec![status(400, None), ok(), ok()]);
        let report = run(&mut store, &transport, Duration::from_secs(1), true);
        assert_eq!((report.chunks_sent, report.refused), (2, 1));
        assert_eq!(transport.bodies.borrow().len(), 3);
        assert_eq!(backoff_state(&store, &destination()), None);

        // A new dispatch's chunk goes before the refused one, which is still kept.
        add(&mut store, vec![small(4)]);
        let transport = Scripted::new(vec![ok(), status(400, None)]);
        let report = run(&mut store, &transport, Duration::from_secs(1), false);
        assert_eq!((report.chunks_sent, report.refused), (1, 1));
        let left: Vec<i64> = store
            .pending_queue(None)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, vec![ids[0]]);
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
                    proxy: None,
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

    #[test]
    fn through_a_proxy_a_407_is_the_proxys_and_other_answers_name_it_too() {
        let url = "http://x/v1/traces";
        let a = |status| {
            classify(
                Answer {
                    status,
                    retry_after: None,
                    proxy: Some("http://squid:3128".into()),
                },
                url,
            )
        };
        assert!(a(200).is_ok());
        let auth = a(407).unwrap_err();
        assert!(auth.actionable);
        assert_eq!(
            auth.cause,
            "proxy http://squid:3128 requires authentication (HTTP 407; sending to http://x/v1/traces)"
        );
        let forbidden = a(403).unwrap_err();
        assert!(forbidden.actionable);
        assert_eq!(
            forbidden.cause,
            "http://x/v1/traces rejected the traces with HTTP 403 (through proxy http://squid:3128)"
        );
        let unavailable = a(503).unwrap_err();
        assert!(!unavailable.actionable);
        assert!(unavailable
            .cause
            .ends_with("(through proxy http://squid:3128)"));
    }
}
