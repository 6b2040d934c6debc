//! Custom spans from charm code (README, *Your own spans and events*): during a dispatch the wrapper listens on loopback
//! for OTLP/HTTP and points the child's `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` there.
//!
//! The clients are real, configured only from the environment they get: charm code on the
//! OpenTelemetry Python SDK with its OTLP/HTTP exporter, which sends protobuf (pinned in
//! tests/requirements.txt, run from target/test-venv; `fixtures/charms/otel`), and charm code
//! on the OpenTelemetry JS SDK with its OTLP/HTTP exporter, which sends JSON (pinned in
//! `fixtures/charms/otel-node/package-lock.json`, installed in target/test-node). Stdlib
//! clients cover what SDKs do not send: OTLP/JSON shaped by hand, requests a collector
//! refuses, and processes the charm leaves behind. What a user sees is checked: the hook's
//! outcome, the answers the clients got, and the trace in `dispatch traces`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::receiver::{Answer, Receiver};
use crate::util::{
    code, env_file, our_lines, root, span, spans_named, text, wait_for, Charm, Reaper,
};
use serde_json::Value;

/// The otel fixture charm, with the test venv's `python3` (and its OpenTelemetry packages)
/// on the hooks' PATH.
fn otel_charm() -> Charm {
    let mut charm = Charm::new("otel");
    let venv_bin = util::repo_root().join("target/test-venv/bin");
    let sdk = std::fs::read_dir(venv_bin.parent().unwrap().join("lib"))
        .ok()
        .and_then(|mut dirs| dirs.next())
        .and_then(Result::ok)
        .map(|d| d.path().join("site-packages/opentelemetry/sdk"));
    assert!(
        sdk.is_some_and(|p| p.is_dir()),
        "no OpenTelemetry SDK in target/test-venv: run tests/python-env (tests/run does)"
    );
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        charm.tools.display(),
        venv_bin.display()
    );
    charm.env.insert("PATH".into(), path);
    charm
}

fn run(charm: &Charm, program: &str, extra: &[(&str, &str)]) -> std::process::Output {
    let mut env = vec![("OTEL_CHARM", program)];
    env.extend_from_slice(extra);
    charm.dispatch("hooks/config-changed", &env)
}

fn succeeded(out: &std::process::Output) {
    assert_eq!(
        code(out),
        0,
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn id(span: &Value, key: &str) -> String {
    span[key].as_str().unwrap().to_string()
}

/// The OTLP/JSON resource attributes of the resource holding spans of `scope`.
fn resource_of_scope(charm: &Charm, scope: &str) -> serde_json::Map<String, Value> {
    let out = charm.tool(&["traces", "--last", "1", "--format", "otlp-json"]);
    let request: Value = serde_json::from_slice(&out.stdout).unwrap();
    let resource = request["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scopeSpans"][0]["scope"]["name"] == scope)
        .unwrap_or_else(|| panic!("no spans of scope {scope} in {request:#}"));
    resource["resource"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let value = kv["value"].as_object().unwrap().values().next().unwrap();
            (kv["key"].as_str().unwrap().to_string(), value.clone())
        })
        .collect()
}

