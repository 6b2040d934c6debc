//! Shipping to an OTLP/HTTP destination: what arrives, and that a failing backend never changes
//! how a hook ends or makes later hooks slow. The scripted receiver (`util::receiver`) plays
//! the failure modes.

use std::time::{Duration, Instant};

use crate::util;
use crate::util::receiver::{Answer, Receiver};
use crate::util::{code, free_port, hex, otlp_spans, our_lines, set_destination, text, Charm};

/// The trace ids of the spans in a protobuf request, each once, sorted.
fn trace_ids(body: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = otlp_spans(body).iter().map(|s| hex(&s.trace_id)).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn a_dispatch_ships_its_trace_as_otlp_protobuf_to_the_destination() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    set_destination(&charm, &[&receiver.url()]);
    let out = charm.dispatch("hooks/install", &[("CHARM_RUN", "status-set active")]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    let trace = charm.last_trace();
    assert_eq!(
        trace_ids(&request.body),
        [trace["trace_id"].as_str().unwrap()]
    );
    assert_eq!(trace["state"], "shipped");
}

#[test]
fn requests_name_dispatch_and_its_version_as_their_user_agent() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    set_destination(&charm, &[&receiver.url()]);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("user-agent"),
        Some(concat!("dispatch/", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn json_is_sent_when_the_config_or_the_environment_asks_for_it() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "protocol: http/json\n");
    let receiver = Receiver::start(vec![Answer::ok()]);
    set_destination(&charm, &[&receiver.url()]);
    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let span_name = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert!(span_name.is_array(), "{body:#}");

    // The standard variable wins over the config file, and the general one applies too.
    let env = [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")];
    assert_eq!(code(&charm.dispatch("hooks/start", &env)), 0);
    let env = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
    std::fs::remove_file(charm.path("dispatch-trace.yaml")).unwrap();
    assert_eq!(code(&charm.dispatch("hooks/start", &env)), 0);
    let types: Vec<_> = receiver
        .requests()
        .iter()
        .map(|r| r.header("content-type").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "application/json",
            "application/x-protobuf",
            "application/json"
        ]
    );
}

#[test]
fn an_outage_changes_nothing_for_the_hook_and_everything_arrives_once_after_recovery() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::Status(500, vec![], vec![])]);
    set_destination(&charm, &[&receiver.url()]);
    let bare = charm.bare(
        "hooks/update-status",
        &[("CHARM_STDOUT", "out"), ("CHARM_EXIT", "3")],
    );
    for _ in 0..3 {
        let out = charm.dispatch(
            "hooks/update-status",
            &[("CHARM_STDOUT", "out"), ("CHARM_EXIT", "3")],
        );
        assert_eq!(code(&out), code(&bare));
        assert_eq!(out.stdout, bare.stdout);
        assert!(
            out.stderr.is_empty(),
            "an outage is not the operator's to fix: {}",
            text(&out.stderr)
        );
    }
    // The first failure backs the destination off: the next two dispatches sent nothing.
    assert_eq!(receiver.requests().len(), 1);
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("backoff: 1 failed export"), "{status}");
    assert!(status.contains("answered HTTP 500"), "{status}");

    receiver.set_script(vec![Answer::ok()]);
    let flush = charm.tool(&["flush"]);
    assert_eq!(code(&flush), 0, "{}", text(&flush.stderr));
    assert!(
        text(&flush.stdout).contains("sent 3 dispatch(es)"),
        "{}",
        text(&flush.stdout)
    );
    let mut delivered: Vec<String> = receiver.requests()[1..]
        .iter()
        .flat_map(|r| trace_ids(&r.body))
        .collect();
    delivered.sort();
    let mut stored: Vec<String> = charm
        .traces()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    assert_eq!(delivered, stored, "every trace once, none twice");
    assert!(charm.traces().iter().all(|t| t["state"] == "shipped"));
}

