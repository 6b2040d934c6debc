//! Dispatches in flight: the dispatch lock, and the record that a dispatch started, written
//! before the child runs so that a wrapper killed with SIGKILL still leaves a trace.
//!
//! Why outside SQLite: recording the start in the store would put a store open and a
//! transaction in front of every hook's child (about a millisecond here). A small file costs
//! one create and one write; the store is then opened while the child runs and written once
//! after it.
//!
//! Layout, beside the store: `<db>.lock` (flock, held for the whole dispatch) and the private
//! directory `<db>.inflight/` holding one file per running dispatch, named
//! `<start unix nanos>-<pid>`: a header line `DTI1\t<started_at>\t<trace id>\t<event>` and the
//! provisional trace (root span marked ERROR "interrupted") as OTLP protobuf. Its writer holds
//! a flock on it while it runs. A dispatch removes its file once its real trace is stored (or,
//! if the store could not take it, rewrites it with the real trace for the next one to store).
//! Whoever holds the dispatch lock may import every other file that nobody has flocked: the
//! record of a killed wrapper. Nobody else may, so a concurrent `dispatch flush` never takes a
//! live dispatch for a dead one; and the store imports each record at most once.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::{create_private_file, with_suffix, NewChunk, Priority};

const TAG: &str = "DTI1";

/// Most finished traces kept waiting beside a store that could not take them.
const MAX_KEPT: usize = 64;

fn record_bytes(
    started_at: i64,
    trace_id: &str,
    event: &str,
    payload: &[u8],
    priority: Priority,
) -> Vec<u8> {
    let event: String = event
        .chars()
        .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
        .collect();
    let mut bytes = format!(
        "{TAG}\t{started_at}\t{trace_id}\t{event}\t{}\n",
        priority as i64
    )
    .into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// The dispatch's hold on the store: its lock (if it got it) and its started record.
pub struct Inflight {
    dir: PathBuf,
    lock: Option<File>,
    mine: Option<PathBuf>,
    /// Our record, flocked for as long as we run.
    held: Option<File>,
}

/// What a dispatch writes before its child runs.
pub struct Started<'a> {
    pub started_at: i64,
    pub trace_id: &'a str,
    pub event: &'a str,
    pub provisional: &'a [u8],
}

pub fn lock_path(store: &Path) -> PathBuf {
    with_suffix(store, ".lock")
}

pub fn dir_path(store: &Path) -> PathBuf {
    with_suffix(store, ".inflight")
}

impl Inflight {
    #[cfg(test)]
    /// Takes the lock (waiting at most `lock_wait`; without it the dispatch still records
    /// itself but adopts no orphans) and writes the started record.
    pub fn begin(store: &Path, lock_wait: Duration, started: &Started) -> io::Result<Inflight> {
        let mut inflight = Inflight::lock(store, lock_wait, started.started_at)?;
        inflight.record(started)?;
        Ok(inflight)
    }

    /// Takes the dispatch lock, waiting at most `lock_wait` (`holds_lock` tells if it got it),
    /// for the dispatch that started at `started_at` (which names its record).
    pub fn lock(store: &Path, lock_wait: Duration, started_at: i64) -> io::Result<Inflight> {
        let dir = dir_path(store);
        crate::state_dir::ensure_private_dir(&dir)?;
        let lock = take_lock(&lock_path(store), lock_wait)?;
        let mine = dir.join(format!("{started_at}-{}", std::process::id()));
        Ok(Inflight {
            dir,
            lock,
            mine: Some(mine),
            held: None,
        })
    }

    /// Writes this dispatch's started record.
    pub fn record(&mut self, started: &Started) -> io::Result<()> {
        let path = self
            .dir
            .join(format!("{}-{}", started.started_at, std::process::id()));
        // Cleared until the record exists: `finish` must not remove what was never written.
        self.mine = None;
        let bytes = record_bytes(
            started.started_at,
            started.trace_id,
            started.event,
            started.provisional,
            Priority::Failed,
        );
        // The record stays flocked by us while we live: a record nobody holds is an orphan,
        // whatever became of its writer's pid.
        let file = write_record(&path, &bytes)?;
        self.mine = Some(path);
        self.held = Some(file);
        Ok(())
    }

    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// What another thread needs to look for orphans while this dispatch goes on.
    pub fn orphan_scan(&self) -> OrphanScan {
        OrphanScan {
            dir: self.dir.clone(),
            mine: self.mine.clone(),
            locked: self.lock.is_some(),
        }
    }

    #[cfg(test)]
    pub fn orphans(&self) -> Vec<(PathBuf, NewChunk)> {
        self.orphan_scan().orphans()
    }

