//! `dispatch <command>`: the tool an operator runs by hand (`juju ssh`, `juju exec`) and a test
//! runs to read traces. Usage and its errors, reading without a store, the trace views and
//! their filters, finding the store from the binary's own directory, the production switches
//! (`disable`, `enabled: false`, and the pass-through environment), `check-config`, the one
//! operator line a bad config file earns, and `status`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util;
use crate::util::outcome::assert_same_outcome;
use crate::util::{
    code, events, fingerprint, free_port, listing, our_lines, root, set_destination, text, Charm,
    NOISY,
};
use serde_json::Value;

/// Runs `dispatch <args>` from `cwd` with a minimal environment, through `program`.
fn run_tool(program: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok_stdout(out: &Output) -> String {
    assert_eq!(code(out), 0, "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

fn traces_json(charm: &Charm, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["traces", "--format", "json"];
    all.extend_from_slice(args);
    let out = charm.tool(&all);
    let stdout = ok_stdout(&out);
    serde_json::from_str::<Value>(&stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {stdout}"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn help_and_version_go_to_stdout_and_bad_usage_exits_2_with_a_message_on_stderr_only() {
    let charm = Charm::new("shell");
    for flag in ["--help", "-h"] {
        let out = charm.tool(&[flag]);
        let usage = ok_stdout(&out);
        for command in ["traces", "status", "disable", "enable", "check-config"] {
            assert!(usage.contains(command), "{flag} lacks {command}: {usage}");
        }
        assert!(usage.contains("--format tree|json|otlp-json"), "{usage}");
        assert_eq!(text(&out.stderr), "");
    }

    // The version, the commit built (this checkout's HEAD) and the target triple.
    let out = charm.tool(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let commit = match head.status.success() {
        true => text(&head.stdout).trim().to_string(),
        false => "unknown".to_string(),
    };
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    assert_eq!(
        ok_stdout(&out),
        format!(
            "dispatch {} (commit {commit}, {triple})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(text(&out.stderr), "");

    let before = listing(&charm.dir);
    let bad: &[(&[&str], &str)] = &[
        (&["frobnicate"], "frobnicate"),
        (&["--frobnicate"], "--frobnicate"),
        (&["traces", "--bogus"], "--bogus"),
        (&["traces", "--last", "abc"], "abc"),
        (&["traces", "--last"], "--last"),
        (&["traces", "--format", "xml"], "xml"),
        (&["traces", "--format=xml"], "xml"),
        (&["status", "extra"], "extra"),
        (&["check-config", "now"], "now"),
    ];
    for (args, culprit) in bad {
        let out = charm.tool(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: stderr {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "", "{args:?} wrote to stdout");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("dispatch: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(culprit),
            "{args:?} names {culprit}: {stderr}"
        );
        assert!(
            stderr.contains("--help"),
            "{args:?} points at --help: {stderr}"
        );
    }
    assert_eq!(listing(&charm.dir), before, "bad usage created files");
}

#[test]
fn reading_traces_before_any_dispatch_shows_nothing_and_creates_no_store() {
    let charm = Charm::new("shell");
    let before = listing(&charm.dir);

    let tree = charm.tool(&["traces"]);
    assert_eq!(ok_stdout(&tree), "");
    let json = charm.tool(&["traces", "--format", "json"]);
    let stdout = ok_stdout(&json);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        serde_json::json!([])
    );
    let otlp = charm.tool(&["traces", "--format", "otlp-json", "--failed"]);
    assert_eq!(ok_stdout(&otlp), "");
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(status.contains("not created yet"), "{status}");

    assert!(!charm.store_file().exists(), "reading created the store");
    assert_eq!(listing(&charm.dir), before, "reading created files");
}

/// Four dispatches: a changing install, a failing config-changed (its tool call fails too),
/// a quiet update-status and a good config-changed.
fn four_dispatches(charm: &Charm) {
    let install = charm.dispatch(
        "hooks/install",
        &[
            ("CHARM_TOOL", "status-set"),
            ("CHARM_TOOL_ARGS", "maintenance installing"),
            ("CHARM_TOOL_CALLS", "1"),
        ],
    );
    assert_eq!(code(&install), 0, "{}", text(&install.stderr));
    std::fs::create_dir_all(charm.state.join("fail")).unwrap();
    std::fs::write(charm.state.join("fail/is-leader"), "1\nERROR not today\n").unwrap();
    let failing = charm.dispatch(
        "hooks/config-changed",
        &[
            ("CHARM_TOOL", "is-leader"),
            ("CHARM_TOOL_CALLS", "1"),
            ("CHARM_EXIT", "1"),
        ],
    );
    assert_eq!(code(&failing), 1);
    std::fs::remove_file(charm.state.join("fail/is-leader")).unwrap();
    let quiet = charm.dispatch(
        "hooks/update-status",
        &[("CHARM_TOOL", "status-get"), ("CHARM_TOOL_CALLS", "2")],
    );
    assert_eq!(code(&quiet), 0);
    let good = charm.dispatch("hooks/config-changed", &[]);
    assert_eq!(code(&good), 0);
}

/// The tree view's sections, one per dispatch (separated by blank lines).
fn tree_sections(tree: &str) -> Vec<Vec<String>> {
    tree.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.lines().map(str::to_string).collect())
        .collect()
}

/// The line for a span in a tree section: the span name is the first word after the
/// tree drawing.
fn tree_line<'a>(section: &'a [String], name: &str) -> &'a str {
    section[1..]
        .iter()
        .find(|l| {
            l.trim_start_matches([' ', '│', '├', '└', '─'])
                .split_whitespace()
                .next()
                == Some(name)
        })
        .unwrap_or_else(|| panic!("no {name} line in {section:#?}"))
}

fn has_duration(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[1] == "ms" && w[0].parse::<f64>().is_ok_and(|ms| ms >= 0.0))
}

#[test]
fn traces_filters_select_by_count_event_and_failure_and_every_format_shows_them() {
    let charm = Charm::new("shell");
    four_dispatches(&charm);

    let all = traces_json(&charm, &["--last", "0"]);
    assert!(
        all.iter().all(|t| t["schema_version"] == 1),
        "every dispatch says the JSON shape it has: {all:?}"
    );
    assert_eq!(
        events(&all),
        [
            "install",
            "config-changed",
            "update-status",
            "config-changed"
        ]
    );
    assert_eq!(
        events(&traces_json(&charm, &["--last", "2"])),
        ["update-status", "config-changed"],
        "--last N is the newest N, oldest first"
    );
    let by_event = traces_json(&charm, &["--event", "config-changed"]);
    assert_eq!(events(&by_event), ["config-changed", "config-changed"]);
    assert_eq!(by_event[0]["trace_id"], all[1]["trace_id"]);
    assert_eq!(by_event[1]["trace_id"], all[3]["trace_id"]);
    let failed = traces_json(&charm, &["--failed"]);
    assert_eq!(events(&failed), ["config-changed"]);
    assert_eq!(failed[0]["trace_id"], all[1]["trace_id"]);
    assert_eq!(failed[0]["priority"], "failed");
    assert_eq!(
        traces_json(&charm, &["--event=update-status", "--last=1"])[0]["trace_id"],
        all[2]["trace_id"]
    );
    assert_eq!(
        traces_json(&charm, &["--event", "remove"]),
        Vec::<Value>::new()
    );

    // tree (the default format)
    let tree = ok_stdout(&charm.tool(&["traces"]));
    let sections = tree_sections(&tree);
    assert_eq!(sections.len(), 4, "{tree}");
    let expected = [
        ("install", "status-set", false),
        ("config-changed", "is-leader", true),
        ("update-status", "status-get", false),
        ("config-changed", "", false),
    ];
    for ((event, tool, fails), (section, trace)) in
        expected.iter().zip(sections.iter().zip(all.iter()))
    {
        let header = &section[0];
        assert!(header.starts_with(event), "{header}");
        assert!(
            header.contains(trace["trace_id"].as_str().unwrap()),
            "{header}"
        );
        let root_line = tree_line(section, event);
        let charm_line = tree_line(section, "charm");
        let mut lines = vec![root_line, charm_line];
        if !tool.is_empty() {
            lines.push(tree_line(section, tool));
        }
        for line in &lines {
            assert!(has_duration(line), "no duration in {line:?}");
            assert_eq!(line.contains("ERROR"), *fails, "{line:?}");
        }
    }
    assert!(
        tree_line(&sections[0], "status-set").contains("maintenance installing"),
        "{tree}"
    );
    assert!(
        tree_line(&sections[1], "charm").contains("exit 1"),
        "{tree}"
    );
    assert!(
        tree_line(&sections[1], "is-leader").contains("exit 1"),
        "{tree}"
    );
    assert_eq!(
        tree_line(&sections[2], "charm")
            .matches("status-get")
            .count(),
        0
    );
    assert_eq!(
        sections[2]
            .iter()
            .filter(|l| l.contains("status-get"))
            .count(),
        2,
        "{tree}"
    );
    let failed_tree = ok_stdout(&charm.tool(&["traces", "--failed", "--format", "tree"]));
    assert_eq!(tree_sections(&failed_tree).len(), 1, "{failed_tree}");
    assert!(failed_tree.starts_with("config-changed"), "{failed_tree}");

    // otlp-json: one ExportTraceServiceRequest per line
    let otlp = ok_stdout(&charm.tool(&["traces", "--format", "otlp-json", "--last", "0"]));
    let lines: Vec<&str> = otlp.lines().collect();
    assert_eq!(lines.len(), 4, "{otlp}");
    for (line, trace) in lines.iter().zip(all.iter()) {
        let request: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line ({e}): {line}"));
        let resource_spans = request["resourceSpans"].as_array().unwrap();
        assert_eq!(resource_spans.len(), 1, "{line}");
        let resource: Vec<(String, Value)> = resource_spans[0]["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
            .collect();
        let attr = |key: &str| {
            resource
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v["stringValue"].clone())
                .unwrap_or_else(|| panic!("no resource attribute {key} in {line}"))
        };
        assert_eq!(attr("service.name"), "myapp");
        assert_eq!(attr("juju_unit"), "myapp/0");
        assert_eq!(attr("charm"), "shell-charm");
        assert!(attr("telemetry.sdk.language").is_string());

        let spans: Vec<&Value> = resource_spans[0]["scopeSpans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["spans"].as_array().unwrap().iter())
            .collect();
        assert!(spans.len() >= 2, "{line}");
        for span in &spans {
            let id = span["traceId"].as_str().unwrap();
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{id}"
            );
            assert_ne!(id, "0".repeat(32));
            assert_eq!(id, trace["trace_id"], "one trace per line");
        }
        let roots: Vec<&&Value> = spans
            .iter()
            .filter(|s| s["parentSpanId"].as_str().unwrap_or("").is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "{line}");
        assert_eq!(roots[0]["name"], trace["event"]);
    }
    let failed_otlp = ok_stdout(&charm.tool(&["traces", "--failed", "--format", "otlp-json"]));
    assert_eq!(failed_otlp.lines().count(), 1);
    assert_eq!(failed_otlp.lines().next(), Some(lines[1]));
}

#[test]
fn tool_mode_finds_the_store_beside_the_real_binary_from_any_cwd_and_through_a_symlink() {
    let charm = Charm::new("shell");
    let other = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    assert_eq!(code(&other.dispatch("hooks/remove", &[])), 0);
    let expected = ok_stdout(&charm.tool(&["traces", "--format", "json"]));
    assert_eq!(
        events(
            &serde_json::from_str::<Value>(&expected)
                .unwrap()
                .as_array()
                .unwrap()[..]
        ),
        ["install", "start"]
    );

    // From inside another charm's directory: our binary's store, not the cwd's.
    let from_other_dir = run_tool(
        &charm.path("dispatch"),
        &other.dir,
        &["traces", "--format", "json"],
    );
    assert_eq!(ok_stdout(&from_other_dir), expected);
    let relative = run_tool(
        Path::new("../charm/dispatch"),
        &charm.scratch.path("tools"),
        &["traces", "--format", "json"],
    );
    assert_eq!(ok_stdout(&relative), expected);

    // Through a symlink placed elsewhere, by path and through PATH.
    let bin = charm.scratch.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(charm.path("dispatch"), bin.join("dispatch")).unwrap();
    let through_link = run_tool(
        &bin.join("dispatch"),
        &other.dir,
        &["traces", "--format", "json"],
    );
    assert_eq!(ok_stdout(&through_link), expected);
    let through_path = Command::new("dispatch")
        .args(["traces", "--format", "json"])
        .current_dir("/")
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(ok_stdout(&through_path), expected);

    let status = ok_stdout(&run_tool(&bin.join("dispatch"), &other.dir, &["status"]));
    let real_store = std::fs::canonicalize(charm.store_file()).unwrap();
    assert!(
        status.contains(real_store.to_str().unwrap()),
        "status through a link names the real store: {status}"
    );
    assert_eq!(
        listing(&bin),
        ["dispatch"],
        "nothing is created beside the link"
    );
    assert_eq!(
        other.traces().len(),
        1,
        "the other charm's store is untouched"
    );
}

/// Runs a dispatch that dumps the charm's environment; returns (output, env lines).
fn dispatch_dumping_env(
    charm: &Charm,
    program: &str,
    extra: &[(&str, &str)],
) -> (Output, Vec<String>) {
    let dump = charm.scratch.path("env.txt");
    let _ = std::fs::remove_file(&dump);
    let mut env: Vec<(&str, &str)> = vec![
        ("CHARM_DUMP_ENV", dump.to_str().unwrap()),
        ("CHARM_STDOUT", "charm ran\n"),
        ("CHARM_EXIT", "4"),
    ];
    env.extend_from_slice(extra);
    let out = charm
        .command(program, "hooks/config-changed", &env)
        .output()
        .unwrap();
    let lines = std::fs::read_to_string(&dump)
        .unwrap_or_else(|e| panic!("the charm did not run ({e}): {}", text(&out.stderr)))
        .lines()
        .map(str::to_string)
        .collect();
    (out, lines)
}

fn has_tracing_vars(env: &[String]) -> bool {
    env.iter()
        .any(|l| l.starts_with("TRACEPARENT=") || l.starts_with("DISPATCH_TRACE_"))
}

/// A pass-through dispatch: the charm runs as if we were not there, and nothing is stored.
fn assert_passes_through(charm: &Charm, extra: &[(&str, &str)], stored: usize) {
    let (traced, mut traced_env) = dispatch_dumping_env(charm, "dispatch", extra);
    let (bare, bare_env) = dispatch_dumping_env(charm, "dispatch.orig", extra);
    assert_same_outcome(&traced, &bare);
    assert_eq!(code(&traced), 4);
    assert_eq!(our_lines(&traced.stderr), Vec::<String>::new());
    // The one thing of ours, what bounds a target that runs dispatch again (README "What
    // runs"): this dispatch was the first.
    let depth = traced_env
        .iter()
        .position(|l| l == "DISPATCH_TRACE_EXEC_DEPTH=1")
        .unwrap_or_else(|| panic!("no exec depth in {traced_env:#?}"));
    traced_env.remove(depth);
    assert!(!has_tracing_vars(&traced_env), "{traced_env:#?}");
    assert_eq!(
        traced_env, bare_env,
        "the charm's environment is exactly the bare one, but for the exec depth"
    );
    assert_eq!(
        charm.traces().len(),
        stored,
        "a pass-through stored a trace"
    );
}

/// A traced dispatch: stored, and the charm sees our variables.
fn assert_traced(charm: &Charm, stored_before: usize) {
    let (out, env) = dispatch_dumping_env(charm, "dispatch", &[]);
    assert_eq!(code(&out), 4);
    assert_eq!(text(&out.stdout), "charm ran\n");
    assert!(has_tracing_vars(&env), "{env:#?}");
    assert_eq!(charm.traces().len(), stored_before + 1);
}

#[test]
fn dispatch_disable_makes_the_next_dispatches_run_the_charm_untraced_until_dispatch_enable() {
    let charm = Charm::new("shell");
    assert_traced(&charm, 0);

    let disable = ok_stdout(&charm.tool(&["disable"]));
    assert!(disable.contains("disabled"), "{disable}");
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(
        status.lines().any(|l| l.starts_with("tracing: disabled")),
        "{status}"
    );
    assert_passes_through(&charm, &[], 1);
    assert_passes_through(&charm, &[], 1);

    let enable = ok_stdout(&charm.tool(&["enable"]));
    assert!(enable.contains("enabled"), "{enable}");
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(status.lines().any(|l| l == "tracing: enabled"), "{status}");
    assert_traced(&charm, 1);
}

#[test]
fn enabled_false_in_the_config_file_otel_sdk_disabled_and_operator_dispatch_each_pass_through() {
    let charm = Charm::new("shell");
    assert_traced(&charm, 0);

    charm.write("dispatch-trace.yaml", "enabled: false\n");
    assert_passes_through(&charm, &[], 1);
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(
        status.lines().any(|l| l.starts_with("tracing: disabled")),
        "{status}"
    );
    std::fs::remove_file(charm.path("dispatch-trace.yaml")).unwrap();
    assert_traced(&charm, 1);

    assert_passes_through(&charm, &[("OTEL_SDK_DISABLED", "true")], 2);
    assert_passes_through(&charm, &[("OTEL_SDK_DISABLED", "TRUE")], 2);
    // ops re-running hooks/<name> for install, start and upgrade-charm.
    assert_passes_through(&charm, &[("OPERATOR_DISPATCH", "1")], 2);
    assert_traced(&charm, 2);
}

fn check_config(charm: &Charm) -> (i32, String) {
    let out = charm.tool(&["check-config"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code().unwrap(), all)
}

#[test]
fn check_config_passes_a_good_charm_and_fails_with_the_reason_for_each_problem() {
    let good = Charm::new("shell");
    let (status, said) = check_config(&good);
    assert_eq!(status, 0, "{said}");
    assert!(said.contains("ok"), "{said}");
    assert!(!said.contains("PROBLEM"), "{said}");
    good.write(
        "dispatch-trace.yaml",
        "store_max_bytes: 1048576\nprotocol: http/json\n",
    );
    let (status, said) = check_config(&good);
    assert_eq!(status, 0, "a valid config file is ok: {said}");

    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "enabeld: false\n", "enabeld"),
        ("bad value", "protocol: grpc\n", "grpc"),
        (
            "too small a cap",
            "store_max_bytes: 1000\n",
            "store_max_bytes",
        ),
        ("not yaml", "enabled: [nope\n", "dispatch-trace.yaml"),
    ];
    for (what, contents, reason) in cases {
        let charm = Charm::new("shell");
        charm.write("dispatch-trace.yaml", contents);
        let (status, said) = check_config(&charm);
        assert_ne!(status, 0, "{what}: {said}");
        assert!(said.contains(reason), "{what}: no {reason:?} in {said}");
    }

    let no_shim = Charm::new("shell");
    std::fs::remove_file(no_shim.path("dispatch-shim")).unwrap();
    let (status, said) = check_config(&no_shim);
    assert_ne!(status, 0, "{said}");
    assert!(said.contains("dispatch-shim"), "{said}");

    let not_executable = Charm::new("shell");
    not_executable.chmod("dispatch.orig", 0o644);
    let (status, said) = check_config(&not_executable);
    assert_ne!(status, 0, "{said}");
    assert!(said.contains("dispatch.orig"), "{said}");
    assert!(said.contains("not executable"), "{said}");

    // Checking never runs the charm or creates the store.
    assert!(not_executable.tool_calls().is_empty());
    assert!(!good.store_file().exists());
}

#[test]
fn check_config_fails_on_a_target_that_is_this_dispatch_and_on_a_charm_with_nothing_to_run() {
    for how in util::SELF_TARGETS {
        let charm = Charm::new("shell");
        let shown = charm.target_this_dispatch(how);
        let (status, said) = check_config(&charm);
        assert_eq!(status, 1, "{how}: {said}");
        let expected = format!(
            "PROBLEM: the charm's own entrypoint is missing: {shown} is this dispatch ({how}), \
             not the charm's dispatch; "
        );
        assert!(said.contains(&expected), "{how}: {said}");
    }

    // No dispatch.orig and no hooks of its own (charmcraft's links back to dispatch do not
    // count): nothing would ever run.
    let nothing = Charm::new("shell");
    std::fs::remove_file(nothing.path("dispatch.orig")).unwrap();
    std::fs::create_dir_all(nothing.path("hooks")).unwrap();
    std::os::unix::fs::symlink("../dispatch", nothing.path("hooks/install")).unwrap();
    let (status, said) = check_config(&nothing);
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains(
            "PROBLEM: the charm's own entrypoint is missing: there is no dispatch.orig and no \
             hooks/ or actions/ script"
        ),
        "{said}"
    );

    // A hooks-only charm is fine: its hooks run.
    nothing.write("hooks/config-changed", "#!/bin/sh\n");
    nothing.chmod("hooks/config-changed", 0o755);
    let (status, said) = check_config(&nothing);
    assert_eq!(status, 0, "{said}");
    assert!(
        said.contains(
            "ok: target: none (dispatch.orig missing; only hooks/<event> scripts will run)"
        ),
        "{said}"
    );
}

#[test]
fn a_broken_config_file_earns_one_operator_line_until_fixed_and_none_during_actions() {
    let charm = Charm::new("shell");
    let broken = "enabeld: false\n";
    charm.write("dispatch-trace.yaml", broken);

    let first = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&first, &bare);
    let ours = our_lines(&first.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&first.stderr));
    assert!(ours[0].contains("dispatch-trace.yaml"), "{}", ours[0]);
    assert!(ours[0].contains("enabeld"), "{}", ours[0]);
    assert_eq!(
        charm.traces().len(),
        1,
        "a bad file means defaults: still traced"
    );

    let second = charm.dispatch("hooks/config-changed", NOISY);
    assert_same_outcome(&second, &bare);
    assert_eq!(
        our_lines(&second.stderr),
        Vec::<String>::new(),
        "said again"
    );

    // Fixed, one clean dispatch, broken again: said again.
    charm.write("dispatch-trace.yaml", "enabled: true\n");
    let clean = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&clean), 0);
    assert_eq!(text(&clean.stderr), "");
    charm.write("dispatch-trace.yaml", broken);
    let again = charm.dispatch("hooks/config-changed", NOISY);
    assert_same_outcome(&again, &bare);
    assert_eq!(our_lines(&again.stderr), ours);

    // During an action: nothing on stderr (it lands in the action's results), but the
    // problem is on the trace.
    charm.write("dispatch-trace.yaml", "enabled: true\n");
    assert_eq!(text(&charm.dispatch("hooks/update-status", &[]).stderr), "");
    charm.write("dispatch-trace.yaml", broken);
    let action = charm.dispatch("actions/backup", NOISY);
    let bare_action = charm.bare("actions/backup", NOISY);
    assert_same_outcome(&action, &bare_action);
    assert_eq!(
        our_lines(&action.stderr),
        Vec::<String>::new(),
        "an action's output is the user's"
    );
    let trace = charm.last_trace();
    assert_eq!(trace["event"], "backup");
    let problems = root(&trace)["attributes"]["dispatch.problems"].clone();
    let problems: Vec<&str> = problems
        .as_array()
        .unwrap_or_else(|| panic!("no dispatch.problems on {trace:#}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("dispatch-trace.yaml") && p.contains("enabeld")),
        "{problems:?}"
    );

    // Nothing was said during the action, so the next hook tells the operator.
    let hook = charm.dispatch("hooks/config-changed", NOISY);
    assert_same_outcome(&hook, &bare);
    assert_eq!(our_lines(&hook.stderr), ours);
}

