//! release/notes, which the release workflow runs before anything else: it prints the
//! CHANGELOG section of the version being tagged, and refuses a tag that is not Cargo.toml's
//! version or a section that is missing, empty or not yet dated (README "Releasing").

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util;
use crate::util::{code, text, Scratch};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn notes(version: &str, changelog: &Path) -> Output {
    Command::new(util::repo_root().join("release/notes"))
        .arg(version)
        .arg(changelog)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn refused(out: &Output, expected: &str) {
    assert_eq!(code(out), 1, "stdout: {}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).starts_with("release/notes: ") && text(&out.stderr).contains(expected),
        "expected {expected:?}, got: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_dated_section_is_the_release_notes_and_anything_else_is_refused() {
    let scratch = Scratch::new("release-notes");
    let changelog = scratch.path("CHANGELOG.md");
    let write = |s: &str| std::fs::write(&changelog, s).unwrap();

    write(&format!(
        "# Changelog\n\nNewest first.\n\n## 9.9.9 (2027-01-01)\n- later\n\n## {VERSION} \
         (2026-12-24)\n\nThe first release.\n\n### Installing\n- a part\n\n## 0.0.1 \
         (2026-01-01)\n- earlier\n"
    ));
    let out = notes(VERSION, &changelog);
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "The first release.\n\n### Installing\n- a part\n"
    );

    // The version the tag names is not Cargo.toml's.
    refused(
        &notes("9.9.9", &changelog),
        &format!("version 9.9.9 is not Cargo.toml's ({VERSION})"),
    );
    // Not dated yet: the release checklist was not done.
    write(&format!(
        "# Changelog\n\n## {VERSION} (unreleased)\n- a part\n"
    ));
    refused(
        &notes(VERSION, &changelog),
        &format!("section for {VERSION} is not dated ('## {VERSION} (unreleased)')"),
    );
    // No section, or an empty one.
    write("# Changelog\n\n## 0.0.1 (2026-01-01)\n- earlier\n");
    refused(
        &notes(VERSION, &changelog),
        &format!("has no section for {VERSION}"),
    );
    write(&format!(
        "# Changelog\n\n## {VERSION} (2026-12-24)\n\n## 0.0.1 (2026-01-01)\n- earlier\n"
    ));
    refused(
        &notes(VERSION, &changelog),
        &format!("section for {VERSION} is empty"),
    );
    refused(&notes(VERSION, &scratch.path("missing.md")), "no ");
    // Bad usage: exit 2.
    let out = Command::new(util::repo_root().join("release/notes"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).starts_with("usage: release/notes VERSION"));
}

#[test]
fn the_changelog_has_the_section_of_the_version_in_cargo_toml() {
    // Dated at release time only (the checklist's last edit): until then the one refusal
    // allowed is the missing date.
    let out = notes(VERSION, &util::repo_root().join("CHANGELOG.md"));
    if code(&out) != 0 {
        refused(
            &out,
            &format!("section for {VERSION} is not dated ('## {VERSION} (unreleased)')"),
        );
    }
}
