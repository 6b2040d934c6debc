//! The charm's YAML: `dispatch-trace.yaml` (`config::Config::parse`) and `metadata.yaml` or
//! `charmcraft.yaml` (`metadata::CharmMetadata::parse`), and the relation endpoints found
//! from the two. Both files come with the charm, and a bad one must never break a hook.
//!
//! Input: one YAML file, read as both (seeds: the fixtures' files and documented configs).
#![no_main]

use dispatch::config::Config;
use dispatch::metadata::CharmMetadata;
use dispatch::relation::{Endpoints, CA_INTERFACE, TRACING_INTERFACE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config::parse(data);
    if let Ok(config) = &config {
        // What `validate` promises the rest of the code.
        assert!(config.export_budget_ms <= 60_000);
        assert!(config.store_max_bytes >= 64 * 1024);
        if let Some(endpoint) = &config.endpoint {
            assert!(endpoint.starts_with("http://") || endpoint.starts_with("https://"));
        }
    }
    let meta = CharmMetadata::parse(data).ok();
    let config = config.unwrap_or_default();
    let endpoints = Endpoints::find(meta.as_ref(), &config);
    if let Some(meta) = &meta {
        for (interface, found) in [
            (TRACING_INTERFACE, &endpoints.tracing),
            (CA_INTERFACE, &endpoints.ca),
        ] {
            if let Some(name) = meta.endpoint_for(interface) {
                assert_eq!(meta.requires[name].interface.as_deref(), Some(interface));
                assert!(found.is_some());
            }
        }
    }
});
