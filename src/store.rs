//! The local trace buffer: one SQLite file, `<charm dir>/.dispatch-trace.db` by default.
//!
//! # Format (schema version 1, `PRAGMA user_version`)
//! - `chunk`: one row per dispatch. `payload` is the dispatch's whole trace as one protobuf
//!   OTLP `ExportTraceServiceRequest`; `state` is 0 started, 1 pending (finished, not shipped),
//!   2 shipped; `priority` is 0 quiet, 1 changed something (a state-changing hook tool was
//!   called), 2 failed (charm failed or dispatch interrupted); `started_at` is unix nanos.
//! - `setting`: small persisted switches and answers (`disabled`, ...), key -> text.
//! - `usage`: a single row with the sum of `chunk.size`, kept up to date by every statement
//!   that adds, resizes or removes a chunk (in the same transaction), so the size cap never
//!   needs a scan. Not triggers: SQLite parses the whole schema on every open, and a dispatch
//!   opens the store once, so every schema object costs every hook.
//!
//! # Invariants
//! - A dispatch inserts its row as `started`, with a provisional payload (the root span marked
//!   ERROR "interrupted"), before the child runs, and replaces it when it finishes. No
//!   transaction is open while the child runs.
//! - The dispatch holds an exclusive `flock` on `<db>.lock` for its whole run. Whoever holds
//!   that lock may treat every other `started` row as an orphan of a killed wrapper and turn
//!   it into a pending (interrupted, failed) chunk; nobody else may.
//! - Rows become `shipped` only after the backend answered 2xx. Eviction (when `usage.bytes`
//!   exceeds the cap) removes shipped rows first (oldest first), then pending rows by lowest
//!   priority, oldest first; `started` rows are never evicted.
//! - The file and its lock are created 0600 and never followed through a symlink.
//!
//! # Performance
//! WAL with `synchronous=NORMAL` (no fsync per commit), `wal_autocheckpoint=32` pages so the
//! WAL that SQLite re-reads on every first open stays small, and no checkpoint on close: a
//! dispatch costs an open, two short transactions and a close.
//!
//! # Failure handling
//! A file SQLite reports as corrupt or not a database is moved aside (to `<db>.corrupt`, with
//! its -wal/-shm; one copy kept) and recreated. A schema newer than this binary (a downgrade)
//! is left alone: the caller runs the dispatch without a store. Lock waits are short and
//! bounded. Migration: a future version N+1 upgrades version N in place inside one
//! transaction and bumps `user_version`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

pub const SCHEMA_VERSION: i32 = 1;

/// How long SQLite waits on a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

const SCHEMA: &str = "
CREATE TABLE chunk (
    id INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    event TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    shipped_at INTEGER
);
CREATE INDEX chunk_by_state ON chunk(state, priority, id);
CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT INTO usage VALUES (0, 0);
";

pub const STATE_STARTED: i64 = 0;
pub const STATE_PENDING: i64 = 1;
pub const STATE_SHIPPED: i64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Quiet = 0,
    Changed = 1,
    Failed = 2,
}

/// Why the store cannot be used for this dispatch.
#[derive(Debug)]
pub enum OpenError {
    /// Written by a newer version of dispatch; left untouched.
    NewerSchema(i32),
    Unusable(anyhow::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NewerSchema(v) => write!(
                f,
                "the trace store has schema version {v}, newer than this dispatch understands \
                 ({SCHEMA_VERSION}); it is left as is and this dispatch is not stored"
            ),
            OpenError::Unusable(e) => write!(f, "the trace store cannot be used: {e:#}"),
        }
    }
}

/// One stored dispatch.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub id: i64,
    pub state: i64,
    pub priority: i64,
    pub started_at: i64,
    pub event: String,
    pub trace_id: String,
    pub payload: Vec<u8>,
}

/// Which chunks `dispatch traces` shows.
#[derive(Debug, Clone, Default)]
pub struct ChunkFilter {
    pub last: Option<usize>,
    pub event: Option<String>,
    pub failed_only: bool,
}

