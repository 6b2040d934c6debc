//! The record channel from shims to the wrapper (DESIGN §2): a persistent FIFO in the private
//! state directory, drained on its own thread while the child runs.
//!
//! The FIFO is kept between dispatches (creating and removing one per dispatch costs about half
//! a millisecond on ext4); records carry a per-dispatch nonce, so whatever a leftover daemon of
//! an earlier dispatch writes is recognised and ignored. We hold a write end open ourselves so
//! the reader never sees end-of-file between two shims, and a stop pipe wakes the reader once
//! the child has ended; it then drains what is left and returns. A shim finishes its write
//! before it exits, so everything written by the child's own tool calls is in the FIFO by then.
//!
//! The same thread serves the loopback listener for custom spans (`listen`), polling its
//! sockets with the FIFO, so that a dispatch costs one thread however it is traced.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use dispatch_shim::Record;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::listen::{self, Received, Server, GRACE};

const FIFO_NAME: &str = "records";
/// Ask for a roomy pipe so bursts of tool calls never find it full (Linux's default
/// /proc/sys/fs/pipe-max-size allows 1 MiB for anyone).
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// The open channel for one dispatch.
pub struct Channel {
    pub path: PathBuf,
    read_end: OwnedFd,
    _write_end: OwnedFd,
}

/// What the reader collected.
#[derive(Debug, Default)]
pub struct Collected {
    pub records: Vec<Record>,
    /// Lines that were not records of this dispatch (other nonce, garbage).
    pub ignored: u64,
    /// Records shims could not deliver (channel full), counted beside the FIFO.
    pub dropped: u64,
    /// Spans the charm's code sent to the custom-span listener.
    pub custom: Received,
    /// The custom-span receiver failed (an internal error): it stopped serving.
    pub custom_failed: bool,
}

