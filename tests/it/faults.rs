//! The fault matrix (README, *Guarantees*): whatever goes wrong on our side, the hook ends exactly
//! as it would without us, within the budget, and the trace is kept, shipped, or lost only
//! where nothing at all could be written.
//!
//! Each case runs the fault against the bare charm (`dispatch.orig`, same environment, same
//! fault) and against our dispatch, and asserts:
//! - the hook's end: exit status (or death by the same signal), stdout byte for byte, and the
//!   charm's own stderr byte for byte, with at most the one operator line of ours the quality
//!   bar allows (a problem the operator can act on), and none where there is nothing to act on;
//! - the wall time we add: within the budget in force (none without a destination, the export
//!   budget with one, the 5 s allowance of our own hook-tool calls where those are involved)
//!   plus `SLACK`, a generous bound for a loaded CI machine: these are not benchmarks;
//! - what became of the trace, read back with `dispatch traces` / `dispatch status`: stored,
//!   kept beside the store until a later dispatch can store it, shipped, or (documented) lost.
//!
//! A trace is told apart from others by its trace id, which the charm writes down from the
//! `TRACEPARENT` it was given (to `$OUT/tp`; `$OUT` is a scratch directory outside the charm
//! dir where the charm leaves its observations).
//!
//! Four more cases found bugs (a signal held during set-up outrun by a quick charm, a tool
//! killed by pid through its shim surviving, a store deleted mid-dispatch swallowing the
//! trace, a completed hook reported as killed when the disk is too full even for the finished
//! trace); they join this file with their fixes, as the unbounded channel drain's did.
//!
//! Pinned elsewhere, so not repeated here: a store locked by a long transaction
//! (`store.rs`, `a_store_locked_by_another_process_costs_a_short_bounded_wait_and_loses_no_trace`),
//! garbage in the WAL between dispatches (`store.rs`, `a_garbage_wal_beside_the_store_...`),
//! SIGKILL while the charm runs (`store.rs`, `a_wrapper_killed_with_sigkill_takes_its_charm_...`),
//! a trapped SIGTERM forwarded once (`supervision.rs`), a detached daemon
//! (`supervision.rs`, `the_wrapper_does_not_wait_for_daemons_the_charm_leaves_behind`), a daemon
//! calling hook tools after the dispatch (`hook_tools.rs`), a hanging or lingering hook tool of
//! our own (`relations.rs`), and a hanging, slow, refusing, 4xx and 5xx backend (`shipping.rs`).
//!
//! Root: tests may run as root, where `chmod 0555` stops nothing. The read-only directory case
//! then hands its scratch tree to `nobody` and runs the hooks (bare and traced alike) as
//! uid/gid 65534 (`Command::uid`/`gid`), the one way to make permissions bind without mounting
//! a read-only filesystem; as any other user it just chmods. A store path under a regular file
//! (ENOTDIR) and one in /proc (nothing can be created there) need no such trick.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util;
use crate::util::outcome::{
    assert_hook_unchanged, no_tweak, pair, timed, timed_to_files, Says, Timed, SLACK,
};
use crate::util::receiver::{Answer, Receiver};
use crate::util::{
    chmod, code, give_to_nobody, hex, is_dead, listing, otlp_spans, our_lines, out_dir, path_str,
    root, set_destination, span, spans_named, text, traces_unprivileged, unprivileged, wait_for,
    wait_until, with_suffix, Charm, Reaper, NOISY,
};

/// What all of our own hook-tool calls in one dispatch may take (README, *Relations*).
const OWN_CALLS: Duration = Duration::from_secs(5);

// ---- harness ---------------------------------------------------------------------------------

/// `CHARM_RUN` that first writes down the trace id it was given (nothing when bare).
fn noting_trace(run: &str) -> String {
    format!("echo \"${{TRACEPARENT:-}}\" > \"$OUT/tp\"\n{run}")
}

/// The trace id of the last traced run (from its `TRACEPARENT`).
fn last_trace_id(charm: &Charm) -> String {
    let tp = std::fs::read_to_string(out_dir(charm).join("tp")).unwrap();
    let id = tp.trim().split('-').nth(1).unwrap_or_default().to_string();
    assert_eq!(id.len(), 32, "no trace id in TRACEPARENT {tp:?}");
    id
}

fn traces_with_id(charm: &Charm, id: &str) -> Vec<Value> {
    charm
        .traces()
        .into_iter()
        .filter(|t| t["trace_id"] == id)
        .collect()
}

/// The stored trace of a dispatch, exactly once, as it really ran (not a started record
/// imported as interrupted).
fn stored_once(charm: &Charm, id: &str) -> Value {
    let found = traces_with_id(charm, id);
    assert_eq!(found.len(), 1, "trace {id} stored {} times", found.len());
    let trace = found.into_iter().next().unwrap();
    assert!(
        root(&trace)["attributes"]
            .get("dispatch.interrupted")
            .is_none(),
        "stored as interrupted: {trace:#}"
    );
    trace
}

fn inflight(charm: &Charm) -> Vec<String> {
    listing(&charm.path(".dispatch-trace.db.inflight"))
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Live processes running the fake hook tools for this charm.
fn tool_processes(charm: &Charm) -> Vec<i32> {
    let fake = std::fs::canonicalize(util::bin_dir().join("fake-jujuc")).unwrap();
    charm
        .processes()
        .into_iter()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == fake))
        .collect()
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling a process this test spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// How many times the trace `id` reached `receiver` in requests it answered 2xx: 1 when each
/// of its spans arrived exactly once (a big trace may travel in several requests), 0 when
/// none did, more for duplicates.
fn delivered(receiver: &Receiver, id: &str) -> usize {
    let mut seen: std::collections::BTreeMap<Vec<u8>, usize> = Default::default();
    for request in receiver.requests() {
        if !request.answered.is_some_and(|s| (200..300).contains(&s)) {
            continue;
        }
        for span in otlp_spans(&request.body) {
            if hex(&span.trace_id) == id {
                *seen.entry(span.span_id).or_default() += 1;
            }
        }
    }
    let times: std::collections::BTreeSet<usize> = seen.values().copied().collect();
    assert!(
        times.len() <= 1,
        "some spans of {id} arrived more often than others: {seen:?}"
    );
    times.into_iter().next().unwrap_or(0)
}

fn status(charm: &Charm) -> String {
    let out = charm.tool(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    text(&out.stdout)
}

fn flush_ok(charm: &Charm) {
    let out = charm.tool(&["flush"]);
    assert_eq!(code(&out), 0, "flush: {}", text(&out.stderr));
}

// ---- disk full -------------------------------------------------------------------------------

/// A file-size limit on the process (RLIMIT_FSIZE, soft only, so the charm can lift it for
/// itself), and optionally SIGXFSZ ignored, as the hook could inherit it.
fn limit_file_size(command: &mut Command, bytes: u64, ignore_sigxfsz: bool) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if ignore_sigxfsz {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
            Ok(())
        });
    }
}

