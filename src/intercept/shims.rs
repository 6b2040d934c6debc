//! Hook-tool interception: finding Juju's tools directory on PATH and keeping a directory of
//! shims (symlinks named after each tool, pointing at `dispatch-shim`) to put in front of it.
//!
//! Building 60 symlinks costs milliseconds on ext4, so the shim directory is persistent and
//! rebuilt only when its stamp (tools dir identity and mtime, shim binary path) no longer
//! matches: checking costs one `stat` and one small read per dispatch. A rebuild happens in a
//! fresh directory that is then renamed into place, so a concurrent reader never sees half a
//! set.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use dispatch_shim::HOOK_TOOLS;

pub const SHIM_BINARY: &str = "dispatch-shim";
const SHIM_DIR: &str = "shims";
const STAMP: &str = ".stamp";

/// Tools whose presence marks a directory on PATH as Juju's hook-tool directory.
const MARKERS: &[&str] = &[
    "juju-log",
    "relation-get",
    "status-set",
    "config-get",
    "is-leader",
];

/// The first absolute PATH entry that holds Juju hook tools, skipping `exclude` (our own shim
/// directory, should PATH already carry it).
pub fn find_tools_dir(path_var: &OsStr, exclude: &Path) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute() && dir != exclude)
        .find(|dir| MARKERS.iter().any(|tool| dir.join(tool).exists()))
}

/// Makes sure `<state dir>/shims` mirrors the hook tools of `tools_dir`, pointing at
/// `shim_binary`. Returns the shim directory.
pub fn ensure_shim_dir(
    state_dir: &Path,
    tools_dir: &Path,
    shim_binary: &Path,
) -> io::Result<PathBuf> {
    let shim_dir = state_dir.join(SHIM_DIR);
    let wanted = stamp(tools_dir, shim_binary)?;
    // The stamp is only stat data anyone can read, so it proves nothing in a directory someone
    // else could have made: a link to theirs, or a directory of theirs put in place while the
    // state dir was open to others, is rebuilt rather than trusted.
    let ours = std::fs::symlink_metadata(&shim_dir)
        .is_ok_and(|meta| meta.is_dir() && crate::state_dir::ours_and_private(&meta));
    if ours {
        if let Ok(found) = std::fs::read(shim_dir.join(STAMP)) {
            if found == wanted {
                return Ok(shim_dir);
            }
        }
    }
    rebuild(state_dir, &shim_dir, tools_dir, shim_binary, &wanted)?;
    Ok(shim_dir)
}

fn stamp(tools_dir: &Path, shim_binary: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(tools_dir)?;
    let shim = std::fs::metadata(shim_binary)?;
    let mut stamp = Vec::with_capacity(256);
    stamp.extend_from_slice(tools_dir.as_os_str().as_bytes());
    stamp.extend_from_slice(
        format!(
            "\n{}:{}:{}.{}\n",
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec()
        )
        .as_bytes(),
    );
    stamp.extend_from_slice(shim_binary.as_os_str().as_bytes());
    stamp.extend_from_slice(format!("\n{}:{}\n", shim.dev(), shim.ino()).as_bytes());
    Ok(stamp)
}

fn rebuild(
    state_dir: &Path,
    shim_dir: &Path,
    tools_dir: &Path,
    shim_binary: &Path,
    stamp: &[u8],
) -> io::Result<()> {
    let pid = std::process::id();
    let fresh = state_dir.join(format!("{SHIM_DIR}.new-{pid}"));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::DirBuilder::new().mode(0o700).create(&fresh)?;
    // Looked up by name rather than listed: a tools directory the hook may search but not
    // read still has its tools called, and so traced.
    let tools = HOOK_TOOLS
        .iter()
        .filter(|tool| std::fs::symlink_metadata(tools_dir.join(tool)).is_ok());
    for tool in tools {
        std::os::unix::fs::symlink(shim_binary, fresh.join(tool))?;
    }
    // 0600 whatever the umask, like every file of ours.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(fresh.join(STAMP))?
        .write_all(stamp)?;
    let old = state_dir.join(format!("{SHIM_DIR}.old-{pid}"));
    match std::fs::rename(shim_dir, &old) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::rename(&fresh, shim_dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// PATH for the child: the shim directory in front of the hook's PATH.
pub fn child_path(shim_dir: &Path, path_var: &OsStr) -> OsString {
    let mut path = OsString::from(shim_dir);
    if !path_var.is_empty() {
        path.push(":");
        path.push(path_var);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    #[test]
    fn tools_dir_is_the_first_path_entry_with_hook_tools() {
        let scratch = Scratch::new("find");
        let empty = scratch.0.join("empty");
        let tools = scratch.0.join("tools");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join("juju-log"), b"").unwrap();
        let path = std::env::join_paths([&empty, &tools]).unwrap();
        assert_eq!(
            find_tools_dir(&path, Path::new("/nowhere")),
            Some(tools.clone())
        );
        assert_eq!(find_tools_dir(&path, &tools), None);
        assert_eq!(
            find_tools_dir(OsStr::new("relative:"), Path::new("/x")),
            None
        );
    }

    #[test]
    fn shim_dir_links_only_hook_tools_and_is_rebuilt_when_tools_change() {
        let scratch = Scratch::new("build");
        let tools = scratch.0.join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        for name in ["juju-log", "relation-get", "jujud", "README"] {
            std::fs::write(tools.join(name), b"").unwrap();
        }
        let shim = scratch.0.join("dispatch-shim");
        std::fs::write(&shim, b"").unwrap();
        let state = scratch.0.join("state");
        std::fs::create_dir_all(&state).unwrap();

        let dir = ensure_shim_dir(&state, &tools, &shim).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != STAMP)
            .collect();
        names.sort();
        assert_eq!(names, ["juju-log", "relation-get"]);
        assert_eq!(std::fs::read_link(dir.join("juju-log")).unwrap(), shim);

        // Unchanged: the same directory inode is kept (no rebuild).
        let before = std::fs::metadata(&dir).unwrap().ino();
        ensure_shim_dir(&state, &tools, &shim).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().ino(), before);

        // A new tool appears: rebuilt with it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(tools.join("status-set"), b"").unwrap();
        ensure_shim_dir(&state, &tools, &shim).unwrap();
        assert!(dir.join("status-set").symlink_metadata().is_ok());
    }

    #[test]
    fn child_path_puts_the_shims_first() {
        assert_eq!(
            child_path(Path::new("/s"), OsStr::new("/a:/b")),
            OsString::from("/s:/a:/b")
        );
        assert_eq!(
            child_path(Path::new("/s"), OsStr::new("")),
            OsString::from("/s")
        );
    }
}
