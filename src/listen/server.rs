//! The sockets of the loopback receiver for custom spans (README, *Your own spans and
//! events*): a listener on 127.0.0.1 and its connections, each served by an
//! `http::Conversation`.
//!
//! Cost, because most charms send nothing: binding is a few system calls, made on the thread
//! that already drains the record channel (`channel`) while the main thread prepares the
//! child; that thread also polls the sockets while the child runs. No thread of its own, and
//! nothing else happens unless a client connects.
//!
//! Timing, because the hook must never wait on us: while the child runs every connection is
//! served (the SDK's shutdown flush happens before the child exits, so it is answered). Once
//! the child has ended, `finish` takes what is already there (connections waiting to be
//! accepted, requests and closes waiting to be read) and waits only for requests still on
//! their way (partly received, or on a connection that has sent nothing yet), at most
//! `GRACE`; an idle keep-alive connection is just closed. Then the listener closes, so a
//! process the charm left behind gets "connection refused" from then on.
//!
//! The sockets are close-on-exec (std's default), so the child never holds the port open.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{traces_path, Conversation, Limits, Received, State, LIMITS};

/// The longest a dispatch waits, after the child ended, for requests still on their way.
pub const GRACE: Duration = Duration::from_millis(100);

/// Connections served at once; more wait in the listen backlog until one closes.
const MAX_CONNECTIONS: usize = 16;

/// A connection silent for this long is closed (an SDK reconnects when it needs to).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const READ_BYTES: usize = 64 * 1024;

pub struct Server {
    listener: TcpListener,
    path: String,
    endpoint: String,
    limits: Limits,
    connections: Vec<Connection>,
    received: Received,
}

struct Connection {
    stream: TcpStream,
    conversation: Conversation,
    last_active: Instant,
    write_shut: bool,
}

impl Server {
    /// Listens on 127.0.0.1 (an ephemeral port) for `POST /<nonce>/v1/traces`.
    pub fn bind(nonce: &str) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let path = traces_path(nonce);
        Ok(Server {
            endpoint: format!("http://127.0.0.1:{port}{path}"),
            listener,
            path,
            limits: LIMITS,
            connections: Vec::new(),
            received: Received::default(),
        })
    }

    /// The full URL for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn accepting(&self) -> bool {
        self.connections.len() < MAX_CONNECTIONS
    }

    /// What to poll: the listener while there is room for a connection, then each
    /// connection. `ready` takes the results in the same order.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = Vec::with_capacity(self.connections.len() + 1);
        if self.accepting() {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        }
        for connection in &self.connections {
            fds.push(PollFd::new(connection.stream.as_fd(), PollFlags::POLLIN));
        }
        fds
    }

    /// Serves what `poll` found ready (`revents` in `poll_fds` order), and closes connections
    /// idle for too long.
    pub fn ready(&mut self, revents: &[PollFlags]) {
        let mut events = revents.iter();
        let listener_ready = self.accepting() && events.next().is_some_and(|r| !r.is_empty());
        for (connection, events) in self.connections.iter_mut().zip(events) {
            if !events.is_empty() {
                connection.pump(&self.path, &self.limits, &mut self.received);
            }
        }
        let now = Instant::now();
        self.connections.retain(|c| {
            c.conversation.state() != State::Closed
                && now.duration_since(c.last_active) < IDLE_TIMEOUT
        });
        if listener_ready {
            self.accept_pending();
        }
    }

    /// How long `poll` may sleep before an idle connection is due to be closed.
    pub fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        self.connections
            .iter()
            .map(|c| (c.last_active + IDLE_TIMEOUT).saturating_duration_since(now))
            .min()
    }

    fn accept_pending(&mut self) {
        while self.accepting() {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    // Answers are small single writes; never hold one back for an ACK.
                    let _ = stream.set_nodelay(true);
                    self.connections.push(Connection {
                        stream,
                        conversation: Conversation::new(),
                        last_active: Instant::now(),
                        write_shut: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock (nothing more waiting), or a connection that failed before we
                // took it: either way, nothing to do now.
                Err(_) => return,
            }
        }
    }

    /// The child has ended: serves what is already there and what is still on its way, for
    /// at most `grace`; then closes everything and returns what was received.
    pub fn finish(mut self, grace: Duration) -> Received {
        let deadline = Instant::now() + grace;
        loop {
            self.accept_pending();
            for connection in &mut self.connections {
                connection.pump(&self.path, &self.limits, &mut self.received);
            }
            self.connections.retain(|c| c.conversation.in_flight());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.connections.is_empty() || left.is_zero() {
                break;
            }
            let mut fds = self.poll_fds();
            if let Err(e) = poll(&mut fds, poll_timeout(left)) {
                if e != nix::errno::Errno::EINTR {
                    break;
                }
            }
        }
        self.received
    }
}

