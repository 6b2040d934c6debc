//! Shared harness for the integration tests: a scratch charm directory holding the real
//! `dispatch` and `dispatch-shim` binaries and a fixture charm, a tools directory of fake Juju
//! hook tools (`fixtures/fake-juju`) with their state directory, and helpers to run a
//! dispatch the way Juju does (environment built from scratch, cwd = charm dir, stdin
//! /dev/null) or to run the charm bare for comparison.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod outcome;
pub mod proxy;
pub mod receiver;
pub mod rotel;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

pub const UNIT: &str = "myapp/0";

/// Directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let dispatch = PathBuf::from(env!("CARGO_BIN_EXE_dispatch"));
    dispatch.parent().unwrap().to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`; tests/run does)",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch area: `charm/`, `tools/`, `state/` under target/tmp, removed on drop unless the
/// test failed (then kept for a look).
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Scratch { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Places a built binary in the charm dir: a hard link when possible (fast), else a copy.
fn install_binary(name: &str, dir: &Path) {
    let from = built(name);
    let to = dir.join(name);
    if std::fs::hard_link(&from, &to).is_err() {
        std::fs::copy(&from, &to).unwrap();
    }
}

/// A charm directory with our dispatch installed in front of a fixture charm, plus fake hook
/// tools and their state.
pub struct Charm {
    pub scratch: Scratch,
    pub dir: PathBuf,
    pub tools: PathBuf,
    pub state: PathBuf,
    /// Extra environment for every run (after the Juju-like base).
    pub env: BTreeMap<String, String>,
}

impl Charm {
    /// `fixture` is a directory under fixtures/charms (e.g. "shell").
    pub fn new(fixture: &str) -> Charm {
        let scratch = Scratch::new(fixture);
        let dir = scratch.path("charm");
        copy_dir(&repo_root().join("fixtures/charms").join(fixture), &dir);
        install_binary("dispatch", &dir);
        install_binary("dispatch-shim", &dir);
        Charm::around(scratch, dir)
    }

    /// A charm already in `dir` (inside `scratch`), given fake hook tools and their state.
    pub fn around(scratch: Scratch, dir: PathBuf) -> Charm {
        let tools = scratch.path("tools");
        let status = Command::new(built("fake-jujuc"))
            .arg("--install-tools")
            .arg(&tools)
            .status()
            .unwrap();
        assert!(status.success());
        let state = scratch.path("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            state.join("state.json"),
            format!(r#"{{"unit": "{UNIT}", "leader": true}}"#),
        )
        .unwrap();
        Charm {
            scratch,
            dir,
            tools,
            state,
            env: BTreeMap::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Makes this copy the charm as packed, without us: `dispatch` becomes the fixture's own
    /// `dispatch.orig` (what charmcraft generated) and the shim goes, so that Juju-like runs
    /// of `dispatch` (and ops re-running `hooks/<event> -> ../dispatch`) are the bare charm's.
    pub fn remove_wrapper(&self) {
        // `dispatch` may be a hard link to the built binary: replace it, never write through it.
        std::fs::remove_file(self.path("dispatch")).unwrap();
        std::fs::remove_file(self.path("dispatch-shim")).unwrap();
        std::fs::copy(self.path("dispatch.orig"), self.path("dispatch")).unwrap();
    }

    /// The environment Juju would give a hook for `event` (a dispatch path such as
    /// `hooks/install` or `actions/backup`), built from scratch.
    pub fn juju_env(&self, dispatch_path: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.tools.display());
        for (k, v) in [
            ("PATH", path.as_str()),
            ("FAKE_JUJU_STATE", self.state.to_str().unwrap()),
            ("JUJU_DISPATCH_PATH", dispatch_path),
            ("JUJU_UNIT_NAME", UNIT),
            ("JUJU_MODEL_NAME", "test-model"),
            ("JUJU_MODEL_UUID", "f00dfeed-0000-4000-8000-000000000001"),
            ("JUJU_CHARM_DIR", self.dir.to_str().unwrap()),
            ("JUJU_VERSION", "3.6.4"),
            ("JUJU_CONTEXT_ID", "myapp/0-install-123"),
            ("JUJU_MACHINE_ID", "0"),
            ("JUJU_AVAILABILITY_ZONE", "zone-a"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        let hook = dispatch_path.strip_prefix("hooks/").unwrap_or("");
        env.insert("JUJU_HOOK_NAME".into(), hook.into());
        if let Some(action) = dispatch_path.strip_prefix("actions/") {
            env.insert("JUJU_ACTION_NAME".into(), action.into());
            env.insert("JUJU_ACTION_UUID".into(), "1".into());
        }
        env.extend(self.env.clone());
        env
    }

    /// A command running `program` (relative to the charm dir) as Juju would.
    pub fn command(&self, program: &str, dispatch_path: &str, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(self.dir.join(program));
        command.current_dir(&self.dir).env_clear();
        for (k, v) in self.juju_env(dispatch_path) {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        command.stdin(Stdio::null());
        // Juju starts a hook with default dispositions; the suite may not have them (`nohup`,
        // or `.ci/run &` from a script, which starts it with SIGINT and SIGQUIT ignored), and
        // the signal tests must not depend on how it was started. A test that wants a signal
        // ignored sets it in its own `pre_exec`, which runs after this one.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        command
    }

    /// Runs our dispatch for `dispatch_path` with extra environment.
    pub fn dispatch(&self, dispatch_path: &str, extra: &[(&str, &str)]) -> Output {
        self.command("dispatch", dispatch_path, extra)
            .output()
            .unwrap()
    }

    /// Runs our dispatch like `dispatch`, but a run still going after `timeout` (a loop) is
    /// killed with everything it started, and fails the test instead of hanging the suite.
    pub fn dispatch_within(
        &self,
        dispatch_path: &str,
        extra: &[(&str, &str)],
        timeout: Duration,
    ) -> Output {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout_path = self.scratch.path(&format!("within-{n}.stdout"));
        let stderr_path = self.scratch.path(&format!("within-{n}.stderr"));
        let mut command = self.command("dispatch", dispatch_path, extra);
        command
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            // Its own group, so that the test can kill all of it (never done by dispatch).
            .process_group(0);
        let mut child = command.spawn().unwrap();
        let mut status = None;
        if !wait_until(timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }) {
            // SAFETY: killing the process group this test just started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            for pid in self.processes() {
                // SAFETY: a process this test started (it carries the charm's state dir).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            panic!(
                "dispatch still running after {timeout:?} (a loop?); stderr so far: {}",
                text(&std::fs::read(&stderr_path).unwrap_or_default())
            );
        }
        let status = status.unwrap();
        Output {
            status,
            stdout: std::fs::read(&stdout_path).unwrap(),
            stderr: std::fs::read(&stderr_path).unwrap(),
        }
    }

    /// Live processes started for this charm: everything that carries its fake-tool state
    /// directory in its environment (wrapper, charm, tools, daemons), but the test itself.
    pub fn processes(&self) -> Vec<i32> {
        let needle = format!("FAKE_JUJU_STATE={}", self.state.display()).into_bytes();
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me && !is_dead(pid))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_slice()))
            })
            .collect()
    }

    /// Runs the charm's own entrypoint with the same environment, without us.
    pub fn bare(&self, dispatch_path: &str, extra: &[(&str, &str)]) -> Output {
        self.command("dispatch.orig", dispatch_path, extra)
            .output()
            .unwrap()
    }

    /// `dispatch <args>` in tool mode from an unrelated cwd, with a minimal environment.
    pub fn tool_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.dir.join("dispatch"));
        command
            .args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        command
    }

    /// Runs `dispatch <args>` in tool mode (`tool_command`).
    pub fn tool(&self, args: &[&str]) -> Output {
        self.tool_command(args).output().unwrap()
    }

    /// All stored dispatches, oldest first, from `dispatch traces --format json`.
    pub fn traces(&self) -> Vec<Value> {
        all_traces(self.tool(TRACES_JSON))
    }

    /// The only (or last) stored dispatch.
    pub fn last_trace(&self) -> Value {
        self.traces().pop().expect("no trace stored")
    }

    /// Calls recorded by the fake hook tools.
    pub fn tool_calls(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.state.join("calls.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, contents).unwrap();
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        chmod(&self.path(rel), mode);
    }

    /// Makes the charm's target this very dispatch, in one of the ways of `SELF_TARGETS`.
    /// Returns the target's name as our stderr line shows it.
    pub fn target_this_dispatch(&self, how: &str) -> &'static str {
        let original = self.path("dispatch.orig");
        match how {
            "a copy of it" => {
                // `cp dispatch dispatch.orig`: other bytes on disk, not a link (the charm's
                // `dispatch` itself is hard-linked from target/).
                let bytes = std::fs::read(self.path("dispatch")).unwrap();
                std::fs::remove_file(&original).unwrap();
                std::fs::write(&original, bytes).unwrap();
                self.chmod("dispatch.orig", 0o755);
            }
            "a hard link to it" => {
                std::fs::remove_file(&original).unwrap();
                std::fs::hard_link(self.path("dispatch"), &original).unwrap();
            }
            "a symbolic link to it" => {
                std::fs::remove_file(&original).unwrap();
                std::os::unix::fs::symlink("dispatch", &original).unwrap();
            }
            "the same file" => {
                self.write("dispatch-trace.yaml", "target: dispatch\n");
                return "dispatch";
            }
            other => panic!("unknown way {other:?}"),
        }
        "dispatch.orig"
    }

    pub fn store_file(&self) -> PathBuf {
        self.dir.join(".dispatch-trace.db")
    }
}

/// `dispatch traces` for every stored dispatch, as JSON.
const TRACES_JSON: &[&str] = &["traces", "--last", "0", "--format", "json"];

/// The dispatches `dispatch traces --format json` printed, oldest first.
fn all_traces(out: Output) -> Vec<Value> {
    assert_eq!(code(&out), 0, "traces failed: {}", text(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {}", text(&out.stdout)))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Dead, or a zombie nobody reaped yet.
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// The ways a charm's target can be our own binary (`Charm::target_this_dispatch`), as our
/// stderr line words them.
pub const SELF_TARGETS: &[&str] = &[
    "a copy of it",
    "a hard link to it",
    "a symbolic link to it",
    "the same file",
];

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code, or panics with the signal.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "killed by signal {:?}; stderr: {}",
            output.status.signal(),
            text(&output.stderr)
        )
    })
}

/// Spans of a trace (from `traces --format json`) with this name.
pub fn spans_named<'a>(trace: &'a Value, name: &str) -> Vec<&'a Value> {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .collect()
}

pub fn span<'a>(trace: &'a Value, name: &str) -> &'a Value {
    let found = spans_named(trace, name);
    assert_eq!(found.len(), 1, "expected one span {name:?} in {trace:#}");
    found[0]
}

pub fn root(trace: &Value) -> &Value {
    let event = trace["event"].as_str().unwrap().to_string();
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == event.as_str() && s["attributes"]["juju.dispatch_path"].is_string())
        .unwrap_or_else(|| panic!("no root span in {trace:#}"))
}

/// Our own lines on stderr: everything we write starts with `dispatch:`.
pub fn our_lines(stderr: &[u8]) -> Vec<String> {
    text(stderr)
        .lines()
        .filter(|l| l.starts_with("dispatch:"))
        .map(str::to_string)
        .collect()
}

/// stderr without our lines: what the charm itself wrote.
pub fn charm_stderr(stderr: &[u8]) -> String {
    text(stderr)
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("dispatch:"))
        .collect()
}

/// A charm run that writes to all three channels and fails, so any interference shows.
pub const NOISY: &[(&str, &str)] = &[
    ("CHARM_STDOUT", "out of the charm\n"),
    ("CHARM_STDERR", "charm complains\n"),
    ("CHARM_EXIT", "3"),
];

/// (bytes in use, cap) from `dispatch status`'s store line: the pages in use are what the cap
/// limits.
pub fn status_sizes(charm: &Charm) -> (f64, f64) {
    let out = charm.tool(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status = text(&out.stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("store:"))
        .unwrap_or_else(|| panic!("no store line in {status}"));
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let at = |word: &str| {
        words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("no {word:?} in {line}"))
    };
    let in_use = at("use") - 3; // "<n> <unit> in use"
    let cap = at("cap") + 1;
    (
        parse_size(words[in_use], words[in_use + 1]),
        parse_size(words[cap], words[cap + 1]),
    )
}

/// Bytes from a `dispatch status` size such as `63.2 KiB`.
fn parse_size(number: &str, unit: &str) -> f64 {
    let n: f64 = number.parse().unwrap();
    match unit {
        "B" => n,
        "KiB" => n * 1024.0,
        "MiB" => n * 1024.0 * 1024.0,
        other => panic!("unknown unit {other}"),
    }
}

// ---- a charm running a script ------------------------------------------------------------------

/// A shell-charm whose `CHARM_RUN` sources `script`; `$OUT` (`out_dir`) is a scratch directory
/// outside the charm dir for what the script observes. Secrets and paths stay out of the
/// environment.
pub fn charm_running(script: &str) -> Charm {
    let mut charm = Charm::new("shell");
    let out = out_dir(&charm);
    let script_path = charm.scratch.path("script.sh");
    std::fs::write(&script_path, script).unwrap();
    charm.env.insert("OUT".into(), path_str(&out).into());
    charm
        .env
        .insert("SCRIPT".into(), path_str(&script_path).into());
    charm
        .env
        .insert("CHARM_RUN".into(), r#". "$SCRIPT""#.into());
    charm
}

/// Shell, for a `charm_running` script: `await FILE` waits (at most 20 s) for a file the test
/// creates.
pub const AWAIT: &str = r#"
await() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
}
"#;

/// A scratch directory outside the charm dir for the charm's observations (`$OUT`).
pub fn out_dir(charm: &Charm) -> PathBuf {
    let out = charm.scratch.path("out");
    std::fs::create_dir_all(&out).unwrap();
    out
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `dispatch set-destination <args>`, which must succeed.
pub fn set_destination(charm: &Charm, args: &[&str]) {
    let mut all = vec!["set-destination"];
    all.extend_from_slice(args);
    let out = charm.tool(&all);
    assert_eq!(code(&out), 0, "{all:?}: {}", text(&out.stderr));
}

/// The names of what `traces` holds, in order.
pub fn events(traces: &[Value]) -> Vec<String> {
    traces
        .iter()
        .map(|t| t["event"].as_str().unwrap().to_string())
        .collect()
}

/// Kills (by pid) whatever this test started for the charm and left running, also when the
/// test fails.
pub struct Reaper<'a>(pub &'a Charm);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for pid in self.0.processes() {
            // SAFETY: signalling a process this test started (it carries our state dir).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

// ---- waiting ---------------------------------------------------------------------------------

/// How often `wait_until` looks again.
const POLL: Duration = Duration::from_millis(5);

/// Whether `done` came to hold within `timeout`, looking every few milliseconds. A test waits
/// for the condition it needs, never for a fixed time: a fixed sleep is too short on a loaded
/// machine and wasted on an idle one.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `done` holds; fails the test, naming `what`, after `timeout`.
pub fn wait_for(what: impl std::fmt::Display, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, done),
        "timed out after {timeout:?} waiting for {what}"
    );
}

// ---- files and sockets -----------------------------------------------------------------------

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn read_text(path: &Path) -> String {
    text(&read(path))
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The `KEY=VALUE` lines of a file, as the fixtures dump an environment.
pub fn env_file(path: &Path) -> BTreeMap<String, String> {
    read_text(path)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Permission bits of `path` itself (a symlink is not followed).
pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `path` with `suffix` appended to its name (`.dispatch-trace.db` -> `.dispatch-trace.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The names in a directory, sorted; none for a directory that does not exist.
pub fn listing(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        entries => entries.unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A file's bytes, mode, inode and modification time: all that "untouched" means.
pub fn fingerprint(path: &Path) -> (Vec<u8>, u32, u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (
        read(path),
        meta.mode(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// A port of 127.0.0.1 where nothing listens right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// POSTs an OTLP/JSON `body` to `path` on 127.0.0.1:`port`; returns the answer's status.
pub fn post_json(port: u16, path: &str, body: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = text(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no status in {answer:?}"))
}

// ---- what reached a receiver ------------------------------------------------------------------

/// The spans of an OTLP/HTTP protobuf request body, in order.
pub fn otlp_spans(body: &[u8]) -> Vec<Span> {
    ExportTraceServiceRequest::decode(body)
        .expect("an OTLP protobuf request")
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

/// Lowercase hex, as `dispatch traces --format json` prints ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- another local user ----------------------------------------------------------------------

/// uid and gid of `nobody`: the other local user of the tests that need one.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For a test that acts as another local user, which takes root: without it the test fails at
/// once and says so, rather than pass without doing its work (CI runs the suite as root; see
/// the header of main.rs).
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "needs root: {why}; run the suite as root, as CI does (tests/run)"
    );
}

/// As root, hands the whole scratch tree to `nobody` (the binaries become private copies, not
/// hard links into target/) so that runs as `nobody` (`unprivileged`) own what they find.
pub fn give_to_nobody(charm: &Charm) {
    if !is_root() {
        return;
    }
    for binary in ["dispatch", "dispatch-shim"] {
        let path = charm.path(binary);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        chmod(&path, 0o755);
    }
    fn walk(path: &Path) {
        std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path());
            }
        }
    }
    walk(&charm.scratch.root);
}

/// Runs as `nobody` when we are root, as ourselves otherwise.
pub fn unprivileged(command: &mut Command) {
    if is_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
}

/// `dispatch <args>` in tool mode, unprivileged too: run by the user the hooks run as, which
/// is who the store belongs to.
pub fn tool_unprivileged(charm: &Charm, args: &[&str]) -> Output {
    let mut command = charm.tool_command(args);
    unprivileged(&mut command);
    command.output().unwrap()
}

/// All stored dispatches, read as `nobody` (see `tool_unprivileged`).
pub fn traces_unprivileged(charm: &Charm) -> Vec<Value> {
    all_traces(tool_unprivileged(charm, TRACES_JSON))
}
