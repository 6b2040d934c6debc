//! Plain-http requests through an HTTP proxy, in absolute form (DESIGN §5; README "Shipping").
//!
//! A proxy expects `POST http://tempo:4318/v1/traces HTTP/1.1` for an http destination and
//! `CONNECT` only for https: squid's default configuration refuses `CONNECT` to any port but
//! 443 (`http_access deny CONNECT !SSL_ports`). ureq 3 tunnels every request through an HTTP
//! proxy with `CONNECT`, and cannot be told to write the absolute form: ureq-proto writes the
//! request-target from `uri.path_and_query()`, and `http::Uri` (1.5) refuses a path that does
//! not start with `/`, so an absolute URL cannot even be smuggled in as the path. So for an
//! http destination the agent gets no proxy of ureq's, and three small pieces of ureq's
//! public (unversioned) transport API route it through the proxy instead, while ureq still
//! writes the request, frames the body, parses the answer and keeps the timeouts:
//!
//! - a resolver that resolves the proxy's host where ureq asks for the destination's, so
//!   ureq's own TCP connector connects to the proxy and the destination's name is only ever
//!   resolved by the proxy;
//! - a connector over that TCP connection whose transport inserts `http://host:port` in front
//!   of the origin-form target of the request line ureq wrote, before it leaves (the `Host`
//!   header ureq writes from the URL is already the destination's, as the absolute form
//!   wants);
//! - one request per connection (no idle pool), so the first bytes sent on a connection are
//!   always a request line. A head that does not start with `METHOD /` is an error, never
//!   sent as it is.
//!
//! `Proxy-Authorization` goes on each request (`transport::Http`), as ureq does on `CONNECT`.
//! A proxy reached over TLS (`https://` proxy URL) keeps ureq's `CONNECT`.

use std::fmt;

use ureq::config::ConfigBuilder;
use ureq::http::Uri;
use ureq::typestate::AgentScope;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, TcpConnector, Transport,
};
use ureq::Error;

/// An agent configured by `config` that sends every request to `proxy` (an HTTP proxy) in
/// absolute form, one request per connection.
pub fn agent(config: ConfigBuilder<AgentScope>, proxy: &ureq::Proxy) -> ureq::Agent {
    let config = config.proxy(None).max_idle_connections(0).build();
    let connector = TcpConnector::default().chain(AbsoluteForm);
    let resolver = ToTheProxy {
        proxy: proxy.uri().clone(),
        dns: DefaultResolver::default(),
    };
    ureq::Agent::with_parts(config, connector, resolver)
}

/// Resolves the proxy's address whatever URL ureq asks about.
#[derive(Debug)]
struct ToTheProxy {
    proxy: Uri,
    dns: DefaultResolver,
}

impl Resolver for ToTheProxy {
    fn resolve(
        &self,
        _destination: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        self.dns.resolve(&self.proxy, config, timeout)
    }
}

/// Wraps the connection to the proxy in `AbsoluteFormTransport`.
#[derive(Debug)]
struct AbsoluteForm;

impl<In: Transport> Connector<In> for AbsoluteForm {
    type Out = AbsoluteFormTransport<In>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        let Some(inner) = chained else {
            return Ok(None);
        };
        Ok(Some(AbsoluteFormTransport {
            inner,
            origin: origin(details.uri)?,
            head_sent: false,
        }))
    }
}

/// `http://host[:port]` of a destination, without any `user:password@` (RFC 9112 §3.2.2: the
/// absolute form carries no userinfo; ureq sends it as `Authorization` from the URL).
fn origin(uri: &Uri) -> Result<Vec<u8>, Error> {
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Error::BadUri(format!(
            "only http URLs go through a proxy in absolute form, not {uri}"
        )));
    };
    let port = authority.port().map_or(String::new(), |p| format!(":{p}"));
    Ok(format!("http://{}{port}", authority.host()).into_bytes())
}

struct AbsoluteFormTransport<T> {
    inner: T,
    origin: Vec<u8>,
    head_sent: bool,
}

impl<T: Transport> Transport for AbsoluteFormTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let amount = if self.head_sent {
            amount
        } else {
            self.head_sent = true;
            to_absolute_form(self.inner.buffers().output(), amount, &self.origin)?
        };
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl<T> fmt::Debug for AbsoluteFormTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbsoluteFormTransport")
            .field("origin", &String::from_utf8_lossy(&self.origin))
            .finish()
    }
}

