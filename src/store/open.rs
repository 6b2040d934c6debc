//! Opening the store: to write (created, migrated, a damaged one moved aside) or to read
//! (nothing created or changed), and what a failure to open means (`OpenError`).
//!
//! Whose file is at the path is decided first (`file.rs`: our application id in the
//! header, or our birth record beside it); a file that is not ours is never touched. A store
//! of ours that SQLite reports as corrupt or not a database, on open or on a write, is moved
//! aside by an open to write (`<db>.corrupt-<UTC time>`, with its -wal/-shm; the newest two
//! kept) and recreated; an open to read (`dispatch status`, `traces`) reports it and leaves it.
//! A schema newer than this binary (a downgrade) is left alone: the caller goes on without a
//! store. Lock waits are short and bounded. Migration: `MIGRATIONS` upgrades older versions in
//! place inside one transaction and bumps `user_version` (1 -> 2 adds `chunk_by_start`); a
//! store from before application ids gets ours then.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::file::{self, Found};
use super::{with_suffix, Store, BUSY_TIMEOUT, MIGRATIONS, SCHEMA, SCHEMA_VERSION};

/// Why the store cannot be used.
#[derive(Debug)]
pub enum OpenError {
    /// Written by a newer version of dispatch; left untouched.
    NewerSchema {
        path: PathBuf,
        version: i32,
    },
    /// The path names a file that is not a store of ours; left untouched.
    Foreign {
        path: PathBuf,
        what: String,
    },
    /// A store of ours that no longer reads (only a reading open reports this: an open to
    /// write moves it aside instead).
    Damaged {
        path: PathBuf,
        cause: String,
    },
    Unusable(anyhow::Error),
}

impl std::error::Error for OpenError {}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NewerSchema { path, version } => write!(
                f,
                "the trace store {} has schema version {version}, newer than this dispatch \
                 understands ({SCHEMA_VERSION}); it is left as is and this dispatch is not stored",
                path.display()
            ),
            OpenError::Foreign { path, what } => write!(
                f,
                "store_path {} names a file that is not a trace store ({what}); it is left \
                 untouched: point store_path in {} elsewhere",
                path.display(),
                crate::config::CONFIG_FILE
            ),
            OpenError::Damaged { path, cause } => write!(
                f,
                "the trace store {} is damaged ({cause}); the next hook moves it aside and \
                 starts a new one",
                path.display()
            ),
            OpenError::Unusable(e) => write!(f, "the trace store cannot be used: {e:#}"),
        }
    }
}

