//! The optional `dispatch-trace.yaml` beside the binary (DESIGN §6): what it holds (`Config`)
//! and how it is found and read (`Config::load`); `parse.rs` reads the YAML.
//!
//! Juju builds a hook's environment from scratch, so production switches live here or in the
//! store, never in environment variables. A bad file must never break a hook: it yields the
//! defaults plus a problem description that goes to stderr once and onto the root span, and
//! `dispatch check-config` turns the same problem into a non-zero exit at build time.
//!
//! Limits: at most `MAX_FILE_BYTES` of the file are read (a config is a few hundred bytes, and
//! a hook must not pay for a large file put there by mistake), and a string value holds at
//! most `MAX_VALUE_BYTES` (`service_name` is copied into every trace; paths and URLs need a
//! few KiB at most).

mod parse;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use parse::closest;

pub const CONFIG_FILE: &str = "dispatch-trace.yaml";
pub const DEFAULT_STORE_FILE: &str = ".dispatch-trace.db";
/// ops[tracing] keeps 40 MiB of buffered traces; so do we by default.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 40 * 1024 * 1024;
pub const DEFAULT_EXPORT_BUDGET_MS: u64 = 1000;
/// The most of the file that is read.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// The longest string value.
pub const MAX_VALUE_BYTES: usize = 4096;
const MIN_STORE_MAX_BYTES: u64 = 64 * 1024;
const MAX_EXPORT_BUDGET_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceContextMode {
    /// New trace per dispatch with a span link to Juju's context (default).
    #[default]
    Link,
    /// Same trace id as Juju's context, root parented to Juju's span.
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `http/protobuf`
    #[default]
    HttpProtobuf,
    /// `http/json`
    HttpJson,
}

/// Every key of the config file; see the README for what each does, and `KEYS` for how each
/// is read.
#[derive(Debug, Clone, PartialEq)]
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
    /// Name of the `otlp` relation endpoint; default: found by interface.
    pub otlp_endpoint: Option<String>,
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
    /// Put the exception a failed charm reported (ops' uncaught-exception traceback) on its
    /// `charm` span, as ops[tracing] does (README, *Why a hook failed*).
    pub record_exceptions: bool,
    /// Keep the last this many bytes the charm writes to stderr, for the `charm` span of a
    /// failed hook; 0 (the default): the charm's stderr is left as it is.
    pub stderr_tail: u64,
    /// Listen on loopback during a dispatch for the charm's own spans (OTLP/HTTP), and point
    /// the child's `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` there (README, *Your own spans*). `false`: no
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
            otlp_endpoint: None,
            endpoint: None,
            ca_file: None,
            protocol: Protocol::default(),
            store_path: None,
            store_max_bytes: DEFAULT_STORE_MAX_BYTES,
            export_budget_ms: DEFAULT_EXPORT_BUDGET_MS,
            publish_requirer_data: true,
            juju_trace_context: TraceContextMode::default(),
            record_log_messages: false,
            record_exceptions: true,
            stderr_tail: 0,
            custom_spans: true,
        }
    }
}

/// The outcome of reading the config file: always a usable config, maybe with a problem.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Why the file (or its `store_path`) was not used, for the operator; `None` when it was
    /// fine or absent.
    pub problem: Option<String>,
    pub present: bool,
    /// `store_path` named something not ours: the default store is used instead.
    pub store_path_refused: bool,
}

impl Config {
    pub fn load(charm_dir: &Path) -> Loaded {
        let (config, problem, present) = match read_file(&charm_dir.join(CONFIG_FILE)) {
            Ok(None) => (Config::default(), None, false),
            Ok(Some(bytes)) => match Config::parse(&bytes) {
                Ok(config) => (config, None, true),
                Err(problem) => (Config::default(), Some(problem), true),
            },
            Err(problem) => (Config::default(), Some(problem), true),
        };
        let mut config = config;
        let (problem, store_path_refused) = match problem {
            Some(problem) => (Some(format!("{problem}; using defaults")), false),
            None => {
                let refused = refuse_store_path(&mut config, charm_dir);
                let was = refused.is_some();
                (refused, was)
            }
        };
        Loaded {
            config,
            problem,
            present,
            store_path_refused,
        }
    }

    /// The store file, resolved against the charm dir.
    pub fn store_file(&self, charm_dir: &Path) -> PathBuf {
        match &self.store_path {
            Some(path) => charm_dir.join(path),
            None => charm_dir.join(DEFAULT_STORE_FILE),
        }
    }
}

