//! The local trace buffer: one SQLite file, `<charm dir>/.dispatch-trace.db` by default.
//!
//! # Format (schema version 2, `PRAGMA user_version`)
//! - `chunk`: one row per dispatch. `payload` is the dispatch's whole trace as one protobuf
//!   OTLP `ExportTraceServiceRequest`; `state` is 1 pending (not shipped yet) or 2 shipped;
//!   `priority` is 0 quiet, 1 changed something (a state-changing hook tool was called),
//!   2 failed (charm failed or dispatch interrupted); `started_at` is unix nanos.
//! - `setting`: small persisted answers (destination, backoff, ...), key -> text.
//! - Indexes: `chunk_by_state` (shipping and eviction order), `chunk_by_start` (v2: a started
//!   record is imported only if no chunk with its start time and trace id exists yet).
//!
//! # Invariants
//! - A dispatch adds its chunk in one transaction after the child ended. That it started is
//!   recorded before the child runs, outside SQLite, by `inflight`; whoever holds the dispatch
//!   lock imports the in-flight records of killed wrappers as failed ("interrupted") chunks.
//!   No transaction is open while the child runs.
//! - Rows become `shipped` only after the backend answered 2xx.
//! - The size cap applies to the pages in use ((page_count - freelist_count) * page_size):
//!   what the file needs, so the file stops growing at the cap. Over it, eviction removes
//!   shipped rows first (oldest first), then pending rows by lowest priority, oldest first;
//!   the chunk being added is never evicted by its own insertion.
//! - The file is created 0600 and never followed through a symlink; one another user owns is
//!   refused, and ours is made 0600 again (with its -wal/-shm) if it was opened up.
//!
//! # Performance
//! WAL with `synchronous=NORMAL` (no fsync per commit), no checkpoint on close, and a small
//! schema (SQLite parses all of it on every open). The first connection of a process rebuilds
//! the WAL index by reading the whole WAL, and a rebuilt index counts nothing as checkpointed,
//! so SQLite's own auto-checkpoint (PASSIVE) never lets a short-lived process restart the
//! WAL: it would grow and be re-read, and checkpointed, by every dispatch. Instead
//! `maintain` truncates it with a TRUNCATE checkpoint once it holds more than
//! `WAL_CHECKPOINT_FRAMES` frames; the wrapper calls it while the child runs, off the hook's
//! critical path. A dispatch opens the store while the child runs and spends one short
//! transaction after it.
//!
//! # Failure handling
//! A file SQLite reports as corrupt or not a database, on open or on a write, is moved aside
//! (to `<db>.corrupt`, with its -wal/-shm; one copy kept) and recreated. A schema newer than
//! this binary (a downgrade) is left alone: the caller goes on without a store. Lock waits are
//! short and bounded. Migration: `MIGRATIONS` upgrades older versions in place inside one
//! transaction and bumps `user_version` (1 -> 2 adds `chunk_by_start`).

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

pub const SCHEMA_VERSION: i32 = 2;

/// WAL size (in frames of one page) past which `maintain` checkpoints and truncates it.
const WAL_CHECKPOINT_FRAMES: u64 = 16;

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
";

/// Schema changes, applied in order to stores of older versions (index i: version i+1 -> i+2).
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: find a dispatch by its start, so importing a started record is idempotent.
    "CREATE INDEX chunk_by_start ON chunk(started_at);",
];

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

/// A chunk waiting to be shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub size: usize,
}

/// Which chunks `dispatch traces` shows.
#[derive(Debug, Clone, Default)]
pub struct ChunkFilter {
    pub last: Option<usize>,
    pub event: Option<String>,
    pub failed_only: bool,
}

/// A chunk to add.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub started_at: i64,
    pub event: String,
    pub trace_id: String,
    pub payload: Vec<u8>,
    pub priority: Priority,
}

