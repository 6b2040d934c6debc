//! Hook-tool interception as a charm author and an operator see it: tools answer through the
//! shim exactly as they do bare, every call becomes one CLIENT span in the right place of the
//! tree, secrets handed to or printed by tools never reach the store or any view of it, and the
//! odd cases (a daemon calling after the dispatch, forged records, missing tools, a shim loop)
//! end quietly instead of breaking the hook.
//!
//! The charm's behaviour is a shell snippet written to a file and sourced by the fixture charm
//! (`CHARM_RUN='. "$SCRIPT"'`), so secret canaries never sit in the environment: if one leaks,
//! it leaked through a tool call. `$OUT` is a scratch directory outside the charm dir where the
//! snippet leaves its observations.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util;
use crate::util::{
    charm_running, code, contains, env_file, out_dir, path_str, read, read_text, root, span, text,
    wait_for, Charm, AWAIT, UNIT,
};
use serde_json::{json, Value};

const HOOK: &str = "hooks/config-changed";
const FOREIGN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const FOREIGN_SPAN: &str = "b7ad6b7169203331";

// ---- helpers -------------------------------------------------------------------------------

/// A fresh output directory for one run (bare and traced runs must not share files).
fn fresh_out(charm: &Charm, name: &str) -> PathBuf {
    let dir = charm.scratch.path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fake model: our unit is the leader and has one `db` relation to `remote`.
fn model() -> Value {
    json!({
        "unit": UNIT,
        "leader": true,
        "config": {"name": "<fancy> & ünïcode", "port": 5432, "debug": false},
        "relations": {
            "db": {
                "db:1": {
                    "app": "remote",
                    "units": ["remote/0"],
                    "data": {
                        "remote/0": {"host": "10.1.2.3", "port": "5432"},
                        "remote": {"database": "main"},
                        "myapp/0": {},
                        "myapp": {}
                    }
                }
            }
        },
        "status": {"unit": {"status": "active", "message": "ready"}}
    })
}

fn set_state(charm: &Charm, state: &Value) {
    std::fs::write(
        charm.state.join("state.json"),
        serde_json::to_vec_pretty(state).unwrap(),
    )
    .unwrap();
}

/// Runs our dispatch and insists the charm's run ended with exit 0.
fn dispatch_ok(charm: &Charm, dispatch_path: &str, extra: &[(&str, &str)]) -> Output {
    let out = charm.dispatch(dispatch_path, extra);
    assert_eq!(
        code(&out),
        0,
        "dispatch failed; stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Spans of kind CLIENT (hook-tool calls), in call order.
fn tool_spans(trace: &Value) -> Vec<&Value> {
    let mut spans: Vec<&Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .collect();
    spans.sort_by_key(|s| s["start_unix_nano"].as_u64().unwrap());
    spans
}

fn command_args(span: &Value) -> Vec<String> {
    span["attributes"]["process.command_args"]
        .as_array()
        .unwrap_or_else(|| panic!("no process.command_args in {span:#}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn nanos(span: &Value, key: &str) -> u64 {
    span[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {span:#}"))
}

/// `dispatch traces` output in one format.
fn traces_output(charm: &Charm, format: &str) -> Vec<u8> {
    let out = charm.tool(&["traces", "--last", "0", "--format", format]);
    assert!(
        out.status.success(),
        "traces --format {format} failed: {}",
        text(&out.stderr)
    );
    out.stdout
}

fn env_of_call(call: &Value) -> BTreeMap<String, String> {
    call["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Differences between two environments: (key, left, right) for every key not equal in both.
fn env_diff(
    left: &BTreeMap<String, String>,
    right: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let keys: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    keys.into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| (k.clone(), left.get(k).cloned(), right.get(k).cloned()))
        .collect()
}

// ---- 1. transparency -----------------------------------------------------------------------

/// Names of the calls made by `TRANSPARENCY_SCRIPT`; each leaves `$OUT/<name>.{out,err,code}`.
const TRANSPARENCY_CALLS: &[&str] = &[
    "config-json",
    "config-smart",
    "is-leader",
    "relation-get",
    "relation-get-app",
    "status-get",
    "failing",
    "bad-flag",
    "bad-relation",
    "deprecated-format",
    "help",
    "binary-answer",
    "not-found",
    "stdin-file",
    "stdin-pipe",
];

const TRANSPARENCY_SCRIPT: &str = r#"
call() {
    name=$1
    shift
    "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo $? > "$OUT/$name.code"
}
call config-json config-get --format=json
call config-smart config-get
call is-leader is-leader
call relation-get relation-get -r db:1 - remote/0
call relation-get-app relation-get -r db:1 --app - remote
call status-get status-get --include-data --format=json
call failing relation-ids db
call bad-flag config-get --bogus
call bad-relation relation-get -r db:99 - remote/0
call deprecated-format relation-set --format json -r db:1 a=b
call help juju-log --help
call binary-answer unit-get private-address
call not-found secret-get secret:nope
call stdin-file relation-set -r db:1 --file - < "$IN"
cat "$IN" | call stdin-pipe relation-set -r db:1 --file -
"#;

const FAILING_STDERR: &[u8] =
    b"ERROR relation-ids exploded: <boom> \xe2\x9c\x97\nno newline at the end";
const BINARY_ANSWER: &[u8] = b"\x00\xff\xfe 10.9.8.7 \xc3\xa9\r\n";
const NON_UTF8_INPUT: &[u8] = b"greeting: caf\xc3\xa9 \xff\xfe\x80 raw\r\nother: \"quoted\"\n";

/// Sets up the model, a failing tool and an overridden answer, then runs the script either bare
/// or through our dispatch; returns the run's output dir and the calls the fake tools logged.
fn transparency_run(charm: &Charm, traced: bool) -> (Output, PathBuf, Vec<Value>) {
    set_state(charm, &model());
    let _ = std::fs::remove_file(charm.state.join("calls.jsonl"));
    std::fs::create_dir_all(charm.state.join("fail")).unwrap();
    let mut failing = b"3\n".to_vec();
    failing.extend_from_slice(FAILING_STDERR);
    std::fs::write(charm.state.join("fail/relation-ids"), failing).unwrap();
    std::fs::create_dir_all(charm.state.join("stdout")).unwrap();
    std::fs::write(charm.state.join("stdout/unit-get"), BINARY_ANSWER).unwrap();
    let input = charm.scratch.path("input");
    std::fs::write(&input, NON_UTF8_INPUT).unwrap();

    let out = fresh_out(charm, if traced { "traced" } else { "bare" });
    let extra = [("OUT", path_str(&out)), ("IN", path_str(&input))];
    let output = if traced {
        charm.dispatch(HOOK, &extra)
    } else {
        charm.bare(HOOK, &extra)
    };
    (output, out, charm.tool_calls())
}

#[test]
fn hook_tools_give_the_charm_the_same_stdout_stderr_and_exit_code_through_the_shim_as_bare() {
    let charm = charm_running(TRANSPARENCY_SCRIPT);
    let (bare, bare_out, _) = transparency_run(&charm, false);
    let (traced, traced_out, _) = transparency_run(&charm, true);
    assert_eq!(code(&bare), 0, "bare run failed: {}", text(&bare.stderr));
    assert_eq!(code(&traced), code(&bare));
    assert_eq!(traced.stdout, bare.stdout);

    for name in TRANSPARENCY_CALLS {
        for ext in ["out", "err", "code"] {
            let file = format!("{name}.{ext}");
            let seen_bare = read(&bare_out.join(&file));
            let seen_traced = read(&traced_out.join(&file));
            assert_eq!(
                text(&seen_traced),
                text(&seen_bare),
                "{file} differs through the shim"
            );
            assert_eq!(
                seen_traced, seen_bare,
                "{file} bytes differ through the shim"
            );
        }
    }

    // What the charm saw is what the fake tools answer (so the comparison above means something).
    let seen = |file: &str| read(&traced_out.join(file));
    assert_eq!(seen("is-leader.out"), b"True\n");
    assert_eq!(seen("is-leader.code"), b"0\n");
    assert!(text(&seen("config-json.out")).contains(r#""port":5432"#));
    assert_eq!(seen("failing.code"), b"3\n");
    assert_eq!(seen("failing.err"), FAILING_STDERR);
    assert!(seen("failing.out").is_empty());
    assert_eq!(seen("bad-flag.code"), b"2\n");
    assert_eq!(
        text(&seen("bad-flag.err")),
        "ERROR flag provided but not defined: --bogus\n"
    );
    assert_eq!(seen("bad-relation.code"), b"2\n");
    assert_eq!(
        seen("deprecated-format.err"),
        b"--format flag deprecated for command \"relation-set\""
    );
    assert_eq!(seen("binary-answer.out"), BINARY_ANSWER);
    assert_eq!(seen("not-found.code"), b"1\n");
    assert_eq!(seen("stdin-file.code"), b"0\n");
    assert_eq!(seen("stdin-pipe.code"), b"0\n");
}

#[test]
fn the_real_tool_gets_the_same_arguments_stdin_and_cwd_through_the_shim_as_bare() {
    let charm = charm_running(TRANSPARENCY_SCRIPT);
    let (_, _, bare_calls) = transparency_run(&charm, false);
    let (_, _, traced_calls) = transparency_run(&charm, true);
    let summary = |calls: &[Value]| -> Vec<Value> {
        calls
            .iter()
            .map(|c| json!([c["tool"], c["args"], c["stdin"], c["cwd"]]))
            .collect()
    };
    assert_eq!(bare_calls.len(), TRANSPARENCY_CALLS.len());
    assert_eq!(summary(&traced_calls), summary(&bare_calls));
    let stdin: Vec<&Value> = traced_calls
        .iter()
        .filter(|c| !c["stdin"].is_null())
        .map(|c| &c["stdin"])
        .collect();
    let expected = String::from_utf8_lossy(NON_UTF8_INPUT).into_owned();
    assert_eq!(stdin, [&json!(expected), &json!(expected)]);
}

#[test]
fn stdin_bytes_reach_the_real_tool_unchanged_even_when_they_are_not_utf8() {
    let charm = charm_running(
        r#"
TAG=redirect relation-set -r db:1 --file - < "$IN" > /dev/null 2>&1
echo $? > "$OUT/redirect.code"
cat "$IN" | TAG=pipe relation-set -r db:1 --file - > /dev/null 2>&1
echo $? > "$OUT/pipe.code"
"#,
    );
    set_state(&charm, &model());
    // The "real" relation-set keeps an exact copy of its stdin, then hands it to the fake tool.
    let real = charm.state.join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(
        std::fs::canonicalize(util::bin_dir().join("fake-jujuc")).unwrap(),
        real.join("relation-set"),
    )
    .unwrap();
    let tool = charm.tools.join("relation-set");
    std::fs::remove_file(&tool).unwrap();
    std::fs::write(
        &tool,
        "#!/bin/sh\n\
         cat > \"$OUT/stdin-$TAG\"\n\
         exec \"$FAKE_JUJU_STATE/real/relation-set\" \"$@\" < \"$OUT/stdin-$TAG\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut input: Vec<u8> = b"key: value \xff\xfe\x80\x00\r\n".to_vec();
    input.extend(0u8..=255);
    let input_path = charm.scratch.path("input");
    std::fs::write(&input_path, &input).unwrap();
    let input_arg = path_str(&input_path);

    for traced in [false, true] {
        let out = fresh_out(&charm, if traced { "traced" } else { "bare" });
        let out_arg = path_str(&out);
        let extra = [("OUT", out_arg), ("IN", input_arg)];
        let output = if traced {
            dispatch_ok(&charm, HOOK, &extra)
        } else {
            charm.bare(HOOK, &extra)
        };
        assert_eq!(code(&output), 0);
        for tag in ["redirect", "pipe"] {
            assert_eq!(
                read(&out.join(format!("stdin-{tag}"))),
                input,
                "stdin ({tag}) changed on its way to the tool (traced: {traced})"
            );
        }
    }
    // The calls really went through the shim in the traced run.
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|s| s["name"] == "relation-set"));
}

#[test]
fn a_tool_that_was_not_asked_for_stdin_leaves_the_charms_stdin_to_the_charm() {
    let charm = charm_running(
        r#"
seq 1 3000 > "$OUT/expected"
cat "$OUT/expected" | { is-leader > /dev/null; relation-get -r db:1 - remote/0 > /dev/null; cat > "$OUT/rest-pipe"; }
{ is-leader > /dev/null; config-get > /dev/null; cat > "$OUT/rest-file"; } < "$OUT/expected"
"#,
    );
    set_state(&charm, &model());
    dispatch_ok(&charm, HOOK, &[]);
    let out = out_dir(&charm);
    let expected = read(&out.join("expected"));
    assert!(expected.len() > 10_000);
    assert_eq!(
        text(&read(&out.join("rest-pipe"))),
        text(&expected),
        "a tool call ate part of the charm's piped stdin"
    );
    assert_eq!(
        text(&read(&out.join("rest-file"))),
        text(&expected),
        "a tool call moved the charm's stdin file offset"
    );
    assert_eq!(tool_spans(&charm.last_trace()).len(), 4);
    assert!(charm.tool_calls().iter().all(|c| c["stdin"].is_null()));
}

#[test]
fn the_real_tool_sees_its_own_name_as_argv0_and_the_charms_cwd_and_environment() {
    let charm = charm_running(
        r#"
cd "$OUT"
env > "$OUT/charm-env"
config-get > /dev/null
"$(command -v is-leader)" > /dev/null
"#,
    );
    set_state(&charm, &model());
    let out = out_dir(&charm);
    let cwd = std::fs::canonicalize(&out).unwrap();
    let cwd = path_str(&cwd);

    for traced in [false, true] {
        let _ = std::fs::remove_file(charm.state.join("calls.jsonl"));
        if traced {
            dispatch_ok(&charm, HOOK, &[]);
        } else {
            assert_eq!(code(&charm.bare(HOOK, &[])), 0);
        }
        let charm_env = env_file(&out.join("charm-env"));
        let calls = charm.tool_calls();
        let tools: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
        assert_eq!(tools, ["config-get", "is-leader"], "traced: {traced}");
        for call in &calls {
            assert_eq!(call["cwd"], cwd, "traced: {traced}");
            let diff = env_diff(&charm_env, &env_of_call(call));
            let expected = if traced {
                vec![(
                    "DISPATCH_TRACE_DEPTH".to_string(),
                    None,
                    Some("1".to_string()),
                )]
            } else {
                vec![]
            };
            assert_eq!(diff, expected, "the tool's environment is not the charm's");
        }
        if traced {
            // The charm itself runs with the shims in front (so the comparison is meaningful).
            assert!(charm_env["PATH"].starts_with(path_str(&charm.path(".dispatch-trace/shims"))));
        }
    }
}

// ---- 2. span tree --------------------------------------------------------------------------

#[test]
fn every_tool_call_is_one_client_span_under_the_charm_span_with_its_arguments_and_exit() {
    let charm = charm_running(
        r#"
config-get --format=json > /dev/null
relation-get -r db:1 - remote/0 > /dev/null 2>&1
is-leader > /dev/null
"#,
    );
    set_state(&charm, &model());
    std::fs::create_dir_all(charm.state.join("fail")).unwrap();
    std::fs::write(
        charm.state.join("fail/relation-get"),
        "3\nERROR no such unit\n",
    )
    .unwrap();
    dispatch_ok(&charm, HOOK, &[]);

    let trace = charm.last_trace();
    let charm_span = span(&trace, "charm");
    let calls = tool_spans(&trace);
    let names: Vec<&str> = calls.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["config-get", "relation-get", "is-leader"]);
    let expected_args: [&[&str]; 3] = [
        &["config-get", "--format=json"],
        &["relation-get", "-r", "db:1", "-", "remote/0"],
        &["is-leader"],
    ];
    let charm_start = nanos(charm_span, "start_unix_nano");
    let charm_end = nanos(charm_span, "end_unix_nano");
    for (call, args) in calls.iter().zip(expected_args) {
        assert_eq!(call["parent_span_id"], charm_span["span_id"], "{call:#}");
        assert_eq!(command_args(call), args);
        let (start, end) = (nanos(call, "start_unix_nano"), nanos(call, "end_unix_nano"));
        assert!(
            charm_start <= start && start <= end && end <= charm_end,
            "{} [{start}, {end}] is outside charm [{charm_start}, {charm_end}]",
            call["name"]
        );
    }
    for ok in [calls[0], calls[2]] {
        assert_eq!(attr(ok, "process.exit.code"), 0);
        assert!(attr(ok, "error.type").is_null(), "{ok:#}");
        assert_eq!(ok["status"], "OK");
    }
    let failed = calls[1];
    assert_eq!(attr(failed, "process.exit.code"), 3);
    assert_eq!(attr(failed, "error.type"), "3");
    assert_eq!(failed["status"], "ERROR");
    // One span per call, no more: only the charm and root besides the tool spans.
    assert_eq!(trace["spans"].as_array().unwrap().len(), 5);
    assert_eq!(attr(root(&trace), "dispatch.tool_calls"), 3);
}

#[test]
fn status_set_spans_carry_the_status_and_its_message() {
    let charm = charm_running(
        r#"
status-set blocked "need a database relation"
status-set --application active
"#,
    );
    set_state(&charm, &model());
    dispatch_ok(&charm, HOOK, &[]);
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["name"], "status-set");
    assert_eq!(attr(calls[0], "juju.status"), "blocked");
    assert_eq!(
        attr(calls[0], "juju.status.message"),
        "need a database relation"
    );
    assert_eq!(
        command_args(calls[0]),
        ["status-set", "blocked", "need a database relation"]
    );
    assert_eq!(attr(calls[1], "juju.status"), "active");
    assert_eq!(attr(calls[1], "juju.status.application"), true);
    assert_eq!(attr(calls[1], "process.exit.code"), 0);
}

const LOG_SCRIPT: &str = r#"
juju-log -l WARNING "disk is 93% full on /srv"
juju-log hello there
"#;

#[test]
fn juju_log_spans_carry_the_level_and_length_but_not_the_text_by_default() {
    let charm = charm_running(LOG_SCRIPT);
    dispatch_ok(&charm, HOOK, &[]);
    // The tool itself got the message.
    let logged = read_text(&charm.state.join("juju-log.jsonl"));
    assert!(logged.contains("disk is 93% full on /srv"), "{logged}");

    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(attr(calls[0], "juju.log.level"), "WARNING");
    assert_eq!(
        attr(calls[0], "juju.log.message_length"),
        "disk is 93% full on /srv".len()
    );
    assert!(
        attr(calls[0], "juju.log.message").is_null(),
        "{:#}",
        calls[0]
    );
    assert_eq!(attr(calls[1], "juju.log.level"), "INFO");
    assert_eq!(
        attr(calls[1], "juju.log.message_length"),
        "hello there".len()
    );
    assert!(attr(calls[1], "juju.log.message").is_null());
    let json = traces_output(&charm, "json");
    for word in ["93%", "/srv", "hello", "there"] {
        assert!(!contains(&json, word), "{word:?} leaked into the trace");
    }
}

#[test]
fn juju_log_text_is_recorded_when_the_config_opts_in() {
    let charm = charm_running(LOG_SCRIPT);
    charm.write("dispatch-trace.yaml", "record_log_messages: true\n");
    let out = dispatch_ok(&charm, HOOK, &[]);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        attr(calls[0], "juju.log.message"),
        "disk is 93% full on /srv"
    );
    assert_eq!(attr(calls[0], "juju.log.level"), "WARNING");
    assert_eq!(attr(calls[1], "juju.log.message"), "hello there");
}

#[test]
fn status_set_spans_say_whose_status_it_is_when_called_the_way_ops_calls_it() {
    // ops runs `status-set --application=<True|False> <status> <message>`.
    let charm = charm_running(
        r#"
status-set --application=True blocked "waiting for the database"
status-set --application=False active ""
"#,
    );
    set_state(&charm, &model());
    dispatch_ok(&charm, HOOK, &[]);
    let state: Value = serde_json::from_slice(&read(&charm.state.join("state.json"))).unwrap();
    assert_eq!(state["status"]["application"]["status"], "blocked");
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(attr(calls[0], "process.exit.code"), 0);
    assert_eq!(attr(calls[0], "juju.status"), "blocked");
    assert_eq!(
        attr(calls[0], "juju.status.message"),
        "waiting for the database"
    );
    assert_eq!(
        attr(calls[0], "juju.status.application"),
        true,
        "the application's status is reported as the unit's: {:#}",
        calls[0]["attributes"]
    );
    assert_eq!(attr(calls[1], "juju.status"), "active");
    assert_eq!(attr(calls[1], "juju.status.application"), false);
}

/// Where `needle` shows up: the store files, `dispatch traces` in every format, and what the
/// dispatch itself printed.
fn places_holding(charm: &Charm, run: &Output, needle: &str) -> Vec<String> {
    let mut places = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = charm.store_file().into_os_string();
        name.push(suffix);
        if std::fs::read(PathBuf::from(name)).is_ok_and(|bytes| contains(&bytes, needle)) {
            places.push(format!("store file .dispatch-trace.db{suffix}"));
        }
    }
    for format in ["tree", "json", "otlp-json"] {
        if contains(&traces_output(charm, format), needle) {
            places.push(format!("dispatch traces --format {format}"));
        }
    }
    if contains(&run.stdout, needle) {
        places.push("dispatch stdout".into());
    }
    if contains(&run.stderr, needle) {
        places.push("dispatch stderr".into());
    }
    places
}

#[test]
fn juju_log_called_the_way_ops_calls_it_records_no_text_even_when_it_starts_with_a_dash() {
    // ops runs `juju-log --log-level <LEVEL> -- <message>` so that messages may start with '-'.
    let charm = charm_running(
        r#"
juju-log --log-level WARNING -- "-> CANARY-juju-log-dash-77ab"
juju-log --log-level DEBUG -- "CANARY-juju-log-plain-3e1f"
"#,
    );
    let run = dispatch_ok(&charm, HOOK, &[]);
    let logged = read_text(&charm.state.join("juju-log.jsonl"));
    assert!(logged.contains("-> CANARY-juju-log-dash-77ab"), "{logged}");

    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(attr(calls[0], "juju.log.level"), "WARNING");
    assert_eq!(attr(calls[1], "juju.log.level"), "DEBUG");
    for canary in ["CANARY-juju-log-plain-3e1f", "CANARY-juju-log-dash-77ab"] {
        let places = places_holding(&charm, &run, canary);
        assert!(places.is_empty(), "{canary} leaked into {places:?}");
    }
    assert_eq!(
        attr(calls[1], "juju.log.message_length"),
        "CANARY-juju-log-plain-3e1f".len()
    );
    assert_eq!(
        attr(calls[0], "juju.log.message_length"),
        "-> CANARY-juju-log-dash-77ab".len()
    );
}

// ---- 3. parenting under the charm's own context --------------------------------------------

#[test]
fn a_tool_called_under_the_charms_own_span_is_nested_under_that_span() {
    let charm = charm_running(
        r#"
echo "$TRACEPARENT" > "$OUT/traceparent"
trace_id=$(echo "$TRACEPARENT" | cut -d- -f2)
TRACEPARENT="00-$trace_id-1111111111111111-01" is-leader > /dev/null
config-get > /dev/null
"#,
    );
    dispatch_ok(&charm, HOOK, &[]);
    let trace = charm.last_trace();
    let charm_span = span(&trace, "charm");
    let received = read_text(&out_dir(&charm).join("traceparent"));
    assert_eq!(
        received.trim(),
        format!(
            "00-{}-{}-01",
            trace["trace_id"].as_str().unwrap(),
            charm_span["span_id"].as_str().unwrap()
        ),
        "the charm's TRACEPARENT does not point at the charm span"
    );
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["name"], "is-leader");
    assert_eq!(calls[0]["parent_span_id"], "1111111111111111");
    assert_eq!(calls[0]["links"], json!([]));
    assert_eq!(calls[1]["name"], "config-get");
    assert_eq!(calls[1]["parent_span_id"], charm_span["span_id"]);
}

#[test]
fn a_tool_called_with_a_foreign_traceparent_hangs_off_the_charm_span_with_a_link() {
    let charm = charm_running(&format!(
        "TRACEPARENT=00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01 is-leader > /dev/null\n"
    ));
    dispatch_ok(&charm, HOOK, &[]);
    let trace = charm.last_trace();
    assert_ne!(trace["trace_id"], FOREIGN_TRACE);
    let charm_span = span(&trace, "charm");
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["parent_span_id"], charm_span["span_id"]);
    assert_eq!(
        calls[0]["links"],
        json!([{"trace_id": FOREIGN_TRACE, "span_id": FOREIGN_SPAN}])
    );
}

// ---- 4. redaction --------------------------------------------------------------------------

const SECRET_ID: &str = "secret:cafe0000000000000000";

/// (what, canary, how the charm hands it to or gets it from a tool)
const CANARIES: &[(&str, &str, &str)] = &[
    (
        "relation-set",
        "CANARY-relation-set-7f3a",
        "relation-set -r db:1 password=CANARY-relation-set-7f3a",
    ),
    (
        "relation-set-app",
        "CANARY-relation-set-app-1c55",
        "relation-set -r db:1 --app password=CANARY-relation-set-app-1c55",
    ),
    (
        "leader-set",
        "CANARY-leader-set-2b8e",
        "leader-set password=CANARY-leader-set-2b8e",
    ),
    (
        "state-set",
        "CANARY-state-set-c41d",
        "state-set password=CANARY-state-set-c41d",
    ),
    (
        "action-set",
        "CANARY-action-set-9e07",
        "action-set password=CANARY-action-set-9e07",
    ),
    (
        "secret-add",
        "CANARY-secret-add-4a61",
        r#"secret-add --label fresh password=CANARY-secret-add-4a61 > "$OUT/new-secret""#,
    ),
    (
        "secret-set",
        "CANARY-secret-set-d3f5",
        r#"secret-set "$(cat "$OUT/new-secret")" password=CANARY-secret-set-d3f5"#,
    ),
    (
        "stdin",
        "CANARY-stdin-0b9c",
        "printf 'password: CANARY-stdin-0b9c\\n' | relation-set -r db:1 --file -",
    ),
    (
        "secret-get",
        "CANARY-secret-get-91c2",
        r#"secret-get secret:cafe0000000000000000 > "$OUT/secret-get.out""#,
    ),
    (
        "secret-get-key",
        "CANARY-secret-get-91c2",
        r#"secret-get secret:cafe0000000000000000 password > "$OUT/secret-get-key.out""#,
    ),
    (
        "credential-get",
        "CANARY-credential-get-5d10",
        r#"credential-get --format=json > "$OUT/credential-get.out""#,
    ),
    (
        "juju-log",
        "CANARY-juju-log-e2a8",
        "juju-log CANARY-juju-log-e2a8",
    ),
];

fn redaction_charm() -> Charm {
    let script: String = CANARIES
        .iter()
        .map(|(what, _, command)| format!("{command}\necho \"{what} $?\" >> \"$OUT/codes\"\n"))
        .collect();
    let charm = charm_running(&script);
    let mut state = model();
    state["secrets"] = json!({
        SECRET_ID: {
            "label": "db-pass",
            "content": {"password": "CANARY-secret-get-91c2"},
            "revision": 1,
            "owner": "application"
        }
    });
    state["credential"] = json!({
        "type": "fake",
        "name": "cloud",
        "credential": {
            "auth-type": "userpass",
            "attributes": {"username": "admin", "password": "CANARY-credential-get-5d10"}
        }
    });
    set_state(&charm, &state);
    charm
}

/// Runs the redaction script as a relation hook and checks every tool call succeeded and the
/// secrets really went through the tools.
fn run_redaction(charm: &Charm) -> Output {
    let out = dispatch_ok(
        charm,
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:1"),
            ("JUJU_REMOTE_UNIT", "remote/0"),
            ("JUJU_REMOTE_APP", "remote"),
        ],
    );
    let codes = read_text(&out_dir(charm).join("codes"));
    let expected: String = CANARIES
        .iter()
        .map(|(what, _, _)| format!("{what} 0\n"))
        .collect();
    assert_eq!(codes, expected, "a tool call failed");
    let dir = out_dir(charm);
    assert!(read_text(&dir.join("secret-get.out")).contains("CANARY-secret-get-91c2"));
    assert_eq!(
        read_text(&dir.join("secret-get-key.out")).trim(),
        "CANARY-secret-get-91c2"
    );
    assert!(read_text(&dir.join("credential-get.out")).contains("CANARY-credential-get-5d10"));
    let calls = read_text(&charm.state.join("calls.jsonl"));
    for (what, canary, _) in CANARIES {
        if what.starts_with("secret-get") || *what == "credential-get" {
            continue;
        }
        assert!(calls.contains(canary), "the tool never got {canary}");
    }
    out
}

#[test]
fn secret_values_never_reach_the_store_files() {
    let charm = redaction_charm();
    run_redaction(&charm);
    let mut store = Vec::new();
    let db = charm.store_file();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        if let Ok(bytes) = std::fs::read(PathBuf::from(name)) {
            store.extend(bytes);
        }
    }
    assert!(
        contains(&store, "password=<redacted>"),
        "the store does not hold the trace (wrong file?)"
    );
    for (what, canary, _) in CANARIES {
        assert!(
            !contains(&store, canary),
            "{what}: {canary} is in the store files"
        );
    }
    // Nor anything else we keep in our private directory (the FIFO is not a regular file).
    for entry in std::fs::read_dir(charm.path(".dispatch-trace")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let bytes = read(&entry.path());
            for (what, canary, _) in CANARIES {
                assert!(
                    !contains(&bytes, canary),
                    "{what}: {canary} is in {}",
                    entry.path().display()
                );
            }
        }
    }
}

