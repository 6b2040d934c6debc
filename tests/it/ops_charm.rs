//! A real charm on real ops (`fixtures/charms/ops`, ops 3.9.0 from target/test-venv) through a
//! realistic life: install, the peer relation, leadership, config, start, a Tempo-like
//! provider relating on `charm-tracing`, update-status, an action, a failing hook and its fix.
//!
//! Each test lives that life twice at once, bare (`dispatch` is charmcraft's own script) and
//! under our dispatch, each copy with its own fake Juju state and its own provider (a real
//! OTLP receiver, rotel, whose address the provider publishes as Tempo does), and compares
//! them event by event: exit code, stdout, stderr, every hook-tool call the charm made (tool,
//! arguments, stdin, cwd and environment) and the final model. The charm must not be able to
//! tell. Then it checks what we add: one trace per event with ops' hook-tool calls as spans,
//! buffered until the relation gives a destination and then all of it at the receiver.
//! The second test does all this again with ops[tracing] switched on in the charm, which
//! keeps its own buffer and ships its own traces beside ours.

use std::path::PathBuf;
use std::process::Output;

use crate::util;
use crate::util::rotel::{self, Rotel, SeenSpan};
use crate::util::{charm_stderr, code, our_lines, text, Charm, UNIT};
use serde_json::{json, Value};

/// Which charm: plain ops, or ops with `ops.tracing.Tracing` on (and `ops_tracing` in its venv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Ops,
    OpsTracing,
}

/// The test venv's site-packages (tests/run installs ops and ops-tracing there).
fn site_packages() -> PathBuf {
    let lib = util::repo_root().join("target/test-venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| d.path().join("site-packages"))
            .find(|p| p.join("ops").is_dir())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no site-packages with ops under {}: run tests/run once (it installs \
             tests/requirements.txt into target/test-venv)",
            lib.display()
        )
    })
}

/// Gives the charm the `venv` directory charmcraft would have built into it: the test venv's
/// packages, without `ops_tracing` unless the charm asked for `ops[tracing]` (ops sets up
/// ops-tracing whenever it can import it). And, first on the hooks' PATH, the `python3` that
/// venv was built for: charmcraft's dispatch runs `#!/usr/bin/env python3` with
/// `PYTHONPATH=lib:venv`, i.e. the base's own Python, which the venv's compiled modules
/// (pydantic-core, for ops-tracing) must match.
fn install_venv(charm: &mut Charm, flavour: Flavour) {
    let site = site_packages();
    let venv = charm.path("venv");
    std::fs::create_dir(&venv).unwrap();
    for entry in std::fs::read_dir(&site).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if flavour == Flavour::Ops && name.to_string_lossy().starts_with("ops_tracing") {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), venv.join(&name)).unwrap();
    }
    // The interpreter itself, not the venv's `bin/python3`: run from there it would be the
    // venv, and the charm would get the venv's packages without asking.
    let venv_python = util::repo_root().join("target/test-venv/bin/python3");
    let interpreter = std::fs::canonicalize(&venv_python)
        .unwrap_or_else(|e| panic!("{}: {e}", venv_python.display()));
    let bin = charm.scratch.path("python-bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(interpreter, bin.join("python3")).unwrap();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        charm.tools.display(),
        bin.display()
    );
    charm.env.insert("PATH".into(), path);
}

/// A change to the fake model before an event, as Juju or the related app would make it.
#[derive(Debug, Clone, Copy)]
enum Change {
    None,
    /// Juju relates a Tempo-like provider on `charm-tracing` (no unit joined, no data yet).
    RelateProvider,
    /// The provider's unit joins and its leader publishes its receivers.
    ProviderPublishes,
    /// The operator sets `port`.
    Port(i64),
}

struct Step {
    dispatch_path: &'static str,
    env: &'static [(&'static str, &'static str)],
    change: Change,
}

