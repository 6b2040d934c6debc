//! The two charmcraft parts, run for real: craft-parts (the library charmcraft builds charms
//! with, installed from PyPI into target/test-venv by tests/run) runs a parts file's
//! `dispatch-trace` part after a part named `charm` that stands in for charmcraft's charm
//! plugin: the `dump` plugin over a copy of fixtures/charms/packed, the prime tree that plugin
//! leaves (its generated `dispatch`, `hooks/*` links to it, metadata.yaml).
//! tests/craft/run_parts.py applies charmcraft's grammar (craft-application's) and drives
//! craft-parts' LifecycleManager to the prime step.
//!
//! The parts are loaded from the files, never copied here:
//! - charmcraft-part-prebuilt.yaml as release/prebuilt-part fills it for a release directory
//!   that is also its download URL. Most tests use stand-in tarballs in the release's layout
//!   that hold the debug binaries (seconds to make); the wrapping they check is release/
//!   wrap-charm, which both parts run.
//! - charmcraft-part.yaml with only `source` (a clean clone) and `rust-channel` (`none`: the
//!   toolchain on PATH) overridden, so the release build, the static linking of
//!   .cargo/config.toml inside craft-parts' build dir, the stage filter and override-prime are
//!   the ones a charm gets. That build takes minutes, so one test does it, run by tests/release
//!   after release/build made the tarball of the same commit: the two parts must prime the same
//!   bytes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::{code, listing, mode, read, read_text, span, text, Charm, Scratch};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

/// The part's name in charmcraft-part.yaml.
const PART: &str = "dispatch-trace";
/// The prime tree the stand-in `charm` part dumps.
const FIXTURE: &str = "fixtures/charms/packed";
/// What the primed charm holds once wrapped: the fixture's files, the two binaries and
/// `dispatch.orig`. No `bin/`, no store: check-config creates nothing.
const WRAPPED: [&str; 6] = [
    "dispatch",
    "dispatch-shim",
    "dispatch.orig",
    "hooks",
    "metadata.yaml",
    "src",
];

fn venv_bin() -> PathBuf {
    let bin = util::repo_root().join("target/test-venv/bin");
    for tool in ["python", "craftctl"] {
        assert!(
            bin.join(tool).exists(),
            "{} is missing: run tests/run once (it installs craft-parts and craft-application from PyPI, \
             with the rest of tests/requirements.txt, into target/test-venv)",
            bin.join(tool).display()
        );
    }
    bin
}

/// Whether a variable of this test's environment reaches craft-parts and the build it runs:
/// the toolchain's (found through PATH, HOME, CARGO_HOME, RUSTUP_HOME), the network's (proxies,
/// CA bundles, cargo's registry and network settings), and nothing of `cargo test`'s own
/// (CARGO_PKG_*, CARGO_MANIFEST_DIR...), which would leak into the nested cargo.
fn passed_through(name: &str) -> bool {
    const NAMES: [&str; 11] = [
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TMPDIR",
        "CC",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    const PREFIXES: [&str; 6] = [
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_BUILD_JOBS",
    ];
    NAMES.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || name.to_ascii_lowercase().ends_with("_proxy")
}

/// craft-parts' environment: the variables passed through, with the venv's bin first on PATH
/// (craftctl, which override-prime calls, lives there, as it does in charmcraft's).
fn craft_env() -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| passed_through(name))
        .collect();
    let path = env.get("PATH").cloned().unwrap_or_default();
    env.insert("PATH".into(), format!("{}:{path}", venv_bin().display()));
    env
}

/// `cargo --version` of the cargo craft-parts will find, or a clear failure.
fn system_cargo(env: &BTreeMap<String, String>) -> String {
    let out = Command::new("cargo")
        .arg("--version")
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => text(&out.stdout).trim().to_string(),
        other => panic!(
            "no working `cargo` on PATH ({other:?}): this test builds the part with the system \
             toolchain (rust-channel: none)"
        ),
    }
}

/// The `dispatch-trace` part of a parts file of this repository (or of a filled template).
fn part_in(path: &Path) -> Mapping {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Yaml =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    doc["parts"][PART]
        .as_mapping()
        .unwrap_or_else(|| panic!("{} has no parts.{PART}", path.display()))
        .clone()
}

fn yaml(s: &str) -> Yaml {
    Yaml::String(s.to_string())
}

