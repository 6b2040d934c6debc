//! The store as a file: whose file is at the store's path, and what may be done to it.
//!
//! `store_path` in `dispatch-trace.yaml` can name any file (README, *The local store*), so
//! before SQLite is let near a path we decide whether the file there is ours. Only a file of
//! ours is ever written, migrated, moved aside or deleted; anything else is refused and left
//! exactly as it was (not even its mode changes).
//!
//! What counts as ours:
//! - nothing at all, or an empty file: ours to create the store in;
//! - an SQLite file whose header carries our application id (`PRAGMA application_id`, set
//!   when we create a store), or a store from before application ids (schema 1 or 2, with our
//!   `chunk` and `setting` tables), which is then given the id;
//! - a file we created that no longer reads as a store (its first page overwritten, say): the
//!   header cannot vouch for it, so when we create a store we write its identity (inode number
//!   and creation time: inode numbers are reused) into the lock file beside it (`<db>.lock`,
//!   which exists anyway), the store's birth record.
//!
//! A damaged store of ours is moved aside by whoever opens it to write (a hook, or a tool-mode
//! command that writes), never by a command that only reads, which reports it instead. Moved-
//! aside copies are named `<db>.corrupt-<UTC time>` (with their `-wal`/`-shm`) and only the
//! newest `KEEP_MOVED_ASIDE` are kept, so a store damaged again and again cannot fill the disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Marks an SQLite file as a store of ours (bytes 68-71 of the header): "DTRC".
pub const APPLICATION_ID: i32 = 0x4454_5243;

/// How many moved-aside copies of damaged stores are kept (the newest).
pub const KEEP_MOVED_ASIDE: usize = 2;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const BIRTH_TAG: &str = "dispatch-trace store";

/// What is at a store's path, judged from the file's first bytes (and, for a file whose
/// header cannot vouch for it, the birth record) before SQLite opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// An empty file: ours to create the store in.
    Empty,
    /// A store of ours, by its application id.
    Ours,
    /// An SQLite file without an application id, of a schema version we wrote before ids
    /// existed (or none yet: a store whose creation is still in its WAL): ours if SQLite shows
    /// our tables in it (the caller checks).
    Unmarked,
    /// A file we created that no longer reads as a store of ours.
    Damaged(String),
    /// Anything else, described for the operator.
    Foreign(String),
}

/// Judges the file open as `file` (at `path`, described by `meta`).
pub fn judge(file: &File, meta: &std::fs::Metadata, path: &Path) -> Found {
    if meta.len() == 0 {
        return Found::Empty;
    }
    let mut header = [0u8; 100];
    let read = read_prefix(file, &mut header);
    let sqlite = read == header.len() && header.starts_with(SQLITE_MAGIC);
    let field = |at: usize| {
        i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if sqlite && field(68) == APPLICATION_ID {
        return Found::Ours;
    }
    if born_here(path, meta) {
        // A store we created whose header in the main file has no id yet (its first
        // transaction still in the WAL) is still ours; without an SQLite header it is damaged.
        return if sqlite {
            Found::Ours
        } else {
            Found::Damaged("its header is not an SQLite header any more".into())
        };
    }
    if !sqlite {
        return Found::Foreign("not an SQLite database".into());
    }
    match (field(68), field(60)) {
        (0, 0..=2) => Found::Unmarked,
        (0, _) => Found::Foreign("an SQLite database without trace tables".into()),
        (other, _) => Found::Foreign(format!(
            "an SQLite database of another program (application id {other:#x})"
        )),
    }
}

/// Why a configured `store_path` cannot hold a store of ours, if it cannot: something is
/// there that is not ours to write (someone else's file, another program's database, a
/// directory, a symlink, a file of another user). Reads only; a path with nothing there yet is
/// fine here (whether it can be created is found out by creating it).
pub fn refused_store_path(path: &Path) -> Option<String> {
    let meta = path.symlink_metadata().ok()?;
    if meta.file_type().is_symlink() {
        return Some("it is a symlink, which is never followed".into());
    }
    if meta.is_dir() {
        return Some("it is a directory".into());
    }
    if !meta.is_file() {
        return Some("it is not a regular file".into());
    }
    if meta.uid() != my_uid() {
        return Some(format!(
            "it is owned by uid {}, not by us (uid {})",
            meta.uid(),
            my_uid()
        ));
    }
    if meta.len() == 0 {
        return None;
    }
    let file = open_to_read(path).ok()?;
    match judge(&file, &file.metadata().ok()?, path) {
        Found::Foreign(what) => Some(format!("it is not a trace store ({what})")),
        _ => None,
    }
}

fn read_prefix(file: &File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    filled
}

/// The lock file beside the store (the dispatch lock; it also holds the birth record).
pub fn lock_path(store: &Path) -> PathBuf {
    with_suffix(store, ".lock")
}

/// What identifies a file for the birth record: its inode number and, where the file system
/// keeps it, its creation time (a deleted file's inode number is soon given to a new one).
fn identity(meta: &std::fs::Metadata) -> String {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("inode {} born {born}", meta.ino())
}

/// Records that the file described by `meta` at `store` is a store we created.
pub fn record_birth(store: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let mut file = create_private_file(&lock_path(store))?;
    file.set_len(0)?;
    file.write_all(format!("{BIRTH_TAG} {}\n", identity(meta)).as_bytes())
}

/// Whether the birth record beside `store` names the file described by `meta`.
fn born_here(store: &Path, meta: &std::fs::Metadata) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(lock_path(store))
    else {
        return false;
    };
    let mut text = String::new();
    if file.take(256).read_to_string(&mut text).is_err() {
        return false;
    }
    text.trim().strip_prefix(BIRTH_TAG).map(str::trim) == Some(identity(meta).as_str())
}

