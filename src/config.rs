//! The optional `dispatch-trace.yaml` beside the binary (DESIGN §6).
//!
//! Juju builds a hook's environment from scratch, so production switches live here or in the
//! store, never in environment variables. A bad file must never break a hook: it yields the
//! defaults plus a problem description that goes to stderr once and onto the root span, and
//! `dispatch check-config` turns the same problem into a non-zero exit at build time.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const CONFIG_FILE: &str = "dispatch-trace.yaml";
pub const DEFAULT_STORE_FILE: &str = ".dispatch-trace.db";
/// ops[tracing] keeps 40 MiB of buffered traces; so do we by default.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 40 * 1024 * 1024;
pub const DEFAULT_EXPORT_BUDGET_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TraceContextMode {
    /// New trace per dispatch with a span link to Juju's context (default).
    #[default]
    Link,
    /// Same trace id as Juju's context, root parented to Juju's span.
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Protocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Every key of the config file; see the README for what each does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `false` turns tracing off: the target is exec'd directly.
    pub enabled: bool,
    /// Program to run instead of `dispatch.orig`, relative to the charm dir or absolute.
    pub target: Option<PathBuf>,
    /// `service.name` resource attribute; default the application name.
    pub service_name: Option<String>,
    /// Name of the `tracing` relation endpoint; default: found by interface in metadata.
    pub tracing_endpoint: Option<String>,
    /// Name of the `certificate_transfer` relation endpoint; default: found by interface.
    pub ca_endpoint: Option<String>,
    /// Static OTLP/HTTP traces URL.
    pub endpoint: Option<String>,
    /// CA bundle (PEM) for `endpoint`.
    pub ca_file: Option<PathBuf>,
    pub protocol: Protocol,
    /// Where the SQLite buffer lives (charm storage on Kubernetes); relative to the charm dir.
    pub store_path: Option<PathBuf>,
    pub store_max_bytes: u64,
    pub export_budget_ms: u64,
    /// Whether the leader publishes our requirer data on the tracing relation.
    pub publish_requirer_data: bool,
    pub juju_trace_context: TraceContextMode,
    /// Record the text of `juju-log` messages (free text may hold secrets: off by default).
    pub record_log_messages: bool,
    /// Listen on loopback during a dispatch for the charm's own spans (OTLP/HTTP), and point
    /// the child's `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` there (issue #5). `false`: no
    /// listener, and the child's OpenTelemetry variables are left as the hook had them.
    pub custom_spans: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            target: None,
            service_name: None,
            tracing_endpoint: None,
            ca_endpoint: None,
            endpoint: None,
            ca_file: None,
            protocol: Protocol::default(),
            store_path: None,
            store_max_bytes: DEFAULT_STORE_MAX_BYTES,
            export_budget_ms: DEFAULT_EXPORT_BUDGET_MS,
            publish_requirer_data: true,
            juju_trace_context: TraceContextMode::default(),
            record_log_messages: false,
            custom_spans: true,
        }
    }
}

/// The outcome of reading the config file: always a usable config, maybe with a problem.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Why the file was not used, for the operator; `None` when it was fine or absent.
    pub problem: Option<String>,
    pub present: bool,
}

impl Config {
    pub fn load(charm_dir: &Path) -> Loaded {
        let path = charm_dir.join(CONFIG_FILE);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded {
                config: Config::default(),
                problem: None,
                present: false,
            },
            Err(e) => Loaded {
                config: Config::default(),
                problem: Some(format!(
                    "cannot read {}: {e}; using defaults",
                    path.display()
                )),
                present: true,
            },
            Ok(bytes) => match Config::parse(&bytes) {
                Ok(config) => Loaded {
                    config,
                    problem: None,
                    present: true,
                },
                Err(e) => Loaded {
                    config: Config::default(),
                    problem: Some(format!("{}: {e}; using defaults", path.display())),
                    present: true,
                },
            },
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml::from_slice(bytes).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.export_budget_ms > 60_000 {
            return Err("export_budget_ms must be at most 60000".into());
        }
        if self.store_max_bytes < 64 * 1024 {
            return Err("store_max_bytes must be at least 65536".into());
        }
        if let Some(endpoint) = &self.endpoint {
            crate::destination::parse_url(endpoint).map_err(|why| {
                format!("endpoint: {}", crate::destination::bad_url(endpoint, &why))
            })?;
        }
        Ok(())
    }

    /// The store file, resolved against the charm dir.
    pub fn store_file(&self, charm_dir: &Path) -> PathBuf {
        match &self.store_path {
            Some(path) => charm_dir.join(path),
            None => charm_dir.join(DEFAULT_STORE_FILE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"\n  \n").unwrap(), Config::default());
    }

    #[test]
    fn every_key_parses() {
        let config = Config::parse(
            br#"
enabled: false
target: bin/charm
service_name: my-service
tracing_endpoint: tracing
ca_endpoint: ca
endpoint: https://tempo:4318/v1/traces
ca_file: ca.pem
protocol: http/json
store_path: /var/lib/storage/traces.db
store_max_bytes: 1048576
export_budget_ms: 250
publish_requirer_data: false
juju_trace_context: continue
record_log_messages: true
custom_spans: false
"#,
        )
        .unwrap();
        assert!(!config.enabled);
        assert_eq!(config.protocol, Protocol::HttpJson);
        assert_eq!(config.juju_trace_context, TraceContextMode::Continue);
        assert_eq!(config.export_budget_ms, 250);
        assert!(config.record_log_messages);
        assert!(!config.custom_spans);
        assert!(Config::default().custom_spans);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_problems() {
        assert!(Config::parse(b"enabeld: false")
            .unwrap_err()
            .contains("enabeld"));
        assert!(Config::parse(b"protocol: grpc").is_err());
        assert!(Config::parse(b"endpoint: tempo:4318").is_err());
        assert!(Config::parse(b"- a list").is_err());
        assert!(Config::parse(b"export_budget_ms: 999999").is_err());
    }

    #[test]
    fn a_broken_file_loads_as_defaults_with_a_problem() {
        let dir = std::env::temp_dir().join(format!("dispatch-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), b"enabled: [nope").unwrap();
        let loaded = Config::load(&dir);
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.problem.unwrap().contains(CONFIG_FILE));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