#[test]
fn sdk_spans_join_the_dispatch_trace_under_the_charm_span() {
    let charm = otel_charm();
    let out = run(&charm, "sdk_spans", &[]);
    succeeded(&out);
    assert_eq!(text(&out.stdout), "sdk spans made\n");
    // The exporter logs any failed export on stderr: nothing there means 200s.
    assert_eq!(text(&out.stderr), "", "the charm's exporter complained");

    let trace = charm.last_trace();
    let trace_id = trace["trace_id"].as_str().unwrap();
    let charm_span = span(&trace, "charm");
    let reconcile = span(&trace, "reconcile");
    let render = span(&trace, "render-config");
    let restart = span(&trace, "restart-workload");
    assert_eq!(id(reconcile, "parent_span_id"), id(charm_span, "span_id"));
    assert_eq!(id(render, "parent_span_id"), id(reconcile, "span_id"));
    assert_eq!(id(restart, "parent_span_id"), id(reconcile, "span_id"));
    for custom in [reconcile, render, restart] {
        assert_eq!(custom["trace_id"], trace_id);
        assert_eq!(custom["scope"], "otel-charm");
    }
    assert_eq!(reconcile["attributes"]["charm.step"], "reconcile");
    assert_eq!(render["events"][0]["name"], "config-written");
    assert_eq!(render["events"][0]["attributes"]["bytes"], 42);
    let root = root(&trace);
    assert_eq!(root["attributes"]["dispatch.custom_spans"], 3);
    assert!(root["attributes"]["dispatch.custom_spans_dropped"].is_null());
    assert_eq!(trace["priority"], "quiet");

    // Their resource, with the Juju topology added; the SDK's default service name replaced.
    let resource = resource_of_scope(&charm, "otel-charm");
    assert_eq!(resource["telemetry.sdk.language"], "python");
    assert_eq!(resource["service.name"], "myapp");
    assert_eq!(resource["juju_unit"], "myapp/0");
    assert_eq!(resource["juju_model"], "test-model");
    assert_eq!(resource["charm"], "otel-charm");
}

#[test]
fn a_failing_charm_keeps_its_spans_in_the_failed_trace() {
    let charm = otel_charm();
    let out = run(&charm, "sdk_spans", &[("OTEL_CHARM_EXIT", "3")]);
    assert_eq!(code(&out), 3);
    let trace = charm.last_trace();
    assert_eq!(trace["priority"], "failed");
    assert_eq!(spans_named(&trace, "render-config").len(), 1);
}

#[test]
fn compressed_sdk_exports_are_accepted() {
    for compression in ["gzip", "deflate"] {
        let charm = otel_charm();
        let out = run(
            &charm,
            "sdk_spans",
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", compression)],
        );
        succeeded(&out);
        assert_eq!(text(&out.stderr), "", "{compression}");
        let trace = charm.last_trace();
        assert_eq!(
            spans_named(&trace, "render-config").len(),
            1,
            "{compression}"
        );
    }
}

