//! The local trace store as a user and an operator meet it: where the file is and how it is
//! protected, one chunk per dispatch, crash recovery after SIGKILL, what happens to a corrupt,
//! newer, locked or planted store (the hook's outcome never changes), the size cap and the
//! priorities that decide what the cap keeps.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::outcome::assert_same_outcome;
use crate::util::{
    code, fingerprint, is_dead, mode, our_lines, root, text, wait_for, with_suffix, Charm, Reaper,
    NOISY,
};
use serde_json::Value;

/// Runs one SQL statement against a store file with the `sqlite3` CLI, or with python3's
/// sqlite3 module where the CLI is missing; returns the output rows as text.
fn sql(db: &Path, statement: &str) -> String {
    let cli = Command::new("sqlite3")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let out = if cli {
        Command::new("sqlite3")
            .arg(db)
            .arg(statement)
            .output()
            .unwrap()
    } else {
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 for row in c.execute(sys.argv[2]).fetchall():\n    \
                 print('|'.join(map(str, row)))\n",
            )
            .arg(db)
            .arg(statement)
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{statement} on {}: {}",
        db.display(),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Stored dispatches as (event, priority) pairs, oldest first.
fn events_and_priorities(charm: &Charm) -> Vec<(String, String)> {
    charm
        .traces()
        .iter()
        .map(|t| {
            (
                t["event"].as_str().unwrap().to_string(),
                t["priority"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_store_is_a_private_wal_file_in_the_charm_dir_with_one_chunk_per_dispatch_oldest_first() {
    let charm = Charm::new("shell");
    let store = charm.store_file();
    assert!(!store.exists());

    let events = ["install", "config-changed", "start"];
    for (n, event) in events.iter().enumerate() {
        let out = charm.dispatch(&format!("hooks/{event}"), &[]);
        assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
        assert_eq!(
            charm.traces().len(),
            n + 1,
            "dispatch {event} must add exactly one chunk"
        );
    }

    assert_eq!(store, charm.path(".dispatch-trace.db"));
    assert!(
        std::fs::symlink_metadata(&store).unwrap().is_file(),
        "the store is a regular file"
    );
    assert_eq!(mode(&store), 0o600, "the store holds traces: owner only");
    let wal = with_suffix(&store, "-wal");
    assert!(wal.exists(), "WAL mode leaves a -wal file beside the store");
    assert_eq!(mode(&wal), 0o600);
    // The database header says WAL too: file format write/read versions 2 at offsets 18/19.
    let header = std::fs::read(&store).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!((header[18], header[19]), (2, 2), "not a WAL database");
    assert_eq!(sql(&store, "PRAGMA journal_mode"), "wal");

    let traces = charm.traces();
    let listed: Vec<&str> = traces
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert_eq!(listed, events, "traces are listed oldest first");
    let ids: Vec<i64> = traces.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    let started: Vec<&str> = traces
        .iter()
        .map(|t| t["started_at"].as_str().unwrap())
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] <= w[1]),
        "start times {started:?}"
    );
    let trace_ids: std::collections::BTreeSet<&str> = traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(trace_ids.len(), 3, "each dispatch is its own trace");
}

#[test]
fn a_wrapper_killed_with_sigkill_takes_its_charm_along_and_leaves_an_interrupted_trace_for_the_next_dispatch(
) {
    let charm = Charm::new("shell");
    let trap = charm.scratch.path("trap");
    let pidfile = charm.scratch.path("charm.pid");
    let run = format!("echo $$ > '{}'", pidfile.display());
    let mut wrapper: Child = charm
        .command(
            "dispatch",
            "hooks/install",
            &[
                ("CHARM_TRAP", trap.to_str().unwrap()),
                ("CHARM_RUN", &run),
                ("CHARM_SLEEP", "30"),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = Reaper(&charm);
    wait_for("the charm to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    assert!(with_suffix(&trap, ".ready").exists());
    let charm_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!is_dead(charm_pid), "the charm should be running");

    // Action cancel / `juju-reboot --now`: SIGKILL to the dispatch process only.
    wrapper.kill().unwrap();
    let status = wrapper.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_for(
        "the charm to die with its wrapper",
        Duration::from_secs(5),
        || is_dead(charm_pid),
    );

    let next = charm.dispatch("hooks/start", &[("CHARM_STDOUT", "started\n")]);
    let bare = charm.bare("hooks/start", &[("CHARM_STDOUT", "started\n")]);
    assert_same_outcome(&next, &bare);
    assert_eq!(code(&next), 0);

    let traces = charm.traces();
    assert_eq!(traces.len(), 2, "{traces:#?}");
    let killed = &traces[0];
    assert_eq!(killed["event"], "install");
    assert_eq!(killed["priority"], "failed");
    assert_ne!(killed["state"], "running", "the orphan was taken over");
    let killed_root = root(killed);
    assert_eq!(killed_root["status"], "ERROR", "{killed_root:#}");
    assert_eq!(killed_root["attributes"]["dispatch.interrupted"], true);
    assert!(
        killed_root["status_message"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{killed_root:#}"
    );

    let started = &traces[1];
    assert_eq!(started["event"], "start");
    assert_eq!(started["priority"], "quiet");
    assert_eq!(root(started)["status"], "OK");
    assert!(root(started)["attributes"]
        .get("dispatch.interrupted")
        .is_none());
}

/// The damaged stores moved aside beside the store, oldest first (names only).
fn moved_aside(charm: &Charm) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&charm.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with(".dispatch-trace.db.corrupt")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    names.sort_by_key(|name| {
        let counter = name.rsplit_once('Z').map_or(0, |(_, n)| {
            n.trim_start_matches('-').parse::<u32>().unwrap_or(1)
        });
        (
            name.split('Z').next().unwrap_or_default().to_string(),
            counter,
        )
    });
    names
}

#[test]
fn a_file_at_the_store_path_that_is_not_ours_is_left_untouched_and_the_trace_waits_beside_it() {
    let charm = Charm::new("shell");
    let precious: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(charm.store_file(), &precious).unwrap();
    charm.chmod(".dispatch-trace.db", 0o644);
    let before = fingerprint(&charm.store_file());

    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(
        ours[0].contains("names a file that is not a trace store (not an SQLite database)")
            && ours[0].contains("left untouched")
            && ours[0].contains(charm.store_file().to_str().unwrap()),
        "{}",
        ours[0]
    );
    assert_eq!(std::fs::read(charm.store_file()).unwrap(), precious);
    assert_eq!(
        fingerprint(&charm.store_file()),
        before,
        "the file was touched"
    );
    assert!(moved_aside(&charm).is_empty());
    for suffix in ["-wal", "-shm"] {
        assert!(!with_suffix(&charm.store_file(), suffix).exists());
    }

    // Reading commands say what is wrong, exit 1, and touch nothing either.
    for args in [&["traces"][..], &["status"]] {
        let out = charm.tool(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out.stderr));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(said.contains("not a trace store"), "{args:?}: {said}");
    }
    assert_eq!(std::fs::read(charm.store_file()).unwrap(), precious);

    // Same cause, next hook: not said again, and that trace waits too.
    let again = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&again), 0);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new());

    // The operator moves the file away: the traces that waited are stored.
    std::fs::rename(charm.store_file(), charm.scratch.path("precious")).unwrap();
    assert_eq!(code(&charm.dispatch("hooks/start", &[])), 0);
    assert_eq!(
        events_and_priorities(&charm)
            .into_iter()
            .map(|(event, _)| event)
            .collect::<Vec<_>>(),
        ["config-changed", "update-status", "start"]
    );
    assert_eq!(
        std::fs::read(charm.scratch.path("precious")).unwrap(),
        precious
    );
}

#[test]
fn a_damaged_store_is_moved_aside_by_the_next_hook_with_one_line_and_two_copies_at_most() {
    let charm = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let garbage = |seed: u32| -> Vec<u8> { (0..16384u32).map(|i| (i * 7 + seed) as u8).collect() };
    // Overwritten in place, its -wal/-shm gone (a store copied back without them).
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(&charm.store_file(), suffix));
    }
    std::fs::write(charm.store_file(), garbage(13)).unwrap();

    // Reading commands report it and leave it where it is.
    let status = charm.tool(&["status"]);
    assert_eq!(code(&status), 1, "{}", text(&status.stderr));
    let store_line = text(&status.stdout)
        .lines()
        .find(|l| l.starts_with("store:"))
        .unwrap()
        .to_string();
    assert!(
        store_line.contains("is damaged")
            && store_line.contains("the next hook moves it aside and starts a new one"),
        "{store_line}"
    );
    let traces = charm.tool(&["traces"]);
    assert_eq!(code(&traces), 1);
    assert!(
        text(&traces.stderr).contains("the next hook moves it aside"),
        "{}",
        text(&traces.stderr)
    );
    assert!(!text(&traces.stderr).contains("no traces recorded"));
    assert_eq!(std::fs::read(charm.store_file()).unwrap(), garbage(13));
    assert!(moved_aside(&charm).is_empty());

    // The next hook moves it aside and says so, in its one line and on the trace.
    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    let aside = moved_aside(&charm);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        ours[0].contains("moved it aside") && ours[0].contains(&aside[0]),
        "{}",
        ours[0]
    );
    assert_eq!(
        std::fs::read(charm.path(&aside[0])).unwrap(),
        garbage(13),
        "kept as it was"
    );
    let traces = charm.traces();
    assert_eq!(traces.len(), 1, "{traces:#?}");
    assert_eq!(traces[0]["event"], "config-changed");
    assert_eq!(traces[0]["priority"], "failed");
    let problems = root(&traces[0])["attributes"]["dispatch.problems"].to_string();
    assert!(problems.contains("moved it aside"), "{problems}");

    // `status` shows the copy (path, size, when); `traces` with nothing to show says the store
    // was replaced rather than that nothing was ever recorded.
    let status = text(&charm.tool(&["status"]).stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("moved aside:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.contains(&aside[0]) && line.contains("16.0 KiB") && line.contains("Z, "),
        "{line}"
    );
    let none = charm.tool(&["traces", "--event", "install"]);
    assert_eq!(code(&none), 0);
    assert!(
        text(&none.stderr).contains("since the damaged store was moved aside to"),
        "{}",
        text(&none.stderr)
    );

    // The cause is gone: the next dispatch is stored and says nothing.
    let again = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&again), 0);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new());
    assert_eq!(charm.traces().len(), 2);

    // Damaged again and again: the newest two copies are kept, no more; and the line, whose
    // words change with each copy's name, is said once (the same kind of problem repeating).
    for (n, seed) in [17, 19, 23].into_iter().enumerate() {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&charm.store_file(), suffix));
        }
        std::fs::write(charm.store_file(), garbage(seed)).unwrap();
        let traced = charm.dispatch("hooks/config-changed", NOISY);
        assert_same_outcome(&traced, &bare);
        let said = our_lines(&traced.stderr);
        assert_eq!(said.len(), usize::from(n == 0), "damage {n}: {said:?}");
    }
    let aside = moved_aside(&charm);
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert_eq!(std::fs::read(charm.path(&aside[0])).unwrap(), garbage(19));
    assert_eq!(std::fs::read(charm.path(&aside[1])).unwrap(), garbage(23));
    assert_eq!(events_and_priorities(&charm).len(), 1);
}

