//! Starting a child that cannot outlive its parent, and the rule for passing signals on to it.
//!
//! Both binaries put a process between a caller and the program it meant to run: `dispatch`
//! between Juju and the charm, the shim between the charm and the real hook tool. A signal the
//! caller sends to the process it started (`kill`, Python's `Popen.terminate()`, a subprocess
//! timeout) reaches us, not the program, so we pass it on; SIGKILL cannot be caught, so the
//! child gets PR_SET_PDEATHSIG=SIGKILL and dies with us, as it would have died bare.
//!
//! Forwarding rule, because a signal the child already received must not arrive twice:
//! - `SI_KERNEL` signals from the terminal (Ctrl-C, Ctrl-\, hang-ups in `juju debug-hooks`)
//!   are not forwarded: the kernel sent them to the whole foreground process group, child
//!   included (we never call `setpgid`).
//! - Signals sent by PID 1 are not forwarded: that is systemd stopping the agent's cgroup, or
//!   Pebble stopping the agent's process group on Kubernetes; both signal every process.
//! - Signals the caller gave us as ignored are not forwarded: the child ignores them too.
//! - Anything else sent to us alone is forwarded once.
//!
//! Both also end the same way: as the child ended (its exit code, or death by its signal,
//! README *Signals*), and a program that cannot be started at all ends as a shell ends a
//! command it cannot run. The loop that waits for the child while forwarding, and those
//! endings, live here once; what differs between the two binaries is a parameter.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

/// Signals forwarded to the child (subject to the rule above). Job-control signals are left
/// at their defaults so Ctrl-Z stops parent and child together, as it would stop the child.
pub const FORWARDED: &[c_int] = &[
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

/// The forwarded signals and SIGCHLD: what a parent blocks and waits for with `sigwaitinfo`.
pub fn watched_set() -> libc::sigset_t {
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

/// Blocks the watched signals in this thread; returns the mask that was in force before,
/// which is the one the child must start with.
pub fn block_watched() -> libc::sigset_t {
    // SAFETY: adjusting our own mask with valid sets.
    unsafe {
        let set = watched_set();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut before);
        before
    }
}

/// The forwarding rule from the module docs, as a pure function.
pub fn should_forward(signal: c_int, code: c_int, sender: libc::pid_t, ignored: &[c_int]) -> bool {
    if ignored.contains(&signal) {
        return false;
    }
    // Only the terminal's signals reach the whole foreground group; other kernel-sent ones
    // (an alarm timer the caller set and the child did not) are ours alone.
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

/// What the child does between clone and exec. Everything is prepared by the parent: the
/// child shares its memory and must not allocate.
pub struct Exec<'a> {
    pub program: &'a CStr,
    /// NULL-terminated.
    pub argv: *const *const c_char,
    /// NULL-terminated.
    pub envp: *const *const c_char,
    /// The signal mask the child starts with (the one our caller gave us).
    pub mask: libc::sigset_t,
    /// Dispositions to put back, for signals we changed only for ourselves.
    pub dispositions: &'a [(c_int, libc::sighandler_t)],
    /// Signals that arrived for the child before it existed. It sends them to itself right
    /// before exec, so one that would have killed it kills it before it runs a single
    /// instruction of its own: a quick child cannot outrun a signal sent before it started.
    pub raise: &'a [c_int],
    /// A descriptor to give the child as its stderr (`stderr_tail`'s pipe), or `None` to
    /// leave fd 2 as it is.
    pub stderr: Option<c_int>,
}

struct Shared<'a, 'b> {
    exec: &'a Exec<'b>,
    parent: libc::pid_t,
    /// Written by the child if it cannot exec.
    errno: c_int,
}

const CHILD_STACK: usize = 64 * 1024;

/// Starts the child like glibc's posix_spawn does (CLONE_VM | CLONE_VFORK: no page tables
/// copied, we resume once it has exec'd), but with PR_SET_PDEATHSIG armed in between, which
/// posix_spawn cannot do. Uses `execve`: no PATH search and no /bin/sh fallback. Returns the
/// pid, or the errno of whatever failed.
///
/// PR_SET_PDEATHSIG fires when the calling *thread* ends: call this from a thread that lives
/// until the child has been reaped.
pub fn spawn(exec: &Exec) -> Result<libc::pid_t, c_int> {
    let mut shared = Shared {
        exec,
        parent: std::process::id() as libc::pid_t,
        errno: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack grows down from its (16-aligned) end; `shared`, what it points to and
    // the stack outlive the child's use of them because CLONE_VFORK suspends us until it has
    // exec'd or exited. The child only makes async-signal-safe calls.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared).cast(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EAGAIN));
    }
    // SAFETY: the child is done with `shared` (exec'd or exited); volatile because it wrote it.
    let errno = unsafe { std::ptr::read_volatile(&shared.errno) };
    if errno != 0 {
        // It exited (127) without exec'ing: reap it and report why.
        let mut status = 0;
        // SAFETY: reaping our own child (wait4, as `wait_forwarding` does: one wait function
        // linked into the shim, not two).
        unsafe { libc::wait4(pid, &mut status, 0, std::ptr::null_mut()) };
        return Err(errno);
    }
    Ok(pid)
}

extern "C" fn child_main(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the Shared the parent keeps alive while we run (CLONE_VFORK).
    unsafe {
        let shared = &mut *(arg as *mut Shared);
        let exec = shared.exec;
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            shared.errno = (*libc::__errno_location()).max(1);
            libc::_exit(127);
        }
        if libc::getppid() != shared.parent {
            // The parent died before the death signal was armed.
            libc::_exit(1);
        }
        for &(signal, handler) in exec.dispositions {
            if handler != libc::SIG_ERR {
                libc::signal(signal, handler);
            }
        }
        if let Some(fd) = exec.stderr {
            if libc::dup2(fd, 2) < 0 {
                shared.errno = (*libc::__errno_location()).max(1);
                libc::_exit(127);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &exec.mask, std::ptr::null_mut());
        // Raw syscalls: libc's raise() would use the parent's thread id, which lives in the
        // memory we share. A signal the mask blocks stays pending through exec, as it would
        // have for the child bare.
        let me = libc::syscall(libc::SYS_getpid);
        for &signal in exec.raise {
            libc::syscall(libc::SYS_kill, me, signal);
        }
        libc::execve(exec.program.as_ptr(), exec.argv, exec.envp);
        shared.errno = (*libc::__errno_location()).max(1);
        libc::_exit(127)
    }
}

/// How a child ended; also how our own process ends, since it ends the way its child did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(c_int),
    Signaled(c_int),
}