const PEERS: &[(&str, &str)] = &[
    ("JUJU_RELATION", "replicas"),
    ("JUJU_RELATION_ID", "replicas:1"),
    ("JUJU_REMOTE_APP", "myapp"),
];
const TRACING_CREATED: &[(&str, &str)] = &[
    ("JUJU_RELATION", "charm-tracing"),
    ("JUJU_RELATION_ID", "charm-tracing:3"),
    ("JUJU_REMOTE_APP", "tempo"),
];
const TRACING_UNIT: &[(&str, &str)] = &[
    ("JUJU_RELATION", "charm-tracing"),
    ("JUJU_RELATION_ID", "charm-tracing:3"),
    ("JUJU_REMOTE_APP", "tempo"),
    ("JUJU_REMOTE_UNIT", "tempo/0"),
];

/// The unit's life, in Juju's order.
const LIFE: &[Step] = &[
    step("hooks/install", &[], Change::None),
    step("hooks/replicas-relation-created", PEERS, Change::None),
    step("hooks/leader-elected", &[], Change::None),
    step("hooks/config-changed", &[], Change::None),
    step("hooks/start", &[], Change::None),
    step(
        "hooks/charm-tracing-relation-created",
        TRACING_CREATED,
        Change::RelateProvider,
    ),
    step(
        "hooks/charm-tracing-relation-joined",
        TRACING_UNIT,
        Change::ProviderPublishes,
    ),
    step(
        "hooks/charm-tracing-relation-changed",
        TRACING_UNIT,
        Change::None,
    ),
    step("hooks/update-status", &[], Change::None),
    step("actions/greet", &[], Change::None),
    step("hooks/config-changed", &[], Change::Port(0)),
    step("hooks/config-changed", &[], Change::Port(8081)),
];
/// The first event that knows the provider's receiver (its unit joined with the data).
const FIRST_WITH_DESTINATION: usize = 6;
/// The event the charm fails (`port` 0).
const FAILING: usize = 10;

const fn step(
    dispatch_path: &'static str,
    env: &'static [(&'static str, &'static str)],
    change: Change,
) -> Step {
    Step {
        dispatch_path,
        env,
        change,
    }
}

/// The event's name as Juju and our traces have it: the last part of the dispatch path.
fn event_name(dispatch_path: &str) -> &str {
    dispatch_path.rsplit('/').next().unwrap()
}

/// One copy of the deployed unit: the charm (wrapped or not), its fake Juju, and the
/// provider's receiver.
struct Unit {
    charm: Charm,
    rotel: Rotel,
    wrapped: bool,
}