fn yaml_path(path: &Path) -> Yaml {
    yaml(path.to_str().unwrap())
}

/// The release's version, as the tarballs and the part name it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The architectures charmcraft-part-prebuilt.yaml has a checksum for.
const RELEASE_ARCHES: [&str; 2] = ["amd64", "arm64"];

/// This machine's architecture as Debian and craft name it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no release tarball is made for {other}"),
    }
}

fn tarball_name(arch: &str) -> String {
    format!("dispatch-trace-{VERSION}-{arch}.tar.gz")
}

/// `sha256sum`'s line for a file: its digest, two spaces, its name.
fn sha256_line(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let digest = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!(
        "{digest}  {}\n",
        path.file_name().unwrap().to_str().unwrap()
    )
}

/// A tarball in the release's layout (release/build's): `dispatch-trace-<version>-<arch>/`
/// holding the debug binaries, this checkout's wrap-charm and a README naming `arch`, so a
/// test can tell which tarball a part unpacked. Seconds to make, not minutes.
fn stand_in_tarball(dist: &Path, arch: &str) -> PathBuf {
    let name = tarball_name(arch);
    let dir = dist.join(name.trim_end_matches(".tar.gz"));
    std::fs::create_dir_all(&dir).unwrap();
    for binary in ["dispatch", "dispatch-shim"] {
        let built = util::bin_dir().join(binary);
        assert!(
            built.exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`; tests/run does)",
            built.display()
        );
        std::fs::copy(&built, dir.join(binary)).unwrap();
    }
    std::fs::copy(
        util::repo_root().join("release/wrap-charm"),
        dir.join("wrap-charm"),
    )
    .unwrap();
    std::fs::write(dir.join("README"), format!("stand-in release for {arch}\n")).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -cf - -C "$1" "$2" | gzip -1 > "$3""#)
        .args(["sh".as_ref(), dist.as_os_str(), dir.file_name().unwrap()])
        .arg(dist.join(&name))
        .status()
        .unwrap();
    assert!(status.success(), "tar of {}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();
    dist.join(name)
}

/// A release made of stand-in tarballs for every architecture the prebuilt part lists, with
/// its SHA256SUMS: made once, read by every test (each fills the part in a copy of its own).
fn stand_in_release() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let dist = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stand-in-release-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dist);
        std::fs::create_dir_all(&dist).unwrap();
        let mut sums = String::new();
        for arch in RELEASE_ARCHES {
            sums.push_str(&sha256_line(&stand_in_tarball(&dist, arch)));
        }
        std::fs::write(dist.join("SHA256SUMS"), sums).unwrap();
        dist
    })
}

/// A release directory of a test's own: links to `tarballs` (a tarball per architecture) and
/// their SHA256SUMS, where release/prebuilt-part may write the part.
fn release_dir(scratch: &Scratch, tarballs: &[PathBuf]) -> PathBuf {
    let dist = scratch.path("release");
    std::fs::create_dir_all(&dist).unwrap();
    let mut sums = String::new();
    for tarball in tarballs {
        let link = dist.join(tarball.file_name().unwrap());
        std::os::unix::fs::symlink(tarball, &link).unwrap();
        sums.push_str(&sha256_line(&link));
    }
    std::fs::write(dist.join("SHA256SUMS"), sums).unwrap();
    dist
}

/// The stand-in release's tarballs.
fn stand_in_tarballs() -> Vec<PathBuf> {
    RELEASE_ARCHES
        .iter()
        .map(|arch| stand_in_release().join(tarball_name(arch)))
        .collect()
}

/// `release/prebuilt-part BASE_URL DIST`.
fn fill_prebuilt_part(base_url: &Path, dist: &Path) -> Output {
    Command::new(util::repo_root().join("release/prebuilt-part"))
        .arg(base_url)
        .arg(dist)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Which of the two parts, and what it is made from.
enum Part {
    /// charmcraft-part.yaml building from a source tree, with the toolchain on PATH.
    FromSource(PathBuf),
    /// charmcraft-part-prebuilt.yaml as release/prebuilt-part fills it for the release in
    /// this directory (its SHA256SUMS and tarballs), which is also the URL it downloads from.
    Prebuilt(PathBuf),
}

/// A craft-parts project in a scratch dir: `parts.yaml`, the work dir `work/`, and the charm
/// part's source, a copy of the fixture that a test may change.
struct Project {
    scratch: Scratch,
    charm_source: PathBuf,
}

impl Project {
    fn new(name: &str, part: Part) -> Project {
        let scratch = Scratch::new(name);
        Project::in_scratch(scratch, part)
    }

    /// A stand-in release of the prebuilt part, in a project of its own.
    fn prebuilt(name: &str) -> Project {
        let scratch = Scratch::new(name);
        let dist = release_dir(&scratch, &stand_in_tarballs());
        Project::in_scratch(scratch, Part::Prebuilt(dist))
    }

    fn in_scratch(scratch: Scratch, part: Part) -> Project {
        let charm_source = scratch.path("charm-source");
        copy_tree(&util::repo_root().join(FIXTURE), &charm_source);

        let part = match part {
            Part::FromSource(source) => {
                let mut part = part_in(&util::repo_root().join("charmcraft-part.yaml"));
                // A git URL and tag as shipped; the given tree instead (craft-parts leaves out
                // target/, where the work dir may be).
                part.retain(|key, _| key.as_str().is_some_and(|k| !k.starts_with("source")));
                part.insert(yaml("source"), yaml_path(&source));
                let channel = part.insert(yaml("rust-channel"), yaml("none"));
                assert_eq!(
                    channel,
                    Some(yaml("stable")),
                    "the part ships with rustup's stable toolchain: a charm's build environment \
                     has no cargo"
                );
                part
            }
            Part::Prebuilt(dist) => {
                let out = fill_prebuilt_part(&dist, &dist);
                assert_eq!(
                    code(&out),
                    0,
                    "release/prebuilt-part: {}",
                    text(&out.stderr)
                );
                part_in(&dist.join("charmcraft-part-prebuilt.yaml"))
            }
        };

        let mut charm = Mapping::new();
        charm.insert(yaml("plugin"), yaml("dump"));
        charm.insert(yaml("source"), yaml_path(&charm_source));
        let mut parts = Mapping::new();
        parts.insert(yaml("charm"), Yaml::Mapping(charm));
        parts.insert(yaml(PART), Yaml::Mapping(part));
        let mut doc = Mapping::new();
        doc.insert(yaml("parts"), Yaml::Mapping(parts));
        std::fs::write(
            scratch.path("parts.yaml"),
            serde_yaml::to_string(&doc).unwrap(),
        )
        .unwrap();
        Project {
            scratch,
            charm_source,
        }
    }

    fn work(&self, rel: &str) -> PathBuf {
        self.scratch.path("work").join(rel)
    }

    fn prime(&self, rel: &str) -> PathBuf {
        self.work("prime").join(rel)
    }

    /// The part's install dir: where the binaries were built or unpacked.
    fn installed(&self, rel: &str) -> PathBuf {
        self.work(&format!("parts/{PART}/install")).join(rel)
    }

    /// Runs the parts to the prime step (`args`: run_parts.py's, e.g. `--rerun PART`).
    fn run(&self, args: &[&str]) -> Output {
        let python = venv_bin().join("python");
        Command::new(python)
            .arg(util::repo_root().join("tests/craft/run_parts.py"))
            .arg("--parts")
            .arg(self.scratch.path("parts.yaml"))
            .arg("--work-dir")
            .arg(self.scratch.path("work"))
            .args(args)
            .current_dir(&self.scratch.root)
            .env_clear()
            .envs(craft_env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            code(&out),
            0,
            "craft-parts failed\n--- stdout\n{}\n--- stderr\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// Runs to prime, timed.
    fn run_timed(&self, what: &str) -> (Output, Duration) {
        let started = Instant::now();
        let out = self.run_ok(&[]);
        let took = started.elapsed();
        eprintln!("charmcraft part: {what} took {took:.1?}");
        (out, took)
    }
}

/// `cp -a`: modes and the fixture's symlinks (`hooks/install -> ../dispatch`) kept.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Replaces a file by a new one (a new inode, as an editor saves), never writing into the old
/// one: craft-parts hard-links the charm part's files from its source all the way to prime.
fn replace_file(path: &Path, contents: &[u8]) {
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// What an ELF file's headers say about how it was linked and stripped.
struct Elf {
    /// `ET_EXEC` (a non-PIE executable) with no `PT_INTERP`: statically linked, no loader.
    static_executable: bool,
    /// Has a `SHT_SYMTAB` section: not stripped.
    symbol_table: bool,
}

impl Elf {
    /// Reads a 64-bit little-endian ELF file (x86_64 and aarch64, where charms run).
    fn read(path: &Path) -> Elf {
        let b = read(path);
        assert!(
            b.starts_with(b"\x7fELF"),
            "{} is not an ELF binary",
            path.display()
        );
        assert_eq!(
            (b[4], b[5]),
            (2, 1),
            "{}: not a 64-bit little-endian ELF",
            path.display()
        );
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
        const ET_EXEC: usize = 2;
        const PT_INTERP: u32 = 3;
        const SHT_SYMTAB: u32 = 2;
        let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
        let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
        let interpreter = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
        Elf {
            static_executable: u16_at(0x10) == ET_EXEC && !interpreter,
            symbol_table: (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == SHT_SYMTAB),
        }
    }
}

/// The wrapped charm's root: the two binaries the part installed, mode 0755, beside
/// `dispatch.orig` holding `original`, executable; nothing else added, nothing staged.
fn assert_wrapped(project: &Project, original: &[u8]) {
    let prime = project.prime("");
    assert_eq!(listing(&prime), WRAPPED, "the primed charm's root");
    assert_eq!(
        listing(&project.work("stage")),
        listing(&util::repo_root().join(FIXTURE)),
        "the part put something in stage: only the charm part's files belong there"
    );
    for name in ["dispatch", "dispatch-shim"] {
        assert_eq!(mode(&prime.join(name)), 0o755, "mode of {name}");
        assert!(
            read(&prime.join(name)) == read(&project.installed(name)),
            "{name} at the charm's root is not the one the part built or unpacked"
        );
    }
    assert!(
        read(&project.prime("dispatch.orig")) == original,
        "dispatch.orig is not the charm's dispatch: {}",
        text(&read(&project.prime("dispatch.orig")))
    );
    assert_eq!(mode(&project.prime("dispatch.orig")), 0o755);
    // The charm's file was moved, never written into: the staged one, the same file before
    // the move, still holds the charm's dispatch.
    assert!(
        read(&project.work("stage/dispatch")) == original,
        "the charm part's staged dispatch was written into"
    );
}

/// The output of `dispatch check-config` run on the primed charm, as override-prime prints it.
fn check_config_ok(project: &Project) -> String {
    let charm_dir = std::fs::canonicalize(project.prime("")).unwrap();
    format!(
        "ok: target: {}\nok: store: {} (the first hook creates it)\nconfig ok\n",
        charm_dir.join("dispatch.orig").display(),
        charm_dir.join(".dispatch-trace.db").display()
    )
}

/// The packed charm deployed: a copy of the prime dir, with fake hook tools beside it.
fn deploy(prime: &Path) -> Charm {
    let scratch = Scratch::new("charmcraft-part-deployed");
    let dir = scratch.path("charm");
    copy_tree(prime, &dir);
    Charm::around(scratch, dir)
}

/// The primed charm, deployed, runs as Juju runs it: our dispatch runs the original, which
/// calls a hook tool, and the trace shows that call. charmcraft's hooks reach the wrapper.
fn assert_runs_traced(project: &Project) {
    for hook in ["install", "start", "upgrade-charm"] {
        assert_eq!(
            std::fs::canonicalize(project.prime(&format!("hooks/{hook}"))).unwrap(),
            std::fs::canonicalize(project.prime("dispatch")).unwrap()
        );
    }
    let charm = deploy(&project.prime(""));
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "packed-charm handled hooks/install\n");
    assert_eq!(text(&out.stderr), "");
    let calls = charm.tool_calls();
    assert_eq!(calls.len(), 1, "hook-tool calls: {calls:?}");
    assert_eq!(calls[0]["tool"], "status-set");
    assert_eq!(
        calls[0]["args"],
        serde_json::json!(["active", "handled hooks/install"])
    );
    let listed = charm.tool(&["traces", "--format", "json", "--last", "1"]);
    assert_eq!(code(&listed), 0, "stderr: {}", text(&listed.stderr));
    let traces: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let traces = traces.as_array().unwrap();
    assert_eq!(traces.len(), 1, "{traces:#?}");
    let trace = &traces[0];
    assert_eq!(trace["event"], "install");
    let charm_span = span(trace, "charm");
    assert_eq!(charm_span["attributes"]["process.exit.code"], 0);
    let status_set = span(trace, "status-set");
    assert_eq!(status_set["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(status_set["parent_span_id"], charm_span["span_id"]);
    assert_eq!(status_set["attributes"]["juju.status"], "active");
}

/// Every entry under `dir`, recursively, sorted, with its type, mode and content (a file's
/// SHA-256 rather than its bytes; a symlink's target), one line each: two trees are the same
/// when their descriptions are.
fn describe_tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, lines: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                lines.push(format!("{rel} symlink -> {}", target.display()));
            } else if meta.is_dir() {
                lines.push(format!("{rel}/ dir {mode:o}"));
                walk(root, &path, lines);
            } else {
                let digest = sha256_line(&path);
                let digest = digest.split_whitespace().next().unwrap();
                lines.push(format!("{rel} file {mode:o} {} {digest}", meta.len()));
            }
        }
    }
    let mut lines = Vec::new();
    walk(dir, dir, &mut lines);
    lines
}

/// The keys by which a part wraps the charm: the two part files must not differ in them.
const WRAPPING_KEYS: [&str; 3] = ["after", "stage", "override-prime"];

#[test]
fn both_parts_wrap_the_charm_with_the_same_steps() {
    let from_source = part_in(&util::repo_root().join("charmcraft-part.yaml"));
    let prebuilt = part_in(&util::repo_root().join("charmcraft-part-prebuilt.yaml"));
    for key in WRAPPING_KEYS {
        assert!(
            from_source.contains_key(key),
            "charmcraft-part.yaml has no {key}"
        );
        assert_eq!(
            from_source.get(key),
            prebuilt.get(key),
            "charmcraft-part.yaml and charmcraft-part-prebuilt.yaml differ in {key}"
        );
    }
    // The release the from-source part's example builds is this version's.
    assert_eq!(
        from_source["source-tag"],
        yaml(&format!("v{VERSION}")),
        "charmcraft-part.yaml's source-tag is not Cargo.toml's version (README \"Releasing\")"
    );
    // The wrapping itself is one script, release/wrap-charm, which both install beside the
    // binaries: from-source by release/cargo-build, prebuilt from the tarball.
    assert_eq!(
        from_source["override-prime"],
        yaml("craftctl default\n\"$CRAFT_PART_INSTALL/wrap-charm\"\n")
    );
    assert_eq!(
        from_source["override-build"],
        yaml("release/cargo-build \"$CRAFT_PART_INSTALL\"")
    );

    // The snippet in the tarball's README is the template's part, placeholders aside.
    let readme = std::fs::read_to_string(util::repo_root().join("release/README.dist")).unwrap();
    let snippet = readme
        .split_once("  parts:\n")
        .expect("release/README.dist has no part snippet")
        .1
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("  "))
        .map(|line| line.strip_prefix("  ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let snippet: Yaml = serde_yaml::from_str(&snippet).unwrap();
    let snippet = snippet[PART]
        .as_mapping()
        .expect("no dispatch-trace in the README's snippet");
    let keys = |part: &Mapping| {
        part.keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(snippet),
        keys(&prebuilt),
        "the README's snippet has other keys"
    );
    for key in ["plugin", "source-type", "after", "stage", "override-prime"] {
        assert_eq!(
            snippet.get(key),
            prebuilt.get(key),
            "the README's snippet: {key}"
        );
    }
}

#[test]
fn the_prebuilt_part_unpacks_the_tarball_for_the_architecture_and_wraps_the_charm() {
    let original = read(&util::repo_root().join(FIXTURE).join("dispatch"));
    let project = Project::prebuilt("prebuilt-part");
    let (out, _) = project.run_timed("the prebuilt part (stand-in tarballs), to prime");
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !log.contains("not installing packages"),
        "the prebuilt part asks for build packages: {log}"
    );
    assert_wrapped(&project, &original);
    assert_eq!(
        read_text(&project.installed("README")),
        format!("stand-in release for {}\n", host_arch()),
        "not the tarball of this machine's architecture"
    );
    assert!(
        text(&out.stdout).contains(&check_config_ok(&project)),
        "check-config did not pass on the primed charm: {}",
        text(&out.stdout)
    );
    assert_runs_traced(&project);

    // The part primed again (as when its definition changes): already wrapped, so
    // dispatch.orig stays the charm's and only the binaries are put back.
    let out = project.run_ok(&["--rerun", PART]);
    assert!(
        text(&out.stdout).contains("dispatch-trace: already wrapped"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains(&check_config_ok(&project)));
    assert_wrapped(&project, &original);

    // The charm changed: craft-parts primes the charm part again, then this part (after:
    // [charm]), which wraps the new dispatch.
    let changed = format!("{}# changed\n", text(&original));
    replace_file(&project.charm_source.join("dispatch"), changed.as_bytes());
    let out = project.run_ok(&[]);
    assert!(text(&out.stdout).contains(&check_config_ok(&project)));
    assert_wrapped(&project, changed.as_bytes());

    // A charm built for the other architecture the release has gets that one's tarball,
    // verified by that one's checksum; built here, on another architecture, it is refused at
    // prime: neither check-config here nor the charm there could run the binaries of both.
    let other = RELEASE_ARCHES.iter().find(|a| **a != host_arch()).unwrap();
    let project = Project::prebuilt("prebuilt-part-other-arch");
    let out = project.run(&["--build-for", other]);
    assert_eq!(
        read_text(&project.installed("README")),
        format!("stand-in release for {other}\n")
    );
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    let host = host_arch();
    assert!(
        text(&out.stderr).contains(&format!(
            "dispatch-trace: the charm is built on {host} for {other}; this part needs them to \
             be the same: build it on {other} (in charmcraft.yaml, platforms: <name>: build-on: \
             [{other}], build-for: [{other}])\n"
        )),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        !project.prime("dispatch-shim").exists() && !project.prime("dispatch.orig").exists(),
        "the charm was wrapped anyway"
    );
}

#[test]
fn the_prebuilt_part_refuses_a_tarball_that_is_not_the_releases_and_an_architecture_it_lacks() {
    // The tarball on the server is not the one the checksum was taken of.
    let scratch = Scratch::new("prebuilt-part-tampered");
    let dist = release_dir(&scratch, &stand_in_tarballs());
    let project = Project::in_scratch(scratch, Part::Prebuilt(dist.clone()));
    let tarball = dist.join(tarball_name(host_arch()));
    let mut bytes = read(&tarball);
    bytes.extend_from_slice(b"\0");
    std::fs::remove_file(&tarball).unwrap();
    std::fs::write(&tarball, bytes).unwrap();
    let out = project.run(&[]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("checksum mismatch for part 'dispatch-trace'"),
        "no word of the checksum: {}",
        text(&out.stderr)
    );
    assert!(!project.prime("dispatch-shim").exists());
    assert!(!project.installed("dispatch").exists());

    // A charm built for an architecture the release has no tarball for: refused by the
    // grammar, before anything is downloaded.
    let project = Project::prebuilt("prebuilt-part-riscv64");
    let out = project.run(&["--build-for", "riscv64"]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("Unable to satisfy 'to arm64', failure forced"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(!project.work("").exists(), "something was pulled");
}

#[test]
fn release_prebuilt_part_writes_no_part_it_cannot_verify() {
    let scratch = Scratch::new("prebuilt-part-fill");
    let dist = release_dir(&scratch, &stand_in_tarballs());
    let out = fill_prebuilt_part(Path::new("https://example.invalid/download/v1"), &dist);
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    let filled = read_text(&dist.join("charmcraft-part-prebuilt.yaml"));
    assert!(!filled.contains('@'), "placeholders left: {filled}");
    let part = part_in(&dist.join("charmcraft-part-prebuilt.yaml"));
    assert_eq!(
        part["source"],
        yaml(&format!(
            "https://example.invalid/download/v1/dispatch-trace-{VERSION}-$CRAFT_ARCH_BUILD_FOR.tar.gz"
        ))
    );
    let sums = read_text(&dist.join("SHA256SUMS"));
    for line in sums.lines() {
        let digest = line.split_whitespace().next().unwrap();
        assert!(
            filled.contains(&format!("sha256/{digest}")),
            "{digest} not in {filled}"
        );
    }

    // An architecture the template lists, without its tarball.
    std::fs::write(dist.join("SHA256SUMS"), sums.lines().next().unwrap()).unwrap();
    std::fs::remove_file(dist.join("charmcraft-part-prebuilt.yaml")).unwrap();
    let out = fill_prebuilt_part(Path::new("https://example.invalid/v1"), &dist);
    assert_eq!(code(&out), 1);
    assert_eq!(
        text(&out.stderr),
        format!(
            "release/prebuilt-part: {}/SHA256SUMS has no SHA-256 for {}, which the part lists\n",
            dist.display(),
            tarball_name("arm64")
        )
    );
    assert!(!dist.join("charmcraft-part-prebuilt.yaml").exists());

    // A tarball the template has no checksum entry for (on a last line without its newline).
    std::fs::write(
        dist.join("SHA256SUMS"),
        format!("{sums}{}  {}", "0".repeat(64), tarball_name("riscv64")),
    )
    .unwrap();
    let out = fill_prebuilt_part(Path::new("https://example.invalid/v1"), &dist);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains(&format!(
            "has {}, but charmcraft-part-prebuilt.yaml has no checksum entry for riscv64",
            tarball_name("riscv64")
        )),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(!dist.join("charmcraft-part-prebuilt.yaml").exists());

    // No release there at all.
    let out = fill_prebuilt_part(
        Path::new("https://example.invalid/v1"),
        &scratch.path("none"),
    );
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("no SHA256SUMS in"),
        "{}",
        text(&out.stderr)
    );
}

/// The release tarball release/build made of a commit (`DISPATCH_TEST_RELEASE_DIST`) and a
/// clean clone of that commit (`DISPATCH_TEST_PART_SOURCE`): tests/release makes both.
fn release_under_test() -> (PathBuf, PathBuf) {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "{name} is not set: this test compares the from-source part with the release \
                 tarball of the same commit; run tests/release, which builds the tarball in a \
                 clean clone and then runs it"
                )
            })
    };
    (
        var("DISPATCH_TEST_RELEASE_DIST"),
        var("DISPATCH_TEST_PART_SOURCE"),
    )
}

#[test]
#[ignore = "builds the release for minutes from a clean clone: tests/release (in tests/run) \
            makes the release tarball of the commit and then runs this test"]
fn the_from_source_part_primes_the_charm_the_prebuilt_part_primes_from_the_release() {
    let (dist, source) = release_under_test();
    let env = craft_env();
    let cargo = system_cargo(&env);
    let original = read(&util::repo_root().join(FIXTURE).join("dispatch"));

    // The prebuilt part: the release's tarball for this machine, and a stand-in for the
    // other architecture the part lists.
    let scratch = Scratch::new("release-prebuilt-part");
    let tarballs: Vec<PathBuf> = RELEASE_ARCHES
        .iter()
        .map(|arch| match *arch == host_arch() {
            true => dist.join(tarball_name(arch)),
            false => stand_in_release().join(tarball_name(arch)),
        })
        .collect();
    let prebuilt_dist = release_dir(&scratch, &tarballs);
    let prebuilt = Project::in_scratch(scratch, Part::Prebuilt(prebuilt_dist));
    let (_, prebuilt_took) = prebuilt.run_timed("the prebuilt part (release tarball), to prime");
    assert_wrapped(&prebuilt, &original);

    // The from-source part, built with the toolchain on PATH.
    let from_source = Project::new("release-from-source-part", Part::FromSource(source));
    let (out, from_source_took) = from_source.run_timed(&format!(
        "the from-source part (release build with {cargo}), to prime"
    ));
    eprintln!(
        "charmcraft part: prime in {prebuilt_took:.1?} (prebuilt) vs {from_source_took:.1?} \
         (from source)"
    );
    assert_wrapped(&from_source, &original);
    assert!(
        text(&out.stdout).contains(&check_config_ok(&from_source)),
        "check-config did not pass on the primed charm: {}",
        text(&out.stdout)
    );
    for name in ["dispatch", "dispatch-shim"] {
        let elf = Elf::read(&from_source.prime(name));
        assert!(
            elf.static_executable,
            "{name} is not a static non-PIE executable: .cargo/static-link did not link it"
        );
        assert!(
            !elf.symbol_table,
            "{name} has a symbol table: not built with Cargo.toml's release profile (strip)"
        );
    }

    // The same charm, byte for byte, mode for mode.
    assert_eq!(
        describe_tree(&from_source.prime("")),
        describe_tree(&prebuilt.prime("")),
        "the two parts primed different charms"
    );
    assert_runs_traced(&from_source);

    // The charm changed: craft-parts primes the charm part again, then builds this part again
    // (after: [charm]), from the cargo target dir it kept, and wraps the new dispatch.
    let changed = format!("{}# changed\n", text(&original));
    replace_file(
        &from_source.charm_source.join("dispatch"),
        changed.as_bytes(),
    );
    let (out, _) = from_source.run_timed("the from-source part, after a change of the charm");
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        log.contains(&format!("RERUN {PART} BUILD")),
        "the part was not built again: {log}"
    );
    assert!(
        !log.contains("Compiling "),
        "a change of the charm compiled the binaries again: {log}"
    );
    assert!(text(&out.stdout).contains(&check_config_ok(&from_source)));
    assert_wrapped(&from_source, changed.as_bytes());
}

#[test]
fn a_charm_without_a_dispatch_fails_the_build_and_says_why() {
    let project = Project::prebuilt("charmcraft-part-no-dispatch");
    // A hooks-only charm: no dispatch, the hooks themselves are the scripts.
    std::fs::remove_file(project.charm_source.join("dispatch")).unwrap();
    std::fs::remove_dir_all(project.charm_source.join("hooks")).unwrap();
    std::fs::create_dir(project.charm_source.join("hooks")).unwrap();
    replace_file(
        &project.charm_source.join("hooks/install"),
        b"#!/bin/sh\nexec ./src/charm.sh\n",
    );

    let out = project.run(&[]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    let expected = format!(
        "dispatch-trace: no dispatch to wrap in the primed charm ({}/dispatch is missing): this \
         part must come after the part that writes the charm's dispatch (after: [charm]; \
         charmcraft's charm, python, uv and poetry plugins write one)\n",
        project.work("prime").display()
    );
    assert!(
        text(&out.stderr).contains(&expected),
        "no clear message; stderr: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("'override-prime' in part 'dispatch-trace' failed"));
    assert_eq!(
        listing(&project.prime("")),
        ["hooks", "metadata.yaml", "src"]
    );
}

#[test]
fn a_charm_that_ships_its_own_dispatch_orig_is_left_alone_and_fails_the_build() {
    let project = Project::prebuilt("charmcraft-part-dispatch-orig");
    let theirs = b"#!/bin/sh\n# another wrapper's target\nexec ./src/charm.sh\n";
    replace_file(&project.charm_source.join("dispatch.orig"), theirs);

    let out = project.run(&[]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(
            "dispatch-trace: the charm itself ships a dispatch.orig, so it looks wrapped \
             already; refusing to overwrite it: remove it from the charm, or remove this part\n"
        ),
        "no clear message; stderr: {}",
        text(&out.stderr)
    );
    let original = read(&util::repo_root().join(FIXTURE).join("dispatch"));
    assert!(read(&project.prime("dispatch")) == original);
    assert!(read(&project.prime("dispatch.orig")) == theirs);
    assert!(!project.prime("dispatch-shim").exists());
}

#[test]
fn a_charm_with_a_bad_config_file_fails_the_build_at_check_config() {
    let project = Project::prebuilt("charmcraft-part-bad-config");
    replace_file(
        &project.charm_source.join("dispatch-trace.yaml"),
        b"enabeld: false\n",
    );

    let out = project.run(&[]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(
        said.contains("PROBLEM: ")
            && said.contains("dispatch-trace.yaml")
            && said.contains("enabeld"),
        "check-config did not name the problem: {said}"
    );
    assert!(
        text(&out.stderr).contains("dispatch: 1 problem(s) found"),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn wrap_charm_run_by_hand_says_where_it_belongs_and_touches_nothing() {
    let scratch = Scratch::new("wrap-charm-by-hand");
    let charm = scratch.path("charm");
    copy_tree(&util::repo_root().join(FIXTURE), &charm);
    let before = describe_tree(&charm);
    let out = Command::new(util::repo_root().join("release/wrap-charm"))
        .current_dir(&charm)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        "dispatch-trace: wrap-charm runs in a charmcraft part's prime step (override-prime), \
         where CRAFT_PRIME and CRAFT_STAGE are set; to wrap a charm by hand, see the README\n"
    );
    assert_eq!(
        describe_tree(&charm),
        before,
        "wrap-charm changed the charm"
    );
}
