//! `dispatch`: a drop-in Juju charm dispatch that records an OpenTelemetry trace of every event.
//!
//! Juju runs `<charm>/dispatch` with no arguments once per event; that is hook mode
//! (`hook`). With arguments it is a tool for people and tests (`cli`). The process ends in
//! exactly one place, `main`, as `entry` says: with an exit code, or by the child's signal
//! (`dispatch_shim::child::end_as`).
#![deny(clippy::print_stdout)]

// By concern (README, *Where to look*): one hook's order of work, and the pieces it calls.
pub mod hook;
pub mod intercept;
pub mod listen;
pub mod ship;
pub mod store;
pub mod trace;
// Tool mode.
pub mod cli;
// What every part reads: the hook's environment, the config file, the charm's metadata, what
// runs, the child under supervision, the relations, our own problems and private directory.
pub mod config;
pub mod juju;
pub mod metadata;
pub mod operator;
pub mod relation;
pub mod state_dir;
pub mod supervise;
pub mod target;
#[cfg(test)]
mod test_support;

/// Runs dispatch; returns how the process is to end (an exit code, or the charm's death by a
/// signal, for `main` to die of). Must be called first thing, before any thread exists.
pub fn entry() -> supervise::ChildEnd {
    let inherited = supervise::InheritedSignals::capture();
    hook::stderr_tail::note_inherited_stderr();
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "dispatch".into());
    let rest: Vec<_> = args.collect();
    if rest.is_empty() && typed_by_a_person() {
        return supervise::ChildEnd::Exited(cli::not_run_by_juju());
    }
    if rest.is_empty() {
        hook::run(argv0, inherited)
    } else {
        supervise::ChildEnd::Exited(cli::run(rest))
    }
}

/// Whether a person ran `./dispatch` at a terminal outside any hook: Juju runs it with stdin
/// on /dev/null and sets the hook's variables (so does `juju debug-hooks`, whose terminal
/// session is a real hook). Running the charm then would only fail in ways that say nothing
/// about us; the person wanted to know what this is.
fn typed_by_a_person() -> bool {
    let juju = ["JUJU_DISPATCH_PATH", "JUJU_UNIT_NAME", "JUJU_CONTEXT_ID"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    // SAFETY: isatty only inspects the descriptor.
    !juju && unsafe { libc::isatty(0) } == 1
}