/// Writes past the limit (the charm sees SIGXFSZ as the hook gave it: death by default,
/// EFBIG when ignored), then lifts the limit for itself and its tools and makes `calls`
/// hook-tool calls, so that only our own writes meet the limit.
fn over_the_limit_then(calls: usize) -> String {
    noting_trace(&format!(
        "head -c 200000 /dev/zero > \"$OUT/big\"; echo \"head: $?\"\n\
         ulimit -f unlimited\n\
         i=0; while [ $i -lt {calls} ]; do status-get > /dev/null; i=$((i + 1)); done"
    ))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_disk_full_while_persisting_keeps_the_trace_beside_the_store_until_there_is_room() {
    for ignore_sigxfsz in [false, true] {
        let charm = Charm::new("shell");
        let out = out_dir(&charm);
        assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
        // Room for what exists, not one WAL frame more: the new trace cannot be written. (A
        // new store starts with an empty WAL: a few dispatches make it the largest file.)
        let store = charm.store_file();
        let sizes = || ["", "-wal", "-shm"].map(|s| file_len(&with_suffix(&store, s)));
        for _ in 0..20 {
            let [db, wal, shm] = sizes();
            if wal >= db.max(shm) {
                break;
            }
            assert_eq!(code(&charm.dispatch("hooks/update-status", &[])), 0);
        }
        let sizes = sizes();
        assert!(
            sizes[1] >= sizes[0].max(sizes[2]),
            "{sizes:?}: the WAL must be the end"
        );
        let stored_before = charm.traces().len();
        let limit = sizes[1] + 512;
        let run = over_the_limit_then(30);
        let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
        let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &|c| {
            limit_file_size(c, limit, ignore_sigxfsz)
        });
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::OneLine("trace"));
        // The charm saw the file-size signal as the hook handed it down.
        let expected = if ignore_sigxfsz {
            "head: 1\n"
        } else {
            "head: 153\n"
        };
        assert_eq!(text(&traced.out.stdout), expected);
        let id = last_trace_id(&charm);
        assert!(
            traces_with_id(&charm, &id).is_empty(),
            "the store took a trace past the file-size limit: the limit is too loose"
        );
        assert_eq!(
            inflight(&charm).len(),
            1,
            "the finished trace is kept beside the store"
        );

        // Room again: the next dispatch stores the kept trace, as it ran, once.
        let next = charm.dispatch("hooks/update-status", &[]);
        assert_eq!(code(&next), 0, "{}", text(&next.stderr));
        let kept = stored_once(&charm, &id);
        assert_eq!(spans_named(&kept, "status-get").len(), 30);
        assert_eq!(span(&kept, "charm")["attributes"]["process.exit.code"], 0);
        assert_eq!(charm.traces().len(), stored_before + 2);
        assert!(inflight(&charm).is_empty(), "{:?}", inflight(&charm));
    }
}

// ---- read-only and unusable store locations --------------------------------------------------

/// When the finished trace does not fit beside the store either, the started record written
/// before the charm ran must go too: left, the next dispatch would import it as "interrupted:
/// the wrapper was killed", priority failed, for a hook that ran to completion and exited 0.
/// The operator's one line says the trace is lost.
#[test]
fn a_disk_too_full_even_for_the_finished_trace_never_reports_a_completed_hook_as_killed() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    // A fresh charm and one page: the started record fits, the store and the trace do not.
    let run = over_the_limit_then(40);
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let (traced, bare) = pair(&charm, "hooks/install", &env, &|c| {
        limit_file_size(c, 4096, false)
    });
    assert_hook_unchanged(
        &traced,
        &bare,
        Duration::ZERO,
        Says::OneLine("trace is lost"),
    );
    assert_eq!(code(&traced.out), 0);
    let id = last_trace_id(&charm);

    let next = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    let found = traces_with_id(&charm, &id);
    assert!(found.len() <= 1, "{found:#?}");
    for trace in &found {
        assert!(
            root(trace)["attributes"]
                .get("dispatch.interrupted")
                .is_none()
                && trace["priority"] != "failed",
            "a hook that ran to completion (exit 0) is stored as a killed wrapper: {:#}",
            root(trace)
        );
    }
    assert!(inflight(&charm).is_empty(), "{:?}", inflight(&charm));
}

#[test]
fn a_store_in_a_read_only_directory_costs_at_most_the_trace_and_never_the_hook() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "store_path: ro/traces.db\n");
    std::fs::create_dir_all(charm.path("ro")).unwrap();
    give_to_nobody(&charm);
    let ro = charm.path("ro");
    let run = noting_trace("status-set active ready");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(NOISY.iter().copied())
        .collect();
    let ids_of = |traces: Vec<Value>| -> Vec<String> {
        traces
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect()
    };

    // 1. Nothing can be created there: the trace is lost, the operator hears it once.
    chmod(&ro, 0o555);
    let (traced, bare) = pair(&charm, "hooks/install", &env, &unprivileged);
    assert_hook_unchanged(
        &traced,
        &bare,
        Duration::ZERO,
        Says::OneLine("ro/traces.db"),
    );
    assert_eq!(listing(&ro), Vec::<String>::new(), "something was written");

    // 2. Writable again: the next dispatch is stored, and no phantom of the first one.
    chmod(&ro, 0o755);
    let (traced, bare) = pair(&charm, "hooks/start", &env, &unprivileged);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    let started = last_trace_id(&charm);
    assert_eq!(
        ids_of(traces_unprivileged(&charm)),
        std::slice::from_ref(&started)
    );

    // 3. The directory turns read-only under an existing store: -wal and -shm exist, so
    // SQLite needs nothing new and the dispatch is stored as usual.
    chmod(&ro, 0o555);
    let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &unprivileged);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    let changed = last_trace_id(&charm);
    assert_eq!(
        ids_of(traces_unprivileged(&charm)),
        [started.clone(), changed.clone()]
    );

    // 4. The store file itself read-only (directory writable): kept beside it until the
    // file is writable again, then stored once.
    chmod(&ro, 0o755);
    chmod(&ro.join("traces.db"), 0o400);
    let (traced, bare) = pair(&charm, "hooks/update-status", &env, &unprivileged);
    assert_hook_unchanged(
        &traced,
        &bare,
        Duration::ZERO,
        Says::OneLine("ro/traces.db"),
    );
    let kept = last_trace_id(&charm);
    assert_eq!(listing(&ro.join("traces.db.inflight")).len(), 1);
    chmod(&ro.join("traces.db"), 0o600);
    let (traced, bare) = pair(&charm, "hooks/stop", &env, &unprivileged);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    let stopped = last_trace_id(&charm);
    let traces = traces_unprivileged(&charm);
    assert_eq!(ids_of(traces.clone()), [started, changed, kept, stopped]);
    assert!(traces
        .iter()
        .all(|t| root(t)["attributes"].get("dispatch.interrupted").is_none()));
    assert_eq!(
        listing(&ro.join("traces.db.inflight")),
        Vec::<String>::new()
    );
}

#[test]
fn a_store_path_under_a_regular_file_or_in_proc_costs_the_trace_and_never_the_hook() {
    let charm = Charm::new("shell");
    charm.write("not-a-dir", "a file where a directory is expected\n");
    for store_path in ["not-a-dir/traces.db", "/proc/dispatch-trace/traces.db"] {
        charm.write("dispatch-trace.yaml", format!("store_path: {store_path}\n"));
        let (traced, bare) = pair(&charm, "hooks/install", NOISY, &no_tweak);
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::OneLine(store_path));
        // The same cause again: not repeated.
        let (traced, bare) = pair(&charm, "hooks/install", NOISY, &no_tweak);
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    }
    assert_eq!(
        std::fs::read_to_string(charm.path("not-a-dir")).unwrap(),
        "a file where a directory is expected\n"
    );
    // Back to the default store: stored, quietly, and nothing of the lost ones shows up.
    std::fs::remove_file(charm.path("dispatch-trace.yaml")).unwrap();
    let (traced, bare) = pair(&charm, "hooks/start", NOISY, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    let events: Vec<String> = charm
        .traces()
        .iter()
        .map(|t| t["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["start"]);
}

// ---- the store changed under a running dispatch ----------------------------------------------

/// A store deleted or replaced while the charm runs (an operator resetting it, a backup put
/// back): the wrapper opened the store as the charm started, and writing into that file would
/// lose the trace with it. The trace must be in the store the path names afterwards, once.
#[test]
fn a_store_deleted_or_replaced_while_the_charm_runs_still_gets_this_dispatchs_trace() {
    let cases = [
        ("deleted", "rm -f .dispatch-trace.db"),
        (
            "deleted with its -wal and -shm",
            "rm -f .dispatch-trace.db .dispatch-trace.db-wal .dispatch-trace.db-shm",
        ),
        (
            "replaced by a backup",
            "cp \"$OUT/backup.db\" .dispatch-trace.db.new && mv .dispatch-trace.db.new .dispatch-trace.db \
             && rm -f .dispatch-trace.db-wal .dispatch-trace.db-shm",
        ),
    ];
    let mut lost = Vec::new();
    for (what, op) in cases {
        let charm = Charm::new("shell");
        let out = out_dir(&charm);
        for _ in 0..2 {
            assert_eq!(code(&charm.dispatch("hooks/update-status", &[])), 0);
        }
        let backup = out.join("backup.db");
        rusqlite::Connection::open(charm.store_file())
            .unwrap()
            .execute("VACUUM INTO ?1", [path_str(&backup)])
            .unwrap();
        // The store is open (the reader thread opens it as the charm starts) when it goes.
        let run = noting_trace(&format!("sleep 0.3; {op}"));
        let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
        let env: Vec<(&str, &str)> = env.into_iter().chain(NOISY.iter().copied()).collect();
        let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &no_tweak);
        // SQLite may notice the file moved (a write fails "readonly"): one line then.
        let says = if our_lines(&traced.out.stderr).is_empty() {
            Says::Nothing
        } else {
            Says::OneLine(".dispatch-trace.db")
        };
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, says);
        let id = last_trace_id(&charm);
        let next = charm.dispatch("hooks/update-status", &[]);
        assert_eq!(code(&next), 0, "{what}: {}", text(&next.stderr));
        match traces_with_id(&charm, &id).len() {
            1 => {}
            n => lost.push(format!("{what}: stored {n} times")),
        }
        assert!(
            inflight(&charm).is_empty(),
            "{what}: {:?}",
            inflight(&charm)
        );
    }
    assert!(
        lost.is_empty(),
        "the trace of the dispatch that ran while the store was changed under it: {lost:?}"
    );
}