#[test]
fn a_store_with_garbage_pages_behind_a_valid_header_is_moved_aside_and_the_dispatch_is_stored() {
    let charm = Charm::new("shell");
    for _ in 0..3 {
        let out = charm.dispatch("hooks/update-status", &[("CHARM_TOOL_CALLS", "20")]);
        assert_eq!(code(&out), 0);
    }
    assert_eq!(charm.traces().len(), 3);
    // Everything into the main file, then every page but the first (header and schema)
    // overwritten: SQLite opens it happily and reports corruption on first use of a table.
    sql(&charm.store_file(), "PRAGMA wal_checkpoint(TRUNCATE)");
    let mut bytes = std::fs::read(charm.store_file()).unwrap();
    assert!(bytes.len() > 4096, "the store is a single page");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(charm.store_file(), &bytes).unwrap();

    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(ours[0].contains("aside"), "{}", ours[0]);
    let aside = moved_aside(&charm);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(charm.path(&aside[0])).unwrap(),
        bytes,
        "the damaged store is kept"
    );

    // The new store holds this dispatch, and the next one is stored quietly.
    assert_eq!(
        events_and_priorities(&charm),
        [("config-changed".to_string(), "failed".to_string())]
    );
    let again = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&again), 0);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new());
    assert_eq!(charm.traces().len(), 2);
}

