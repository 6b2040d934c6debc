//! Where tool mode works: the charm this binary is installed in, its store, and whether this
//! user may open it (README "Tool mode"). Reading commands never create a store; writing ones
//! take the dispatch lock first so they never run beside a hook.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Config, CONFIG_FILE};
use crate::store::Store;
use crate::target;

pub(super) fn charm_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's own path")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// Why the directory of this binary is not a charm it can work on, if it is not: a copy of
/// `dispatch` run from somewhere else (`/usr/local/bin`, a home directory) would otherwise
/// report an empty store of its own, or create one there.
pub(super) fn not_a_charm(dir: &Path) -> Option<String> {
    const SIGNS: [&str; 8] = [
        "metadata.yaml",
        "charmcraft.yaml",
        target::ORIGINAL_DISPATCH,
        "hooks",
        "actions",
        CONFIG_FILE,
        crate::config::DEFAULT_STORE_FILE,
        crate::state_dir::STATE_DIR,
    ];
    if SIGNS
        .iter()
        .any(|sign| dir.join(sign).symlink_metadata().is_ok())
    {
        return None;
    }
    Some(format!(
        "{} is not a charm directory (no metadata.yaml, {} or hooks/ beside this dispatch): tool \
         mode works on the charm the binary is installed in; run that charm's dispatch, e.g. \
         /var/lib/juju/agents/unit-<app>-<n>/charm/dispatch",
        dir.display(),
        target::ORIGINAL_DISPATCH
    ))
}

/// Why this user may not work on the store, if the store belongs to another: it is the hook
/// user's alone, and another user's reads and writes would be refused piecemeal, or leave
/// files the hooks then refuse. (Files planted beside a store of ours are the hook's business:
/// it refuses them and says so.)
pub(super) fn another_users_store(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::store::file::my_uid();
    let meta = path.symlink_metadata().ok()?;
    (meta.uid() != me).then(|| {
        format!(
            "{} belongs to uid {}, and this dispatch runs as uid {me}: run dispatch as the user \
             the hooks run as (root on machines), e.g. with `juju exec` or `sudo`",
            path.display(),
            meta.uid()
        )
    })
}

pub(super) fn store_path(charm_dir: &Path) -> PathBuf {
    Config::load(charm_dir).config.store_file(charm_dir)
}

/// The store for a command that only reads (`status`, `traces`): `None` when no hook has
/// created it yet. Nothing is created, migrated, moved aside or repaired.
pub(super) fn store_to_read(path: &Path) -> Result<Option<Store>> {
    Store::open_to_read(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The store for a command that exists to write: created if needed; a damaged one is moved
/// aside and a new one started, which the person is told.
pub(super) fn store_to_write(path: &Path) -> Result<Store> {
    let mut store = Store::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in store.notes.drain(..) {
        eprintln!("dispatch: {note}");
    }
    Ok(store)
}

/// The dispatch lock, so that a command that rewrites what a dispatch reads (or ships what it
/// ships) never runs beside one.
pub(super) fn hold_dispatch_lock(path: &Path) -> Result<crate::store::inflight::Inflight> {
    let lock = crate::store::inflight::Inflight::lock(path, std::time::Duration::from_secs(10), 0)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot take the dispatch lock beside {}: {e}",
                path.display()
            )
        })?;
    if !lock.holds_lock() {
        bail!("a dispatch is running and holds the store; try again");
    }
    Ok(lock)
}

/// Why no store could be created at `path`, if it could not.
pub(super) fn why_not_creatable(path: &Path) -> Option<String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its directory {} does not exist", dir.display()))
        }
        Err(e) => Some(format!("{}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Some(format!("{} is not a directory", dir.display())),
        Ok(_) => nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .err()
        .map(|e| {
            format!(
                "{} is not writable by uid {} ({e})",
                dir.display(),
                crate::store::file::my_uid()
            )
        }),
    }
}

/// Dispatches recorded as started and not finished: running now, or killed and waiting for
/// the next dispatch to import them.
pub(super) fn in_flight(store: &Path) -> usize {
    std::fs::read_dir(crate::store::inflight::dir_path(store)).map_or(0, |d| d.count())
}