#[test]
fn a_wal_overwritten_while_the_store_is_open_never_changes_the_hook_and_the_trace_is_kept() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    for _ in 0..3 {
        let warm = charm.dispatch("hooks/update-status", &[("CHARM_TOOL_CALLS", "20")]);
        assert_eq!(code(&warm), 0);
    }
    let garbage = out.join("garbage");
    std::fs::write(
        &garbage,
        (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let run = noting_trace("sleep 0.3; cat \"$OUT/garbage\" > .dispatch-trace.db-wal");
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let env: Vec<(&str, &str)> = env.into_iter().chain(NOISY.iter().copied()).collect();
    let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &no_tweak);
    // Damage found only now may be moved aside (one line); nothing else is said.
    let lines = our_lines(&traced.out.stderr);
    let says = if lines.is_empty() {
        Says::Nothing
    } else {
        Says::OneLine("aside")
    };
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, says);
    let id = last_trace_id(&charm);
    stored_once(&charm, &id);
    let check: String = rusqlite::Connection::open(charm.store_file())
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

// ---- hostile arguments and environment -------------------------------------------------------

#[test]
fn huge_arguments_and_log_messages_pass_through_and_stay_bounded_in_the_trace() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    // 1 MiB of argv in 16 arguments (one argument may not exceed 128 KiB on Linux), a
    // 100 KiB log message, and one argument at the per-argument maximum.
    let run = noting_trace(
        "a=$(head -c 65536 /dev/zero | tr '\\0' a)\n\
         juju-log $a $a $a $a $a $a $a $a $a $a $a $a $a $a $a $a; echo \"1 MiB: $?\"\n\
         m=$(head -c 102400 /dev/zero | tr '\\0' m)\n\
         juju-log -l WARNING \"$m\"; echo \"100 KiB: $?\"\n\
         c=$(head -c 131000 /dev/zero | tr '\\0' c)\n\
         config-get \"$c\"; echo \"128 KiB: $?\"",
    );
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_EXIT", "4"),
    ];
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(
        text(&traced.out.stdout),
        "1 MiB: 0\n100 KiB: 0\n128 KiB: 0\n"
    );
    // The real tools got the very same arguments both times.
    let calls = charm.tool_calls();
    assert_eq!(calls.len(), 6);
    for (bare_call, traced_call) in calls[..3].iter().zip(&calls[3..]) {
        assert_eq!(bare_call["args"], traced_call["args"]);
    }
    assert_eq!(calls[3]["args"].as_array().unwrap().len(), 16);

    let trace = stored_once(&charm, &last_trace_id(&charm));
    let logs = spans_named(&trace, "juju-log");
    assert_eq!(logs.len(), 2);
    assert_eq!(
        logs[0]["attributes"]["juju.log.message_length"],
        16 * 65536 + 15
    );
    assert_eq!(logs[1]["attributes"]["juju.log.message_length"], 102_400);
    assert_eq!(logs[1]["attributes"]["juju.log.level"], "WARNING");
    for tool in spans_named(&trace, "juju-log")
        .into_iter()
        .chain(spans_named(&trace, "config-get"))
    {
        let args = tool["attributes"]["process.command_args"].to_string();
        assert!(
            args.len() < 4096,
            "unbounded arguments in the trace: {} bytes",
            args.len()
        );
    }
    // One dispatch, a few KiB: nothing of the megabyte reached the store.
    let payload: i64 = rusqlite::Connection::open(charm.store_file())
        .unwrap()
        .query_row("SELECT max(size) FROM chunk", [], |r| r.get(0))
        .unwrap();
    assert!(payload < 16 * 1024, "a {payload}-byte trace");
}

/// Bytes that are not UTF-8, in an argument, an environment variable's name and value, the
/// event name, the unit name and the tools directory's path.
#[test]
fn non_utf8_arguments_environment_and_paths_pass_through_and_the_trace_stays_readable() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    let odd_tools = charm
        .scratch
        .root
        .join(OsStr::from_bytes(b"tools-\xff\xfe"));
    std::fs::rename(&charm.tools, &odd_tools).unwrap();
    let mut path = odd_tools.clone().into_os_string();
    path.push(":/usr/local/bin:/usr/bin:/bin");
    // The environment as the charm's process received it (the shell itself drops names
    // that are not identifiers), one variable per line.
    let run = noting_trace(
        "tr '\\000' '\\n' < /proc/$$/environ | LC_ALL=C sort > \"$DUMP\"\n\
         config-get \"$WEIRD\"; echo \"config-get: $?\"\n\
         status-set active \"$WEIRD\"; juju-log \"$WEIRD\"\n\
         printf '%s\\n' \"$WEIRD\"",
    );
    let env_file = |name: &str| out.join(name);
    let odd = |c: &mut Command, dump: PathBuf| {
        c.env("PATH", &path)
            .env("WEIRD", OsStr::from_bytes(b"val\xff\xfeue"))
            .env(OsStr::from_bytes(b"K\xffEY"), "v")
            .env(
                "JUJU_DISPATCH_PATH",
                OsStr::from_bytes(b"hooks/db\xff-relation-changed"),
            )
            .env("JUJU_UNIT_NAME", OsStr::from_bytes(b"my\xffapp/0"))
            .env("DUMP", dump);
    };
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let mut bare = charm.command("dispatch.orig", "hooks/install", &env);
    odd(&mut bare, env_file("bare.env"));
    let bare = timed(bare);
    let mut traced = charm.command("dispatch", "hooks/install", &env);
    odd(&mut traced, env_file("traced.env"));
    let traced = timed(traced);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(code(&traced.out), 0);
    assert!(traced.out.stdout.ends_with(b"val\xff\xfeue\n"));

    // The charm's environment, byte for byte, but the documented additions.
    let dump = |name: &str| -> Vec<Vec<u8>> {
        std::fs::read(env_file(name))
            .unwrap()
            .split(|&b| b == b'\n')
            .filter(|l| {
                ![
                    &b"PATH="[..],
                    b"TRACEPARENT=",
                    b"DISPATCH_TRACE_",
                    b"OTEL_EXPORTER_OTLP_TRACES_",
                    b"DUMP=",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(<[u8]>::to_vec)
            .collect()
    };
    assert_eq!(dump("traced.env"), dump("bare.env"));
    assert!(dump("traced.env").contains(&b"K\xffEY=v".to_vec()));
    assert!(dump("traced.env").contains(&b"WEIRD=val\xff\xfeue".to_vec()));
    let calls = charm.tool_calls();
    assert_eq!(calls.len(), 6);
    for (bare_call, traced_call) in calls[..3].iter().zip(&calls[3..]) {
        assert_eq!(bare_call["args"], traced_call["args"]);
    }

    // Stored and readable in every format (lossy where text must be UTF-8).
    let trace = stored_once(&charm, &last_trace_id(&charm));
    assert_eq!(trace["event"], "db\u{fffd}-relation-changed");
    assert_eq!(trace["resource"]["juju_unit"], "my\u{fffd}app/0");
    let names: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config-get", "status-set", "juju-log"]);
    for format in ["tree", "otlp-json"] {
        let shown = charm.tool(&["traces", "--format", format]);
        assert_eq!(code(&shown), 0, "{format}: {}", text(&shown.stderr));
        assert!(std::str::from_utf8(&shown.stdout).is_ok(), "{format}");
    }
}

// ---- the hook-tool directory -----------------------------------------------------------------

#[test]
fn a_tools_dir_on_path_that_is_missing_or_not_a_directory_changes_nothing() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    let file = charm.scratch.path("a-file");
    std::fs::write(&file, "not a directory\n").unwrap();
    let dangling = charm.scratch.path("dangling");
    std::os::unix::fs::symlink(charm.scratch.path("nowhere"), &dangling).unwrap();
    let looping = charm.scratch.path("loop");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    let run = noting_trace("is-leader; echo \"is-leader: $?\"");
    for (what, entry) in [
        ("missing", charm.scratch.path("no-such-tools")),
        ("a regular file", file),
        ("a dangling symlink", dangling),
        ("a symlink loop", looping),
    ] {
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", entry.display());
        let env = [
            ("OUT", path_str(&out)),
            ("CHARM_RUN", run.as_str()),
            ("PATH", path.as_str()),
            ("CHARM_EXIT", "3"),
        ];
        let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
        assert_eq!(text(&traced.out.stdout), "is-leader: 127\n", "{what}");
        let trace = stored_once(&charm, &last_trace_id(&charm));
        assert_eq!(
            root(&trace)["attributes"]["dispatch.tool_calls"],
            0,
            "{what}"
        );
    }
}

/// The tools directory vanishing while the charm runs (never in Juju, but the shims were put
/// on PATH before): the call fails with the same exit code as bare. Its message differs: the
/// shell's "not found" bare, the shim's "cannot run" traced (a limit of PATH shims).
/// A tools directory the hook's user cannot read (search only) or cannot enter at all: the
/// calls work or fail exactly as bare. Run as `nobody`: root reads anything.
#[test]
fn a_tools_dir_the_hook_cannot_read_or_enter_changes_nothing() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    give_to_nobody(&charm);
    let run = noting_trace(
        "is-leader; echo \"is-leader: $?\"; status-set active; echo \"status-set: $?\"",
    );
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_EXIT", "3"),
    ];
    for (mode, works) in [(0o111, true), (0o000, false)] {
        chmod(&charm.tools, mode);
        let (traced, bare) = pair(&charm, "hooks/install", &env, &unprivileged);
        chmod(&charm.tools, 0o755);
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
        let expected = if works {
            "True\nis-leader: 0\nstatus-set: 0\n"
        } else {
            "is-leader: 127\nstatus-set: 127\n"
        };
        assert_eq!(text(&traced.out.stdout), expected, "mode {mode:o}");
        // Searchable: the calls are traced; not even that: there is nothing to call.
        let trace = traces_unprivileged(&charm).pop().unwrap();
        let calls = if works { 2 } else { 0 };
        assert_eq!(
            root(&trace)["attributes"]["dispatch.tool_calls"],
            calls,
            "mode {mode:o}"
        );
    }
}

