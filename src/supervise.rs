//! Running the charm's entrypoint as a child that cannot tell it is wrapped, and ending the
//! way it ended (DESIGN §2).
//!
//! The habits are tini's and catatonit's: block the asynchronous signals before spawning, wait
//! for them synchronously (no handlers, so every disposition the hook inherited stays as it
//! was and passes to the child through exec), forward them to the child, and mirror its end.
//!
//! Forwarding rule, because a signal the child already received must not arrive twice:
//! - `SI_KERNEL` signals (Ctrl-C, Ctrl-\ and hang-ups from the terminal in `juju debug-hooks`)
//!   are not forwarded: the kernel sent them to the whole foreground process group, child
//!   included (we never call `setpgid`).
//! - Signals sent by PID 1 are not forwarded: that is systemd stopping the agent's cgroup, or
//!   Pebble stopping the agent's process group on Kubernetes; both signal every process.
//! - Signals the hook inherited as ignored are not forwarded: the child ignores them too.
//! - Anything else sent to us alone (Juju, a person with `kill`) is forwarded once.
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

use nix::sys::signal::Signal;

/// Signals forwarded to the child (subject to the rule above). Job-control signals are left
/// at their defaults so Ctrl-Z stops wrapper and child together, as it would stop the hook.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGPWR,
];

/// Signals we ignore for ourselves and restore for the child (SIGCHLD is also restored, see
/// `capture`).
const SELF_IGNORED: &[libc::c_int] = &[libc::SIGPIPE, libc::SIGXFSZ];

/// The signal state the hook handed us, captured before we changed anything.
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

    fn for_child(&self) -> InheritedSignals {
        InheritedSignals {
            mask: self.mask,
            ignored: Vec::new(),
            self_ignored_were: self.self_ignored_were.clone(),
        }
    }

    /// Puts the inherited state back into a freshly forked child (called between fork and
    /// exec: only async-signal-safe calls).
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

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32),
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
}

/// A spawn that failed for a reason of ours (no memory, no processes) rather than the
/// target's: the caller should exec the target directly instead of failing the hook.
pub struct SpawnUnavailable(pub std::io::Error);

/// Blocks the forwarded signals and SIGCHLD in this thread (and in threads started after).
pub fn block_signals() {
    // SAFETY: adjusting our own mask.
    unsafe {
        let set = watched_set();
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn watched_set() -> libc::sigset_t {
    // SAFETY: building a sigset value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
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
    // exist to receive them directly: whatever the rule says, they go to it.
    let early = pending_signals();
    let pid = match spawn(launch, inherited) {
        Ok(pid) => pid,
        Err(error) => {
            let code = match error.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
                Some(libc::EACCES)
                | Some(libc::ENOEXEC)
                | Some(libc::EPERM)
                | Some(libc::EISDIR)
                | Some(libc::ETXTBSY)
                | Some(libc::ELOOP)
                | Some(libc::ENAMETOOLONG) => 126,
                _ => return Err(SpawnUnavailable(error)),
            };
            return Ok(ChildRun {
                pid: None,
                started,
                ended: SystemTime::now(),
                end: ChildEnd::Exited(code),
                usage: None,
                spawn_error: Some(error.to_string()),
                signals: Vec::new(),
            });
        }
    };
    let mut signals = Vec::new();
    deliver_early(pid, &early, inherited, &mut signals);
    while_running();
    let (end, usage) = supervise(pid, inherited, &mut signals);
    Ok(ChildRun {
        pid: Some(pid as u32),
        started,
        ended: SystemTime::now(),
        end,
        usage: Some(usage),
        spawn_error: None,
        signals,
    })
}

/// Everything the child needs between clone and exec, prepared before: the child shares our
/// memory and must not allocate.
struct ChildSetup {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    parent: libc::pid_t,
    state: InheritedSignals,
    /// Written by the child if exec fails (shared memory: CLONE_VM).
    exec_errno: libc::c_int,
}

/// Starts the child like glibc's posix_spawn does (CLONE_VM | CLONE_VFORK: no page tables
/// copied, we resume once it has exec'd), but with PR_SET_PDEATHSIG armed in between, which
/// posix_spawn cannot do and std's `pre_exec` only offers with a full fork (DESIGN §7: +0.2
/// ms). Uses `execve`, not `execvp`: no PATH search and no /bin/sh fallback for scripts
/// without `#!`, exactly as Juju runs a hook.
fn spawn(launch: &Launch, inherited: &InheritedSignals) -> std::io::Result<libc::pid_t> {
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
    let mut setup = Box::new(ChildSetup {
        program,
        argv: vec![argv0.as_ptr(), std::ptr::null()],
        envp: env
            .iter()
            .map(|e| e.as_ptr())
            .chain([std::ptr::null()])
            .collect(),
        parent: std::process::id() as libc::pid_t,
        state: inherited.for_child(),
        exec_errno: 0,
    });
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack grows down from its (16-aligned) end; `setup`, `env`, `argv0` and the
    // stack outlive the child's use of them because CLONE_VFORK suspends us until it has
    // exec'd or exited. The child only makes async-signal-safe calls.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut *setup as *mut ChildSetup).cast(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the child is done with `setup` (exec'd or exited); volatile because it wrote it.
    let exec_errno = unsafe { std::ptr::read_volatile(&setup.exec_errno) };
    if exec_errno != 0 {
        // It exited (127) without exec'ing: reap it and report why.
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(std::io::Error::from_raw_os_error(exec_errno));
    }
    drop((env, argv0, stack));
    Ok(pid)
}

const CHILD_STACK: usize = 64 * 1024;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildSetup the parent keeps alive while we run (CLONE_VFORK).
    unsafe {
        let setup = &mut *(arg as *mut ChildSetup);
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            setup.exec_errno = (*libc::__errno_location()).max(1);
            libc::_exit(127);
        }
        if libc::getppid() != setup.parent {
            // We died before the death signal was armed.
            libc::_exit(1);
        }
        setup.state.restore_in_child();
        libc::execve(
            setup.program.as_ptr(),
            setup.argv.as_ptr(),
            setup.envp.as_ptr(),
        );
        setup.exec_errno = (*libc::__errno_location()).max(1);
        libc::_exit(127)
    }
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