impl ChildEnd {
    /// Whether the child failed: a non-zero exit, or death by a signal.
    pub fn failed(self) -> bool {
        !matches!(self, ChildEnd::Exited(0))
    }

    /// The end a wait status reports. Only ends are reported to a wait without WUNTRACED or
    /// WCONTINUED (ours), so a status that is not a death by signal is an exit.
    pub fn from_wait_status(status: c_int) -> ChildEnd {
        if libc::WIFSIGNALED(status) {
            ChildEnd::Signaled(libc::WTERMSIG(status))
        } else {
            ChildEnd::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// Waits for our child `pid` to end, passing on each watched signal we receive that the
/// forwarding rule (module docs) says is meant for it; `ignored` are the signals our caller
/// gave us as ignored. `received(signal, forwarded)` hears of every signal, in order. The
/// watched signals must be blocked in every thread (`block_watched` before any thread
/// exists), or a SIGCHLD could go to a thread that discards it.
///
/// Returns the child's end and resource usage. A child someone else reaped (its status
/// unknown) ends as `Exited(1)` with no usage: an unknown end must not pass for a success.
pub fn wait_forwarding(
    pid: libc::pid_t,
    ignored: &[c_int],
    mut received: impl FnMut(c_int, bool),
) -> (ChildEnd, libc::rusage) {
    let watched = watched_set();
    loop {
        let mut status: c_int = 0;
        // SAFETY: rusage is plain data, zero is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a non-blocking wait for our own child with valid out-pointers.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            return (ChildEnd::from_wait_status(status), usage);
        } else if rc == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: as above.
            return (ChildEnd::Exited(1), unsafe { std::mem::zeroed() });
        }
        // SAFETY: siginfo is plain data; waiting for a blocked signal with valid pointers.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let signal = unsafe { libc::sigwaitinfo(&watched, &mut info) };
        if signal <= 0 || signal == libc::SIGCHLD {
            continue;
        }
        // SAFETY: si_pid is valid for the codes that carry a sender.
        let sender = unsafe { info.si_pid() };
        let forwarded = should_forward(signal, info.si_code, sender, ignored);
        if forwarded {
            // SAFETY: signalling our own child; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, signal) };
        }
        received(signal, forwarded);
    }
}

/// Ends this process as `end` says, for `main` to call last: returns the exit code for `main`
/// to return, or dies of the signal, without a core dump of its own (the child made its own).
/// Returns 128+N, as a shell would report the death, only if the signal did not kill us.
pub fn end_as(end: ChildEnd) -> c_int {
    let signal = match end {
        ChildEnd::Exited(code) => return code,
        ChildEnd::Signaled(signal) => signal,
    };
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

fn dumps_core(signal: c_int) -> bool {
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

/// The exit code for a program that could not be executed, as a shell gives it (README *What
/// runs*): 127 when nothing is at its path, 126 when something is but cannot be run, or when
/// the failure has no errno to tell (a path with a NUL byte).
pub fn exec_failure_code(errno: Option<c_int>) -> c_int {
    match errno {
        Some(libc::ENOENT | libc::ENOTDIR) => 127,
        _ => 126,
    }
}

/// Whether starting a program failed because of the program (its path, its permissions, its
/// format: `exec_failure_code` says how to end), rather than for want of something of ours
/// (memory, processes, descriptors), which another way of running it may not lack.
pub fn program_at_fault(errno: c_int) -> bool {
    matches!(
        errno,
        libc::ENOENT
            | libc::ENOTDIR
            | libc::EACCES
            | libc::ENOEXEC
            | libc::EPERM
            | libc::EISDIR
            | libc::ETXTBSY
            | libc::ELOOP
            | libc::ENAMETOOLONG
    )
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
    fn exit_codes_end_as_themselves() {
        for code in 0..=255 {
            assert_eq!(end_as(ChildEnd::Exited(code)), code);
        }
    }

    #[test]
    fn core_dumping_signals_are_known() {
        assert!(dumps_core(libc::SIGSEGV));
        assert!(dumps_core(libc::SIGABRT));
        assert!(!dumps_core(libc::SIGTERM));
        assert!(!dumps_core(libc::SIGKILL));
    }

    #[test]
    fn wait_statuses_tell_an_exit_from_a_death_by_signal() {
        // Linux's encoding: exit code in the second byte, terminating signal in the low 7
        // bits (0x80: it dumped core).
        assert_eq!(ChildEnd::from_wait_status(0), ChildEnd::Exited(0));
        assert_eq!(ChildEnd::from_wait_status(3 << 8), ChildEnd::Exited(3));
        assert_eq!(ChildEnd::from_wait_status(255 << 8), ChildEnd::Exited(255));
        assert_eq!(
            ChildEnd::from_wait_status(libc::SIGTERM),
            ChildEnd::Signaled(libc::SIGTERM)
        );
        assert_eq!(
            ChildEnd::from_wait_status(libc::SIGSEGV | 0x80),
            ChildEnd::Signaled(libc::SIGSEGV)
        );
    }

    #[test]
    fn a_program_that_is_not_there_exits_127_and_one_that_cannot_run_126() {
        assert_eq!(exec_failure_code(Some(libc::ENOENT)), 127);
        assert_eq!(exec_failure_code(Some(libc::ENOTDIR)), 127);
        assert_eq!(exec_failure_code(None), 126);
        for errno in [
            libc::EACCES,
            libc::ENOEXEC,
            libc::EPERM,
            libc::EISDIR,
            libc::ETXTBSY,
            libc::ELOOP,
            libc::ENAMETOOLONG,
            libc::ENOMEM,
            libc::E2BIG,
        ] {
            assert_eq!(exec_failure_code(Some(errno)), 126, "errno {errno}");
        }
    }

    #[test]
    fn running_out_of_memory_or_processes_is_not_the_programs_fault() {
        for errno in [libc::ENOENT, libc::EACCES, libc::ENOEXEC, libc::ETXTBSY] {
            assert!(program_at_fault(errno), "errno {errno}");
        }
        for errno in [
            libc::ENOMEM,
            libc::EAGAIN,
            libc::EMFILE,
            libc::ENFILE,
            libc::E2BIG,
        ] {
            assert!(!program_at_fault(errno), "errno {errno}");
        }
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
}