#[test]
fn a_tools_dir_that_vanishes_while_the_charm_runs_fails_the_call_with_the_same_exit_code() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    let tools = charm.tools.clone();
    let hidden = charm.scratch.path("tools-hidden");
    let run = noting_trace(&format!(
        "mv '{}' '{}'\nis-leader 2> \"$OUT/is-leader.err\"; echo \"is-leader: $?\"\nmv '{}' '{}'",
        tools.display(),
        hidden.display(),
        hidden.display(),
        tools.display()
    ));
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(text(&traced.out.stdout), "is-leader: 127\n");
    let trace = stored_once(&charm, &last_trace_id(&charm));
    let call = span(&trace, "is-leader");
    assert_eq!(call["status"], "ERROR", "{call:#}");
}

/// A real hook tool that is there but cannot be executed (never in Juju, whose tools are links
/// to `jujud`): the charm's shell ends the call as if it found nothing, 127 (Ubuntu's /bin/sh,
/// dash; bash would say 126), so the shim does too, whatever it could not run.
#[test]
fn a_hook_tool_that_cannot_be_executed_fails_the_call_with_the_same_exit_code_as_bare() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    let tool = charm.tools.join("is-leader");
    std::fs::remove_file(&tool).unwrap();
    std::fs::write(&tool, "#!/bin/sh\necho True\n").unwrap();
    chmod(&tool, 0o644);
    let run = noting_trace("is-leader 2> /dev/null; echo \"is-leader: $?\"");
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(text(&traced.out.stdout), "is-leader: 127\n");
    let trace = stored_once(&charm, &last_trace_id(&charm));
    let call = span(&trace, "is-leader");
    assert_eq!(call["attributes"]["process.exit.code"], 127, "{call:#}");
}

// ---- a hook tool that hangs ------------------------------------------------------------------

#[test]
fn a_hanging_hook_tool_the_charm_times_out_ends_as_it_would_bare() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    std::fs::create_dir_all(charm.state.join("hang")).unwrap();
    std::fs::write(charm.state.join("hang/is-leader"), "").unwrap();
    let run = noting_trace("timeout 0.5 is-leader; echo \"timeout: $?\"");
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_EXIT", "2"),
    ];
    let (traced, bare) = pair(&charm, "hooks/update-status", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(text(&traced.out.stdout), "timeout: 124\n");
    assert_eq!(
        tool_processes(&charm),
        Vec::<i32>::new(),
        "a tool outlived its timeout"
    );
    let trace = stored_once(&charm, &last_trace_id(&charm));
    assert_eq!(span(&trace, "charm")["attributes"]["process.exit.code"], 2);
}

// ---- the charm's stdio -----------------------------------------------------------------------

/// A hook tool the charm kills by pid (`kill`, Python's `Popen.terminate()` or `kill()`,
/// subprocess timeouts) dies bare. Traced, the signal reaches the shim: it must pass a
/// catchable one on, and take the tool with it on SIGKILL, or the real tool runs on with the
/// hook's stdout (a `relation-set` the charm gave up on could still happen).
#[test]
fn a_hanging_hook_tool_the_charm_kills_by_pid_is_gone_as_it_would_be_bare() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    std::fs::create_dir_all(charm.state.join("hang")).unwrap();
    std::fs::write(charm.state.join("hang/is-leader"), "").unwrap();
    let mut survivors = Vec::new();
    for sig in ["TERM", "KILL"] {
        // The shell's own "Terminated" notice depends on whether the job died before or
        // during `wait` (timing, not outcome): it goes to a file, the exit status to stdout.
        let run = noting_trace(&format!(
            "( is-leader > \"$OUT/tool.out\" 2>&1 & p=$!\n\
             sleep 0.3; kill -s {sig} $p; wait $p; echo \"is-leader: $?\" ) 2>> \"$OUT/shell.err\""
        ));
        let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
        let bare = timed(charm.command("dispatch.orig", "hooks/update-status", &env));
        // A killed process is gone once the kernel has reaped it: a moment, but not at once.
        let bare_gone = wait_until(SLACK, || tool_processes(&charm).is_empty());
        let bare_left = tool_processes(&charm);
        let traced = timed(charm.command("dispatch", "hooks/update-status", &env));
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
        assert!(bare_gone, "bare {sig}: the tool survived: {bare_left:?}");
        wait_until(SLACK, || tool_processes(&charm).is_empty());
        let left = tool_processes(&charm);
        if !left.is_empty() {
            survivors.push(format!("SIG{sig}: {left:?}"));
            for pid in left {
                // SAFETY: a fake tool this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    assert!(
        survivors.is_empty(),
        "the real hook tool outlived the call the charm killed: {survivors:?}"
    );
}

#[test]
fn a_charm_that_closes_or_redirects_its_stdio_ends_as_it_would_bare() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    for (config, redirect) in WITH_AND_WITHOUT_STDERR_TAIL.iter().flat_map(|config| {
        [
            "exec >&- 2>&-",
            "exec >/dev/null 2>&1",
            "exec 2>&1",
            "exec 1>&2",
            "exec <&-",
            "exec >&- 2>&- <&-",
        ]
        .map(|redirect| (config, redirect))
    }) {
        charm.write("dispatch-trace.yaml", config);
        let run = noting_trace(&format!(
            "{redirect}\nis-leader; status-set active; juju-log done; echo after; echo oops >&2"
        ));
        let env = [
            ("OUT", path_str(&out)),
            ("CHARM_STDOUT", "before\n"),
            ("CHARM_RUN", run.as_str()),
            ("CHARM_EXIT", "3"),
        ];
        let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &no_tweak);
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
        let trace = stored_once(&charm, &last_trace_id(&charm));
        let calls = root(&trace)["attributes"]["dispatch.tool_calls"].clone();
        assert_eq!(calls, 3, "{config}{redirect}: {trace:#}");
    }
}

