//! Which program a dispatch runs, resolved the way Juju itself would (DESIGN §2): the
//! configured target, else `dispatch.orig` beside our real path, else the legacy hook or
//! action script at `$JUJU_DISPATCH_PATH` when it exists, is executable and is not this very
//! binary (hooks-only charms get traced too), else nothing: Juju treats a missing hook as a
//! success.
//!
//! A target that is this program (README "What runs"): the same file, a link to it, or a copy
//! (`cp dispatch dispatch.orig`, an easy mistake when wrapping by hand twice) would run us
//! again, which runs it again, forever at full CPU. It is refused before it runs. Telling a
//! copy costs one `stat` of each file on every hook: sizes differ for any real entrypoint,
//! so bytes are compared only for a file exactly as large as this binary, and only until the
//! first difference (a different file of the same size differs in its first block, while a
//! hash of a few pages would read them for every candidate and could still be fooled).
//!
//! Anything else that loops back into us (a `dispatch.orig` script that runs `./dispatch`,
//! an older copy of us) is bounded by the exec depth carried in the child's environment.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, CONFIG_FILE};
use crate::juju::HookEnv;

pub const ORIGINAL_DISPATCH: &str = "dispatch.orig";

/// How many hook-mode dispatches are running one inside the other in this chain of
/// processes: 0 (unset) for the one Juju started; each dispatch hands its child one more.
pub const ENV_EXEC_DEPTH: &str = "DISPATCH_TRACE_EXEC_DEPTH";

/// The depth at which a dispatch refuses to run anything. A legitimate chain reaches 1:
/// Juju -> dispatch (0) -> dispatch.orig -> ops re-running `hooks/<event>` -> dispatch (1,
/// pass-through) -> dispatch.orig. Hooks that run other hooks add one each; a loop gets here
/// within milliseconds.
pub const MAX_EXEC_DEPTH: u32 = 8;

/// The exit code of a dispatch that refuses to run its target (a target that is this program,
/// or a chain past `MAX_EXEC_DEPTH`): 126, the shell's and Juju's "cannot execute".
pub const REFUSED_EXIT: i32 = 126;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Run this program. It may still turn out not to be executable (exit 126).
    Program(PathBuf),
    /// The target is this program: running it would run us again, forever.
    Itself(SelfTarget),
    /// Nothing to run: exit 0 with a skipped root span.
    Nothing,
}

/// A target found to be this very program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTarget {
    pub path: PathBuf,
    /// The target as the operator wrote it: `dispatch.orig`, or `target` from the config.
    pub shown: String,
    pub configured: bool,
    pub sameness: Sameness,
}

/// How a file is this program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    /// The very path of this binary.
    SamePath,
    SymbolicLink,
    HardLink,
    /// Another file with the same bytes.
    Copy,
}

impl Sameness {
    fn describe(self) -> &'static str {
        match self {
            Sameness::SamePath => "the same file",
            Sameness::SymbolicLink => "a symbolic link to it",
            Sameness::HardLink => "a hard link to it",
            Sameness::Copy => "a copy of it",
        }
    }
}

impl SelfTarget {
    /// What the operator reads: the stderr line, the root span's status, `check-config`.
    pub fn reason(&self) -> String {
        let fix = if self.configured {
            format!("set `target` in {CONFIG_FILE} to the charm's own entrypoint")
        } else {
            format!(
                "put the charm's original dispatch back as {ORIGINAL_DISPATCH} \
                 (the packed charm has it)"
            )
        };
        format!(
            "the charm's own entrypoint is missing: {} is this dispatch ({}), not the charm's \
             dispatch; {fix}",
            self.shown,
            self.sameness.describe()
        )
    }
}

/// Resolves the target. `problems` receives a note when the configured target is missing.
pub fn resolve(
    charm_dir: &Path,
    config: &Config,
    env: &HookEnv,
    this_binary: &Path,
    problems: &mut Vec<String>,
) -> Target {
    let this = This::new(this_binary);
    if let Some(configured) = &config.target {
        let path = charm_dir.join(configured);
        if let Ok(meta) = std::fs::metadata(&path) {
            return this.unless_itself(path, &meta, configured.display().to_string(), true);
        }
        problems.push(format!(
            "configured target {} does not exist; falling back to {ORIGINAL_DISPATCH}",
            path.display()
        ));
    }
    let original = charm_dir.join(ORIGINAL_DISPATCH);
    match std::fs::metadata(&original) {
        Ok(meta) => return this.unless_itself(original, &meta, ORIGINAL_DISPATCH.into(), false),
        // A dangling link is still the target: running it fails (127), as under Juju.
        Err(_) if original.symlink_metadata().is_ok() => return Target::Program(original),
        Err(_) => {}
    }
    let path = env.dispatch_path.as_str();
    if !path.is_empty() && !path.starts_with('/') && path.contains('/') {
        let script = charm_dir.join(path);
        // charmcraft's `hooks/<event> -> ../dispatch` links are how Juju and ops reach us,
        // not a hook of the charm's own.
        if is_executable_file(&script) && this.sameness_at(&script).is_none() {
            return Target::Program(script);
        }
    }
    Target::Nothing
}

/// Whether the charm has nothing at all to run, for any event: asked only when the target
/// resolved to `Nothing` (so that the usual hook pays nothing for it). No configured target
/// and no `dispatch.orig` (`resolve` found neither), and no executable file under `hooks/`
/// or `actions/` that is not this program (charmcraft's `hooks/install -> ../dispatch` links
/// do not count): Juju would skip every event, and the charm has silently stopped running.
pub fn runs_nothing_at_all(charm_dir: &Path, this_binary: &Path) -> bool {
    let this = This::new(this_binary);
    let runs_something = |dir: &str| {
        std::fs::read_dir(charm_dir.join(dir)).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|entry| {
                let path = entry.path();
                is_executable_file(&path) && this.sameness_at(&path).is_none()
            })
        })
    };
    !runs_something("hooks") && !runs_something("actions")
}