/// Totals for `dispatch status`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub chunks: i64,
    pub pending: i64,
    pub shipped: i64,
    pub started: i64,
    pub payload_bytes: i64,
    pub file_bytes: u64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    lock: Option<File>,
    /// What happened while opening that the operator should hear about.
    pub notes: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) the store; waits up to `lock_wait` for the dispatch lock
    /// (`None`: do not take it).
    pub fn open(path: &Path, lock_wait: Option<Duration>) -> Result<Store, OpenError> {
        let mut notes = Vec::new();
        match Store::open_once(path, lock_wait) {
            Ok(store) => Ok(store),
            Err(OpenFailure::Corrupt(e)) => {
                quarantine(path).map_err(|q| OpenError::Unusable(q.context(format!("{e:#}"))))?;
                notes.push(format!(
                    "the trace store {} was unreadable ({e:#}); moved it aside to {} and started \
                     a new one",
                    path.display(),
                    corrupt_copy(path, "").display()
                ));
                let mut store =
                    Store::open_once(path, lock_wait).map_err(OpenFailure::into_error)?;
                store.notes = notes;
                Ok(store)
            }
            Err(other) => Err(other.into_error()),
        }
    }

    fn open_once(path: &Path, lock_wait: Option<Duration>) -> Result<Store, OpenFailure> {
        create_private_file(path).map_err(|e| {
            let context = if e.raw_os_error() == Some(libc::ELOOP) {
                format!("{} is a symlink; refusing to follow it", path.display())
            } else {
                format!("opening {}", path.display())
            };
            OpenFailure::Other(anyhow::Error::new(e).context(context))
        })?;
        let lock = match lock_wait {
            Some(wait) => take_lock(&lock_path(path), wait).map_err(OpenFailure::Other)?,
            None => None,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(OpenFailure::classify)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(OpenFailure::classify)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(OpenFailure::classify)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=32;")
            .map_err(OpenFailure::classify)?;
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(OpenFailure::classify)?;
        if version > SCHEMA_VERSION {
            return Err(OpenFailure::Newer(version));
        }
        if version < SCHEMA_VERSION {
            initialize(&conn).map_err(OpenFailure::classify)?;
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            lock,
            notes: Vec::new(),
        })
    }

    /// For corruption SQLite only notices past the header (a write fails "malformed"): closes
    /// this store, moves the file aside and opens a fresh one.
    pub fn quarantine_and_reopen(
        self,
        cause: &rusqlite::Error,
        lock_wait: Option<Duration>,
    ) -> Result<Store, OpenError> {
        let path = self.path.clone();
        drop(self);
        quarantine(&path).map_err(OpenError::Unusable)?;
        let mut store = Store::open(&path, lock_wait)?;
        store.notes.push(format!(
            "the trace store {} was damaged ({cause}); moved it aside to {} and started a new one",
            path.display(),
            corrupt_copy(&path, "").display()
        ));
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// Turns orphaned `started` rows into pending failed chunks (only with the lock), then
    /// records this dispatch as started. Returns the new row id and how many orphans were found.
    pub fn begin_dispatch(
        &mut self,
        started_at: i64,
        event: &str,
        trace_id: &str,
        provisional: &[u8],
    ) -> rusqlite::Result<(i64, usize)> {
        let holds_lock = self.lock.is_some();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let orphans = if holds_lock {
            tx.execute(
                "UPDATE chunk SET state = ?1, priority = ?2 WHERE state = ?3",
                params![STATE_PENDING, Priority::Failed as i64, STATE_STARTED],
            )?
        } else {
            0
        };
        tx.execute(
            "INSERT INTO chunk (state, priority, started_at, event, trace_id, payload, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                STATE_STARTED,
                Priority::Failed as i64,
                started_at,
                event,
                trace_id,
                provisional,
                provisional.len() as i64
            ],
        )?;
        let id = tx.last_insert_rowid();
        add_usage(&tx, provisional.len() as i64)?;
        tx.commit()?;
        Ok((id, orphans))
    }

    /// Stores the finished trace of the dispatch and applies the size cap.
    pub fn finish_dispatch(
        &mut self,
        id: i64,
        payload: &[u8],
        priority: Priority,
        max_bytes: u64,
    ) -> rusqlite::Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let old_size: Option<i64> = tx
            .query_row("SELECT size FROM chunk WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        tx.execute(
            "UPDATE chunk SET state = ?1, priority = ?2, payload = ?3, size = ?4 WHERE id = ?5",
            params![
                STATE_PENDING,
                priority as i64,
                payload,
                payload.len() as i64,
                id
            ],
        )?;
        if let Some(old_size) = old_size {
            add_usage(&tx, payload.len() as i64 - old_size)?;
        }
        let evicted = evict(&tx, max_bytes, Some(id))?;
        tx.commit()?;
        Ok(evicted)
    }

    pub fn setting(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM setting WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
    }

    pub fn set_setting(&self, key: &str, value: Option<&str>) -> rusqlite::Result<()> {
        match value {
            Some(value) => self.conn.execute(
                "INSERT INTO setting (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?,
            None => self
                .conn
                .execute("DELETE FROM setting WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// Chunks matching `filter`, oldest first.
    pub fn chunks(&self, filter: &ChunkFilter) -> rusqlite::Result<Vec<StoredChunk>> {
        let mut sql = String::from(
            "SELECT id, state, priority, started_at, event, trace_id, payload FROM chunk WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(event) = &filter.event {
            sql.push_str(" AND event = ?");
            args.push(event.clone().into());
        }
        if filter.failed_only {
            sql.push_str(" AND priority = 2");
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(last) = filter.last {
            sql.push_str(&format!(" LIMIT {last}"));
        }
        let mut statement = self.conn.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(StoredChunk {
                id: r.get(0)?,
                state: r.get(1)?,
                priority: r.get(2)?,
                started_at: r.get(3)?,
                event: r.get(4)?,
                trace_id: r.get(5)?,
                payload: r.get(6)?,
            })
        })?;
        let mut chunks = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        chunks.reverse();
        Ok(chunks)
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        let mut stats = self.conn.query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(state = 1), 0),
                    COALESCE(SUM(state = 2), 0),
                    COALESCE(SUM(state = 0), 0),
                    (SELECT bytes FROM usage)
             FROM chunk",
            [],
            |r| {
                Ok(Stats {
                    chunks: r.get(0)?,
                    pending: r.get(1)?,
                    shipped: r.get(2)?,
                    started: r.get(3)?,
                    payload_bytes: r.get(4)?,
                    file_bytes: 0,
                })
            },
        )?;
        stats.file_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(with_suffix(&self.path, suffix)).ok())
            .map(|m| m.len())
            .sum();
        Ok(stats)
    }
}

