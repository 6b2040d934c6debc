//! The stderr relay behind `stderr_tail` (README, *Why a hook failed*): a small process
//! between the charm's stderr and the hook's, that passes every byte on as it comes and
//! remembers the last few, for the wrapper to put on the trace of a failed hook.
//!
//! It is its own process, not a thread of the wrapper, so that the charm's stderr does not
//! depend on the wrapper living: if the wrapper dies, the relay goes on, and a daemon the
//! charm left behind keeps its stderr as it would bare. It lives exactly as long as someone
//! holds the pipe's write end (the charm, and whatever it started), which is how long Juju's
//! end would have been held bare, and it never holds the hook: the wrapper does not wait for
//! it. It ignores the signals a terminal or a process group kill would send, so a Ctrl-C
//! meant for the charm cannot take its stderr away; if the hook's stderr breaks (its reader
//! gone: poll says POLLERR, or a write fails), it ends at once, so the charm's next write
//! breaks as it would have bare.
//!
//! Descriptors: 0 the charm's stderr pipe (read end), 1 a stream socket to the wrapper,
//! 2 the hook's stderr. argv[1]: how many bytes to remember. Protocol on the socket: the
//! wrapper sends one byte once the charm has ended; the relay passes on everything already in
//! the pipe (all the charm wrote before it ended), then answers with the tail: its length as
//! a little-endian u32, then the bytes. The wrapper closing the socket ends the talk, not the
//! relaying.

use std::os::raw::c_int;

/// The name the wrapper runs the shim binary by to make it the relay.
pub const RELAY_NAME: &str = "dispatch-stderr-relay";
/// The most `stderr_tail` may ask to remember.
pub const MAX_TAIL: usize = 64 * 1024;

const PIPE: c_int = 0;
const WRAPPER: c_int = 1;
const STDERR: c_int = 2;

/// Signals that would end the relay by default and are not meant for it.
const IGNORED: [c_int; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGPIPE,
];

/// The last `max` bytes relayed.
struct Tail {
    max: usize,
    bytes: Vec<u8>,
}

impl Tail {
    fn keep(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.max.max(4096) {
            let cut = self.bytes.len() - self.max;
            self.bytes.drain(..cut);
        }
    }

    fn last(&self) -> &[u8] {
        &self.bytes[self.bytes.len().saturating_sub(self.max)..]
    }
}

/// Runs the relay; returns its exit code.
pub fn run(args: &[&[u8]]) -> c_int {
    let max = args
        .get(1)
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_TAIL);
    // SAFETY: setting our own dispositions and descriptor flags.
    unsafe {
        for signal in IGNORED {
            libc::signal(signal, libc::SIG_IGN);
        }
        let flags = libc::fcntl(PIPE, libc::F_GETFL);
        libc::fcntl(PIPE, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut tail = Tail {
        max,
        bytes: Vec::with_capacity(2 * max.max(4096)),
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut pipe_open = true;
    let mut wrapper_open = true;
    while pipe_open || wrapper_open {
        let mut fds = [
            libc::pollfd {
                fd: if pipe_open { PIPE } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if wrapper_open { WRAPPER } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            // Only its errors: a hook's stderr whose reader is gone (POLLERR).
            libc::pollfd {
                fd: STDERR,
                events: 0,
                revents: 0,
            },
        ];
        // SAFETY: polling descriptors we hold, with a valid array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return 1;
        }
        if fds[2].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // The hook's stderr broke: stop at once, so the charm's next write fails as bare.
            return 0;
        }
        if fds[0].revents != 0 {
            match drain(&mut buffer, &mut tail) {
                Drained::More => {}
                Drained::End => pipe_open = false,
                // The hook's stderr is gone: stop reading, so the charm's writes fail as bare.
                Drained::Broken => return 0,
            }
        }
        if fds[1].revents != 0 {
            let mut request = [0u8; 1];
            // SAFETY: reading one byte from our own socket.
            let n = unsafe { libc::read(WRAPPER, request.as_mut_ptr().cast(), 1) };
            if n <= 0 {
                wrapper_open = false;
                continue;
            }
            // Everything the charm wrote before it ended is in the pipe: pass it on first.
            if pipe_open {
                match drain(&mut buffer, &mut tail) {
                    Drained::More => {}
                    Drained::End => pipe_open = false,
                    Drained::Broken => return 0,
                }
            }
            let last = tail.last();
            let mut answer = Vec::with_capacity(4 + last.len());
            answer.extend_from_slice(&(last.len() as u32).to_le_bytes());
            answer.extend_from_slice(last);
            if !write_all(WRAPPER, &answer) {
                wrapper_open = false;
            }
        }
    }
    0
}

enum Drained {
    /// The pipe is empty for now.
    More,
    /// Every writer has closed the pipe.
    End,
    /// Writing to the hook's stderr failed.
    Broken,
}

/// Passes on what the pipe holds now.
fn drain(buffer: &mut [u8], tail: &mut Tail) -> Drained {
    loop {
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(PIPE, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n == 0 {
            return Drained::End;
        }
        if n < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => Drained::More,
                _ => Drained::End,
            };
        }
        let chunk = &buffer[..n as usize];
        if !write_all(STDERR, chunk) {
            return Drained::Broken;
        }
        tail.keep(chunk);
    }
}

/// Writes all of `bytes`, waiting as a blocking write would; false if it failed.
fn write_all(fd: c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing our own buffer to a descriptor we hold.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let mut pollfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: polling a descriptor we hold.
                    unsafe { libc::poll(&mut pollfd, 1, -1) };
                    continue;
                }
                _ => return false,
            }
        }
        bytes = &bytes[n as usize..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_bytes_whatever_the_chunks() {
        let mut tail = Tail {
            max: 5,
            bytes: Vec::new(),
        };
        assert_eq!(tail.last(), b"");
        tail.keep(b"abc");
        assert_eq!(tail.last(), b"abc");
        for _ in 0..5000 {
            tail.keep(b"0123456789");
        }
        tail.keep(b"xy");
        assert_eq!(tail.last(), b"789xy");
        assert!(tail.bytes.len() <= 2 * 4096 + 10);
        let none = Tail {
            max: 0,
            bytes: b"abc".to_vec(),
        };
        assert_eq!(none.last(), b"");
    }
}