#[test]
fn secret_values_never_appear_in_any_traces_format_or_our_output() {
    let charm = redaction_charm();
    let run = run_redaction(&charm);
    let mut views = vec![
        ("dispatch stdout", run.stdout.clone()),
        ("dispatch stderr", run.stderr.clone()),
    ];
    for format in ["tree", "json", "otlp-json"] {
        views.push((format, traces_output(&charm, format)));
    }
    for (view, bytes) in &views {
        for (what, canary, _) in CANARIES {
            assert!(!contains(bytes, canary), "{what}: {canary} is in {view}");
        }
    }
    for format in ["tree", "json", "otlp-json"] {
        let view = &views.iter().find(|(v, _)| v == &format).unwrap().1;
        assert!(
            contains(view, "password=<redacted>"),
            "{format} does not show the redacted key:\n{}",
            text(view)
        );
    }
}

#[test]
fn value_writing_tools_show_their_keys_with_the_values_redacted() {
    let charm = redaction_charm();
    run_redaction(&charm);
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    let args_of = |name: &str| -> Vec<Vec<String>> {
        calls
            .iter()
            .filter(|s| s["name"] == name)
            .map(|s| command_args(s))
            .collect()
    };
    assert_eq!(
        args_of("relation-set"),
        [
            vec!["relation-set", "-r", "db:1", "password=<redacted>"],
            vec!["relation-set", "-r", "db:1", "--app", "password=<redacted>"],
            vec!["relation-set", "-r", "db:1", "--file", "-"],
        ]
    );
    for tool in ["leader-set", "state-set", "action-set"] {
        assert_eq!(args_of(tool), [vec![tool, "password=<redacted>"]]);
    }
    assert_eq!(
        args_of("secret-add"),
        [vec![
            "secret-add",
            "--label",
            "fresh",
            "password=<redacted>"
        ]]
    );
    let secret_set = args_of("secret-set");
    assert_eq!(secret_set.len(), 1);
    assert_eq!(secret_set[0][0], "secret-set");
    assert!(secret_set[0][1].starts_with("secret:"));
    assert_eq!(secret_set[0][2], "password=<redacted>");
    assert_eq!(
        args_of("secret-get"),
        [
            vec!["secret-get", SECRET_ID],
            vec!["secret-get", SECRET_ID, "password"],
        ]
    );
    let log = span(&trace, "juju-log");
    assert_eq!(
        attr(log, "juju.log.message_length"),
        "CANARY-juju-log-e2a8".len()
    );
    assert_eq!(calls.len(), CANARIES.len());
}

