//! The real `export::Transport`: HTTP(S) with ureq and rustls, our own proxy choice, and the
//! CA that goes with the destination (DESIGN §5).
//!
//! - TLS verification is always on. Without a CA of its own, a destination is checked against
//!   the system trust store (`/etc/ssl/certs`, read by rustls-native-certs), never a list
//!   compiled in.
//! - ureq's own proxy lookup is off: Juju hands charms their proxy settings as
//!   `JUJU_CHARM_HTTP_PROXY`/`JUJU_CHARM_HTTPS_PROXY`/`JUJU_CHARM_NO_PROXY` (the standard
//!   `http_proxy`/`https_proxy`/`no_proxy` are the fallback). NO_PROXY entries match a host
//!   exactly, as a domain suffix, or as a CIDR; loopback is always direct. The matching is
//!   ours (`bypassed`): ureq's takes no CIDRs, which `JUJU_CHARM_NO_PROXY` may hold (DESIGN
//!   §2), and `example.com` there covers no subdomain.
//! - Proxies get what proxies expect: an http destination is sent to the proxy in absolute
//!   form (`forward_proxy`, since ureq would tunnel it), an https one through a `CONNECT`
//!   tunnel (ureq's). Every request says `User-Agent: dispatch/<version>`, `CONNECT` included.
//! - A failure on the way names the proxy (credentials redacted) when it is the proxy's: a
//!   proxy that refuses the connection, cannot be found, or refuses the tunnel. Which answers
//!   are the proxy's own is in `export::classify`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use crate::ship::destination::{Ca, Destination};
use crate::ship::export::{Answer, Failure, Transport};

pub struct Http {
    agent: ureq::Agent,
    /// The proxy requests go through, if any.
    proxy: Option<Via>,
}

struct Via {
    /// Its URL with any credentials redacted: what causes show.
    shown: String,
    /// `Proxy-Authorization` for absolute-form requests (ureq sends it on `CONNECT` itself).
    authorization: Option<String>,
}

/// What every request says it is (README "Shipping").
const USER_AGENT: &str = concat!("dispatch/", env!("CARGO_PKG_VERSION"));

