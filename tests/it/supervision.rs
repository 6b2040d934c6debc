//! The charm cannot tell it is wrapped: exit codes, signals, stdio, environment, argv and the
//! target it runs are the ones a bare run would have, and the span tree tells what happened.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::{code, env_file, root, span, text, wait_for, Charm};
use serde_json::Value;

#[test]
fn every_exit_code_is_mirrored() {
    let charm = Charm::new("shell");
    for exit in 0..=255 {
        let value = exit.to_string();
        let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", &value)]);
        assert_eq!(code(&out), exit, "stderr: {}", text(&out.stderr));
        assert!(out.stdout.is_empty());
        assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    }
    let traces = charm.traces();
    assert_eq!(traces.len(), 256);
    let last = &traces[255];
    assert_eq!(root(last)["status"], "ERROR");
    assert_eq!(span(last, "charm")["attributes"]["process.exit.code"], 255);
    assert_eq!(span(last, "charm")["attributes"]["error.type"], "255");
    assert_eq!(root(&traces[0])["status"], "OK");
}

#[test]
fn death_by_a_signal_is_mirrored_by_dying_of_the_same_signal() {
    let charm = Charm::new("shell");
    for (name, number) in [
        ("TERM", libc::SIGTERM),
        ("KILL", libc::SIGKILL),
        ("SEGV", libc::SIGSEGV),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("ABRT", libc::SIGABRT),
    ] {
        let bare = charm.bare("hooks/install", &[("CHARM_KILL", name)]);
        assert_eq!(bare.status.signal(), Some(number), "bare run of {name}");
        let out = charm.dispatch("hooks/install", &[("CHARM_KILL", name)]);
        assert_eq!(
            out.status.signal(),
            Some(number),
            "{name}: {:?}",
            out.status
        );
        assert!(!out.status.core_dumped(), "{name}: the wrapper dumped core");
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
        let trace = charm.last_trace();
        let charm_span = span(&trace, "charm");
        assert_eq!(charm_span["attributes"]["error.type"], format!("SIG{name}"));
        assert_eq!(charm_span["status"], "ERROR");
        assert_eq!(root(&trace)["status"], "ERROR");
    }
}

