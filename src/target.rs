//! Which program a dispatch runs, resolved the way Juju itself would (DESIGN §2): the
//! configured target, else `dispatch.orig` beside our real path, else the legacy hook or
//! action script at `$JUJU_DISPATCH_PATH` when it exists, is executable and is not this very
//! binary (hooks-only charms get traced too), else nothing: Juju treats a missing hook as a
//! success.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::juju::HookEnv;

pub const ORIGINAL_DISPATCH: &str = "dispatch.orig";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Run this program. It may still turn out not to be executable (exit 126).
    Program(PathBuf),
    /// Nothing to run: exit 0 with a skipped root span.
    Nothing,
}

/// Resolves the target. `problems` receives a note when the configured target is missing.
pub fn resolve(
    charm_dir: &Path,
    config: &Config,
    env: &HookEnv,
    this_binary: &Path,
    problems: &mut Vec<String>,
) -> Target {
    if let Some(configured) = &config.target {
        let path = charm_dir.join(configured);
        if path.exists() {
            return Target::Program(path);
        }
        problems.push(format!(
            "configured target {} does not exist; falling back to {ORIGINAL_DISPATCH}",
            path.display()
        ));
    }
    let original = charm_dir.join(ORIGINAL_DISPATCH);
    if original.symlink_metadata().is_ok() {
        return Target::Program(original);
    }
    let path = env.dispatch_path.as_str();
    if !path.is_empty() && !path.starts_with('/') && path.contains('/') {
        let script = charm_dir.join(path);
        if is_executable_file(&script) && !is_same_file(&script, this_binary) {
            return Target::Program(script);
        }
    }
    Target::Nothing
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

fn is_same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    struct Charm(PathBuf);
    impl Charm {
        fn new(name: &str) -> Charm {
            let dir =
                std::env::temp_dir().join(format!("dispatch-target-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("hooks")).unwrap();
            std::fs::write(dir.join("dispatch"), b"binary").unwrap();
            Charm(dir)
        }
        fn script(&self, rel: &str, mode: u32) {
            let path = self.0.join(rel);
            std::fs::write(&path, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        fn resolve(&self, dispatch_path: &str, config: &Config) -> Target {
            let env = HookEnv::from_vars(
                [(
                    OsString::from("JUJU_DISPATCH_PATH"),
                    OsString::from(dispatch_path),
                )],
                &OsString::from("dispatch"),
            );
            resolve(
                &self.0,
                config,
                &env,
                &self.0.join("dispatch"),
                &mut Vec::new(),
            )
        }
    }
    impl Drop for Charm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn dispatch_orig_wins_over_hooks() {
        let charm = Charm::new("orig");
        charm.script("dispatch.orig", 0o755);
        charm.script("hooks/install", 0o755);
        assert_eq!(
            charm.resolve("hooks/install", &Config::default()),
            Target::Program(charm.0.join("dispatch.orig"))
        );
    }

    #[test]
    fn a_non_executable_dispatch_orig_is_still_the_target() {
        let charm = Charm::new("noexec");
        charm.script("dispatch.orig", 0o644);
        assert_eq!(
            charm.resolve("hooks/install", &Config::default()),
            Target::Program(charm.0.join("dispatch.orig"))
        );
    }

    #[test]
    fn hooks_only_charms_run_their_hook() {
        let charm = Charm::new("hooks");
        charm.script("hooks/install", 0o755);
        assert_eq!(
            charm.resolve("hooks/install", &Config::default()),
            Target::Program(charm.0.join("hooks/install"))
        );
        assert_eq!(
            charm.resolve("hooks/start", &Config::default()),
            Target::Nothing
        );
    }

    #[test]
    fn a_hook_symlink_back_to_dispatch_is_not_a_target() {
        let charm = Charm::new("loop");
        std::os::unix::fs::symlink("../dispatch", charm.0.join("hooks/install")).unwrap();
        std::fs::set_permissions(
            charm.0.join("dispatch"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(
            charm.resolve("hooks/install", &Config::default()),
            Target::Nothing
        );
    }

    #[test]
    fn configured_target_first_and_missing_one_falls_back() {
        let charm = Charm::new("configured");
        charm.script("dispatch.orig", 0o755);
        charm.script("run.sh", 0o755);
        let config = Config {
            target: Some("run.sh".into()),
            ..Config::default()
        };
        assert_eq!(
            charm.resolve("hooks/install", &config),
            Target::Program(charm.0.join("run.sh"))
        );
        let missing = Config {
            target: Some("nope.sh".into()),
            ..Config::default()
        };
        assert_eq!(
            charm.resolve("hooks/install", &missing),
            Target::Program(charm.0.join("dispatch.orig"))
        );
    }
}
