//! A real OTLP receiver that nobody here wrote: rotel's collector (`rotel-agent`, from the
//! `rotel` wheel on PyPI, installed by tests/run into target/test-venv) with its debug exporter,
//! which prints every span it accepts. What the scripted receiver (`receiver.rs`) cannot tell
//! us, this does: that a real implementation decodes our protobuf and our OTLP/JSON (and, in
//! ops_charm.rs, what ops[tracing] sends beside us).
//!
//! rotel's `--debug-log traces --debug-log-verbosity detailed` output (on stdout, with ANSI
//! colours on its own log lines) has one block per span:
//!
//! ```text
//! Span #0
//!     Trace ID       : 5b8efff798038103d269b633813fc60c
//!     Parent ID      :
//!     ID             : eee19b7ec3c1b174
//!     Name           : install
//! ```
//!
//! ids in lowercase hex, as `dispatch traces --format json` prints them.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{free_port, post_json, wait_until};

/// How long rotel may take to listen, and to print what it was sent.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The trace of the barrier spans `Rotel::spans_once` sends (never one of ours: ours are
/// random), and how many it sent.
const BARRIER_TRACE: &str = "0000000000000000000000000ba77e55";
static BARRIERS: AtomicU64 = AtomicU64::new(0);

pub fn rotel_agent() -> PathBuf {
    let path = super::repo_root().join("target/test-venv/bin/rotel-agent");
    assert!(
        path.exists(),
        "{} is missing: run tests/run once (it installs rotel==0.0.1a15 from PyPI into \
         target/test-venv and links its collector binary there)",
        path.display()
    );
    path
}

/// A running rotel-agent with both outputs in a file; killed on drop.
pub struct Rotel {
    child: Child,
    pub port: u16,
    output: PathBuf,
}

impl Rotel {
    /// Starts rotel on free ports, its files under `dir`, and waits until its HTTP port
    /// accepts connections. A port taken between probing and binding is retried.
    pub fn start(dir: &Path) -> Rotel {
        let agent = rotel_agent();
        std::fs::create_dir_all(dir).unwrap();
        let mut last_output = String::new();
        for attempt in 0..3 {
            let (port, grpc_port) = (free_port(), free_port());
            let output = dir.join(format!("rotel-{attempt}.out"));
            let file = File::create(&output).unwrap();
            let child = Command::new(&agent)
                .arg("start")
                .args(["--exporter", "blackhole"])
                .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
                .arg("--otlp-http-endpoint")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--otlp-grpc-endpoint")
                .arg(format!("127.0.0.1:{grpc_port}"))
                .arg("--pid-file")
                .arg(dir.join("rotel.pid"))
                .arg("--log-file")
                .arg(dir.join("rotel.log"))
                .env_clear()
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", agent.display()));
            let mut rotel = Rotel {
                child,
                port,
                output,
            };
            if rotel.wait_listening() {
                return rotel;
            }
            last_output = rotel.output();
        }
        panic!("rotel-agent did not start listening; its output:\n{last_output}");
    }

    /// True once the HTTP port accepts connections; false if rotel exited first or took
    /// longer than START_TIMEOUT.
    fn wait_listening(&mut self) -> bool {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut exited = None;
        let listening = wait_until(START_TIMEOUT, || {
            exited = self.child.try_wait().unwrap();
            exited.is_some()
                || TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        if let Some(status) = exited {
            eprintln!("rotel-agent exited early ({status})");
            return false;
        }
        listening
    }

    /// The OTLP/HTTP traces URL.
    pub fn url(&self) -> String {
        format!("{}/v1/traces", self.base_url())
    }

    /// The receiver's base URL, as a provider such as Tempo publishes it in the `tracing`
    /// relation (the requirer appends `/v1/traces`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything rotel printed so far, without colour codes.
    pub fn output(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.output).unwrap_or_default())
    }

    /// The spans rotel printed, once every span of `traces` is among them (bounded wait), and
    /// once it printed the barrier sent after them, so that a late duplicate would be seen.
    pub fn spans_once_all_of(&self, traces: &[Value]) -> Vec<SeenSpan> {
        let wanted: Vec<String> = traces
            .iter()
            .flat_map(|t| t["spans"].as_array().unwrap())
            .map(|s| s["span_id"].as_str().unwrap().to_string())
            .collect();
        self.spans_once(
            &format!("every span of {} trace(s)", traces.len()),
            |seen| {
                wanted
                    .iter()
                    .all(|id| seen.iter().any(|s| &s.span_id == id))
            },
        )
    }