enum OpenFailure {
    Corrupt(anyhow::Error),
    Newer(i32),
    Other(anyhow::Error),
}

impl OpenFailure {
    fn classify(error: rusqlite::Error) -> OpenFailure {
        if is_corruption(&error) {
            OpenFailure::Corrupt(error.into())
        } else {
            OpenFailure::Other(error.into())
        }
    }

    fn into_error(self) -> OpenError {
        match self {
            OpenFailure::Newer(v) => OpenError::NewerSchema(v),
            OpenFailure::Corrupt(e) | OpenFailure::Other(e) => OpenError::Unusable(e),
        }
    }
}

pub fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase)
    )
}

fn initialize(conn: &Connection) -> rusqlite::Result<()> {
    // journal_mode cannot change inside a transaction; WAL is persistent once set.
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        if let Err(e) = conn.execute_batch(SCHEMA) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    }
    conn.execute_batch("COMMIT")
}

/// Removes rows until the payload total is within `max_bytes`; returns how many went.
fn evict(conn: &Connection, max_bytes: u64, keep: Option<i64>) -> rusqlite::Result<u64> {
    let mut evicted = 0;
    loop {
        let bytes: i64 = conn.query_row("SELECT bytes FROM usage", [], |r| r.get(0))?;
        if bytes <= max_bytes as i64 {
            return Ok(evicted);
        }
        let victims: Vec<i64> = {
            let mut statement = conn.prepare_cached(
                "SELECT id FROM chunk WHERE state != 0 AND id != ?1
                 ORDER BY CASE state WHEN 2 THEN 0 ELSE 1 END,
                          CASE state WHEN 2 THEN 0 ELSE priority END,
                          id
                 LIMIT 16",
            )?;
            let rows = statement.query_map([keep.unwrap_or(-1)], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if victims.is_empty() {
            return Ok(evicted);
        }
        for id in victims {
            let size: i64 = conn.query_row(
                "DELETE FROM chunk WHERE id = ?1 RETURNING size",
                [id],
                |r| r.get(0),
            )?;
            add_usage(conn, -size)?;
            evicted += 1;
            let bytes: i64 = conn.query_row("SELECT bytes FROM usage", [], |r| r.get(0))?;
            if bytes <= max_bytes as i64 {
                return Ok(evicted);
            }
        }
    }
}

fn add_usage(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE usage SET bytes = bytes + ?1", [delta])?;
    Ok(())
}

fn create_private_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map(drop)
}

pub fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn corrupt_copy(path: &Path, suffix: &str) -> PathBuf {
    with_suffix(path, &format!(".corrupt{suffix}"))
}

/// Takes the dispatch lock, retrying until `wait` has passed. `Ok(None)`: someone else holds it.
fn take_lock(path: &Path, wait: Duration) -> Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(anyhow::Error::new(error).context(format!("locking {}", path.display())));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Moves an unreadable store aside (one copy kept) so a new one can be created.
fn quarantine(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let from = with_suffix(path, suffix);
        let to = corrupt_copy(path, suffix);
        let _ = std::fs::remove_file(&to);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("moving {} aside", from.display()))
                )
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("dispatch-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn db(&self) -> PathBuf {
            self.0.join("t.db")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn add(store: &mut Store, event: &str, priority: Priority, size: usize, max: u64) -> i64 {
        let (id, _) = store.begin_dispatch(1, event, "t", b"p").unwrap();
        store
            .finish_dispatch(id, &vec![0u8; size], priority, max)
            .unwrap();
        id
    }

    #[test]
    fn new_store_is_private_wal_and_versioned() {
        let scratch = Scratch::new("new");
        let store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
        let mode = std::fs::metadata(scratch.db())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let journal: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let version: i32 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(store.holds_lock());
    }

    #[test]
    fn started_rows_become_interrupted_chunks_for_the_next_lock_holder() {
        let scratch = Scratch::new("orphan");
        {
            let mut store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
            store
                .begin_dispatch(1, "install", "t1", b"provisional")
                .unwrap();
            // Dropped without finishing: like a wrapper killed with SIGKILL.
        }
        let mut store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
        let (_, orphans) = store.begin_dispatch(2, "start", "t2", b"p").unwrap();
        assert_eq!(orphans, 1);
        let chunks = store.chunks(&ChunkFilter::default()).unwrap();
        assert_eq!(chunks[0].event, "install");
        assert_eq!(chunks[0].state, STATE_PENDING);
        assert_eq!(chunks[0].priority, Priority::Failed as i64);
        assert_eq!(chunks[0].payload, b"provisional");
    }

    #[test]
    fn a_live_dispatch_is_not_taken_for_an_orphan_without_the_lock() {
        let scratch = Scratch::new("live");
        let mut live = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
        live.begin_dispatch(1, "install", "t1", b"p").unwrap();
        let mut other = Store::open(&scratch.db(), Some(Duration::from_millis(20))).unwrap();
        assert!(!other.holds_lock());
        let (_, orphans) = other.begin_dispatch(2, "start", "t2", b"p").unwrap();
        assert_eq!(orphans, 0);
    }

    #[test]
    fn eviction_removes_shipped_then_quiet_oldest_first_and_keeps_failed_longest() {
        let scratch = Scratch::new("evict");
        let mut store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
        let max = 10_000;
        let failed = add(&mut store, "failed", Priority::Failed, 3000, max);
        let quiet_old = add(&mut store, "quiet-old", Priority::Quiet, 3000, max);
        let changed = add(&mut store, "changed", Priority::Changed, 3000, max);
        store
            .conn
            .execute("UPDATE chunk SET state = 2 WHERE id = ?1", [changed])
            .unwrap();
        // 9000 bytes stored; the next 3000 push it over: the shipped one goes first.
        add(&mut store, "quiet-new", Priority::Quiet, 3000, max);
        let events: Vec<String> = store
            .chunks(&ChunkFilter::default())
            .unwrap()
            .into_iter()
            .map(|c| c.event)
            .collect();
        assert_eq!(events, ["failed", "quiet-old", "quiet-new"]);
        // Next: the oldest quiet one.
        add(&mut store, "quiet-newer", Priority::Quiet, 3000, max);
        let ids: Vec<i64> = store
            .chunks(&ChunkFilter::default())
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert!(ids.contains(&failed));
        assert!(!ids.contains(&quiet_old));
        assert!(store.stats().unwrap().payload_bytes <= max as i64);
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_and_recreated() {
        let scratch = Scratch::new("corrupt");
        std::fs::write(scratch.db(), vec![0x42u8; 8192]).unwrap();
        let store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
        assert_eq!(store.notes.len(), 1, "{:?}", store.notes);
        assert!(corrupt_copy(&scratch.db(), "").exists());
        assert_eq!(store.stats().unwrap().chunks, 0);
    }

    #[test]
    fn a_newer_schema_is_left_alone() {
        let scratch = Scratch::new("newer");
        {
            let store = Store::open(&scratch.db(), Some(Duration::ZERO)).unwrap();
            store
                .conn
                .execute_batch("PRAGMA user_version = 99")
                .unwrap();
        }
        match Store::open(&scratch.db(), Some(Duration::ZERO)) {
            Err(OpenError::NewerSchema(99)) => {}
            other => panic!("expected NewerSchema, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_symlinked_store_path_is_refused() {
        let scratch = Scratch::new("symlink");
        let target = scratch.0.join("elsewhere.db");
        std::os::unix::fs::symlink(&target, scratch.db()).unwrap();
        assert!(Store::open(&scratch.db(), Some(Duration::ZERO)).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn settings_round_trip_and_clear() {
        let scratch = Scratch::new("settings");
        let store = Store::open(&scratch.db(), None).unwrap();
        assert_eq!(store.setting("disabled").unwrap(), None);
        store.set_setting("disabled", Some("1")).unwrap();
        assert_eq!(store.setting("disabled").unwrap().as_deref(), Some("1"));
        store.set_setting("disabled", None).unwrap();
        assert_eq!(store.setting("disabled").unwrap(), None);
    }
}
