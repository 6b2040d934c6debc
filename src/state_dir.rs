//! The wrapper's private working directory, `<charm dir>/.dispatch-trace/`: the persistent shim
//! directory, the record channel and the last operator warning live here.
//!
//! Only the hook's user may enter it (0700): the record channel inside must not accept records
//! from anyone else. A path that is a symlink, not a directory, or owned by someone else is
//! refused rather than used, so a planted link cannot redirect our writes.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = ".dispatch-trace";

pub fn path(charm_dir: &Path) -> PathBuf {
    charm_dir.join(STATE_DIR)
}

/// Creates `dir` with mode 0700 if missing; checks an existing one is ours and private.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symlink?)",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no failure modes.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by us (uid {me})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether what `meta` describes is ours and open to nobody else. Inside a directory that was
/// ever open to others (tightened above, but only from now on), only such entries were made
/// by us: anything else may have been put there to be used by the hook's user.
pub fn ours_and_private(meta: &Metadata) -> bool {
    // SAFETY: geteuid has no failure modes.
    meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o077 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_created_0700_and_tightened() {
        let base = std::env::temp_dir().join(format!("dispatch-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("state");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_the_dir_is_refused() {
        let base = std::env::temp_dir().join(format!("dispatch-state-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("state")).unwrap();
        assert!(ensure_private_dir(&base.join("state")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
