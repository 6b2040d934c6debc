//! The hook environment of each Juju a charm runs on, variable by variable as the unit agent
//! builds it (`HookContext.HookVars` in juju/juju `internal/worker/uniter/runner/context/
//! context.go`, plus `JUJU_DISPATCH_PATH` from the runner), through the whole flow: the root
//! continues or links Juju's context as DESIGN §4 says, and the trace ships to the charm
//! tracing config Juju hands every hook (README, *Juju 4*).
//!
//! Juju 4 (4.0 and main, read at 4.1-beta2): the `JUJU_CHARM_TRACE_CONFIG_*` three on every
//! hook, empty when the controller has no tracing relation; `JUJU_TRACE_ID`, `JUJU_SPAN_ID`
//! and `JUJU_TRACE_FLAGS` (decimal) only when the agent itself traces; no `TRACEPARENT`.
//! Juju 3.6: none of these.

use std::process::Command;

use crate::util::receiver::{Answer, Receiver, TestPki};
use crate::util::{code, root, text, Charm, UNIT};

const JUJU_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const JUJU_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the agent's own tracing and the controller's charm tracing config say.
struct Tracing<'a> {
    /// `JUJU_TRACE_ID`/`JUJU_SPAN_ID`/`JUJU_TRACE_FLAGS`: set only when the agent traces.
    agent: bool,
    http: &'a str,
    grpc: &'a str,
    ca_cert: &'a str,
}

const NO_TRACING: Tracing = Tracing {
    agent: false,
    http: "",
    grpc: "",
    ca_cert: "",
};

/// `dispatch` for `hooks/<hook>` with the environment a Juju 4 unit agent gives a hook, in
/// HookVars' order (a machine unit, no proxies).
fn juju4(charm: &Charm, hook: &str, tracing: &Tracing) -> Command {
    let dir = charm.path(".");
    let dir = dir.to_str().unwrap();
    let mut vars: Vec<(&str, String)> = vec![
        ("CHARM_DIR", dir.into()),
        ("JUJU_CHARM_DIR", dir.into()),
        (
            "JUJU_CONTEXT_ID",
            format!("{UNIT}-{hook}-5577006791947779410"),
        ),
        ("JUJU_HOOK_NAME", hook.into()),
        (
            "JUJU_AGENT_SOCKET_ADDRESS",
            "@/var/lib/juju/agents/unit-myapp-0/agent.socket".into(),
        ),
        ("JUJU_AGENT_SOCKET_NETWORK", "unix".into()),
        ("JUJU_UNIT_NAME", UNIT.into()),
        (
            "JUJU_MODEL_UUID",
            "f00dfeed-0000-4000-8000-000000000001".into(),
        ),
        ("JUJU_MODEL_NAME", "test-model".into()),
        (
            "JUJU_API_ADDRESSES",
            "10.0.0.10:17070 10.0.0.11:17070".into(),
        ),
        ("JUJU_MACHINE_ID", "0".into()),
        ("JUJU_PRINCIPAL_UNIT", "".into()),
        ("JUJU_AVAILABILITY_ZONE", "zone-a".into()),
        ("JUJU_VERSION", "4.0.7".into()),
        ("CLOUD_API_VERSION", "".into()),
        ("JUJU_CHARM_HTTP_PROXY", "".into()),
        ("JUJU_CHARM_HTTPS_PROXY", "".into()),
        ("JUJU_CHARM_FTP_PROXY", "".into()),
        ("JUJU_CHARM_NO_PROXY", "127.0.0.1,localhost,::1".into()),
        ("JUJU_CHARM_TRACE_CONFIG_HTTP", tracing.http.into()),
        ("JUJU_CHARM_TRACE_CONFIG_GRPC", tracing.grpc.into()),
        ("JUJU_CHARM_TRACE_CONFIG_CA_CERT", tracing.ca_cert.into()),
    ];
    if tracing.agent {
        vars.extend([
            ("JUJU_TRACE_ID", JUJU_TRACE_ID.into()),
            ("JUJU_SPAN_ID", JUJU_SPAN_ID.into()),
            ("JUJU_TRACE_FLAGS", "1".into()),
        ]);
    }
    ubuntu_path_and_dispatch(charm, hook, vars)
}

/// The same for a Juju 3.6 unit agent: no tracing variables at all, and `JUJU_SLA`.
fn juju36(charm: &Charm, hook: &str) -> Command {
    let dir = charm.path(".");
    let dir = dir.to_str().unwrap();
    let vars: Vec<(&str, String)> = vec![
        ("CHARM_DIR", dir.into()),
        ("JUJU_CHARM_DIR", dir.into()),
        (
            "JUJU_CONTEXT_ID",
            format!("{UNIT}-{hook}-8674665223082153551"),
        ),
        ("JUJU_HOOK_NAME", hook.into()),
        (
            "JUJU_AGENT_SOCKET_ADDRESS",
            "@/var/lib/juju/agents/unit-myapp-0/agent.socket".into(),
        ),
        ("JUJU_AGENT_SOCKET_NETWORK", "unix".into()),
        ("JUJU_UNIT_NAME", UNIT.into()),
        (
            "JUJU_MODEL_UUID",
            "f00dfeed-0000-4000-8000-000000000001".into(),
        ),
        ("JUJU_MODEL_NAME", "test-model".into()),
        ("JUJU_API_ADDRESSES", "10.0.0.10:17070".into()),
        ("JUJU_SLA", "unsupported".into()),
        ("JUJU_MACHINE_ID", "0".into()),
        ("JUJU_PRINCIPAL_UNIT", "".into()),
        ("JUJU_AVAILABILITY_ZONE", "zone-a".into()),
        ("JUJU_VERSION", "3.6.12".into()),
        ("CLOUD_API_VERSION", "".into()),
        ("JUJU_CHARM_HTTP_PROXY", "".into()),
        ("JUJU_CHARM_HTTPS_PROXY", "".into()),
        ("JUJU_CHARM_FTP_PROXY", "".into()),
        ("JUJU_CHARM_NO_PROXY", "127.0.0.1,localhost,::1".into()),
    ];
    ubuntu_path_and_dispatch(charm, hook, vars)
}