#[test]
fn stdout_stderr_and_stdin_pass_through_byte_for_byte() {
    let charm = Charm::new("shell");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let out_file = charm.scratch.path("out.bin");
    let err_file = charm.scratch.path("err.bin");
    std::fs::write(&out_file, &all_bytes).unwrap();
    std::fs::write(
        &err_file,
        all_bytes.iter().rev().copied().collect::<Vec<_>>(),
    )
    .unwrap();
    let out_str = out_file.to_str().unwrap();
    let err_str = err_file.to_str().unwrap();
    let env = [
        ("CHARM_STDOUT_FILE", out_str),
        ("CHARM_STDERR_FILE", err_str),
        ("CHARM_EXIT", "7"),
    ];
    let bare = charm.bare("hooks/install", &env);
    let wrapped = charm.dispatch("hooks/install", &env);
    assert_eq!(code(&wrapped), 7);
    assert_eq!(wrapped.stdout, bare.stdout);
    assert_eq!(wrapped.stderr, bare.stderr);
    assert_eq!(wrapped.stdout.len(), 300_000);

    // stdin: whatever the hook's stdin holds reaches the charm untouched.
    for program in ["dispatch.orig", "dispatch"] {
        let mut child = charm
            .command(program, "hooks/install", &[("CHARM_CAT_STDIN", "1")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = all_bytes.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).unwrap();
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_eq!(out.stdout, all_bytes, "{program}");
    }
}

#[test]
fn the_child_environment_differs_only_by_the_documented_additions() {
    let charm = Charm::new("shell");
    // An incoming TRACEPARENT is replaced, not appended.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let bare_dump = charm.scratch.path("bare.env");
    let wrapped_dump = charm.scratch.path("wrapped.env");
    let bare = charm.bare(
        "hooks/config-changed",
        &[
            ("CHARM_DUMP_ENV", bare_dump.to_str().unwrap()),
            ("TRACEPARENT", incoming),
            ("ODD", "tab\there"),
        ],
    );
    let wrapped = charm.dispatch(
        "hooks/config-changed",
        &[
            ("CHARM_DUMP_ENV", wrapped_dump.to_str().unwrap()),
            ("TRACEPARENT", incoming),
            ("ODD", "tab\there"),
        ],
    );
    assert_eq!(code(&bare), 0);
    assert_eq!(code(&wrapped), 0);
    let bare = env_file(&bare_dump);
    let wrapped = env_file(&wrapped_dump);

    let mut added: Vec<&String> = wrapped.keys().filter(|k| !bare.contains_key(*k)).collect();
    added.sort();
    let removed: Vec<&String> = bare.keys().filter(|k| !wrapped.contains_key(*k)).collect();
    assert!(removed.is_empty(), "variables removed: {removed:?}");
    for key in &added {
        // Ours, and the standard variables that point the charm's OpenTelemetry SDK at the
        // custom-span listener (README, *Your own spans and events*).
        assert!(
            key.starts_with("DISPATCH_TRACE_")
                || key.as_str() == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                || key.as_str() == "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "unexpected addition {key}"
        );
    }
    for (key, value) in &bare {
        let now = &wrapped[key];
        match key.as_str() {
            "PATH" => {
                let (first, rest) = now.split_once(':').unwrap();
                assert_eq!(
                    rest, value,
                    "PATH must keep the hook's PATH after one entry"
                );
                assert!(first.ends_with(".dispatch-trace/shims"), "{first}");
            }
            "TRACEPARENT" => {
                assert_ne!(now, value, "an incoming TRACEPARENT must be replaced");
                assert!(now.starts_with("00-") && now.len() == 55, "{now}");
            }
            // Each run dumps to its own file.
            "CHARM_DUMP_ENV" => {}
            _ => assert_eq!(now, value, "{key} changed"),
        }
    }
    // The TRACEPARENT points at the charm span of this dispatch's trace.
    let trace = charm.last_trace();
    let charm_span = span(&trace, "charm");
    let expected = format!(
        "00-{}-{}-01",
        trace["trace_id"].as_str().unwrap(),
        charm_span["span_id"].as_str().unwrap()
    );
    assert_eq!(wrapped["TRACEPARENT"], expected);
    // By default the incoming context is a link on the root, not its parent.
    let root = root(&trace);
    assert_eq!(root["parent_span_id"], "");
    assert_eq!(
        root["links"][0]["trace_id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(root["links"][0]["span_id"], "b7ad6b7169203331");
}

#[test]
fn continue_mode_parents_the_root_to_the_incoming_context() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "juju_trace_context: continue\n");
    let out = charm.dispatch(
        "hooks/start",
        &[
            ("JUJU_TRACE_ID", "0af7651916cd43dd8448eb211c80319c"),
            ("JUJU_SPAN_ID", "b7ad6b7169203331"),
            ("JUJU_TRACE_FLAGS", "1"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let trace = charm.last_trace();
    assert_eq!(trace["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    let root = root(&trace);
    assert_eq!(root["parent_span_id"], "b7ad6b7169203331");
    assert!(root["links"].as_array().unwrap().is_empty());
}

#[test]
fn the_span_tree_describes_the_event_the_charm_and_its_resource() {
    let charm = Charm::new("shell");
    let out = charm.dispatch(
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:7"),
            ("JUJU_REMOTE_UNIT", "postgresql/0"),
            ("JUJU_REMOTE_APP", "postgresql"),
            ("CHARM_RUN", "status-set active ready; is-leader >/dev/null"),
            ("CHARM_SLEEP", "0.05"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let trace = charm.last_trace();
    assert_eq!(trace["event"], "db-relation-changed");
    let root = root(&trace);
    let attributes = &root["attributes"];
    assert_eq!(
        attributes["juju.dispatch_path"],
        "hooks/db-relation-changed"
    );
    assert_eq!(attributes["juju.event.kind"], "hook");
    assert_eq!(attributes["juju.relation"], "db");
    assert_eq!(attributes["juju.relation_id"], "db:7");
    assert_eq!(attributes["juju.remote_unit"], "postgresql/0");
    assert_eq!(attributes["juju.remote_app"], "postgresql");
    assert_eq!(attributes["juju.unit_name"], "myapp/0");
    assert_eq!(attributes["juju.hook_name"], "db-relation-changed");
    assert!(attributes.get("juju.departing_unit").is_none());
    assert_eq!(root["status"], "OK");

    let charm_span = span(&trace, "charm");
    assert_eq!(charm_span["parent_span_id"], root["span_id"]);
    let process = &charm_span["attributes"];
    assert_eq!(process["process.exit.code"], 0);
    assert_eq!(process["process.executable.name"], "dispatch.orig");
    assert!(process["process.executable.path"]
        .as_str()
        .unwrap()
        .ends_with("/charm/dispatch.orig"));
    assert!(process["process.pid"].as_i64().unwrap() > 1);
    assert!(process["dispatch.child.max_rss_bytes"].as_i64().unwrap() > 0);
    assert!(process["dispatch.child.cpu_user_seconds"].is_number());
    assert!(process["dispatch.child.cpu_system_seconds"].is_number());
    assert!(charm_span["duration_ms"].as_f64().unwrap() >= 50.0);
    assert!(root["start_unix_nano"].as_u64() <= charm_span["start_unix_nano"].as_u64());
    assert!(root["end_unix_nano"].as_u64() >= charm_span["end_unix_nano"].as_u64());

    let status = span(&trace, "status-set");
    assert_eq!(status["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(status["parent_span_id"], charm_span["span_id"]);
    assert_eq!(status["attributes"]["juju.status"], "active");

    let resource = &trace["resource"];
    assert_eq!(resource["service.name"], "myapp");
    assert_eq!(
        resource["service.namespace"],
        "f00dfeed-0000-4000-8000-000000000001"
    );
    assert_eq!(resource["service.namespace.name"], "test-model");
    assert_eq!(resource["service.instance.id"], "0");
    assert_eq!(resource["charm"], "shell-charm");
    assert_eq!(resource["juju_unit"], "myapp/0");
    assert_eq!(resource["juju_application"], "myapp");
    assert_eq!(resource["juju_model"], "test-model");
    assert_eq!(
        resource["juju_model_uuid"],
        "f00dfeed-0000-4000-8000-000000000001"
    );
    assert_eq!(resource["telemetry.sdk.language"], "rust");
}

#[test]
fn actions_are_named_after_the_action_and_marked_as_such() {
    let charm = Charm::new("shell");
    let out = charm.dispatch("actions/backup", &[]);
    assert_eq!(code(&out), 0);
    let trace = charm.last_trace();
    assert_eq!(trace["event"], "backup");
    assert_eq!(root(&trace)["attributes"]["juju.event.kind"], "action");
    assert_eq!(root(&trace)["attributes"]["juju.action_name"], "backup");
}

#[test]
fn without_dispatch_orig_the_hook_script_runs() {
    let charm = Charm::new("shell");
    std::fs::remove_file(charm.path("dispatch.orig")).unwrap();
    charm.write(
        "hooks/install",
        "#!/bin/sh\necho installed-by-hook\nexit 4\n",
    );
    charm.chmod("hooks/install", 0o755);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 4);
    assert_eq!(text(&out.stdout), "installed-by-hook\n");
    let trace = charm.last_trace();
    assert!(root(&trace)["attributes"]["dispatch.target"]
        .as_str()
        .unwrap()
        .ends_with("hooks/install"));

    // No hook for this event either: nothing runs, exit 0, a skipped root span.
    let out = charm.dispatch("hooks/start", &[]);
    assert_eq!(code(&out), 0);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let trace = charm.last_trace();
    assert_eq!(trace["event"], "start");
    assert_eq!(root(&trace)["attributes"]["dispatch.skipped"], true);
    assert!(util::spans_named(&trace, "charm").is_empty());
}

#[test]
fn a_target_that_is_not_executable_exits_126_with_one_line_and_a_trace() {
    let charm = Charm::new("shell");
    charm.chmod("dispatch.orig", 0o644);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 126);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dispatch: ") && stderr.contains("dispatch.orig"),
        "{stderr}"
    );
    let trace = charm.last_trace();
    assert_eq!(root(&trace)["status"], "ERROR");
    assert_eq!(
        span(&trace, "charm")["attributes"]["process.exit.code"],
        126
    );
}

/// Long enough for a debug build on a loaded machine; a dispatch that spins fails the test
/// after this instead of hanging the suite.
const LOOP_GUARD: Duration = Duration::from_secs(30);

/// The exact line of a dispatch whose target is this dispatch.
fn itself_line(shown: &str, how: &str) -> String {
    let fix = if shown == "dispatch" {
        "set `target` in dispatch-trace.yaml to the charm's own entrypoint".to_string()
    } else {
        "put the charm's original dispatch back as dispatch.orig (the packed charm has it)"
            .to_string()
    };
    format!(
        "dispatch: the charm's own entrypoint is missing: {shown} is this dispatch ({how}), not \
         the charm's dispatch; {fix}\n"
    )
}

#[test]
fn a_target_that_is_this_dispatch_fails_the_hook_at_once_with_one_line_and_an_error_trace() {
    for how in util::SELF_TARGETS {
        let charm = Charm::new("shell");
        let shown = charm.target_this_dispatch(how);
        let line = itself_line(shown, how);

        // NOISY: the charm would print and exit 3, had it run.
        let out = charm.dispatch_within("hooks/install", util::NOISY, LOOP_GUARD);
        assert_eq!(code(&out), 126, "{how}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{how}: {}", text(&out.stdout));
        assert_eq!(text(&out.stderr), line, "{how}");
        let trace = charm.last_trace();
        assert_eq!(root(&trace)["status"], "ERROR", "{how}");
        assert_eq!(
            root(&trace)["status_message"],
            line.trim_end().strip_prefix("dispatch: ").unwrap(),
            "{how}"
        );
        assert!(util::spans_named(&trace, "charm").is_empty(), "{how}");
        let failed = charm.tool(&["traces", "--failed", "--format", "json"]);
        let failed: Value = serde_json::from_slice(&failed.stdout).unwrap();
        assert_eq!(failed.as_array().unwrap().len(), 1, "{how}: {failed:#}");

        // A failing hook says why every time, not only the first.
        let again = charm.dispatch_within("hooks/install", util::NOISY, LOOP_GUARD);
        assert_eq!((code(&again), text(&again.stderr)), (126, line.clone()));

        // Untraced, the same.
        let untraced = charm.dispatch_within(
            "hooks/install",
            &[("OTEL_SDK_DISABLED", "true")],
            LOOP_GUARD,
        );
        assert_eq!(
            (code(&untraced), text(&untraced.stderr)),
            (126, line.clone())
        );
        assert!(untraced.stdout.is_empty());

        // During an action: failed, and nothing on stderr (it would land in the results).
        for extra in [&[][..], &[("OTEL_SDK_DISABLED", "true")][..]] {
            let action = charm.dispatch_within("actions/backup", extra, LOOP_GUARD);
            assert_eq!(code(&action), 126, "{how}");
            assert!(action.stderr.is_empty(), "{how}: {}", text(&action.stderr));
        }
        assert!(charm.processes().is_empty(), "{how}: processes left");
    }
}

#[test]
fn a_dispatch_orig_that_runs_dispatch_again_is_stopped_after_a_few_rounds() {
    let line = "dispatch: the charm's own entrypoint is missing: what dispatch runs starts \
                dispatch again (DISPATCH_TRACE_EXEC_DEPTH=8 nested dispatches), so nothing was \
                run; put the charm's original dispatch back as dispatch.orig\n";
    // With exec every round replaces the last; without, each waits for the next.
    for again in ["exec ./dispatch", "./dispatch"] {
        for extra in [&[][..], &[("OTEL_SDK_DISABLED", "true")][..]] {
            let charm = Charm::new("shell");
            let rounds = charm.scratch.path("rounds");
            charm.write(
                "dispatch.orig",
                format!("#!/bin/sh\necho round >> {}\n{again}\n", rounds.display()),
            );
            charm.chmod("dispatch.orig", 0o755);
            let what = format!("{again:?} {extra:?}");

            let out = charm.dispatch_within("hooks/install", extra, LOOP_GUARD);
            assert_eq!(code(&out), 126, "{what}: {}", text(&out.stderr));
            assert_eq!(text(&out.stderr), line, "{what}");
            assert!(out.stdout.is_empty(), "{what}");
            let rounds_run = std::fs::read_to_string(&rounds).unwrap().lines().count();
            assert_eq!(rounds_run, 8, "{what}");
            assert!(charm.processes().is_empty(), "{what}: processes left");

            let action = charm.dispatch_within("actions/backup", extra, LOOP_GUARD);
            assert_eq!(code(&action), 126, "{what}");
            assert!(action.stderr.is_empty(), "{what}: {}", text(&action.stderr));
            assert!(charm.processes().is_empty(), "{what}: processes left");
        }
    }
}

#[test]
fn a_charm_with_nothing_to_run_for_any_event_says_so_once_and_skips_every_event() {
    let line = "dispatch: the charm's own entrypoint is missing: there is no dispatch.orig and no \
                hooks/ or actions/ script, so no event runs anything (the charm has stopped); \
                put the charm's original dispatch back as dispatch.orig\n";
    for extra in [&[][..], &[("OTEL_SDK_DISABLED", "true")][..]] {
        let charm = Charm::new("shell");
        std::fs::remove_file(charm.path("dispatch.orig")).unwrap();
        // charmcraft's links back to dispatch are how Juju reaches us, not the charm's hooks.
        std::fs::create_dir_all(charm.path("hooks")).unwrap();
        for hook in ["install", "start", "upgrade-charm"] {
            std::os::unix::fs::symlink("../dispatch", charm.path(&format!("hooks/{hook}")))
                .unwrap();
        }
        let first = charm.dispatch("hooks/install", extra);
        assert_eq!(code(&first), 0, "{extra:?}");
        assert!(first.stdout.is_empty(), "{extra:?}");
        assert_eq!(text(&first.stderr), line, "{extra:?}");
        // Not again while the cause is unchanged, whatever the event.
        for event in ["hooks/install", "hooks/config-changed"] {
            let next = charm.dispatch(event, extra);
            assert_eq!(code(&next), 0, "{extra:?} {event}");
            assert!(
                next.stderr.is_empty(),
                "{extra:?} {event}: {}",
                text(&next.stderr)
            );
        }
        let action = charm.dispatch("actions/backup", extra);
        assert_eq!(code(&action), 0);
        assert!(action.stderr.is_empty(), "{}", text(&action.stderr));
    }

    let charm = Charm::new("shell");
    std::fs::remove_file(charm.path("dispatch.orig")).unwrap();
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let trace = charm.last_trace();
    assert_eq!(root(&trace)["attributes"]["dispatch.skipped"], true);
    assert_eq!(
        root(&trace)["attributes"]["dispatch.skip_reason"],
        "no target for install"
    );
    let tree = charm.tool(&["traces"]);
    let tree = text(&tree.stdout);
    let root_line = tree
        .lines()
        .find(|l| l.starts_with("  install "))
        .unwrap_or_else(|| panic!("no root line in {tree}"));
    assert!(
        root_line.ends_with("skipped: no target for install"),
        "{tree}"
    );
}

#[test]
fn a_legacy_hook_symlink_run_exports_the_derived_dispatch_path() {
    let charm = Charm::new("shell");
    std::fs::create_dir_all(charm.path("hooks")).unwrap();
    std::os::unix::fs::symlink("../dispatch", charm.path("hooks/upgrade-charm")).unwrap();
    let dump = charm.scratch.path("env");
    let out = charm
        .command(
            "hooks/upgrade-charm",
            "unused",
            &[("CHARM_DUMP_ENV", dump.to_str().unwrap())],
        )
        .env_remove("JUJU_DISPATCH_PATH")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let env = env_file(&dump);
    assert_eq!(env["JUJU_DISPATCH_PATH"], "hooks/upgrade-charm");
    let trace = charm.last_trace();
    assert_eq!(trace["event"], "upgrade-charm");
}

#[test]
fn an_ops_style_redispatch_through_the_hook_symlink_yields_one_trace() {
    // ops re-runs hooks/<event> (a symlink to dispatch) with OPERATOR_DISPATCH=1 for install,
    // start and upgrade-charm; that nested run must exec the charm, not trace it again.
    let charm = Charm::new("shell");
    std::fs::create_dir_all(charm.path("hooks")).unwrap();
    std::os::unix::fs::symlink("../dispatch", charm.path("hooks/install")).unwrap();
    let marker = charm.scratch.path("nested-ran");
    let script = format!(
        "#!/bin/sh\nif [ -n \"$OPERATOR_DISPATCH\" ]; then echo nested >> {m}; is-leader >/dev/null; exit 0; fi\n\
         OPERATOR_DISPATCH=1 ./hooks/install || exit 9\necho outer >> {m}\n",
        m = marker.display()
    );
    charm.write("dispatch.orig", script);
    charm.chmod("dispatch.orig", 0o755);
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "nested\nouter\n");
    let traces = charm.traces();
    assert_eq!(traces.len(), 1, "exactly one trace for one event");
    // The nested run's tool call is part of the one trace.
    assert_eq!(util::spans_named(&traces[0], "is-leader").len(), 1);
}

#[test]
fn a_signal_sent_to_the_wrapper_reaches_the_charm_once() {
    let charm = Charm::new("shell");
    for (signal, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
    ] {
        let trap = charm.scratch.path(&format!("trap-{name}"));
        let ready = charm.scratch.path(&format!("trap-{name}.ready"));
        let child = charm
            .command(
                "dispatch",
                "hooks/stop",
                &[
                    ("CHARM_TRAP", trap.to_str().unwrap()),
                    ("CHARM_SLEEP", "1.5"),
                    ("CHARM_EXIT", "3"),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(ready.display(), Duration::from_secs(10), || ready.exists());
        // SAFETY: signalling the wrapper we started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 3, "{name}: {}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(&trap).unwrap(), format!("{name}\n"));
        let trace = charm.last_trace();
        let attributes = &span(&trace, "charm")["attributes"];
        assert_eq!(
            attributes["dispatch.signals.forwarded"],
            serde_json::json!([format!("SIG{name}")])
        );
        assert_eq!(
            attributes["dispatch.signals.not_forwarded"],
            serde_json::json!([])
        );
    }
}

/// Runs a dispatch as the foreground job of a new terminal and types Ctrl-C: the kernel sends
/// SIGINT to the whole foreground group, so the charm must see it exactly once.
#[test]
fn ctrl_c_in_a_terminal_reaches_the_charm_exactly_once() {
    use std::os::unix::process::CommandExt;
    let charm = Charm::new("shell");
    let trap = charm.scratch.path("trap");
    let ready = charm.scratch.path("trap.ready");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave_fd = std::os::fd::AsRawFd::as_raw_fd(&pty.slave);
    let mut command = charm.command(
        "dispatch",
        "hooks/stop",
        &[
            ("CHARM_TRAP", trap.to_str().unwrap()),
            ("CHARM_SLEEP", "1.5"),
        ],
    );
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // A new session whose controlling terminal is the pty; we are its foreground group.
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    wait_for(ready.display(), Duration::from_secs(10), || ready.exists());
    // Typing the interrupt character into the terminal: the line discipline signals the
    // foreground process group with SI_KERNEL.
    nix::unistd::write(&pty.master, b"\x03").unwrap();
    let status = child.wait().unwrap();
    let seen = std::fs::read_to_string(&trap).unwrap();
    assert_eq!(seen, "INT\n", "the charm saw: {seen:?}");
    assert_eq!(
        status.code(),
        Some(0),
        "the charm trapped INT and exited 0: {status:?}"
    );
    // The wrapper saw the terminal's SIGINT too and, by rule, did not forward it.
    let trace = charm.last_trace();
    let attributes = &span(&trace, "charm")["attributes"];
    assert_eq!(
        attributes["dispatch.signals.not_forwarded"],
        serde_json::json!(["SIGINT"])
    );
    assert_eq!(
        attributes["dispatch.signals.forwarded"],
        serde_json::json!([])
    );
}

#[test]
fn the_wrapper_does_not_wait_for_daemons_the_charm_leaves_behind() {
    let charm = Charm::new("shell");
    let pid_file = charm.scratch.path("grandchild.pid");
    let started = Instant::now();
    let out = charm
        .command(
            "dispatch",
            "hooks/start",
            &[
                ("CHARM_GRANDCHILD", pid_file.to_str().unwrap()),
                ("CHARM_GRANDCHILD_DETACH", "1"),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: probing and then ending the daemon the charm left.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(
        alive,
        "the daemon must survive the dispatch, as it would without us"
    );
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let trace: Value = charm.last_trace();
    assert_eq!(root(&trace)["status"], "OK");
}

/// systemd stopping the agent (machine) or Pebble stopping its service group (Kubernetes)
/// signals every process itself, from PID 1: the wrapper must not deliver it a second time.
/// Reproduced in a PID namespace where the stopping shell is PID 1.
#[test]
fn a_signal_from_init_to_every_process_reaches_the_charm_once() {
    let charm = Charm::new("shell");
    let trap = charm.scratch.path("trap");
    let pid_file = charm.scratch.path("charm.pid");
    let code_file = charm.scratch.path("code");
    let script = format!(
        "./dispatch & d=$!\n\
         while [ ! -s {pid} ] || [ ! -f {trap}.ready ]; do sleep 0.01; done\n\
         kill -TERM $d $(cat {pid})\n\
         wait $d; echo $? > {code}\n",
        pid = pid_file.display(),
        trap = trap.display(),
        code = code_file.display()
    );
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--pid", "--fork", "sh", "-c", &script])
        .current_dir(&charm.dir)
        .env_clear()
        .envs(charm.juju_env("hooks/stop"))
        .env("CHARM_TRAP", &trap)
        .env("CHARM_SLEEP", "1")
        .env("CHARM_RUN", format!("echo $$ > {}", pid_file.display()))
        .stdin(Stdio::null());
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "unshare failed: {}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&code_file).unwrap().trim(), "0");
    assert_eq!(std::fs::read_to_string(&trap).unwrap(), "TERM\n");
    let trace = charm.last_trace();
    let attributes = &span(&trace, "charm")["attributes"];
    assert_eq!(
        attributes["dispatch.signals.not_forwarded"],
        serde_json::json!(["SIGTERM"])
    );
}

/// A parent that ignores SIGCHLD passes that on through exec; the wrapper (and the shim) must
/// still see their child's real exit status.
#[test]
fn an_inherited_ignored_sigchld_does_not_lose_the_exit_status() {
    let charm = Charm::new("shell");
    let script = "import os, signal\n\
                  signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
                  os.execv('./dispatch', ['./dispatch'])\n";
    for _ in 0..5 {
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .current_dir(&charm.dir)
            .env_clear()
            .envs(charm.juju_env("hooks/install"))
            .env("CHARM_RUN", "is-leader > /dev/null || exit 9")
            .env("CHARM_EXIT", "3")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&out), 3, "{}", text(&out.stderr));
        let trace = charm.last_trace();
        assert_eq!(
            span(&trace, "is-leader")["attributes"]["process.exit.code"],
            0
        );
        assert_eq!(span(&trace, "charm")["attributes"]["process.exit.code"], 3);
    }
}