/// A `store_path` where something is that is not ours to write (README, *The local store*)
/// is not used: nothing there is touched, and the default store beside dispatch keeps the
/// traces (and ships them) until it is fixed. Returns the problem to report.
fn refuse_store_path(config: &mut Config, charm_dir: &Path) -> Option<String> {
    let path = charm_dir.join(config.store_path.as_ref()?);
    let why = crate::store::file::refused_store_path(&path)?;
    config.store_path = None;
    Some(format!(
        "store_path {} cannot hold the trace store: {why}; nothing there is touched, and \
         traces are kept in {} until store_path is fixed",
        path.display(),
        config.store_file(charm_dir).display()
    ))
}

/// The file's bytes, `None` when there is none. Never more than `MAX_FILE_BYTES + 1` are read,
/// and a FIFO put in its place cannot block the hook (`O_NONBLOCK`; only regular files are read).
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let cannot = |e: std::io::Error| format!("cannot read {CONFIG_FILE}: {e}");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
        Ok(file) => file,
    };
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{CONFIG_FILE} is not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // It grew after we looked.
        return Err(format!(
            "{CONFIG_FILE} is more than {MAX_FILE_BYTES} bytes; at most {MAX_FILE_BYTES} are read"
        ));
    }
    Ok(Some(bytes))
}

