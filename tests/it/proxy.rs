//! Shipping through an HTTP proxy as a proxied Juju model has one (README "Shipping"): a
//! scripted proxy (`util::proxy`) that treats requests as squid's default configuration
//! does, and destinations whose names never resolve (`receiver.invalid`), so only the proxy
//! can reach them.

use std::process::Output;

use crate::util;
use crate::util::proxy::{Behaviour, Proxy};
use crate::util::receiver::{Answer, Receiver, TestPki};
use crate::util::{code, free_port, otlp_spans, our_lines, set_destination, text, Charm};

const DESTINATION: &str = "http://receiver.invalid:4318/v1/traces";
const USER_AGENT: &str = concat!("dispatch/", env!("CARGO_PKG_VERSION"));
const SECRET: &str = "pr0xy-s3cret-canary";

/// `dispatch flush` as a person runs it through `juju exec` (with the hook's environment).
fn flush(charm: &Charm, env: &[(&str, &str)]) -> Output {
    charm
        .command("dispatch", "hooks/update-status", env)
        .arg("flush")
        .output()
        .unwrap()
}

fn ships_in_absolute_form_through(variable: &str) {
    let charm = Charm::new("shell");
    let proxy = Proxy::start(Behaviour::Squid {
        tunnel_443_to: None,
    });
    set_destination(&charm, &[DESTINATION]);
    let out = charm.dispatch("hooks/install", &[(variable, &proxy.url(None))]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(charm.last_trace()["state"], "shipped");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", DESTINATION)
    );
    assert_eq!(request.header("host"), Some("receiver.invalid:4318"));
    assert_eq!(request.header("user-agent"), Some(USER_AGENT));
    assert_eq!(request.header("proxy-authorization"), None);
    assert!(!otlp_spans(&request.body).is_empty());
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(
        status.contains("last export: ok: 1 dispatches sent"),
        "{status}"
    );
}

#[test]
fn an_http_destination_goes_to_jujus_proxy_in_absolute_form_not_through_a_connect_tunnel() {
    ships_in_absolute_form_through("JUJU_CHARM_HTTP_PROXY");
}

#[test]
fn an_http_destination_goes_to_the_standard_http_proxy_in_absolute_form_too() {
    ships_in_absolute_form_through("http_proxy");
}