#[test]
fn hook_tools_called_inside_a_charm_span_nest_under_it() {
    let charm = otel_charm();
    let out = run(&charm, "tool_spans", &[]);
    succeeded(&out);
    let trace = charm.last_trace();
    let configure = span(&trace, "configure");
    assert_eq!(
        id(configure, "parent_span_id"),
        id(span(&trace, "charm"), "span_id")
    );
    let status_set = span(&trace, "status-set");
    assert_eq!(status_set["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(
        id(status_set, "parent_span_id"),
        id(configure, "span_id"),
        "{trace:#}"
    );
    assert!(status_set["links"].as_array().unwrap().is_empty());
    assert_eq!(
        id(span(&trace, "is-leader"), "parent_span_id"),
        id(span(&trace, "charm"), "span_id")
    );
}

#[test]
fn the_tree_view_shows_custom_spans_nested() {
    let charm = otel_charm();
    succeeded(&run(&charm, "tool_spans", &[]));
    succeeded(&run(&charm, "sdk_spans", &[]));
    let out = charm.tool(&["traces", "--last", "2"]);
    let tree = text(&out.stdout);
    // The column where a span's name starts, on the line that shows it.
    let column = |name: &str| {
        let line = tree
            .lines()
            .find(|l| {
                l.trim_start_matches([' ', '│', '├', '└', '─'])
                    .starts_with(&format!("{name} "))
            })
            .unwrap_or_else(|| panic!("no {name} in\n{tree}"));
        line.chars()
            .take_while(|c| [' ', '│', '├', '└', '─'].contains(c))
            .count()
    };
    assert!(column("charm") < column("configure"), "{tree}");
    assert!(column("configure") < column("status-set"), "{tree}");
    assert_eq!(column("configure"), column("is-leader"), "{tree}");
    assert!(column("charm") < column("reconcile"), "{tree}");
    assert!(column("reconcile") < column("render-config"), "{tree}");
    assert_eq!(
        column("render-config"),
        column("restart-workload"),
        "{tree}"
    );
    let render = tree.lines().find(|l| l.contains("render-config")).unwrap();
    assert!(render.contains("1 event"), "{render}");
}

#[test]
fn otlp_json_is_kept_and_answered_in_json() {
    let charm = otel_charm();
    let out = run(&charm, "otlp_json", &[]);
    succeeded(&out);
    assert_eq!(text(&out.stdout), "json 200 application/json {}\n");
    let trace = charm.last_trace();
    let custom = span(&trace, "json-span");
    assert_eq!(custom["trace_id"], trace["trace_id"]);
    assert_eq!(
        id(custom, "parent_span_id"),
        id(span(&trace, "charm"), "span_id")
    );
    assert_eq!(custom["attributes"]["attempt"], 3);
    assert_eq!(custom["events"][0]["name"], "checked");
    assert_eq!(custom["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(custom["scope"], "hand-made");
    let resource = resource_of_scope(&charm, "hand-made");
    assert_eq!(resource["service.name"], "json-client", "theirs is kept");
    assert_eq!(resource["juju_application"], "myapp");
}

#[test]
fn refused_requests_get_a_collectors_answers_and_leave_the_hook_alone() {
    let charm = otel_charm();
    let out = run(&charm, "bad_requests", &[]);
    succeeded(&out);
    assert!(our_lines(&out.stderr).is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "malformed 400\nwrong-nonce 404\nno-nonce 404\nget 405\ntext 415\noversized 413\ngood 200\n"
    );
    let trace = charm.last_trace();
    assert!(spans_named(&trace, "intruder").is_empty(), "{trace:#}");
    assert_eq!(spans_named(&trace, "after-errors").len(), 1);
    let root = root(&trace);
    assert_eq!(root["attributes"]["dispatch.custom_requests_refused"], 6);
    assert_eq!(root["attributes"]["dispatch.custom_spans"], 1);
    assert_eq!(root["status"], "OK");
}

#[test]
fn spans_over_the_dispatch_bound_are_dropped_counted_and_reported_to_the_client() {
    let charm = otel_charm();
    let out = run(&charm, "otlp_json", &[("OTEL_CHARM_SPANS", "5001")]);
    succeeded(&out);
    let answer = text(&out.stdout);
    assert!(
        answer.starts_with("json 200 application/json {"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(answer.splitn(4, ' ').nth(3).unwrap()).unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1");
    let trace = charm.last_trace();
    let root = root(&trace);
    assert_eq!(root["attributes"]["dispatch.custom_spans"], 5000);
    assert_eq!(root["attributes"]["dispatch.custom_spans_dropped"], 1);
    assert_eq!(spans_named(&trace, "bulk-0").len(), 1, "the first are kept");
    assert!(spans_named(&trace, "bulk-5000").is_empty());
}

/// Runs the background fixture in `mode`; returns the output, the wall time of the dispatch,
/// the file the background process writes its result to, and the one it waits for.
fn background(charm: &Charm, mode: &str) -> (std::process::Output, Duration, PathBuf, PathBuf) {
    let pid = charm.scratch.path("background.pid");
    let result = charm.scratch.path("background.result");
    let go = charm.scratch.path("background.go");
    let started = Instant::now();
    let out = run(
        charm,
        "background",
        &[
            ("OTEL_CHARM_BACKGROUND", mode),
            ("OTEL_CHARM_PID", pid.to_str().unwrap()),
            ("OTEL_CHARM_RESULT", result.to_str().unwrap()),
            ("OTEL_CHARM_GO", go.to_str().unwrap()),
        ],
    );
    (out, started.elapsed(), result, go)
}

/// What the background process wrote to `path`, once it did.
fn result(path: &Path) -> String {
    let mut written = None;
    wait_for(path.display(), Duration::from_secs(20), || {
        written = std::fs::read_to_string(path).ok();
        written.is_some()
    });
    written.unwrap_or_default()
}

#[test]
fn a_span_sent_the_moment_the_charm_exited_is_kept() {
    let charm = otel_charm();
    let _reaper = Reaper(&charm);
    let (out, _, result_path, _) = background(&charm, "late");
    succeeded(&out);
    assert_eq!(result(&result_path), "status 200");
    let trace = charm.last_trace();
    let late = span(&trace, "late-span");
    assert_eq!(
        id(late, "parent_span_id"),
        id(span(&trace, "charm"), "span_id")
    );
}

#[test]
fn a_silent_connection_left_behind_does_not_hold_the_hook() {
    let charm = otel_charm();
    let _reaper = Reaper(&charm);
    let (out, took, _, _) = background(&charm, "hang");
    succeeded(&out);
    assert_eq!(text(&out.stdout), "background hang\n");
    // The process holds its connection for 30 s; the dispatch waits for it at most the
    // grace (0.1 s). Python's start-up is most of this bound.
    assert!(took < Duration::from_secs(10), "the hook took {took:?}");
    assert_eq!(charm.traces().len(), 1);
}

#[test]
fn a_process_left_behind_is_refused_once_the_dispatch_is_over() {
    let charm = otel_charm();
    let _reaper = Reaper(&charm);
    let (out, _, result_path, go) = background(&charm, "leftover");
    succeeded(&out);
    std::fs::write(&go, "").unwrap();
    assert_eq!(result(&result_path), "refused");
    let trace = charm.last_trace();
    assert!(spans_named(&trace, "leftover-span").is_empty());
}

/// `KEY=VALUE` lines of the environment the shell fixture charm dumped.
fn dumped_env(charm: &Charm, extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let dump = charm.scratch.path("env.txt");
    let mut env = vec![("CHARM_DUMP_ENV", dump.to_str().unwrap())];
    env.extend_from_slice(extra);
    let out = charm.dispatch("hooks/install", &env);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    env_file(&dump)
}

#[test]
fn the_child_gets_a_traces_endpoint_with_the_nonce_and_nothing_for_other_signals() {
    let charm = Charm::new("shell");
    let env = dumped_env(&charm, &[]);
    let endpoint = &env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
    let nonce = &env["DISPATCH_TRACE_NONCE"];
    let rest = endpoint
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{endpoint}"));
    let (port, path) = rest.split_once('/').unwrap();
    assert!(port.parse::<u16>().is_ok(), "{endpoint}");
    assert_eq!(path, format!("{nonce}/v1/traces"));
    assert_eq!(env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"], "http/protobuf");
    assert_eq!(
        env["DISPATCH_TRACE_INJECTED"],
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    );
    for other in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_TRACES_EXPORTER",
    ] {
        assert!(!env.contains_key(other), "{other} set");
    }
    // The listener is gone with the dispatch.
    let refused = std::net::TcpStream::connect(format!("127.0.0.1:{port}"));
    assert!(refused.is_err(), "{endpoint} still listening");
}

#[test]
fn custom_spans_false_means_no_listener_and_the_hooks_own_variables() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "custom_spans: false\n");
    let operator = "http://collector.example:4318/v1/traces";
    let env = dumped_env(&charm, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", operator)]);
    assert_eq!(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], operator);
    assert!(!env.contains_key("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"));
    assert!(!env.contains_key("DISPATCH_TRACE_INJECTED"));
    let trace = charm.last_trace();
    assert!(root(&trace)["attributes"]["dispatch.custom_spans_error"].is_null());
}

#[test]
fn the_operators_destination_still_gets_everything_including_custom_spans() {
    let charm = otel_charm();
    let receiver = Receiver::start(vec![Answer::ok()]);
    let url = receiver.url();
    let out = run(
        &charm,
        "sdk_spans",
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.as_str())],
    );
    succeeded(&out);
    assert_eq!(text(&out.stderr), "");
    // One request: ours. The charm's SDK sent to us, not to the operator's collector.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/v1/traces");
    let body = String::from_utf8_lossy(&requests[0].body);
    assert!(
        body.contains("render-config"),
        "the custom spans were shipped"
    );
    assert_eq!(charm.last_trace()["state"], "shipped");
}

#[test]
fn tool_mode_inside_the_hook_does_not_take_the_injected_endpoint_for_a_destination() {
    let charm = Charm::new("shell");
    let status = charm.scratch.path("status.txt");
    let run = format!("./dispatch status > {} 2>&1", status.to_str().unwrap());
    let out = charm.dispatch("hooks/install", &[("CHARM_RUN", run.as_str())]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status = std::fs::read_to_string(&status).unwrap();
    assert!(status.contains("destination: none"), "{status}");
}

/// The otel-node fixture charm, its `node_modules` a link to target/test-node's (the
/// OpenTelemetry JS packages of its package-lock.json). `node` is found on the hooks' PATH.
fn node_charm() -> Charm {
    let modules = util::repo_root().join("target/test-node/node_modules");
    assert!(
        modules
            .join("@opentelemetry/exporter-trace-otlp-http")
            .is_dir(),
        "no OpenTelemetry JS packages in target/test-node: run tests/node-env (tests/run does)"
    );
    let charm = Charm::new("otel-node");
    std::os::unix::fs::symlink(&modules, charm.path("node_modules")).unwrap();
    charm
}

/// The Node charm's stdout: `node spans made`, then one line per HTTP exchange its exporter
/// had, each checked: `sent` is the request's Content-Type (and Content-Encoding), and the
/// answer was a 200 in JSON. Under dispatch that answer is the proof that JSON arrived: the
/// loopback receiver answers in the encoding it decoded the request as. Returns the lines.
fn node_exchanges(out: &std::process::Output, sent: &str) -> Vec<String> {
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("node spans made"), "{stdout}");
    let exchanges: Vec<String> = lines.map(str::to_string).collect();
    assert!(!exchanges.is_empty(), "the exporter sent nothing: {stdout}");
    for exchange in &exchanges {
        assert_eq!(
            exchange,
            &format!("export {sent} -> 200 application/json"),
            "{stdout}"
        );
    }
    exchanges
}

#[test]
fn the_node_exporter_posts_json_whatever_the_protocol_variable_says() {
    // The same client with the same environment as under dispatch, bare, against a scripted
    // receiver that keeps the raw request: what the JS exporter really puts on the wire.
    let charm = node_charm();
    let receiver = Receiver::start(vec![Answer::Status(
        200,
        vec![("Content-Type".into(), "application/json".into())],
        b"{}".to_vec(),
    )]);
    let url = receiver.url();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = charm.bare(
        "hooks/config-changed",
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("TRACEPARENT", traceparent),
            ("OTEL_CHARM_ITEMS", "0"),
        ],
    );
    succeeded(&out);
    assert_eq!(text(&out.stderr), "");
    node_exchanges(&out, "application/json");
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    let mut spans = Vec::new();
    for request in &requests {
        assert_eq!(request.path, "/v1/traces", "the endpoint is used as is");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&request.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&request.body)));
        let scope_spans = &body["resourceSpans"][0]["scopeSpans"][0];
        assert_eq!(scope_spans["scope"]["name"], "otel-node-charm", "{body:#}");
        spans.extend(scope_spans["spans"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let reconcile = spans.iter().find(|s| s["name"] == "reconcile").unwrap();
    // Ids as hex strings: OTLP/JSON, not protobuf's bytes.
    assert_eq!(reconcile["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(reconcile["parentSpanId"], "b7ad6b7169203331");
}

#[test]
fn node_sdk_spans_sent_as_json_join_the_dispatch_trace_under_the_charm_span() {
    let charm = node_charm();
    let out = charm.dispatch("hooks/config-changed", &[]);
    succeeded(&out);
    // The SDK's diag logger reports failed exports on stderr: nothing there means 200s.
    assert_eq!(text(&out.stderr), "", "the charm's exporter complained");
    node_exchanges(&out, "application/json");

    let trace = charm.last_trace();
    let trace_id = trace["trace_id"].as_str().unwrap();
    let reconcile = span(&trace, "reconcile");
    assert_eq!(
        id(reconcile, "parent_span_id"),
        id(span(&trace, "charm"), "span_id")
    );
    let render = span(&trace, "render-config");
    let check = span(&trace, "check-workload");
    for child in [render, check, span(&trace, "publish-status")] {
        assert_eq!(id(child, "parent_span_id"), id(reconcile, "span_id"));
    }
    for custom in [reconcile, render, check] {
        assert_eq!(custom["trace_id"], trace_id);
        assert_eq!(custom["scope"], "otel-node-charm");
    }
    assert_eq!(reconcile["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(check["kind"], "SPAN_KIND_CLIENT");
    let attributes = &reconcile["attributes"];
    assert_eq!(attributes["charm.step"], "reconcile");
    assert_eq!(attributes["charm.replicas"], 3);
    assert_eq!(attributes["charm.load"], 0.25);
    assert_eq!(attributes["charm.leader"], true);
    assert_eq!(attributes["charm.ports"], serde_json::json!([80, 443]));
    assert_eq!(render["events"][0]["name"], "config-written");
    assert_eq!(render["events"][0]["attributes"]["bytes"], 42);
    assert_eq!(
        render["events"][0]["attributes"]["path"],
        "/etc/workload.conf"
    );
    assert_eq!(check["status"], "ERROR");
    assert_eq!(check["status_message"], "workload not ready");
    assert_eq!(check["events"][0]["name"], "exception");
    assert_eq!(
        check["events"][0]["attributes"]["exception.message"],
        "workload answered 503"
    );
    let root = root(&trace);
    assert_eq!(root["attributes"]["dispatch.custom_spans"], 54);
    assert!(root["attributes"]["dispatch.custom_requests_refused"].is_null());
    assert_eq!(root["status"], "OK", "a span's error is not the hook's");

    // Their resource, with the Juju topology added; the SDK's default service name
    // (`unknown_service:node`) replaced.
    let resource = resource_of_scope(&charm, "otel-node-charm");
    assert_eq!(resource["telemetry.sdk.language"], "nodejs");
    assert_eq!(resource["service.name"], "myapp");
    assert_eq!(resource["juju_unit"], "myapp/0");
    assert_eq!(resource["juju_model"], "test-model");
    assert_eq!(resource["charm"], "otel-node-charm");
}

#[test]
fn a_hook_tool_called_inside_a_node_span_nests_under_it() {
    let charm = node_charm();
    let out = charm.dispatch("hooks/config-changed", &[("OTEL_CHARM_ITEMS", "0")]);
    succeeded(&out);
    let trace = charm.last_trace();
    let status_set = span(&trace, "status-set");
    assert_eq!(status_set["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(
        id(status_set, "parent_span_id"),
        id(span(&trace, "publish-status"), "span_id"),
        "{trace:#}"
    );
    assert!(status_set["links"].as_array().unwrap().is_empty());
    let calls = charm.tool_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["args"], serde_json::json!(["active", "ready"]));
}

#[test]
fn everything_the_node_sdk_sends_up_to_its_shutdown_flush_is_kept() {
    // 1,004 spans: the batch processor sends a batch as soon as it has 512 and the rest in
    // the flush of `provider.shutdown()`, which the charm awaits just before it exits.
    let charm = node_charm();
    let out = charm.dispatch("hooks/config-changed", &[("OTEL_CHARM_ITEMS", "1000")]);
    succeeded(&out);
    assert_eq!(text(&out.stderr), "");
    let exchanges = node_exchanges(&out, "application/json");
    assert!(exchanges.len() >= 2, "{exchanges:?}");
    let trace = charm.last_trace();
    assert_eq!(root(&trace)["attributes"]["dispatch.custom_spans"], 1004);
    for i in 0..1000 {
        assert_eq!(
            spans_named(&trace, &format!("item-{i}")).len(),
            1,
            "item-{i}"
        );
    }
    assert_eq!(spans_named(&trace, "reconcile").len(), 1, "the last to end");
}

#[test]
fn gzipped_json_from_the_node_exporter_is_accepted() {
    let charm = node_charm();
    let out = charm.dispatch(
        "hooks/config-changed",
        &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")],
    );
    succeeded(&out);
    assert_eq!(text(&out.stderr), "");
    node_exchanges(&out, "application/json gzip");
    let trace = charm.last_trace();
    assert_eq!(root(&trace)["attributes"]["dispatch.custom_spans"], 54);
    assert_eq!(
        span(&trace, "render-config")["events"][0]["attributes"]["bytes"],
        42
    );
}