#[test]
fn a_rejection_is_told_to_the_operator_once() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::Status(400, vec![], b"bad".to_vec())]);
    set_destination(&charm, &[&receiver.url()]);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    let lines = our_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("HTTP 400") && lines[0].contains(&receiver.url()),
        "{}",
        lines[0]
    );
    // The same cause is on the dispatch's root span.
    let trace = charm.last_trace();
    let cause = util::root(&trace)["attributes"]["dispatch.export.error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cause.contains("HTTP 400"), "{trace:#}");
    // Same cause: not repeated.
    let out = charm.dispatch("hooks/install", &[]);
    assert!(our_lines(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_hanging_backend_costs_at_most_the_budget_and_then_nothing() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "export_budget_ms: 300\n");
    let receiver = Receiver::start(vec![Answer::Hang]);
    set_destination(&charm, &[&receiver.url()]);
    let started = Instant::now();
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "5")]);
    let first = started.elapsed();
    assert_eq!(code(&out), 5);
    // Far below anything a hang would take; the benchmark measures the real figure.
    assert!(first < Duration::from_secs(3), "took {first:?}");
    let started = Instant::now();
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        receiver.requests().len(),
        1,
        "backing off: no second request"
    );
    assert!(charm.traces().iter().all(|t| t["state"] == "pending"));
}

#[test]
fn a_refused_connection_and_retry_after_are_backed_off() {
    let charm = Charm::new("shell");
    let port = free_port();
    set_destination(&charm, &[&format!("http://127.0.0.1:{port}/v1/traces")]);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("refused the connection"), "{status}");

    let busy = Receiver::start(vec![Answer::Status(
        429,
        vec![("Retry-After".into(), "600".into())],
        vec![],
    )]);
    set_destination(&charm, &[&busy.url()]);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("answered 429"), "{status}");
    assert!(status.contains("backoff: 1 failed export"), "{status}");
}

#[test]
fn set_destination_validates_and_clear_destination_forgets() {
    let charm = Charm::new("shell");
    let bad = charm.tool(&["set-destination", "tempo:4318"]);
    assert_eq!(code(&bad), 2);
    let missing_ca = charm.tool(&[
        "set-destination",
        "https://tempo:4318/v1/traces",
        "--ca-file",
        "/nonexistent.pem",
    ]);
    assert_eq!(code(&missing_ca), 1);
    set_destination(&charm, &["http://127.0.0.1:9/v1/traces"]);
    let again = charm.tool(&["set-destination", "http://127.0.0.1:9/v1/traces"]);
    assert_eq!(text(&again.stdout), "destination unchanged\n");
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("destination: http://127.0.0.1:9/v1/traces (from dispatch set-destination"),
        "{status}"
    );
    assert_eq!(code(&charm.tool(&["clear-destination"])), 0);
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("destination: none"), "{status}");
}