#[test]
fn proxy_credentials_go_in_proxy_authorization_on_absolute_form_requests() {
    let charm = Charm::new("shell");
    let proxy = Proxy::start(Behaviour::Squid {
        tunnel_443_to: None,
    });
    set_destination(&charm, &[DESTINATION]);
    // Percent-encoded in the URL, decoded in the header (as ureq does on CONNECT).
    let url = proxy.url(Some("ops:p%40ss"));
    let out = charm.dispatch("hooks/install", &[("JUJU_CHARM_HTTP_PROXY", &url)]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(charm.last_trace()["state"], "shipped");
    let requests = proxy.requests();
    assert_eq!(requests[0].path, DESTINATION);
    // base64("ops:p@ss")
    assert_eq!(
        requests[0].header("proxy-authorization"),
        Some("Basic b3BzOnBAc3M=")
    );
    assert_eq!(requests[0].header("authorization"), None);
}

#[test]
fn an_https_destination_still_goes_through_a_connect_tunnel_to_443() {
    let charm = Charm::new("shell");
    let pki = TestPki::for_names(&["receiver.invalid"]);
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    let proxy = Proxy::start(Behaviour::Squid {
        tunnel_443_to: Some(receiver.port),
    });
    let ca = charm.scratch.path("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    set_destination(
        &charm,
        &[
            "https://receiver.invalid/v1/traces",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    let out = charm.dispatch(
        "hooks/install",
        &[("JUJU_CHARM_HTTPS_PROXY", &proxy.url(None))],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(charm.last_trace()["state"], "shipped");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("CONNECT", "receiver.invalid:443")
    );
    assert_eq!(seen[0].header("user-agent"), Some(USER_AGENT));
    // Inside the tunnel: an ordinary request to the receiver.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/traces");
    assert_eq!(requests[0].header("user-agent"), Some(USER_AGENT));
}

#[test]
fn a_proxy_refusing_to_tunnel_to_a_port_other_than_443_is_told_to_the_operator_by_name() {
    let charm = Charm::new("shell");
    let proxy = Proxy::start(Behaviour::Squid {
        tunnel_443_to: None,
    });
    let destination = "https://receiver.invalid:4318/v1/traces";
    set_destination(&charm, &[destination]);
    let out = charm.dispatch(
        "hooks/install",
        &[("JUJU_CHARM_HTTPS_PROXY", &proxy.url(None))],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(
        our_lines(&out.stderr),
        [format!(
            "dispatch: cannot ship traces: proxy {} refused to tunnel to {destination} \
             (HTTP 403 to CONNECT)",
            proxy.url(None)
        )]
    );
    assert_eq!(proxy.requests()[0].path, "receiver.invalid:4318");
    assert_eq!(charm.last_trace()["state"], "pending");
}

#[test]
fn a_proxy_asking_for_credentials_gives_the_one_stderr_line_naming_it_without_them() {
    let charm = Charm::new("shell");
    let proxy = Proxy::start(Behaviour::Always(407));
    let with_secret = proxy.url(Some(&format!("ops:{SECRET}")));
    let shown = format!("http://<credentials>@127.0.0.1:{}", proxy.port);
    for (variable, destination) in [
        ("JUJU_CHARM_HTTP_PROXY", DESTINATION),
        // Refused at the CONNECT.
        (
            "JUJU_CHARM_HTTPS_PROXY",
            "https://receiver.invalid/v1/traces",
        ),
    ] {
        set_destination(&charm, &[destination]);
        let out = charm.dispatch("hooks/install", &[(variable, &with_secret)]);
        assert_eq!(code(&out), 0);
        assert_eq!(
            our_lines(&out.stderr),
            [format!(
                "dispatch: cannot ship traces: proxy {shown} requires authentication \
                 (HTTP 407; sending to {destination})"
            )],
            "{variable}"
        );
        let trace = charm.last_trace();
        assert_eq!(trace["state"], "pending");
        let cause = &util::root(&trace)["attributes"]["dispatch.export.error"];
        assert!(
            cause.as_str().unwrap_or_default().contains(&shown),
            "{trace:#}"
        );
        let status = text(&charm.tool(&["status"]).stdout);
        assert!(status.contains(&shown), "{status}");
        for shown_to_someone in [text(&out.stderr), format!("{trace}"), status] {
            assert!(!shown_to_someone.contains(SECRET), "{shown_to_someone}");
        }
    }
    let methods: Vec<_> = proxy.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["POST", "CONNECT"]);
}

#[test]
fn a_dead_proxy_is_named_as_the_failure_with_its_credentials_redacted_everywhere() {
    let charm = Charm::new("shell");
    let port = free_port();
    let with_secret = format!("http://ops:{SECRET}@127.0.0.1:{port}");
    let shown = format!("http://<credentials>@127.0.0.1:{port}");
    for (variable, destination) in [
        ("JUJU_CHARM_HTTP_PROXY", DESTINATION),
        (
            "JUJU_CHARM_HTTPS_PROXY",
            "https://receiver.invalid/v1/traces",
        ),
    ] {
        set_destination(&charm, &[destination]);
        let env = [(variable, with_secret.as_str())];
        let cause = format!("proxy {shown} refused the connection (sending to {destination})");

        // An outage, not the operator's to fix: no line in the hook, the cause in status.
        let out = charm.dispatch("hooks/install", &env);
        assert_eq!(code(&out), 0);
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
        let trace = charm.last_trace();
        assert_eq!(trace["state"], "pending");
        assert_eq!(
            util::root(&trace)["attributes"]["dispatch.export.error"],
            cause.as_str(),
            "{variable}"
        );
        let status = text(&charm.tool(&["status"]).stdout);
        assert!(
            status.contains(&format!(
                "last export: failed after sending 0 dispatches: {cause}"
            )),
            "{status}"
        );

        // A person flushing hears the same.
        let flushed = flush(&charm, &env);
        assert_ne!(code(&flushed), 0);
        assert!(
            text(&flushed.stderr).contains(&cause),
            "{}",
            text(&flushed.stderr)
        );

        let traces = text(&charm.tool(&["traces", "--format", "json"]).stdout);
        let mut store = std::fs::read(charm.store_file()).unwrap();
        store.extend(
            std::fs::read(format!("{}-wal", charm.store_file().display())).unwrap_or_default(),
        );
        for shown_to_someone in [
            text(&out.stderr),
            status,
            text(&flushed.stdout),
            text(&flushed.stderr),
            traces,
            String::from_utf8_lossy(&store).into_owned(),
        ] {
            assert!(!shown_to_someone.contains(SECRET), "{shown_to_someone}");
        }
    }
}
