//! Reading the `tracing` and `certificate_transfer` relations (DESIGN §3): which endpoints to
//! read, and what the provider's databags mean. Pure functions over the hook tools' JSON
//! answers, so every shape Juju and the providers produce is unit-tested; running the tools
//! and caching the answer is the wrapper's job.
//!
//! - `tracing` v2: the provider's app databag has `receivers`, a JSON-encoded list of
//!   `{"protocol": {"name": "otlp_http", "type": "http"}, "url": "http://host:4318"}`; we ship
//!   to the `otlp_http` receiver's URL + `/v1/traces`. Our side (the requirer, as leader)
//!   publishes `receivers='["otlp_http"]'`, merged into whatever list is there.
//! - `certificate_transfer` v1: the provider app's `certificates`, a JSON-encoded list of PEM
//!   strings; v0 fallback: provider units' `ca`, `certificate` and `chain` (raw PEM, or JSON).
//!   Only certificates are kept, each once, read by the PEM parser the TLS setup uses
//!   (ureq's) and stored as PEM text.
//! - `otlp` (`otlp.rs`): the provider app's `endpoints`; we ship to its http endpoint for
//!   traces + `/v1/traces`, and publish nothing (the interface requires nothing of us). When
//!   both exist, `tracing` comes first.
//! - Several relations on one endpoint: the lowest id wins (and `dispatch status` says so).

mod certificates;
pub mod otlp;
mod tracing;

use serde::Deserialize;

use crate::config::Config;
use crate::metadata::CharmMetadata;
use certificates::keep_first_of_each;
pub use certificates::{certificates_v0, certificates_v1};
pub use tracing::{merged_requirer_receivers, traces_url};

pub const TRACING_INTERFACE: &str = "tracing";
pub const CA_INTERFACE: &str = "certificate_transfer";
pub const OTLP_INTERFACE: &str = "otlp";

/// The endpoints to read: from the config file, else found by interface in the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub tracing: Option<String>,
    pub ca: Option<String>,
    pub otlp: Option<String>,
}

impl Endpoints {
    pub fn find(meta: Option<&CharmMetadata>, config: &Config) -> Endpoints {
        let by_interface = |interface: &str| meta.and_then(|m| m.endpoint_for(interface));
        Endpoints {
            tracing: config
                .tracing_endpoint
                .clone()
                .or_else(|| by_interface(TRACING_INTERFACE).map(String::from)),
            ca: config
                .ca_endpoint
                .clone()
                .or_else(|| by_interface(CA_INTERFACE).map(String::from)),
            otlp: config
                .otlp_endpoint
                .clone()
                .or_else(|| by_interface(OTLP_INTERFACE).map(String::from)),
        }
    }

    /// No endpoint declared: no hook-tool call at all.
    pub fn is_empty(&self) -> bool {
        self.tracing.is_none() && self.ca.is_none() && self.otlp.is_none()
    }
}

/// The relation id with the lowest number from `relation-ids --format=json` output
/// (Juju sorts them as strings, so `ep:10` comes before `ep:5`), and how many there were.
pub fn lowest_relation(
    relation_ids_json: &[u8],
    excluding: Option<&str>,
) -> (Option<String>, usize) {
    let ids: Vec<String> = serde_json::from_slice(relation_ids_json).unwrap_or_default();
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| Some(id.as_str()) != excluding)
        .collect();
    let count = ids.len();
    let lowest = ids.into_iter().min_by_key(|id| {
        id.rsplit(':')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    (lowest, count)
}

/// A string or a JSON-encoded string (databag values are JSON-encoded in v2/v1; some
/// providers write raw text).
fn decode_value(value: &str) -> String {
    serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
}

/// What the relations said, cached in the store between the events that can change it.
/// (Fields added later read as their default from an answer cached before them.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct Answer {
    /// The traces URL of the lowest tracing relation's provider, if it published one.
    pub url: Option<String>,
    pub relation_id: Option<String>,
    /// How many tracing relations there are (more than one: the lowest id is used).
    pub relations: usize,
    /// Whether a certificate_transfer relation exists (then https waits for its CA).
    pub ca_relation: bool,
    /// PEM certificates from it.
    pub ca: Vec<String>,
    /// The traces URL of the lowest otlp relation's provider (its http endpoint for traces).
    pub otlp_url: Option<String>,
    pub otlp_relation_id: Option<String>,
    /// How many otlp relations there are.
    pub otlp_relations: usize,
    /// The otlp provider offers traces over gRPC only, which we do not speak.
    pub otlp_grpc_only: bool,
}

