//! `dispatch-shim`: stands in for one Juju hook tool during a traced dispatch.
//!
//! The wrapper puts a directory of symlinks named after the hook tools (`relation-get`, ...)
//! in front of the charm's PATH, all pointing here. Like Juju's own `jujuc`, the shim learns
//! which tool it is from the basename of argv[0]. It runs the real tool by absolute path from
//! `DISPATCH_TRACE_TOOLS` (recorded by the wrapper before PATH changed, so never a PATH lookup
//! that could find the shim again) with the very same argv, environment, cwd and file
//! descriptors, waits, reports one record to the wrapper, and ends exactly as the tool did.
//!
//! It runs on every hook-tool call, so it skips std's runtime start-up (`no_main`), spawns the
//! way `posix_spawn` does (vfork-fast, `dispatch_shim::child`), and touches nothing but the
//! record channel. A charm that kills the call it started (a timeout, `terminate()`) reaches
//! the shim, not the tool: the shim passes catchable signals on, and the tool dies with the
//! shim on SIGKILL, so no tool outlives a call the charm gave up on. Reporting is best
//! effort: no reader (a daemon calling after its dispatch ended) or a full channel never delays
//! the call by more than a few milliseconds and never changes its outcome.
#![no_main]

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

use dispatch_shim::child::{self, ChildEnd};
use dispatch_shim::{
    is_hook_tool, summarize_args, uncaught_exception, CallEnd, Record, ENV_CHANNEL, ENV_DEPTH,
    ENV_EXCEPTIONS, ENV_LOG_TEXT, ENV_NONCE, ENV_TOOLS_DIR, EXCEPTION_SUFFIX, MAX_DEPTH,
};

extern "C" {
    static environ: *const *const c_char;
}

/// How long a shim keeps retrying a full channel before it counts the record as dropped.
const FULL_CHANNEL_PATIENCE_NANOS: u64 = 5_000_000;

#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: the C runtime hands us argc valid, NUL-terminated strings.
    let args: Vec<&[u8]> = (0..argc.max(0) as usize)
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes())
        .collect();
    let end = run(&args, argv).unwrap_or_else(|message| {
        eprint_line(&message);
        ChildEnd::Exited(CANNOT_RUN)
    });
    child::end_as(end)
}

/// How a call ends when the shim cannot run the real tool, whatever the reason (even one it
/// found but cannot execute). The charm found this tool by a PATH search, and Ubuntu's
/// /bin/sh (dash) ends a command its PATH search cannot run with 127: so would the call bare.
const CANNOT_RUN: c_int = 127;

