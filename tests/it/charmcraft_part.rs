//! charmcraft-part.yaml, run for real: craft-parts (the library charmcraft builds charms with,
//! installed from PyPI into target/test-venv by tests/run) runs the file's `dispatch-trace`
//! part after a part named `charm` that stands in for charmcraft's charm plugin: the `dump`
//! plugin over a copy of fixtures/charms/packed, the prime tree that plugin leaves (its
//! generated `dispatch`, `hooks/*` links to it, metadata.yaml). tests/craft/run_parts.py drives
//! craft-parts' LifecycleManager to the prime step.
//!
//! The part is loaded from the file, never copied here; only `source` (this checkout) and
//! `rust-channel` (`none`: the toolchain on PATH, as `which cargo` finds it) are overridden.
//! So the release build, the static linking of .cargo/config.toml inside craft-parts' build
//! dir, the stage filter and override-prime are the ones a charm gets.
//!
//! That release build (fat LTO) takes minutes, so it happens once: one test builds, then checks
//! in sequence what a charm author meets next (the part primed again, the charm changed). The
//! failures of override-prime are tested with the build swapped for the debug binaries (the
//! `dump` plugin instead of `rust`, the rest of the part as shipped), which takes a second.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::util;
use crate::util::{code, listing, mode, read, span, text, Charm, Scratch};
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
            "{} is missing: run tests/run once (it installs craft-parts==2.37.2 from PyPI, with \
             the rest of tests/requirements.txt, into target/test-venv)",
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

/// The part as charmcraft-part.yaml ships it.
fn shipped_part() -> Mapping {
    let path = util::repo_root().join("charmcraft-part.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
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

/// How the part's binaries are built.
enum Build {
    /// As shipped (the `rust` plugin, release profile), from this checkout with the system
    /// toolchain.
    Release,
    /// Not built: the `dump` plugin installs the debug binaries where the `rust` plugin would
    /// (`bin/`). For what happens after the build: the stage filter and override-prime.
    Prebuilt,
}

/// A craft-parts project in a scratch dir: `parts.yaml`, the work dir `work/`, and the charm
/// part's source, a copy of the fixture that a test may change.
struct Project {
    scratch: Scratch,
    charm_source: PathBuf,
}

impl Project {
    fn new(name: &str, build: Build) -> Project {
        let scratch = Scratch::new(name);
        let charm_source = scratch.path("charm-source");
        copy_tree(&util::repo_root().join(FIXTURE), &charm_source);

        let mut part = shipped_part();
        match build {
            Build::Release => {
                // A git URL and tag as shipped; this checkout (craft-parts leaves out target/,
                // where the work dir is) instead.
                part.retain(|key, _| key.as_str().is_some_and(|k| !k.starts_with("source")));
                part.insert(yaml("source"), yaml_path(&util::repo_root()));
                let channel = part.insert(yaml("rust-channel"), yaml("none"));
                assert_eq!(
                    channel,
                    Some(yaml("stable")),
                    "the part ships with rustup's stable toolchain: a charm's build environment \
                     has no cargo"
                );
            }
            Build::Prebuilt => {
                let bin = scratch.path("prebuilt/bin");
                std::fs::create_dir_all(&bin).unwrap();
                for name in ["dispatch", "dispatch-shim"] {
                    let built = util::bin_dir().join(name);
                    assert!(
                        built.exists(),
                        "{} is missing: build the workspace first (`cargo build --workspace`; \
                         tests/run does)",
                        built.display()
                    );
                    std::fs::copy(&built, bin.join(name)).unwrap();
                }
                part.retain(|key, _| {
                    key.as_str()
                        .is_some_and(|k| !k.starts_with("source") && !k.starts_with("rust-"))
                });
                part.insert(yaml("plugin"), yaml("dump"));
                part.insert(yaml("source"), yaml_path(&scratch.path("prebuilt")));
            }
        }

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
    assert!(
        !project.work("stage/bin").exists(),
        "the binaries went through stage (stage/bin)"
    );
    let install = project.work(&format!("parts/{PART}/install/bin"));
    for name in ["dispatch", "dispatch-shim"] {
        assert_eq!(mode(&prime.join(name)), 0o755, "mode of {name}");
        assert!(
            read(&prime.join(name)) == read(&install.join(name)),
            "{name} at the charm's root is not the one the part built"
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

#[test]
fn the_part_builds_both_binaries_and_wraps_the_charms_dispatch() {
    let env = craft_env();
    let cargo = system_cargo(&env);
    let original = read(&util::repo_root().join(FIXTURE).join("dispatch"));
    let project = Project::new("charmcraft-part", Build::Release);

    let started = Instant::now();
    let out = project.run_ok(&[]);
    eprintln!(
        "charmcraft-part: the release build and prime with {cargo} took {:.1?}",
        started.elapsed()
    );
    assert_wrapped(&project, &original);
    for name in ["dispatch", "dispatch-shim"] {
        let elf = Elf::read(&project.prime(name));
        assert!(
            elf.static_executable,
            "{name} is not a static non-PIE executable: .cargo/static-link did not link it"
        );
        assert!(
            !elf.symbol_table,
            "{name} has a symbol table: not built with Cargo.toml's release profile (strip)"
        );
    }
    // The hooks charmcraft links to dispatch reach the wrapper now.
    for hook in ["install", "start", "upgrade-charm"] {
        assert_eq!(
            std::fs::canonicalize(project.prime(&format!("hooks/{hook}"))).unwrap(),
            std::fs::canonicalize(project.prime("dispatch")).unwrap()
        );
    }
    assert!(
        text(&out.stdout).contains(&check_config_ok(&project)),
        "check-config did not pass on the primed charm: {}",
        text(&out.stdout)
    );

    // Deployed, the charm runs as Juju runs it: our dispatch runs the original, which calls a
    // hook tool, and the trace shows that call.
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

    // The charm changed: craft-parts primes the charm part again, then builds this part again
    // (after: [charm]), from the cargo target dir it kept, and wraps the new dispatch.
    let changed = format!("{}# changed\n", text(&original));
    replace_file(&project.charm_source.join("dispatch"), changed.as_bytes());
    let started = Instant::now();
    let out = project.run_ok(&[]);
    eprintln!(
        "charmcraft-part: packing again after a change of the charm took {:.1?}",
        started.elapsed()
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        log.contains(&format!("RERUN {PART} BUILD")),
        "the part was not built again: {log}"
    );
    assert!(
        !log.contains("Compiling "),
        "a change of the charm compiled the binaries again: {log}"
    );
    assert!(text(&out.stdout).contains(&check_config_ok(&project)));
    assert_wrapped(&project, changed.as_bytes());
}

#[test]
fn a_charm_without_a_dispatch_fails_the_build_and_says_why() {
    let project = Project::new("charmcraft-part-no-dispatch", Build::Prebuilt);
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
    let project = Project::new("charmcraft-part-dispatch-orig", Build::Prebuilt);
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
    let project = Project::new("charmcraft-part-bad-config", Build::Prebuilt);
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
