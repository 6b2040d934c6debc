//! Zero-code destination discovery through the `tracing` relation (DESIGN §3), driven end to
//! end through the fake hook tools: the leader publishes our side, the provider's receiver is
//! found and used, quiet events make no relation calls, the charm's own writes win, and a
//! broken relation stops the shipping.

use crate::util;
use crate::util::receiver::{Answer, Receiver};
use crate::util::{code, spans_named, text, Charm, UNIT};
use serde_json::{json, Value};

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

/// Declares the recommended endpoints, with no relation on either.
fn declare(charm: &Charm) {
    charm.write(
        "metadata.yaml",
        "name: shell-charm\nrequires:\n  charm-tracing:\n    interface: tracing\n  receive-ca-cert:\n    interface: certificate_transfer\n",
    );
}

/// The hook-tool calls made since the last `forget_calls`, as `tool args...` (the shell
/// charm makes none unless told to: these are the wrapper's own).
fn calls(charm: &Charm) -> Vec<String> {
    charm
        .tool_calls()
        .iter()
        .map(|c| {
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            format!("{} {}", c["tool"].as_str().unwrap(), args.join(" "))
        })
        .collect()
}

fn forget_calls(charm: &Charm) {
    let _ = std::fs::remove_file(charm.state.join("calls.jsonl"));
}

const ASK_TRACING: &str = "relation-ids charm-tracing --format=json";
const ASK_CA: &str = "relation-ids receive-ca-cert --format=json";

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
    // Publishing and discovering share one `relation-ids` call per endpoint.
    let mut asked: Vec<String> = charm
        .tool_calls()
        .iter()
        .filter(|c| c["tool"] == "relation-ids")
        .map(|c| c["args"][0].as_str().unwrap_or_default().to_string())
        .collect();
    asked.sort();
    assert_eq!(asked, ["charm-tracing", "receive-ca-cert"]);
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

/// Relates to an https provider and, with `ca` (`None`: no CA relation at all), to a
/// certificate_transfer provider whose databags are `ca`'s (app data, unit data).
fn relate_tls(charm: &Charm, receiver: &Receiver, ca: Option<(Value, Value)>) {
    relate(charm, receiver);
    let mut state = state(charm);
    let receivers = json!([
        {"protocol": {"name": "otlp_http", "type": "http"}, "url": receiver.https_url().trim_end_matches("/v1/traces")},
    ])
    .to_string();
    state["relations"]["charm-tracing"]["charm-tracing:3"]["data"]["tempo"]["receivers"] =
        json!(receivers);
    if let Some((app, unit)) = ca {
        state["relations"]["receive-ca-cert"] = json!({
            "receive-ca-cert:4": {
                "app": "ca",
                "units": ["ca/0"],
                "data": {"ca": app, "ca/0": unit, "myapp": {}, "myapp/0": {}}
            }
        });
    }
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
}

#[test]
fn an_https_provider_is_trusted_through_the_certificate_transfer_relation() {
    let pki = util::receiver::TestPki::new();
    // v1: the provider app publishes a JSON list of certificates.
    let charm = Charm::new("shell");
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    let certificates = serde_json::to_string(&[&pki.ca_pem]).unwrap();
    relate_tls(
        &charm,
        &receiver,
        Some((json!({"certificates": certificates}), json!({}))),
    );
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        receiver.requests().len(),
        1,
        "shipped over TLS with the relation's CA"
    );
    assert_eq!(charm.last_trace()["state"], "shipped");
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("CA: PEM certificates from the certificate_transfer relation"),
        "{status}"
    );
    let version = &state(&charm)["relations"]["receive-ca-cert"]["receive-ca-cert:4"]["data"]
        ["myapp"]["version"];
    assert_eq!(version, "1", "the leader published version=1");

    // v0: a provider unit publishes `ca`.
    let charm = Charm::new("shell");
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    relate_tls(
        &charm,
        &receiver,
        Some((json!({}), json!({"ca": pki.ca_pem}))),
    );
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    assert_eq!(receiver.requests().len(), 1, "shipped with the v0 unit CA");
}

#[test]
fn an_https_provider_waits_for_the_ca_when_the_ca_relation_has_none_yet() {
    let pki = util::receiver::TestPki::new();
    let charm = Charm::new("shell");
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    relate_tls(&charm, &receiver, Some((json!({}), json!({}))));
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "waiting for a CA is not an error: {}",
        text(&out.stderr)
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing sent before the CA arrives"
    );
    assert_eq!(charm.last_trace()["state"], "pending");
    // The operator is told why, by `status` and by `flush`.
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("destination: waiting for the CA certificate"),
        "{status}"
    );
    let flush = charm.tool(&["flush"]);
    assert_eq!(code(&flush), 1);
    assert!(
        text(&flush.stderr).contains("certificate_transfer relation has not delivered its CA"),
        "{}",
        text(&flush.stderr)
    );

    // The CA arrives: the relation event reads it and everything buffered is shipped.
    let mut updated = state(&charm);
    let certificates = serde_json::to_string(&[&pki.ca_pem]).unwrap();
    updated["relations"]["receive-ca-cert"]["receive-ca-cert:4"]["data"]["ca"] =
        json!({"certificates": certificates});
    std::fs::write(charm.state.join("state.json"), updated.to_string()).unwrap();
    let out = charm.dispatch(
        "hooks/receive-ca-cert-relation-changed",
        &[
            ("JUJU_RELATION", "receive-ca-cert"),
            ("JUJU_RELATION_ID", "receive-ca-cert:4"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(!receiver.requests().is_empty());
    assert!(charm.traces().iter().all(|t| t["state"] == "shipped"));
}

#[test]
fn a_hanging_hook_tool_cannot_hold_the_hook_up_on_our_account() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    std::fs::create_dir_all(charm.state.join("hang")).unwrap();
    std::fs::write(charm.state.join("hang/relation-ids"), b"").unwrap();
    let started = std::time::Instant::now();
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "6")]);
    let took = started.elapsed();
    assert_eq!(code(&out), 6, "{}", text(&out.stderr));
    // Our own calls share a 5 s allowance; far less than a hang.
    assert!(took < std::time::Duration::from_secs(12), "took {took:?}");
    let trace = charm.last_trace();
    assert!(!spans_named(&trace, "relation-ids").is_empty());
}