/// Totals for `dispatch status`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub chunks: i64,
    pub pending: i64,
    pub shipped: i64,
    /// Bytes of pages in use: what the size cap limits.
    pub used_bytes: i64,
    pub file_bytes: u64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Device and inode of the file opened, to notice the path being pointed elsewhere.
    file: Option<(u64, u64)>,
    /// What happened while opening that the operator should hear about.
    pub notes: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) the store.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        let mut notes = Vec::new();
        match Store::open_once(path) {
            Ok(store) => Ok(store),
            Err(OpenFailure::Corrupt(e)) => {
                quarantine(path).map_err(|q| OpenError::Unusable(q.context(format!("{e:#}"))))?;
                notes.push(format!(
                    "the trace store {} was unreadable ({e:#}); moved it aside to {} and started \
                     a new one",
                    path.display(),
                    corrupt_copy(path, "").display()
                ));
                let mut store = Store::open_once(path).map_err(OpenFailure::into_error)?;
                store.notes = notes;
                Ok(store)
            }
            Err(other) => Err(other.into_error()),
        }
    }

    fn open_once(path: &Path) -> Result<Store, OpenFailure> {
        let (file, was_open) = open_private(path).map_err(|e| {
            let context = if e.raw_os_error() == Some(libc::ELOOP) {
                format!("{} is a symlink; refusing to follow it", path.display())
            } else {
                format!("opening {}", path.display())
            };
            OpenFailure::Other(anyhow::Error::new(e).context(context))
        })?;
        let file = file.metadata().map_err(|e| OpenFailure::Other(e.into()))?;
        if was_open {
            // SQLite gives a new -wal/-shm the store's mode, so existing ones were as open.
            for suffix in ["-wal", "-shm"] {
                if let Ok(side) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(with_suffix(path, suffix))
                {
                    let _ = side.set_permissions(std::fs::Permissions::from_mode(0o600));
                }
            }
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(OpenFailure::classify)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(OpenFailure::classify)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(OpenFailure::classify)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;")
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
            file: Some((file.dev(), file.ino())),
            notes: Vec::new(),
        })
    }

    /// Whether the path no longer names the file this store has open: deleted or replaced
    /// (an operator resetting the store, a backup put back) since it was opened. Writes would
    /// then go into a file nobody will read again.
    pub fn moved_away(&self) -> bool {
        match (self.file, std::fs::symlink_metadata(&self.path)) {
            (Some(opened), Ok(now)) => opened != (now.dev(), now.ino()),
            (Some(_), Err(_)) => true,
            (None, _) => false,
        }
    }

    /// Opens an existing store for reading only: no creation, no schema change, no moving a
    /// damaged file aside (for a peek that must not race the dispatch's own open).
    pub fn open_read_only(path: &Path) -> Option<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.busy_timeout(BUSY_TIMEOUT).ok()?;
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ok()?;
        (version == SCHEMA_VERSION).then(|| Store {
            conn,
            path: path.to_path_buf(),
            file: None,
            notes: Vec::new(),
        })
    }

    /// For corruption SQLite only notices past the header (a write fails "malformed"): closes
    /// this store, moves the file aside and opens a fresh one.
    pub fn quarantine_and_reopen(self, cause: &rusqlite::Error) -> Result<Store, OpenError> {
        let path = self.path.clone();
        drop(self);
        quarantine(&path).map_err(OpenError::Unusable)?;
        let mut store = Store::open(&path)?;
        store.notes.push(format!(
            "the trace store {} was damaged ({cause}); moved it aside to {} and started a new one",
            path.display(),
            corrupt_copy(&path, "").display()
        ));
        Ok(store)
    }

    /// Keeps the WAL short (see the module docs): checkpoints and truncates it when it holds
    /// more than a few dozen frames. Returns whether it did.
    pub fn maintain(&self) -> rusqlite::Result<bool> {
        let wal = std::fs::metadata(with_suffix(&self.path, "-wal")).map_or(0, |m| m.len());
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        if wal <= WAL_CHECKPOINT_FRAMES * (page_size.max(512) as u64 + 24) + 32 {
            return Ok(false);
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the pages in use might exceed `max_bytes` once `adding` more bytes are stored:
    /// the database file plus its WAL, plus twice what is added (index and page slack), is an
    /// upper bound that costs two `stat`s instead of a query.
    fn may_exceed(&self, max_bytes: u64, adding: u64) -> bool {
        let size = |suffix: &str| {
            std::fs::metadata(with_suffix(&self.path, suffix)).map_or(0, |m| m.len())
        };
        size("") + size("-wal") + 2 * adding + 16 * 1024 > max_bytes
    }

    /// Adds finished chunks (a dispatch's trace, or interrupted ones found by `inflight`) in
    /// one transaction and applies the size cap; returns how many chunks were evicted.
    pub fn add_chunks(&mut self, chunks: &[NewChunk], max_bytes: u64) -> rusqlite::Result<u64> {
        self.add_chunks_returning_last(chunks, max_bytes)
            .map(|(evicted, _)| evicted)
    }

    /// Imports started records of killed wrappers: each only if its dispatch is not stored
    /// already (a wrapper killed between storing its trace and removing its record).
    pub fn import_started(&mut self, chunks: &[NewChunk], max_bytes: u64) -> rusqlite::Result<u64> {
        let fresh: Vec<NewChunk> = chunks
            .iter()
            .filter(|c| {
                !self
                    .has_dispatch(c.started_at, &c.trace_id)
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        self.add_chunks(&fresh, max_bytes)
    }

    fn has_dispatch(&self, started_at: i64, trace_id: &str) -> rusqlite::Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM chunk WHERE started_at = ?1 AND trace_id = ?2",
                params![started_at, trace_id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
    }

    /// As `add_chunks`, also returning the id of the last chunk added.
    pub fn add_chunks_returning_last(
        &mut self,
        chunks: &[NewChunk],
        max_bytes: u64,
    ) -> rusqlite::Result<(u64, Option<i64>)> {
        let adding: usize = chunks.iter().map(|c| c.payload.len()).sum();
        let may_exceed = self.may_exceed(max_bytes, adding as u64);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut last = None;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chunk (state, priority, started_at, event, trace_id, payload, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for chunk in chunks {
                insert.execute(params![
                    STATE_PENDING,
                    chunk.priority as i64,
                    chunk.started_at,
                    chunk.event,
                    chunk.trace_id,
                    chunk.payload,
                    chunk.payload.len() as i64
                ])?;
                last = Some(tx.last_insert_rowid());
            }
        }
        let evicted = if may_exceed {
            evict(&tx, max_bytes, last)?
        } else {
            0
        };
        tx.commit()?;
        Ok((evicted, last))
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

    /// Chunks not shipped yet in shipping order: `first` (this dispatch's) first, then the
    /// best priority, oldest first. Ids and sizes only: an export reads the payloads of what
    /// it is about to send (`payload`), not of the whole backlog.
    pub fn pending_queue(&self, first: Option<i64>) -> rusqlite::Result<Vec<Queued>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, size FROM chunk WHERE state = 1 ORDER BY id = ?1 DESC, priority DESC, id",
        )?;
        let rows = statement.query_map([first.unwrap_or(-1)], |row| {
            Ok(Queued {
                id: row.get(0)?,
                size: row.get::<_, i64>(1)? as usize,
            })
        })?;
        rows.collect()
    }

    /// One chunk's trace.
    pub fn payload(&self, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT payload FROM chunk WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
    }

    /// One stored chunk by id.
    pub fn chunk(&self, id: i64) -> rusqlite::Result<Option<StoredChunk>> {
        self.conn
            .query_row(
                "SELECT id, state, priority, started_at, event, trace_id, payload FROM chunk
                 WHERE id = ?1",
                [id],
                stored_chunk,
            )
            .optional()
    }

    /// Replaces a stored chunk's trace (to note what happened to it after it was stored).
    pub fn replace_payload(&mut self, id: i64, payload: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE chunk SET payload = ?2, size = ?3 WHERE id = ?1",
            params![id, payload, payload.len() as i64],
        )?;
        Ok(())
    }

    /// Marks chunks shipped (after the backend's 2xx).
    pub fn mark_shipped(&mut self, ids: &[i64]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut update =
                tx.prepare_cached("UPDATE chunk SET state = 2, shipped_at = ?2 WHERE id = ?1")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            for id in ids {
                update.execute([*id, now])?;
            }
        }
        tx.commit()
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
        let rows = statement.query_map(rusqlite::params_from_iter(args), stored_chunk)?;
        let mut chunks = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        chunks.reverse();
        Ok(chunks)
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        let mut stats = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(state = 1), 0), COALESCE(SUM(state = 2), 0) FROM chunk",
            [],
            |r| {
                Ok(Stats {
                    chunks: r.get(0)?,
                    pending: r.get(1)?,
                    shipped: r.get(2)?,
                    used_bytes: 0,
                    file_bytes: 0,
                })
            },
        )?;
        stats.used_bytes = used_bytes(&self.conn)?;
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
    let mut steps = Vec::new();
    if version == 0 {
        steps.push(SCHEMA);
        steps.extend(MIGRATIONS);
    } else if version < SCHEMA_VERSION {
        steps.extend(&MIGRATIONS[(version - 1) as usize..]);
    }
    for step in steps {
        if let Err(e) = conn.execute_batch(step) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    conn.execute_batch("COMMIT")
}

