//! What `dispatch traces` costs a person on a unit whose store is full (README, *Tool mode*):
//! a store filled to its 40 MiB cap by real dispatches of a charm that makes 100 `juju-log`
//! calls per event (their text kept), then `traces --last 1` (wall time, median of 20) and `traces --summary` of
//! everything (wall time, and peak RSS against the store's size: the summary streams, so its
//! memory must not grow with the store), and what `traces --follow` costs while nothing
//! happens: CPU time over a minute of idling on that store (`--quick`: 10 s), from the
//! kernel's own account (`/proc/PID/schedstat`). Run with `benches/run` after the overhead
//! benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bytes of traces to fill the store with (its default cap).
const FULL: u64 = 40 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Run as `--rss-of CMD...` by `peak_rss_kib`: a process whose only child is CMD.
    if let Some(at) = args.iter().position(|a| a == "--rss-of") {
        let status = Command::new(&args[at + 1])
            .args(&args[at + 2..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        println!("{}", children_maxrss());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let release = root.join("target/bench-release");
    let work = root.join("target/bench-tool-mode");
    let _ = std::fs::remove_dir_all(&work);
    let charm = work.join("charm");
    let tools = work.join("tools");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(charm.join("metadata.yaml"), "name: full-store\n").unwrap();
    script(
        &charm.join("dispatch.orig"),
        &format!(
            "#!/bin/sh\ni=0\nwhile [ $i -lt 100 ]; do juju-log \"round $i {}\"; i=$((i+1)); done\n\
             exit $((RANDOM_EXIT))\n",
            "x".repeat(480)
        ),
    );
    script(&tools.join("juju-log"), "#!/bin/sh\nexit 0\n");
    for binary in ["dispatch", "dispatch-shim"] {
        std::fs::copy(release.join(binary), charm.join(binary)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", tools.display());
    let dispatch = charm.join("dispatch");
    // Full: the store file at its cap, where eviction keeps it (`--quick`: a smaller cap).
    let cap = if quick { FULL / 8 } else { FULL };
    // Log text kept (512 bytes a call): 100 calls make a trace of about 70 KiB.
    std::fs::write(
        charm.join("dispatch-trace.yaml"),
        format!("store_max_bytes: {cap}\nrecord_log_messages: true\n"),
    )
    .unwrap();
    let store = charm.join(".dispatch-trace.db");
    let started = Instant::now();
    let mut dispatches = 0;
    while std::fs::metadata(&store).map_or(0, |m| m.len()) < cap - cap / 50 {
        let status = Command::new(&dispatch)
            .env_clear()
            .env("PATH", &path)
            .env("JUJU_DISPATCH_PATH", "hooks/update-status")
            .env("JUJU_UNIT_NAME", "full/0")
            .env("JUJU_MODEL_NAME", "m")
            .env("RANDOM_EXIT", if dispatches % 7 == 0 { "1" } else { "0" })
            .current_dir(&charm)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.code().is_some());
        dispatches += 1;
    }
    let store_size = std::fs::metadata(charm.join(".dispatch-trace.db"))
        .unwrap()
        .len();
    println!(
        "filled the store: {dispatches} dispatches, {:.1} MiB of traces, {:.1} MiB on disk, in {:.0} s",
        stored_bytes(&charm) as f64 / 1048576.0,
        store_size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let mut last_one: Vec<f64> = (0..20)
        .map(|_| timed(&dispatch, &["traces", "--last", "1"]).0)
        .collect();
    last_one.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (summary_ms, summary_lines, summary_rss_kib) = {
        let (ms, out) = timed(&dispatch, &["traces", "--summary", "--last", "0"]);
        (
            ms,
            out.lines().count() - 1,
            peak_rss_kib(&dispatch, &["traces", "--summary", "--last", "0"]),
        )
    };
    let tree_rss_kib = peak_rss_kib(&dispatch, &["traces", "--last", "1"]);
    let idle_seconds = if quick { 10 } else { 60 };
    let idle_cpu_ms = follow_idle_cpu_ms(&dispatch, idle_seconds);
    println!();
    println!("| measure | result | target | met |");
    println!("|---|---|---|---|");
    let median = last_one[last_one.len() / 2];
    println!(
        "| `traces --last 1` on a full store (median of 20) | {median:.1} ms | < 200 ms | {} |",
        if median < 200.0 { "yes" } else { "NO" }
    );
    println!(
        "| `traces --summary` of all {summary_lines} dispatches | {summary_ms:.0} ms, peak RSS {:.1} MiB (store {:.1} MiB; `--last 1`: {:.1} MiB) | streams: RSS well under the store's size | {} |",
        summary_rss_kib as f64 / 1024.0,
        store_size as f64 / 1048576.0,
        tree_rss_kib as f64 / 1024.0,
        if (summary_rss_kib * 1024) < store_size / 2 { "yes" } else { "NO" }
    );
    let share = idle_cpu_ms / (idle_seconds as f64 * 1000.0) * 100.0;
    println!(
        "| `traces --follow` idle for {idle_seconds} s | {idle_cpu_ms:.1} ms of CPU ({share:.3}% of a core) | next to nothing (< 1% of a core) | {} |",
        if share < 1.0 { "yes" } else { "NO" }
    );
    assert_eq!(summary_lines, dispatches_in_store(&dispatch));
}

/// CPU time (ms) that `traces --follow` uses over `seconds` in which nothing is dispatched;
/// it is then ended with SIGTERM, which must end it with 0.
fn follow_idle_cpu_ms(dispatch: &Path, seconds: u64) -> f64 {
    let mut follower = Command::new(dispatch)
        .args(["traces", "--follow", "--summary", "--last", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Past its start (opening the store), which is not idling.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let on_cpu_ns = || -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/schedstat", follower.id())).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    let before = on_cpu_ns();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let used = on_cpu_ns() - before;
    // SAFETY: the child this function started, not yet reaped.
    unsafe { libc::kill(follower.id() as i32, libc::SIGTERM) };
    assert_eq!(
        follower.wait().unwrap().code(),
        Some(0),
        "SIGTERM ends --follow with 0"
    );
    used as f64 / 1e6
}

fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What `dispatch status` says the stored traces take.
fn stored_bytes(charm: &Path) -> u64 {
    let out = Command::new(charm.join("dispatch"))
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "dispatches: N stored (X MiB of traces), ..."
    text.lines()
        .find_map(|l| l.strip_prefix("dispatches: "))
        .and_then(|rest| {
            rest.split_once('(')?
                .1
                .split_once(" of traces")?
                .0
                .split_once(' ')
                .map(|(n, unit)| (n.to_string(), unit.to_string()))
        })
        .map(|(n, unit)| {
            let n: f64 = n.parse().unwrap_or(0.0);
            let scale = match unit.as_str() {
                "KiB" => 1024.0,
                "MiB" => 1048576.0,
                _ => 1.0,
            };
            (n * scale) as u64
        })
        .unwrap_or(0)
}

fn dispatches_in_store(dispatch: &Path) -> usize {
    let out = Command::new(dispatch)
        .args(["traces", "--format", "json", "--last", "0"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value.as_array().unwrap().len()
}

fn timed(dispatch: &Path, args: &[&str]) -> (f64, String) {
    let started = Instant::now();
    let out = Command::new(dispatch)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "{args:?}");
    (ms, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak RSS of the command in KiB: this binary run again as `--rss-of`, so that the command is
/// its only child and getrusage's largest child is the command.
fn peak_rss_kib(dispatch: &Path, args: &[&str]) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--rss-of")
        .arg(dispatch)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn children_maxrss() -> u64 {
    // SAFETY: getrusage with a valid out-pointer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64
}
