//! The store as a dispatch uses it (README, *The local store*; DESIGN §5): opened while the
//! child runs, tidied (the WAL kept short, the started records of killed wrappers imported),
//! and written once after it, recovering from what may have happened meanwhile. The store's
//! schema and queries are `store`, whose file is ours `store_file`; this module is what a
//! dispatch does with them, and what it does when it cannot:
//!
//! - a store that cannot be opened (not ours, locked, a newer schema, a read-only disk) is a
//!   problem to report, never a reason to change the hook;
//! - a store deleted or replaced while the charm ran (`Store::moved_away`): the trace goes to
//!   whatever the path names now, not into a file nobody will read;
//! - a store found damaged only by the write: moved aside once, and the trace written to a
//!   new one;
//! - a trace the store cannot take now (locked, disk full) waits beside it as this
//!   dispatch's started record, rewritten with the real trace (`Inflight::keep_final`), for
//!   the next dispatch to store; one it cannot even keep is said to be lost.

use std::path::{Path, PathBuf};

use crate::operator::Problem;
use crate::relation;
use crate::ship::destination;
use crate::store::inflight::{self, Inflight, OrphanScan};
use crate::store::settings;
use crate::store::{self, NewChunk, Store};

/// The store, opened and tidied (WAL kept short, orphans of killed wrappers imported), with
/// what went wrong on the way. Runs on the record reader's thread while the child runs.
pub struct OpenedStore {
    pub store: Option<Store>,
    pub problems: Vec<Problem>,
    /// The store belongs to a newer dispatch: nothing is kept for it.
    pub newer_schema: bool,
    /// What `dispatch set-destination` stored, read while the child runs.
    pub stored_destination: Option<destination::Stored>,
    /// The relations' cached answer.
    pub relation: Option<relation::Answer>,
}

pub fn open_store_at(path: &Path, scan: Option<&OrphanScan>, max_bytes: u64) -> OpenedStore {
    let mut problems: Vec<Problem> = Vec::new();
    let mut store = match Store::open(path) {
        Ok(store) => store,
        Err(e) => {
            problems.push(e.to_string().into());
            return OpenedStore {
                store: None,
                problems,
                newer_schema: matches!(e, store::OpenError::NewerSchema { .. }),
                stored_destination: None,
                relation: None,
            };
        }
    };
    problems.extend(store_notes(&mut store));
    let stored_destination = settings::destination(&store).ok().flatten();
    let relation = settings::relation_answer(&store);
    if let Err(e) = store.maintain() {
        problems.push(
            format!(
                "cannot checkpoint the trace store {}: {e}",
                store.path().display()
            )
            .into(),
        );
    }
    let orphans = scan.map(OrphanScan::orphans).unwrap_or_default();
    if orphans.is_empty() {
        return OpenedStore {
            store: Some(store),
            problems,
            newer_schema: false,
            stored_destination,
            relation,
        };
    }
    let (paths, chunks): (Vec<PathBuf>, Vec<NewChunk>) = orphans.into_iter().unzip();
    let mut store = store;
    match store.import_started(&chunks, max_bytes) {
        Ok(_) => inflight::forget(&paths),
        Err(e) => problems.push(
            format!(
                "cannot import interrupted dispatches into {}: {e}",
                store.path().display()
            )
            .into(),
        ),
    }
    OpenedStore {
        store: Some(store),
        problems,
        newer_schema: false,
        stored_destination,
        relation,
    }
}

/// The store to write this dispatch's trace into: the one opened while the charm ran, or,
/// if its path was deleted or replaced meanwhile (an operator resetting it, a backup put
/// back), whatever the path names now, so the trace is not written into a file that is gone.
pub fn at_its_path(store: Store, path: &Path, problems: &mut Vec<Problem>) -> Option<Store> {
    if !store.moved_away() {
        return Some(store);
    }
    drop(store);
    match Store::open(path) {
        Ok(mut fresh) => {
            problems.extend(store_notes(&mut fresh));
            Some(fresh)
        }
        Err(e) => {
            problems.push(e.to_string().into());
            None
        }
    }
}

/// Adds chunks; a store found damaged only now (a write fails "malformed") is moved aside and
/// replaced once. Returns the store to go on with (if any) and the id of the last chunk added
/// (`None`: not added).
pub fn add_with_recovery(
    store: Store,
    chunks: &[NewChunk],
    max_bytes: u64,
    problems: &mut Vec<Problem>,
) -> (Option<Store>, Option<i64>) {
    let cannot = |path: &Path, e: &rusqlite::Error| {
        format!("cannot store the trace in {}: {e}", path.display())
    };
    let mut store = store;
    match store.add_chunks_returning_last(chunks, max_bytes) {
        Ok((_, last)) => (Some(store), last),
        Err(e) if store::is_corruption(&e) => match store.quarantine_and_reopen(&e) {
            Ok(mut fresh) => {
                problems.extend(store_notes(&mut fresh));
                match fresh.add_chunks_returning_last(chunks, max_bytes) {
                    Ok((_, last)) => (Some(fresh), last),
                    Err(e) => {
                        problems.push(cannot(fresh.path(), &e).into());
                        (None, None)
                    }
                }
            }
            Err(open) => {
                problems.push(open.to_string().into());
                (None, None)
            }
        },
        Err(e) => {
            problems.push(cannot(store.path(), &e).into());
            (Some(store), None)
        }
    }
}

/// What the store has to tell the operator after opening (a damaged store moved aside). A
/// store damaged again and again is the same problem every time, whatever the copy is called.
pub fn store_notes(store: &mut Store) -> Vec<Problem> {
    store
        .notes
        .drain(..)
        .map(|note| Problem::of_kind("store-moved-aside", note))
        .collect()
}

/// Stores this dispatch's finished trace (`chunk`) in `store`, or, where it cannot be stored
/// now, keeps it beside the store as this dispatch's record (see the module docs). Returns the
/// store to go on with and the id of the stored chunk.
pub fn store_trace(
    store: Option<Store>,
    path: &Path,
    newer_schema: bool,
    inflight: Option<Inflight>,
    chunk: NewChunk,
    max_bytes: u64,
    problems: &mut Vec<Problem>,
) -> (Option<Store>, Option<i64>) {
    let kept_chunk = chunk.clone();
    let (store, stored_id) = match store.and_then(|store| at_its_path(store, path, problems)) {
        Some(store) => add_with_recovery(store, &[chunk], max_bytes, problems),
        None => (None, None),
    };
    if let Some(inflight) = inflight {
        match stored_id {
            Some(_) => inflight.finish(),
            // Newer schema: nobody here can ever import it.
            None if newer_schema => inflight.finish(),
            // Locked, disk full...: the next dispatch that can, stores it.
            None => {
                let kept = inflight.keep_final(
                    &kept_chunk.trace_id,
                    &kept_chunk.event,
                    &kept_chunk.payload,
                    kept_chunk.priority,
                );
                if let Err(e) = kept {
                    problems.push(
                        format!(
                            "this dispatch's trace is lost: it could not wait beside {} either \
                             ({e})",
                            path.display()
                        )
                        .into(),
                    );
                }
            }
        }
    }
    (store, stored_id)
}