impl Unit {
    fn new(flavour: Flavour, wrapped: bool) -> Unit {
        let mut charm = Charm::new("ops");
        if flavour == Flavour::OpsTracing {
            let orig = std::fs::read_to_string(charm.path("dispatch.orig")).unwrap();
            let traced = orig.replace("./src/charm.py", "./src/charm_traced.py");
            assert_ne!(orig, traced, "dispatch.orig should exec ./src/charm.py");
            charm.write("dispatch.orig", traced);
        }
        if !wrapped {
            charm.remove_wrapper();
        }
        install_venv(&mut charm, flavour);
        let state = json!({
            "unit": UNIT,
            "leader": true,
            "config": {"port": 8080, "greeting": "Hello"},
            "action_params": {"name": "operator"},
            "relations": {
                "replicas": {
                    "replicas:1": {"app": "myapp", "units": [], "data": {"myapp": {}, "myapp/0": {}}}
                }
            }
        });
        std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
        let rotel = Rotel::start(&charm.scratch.path("rotel"));
        Unit {
            charm,
            rotel,
            wrapped,
        }
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.charm.state.join("state.json")).unwrap())
            .unwrap()
    }

    fn apply(&self, change: Change) {
        let mut state = self.state();
        match change {
            Change::None => return,
            Change::RelateProvider => {
                state["relations"]["charm-tracing"] = json!({
                    "charm-tracing:3": {
                        "app": "tempo",
                        "units": [],
                        "data": {"tempo": {}, "myapp": {}, "myapp/0": {}}
                    }
                });
            }
            Change::ProviderPublishes => {
                // What Tempo publishes (tracing interface v2): a JSON-encoded list.
                let receivers = json!([
                    {"protocol": {"name": "otlp_grpc", "type": "grpc"}, "url": "127.0.0.1:4317"},
                    {"protocol": {"name": "otlp_http", "type": "http"}, "url": self.rotel.base_url()},
                ])
                .to_string();
                let relation = &mut state["relations"]["charm-tracing"]["charm-tracing:3"];
                relation["units"] = json!(["tempo/0"]);
                relation["data"]["tempo"]["receivers"] = json!(receivers);
                relation["data"]["tempo/0"] = json!({});
            }
            Change::Port(port) => state["config"]["port"] = json!(port),
        }
        std::fs::write(self.charm.state.join("state.json"), state.to_string()).unwrap();
    }

    /// Rows in ops-tracing's own buffer (`.tracing-data.db` in the charm dir), if it exists.
    fn ops_tracing_buffered(&self) -> Option<i64> {
        let path = self.charm.path(".tracing-data.db");
        if !path.exists() {
            return None;
        }
        let db = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        Some(
            db.query_row("SELECT count(*) FROM tracing", [], |row| row.get(0))
                .unwrap(),
        )
    }

    /// ops-tracing's destination, from its buffer's settings.
    fn ops_tracing_destination(&self) -> String {
        let db = rusqlite::Connection::open_with_flags(
            self.charm.path(".tracing-data.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row("SELECT value FROM settings WHERE key = 'url'", [], |row| {
            row.get(0)
        })
        .unwrap()
    }

    /// Replaces what differs between copies by construction (where they live, the port of
    /// their provider) and the clock, so the rest can be compared as is.
    fn normalise(&self, value: &mut Value) {
        let root = self.charm.scratch.root.to_str().unwrap().to_string();
        let provider = self.rotel.base_url();
        walk_strings(value, &mut |s| {
            *s = mask_varying(
                &s.replace(&root, "<scratch>")
                    .replace(&provider, "<provider>"),
            );
        });
    }
}

fn walk_strings(value: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| walk_strings(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| walk_strings(v, f)),
        _ => {}
    }
}

/// What ops logs through juju-log that differs from run to run: the time in its security
/// events (`"datetime": "..."`) and, with ops[tracing], its trace id (`root trace with id='...'`).
fn mask_varying(s: &str) -> String {
    mask_after(
        &mask_after(s, "\"datetime\": \"", '"'),
        "trace with id='",
        '\'',
    )
}

