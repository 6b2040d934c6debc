mod util;

// Shipping to a real OTLP receiver that nobody here wrote: rotel's collector (`rotel-agent`,
// from the `rotel` wheel on PyPI, installed by tests/run into target/test-venv) with its debug
// exporter, which prints every span it accepts. What the scripted receiver in shipping.rs cannot
// tell us, this does: that a real implementation decodes our protobuf and our OTLP/JSON.
//
// rotel's `--debug-log traces --debug-log-verbosity detailed` output (on stdout, with ANSI colours
// on its own log lines) has one block per span:
//
// ```text
// Span #0
//     Trace ID       : 5b8efff798038103d269b633813fc60c
//     Parent ID      :
//     ID             : eee19b7ec3c1b174
//     Name           : install
// ```
//
// ids in lowercase hex, as `dispatch traces --format json` prints them.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{code, text, Charm};

/// How long rotel may take to listen, and to print what it was sent.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(10);

fn rotel_agent() -> PathBuf {
    let path = util::repo_root().join("target/test-venv/bin/rotel-agent");
    assert!(
        path.exists(),
        "{} is missing: run tests/run once (it installs rotel==0.0.1a15 from PyPI into \
         target/test-venv and links its collector binary there)",
        path.display()
    );
    path
}

/// A port nobody listens on right now (rotel wants real ports, not 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running rotel-agent with both outputs in a file; killed on drop.
struct Rotel {
    child: Child,
    port: u16,
    output: PathBuf,
}