#[test]
fn several_problems_in_one_dispatch_still_make_a_single_operator_line() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "enabeld: false\n");
    let elsewhere = charm.scratch.path("elsewhere.db");
    std::os::unix::fs::symlink(&elsewhere, charm.store_file()).unwrap();

    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(ours[0].contains("enabeld"), "{}", ours[0]);
    assert!(ours[0].contains(".dispatch-trace.db"), "{}", ours[0]);
    assert!(!elsewhere.exists());
}

#[test]
fn status_names_the_store_counts_the_stored_dispatches_and_says_there_is_no_destination() {
    let charm = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    assert_eq!(
        code(&charm.dispatch("hooks/config-changed", &[("CHARM_EXIT", "1")])),
        1
    );
    let out = charm.tool(&["status"]);
    let status = ok_stdout(&out);
    assert_eq!(text(&out.stderr), "");
    let store = std::fs::canonicalize(charm.store_file()).unwrap();
    let store_line = status
        .lines()
        .find(|l| l.starts_with("store:"))
        .unwrap_or_else(|| panic!("no store line: {status}"));
    assert!(store_line.contains(store.to_str().unwrap()), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("dispatches: 2 stored")),
        "{status}"
    );
    let destination = status
        .lines()
        .find(|l| l.starts_with("destination:"))
        .unwrap_or_else(|| panic!("no destination line: {status}"));
    assert!(destination.contains("none"), "{destination}");

    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("dispatches: 3 stored")),
        "{status}"
    );
}