#[test]
fn a_garbage_wal_beside_the_store_never_changes_the_hook_and_the_dispatch_is_still_stored() {
    let charm = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let wal = with_suffix(&charm.store_file(), "-wal");
    assert!(wal.exists());
    let garbage: Vec<u8> = (0..70000u32).map(|i| (i * 31 + 5) as u8).collect();
    std::fs::write(&wal, &garbage).unwrap();

    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    // SQLite discards a WAL whose header does not check out (it is what a crash leaves), so
    // there may be nothing to report; if we do report, it is one line about moving it aside.
    let ours = our_lines(&traced.stderr);
    assert!(ours.len() <= 1, "stderr: {}", text(&traced.stderr));
    if let Some(line) = ours.first() {
        assert!(line.contains("aside"), "{line}");
    }

    let traces = charm.traces();
    assert_eq!(
        traces.last().unwrap()["event"],
        "config-changed",
        "{traces:#?}"
    );
    assert_eq!(traces.last().unwrap()["priority"], "failed");
    assert_eq!(sql(&charm.store_file(), "PRAGMA integrity_check"), "ok");

    let again = charm.dispatch("hooks/update-status", &[]);
    assert_eq!(code(&again), 0);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new());
    assert_eq!(charm.traces().last().unwrap()["event"], "update-status");
}