impl Rotel {
    /// Starts rotel on free ports, its files under `dir`, and waits until its HTTP port
    /// accepts connections. A port taken between probing and binding is retried.
    fn start(dir: &Path) -> Rotel {
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
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("rotel-agent exited early ({status})");
                return false;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Everything rotel printed so far, without colour codes.
    fn output(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.output).unwrap_or_default())
    }

    /// The spans rotel printed, once every span of `traces` is among them (bounded wait), and
    /// after a short settle so that a late duplicate would be seen too.
    fn spans_once_all_of(&self, traces: &[Value]) -> Vec<SeenSpan> {
        let wanted: Vec<String> = traces
            .iter()
            .flat_map(|t| t["spans"].as_array().unwrap())
            .map(|s| s["span_id"].as_str().unwrap().to_string())
            .collect();
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            let seen = parse_spans(&self.output());
            if wanted
                .iter()
                .all(|id| seen.iter().any(|s| &s.span_id == id))
            {
                std::thread::sleep(Duration::from_millis(500));
                return parse_spans(&self.output());
            }
            assert!(
                Instant::now() < deadline,
                "rotel did not print every span of {} trace(s) within {OUTPUT_TIMEOUT:?}; \
                 its output ({}):\n{}",
                traces.len(),
                self.output.display(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
struct SeenSpan {
    trace_id: String,
    span_id: String,
    name: String,
}

/// The `Span #N` blocks of rotel's output: the first `Trace ID`, `ID` and `Name` fields after
/// each header (span events and links print theirs as `-> Name: ...`, which never match).
fn parse_spans(output: &str) -> Vec<SeenSpan> {
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

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every span of every stored trace reached rotel exactly once, under its trace id, with its
/// name; and rotel got nothing else.
fn assert_received_exactly_once(seen: &[SeenSpan], traces: &[Value], output: &str) {
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for trace in traces {
        let trace_id = trace["trace_id"].as_str().unwrap();
        assert!(is_trace_id(trace_id), "not a 32-hex trace id: {trace_id:?}");
        for span in trace["spans"].as_array().unwrap() {
            expected.insert(
                span["span_id"].as_str().unwrap().to_string(),
                (
                    trace_id.to_string(),
                    span["name"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    let mut received: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for span in seen {
        received
            .entry(span.span_id.clone())
            .or_default()
            .push((span.trace_id.clone(), span.name.clone()));
    }
    for (span_id, (trace_id, name)) in &expected {
        let got = received.get(span_id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            got,
            [(trace_id.clone(), name.clone())],
            "span {span_id} ({name:?} of trace {trace_id}) should reach rotel exactly once; \
             rotel's output:\n{output}"
        );
    }
    let unexpected: Vec<&String> = received
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rotel got spans we did not store: {unexpected:?}\n{output}"
    );
}

/// The names rotel printed for one trace.
fn names_in(seen: &[SeenSpan], trace_id: &str) -> Vec<String> {
    seen.iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| s.name.clone())
        .collect()
}

fn set_destination(charm: &Charm, url: &str) {
    let out = charm.tool(&["set-destination", url]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

fn assert_all_shipped(charm: &Charm) {
    let traces = charm.traces();
    assert!(!traces.is_empty());
    for trace in &traces {
        assert_eq!(
            trace["state"], "shipped",
            "dispatch {} ({}) not shipped",
            trace["id"], trace["event"]
        );
    }
}

/// Two dispatches sent as they happen: one calling hook tools, one failing. Both reach rotel
/// whole, and the hooks end as they would without us.
fn two_dispatches_arrive(charm: &Charm) {
    let rotel = Rotel::start(&charm.scratch.path("rotel"));
    set_destination(charm, &rotel.url());

    let out = charm.dispatch(
        "hooks/install",
        &[("CHARM_RUN", "status-set active ready; is-leader >/dev/null")],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = charm.dispatch("hooks/config-changed", &[("CHARM_EXIT", "1")]);
    assert_eq!(code(&out), 1, "the charm's exit code is mirrored");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let traces = charm.traces();
    assert_eq!(traces.len(), 2);
    let seen = rotel.spans_once_all_of(&traces);
    let output = rotel.output();
    assert_received_exactly_once(&seen, &traces, &output);

    let install = names_in(&seen, traces[0]["trace_id"].as_str().unwrap());
    for name in ["install", "charm", "status-set", "is-leader"] {
        assert!(
            install.iter().any(|n| n == name),
            "no {name:?} span in rotel's install trace {install:?}:\n{output}"
        );
    }
    let failed = names_in(&seen, traces[1]["trace_id"].as_str().unwrap());
    for name in ["config-changed", "charm"] {
        assert!(
            failed.iter().any(|n| n == name),
            "no {name:?} span in rotel's config-changed trace {failed:?}:\n{output}"
        );
    }
    assert_all_shipped(charm);
}

#[test]
fn a_real_otlp_receiver_accepts_our_protobuf_traces() {
    let charm = Charm::new("shell");
    two_dispatches_arrive(&charm);
}

#[test]
fn a_real_otlp_receiver_accepts_our_otlp_json_traces() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "protocol: http/json\n");
    two_dispatches_arrive(&charm);
}

#[test]
fn a_backlog_buffered_without_a_destination_is_flushed_to_a_real_receiver_once() {
    let charm = Charm::new("shell");
    let rotel = Rotel::start(&charm.scratch.path("rotel"));
    for event in ["install", "start"] {
        let out = charm.dispatch(
            &format!("hooks/{event}"),
            &[("CHARM_RUN", "status-set active")],
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
    let traces = charm.traces();
    assert_eq!(traces.len(), 2);
    assert!(
        traces.iter().all(|t| t["state"] != "shipped"),
        "nothing can be shipped without a destination: {traces:#?}"
    );

    set_destination(&charm, &rotel.url());
    let flush = charm.tool(&["flush"]);
    assert_eq!(code(&flush), 0, "{}", text(&flush.stderr));
    assert!(
        text(&flush.stdout).contains("sent 2 dispatch(es)"),
        "{}",
        text(&flush.stdout)
    );

    let seen = rotel.spans_once_all_of(&traces);
    assert_received_exactly_once(&seen, &traces, &rotel.output());
    assert_all_shipped(&charm);
}