/// The uid we run as.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid has no failure modes.
    unsafe { libc::geteuid() }
}

/// Refuses a file another user owns: where our files are in a directory others can write (a
/// store path set so), it was put there for us to fill or to read from.
pub fn check_owner(meta: &std::fs::Metadata, path: &Path) -> io::Result<()> {
    let me = my_uid();
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by us (uid {me}); run dispatch as the user the hooks run as",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// Opens (creating if needed, mode 0600) a file of ours; never through a symlink, never
/// inherited by the child; one another user owns is refused.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = open_or_create(path)?;
    let meta = file.metadata()?;
    check_owner(&meta, path)?;
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Opens `path` for reading and writing, creating it 0600 if missing; never through a symlink.
/// An existing file is not changed in any way.
pub fn open_or_create(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other(format!(
                    "{} is a symlink; refusing to follow it",
                    path.display()
                ))
            } else {
                e
            }
        })
}

/// Opens an existing `path` for reading only; never through a symlink.
pub fn open_to_read(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// `path` with `suffix` appended to its file name (`x.db` -> `x.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// SQLite's files beside a database.
pub const SIDE_FILES: [&str; 2] = ["-wal", "-shm"];

/// A damaged store moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedAside {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was moved (the rename is its last inode change).
    pub when: SystemTime,
}

/// Moves a damaged store of ours aside (with its -wal/-shm) so that a new one can be created;
/// returns where it went. Keeps only the newest `KEEP_MOVED_ASIDE` copies.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    // `-<UTC time>`, then `-<n>` past the highest n already used with that time, so names
    // order as the moves did even when two fall in one second.
    let stamp = crate::cli::human::compact_utc(SystemTime::now());
    let base = with_suffix(path, &format!(".corrupt-{stamp}"));
    let used = moved_aside(path)
        .iter()
        .filter_map(|copy| {
            let name = copy.path.to_string_lossy().into_owned();
            let tail = name.strip_prefix(&*base.to_string_lossy())?;
            match tail.strip_prefix('-') {
                Some(n) => n.parse::<u32>().ok(),
                None if tail.is_empty() => Some(1),
                None => None,
            }
        })
        .max();
    let aside = match used {
        None => base,
        Some(n) => with_suffix(&base, &format!("-{}", n + 1)),
    };
    std::fs::rename(path, &aside)
        .map_err(|e| io::Error::new(e.kind(), format!("moving {} aside: {e}", path.display())))?;
    for suffix in SIDE_FILES {
        let from = with_suffix(path, suffix);
        match std::fs::rename(&from, with_suffix(&aside, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // The store itself is out of the way; a stale -wal must not be applied to the
            // new one: remove it rather than leave it.
            Err(_) => {
                let _ = std::fs::remove_file(&from);
            }
        }
    }
    let copies = moved_aside(path);
    for old in copies.iter().skip(KEEP_MOVED_ASIDE) {
        for suffix in ["", SIDE_FILES[0], SIDE_FILES[1]] {
            let _ = std::fs::remove_file(with_suffix(&old.path, suffix));
        }
    }
    Ok(aside)
}