// ---- 5. volume -----------------------------------------------------------------------------

#[test]
fn two_thousand_tool_calls_in_one_dispatch_are_all_recorded() {
    let charm = Charm::new("shell");
    dispatch_ok(
        &charm,
        HOOK,
        &[("CHARM_TOOL", "is-leader"), ("CHARM_TOOL_CALLS", "2000")],
    );
    let calls = read(&charm.state.join("calls.jsonl"));
    assert_eq!(calls.iter().filter(|&&b| b == b'\n').count(), 2000);
    let trace = charm.last_trace();
    let spans = tool_spans(&trace);
    assert_eq!(spans.len(), 2000);
    assert!(spans.iter().all(|s| s["name"] == "is-leader"));
    let root = root(&trace);
    assert_eq!(attr(root, "dispatch.tool_calls"), 2000);
    assert!(
        attr(root, "dispatch.tool_records_dropped").is_null(),
        "{:#}",
        root["attributes"]
    );
    assert!(attr(root, "dispatch.tool_records_ignored").is_null());
}

// ---- 6. foreign records --------------------------------------------------------------------

/// A well-formed record line for an `is-leader` call by pid 4242, with nonce `$1`.
const FORGE: &str = r#"
forge() {
    printf 'DTR1\t%s\tis-leader\t4242\t1700000000000000000\t1700000000001000000\tx0\t\t\t0\t\t0\n' "$1" > "$DISPATCH_TRACE_CHANNEL"
}
"#;