    #[cfg(test)]
    /// Removes imported orphan records.
    pub fn forget(&self, paths: &[PathBuf]) {
        forget(paths)
    }

    /// The store could not take the finished trace for now (locked, disk full...): keep it
    /// as this dispatch's record, with its real priority, for the next lock holder to import.
    /// Bounded: past `MAX_KEPT` waiting records, the trace is dropped instead. When it cannot
    /// be kept (the disk is too full even for this), the started record goes too: left, it
    /// would tell the next dispatch that a hook which ran to its end was killed.
    pub fn keep_final(
        mut self,
        trace_id: &str,
        event: &str,
        payload: &[u8],
        priority: Priority,
    ) -> io::Result<()> {
        let Some(mine) = self.mine.take() else {
            return Ok(());
        };
        let waiting = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
        let started_at = mine
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .and_then(|n| n.parse::<i64>().ok());
        let (true, Some(started_at)) = (waiting <= MAX_KEPT, started_at) else {
            let _ = std::fs::remove_file(&mine);
            return Err(io::Error::other(format!(
                "{MAX_KEPT} traces already wait there"
            )));
        };
        let bytes = record_bytes(started_at, trace_id, event, payload, priority);
        write_record(&mine, &bytes).map(drop).inspect_err(|_| {
            let _ = std::fs::remove_file(&mine);
        })
    }

    /// The dispatch is recorded (or given up on): remove its record, release the lock.
    pub fn finish(mut self) {
        if let Some(mine) = self.mine.take() {
            let _ = std::fs::remove_file(mine);
        }
    }
}

/// A snapshot of where to look for orphans, valid while the `Inflight` it came from lives
/// (its lock is what makes adopting them safe).
#[derive(Debug, Clone)]
pub struct OrphanScan {
    dir: PathBuf,
    mine: Option<PathBuf>,
    locked: bool,
}

impl OrphanScan {
    /// Started records of dispatches that never finished (only with the lock), as failed
    /// chunks, with the files to forget once they are stored.
    pub fn orphans(&self) -> Vec<(PathBuf, NewChunk)> {
        if !self.locked {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let own = self
                .mine
                .as_ref()
                .is_some_and(|m| path == *m || path == with_suffix(m, ".tmp"));
            if own || writer_alive(&path) {
                continue;
            }
            // Written by our user or not at all: if the directory was ever open to others,
            // what they left in it is not a dispatch of ours.
            // SAFETY: geteuid has no failure modes.
            if !entry
                .metadata()
                .is_ok_and(|m| m.is_file() && m.uid() == unsafe { libc::geteuid() })
            {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.extension().is_some_and(|e| e == "tmp") {
                // Half-written by a wrapper killed mid-write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path).ok().and_then(|b| parse(&b)) {
                Some(chunk) => found.push((path, chunk)),
                // Torn by a kill mid-write, or not ours: nothing to recover.
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(_, chunk)| chunk.started_at);
        found
    }
}

/// A dispatch whose started record is on disk and whose wrapper is still alive: what
/// `traces --follow` shows as running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The record's file name, unique per dispatch.
    pub name: String,
    pub started_at: i64,
    pub trace_id: String,
    pub event: String,
}

/// The dispatches running now beside `store`, oldest first. Read without any lock: only
/// the records' headers are read, and a writer is known alive by its process id (in the
/// file name), so this never delays a dispatch or its adoption of orphans.
pub fn running(store: &Path) -> Vec<Running> {
    let Ok(entries) = std::fs::read_dir(dir_path(store)) else {
        return Vec::new();
    };
    let mut found: Vec<Running> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // `<start>-<pid>`; a `.tmp` is a record still being written.
            let pid: i32 = name.split_once('-')?.1.parse().ok()?;
            // Signal 0 asks only whether the process exists (EPERM: it does, as another user).
            let alive = pid > 0
                && matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Ok(()) | Err(nix::errno::Errno::EPERM)
                );
            if !alive {
                return None;
            }
            let mut head = [0u8; 1024];
            let read = std::io::Read::read(&mut File::open(entry.path()).ok()?, &mut head).ok()?;
            let header = parse_header(&head[..read])?;
            Some(Running {
                name,
                started_at: header.started_at,
                trace_id: header.trace_id,
                event: header.event,
            })
        })
        .collect();
    found.sort_by_key(|r| r.started_at);
    found
}

