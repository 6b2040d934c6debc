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
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
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
}