impl Http {
    /// A client for `destination` with proxies from `env`. Fails (with a cause the operator
    /// can act on) when the CA cannot be loaded.
    pub fn new(destination: &Destination, env: &BTreeMap<String, String>) -> Result<Http, Failure> {
        // Roots cost milliseconds to load (the system store holds ~150 certificates): only
        // for https.
        let https = destination.url.starts_with("https://");
        let roots = if https {
            load_roots(&destination.ca)?
        } else {
            Vec::new()
        };
        let proxy = match choose_proxy(&destination.url, env) {
            Some(url) => {
                let shown = crate::ship::destination::redact_url(&url);
                let proxy = ureq::Proxy::new(&url).map_err(|e| Failure {
                    cause: format!("bad proxy {shown}: {e}"),
                    actionable: true,
                    retry_after: None,
                })?;
                Some((proxy, shown))
            }
            None => None,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .tls_config(tls);
        let Some((proxy, shown)) = proxy else {
            let agent = config.proxy(None).build().new_agent();
            return Ok(Http { agent, proxy: None });
        };
        // https goes through ureq's CONNECT tunnel, which carries the credentials itself; so
        // does anything through a proxy reached over TLS (`forward_proxy` speaks plain TCP).
        let tunnel = https || proxy.protocol() != ureq::ProxyProtocol::Http;
        let (agent, authorization) = if tunnel {
            (config.proxy(Some(proxy)).build().new_agent(), None)
        } else {
            let authorization = proxy_authorization(&proxy);
            (
                crate::ship::forward_proxy::agent(config, &proxy),
                authorization,
            )
        };
        let proxy = Some(Via {
            shown,
            authorization,
        });
        Ok(Http { agent, proxy })
    }
}

/// `Basic` credentials from the proxy URL (percent-decoded by ureq, as for its `CONNECT`).
fn proxy_authorization(proxy: &ureq::Proxy) -> Option<String> {
    use base64::Engine;
    if proxy.username().is_none() && proxy.password().is_none() {
        return None;
    }
    let credentials = format!(
        "{}:{}",
        proxy.username().unwrap_or_default(),
        proxy.password().unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    Some(format!("Basic {encoded}"))
}

fn tls_failure(cause: String) -> Failure {
    Failure {
        cause,
        actionable: true,
        retry_after: None,
    }
}

fn load_roots(ca: &Ca) -> Result<Vec<Certificate<'static>>, Failure> {
    let pem = match ca {
        Ca::System => {
            let found = rustls_native_certs::load_native_certs();
            let roots: Vec<Certificate<'static>> = found
                .certs
                .into_iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            if roots.is_empty() {
                return Err(tls_failure(
                    "no CA certificates found in the system trust store".into(),
                ));
            }
            return Ok(roots);
        }
        Ca::File(path) => std::fs::read(path).map_err(|e| {
            tls_failure(format!("cannot read the CA bundle {}: {e}", path.display()))
        })?,
        Ca::Pem { pem, .. } => pem.as_bytes().to_vec(),
    };
    let roots = pem_certificates(&pem);
    if roots.is_empty() {
        return Err(tls_failure(format!(
            "{} holds no PEM certificate",
            ca.describe()
        )));
    }
    Ok(roots)
}

/// The certificates in a PEM text, as TLS trusts them: other blocks (keys) and blocks that
/// do not decode are skipped. The relation reader keeps a provider's CA with this too
/// (`relation`), so what it keeps is what is trusted.
pub fn pem_certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    parse_pem(pem)
        .filter_map(Result::ok)
        .filter_map(|item| match item {
            PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect()
}

impl Transport for Http {
    fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let mut request = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", content_type);
        let proxy = self.proxy.as_ref();
        if let Some(authorization) = proxy.and_then(|p| p.authorization.as_deref()) {
            request = request.header("Proxy-Authorization", authorization);
        }
        let response = request
            .send(body)
            .map_err(|e| describe(url, e, proxy.map(|p| p.shown.as_str())))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        Ok(Answer {
            status,
            retry_after,
            proxy: proxy.map(|p| p.shown.clone()),
        })
    }
}

/// `Retry-After` is either seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past
/// means now.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failure's cause in words an operator can act on, and whether they can. With a proxy, a
/// failure to reach it or a tunnel it refuses is the proxy's and says so; anything else names
/// the proxy the request went through.
fn describe(url: &str, error: ureq::Error, proxy: Option<&str>) -> Failure {
    let raw = url;
    let url = &crate::ship::destination::redact_url(url);
    let (cause, actionable) = match proxy {
        Some(proxy) => proxys_own(proxy, url, &error).unwrap_or_else(|| {
            let (cause, actionable) = destinations(url, &error);
            (format!("{cause} (through proxy {proxy})"), actionable)
        }),
        None => destinations(url, &error),
    };
    Failure {
        // ureq's and rustls' own words may quote the URL they failed on.
        cause: crate::ship::destination::redact_text(&cause, raw),
        actionable,
        retry_after: None,
    }
}

/// A failure that can only be the proxy's, in words that name it.
fn proxys_own(proxy: &str, url: &str, error: &ureq::Error) -> Option<(String, bool)> {
    match error {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Some((
            format!("proxy {proxy} refused the connection (sending to {url})"),
            false,
        )),
        // The proxy's own name: the destination's is only ever resolved by the proxy.
        ureq::Error::HostNotFound => Some((
            format!("proxy {proxy}: host not found (sending to {url})"),
            true,
        )),
        ureq::Error::ConnectProxyFailed(reason) => Some(tunnel_refused(proxy, url, reason)),
        _ => None,
    }
}

fn destinations(url: &str, error: &ureq::Error) -> (String, bool) {
    match error {
        ureq::Error::Timeout(_) => (format!("{url} did not answer in time"), false),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            (format!("{url} refused the connection"), false)
        }
        // A failed handshake surfaces as an I/O error that carries rustls' reason.
        ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            (format!("TLS with {url} failed: {io}"), true)
        }
        ureq::Error::HostNotFound => (format!("{url}: host not found"), true),
        // std reports a failed name lookup as an uncategorized I/O error in getaddrinfo's
        // words: a name that does not exist is the operator's to fix, a resolver that does not
        // answer is an outage.
        ureq::Error::Io(io) if io.to_string().contains("failed to lookup address") => {
            let words = io.to_string();
            if words.contains("Temporary failure") || words.contains("try again") {
                (
                    format!("{url}: the host name could not be looked up now"),
                    false,
                )
            } else {
                (format!("{url}: host not found"), true)
            }
        }
        ureq::Error::BadUri(reason) => (format!("bad URL {url}: {reason}"), true),
        ureq::Error::Tls(reason) => (format!("TLS with {url} failed: {reason}"), true),
        ureq::Error::Rustls(e) => (format!("TLS with {url} failed: {e}"), true),
        ureq::Error::Pem(e) => (format!("bad CA bundle for {url}: {e}"), true),
        other => (format!("sending to {url} failed: {other}"), false),
    }
}

