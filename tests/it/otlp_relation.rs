//! The `otlp` relation as a destination (README, *Relations, with no code in the charm*), with
//! the provider's databag made by the interface's own library (`charmlibs-interfaces-otlp`
//! from PyPI, through `python/otlp_provider_databag.py`) and the traces received by a real
//! OTLP receiver (rotel). The library's requirer prefers gRPC; we speak OTLP/HTTP, so the
//! provider's http endpoint for traces is the one used.

use std::process::Command;

use crate::util;
use crate::util::receiver::{Answer, Receiver};
use crate::util::rotel::{self, Rotel};
use crate::util::{code, text, Charm, UNIT};
use serde_json::{json, Value};

/// The provider app's databag as `OtlpProvider.publish()` leaves it, for these endpoints
/// (`add_endpoint`'s keyword arguments).
fn provider_databag(endpoints: Value) -> Value {
    let python = util::repo_root().join("target/test-venv/bin/python3");
    let script = util::repo_root().join("tests/it/python/otlp_provider_databag.py");
    let out = Command::new(python)
        .arg(script)
        .arg(endpoints.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Declares `send-otlp` (interface `otlp`) and, when given, `charm-tracing`, and relates the
/// charm to an otlp provider `otelcol` whose app databag is `bag` (and to a tracing provider
/// publishing `tracing_url`).
fn relate(charm: &Charm, bag: &Value, tracing_url: Option<&str>) {
    let mut metadata =
        String::from("name: shell-charm\nrequires:\n  send-otlp:\n    interface: otlp\n");
    let mut relations = json!({
        "send-otlp": {
            "send-otlp:7": {
                "app": "otelcol",
                "units": ["otelcol/0"],
                "data": {"otelcol": bag, "otelcol/0": {}, "myapp": {}, "myapp/0": {}}
            }
        }
    });
    if let Some(url) = tracing_url {
        metadata.push_str("  charm-tracing:\n    interface: tracing\n");
        let receivers = json!([{"protocol": {"name": "otlp_http", "type": "http"}, "url": url}]);
        relations["charm-tracing"] = json!({
            "charm-tracing:3": {
                "app": "tempo",
                "units": ["tempo/0"],
                "data": {"tempo": {"receivers": receivers.to_string()}, "tempo/0": {}, "myapp": {}, "myapp/0": {}}
            }
        });
    }
    charm.write("metadata.yaml", metadata);
    let state = json!({"unit": UNIT, "leader": true, "relations": relations});
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
}

fn install(charm: &Charm) {
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// `insecure` says "no TLS" and is left at its default (false) here, as in the library's own
/// examples with `http://` URLs: those ship, the URL's scheme decides.
#[test]
fn an_otlp_provider_gets_our_traces_at_its_http_endpoint_and_we_publish_nothing() {
    let charm = Charm::new("shell");
    let rotel = Rotel::start(&charm.scratch.path("rotel"));
    // As an OpenTelemetry collector charm publishes: gRPC (no scheme, no TLS) and http.
    let bag = provider_databag(json!([
        {"protocol": "grpc", "endpoint": "127.0.0.1:1", "telemetries": ["logs", "metrics", "traces"], "insecure": true},
        {"protocol": "http", "endpoint": rotel.base_url(), "telemetries": ["logs", "metrics", "traces"]},
    ]));
    assert_eq!(
        bag.as_object().unwrap().len(),
        1,
        "one key, `endpoints`: {bag}"
    );
    relate(&charm, &bag, None);
    install(&charm);
    let traces = charm.traces();
    assert_eq!(traces[0]["state"], "shipped");
    let seen = rotel.spans_once_all_of(&traces);
    rotel::assert_received_exactly_once(&seen, &traces, &rotel.output());
    let written: Vec<Value> = charm
        .tool_calls()
        .into_iter()
        .filter(|c| c["tool"] == "relation-set")
        .collect();
    assert!(
        written.is_empty(),
        "the interface needs nothing from us: {written:?}"
    );
    let status = text(&charm.tool(&["status"]).stdout);
    let url = rotel.url();
    assert!(
        status.contains(&format!(
            "otlp relation: send-otlp:7 (provider publishes {url})"
        )) && status.contains(&format!("destination: {url} (from the otlp relation;")),
        "{status}"
    );
}

/// A provider that offers traces over gRPC only has nothing we can ship to, and `status` says
/// so.
#[test]
fn an_otlp_provider_offering_traces_over_grpc_only_is_shown_as_such() {
    let charm = Charm::new("shell");
    let bag = provider_databag(json!([
        {"protocol": "grpc", "endpoint": "otelcol-0.cos:4317", "telemetries": ["traces"]},
        {"protocol": "http", "endpoint": "http://otelcol-0.cos:4318", "telemetries": ["logs", "metrics"]},
    ]));
    relate(&charm, &bag, None);
    install(&charm);
    assert_eq!(charm.last_trace()["state"], "pending");
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("otlp relation: send-otlp:7 (the provider offers traces over gRPC only")
            && status.contains("destination: none"),
        "{status}"
    );
}

#[test]
fn beside_a_tracing_relation_the_tracing_relation_is_used() {
    let charm = Charm::new("shell");
    let tempo = Receiver::start(vec![Answer::ok()]);
    let collector = Receiver::start(vec![Answer::ok()]);
    let bag = provider_databag(json!([
        {"protocol": "http", "endpoint": format!("http://127.0.0.1:{}", collector.port), "telemetries": ["traces"]},
    ]));
    relate(
        &charm,
        &bag,
        Some(&format!("http://127.0.0.1:{}", tempo.port)),
    );
    install(&charm);
    assert_eq!((tempo.requests().len(), collector.requests().len()), (1, 0));
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("(from the tracing relation;"), "{status}");
}