#[test]
fn records_without_this_dispatchs_nonce_are_ignored_and_counted() {
    let charm = charm_running(&format!(
        "{FORGE}
case \"$PHASE\" in
foreign)
    forge deadbeefdeadbeef
    printf 'this is not a record\\n' > \"$DISPATCH_TRACE_CHANNEL\"
    is-leader > /dev/null
    ;;
own)
    forge \"$DISPATCH_TRACE_NONCE\"
    ;;
esac
"
    ));
    dispatch_ok(&charm, HOOK, &[("PHASE", "foreign")]);
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 1, "a forged record became a span: {calls:#?}");
    assert_ne!(attr(calls[0], "process.pid"), 4242);
    let root_span = root(&trace);
    assert_eq!(attr(root_span, "dispatch.tool_records_ignored"), 2);
    assert_eq!(attr(root_span, "dispatch.tool_calls"), 1);

    // The same line with this dispatch's nonce is a record (so the forgery above was only
    // refused for its nonce).
    dispatch_ok(&charm, HOOK, &[("PHASE", "own")]);
    let trace = charm.last_trace();
    let calls = tool_spans(&trace);
    assert_eq!(calls.len(), 1);
    assert_eq!(attr(calls[0], "process.pid"), 4242);
    assert!(attr(root(&trace), "dispatch.tool_records_ignored").is_null());
}