/// A `CONNECT` the proxy did not grant. ureq gives its answer only as words
/// (`proxy server responded 403/Forbidden`); the status is read from them. 502-504 mean the
/// proxy could not reach the destination (an outage); 407 and any other refusal (squid's 403
/// for a port it does not tunnel to) are the operator's to fix.
fn tunnel_refused(proxy: &str, url: &str, reason: &str) -> (String, bool) {
    let status = reason
        .split_once("responded ")
        .and_then(|(_, rest)| rest.split(['/', ' ']).next())
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(407) => (
            crate::ship::export::proxy_wants_credentials(proxy, url),
            true,
        ),
        Some(status @ 502..=504) => (
            format!("proxy {proxy} could not reach {url} (HTTP {status} to CONNECT)"),
            false,
        ),
        Some(status) => (
            format!("proxy {proxy} refused to tunnel to {url} (HTTP {status} to CONNECT)"),
            true,
        ),
        None if reason.contains("did not respond") => (
            format!("proxy {proxy} did not answer the CONNECT (sending to {url})"),
            false,
        ),
        None => (
            format!("proxy {proxy} refused to tunnel to {url}: {reason}"),
            true,
        ),
    }
}

/// The proxy URL to use for `url`, if any.
pub fn choose_proxy(url: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let https = url.starts_with("https://");
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env.get(*n).filter(|v| !v.trim().is_empty()))
            .map(|v| v.trim().to_string())
    };
    let juju = get(if https {
        &["JUJU_CHARM_HTTPS_PROXY"]
    } else {
        &["JUJU_CHARM_HTTP_PROXY"]
    });
    let proxy = match juju {
        Some(proxy) => proxy,
        None => get(if https {
            &["https_proxy", "HTTPS_PROXY"]
        } else {
            &["http_proxy", "HTTP_PROXY"]
        })?,
    };
    let no_proxy = get(&["JUJU_CHARM_NO_PROXY"])
        .or_else(|| get(&["no_proxy", "NO_PROXY"]))
        .unwrap_or_default();
    let host = host_of(url)?;
    if is_loopback(&host) || bypassed(&host, &no_proxy) {
        return None;
    }
    Some(proxy)
}