#[test]
fn a_hook_tool_that_leaves_a_process_holding_its_stdout_cannot_hold_the_hook_up() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    // The tool answers and exits, but a process it started keeps its stdout open.
    let tool = charm.tools.join("relation-ids");
    std::fs::remove_file(&tool).unwrap();
    std::fs::write(&tool, "#!/bin/sh\nsleep 60 &\necho '[]'\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "3")]);
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    // The 5 s allowance for our own calls covers the whole dispatch, before and after the charm.
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
}

#[test]
fn an_upgrade_that_removes_the_relations_forgets_their_destination() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    assert_eq!(receiver.requests().len(), 1);
    charm.write("metadata.yaml", "name: shell-charm\n");
    let out = charm.dispatch("hooks/upgrade-charm", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing sent after the upgrade"
    );
    assert_eq!(charm.last_trace()["state"], "pending");
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("destination: none"), "{status}");
}

#[test]
fn with_no_relation_the_wrapper_asks_relation_ids_once_per_endpoint_and_nothing_else() {
    let charm = Charm::new("shell");
    declare(&charm);
    // The first dispatch has nothing cached: it reads the relations after the charm.
    let out = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(calls(&charm), [ASK_TRACING, ASK_CA]);
    // The answer ("no relation") is cached: quiet events ask nothing.
    forget_calls(&charm);
    assert_eq!(code(&charm.dispatch("hooks/update-status", &[])), 0);
    assert_eq!(calls(&charm), Vec::<String>::new());
    // The events that can change it ask again, the leader too, but never `is-leader` when
    // there is nothing to publish on.
    for event in ["install", "leader-elected", "upgrade-charm", "start"] {
        forget_calls(&charm);
        let out = charm.dispatch(&format!("hooks/{event}"), &[]);
        assert_eq!(code(&out), 0, "{event}: {}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{event}: {}", text(&out.stderr));
        assert_eq!(calls(&charm), [ASK_TRACING, ASK_CA], "{event}");
    }
}

#[test]
fn with_a_tracing_relation_is_leader_is_asked_after_relation_ids_and_each_question_once() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        calls(&charm),
        [
            ASK_TRACING,
            ASK_CA,
            "is-leader --format=json",
            "relation-get -r charm-tracing:3 --app - myapp --format=json",
            r#"relation-set -r charm-tracing:3 --app receivers=["otlp_http"]"#,
            "relation-list -r charm-tracing:3 --app --format=json",
            "relation-get -r charm-tracing:3 --app - tempo --format=json",
        ]
    );
    // Not the leader: it reads the provider's side, and writes nothing.
    let mut model = state(&charm);
    model["leader"] = json!(false);
    std::fs::write(charm.state.join("state.json"), model.to_string()).unwrap();
    forget_calls(&charm);
    assert_eq!(code(&charm.dispatch("hooks/leader-elected", &[])), 0);
    assert_eq!(
        calls(&charm),
        [
            ASK_TRACING,
            ASK_CA,
            "is-leader --format=json",
            "relation-list -r charm-tracing:3 --app --format=json",
            "relation-get -r charm-tracing:3 --app - tempo --format=json",
        ]
    );
}

#[test]
fn a_slow_is_leader_costs_nothing_on_a_unit_with_no_relation() {
    let charm = Charm::new("shell");
    declare(&charm);
    std::fs::create_dir_all(charm.state.join("delay")).unwrap();
    std::fs::write(charm.state.join("delay/is-leader"), "3000").unwrap();
    let started = std::time::Instant::now();
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "4")]);
    let took = started.elapsed();
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    // A slow agent's 3 s are not paid (a trivial dispatch takes milliseconds).
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(!calls(&charm).iter().any(|c| c.starts_with("is-leader")));
}

#[test]
fn a_failing_relation_ids_is_asked_once_per_endpoint_per_dispatch() {
    let charm = Charm::new("shell");
    let receiver = Receiver::start(vec![Answer::ok()]);
    relate(&charm, &receiver);
    std::fs::create_dir_all(charm.state.join("fail")).unwrap();
    std::fs::write(
        charm.state.join("fail/relation-ids"),
        "1\nERROR agent busy\n",
    )
    .unwrap();
    let out = charm.dispatch("hooks/install", NOISY_EXIT);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "charm says hi\n");
    // Before the charm, and not again after it: the answer would not change within a hook.
    assert_eq!(calls(&charm), [ASK_TRACING, ASK_CA]);
}

const NOISY_EXIT: &[(&str, &str)] = &[("CHARM_STDOUT", "charm says hi\n"), ("CHARM_EXIT", "5")];