#[test]
fn a_store_path_naming_someone_elses_file_is_refused_everywhere_and_the_file_is_never_touched() {
    let charm = Charm::new("shell");
    let precious = charm.scratch.path("precious.txt");
    std::fs::write(&precious, "years of notes\n").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = fingerprint(&precious);
    charm.write("dispatch-trace.yaml", "store_path: ../precious.txt\n");

    let (status, said) = check_config(&charm);
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains("PROBLEM: store_path")
            && said.contains("precious.txt cannot hold the trace store: it is not a trace store"),
        "{said}"
    );
    for args in [
        &["status"][..],
        &["traces"],
        &["traces", "--format", "json"],
    ] {
        let out = charm.tool(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out.stderr));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(said.contains("not a trace store"), "{args:?}: {said}");
    }
    for args in [
        &["flush"][..],
        &["set-destination", "http://127.0.0.1:9/v1/traces"],
    ] {
        let out = charm.tool(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("not a trace store"), "{args:?}");
    }
    let hook = charm.dispatch("hooks/install", NOISY);
    assert_same_outcome(&hook, &charm.bare("hooks/install", NOISY));
    assert_eq!(our_lines(&hook.stderr).len(), 1, "{}", text(&hook.stderr));
    assert_eq!(fingerprint(&precious), before, "the file was touched");
    let beside: Vec<String> = std::fs::read_dir(charm.scratch.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("precious.txt") && n.contains("corrupt"))
        .collect();
    assert_eq!(beside, Vec::<String>::new());

    // Another program's database, and a system file, are not ours either.
    let theirs = charm.scratch.path("theirs.db");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table t(x)'); c.execute('pragma application_id=7'); c.commit()",
        ])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(made.success());
    let theirs_before = fingerprint(&theirs);
    for (store_path, why) in [
        (
            theirs.to_str().unwrap(),
            "another program (application id 0x7)",
        ),
        ("/etc/passwd", "/etc/passwd"),
    ] {
        charm.write("dispatch-trace.yaml", format!("store_path: {store_path}\n"));
        let (status, said) = check_config(&charm);
        assert_eq!(status, 1, "{store_path}: {said}");
        assert!(said.contains(why), "{store_path}: {said}");
        assert_eq!(code(&charm.tool(&["status"])), 1);
    }
    assert_eq!(fingerprint(&theirs), theirs_before);
}

