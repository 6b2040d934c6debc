//! `dispatch status`: what a hook would do now and why (README "Why was my trace not
//! shipped?"): config, store, relations, destination, backoff, last export. Reads only.

use std::path::Path;

use anyhow::Result;

use super::locate::{in_flight, why_not_creatable};
use super::{human, print};
use crate::config::{Config, CONFIG_FILE};
use crate::ship::{destination, export};
use crate::store::{settings, Store};

/// What `status` says of the store, and whether it is a problem.
fn describe_store(path: &Path, cap: u64, out: &mut String) -> (Option<Store>, bool) {
    let store = match Store::open_to_read(path) {
        Ok(Some(store)) => store,
        Ok(None) => {
            return match why_not_creatable(path) {
                None => {
                    out.push_str(&format!(
                        "store: {} (not created yet; the first hook creates it)\n",
                        path.display()
                    ));
                    (None, false)
                }
                Some(why) => {
                    out.push_str(&format!(
                        "store: {}: PROBLEM: it cannot be created: {why}\n",
                        path.display()
                    ));
                    (None, true)
                }
            };
        }
        Err(e) => {
            out.push_str(&format!("store: {}: PROBLEM: {e}\n", path.display()));
            return (None, true);
        }
    };
    match store.stats() {
        Ok(stats) => {
            out.push_str(&format!(
                "store: {} ({} on disk, {} in use, cap {})\n",
                path.display(),
                human::bytes(stats.file_bytes),
                human::bytes(stats.used_bytes.max(0) as u64),
                human::bytes(cap)
            ));
            out.push_str(&format!(
                "dispatches: {} stored ({} of traces), {} waiting to be shipped, {} shipped, {} in \
                 flight\n",
                stats.chunks,
                human::bytes(stats.trace_bytes.max(0) as u64),
                stats.pending,
                stats.shipped,
                in_flight(path)
            ));
            (Some(store), false)
        }
        Err(e) => {
            out.push_str(&format!(
                "store: {}: PROBLEM: {}\n",
                path.display(),
                store.read_error(e)
            ));
            (None, true)
        }
    }
}

pub(super) fn status(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let path = loaded.config.store_file(charm_dir);
    let now = std::time::SystemTime::now();
    let mut out = String::new();
    let mut problems = 0;
    let disabled_in_store = crate::store::disabled_flag(&path).exists();
    let tracing = if !loaded.config.enabled {
        format!("disabled (enabled: false in {CONFIG_FILE})")
    } else if disabled_in_store {
        "disabled (by `dispatch disable`)".to_string()
    } else {
        "enabled".to_string()
    };
    out.push_str(&format!("tracing: {tracing}\n"));
    out.push_str(&format!(
        "config: {}\n",
        match (&loaded.problem, loaded.present) {
            (Some(problem), _) => {
                problems += 1;
                format!("PROBLEM: {problem}")
            }
            (None, true) => format!("{} (ok)", charm_dir.join(CONFIG_FILE).display()),
            (None, false) => "defaults (no dispatch-trace.yaml)".to_string(),
        }
    ));
    let (store, store_problem) = describe_store(&path, loaded.config.store_max_bytes, &mut out);
    problems += usize::from(store_problem);
    for copy in crate::store::file::moved_aside(&path) {
        out.push_str(&format!(
            "moved aside: {} ({}, {}): a damaged store, kept for a look\n",
            copy.path.display(),
            human::bytes(copy.bytes),
            human::utc_and_relative(copy.when, now)
        ));
    }
    let env = crate::ship::environment();
    let stored = match &store {
        Some(store) => settings::destination(store).map_err(|e| store.read_error(e))?,
        None => None,
    };
    let relation = store.as_ref().and_then(settings::relation_answer);
    if let Some(answer) = &relation {
        let lowest_of = |count: usize| {
            if count > 1 {
                format!(" (lowest of {count} relations)")
            } else {
                String::new()
            }
        };
        if let Some(id) = &answer.otlp_relation_id {
            out.push_str(&format!(
                "otlp relation: {id}{} ({})\n",
                lowest_of(answer.otlp_relations),
                match &answer.otlp_url {
                    Some(url) => format!("provider publishes {}", destination::redact_url(url)),
                    None if answer.otlp_grpc_only => "the provider offers traces over gRPC only, \
                        and dispatch ships over OTLP/HTTP: nothing to ship to"
                        .to_string(),
                    None => "no http endpoint for traces published yet".to_string(),
                }
            ));
        }
        match &answer.relation_id {
            Some(id) => out.push_str(&format!(
                "tracing relation: {id}{} ({})\n",
                lowest_of(answer.relations),
                match &answer.url {
                    Some(url) => format!("provider publishes {}", destination::redact_url(url)),
                    None => "no otlp_http receiver published yet".to_string(),
                }
            )),
            None if answer.otlp_relation_id.is_some() => {}
            None => out.push_str("tracing relation: none\n"),
        }
        if answer.ca_relation {
            out.push_str(&format!(
                "certificate_transfer relation: {} CA certificate(s)\n",
                answer.ca.len()
            ));
        }
    }
    let resolved = destination::resolve(&env, &loaded.config, stored.as_ref(), relation.as_ref());
    match resolved.map(destination::usable) {
        None if destination::waits_for_ca(relation.as_ref()) => out.push_str(
            "destination: waiting for the CA certificate from the certificate_transfer relation \
             (the relation's URL is https; traces are kept in the local store)\n",
        ),
        None => out.push_str("destination: none (traces are kept in the local store only)\n"),
        Some(Err(why)) => {
            problems += 1;
            out.push_str(&format!(
                "destination: PROBLEM: {why}; traces are kept in the local store\n"
            ));
        }
        Some(Ok(destination)) => {
            out.push_str(&format!(
                "destination: {} (from {}; CA: {})\n",
                destination::redact_url(&destination.url),
                destination.source.describe(),
                destination.ca.describe()
            ));
            let protocol = match destination::protocol(&env, &loaded.config) {
                crate::config::Protocol::HttpProtobuf => "http/protobuf",
                crate::config::Protocol::HttpJson => "http/json",
            };
            out.push_str(&format!("protocol: {protocol}\n"));
            if let Some(store) = &store {
                if let Some((failures, until)) = export::backoff_state(store, &destination) {
                    let until = human::from_unix_secs(until);
                    let next = if until > now {
                        format!("next try {}", human::utc_and_relative(until, now))
                    } else {
                        "the next hook tries again".to_string()
                    };
                    out.push_str(&format!(
                        "backoff: {failures} failed export(s) in a row; {next}\n"
                    ));
                }
            }
        }
    }
    if let Some((last, when)) = store.as_ref().and_then(settings::LastExport::load) {
        let when = when.map_or(String::new(), |when| {
            format!(" ({})", human::utc_and_relative(when, now))
        });
        out.push_str(&format!("last export: {last}{when}\n"));
    }
    print(&out)?;
    Ok(if problems > 0 { 1 } else { 0 })
}
