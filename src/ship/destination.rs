//! Where traces go (DESIGN §5): the first source that applies, each paired with its own CA.
//!
//! 1. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!    (+ `/v1/traces`), CA `OTEL_EXPORTER_OTLP_CERTIFICATE`. Values the wrapper itself put into
//!    a hook's environment do not count: `dispatch flush` run by the charm inside a hook must
//!    not mistake them for the operator's.
//! 2. `endpoint` in `dispatch-trace.yaml`, CA `ca_file` there.
//! 3. `dispatch set-destination URL [--ca-file F]`, persisted in the store.
//! 4. The `tracing` relation, else the `otlp` relation, CA from `certificate_transfer` (an
//!    https URL waits for it).
//! 5. Juju's `JUJU_CHARM_TRACE_CONFIG_HTTP` (base or full URL), CA
//!    `JUJU_CHARM_TRACE_CONFIG_CA_CERT` (PEM text or a path).
//!
//! None of them: traces stay in the store. The resolution is a pure function of its inputs so
//! the order is unit-tested without a process or a store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;

/// Environment variables the wrapper injects into the child; their presence with our marker
/// means the value is ours, not configuration.
pub const ENV_INJECTED: &str = "DISPATCH_TRACE_INJECTED";

/// Which source a destination came from, for `dispatch status` and the root span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    OtelEnvironment,
    ConfigFile,
    SetDestination,
    TracingRelation,
    OtlpRelation,
    JujuTraceConfig,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::OtelEnvironment => "OTEL_EXPORTER_OTLP_*ENDPOINT in the environment",
            Source::ConfigFile => "endpoint in dispatch-trace.yaml",
            Source::SetDestination => "dispatch set-destination",
            Source::TracingRelation => "the tracing relation",
            Source::OtlpRelation => "the otlp relation",
            Source::JujuTraceConfig => "JUJU_CHARM_TRACE_CONFIG_HTTP from Juju",
        }
    }
}

/// Where the CA bundle for a destination comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ca {
    /// The system trust store (`/etc/ssl/certs`).
    System,
    /// A PEM bundle in a file.
    File(PathBuf),
    /// PEM text given directly, and where it came from.
    Pem { pem: String, origin: &'static str },
}

impl Ca {
    pub fn describe(&self) -> String {
        match self {
            Ca::System => "the system trust store".into(),
            Ca::File(path) => format!("{}", path.display()),
            Ca::Pem { origin, .. } => format!("PEM certificates from {origin}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub url: String,
    pub ca: Ca,
    pub source: Source,
}

/// A destination stored by `dispatch set-destination` (kept in the store: `settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

/// A URL as it may be shown, logged, put on a span or persisted in a status setting: the
/// user info (`user:password@`) and every query parameter's value (tokens travel there) and
/// any fragment replaced by placeholders. The only function that makes a URL presentable:
/// whatever shows a URL calls it, and what it gets need not even parse.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, "#<redacted>"),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<credentials>@{host}"),
        None => authority.to_string(),
    };
    let query = match query {
        None => String::new(),
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) => format!("{key}=<redacted>"),
                    None if param.is_empty() => String::new(),
                    None => "<redacted>".to_string(),
                })
                .collect();
            format!("?{}", params.join("&"))
        }
    };
    format!("{scheme}://{authority}{path}{query}{fragment}")
}

/// `text` (an error message, say) with every secret part of `url` that appears in it
/// replaced as `redact_url` would: for messages of libraries that quote the URL they failed on.
pub fn redact_text(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    let Some((_, rest)) = url.split_once("://") else {
        return text;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some((user_info, _)) = authority.rsplit_once('@') {
        if !user_info.is_empty() {
            text = text.replace(&format!("{user_info}@"), "<credentials>@");
        }
    }
    if let Some((_, query)) = rest.split('#').next().unwrap_or_default().split_once('?') {
        if !query.is_empty() {
            let redacted = redact_url(&format!("x://x?{query}"));
            text = text.replace(query, redacted.trim_start_matches("x://x?"));
        }
    }
    text
}

/// A destination URL we can send to: parsed with `http::Uri`, scheme `http` or `https` in any
/// case, a host that is a DNS name or an IP address, a port from 1 to 65535 if one is given.
/// Returns the URL to use (the scheme lower-cased, any fragment dropped: it is never sent), or
/// why it cannot be used (`bad_url` words it with the URL).
pub fn parse_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| why.to_string();
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err("the URL is empty".into());
    }
    // The scheme first: `http::Uri` also takes `host:port/path`, and says only "invalid format"
    // of much else.
    match trimmed.split_once("://") {
        None => return Err(bad("it does not start with http:// or https://")),
        Some((scheme, _))
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") =>
        {
            return Err(bad(&format!("the scheme is {scheme:?}, not http or https")))
        }
        Some(_) => {}
    }
    let without_fragment = trimmed.split('#').next().unwrap_or_default();
    let uri: http::Uri = without_fragment
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => "http",
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
        Some(other) => return Err(bad(&format!("the scheme is {other:?}, not http or https"))),
        None => return Err(bad("it does not start with http:// or https://")),
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(bracketed) = host_and_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address without its closing bracket"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(&format!("[{host}] is not an IPv6 address")));
        }
        match after {
            "" => None,
            port => match port.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(bad("junk after the IPv6 address")),
            },
        }
    } else {
        let (host, port) = match host_and_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_and_port, None),
        };
        check_host(host).map_err(|why| bad(&why))?;
        port
    };
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(1..) => {}
            _ => {
                return Err(bad(&format!(
                    "the port {port:?} is not a number from 1 to 65535"
                )))
            }
        }
    }
    let rest = &without_fragment[without_fragment.find("://").map_or(0, |i| i + 3)..];
    Ok(format!("{scheme}://{rest}"))
}