#[test]
fn check_config_fails_on_a_store_path_where_no_store_can_be() {
    let charm = Charm::new("shell");
    std::fs::create_dir(charm.path("a-dir")).unwrap();
    for (config, reason) in [
        ("store_path: a-dir\n", "a directory"),
        ("store_path: missing/traces.db\n", "does not exist"),
    ] {
        charm.write("dispatch-trace.yaml", config);
        let (status, said) = check_config(&charm);
        assert_eq!(status, 1, "{config}: {said}");
        assert!(said.contains(reason), "{config}: {said}");
        let status = charm.tool(&["status"]);
        assert_eq!(code(&status), 1, "{config}");
        assert!(
            text(&status.stdout).contains(reason),
            "{}",
            text(&status.stdout)
        );
    }
    // An absolute path on storage that only exists on the unit is allowed (a note).
    charm.write(
        "dispatch-trace.yaml",
        "store_path: /var/lib/juju/storage/traces-0/traces.db\n",
    );
    let (status, said) = check_config(&charm);
    assert_eq!(status, 0, "{said}");
    assert!(said.contains("it must exist on the unit"), "{said}");
    // A good relative path: where the first hook will create it.
    charm.write("dispatch-trace.yaml", "store_path: a-dir/traces.db\n");
    let (status, said) = check_config(&charm);
    assert_eq!(status, 0, "{said}");
    assert!(said.contains("the first hook creates it"), "{said}");
    assert!(!charm.path("a-dir/traces.db").exists());
}