/// A poll timeout rounded up to the next millisecond (rounding down would spin).
pub fn poll_timeout(duration: Duration) -> PollTimeout {
    let millis = duration.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

impl Connection {
    /// Reads what is there (without blocking) and writes the answers.
    fn pump(&mut self, path: &str, limits: &Limits, received: &mut Received) {
        let mut chunk = vec![0u8; READ_BYTES];
        while self.conversation.state() != State::Closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.conversation.end_of_input(),
                Ok(n) => {
                    self.last_active = Instant::now();
                    let out = self.conversation.feed(&chunk[..n], path, limits, received);
                    // Answers are small: a client that cannot take one is not reading.
                    if !out.is_empty() && self.stream.write_all(&out).is_err() {
                        self.conversation.end_of_input();
                    }
                    if matches!(self.conversation.state(), State::Draining { .. })
                        && !self.write_shut
                    {
                        self.write_shut = true;
                        let _ = self.stream.shutdown(Shutdown::Write);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.conversation.end_of_input(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn serve_while(server: &mut Server, until: impl Fn(&Server) -> bool) {
        let start = Instant::now();
        while !until(server) {
            assert!(start.elapsed() < Duration::from_secs(5), "timed out");
            let revents: Vec<PollFlags> = {
                let mut fds = server.poll_fds();
                poll(&mut fds, poll_timeout(Duration::from_millis(20))).unwrap();
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect()
            };
            server.ready(&revents);
        }
    }

    fn post(server: &Server, body: &str) -> String {
        let port = server
            .endpoint()
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.path,
            body.len()
        )
    }

    fn connect(server: &Server) -> TcpStream {
        let address = server.listener.local_addr().unwrap();
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    const ONE_SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"07070707070707070707070707070707","spanId":"0909090909090909","name":"mine"}]}]}]}"#;

    #[test]
    fn the_endpoint_is_loopback_with_the_nonce_in_its_path() {
        let server = Server::bind("00ff00ff00ff00ff").unwrap();
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        assert!(server.endpoint().ends_with("/00ff00ff00ff00ff/v1/traces"));
    }

    #[test]
    fn a_request_is_answered_while_the_child_runs() {
        let mut server = Server::bind("n1").unwrap();
        let mut client = connect(&server);
        client
            .write_all(post(&server, ONE_SPAN).as_bytes())
            .unwrap();
        serve_while(&mut server, |s| s.received.spans == 1);
        let mut reader = io::BufReader::new(client);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 200 OK\r\n");
        let received = server.finish(GRACE);
        assert_eq!(received.spans, 1);
    }

    #[test]
    fn finishing_serves_requests_already_sent_and_waits_for_one_on_its_way() {
        let server = Server::bind("n2").unwrap();
        // Sent, but not read by the server yet when the child ends.
        let mut early = connect(&server);
        early.write_all(post(&server, ONE_SPAN).as_bytes()).unwrap();
        // Connected, but the request comes a little later.
        let mut late = connect(&server);
        let request = post(&server, ONE_SPAN);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            late.write_all(request.as_bytes()).unwrap();
            let mut answer = [0u8; 12];
            late.read_exact(&mut answer).unwrap();
            answer
        });
        let received = server.finish(Duration::from_secs(2));
        assert_eq!(received.spans, 2);
        assert_eq!(&writer.join().unwrap(), b"HTTP/1.1 200");
    }

    #[test]
    fn finishing_does_not_wait_for_idle_or_hanging_connections_beyond_the_grace() {
        let mut server = Server::bind("n3").unwrap();
        // An idle keep-alive connection after one request: closed at once.
        let mut idle = connect(&server);
        idle.write_all(post(&server, ONE_SPAN).as_bytes()).unwrap();
        serve_while(&mut server, |s| s.received.spans == 1);
        let started = Instant::now();
        let received = server.finish(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(received.spans, 1);

        // A connection that never sends: waited for, but only for the grace.
        let server = Server::bind("n4").unwrap();
        let _silent = connect(&server);
        let started = Instant::now();
        server.finish(Duration::from_millis(50));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn after_finishing_the_port_refuses_connections() {
        let server = Server::bind("n5").unwrap();
        let address = server.listener.local_addr().unwrap();
        server.finish(GRACE);
        let refused = TcpStream::connect(address).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_client_that_hangs_up_mid_request_is_dropped_without_harm() {
        let mut server = Server::bind("n6").unwrap();
        let mut client = connect(&server);
        let request = post(&server, ONE_SPAN);
        client.write_all(&request.as_bytes()[..20]).unwrap();
        serve_while(&mut server, |s| !s.connections.is_empty());
        drop(client);
        serve_while(&mut server, |s| s.connections.is_empty());
        assert_eq!(server.finish(GRACE).spans, 0);
    }
}