    /// The spans rotel printed (but the barriers), once `done` holds for them (bounded wait,
    /// `what` names the wait in the failure) and rotel printed a barrier span this sends it
    /// then: rotel prints what it accepted in the order it accepted it (one pipeline reads
    /// the requests from one queue), so a duplicate of anything sent before is printed before
    /// the barrier.
    pub fn spans_once(&self, what: &str, done: impl Fn(&[SeenSpan]) -> bool) -> Vec<SeenSpan> {
        let failed = |waiting_for: &str| {
            format!(
                "rotel did not print {waiting_for} within {OUTPUT_TIMEOUT:?}; its output ({}):\n{}",
                self.output.display(),
                self.output()
            )
        };
        assert!(
            wait_until(OUTPUT_TIMEOUT, || done(&parse_spans(&self.output()))),
            "{}",
            failed(what)
        );
        let barrier = format!("{:016x}", BARRIERS.fetch_add(1, Ordering::SeqCst) + 1);
        let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": BARRIER_TRACE, "spanId": barrier, "name": "test-barrier",
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"
        }]}]}]});
        assert_eq!(post_json(self.port, "/v1/traces", &body.to_string()), 200);
        assert!(
            wait_until(OUTPUT_TIMEOUT, || parse_spans(&self.output())
                .iter()
                .any(|s| s.span_id == barrier)),
            "{}",
            failed("the barrier span")
        );
        parse_spans(&self.output())
            .into_iter()
            .filter(|s| s.trace_id != BARRIER_TRACE)
            .collect()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One span as rotel's detailed debug log printed it.
#[derive(Debug, Default, Clone)]
pub struct SeenSpan {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
}

/// The `Span #N` blocks of rotel's output: the first `Trace ID`, `ID` and `Name` fields after
/// each header (span events and links print theirs as `-> Name: ...`, which never match).
pub fn parse_spans(output: &str) -> Vec<SeenSpan> {
    let mut spans = Vec::new();
    let mut current: Option<SeenSpan> = None;
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(SeenSpan::default());
            continue;
        }
        if trimmed.starts_with("ResourceSpans #") || trimmed.starts_with("ScopeSpans #") {
            spans.extend(current.take());
            continue;
        }
        let (Some(span), Some((key, value))) = (current.as_mut(), trimmed.split_once(':')) else {
            continue;
        };
        let value = value.trim().to_string();
        let field = match key.trim() {
            "Trace ID" => &mut span.trace_id,
            "ID" => &mut span.span_id,
            "Name" => &mut span.name,
            _ => continue,
        };
        if field.is_empty() {
            *field = value;
        }
    }
    spans.extend(current);
    spans
}

/// The lines rotel printed for the span with this id: from its `Span #` header to the next
/// span, scope or resource.
pub fn span_block(output: &str, span_id: &str) -> String {
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Span #")
            || trimmed.starts_with("ResourceSpans #")
            || trimmed.starts_with("ScopeSpans #")
        {
            blocks.push(std::mem::take(&mut current));
        }
        current.push(line);
    }
    blocks.push(current);
    blocks
        .into_iter()
        .find(|block| {
            block
                .first()
                .is_some_and(|l| l.trim().starts_with("Span #"))
                && block.iter().any(|l| {
                    l.trim()
                        .split_once(':')
                        .is_some_and(|(k, v)| k.trim() == "ID" && v.trim() == span_id)
                })
        })
        .map(|block| block.join("\n"))
        .unwrap_or_default()
}

pub fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every span of every stored trace reached rotel exactly once, under its trace id, with its
/// name; and rotel got nothing else.
pub fn assert_received_exactly_once(seen: &[SeenSpan], traces: &[Value], output: &str) {
    assert_ours_received_exactly_once(seen, traces, output);
    let ours = span_ids(traces);
    let unexpected: Vec<&String> = seen
        .iter()
        .map(|s| &s.span_id)
        .filter(|id| !ours.contains_key(*id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rotel got spans we did not store: {unexpected:?}\n{output}"
    );
}

/// Every span of every stored trace reached rotel exactly once, under its trace id, with its
/// name (whatever else rotel got from other senders).
pub fn assert_ours_received_exactly_once(seen: &[SeenSpan], traces: &[Value], output: &str) {
    let mut received: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for span in seen {
        received
            .entry(span.span_id.clone())
            .or_default()
            .push((span.trace_id.clone(), span.name.clone()));
    }
    for (span_id, (trace_id, name)) in &span_ids(traces) {
        let got = received.get(span_id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            got,
            [(trace_id.clone(), name.clone())],
            "span {span_id} ({name:?} of trace {trace_id}) should reach rotel exactly once; \
             rotel's output:\n{output}"
        );
    }
}

/// span id -> (trace id, name) for every span of `traces` (from `dispatch traces --format json`).
fn span_ids(traces: &[Value]) -> BTreeMap<String, (String, String)> {
    let mut ids = BTreeMap::new();
    for trace in traces {
        let trace_id = trace["trace_id"].as_str().unwrap();
        assert!(is_trace_id(trace_id), "not a 32-hex trace id: {trace_id:?}");
        for span in trace["spans"].as_array().unwrap() {
            ids.insert(
                span["span_id"].as_str().unwrap().to_string(),
                (
                    trace_id.to_string(),
                    span["name"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    ids
}

/// The names rotel printed for one trace.
pub fn names_in(seen: &[SeenSpan], trace_id: &str) -> Vec<String> {
    seen.iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| s.name.clone())
        .collect()
}
