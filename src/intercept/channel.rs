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
//! The thread that drains it (and serves the loopback listener for custom spans, and opens the
//! store) is `beside_child`.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use dispatch_shim::Record;

use crate::listen::Received;

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
    /// The last uncaught exception the charm reported through `juju-log`, as ops logs it
    /// (`dispatch_shim::OPS_UNCAUGHT_EXCEPTION`), left beside the FIFO by the shim.
    pub uncaught_exception: Option<String>,
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

impl Channel {
    /// The FIFO's read end, to poll.
    pub fn read_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read_end.as_fd()
    }

    /// Reads what is in the FIFO (at most `limit` bytes) into `collector`.
    pub fn read_into(&self, buffer: &mut [u8], collector: &mut Collector, limit: usize) {
        read_available(&self.read_end, buffer, collector, limit);
    }

    /// Where shims count the records they could not deliver.
    pub fn dropped_path(&self) -> PathBuf {
        dropped_path(&self.path)
    }
}

fn dropped_path(fifo: &Path) -> PathBuf {
    crate::store::with_suffix(fifo, ".dropped")
}

/// Where a shim leaves the charm's uncaught exception.
pub fn exception_path(fifo: &Path) -> PathBuf {
    crate::store::with_suffix(fifo, dispatch_shim::EXCEPTION_SUFFIX)
}

/// Most of an exception file that is read: ops hands `juju-log` at most 128 KiB per call, and
/// only the last 16 KiB are kept on the trace (`trace::failure`).
const MAX_EXCEPTION_FILE: u64 = 256 * 1024;

/// Takes (reads and removes) what the shims left beside the FIFO: the count of records they
/// could not deliver, and an uncaught exception, each only if this dispatch's.
fn take_sidecars(fifo: &Path, nonce: &str, collected: &mut Collected) {
    let take = |path: &Path| -> Option<Vec<u8>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let _ = std::fs::remove_file(path);
        let mut bytes = Vec::new();
        file.take(MAX_EXCEPTION_FILE).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    };
    if let Some(bytes) = take(&dropped_path(fifo)) {
        let text = String::from_utf8_lossy(&bytes);
        collected.dropped = text.lines().filter(|l| *l == nonce).count() as u64;
    }
    if let Some(bytes) = take(&exception_path(fifo)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Some((owner, message)) = text.split_once('\n') {
            if owner == nonce {
                collected.uncaught_exception = Some(message.to_string());
            }
        }
    }
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

/// The most read from the channel before looking at the stop pipe again (and, when stopping,
/// at all): the largest a pipe's buffer can be made (`/proc/sys/fs/pipe-max-size`).
pub const MAX_READ_AT_ONCE: usize = 1024 * 1024;

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

    /// What was collected, with what the shims left beside the FIFO at `fifo`.
    pub fn finish(mut self, fifo: Option<&Path>) -> Collected {
        if !self.partial.is_empty() {
            self.collected.ignored += 1;
        }
        if let Some(fifo) = fifo {
            take_sidecars(fifo, &self.nonce, &mut self.collected);
        }
        self.collected
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