// ---- 7. a daemon left behind ---------------------------------------------------------------

#[test]
fn a_daemon_left_behind_can_still_call_hook_tools_after_the_dispatch_ended() {
    // The daemon waits for the test's go-ahead files (bounded, so nothing outlives a failed
    // test for long): its first call happens between dispatches, its second during the next
    // dispatch, which waits for it.
    let charm = charm_running(
        &[
            AWAIT,
            r#"
call_later() {
    await "$OUT/go-$1"
    is-leader > "$OUT/answer-$1"
    echo $? > "$OUT/code-$1.tmp"
    mv "$OUT/code-$1.tmp" "$OUT/code-$1"
}
case "$PHASE" in
start)
    ( call_later 1; call_later 2 ) < /dev/null > /dev/null 2>&1 &
    ;;
next)
    config-get > /dev/null
    touch "$OUT/go-2"
    await "$OUT/code-2"
    ;;
esac
"#,
        ]
        .concat(),
    );
    let out = out_dir(&charm);
    dispatch_ok(&charm, HOOK, &[("PHASE", "start")]);
    assert!(
        !out.join("code-1").exists(),
        "the dispatch waited for the daemon"
    );
    std::fs::write(out.join("go-1"), "").unwrap();
    wait_for(
        "the daemon's hook-tool call to finish",
        Duration::from_secs(10),
        || out.join("code-1").exists(),
    );
    assert_eq!(read_text(&out.join("code-1")), "0\n");
    assert_eq!(read_text(&out.join("answer-1")), "True\n");

    dispatch_ok(&charm, HOOK, &[("PHASE", "next")]);
    assert_eq!(read_text(&out.join("code-2")), "0\n");
    assert_eq!(read_text(&out.join("answer-2")), "True\n");

    let traces = charm.traces();
    assert_eq!(traces.len(), 2);
    assert!(tool_spans(&traces[0]).is_empty());
    let names: Vec<&str> = tool_spans(&traces[1])
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config-get"], "the daemon's call entered a trace");
    assert_eq!(attr(root(&traces[1]), "dispatch.tool_records_ignored"), 1);
}