/// HookVars' tail (the Ubuntu variables and PATH with the tools first), then the runner's
/// `JUJU_DISPATCH_PATH`; nothing else of the test's environment but the fake tools' state.
fn ubuntu_path_and_dispatch(charm: &Charm, hook: &str, vars: Vec<(&str, String)>) -> Command {
    let mut command = charm.command("dispatch", &format!("hooks/{hook}"), &[]);
    command.env_clear();
    for (key, value) in vars {
        command.env(key, value);
    }
    command
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8")
        .env("TERM", "tmux-256color")
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", charm.tools.display()),
        )
        .env("FAKE_JUJU_STATE", &charm.state)
        .env("JUJU_DISPATCH_PATH", format!("hooks/{hook}"));
    command
}

fn run_ok(mut command: Command) {
    let out = command.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "nothing to tell the operator: {}",
        text(&out.stderr)
    );
}

/// Juju 4 with a charm tracing config (the controller related to Tempo over https) and the
/// agent tracing: the trace continues Juju's (same trace id, the root a child of the agent's
/// span) and goes to the config's base URL + `/v1/traces`, verified with its CA, while the
/// gRPC endpoint beside it is ignored.
#[test]
fn juju4_ships_to_the_charm_tracing_config_with_its_ca_and_continues_the_agents_trace() {
    let charm = Charm::new("shell");
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    let http = format!("https://127.0.0.1:{}", receiver.port);
    let tracing = Tracing {
        agent: true,
        http: &http,
        grpc: "127.0.0.1:4317",
        ca_cert: &pki.ca_pem,
    };
    run_ok(juju4(&charm, "start", &tracing));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/traces");
    assert_eq!(requests[0].answered, Some(200));
    let trace = charm.last_trace();
    assert_eq!(trace["state"], "shipped");
    assert_eq!(trace["trace_id"], JUJU_TRACE_ID);
    assert_eq!(root(&trace)["parent_span_id"], JUJU_SPAN_ID);
    assert_eq!(root(&trace)["attributes"]["juju.version"], "4.0.7");
}

/// Juju 4 with nothing configured: the three `JUJU_CHARM_TRACE_CONFIG_*` are there, empty,
/// which is no destination at all (and nothing to warn about); with the agent tracing, the
/// trace is our own and links to Juju's, since Juju's spans go elsewhere.
#[test]
fn juju4_with_an_empty_charm_tracing_config_keeps_the_trace_and_links_to_the_agents() {
    let charm = Charm::new("shell");
    run_ok(juju4(&charm, "install", &NO_TRACING));
    let trace = charm.last_trace();
    assert_eq!(trace["state"], "pending");
    assert_eq!(root(&trace)["parent_span_id"], "");
    assert_eq!(root(&trace)["links"], serde_json::json!([]));

    run_ok(juju4(
        &charm,
        "start",
        &Tracing {
            agent: true,
            ..NO_TRACING
        },
    ));
    let trace = charm.last_trace();
    assert_eq!(trace["state"], "pending");
    assert_ne!(trace["trace_id"], JUJU_TRACE_ID);
    assert_eq!(root(&trace)["parent_span_id"], "");
    assert_eq!(root(&trace)["links"][0]["trace_id"], JUJU_TRACE_ID);
    assert_eq!(root(&trace)["links"][0]["span_id"], JUJU_SPAN_ID);
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("destination: none"), "{status}");
}

/// Juju 3.6: no tracing variables; the trace is kept, new, linked to nothing, and ships once
/// a destination exists (here `set-destination`).
#[test]
fn juju36_keeps_a_trace_of_its_own_until_there_is_a_destination() {
    let charm = Charm::new("shell");
    run_ok(juju36(&charm, "install"));
    let trace = charm.last_trace();
    assert_eq!(trace["state"], "pending");
    assert_eq!(root(&trace)["links"], serde_json::json!([]));
    assert_eq!(root(&trace)["attributes"]["juju.version"], "3.6.12");
    let receiver = Receiver::start(vec![Answer::ok()]);
    crate::util::set_destination(&charm, &[&receiver.url()]);
    run_ok(juju36(&charm, "start"));
    assert_eq!(
        receiver.requests().len(),
        1,
        "the backlog and this dispatch, in one request"
    );
    assert!(charm.traces().iter().all(|t| t["state"] == "shipped"));
}