#[test]
fn set_destination_refuses_bad_urls_with_the_reason_and_takes_any_case_of_scheme() {
    let charm = Charm::new("shell");
    for (url, reason) in [
        ("http://[::1", "invalid authority"),
        ("http://127.0.0.1:99999/v1/traces", "99999"),
        ("http://exa mple.com/v1/traces", "invalid uri character"),
        ("tempo:4318/v1/traces", "http:// or https://"),
        ("ftp://tempo/v1/traces", "ftp"),
    ] {
        let out = charm.tool(&["set-destination", url]);
        assert_eq!(code(&out), 2, "{url}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("dispatch: ")
                && stderr.contains("not a usable URL")
                && stderr.contains(reason),
            "{url}: {stderr}"
        );
        assert_eq!(text(&out.stdout), "");
    }
    assert!(
        !charm.store_file().exists(),
        "a refused URL created the store"
    );
    let out = charm.tool(&["set-destination", "HTTP://Tempo:4318/v1/traces"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "destination set to http://Tempo:4318/v1/traces\n"
    );
    let status = ok_stdout(&charm.tool(&["status"]));
    assert!(
        status.contains("destination: http://Tempo:4318/v1/traces (from dispatch set-destination"),
        "{status}"
    );

    // In the config file: check-config says why.
    charm.write(
        "dispatch-trace.yaml",
        "endpoint: http://127.0.0.1:99999/v1/traces\n",
    );
    let (status, said) = check_config(&charm);
    assert_eq!(status, 1, "{said}");
    assert!(said.contains("99999"), "{said}");
}

#[test]
fn a_bad_url_from_the_environment_or_a_relation_is_one_line_naming_its_source_and_shown_by_status()
{
    let charm = Charm::new("shell");
    let env = [(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://127.0.0.1:99999/v1/traces",
    )];
    let out = charm.dispatch("hooks/install", &env);
    assert_eq!(code(&out), 0);
    let ours = our_lines(&out.stderr);
    assert_eq!(ours.len(), 1, "{}", text(&out.stderr));
    assert!(
        ours[0].contains("OTEL_EXPORTER_OTLP_*ENDPOINT") && ours[0].contains("99999"),
        "{}",
        ours[0]
    );
    let trace = charm.last_trace();
    let error = root(&trace)["attributes"]["dispatch.export.error"].to_string();
    assert!(error.contains("not a usable URL"), "{error}");
    // Same cause next hook: not said again.
    assert_eq!(
        our_lines(&charm.dispatch("hooks/start", &env).stderr),
        Vec::<String>::new()
    );

    // The relation's receiver URL.
    charm.write(
        "metadata.yaml",
        "name: shell-charm\nrequires:\n  charm-tracing:\n    interface: tracing\n",
    );
    let receivers = serde_json::json!([{"protocol": {"name": "otlp_http", "type": "http"}, "url": "http://tempo:70000"}]);
    let state = serde_json::json!({"unit": util::UNIT, "leader": true, "relations": {"charm-tracing": {"charm-tracing:3": {
        "app": "tempo", "units": ["tempo/0"],
        "data": {"tempo": {"receivers": receivers.to_string()}, "tempo/0": {}, "myapp": {}, "myapp/0": {}}
    }}}});
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
    let out = charm.dispatch("hooks/upgrade-charm", &[]);
    assert_eq!(code(&out), 0);
    let ours = our_lines(&out.stderr);
    assert_eq!(ours.len(), 1, "{}", text(&out.stderr));
    assert!(
        ours[0].contains("the tracing relation") && ours[0].contains("70000"),
        "{}",
        ours[0]
    );
    let status = charm.tool(&["status"]);
    assert_eq!(code(&status), 1);
    let destination = text(&status.stdout)
        .lines()
        .find(|l| l.starts_with("destination:"))
        .unwrap()
        .to_string();
    assert!(
        destination.contains("PROBLEM")
            && destination.contains("the tracing relation")
            && destination.contains("70000"),
        "{destination}"
    );
}

#[test]
fn every_command_has_its_own_help() {
    let charm = Charm::new("shell");
    for command in [
        "traces",
        "status",
        "set-destination",
        "clear-destination",
        "flush",
        "disable",
        "enable",
        "check-config",
    ] {
        for flag in ["--help", "-h"] {
            let out = charm.tool(&[command, flag]);
            let help = ok_stdout(&out);
            assert!(
                help.starts_with(&format!("usage: dispatch {command}")),
                "{command} {flag}: {help}"
            );
            assert_eq!(text(&out.stderr), "");
        }
        let out = charm.tool(&["help", command]);
        assert!(ok_stdout(&out).starts_with(&format!("usage: dispatch {command}")));
    }
    let help = ok_stdout(&charm.tool(&["traces", "--help"]));
    assert!(help.contains("\n  --last N "), "{help}");
    assert!(
        !help.lines().any(|l| l.starts_with("--")),
        "options are indented: {help}"
    );
    let help = ok_stdout(&charm.tool(&["set-destination", "--help"]));
    assert!(help.contains("\n  URL "), "{help}");
    // A mistyped command or option gets a suggestion.
    let out = charm.tool(&["tracs"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr)
            .starts_with("dispatch: unknown command \"tracs\" (did you mean \"traces\"?)\n"),
        "{}",
        text(&out.stderr)
    );
    let out = charm.tool(&["traces", "--evnt", "install"]);
    assert!(
        text(&out.stderr).contains("unknown option \"--evnt\" (did you mean \"--event\"?)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!charm.store_file().exists(), "help created the store");
    assert!(!charm.path("dispatch-trace.yaml.disabled").exists());
    assert!(
        !charm.path(".dispatch-trace.db.disabled").exists(),
        "disable --help disabled"
    );
}

#[test]
fn event_filters_take_names_as_people_write_them_and_say_when_nothing_matches() {
    let charm = Charm::new("shell");
    for path in [
        "hooks/install",
        "hooks/db-relation-changed",
        "hooks/db-relation-joined",
        "hooks/cache-relation-changed",
        "actions/backup",
    ] {
        assert_eq!(code(&charm.dispatch(path, &[])), 0);
    }
    for (event, expected) in [
        ("install", &["install"][..]),
        ("hooks/install", &["install"]),
        ("actions/backup", &["backup"]),
        (
            "*-relation-changed",
            &["db-relation-changed", "cache-relation-changed"],
        ),
        (
            "db-relation-*",
            &["db-relation-changed", "db-relation-joined"],
        ),
    ] {
        assert_eq!(
            events(&traces_json(&charm, &["--event", event])),
            expected,
            "--event {event}"
        );
    }
    let none = charm.tool(&["traces", "--event", "relation-changed"]);
    assert_eq!(code(&none), 0);
    assert_eq!(text(&none.stdout), "");
    assert_eq!(
        text(&none.stderr),
        "dispatch: no trace matches --event relation-changed; 5 stored\n"
    );
    let none = charm.tool(&["traces", "--failed", "--format", "json"]);
    assert_eq!(text(&none.stdout).trim(), "[]");
    assert_eq!(
        text(&none.stderr),
        "dispatch: no trace matches --failed; 5 stored\n"
    );
}

#[test]
fn status_speaks_utc_and_its_counts_and_sizes_agree() {
    let charm = Charm::new("shell");
    let empty = ok_stdout(&charm.tool(&["status"]));
    assert!(
        empty.contains("(not created yet; the first hook creates it)"),
        "{empty}"
    );
    // A destination that refuses the connection: a backoff to show.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    set_destination(&charm, &[&url]);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let status = ok_stdout(&charm.tool(&["status"]));
    let line = |prefix: &str| -> String {
        status
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {status}"))
            .to_string()
    };
    let backoff = line("backoff:");
    assert!(
        backoff.contains("next try 20") && backoff.contains("Z, in "),
        "{backoff}"
    );
    let last = line("last export:");
    assert!(
        last.contains("refused the connection") && last.contains("Z, ") && last.ends_with(" ago)")
            || last.ends_with(", now)"),
        "{last}"
    );
    assert!(!status.contains("unix time"), "{status}");
    let dispatches = line("dispatches:");
    assert!(
        dispatches.starts_with("dispatches: 1 stored ("),
        "{dispatches}"
    );
    assert!(!dispatches.contains("(0 B of traces)"), "{dispatches}");

    // Nothing stored: no size of traces either.
    let fresh = Charm::new("shell");
    fresh.write("dispatch-trace.yaml", "store_max_bytes: 65536\n");
    for _ in 0..30 {
        assert_eq!(
            code(&fresh.dispatch("hooks/update-status", &[("CHARM_TOOL_CALLS", "5")])),
            0
        );
    }
    let status = ok_stdout(&fresh.tool(&["status"]));
    assert!(status.contains(" of traces)"), "{status}");
}
#[test]
fn check_config_says_on_which_line_and_column_a_config_mistake_is_and_exits_1() {
    let charm = Charm::new("shell");
    charm.write(
        "dispatch-trace.yaml",
        "custom_spans: true\nenabeld: false\n",
    );
    let out = charm.tool(&["check-config"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let problems: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("PROBLEM"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "PROBLEM: dispatch-trace.yaml line 2 column 1: unknown key \"enabeld\" \
             (did you mean \"enabled\"?); using defaults"
        ]
    );
    assert_eq!(text(&out.stderr), "dispatch: 1 problem(s) found\n");

    // Too large a file is not read at all.
    let big = std::fs::File::create(charm.path("dispatch-trace.yaml")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    let out = charm.tool(&["check-config"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().any(|l| l
            == "PROBLEM: dispatch-trace.yaml is 52428800 bytes; at most 65536 are read; \
                using defaults"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_hook_with_a_badly_indented_config_file_runs_the_charm_unchanged_and_says_where_once() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "enabled: true\n  bad indent\n");
    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(
        our_lines(&traced.stderr),
        [
            "dispatch: dispatch-trace.yaml line 1 column 10: enabled must be true or false, \
             not \"true bad indent\" (line 2 is indented, so YAML reads it as part of this \
             value); using defaults"
        ]
    );
    assert_eq!(charm.traces().len(), 1, "traced with the defaults");
}

#[test]
fn set_destination_warns_when_a_source_that_comes_first_overrides_it() {
    let charm = Charm::new("shell");
    charm.write(
        "dispatch-trace.yaml",
        "endpoint: http://user:s3cret@config-tempo:4318/v1/traces\n",
    );
    let out = charm.tool(&["set-destination", "http://set-tempo:4318/v1/traces"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "destination set to http://set-tempo:4318/v1/traces\n"
    );
    assert_eq!(
        text(&out.stderr),
        "dispatch: note: endpoint in dispatch-trace.yaml takes precedence over set-destination: \
         traces go to http://<credentials>@config-tempo:4318/v1/traces while it is set\n"
    );
    // The environment comes first of all (as `juju exec` or a person's shell may set it).
    std::fs::remove_file(charm.path("dispatch-trace.yaml")).unwrap();
    let out = Command::new(charm.path("dispatch"))
        .args(["set-destination", "http://other-tempo:4318/v1/traces"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env-tempo:4318")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(
            "dispatch: note: OTEL_EXPORTER_OTLP_*ENDPOINT in the environment takes precedence"
        ),
        "{}",
        text(&out.stderr)
    );
    // Nothing comes first: no note.
    let out = charm.tool(&["set-destination", "http://set-tempo:4318/v1/traces"]);
    assert_eq!(text(&out.stderr), "");
}

/// `--since`/`--until` take RFC 3339 times (as the views print them) or durations back from
/// now, and without `--last` give everything in the window; `--trace-id` picks one trace by
/// the start of its id when that start is its alone, and says when it is not.
#[test]
fn traces_are_picked_by_time_window_and_by_trace_id() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "juju_trace_context: continue\n");
    let ids = [
        "abcdef0100000000000000000000000a",
        "abcdef0200000000000000000000000b",
        "1234560300000000000000000000000c",
    ];
    for id in ids {
        let traceparent = format!("00-{id}-b7ad6b7169203331-01");
        let out = charm.dispatch(
            "hooks/update-status",
            &[("TRACEPARENT", traceparent.as_str())],
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        // Distinct start times to the millisecond, as the views print them.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let all = traces_json(&charm, &["--last", "0"]);
    let started: Vec<&str> = all
        .iter()
        .map(|t| t["started_at"].as_str().unwrap())
        .collect();
    let picked = |args: &[&str]| -> Vec<String> {
        traces_json(&charm, args)
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(picked(&["--since", started[1]]), ids[1..]);
    assert_eq!(picked(&["--until", started[1]]), ids[..2]);
    assert_eq!(
        picked(&["--since", started[1], "--until", started[1]]),
        ids[1..2]
    );
    assert_eq!(
        picked(&["--since", "1h"]),
        ids,
        "with a window, --last defaults to all of it"
    );
    assert_eq!(picked(&["--since=1h", "--last", "1"]), ids[2..]);
    assert!(picked(&["--until", "1h"]).is_empty());

    assert_eq!(picked(&["--trace-id", ids[0]]), ids[..1]);
    assert_eq!(
        picked(&["--trace-id", "ABCDEF02"]),
        ids[1..2],
        "any case, a unique start"
    );
    let tree = text(&charm.tool(&["traces", "--trace-id", "123456"]).stdout);
    assert!(tree.contains(&format!("trace {}", ids[2])), "{tree}");

    for (args, says) in [
        (
            &["--trace-id", "abcdef"][..],
            "is the start of 2 traces (abcdef01",
        ),
        (
            &["--trace-id", "xyz"],
            "--trace-id takes a trace id or the start of one",
        ),
        (
            &["--since", "yesterday"],
            "--since: \"yesterday\" is neither an RFC 3339 time",
        ),
        (
            &["--until", "2026-13-01T00:00:00Z"],
            "--until: \"2026-13-01T00:00:00Z\"",
        ),
        (&["--sinse", "1h"], "did you mean \"--since\"?"),
    ] {
        let mut all = vec!["traces"];
        all.extend_from_slice(args);
        let out = charm.tool(&all);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

/// `--summary`: a header, then one line per dispatch with the columns at the same places:
/// event with its relation, how it ended (exit code, signal), calls, state, and the exception of
/// a failed hook; it takes the filters, and `--format` beside it is refused.
#[test]
fn traces_summary_is_one_aligned_line_per_dispatch() {
    let charm = Charm::new("shell");
    let ok = charm.dispatch(
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:3"),
            ("JUJU_REMOTE_APP", "postgresql"),
            ("CHARM_TOOL", "status-set"),
            ("CHARM_TOOL_ARGS", "active"),
            ("CHARM_TOOL_CALLS", "2"),
        ],
    );
    assert_eq!(code(&ok), 0, "{}", text(&ok.stderr));
    let traceback = "Uncaught exception while in charm code:\nTraceback (most recent call last):\n  File \"src/charm.py\", line 3, in f\nKeyError: 'port'";
    let failed = charm.dispatch(
        "hooks/config-changed",
        &[
            ("CHARM_RUN", "juju-log --log-level ERROR -- \"$TRACEBACK\""),
            ("TRACEBACK", traceback),
            ("CHARM_EXIT", "3"),
        ],
    );
    assert_eq!(code(&failed), 3);
    charm.dispatch("hooks/stop", &[("CHARM_KILL", "TERM")]);

    let out = charm.tool(&["traces", "--summary"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 4, "{summary}");
    assert!(lines[0].starts_with("STARTED (UTC)") && lines[0].contains("OUTCOME"));
    let column = |line: &str, word: &str| {
        line.find(word)
            .unwrap_or_else(|| panic!("{word} in {line}"))
    };
    let outcome_at = column(lines[0], "OUTCOME");
    assert!(lines[1].contains("db-relation-changed (db:3)"), "{summary}");
    assert_eq!(column(lines[1], "exit 0"), outcome_at, "{summary}");
    assert_eq!(column(lines[2], "exit 3"), outcome_at, "{summary}");
    assert_eq!(
        column(lines[3], "killed by SIGTERM"),
        outcome_at,
        "{summary}"
    );
    assert!(
        lines[1].contains("  2  pending"),
        "two hook-tool calls: {summary}"
    );
    assert!(lines[2].ends_with("pending  KeyError: 'port'"), "{summary}");
    for line in &lines[1..] {
        assert_eq!(
            column(line, "pending"),
            column(lines[0], "STATE"),
            "{summary}"
        );
    }

    let failed_only = text(
        &charm
            .tool(&["traces", "--summary", "--failed", "--last", "1"])
            .stdout,
    );
    assert_eq!(failed_only.lines().count(), 2, "{failed_only}");
    assert!(failed_only.contains("killed by SIGTERM"));
    let refused = charm.tool(&["traces", "--summary", "--format", "json"]);
    assert_eq!(code(&refused), 2);
    assert!(text(&refused.stderr).contains("--summary is a view of its own"));
    let nothing = charm.tool(&["traces", "--summary", "--event", "remove"]);
    assert_eq!(code(&nothing), 0);
    assert!(nothing.stdout.is_empty(), "{}", text(&nothing.stdout));
    assert!(text(&nothing.stderr).contains("no trace matches --event remove; 3 stored"));
}
