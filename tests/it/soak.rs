//! Soak (README, *Guarantees*): a thousand consecutive dispatches of a realistic event mix while
//! the backend is down, then flaky, then healthy; nothing is lost but what the size cap
//! evicts by its rule, nothing is delivered twice, nothing leaks, and the cost per dispatch
//! does not drift.
//!
//! `DISPATCH_SOAK=N` sets the number of dispatches (default 1000: about 35 s in a debug build
//! on a 2-core machine; `DISPATCH_SOAK=3000 cargo test --test it soak:: -- --nocapture` takes
//! about 3 minutes). The figures are printed; run with `--nocapture` to see them.
//!
//! The backend, by dispatch number (one third each):
//! - down: the first sixth finds nothing listening (connection refused, and the backoff that
//!   follows: 10 s, then 20 s), the second sixth gets 503 with `Retry-After: 1`;
//! - flaky: every other connection gets 503 (`Retry-After: 1`), the others 200;
//! - healthy: 200; then `dispatch flush` ships whatever is still waiting.
//!
//! What "delivered" means: the store is capped small (`store_max_bytes`: 384 KiB per thousand
//! dispatches, room for about a seventh of them) so that the outage overflows it and eviction
//! happens, as it would in a long outage in production. A trace is then either delivered
//! (every one of its spans arrived in a request the backend answered 2xx) or evicted by the
//! cap's rule before it could be: shipped ones first, then the lowest priority, oldest first.
//! So: every trace still in the store at the end is shipped and was delivered; every failed
//! dispatch was delivered (failed traces have the highest priority, and the outage's failed
//! dispatches fit under the cap); a trace neither delivered nor in the store was evicted;
//! nothing is delivered twice (a duplicate needs a 2xx lost in transit, which does not happen
//! on loopback) and nothing arrives that no dispatch made.
//!
//! Leaks: no started record, temporary file or directory is left beside the store or in the
//! state dir, no process is left running, the charm inherits exactly the descriptors a bare
//! run does (compared every tenth dispatch), and the wrapper's own count of open descriptors
//! stays within a small band from the first dispatch to the last.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::outcome::SLACK;
use crate::util::receiver::{Answer, Receiver};
use crate::util::{
    code, free_port, hex, listing, otlp_spans, our_lines, set_destination, text, Charm,
};

const DEFAULT_DISPATCHES: usize = 1000;
/// The store's size cap per thousand dispatches (so a longer soak overflows it in the same
/// proportion, and its failed dispatches still fit).
const CAP_PER_THOUSAND: u64 = 393_216;
const BUDGET_MS: u64 = 300;
/// A bare run of the same hook every this many dispatches, for the overhead figures.
const BARE_EVERY: usize = 10;

fn dispatches() -> usize {
    std::env::var("DISPATCH_SOAK")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n >= 30)
        .unwrap_or(DEFAULT_DISPATCHES)
}