/// The host of a destination URL, lower-cased, without the brackets of an IPv6 address
/// (parsed with `http::Uri`, which ureq links: the URL was checked by `destination::usable`).
fn host_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.scheme()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// NO_PROXY: `*`, exact hosts, domain suffixes (`.example.com` or `example.com` covering its
/// subdomains), IP addresses and CIDRs.
fn bypassed(host: &str, no_proxy: &str) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
                return in_cidr(ip, net, bits);
            }
            // An IP entry (IPv6 in brackets or bare, with or without a port) matches exactly.
            let bare = entry.trim_start_matches('[');
            let bare = bare.split(']').next().unwrap_or(bare);
            if let (Some(ip), Ok(listed)) = (ip, bare.parse::<IpAddr>()) {
                return ip == listed;
            }
            // A host or domain, with an optional port, `.`, `*.` and trailing-dot forms.
            let name = entry.split(':').next().unwrap_or(&entry);
            let suffix = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            let host = host.trim_end_matches('.');
            host == suffix || host.ends_with(&format!(".{suffix}"))
        })
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_that_does_not_resolve_is_told_as_such_and_a_resolver_outage_is_not_the_operators() {
        let lookup = |words: &str| {
            destinations(
                "http://tempo:4318/v1/traces",
                &ureq::Error::Io(std::io::Error::other(format!(
                    "failed to lookup address information: {words}"
                ))),
            )
        };
        assert_eq!(
            lookup("Name or service not known"),
            (
                "http://tempo:4318/v1/traces: host not found".to_string(),
                true
            )
        );
        assert_eq!(
            lookup("Temporary failure in name resolution"),
            (
                "http://tempo:4318/v1/traces: the host name could not be looked up now".to_string(),
                false
            )
        );
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn juju_proxies_win_over_the_standard_variables() {
        let e = env(&[
            ("JUJU_CHARM_HTTP_PROXY", "http://juju-proxy:3128"),
            ("http_proxy", "http://other:3128"),
            ("JUJU_CHARM_HTTPS_PROXY", "http://juju-secure:3128"),
        ]);
        assert_eq!(
            choose_proxy("http://tempo:4318/v1/traces", &e).as_deref(),
            Some("http://juju-proxy:3128")
        );
        assert_eq!(
            choose_proxy("https://tempo:4318/v1/traces", &e).as_deref(),
            Some("http://juju-secure:3128")
        );
        let fallback = env(&[("https_proxy", "http://std:3128")]);
        assert_eq!(
            choose_proxy("https://tempo/v1/traces", &fallback).as_deref(),
            Some("http://std:3128")
        );
        assert_eq!(choose_proxy("http://tempo/v1/traces", &fallback), None);
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_and_cidrs_and_loopback_is_direct() {
        let e = |no: &str| {
            env(&[
                ("JUJU_CHARM_HTTP_PROXY", "http://p:3128"),
                ("JUJU_CHARM_NO_PROXY", no),
            ])
        };
        let direct = |url: &str, no: &str| choose_proxy(url, &e(no)).is_none();
        assert!(direct("http://tempo:4318/v1/traces", "tempo"));
        assert!(direct("http://tempo.cos.svc:4318/v1/traces", ".svc"));
        assert!(direct("http://a.example.com/v1/traces", "example.com"));
        assert!(!direct("http://notexample.com/v1/traces", "example.com"));
        assert!(direct("http://10.1.2.3:4318/v1/traces", "10.0.0.0/8"));
        assert!(!direct("http://11.1.2.3:4318/v1/traces", "10.0.0.0/8"));
        assert!(direct("http://[fd00::5]:4318/v1/traces", "fd00::/8"));
        assert!(direct("http://anything/v1/traces", "*"));
        assert!(direct("http://[fd00::5]:4318/v1/traces", "fd00::5"));
        assert!(direct("http://[fd00::5]:4318/v1/traces", "[fd00::5]:4318"));
        assert!(direct("http://a.example.com/v1/traces", "*.example.com"));
        assert!(direct("http://tempo.:4318/v1/traces", "tempo"));
        assert!(direct("http://127.0.0.1:4318/v1/traces", ""));
        assert!(direct("http://localhost:4318/v1/traces", ""));
        assert!(direct("http://[::1]:4318/v1/traces", ""));
        assert!(!direct("http://tempo:4318/v1/traces", ""));
    }

    #[test]
    fn hosts_are_taken_from_urls_with_ports_users_and_ipv6() {
        assert_eq!(
            host_of("http://user:pw@Tempo:4318/x").as_deref(),
            Some("tempo")
        );
        assert_eq!(
            host_of("https://[fd00::1]:443/").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(host_of("nonsense"), None);
    }

    #[test]
    fn failures_reaching_the_proxy_or_refused_by_it_name_the_proxy() {
        let url = "http://user:pw@tempo.invalid:4318/v1/traces";
        let proxy = Some("http://<credentials>@squid:3128");
        let refused = || ureq::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        let connect = |reason: &str| ureq::Error::ConnectProxyFailed(reason.into());
        let failure = describe(url, refused(), proxy);
        assert_eq!(
            failure.cause,
            "proxy http://<credentials>@squid:3128 refused the connection \
             (sending to http://<credentials>@tempo.invalid:4318/v1/traces)"
        );
        assert!(!failure.actionable);
        assert!(describe(url, ureq::Error::HostNotFound, proxy)
            .cause
            .starts_with("proxy http://<credentials>@squid:3128: host not found"));
        let forbidden = describe(url, connect("proxy server responded 403/Forbidden"), proxy);
        assert!(forbidden.actionable);
        assert!(
            forbidden.cause.contains("refused to tunnel") && forbidden.cause.contains("403"),
            "{}",
            forbidden.cause
        );
        let auth = describe(url, connect("proxy server responded 407/Proxy Auth"), proxy);
        assert!(
            auth.actionable && auth.cause.contains("HTTP 407"),
            "{}",
            auth.cause
        );
        for outage in [
            connect("proxy server responded 503/Service Unavailable"),
            connect("proxy server did not respond"),
            ureq::Error::Timeout(ureq::Timeout::Global),
        ] {
            let failure = describe(url, outage, proxy);
            assert!(!failure.actionable, "{}", failure.cause);
            assert!(failure.cause.contains("squid:3128"), "{}", failure.cause);
        }
        // Without a proxy, nothing changes.
        assert_eq!(
            describe(url, refused(), None).cause,
            "http://<credentials>@tempo.invalid:4318/v1/traces refused the connection"
        );
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_actionable_failure() {
        let failure = load_roots(&Ca::Pem {
            pem: "not a certificate".into(),
            origin: "a test",
        })
        .err()
        .unwrap();
        assert!(failure.actionable);
        assert!(
            failure.cause.contains("no PEM certificate"),
            "{}",
            failure.cause
        );
    }

    #[test]
    fn the_system_trust_store_is_found() {
        assert!(!load_roots(&Ca::System).unwrap().is_empty());
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
