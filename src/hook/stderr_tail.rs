//! `stderr_tail: <bytes>` (README, *Why a hook failed*): the last bytes a charm wrote to
//! stderr, for the `charm` span of a failed hook, for charms in any language.
//!
//! Opt-in, because it puts a pipe between the charm and its stderr. The relay at the other end
//! (`dispatch_shim::relay`, the shim binary run by another name) is its own process: it passes
//! every byte on as it comes, outlives us if we die, lives as long as anyone holds the pipe
//! (a daemon the charm left), and is never waited for. Not set up when the hook's stderr is
//! closed, a terminal or already broken (the charm must find it as it was), or when the shim
//! binary is missing.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dispatch_shim::relay::RELAY_NAME;

/// Whether the hook gave us a stderr at all (`note_inherited_stderr`).
static STDERR_INHERITED: AtomicBool = AtomicBool::new(false);

/// Notes whether fd 2 is open, before anything of ours could take a closed one's place (an
/// fd of ours, close-on-exec, that the charm would never see: but a relay put there would).
/// Called first thing by `entry`.
pub fn note_inherited_stderr() {
    // SAFETY: fcntl(F_GETFD) only inspects the descriptor.
    let open = unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0;
    STDERR_INHERITED.store(open, Ordering::Relaxed);
}

/// How long to wait for the relay to pass on what the charm wrote and answer: only a hook's
/// stderr that nobody reads (a full pipe) makes it slow.
const ANSWER_WITHIN: Duration = Duration::from_millis(200);

/// The relay of one dispatch, and the charm's end of its pipe.
pub struct StderrTail {
    /// The pipe's write end: the child's fd 2. Closed once the child has been started.
    charm_end: Option<OwnedFd>,
    relay: UnixStream,
}

impl StderrTail {
    /// Starts the relay (`shim`, run as `dispatch-stderr-relay`) remembering `bytes`; `Ok(None)`
    /// when the hook's stderr is not something to relay.
    pub fn start(shim: &Path, bytes: u64) -> Result<Option<StderrTail>, String> {
        let mut stderr = libc::pollfd {
            fd: 2,
            events: 0,
            revents: 0,
        };
        // SAFETY: isatty and a zero-timeout poll on our own descriptor 2.
        let (terminal, broken) =
            unsafe { (libc::isatty(2) == 1, libc::poll(&mut stderr, 1, 0) > 0) };
        if !STDERR_INHERITED.load(Ordering::Relaxed) || terminal || broken {
            return Ok(None);
        }
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make the stderr pipe: {e}"))?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot make the relay's socket: {e}"))?;
        Command::new(shim)
            .arg0(RELAY_NAME)
            .arg(bytes.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .map_err(|e| format!("cannot start the stderr relay {}: {e}", shim.display()))?;
        Ok(Some(StderrTail {
            charm_end: Some(write_end),
            relay: ours,
        }))
    }

    /// The descriptor to give the child as its stderr.
    pub fn charm_stderr(&self) -> Option<libc::c_int> {
        self.charm_end.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Once the child exists: our copy of its end goes, so that the pipe ends when the charm
    /// (and what it started) are done with it.
    pub fn child_started(&mut self) {
        self.charm_end = None;
    }

    /// The last bytes the charm wrote to stderr, asked for once it has ended; an error when
    /// the relay could not tell (the hook's stderr broke, or nobody reads it).
    pub fn take(mut self) -> Result<Vec<u8>, String> {
        self.charm_end = None;
        let deadline = Instant::now() + ANSWER_WITHIN;
        let no_answer = |e: std::io::Error| format!("the stderr relay did not answer: {e}");
        self.relay.write_all(b"?").map_err(no_answer)?;
        let mut length = [0u8; 4];
        read_exact_by(&mut self.relay, &mut length, deadline).map_err(no_answer)?;
        let length = u32::from_le_bytes(length) as usize;
        if length > dispatch_shim::relay::MAX_TAIL {
            return Err(format!("the stderr relay answered {length} bytes"));
        }
        let mut tail = vec![0u8; length];
        read_exact_by(&mut self.relay, &mut tail, deadline).map_err(no_answer)?;
        Ok(tail)
    }
}

/// `read_exact`, giving up at `deadline`.
fn read_exact_by(
    stream: &mut UnixStream,
    mut buffer: &mut [u8],
    deadline: Instant,
) -> std::io::Result<()> {
    while !buffer.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buffer) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buffer = &mut buffer[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
