//! Why a hook failed, in its trace (README, *Why a hook failed*): the exception a charm reported
//! through `juju-log` the way ops does, on the failed `charm` span and nowhere else. The real
//! ops charm raising in a handler and in `__init__` is in `ops_charm.rs`; here a shell charm
//! logs the same message, to pin the edges: a charm that logs one and then succeeds, a message
//! at another level, and what another dispatch left behind.

use crate::util::outcome::assert_same_outcome;
use crate::util::{code, our_lines, span, text, Charm};
use serde_json::json;

/// What ops sends through `juju-log` when a handler raises (`ops.log.setup_root_logging`).
const OPS_TRACEBACK: &str = "Uncaught exception while in charm code:
Traceback (most recent call last):
  File \"/charm/src/charm.py\", line 12, in _on_install
    port = config[\"port\"]
KeyError: 'port'";

/// A shell charm that logs `OPS_TRACEBACK` at `level`, then exits `exit`.
fn run_logging(charm: &Charm, level: &str, exit: &str) -> serde_json::Value {
    let script = format!("juju-log --log-level {level} -- \"$TRACEBACK\"");
    let out = charm.dispatch(
        "hooks/install",
        &[
            ("CHARM_RUN", script.as_str()),
            ("TRACEBACK", OPS_TRACEBACK),
            ("CHARM_EXIT", exit),
        ],
    );
    assert_eq!(code(&out).to_string(), exit, "{}", text(&out.stderr));
    charm.last_trace()
}

#[test]
fn an_exception_logged_the_way_ops_does_is_on_the_charm_span_only_when_the_charm_fails() {
    let charm = Charm::new("shell");
    let trace = run_logging(&charm, "ERROR", "3");
    let events = &span(&trace, "charm")["events"];
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{trace:#}");
    assert_eq!(events[0]["name"], "exception");
    assert_eq!(events[0]["attributes"]["exception.type"], "KeyError");
    assert_eq!(events[0]["attributes"]["exception.message"], "'port'");
    assert_eq!(
        events[0]["attributes"]["exception.stacktrace"],
        OPS_TRACEBACK.split_once('\n').unwrap().1
    );

    // Logged, and then the charm recovered: the hook did not fail, there is nothing to explain.
    let trace = run_logging(&charm, "ERROR", "0");
    assert_eq!(span(&trace, "charm")["events"], json!([]), "{trace:#}");
    // Not at ERROR: not ops reporting an uncaught exception.
    let trace = run_logging(&charm, "WARNING", "1");
    assert_eq!(span(&trace, "charm")["events"], json!([]), "{trace:#}");
}

/// The shims leave the message beside the record channel with the dispatch's nonce: what an
/// earlier dispatch (or a daemon it left) put there is not this hook's failure, and whatever
/// is there is gone after the dispatch.
#[test]
fn an_exception_left_beside_the_channel_by_another_dispatch_is_not_this_ones() {
    let charm = Charm::new("shell");
    let out = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&out), 0);
    let left = charm.path(".dispatch-trace/records.exception");
    std::fs::write(&left, format!("0123456789abcdef\n{OPS_TRACEBACK}")).unwrap();
    let out = charm.dispatch("hooks/install", &[("CHARM_EXIT", "1")]);
    assert_eq!(code(&out), 1);
    let trace = charm.last_trace();
    assert_eq!(span(&trace, "charm")["events"], json!([]), "{trace:#}");
    assert!(!left.exists(), "the leftover was taken away");
}

/// With `stderr_tail`, the charm's stderr goes through a relay: the hook gets exactly the
/// bytes a bare run gets, and a failed hook's `charm` span carries the last of them.
#[test]
fn stderr_tail_keeps_the_last_bytes_of_a_failed_hooks_stderr_and_changes_nothing_else() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "stderr_tail: 16\n");
    let noisy = [
        ("CHARM_STDOUT", "out of the charm\n"),
        ("CHARM_STDERR", "first line\nthe very last words\n"),
        ("CHARM_EXIT", "3"),
    ];
    let bare = charm.bare("hooks/install", &noisy);
    let traced = charm.dispatch("hooks/install", &noisy);
    assert_same_outcome(&traced, &bare);
    assert!(
        our_lines(&traced.stderr).is_empty(),
        "{}",
        text(&traced.stderr)
    );
    let trace = charm.last_trace();
    let attributes = &span(&trace, "charm")["attributes"];
    assert_eq!(
        attributes["dispatch.child.stderr_tail"],
        "very last words\n"
    );

    // A hook that succeeds keeps nothing.
    let quiet = [("CHARM_STDERR", "all is well\n"), ("CHARM_EXIT", "0")];
    let traced = charm.dispatch("hooks/install", &quiet);
    assert_same_outcome(&traced, &charm.bare("hooks/install", &quiet));
    let trace = charm.last_trace();
    assert!(span(&trace, "charm")["attributes"]["dispatch.child.stderr_tail"].is_null());

    // Off (the default): the charm's stderr is the hook's own.
    charm.write("dispatch-trace.yaml", "");
    let traced = charm.dispatch("hooks/install", &noisy);
    assert_same_outcome(&traced, &bare);
    let trace = charm.last_trace();
    assert!(span(&trace, "charm")["attributes"]["dispatch.child.stderr_tail"].is_null());
}