// ---- 8. layouts and guards -----------------------------------------------------------------

#[test]
fn only_the_tools_present_are_shimmed_in_a_private_directory_of_symlinks() {
    let charm = charm_running(
        r#"
is-leader > "$OUT/is-leader.out"
relation-get -r db:1 - remote/0 > /dev/null 2>&1
echo $? > "$OUT/missing.code"
"#,
    );
    set_state(&charm, &model());
    std::fs::remove_dir_all(&charm.tools).unwrap();
    let status = Command::new(util::bin_dir().join("fake-jujuc"))
        .arg("--install-tools")
        .arg(&charm.tools)
        .args(["is-leader", "config-get", "juju-log"])
        .status()
        .unwrap();
    assert!(status.success());
    // Not a hook tool: never shimmed.
    std::fs::write(charm.tools.join("jujud"), "#!/bin/sh\n").unwrap();

    let bare_out = fresh_out(&charm, "bare");
    let bare = charm.bare(HOOK, &[("OUT", path_str(&bare_out))]);
    dispatch_ok(&charm, HOOK, &[]);
    assert_eq!(code(&bare), 0);
    let out = out_dir(&charm);
    assert_eq!(read_text(&out.join("is-leader.out")), "True\n");
    assert_eq!(
        read_text(&out.join("missing.code")),
        read_text(&bare_out.join("missing.code"))
    );
    assert_eq!(read_text(&out.join("missing.code")), "127\n");

    let shims = charm.path(".dispatch-trace/shims");
    let meta = std::fs::symlink_metadata(&shims).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let mut names = Vec::new();
    let shim_binary = std::fs::canonicalize(charm.path("dispatch-shim")).unwrap();
    for entry in std::fs::read_dir(&shims).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        assert!(entry.file_type().unwrap().is_symlink(), "{name}");
        let target = std::fs::read_link(entry.path()).unwrap();
        assert_eq!(
            std::fs::canonicalize(shims.join(&target)).unwrap(),
            shim_binary,
            "{name} -> {}",
            target.display()
        );
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["config-get", "is-leader", "juju-log"]);
    let trace = charm.last_trace();
    let calls: Vec<&str> = tool_spans(&trace)
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["is-leader"]);
}