/// Runs the tool and reports the call: the tool's end, or why it could not be run.
fn run(args: &[&[u8]], argv: *const *const c_char) -> Result<ChildEnd, String> {
    let argv0 = args.first().copied().unwrap_or_default();
    let tool_bytes = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let tool = std::str::from_utf8(tool_bytes).unwrap_or_default();
    if tool == dispatch_shim::relay::RELAY_NAME {
        return Ok(ChildEnd::Exited(dispatch_shim::relay::run(args)));
    }
    if !is_hook_tool(tool) {
        return Err(format!(
            "dispatch-shim: run as {:?}, which is not a Juju hook tool; the shim is only meant to \
             be reached through the hook-tool symlinks `dispatch` creates",
            String::from_utf8_lossy(tool_bytes)
        ));
    }
    let depth: u32 = env_str(ENV_DEPTH).and_then(|d| d.parse().ok()).unwrap_or(0);
    if depth >= MAX_DEPTH {
        return Err(format!(
            "dispatch-shim: {tool}: the hook-tool shims are calling themselves ({ENV_DEPTH}={depth}); \
             check {ENV_TOOLS_DIR}"
        ));
    }
    let real_tool = real_tool_path(tool)?;
    let envp = child_environment(depth + 1);

    // An inherited SIG_IGN for SIGCHLD would let the kernel reap the tool before we read its
    // exit status. The tool gets the default disposition too (hook tools set their own).
    // SAFETY: changing our own disposition before any child exists.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // Signals the charm sends to the call it started (a timeout, `terminate()`) are waited
    // for and passed on to the tool; the tool starts with the charm's mask.
    let mask = child::block_watched();
    let start = unix_nanos();
    let spawned = child::spawn(&child::Exec {
        program: &real_tool,
        argv,
        envp: envp.0.as_ptr(),
        mask,
        dispositions: &[],
        raise: &[],
        stderr: None,
    });
    // The tool has inherited the caller's SIGPIPE disposition; from here on a reader that
    // goes away mid-write (the dispatch ending) must cost us an EPIPE, not our life.
    // SAFETY: changing our own disposition; `child::end_as` resets it before re-raising.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (end, pid) = match spawned {
        // Signals the charm gave us as ignored are forwarded too: the tool inherited them
        // as ignored, so one reaches only a tool that chose to catch it, as it would bare.
        Ok(pid) => match child::wait_forwarding(pid, &[], |_, _| {}).0 {
            ChildEnd::Exited(code) => (CallEnd::Exited(code), pid),
            ChildEnd::Signaled(signal) => (CallEnd::Signaled(signal), pid),
        },
        Err(errno) => (CallEnd::SpawnFailed(errno), 0),
    };
    let finish = unix_nanos();

    report(tool, &args[1..], start, finish, end, pid);

    match end {
        CallEnd::Exited(code) => Ok(ChildEnd::Exited(code)),
        CallEnd::Signaled(signal) => Ok(ChildEnd::Signaled(signal)),
        CallEnd::SpawnFailed(errno) => Err(format!(
            "dispatch-shim: cannot run {}: {}",
            real_tool.to_string_lossy(),
            std::io::Error::from_raw_os_error(errno)
        )),
    }
}

fn env_str(name: &str) -> Option<String> {
    std::env::var_os(name).and_then(|v| v.into_string().ok())
}

/// The real tool: `$DISPATCH_TRACE_TOOLS/<tool>`. Without that variable (someone ran a shim
/// outside a dispatch) the first PATH entry whose tool is not a shim, found by comparing real
/// paths with our own.
fn real_tool_path(tool: &str) -> Result<CString, String> {
    if let Some(dir) = std::env::var_os(ENV_TOOLS_DIR).filter(|d| !d.is_empty()) {
        let path = std::path::Path::new(&dir).join(tool);
        return path_to_cstring(&path);
    }
    let me = std::env::current_exe().ok();
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(tool);
        let Ok(real) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        if Some(&real) != me.as_ref() {
            return path_to_cstring(&candidate);
        }
    }
    Err(format!(
        "dispatch-shim: {tool}: no real hook tool found ({ENV_TOOLS_DIR} is not set and PATH has \
         only shims)"
    ))
}

fn path_to_cstring(path: &std::path::Path) -> Result<CString, String> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| "dispatch-shim: NUL in path".into())
}

