//! The hook's environment: Juju's event variables (`juju::HookEnv::from_vars`), the incoming
//! trace context (`TRACEPARENT`/`TRACESTATE`, Juju 4's `JUJU_TRACE_ID`/`JUJU_SPAN_ID`/
//! `JUJU_TRACE_FLAGS`: `context::incoming_context`, `context::parse_traceparent`),
//! the root span and resource made from them, and the destination and proxy chosen from the
//! OTLP, Juju trace-config and proxy variables (`destination::resolve`,
//! `transport::choose_proxy`).
//!
//! Input: `NAME=value` entries separated by NUL bytes, as in /proc/PID/environ; an entry
//! without `=` is argv[0]. Names and values may be any bytes.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, UNIX_EPOCH};

use dispatch::config::Config;
use dispatch::juju::{self, HookEnv};
use dispatch::ship::{destination, transport};
use dispatch::trace::context::{self, DispatchIds};
use dispatch::trace::spans::{RootFacts, TraceBuilder};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut argv0 = OsString::from("./dispatch");
    let mut vars = Vec::new();
    for entry in data.split(|&b| b == 0) {
        match entry.iter().position(|&b| b == b'=') {
            Some(eq) => vars.push((
                OsStr::from_bytes(&entry[..eq]).to_owned(),
                OsStr::from_bytes(&entry[eq + 1..]).to_owned(),
            )),
            None => argv0 = OsStr::from_bytes(entry).to_owned(),
        }
    }
    let _ = juju::dispatch_path_from_argv0(&argv0);
    let env = HookEnv::from_vars(vars.clone(), &argv0);
    assert!(!env.event_name().is_empty());
    let _ = (env.event_kind(), env.application_name(), env.unit_number());

    for (_, value) in &vars {
        if let Some(context) = value.to_str().and_then(context::parse_traceparent) {
            assert!(context.is_valid());
        }
    }
    let incoming = context::incoming_context(&env);
    let mut facts = RootFacts {
        start: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        incoming: incoming.clone(),
        ..RootFacts::default()
    };
    let ids = match &incoming {
        Some(incoming) => {
            assert!(incoming.context.is_valid());
            // Continuing Juju's trace: the child's TRACEPARENT carries the same trace id.
            facts.continued = true;
            let ids = DispatchIds::new(Some(incoming));
            let child = context::parse_traceparent(&ids.child_traceparent()).expect("ours parses");
            assert_eq!(child.trace_id(), incoming.context.trace_id());
            ids
        }
        None => dispatch_fuzz::ids(),
    };
    let builder = TraceBuilder::new(ids, &env, Some("my-charm"), None);
    let end = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
    let root = builder.root_span(&facts, end, None, Vec::new());
    let payload = builder.encode(vec![root]);
    ExportTraceServiceRequest::decode(payload.as_slice()).expect("our own chunk");

    // Shipping reads the UTF-8 variables (`ship::environment`).
    let env: BTreeMap<String, String> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let config = Config::default();
    let _ = destination::protocol(&env, &config);
    if let Some(found) = destination::resolve(&env, &config, None, None) {
        if let Ok(url) = destination::parse_url(&found.url) {
            assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{url}"
            );
        }
        let _ = destination::usable(found.clone());
        // What is shown never keeps the user info of the URL's authority.
        let shown = destination::redact_url(&found.url);
        let authority = |url: &str| -> Option<String> {
            let rest = url.split_once("://")?.1;
            Some(
                rest.split(['/', '?', '#'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        if let (Some(raw), Some(redacted)) = (authority(&found.url), authority(&shown)) {
            if let Some((_, host)) = raw.rsplit_once('@') {
                assert_eq!(redacted, format!("<credentials>@{host}"), "{shown}");
            }
        }
        let _ = transport::choose_proxy(&found.url, &env);
    }
});
