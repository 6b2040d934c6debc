//! A new user's first hour, as a test: the README's by-hand install into a copy of a fixture
//! charm, events run the way Juju runs them, every tool-mode command with good and bad input,
//! and the mistakes people make (installing twice, forgetting a piece, a config file with a
//! typo or a path that names someone else's file, a URL that cannot work, a copy of the
//! binary run from the wrong place, another user, `./dispatch` typed at a terminal). Each case
//! asserts what the person sees: the exit code, the one line, and that nothing was destroyed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util;
use crate::util::receiver::{Answer, Receiver};
use crate::util::{code, fingerprint, listing, our_lines, text, Charm, Scratch};

/// A fixture charm as charmcraft packs it (its entrypoint named `dispatch`), with fake hook
/// tools, and the built binaries at hand, before anything of ours is installed.
struct Fresh {
    charm: Charm,
    built: PathBuf,
}

fn packed_charm() -> Fresh {
    let scratch = Scratch::new("new-user");
    let dir = scratch.path("charm");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["metadata.yaml", "actions.yaml"] {
        std::fs::copy(
            util::repo_root().join("fixtures/charms/shell").join(name),
            dir.join(name),
        )
        .unwrap();
    }
    std::fs::copy(
        util::repo_root().join("fixtures/charms/shell/dispatch.orig"),
        dir.join("dispatch"),
    )
    .unwrap();
    Fresh {
        charm: Charm::around(scratch, dir),
        built: util::bin_dir(),
    }
}

impl Fresh {
    /// The README's install by hand: the original entrypoint becomes `dispatch.orig`, and
    /// `dispatch` and `dispatch-shim` go beside it.
    fn install_by_hand(&self) {
        let dir = &self.charm.dir;
        sh(dir, "mv dispatch dispatch.orig");
        self.copy_binaries();
    }

    fn copy_binaries(&self) {
        for name in ["dispatch", "dispatch-shim"] {
            let to = self.charm.dir.join(name);
            let _ = std::fs::remove_file(&to);
            std::fs::copy(self.built.join(name), &to).unwrap();
        }
    }
}

/// Runs a shell command in `dir`, as the person would type it.
fn sh(dir: &Path, command: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
}

fn tool(charm: &Charm, args: &[&str]) -> Output {
    charm.tool(args)
}

fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn the_readme_by_hand_install_then_events_like_juju_then_every_command() {
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    let dir = std::fs::canonicalize(&charm.dir).unwrap();

    let check = tool(charm, &["check-config"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert_eq!(
        stdout(&check),
        format!(
            "ok: target: {0}/dispatch.orig\nok: store: {0}/.dispatch-trace.db (the first hook \
             creates it)\nconfig ok\n",
            dir.display()
        )
    );
    assert_eq!(stderr(&check), "");

    // The quick start's events.
    let install = charm.dispatch(
        "hooks/install",
        &[(
            "CHARM_RUN",
            "status-set maintenance installing; status-set active ready",
        )],
    );
    assert_eq!((code(&install), stderr(&install)), (0, String::new()));
    let changed = charm.dispatch(
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:1"),
            ("CHARM_RUN", "is-leader > /dev/null"),
        ],
    );
    assert_eq!(code(&changed), 0);
    let action = charm.dispatch("actions/backup", &[("CHARM_RUN", "action-set result=done")]);
    assert_eq!(code(&action), 0);
    let failed = charm.dispatch("hooks/update-status", &[("CHARM_EXIT", "1")]);
    assert_eq!(code(&failed), 1);
    assert_eq!(
        stderr(&failed),
        "",
        "a failing charm is not our problem to report"
    );

    let tree = tool(charm, &["traces", "--last", "4"]);
    assert_eq!(code(&tree), 0);
    let sections: Vec<&str> = stdout(&tree)
        .leak()
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert_eq!(sections.len(), 4, "{}", stdout(&tree));
    for (section, event) in
        sections
            .iter()
            .zip(["install", "db-relation-changed", "backup", "update-status"])
    {
        assert!(section.starts_with(event), "{section}");
    }
    let json = tool(
        charm,
        &[
            "traces",
            "--event",
            "*-relation-changed",
            "--format",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["event"], "db-relation-changed");
    let failed_only = tool(charm, &["traces", "--failed"]);
    assert!(
        stdout(&failed_only).starts_with("update-status"),
        "{}",
        stdout(&failed_only)
    );

    let status = tool(charm, &["status"]);
    assert_eq!(code(&status), 0, "{}", stdout(&status));
    let status = stdout(&status);
    for line in [
        "tracing: enabled\n",
        "config: defaults (no dispatch-trace.yaml)\n",
        "dispatches: 4 stored (",
        ", 4 waiting to be shipped, 0 shipped, 0 in flight\n",
        "destination: none (traces are kept in the local store only)\n",
    ] {
        assert!(status.contains(line), "no {line:?} in {status}");
    }

    // Ship to a collector, then forget it.
    let receiver = Receiver::start(vec![Answer::ok()]);
    let set = tool(charm, &["set-destination", &receiver.url()]);
    assert_eq!(
        (code(&set), stdout(&set), stderr(&set)),
        (
            0,
            format!("destination set to {}\n", receiver.url()),
            String::new()
        )
    );
    let again = tool(charm, &["set-destination", &receiver.url()]);
    assert_eq!(stdout(&again), "destination unchanged\n");
    let flush = tool(charm, &["flush"]);
    assert_eq!(
        (code(&flush), stdout(&flush)),
        (
            0,
            format!(
                "sent 4 dispatch(es) to {} in 1 request(s)\n",
                receiver.url()
            )
        )
    );
    assert!(stdout(&tool(charm, &["status"])).contains("4 shipped"));
    let cleared = tool(charm, &["clear-destination"]);
    assert_eq!(
        (code(&cleared), stdout(&cleared)),
        (0, "destination cleared\n".into())
    );
    let cleared = tool(charm, &["clear-destination"]);
    assert_eq!(
        (code(&cleared), stdout(&cleared)),
        (0, "no destination was set\n".into())
    );
    let flush = tool(charm, &["flush"]);
    assert_eq!(code(&flush), 1);
    assert!(
        stderr(&flush).starts_with("dispatch: no destination: set one with"),
        "{}",
        stderr(&flush)
    );

    // Off and on again.
    let off = tool(charm, &["disable"]);
    assert_eq!(
        stdout(&off),
        "tracing disabled: dispatches now run the charm directly, untraced\n"
    );
    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    assert_eq!(charm.traces().len(), 4, "traced while disabled");
    assert!(stdout(&tool(charm, &["status"]))
        .starts_with("tracing: disabled (by `dispatch disable`)\n"));
    let on = tool(charm, &["enable"]);
    assert_eq!(stdout(&on), "tracing enabled\n");
    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    assert_eq!(charm.traces().len(), 5);
}

#[test]
fn installing_by_hand_twice_makes_hooks_fail_at_once_with_the_reason_instead_of_spinning() {
    let fresh = packed_charm();
    fresh.install_by_hand();
    // The second time, `mv dispatch dispatch.orig` puts our binary where the charm's was.
    fresh.install_by_hand();
    let charm = &fresh.charm;
    let check = tool(charm, &["check-config"]);
    assert_eq!(code(&check), 1);
    assert!(
        stdout(&check).contains(
            "PROBLEM: the charm's own entrypoint is missing: dispatch.orig is this dispatch (a \
             copy of it), not the charm's dispatch"
        ),
        "{}",
        stdout(&check)
    );
    let hook = charm.dispatch_within("hooks/install", &[], SHORT);
    assert_eq!(code(&hook), 126);
    let lines = our_lines(&hook.stderr);
    assert_eq!(lines.len(), 1, "{}", stderr(&hook));
    assert!(
        lines[0].starts_with("dispatch: the charm's own entrypoint is missing"),
        "{}",
        lines[0]
    );
    assert!(
        charm.processes().is_empty(),
        "left running: {:?}",
        charm.processes()
    );
}

#[test]
fn forgetting_a_piece_of_the_install_is_told_by_check_config_and_by_the_hook() {
    // No shim: the charm still runs, untouched; its tool calls are not traced, and it is said.
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    std::fs::remove_file(charm.path("dispatch-shim")).unwrap();
    let check = tool(charm, &["check-config"]);
    assert_eq!(code(&check), 1);
    assert!(
        stdout(&check).contains("PROBLEM: dispatch-shim is missing beside dispatch"),
        "{}",
        stdout(&check)
    );
    let hook = charm.dispatch("hooks/install", &[("CHARM_RUN", "status-set active")]);
    assert_eq!(code(&hook), 0);
    let lines = our_lines(&hook.stderr);
    assert_eq!(lines.len(), 1, "{}", stderr(&hook));
    assert!(
        lines[0].contains("dispatch-shim is missing"),
        "{}",
        lines[0]
    );
    assert_eq!(
        charm.tool_calls().len(),
        1,
        "the charm's own call still went through"
    );

    // Our binary copied over the charm's dispatch, never moved aside: nothing runs any more.
    let fresh = packed_charm();
    fresh.copy_binaries();
    let charm = &fresh.charm;
    let check = tool(charm, &["check-config"]);
    assert_eq!(code(&check), 1);
    assert!(
        stdout(&check).contains("PROBLEM: the charm's own entrypoint is missing"),
        "{}",
        stdout(&check)
    );
    let hook = charm.dispatch_within("hooks/install", &[], SHORT);
    assert_eq!(code(&hook), 0, "Juju's rule for a missing hook");
    assert_eq!(our_lines(&hook.stderr).len(), 1, "{}", stderr(&hook));
    let again = charm.dispatch_within("hooks/start", &[], SHORT);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new(), "said once");
    let tree = stdout(&tool(charm, &["traces"]));
    assert!(tree.contains("skipped: no target for install"), "{tree}");
}

#[test]
fn bad_input_to_every_command_exits_2_naming_the_culprit_and_changes_nothing() {
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let before = listing(&charm.dir);
    let store_before = std::fs::read(charm.store_file()).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unknown command \"frobnicate\""),
        (&["trace"], "unknown command \"trace\""),
        (
            &["traces", "--last", "-1"],
            "--last takes a whole number, not \"-1\"",
        ),
        (&["traces", "--last"], "--last needs a value"),
        (
            &["traces", "--format", "yaml"],
            "--format must be tree, json or otlp-json, not \"yaml\"",
        ),
        (
            &["traces", "--event", ""],
            "--event needs an event name or a glob",
        ),
        (
            &["traces", "--verbose-please"],
            "traces: unknown option \"--verbose-please\"",
        ),
        (
            &["status", "--all"],
            "status takes no arguments (got \"--all\")",
        ),
        (&["set-destination"], "set-destination needs a URL"),
        (
            &["set-destination", "tempo:4318"],
            "is not a usable URL: it does not start with http:// or https://",
        ),
        (
            &["set-destination", "http://[::1"],
            "is not a usable URL: invalid authority",
        ),
        (
            &["set-destination", "http://127.0.0.1:99999/v1/traces"],
            "the port \"99999\" is not a number from 1 to 65535",
        ),
        (
            &["set-destination", "http://exa mple.com/v1/traces"],
            "invalid uri character",
        ),
        (
            &[
                "set-destination",
                "http://a/v1/traces",
                "http://b/v1/traces",
            ],
            "set-destination: unexpected \"http://b/v1/traces\"",
        ),
        (
            &["set-destination", "http://a/v1/traces", "--ca"],
            "set-destination: unknown option \"--ca\"",
        ),
        (
            &["set-destination", "http://a/v1/traces", "--ca-file"],
            "--ca-file needs a path",
        ),
        (
            &["clear-destination", "now"],
            "clear-destination takes no arguments (got \"now\")",
        ),
        (&["flush", "-f"], "flush takes no arguments (got \"-f\")"),
        (
            &["disable", "forever"],
            "disable takes no arguments (got \"forever\")",
        ),
        (&["help", "tracez"], "unknown command \"tracez\""),
    ];
    for (args, said) in cases {
        let out = tool(charm, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "dispatch: {}\nRun `dispatch --help` for usage.\n",
                stderr(&out)
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("dispatch: ")
            ),
            "{args:?}: two lines"
        );
        assert!(
            stderr(&out).contains(said),
            "{args:?}: no {said:?} in {}",
            stderr(&out)
        );
    }
    // A CA file that is not one: exit 1 (not a usage mistake), and nothing stored.
    let not_pem = charm.scratch.path("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let out = tool(
        charm,
        &[
            "set-destination",
            "https://tempo/v1/traces",
            "--ca-file",
            not_pem.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("holds no PEM certificate"),
        "{}",
        stderr(&out)
    );
    let out = tool(
        charm,
        &[
            "set-destination",
            "https://tempo/v1/traces",
            "--ca-file",
            "/nonexistent/ca.pem",
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("cannot read the CA file /nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );

    assert_eq!(
        listing(&charm.dir),
        before,
        "bad input created or removed files"
    );
    assert!(
        !stdout(&tool(charm, &["status"])).contains("destination: http"),
        "a refused URL was stored"
    );
    let _ = store_before;
}

#[test]
fn a_copy_of_dispatch_outside_a_charm_refuses_to_work_and_creates_nothing() {
    let scratch = Scratch::new("wrong-place");
    let bin = scratch.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(util::bin_dir().join("dispatch"), bin.join("dispatch")).unwrap();
    for args in [
        &["status"][..],
        &["traces"],
        &["set-destination", "http://tempo:4318/v1/traces"],
        &["clear-destination"],
        &["flush"],
        &["disable"],
        &["enable"],
    ] {
        let out = Command::new(bin.join("dispatch"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "dispatch: {} is not a charm directory (no metadata.yaml, dispatch.orig or hooks/ \
                 beside this dispatch): tool mode works on the charm the binary is installed in; \
                 run that charm's dispatch, e.g. /var/lib/juju/agents/unit-<app>-<n>/charm/dispatch\n",
                bin.display()
            ),
            "{args:?}"
        );
        assert_eq!(listing(&bin), ["dispatch"], "{args:?} created files");
    }
    // --help and --version still answer anywhere.
    let help = Command::new(bin.join("dispatch"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(code(&help), 0);
    let check = Command::new(bin.join("dispatch"))
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(code(&check), 1);
    assert!(
        stdout(&check).contains("is not a charm directory"),
        "{}",
        stdout(&check)
    );
    assert_eq!(listing(&bin), ["dispatch"]);
}

#[test]
fn dispatch_typed_at_a_terminal_outside_a_hook_says_what_it_is_and_runs_nothing() {
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    let pty = nix::pty::openpty(None, None).unwrap();
    let out = Command::new(charm.path("dispatch"))
        .current_dir(&charm.dir)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", charm.tools.display()))
        .env("FAKE_JUJU_STATE", &charm.state)
        .stdin(std::fs::File::from(pty.slave))
        .output()
        .unwrap();
    drop(pty.master);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).starts_with("dispatch: run without arguments, dispatch is what Juju runs"),
        "{}",
        stderr(&out)
    );
    assert!(charm.tool_calls().is_empty(), "the charm ran");
    assert!(!charm.store_file().exists());
    // Inside a hook (`juju debug-hooks` gives a terminal too), it is a hook as ever.
    let pty = nix::pty::openpty(None, None).unwrap();
    let hook = charm
        .command(
            "dispatch",
            "hooks/install",
            &[("CHARM_RUN", "status-set active")],
        )
        .stdin(std::fs::File::from(pty.slave))
        .output()
        .unwrap();
    drop(pty.master);
    assert_eq!(code(&hook), 0, "{}", stderr(&hook));
    assert_eq!(charm.tool_calls().len(), 1);
}

#[test]
fn another_user_running_tool_mode_is_told_to_run_as_the_hooks_user_and_nothing_changes() {
    util::require_root("acting as another local user (`nobody`)");
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    // The charm dir is readable by all, as Juju's is; the store is root's alone.
    for dir in [&charm.scratch.root, &charm.dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = listing(&charm.dir);
    let store = fingerprint(&charm.store_file());
    for args in [
        &["status"][..],
        &["traces"],
        &["flush"],
        &["set-destination", "http://tempo:4318/v1/traces"],
    ] {
        let out = util::tool_unprivileged(charm, args);
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains("run dispatch as the user the hooks run as")
                || said.contains("Permission denied"),
            "{args:?}: {said}"
        );
    }
    assert_eq!(listing(&charm.dir), before);
    assert_eq!(fingerprint(&charm.store_file()), store);
}

#[test]
fn every_config_mistake_is_one_clear_problem_for_check_config_and_one_line_in_a_hook() {
    let fresh = packed_charm();
    fresh.install_by_hand();
    let charm = &fresh.charm;
    let precious = charm.scratch.path("precious.txt");
    std::fs::write(&precious, "years of notes\n").unwrap();
    let precious_before = fingerprint(&precious);
    let passwd_before = fingerprint(Path::new("/etc/passwd"));
    let long_name = "x".repeat(5000);
    let cases: Vec<(String, String)> = vec![
        (
            "enabeld: false\n".into(),
            "dispatch-trace.yaml line 1 column 1: unknown key \"enabeld\" (did you mean \
             \"enabled\"?); using defaults"
                .into(),
        ),
        (
            "enabled: true\n  bad indent\n".into(),
            "dispatch-trace.yaml line 1 column 10: enabled must be true or false, not \"true bad \
             indent\" (line 2 is indented, so YAML reads it as part of this value); using \
             defaults"
                .into(),
        ),
        (
            "store_max_bytes: lots\n".into(),
            "store_max_bytes must be a whole number of bytes, at least 65536, not \"lots\"".into(),
        ),
        (
            "endpoint: http://127.0.0.1:99999/v1/traces\n".into(),
            "endpoint http://127.0.0.1:99999/v1/traces is not a usable URL: the port \"99999\" is \
             not a number from 1 to 65535"
                .into(),
        ),
        (
            format!("service_name: {long_name}\n"),
            "service_name is 5000 bytes long; at most 4096".into(),
        ),
        (
            "store_path: ../precious.txt\n".into(),
            format!(
                "store_path {0}/../precious.txt cannot hold the trace store: it is not a trace \
                 store (not an SQLite database); nothing there is touched, and traces are kept \
                 in {0}/.dispatch-trace.db until store_path is fixed",
                charm.dir.display()
            ),
        ),
        (
            "store_path: /etc/passwd\n".into(),
            format!(
                "store_path /etc/passwd cannot hold the trace store: it is not a trace store (not \
                 an SQLite database); nothing there is touched, and traces are kept in \
                 {}/.dispatch-trace.db until store_path is fixed",
                charm.dir.display()
            ),
        ),
        (
            "store_path: .\n".into(),
            "cannot hold the trace store: it is a directory".into(),
        ),
    ];
    for (config, problem) in &cases {
        charm.write("dispatch-trace.yaml", config);
        let check = tool(charm, &["check-config"]);
        assert_eq!(code(&check), 1, "{config}: {}", stdout(&check));
        let problems: Vec<&str> = stdout(&check)
            .leak()
            .lines()
            .filter(|l| l.starts_with("PROBLEM: "))
            .collect();
        assert_eq!(problems.len(), 1, "{config}: {problems:?}");
        assert!(
            problems[0].contains(problem.as_str()),
            "{config}: {}",
            problems[0]
        );
        assert_eq!(stderr(&check), "dispatch: 1 problem(s) found\n");

        let hook = charm.dispatch("hooks/config-changed", util::NOISY);
        util::outcome::assert_same_outcome(&hook, &charm.bare("hooks/config-changed", util::NOISY));
        let lines = our_lines(&hook.stderr);
        assert_eq!(lines.len(), 1, "{config}: {}", stderr(&hook));
        assert!(
            lines[0].contains(problem.as_str()),
            "{config}: {}",
            lines[0]
        );
    }
    assert_eq!(fingerprint(&precious), precious_before);
    assert_eq!(fingerprint(Path::new("/etc/passwd")), passwd_before);
    // Nothing was created beside them either (no lock, no started records, no copies).
    for dir in [charm.scratch.root.clone(), PathBuf::from("/etc")] {
        let left: Vec<String> = listing(&dir)
            .into_iter()
            .filter(|n| n.starts_with("precious.txt.") || n.starts_with("passwd."))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "in {}", dir.display());
    }
    // The hooks' traces were kept in the default store meanwhile, and other tool-mode
    // commands said what to fix rather than act on a store nobody asked for.
    charm.write("dispatch-trace.yaml", "store_path: ../precious.txt\n");
    let traces = tool(charm, &["traces"]);
    assert_eq!(code(&traces), 1);
    assert!(
        stderr(&traces).contains("cannot hold the trace store"),
        "{}",
        stderr(&traces)
    );
    let status = tool(charm, &["status"]);
    assert_eq!(code(&status), 1);
    assert!(
        stdout(&status).contains("config: PROBLEM: store_path"),
        "{}",
        stdout(&status)
    );
    // Fixed: quiet again, and every hook's trace is there.
    std::fs::remove_file(charm.path("dispatch-trace.yaml")).unwrap();
    let check = tool(charm, &["check-config"]);
    assert_eq!(code(&check), 0, "{}", stdout(&check));
    let hook = charm.dispatch("hooks/update-status", &[]);
    assert_eq!((code(&hook), stderr(&hook)), (0, String::new()));
    assert_eq!(charm.traces().len(), cases.len() + 1);
}
