//! Bare against traced: the same hook run without us (`dispatch.orig`) and with us, and the
//! assertion every guarantee rests on (README, *Guarantees* 1): the hook ends as it would
//! without us. The same exit code or death by the same signal, the same stdout byte for byte,
//! the charm's own stderr byte for byte (our lines, all starting `dispatch:`, come on top), and
//! for the fault matrix also what we said and what time we added.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{charm_stderr, our_lines, text, Charm};

/// Added on top of every time budget: scheduling noise on a loaded 2-core machine, not a
/// target. These are tests, not benchmarks (those are in benches/).
pub const SLACK: Duration = Duration::from_secs(2);

/// A finished run and its wall time.
pub struct Timed {
    pub out: Output,
    pub took: Duration,
}

pub fn timed(mut command: Command) -> Timed {
    let started = Instant::now();
    let out = command.output().unwrap();
    Timed {
        out,
        took: started.elapsed(),
    }
}

/// Runs with stdout and stderr in files rather than pipes: for hooks that leave a process
/// holding them open, whose end we time without waiting for that process.
pub fn timed_to_files(mut command: Command, dir: &Path, name: &str) -> Timed {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    command
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let started = Instant::now();
    let status = command.status().unwrap();
    let took = started.elapsed();
    Timed {
        out: Output {
            status,
            stdout: std::fs::read(&out_path).unwrap(),
            stderr: std::fs::read(&err_path).unwrap(),
        },
        took,
    }
}

/// The same run bare and traced (bare first), each adjusted by `tweak`: (traced, bare).
pub fn pair(
    charm: &Charm,
    dispatch_path: &str,
    env: &[(&str, &str)],
    tweak: &dyn Fn(&mut Command),
) -> (Timed, Timed) {
    let mut bare = charm.command("dispatch.orig", dispatch_path, env);
    tweak(&mut bare);
    let bare = timed(bare);
    let mut traced = charm.command("dispatch", dispatch_path, env);
    tweak(&mut traced);
    (timed(traced), bare)
}

pub fn no_tweak(_: &mut Command) {}

/// The hook ends exactly as the bare charm does: the same exit code or death by the same
/// signal, the same stdout, and the charm's own stderr passed through untouched (our line, if
/// any, comes on top).
pub fn assert_same_outcome(traced: &Output, bare: &Output) {
    assert_eq!(
        (traced.status.code(), traced.status.signal()),
        (bare.status.code(), bare.status.signal()),
        "the hook ended differently (exit code, signal); our stderr: {}",
        text(&traced.stderr)
    );
    assert_eq!(text(&traced.stdout), text(&bare.stdout), "stdout differs");
    assert_eq!(
        charm_stderr(&traced.stderr),
        text(&bare.stderr),
        "the charm's stderr differs"
    );
}

/// What the operator may read from us on stderr in a case.
#[derive(Debug, Clone, Copy)]
pub enum Says {
    /// Nothing: there is nothing for the operator to act on.
    Nothing,
    /// Exactly one line, holding this text.
    OneLine(&'static str),
}

/// A fault case of the matrix (README, *Guarantees* 1): the hook ends as bare
/// (`assert_same_outcome`), our stderr is as `says`, and we added no more time than `budget`
/// (+ `SLACK`).
pub fn assert_hook_unchanged(traced: &Timed, bare: &Timed, budget: Duration, says: Says) {
    assert_same_outcome(&traced.out, &bare.out);
    let ours = our_lines(&traced.out.stderr);
    match says {
        Says::Nothing => assert!(ours.is_empty(), "unexpected operator lines: {ours:?}"),
        Says::OneLine(fragment) => {
            assert_eq!(ours.len(), 1, "one operator line expected: {ours:?}");
            assert!(ours[0].contains(fragment), "{fragment:?} not in {ours:?}");
        }
    }
    assert!(
        traced.took <= bare.took + budget + SLACK,
        "traced run took {:?}, bare {:?}, budget {budget:?}",
        traced.took,
        bare.took
    );
    // One line per fault case that passed, for `tests/guarantees` to count (--nocapture).
    // The thread is named after the test's path (`faults::<name>`): the name alone is printed.
    let test = std::thread::current().name().unwrap_or("?").to_string();
    println!(
        "fault case: {}: hook unchanged, {} line(s) of ours, {:+.1} ms against bare",
        test.rsplit("::").next().unwrap_or("?"),
        ours.len(),
        traced.took.as_secs_f64() * 1e3 - bare.took.as_secs_f64() * 1e3
    );
}
