//! A scripted HTTP proxy on 127.0.0.1 (port 0) that treats requests as squid's default
//! configuration does: an absolute-form request (`POST http://host:port/path`) is forwarded
//! (here the proxy answers 200 itself, as the receiver behind it would), an origin-form one is
//! not a proxy request (400), `CONNECT` to any port but 443 is refused (403, squid's
//! `http_access deny CONNECT !SSL_ports`), and `CONNECT host:443` is tunnelled to a local port
//! the test names (503 without one). Or it answers everything with one status (407 asks for
//! credentials). It records every request it saw and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::receiver::{read_request, Request};

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Squid's defaults; `CONNECT host:443` goes to this port of 127.0.0.1.
    Squid { tunnel_443_to: Option<u16> },
    /// Every request gets this status (407 with `Proxy-Authenticate`).
    Always(u16),
}

pub struct Proxy {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(behaviour: Behaviour) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let requests = requests.clone();
                            std::thread::spawn(move || serve(stream, behaviour, &requests));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Proxy {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, with `user:password@` when given.
    pub fn url(&self, credentials: Option<&str>) -> String {
        let credentials = credentials.map_or(String::new(), |c| format!("{c}@"));
        format!("http://{credentials}127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, behaviour: Behaviour, requests: &Mutex<Vec<Request>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        requests.lock().unwrap().push(request.clone());
        let status = match behaviour {
            Behaviour::Always(status) => status,
            Behaviour::Squid { tunnel_443_to } if request.method == "CONNECT" => {
                match (request.path.ends_with(":443"), tunnel_443_to) {
                    (false, _) => 403,
                    (true, None) => 503,
                    (true, Some(port)) => return tunnel(reader, port),
                }
            }
            Behaviour::Squid { .. } if request.path.starts_with("http://") => 200,
            Behaviour::Squid { .. } => 400,
        };
        let challenge = if status == 407 {
            "Proxy-Authenticate: Basic realm=\"proxy\"\r\n"
        } else {
            ""
        };
        let head = format!("HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n{challenge}\r\n");
        if reader.get_mut().write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}

/// Grants the `CONNECT` and splices the client to 127.0.0.1:`port` until either side closes.
fn tunnel(mut reader: BufReader<TcpStream>, port: u16) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)) else {
        let _ = reader
            .get_mut()
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    // Whatever the client sent after the CONNECT head is already in the reader's buffer.
    let early = reader.buffer().to_vec();
    reader.consume(early.len());
    let client = reader.into_inner();
    if upstream.write_all(&early).is_err() {
        return;
    }
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = copy_until_closed(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let mut client_write = client;
    let _ = copy_until_closed(&mut upstream, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = up.join();
}

fn copy_until_closed(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..n])?;
    }
}
