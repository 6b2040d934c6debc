//! The thread that works beside the child while it runs (README, *How it works*): one thread,
//! so that a dispatch costs one however it is traced. In order:
//!
//! 1. with custom spans on, it binds the loopback listener (`listen`) and hands its endpoint to
//!    the main thread, which puts it in the child's environment: binding overlaps with the rest
//!    of the preparation instead of delaying the child;
//! 2. it runs the prelude it was given: opening the store (`persist::open_store_at`), off the
//!    hook's critical path (the FIFO's buffer and the listen backlog hold what arrives meanwhile);
//! 3. it drains the record channel (`channel`: records of this dispatch's nonce) and serves the
//!    listener, whichever of the two there is, until the child has ended (`BesideChild::finish`).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::intercept::channel::{Channel, Collected, Collector, MAX_READ_AT_ONCE};
use crate::listen::{self, Server, GRACE};

/// Starts the thread that works while the child runs: with `listen`, it first opens the
/// custom-span listener (`listen`; its endpoint is then waiting in `Reader::endpoint`), so
/// that binding overlaps with the rest of the setup rather than delaying the child; then it
/// runs `prelude` (work that should overlap with the child, such as opening the store; the
/// FIFO's buffer and the listen backlog hold what arrives meanwhile); then it drains the
/// record channel (records of this dispatch's `nonce`) and serves the listener, whichever of
/// the two there is, until `Reader::finish`. One thread for both: a dispatch whose charm
/// sends no spans pays for no thread of its own.
pub fn start<T: Send + 'static>(
    channel: Option<Channel>,
    listen: bool,
    nonce: String,
    prelude: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<BesideChild<T>> {
    let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let endpoint = Arc::new(Endpoint::default());
    let endpoint_slot = endpoint.clone();
    let thread = std::thread::Builder::new()
        .name("records".into())
        .spawn(move || {
            let mut server = None;
            if listen {
                let bound = std::panic::catch_unwind(|| Server::bind(&nonce));
                let answer = match &bound {
                    Ok(Ok(bound)) => Ok(bound.endpoint().to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("internal error while opening the listener".to_string()),
                };
                endpoint_slot.set(answer);
                server = bound.ok().and_then(Result::ok);
            }
            let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(prelude)).ok();
            let mut collector = Collector::new(nonce);
            let mut custom_failed = false;
            serve_until_stopped(
                channel.as_ref(),
                &stop_read,
                &mut collector,
                &mut server,
                &mut custom_failed,
            );
            let custom = server.map(|server| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.finish(GRACE)))
            });
            let fifo = channel.as_ref().map(|channel| channel.path.clone());
            let mut collected = collector.finish(fifo.as_deref());
            match custom {
                Some(Ok(received)) => collected.custom = received,
                Some(Err(_)) => custom_failed = true,
                None => {}
            }
            collected.custom_failed = custom_failed;
            (collected, early)
        })?;
    Ok(BesideChild {
        thread: Some(thread),
        stop: Some(stop_write),
        endpoint: listen.then_some(endpoint),
    })
}

/// The listener's URL (or why there is none), handed from the reader's thread to the main
/// thread once. (A Mutex and a Condvar: std's channels cost more binary for one message.)
#[derive(Default)]
struct Endpoint {
    answer: Mutex<Option<Result<String, String>>>,
    ready: Condvar,
}

impl Endpoint {
    fn set(&self, answer: Result<String, String>) {
        if let Ok(mut slot) = self.answer.lock() {
            *slot = Some(answer);
        }
        self.ready.notify_one();
    }

    fn take(&self) -> Result<String, String> {
        let lost = || Err("internal error while opening the listener".to_string());
        let Ok(mut slot) = self.answer.lock() else {
            return lost();
        };
        loop {
            if let Some(answer) = slot.take() {
                return answer;
            }
            slot = match self.ready.wait(slot) {
                Ok(slot) => slot,
                Err(_) => return lost(),
            };
        }
    }
}

fn serve_until_stopped(
    channel: Option<&Channel>,
    stop: &OwnedFd,
    collector: &mut Collector,
    server: &mut Option<Server>,
    custom_failed: &mut bool,
) {
    let mut buffer = vec![0u8; if channel.is_some() { 64 * 1024 } else { 0 }];
    loop {
        let revents: Vec<PollFlags> = {
            let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            if let Some(channel) = channel {
                fds.push(PollFd::new(channel.read_fd(), PollFlags::POLLIN));
            }
            let mut timeout = PollTimeout::NONE;
            if let Some(server) = server.as_ref() {
                fds.extend(server.poll_fds());
                if let Some(due) = server.timeout() {
                    timeout = listen::poll_timeout(due);
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            fds.iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        let stopping = !revents[0].is_empty();
        let mut next = 1;
        if let Some(channel) = channel {
            if stopping || !revents[1].is_empty() {
                // Once the child has ended, what is in the FIFO was written before (a pipe holds
                // at most 1 MiB): read that much and no more, so a process the charm left
                // writing into our channel cannot hold the end of the hook.
                channel.read_into(&mut buffer, collector, MAX_READ_AT_ONCE);
            }
            next = 2;
        }
        if let Some(serving) = server.as_mut() {
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serving.ready(&revents[next..])
            }));
            // A bug in the receiver costs the custom spans, never the tool records.
            if served.is_err() {
                *server = None;
                *custom_failed = true;
            }
        }
        if stopping {
            return;
        }
    }
}

/// The running thread; `finish` stops it and returns what it collected and the prelude's result.
pub struct BesideChild<T> {
    thread: Option<JoinHandle<(Collected, Option<T>)>>,
    stop: Option<OwnedFd>,
    endpoint: Option<Arc<Endpoint>>,
}

impl<T> BesideChild<T> {
    /// The custom-span listener's URL, or why there is none; `None` if it was not asked
    /// for (or was already taken). Waits for the thread to have tried, which it does first.
    pub fn endpoint(&mut self) -> Option<Result<String, String>> {
        Some(self.endpoint.take()?.take())
    }

    /// Stops the reader; returns the records and the prelude's result (`None` if it panicked).
    pub fn finish(mut self) -> (Collected, Option<T>) {
        if let Some(stop) = self.stop.take() {
            let _ = nix::unistd::write(&stop, b"x");
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            _ => (Collected::default(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;
    use dispatch_shim::{CallEnd, Record};
    use std::io::Write;

    fn record(nonce: &str) -> Record {
        Record {
            nonce: nonce.into(),
            tool: "is-leader".into(),
            pid: 1,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            end: CallEnd::Exited(0),
            traceparent: String::new(),
            log_level: String::new(),
            log_length: 0,
            log_text: String::new(),
            arg_count: 0,
            args: vec![],
        }
    }

    #[test]
    fn it_drains_the_records_written_to_the_fifo_and_returns_the_preludes_result() {
        let scratch = Scratch::new("beside-child");
        let channel = Channel::open(&scratch.0).unwrap();
        let path = channel.path.clone();
        let dropped = channel.dropped_path();
        let beside = start(Some(channel), false, "n1".into(), || 7).unwrap();
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for _ in 0..500 {
            writer.write_all(&record("n1").encode()).unwrap();
        }
        writer.write_all(&record("n0").encode()).unwrap();
        std::fs::write(&dropped, "n1\nn0\nn1\n").unwrap();
        let (collected, early) = beside.finish();
        assert_eq!(early, Some(7));
        assert_eq!(collected.records.len(), 500);
        assert_eq!(collected.ignored, 1);
        assert_eq!(collected.dropped, 2);
        assert!(!dropped.exists());
    }
}
