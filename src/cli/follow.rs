//! `dispatch traces --follow`: the last dispatches, then each new one as it is stored, and
//! each one running as it starts (README "Tool mode").
//!
//! Why it can run all day beside the hooks: it only reads. The store is opened read-only
//! (in WAL mode a reader never blocks a writer), the dispatch lock is never taken, and a
//! running dispatch is seen by reading its started record's header (`store::inflight::running`),
//! not by locking it. Between checks it sleeps in `sigtimedwait`, a quarter of a second at a
//! time; a check is a `stat`, a directory listing and SQLite's `data_version` (which says
//! whether anyone committed since the last look without reading a row), so idling costs next
//! to nothing. SIGINT ends it with 130, as shells expect of Ctrl-C; SIGTERM with 0; `--count N`
//! with 0 after N new dispatches; a closed pipe (`| head`) quietly.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::locate::store_to_read;
use super::traces::Request;
use crate::store::inflight::{self, Running};
use crate::store::{ChunkFilter, Store, StoredChunk};

/// How long to sleep between checks: a new dispatch shows within this.
const TICK: Duration = Duration::from_millis(250);

/// Exit status for a follow ended by SIGINT (128 + 2), as a shell reports Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;

pub(super) fn follow(path: &Path, request: &Request) -> Result<i32> {
    let signals = EndSignals::block()?;
    let mut watch = Watch::new(path);
    let show = request.show;
    if let Some(header) = show.header() {
        write_out(&header)?;
    }
    // The history first: the last N (`--last`, default 10; 0 for none) as `traces` shows
    // them.
    match &watch.store {
        Some(store) => {
            // What is newer than this is news, even if stored while the history prints.
            let newest = store.newest_id().map_err(|e| store.read_error(e))?;
            // Printed as read (`--since 1w` may be the whole store), until the reader goes.
            let mut seen = newest;
            let mut ended: Option<Result<bool>> = None;
            store
                .each_chunk(&request.filter, &mut |chunk| {
                    seen = seen.max(chunk.id);
                    let written = show.dispatch(&chunk).and_then(|text| write_out(&text));
                    let go_on = matches!(written, Ok(true));
                    if !go_on {
                        ended = Some(written);
                    }
                    go_on
                })
                .map_err(|e| store.read_error(e))?;
            if let Some(ended) = ended {
                ended?;
                return Ok(0);
            }
            watch.seen_id = seen;
        }
        None => eprintln!(
            "dispatch: no traces recorded yet (store: {}); waiting for the first dispatch",
            path.display()
        ),
    }
    let mut new_ones = 0;
    // The running dispatches already shown (a handful at most: a list will do).
    let mut running_seen: Vec<String> = Vec::new();
    loop {
        match signals.wait(TICK)? {
            Some(Signal::SIGINT) => return Ok(EXIT_INTERRUPTED),
            Some(_) => return Ok(0),
            None => {}
        }
        // Read the running ones before the store: a dispatch that ends between the two
        // reads is then in both, and shown once, stored.
        let running = if request.filter.failed_only {
            Vec::new()
        } else {
            inflight::running(path)
        };
        let stored = watch.new_chunks(&request.filter);
        // Newly running ones in the order they started, each before the stored ones that
        // started after it (as the history is ordered).
        let mut fresh = running
            .iter()
            .filter(|r| !running_seen.contains(&r.name) && watch.admits(&request.filter, r))
            .filter(|r| !stored.iter().any(|c| c.trace_id == r.trace_id))
            .peekable();
        for chunk in &stored {
            while let Some(dispatch) = fresh.next_if(|r| r.started_at <= chunk.started_at) {
                if !write_out(&show.running(dispatch).unwrap_or_default())? {
                    return Ok(0);
                }
            }
            if !write_out(&show.dispatch(chunk)?)? {
                return Ok(0);
            }
            new_ones += 1;
            if request.count.is_some_and(|count| new_ones >= count) {
                return Ok(0);
            }
        }
        for dispatch in fresh {
            if !write_out(&show.running(dispatch).unwrap_or_default())? {
                return Ok(0);
            }
        }
        running_seen = running.iter().map(|r| r.name.clone()).collect();
    }
}