impl Channel {
    /// Opens (creating if needed) the FIFO in `state_dir`.
    pub fn open(state_dir: &Path) -> io::Result<Channel> {
        let path = state_dir.join(FIFO_NAME);
        match std::fs::symlink_metadata(&path) {
            // Only our own, private FIFO: one someone else made (while the state dir was open
            // to others) would let them read the records or feed their own.
            Ok(meta) if meta.file_type().is_fifo() && crate::state_dir::ours_and_private(&meta) => {
            }
            Ok(_) => {
                std::fs::remove_file(&path)?;
                make_fifo(&path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_fifo(&path)?,
            Err(e) => return Err(e),
        }
        let read_end = open_fifo(&path, libc::O_RDONLY)?;
        let write_end = open_fifo(&path, libc::O_WRONLY)?;
        // SAFETY: fcntl on a descriptor we own; failure only means a smaller pipe.
        unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // Anything left from an earlier dispatch is not ours.
        discard(&read_end);
        Ok(Channel {
            path,
            read_end,
            _write_end: write_end,
        })
    }
}

/// Starts the thread that works while the child runs: with `listen`, it first opens the
/// custom-span listener (`listen`; its endpoint is then waiting in `Reader::endpoint`), so
/// that binding overlaps with the rest of the setup rather than delaying the child; then it
/// runs `prelude` (work that should overlap with the child, such as opening the store; the
/// FIFO's buffer and the listen backlog hold what arrives meanwhile); then it drains the
/// record channel (records of this dispatch's `nonce`) and serves the listener, whichever of
/// the two there is, until `Reader::finish`. One thread for both: a dispatch whose charm
/// sends no spans pays for no thread of its own.
pub fn start_reader<T: Send + 'static>(
    channel: Option<Channel>,
    listen: bool,
    nonce: String,
    prelude: impl FnOnce() -> T + Send + 'static,
) -> io::Result<Reader<T>> {
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
            let dropped = channel.as_ref().map(|c| dropped_path(&c.path));
            let mut collected = collector.finish(dropped.as_deref());
            match custom {
                Some(Ok(received)) => collected.custom = received,
                Some(Err(_)) => custom_failed = true,
                None => {}
            }
            collected.custom_failed = custom_failed;
            (collected, early)
        })?;
    Ok(Reader {
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

fn dropped_path(fifo: &Path) -> PathBuf {
    crate::store::with_suffix(fifo, ".dropped")
}

fn make_fifo(path: &Path) -> io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    Ok(())
}

fn open_fifo(path: &Path, mode: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in channel path"))?;
    // SAFETY: open with a valid C string; the descriptor is owned right away.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            mode | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn discard(fd: &OwnedFd) {
    let mut buffer = [0u8; 8192];
    while let Ok(n) = nix::unistd::read(fd.as_fd(), &mut buffer) {
        if n == 0 {
            break;
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
                fds.push(PollFd::new(channel.read_end.as_fd(), PollFlags::POLLIN));
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
                read_available(&channel.read_end, &mut buffer, collector, MAX_READ_AT_ONCE);
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

/// The most read from the channel before looking at the stop pipe again (and, when stopping,
/// at all): the largest a pipe's buffer can be made (`/proc/sys/fs/pipe-max-size`).
const MAX_READ_AT_ONCE: usize = 1024 * 1024;

/// A record line is shorter than this (a shim writes each in one atomic write).
pub const MAX_LINE: usize = libc::PIPE_BUF;

fn read_available(fd: &OwnedFd, buffer: &mut [u8], collector: &mut Collector, limit: usize) {
    let mut read = 0;
    while read < limit {
        match nix::unistd::read(fd.as_fd(), buffer) {
            Ok(0) => return,
            Ok(n) => {
                read += n;
                collector.feed(&buffer[..n]);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Splits the byte stream into lines and keeps this dispatch's records. (Public for the fuzz
/// targets: it is what reads the bytes anyone who can open the FIFO writes.)
pub struct Collector {
    nonce: String,
    partial: Vec<u8>,
    /// Inside a line already too long to be a record: skip to its end.
    skipping: bool,
    collected: Collected,
}

impl Collector {
    pub fn new(nonce: String) -> Collector {
        Collector {
            nonce,
            partial: Vec::new(),
            skipping: false,
            collected: Collected::default(),
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.skipping {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    bytes = &bytes[end + 1..];
                    self.skipping = false;
                }
                None => return,
            }
        }
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let line = &self.partial[start..end];
            match Record::decode(line) {
                Some(record) if record.nonce == self.nonce => self.collected.records.push(record),
                _ => self.collected.ignored += 1,
            }
            start = end + 1;
        }
        self.partial.drain(..start);
        // Not a record (those are shorter): drop it now rather than rescanning it, and
        // growing it, with every read.
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
            self.skipping = true;
            self.collected.ignored += 1;
        }
    }

    pub fn finish(mut self, dropped_path: Option<&Path>) -> Collected {
        if !self.partial.is_empty() {
            self.collected.ignored += 1;
        }
        let dropped = dropped_path.and_then(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            let _ = std::fs::remove_file(path);
            Some(text)
        });
        if let Some(text) = dropped {
            self.collected.dropped = text.lines().filter(|l| *l == self.nonce).count() as u64;
        }
        self.collected
    }
}

/// The running reader; `finish` stops it and returns what it collected.
pub struct Reader<T> {
    thread: Option<JoinHandle<(Collected, Option<T>)>>,
    stop: Option<OwnedFd>,
    endpoint: Option<Arc<Endpoint>>,
}

impl<T> Reader<T> {
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
    use dispatch_shim::CallEnd;

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
    fn collector_keeps_only_this_dispatch_records_across_split_reads() {
        let mut collector = Collector::new("mine".into());
        let mut stream = record("mine").encode();
        stream.extend(record("other").encode());
        stream.extend(b"garbage line\n");
        stream.extend(record("mine").encode());
        let (a, b) = stream.split_at(17);
        collector.feed(a);
        collector.feed(b);
        let collected = collector.finish(None);
        assert_eq!(collected.records.len(), 2);
        assert_eq!(collected.ignored, 2);
    }

    #[test]
    fn reader_drains_records_written_to_the_fifo() {
        let dir = std::env::temp_dir().join(format!("dispatch-channel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let channel = Channel::open(&dir).unwrap();
        let path = channel.path.clone();
        let reader = start_reader(Some(channel), false, "n1".into(), || 7).unwrap();
        let writer = open_fifo(&path, libc::O_WRONLY).unwrap();
        for _ in 0..500 {
            nix::unistd::write(&writer, &record("n1").encode()).unwrap();
        }
        nix::unistd::write(&writer, &record("n0").encode()).unwrap();
        std::fs::write(dropped_path(&path), "n1\nn0\nn1\n").unwrap();
        let (collected, early) = reader.finish();
        assert_eq!(early, Some(7));
        assert_eq!(collected.records.len(), 500);
        assert_eq!(collected.ignored, 1);
        assert_eq!(collected.dropped, 2);
        assert!(!dropped_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_too_long_to_be_a_record_is_skipped_without_holding_the_records_after_it() {
        let mut collector = Collector::new("n1".into());
        let good = record("n1").encode();
        collector.feed(&good);
        // Megabytes without a newline, in pieces, then the end of that line and a record.
        for _ in 0..256 {
            collector.feed(&[b'x'; 8192]);
        }
        assert!(
            collector.partial.len() <= MAX_LINE,
            "{}",
            collector.partial.len()
        );
        collector.feed(b"tail\n");
        collector.feed(&good);
        let collected = collector.finish(None);
        assert_eq!(collected.records.len(), 2);
        assert_eq!(collected.ignored, 1);
    }
}