/// What nothing-at-all looks like to the operator (stderr line, `check-config`).
pub fn nothing_at_all_reason() -> String {
    format!(
        "the charm's own entrypoint is missing: there is no {ORIGINAL_DISPATCH} and no \
         hooks/ or actions/ script, so no event runs anything (the charm has stopped); put the \
         charm's original dispatch back as {ORIGINAL_DISPATCH}"
    )
}

/// This binary, for telling whether a file is it.
struct This<'a> {
    path: &'a Path,
    meta: Option<std::fs::Metadata>,
}

impl This<'_> {
    fn new(path: &Path) -> This<'_> {
        This {
            path,
            meta: std::fs::metadata(path).ok(),
        }
    }

    fn unless_itself(
        &self,
        path: PathBuf,
        meta: &std::fs::Metadata,
        shown: String,
        configured: bool,
    ) -> Target {
        match self.sameness(&path, meta) {
            Some(sameness) => Target::Itself(SelfTarget {
                path,
                shown,
                configured,
                sameness,
            }),
            None => Target::Program(path),
        }
    }

    fn sameness_at(&self, path: &Path) -> Option<Sameness> {
        self.sameness(path, &std::fs::metadata(path).ok()?)
    }

    /// How `path` (whose metadata, links followed, is `theirs`) is this binary, if it is.
    fn sameness(&self, path: &Path, theirs: &std::fs::Metadata) -> Option<Sameness> {
        let mine = self.meta.as_ref()?;
        if (theirs.dev(), theirs.ino()) == (mine.dev(), mine.ino()) {
            let link = path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            let same_path = std::fs::canonicalize(path)
                .is_ok_and(|a| std::fs::canonicalize(self.path).is_ok_and(|b| a == b));
            return Some(match (link, same_path) {
                (true, _) => Sameness::SymbolicLink,
                (false, true) => Sameness::SamePath,
                (false, false) => Sameness::HardLink,
            });
        }
        let copy = theirs.is_file()
            && mine.is_file()
            && theirs.len() == mine.len()
            && same_bytes(path, self.path).unwrap_or(false);
        copy.then_some(Sameness::Copy)
    }
}

/// Compares two files of equal size, block by block, stopping at the first difference.
fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    const BLOCK: usize = 64 * 1024;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut block_a, mut block_b) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = read_full(&mut a, &mut block_a)?;
        let m = read_full(&mut b, &mut block_b)?;
        if n != m || block_a[..n] != block_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
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

    fn itself(target: Target) -> Sameness {
        match target {
            Target::Itself(itself) => itself.sameness,
            other => panic!("not refused as this program: {other:?}"),
        }
    }

    #[test]
    fn a_dispatch_orig_that_is_this_binary_is_refused_however_it_got_there() {
        let charm = Charm::new("self");
        let none = Config::default();
        std::fs::write(charm.0.join("dispatch.orig"), b"binary").unwrap();
        assert_eq!(
            itself(charm.resolve("hooks/install", &none)),
            Sameness::Copy
        );

        std::fs::remove_file(charm.0.join("dispatch.orig")).unwrap();
        std::fs::hard_link(charm.0.join("dispatch"), charm.0.join("dispatch.orig")).unwrap();
        assert_eq!(
            itself(charm.resolve("hooks/install", &none)),
            Sameness::HardLink
        );

        std::fs::remove_file(charm.0.join("dispatch.orig")).unwrap();
        std::os::unix::fs::symlink("dispatch", charm.0.join("dispatch.orig")).unwrap();
        assert_eq!(
            itself(charm.resolve("hooks/install", &none)),
            Sameness::SymbolicLink
        );

        let configured = Config {
            target: Some("dispatch".into()),
            ..Config::default()
        };
        let refused = charm.resolve("hooks/install", &configured);
        assert_eq!(itself(refused.clone()), Sameness::SamePath);
        let Target::Itself(refused) = refused else {
            unreachable!()
        };
        assert!(refused
            .reason()
            .contains("dispatch is this dispatch (the same file)"));
        assert!(refused.reason().contains("`target` in dispatch-trace.yaml"));
    }

    #[test]
    fn a_file_as_large_as_this_binary_but_different_is_a_target() {
        let charm = Charm::new("samesize");
        std::fs::write(charm.0.join("dispatch.orig"), b"binarY").unwrap();
        assert_eq!(
            charm.resolve("hooks/install", &Config::default()),
            Target::Program(charm.0.join("dispatch.orig"))
        );
    }

    #[test]
    fn a_charm_runs_nothing_at_all_only_without_any_script_of_its_own() {
        let charm = Charm::new("nothing");
        let this = charm.0.join("dispatch");
        assert!(runs_nothing_at_all(&charm.0, &this));
        // charmcraft's links back to dispatch, a copy of it, a file that is not executable.
        std::os::unix::fs::symlink("../dispatch", charm.0.join("hooks/install")).unwrap();
        std::fs::write(charm.0.join("hooks/start"), b"binary").unwrap();
        charm.script("hooks/stop", 0o644);
        std::fs::set_permissions(&this, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            charm.0.join("hooks/start"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(runs_nothing_at_all(&charm.0, &this));

        charm.script("hooks/config-changed", 0o755);
        assert!(!runs_nothing_at_all(&charm.0, &this));
        std::fs::remove_file(charm.0.join("hooks/config-changed")).unwrap();
        std::fs::create_dir_all(charm.0.join("actions")).unwrap();
        charm.script("actions/backup", 0o755);
        assert!(!runs_nothing_at_all(&charm.0, &this));
    }
}