/// A `chunk` row selected as `id, state, priority, started_at, event, trace_id, payload`.
fn stored_chunk(r: &rusqlite::Row) -> rusqlite::Result<StoredChunk> {
    Ok(StoredChunk {
        id: r.get(0)?,
        state: r.get(1)?,
        priority: r.get(2)?,
        started_at: r.get(3)?,
        event: r.get(4)?,
        trace_id: r.get(5)?,
        payload: r.get(6)?,
    })
}

/// Bytes of database pages in use (not on the free list).
fn used_bytes(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT (SELECT page_count FROM pragma_page_count())
              - (SELECT freelist_count FROM pragma_freelist_count()),
                (SELECT page_size FROM pragma_page_size())",
        [],
        |r| Ok(r.get::<_, i64>(0)? * r.get::<_, i64>(1)?),
    )
}

/// Removes rows until the pages in use fit in `max_bytes`; returns how many went.
fn evict(conn: &Connection, max_bytes: u64, keep: Option<i64>) -> rusqlite::Result<u64> {
    let mut evicted = 0;
    while used_bytes(conn)? > max_bytes as i64 {
        let victim: Option<i64> = conn
            .query_row(
                "SELECT id FROM chunk WHERE id != ?1
                 ORDER BY CASE state WHEN 2 THEN 0 ELSE 1 END,
                          CASE state WHEN 2 THEN 0 ELSE priority END,
                          id
                 LIMIT 1",
                [keep.unwrap_or(-1)],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = victim else {
            return Ok(evicted);
        };
        conn.execute("DELETE FROM chunk WHERE id = ?1", [id])?;
        evicted += 1;
    }
    Ok(evicted)
}

/// Opens (creating if needed, mode 0600) a file of ours; never through a symlink, never
/// inherited by the child.
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    open_private(path).map(|(file, _)| file)
}

