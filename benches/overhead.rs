//! What dispatch costs, measured against the bare charm in the same run (DESIGN §7).
//!
//! Run with `benches/run` (it builds the release binaries first). Everything is measured as
//! medians of interleaved runs, so the machine's noise hits every variant alike; only the
//! differences and ratios printed at the end are meant to be compared with the targets.
//!
//! Also measured: a tool-heavy hook, and a real ops charm (`fixtures/charms/ops`) bare, under
//! our dispatch, and with ops[tracing] on, so the two tracers' costs compare on one charm.
//!
//! The floor is a minimal statically linked C program that posix_spawns its argument, waits
//! and mirrors the exit: the unavoidable cost of any extra process layer.

// The integration tests' scripted receiver, for its healthy and its hanging answers; the rest of
// it serves the tests (tests/it), where all of it is used.
#[allow(dead_code)]
#[path = "../tests/it/util/receiver.rs"]
mod receiver;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOOR_C: &str = r#"
#include <spawn.h>
#include <signal.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    pid_t pid; int status;
    if (argc < 2 || posix_spawn(&pid, argv[1], 0, 0, argv + 1, environ) != 0) return 127;
    while (waitpid(pid, &status, 0) < 0) {}
    if (WIFSIGNALED(status)) { signal(WTERMSIG(status), SIG_DFL); raise(WTERMSIG(status)); }
    return WEXITSTATUS(status);
}
"#;

/// Peak RSS of a command, measured from a tiny static parent: Linux keeps the pre-exec
/// image's peak in a child's `ru_maxrss`, so measuring from this (large) benchmark process
/// would report the benchmark's own size. Writes the child's peak (KiB) to argv[1].
const RSS_C: &str = r#"
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    pid_t pid; int status; struct rusage usage;
    if (argc < 3 || posix_spawn(&pid, argv[2], 0, 0, argv + 2, environ) != 0) return 127;
    if (wait4(pid, &status, 0, &usage) < 0) return 126;
    FILE *out = fopen(argv[1], "w");
    if (!out) return 125;
    fprintf(out, "%ld\n", usage.ru_maxrss);
    return fclose(out) == 0 ? 0 : 124;
}
"#;

/// A hook tool that answers instantly, so tool-call timings show the layers, not the tool.
const TOOL_C: &str = r#"
#include <unistd.h>
int main(void) { write(1, "True\n", 5); return 0; }
"#;

/// The exit code of `STDERR_C`.
const NOISY_EXIT: i32 = 3;

