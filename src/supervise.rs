//! Running the charm's entrypoint as a child that cannot tell it is wrapped, and ending the
//! way it ended (DESIGN §2).
//!
//! The habits are tini's and catatonit's: block the asynchronous signals before spawning, wait
//! for them synchronously (no handlers, so every disposition the hook inherited stays as it
//! was and passes to the child through exec), forward them to the child, and mirror its end.
//!
//! Which signals are forwarded, how the child is started so that it dies with us, the loop
//! that waits for it and how we end as it ended are shared with the shim:
//! `dispatch_shim::child`. What is the wrapper's own: the hook's signal state, signals that
//! arrive before the child exists, the work done while it runs, and what the trace keeps.
//!
//! SIGPIPE and SIGXFSZ are ignored in this process (a closed stderr or a file-size limit must
//! not kill the wrapper) and restored in the child to what the hook gave us. The child gets
//! PR_SET_PDEATHSIG=SIGKILL from this (main) thread, which lives until the end: Juju's action
//! cancel SIGKILLs the dispatch process only, and the child must not outlive it.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use dispatch_shim::child::{self, FORWARDED};
use nix::sys::signal::Signal;

pub use dispatch_shim::child::{should_forward, ChildEnd};

/// Signals we ignore for ourselves and restore for the child (SIGCHLD is also restored, see
/// `capture`).
const SELF_IGNORED: &[libc::c_int] = &[libc::SIGPIPE, libc::SIGXFSZ];

/// The signal state the hook handed us, captured before we changed anything.
#[derive(Clone)]
pub struct InheritedSignals {
    mask: libc::sigset_t,
    ignored: Vec<libc::c_int>,
    self_ignored_were: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl InheritedSignals {
    /// Records the inherited mask and dispositions, ignores SIGPIPE/SIGXFSZ for ourselves.
    /// Must run first thing in `main`, before any thread exists.
    pub fn capture() -> InheritedSignals {
        // SAFETY: querying and setting our own signal state, single-threaded at this point.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            let mut ignored = Vec::new();
            for &signal in FORWARDED {
                if disposition(signal) == libc::SIG_IGN {
                    ignored.push(signal);
                }
            }
            let mut self_ignored_were = Vec::new();
            for &signal in SELF_IGNORED {
                self_ignored_were.push((signal, libc::signal(signal, libc::SIG_IGN)));
            }
            // An ignored SIGCHLD (inherited through exec) would make the kernel reap the
            // child for us: no SIGCHLD to wait for, no exit status. Default it for ourselves,
            // and give the child back what it would have inherited.
            self_ignored_were.push((libc::SIGCHLD, libc::signal(libc::SIGCHLD, libc::SIG_DFL)));
            InheritedSignals {
                mask,
                ignored,
                self_ignored_were,
            }
        }
    }

    /// Dispositions to put back in the child: those we changed only for ourselves.
    fn dispositions_for_child(&self) -> &[(libc::c_int, libc::sighandler_t)] {
        &self.self_ignored_were
    }

