//! `dispatch traces --follow` as a person on call uses it beside running hooks: the history,
//! then each dispatch as it starts and as it is stored, never in a hook's way; ended by
//! Ctrl-C, SIGTERM, `--count` or a closed pipe. And what the tree shows a person at a
//! terminal: `-v`, colour only there, seconds past one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

use crate::util::{code, text, wait_for, Charm};

const WAIT: Duration = Duration::from_secs(30);

/// A `dispatch traces --follow ...` running in the background, its stdout read line by line.
struct Follower {
    child: Child,
    lines: Receiver<String>,
}

impl Follower {
    fn start(charm: &Charm, args: &[&str]) -> Follower {
        let mut all = vec!["traces", "--follow"];
        all.extend_from_slice(args);
        let mut child = charm
            .tool_command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line printed; fails the test if none comes.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line from --follow within {WAIT:?}: {e}"))
    }

    /// The next non-empty line, as JSON.
    fn json(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a process this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for it to end; its exit code and stderr.
    fn end(mut self) -> (i32, String) {
        let mut status = None;
        wait_for("--follow to end", WAIT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = status.unwrap();
        (status.code().unwrap_or(-1), stderr)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hook that runs until `go` exists beside the charm.
fn waiting_hook(charm: &Charm, hook: &str, go: &Path) -> Child {
    let run = format!("while [ ! -e '{}' ]; do sleep 0.05; done", go.display());
    charm
        .command("dispatch", hook, &[("CHARM_RUN", run.as_str())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn follow_prints_the_history_then_each_dispatch_as_it_runs_and_is_stored_until_count() {
    let charm = Charm::new("shell");
    for hook in [
        "hooks/install",
        "hooks/config-changed",
        "hooks/update-status",
    ] {
        assert_eq!(code(&charm.dispatch(hook, &[])), 0);
    }
    let follower = Follower::start(&charm, &["--last", "2", "--format", "json", "--count", "2"]);
    let history: Vec<Value> = (0..2).map(|_| follower.json()).collect();
    assert_eq!(history[0]["event"], "config-changed");
    assert_eq!(history[1]["event"], "update-status");
    for dispatch in &history {
        assert_eq!(dispatch["schema_version"], 1);
        assert!(!dispatch["spans"].as_array().unwrap().is_empty());
    }

    // A hook runs to its end beside the follower: nothing of ours is in its way.
    let out = charm.dispatch("hooks/leader-elected", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stored = follower.json();
    assert_eq!(stored["event"], "leader-elected");
    assert_eq!(stored["state"], "pending");

    // A hook in flight shows as running, then as stored once it ends.
    let go = charm.scratch.path("go");
    let mut hook = waiting_hook(&charm, "hooks/start", &go);
    let running = follower.json();
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["event"], "start");
    assert!(running.get("spans").is_none(), "{running}");
    std::fs::write(&go, "").unwrap();
    assert!(hook.wait().unwrap().success());
    let done = follower.json();
    assert_eq!(done["event"], "start");
    assert_eq!(done["trace_id"], running["trace_id"]);
    assert!(done["spans"].as_array().unwrap().len() > 1, "{done}");

    // Two new dispatches were asked for: it ends by itself, successfully.
    let (exit, stderr) = follower.end();
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(charm.traces().len(), 5);
}

#[test]
fn follow_waits_for_a_first_store_and_ends_with_130_on_ctrl_c_and_0_on_sigterm() {
    let charm = Charm::new("shell");
    let follower = Follower::start(&charm, &["--summary"]);
    let header = follower.line();
    assert!(header.starts_with("STARTED (UTC)"), "{header}");
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "3")]);
    assert_eq!(code(&out), 3);
    let line = follower.line();
    assert!(
        line.contains(" install ") && line.contains("exit 3"),
        "{line}"
    );
    follower.signal(libc::SIGINT);
    let (exit, stderr) = follower.end();
    assert_eq!(exit, 130, "as a shell reports Ctrl-C: {stderr}");
    assert!(
        stderr.contains("no traces recorded yet") && stderr.contains("waiting"),
        "{stderr}"
    );

    let follower = Follower::start(&charm, &[]);
    let heading = follower.line();
    assert!(
        heading.starts_with("install  "),
        "the history first: {heading}"
    );
    follower.signal(libc::SIGTERM);
    let (exit, stderr) = follower.end();
    assert_eq!(exit, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn follow_applies_the_filters_to_running_and_stored_dispatches_alike() {
    let charm = Charm::new("shell");
    let follower = Follower::start(
        &charm,
        &["--summary", "--event", "*-relation-*", "--last", "0"],
    );
    assert!(follower.line().starts_with("STARTED (UTC)"));
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let go = charm.scratch.path("go");
    let mut hook = waiting_hook(&charm, "hooks/db-relation-changed", &go);
    let running = follower.line();
    assert!(
        running.contains("db-relation-changed") && running.contains("running"),
        "{running}"
    );
    std::fs::write(&go, "").unwrap();
    assert!(hook.wait().unwrap().success());
    let stored = follower.line();
    assert!(
        stored.contains("db-relation-changed") && stored.contains("exit 0"),
        "{stored}"
    );
    follower.signal(libc::SIGTERM);
    let (exit, _) = follower.end();
    assert_eq!(exit, 0);
}

#[test]
fn follow_options_that_cannot_go_together_are_refused_with_the_reason() {
    let charm = Charm::new("shell");
    for (args, why) in [
        (vec!["traces", "--count", "2"], "--count is for --follow"),
        (vec!["traces", "--follow", "--count", "0"], "--count takes"),
        (vec!["traces", "--follow", "--until", "1h"], "--until"),
        (vec!["traces", "-v", "--format", "json"], "--verbose adds"),
        (vec!["traces", "--summary", "--verbose"], "--verbose adds"),
        (vec!["traces", "--folow"], "did you mean \"--follow\""),
    ] {
        let out = charm.tool(&args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn the_verbose_tree_shows_every_attribute_and_colour_is_for_terminals_only() {
    let charm = Charm::new("shell");
    let out = charm.dispatch(
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:3"),
            ("JUJU_REMOTE_UNIT", "postgresql/0"),
            ("CHARM_SLEEP", "1.1"),
            ("CHARM_EXIT", "1"),
        ],
    );
    assert_eq!(code(&out), 1);
    let plain = text(&charm.tool(&["traces"]).stdout);
    assert!(!plain.contains("juju.remote_unit"), "{plain}");
    let verbose = text(&charm.tool(&["traces", "-v"]).stdout);
    for shown in [
        "resource:",
        "service.name = ",
        "juju.relation_id = db:3",
        "juju.remote_unit = postgresql/0",
        "dispatch.exit_code = 1",
    ] {
        assert!(verbose.contains(shown), "{shown} in:\n{verbose}");
    }
    let root_line = verbose.lines().nth(3).unwrap_or_default();
    assert!(
        verbose
            .lines()
            .any(|l| l.starts_with("  db-relation-changed  1.") && l.contains(" s  ")),
        "a dispatch of over a second in seconds (got {root_line:?}):\n{verbose}"
    );
    assert!(!verbose.contains('\x1b'), "no colour into a pipe");

    // At a terminal (script(1) gives it one), in colour; not with NO_COLOR.
    let at_terminal = |no_colour: Option<&str>| {
        let mut command = std::process::Command::new("script");
        command
            .args(["-qec"])
            .arg(format!("{} traces", charm.dir.join("dispatch").display()))
            .arg("/dev/null")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        if let Some(value) = no_colour {
            command.env("NO_COLOR", value);
        }
        let out = command.output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let coloured = at_terminal(None);
    assert!(coloured.contains("\x1b[31mERROR"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b[1mdb-relation-changed\x1b[0m"),
        "{coloured:?}"
    );
    assert!(!at_terminal(Some("1")).contains('\x1b'));
}