#[test]
fn a_store_from_a_newer_dispatch_is_left_untouched_and_the_charm_runs_as_usual() {
    let charm = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let store = charm.store_file();
    sql(&store, "PRAGMA user_version = 99");
    assert_eq!(sql(&store, "PRAGMA user_version"), "99");
    // Let the sqlite3 client's own close settle everything into the main file first.
    let before = std::fs::read(&store).unwrap();
    let mtime_before = std::fs::metadata(&store).unwrap().mtime_nsec();
    let secs_before = std::fs::metadata(&store).unwrap().mtime();
    // A write from now on must show in the modification time, whose clock ticks coarsely:
    // wait until a file written now gets a later one than the store has.
    let probe = charm.scratch.path("mtime-probe");
    wait_for("a write to show in mtime", Duration::from_secs(5), || {
        std::fs::write(&probe, b"").unwrap();
        let probe = std::fs::metadata(&probe).unwrap();
        (probe.mtime(), probe.mtime_nsec()) > (secs_before, mtime_before)
    });

    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(ours[0].contains("schema"), "{}", ours[0]);
    assert!(ours[0].contains("99"), "{}", ours[0]);

    let meta = std::fs::metadata(&store).unwrap();
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "store bytes changed"
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (secs_before, mtime_before),
        "store was written to"
    );
    assert!(moved_aside(&charm).is_empty(), "not corrupt");
    assert_eq!(sql(&store, "PRAGMA user_version"), "99");
    assert_eq!(
        sql(&store, "SELECT count(*) FROM chunk"),
        "1",
        "nothing was added to a store we do not understand"
    );

    // Same cause, same hook: not said again.
    let again = charm.dispatch("hooks/config-changed", NOISY);
    assert_same_outcome(&again, &bare);
    assert_eq!(our_lines(&again.stderr), Vec::<String>::new());
}