/// The config of every case that concerns the hook's stdio, with and without the relay
/// `stderr_tail` puts between the charm and its stderr (README, *Why a hook failed*).
const WITH_AND_WITHOUT_STDERR_TAIL: [&str; 2] = ["", "stderr_tail: 4096\n"];

/// Juju's end of the hook's stdout and stderr gone (a broken pipe): the charm meets it as it
/// would bare, and our own operator line to a broken stderr does not kill us.
/// Juju could start a hook with some of fds 0-2 closed. The charm must find them closed as
/// bare; and nothing the wrapper opens may take their place: our one line written to "stderr"
/// would land in the lock file, a started record or the store.
#[test]
fn a_hook_started_with_stdio_closed_finds_it_closed_and_our_line_lands_in_no_file_of_ours() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    // A config problem, so that the wrapper has a line to write on every run.
    std::fs::write(charm.path("dispatch-trace.yaml"), "store_max_bytes: 1\n").unwrap();
    // Shell builtins only: a command substitution would itself open a pipe on a free fd 0-2.
    let listing = "open=; for n in 0 1 2; do [ -e /proc/$$/fd/$n ] && open=\"$open $n\"; done; \
                   echo \"open:$open\" >> \"$OUT/fds\"";
    let run = noting_trace(&format!("{listing}; is-leader; echo done"));
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    for closed in [&[0][..], &[1], &[2], &[0, 1, 2]] {
        let close = |command: &mut Command| {
            let closed = closed.to_vec();
            // SAFETY: only close(2), async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    for &fd in &closed {
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
        };
        let _ = std::fs::remove_file(out.join("fds"));
        let _ = std::fs::remove_file(charm.path(OPERATOR_MEMORY));
        let (traced, bare) = pair(&charm, "hooks/config-changed", &env, &close);
        let says = if closed.contains(&2) {
            Says::Nothing
        } else {
            Says::OneLine("store_max_bytes")
        };
        assert_hook_unchanged(&traced, &bare, Duration::ZERO, says);
        let seen = std::fs::read_to_string(out.join("fds")).unwrap();
        let (bare_fds, traced_fds) = seen.split_at(seen.len() / 2);
        assert_eq!(
            traced_fds, bare_fds,
            "closed {closed:?}: the charm's fds 0-2"
        );
        let trace = stored_once(&charm, &last_trace_id(&charm));
        assert_eq!(root(&trace)["attributes"]["dispatch.tool_calls"], 1);
        // Our files: the store and what lives beside it, and the state directory (but for
        // `last-warning`, which remembers the line on purpose).
        let ours = walkdir(&charm.path(".")).into_iter().filter(|path| {
            let relative = path.strip_prefix(charm.path(".")).unwrap();
            relative.to_string_lossy().starts_with(".dispatch-trace")
                && !path.ends_with(OPERATOR_MEMORY)
        });
        for entry in ours {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !bytes.windows(9).any(|w| w == b"dispatch:"),
                "closed {closed:?}: our stderr line was written into {}",
                entry.display()
            );
        }
    }
}

const OPERATOR_MEMORY: &str = ".dispatch-trace/last-warning";

/// Every regular file under `dir`, symlinks not followed.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

#[test]
fn a_hook_whose_stdout_and_stderr_are_broken_pipes_ends_as_it_would_bare() {
    for config in WITH_AND_WITHOUT_STDERR_TAIL {
        broken_pipes_end_as_bare(config);
    }
}

fn broken_pipes_end_as_bare(config: &str) {
    let charm = Charm::new("shell");
    // Earns an operator line (the key is unknown), or with the relay a note on the trace.
    charm.write(
        "dispatch-trace.yaml",
        if config.is_empty() {
            "no_such_key: 1\n"
        } else {
            config
        },
    );
    let broken = |c: &mut Command| {
        let (read_out, write_out) = nix::unistd::pipe().unwrap();
        let (read_err, write_err) = nix::unistd::pipe().unwrap();
        drop((read_out, read_err));
        c.stdout(Stdio::from(write_out))
            .stderr(Stdio::from(write_err));
    };
    for (env, expected) in [
        (&[("CHARM_EXIT", "3")][..], Some(3)),
        // Writing to the broken stdout: SIGPIPE, as the hook handed it down (default).
        (&[("CHARM_STDOUT", "hello\n")][..], None),
        // And to the broken stderr, relayed or not.
        (&[("CHARM_STDERR", "hello\n")][..], None),
    ] {
        let mut bare = charm.command("dispatch.orig", "hooks/install", env);
        broken(&mut bare);
        let bare = bare.status().unwrap();
        let mut traced = charm.command("dispatch", "hooks/install", env);
        broken(&mut traced);
        let traced = traced.status().unwrap();
        assert_eq!(traced.code(), expected, "{traced:?}");
        assert_eq!(
            (traced.code(), traced.signal()),
            (bare.code(), bare.signal()),
            "{env:?}"
        );
        if expected.is_none() {
            assert_eq!(traced.signal(), Some(libc::SIGPIPE), "{config}{env:?}");
        }
    }
    assert_eq!(charm.traces().len(), 3);
}

// ---- daemons the charm leaves behind ---------------------------------------------------------

#[test]
fn a_daemon_left_holding_the_hooks_stdio_and_our_record_channel_does_not_hold_the_dispatch() {
    for config in WITH_AND_WITHOUT_STDERR_TAIL {
        daemon_holding_stdio(config);
    }
}

fn daemon_holding_stdio(config: &str) {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", config);
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    let pid_file = out.join("grandchild.pid");
    // Two daemons: one holds the charm's stdout and stderr (CHARM_GRANDCHILD), the other
    // holds our record channel open for writing (or /dev/null, bare).
    let run = noting_trace(
        "sleep 1000 3>\"${DISPATCH_TRACE_CHANNEL:-/dev/null}\" < /dev/null > /dev/null 2>&1 &\n\
         echo $! > \"$OUT/holder.pid\"\n\
         is-leader > /dev/null",
    );
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_GRANDCHILD", path_str(&pid_file)),
        ("CHARM_STDOUT", "out\n"),
        ("CHARM_STDERR", "err\n"),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_EXIT", "5"),
    ];
    let bare = timed_to_files(
        charm.command("dispatch.orig", "hooks/start", &env),
        &out,
        "bare",
    );
    let traced = timed_to_files(
        charm.command("dispatch", "hooks/start", &env),
        &out,
        "traced",
    );
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    let holder = read_pid(&out.join("holder.pid"));
    assert!(
        !is_dead(holder) && !is_dead(read_pid(&pid_file)),
        "the daemons must live on"
    );
    let first = stored_once(&charm, &last_trace_id(&charm));
    assert_eq!(spans_named(&first, "is-leader").len(), 1);

    // The next dispatch, with the daemon still holding the channel, records its calls.
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", "is-leader; config-get"),
    ];
    let next = timed_to_files(
        charm.command("dispatch", "hooks/update-status", &env),
        &out,
        "next",
    );
    assert_eq!(code(&next.out), 0, "{}", text(&next.out.stderr));
    assert!(next.took < SLACK, "took {:?}", next.took);
    let last = charm.last_trace();
    assert_eq!(root(&last)["attributes"]["dispatch.tool_calls"], 2);
}

// ---- signals to the wrapper at each phase ----------------------------------------------------