/// Watched signals (but SIGCHLD) pending right now.
fn pending_signals() -> Vec<libc::c_int> {
    // SAFETY: reading our own pending set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        FORWARDED
            .iter()
            .copied()
            .filter(|&signal| libc::sigismember(&set, signal) == 1)
            .collect()
    }
}

/// Takes the signals that were pending before the spawn and forwards them (unless the hook
/// ignores them, in which case the child does too).
fn deliver_early(
    pid: libc::pid_t,
    early: &[libc::c_int],
    inherited: &InheritedSignals,
    received: &mut Vec<ReceivedSignal>,
) {
    for &signal in early {
        // SAFETY: consuming one pending signal without waiting.
        let taken = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == signal
        };
        if !taken {
            continue;
        }
        let forwarded = !inherited.ignored.contains(&signal);
        if forwarded {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, signal) };
        }
        received.push(ReceivedSignal { signal, forwarded });
    }
}

/// Keeps at most this many received signals for the trace (a signal storm must not grow
/// memory without bound).
const MAX_SIGNALS_KEPT: usize = 64;

fn supervise(
    pid: libc::pid_t,
    inherited: &InheritedSignals,
    received: &mut Vec<ReceivedSignal>,
) -> (ChildEnd, Usage) {
    let set = watched_set();
    loop {
        if let Some(done) = try_reap(pid) {
            return done;
        }
        // SAFETY: waiting for a blocked signal with a valid set and info buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let signal = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if signal < 0 || signal == libc::SIGCHLD {
            continue;
        }
        // SAFETY: si_pid is valid for the codes that carry a sender.
        let sender = unsafe { info.si_pid() };
        let forwarded = should_forward(signal, info.si_code, sender, &inherited.ignored);
        if forwarded {
            // SAFETY: signalling our own child; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, signal) };
        }
        if received.len() < MAX_SIGNALS_KEPT {
            received.push(ReceivedSignal { signal, forwarded });
        }
    }
}