#[test]
fn a_store_locked_by_another_process_costs_a_short_bounded_wait_and_loses_no_trace() {
    let charm = Charm::new("shell");
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    let ready = charm.scratch.path("locked");
    let mut locker = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             c.execute(\"INSERT INTO setting (key, value) VALUES ('locker', 'x')\")\n\
             open(sys.argv[2], 'w').write('locked')\n\
             time.sleep(3)\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(charm.store_file())
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let locker = Reap(&mut locker);
    wait_for("the lock to be taken", Duration::from_secs(10), || {
        ready.exists()
    });

    let started = Instant::now();
    let traced = charm.dispatch("hooks/config-changed", NOISY);
    let took = started.elapsed();
    let bare = charm.bare("hooks/config-changed", NOISY);
    assert_same_outcome(&traced, &bare);
    assert!(
        took < Duration::from_millis(2000),
        "a locked store must cost a short bounded wait, took {took:?}"
    );
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(ours[0].contains(".dispatch-trace.db"), "{}", ours[0]);
    assert!(
        locker.0.try_wait().unwrap().is_none(),
        "the lock must still have been held during the dispatch"
    );

    let status = locker.0.wait().unwrap();
    assert!(status.success(), "the locking helper failed");
    drop(locker);

    let before = charm.traces().len();
    let after = charm.dispatch("hooks/update-status", &[("CHARM_STDOUT", "fine\n")]);
    assert_eq!(code(&after), 0);
    assert_eq!(text(&after.stdout), "fine\n");
    assert_eq!(our_lines(&after.stderr), Vec::<String>::new());
    let traces = charm.traces();
    // The dispatch that met the locked store kept its trace beside it; the next one, once
    // the lock is gone, stores it too: nothing is lost.
    assert_eq!(traces.len(), before + 2);
    assert_eq!(traces[before]["event"], "config-changed");
    let kept = &traces[before];
    assert!(
        root(kept)["attributes"]
            .get("dispatch.interrupted")
            .is_none(),
        "a kept trace is the real one, not an interrupted record: {kept:#}"
    );
    assert_eq!(
        util::span(kept, "charm")["attributes"]["process.exit.code"],
        3
    );
    assert_eq!(traces.last().unwrap()["event"], "update-status");
}

#[test]
fn a_store_path_that_is_a_symlink_is_refused_and_its_target_is_never_created_or_written() {
    let charm = Charm::new("shell");
    let elsewhere = charm.scratch.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();

    // A dangling link: following it would create the target.
    let target = elsewhere.join("planted.db");
    std::os::unix::fs::symlink(&target, charm.store_file()).unwrap();
    let traced = charm.dispatch("hooks/install", NOISY);
    let bare = charm.bare("hooks/install", NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(code(&traced), 3);
    assert!(!target.exists(), "the link target was created");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let ours = our_lines(&traced.stderr);
    assert_eq!(ours.len(), 1, "stderr: {}", text(&traced.stderr));
    assert!(ours[0].contains(".dispatch-trace.db"), "{}", ours[0]);
    assert!(
        std::fs::symlink_metadata(charm.store_file())
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself is left for the operator to look at"
    );

    // A link to an existing file: it must not be written.
    std::fs::remove_file(charm.store_file()).unwrap();
    let precious = elsewhere.join("precious");
    std::fs::write(&precious, b"not yours\n").unwrap();
    let mtime = std::fs::metadata(&precious).unwrap().mtime_nsec();
    std::os::unix::fs::symlink(&precious, charm.store_file()).unwrap();
    let traced = charm.dispatch("hooks/install", NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(std::fs::read(&precious).unwrap(), b"not yours\n");
    assert_eq!(std::fs::metadata(&precious).unwrap().mtime_nsec(), mtime);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);

    // A real store, but links planted for its -wal and -shm: not followed either.
    std::fs::remove_file(charm.store_file()).unwrap();
    assert_eq!(code(&charm.dispatch("hooks/install", &[])), 0);
    sql(&charm.store_file(), "PRAGMA wal_checkpoint(TRUNCATE)");
    for suffix in ["-wal", "-shm"] {
        let side = with_suffix(&charm.store_file(), suffix);
        let _ = std::fs::remove_file(&side);
        std::os::unix::fs::symlink(elsewhere.join(format!("planted{suffix}")), &side).unwrap();
    }
    let traced = charm.dispatch("hooks/install", NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        1,
        "a planted -wal/-shm link was followed"
    );
}

#[test]
fn the_size_cap_keeps_failed_dispatches_and_evicts_the_oldest_quiet_ones_first() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "store_max_bytes: 65536\n");
    // Quiet dispatches are large (50 read-only tool calls each), failed ones are small.
    let quiet: &[(&str, &str)] = &[("CHARM_TOOL_CALLS", "50")];
    let failing: &[(&str, &str)] = &[("CHARM_EXIT", "1")];
    let mut quiet_ids = Vec::new();
    let mut failed_ids = Vec::new();
    for round in 0..4 {
        for _ in 0..3 {
            let out = charm.dispatch("hooks/update-status", quiet);
            assert_eq!(code(&out), 0, "{}", text(&out.stderr));
            assert_eq!(our_lines(&out.stderr), Vec::<String>::new());
            let last = charm.last_trace();
            assert_eq!(last["priority"], "quiet");
            quiet_ids.push(last["trace_id"].as_str().unwrap().to_string());
        }
        if round < 3 {
            let out = charm.dispatch("hooks/config-changed", failing);
            assert_eq!(code(&out), 1);
            let last = charm.last_trace();
            assert_eq!(last["priority"], "failed");
            failed_ids.push(last["trace_id"].as_str().unwrap().to_string());
        }
        let (bytes, cap) = util::status_sizes(&charm);
        assert_eq!(cap, 65536.0);
        assert!(bytes <= cap, "{bytes} bytes of traces over the {cap} cap");
    }

    let kept: Vec<String> = charm
        .traces()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    for id in &failed_ids {
        assert!(kept.contains(id), "failed dispatch {id} was evicted");
    }
    let kept_quiet: Vec<&String> = quiet_ids.iter().filter(|id| kept.contains(id)).collect();
    assert!(
        kept_quiet.len() < quiet_ids.len(),
        "the cap never evicted anything: the test is too small"
    );
    assert!(!kept_quiet.is_empty(), "every quiet dispatch went");
    let newest: Vec<&String> = quiet_ids[quiet_ids.len() - kept_quiet.len()..]
        .iter()
        .collect();
    assert_eq!(
        kept_quiet, newest,
        "the quiet dispatches kept are the newest ones"
    );
}