/// Declares the tracing relation so that `install` reads it before the charm runs, and makes
/// `relation-ids` hang: the wrapper is then busy with its own hook-tool calls, before the
/// spawn, for up to the 5 s allowance.
fn slow_before_spawn(charm: &Charm) {
    charm.write(
        "metadata.yaml",
        "name: shell-charm\nrequires:\n  charm-tracing:\n    interface: tracing\n    limit: 1\n",
    );
    std::fs::create_dir_all(charm.state.join("hang")).unwrap();
    std::fs::write(charm.state.join("hang/relation-ids"), "").unwrap();
}

fn relation_ids_called(charm: &Charm) -> bool {
    charm
        .tool_calls()
        .iter()
        .any(|c| c["tool"] == "relation-ids")
}

#[test]
fn sigterm_before_the_charm_starts_reaches_it_and_the_hook_dies_of_it() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    slow_before_spawn(&charm);
    // (A charm that would be done in a millisecond can outrun the signal: see
    // `a_signal_held_until_the_charm_starts_is_not_outrun_by_a_quick_charm`.)
    let run = noting_trace("echo ran > \"$OUT/ran\"");
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_SLEEP", "2"),
    ];
    let started = Instant::now();
    let mut wrapper = charm
        .command("dispatch", "hooks/install", &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("our own relation-ids call", Duration::from_secs(10), || {
        relation_ids_called(&charm)
    });
    assert!(
        !out.join("tp").exists(),
        "the charm already runs: not before the spawn"
    );
    signal(&wrapper, libc::SIGTERM);
    let status = wrapper.wait().unwrap();
    let took = started.elapsed();
    // Bare, the charm would have died of it: so does the hook, as Juju sees it (re-queued).
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(took < OWN_CALLS + SLACK, "took {took:?}");
    let mut output = String::new();
    std::io::Read::read_to_string(&mut wrapper.stderr.take().unwrap(), &mut output).unwrap();
    assert!(our_lines(output.as_bytes()).is_empty(), "{output}");

    let trace = charm.last_trace();
    let charm_span = span(&trace, "charm");
    assert_eq!(charm_span["attributes"]["error.type"], "SIGTERM");
    assert_eq!(
        charm_span["attributes"]["dispatch.signals.forwarded"],
        serde_json::json!(["SIGTERM"])
    );
    assert_eq!(root(&trace)["status"], "ERROR");
}

/// A signal that arrives while the wrapper prepares (here: waiting for the dispatch lock, held
/// by a `dispatch flush`) is held for the charm. Sent to it after it starts, a charm done in
/// a millisecond could finish first (on a busy machine it often did) and exit 0: the hook
/// would commit instead of dying of SIGTERM, which Juju would have re-queued. Run with the machine busy (two spinning threads), a few dozen times.
#[test]
fn a_signal_held_until_the_charm_starts_is_not_outrun_by_a_quick_charm() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let lock_path = charm.path(".dispatch-trace.db.lock");
    let lock = std::fs::File::open(&lock_path).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        let mut wrapper = charm
            .command("dispatch", "hooks/stop", &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Waiting for the lock (up to 200 ms), signals already blocked: before the spawn.
        let seen = Instant::now();
        while !has_open(wrapper.id(), &lock_path) && seen.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        signal(&wrapper, libc::SIGTERM);
        outcomes.push(wrapper.wait().unwrap());
    }
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    drop(lock);
    let survived = outcomes
        .iter()
        .filter(|s| s.signal() != Some(libc::SIGTERM))
        .count();
    assert_eq!(
        survived, 0,
        "SIGTERM before the charm started, yet the hook ended otherwise in {survived} of 30 runs: {outcomes:?}"
    );
}

/// Whether `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

#[test]
fn sigkill_before_the_charm_starts_leaves_one_interrupted_trace_for_the_next_dispatch() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    slow_before_spawn(&charm);
    let run = noting_trace("echo ran > \"$OUT/ran\"");
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let mut wrapper = charm
        .command("dispatch", "hooks/install", &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("our own relation-ids call", Duration::from_secs(10), || {
        relation_ids_called(&charm)
    });
    signal(&wrapper, libc::SIGKILL);
    assert_eq!(wrapper.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(!out.join("ran").exists(), "the charm ran");
    for pid in charm.processes() {
        // SAFETY: our hanging relation-ids call, orphaned by the kill.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::fs::remove_file(charm.state.join("hang/relation-ids")).unwrap();

    for event in ["start", "update-status"] {
        let next = charm.dispatch(&format!("hooks/{event}"), &[]);
        assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    }
    let traces = charm.traces();
    let events: Vec<&str> = traces
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["install", "start", "update-status"],
        "imported exactly once"
    );
    let killed = root(&traces[0]);
    assert_eq!(killed["status"], "ERROR");
    assert_eq!(killed["attributes"]["dispatch.interrupted"], true);
    assert_eq!(traces[0]["priority"], "failed");
    assert!(inflight(&charm).is_empty(), "{:?}", inflight(&charm));
}

#[test]
fn sigterm_while_the_charm_runs_is_forwarded_and_the_hook_dies_of_it_as_bare() {
    for config in WITH_AND_WITHOUT_STDERR_TAIL {
        sigterm_while_the_charm_runs(config);
    }
}

fn sigterm_while_the_charm_runs(config: &str) {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", config);
    let _reaper = Reaper(&charm);
    let out = out_dir(&charm);
    let run = noting_trace("echo $$ > \"$OUT/charm.pid\"");
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_STDOUT", "started\n"),
        ("CHARM_SLEEP", "10"),
    ];
    let mut ends = Vec::new();
    for program in ["dispatch.orig", "dispatch"] {
        let _ = std::fs::remove_file(out.join("charm.pid"));
        let started = Instant::now();
        let child = charm
            .command(program, "hooks/stop", &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the charm", Duration::from_secs(10), || {
            std::fs::read_to_string(out.join("charm.pid")).is_ok_and(|s| s.ends_with('\n'))
        });
        signal(&child, libc::SIGTERM);
        let output = child.wait_with_output().unwrap();
        ends.push(Timed {
            out: output,
            took: started.elapsed(),
        });
    }
    let (bare, traced) = (&ends[0], &ends[1]);
    assert_eq!(bare.out.status.signal(), Some(libc::SIGTERM));
    assert_hook_unchanged(traced, bare, Duration::ZERO, Says::Nothing);
    let trace = stored_once(&charm, &last_trace_id(&charm));
    let charm_span = span(&trace, "charm");
    assert_eq!(charm_span["attributes"]["error.type"], "SIGTERM");
    assert_eq!(
        charm_span["attributes"]["dispatch.signals.forwarded"],
        serde_json::json!(["SIGTERM"])
    );
}

/// Holds the store's write lock (`BEGIN EXCLUSIVE` plus a write) from this process until
/// dropped: persisting then waits out SQLite's busy timeout and fails.
struct StoreLock(rusqlite::Connection);