/// The forwarding rule from the module docs, as a pure function.
pub fn should_forward(signal: i32, code: i32, sender: libc::pid_t, ignored: &[i32]) -> bool {
    if ignored.contains(&signal) {
        return false;
    }
    // Only the terminal's signals reach the whole foreground group; other kernel-sent ones
    // (an alarm timer the hook inherited and the child did not) are ours alone.
    let from_terminal = matches!(
        signal,
        libc::SIGINT | libc::SIGQUIT | libc::SIGHUP | libc::SIGWINCH
    );
    if code == libc::SI_KERNEL && from_terminal {
        return false;
    }
    let sent_by_process = code == libc::SI_USER || code == libc::SI_QUEUE || code == libc::SI_TKILL;
    !(sent_by_process && sender == 1)
}

fn try_reap(pid: libc::pid_t) -> Option<(ChildEnd, Usage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    if rc != pid {
        if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // Someone else reaped it: its status is unknown, and an unknown end must not
            // commit the hook's changes.
            return Some((ChildEnd::Exited(1), Usage::zero()));
        }
        return None;
    }
    let end = if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else if libc::WIFEXITED(status) {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    } else {
        return None;
    };
    let timeval = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some((
        end,
        Usage {
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
            max_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
        },
    ))
}

impl Usage {
    fn zero() -> Usage {
        Usage {
            user: Duration::ZERO,
            system: Duration::ZERO,
            max_rss_bytes: 0,
        }
    }
}

/// Replaces this process with the target (pass-through modes). Returns only on failure.
pub fn exec(program: &Path, argv0: &OsString, inherited: &InheritedSignals) -> std::io::Error {
    let state = inherited.for_child();
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

/// Ends this process the way the child ended: same exit code, or death by the same signal
/// (without a core dump of ours). Falls back to 128+N only if re-raising fails.
pub fn mirror(end: ChildEnd) -> i32 {
    match end {
        ChildEnd::Exited(code) => code,
        ChildEnd::Signaled(signal) => {
            // SAFETY: resetting our own signal state right before dying of it.
            unsafe {
                if dumps_core(signal) {
                    let none = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    // Pipe core handlers (apport, systemd-coredump) ignore RLIMIT_CORE.
                    libc::prctl(libc::PR_SET_DUMPABLE, 0);
                }
                libc::signal(signal, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(signal);
            }
            128 + signal
        }
    }
}

fn dumps_core(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGQUIT
            | libc::SIGILL
            | libc::SIGTRAP
            | libc::SIGABRT
            | libc::SIGBUS
            | libc::SIGFPE
            | libc::SIGSEGV
            | libc::SIGSYS
            | libc::SIGXCPU
            | libc::SIGXFSZ
    )
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
    fn terminal_signals_are_not_forwarded() {
        assert!(!should_forward(libc::SIGINT, libc::SI_KERNEL, 0, &[]));
        assert!(!should_forward(libc::SIGWINCH, libc::SI_KERNEL, 0, &[]));
    }

    #[test]
    fn a_kernel_alarm_is_forwarded() {
        assert!(should_forward(libc::SIGALRM, libc::SI_KERNEL, 0, &[]));
    }

    #[test]
    fn signals_from_init_are_not_forwarded() {
        assert!(!should_forward(libc::SIGTERM, libc::SI_USER, 1, &[]));
    }

    #[test]
    fn signals_sent_to_us_by_a_process_are_forwarded() {
        assert!(should_forward(libc::SIGTERM, libc::SI_USER, 4242, &[]));
        assert!(should_forward(libc::SIGUSR1, libc::SI_QUEUE, 4242, &[]));
        assert!(should_forward(libc::SIGHUP, libc::SI_TKILL, 4242, &[]));
    }

    #[test]
    fn inherited_ignored_signals_are_not_forwarded() {
        assert!(!should_forward(
            libc::SIGINT,
            libc::SI_USER,
            4242,
            &[libc::SIGINT]
        ));
    }

    #[test]
    fn signal_names_are_the_conventional_ones() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(200), "SIG200");
    }

    #[test]
    fn exit_codes_mirror_as_themselves() {
        for code in 0..=255 {
            assert_eq!(mirror(ChildEnd::Exited(code)), code);
        }
    }

    #[test]
    fn core_dumping_signals_are_known() {
        assert!(dumps_core(libc::SIGSEGV));
        assert!(dumps_core(libc::SIGABRT));
        assert!(!dumps_core(libc::SIGTERM));
        assert!(!dumps_core(libc::SIGKILL));
    }
}