#[test]
fn a_failed_dispatch_is_failed_one_that_set_a_status_is_changed_and_a_read_only_one_is_quiet() {
    let charm = Charm::new("shell");
    let failed = charm.dispatch("hooks/install", &[("CHARM_EXIT", "1")]);
    assert_eq!(code(&failed), 1);
    let changed = charm.dispatch(
        "hooks/start",
        &[
            ("CHARM_TOOL", "status-set"),
            ("CHARM_TOOL_ARGS", "active ready"),
            ("CHARM_TOOL_CALLS", "1"),
        ],
    );
    assert_eq!(code(&changed), 0);
    let quiet = charm.dispatch(
        "hooks/update-status",
        &[("CHARM_TOOL", "is-leader"), ("CHARM_TOOL_CALLS", "1")],
    );
    assert_eq!(code(&quiet), 0);

    assert_eq!(
        events_and_priorities(&charm),
        [
            ("install".to_string(), "failed".to_string()),
            ("start".to_string(), "changed".to_string()),
            ("update-status".to_string(), "quiet".to_string()),
        ]
    );
    // The tool calls really happened (the priorities are not an accident of no calls).
    let calls: Vec<Value> = charm.tool_calls();
    let tools: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    assert_eq!(tools, ["status-set", "is-leader"]);
}