impl StoreLock {
    fn take(store: &Path) -> StoreLock {
        let conn = rusqlite::Connection::open(store).unwrap();
        conn.execute_batch(
            "BEGIN EXCLUSIVE; INSERT OR REPLACE INTO setting (key, value) VALUES ('locker', 'x');",
        )
        .unwrap();
        StoreLock(conn)
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Starts a traced dispatch against a locked store and returns it (and when it started) once
/// the charm has ended and the wrapper is busy persisting, still alive.
fn in_persist_phase(charm: &Charm, out: &Path, env: &[(&str, &str)]) -> (Child, Instant) {
    let _ = std::fs::remove_file(out.join("charm.pid"));
    let started = Instant::now();
    let mut wrapper = charm
        .command("dispatch", "hooks/config-changed", env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the charm to start", Duration::from_secs(10), || {
        std::fs::read_to_string(out.join("charm.pid")).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid = read_pid(&out.join("charm.pid"));
    wait_for("the charm to end", Duration::from_secs(10), || is_dead(pid));
    assert!(
        wrapper.try_wait().unwrap().is_none(),
        "the wrapper was done before it could be signalled while persisting"
    );
    (wrapper, started)
}

#[test]
fn sigterm_while_persisting_to_a_locked_store_ends_as_the_charm_did_and_keeps_the_trace() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let run = noting_trace("echo $$ > \"$OUT/charm.pid\"");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(NOISY.iter().copied())
        .collect();
    let bare = timed(charm.command("dispatch.orig", "hooks/config-changed", &env));
    let lock = StoreLock::take(&charm.store_file());
    let (wrapper, started) = in_persist_phase(&charm, &out, &env);
    signal(&wrapper, libc::SIGTERM);
    let output = wrapper.wait_with_output().unwrap();
    let traced = Timed {
        out: output,
        took: started.elapsed(),
    };
    // The charm had ended: Juju gets its exit code, not our death.
    assert_hook_unchanged(
        &traced,
        &bare,
        Duration::ZERO,
        Says::OneLine(".dispatch-trace.db"),
    );
    assert_eq!(code(&traced.out), 3);
    let id = last_trace_id(&charm);
    assert!(traces_with_id(&charm, &id).is_empty());
    assert_eq!(
        inflight(&charm).len(),
        1,
        "the trace is kept beside the store"
    );
    drop(lock);

    let next = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    let kept = stored_once(&charm, &id);
    assert_eq!(span(&kept, "charm")["attributes"]["process.exit.code"], 3);
    assert!(inflight(&charm).is_empty());
}

#[test]
fn sigkill_while_persisting_leaves_one_interrupted_trace_for_the_next_dispatch() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let run = noting_trace("echo $$ > \"$OUT/charm.pid\"");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(NOISY.iter().copied())
        .collect();
    let lock = StoreLock::take(&charm.store_file());
    let (mut wrapper, _) = in_persist_phase(&charm, &out, &env);
    signal(&wrapper, libc::SIGKILL);
    assert_eq!(wrapper.wait().unwrap().signal(), Some(libc::SIGKILL));
    let id = last_trace_id(&charm);
    drop(lock);

    for _ in 0..2 {
        let next = charm.dispatch("hooks/update-status", &[]);
        assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    }
    let found = traces_with_id(&charm, &id);
    assert_eq!(found.len(), 1, "imported exactly once: {found:#?}");
    assert_eq!(root(&found[0])["attributes"]["dispatch.interrupted"], true);
    assert_eq!(root(&found[0])["status"], "ERROR");
    assert!(inflight(&charm).is_empty());
}

/// A receiver that takes the request and never answers: the wrapper is then in its export.
fn in_export_phase(charm: &Charm, receiver: &Receiver, env: &[(&str, &str)]) -> Child {
    let wrapper = charm
        .command("dispatch", "hooks/config-changed", env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the export request", Duration::from_secs(10), || {
        !receiver.requests().is_empty()
    });
    wrapper
}

#[test]
fn sigterm_while_exporting_ends_as_the_charm_did_within_the_budget_and_keeps_the_trace() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "export_budget_ms: 1500\n");
    let receiver = Receiver::start(vec![Answer::Hang]);
    set_destination(&charm, &[&receiver.url()]);
    let run = noting_trace("status-set active");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(NOISY.iter().copied())
        .collect();
    let bare = timed(charm.command("dispatch.orig", "hooks/config-changed", &env));
    let started = Instant::now();
    let wrapper = in_export_phase(&charm, &receiver, &env);
    signal(&wrapper, libc::SIGTERM);
    let output = wrapper.wait_with_output().unwrap();
    let traced = Timed {
        out: output,
        took: started.elapsed(),
    };
    assert_hook_unchanged(&traced, &bare, Duration::from_millis(1500), Says::Nothing);
    let id = last_trace_id(&charm);
    assert_eq!(stored_once(&charm, &id)["state"], "pending");

    receiver.set_script(vec![Answer::ok()]);
    flush_ok(&charm);
    assert_eq!(stored_once(&charm, &id)["state"], "shipped");
    assert_eq!(delivered(&receiver, &id), 1);
}

#[test]
fn sigkill_while_exporting_keeps_the_stored_trace_and_the_next_dispatch_ships_it_once() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "export_budget_ms: 1500\n");
    let receiver = Receiver::start(vec![Answer::Hang]);
    set_destination(&charm, &[&receiver.url()]);
    let run = noting_trace("status-set active");
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let mut wrapper = in_export_phase(&charm, &receiver, &env);
    signal(&wrapper, libc::SIGKILL);
    assert_eq!(wrapper.wait().unwrap().signal(), Some(libc::SIGKILL));
    let id = last_trace_id(&charm);
    assert_eq!(stored_once(&charm, &id)["state"], "pending");

    receiver.set_script(vec![Answer::ok()]);
    let next = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    assert_eq!(stored_once(&charm, &id)["state"], "shipped");
    assert_eq!(delivered(&receiver, &id), 1);
    assert!(charm.traces().iter().all(|t| t["state"] == "shipped"));
    assert!(inflight(&charm).is_empty());
}

// ---- a receiver misbehaving ------------------------------------------------------------------

/// Enough tool calls that the trace is a request body of tens of KiB, so a reset lands in
/// the middle of it.
const BIG_TRACE: &[(&str, &str)] = &[("CHARM_TOOL_CALLS", "150"), ("CHARM_EXIT", "1")];

#[test]
fn a_receiver_that_resets_the_connection_mid_body_is_an_outage_and_the_trace_waits() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "export_budget_ms: 1000\n");
    let receiver = Receiver::start(vec![Answer::ResetMidBody]);
    set_destination(&charm, &[&receiver.url()]);
    let run = noting_trace("");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(BIG_TRACE.iter().copied())
        .collect();
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    // A reset is an outage, nothing for the operator to fix: silence, and backoff.
    assert_hook_unchanged(&traced, &bare, Duration::from_secs(1), Says::Nothing);
    let id = last_trace_id(&charm);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let sent = requests[0]
        .header("content-length")
        .unwrap()
        .parse::<usize>()
        .unwrap();
    assert!(
        sent > 8 * 1024,
        "a {sent}-byte body is no test of a reset mid-body"
    );
    assert_eq!(stored_once(&charm, &id)["state"], "pending");
    assert!(
        status(&charm).contains("backoff: 1 failed export"),
        "{}",
        status(&charm)
    );

    receiver.set_script(vec![Answer::ok()]);
    flush_ok(&charm);
    assert_eq!(delivered(&receiver, &id), 1);
    assert_eq!(stored_once(&charm, &id)["state"], "shipped");
}

#[test]
fn a_receiver_answering_413_is_told_once_and_the_trace_waits_for_a_smaller_request() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "export_budget_ms: 1000\n");
    let receiver = Receiver::start(vec![Answer::Status(413, vec![], b"too large".to_vec())]);
    set_destination(&charm, &[&receiver.url()]);
    let run = noting_trace("");
    // Big enough that half of it is above the 16 KiB floor requests never shrink below.
    let env = [
        ("OUT", path_str(&out)),
        ("CHARM_RUN", run.as_str()),
        ("CHARM_TOOL_CALLS", "300"),
        ("CHARM_EXIT", "1"),
    ];
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::from_secs(1), Says::OneLine("413"));
    let id = last_trace_id(&charm);
    let refused = receiver.requests()[0].body.len();
    assert!(
        refused / 2 > 16 * 1024,
        "a {refused}-byte request is too small for this test"
    );
    assert_eq!(stored_once(&charm, &id)["state"], "pending");
    // The same refusal again: not repeated.
    let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
    assert_hook_unchanged(&traced, &bare, Duration::from_secs(1), Says::Nothing);

    receiver.set_script(vec![Answer::ok()]);
    flush_ok(&charm);
    assert_eq!(delivered(&receiver, &id), 1);
    assert!(charm.traces().iter().all(|t| t["state"] == "shipped"));
    let after: Vec<usize> = receiver
        .requests()
        .iter()
        .filter(|r| r.answered == Some(200))
        .map(|r| r.body.len())
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|&len| len <= refused / 2),
        "requests after a 413 of {refused} bytes: {after:?}"
    );
}