/// Inserts `origin` before the origin-form target of the request line at the start of
/// `buffer[..len]` (`POST /v1/traces HTTP/1.1` -> `POST http://tempo:4318/v1/traces
/// HTTP/1.1`); returns the new length.
fn to_absolute_form(buffer: &mut [u8], len: usize, origin: &[u8]) -> Result<usize, Error> {
    let refuse = |why: &str| Err(Error::Io(std::io::Error::other(why.to_string())));
    let head = &buffer[..len];
    let Some(target) = head.iter().position(|&b| b == b' ').map(|space| space + 1) else {
        return refuse("no request line to put in absolute form for the proxy");
    };
    if head.get(target) != Some(&b'/') {
        return refuse("the request line has no origin-form target to put in absolute form");
    }
    let new_len = len + origin.len();
    if new_len > buffer.len() {
        return refuse("no room to put the request line in absolute form for the proxy");
    }
    buffer.copy_within(target..len, target + origin.len());
    buffer[target..target + origin.len()].copy_from_slice(origin);
    Ok(new_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(head: &str, origin: &str, room: usize) -> Result<String, Error> {
        let mut buffer = head.as_bytes().to_vec();
        buffer.resize(head.len() + room, 0);
        let len = to_absolute_form(&mut buffer, head.len(), origin.as_bytes())?;
        Ok(String::from_utf8(buffer[..len].to_vec()).unwrap())
    }

    #[test]
    fn the_request_line_gets_the_destinations_origin_and_nothing_else_changes() {
        let head = "POST /v1/traces?a=b HTTP/1.1\r\nHost: tempo:4318\r\n\r\n";
        assert_eq!(
            rewrite(head, "http://tempo:4318", 64).unwrap(),
            "POST http://tempo:4318/v1/traces?a=b HTTP/1.1\r\nHost: tempo:4318\r\n\r\n"
        );
    }

    #[test]
    fn a_head_that_is_not_an_origin_form_request_line_is_never_sent() {
        assert!(rewrite("POST http://x/ HTTP/1.1\r\n\r\n", "http://x", 64).is_err());
        assert!(rewrite("garbage", "http://x", 64).is_err());
        assert!(rewrite("POST / HTTP/1.1\r\n\r\n", "http://tempo:4318", 3).is_err());
    }

    /// A proxy on 127.0.0.1 that answers 200 to every request on every connection (keeping
    /// connections open) and returns the request lines it saw, one list per connection.
    fn keep_alive_proxy(requests: usize) -> (u16, std::thread::JoinHandle<Vec<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || {
            let mut connections = Vec::new();
            let mut total = 0;
            while total < requests {
                let (stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                    .unwrap();
                let mut reader = BufReader::new(stream);
                let mut lines = Vec::new();
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        head.push(std::mem::take(&mut line));
                    }
                    let Some(request_line) = head.first() else {
                        break;
                    };
                    let length = head
                        .iter()
                        .find_map(|h| {
                            h.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    reader.read_exact(&mut vec![0; length]).unwrap();
                    lines.push(request_line.trim_end().to_string());
                    total += 1;
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    reader.get_mut().write_all(ok).unwrap();
                }
                connections.push(lines);
            }
            connections
        });
        (port, seen)
    }

    #[test]
    fn every_request_of_an_agent_goes_to_the_proxy_in_absolute_form() {
        let (port, seen) = keep_alive_proxy(2);
        let proxy = ureq::Proxy::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let config = ureq::Agent::config_builder().http_status_as_error(false);
        let agent = agent(config, &proxy);
        for _ in 0..2 {
            let response = agent
                .post("http://receiver.invalid:4318/v1/traces")
                .send(&b"spans"[..])
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let line = "POST http://receiver.invalid:4318/v1/traces HTTP/1.1";
        assert_eq!(seen.join().unwrap(), [[line], [line]]);
    }

    #[test]
    fn the_origin_has_no_credentials_and_keeps_ipv6_brackets_and_the_port() {
        let origin = |url: &str| String::from_utf8(origin(&url.parse().unwrap()).unwrap());
        assert_eq!(
            origin("http://user:pw@tempo:4318/v1/traces").unwrap(),
            "http://tempo:4318"
        );
        assert_eq!(
            origin("http://[fd00::5]:4318/v1/traces").unwrap(),
            "http://[fd00::5]:4318"
        );
        assert_eq!(origin("http://tempo/v1/traces").unwrap(), "http://tempo");
        assert!(super::origin(&"https://tempo/".parse().unwrap()).is_err());
    }
}
