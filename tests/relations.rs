//! Zero-code destination discovery through the `tracing` relation (DESIGN §3), driven end to
//! end through the fake hook tools: the leader publishes our side, the provider's receiver is
//! found and used, quiet events make no relation calls, the charm's own writes win, and a
//! broken relation stops the shipping.

mod util;

use serde_json::{json, Value};
use util::receiver::{Answer, Receiver};
use util::{code, spans_named, text, Charm, UNIT};

/// Declares the recommended endpoints (the plain fixture declares none, so it makes no
/// relation calls) and relates the charm to a provider whose receiver is `receiver`.
fn relate(charm: &Charm, receiver: &Receiver) {
    charm.write(
        "metadata.yaml",
        "name: shell-charm\nrequires:\n  charm-tracing:\n    interface: tracing\n    limit: 1\n  receive-ca-cert:\n    interface: certificate_transfer\n    limit: 1\n",
    );
    let receivers = json!([
        {"protocol": {"name": "otlp_grpc", "type": "grpc"}, "url": "127.0.0.1:1"},
        {"protocol": {"name": "otlp_http", "type": "http"}, "url": format!("http://127.0.0.1:{}", receiver.port)},
    ])
    .to_string();
    let state = json!({
        "unit": UNIT,
        "leader": true,
        "relations": {
            "charm-tracing": {
                "charm-tracing:3": {
                    "app": "tempo",
                    "units": ["tempo/0"],
                    "data": {"tempo": {"receivers": receivers}, "tempo/0": {}, "myapp": {}, "myapp/0": {}}
                }
            }
        }
    });
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
}

fn state(charm: &Charm) -> Value {
    serde_json::from_slice(&std::fs::read(charm.state.join("state.json")).unwrap()).unwrap()
}

fn relation_calls(charm: &Charm) -> usize {
    charm
        .tool_calls()
        .iter()
        .filter(|c| {
            c["tool"]
                .as_str()
                .unwrap_or_default()
                .starts_with("relation-")
        })
        .count()
}

#[test]
fn the_leader_publishes_our_side_and_traces_go_to_the_related_provider() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let published = &state(&charm)["relations"]["charm-tracing"]["charm-tracing:3"]["data"]
        ["myapp"]["receivers"];
    assert_eq!(published, r#"["otlp_http"]"#);
    assert_eq!(
        receiver.requests().len(),
        1,
        "shipped to the provider's otlp_http receiver"
    );
    let trace = charm.last_trace();
    assert_eq!(trace["state"], "shipped");
    // The wrapper's own hook-tool calls are part of the trace, under the root span.
    let root = util::root(&trace)["span_id"].clone();
    let ids = spans_named(&trace, "relation-ids");
    assert!(!ids.is_empty(), "{trace:#}");
    assert!(ids.iter().all(|s| s["parent_span_id"] == root));
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("tracing relation: charm-tracing:3"),
        "{status}"
    );
    assert!(status.contains("from the tracing relation"), "{status}");
}

#[test]
fn a_quiet_event_makes_no_relation_calls_and_uses_the_cached_destination() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let before = relation_calls(&charm);
    assert!(before > 0);
    let out = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        relation_calls(&charm),
        before,
        "update-status must not call relation tools"
    );
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn the_charms_own_receivers_write_is_kept() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    let out = charm.dispatch(
        "hooks/charm-tracing-relation-changed",
        &[
            ("JUJU_RELATION", "charm-tracing"),
            ("JUJU_RELATION_ID", "charm-tracing:3"),
            ("JUJU_REMOTE_APP", "tempo"),
            (
                "CHARM_RUN",
                "relation-set -r charm-tracing:3 --app 'receivers=[\"custom\"]'",
            ),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let published = &state(&charm)["relations"]["charm-tracing"]["charm-tracing:3"]["data"]
        ["myapp"]["receivers"];
    assert_eq!(
        published, r#"["custom"]"#,
        "the charm wrote last, so its value stands"
    );
}

#[test]
fn a_broken_relation_is_not_read_and_traces_are_buffered() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    assert_eq!(receiver.requests().len(), 1);
    let out = charm.dispatch(
        "hooks/charm-tracing-relation-broken",
        &[
            ("JUJU_RELATION", "charm-tracing"),
            ("JUJU_RELATION_ID", "charm-tracing:3"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        receiver.requests().len(),
        1,
        "no destination once the relation is broken"
    );
    assert_eq!(charm.last_trace()["state"], "pending");
    let calls = charm.tool_calls();
    let read_broken = calls.iter().any(|c| {
        c["tool"] == "relation-get"
            && c["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "charm-tracing:3")
            && c["env"]["JUJU_DISPATCH_PATH"] == "hooks/charm-tracing-relation-broken"
    });
    assert!(!read_broken, "the broken relation must not be read");
}