/// SIGINT and SIGTERM, blocked so that they wait to be taken by `wait` instead of killing
/// the process between two writes.
struct EndSignals(SigSet);

impl EndSignals {
    fn block() -> Result<EndSignals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block().context("blocking SIGINT and SIGTERM")?;
        Ok(EndSignals(set))
    }

    /// Sleeps for `timeout`, or until one of the signals comes.
    fn wait(&self, timeout: Duration) -> Result<Option<Signal>> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: a valid signal set and timespec, and no siginfo wanted.
        let got = unsafe { libc::sigtimedwait(self.0.as_ref(), std::ptr::null_mut(), &timeout) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(error).context("waiting for the next check"),
            };
        }
        Ok(Signal::try_from(got).ok())
    }
}

/// The store as followed: reopened when it appears, or when a new file takes its place (a
/// damaged store moved aside by a hook).
struct Watch<'a> {
    path: &'a Path,
    store: Option<Store>,
    /// Device and inode of the file `store` has open.
    file: Option<(u64, u64)>,
    /// `data_version` when last read; `None` forces a read.
    version: Option<i64>,
    /// The newest chunk already printed or passed over.
    seen_id: i64,
    /// Whether a failure to read has been said (once until a read works again).
    said: bool,
}

impl<'a> Watch<'a> {
    fn new(path: &'a Path) -> Watch<'a> {
        let mut watch = Watch {
            path,
            store: None,
            file: None,
            version: None,
            seen_id: 0,
            said: false,
        };
        watch.reopen_if_replaced();
        watch
    }

    fn reopen_if_replaced(&mut self) {
        let now = std::fs::symlink_metadata(self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if self.store.is_some() && now == self.file {
            return;
        }
        self.store = None;
        self.version = None;
        if now.is_none() {
            return;
        }
        match store_to_read(self.path) {
            Ok(Some(store)) => {
                // A store that took the place of the one followed holds only new dispatches.
                if self.file.is_some() && self.file != now {
                    self.seen_id = 0;
                }
                self.store = Some(store);
                self.file = now;
                self.said = false;
            }
            Ok(None) => {}
            Err(e) => self.say(&format!("{e:#}")),
        }
    }

    /// The chunks stored since the last call that the filter admits, oldest first.
    fn new_chunks(&mut self, filter: &ChunkFilter) -> Vec<StoredChunk> {
        self.reopen_if_replaced();
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let read = || -> rusqlite::Result<Option<(i64, i64, Vec<_>)>> {
            let version = store.data_version()?;
            if self.version == Some(version) {
                return Ok(None);
            }
            // Rows removed without a newer one stored (a flush evicting): later ids may
            // reuse theirs.
            let newest = store.newest_id()?;
            let after = self.seen_id.min(newest);
            let news = store.chunks(&ChunkFilter {
                last: None,
                after_id: Some(after),
                ..filter.clone()
            })?;
            Ok(Some((version, newest.max(after), news)))
        };
        match read() {
            Ok(None) => Vec::new(),
            Ok(Some((version, newest, news))) => {
                self.version = Some(version);
                self.seen_id = newest;
                self.said = false;
                news
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(store.read_error(e)));
                // Opened again next time: the file may be on its way out.
                self.store = None;
                self.say(&message);
                Vec::new()
            }
        }
    }

    /// Whether a running dispatch passes the filters the store applies to stored ones (the
    /// event glob is asked of the store, so both agree exactly; before the first dispatch
    /// ever has created the store, none does).
    fn admits(&self, filter: &ChunkFilter, running: &Running) -> bool {
        if filter.since.is_some_and(|since| running.started_at < since)
            || filter
                .trace_id_prefix
                .as_ref()
                .is_some_and(|prefix| !running.trace_id.starts_with(prefix.as_str()))
        {
            return false;
        }
        match (&filter.event, &self.store) {
            (None, _) => true,
            (Some(pattern), Some(store)) => store.event_matches(&running.event, pattern),
            (Some(_), None) => false,
        }
    }

    fn say(&mut self, message: &str) {
        if !self.said {
            eprintln!("dispatch: {message}; still following");
            self.said = true;
        }
    }
}

/// Writes and flushes `text`, so each dispatch shows as soon as it is stored; false once
/// the reader has gone (a closed pipe).
fn write_out(text: &str) -> Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}