/// A host name (DNS labels of letters, digits, `-` and `_`, not starting or ending with `-`) or
/// an IPv4 address; bracketed IPv6 addresses are checked by the caller.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("it has no host".into());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<std::net::Ipv4Addr>()
            .map(drop)
            .map_err(|_| format!("{host} is not an IPv4 address"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(())
}

/// Whether `destination` can be sent to; with the URL to use when it can. The reason when it
/// cannot names where the URL came from, for the operator's one line and `dispatch status`.
pub fn usable(destination: Destination) -> Result<Destination, String> {
    match parse_url(&destination.url) {
        Ok(url) => Ok(Destination { url, ..destination }),
        Err(why) => Err(format!(
            "the destination from {} is not a usable URL: {} ({why})",
            destination.source.describe(),
            redact_url(&destination.url)
        )),
    }
}

/// `<url, redacted> is not a usable URL: <why>`.
pub fn bad_url(url: &str, why: &str) -> String {
    format!("{} is not a usable URL: {why}", redact_url(url))
}

/// What identifies a destination in the store's settings (its backoff, what it refused): a
/// digest of the URL and its CA, so that a change of either (a new password, a new
/// certificate) counts as a new destination, and no credential is written down a second time.
/// SHA-256 (ring, already linked for TLS) is stable across builds and versions, which a
/// persisted key must be.
pub fn key(destination: &Destination) -> String {
    let mut input = destination.url.as_bytes().to_vec();
    input.push(0);
    match &destination.ca {
        Ca::System => input.extend_from_slice(b"system"),
        Ca::File(path) => {
            input.extend_from_slice(b"file:");
            input.extend_from_slice(path.as_os_str().as_encoded_bytes());
        }
        Ca::Pem { pem, .. } => {
            input.extend_from_slice(b"pem:");
            input.extend_from_slice(pem.as_bytes());
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn non_empty<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    env.get(key)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// Resolves the destination. `env` is the environment to read; variables listed in
/// `DISPATCH_TRACE_INJECTED` (comma-separated names) were put there by a wrapper and are ignored.
pub fn resolve(
    env: &BTreeMap<String, String>,
    config: &Config,
    stored: Option<&Stored>,
    relation: Option<&crate::relation::Answer>,
) -> Option<Destination> {
    let injected = injected(env);
    let from_env = |key: &str| non_empty(env, key).filter(|_| !injected.contains(&key));
    if let Some(url) = from_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(Destination {
            url: url.trim().to_string(),
            ca: env_ca(env),
            source: Source::OtelEnvironment,
        });
    }
    if let Some(base) = from_env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Some(Destination {
            url: format!("{}/v1/traces", base.trim().trim_end_matches('/')),
            ca: env_ca(env),
            source: Source::OtelEnvironment,
        });
    }
    if let Some(url) = &config.endpoint {
        return Some(Destination {
            url: url.clone(),
            ca: config.ca_file.clone().map_or(Ca::System, Ca::File),
            source: Source::ConfigFile,
        });
    }
    if let Some(stored) = stored {
        return Some(Destination {
            url: stored.url.clone(),
            ca: stored.ca_file.clone().map_or(Ca::System, Ca::File),
            source: Source::SetDestination,
        });
    }
    if let Some(answer) = relation {
        if let Some((url, otlp)) = answer.url_in_force() {
            // https before the certificate_transfer relation delivered its CA: buffer.
            if waits_for_ca(relation) {
                return None;
            }
            return Some(Destination {
                url: url.to_string(),
                ca: if answer.ca.is_empty() {
                    Ca::System
                } else {
                    Ca::Pem {
                        pem: answer.ca.join("\n"),
                        origin: "the certificate_transfer relation",
                    }
                },
                source: if otlp {
                    Source::OtlpRelation
                } else {
                    Source::TracingRelation
                },
            });
        }
    }
    if let Some(url) = non_empty(env, "JUJU_CHARM_TRACE_CONFIG_HTTP") {
        let url = url.trim().trim_end_matches('/');
        let url = if url.ends_with("/v1/traces") {
            url.to_string()
        } else {
            format!("{url}/v1/traces")
        };
        let ca = match non_empty(env, "JUJU_CHARM_TRACE_CONFIG_CA_CERT") {
            Some(ca) if ca.contains("-----BEGIN") => Ca::Pem {
                pem: ca.to_string(),
                origin: "JUJU_CHARM_TRACE_CONFIG_CA_CERT",
            },
            Some(ca) => Ca::File(PathBuf::from(ca.trim())),
            None => Ca::System,
        };
        return Some(Destination {
            url,
            ca,
            source: Source::JujuTraceConfig,
        });
    }
    None
}

/// The OTLP encoding: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`
/// (`http/protobuf` or `http/json`; values a wrapper injected do not count), else the config
/// file's `protocol`. `grpc`, or anything else, is not ours to speak: the next source decides.
pub fn protocol(env: &BTreeMap<String, String>, config: &Config) -> crate::config::Protocol {
    use crate::config::Protocol;
    let injected = injected(env);
    [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .filter(|key| !injected.contains(key))
    .find_map(|key| match non_empty(env, key)?.trim() {
        "http/protobuf" => Some(Protocol::HttpProtobuf),
        "http/json" => Some(Protocol::HttpJson),
        _ => None,
    })
    .unwrap_or(config.protocol)
}

/// Names of the variables a wrapper put into this environment (`DISPATCH_TRACE_INJECTED`).
fn injected(env: &BTreeMap<String, String>) -> Vec<&str> {
    env.get(ENV_INJECTED)
        .map(|v| v.split(',').collect())
        .unwrap_or_default()
}

/// Whether the relation's destination is held back until the certificate_transfer relation
/// delivers its CA (`resolve` then gives none).
pub fn waits_for_ca(relation: Option<&crate::relation::Answer>) -> bool {
    relation.is_some_and(|answer| {
        answer
            .url_in_force()
            .is_some_and(|(url, _)| url.starts_with("https://"))
            && answer.ca_relation
            && answer.ca.is_empty()
    })
}

fn env_ca(env: &BTreeMap<String, String>) -> Ca {
    non_empty(env, "OTEL_EXPORTER_OTLP_CERTIFICATE").map_or(Ca::System, |p| Ca::File(p.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(endpoint: Option<&str>) -> Config {
        Config {
            endpoint: endpoint.map(String::from),
            ca_file: endpoint.map(|_| PathBuf::from("/ca.pem")),
            ..Config::default()
        }
    }

    #[test]
    fn the_first_source_that_applies_wins_in_design_order() {
        let stored = Stored {
            url: "http://stored:4318/v1/traces".into(),
            ca_file: None,
        };
        let all = env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("JUJU_CHARM_TRACE_CONFIG_HTTP", "http://juju:4318"),
        ]);
        let cfg = config(Some("https://config:4318/v1/traces"));
        let d = resolve(&all, &cfg, Some(&stored), None).unwrap();
        assert_eq!(
            (d.url.as_str(), d.source),
            ("http://traces:4318/custom", Source::OtelEnvironment)
        );

        let base = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")]);
        assert_eq!(
            resolve(&base, &cfg, None, None).unwrap().url,
            "http://base:4318/v1/traces"
        );

        let juju = env(&[("JUJU_CHARM_TRACE_CONFIG_HTTP", "http://juju:4318")]);
        let d = resolve(&juju, &cfg, Some(&stored), None).unwrap();
        assert_eq!(
            (d.source, d.ca),
            (Source::ConfigFile, Ca::File("/ca.pem".into()))
        );
        let d = resolve(&juju, &config(None), Some(&stored), None).unwrap();
        assert_eq!(d.source, Source::SetDestination);
        let d = resolve(&juju, &config(None), None, None).unwrap();
        assert_eq!(
            (d.url.as_str(), d.source),
            ("http://juju:4318/v1/traces", Source::JujuTraceConfig)
        );
        assert_eq!(resolve(&env(&[]), &config(None), None, None), None);
    }

    #[test]
    fn variables_the_wrapper_injected_are_not_configuration() {
        let injected = env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:1/nonce/v1/traces",
            ),
            (
                ENV_INJECTED,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
        ]);
        assert_eq!(resolve(&injected, &config(None), None, None), None);
    }

    #[test]
    fn juju_trace_config_accepts_full_urls_and_pem_or_path_cas() {
        let full = env(&[
            ("JUJU_CHARM_TRACE_CONFIG_HTTP", "https://c:4318/v1/traces"),
            (
                "JUJU_CHARM_TRACE_CONFIG_CA_CERT",
                "-----BEGIN CERTIFICATE-----\nx\n",
            ),
        ]);
        let d = resolve(&full, &config(None), None, None).unwrap();
        assert_eq!(d.url, "https://c:4318/v1/traces");
        assert!(matches!(d.ca, Ca::Pem { .. }));
        let path = env(&[
            ("JUJU_CHARM_TRACE_CONFIG_HTTP", "https://c:4318"),
            ("JUJU_CHARM_TRACE_CONFIG_CA_CERT", "/var/lib/ca.pem"),
        ]);
        assert_eq!(
            resolve(&path, &config(None), None, None).unwrap().ca,
            Ca::File("/var/lib/ca.pem".into())
        );
        let empty = env(&[("JUJU_CHARM_TRACE_CONFIG_HTTP", " ")]);
        assert_eq!(resolve(&empty, &config(None), None, None), None);
    }

    #[test]
    fn the_relation_comes_after_set_destination_and_https_waits_for_its_ca() {
        use crate::relation::Answer;
        let answer = Answer {
            url: Some("https://tempo:4318/v1/traces".into()),
            ca_relation: true,
            ..Answer::default()
        };
        let juju = env(&[("JUJU_CHARM_TRACE_CONFIG_HTTP", "http://juju:4318")]);
        assert_eq!(
            resolve(&juju, &config(None), None, Some(&answer)),
            None,
            "buffered"
        );
        let with_ca = Answer {
            ca: vec!["-----BEGIN CERTIFICATE-----".into()],
            ..answer.clone()
        };
        let d = resolve(&juju, &config(None), None, Some(&with_ca)).unwrap();
        assert_eq!(d.source, Source::TracingRelation);
        assert!(matches!(d.ca, Ca::Pem { .. }));
        let stored = Stored {
            url: "http://s/v1/traces".into(),
            ca_file: None,
        };
        assert_eq!(
            resolve(&juju, &config(None), Some(&stored), Some(&with_ca))
                .unwrap()
                .source,
            Source::SetDestination
        );
        let none = Answer::default();
        assert_eq!(
            resolve(&juju, &config(None), None, Some(&none))
                .unwrap()
                .source,
            Source::JujuTraceConfig
        );
    }

    #[test]
    fn the_otlp_relation_comes_after_the_tracing_relation_and_https_waits_for_its_ca_too() {
        use crate::relation::Answer;
        let otlp = Answer {
            otlp_url: Some("https://otelcol:4318/v1/traces".into()),
            ca_relation: true,
            ..Answer::default()
        };
        let nothing = env(&[]);
        assert_eq!(
            resolve(&nothing, &config(None), None, Some(&otlp)),
            None,
            "buffered"
        );
        assert!(waits_for_ca(Some(&otlp)));
        let with_ca = Answer {
            ca: vec!["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----".into()],
            ..otlp.clone()
        };
        let found = resolve(&nothing, &config(None), None, Some(&with_ca)).unwrap();
        assert_eq!(found.source, Source::OtlpRelation);
        assert_eq!(found.url, "https://otelcol:4318/v1/traces");
        assert!(matches!(found.ca, Ca::Pem { .. }));
        let both = Answer {
            url: Some("http://tempo:4318/v1/traces".into()),
            ..with_ca
        };
        let found = resolve(&nothing, &config(None), None, Some(&both)).unwrap();
        assert_eq!(
            (found.source, found.url.as_str()),
            (Source::TracingRelation, "http://tempo:4318/v1/traces")
        );
    }

    #[test]
    fn credentials_and_query_values_are_taken_out_of_urls_before_they_are_shown() {
        assert_eq!(
            redact_url("https://user:s3cret@tempo:4318/v1/traces"),
            "https://<credentials>@tempo:4318/v1/traces"
        );
        assert_eq!(
            redact_url("http://tempo:4318/v1/traces"),
            "http://tempo:4318/v1/traces"
        );
        assert_eq!(redact_url("http://a/b@c"), "http://a/b@c");
        assert_eq!(
            redact_url("http://u:p@h:1/v1/traces?token=abc&x=1&bare#frag"),
            "http://<credentials>@h:1/v1/traces?token=<redacted>&x=<redacted>&<redacted>#<redacted>"
        );
        assert_eq!(redact_url("http://h/?"), "http://h/?");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn secrets_of_a_url_are_taken_out_of_any_text_that_quotes_it() {
        let url = "http://us3r:p4ss@h:1/v1/traces?token=t0ken";
        for text in [
            format!("failed: {url}"),
            "auth us3r:p4ss@h:1 refused".to_string(),
            "query token=t0ken refused".to_string(),
        ] {
            let clean = redact_text(&text, url);
            for secret in ["us3r", "p4ss", "t0ken"] {
                assert!(!clean.contains(secret), "{secret} in {clean}");
            }
        }
    }

    #[test]
    fn urls_are_parsed_with_scheme_host_and_port_checked() {
        assert_eq!(
            parse_url("http://tempo:4318/v1/traces").unwrap(),
            "http://tempo:4318/v1/traces"
        );
        assert_eq!(
            parse_url("HTTP://Tempo:4318/v1/traces").unwrap(),
            "http://Tempo:4318/v1/traces"
        );
        assert_eq!(
            parse_url("https://10.0.0.1/v1/traces#x").unwrap(),
            "https://10.0.0.1/v1/traces"
        );
        assert!(parse_url("http://[fd00::1]:4318/v1/traces").is_ok());
        assert!(parse_url("http://u:p@tempo.cos.svc.cluster.local./v1/traces").is_ok());
        for (bad, why) in [
            ("http://[::1", "invalid authority"),
            ("http://127.0.0.1:99999/v1/traces", "port \"99999\""),
            ("http://exa mple.com/v1/traces", "invalid uri character"),
            ("tempo:4318", "http:// or https://"),
            ("ftp://x/", "\"ftp\""),
            ("http:///v1/traces", ""),
            ("http://tempo:/x", "port \"\""),
            ("http://tempo:0/x", "port \"0\""),
            ("http://999.1.1.1/x", "not an IPv4 address"),
            ("http://-tempo/x", "not a valid host name"),
            ("http://[fd00::zz]/x", "not an IPv6 address"),
            ("", "empty"),
        ] {
            let error = parse_url(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        let url = "http://user:s3cret@:99/x?token=t0k";
        let error = bad_url(url, &parse_url(url).unwrap_err());
        assert!(
            !error.contains("s3cret") && !error.contains("t0k"),
            "{error}"
        );
        let error = usable(Destination {
            url: url.into(),
            ca: Ca::System,
            source: Source::TracingRelation,
        })
        .unwrap_err();
        assert!(error.contains("tracing relation"), "{error}");
        assert!(
            !error.contains("s3cret") && !error.contains("t0k"),
            "{error}"
        );
    }

    #[test]
    fn a_destination_key_is_stable_and_holds_no_credential() {
        let d = Destination {
            url: "http://user:s3cret@tempo:4318/v1/traces".into(),
            ca: Ca::System,
            source: Source::SetDestination,
        };
        let k = key(&d);
        assert_eq!(k.len(), 32);
        assert!(!k.contains("s3cret") && !k.contains("tempo"));
        assert_eq!(k, key(&d.clone()));
        let other_password = Destination {
            url: "http://user:other@tempo:4318/v1/traces".into(),
            ..d.clone()
        };
        assert_ne!(key(&other_password), k);
        let other_ca = Destination {
            ca: Ca::File("/ca.pem".into()),
            ..d
        };
        assert_ne!(key(&other_ca), k);
    }

    #[test]
    fn the_protocol_comes_from_the_environment_then_the_config_file() {
        use crate::config::Protocol;
        let json_config = Config {
            protocol: Protocol::HttpJson,
            ..Config::default()
        };
        assert_eq!(protocol(&env(&[]), &json_config), Protocol::HttpJson);
        let general = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(protocol(&general, &json_config), Protocol::HttpProtobuf);
        let both = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ]);
        assert_eq!(protocol(&both, &Config::default()), Protocol::HttpJson);
        // grpc is not spoken here: the next source decides.
        let grpc = env(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")]);
        assert_eq!(protocol(&grpc, &json_config), Protocol::HttpJson);
        // A value a wrapper injected for its child is not configuration.
        let injected = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            (ENV_INJECTED, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ]);
        assert_eq!(
            protocol(&injected, &Config::default()),
            Protocol::HttpProtobuf
        );
    }
}