#[test]
fn a_receiver_sending_a_huge_body_back_costs_no_more_than_the_budget() {
    let charm = Charm::new("shell");
    let out = out_dir(&charm);
    charm.write("dispatch-trace.yaml", "export_budget_ms: 1000\n");
    let run = noting_trace("status-set active");
    let env: Vec<(&str, &str)> = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())]
        .into_iter()
        .chain(NOISY.iter().copied())
        .collect();
    for (answer, state) in [
        (Answer::HugeBody(200, 256 << 20), "shipped"),
        (Answer::HugeBody(503, 256 << 20), "pending"),
    ] {
        let receiver = Receiver::start(vec![answer]);
        set_destination(&charm, &[&receiver.url()]);
        let (traced, bare) = pair(&charm, "hooks/install", &env, &no_tweak);
        assert_hook_unchanged(&traced, &bare, Duration::from_secs(1), Says::Nothing);
        let id = last_trace_id(&charm);
        assert_eq!(stored_once(&charm, &id)["state"], state);
    }
}

/// A daemon the charm leaves writing into our record channel (for 6 s: `yes`, or bytes
/// without a newline) cannot hold the end of the hook: after the charm ends the reader takes
/// what the pipe held and stops, and a line too long to be a record is skipped, not kept.
#[test]
fn a_daemon_flooding_our_record_channel_cannot_hold_the_end_of_the_hook() {
    let mut late = Vec::new();
    for (what, flood) in [
        ("lines", "timeout 6 yes"),
        ("bytes without a newline", "timeout 6 cat /dev/zero"),
    ] {
        let charm = Charm::new("shell");
        let _reaper = Reaper(&charm);
        let out = out_dir(&charm);
        let run = noting_trace(&format!(
            "{flood} > \"${{DISPATCH_TRACE_CHANNEL:-/dev/null}}\" 2>/dev/null < /dev/null &\n\
             sleep 0.2; is-leader > /dev/null"
        ));
        let env = [
            ("OUT", path_str(&out)),
            ("CHARM_RUN", run.as_str()),
            ("CHARM_EXIT", "4"),
        ];
        let bare = timed(charm.command("dispatch.orig", "hooks/update-status", &env));
        let traced = timed(charm.command("dispatch", "hooks/update-status", &env));
        assert_eq!(code(&traced.out), code(&bare.out));
        assert_eq!(traced.out.stdout, bare.out.stdout);
        if traced.took > bare.took + SLACK {
            late.push(format!("{what}: {:?} (bare {:?})", traced.took, bare.took));
        }
    }
    assert!(late.is_empty(), "the flood held the hook's end: {late:?}");
}

// ---- the stderr relay (`stderr_tail`) --------------------------------------------------------

/// The relay processes (`dispatch-stderr-relay`) whose parent is `wrapper`.
fn relays_of(wrapper: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command's closing parenthesis.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            cmdline.starts_with(b"dispatch-stderr-relay\0") && parent == Some(wrapper)
        })
        .collect()
}

/// Juju's end of the hook's stderr going away while the charm runs: the relay notices and
/// ends, so the charm's next write to stderr kills it with SIGPIPE, as bare.
#[test]
fn with_stderr_tail_a_hook_stderr_that_breaks_while_the_charm_runs_breaks_for_the_charm_too() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "stderr_tail: 4096\n");
    let out = out_dir(&charm);
    let run = noting_trace(
        "echo ready > \"$OUT/ready\"; while [ ! -e \"$OUT/go\" ]; do sleep 0.01; done; \
         echo after >&2; echo survived > \"$OUT/survived\"",
    );
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let mut ends = Vec::new();
    for program in ["dispatch.orig", "dispatch"] {
        for file in ["ready", "go", "survived"] {
            let _ = std::fs::remove_file(out.join(file));
        }
        // Close-on-exec: only this test holds the read end, as only Juju would.
        let (read_err, write_err) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut child = charm
            .command(program, "hooks/install", &env)
            .stdout(Stdio::null())
            .stderr(Stdio::from(write_err))
            .spawn()
            .unwrap();
        wait_for("the charm", Duration::from_secs(10), || {
            out.join("ready").exists()
        });
        drop(read_err);
        // The relay sees its stderr broken at once; give it a moment to have ended.
        if program == "dispatch" {
            let wrapper = child.id() as i32;
            wait_for("the relay to end", Duration::from_secs(10), || {
                relays_of(wrapper).is_empty()
            });
        }
        std::fs::write(out.join("go"), "").unwrap();
        let status = child.wait().unwrap();
        ends.push((
            status.code(),
            status.signal(),
            out.join("survived").exists(),
        ));
    }
    assert_eq!(ends[0], (None, Some(libc::SIGPIPE), false), "bare");
    assert_eq!(ends[1], ends[0], "traced");
}

/// Signals a terminal or a process-group kill would send reach the relay too: it ignores them,
/// so the charm's stderr stays whole; and the relay outlives a wrapper killed with SIGKILL, so
/// a daemon the charm left writes to the hook's stderr afterwards as it would bare.
#[test]
fn with_stderr_tail_neither_signals_to_the_relay_nor_the_wrappers_death_break_the_charms_stderr() {
    let charm = Charm::new("shell");
    let _reaper = Reaper(&charm);
    charm.write("dispatch-trace.yaml", "stderr_tail: 4096\n");
    let out = out_dir(&charm);
    let run = noting_trace(
        "echo early >&2; (while [ ! -e \"$OUT/late\" ]; do sleep 0.01; done; echo late >&2) & \
         echo ready > \"$OUT/ready\"; while [ ! -e \"$OUT/go\" ]; do sleep 0.01; done; \
         echo after >&2; echo $$ > \"$OUT/charm.pid\"; exec sleep 10",
    );
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", run.as_str())];
    let mut stderrs = Vec::new();
    for program in ["dispatch.orig", "dispatch"] {
        for file in ["ready", "go", "late", "charm.pid"] {
            let _ = std::fs::remove_file(out.join(file));
        }
        let mut child = charm
            .command(program, "hooks/install", &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the charm", Duration::from_secs(10), || {
            out.join("ready").exists()
        });
        if program == "dispatch" {
            let relays = relays_of(child.id() as i32);
            assert_eq!(relays.len(), 1, "one relay for the dispatch");
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                // SAFETY: signalling the relay this test started.
                unsafe { libc::kill(relays[0], signal) };
            }
        }
        std::fs::write(out.join("go"), "").unwrap();
        wait_for("the charm's pid", Duration::from_secs(10), || {
            std::fs::read_to_string(out.join("charm.pid")).is_ok_and(|s| s.ends_with('\n'))
        });
        // Juju cancelling an action: SIGKILL to the dispatch process (bare: the charm).
        signal(&child, libc::SIGKILL);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{program}");
        // The daemon writes once the dispatch is gone, and then lets its stderr go.
        std::fs::write(out.join("late"), "").unwrap();
        let mut stderr = Vec::new();
        std::io::Read::read_to_end(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        stderrs.push(text(&stderr));
    }
    assert_eq!(stderrs[0], "early\nafter\nlate\n", "bare");
    assert_eq!(stderrs[1], stderrs[0], "traced");
}

/// A hook started with stderr closed, or at a terminal, gets no relay: the charm finds fd 2
/// exactly as bare.
#[test]
fn with_stderr_tail_a_hook_whose_stderr_is_closed_finds_it_closed() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "stderr_tail: 4096\n");
    let out = out_dir(&charm);
    let listing = "open=; for n in 0 1 2; do [ -e /proc/$$/fd/$n ] && open=\"$open $n\"; done; \
                   echo \"open:$open\" >> \"$OUT/fds\"; exit 1";
    let env = [("OUT", path_str(&out)), ("CHARM_RUN", listing)];
    let close_stderr = |command: &mut Command| {
        // SAFETY: only close(2), async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
    };
    let (traced, bare) = pair(&charm, "hooks/install", &env, &close_stderr);
    assert_hook_unchanged(&traced, &bare, Duration::ZERO, Says::Nothing);
    assert_eq!(
        std::fs::read_to_string(out.join("fds")).unwrap(),
        "open: 0 1\nopen: 0 1\n"
    );
    let trace = charm.last_trace();
    assert!(span(&trace, "charm")["attributes"]["dispatch.child.stderr_tail"].is_null());
}