impl Answer {
    /// The URL the relations give, and whether it came from `otlp`: `tracing` first when
    /// both give one.
    pub fn url_in_force(&self) -> Option<(&str, bool)> {
        match (&self.url, &self.otlp_url) {
            (Some(url), _) => Some((url, false)),
            (None, Some(url)) => Some((url, true)),
            (None, None) => None,
        }
    }
}

/// Runs one hook tool, returning its stdout if it exited 0.
pub trait Tools {
    fn run(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>>;
}

/// Whether this event can change the answer. (With no answer cached yet, the wrapper reads
/// the relations after the charm instead.)
pub fn event_can_change_answer(event: &str, relation: Option<&str>, endpoints: &Endpoints) -> bool {
    if endpoints.is_empty() {
        return false;
    }
    if matches!(
        event,
        "install" | "start" | "upgrade-charm" | "leader-elected"
    ) {
        return true;
    }
    relation.is_some_and(|r| {
        [&endpoints.tracing, &endpoints.ca, &endpoints.otlp]
            .iter()
            .any(|endpoint| endpoint.as_deref() == Some(r))
    })
}

/// A databag, or `None` when it could not be read (the tool failed or answered garbage).
fn databag(
    tools: &mut dyn Tools,
    relation_id: &str,
    app_flag: bool,
    of: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut args = vec!["-r", relation_id];
    if app_flag {
        args.push("--app");
    }
    args.extend(["-", of, "--format=json"]);
    tools
        .run("relation-get", &args)
        .and_then(|out| serde_json::from_slice(&out).ok())
}

fn remote_app(tools: &mut dyn Tools, relation_id: &str) -> Option<String> {
    let out = tools.run(
        "relation-list",
        &["-r", relation_id, "--app", "--format=json"],
    )?;
    serde_json::from_slice::<String>(&out)
        .ok()
        .filter(|a| !a.is_empty())
}

/// Reads both relations. `broken` is the id of a relation being broken in this event (not
/// to be read: it is gone). `None` when a hook tool failed on the way: the caller keeps what
/// it knew rather than caching a half answer.
pub fn discover(
    tools: &mut dyn Tools,
    endpoints: &Endpoints,
    broken: Option<&str>,
) -> Option<Answer> {
    let mut answer = Answer::default();
    if let Some(endpoint) = &endpoints.tracing {
        let ids = tools.run("relation-ids", &[endpoint, "--format=json"])?;
        let (lowest, count) = lowest_relation(&ids, broken);
        answer.relations = count;
        if let Some(id) = lowest {
            let app = remote_app(tools, &id)?;
            let bag = databag(tools, &id, true, &app)?;
            answer.url = bag
                .get("receivers")
                .and_then(|v| v.as_str())
                .map(decode_value)
                .and_then(|r| traces_url(&r));
            answer.relation_id = Some(id);
        }
    }
    if let Some(endpoint) = &endpoints.otlp {
        let ids = tools.run("relation-ids", &[endpoint, "--format=json"])?;
        let (lowest, count) = lowest_relation(&ids, broken);
        answer.otlp_relations = count;
        if let Some(id) = lowest {
            let app = remote_app(tools, &id)?;
            let bag = databag(tools, &id, true, &app)?;
            let offered = bag
                .get("endpoints")
                .and_then(|v| v.as_str())
                .map_or(otlp::Traces::Nothing, otlp::traces);
            match offered {
                otlp::Traces::Http(url) => answer.otlp_url = Some(url),
                otlp::Traces::GrpcOnly => answer.otlp_grpc_only = true,
                otlp::Traces::Nothing => {}
            }
            answer.otlp_relation_id = Some(id);
        }
    }
    if let Some(endpoint) = &endpoints.ca {
        let ids = tools.run("relation-ids", &[endpoint, "--format=json"])?;
        if let (Some(id), _) = lowest_relation(&ids, broken) {
            answer.ca_relation = true;
            if let Some(app) = remote_app(tools, &id) {
                answer.ca = certificates_v1(&databag(tools, &id, true, &app)?);
            }
            if answer.ca.is_empty() {
                let units: Vec<String> = tools
                    .run("relation-list", &["-r", &id, "--format=json"])
                    .and_then(|out| serde_json::from_slice(&out).ok())?;
                for unit in units {
                    answer
                        .ca
                        .extend(certificates_v0(&databag(tools, &id, false, &unit)?));
                }
                keep_first_of_each(&mut answer.ca);
            }
        }
    }
    Some(answer)
}

/// As leader, publishes our requirer data where it is missing: `receivers` with `otlp_http`
/// on the tracing relation, `version=1` on the certificate_transfer relation. Run before the
/// charm, so the charm's own writes of the same keys come later and win.
///
/// Each hook-tool call is a round trip to the agent, and most units have no such relation: so
/// `relation-ids` comes first (discovery needs the same answers, which the caller's `Tools`
/// remembers) and `is-leader` only when there is a relation to publish on (README,
/// "Relations, with no code in the charm").
pub fn publish(tools: &mut dyn Tools, endpoints: &Endpoints, our_app: &str, broken: Option<&str>) {
    let mut lowest = |endpoint: &Option<String>| {
        let endpoint = endpoint.as_deref()?;
        tools
            .run("relation-ids", &[endpoint, "--format=json"])
            .and_then(|ids| lowest_relation(&ids, broken).0)
    };
    let tracing = lowest(&endpoints.tracing);
    let ca = lowest(&endpoints.ca);
    if tracing.is_none() && ca.is_none() {
        return;
    }
    let leader = tools
        .run("is-leader", &["--format=json"])
        .and_then(|out| serde_json::from_slice::<bool>(&out).ok())
        .unwrap_or(false);
    if !leader {
        return;
    }
    if let Some(id) = &tracing {
        // Not read: not written (a blind write could drop entries the charm published).
        let Some(ours) = databag(tools, id, true, our_app) else {
            return;
        };
        let current = ours.get("receivers").and_then(|v| v.as_str());
        if let Some(value) = merged_requirer_receivers(current) {
            let setting = format!("receivers={value}");
            tools.run("relation-set", &["-r", id, "--app", &setting]);
        }
    }
    if let Some(id) = &ca {
        let Some(ours) = databag(tools, id, true, our_app) else {
            return;
        };
        if !ours.contains_key("version") {
            tools.run("relation-set", &["-r", id, "--app", "version=1"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_config_or_the_metadata() {
        let meta: CharmMetadata = serde_yaml::from_str(
            "name: x\nrequires:\n  charm-tracing: {interface: tracing}\n  receive-ca-cert: {interface: certificate_transfer}\n",
        )
        .unwrap();
        let found = Endpoints::find(Some(&meta), &Config::default());
        assert_eq!(found.tracing.as_deref(), Some("charm-tracing"));
        assert_eq!(found.ca.as_deref(), Some("receive-ca-cert"));
        let config = Config {
            tracing_endpoint: Some("traces".into()),
            ..Config::default()
        };
        assert_eq!(
            Endpoints::find(Some(&meta), &config).tracing.as_deref(),
            Some("traces")
        );
        assert!(Endpoints::find(None, &Config::default()).is_empty());
    }

    #[test]
    fn the_lowest_relation_id_wins_not_the_first_listed() {
        let (id, count) = lowest_relation(br#"["charm-tracing:10","charm-tracing:5"]"#, None);
        assert_eq!((id.as_deref(), count), (Some("charm-tracing:5"), 2));
        let (id, count) = lowest_relation(br#"["t:5"]"#, Some("t:5"));
        assert_eq!((id, count), (None, 0), "a broken relation is not read");
        assert_eq!(lowest_relation(b"garbage", None), (None, 0));
    }

    /// Hook tools that answer from a script (`tool args` -> stdout; unscripted: the tool
    /// fails) and record every call, in order.
    #[derive(Default)]
    struct Scripted {
        answers: Vec<(&'static str, &'static str)>,
        calls: Vec<String>,
    }

    impl Tools for Scripted {
        fn run(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
            let call = format!("{tool} {}", args.join(" "));
            let answer = self.answers.iter().find(|(asked, _)| *asked == call);
            let answer = answer.map(|(_, out)| out.as_bytes().to_vec());
            self.calls.push(call);
            answer
        }
    }

    fn both_endpoints() -> Endpoints {
        Endpoints {
            tracing: Some("charm-tracing".into()),
            ca: Some("receive-ca-cert".into()),
            otlp: None,
        }
    }

    #[test]
    fn with_no_relation_publishing_asks_only_relation_ids_and_never_is_leader() {
        let mut tools = Scripted {
            answers: vec![
                ("relation-ids charm-tracing --format=json", "[]"),
                ("relation-ids receive-ca-cert --format=json", "[]"),
                ("is-leader --format=json", "true"),
            ],
            ..Scripted::default()
        };
        publish(&mut tools, &both_endpoints(), "myapp", None);
        assert_eq!(
            tools.calls,
            [
                "relation-ids charm-tracing --format=json",
                "relation-ids receive-ca-cert --format=json"
            ]
        );
        // Only a broken relation left: nothing to publish on either.
        let mut tools = Scripted {
            answers: vec![(
                "relation-ids charm-tracing --format=json",
                r#"["charm-tracing:3"]"#,
            )],
            ..Scripted::default()
        };
        let tracing_only = Endpoints {
            ca: None,
            ..both_endpoints()
        };
        publish(&mut tools, &tracing_only, "myapp", Some("charm-tracing:3"));
        assert_eq!(tools.calls, ["relation-ids charm-tracing --format=json"]);
    }

    #[test]
    fn is_leader_is_asked_after_relation_ids_and_only_a_leader_reads_and_writes_our_side() {
        let answers = vec![
            (
                "relation-ids charm-tracing --format=json",
                r#"["charm-tracing:3"]"#,
            ),
            ("relation-ids receive-ca-cert --format=json", "[]"),
            (
                "relation-get -r charm-tracing:3 --app - myapp --format=json",
                "{}",
            ),
        ];
        let mut leader = Scripted {
            answers: answers.clone(),
            ..Scripted::default()
        };
        leader.answers.push(("is-leader --format=json", "true"));
        publish(&mut leader, &both_endpoints(), "myapp", None);
        assert_eq!(
            leader.calls,
            [
                "relation-ids charm-tracing --format=json",
                "relation-ids receive-ca-cert --format=json",
                "is-leader --format=json",
                "relation-get -r charm-tracing:3 --app - myapp --format=json",
                r#"relation-set -r charm-tracing:3 --app receivers=["otlp_http"]"#,
            ]
        );
        let mut follower = Scripted {
            answers,
            ..Scripted::default()
        };
        follower.answers.push(("is-leader --format=json", "false"));
        publish(&mut follower, &both_endpoints(), "myapp", None);
        assert_eq!(follower.calls[..3], leader.calls[..3]);
        assert_eq!(follower.calls.len(), 3, "{:?}", follower.calls);
    }

    #[test]
    fn v0_certificates_of_several_units_are_kept_once_each() {
        let pem =
            |b64: &str| format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----");
        let mut tools = Scripted {
            answers: vec![
                (
                    "relation-ids receive-ca-cert --format=json",
                    r#"["receive-ca-cert:4"]"#,
                ),
                (
                    "relation-list -r receive-ca-cert:4 --app --format=json",
                    r#""ca-provider""#,
                ),
                (
                    "relation-get -r receive-ca-cert:4 --app - ca-provider --format=json",
                    "{}",
                ),
                (
                    "relation-list -r receive-ca-cert:4 --format=json",
                    r#"["ca-provider/0","ca-provider/1"]"#,
                ),
                (
                    "relation-get -r receive-ca-cert:4 - ca-provider/0 --format=json",
                    r#"{"ca":"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----",
                        "certificate":"-----BEGIN CERTIFICATE-----\nMIIBAQ==\n-----END CERTIFICATE-----"}"#,
                ),
                (
                    "relation-get -r receive-ca-cert:4 - ca-provider/1 --format=json",
                    r#"{"ca":"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----",
                        "certificate":"-----BEGIN CERTIFICATE-----\nMIIBAg==\n-----END CERTIFICATE-----"}"#,
                ),
            ],
            ..Scripted::default()
        };
        let endpoints = Endpoints {
            tracing: None,
            ..both_endpoints()
        };
        let answer = discover(&mut tools, &endpoints, None).unwrap();
        assert_eq!(
            answer.ca,
            [pem("MIIBAA=="), pem("MIIBAQ=="), pem("MIIBAg==")],
            "{:?}",
            tools.calls
        );
    }

    /// The otlp provider's app databag as relation-get prints it: `endpoints` is one JSON
    /// string (as ops saves the library's model).
    const OTLP_PROVIDER_BAG: &str = r#"{"endpoints": "[{\"protocol\": \"grpc\", \"endpoint\": \"otelcol:4317\", \"telemetries\": [\"traces\"], \"insecure\": true}, {\"protocol\": \"http\", \"endpoint\": \"http://otelcol:4318\", \"telemetries\": [\"traces\"], \"insecure\": false}]"}"#;

    #[test]
    fn the_otlp_relation_is_read_and_nothing_is_published_on_it() {
        let mut tools = Scripted {
            answers: vec![
                (
                    "relation-ids send-otlp --format=json",
                    r#"["send-otlp:9","send-otlp:7"]"#,
                ),
                (
                    "relation-list -r send-otlp:7 --app --format=json",
                    r#""otelcol""#,
                ),
                (
                    "relation-get -r send-otlp:7 --app - otelcol --format=json",
                    OTLP_PROVIDER_BAG,
                ),
                ("is-leader --format=json", "true"),
            ],
            ..Scripted::default()
        };
        let otlp_only = Endpoints {
            tracing: None,
            ca: None,
            otlp: Some("send-otlp".into()),
        };
        let answer = discover(&mut tools, &otlp_only, None).unwrap();
        assert_eq!(
            answer.otlp_url.as_deref(),
            Some("http://otelcol:4318/v1/traces")
        );
        assert_eq!(answer.otlp_relation_id.as_deref(), Some("send-otlp:7"));
        assert_eq!(answer.otlp_relations, 2);
        assert_eq!(
            answer.url_in_force(),
            Some(("http://otelcol:4318/v1/traces", true))
        );
        // Beside a tracing relation's URL, tracing's is the one in force.
        let both = Answer {
            url: Some("http://tempo:4318/v1/traces".into()),
            ..answer.clone()
        };
        assert_eq!(
            both.url_in_force(),
            Some(("http://tempo:4318/v1/traces", false))
        );

        tools.calls.clear();
        publish(&mut tools, &otlp_only, "myapp", None);
        assert!(
            tools.calls.iter().all(|c| !c.starts_with("relation-set")),
            "the otlp interface needs nothing from the requirer: {:?}",
            tools.calls
        );
        assert!(event_can_change_answer(
            "send-otlp-relation-changed",
            Some("send-otlp"),
            &otlp_only
        ));
    }
}