#[test]
fn tls_is_verified_against_the_given_ca_and_a_wrong_one_is_told_to_the_operator() {
    let charm = Charm::new("shell");
    let pki = util::receiver::TestPki::new();
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    let right = charm.scratch.path("ca.pem");
    std::fs::write(&right, &pki.ca_pem).unwrap();
    let out = charm.tool(&[
        "set-destination",
        &receiver.https_url(),
        "--ca-file",
        right.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        receiver.requests().len(),
        1,
        "shipped over TLS with the right CA"
    );
    assert_eq!(charm.last_trace()["state"], "shipped");

    // Another CA: the server is not trusted, nothing is sent, the operator hears why.
    let other = util::receiver::TestPki::new();
    let wrong = charm.scratch.path("wrong-ca.pem");
    std::fs::write(&wrong, &other.ca_pem).unwrap();
    let out = charm.tool(&[
        "set-destination",
        &receiver.https_url(),
        "--ca-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = charm.dispatch("hooks/config-changed", &[("CHARM_EXIT", "2")]);
    assert_eq!(code(&out), 2);
    let lines = our_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", text(&out.stderr));
    assert!(
        lines[0].contains("TLS") && lines[0].contains(&receiver.https_url()),
        "{}",
        lines[0]
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing reached an untrusted server"
    );
    assert_eq!(charm.last_trace()["state"], "pending");

    // No CA of its own: the system trust store, which does not know our test CA either.
    assert_eq!(
        code(&charm.tool(&["set-destination", &receiver.https_url()])),
        0
    );
    let out = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(receiver.requests().len(), 1);
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("CA: the system trust store"), "{status}");
}

#[test]
fn juju_proxy_settings_are_used_and_no_proxy_is_honoured() {
    let charm = Charm::new("shell");
    let proxy = Receiver::start(vec![Answer::ok()]);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    // A host only the proxy can reach.
    set_destination(&charm, &["http://tempo.invalid:4318/v1/traces"]);
    let out = charm.dispatch("hooks/install", &[("JUJU_CHARM_HTTP_PROXY", &proxy_url)]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let requests = proxy.requests();
    assert!(!requests.is_empty(), "nothing went through the proxy");
    assert!(
        requests.iter().any(|r| r.path.contains("tempo.invalid")
            || r.header("host")
                .is_some_and(|h| h.contains("tempo.invalid"))),
        "{requests:?}"
    );
    assert!(requests
        .iter()
        .any(|r| r.method == "POST" && !r.body.is_empty()));
    assert_eq!(charm.last_trace()["state"], "shipped");

    // The same host in JUJU_CHARM_NO_PROXY goes direct (and fails: it does not exist).
    let before = proxy.requests().len();
    let out = charm.dispatch(
        "hooks/start",
        &[
            ("JUJU_CHARM_HTTP_PROXY", &proxy_url),
            ("JUJU_CHARM_NO_PROXY", "10.0.0.0/8,.invalid"),
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(
        proxy.requests().len(),
        before,
        "NO_PROXY must bypass the proxy"
    );
    assert_eq!(charm.last_trace()["state"], "pending");
}

#[test]
fn shipping_to_jujus_own_collector_continues_jujus_trace_and_elsewhere_links_to_it() {
    let charm = Charm::new("shell");
    let juju = Receiver::start(vec![Answer::ok()]);
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let juju_url = format!("http://127.0.0.1:{}", juju.port);
    let env = [
        ("JUJU_CHARM_TRACE_CONFIG_HTTP", juju_url.as_str()),
        ("TRACEPARENT", incoming),
    ];
    let out = charm.dispatch("hooks/start", &env);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(juju.requests().len(), 1);
    let trace = charm.last_trace();
    assert_eq!(trace["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(util::root(&trace)["parent_span_id"], "b7ad6b7169203331");

    // Another destination takes precedence: a new trace that links to Juju's.
    let other = Receiver::start(vec![Answer::ok()]);
    set_destination(&charm, &[&other.url()]);
    assert_eq!(code(&charm.dispatch("hooks/start", &env)), 0);
    assert_eq!(other.requests().len(), 1);
    let trace = charm.last_trace();
    assert_ne!(trace["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        util::root(&trace)["links"][0]["trace_id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[test]
fn a_slow_backend_within_the_budget_is_waited_for_and_beyond_it_is_not() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "export_budget_ms: 600\n");
    let receiver = Receiver::start(vec![Answer::Slow(Duration::from_millis(150))]);
    set_destination(&charm, &[&receiver.url()]);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        charm.last_trace()["state"],
        "shipped",
        "a slow answer within the budget counts"
    );

    receiver.set_script(vec![Answer::Slow(Duration::from_secs(5))]);
    let started = Instant::now();
    let out = charm.dispatch("hooks/config-changed", &[("CHARM_EXIT", "4")]);
    assert_eq!(code(&out), 4);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the budget bounds a slow backend"
    );
    assert_eq!(charm.last_trace()["state"], "pending");
    assert!(
        out.stderr.is_empty(),
        "slowness is not the operator's to fix: {}",
        text(&out.stderr)
    );
}