#[test]
fn a_path_without_hook_tools_runs_the_charm_as_bare_with_no_tool_spans() {
    let charm = charm_running(
        r#"
is-leader > /dev/null 2>&1
echo $? > "$OUT/code"
"#,
    );
    let path = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("CHARM_EXIT", "3"),
    ];
    let bare_out = fresh_out(&charm, "bare");
    let bare_out_arg = path_str(&bare_out);
    let mut bare_env = path.to_vec();
    bare_env.push(("OUT", bare_out_arg));
    let bare = charm.bare(HOOK, &bare_env);
    let traced = charm.dispatch(HOOK, &path);
    assert_eq!(code(&bare), 3);
    assert_eq!(code(&traced), code(&bare));
    assert_eq!(traced.stdout, bare.stdout);
    assert_eq!(
        read_text(&out_dir(&charm).join("code")),
        read_text(&bare_out.join("code"))
    );
    let trace = charm.last_trace();
    assert!(tool_spans(&trace).is_empty());
    assert_eq!(attr(root(&trace), "dispatch.tool_calls"), 0);
    assert_eq!(attr(span(&trace, "charm"), "process.exit.code"), 3);
}

#[test]
fn the_shim_run_under_its_own_name_refuses_with_a_clear_message() {
    let charm = Charm::new("shell");
    let out = Command::new(charm.path("dispatch-shim"))
        .args(["relation-get", "-r", "db:1"])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", charm.tools.display()))
        .env("FAKE_JUJU_STATE", &charm.state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(out.status.code().is_some(), "killed: {:?}", out.status);
    let message = text(&out.stderr);
    assert!(
        message.contains("dispatch-shim") && message.contains("not a Juju hook tool"),
        "unclear message: {message:?}"
    );
    assert!(out.stdout.is_empty());
    assert!(charm.tool_calls().is_empty(), "a real tool ran");
}

#[test]
fn a_tools_dir_pointing_back_at_the_shims_stops_with_a_message_instead_of_looping() {
    let charm = charm_running(
        r#"
DISPATCH_TRACE_TOOLS=$(dirname "$(command -v is-leader)") is-leader > "$OUT/out" 2> "$OUT/err"
echo $? > "$OUT/code"
"#,
    );
    let run = charm.dispatch_within(HOOK, &[], Duration::from_secs(20));
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    let out = out_dir(&charm);
    let exit = read_text(&out.join("code"));
    assert_ne!(exit.trim(), "0", "the looping call claimed success");
    let err = read_text(&out.join("err"));
    assert!(
        err.contains("calling themselves") && err.contains("DISPATCH_TRACE_TOOLS"),
        "no clear message: {err:?}"
    );
    assert!(read(&out.join("out")).is_empty());
    assert!(charm.tool_calls().is_empty(), "the real tool was reached");
}