/// `create_private_file`, and whether the file had been open to others. One another user owns
/// is refused: where our files are in a directory others can write (a store path set so), it
/// was put there for us to fill or to read from. Ours is made 0600 again if someone opened it
/// up (a restore from a backup, a careless chmod).
fn open_private(path: &Path) -> io::Result<(std::fs::File, bool)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no failure modes.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "owned by uid {}, not by us (uid {me})",
            meta.uid()
        )));
    }
    let open = meta.mode() & 0o077 != 0;
    if open {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((file, open))
}

/// `dispatch disable` leaves this file beside the store: checking it costs one `stat`, so a
/// disabled dispatch never opens the store at all.
pub fn disabled_flag(path: &Path) -> PathBuf {
    with_suffix(path, ".disabled")
}

/// `path` with `suffix` appended to its file name (`x.db` -> `x.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn corrupt_copy(path: &Path, suffix: &str) -> PathBuf {
    with_suffix(path, &format!(".corrupt{suffix}"))
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
    use crate::test_support::Scratch;
    use std::os::unix::fs::PermissionsExt;

    fn chunk(event: &str, priority: Priority, size: usize) -> NewChunk {
        NewChunk {
            started_at: 1,
            event: event.into(),
            trace_id: "t".into(),
            payload: vec![0x5a; size],
            priority,
        }
    }

    fn events(store: &Store) -> Vec<String> {
        store
            .chunks(&ChunkFilter::default())
            .unwrap()
            .into_iter()
            .map(|c| c.event)
            .collect()
    }

    #[test]
    fn new_store_is_private_wal_and_versioned() {
        let scratch = Scratch::new("new");
        let store = Store::open(&scratch.path("t.db")).unwrap();
        let mode = std::fs::metadata(scratch.path("t.db"))
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
    }

    #[test]
    fn chunks_are_listed_oldest_first_and_filtered() {
        let scratch = Scratch::new("list");
        let mut store = Store::open(&scratch.path("t.db")).unwrap();
        store
            .add_chunks(
                &[
                    chunk("install", Priority::Quiet, 10),
                    chunk("start", Priority::Failed, 10),
                    chunk("install", Priority::Changed, 10),
                ],
                DEFAULT_CAP,
            )
            .unwrap();
        assert_eq!(events(&store), ["install", "start", "install"]);
        let failed = ChunkFilter {
            failed_only: true,
            ..ChunkFilter::default()
        };
        assert_eq!(store.chunks(&failed).unwrap().len(), 1);
        let last = ChunkFilter {
            last: Some(1),
            event: Some("install".into()),
            ..ChunkFilter::default()
        };
        let found = store.chunks(&last).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].priority, Priority::Changed as i64);
    }

    const DEFAULT_CAP: u64 = 40 * 1024 * 1024;

    #[test]
    fn eviction_removes_shipped_then_quiet_oldest_first_and_keeps_failed_longest() {
        let scratch = Scratch::new("evict");
        let mut store = Store::open(&scratch.path("t.db")).unwrap();
        let big = 40_000;
        for (event, priority) in [
            ("failed", Priority::Failed),
            ("quiet-old", Priority::Quiet),
            ("changed", Priority::Changed),
        ] {
            store
                .add_chunks(&[chunk(event, priority, big)], DEFAULT_CAP)
                .unwrap();
        }
        store
            .conn
            .execute("UPDATE chunk SET state = 2 WHERE event = 'changed'", [])
            .unwrap();
        // Room for about three big chunks: the fourth pushes out the shipped one first.
        let cap = used_bytes(&store.conn).unwrap() as u64 + 8192;
        store
            .add_chunks(&[chunk("quiet-new", Priority::Quiet, big)], cap)
            .unwrap();
        assert_eq!(events(&store), ["failed", "quiet-old", "quiet-new"]);
        // Next: the oldest quiet one, never the failed one.
        store
            .add_chunks(&[chunk("quiet-newer", Priority::Quiet, big)], cap)
            .unwrap();
        assert_eq!(events(&store), ["failed", "quiet-new", "quiet-newer"]);
        assert!(store.stats().unwrap().used_bytes <= cap as i64);
    }

    #[test]
    fn the_chunk_being_added_is_kept_even_when_alone_over_the_cap() {
        let scratch = Scratch::new("alone");
        let mut store = Store::open(&scratch.path("t.db")).unwrap();
        store
            .add_chunks(&[chunk("old", Priority::Failed, 1000)], DEFAULT_CAP)
            .unwrap();
        store
            .add_chunks(&[chunk("huge", Priority::Quiet, 200_000)], 65_536)
            .unwrap();
        assert_eq!(events(&store), ["huge"]);
    }

    #[test]
    fn a_started_record_is_imported_once_even_if_its_trace_was_stored() {
        let scratch = Scratch::new("import");
        let mut store = Store::open(&scratch.path("t.db")).unwrap();
        let stored = chunk("install", Priority::Quiet, 10);
        store
            .add_chunks(std::slice::from_ref(&stored), DEFAULT_CAP)
            .unwrap();
        // The wrapper died after storing but before removing its started record.
        let leftover = NewChunk {
            priority: Priority::Failed,
            ..stored
        };
        store
            .import_started(std::slice::from_ref(&leftover), DEFAULT_CAP)
            .unwrap();
        assert_eq!(events(&store), ["install"]);
        let other = NewChunk {
            started_at: 99,
            ..leftover
        };
        store.import_started(&[other], DEFAULT_CAP).unwrap();
        assert_eq!(events(&store).len(), 2);
    }

    #[test]
    fn a_version_1_store_is_migrated() {
        let scratch = Scratch::new("migrate");
        {
            let conn = Connection::open(scratch.path("t.db")).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA user_version = 1")
                .unwrap();
        }
        let store = Store::open(&scratch.path("t.db")).unwrap();
        let version: i32 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
        let index: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'chunk_by_start'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_and_recreated() {
        let scratch = Scratch::new("corrupt");
        std::fs::write(scratch.path("t.db"), vec![0x42u8; 8192]).unwrap();
        let store = Store::open(&scratch.path("t.db")).unwrap();
        assert_eq!(store.notes.len(), 1, "{:?}", store.notes);
        assert!(corrupt_copy(&scratch.path("t.db"), "").exists());
        assert_eq!(store.stats().unwrap().chunks, 0);
    }

    #[test]
    fn a_newer_schema_is_left_alone() {
        let scratch = Scratch::new("newer");
        {
            let store = Store::open(&scratch.path("t.db")).unwrap();
            store
                .conn
                .execute_batch("PRAGMA user_version = 99")
                .unwrap();
        }
        match Store::open(&scratch.path("t.db")) {
            Err(OpenError::NewerSchema(99)) => {}
            other => panic!("expected NewerSchema, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_symlinked_store_path_is_refused() {
        let scratch = Scratch::new("symlink");
        let target = scratch.0.join("elsewhere.db");
        std::os::unix::fs::symlink(&target, scratch.path("t.db")).unwrap();
        let error = Store::open(&scratch.path("t.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("symlink"), "{error}");
        assert!(!target.exists());
    }

    #[test]
    fn a_store_knows_when_its_path_was_deleted_or_replaced() {
        let scratch = Scratch::new("moved");
        let path = scratch.path("t.db");
        let store = Store::open(&path).unwrap();
        assert!(!store.moved_away());
        std::fs::remove_file(&path).unwrap();
        assert!(store.moved_away(), "deleted");
        std::fs::write(&path, b"").unwrap();
        assert!(store.moved_away(), "another file at the path");
        let reopened = Store::open(&path).unwrap();
        assert!(!reopened.moved_away());
    }

    #[test]
    fn settings_round_trip_and_clear() {
        let scratch = Scratch::new("settings");
        let store = Store::open(&scratch.path("t.db")).unwrap();
        assert_eq!(store.setting("destination").unwrap(), None);
        store.set_setting("destination", Some("x")).unwrap();
        assert_eq!(store.setting("destination").unwrap().as_deref(), Some("x"));
        store.set_setting("destination", None).unwrap();
        assert_eq!(store.setting("destination").unwrap(), None);
    }
}