/// One dispatch of the mix: the event, its environment, its expected exit code and stdout.
struct Event {
    path: &'static str,
    env: Vec<(&'static str, String)>,
    exit: i32,
    stdout: String,
    failed: bool,
}

/// The mix: mostly quiet `update-status`, configuration and relation events that change
/// things, actions, and one failing hook in ten; each makes a few hook-tool calls.
fn event(i: usize) -> Event {
    let (path, run, exit, extra): (&str, &str, i32, Vec<(&str, &str)>) = match i % 10 {
        0 | 2 | 5 | 8 => (
            "hooks/update-status",
            "is-leader > /dev/null; status-get > /dev/null",
            0,
            vec![],
        ),
        1 => (
            "hooks/config-changed",
            "config-get > /dev/null; status-set maintenance configuring; \
             juju-log -l INFO configured; status-set active ready",
            0,
            vec![],
        ),
        3 => (
            "hooks/db-relation-changed",
            "relation-ids db > /dev/null; is-leader > /dev/null; leader-set seen=1",
            0,
            vec![
                ("JUJU_RELATION", "db"),
                ("JUJU_RELATION_ID", "db:7"),
                ("JUJU_REMOTE_UNIT", "pg/0"),
            ],
        ),
        4 => (
            "actions/backup",
            "action-get > /dev/null; action-log starting; action-set result=done",
            0,
            vec![],
        ),
        6 => (
            "hooks/leader-settings-changed",
            "leader-get > /dev/null; juju-log -l DEBUG settings",
            0,
            vec![],
        ),
        7 => (
            "hooks/update-status",
            "is-leader > /dev/null; status-set blocked 'disk full'; echo 'no space left' >&2",
            1,
            vec![],
        ),
        _ => (
            "hooks/start",
            "status-set active; open-port 8080/tcp",
            0,
            vec![],
        ),
    };
    let stdout = format!("dispatch {i}\n");
    let mut env: Vec<(&'static str, String)> = vec![
        // The trace id we were given, and the descriptors the charm inherited (none of ours
        // may leak into it) and the wrapper's count of open descriptors.
        (
            "CHARM_RUN",
            format!(
                "echo \"${{TRACEPARENT:-}}\" >> \"$IDS\"\n\
                 ls /proc/$$/fd > \"$FDS\"\n\
                 ls /proc/$PPID/fd | wc -l >> \"$PARENT_FDS\"\n\
                 {run}"
            ),
        ),
        ("CHARM_STDOUT", stdout.clone()),
        ("CHARM_EXIT", exit.to_string()),
    ];
    env.extend(extra.into_iter().map(|(k, v)| (k, v.to_string())));
    Event {
        path,
        env,
        exit,
        stdout,
        failed: exit != 0,
    }
}

fn mean(durations: &[Duration]) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    durations.iter().sum::<Duration>() / durations.len() as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn a_thousand_dispatches_through_an_outage_a_flaky_backend_and_recovery_lose_only_evictions() {
    let n = dispatches();
    let cap = CAP_PER_THOUSAND * (n as u64).div_ceil(1000);
    let charm = Charm::new("shell");
    charm.write(
        "dispatch-trace.yaml",
        format!("store_max_bytes: {cap}\nexport_budget_ms: {BUDGET_MS}\n"),
    );
    let out = charm.scratch.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let file = |name: &str| out.join(name).to_str().unwrap().to_string();
    let (ids, bare_ids, fds, bare_fds, parent_fds) = (
        file("ids"),
        file("bare-ids"),
        file("fds"),
        file("bare-fds"),
        file("parent-fds"),
    );

    // Down: a port with nothing on it.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    set_destination(&charm, &[&url]);
    let before = listing(&charm.dir);
    let unavailable = || {
        Answer::Status(
            503,
            vec![("Retry-After".into(), "1".into())],
            b"unavailable".to_vec(),
        )
    };

    let mut receiver: Option<Receiver> = None;
    // Requests made by the end of each phase (down, flaky, healthy).
    let mut phase_ends = Vec::new();
    let mut took = Vec::with_capacity(n);
    let mut bare_took: Vec<(usize, Duration)> = Vec::new();
    let mut failed = BTreeSet::new();
    let mut max_trace_bytes = 0f64;
    let mut max_file_bytes = 0u64;
    let started = Instant::now();
    for i in 0..n {
        if i == n / 6 {
            receiver = Some(Receiver::start_on(port, vec![unavailable()]));
        }
        if i == n / 3 {
            phase_ends.push(receiver.as_ref().unwrap().requests().len());
            let flaky = (0..4 * n)
                .map(|k| {
                    if k % 2 == 0 {
                        unavailable()
                    } else {
                        Answer::ok()
                    }
                })
                .collect();
            receiver.as_ref().unwrap().set_script(flaky);
        }
        if i == 2 * n / 3 {
            phase_ends.push(receiver.as_ref().unwrap().requests().len());
            receiver.as_ref().unwrap().set_script(vec![Answer::ok()]);
        }
        let event = event(i);
        let mut env: Vec<(&str, &str)> = event.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([
            ("IDS", ids.as_str()),
            ("FDS", fds.as_str()),
            ("PARENT_FDS", parent_fds.as_str()),
        ]);
        let t0 = Instant::now();
        let traced = charm.dispatch(event.path, &env);
        let elapsed = t0.elapsed();
        took.push(elapsed);
        assert_eq!(
            code(&traced),
            event.exit,
            "dispatch {i}: {}",
            text(&traced.stderr)
        );
        assert_eq!(text(&traced.stdout), event.stdout, "dispatch {i}");
        // An outage is not the operator's to fix: not one line in a thousand hooks.
        assert_eq!(
            our_lines(&traced.stderr),
            Vec::<String>::new(),
            "dispatch {i}"
        );
        if event.failed {
            failed.insert(i);
        }

        if i % BARE_EVERY == 0 {
            let mut env: Vec<(&str, &str)> =
                event.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.extend([
                ("IDS", bare_ids.as_str()),
                ("FDS", bare_fds.as_str()),
                ("PARENT_FDS", "/dev/null"),
            ]);
            let t0 = Instant::now();
            let bare = charm.bare(event.path, &env);
            let bare_elapsed = t0.elapsed();
            bare_took.push((i, bare_elapsed));
            assert_eq!(code(&bare), event.exit);
            assert_eq!(traced.stdout, bare.stdout, "dispatch {i}");
            assert_eq!(traced.stderr, bare.stderr, "dispatch {i}");
            assert!(
                elapsed <= bare_elapsed + Duration::from_millis(BUDGET_MS) + SLACK,
                "dispatch {i} took {elapsed:?}, bare {bare_elapsed:?}"
            );
            assert_eq!(
                std::fs::read_to_string(&fds).unwrap(),
                std::fs::read_to_string(&bare_fds).unwrap(),
                "dispatch {i}: the charm inherited descriptors of ours"
            );
        }
        if i % 100 == 99 {
            let (bytes, said) = util::status_sizes(&charm);
            assert_eq!(said, cap as f64);
            assert!(
                bytes <= said,
                "dispatch {i}: {bytes} bytes in use over the {cap}-byte cap"
            );
            max_trace_bytes = max_trace_bytes.max(bytes);
            let file = std::fs::metadata(charm.store_file()).unwrap().len();
            max_file_bytes = max_file_bytes.max(file);
        }
    }
    let soak_time = started.elapsed();
    let receiver = receiver.unwrap();
    phase_ends.push(receiver.requests().len());
    // What is still waiting goes now (a flush has a longer budget of its own).
    let flushed = charm.tool(&["flush"]);
    assert_eq!(code(&flushed), 0, "flush: {}", text(&flushed.stderr));

    // ---- delivery ----------------------------------------------------------------------
    let dispatched: Vec<String> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(|tp| tp.split('-').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(dispatched.len(), n);
    assert_eq!(
        dispatched.iter().collect::<BTreeSet<_>>().len(),
        n,
        "trace ids repeat"
    );
    let index: BTreeMap<&str, usize> = dispatched
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    // (trace id, span id) -> times it arrived in a request answered 2xx.
    let mut arrivals: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    let requests = receiver.requests();
    let answered_ok = requests
        .iter()
        .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
        .count();
    for request in requests
        .iter()
        .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
    {
        for span in otlp_spans(&request.body) {
            *arrivals
                .entry((hex(&span.trace_id), span.span_id))
                .or_default() += 1;
        }
    }
    let delivered: BTreeSet<&str> = arrivals.keys().map(|(t, _)| t.as_str()).collect();
    let duplicates: BTreeSet<&str> = arrivals
        .iter()
        .filter(|(_, &times)| times > 1)
        .map(|((t, _), _)| t.as_str())
        .collect();
    let unknown: Vec<&&str> = delivered
        .iter()
        .filter(|t| !index.contains_key(**t))
        .collect();
    let stored = charm.traces();
    let stored_ids: BTreeMap<&str, &str> = stored
        .iter()
        .map(|t| {
            (
                t["trace_id"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
            )
        })
        .collect();
    let not_shipped: Vec<(&&str, &&str)> = stored_ids
        .iter()
        .filter(|(_, s)| **s != "shipped")
        .collect();
    let shipped_undelivered: Vec<&&str> = stored_ids
        .keys()
        .filter(|t| !delivered.contains(**t))
        .collect();
    let evicted: Vec<usize> = dispatched
        .iter()
        .enumerate()
        .filter(|(_, id)| !delivered.contains(id.as_str()) && !stored_ids.contains_key(id.as_str()))
        .map(|(i, _)| i)
        .collect();
    let failed_evicted: Vec<&usize> = evicted.iter().filter(|i| failed.contains(i)).collect();
    // Every span of a delivered trace arrived (a trace is one request, or parts of one).
    let mut spans_per_trace: BTreeMap<&str, usize> = BTreeMap::new();
    for (trace, _) in arrivals.keys() {
        *spans_per_trace.entry(trace.as_str()).or_default() += 1;
    }
    let short: Vec<(&str, usize, usize)> = stored
        .iter()
        .filter_map(|t| {
            let id = t["trace_id"].as_str().unwrap();
            let spans = t["spans"].as_array().unwrap().len();
            let got = spans_per_trace.get(id).copied().unwrap_or(0);
            (got != spans).then_some((id, got, spans))
        })
        .collect();

    // ---- leaks -------------------------------------------------------------------------
    let inflight = listing(&charm.path(".dispatch-trace.db.inflight"));
    let state_dir = listing(&charm.path(".dispatch-trace"));
    let mut expected_dir = before.clone();
    // What the README lists beside the store, and the state dir; nothing else.
    expected_dir.extend(
        [
            ".dispatch-trace",
            ".dispatch-trace.db",
            ".dispatch-trace.db-wal",
            ".dispatch-trace.db-shm",
            ".dispatch-trace.db.lock",
            ".dispatch-trace.db.inflight",
        ]
        .map(String::from),
    );
    expected_dir.sort();
    expected_dir.dedup();
    let after = listing(&charm.dir);
    let left_over = charm.processes();
    let parent: Vec<usize> = std::fs::read_to_string(&parent_fds)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let (fd_min, fd_max) = (
        parent.iter().min().copied().unwrap_or(0),
        parent.iter().max().copied().unwrap_or(0),
    );

    // ---- cost --------------------------------------------------------------------------
    let window = (n / 10).clamp(10, 100);
    let bare_in = |range: std::ops::Range<usize>| -> Duration {
        let picked: Vec<Duration> = bare_took
            .iter()
            .filter(|(i, _)| range.contains(i))
            .map(|(_, d)| *d)
            .collect();
        mean(&picked)
    };
    let first = mean(&took[..window]);
    let last = mean(&took[n - window..]);
    let (first_bare, last_bare) = (bare_in(0..window), bare_in(n - window..n));
    let first_added = first.saturating_sub(first_bare);
    let last_added = last.saturating_sub(last_bare);

    println!(
        "soak: {n} dispatches in {:.1} s ({:.1} ms each on average)",
        soak_time.as_secs_f64(),
        ms(soak_time) / n as f64
    );
    println!(
        "soak: {} requests, {answered_ok} answered 2xx; {} traces delivered, {} duplicated, {} evicted before delivery ({} of them failed dispatches), {} in the store at the end",
        requests.len(),
        delivered.len(),
        duplicates.len(),
        evicted.len(),
        failed_evicted.len(),
        stored_ids.len()
    );
    println!(
        "soak: store at most {:.1} KiB of traces (cap {:.0} KiB), file at most {:.1} KiB",
        max_trace_bytes / 1024.0,
        cap as f64 / 1024.0,
        max_file_bytes as f64 / 1024.0
    );
    println!(
        "soak: first {window}: {:.2} ms per dispatch, bare {:.2} ms, added {:.2} ms; last {window}: {:.2} ms, bare {:.2} ms, added {:.2} ms",
        ms(first),
        ms(first_bare),
        ms(first_added),
        ms(last),
        ms(last_bare),
        ms(last_added)
    );
    println!(
        "soak: requests made while down (refused, then 503): {}, flaky: {}, healthy: {}, flush: {}",
        phase_ends[0],
        phase_ends[1] - phase_ends[0],
        phase_ends[2] - phase_ends[1],
        requests.len() - phase_ends[2]
    );
    println!("soak: the wrapper held {fd_min}..{fd_max} descriptors while its charm ran");

    assert!(
        unknown.is_empty(),
        "delivered traces no dispatch made: {unknown:?}"
    );
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
    assert!(
        not_shipped.is_empty(),
        "still waiting after the flush: {not_shipped:?}"
    );
    assert!(
        shipped_undelivered.is_empty(),
        "marked shipped but never answered 2xx: {shipped_undelivered:?}"
    );
    assert!(
        short.is_empty(),
        "stored traces delivered with spans missing: {short:?}"
    );
    assert!(
        failed_evicted.is_empty(),
        "failed dispatches evicted before delivery: {failed_evicted:?}"
    );
    assert!(
        stored_ids.len() < n,
        "the cap never evicted anything: the soak does not test it"
    );
    assert_eq!(
        delivered.len() + evicted.len(),
        n,
        "every dispatch is delivered or evicted"
    );
    assert!(
        max_file_bytes <= cap + cap / 2,
        "the store file grew to {max_file_bytes} bytes under a {cap}-byte cap"
    );
    assert!(inflight.is_empty(), "started records left: {inflight:?}");
    assert_eq!(state_dir, ["records", "shims"], "left in the state dir");
    assert_eq!(after, expected_dir, "files left in the charm dir");
    assert!(left_over.is_empty(), "processes left: {left_over:?}");
    assert!(
        fd_max <= fd_min + 6,
        "the wrapper's descriptors vary: {fd_min}..{fd_max}"
    );
    // Not a benchmark: only a drift that grows with the backlog or the store would show.
    assert!(
        last_added <= first_added * 3 + Duration::from_millis(30),
        "per-dispatch cost drifted: first {first_added:?}, last {last_added:?}"
    );
}