/// The moved-aside copies of damaged stores beside `path`, newest first (also the single
/// `<db>.corrupt` earlier versions kept).
pub fn moved_aside(path: &Path) -> Vec<MovedAside> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.corrupt", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<((String, u32), MovedAside)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(&prefix)
                && !SIDE_FILES.iter().any(|side| name.ends_with(side))
                && (name.len() == prefix.len() || name[prefix.len()..].starts_with('-'));
            if !ours {
                return None;
            }
            let meta = entry.path().symlink_metadata().ok()?;
            if !meta.is_file() {
                return None;
            }
            let when = std::time::UNIX_EPOCH
                + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
            // Newest first by name: `-<UTC time>[-<n>]` (time stamps of the file system may
            // be too coarse to order two moves in a row); the unstamped old copy is oldest.
            let tail = &name[prefix.len()..];
            let (stamp, n) = match tail.trim_start_matches('-').split_once('-') {
                Some((stamp, n)) => (stamp.to_string(), n.parse::<u32>().unwrap_or(0)),
                None => (tail.trim_start_matches('-').to_string(), 1),
            };
            Some((
                (stamp, n),
                MovedAside {
                    path: entry.path(),
                    bytes: meta.len(),
                    when,
                },
            ))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, copy)| copy).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    fn judge_path(path: &Path) -> Found {
        let file = File::open(path).unwrap();
        judge(&file, &file.metadata().unwrap(), path)
    }

    fn sqlite_header(app_id: i32, version: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; 4096];
        bytes[..16].copy_from_slice(SQLITE_MAGIC);
        bytes[60..64].copy_from_slice(&version.to_be_bytes());
        bytes[68..72].copy_from_slice(&app_id.to_be_bytes());
        bytes
    }

    #[test]
    fn a_file_is_judged_by_its_header_and_the_birth_record() {
        let scratch = Scratch::new("judge");
        let path = scratch.path("t.db");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(judge_path(&path), Found::Empty);
        std::fs::write(&path, sqlite_header(APPLICATION_ID, 2)).unwrap();
        assert_eq!(judge_path(&path), Found::Ours);
        std::fs::write(&path, sqlite_header(0, 2)).unwrap();
        assert_eq!(judge_path(&path), Found::Unmarked);
        std::fs::write(&path, sqlite_header(0, 7)).unwrap();
        assert!(matches!(judge_path(&path), Found::Foreign(_)));
        std::fs::write(&path, sqlite_header(0x1234, 2)).unwrap();
        assert!(
            matches!(judge_path(&path), Found::Foreign(what) if what.contains("0x1234")),
            "another program's database"
        );
        std::fs::write(&path, b"root:x:0:0:root:/root:/bin/bash\n").unwrap();
        assert_eq!(
            judge_path(&path),
            Found::Foreign("not an SQLite database".into())
        );
        // The same bytes in a file we created are a damaged store of ours.
        record_birth(&path, &std::fs::metadata(&path).unwrap()).unwrap();
        assert!(matches!(judge_path(&path), Found::Damaged(_)));
        // Another file put in its place is not (even with the same inode number, as file
        // systems reuse them: file times are coarse, so let one tick pass).
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"someone else's").unwrap();
        assert!(matches!(judge_path(&path), Found::Foreign(_)));
    }

    #[test]
    fn moving_aside_keeps_the_newest_copies_only() {
        let scratch = Scratch::new("aside");
        let path = scratch.path("t.db");
        let mut moved = Vec::new();
        for round in 0..4u8 {
            std::fs::write(&path, [round; 10]).unwrap();
            std::fs::write(with_suffix(&path, "-wal"), [round; 3]).unwrap();
            moved.push(move_aside(&path).unwrap());
            assert!(!path.exists());
            assert!(!with_suffix(&path, "-wal").exists());
        }
        let kept = moved_aside(&path);
        assert_eq!(kept.len(), KEEP_MOVED_ASIDE, "{kept:?}");
        assert_eq!(kept[0].path, moved[3]);
        assert_eq!(std::fs::read(&kept[0].path).unwrap(), [3u8; 10]);
        assert_eq!(kept[0].bytes, 10);
        assert_eq!(
            std::fs::read(with_suffix(&kept[0].path, "-wal")).unwrap(),
            [3u8; 3]
        );
        assert!(!moved[0].exists() && !with_suffix(&moved[0], "-wal").exists());
        assert_eq!(
            std::fs::read_dir(&scratch.0).unwrap().count(),
            4,
            "two copies, each with its -wal"
        );
    }
}
