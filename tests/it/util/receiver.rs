//! A scripted OTLP/HTTP receiver for failure modes (the real one, rotel, covers the happy
//! path): it listens on 127.0.0.1 (port 0), answers each request as scripted, records what it
//! got (bodies framed by Content-Length or chunked), and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status with extra headers and a body.
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// Read the request, then never answer (until the receiver is dropped).
    Hang,
    /// Read the request, wait, then answer 200.
    Slow(Duration),
    /// Read the head and half of the body, then reset the connection (RST, not FIN), as a
    /// crashing backend or a middlebox does. Plain HTTP only.
    ResetMidBody,
    /// Read the request, then answer this status with a body of this many bytes, written
    /// until it is all sent or the client goes away.
    HugeBody(u16, usize),
}

impl Answer {
    /// The status this answer sends, if it sends one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Status(code, _, _) | Answer::HugeBody(code, _) => Some(*code),
            Answer::Slow(_) => Some(200),
            Answer::Hang | Answer::ResetMidBody => None,
        }
    }

    pub fn ok() -> Answer {
        Answer::Status(
            200,
            vec![("Content-Type".into(), "application/x-protobuf".into())],
            vec![],
        )
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with (`None`: hung, closed or reset without an answer).
    pub answered: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A certificate authority and a server certificate it signed (for 127.0.0.1 and localhost
/// unless told otherwise).
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::for_names(&["127.0.0.1", "localhost"])
    }

    pub fn for_names(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let server_params = CertificateParams::new(names).unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        )
    }
}

pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Answers requests with `script` in order; after it runs out, the last answer repeats.
    pub fn start(script: Vec<Answer>) -> Receiver {
        Receiver::start_with(script, None)
    }

    /// The same on a given port of 127.0.0.1 (one known before the receiver is up, so that a
    /// destination can point at a backend that is down and later comes up).
    pub fn start_on(port: u16, script: Vec<Answer>) -> Receiver {
        Receiver::listen(
            TcpListener::bind(("127.0.0.1", port)).unwrap(),
            script,
            None,
        )
    }

    /// The same over HTTPS with the server certificate of `pki`.
    pub fn start_tls(script: Vec<Answer>, pki: &TestPki) -> Receiver {
        Receiver::start_with(script, Some(pki.server_config()))
    }

    fn start_with(script: Vec<Answer>, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        Receiver::listen(TcpListener::bind("127.0.0.1:0").unwrap(), script, tls)
    }

    fn listen(
        listener: TcpListener,
        script: Vec<Answer>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, script, stop) = (requests.clone(), script.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut served = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let answer = {
                                let script = script.lock().unwrap();
                                script
                                    .get(served)
                                    .or(script.last())
                                    .cloned()
                                    .unwrap_or_else(Answer::ok)
                            };
                            served += 1;
                            let (requests, stop, tls) =
                                (requests.clone(), stop.clone(), tls.clone());
                            std::thread::spawn(move || {
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                                match tls {
                                    None if matches!(answer, Answer::ResetMidBody) => {
                                        reset_mid_body(stream, &requests)
                                    }
                                    None => serve(stream, answer, &requests, &stop),
                                    Some(config) => {
                                        let Ok(connection) = rustls::ServerConnection::new(config)
                                        else {
                                            return;
                                        };
                                        let tls_stream =
                                            rustls::StreamOwned::new(connection, stream);
                                        serve(tls_stream, answer, &requests, &stop)
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Receiver {
            port,
            requests,
            script,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/v1/traces", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn set_script(&self, script: Vec<Answer>) {
        *self.script.lock().unwrap() = script;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve<S: Read + Write>(
    stream: S,
    answer: Answer,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(mut request) = read_request(&mut reader) else {
            return;
        };
        request.answered = answer.status();
        requests.lock().unwrap().push(request);
        let stream = reader.get_mut();
        match &answer {
            Answer::Status(code, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {code} Scripted\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
                    return;
                }
            }
            Answer::Hang => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Answer::Slow(delay) => {
                std::thread::sleep(*delay);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
            Answer::ResetMidBody => return,
            Answer::HugeBody(code, size) => {
                let head = format!("HTTP/1.1 {code} Scripted\r\nContent-Length: {size}\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                let mut left = *size;
                while left > 0 {
                    let n = left.min(block.len());
                    if stream.write_all(&block[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            }
        }
    }
}

/// Reads the head and half of the body, records what came, and resets the connection.
fn reset_mid_body(stream: std::net::TcpStream, requests: &Mutex<Vec<Request>>) {
    use std::os::fd::AsRawFd;
    let mut reader = BufReader::new(stream);
    let Some(mut request) = read_head(&mut reader) else {
        return;
    };
    request.body = vec![0u8; content_length(&request) / 2];
    if reader.read_exact(&mut request.body).is_err() {
        return;
    }
    requests.lock().unwrap().push(request);
    let stream = reader.into_inner();
    // SO_LINGER with a zero timeout: close() sends RST and discards what is unread.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a valid option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// A request's line and headers (the body still unread).
fn read_head<S: Read>(reader: &mut BufReader<S>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Request {
        method,
        path,
        headers,
        body: Vec::new(),
        answered: None,
    })
}

fn content_length(request: &Request) -> usize {
    request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn read_request<S: Read>(reader: &mut BufReader<S>) -> Option<Request> {
    let mut request = read_head(reader)?;
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        request.body = read_chunked(reader)?;
    } else {
        request.body = vec![0u8; content_length(&request)];
        reader.read_exact(&mut request.body).ok()?;
    }
    Some(request)
}

/// A chunked body (what Node's http client sends for a body written without a length): the
/// chunks joined, the trailers skipped.
fn read_chunked<S: Read>(reader: &mut BufReader<S>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer).ok()? == 0 || trailer.trim_end().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        body.truncate(start + size);
    }
}