/// A failing charm that writes 1 MiB to stderr in 4 KiB writes, for `stderr_tail`'s cost.
const STDERR_C: &str = r#"
#include <string.h>
#include <unistd.h>
int main(void) {
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 256; i++) write(2, chunk, sizeof chunk);
    return 3;
}
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // As they ship: built by `cargo build --release` and kept aside by benches/run.
    let release = repo_root().join("target/bench-release");
    for binary in ["dispatch", "dispatch-shim"] {
        assert!(
            release.join(binary).exists(),
            "target/bench-release/{binary} is missing: run benches/run"
        );
    }
    let work = repo_root().join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let floor = compile(&work, "floor", FLOOR_C);
    let tool = compile(&work, "tool", TOOL_C);
    let rss = compile(&work, "rss", RSS_C);
    let noisy = compile(&work, "noisy", STDERR_C);

    // A trivial shell charm, with our dispatch in front, and a tools dir of instant tools.
    let charm = work.join("charm");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::write(charm.join("metadata.yaml"), "name: bench-charm\n").unwrap();
    write_script(&charm.join("dispatch.orig"), "#!/bin/sh\nexit 0\n");
    // A tool-heavy hook: what a busy charm does in one event, 40 hook-tool calls.
    write_script(
        &charm.join("busy.sh"),
        "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do is-leader >/dev/null; config-get >/dev/null; \
         relation-get >/dev/null; juju-log hello; status-set active; done\n",
    );
    write_script(
        &charm.join("calls.sh"),
        "#!/bin/sh\ni=0\nwhile [ $i -lt $CALLS ]; do is-leader >/dev/null; i=$((i+1)); done\n",
    );
    for binary in ["dispatch", "dispatch-shim"] {
        std::fs::copy(release.join(binary), charm.join(binary)).unwrap();
    }
    let tools = work.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    for name in [
        "is-leader",
        "juju-log",
        "status-set",
        "relation-get",
        "config-get",
    ] {
        std::fs::copy(&tool, tools.join(name)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", tools.display());
    let juju_env = |command: &mut Command| {
        command
            .env_clear()
            .env("PATH", &path)
            .env("JUJU_DISPATCH_PATH", "hooks/update-status")
            .env("JUJU_UNIT_NAME", "bench/0")
            .env("JUJU_MODEL_NAME", "bench")
            .env("JUJU_MODEL_UUID", "00000000-0000-4000-8000-000000000000")
            .env("JUJU_HOOK_NAME", "update-status")
            .current_dir(&charm)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let run = |program: &[&Path], extra: &[(&str, &str)]| -> Sample {
        let mut command = Command::new(program[0]);
        command.args(&program[1..]);
        juju_env(&mut command);
        for (k, v) in extra {
            command.env(k, v);
        }
        measure(command)
    };

    // Warm up: the first wrapped run builds the persistent shim dir, FIFO and store.
    let orig = charm.join("dispatch.orig");
    let wrapped = charm.join("dispatch");
    for _ in 0..20 {
        run(&[&wrapped], &[]);
        run(&[&orig], &[]);
    }

    let rounds = if quick { 100 } else { 400 };
    println!("dispatch overhead benchmark ({rounds} interleaved rounds; medians)");
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!();

    // 1. Per dispatch: bare charm vs floor vs wrapped (no destination).
    let mut bare = Vec::new();
    let mut floored = Vec::new();
    let mut traced = Vec::new();
    for _ in 0..rounds {
        bare.push(run(&[&orig], &[]));
        floored.push(run(&[&floor, &orig], &[]));
        traced.push(run(&[&wrapped], &[]));
    }
    let bare_ms = median(&bare, |s| s.wall);
    let floor_ms = median(&floored, |s| s.wall);
    let traced_ms = median(&traced, |s| s.wall);
    // Differences taken within each round cancel the machine's drift between rounds.
    let added_ms = paired_median(&traced, &bare);
    let floor_added_ms = paired_median(&floored, &bare);

    // 1a. The custom-span listener on a charm that sends nothing: on vs off, the same config
    // file either way (rewritten between runs, outside the timed part).
    let config_file = charm.join("dispatch-trace.yaml");
    let mut listening = Vec::new();
    let mut not_listening = Vec::new();
    for _ in 0..rounds {
        std::fs::write(&config_file, "custom_spans: true\n").unwrap();
        listening.push(run(&[&wrapped], &[]));
        std::fs::write(&config_file, "custom_spans: false\n").unwrap();
        not_listening.push(run(&[&wrapped], &[]));
    }
    std::fs::remove_file(&config_file).unwrap();
    let listener_ms = paired_median(&listening, &not_listening);

    // 1b. A tool-heavy hook (40 tool calls): bare vs wrapped.
    std::fs::write(charm.join("dispatch-trace.yaml"), "target: busy.sh\n").unwrap();
    let busy = charm.join("busy.sh");
    let mut busy_bare = Vec::new();
    let mut busy_traced = Vec::new();
    for _ in 0..rounds / 2 {
        busy_bare.push(run(&[&busy], &[]));
        busy_traced.push(run(&[&wrapped], &[]));
    }
    std::fs::remove_file(charm.join("dispatch-trace.yaml")).unwrap();
    let busy_bare_ms = median(&busy_bare, |s| s.wall);
    let busy_added_ms = paired_median(&busy_traced, &busy_bare);

    // 1c. `stderr_tail` on a failing charm that writes 1 MiB to stderr: the relay's cost, on
    // vs off (stderr goes to /dev/null here, as fast a reader as there is).
    let mut tail_bare = Vec::new();
    let mut tail_off = Vec::new();
    let mut tail_on = Vec::new();
    let noisy_target = format!("target: {}\n", noisy.display());
    for _ in 0..rounds / 2 {
        tail_bare.push(run(&[&noisy], &[]));
        std::fs::write(&config_file, &noisy_target).unwrap();
        tail_off.push(run(&[&wrapped], &[]));
        std::fs::write(&config_file, format!("{noisy_target}stderr_tail: 4096\n")).unwrap();
        tail_on.push(run(&[&wrapped], &[]));
    }
    std::fs::remove_file(&config_file).unwrap();
    let tail_bare_ms = median(&tail_bare, |s| s.wall);
    let tail_off_added_ms = paired_median(&tail_off, &tail_bare);
    let tail_on_ms = paired_median(&tail_on, &tail_off);

    // 2. Per hook-tool call: the tool bare, behind the floor, and behind our shim (with the
    // wrapper's channel open and drained, as during a dispatch).
    let shim_dir = charm.join(".dispatch-trace/shims");
    let fifo = charm.join(".dispatch-trace/records");
    assert!(
        shim_dir.join("is-leader").exists(),
        "the warm-up did not build the shims"
    );
    let drain = Drain::start(&fifo);
    let channel_env = [
        ("DISPATCH_TRACE_TOOLS", tools.to_str().unwrap()),
        ("DISPATCH_TRACE_CHANNEL", fifo.to_str().unwrap()),
        ("DISPATCH_TRACE_NONCE", "0123456789abcdef"),
    ];
    let real_tool = tools.join("is-leader");
    let shim_tool = shim_dir.join("is-leader");
    let mut tool_bare = Vec::new();
    let mut tool_floor = Vec::new();
    let mut tool_shim = Vec::new();
    for _ in 0..rounds * 2 {
        tool_bare.push(run(&[&real_tool], &channel_env));
        tool_floor.push(run(&[&floor, &real_tool], &channel_env));
        tool_shim.push(run(&[&shim_tool], &channel_env));
    }
    let records = drain.stop();
    let tool_bare_ms = median(&tool_bare, |s| s.wall);
    let tool_floor_ms = median(&tool_floor, |s| s.wall);
    let tool_shim_ms = median(&tool_shim, |s| s.wall);
    let tool_added_ms = paired_median(&tool_shim, &tool_bare);
    let tool_floor_added_ms = paired_median(&tool_floor, &tool_bare);
    assert!(
        records >= tool_shim.len(),
        "the shim did not report every call ({records})"
    );

    // 3. Many tool calls in one dispatch: all recorded, memory and cost linear.
    let calls = if quick { 2_000 } else { 10_000 };
    let calls_text = calls.to_string();
    let calls_script = charm.join("calls.sh");
    let many_bare = run(&[&calls_script], &[("CALLS", &calls_text)]);
    std::fs::write(charm.join("dispatch-trace.yaml"), "target: calls.sh\n").unwrap();
    let many_traced = run(&[&wrapped], &[("CALLS", &calls_text)]);
    std::fs::remove_file(charm.join("dispatch-trace.yaml")).unwrap();
    let recorded = recorded_tool_spans(&wrapped);

    // Peak RSS, the largest of each process tree (wrapper vs a tiny sh charm; shim vs a
    // tiny C tool), measured from the static `rss` parent, worst of a few runs.
    let rss_out = work.join("rss.out");
    let peak = |program: &[&Path], extra: &[(&str, &str)]| -> u64 {
        (0..5)
            .map(|_| {
                let mut full: Vec<&Path> = vec![&rss, &rss_out];
                full.extend_from_slice(program);
                run(&full, extra);
                std::fs::read_to_string(&rss_out)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    };
    let rss_dispatch = peak(&[&wrapped], &[]);
    let rss_bare = peak(&[&orig], &[]);
    let rss_shim = peak(&[&shim_tool], &channel_env);
    let rss_tool = peak(&[&real_tool], &channel_env);
    std::fs::write(charm.join("dispatch-trace.yaml"), "target: calls.sh\n").unwrap();
    let rss_many = peak(&[&wrapped], &[("CALLS", &calls_text)]);
    std::fs::remove_file(charm.join("dispatch-trace.yaml")).unwrap();

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let dispatch_size = size(&release.join("dispatch"));
    let shim_size = size(&release.join("dispatch-shim"));

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_call_added = (many_traced.wall - many_bare.wall) / calls as f64;

    // 4. Shipping: to a loopback receiver that answers 200, then to one that hangs (the first
    // dispatch pays the budget), then while backing off from it.
    let set_destination = |url: &str| {
        let status = Command::new(&wrapped)
            .args(["set-destination", url])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let healthy = receiver::Receiver::start(vec![receiver::Answer::ok()]);
    set_destination(&healthy.url());
    let ship_rounds = rounds / 2;
    let mut ship_bare = Vec::new();
    let mut shipped = Vec::new();
    for _ in 0..ship_rounds {
        ship_bare.push(run(&[&orig], &[]));
        shipped.push(run(&[&wrapped], &[]));
    }
    let export_added_ms = paired_median(&shipped, &ship_bare);
    let delivered = healthy.requests().len();
    drop(healthy);
    let hanging = receiver::Receiver::start(vec![receiver::Answer::Hang]);
    set_destination(&hanging.url());
    let hang_bare = run(&[&orig], &[]);
    let hang_first = run(&[&wrapped], &[]);
    let hang_first_added_ms = hang_first.wall - hang_bare.wall;
    let mut backoff_bare = Vec::new();
    let mut backing_off = Vec::new();
    for _ in 0..ship_rounds {
        backoff_bare.push(run(&[&orig], &[]));
        backing_off.push(run(&[&wrapped], &[]));
    }
    let backoff_added_ms = paired_median(&backing_off, &backoff_bare);
    drop(hanging);
    // 5. A real ops charm: what we add, and what ops[tracing] adds, to the same hook.
    let ops_rounds = if quick { 20 } else { 60 };
    let (ops_bare_ms, ops_ours_ms, ops_theirs_ms) = ops_charm_costs(&work, &release, ops_rounds);

    let clear = Command::new(&wrapped)
        .arg("clear-destination")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(clear.success());
    let rows: Vec<(String, String, String, bool)> = vec![
        (
            "added wall time per dispatch (trivial charm, no destination)".into(),
            format!("{added_ms:.3} ms"),
            "<= 1.5 ms".into(),
            added_ms <= 1.5,
        ),
        (
            "  floor: one extra process layer per dispatch".into(),
            format!("{floor_added_ms:.3} ms"),
            "reference".into(),
            true,
        ),
        (
            "  added per dispatch beyond the floor".into(),
            format!("{:.3} ms", added_ms - floor_added_ms),
            "about 1 ms (floor + 1 ms)".into(),
            added_ms - floor_added_ms <= 1.0,
        ),
        (
            "custom-span listener on a charm that sends nothing (on vs off)".into(),
            format!("{listener_ms:+.3} ms"),
            "not measurable (within noise, ~0.05 ms)".into(),
            listener_ms.abs() <= 0.05,
        ),
        (
            format!(
                "stderr_tail on a failing charm writing 1 MiB to stderr (on vs off; bare {tail_bare_ms:.2} ms, off adds {tail_off_added_ms:.2} ms)"
            ),
            format!("{tail_on_ms:+.3} ms"),
            "reference (opt-in)".into(),
            true,
        ),
        (
            format!("real ops charm, update-status: added by our dispatch ({ops_rounds} rounds)"),
            format!(
                "{ops_ours_ms:.2} ms ({:.1}% of the bare hook's {ops_bare_ms:.0} ms)",
                100.0 * ops_ours_ms / ops_bare_ms
            ),
            "reference".into(),
            true,
        ),
        (
            "real ops charm, update-status: added by ops[tracing] (no destination)".into(),
            format!("{ops_theirs_ms:.1} ms"),
            "reference".into(),
            true,
        ),
        (
            "ops[tracing]'s added cost / ours (trivial charm)".into(),
            format!("{:.0}x", ops_theirs_ms / added_ms),
            ">= 80x".into(),
            ops_theirs_ms / added_ms >= 80.0,
        ),
        (
            "ops[tracing]'s added cost / ours (same ops charm)".into(),
            format!("{:.0}x", ops_theirs_ms / ops_ours_ms),
            ">= 80x".into(),
            ops_theirs_ms / ops_ours_ms >= 80.0,
        ),
        (
            "tool-heavy hook (40 tool calls): added per dispatch".into(),
            format!(
                "{busy_added_ms:.3} ms ({:.1}% of the bare hook's {busy_bare_ms:.1} ms)",
                100.0 * busy_added_ms / busy_bare_ms
            ),
            "dispatch + 40 x per-call figure".into(),
            true,
        ),
        (
            "added time per hook-tool call (shim vs bare tool)".into(),
            format!("{tool_added_ms:.3} ms"),
            format!("<= floor + 0.1 = {:.3} ms", tool_floor_added_ms + 0.1),
            tool_added_ms - tool_floor_added_ms <= 0.1,
        ),
        (
            "  shim vs floor per call".into(),
            format!("{:+.3} ms", tool_added_ms - tool_floor_added_ms),
            "<= +0.1 ms".into(),
            tool_added_ms - tool_floor_added_ms <= 0.1,
        ),
        (
            "export to a loopback receiver: added per dispatch beyond no destination".into(),
            format!(
                "{:.3} ms ({delivered} requests received)",
                export_added_ms - added_ms
            ),
            "<= 5 ms".into(),
            export_added_ms - added_ms <= 5.0,
        ),
        (
            "hanging backend: first dispatch, added over the bare charm".into(),
            format!("{hang_first_added_ms:.0} ms"),
            "<= budget (1000 ms) + 50 ms".into(),
            hang_first_added_ms <= 1050.0,
        ),
        (
            "while backing off: added per dispatch beyond no destination".into(),
            format!("{:+.3} ms", backoff_added_ms - added_ms),
            "<= 0.5 ms".into(),
            backoff_added_ms - added_ms <= 0.5,
        ),
        (
            format!("{calls} tool calls in one dispatch: recorded"),
            format!("{recorded}"),
            format!("{calls}"),
            recorded == calls,
        ),
        (
            format!("{calls} tool calls: added per call inside a dispatch"),
            format!("{per_call_added:.3} ms"),
            "linear (compare with the per-call figure)".into(),
            true,
        ),
        (
            format!("{calls} tool calls: peak RSS"),
            format!("{:.1} MiB", mib(rss_many)),
            "<= 32 MiB".into(),
            mib(rss_many) <= 32.0,
        ),
        (
            "peak RSS, trivial dispatch (largest process)".into(),
            format!(
                "{:.1} MiB (bare charm {:.1} MiB)",
                mib(rss_dispatch),
                mib(rss_bare)
            ),
            "<= 8 MiB".into(),
            mib(rss_dispatch) <= 8.0,
        ),
        (
            "peak RSS, shim (largest process)".into(),
            format!(
                "{:.1} MiB (bare tool {:.1} MiB)",
                mib(rss_shim),
                mib(rss_tool)
            ),
            "<= 2 MiB".into(),
            mib(rss_shim) <= 2.0,
        ),
        (
            "stripped size: dispatch".into(),
            format!("{:.2} MiB", dispatch_size as f64 / 1048576.0),
            "<= 4 MiB".into(),
            dispatch_size <= 4 * 1048576,
        ),
        (
            "stripped size: dispatch-shim".into(),
            format!("{:.2} MiB", shim_size as f64 / 1048576.0),
            "<= 1.5 MiB".into(),
            shim_size as f64 <= 1.5 * 1048576.0,
        ),
    ];

    println!("medians: bare charm {bare_ms:.3} ms, floor {floor_ms:.3} ms, traced {traced_ms:.3} ms (ratio traced/bare {:.2}x)", traced_ms / bare_ms);
    println!("medians: bare tool {tool_bare_ms:.3} ms, floor {tool_floor_ms:.3} ms, shim {tool_shim_ms:.3} ms (ratio shim/bare {:.2}x)", tool_shim_ms / tool_bare_ms);
    println!(
        "{calls} calls: bare {:.0} ms, traced {:.0} ms",
        many_bare.wall, many_traced.wall
    );
    println!();
    println!("| measure | result | target | met |");
    println!("|---|---|---|---|");
    for (name, result, target, met) in &rows {
        println!(
            "| {name} | {result} | {target} | {} |",
            if *met { "yes" } else { "NO" }
        );
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(work: &Path, name: &str, source: &str) -> PathBuf {
    let c = work.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = work.join(name);
    let status = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&out)
        .arg(&c)
        .status()
        .expect("cc (gcc) is needed to build the floor");
    assert!(status.success(), "compiling {name} failed");
    out
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Sample {
    /// Milliseconds from spawn to reaped.
    wall: f64,
}

/// Spawns, waits, and times it.
fn measure(mut command: Command) -> Sample {
    let start = Instant::now();
    let status = command.status().expect("spawn");
    let wall = start.elapsed();
    // 0, or the failing charm's own code: anything else means the set-up is broken.
    assert!(
        matches!(status.code(), Some(0 | NOISY_EXIT)),
        "{command:?} failed: {status}"
    );
    Sample {
        wall: wall.as_secs_f64() * 1000.0,
    }
}

/// Median of the per-round differences `a[i] - b[i]`.
fn paired_median(a: &[Sample], b: &[Sample]) -> f64 {
    let mut values: Vec<f64> = a.iter().zip(b).map(|(x, y)| x.wall - y.wall).collect();
    values.sort_by(|x, y| x.partial_cmp(y).unwrap());
    values[values.len() / 2]
}

fn median(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(value).collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Reads the record channel while the tool-call rounds run, counting records.
struct Drain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Drain {
    fn start(fifo: &Path) -> Drain {
        use std::os::unix::fs::OpenOptionsExt;
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap();
        // Keep a writer so reads never see end-of-file between shims.
        let writer = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let _writer = writer;
            let mut lines = 0;
            let mut buffer = vec![0u8; 65536];
            loop {
                match reader.read(&mut buffer) {
                    Ok(n) if n > 0 => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count(),
                    _ => {
                        if flag.load(std::sync::atomic::Ordering::SeqCst) {
                            return lines;
                        }
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
            }
        });
        Drain { stop, thread }
    }

    fn stop(self) -> usize {
        std::thread::sleep(Duration::from_millis(50));
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn recorded_tool_spans(dispatch: &Path) -> usize {
    let out = Command::new(dispatch)
        .args(["traces", "--last", "1", "--format", "json"])
        .output()
        .unwrap();
    let traces: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    traces[0]["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
                .count()
        })
        .unwrap_or(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The same real ops charm (`fixtures/charms/ops`, ops from target/test-venv) three ways, one
/// `update-status` each, interleaved: bare, under our dispatch, and bare with ops[tracing]
/// switched on (no destination: it buffers, as ours does). Hook tools are the fake ones,
/// since ops parses their JSON. Returns (bare, ours added, ops[tracing] added) in ms.
fn ops_charm_costs(work: &Path, release: &Path, rounds: usize) -> (f64, f64, f64) {
    let root = repo_root();
    let venv_python = root.join("target/test-venv/bin/python3");
    let site = std::fs::read_dir(root.join("target/test-venv/lib"))
        .ok()
        .and_then(|mut dirs| dirs.next())
        .map(|dir| dir.unwrap().path().join("site-packages"))
        .filter(|site| site.join("ops").exists() && site.join("ops_tracing").exists())
        .expect("ops is not in target/test-venv: run tests/python-env (benches/run does)");
    let interpreter = std::fs::canonicalize(&venv_python).unwrap();
    let python_bin = work.join("python-bin");
    std::fs::create_dir_all(&python_bin).unwrap();
    std::os::unix::fs::symlink(interpreter, python_bin.join("python3")).unwrap();
    let tools = work.join("fake-tools");
    let installed = Command::new(release.join("fake-jujuc"))
        .arg("--install-tools")
        .arg(&tools)
        .status()
        .unwrap();
    assert!(installed.success());

    // One copy per variant, each with its own fake model, charmcraft's layout and a `venv`
    // of the test venv's packages (ops-tracing only where the charm asks for it).
    let copy = |name: &str, traced: bool, wrapped: bool| -> (PathBuf, PathBuf) {
        let charm = work.join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(root.join("fixtures/charms/ops"))
            .arg(&charm)
            .status()
            .unwrap();
        assert!(status.success());
        let venv = charm.join("venv");
        std::fs::create_dir(&venv).unwrap();
        for entry in std::fs::read_dir(&site).unwrap() {
            let entry = entry.unwrap();
            if !traced
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ops_tracing")
            {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), venv.join(entry.file_name())).unwrap();
        }
        let orig = charm.join("dispatch.orig");
        if traced {
            let text = std::fs::read_to_string(&orig).unwrap();
            write_script(
                &orig,
                &text.replace("./src/charm.py", "./src/charm_traced.py"),
            );
        }
        if wrapped {
            for binary in ["dispatch", "dispatch-shim"] {
                std::fs::copy(release.join(binary), charm.join(binary)).unwrap();
            }
        }
        let state = charm.join(".fake-juju");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(
            state.join("state.json"),
            r#"{"unit": "bench/0", "leader": true, "config": {"port": 8080, "greeting": "Hi"},
                "relations": {"replicas": {"replicas:1": {"app": "bench", "units": [],
                "data": {"bench": {}, "bench/0": {}}}}}}"#,
        )
        .unwrap();
        let entry = charm.join(if wrapped { "dispatch" } else { "dispatch.orig" });
        (charm, entry)
    };
    let path = format!("{}:{}:/usr/bin:/bin", tools.display(), python_bin.display());
    let run = |(charm, entry): &(PathBuf, PathBuf)| -> Sample {
        let mut command = Command::new(entry);
        command
            .env_clear()
            .env("PATH", &path)
            .env("FAKE_JUJU_STATE", charm.join(".fake-juju"))
            .env("JUJU_DISPATCH_PATH", "hooks/update-status")
            .env("JUJU_HOOK_NAME", "update-status")
            .env("JUJU_UNIT_NAME", "bench/0")
            .env("JUJU_MODEL_NAME", "bench")
            .env("JUJU_MODEL_UUID", "00000000-0000-4000-8000-000000000000")
            .env("JUJU_CHARM_DIR", charm)
            .env("JUJU_VERSION", "3.6.4")
            .current_dir(charm)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        measure(command)
    };
    let bare = copy("ops-bare", false, false);
    let ours = copy("ops-ours", false, true);
    let theirs = copy("ops-tracing", true, false);
    for _ in 0..3 {
        run(&bare);
        run(&ours);
        run(&theirs);
    }
    let (mut bare_runs, mut ours_runs, mut theirs_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        bare_runs.push(run(&bare));
        ours_runs.push(run(&ours));
        theirs_runs.push(run(&theirs));
    }
    let traces = Command::new(&ours.1)
        .args(["traces", "--last", "0", "--format", "json"])
        .output()
        .unwrap();
    let recorded = String::from_utf8_lossy(&traces.stdout)
        .lines()
        .filter(|line| line.contains("\"update-status\""))
        .count();
    assert!(
        recorded >= rounds,
        "our dispatch recorded {recorded} update-status traces for {rounds} rounds"
    );
    (
        median(&bare_runs, |s| s.wall),
        paired_median(&ours_runs, &bare_runs),
        paired_median(&theirs_runs, &bare_runs),
    )
}
