//! What `dispatch --version` says beyond the version: the commit the binary was built from
//! and the target it was built for, so that a binary found on a unit names its source.
//!
//! The commit is `DISPATCH_COMMIT` when the build sets it (a source without its `.git`), else
//! `git rev-parse HEAD` of this checkout (when it is this project's own repository, not one
//! it was vendored into), else `unknown`. It is the same for every build of a
//! commit, so builds stay reproducible.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DISPATCH_COMMIT");
    let commit = std::env::var("DISPATCH_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DISPATCH_COMMIT={}", commit.trim());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=DISPATCH_TARGET={target}");
}

/// HEAD's commit, and the files whose change means another one (rebuilt then, not before).
fn git_head() -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(["rev-parse", "--show-toplevel", "--absolute-git-dir"])
        .current_dir(&dir)
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let out = String::from_utf8(out.stdout).ok()?;
    let (top, git_dir) = out.trim().split_once('\n')?;
    // Only this project's own repository: a copy vendored inside a charm's repository must
    // not take the charm's commit for its own.
    if std::fs::canonicalize(top).ok()? != std::fs::canonicalize(&dir).ok()? {
        return None;
    }
    let git_dir = Path::new(git_dir.trim());
    // HEAD, the branch it names (loose, or packed), and packed refs: a commit or a checkout
    // changes one of them. Only paths that exist: cargo runs a build script every time when
    // one it watches is missing.
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            // Its directory, which changes when the branch file is created or replaced.
            watched.extend(git_dir.join(branch).parent().map(Path::to_path_buf));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&dir)
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}