/// Our own environment with the recursion counter set; the pointers stay valid because the
/// environment is not modified while they are used.
fn child_environment(depth: u32) -> (Vec<*const c_char>, CString) {
    let depth_var = CString::new(format!("{ENV_DEPTH}={depth}")).unwrap_or_default();
    let prefix = format!("{ENV_DEPTH}=");
    let mut pointers = Vec::with_capacity(64);
    // SAFETY: `environ` is a NULL-terminated array of valid C strings.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            if !CStr::from_ptr(*entry)
                .to_bytes()
                .starts_with(prefix.as_bytes())
            {
                pointers.push(*entry);
            }
            entry = entry.add(1);
        }
    }
    pointers.push(depth_var.as_ptr());
    pointers.push(std::ptr::null());
    (pointers, depth_var)
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn report(tool: &str, args: &[&[u8]], start: u64, finish: u64, end: CallEnd, pid: libc::pid_t) {
    let (Some(channel), Some(nonce)) = (std::env::var_os(ENV_CHANNEL), env_str(ENV_NONCE)) else {
        return;
    };
    let keep_text = env_str(ENV_LOG_TEXT).as_deref() == Some("1");
    let summary = summarize_args(tool, args, keep_text);
    let exception = uncaught_exception(tool, &summary)
        .filter(|_| env_str(ENV_EXCEPTIONS).as_deref() == Some("1"));
    let record = Record {
        nonce,
        tool: tool.to_string(),
        pid: pid as u32,
        start_unix_nanos: start,
        end_unix_nanos: finish,
        end,
        traceparent: env_str("TRACEPARENT").unwrap_or_default(),
        log_level: summary.log_level,
        log_length: summary.log_length,
        log_text: summary.log_text,
        arg_count: args.len(),
        args: summary.args,
    };
    let line = record.encode();
    let Ok(channel) = path_to_cstring(std::path::Path::new(&channel)) else {
        return;
    };
    if let Some(message) = exception {
        keep_exception(&channel, &record.nonce, &message, pid);
    }
    // SAFETY: plain open/write/close of a path we own the string of.
    let fd = unsafe {
        libc::open(
            channel.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        // ENXIO: no reader, the dispatch that started us is over. Anything else: not our
        // problem to report from inside a tool call.
        return;
    }
    let mut waited = 0u64;
    loop {
        // SAFETY: writing our own buffer to our own descriptor.
        let written = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if written >= 0 {
            break;
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        if errno == Some(libc::EINTR) {
            continue;
        }
        if errno == Some(libc::EPIPE) {
            // The reader went away: the dispatch is over, as with ENXIO at open.
            break;
        }
        if errno != Some(libc::EAGAIN) || waited >= FULL_CHANNEL_PATIENCE_NANOS {
            count_drop(&channel, &record.nonce);
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
        waited += 200_000;
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
}

/// A record that could not be delivered is counted in `<channel>.dropped` (one nonce per
/// line) so the wrapper can report the loss on the root span.
fn count_drop(channel: &CStr, nonce: &str) {
    let mut path = channel.to_bytes().to_vec();
    path.extend_from_slice(b".dropped");
    let Ok(path) = CString::new(path) else {
        return;
    };
    let line = format!("{nonce}\n");
    // SAFETY: open/write/close on a path and buffer we own.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600,
        );
        if fd >= 0 {
            libc::write(fd, line.as_ptr().cast(), line.len());
            libc::close(fd);
        }
    }
}

/// Leaves the message of an uncaught exception beside the channel (`<channel>.exception`,
/// replaced whole by a rename, so the wrapper never reads half of one), for the wrapper to put
/// on the `charm` span if the charm fails. The directory is the wrapper's private state dir.
fn keep_exception(channel: &CStr, nonce: &str, message: &[u8], pid: libc::pid_t) {
    let mut path = channel.to_bytes().to_vec();
    path.extend_from_slice(EXCEPTION_SUFFIX.as_bytes());
    let mut temporary = path.clone();
    temporary.extend_from_slice(format!(".{pid}").as_bytes());
    let (Ok(path), Ok(temporary)) = (CString::new(path), CString::new(temporary)) else {
        return;
    };
    let mut contents = Vec::with_capacity(nonce.len() + 1 + message.len());
    contents.extend_from_slice(nonce.as_bytes());
    contents.push(b'\n');
    contents.extend_from_slice(message);
    // SAFETY: open/write/close/rename on paths and a buffer we own.
    unsafe {
        let fd = libc::open(
            temporary.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600,
        );
        if fd < 0 {
            return;
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        libc::close(fd);
        if written == contents.len() as isize {
            libc::rename(temporary.as_ptr(), path.as_ptr());
        } else {
            libc::unlink(temporary.as_ptr());
        }
    }
}

fn eprint_line(message: &str) {
    let line = format!("{message}\n");
    // SAFETY: a single write of our own buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