    /// Puts the inherited state back (between fork and exec: only async-signal-safe calls).
    fn restore_in_child(&self) {
        // SAFETY: async-signal-safe calls on the child's own signal state.
        unsafe {
            for &(signal, was) in &self.self_ignored_were {
                if was != libc::SIG_ERR {
                    libc::signal(signal, was);
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
        }
    }
}

unsafe fn disposition(signal: libc::c_int) -> libc::sighandler_t {
    let mut current: libc::sigaction = std::mem::zeroed();
    libc::sigaction(signal, std::ptr::null(), &mut current);
    current.sa_sigaction
}

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub max_rss_bytes: u64,
}

/// What we know about the child after it ended.
#[derive(Debug, Clone)]
pub struct ChildRun {
    pub pid: Option<u32>,
    pub started: SystemTime,
    pub ended: SystemTime,
    pub end: ChildEnd,
    pub usage: Option<Usage>,
    /// Set when the target could not be executed at all (the end is then 126/127).
    pub spawn_error: Option<String>,
    /// Signals we received while the child ran, and whether each was forwarded.
    pub signals: Vec<ReceivedSignal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedSignal {
    pub signal: i32,
    pub forwarded: bool,
}

/// How the child is to be run.
pub struct Launch<'a> {
    pub program: &'a Path,
    pub argv0: &'a OsString,
    pub env_changes: Vec<(OsString, OsString)>,
    /// The child's stderr when it is not ours (`stderr_tail`'s pipe).
    pub stderr: Option<libc::c_int>,
}

/// A spawn that failed for a reason of ours (no memory, no processes) rather than the
/// target's: the caller should exec the target directly instead of failing the hook.
pub struct SpawnUnavailable(pub std::io::Error);

/// Blocks the forwarded signals and SIGCHLD in this thread (and in threads started after).
pub fn block_signals() {
    child::block_watched();
}

/// Runs the child to its end, forwarding signals. Signals must already be blocked.
/// `while_running` is called once right after the spawn, so work that need not precede the
/// child overlaps with it; signals arriving meanwhile wait (blocked) and are handled after.
pub fn run(
    launch: &Launch,
    inherited: &InheritedSignals,
    while_running: &mut dyn FnMut(),
) -> Result<ChildRun, SpawnUnavailable> {
    let started = SystemTime::now();
    // Signals that arrived while we prepared were meant for the hook, and the child did not
    // exist to receive them directly: whatever the rule says, they go to it. It raises them
    // itself before exec; sent after the spawn, a charm done in a millisecond could exit first.
    let early = take_pending_signals(inherited);
    let raise: Vec<libc::c_int> = early.iter().map(|s| s.signal).collect();
    let pid = match spawn(launch, inherited, &raise) {
        Ok(pid) => pid,
        Err(error) => {
            let code = match error.raw_os_error() {
                Some(errno) if child::program_at_fault(errno) => {
                    child::exec_failure_code(Some(errno))
                }
                _ => return Err(SpawnUnavailable(error)),
            };
            return Ok(ChildRun {
                pid: None,
                started,
                ended: SystemTime::now(),
                end: ChildEnd::Exited(code),
                usage: None,
                spawn_error: Some(error.to_string()),
                signals: early,
            });
        }
    };
    let mut signals = early;
    while_running();
    let (end, usage) = child::wait_forwarding(pid, &inherited.ignored, |signal, forwarded| {
        if signals.len() < MAX_SIGNALS_KEPT {
            signals.push(ReceivedSignal { signal, forwarded });
        }
    });
    Ok(ChildRun {
        pid: Some(pid as u32),
        started,
        ended: SystemTime::now(),
        end,
        usage: Some(Usage::from(usage)),
        spawn_error: None,
        signals,
    })
}

/// Starts the child with `dispatch_shim::child::spawn`: no page tables copied, and
/// PR_SET_PDEATHSIG armed (DESIGN §7: std's `pre_exec` would need a full fork, +0.2 ms),
/// `execve` without PATH search or /bin/sh fallback, exactly as Juju runs a hook.
fn spawn(
    launch: &Launch,
    inherited: &InheritedSignals,
    raise: &[libc::c_int],
) -> std::io::Result<libc::pid_t> {
    let c = |bytes: &[u8]| {
        CString::new(bytes)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte"))
    };
    let program = c(launch.program.as_os_str().as_bytes())?;
    let argv0 = c(launch.argv0.as_bytes())?;
    let env = child_environment(&launch.env_changes)
        .into_iter()
        .map(|entry| c(&entry))
        .collect::<std::io::Result<Vec<CString>>>()?;
    let argv = [argv0.as_ptr(), std::ptr::null()];
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    child::spawn(&child::Exec {
        program: &program,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        mask: inherited.mask,
        dispositions: inherited.dispositions_for_child(),
        raise,
        stderr: launch.stderr,
    })
    .map_err(std::io::Error::from_raw_os_error)
}

/// Our environment with `changes` applied, in its original order (changed variables keep
/// their place, new ones go last), as `KEY=VALUE` byte strings.
fn child_environment(changes: &[(OsString, OsString)]) -> Vec<Vec<u8>> {
    let mut pending: Vec<&(OsString, OsString)> = changes.iter().collect();
    let mut env = Vec::new();
    let entry = |key: &OsString, value: &OsString| {
        let mut bytes = key.as_bytes().to_vec();
        bytes.push(b'=');
        bytes.extend_from_slice(value.as_bytes());
        bytes
    };
    for (key, value) in std::env::vars_os() {
        match pending.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (k, v) = pending.remove(i);
                env.push(entry(k, v));
            }
            None => env.push(entry(&key, &value)),
        }
    }
    for (key, value) in pending {
        env.push(entry(key, value));
    }
    env
}

/// Takes (consumes) the forwarded signals pending right now, so they reach the child once, by
/// its own hand, and not again through the wait. A signal the hook ignores is pending too (the
/// kernel discards no blocked signal): the child, which ignores it as well, raises it on itself
/// as it would have received it bare, and the trace says it was not forwarded.
fn take_pending_signals(inherited: &InheritedSignals) -> Vec<ReceivedSignal> {
    let mut taken = Vec::new();
    // SAFETY: reading our own pending set, and consuming pending signals without waiting.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        for &signal in FORWARDED {
            if libc::sigismember(&pending, signal) != 1 {
                continue;
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == signal {
                taken.push(ReceivedSignal {
                    signal,
                    forwarded: !inherited.ignored.contains(&signal),
                });
            }
        }
    }
    taken
}

/// Keeps at most this many received signals for the trace (a signal storm must not grow
/// memory without bound).
const MAX_SIGNALS_KEPT: usize = 64;

impl From<libc::rusage> for Usage {
    fn from(usage: libc::rusage) -> Usage {
        let timeval = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Usage {
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
            max_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
        }
    }
}

/// Replaces this process with the target (pass-through modes). Returns only on failure.
pub fn exec(program: &Path, argv0: &OsString, inherited: &InheritedSignals) -> std::io::Error {
    let state = inherited.clone();
    let mut command = Command::new(program);
    command.arg0(argv0);
    // SAFETY: the closure only makes async-signal-safe system calls. std resets the mask and
    // SIGPIPE before running it; this puts back what the hook gave us.
    unsafe {
        command.pre_exec(move || {
            state.restore_in_child();
            Ok(())
        });
    }
    command.exec()
}

/// `SIGTERM`-style name for a signal number.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("SIG{signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_usage_is_kept_in_durations_and_bytes() {
        // SAFETY: rusage is plain data, zero is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        usage.ru_utime.tv_sec = 1;
        usage.ru_utime.tv_usec = 500_000;
        usage.ru_stime.tv_usec = 250;
        usage.ru_maxrss = 2048;
        let usage = Usage::from(usage);
        assert_eq!(usage.user, Duration::from_millis(1500));
        assert_eq!(usage.system, Duration::from_micros(250));
        assert_eq!(usage.max_rss_bytes, 2 * 1024 * 1024);
    }

    #[test]
    fn signal_names_are_the_conventional_ones() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(200), "SIG200");
    }
}