impl Store {
    /// Opens the store to write, creating it if needed (hooks and the tool-mode commands that
    /// write). A damaged store of ours is moved aside and a new one started (a note says so);
    /// a file that is not ours is refused, untouched.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        match Store::open_to_write(path) {
            Ok(store) => Ok(store),
            Err(OpenFailure::Damaged(cause)) => Store::replace_damaged(path, &cause),
            Err(other) => Err(other.into_error(path)),
        }
    }

    /// Moves the damaged store at `path` aside and starts a new one.
    fn replace_damaged(path: &Path, cause: &str) -> Result<Store, OpenError> {
        let aside = file::move_aside(path).map_err(|e| {
            OpenError::Unusable(anyhow::Error::new(e).context(format!(
                "the trace store {} is damaged ({cause})",
                path.display()
            )))
        })?;
        let mut store = Store::open_to_write(path).map_err(|e| e.into_error(path))?;
        store.notes.push(format!(
            "the trace store {} was damaged ({cause}); moved it aside to {} and started a new one",
            path.display(),
            aside.display()
        ));
        Ok(store)
    }

    fn open_to_write(path: &Path) -> Result<Store, OpenFailure> {
        let other = |e: io::Error| {
            OpenFailure::Other(anyhow::anyhow!(
                "{}",
                if e.to_string().contains(&*path.to_string_lossy()) {
                    e.to_string()
                } else {
                    format!("{}: {e}", path.display())
                }
            ))
        };
        let file = file::open_or_create(path).map_err(other)?;
        let meta = file.metadata().map_err(other)?;
        file::check_owner(&meta, path).map_err(other)?;
        let found = file::judge(&file, &meta, path);
        if let Found::Foreign(what) = &found {
            return Err(OpenFailure::Foreign(what.clone()));
        }
        let conn = match &found {
            Found::Unmarked => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(OpenFailure::classify)?;
                if !ours_to_use(&conn) {
                    return Err(OpenFailure::Foreign(
                        "an SQLite database without trace tables".into(),
                    ));
                }
                Some(conn)
            }
            _ => None,
        };
        // Ours from here on: private again if someone opened it up (a restore from a backup,
        // a careless chmod), damaged or not. SQLite gives a new -wal/-shm the store's mode,
        // so existing ones were as open.
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(other)?;
            for suffix in file::SIDE_FILES {
                if let Ok(side) = file::open_to_read(&with_suffix(path, suffix)) {
                    let _ = side.set_permissions(std::fs::Permissions::from_mode(0o600));
                }
            }
        }
        if let Found::Damaged(cause) = &found {
            return Err(OpenFailure::Damaged(cause.clone()));
        }
        let conn = match conn {
            Some(conn) => conn,
            None => Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(OpenFailure::classify)?,
        };
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(OpenFailure::classify)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(OpenFailure::classify)?;
        // secure_delete=FAST: bytes freed inside a page are zeroed (no extra I/O), so a value
        // that was replaced leaves no copy in the page it lived in.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0; PRAGMA secure_delete=FAST;",
        )
        .map_err(OpenFailure::classify)?;
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(OpenFailure::classify)?;
        if version > SCHEMA_VERSION {
            return Err(OpenFailure::Newer(version));
        }
        if version < SCHEMA_VERSION || found != Found::Ours {
            initialize(&conn).map_err(OpenFailure::classify)?;
            // The header with our id goes into the main file now (where `file::judge`
            // reads it), not at some later checkpoint; and the birth record vouches for the
            // file should its header ever be lost.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(OpenFailure::classify)?;
            // Best effort: with the id in the header the store is ours without it, and a lock
            // file we cannot write is already the dispatch lock's problem to report.
            let _ = file::record_birth(path, &meta);
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            file: Some((meta.dev(), meta.ino())),
            notes: Vec::new(),
        })
    }

    /// Opens an existing store to read only (`dispatch status`, `traces`, and a peek before
    /// the child): nothing is created, migrated, moved or repaired. `Ok(None)`: there is no
    /// store yet. A damaged store is reported (`OpenError::Damaged`), left where it is.
    pub fn open_to_read(path: &Path) -> Result<Option<Store>, OpenError> {
        let other = |e: io::Error| OpenError::Unusable(anyhow::anyhow!("{}: {e}", path.display()));
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(other(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(OpenError::Unusable(anyhow::anyhow!(
                "{} is a symlink; refusing to follow it",
                path.display()
            )));
        }
        if meta.is_dir() {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                what: "a directory".into(),
            });
        }
        let file = file::open_to_read(path).map_err(other)?;
        let meta = file.metadata().map_err(other)?;
        file::check_owner(&meta, path).map_err(|e| OpenError::Unusable(e.into()))?;
        let found = file::judge(&file, &meta, path);
        match found {
            Found::Empty => return Ok(None),
            Found::Foreign(what) => {
                return Err(OpenError::Foreign {
                    path: path.to_path_buf(),
                    what,
                })
            }
            Found::Damaged(cause) => {
                return Err(OpenError::Damaged {
                    path: path.to_path_buf(),
                    cause,
                })
            }
            Found::Ours | Found::Unmarked => {}
        }
        let failed = |e: rusqlite::Error| OpenFailure::classify(e).into_error(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        if found == Found::Unmarked && !ours_to_use(&conn) {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                what: "an SQLite database without trace tables".into(),
            });
        }
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(failed)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                path: path.to_path_buf(),
                version,
            });
        }
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
            file: Some((meta.dev(), meta.ino())),
            notes: Vec::new(),
        }))
    }

    /// For corruption SQLite only notices past the header (a write fails "malformed"): closes
    /// this store, moves the file aside and opens a fresh one. (The header vouched for it.)
    pub fn quarantine_and_reopen(self, cause: &rusqlite::Error) -> Result<Store, OpenError> {
        let path = self.path.clone();
        drop(self);
        Store::replace_damaged(&path, &cause.to_string())
    }

    /// What a failed query means for a person reading the store: a damaged store is said to
    /// be so (and what happens next), anything else as it is.
    pub fn read_error(&self, error: rusqlite::Error) -> OpenError {
        if is_corruption(&error) {
            OpenError::Damaged {
                path: self.path.clone(),
                cause: error.to_string(),
            }
        } else {
            OpenError::Unusable(
                anyhow::Error::new(error)
                    .context(format!("reading the trace store {}", self.path.display())),
            )
        }
    }
}

enum OpenFailure {
    Damaged(String),
    Foreign(String),
    Newer(i32),
    Other(anyhow::Error),
}

impl OpenFailure {
    fn classify(error: rusqlite::Error) -> OpenFailure {
        if is_corruption(&error) {
            OpenFailure::Damaged(error.to_string())
        } else {
            OpenFailure::Other(error.into())
        }
    }

    fn into_error(self, path: &Path) -> OpenError {
        let path = path.to_path_buf();
        match self {
            OpenFailure::Newer(version) => OpenError::NewerSchema { path, version },
            OpenFailure::Foreign(what) => OpenError::Foreign { path, what },
            OpenFailure::Damaged(cause) => OpenError::Damaged { path, cause },
            OpenFailure::Other(e) => OpenError::Unusable(e),
        }
    }
}

/// Whether an SQLite file without our application id may be used as our store: it holds our
/// tables (a store from before ids), or no table at all (a creation of ours cut short before
/// its schema was written, or an empty database: nothing in it to lose).
fn ours_to_use(conn: &Connection) -> bool {
    let tables: rusqlite::Result<Vec<String>> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut statement| {
            statement
                .query_map([], |r| r.get::<_, String>(0))?
                .collect()
        });
    match tables {
        Ok(tables) => {
            tables.is_empty()
                || (tables.iter().any(|t| t == "chunk") && tables.iter().any(|t| t == "setting"))
        }
        Err(_) => false,
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
    conn.execute_batch(&format!(
        "PRAGMA user_version = {SCHEMA_VERSION}; PRAGMA application_id = {};",
        file::APPLICATION_ID
    ))?;
    conn.execute_batch("COMMIT")
}