/// Removes imported orphan records.
pub fn forget(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Writes a record whole or not at all (a temporary name, then a rename), flocked from its
/// creation on; returns the open, locked file.
fn write_record(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let temp = with_suffix(path, ".tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .and_then(|mut file| {
            try_flock(&file)?;
            file.write_all(bytes)?;
            std::fs::rename(&temp, path)?;
            Ok(file)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// A record whose writer still runs is not an orphan: the writer holds a flock on it.
fn writer_alive(path: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        // Taking the lock (released when `file` closes) proves nobody holds it.
        Ok(file) => try_flock(&file).is_err(),
        Err(_) => false,
    }
}

fn try_flock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A record's header line, and where its payload starts.
struct Header {
    started_at: i64,
    trace_id: String,
    event: String,
    priority: Priority,
    payload_at: usize,
}

fn parse_header(bytes: &[u8]) -> Option<Header> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut fields = header.split('\t');
    if fields.next()? != TAG {
        return None;
    }
    let started_at = fields.next()?.parse().ok()?;
    let trace_id = fields.next()?.to_string();
    let event = fields.next()?.to_string();
    let priority = match fields.next() {
        Some("0") => Priority::Quiet,
        Some("1") => Priority::Changed,
        _ => Priority::Failed,
    };
    Some(Header {
        started_at,
        trace_id,
        event,
        priority,
        payload_at: newline + 1,
    })
}

fn parse(bytes: &[u8]) -> Option<NewChunk> {
    let header = parse_header(bytes)?;
    Some(NewChunk {
        started_at: header.started_at,
        event: header.event,
        trace_id: header.trace_id,
        payload: bytes[header.payload_at..].to_vec(),
        priority: header.priority,
    })
}

/// Takes the dispatch lock, retrying until `wait` has passed. `Ok(None)`: someone else has it.
fn take_lock(path: &Path, wait: Duration) -> io::Result<Option<File>> {
    let file = create_private_file(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    fn started(at: i64) -> Started<'static> {
        Started {
            started_at: at,
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            event: "install",
            provisional: b"\x0a\x00provisional",
        }
    }

    /// Writes the record a wrapper with (dead) pid `pid` would have left.
    fn leave_record(store: &Path, at: i64, pid: i64) {
        let dir = dir_path(store);
        crate::state_dir::ensure_private_dir(&dir).unwrap();
        let mut bytes =
            format!("{TAG}\t{at}\t0af7651916cd43dd8448eb211c80319c\tinstall\n").into_bytes();
        bytes.extend_from_slice(b"\x0a\x00provisional");
        std::fs::write(dir.join(format!("{at}-{pid}")), bytes).unwrap();
    }

    const DEAD_PID: i64 = 0x3fff_fff0;

    #[test]
    fn a_record_left_by_a_killed_dispatch_is_an_orphan_for_the_next_lock_holder() {
        let scratch = Scratch::new("orphan");
        leave_record(&scratch.path("t.db"), 1, DEAD_PID);
        let next = Inflight::begin(&scratch.path("t.db"), Duration::ZERO, &started(2)).unwrap();
        let orphans = next.orphans();
        assert_eq!(orphans.len(), 1);
        let chunk = &orphans[0].1;
        assert_eq!(chunk.started_at, 1);
        assert_eq!(chunk.event, "install");
        assert_eq!(chunk.priority, Priority::Failed);
        assert_eq!(chunk.payload, b"\x0a\x00provisional");
        next.forget(&[orphans[0].0.clone()]);
        assert!(next.orphans().is_empty());
        next.finish();
        assert_eq!(
            std::fs::read_dir(dir_path(&scratch.path("t.db")))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn nobody_without_the_lock_adopts_orphans_and_live_writers_are_never_orphans() {
        let scratch = Scratch::new("live");
        leave_record(&scratch.path("t.db"), 1, DEAD_PID);
        let live = Inflight::begin(&scratch.path("t.db"), Duration::ZERO, &started(2)).unwrap();
        assert!(live.holds_lock());
        let other = Inflight::begin(
            &scratch.path("t.db"),
            Duration::from_millis(20),
            &started(3),
        )
        .unwrap();
        assert!(!other.holds_lock());
        assert!(other.orphans().is_empty());
        // The lock holder sees the dead record, but not the live newcomer's.
        let orphans = live.orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].1.started_at, 1);
        other.finish();
        live.finish();
    }

    #[test]
    fn torn_records_are_dropped() {
        let scratch = Scratch::new("torn");
        let dir = dir_path(&scratch.path("t.db"));
        crate::state_dir::ensure_private_dir(&dir).unwrap();
        let torn = dir.join(format!("5-{DEAD_PID}"));
        std::fs::write(&torn, b"DTI1\tnot-a-number").unwrap();
        let me = Inflight::begin(&scratch.path("t.db"), Duration::ZERO, &started(6)).unwrap();
        assert!(me.orphans().is_empty());
        assert!(!torn.exists());
        me.finish();
    }
}
