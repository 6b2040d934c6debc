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
//! - The file is created 0600, marked ours (`PRAGMA application_id`, and the birth record in
//!   `<db>.lock`), and never followed through a symlink; one another user owns is refused, and
//!   ours is made 0600 again (with its -wal/-shm) if it was opened up.
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
//! How a store is opened, what is refused and when a damaged one is moved aside: `open.rs`.

pub mod file;
pub mod inflight;
mod open;
pub mod persist;
pub mod settings;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

pub use crate::store::file::{create_private_file, with_suffix};
pub use open::{is_corruption, OpenError};

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
    /// Trace ids starting with this (lowercase hex).
    pub trace_id_prefix: Option<String>,
    /// Started at or after / at or before, unix nanoseconds.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only chunks stored after this one (`traces --follow`).
    pub after_id: Option<i64>,
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
    /// Bytes of the stored traces themselves.
    pub trace_bytes: i64,
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

    /// Sets (or removes) a setting so that no copy of its old value stays in any file of the
    /// store: SQLite keeps deleted bytes in free space and old pages in the WAL unless told
    /// otherwise. For the destination, whose URL may carry a credential (README, *Shipping*).
    /// Needs the dispatch lock (no reader may hold the WAL), and fails if it cannot truncate.
    pub fn set_setting_erasing_old(&self, key: &str, value: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute_batch("PRAGMA secure_delete = ON")?;
        let set = self.set_setting(key, value);
        let _ = self.conn.execute_batch("PRAGMA secure_delete = FAST");
        set?;
        // The new page goes into the file and the WAL, old frames and all, is emptied.
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the store is in use; the old value may remain until the next try".into()),
            ));
        }
        Ok(())
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
    /// The chunks the filter selects, oldest first.
    pub fn chunks(&self, filter: &ChunkFilter) -> rusqlite::Result<Vec<StoredChunk>> {
        let mut chunks = Vec::new();
        self.each_chunk(filter, &mut |chunk| {
            chunks.push(chunk);
            true
        })?;
        Ok(chunks)
    }

    /// Hands the chunks the filter selects to `each`, oldest first, one at a time (a store of
    /// 40 MiB is never held in memory), until it returns false. Returns how many it was given.
    pub fn each_chunk(
        &self,
        filter: &ChunkFilter,
        each: &mut dyn FnMut(StoredChunk) -> bool,
    ) -> rusqlite::Result<usize> {
        let mut conditions = String::from("1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(event) = &filter.event {
            conditions.push_str(" AND event GLOB ?");
            args.push(event.clone().into());
        }
        if filter.failed_only {
            conditions.push_str(" AND priority = 2");
        }
        if let Some(prefix) = &filter.trace_id_prefix {
            conditions.push_str(" AND substr(trace_id, 1, ?) = ?");
            args.push((prefix.len() as i64).into());
            args.push(prefix.clone().into());
        }
        if let Some(since) = filter.since {
            conditions.push_str(" AND started_at >= ?");
            args.push(since.into());
        }
        if let Some(until) = filter.until {
            conditions.push_str(" AND started_at <= ?");
            args.push(until.into());
        }
        if let Some(after) = filter.after_id {
            conditions.push_str(" AND id > ?");
            args.push(after.into());
        }
        const COLUMNS: &str = "id, state, priority, started_at, event, trace_id, payload";
        // The newest N, then oldest first; without a limit, straight in id order.
        let sql = match filter.last {
            Some(last) => format!(
                "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM chunk WHERE {conditions} \
                 ORDER BY id DESC LIMIT {last}) ORDER BY id"
            ),
            None => format!("SELECT {COLUMNS} FROM chunk WHERE {conditions} ORDER BY id"),
        };
        let mut statement = self.conn.prepare(&sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(args))?;
        let mut given = 0;
        while let Some(row) = rows.next()? {
            given += 1;
            if !each(stored_chunk(row)?) {
                break;
            }
        }
        Ok(given)
    }

    /// Whether `event` matches an `--event` glob as `each_chunk` matches it (SQLite's GLOB).
    pub fn event_matches(&self, event: &str, glob: &str) -> bool {
        self.conn
            .query_row("SELECT ?1 GLOB ?2", [event, glob], |r| r.get(0))
            .unwrap_or(false)
    }

    /// The id of the newest chunk (0 in an empty store): what `traces --follow` has seen.
    pub fn newest_id(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM chunk", [], |r| r.get(0))
    }

    /// A number that changes when another connection commits to the store (SQLite's
    /// `PRAGMA data_version`): how `traces --follow` knows, without reading a row, that
    /// nothing happened.
    pub fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        let mut stats = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(state = 1), 0), COALESCE(SUM(state = 2), 0),
                    COALESCE(SUM(size), 0)
             FROM chunk",
            [],
            |r| {
                Ok(Stats {
                    chunks: r.get(0)?,
                    pending: r.get(1)?,
                    shipped: r.get(2)?,
                    trace_bytes: r.get(3)?,
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

/// `dispatch disable` leaves this file beside the store: checking it costs one `stat`, so a
/// disabled dispatch never opens the store at all.
pub fn disabled_flag(path: &Path) -> PathBuf {
    with_suffix(path, ".disabled")
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
        let id: i32 = store
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, file::APPLICATION_ID, "adopted as ours");
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
    fn a_damaged_store_of_ours_is_reported_to_readers_and_moved_aside_by_writers() {
        let scratch = Scratch::new("corrupt");
        let path = scratch.path("t.db");
        drop(Store::open(&path).unwrap());
        // Overwritten in place (same inode): the birth record still vouches for it.
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        match Store::open_to_read(&path) {
            Err(OpenError::Damaged { .. }) => {}
            other => panic!("expected Damaged, got {:?}", other.map(|s| s.is_some())),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![0x42u8; 8192],
            "left as it was"
        );
        assert!(file::moved_aside(&path).is_empty());

        let store = Store::open(&path).unwrap();
        assert_eq!(store.notes.len(), 1, "{:?}", store.notes);
        let aside = file::moved_aside(&path);
        assert_eq!(aside.len(), 1);
        assert!(store.notes[0].contains(&*aside[0].path.to_string_lossy()));
        assert_eq!(std::fs::read(&aside[0].path).unwrap(), vec![0x42u8; 8192]);
        assert_eq!(store.stats().unwrap().chunks, 0);
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused_and_left_exactly_as_it_was() {
        let scratch = Scratch::new("foreign");
        let path = scratch.path("precious.txt");
        std::fs::write(&path, b"years of notes\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        for opened in [Store::open(&path).err(), Store::open_to_read(&path).err()] {
            match opened {
                Some(OpenError::Foreign { what, .. }) => {
                    assert_eq!(what, "not an SQLite database")
                }
                other => panic!("expected Foreign, got {other:?}"),
            }
        }
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"years of notes\n");
        assert_eq!(after.mode(), before.mode(), "mode unchanged");
        assert_eq!(after.ino(), before.ino());
        assert!(file::moved_aside(&path).is_empty());
        assert!(!with_suffix(&path, "-wal").exists());
        // A directory is not a store either.
        assert!(matches!(
            Store::open_to_read(&scratch.0),
            Err(OpenError::Foreign { .. })
        ));
    }

    #[test]
    fn reading_never_creates_or_migrates_a_store() {
        let scratch = Scratch::new("read");
        let path = scratch.path("t.db");
        assert!(Store::open_to_read(&path).unwrap().is_none());
        assert!(!path.exists());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA user_version = 1")
                .unwrap();
        }
        let read = Store::open_to_read(&path).unwrap().unwrap();
        assert_eq!(read.stats().unwrap().chunks, 0);
        drop(read);
        let version: i32 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "not migrated by a reader");
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
            Err(OpenError::NewerSchema { version: 99, .. }) => {}
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