/// Replaces what follows each `key` up to `end` with `<masked>`.
fn mask_after(s: &str, key: &str, end: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        out.push_str("<masked>");
        rest = &rest[rest.find(end).unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// What one event did in one copy.
struct Ran {
    output: Output,
    /// The hook-tool calls made during it, as the fake tools logged them.
    calls: Vec<Value>,
    /// Every stored trace after it (wrapped copy only).
    traces: Vec<Value>,
    ops_tracing_buffered: Option<i64>,
}

/// Lives the unit's life, one event after the other, as Juju runs them.
fn live(unit: &Unit) -> Vec<Ran> {
    LIFE.iter()
        .map(|step| {
            unit.apply(step.change);
            let before = unit.charm.tool_calls().len();
            let output = unit
                .charm
                .command("dispatch", step.dispatch_path, step.env)
                .output()
                .unwrap();
            Ran {
                output,
                calls: unit.charm.tool_calls().split_off(before),
                traces: if unit.wrapped {
                    unit.charm.traces()
                } else {
                    Vec::new()
                },
                ops_tracing_buffered: unit.ops_tracing_buffered(),
            }
        })
        .collect()
}

/// Both copies live the same life at the same time (they share nothing).
fn live_both(flavour: Flavour) -> (Unit, Vec<Ran>, Unit, Vec<Ran>) {
    let (bare, wrapped) = std::thread::scope(|s| {
        let bare = s.spawn(move || {
            let unit = Unit::new(flavour, false);
            let ran = live(&unit);
            (unit, ran)
        });
        let wrapped = Unit::new(flavour, true);
        let ran = live(&wrapped);
        (bare.join().unwrap(), (wrapped, ran))
    });
    (bare.0, bare.1, wrapped.0, wrapped.1)
}

/// A hook-tool call made by the charm (through our shim), not by the wrapper itself: the
/// shims mark the tools they run with their recursion counter.
fn by_charm(call: &Value) -> bool {
    call["env"]["DISPATCH_TRACE_DEPTH"].is_string()
}

/// Variables the wrapper documents as the only differences in the charm's environment
/// (README "What the charm sees"; PATH is checked on its own).
fn documented_difference(name: &str) -> bool {
    name.starts_with("DISPATCH_TRACE_")
        || matches!(
            name,
            "TRACEPARENT"
                | "TRACESTATE"
                | "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                | "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        )
}

/// A call as the charm made it, normalised, in the form both copies must agree on. In the
/// wrapped copy the documented variables go and PATH loses the shim directory in front.
fn comparable(unit: &Unit, call: &Value) -> Value {
    let mut call = call.clone();
    unit.normalise(&mut call);
    let env = call["env"].as_object_mut().unwrap();
    if unit.wrapped {
        env.retain(|name, _| !documented_difference(name));
        let path = env["PATH"].as_str().unwrap().to_string();
        let (shims, rest) = path.split_once(':').unwrap();
        assert!(
            shims.starts_with("<scratch>/charm/"),
            "the shim directory (in the charm dir) comes first on PATH: {path}"
        );
        env.insert("PATH".into(), json!(rest));
    }
    call
}

fn tool_names<'a>(calls: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut names: Vec<String> = calls
        .map(|c| c["tool"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Names of the spans whose parent is `parent`, sorted.
fn children(trace: &Value, parent: &Value) -> Vec<String> {
    let mut names: Vec<String> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["parent_span_id"] == parent["span_id"])
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The charm behaves exactly as without us, event by event.
fn assert_same_behaviour(bare: &Unit, bare_ran: &[Ran], wrapped: &Unit, wrapped_ran: &[Ran]) {
    for (i, (step, (b, w))) in LIFE
        .iter()
        .zip(bare_ran.iter().zip(wrapped_ran))
        .enumerate()
    {
        let event = format!("event {i} ({})", step.dispatch_path);
        let expected_code = if i == FAILING { 1 } else { 0 };
        assert_eq!(
            code(&b.output),
            expected_code,
            "{event}: the bare charm; stderr: {}",
            text(&b.output.stderr)
        );
        assert_eq!(
            code(&w.output),
            code(&b.output),
            "{event}: exit code; stderr: {}",
            text(&w.output.stderr)
        );
        assert_eq!(
            text(&w.output.stdout),
            text(&b.output.stdout),
            "{event}: stdout"
        );
        assert_eq!(
            charm_stderr(&w.output.stderr),
            text(&b.output.stderr),
            "{event}: the charm's stderr"
        );
        assert!(
            our_lines(&w.output.stderr).is_empty(),
            "{event}: nothing to tell an operator in a healthy unit: {}",
            text(&w.output.stderr)
        );

        let bare_calls: Vec<Value> = b.calls.iter().map(|c| comparable(bare, c)).collect();
        let mut charm_calls: Vec<Value> = w
            .calls
            .iter()
            .filter(|c| by_charm(c))
            .map(|c| comparable(wrapped, c))
            .collect();
        if w.calls
            .iter()
            .any(|c| !by_charm(c) && c["tool"] == "relation-set")
        {
            forgive_clearing_our_receivers(&mut charm_calls, &bare_calls, &event);
        }
        assert!(!bare_calls.is_empty(), "{event}: ops calls hook tools");
        assert_eq!(
            bare_calls.len(),
            charm_calls.len(),
            "{event}: number of hook-tool calls by the charm: bare {:?}, wrapped {:?}",
            tool_names(bare_calls.iter()),
            tool_names(charm_calls.iter())
        );
        for (n, (b, w)) in bare_calls.iter().zip(&charm_calls).enumerate() {
            assert_eq!(w, b, "{event}: hook-tool call {n} differs");
        }
    }
    assert_eq!(
        final_model(wrapped, bare),
        final_model(bare, bare),
        "the model after the whole life, apart from what the wrapper publishes"
    );
}

/// The one thing a charm can see of us, by design (DESIGN §3: our side of the tracing
/// relation is published before the charm runs, so that the charm's own write wins): in the
/// event where the wrapper published `receivers`, a charm that reads its app bag finds it set.
/// ops[tracing]'s requirer rewrites its bag with `DatabagModel.dump(clear=True)`, which first
/// deletes every key of a non-empty bag: one extra `relation-set` (`{"receivers": ""}`), just
/// before the write it makes bare. The end state is the same (see `final_model`). It does
/// exactly that in every later hook anyway, bare or not, as its own key is there by then.
fn forgive_clearing_our_receivers(charm_calls: &mut Vec<Value>, bare_calls: &[Value], event: &str) {
    let clears = |c: &Value| {
        c["tool"] == "relation-set"
            && c["args"] == json!(["-r", "charm-tracing:3", "--app", "--file", "-"])
            && c["stdin"] == r#"{"receivers": ""}"#
    };
    if bare_calls.iter().any(clears) {
        return;
    }
    if let Some(at) = charm_calls.iter().position(clears) {
        let next = &charm_calls[at + 1];
        assert!(
            next["tool"] == "relation-set" && next["args"] == charm_calls[at]["args"],
            "{event}: clearing the bag is followed by the charm's own write: {next}"
        );
        charm_calls.remove(at);
    }
}

/// The fake model after the life, normalised; for the wrapped copy without what the wrapper
/// itself published: `receivers` in our app's bag of the tracing relation, where the bare
/// copy has none (ops[tracing] publishes the same key itself).
fn final_model(unit: &Unit, bare: &Unit) -> Value {
    let mut state = unit.state();
    unit.normalise(&mut state);
    if unit.wrapped {
        let bare_state = bare.state();
        let ours = &mut state["relations"]["charm-tracing"]["charm-tracing:3"]["data"]["myapp"];
        assert_eq!(
            ours["receivers"], r#"["otlp_http"]"#,
            "the leader published our side of the tracing relation"
        );
        if bare_state["relations"]["charm-tracing"]["charm-tracing:3"]["data"]["myapp"]["receivers"]
            .is_null()
        {
            ours.as_object_mut().unwrap().remove("receivers");
        }
    }
    state
}

/// Each event has its trace, with ops' hook-tool calls as spans under `charm` and the
/// wrapper's own calls under the root; buffered until the relation gives a destination,
/// shipped from then on.
fn assert_traces(ran: &[Ran]) {
    for (i, (step, r)) in LIFE.iter().zip(ran).enumerate() {
        let event = format!("event {i} ({})", step.dispatch_path);
        assert_eq!(
            r.traces.len(),
            i + 1,
            "{event}: one trace per dispatch (ops re-running hooks/<event> through us adds none)"
        );
        let trace = r.traces.last().unwrap();
        assert_eq!(trace["event"], event_name(step.dispatch_path), "{event}");
        let root = util::root(trace);
        let charm = util::span(trace, "charm");
        assert_eq!(charm["parent_span_id"], root["span_id"], "{event}");
        assert_eq!(
            charm["attributes"]["process.exit.code"],
            json!(code(&r.output)),
            "{event}"
        );
        let failed = i == FAILING;
        assert_eq!(
            root["status"],
            if failed { "ERROR" } else { "OK" },
            "{event}: {trace:#}"
        );
        assert_eq!(
            children(trace, charm),
            tool_names(r.calls.iter().filter(|c| by_charm(c))),
            "{event}: every hook-tool call ops made is a span under `charm`"
        );
        let traceparent = format!(
            "00-{}-{}-01",
            trace["trace_id"].as_str().unwrap(),
            charm["span_id"].as_str().unwrap()
        );
        for call in r.calls.iter().filter(|c| by_charm(c)) {
            assert_eq!(
                call["env"]["TRACEPARENT"], traceparent,
                "{event}: the charm (and ops re-running hooks/<event>) sees the `charm` span \
                 as its parent"
            );
        }
        let mut own = children(trace, root);
        own.retain(|name| name != "charm");
        let own_calls = tool_names(r.calls.iter().filter(|c| !by_charm(c)));
        assert_eq!(
            own, own_calls,
            "{event}: the wrapper's own calls are spans under the root"
        );
        assert!(
            own_calls
                .iter()
                .all(|t| t.starts_with("relation-") || t == "is-leader"),
            "{event}: the wrapper only reads relations, and publishes its side as leader: \
             {own_calls:?}"
        );
        for span in trace["spans"].as_array().unwrap() {
            if span["kind"] == "SPAN_KIND_CLIENT" {
                assert_eq!(span["status"], "OK", "{event}: {span:#}");
            }
        }
        let states: Vec<&str> = r
            .traces
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        let expected = if i < FIRST_WITH_DESTINATION {
            "pending"
        } else {
            "shipped"
        };
        assert!(
            states.iter().all(|s| *s == expected),
            "{event}: every trace {expected}: {states:?}"
        );
    }

    // What a user sees for a few of them.
    let install = ran[0].traces.last().unwrap();
    let status = util::span(install, "status-set");
    assert_eq!(status["attributes"]["juju.status"], "maintenance");
    assert_eq!(
        status["attributes"]["juju.status.message"],
        "installing the service"
    );
    for name in ["juju-log", "application-version-set", "is-leader"] {
        assert!(
            !util::spans_named(install, name).is_empty(),
            "install has a {name} span: {install:#}"
        );
    }
    let greet = ran[9].traces.last().unwrap();
    assert_eq!(util::root(greet)["attributes"]["juju.event.kind"], "action");
    for name in ["action-get", "action-log", "action-set", "config-get"] {
        assert!(
            !util::spans_named(greet, name).is_empty(),
            "greet has a {name} span: {greet:#}"
        );
    }
    let failed = ran[FAILING].traces.last().unwrap();
    assert_eq!(
        util::span(failed, "charm")["status"],
        "ERROR",
        "the charm span of the failing hook"
    );
    assert_exception(failed);
    for (i, r) in ran.iter().enumerate().filter(|(i, _)| *i != FAILING) {
        let charm = util::span(r.traces.last().unwrap(), "charm");
        assert_eq!(
            charm["events"],
            json!([]),
            "event {i}: no exception on a hook that succeeded"
        );
    }
}

/// The exception ops logged when the handler raised is on the failed `charm` span, as the
/// semantic conventions name its parts.
fn assert_exception(failed: &Value) {
    let charm = util::span(failed, "charm");
    let events = charm["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{charm:#}");
    let exception = &events[0];
    assert_eq!(exception["name"], "exception");
    let attributes = &exception["attributes"];
    assert_eq!(attributes["exception.type"], "ValueError");
    assert_eq!(
        attributes["exception.message"],
        "invalid port 0: must be 1-65535"
    );
    let stacktrace = attributes["exception.stacktrace"].as_str().unwrap();
    assert!(
        stacktrace.starts_with("Traceback (most recent call last):\n")
            && stacktrace.contains("in _port\n")
            && stacktrace.ends_with("ValueError: invalid port 0: must be 1-65535"),
        "{stacktrace}"
    );
    // At the time ops logged it, within the charm's run.
    let time = exception["time_unix_nano"].as_u64().unwrap();
    assert!(
        charm["start_unix_nano"].as_u64().unwrap() <= time
            && time <= charm["end_unix_nano"].as_u64().unwrap(),
        "{charm:#}"
    );
}

/// `dispatch traces --failed` says why under the failed `charm` span, and the receiver got the
/// exception event with its attributes.
fn assert_exception_shown_and_shipped(unit: &Unit, failed: &Value) {
    let tree = unit.charm.tool(&["traces", "--failed"]);
    let tree = text(&tree.stdout);
    let charm_line = tree
        .lines()
        .position(|l| l.contains("└─ charm") && l.contains("ERROR exit code 1"))
        .unwrap_or_else(|| panic!("no failed charm span in:\n{tree}"));
    assert_eq!(
        tree.lines().nth(charm_line + 1).map(str::trim),
        Some("│  exception: ValueError: invalid port 0: must be 1-65535"),
        "{tree}"
    );
    let span_id = util::span(failed, "charm")["span_id"]
        .as_str()
        .unwrap()
        .to_string();
    let block = rotel::span_block(&unit.rotel.output(), &span_id);
    for line in [
        "-> Name: exception",
        "-> exception.type: Str(ValueError)",
        "-> exception.message: Str(invalid port 0: must be 1-65535)",
        "-> exception.stacktrace: Str(Traceback (most recent call last):",
    ] {
        assert!(
            block.lines().any(|l| l.trim() == line),
            "rotel's span {span_id} lacks {line:?}:\n{block}"
        );
    }
}

/// Everything we stored reached the provider's receiver, exactly once, the backlog from
/// before the relation included.
fn assert_all_at_receiver(unit: &Unit, ran: &[Ran]) -> (Vec<Value>, Vec<SeenSpan>) {
    let traces = unit.charm.traces();
    assert_eq!(traces.len(), LIFE.len());
    assert!(
        traces.iter().all(|t| t["state"] == "shipped"),
        "{traces:#?}"
    );
    let before_relation = &ran[FIRST_WITH_DESTINATION - 1].traces;
    assert_eq!(before_relation.len(), FIRST_WITH_DESTINATION);
    let seen = unit.rotel.spans_once_all_of(&traces);
    rotel::assert_ours_received_exactly_once(&seen, &traces, &unit.rotel.output());
    (traces, seen)
}

#[test]
fn an_ops_charm_behaves_the_same_under_our_dispatch_and_its_traces_reach_the_provider() {
    let (bare, bare_ran, wrapped, wrapped_ran) = live_both(Flavour::Ops);
    assert_same_behaviour(&bare, &bare_ran, &wrapped, &wrapped_ran);
    assert_traces(&wrapped_ran);
    let (traces, seen) = assert_all_at_receiver(&wrapped, &wrapped_ran);
    rotel::assert_received_exactly_once(&seen, &traces, &wrapped.rotel.output());
    assert_exception_shown_and_shipped(&wrapped, &traces[FAILING]);
    assert!(
        rotel::parse_spans(&bare.rotel.output()).is_empty(),
        "the bare charm sends nothing: what reaches the provider is ours"
    );
    assert!(
        bare_ran
            .iter()
            .chain(&wrapped_ran)
            .all(|r| r.ops_tracing_buffered.is_none()),
        "plain ops (no ops_tracing in its venv) keeps no tracing buffer of its own"
    );
}

#[test]
fn ops_tracing_and_our_dispatch_run_side_by_side_without_interfering() {
    let (bare, bare_ran, wrapped, wrapped_ran) = live_both(Flavour::OpsTracing);
    assert_same_behaviour(&bare, &bare_ran, &wrapped, &wrapped_ran);
    assert_traces(&wrapped_ran);
    let (traces, _) = assert_all_at_receiver(&wrapped, &wrapped_ran);

    // Two buffers, two files: ops-tracing's beside ours, each with its own data.
    assert_ne!(
        wrapped.charm.path(".tracing-data.db"),
        wrapped.charm.store_file()
    );
    assert!(wrapped.charm.store_file().exists());
    let buffered =
        |ran: &[Ran]| -> Vec<Option<i64>> { ran.iter().map(|r| r.ops_tracing_buffered).collect() };
    let (bare_buffered, wrapped_buffered) = (buffered(&bare_ran), buffered(&wrapped_ran));
    for (i, rows) in wrapped_buffered[..FIRST_WITH_DESTINATION]
        .iter()
        .enumerate()
    {
        assert!(
            rows.unwrap_or(0) > 0,
            "event {i}: ops-tracing buffered its own traces while it had no destination: \
             {wrapped_buffered:?}"
        );
    }
    assert_eq!(
        wrapped_buffered.last(),
        Some(&Some(0)),
        "ops-tracing sent all it had buffered"
    );
    assert_eq!(
        wrapped_buffered, bare_buffered,
        "ops-tracing's buffer went through the same states, event by event, as without us"
    );
    // It learnt the same loopback receiver from the relation, and nothing else.
    assert_eq!(wrapped.ops_tracing_destination(), wrapped.rotel.url());
    assert_eq!(bare.ops_tracing_destination(), bare.rotel.url());

    // Its own traces reach the receiver too, separate from ours.
    let ours: Vec<&str> = traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    let ops_main = |seen: &[SeenSpan]| -> Vec<String> {
        seen.iter()
            .filter(|s| s.name == "ops.main")
            .map(|s| s.trace_id.clone())
            .collect()
    };
    let all_ops_main = |seen: &[SeenSpan]| ops_main(seen).len() >= LIFE.len();
    let seen = wrapped
        .rotel
        .spans_once("ops-tracing's ops.main spans", all_ops_main);
    let bare_seen = bare
        .rotel
        .spans_once("ops-tracing's ops.main spans", all_ops_main);
    assert_eq!(
        ops_main(&seen).len(),
        ops_main(&bare_seen).len(),
        "ops-tracing sent as many traces as without us"
    );
    let ops_traces = ops_main(&seen);
    assert!(
        ops_traces.iter().all(|id| !ours.contains(&id.as_str())),
        "ops-tracing's traces are its own, not merged with ours"
    );
    let our_spans: Vec<&str> = traces
        .iter()
        .flat_map(|t| t["spans"].as_array().unwrap())
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let strays: Vec<&SeenSpan> = seen
        .iter()
        .filter(|s| ours.contains(&s.trace_id.as_str()))
        .filter(|s| !our_spans.contains(&s.span_id.as_str()))
        .collect();
    assert!(
        strays.is_empty(),
        "nothing of ops-tracing's landed in our traces: {strays:?}"
    );
}

/// A charm whose `__init__` raises fails every event before any handler runs: the exception is
/// on the failed trace all the same. `record_exceptions: false` leaves it out, and then the
/// shims are not asked to keep the traceback at all.
#[test]
fn an_exception_raised_in_the_charms_init_is_on_the_trace_unless_switched_off() {
    let unit = Unit::new(Flavour::Ops, true);
    let broken = [("OPS_CHARM_BROKEN_INIT", "1")];
    let out = unit
        .charm
        .command("dispatch", "hooks/install", &broken)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let trace = unit.charm.last_trace();
    let charm = util::span(&trace, "charm");
    let events = charm["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{charm:#}");
    let attributes = &events[0]["attributes"];
    assert_eq!(attributes["exception.type"], "RuntimeError");
    assert_eq!(
        attributes["exception.message"],
        "the charm cannot set itself up: broken on purpose"
    );
    let stacktrace = attributes["exception.stacktrace"].as_str().unwrap();
    assert!(
        stacktrace.contains("in __init__\n") && stacktrace.contains("in _check_setup\n"),
        "{stacktrace}"
    );

    unit.charm
        .write("dispatch-trace.yaml", "record_exceptions: false\n");
    let before = unit.charm.tool_calls().len();
    let out = unit
        .charm
        .command("dispatch", "hooks/install", &broken)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let trace = unit.charm.last_trace();
    assert_eq!(
        util::span(&trace, "charm")["events"],
        json!([]),
        "{trace:#}"
    );
    let juju_log_error = util::spans_named(&trace, "juju-log")
        .into_iter()
        .filter(|s| s["attributes"]["juju.log.level"] == "ERROR")
        .count();
    assert_eq!(juju_log_error, 1, "ops still logged it: {trace:#}");
    // Switched off, the shims are not asked to keep it at all.
    let calls = unit.charm.tool_calls();
    let asked = |calls: &[Value]| -> Vec<Value> {
        calls
            .iter()
            .filter(|c| c["tool"] == "juju-log")
            .map(|c| c["env"]["DISPATCH_TRACE_EXCEPTIONS"].clone())
            .collect()
    };
    let (on, off) = (asked(&calls[..before]), asked(&calls[before..]));
    assert!(!on.is_empty() && on.iter().all(|v| *v == "1"), "{on:?}");
    assert!(!off.is_empty() && off.iter().all(Value::is_null), "{off:?}");
}