fn too_large(size: u64) -> String {
    format!("{CONFIG_FILE} is {size} bytes; at most {MAX_FILE_BYTES} are read")
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
otlp_endpoint: send-otlp
endpoint: https://tempo:4318/v1/traces
ca_file: ca.pem
protocol: http/json
store_path: /var/lib/storage/traces.db
store_max_bytes: 1048576
export_budget_ms: 250
publish_requirer_data: false
juju_trace_context: continue
record_log_messages: true
record_exceptions: false
stderr_tail: 4096
custom_spans: false
"#,
        )
        .unwrap();
        assert!(!config.enabled);
        assert_eq!(config.protocol, Protocol::HttpJson);
        assert_eq!(config.juju_trace_context, TraceContextMode::Continue);
        assert_eq!(config.export_budget_ms, 250);
        assert!(config.record_log_messages);
        assert!(!config.record_exceptions);
        assert!(Config::default().record_exceptions);
        assert_eq!(config.stderr_tail, 4096);
        assert_eq!(Config::default().stderr_tail, 0);
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

    fn problem(yaml: &[u8]) -> String {
        Config::parse(yaml).unwrap_err()
    }

    const ALL_KEYS: &str = "enabled, target, service_name, tracing_endpoint, ca_endpoint, \
        otlp_endpoint, endpoint, ca_file, protocol, store_path, store_max_bytes, export_budget_ms, \
        publish_requirer_data, juju_trace_context, record_log_messages, record_exceptions, \
        stderr_tail, custom_spans";

    #[test]
    fn a_yaml_mistake_says_its_line_and_column() {
        // An indented line continues the value above it.
        assert_eq!(
            problem(b"enabled: true\n  bad indent\n"),
            "dispatch-trace.yaml line 1 column 10: enabled must be true or false, not \
             \"true bad indent\" (line 2 is indented, so YAML reads it as part of this value)"
        );
        assert_eq!(
            problem(b"enabled: true\n  store_max_bytes: 100000\n"),
            "dispatch-trace.yaml line 2 column 18: not valid YAML: mapping values are not \
             allowed in this context (is line 2 indented by mistake?)"
        );
        assert_eq!(
            problem(b"custom_spans: false\nenabled: [true\n"),
            "dispatch-trace.yaml line 3 column 1: not valid YAML: did not find expected ',' \
             or ']', while parsing a flow sequence at line 2 column 10"
        );
        assert_eq!(
            problem(b"enabled: *nowhere\n"),
            "dispatch-trace.yaml line 1 column 10: not valid YAML: unknown anchor"
        );
        assert_eq!(
            problem(b"enabled: true\nservice_name: a\x01b\n"),
            "dispatch-trace.yaml line 2 column 16: control character U+0001 is not allowed in YAML"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_before_a_bad_key_above_it() {
        assert_eq!(
            problem(b"enabeld: false\nprotocol: [\n"),
            "dispatch-trace.yaml line 3 column 1: not valid YAML: did not find expected node \
             content, while parsing a flow node"
        );
    }

    #[test]
    fn a_tab_that_indents_a_line_is_named_as_the_mistake() {
        let tab = "a tab indents this line; YAML indents with spaces only";
        assert_eq!(
            problem(b"\tenabled: true\n"),
            format!("dispatch-trace.yaml line 1 column 1: {tab}")
        );
        assert_eq!(
            problem(b"enabled: true\n\tstore_max_bytes: 100000\n"),
            format!("dispatch-trace.yaml line 2 column 1: {tab}")
        );
        // A tab after the colon separates, as a space does.
        assert!(!Config::parse(b"enabled:\tfalse\n").unwrap().enabled);
    }

    #[test]
    fn an_unknown_key_names_the_closest_known_one_or_lists_them_all() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"enabeld: false\n",
                "line 1 column 1: unknown key \"enabeld\" (did you mean \"enabled\"?)",
            ),
            (
                b"enabled: true\nservice-name: x\n",
                "line 2 column 1: unknown key \"service-name\" (did you mean \"service_name\"?)",
            ),
            (
                b"Store_Max_Size: 100000\n",
                "line 1 column 1: unknown key \"Store_Max_Size\" (did you mean \"store_max_bytes\"?)",
            ),
            (
                b"{enabled: true, endpont: http://x}\n",
                "line 1 column 17: unknown key \"endpont\" (did you mean \"endpoint\"?)",
            ),
        ];
        for (yaml, said) in cases {
            assert_eq!(problem(yaml), format!("dispatch-trace.yaml {said}"));
        }
        assert_eq!(
            problem(b"timeout: 5\n"),
            format!(
                "dispatch-trace.yaml line 1 column 1: unknown key \"timeout\"; the keys are \
                 {ALL_KEYS}"
            )
        );
        assert_eq!(
            problem(b"1: x\n"),
            format!(
                "dispatch-trace.yaml line 1 column 1: unknown key \"1\"; the keys are {ALL_KEYS}"
            )
        );
        // A long key is shown cut short, on one line.
        let long = format!("\"{}\\n\": 1\n", "k".repeat(100));
        let said = problem(long.as_bytes());
        assert!(
            said.starts_with(&format!(
                "dispatch-trace.yaml line 1 column 1: unknown key \"{}\"... (101 bytes); the keys",
                "k".repeat(60)
            )),
            "{said}"
        );
        assert!(!said.contains('\n'), "{said}");
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_its_key_and_what_it_takes() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"store_max_bytes: lots\n",
                "line 1 column 18: store_max_bytes must be a whole number of bytes, at least \
                 65536, not \"lots\"",
            ),
            (
                b"enabled: yes please\n",
                "line 1 column 10: enabled must be true or false, not \"yes please\"",
            ),
            (
                b"custom_spans: \"false\"\n",
                "line 1 column 15: custom_spans must be true or false, not \"false\"",
            ),
            (
                b"record_log_messages:\n",
                "line 1 column 21: record_log_messages is empty; it must be true or false",
            ),
            (
                b"export_budget_ms: 1.5\n",
                "line 1 column 19: export_budget_ms must be a whole number of milliseconds, at \
                 most 60000, not 1.5",
            ),
            (
                b"export_budget_ms: 999999\n",
                "line 1 column 19: export_budget_ms must be at most 60000, not 999999",
            ),
            (
                b"store_max_bytes: -5\n",
                "line 1 column 18: store_max_bytes must be a whole number of bytes, at least \
                 65536, not -5",
            ),
            (
                b"store_max_bytes: 1000\n",
                "line 1 column 18: store_max_bytes must be at least 65536, not 1000",
            ),
            (
                b"protocol: grpc\n",
                "line 1 column 11: protocol must be http/protobuf or http/json, not \"grpc\"",
            ),
            (
                b"juju_trace_context: {a: 1}\n",
                "line 1 column 21: juju_trace_context must be link or continue, not a mapping \
                 (`key: value` lines)",
            ),
            (
                b"target: [a, b]\n",
                "line 1 column 9: target must be text, not a list",
            ),
            (
                b"endpoint: tempo:4318\n",
                "line 1 column 11: endpoint tempo:4318 is not a usable URL: it does not start \
                 with http:// or https://",
            ),
            (
                b"enabled: !yes true\n",
                "line 1 column 10: enabled must be true or false, not a value with a YAML tag \
                 (`!...`)",
            ),
        ];
        for (yaml, said) in cases {
            assert_eq!(problem(yaml), format!("dispatch-trace.yaml {said}"));
        }
    }

    #[test]
    fn a_string_value_longer_than_the_limit_is_refused_with_its_key_and_length() {
        let at_limit = format!("service_name: {}\n", "s".repeat(MAX_VALUE_BYTES));
        let config = Config::parse(at_limit.as_bytes()).unwrap();
        assert_eq!(config.service_name.map(|s| s.len()), Some(4096));
        for key in [
            "service_name",
            "target",
            "endpoint",
            "store_path",
            "ca_endpoint",
        ] {
            let yaml = format!("{key}: https://{}\n", "s".repeat(MAX_VALUE_BYTES - 7));
            assert_eq!(
                problem(yaml.as_bytes()),
                format!(
                    "dispatch-trace.yaml line 1 column {}: {key} is 4097 bytes long; at most 4096",
                    key.len() + 3
                )
            );
        }
    }

    #[test]
    fn a_file_that_is_not_key_value_lines_says_what_it_is() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"- enabled: true\n- custom_spans: false\n",
                "must hold `key: value` lines, not a list",
            ),
            (
                b"just a sentence\n",
                "must hold `key: value` lines, not the single value \"just a sentence\"",
            ),
            (
                b"enabled:false\n",
                "must hold `key: value` lines, not the single value \"enabled:false\" (a space \
                 must follow the colon)",
            ),
            (
                b"42\n",
                "must hold `key: value` lines, not the single value 42",
            ),
        ];
        for (yaml, said) in cases {
            assert_eq!(problem(yaml), format!("dispatch-trace.yaml {said}"));
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_says_where_the_first_bad_byte_is() {
        assert_eq!(
            problem(b"enabled: true\nservice_name: caf\xe9\n"),
            "dispatch-trace.yaml line 2 column 18: byte 0xe9 is not UTF-8; save the file as \
             UTF-8 text"
        );
        assert_eq!(
            problem(b"\xff\xfee\x00n\x00"),
            "dispatch-trace.yaml line 1 column 1: byte 0xff is not UTF-8 (the file looks like \
             UTF-16); save the file as UTF-8 text"
        );
        // A UTF-8 byte order mark is fine.
        assert!(
            !Config::parse(b"\xef\xbb\xbfenabled: false\n")
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn a_key_set_twice_or_a_second_document_is_a_problem() {
        assert_eq!(
            problem(b"enabled: true\ncustom_spans: true\nenabled: false\n"),
            "dispatch-trace.yaml line 3 column 1: enabled is set a second time"
        );
        assert_eq!(
            problem(b"---\nenabled: true\n---\nenabled: false\n"),
            "dispatch-trace.yaml line 3 column 1: a second YAML document starts here; the file \
             must hold one"
        );
    }

    #[test]
    fn comments_alone_or_an_empty_document_mean_defaults() {
        for yaml in [
            "# enabled: false\n",
            "---\n",
            "~\n",
            "---\n# nothing yet\n...\n",
        ] {
            assert_eq!(
                Config::parse(yaml.as_bytes()),
                Ok(Config::default()),
                "{yaml:?}"
            );
        }
        let config = Config::parse(b"service_name: 123\nservice_name_is_a_number: no\n");
        assert!(config.is_err(), "an unknown key after a good one");
        let config = Config::parse(b"service_name: 123\ntarget: ~\n").unwrap();
        assert_eq!(config.service_name.as_deref(), Some("123"));
        assert_eq!(config.target, None);
    }

    #[test]
    fn a_file_larger_than_the_limit_is_not_read() {
        let scratch = crate::test_support::Scratch::new("config-size");
        let file = std::fs::File::create(scratch.path(CONFIG_FILE)).unwrap();
        // Sparse: costs no disk, and reading it would cost the 50 MB the problem was about.
        file.set_len(50 * 1024 * 1024).unwrap();
        let loaded = Config::load(&scratch.0);
        assert_eq!(
            loaded.problem.as_deref(),
            Some("dispatch-trace.yaml is 52428800 bytes; at most 65536 are read; using defaults")
        );
        assert_eq!(loaded.config, Config::default());

        // Up to the limit is fine.
        let mut fits = b"enabled: false\n".to_vec();
        fits.resize(MAX_FILE_BYTES as usize, b'#');
        std::fs::write(scratch.path(CONFIG_FILE), &fits).unwrap();
        let loaded = Config::load(&scratch.0);
        assert_eq!(loaded.problem, None);
        assert!(!loaded.config.enabled);
        fits.push(b'#');
        assert_eq!(
            Config::parse(&fits).unwrap_err(),
            "dispatch-trace.yaml is 65537 bytes; at most 65536 are read"
        );
    }

    #[test]
    fn a_config_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let scratch = crate::test_support::Scratch::new("config-special");
        // A device (`/dev/zero` would be read until memory ran out: /dev/null stands in for
        // it here, so a regression fails this test instead of the machine).
        std::os::unix::fs::symlink("/dev/null", scratch.path(CONFIG_FILE)).unwrap();
        let said = "dispatch-trace.yaml is not a regular file; using defaults";
        assert_eq!(Config::load(&scratch.0).problem.as_deref(), Some(said));
        std::fs::remove_file(scratch.path(CONFIG_FILE)).unwrap();
        nix::unistd::mkfifo(
            &scratch.path(CONFIG_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // Opening a FIFO for reading waits for a writer.
        let dir = scratch.0.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(Config::load(&dir).problem));
        let problem = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO blocked the load");
        assert_eq!(problem.as_deref(), Some(said));
    }
}
