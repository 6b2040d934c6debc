//! Local security (README, *Guarantees* 13 and 14), from the outside, the way an attacker on the same machine
//! or a QA engineer would look at it:
//! - what a dispatch keeps on disk belongs to the hook's user alone: the state dir and the
//!   shim dir 0700, the record channel (FIFO) and every file 0600, whatever the umask;
//! - another local user can neither reach the record channel nor plant anything we would use:
//!   not in our private directories, not as a directory or file of its own where ours belong;
//! - a symlink planted where we create or write a file is never followed;
//! - records and custom spans without this dispatch's exact nonce are ignored;
//! - no secret handed to or printed by a hook tool reaches the wire, `dispatch status`, or any
//!   file of ours, raw or encoded;
//! - no input an operator, Juju or a relation can give turns TLS verification off.
//!
//! Pinned elsewhere, so not repeated here: the shim dir is a 0700 directory of symlinks
//! (`hook_tools.rs`, `only_the_tools_present_are_shimmed_in_a_private_directory_of_symlinks`);
//! the store and its WAL are 0600 (`store.rs`,
//! `the_store_is_a_private_wal_file_in_the_charm_dir_with_one_chunk_per_dispatch_oldest_first`);
//! a symlink at the store path, dangling or not, and at its -wal/-shm is refused (`store.rs`,
//! `a_store_path_that_is_a_symlink_is_refused_and_its_target_is_never_created_or_written`);
//! records with a foreign nonce or garbage are ignored (`hook_tools.rs`,
//! `records_without_this_dispatchs_nonce_are_ignored_and_counted`), also from a daemon of an
//! earlier dispatch (`hook_tools.rs`,
//! `a_daemon_left_behind_can_still_call_hook_tools_after_the_dispatch_ended`); the custom-span
//! listener answers 404 to a wrong or missing nonce (`custom_spans.rs`,
//! `refused_requests_get_a_collectors_answers_and_leave_the_hook_alone`); secret canaries
//! never reach the store files, `dispatch traces` in any format or our output (`hook_tools.rs`,
//! `secret_values_never_reach_the_store_files`,
//! `secret_values_never_appear_in_any_traces_format_or_our_output`); TLS is verified against
//! the given CA and a wrong CA or the system store refuses an unknown server (`shipping.rs`,
//! `tls_is_verified_against_the_given_ca_and_a_wrong_one_is_told_to_the_operator`;
//! `relations.rs`, `an_https_provider_is_trusted_through_the_certificate_transfer_relation`).
//!
//! "Another local user" is `nobody` (uid/gid 65534, `Command::uid`): the tests that need one
//! need root (as CI has) and fail without it, saying so (`util::require_root`). What an
//! attacker plants the test plants as root and hands to `nobody`, which is what the attacker
//! could have made.
//!
//! Five cases found bugs, fixed with them: under umask 000 the shim stamp and the last-warning
//! memory were 0666; a store opened up stayed so (and its -wal/-shm); a shim directory (with a
//! copied stamp) or a FIFO another user put into a state dir that had been open to others was
//! used, so their program ran as the hook's user, and their started records were imported as
//! traces; a store or dispatch lock another user created beside a shared store path was used;
//! the last-warning memory beside the store was written through a planted symlink.
//!
//! Not covered, on purpose: a directory of ours swapped for a symlink *during* a dispatch.
//! Our directories live in the charm dir, and whoever can rename entries there can replace
//! `dispatch.orig` itself. A `store_path` in a directory other users can write without the
//! sticky bit is the one place it would matter: files there are opened with O_NOFOLLOW and
//! refused when someone else owns them, but `<store>.inflight/` is checked, not held open, so
//! a swap between the check and the write of a started record is not defended against.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::outcome::assert_same_outcome;
use crate::util::receiver::{Answer, Receiver, TestPki};
use crate::util::{
    charm_running, chmod, code, contains, events, give_to_nobody, is_root, mode, our_lines,
    out_dir, path_str, post_json, read_text, require_root, root, set_destination, spans_named,
    text, traces_unprivileged, unprivileged, wait_for, Charm, AWAIT, NOBODY, NOISY, UNIT,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};

const HOOK: &str = "hooks/config-changed";

// ---- helpers ---------------------------------------------------------------------------------

fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

fn chown_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn mkfifo(path: &Path, mode: u32) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), mode) }, 0);
    chmod(path, mode);
}

/// A well-formed record line for an `is-leader` call by `pid`, with `nonce`.
fn record_line(nonce: &str, pid: u32) -> String {
    format!("DTR1\t{nonce}\tis-leader\t{pid}\t1700000000000000000\t1700000000001000000\tx0\t\t\t0\t\t0\n")
}

/// What another local user prepared: a script that stands in for every hook tool (it notes
/// that it ran, as the hook's user, then runs the real tool so that nothing looks amiss), and
/// directories, FIFOs and files of its own.
struct Attacker {
    dir: PathBuf,
    ran: PathBuf,
}

impl Attacker {
    fn new(charm: &Charm) -> Attacker {
        let dir = charm.scratch.path("attacker");
        std::fs::create_dir_all(&dir).unwrap();
        let ran = dir.join("ran");
        let evil = dir.join("evil");
        std::fs::write(
            &evil,
            format!(
                "#!/bin/sh\necho \"$(id -u) $0\" >> '{}'\nexec '{}'/\"${{0##*/}}\" \"$@\"\n",
                ran.display(),
                charm.tools.display()
            ),
        )
        .unwrap();
        chmod(&evil, 0o755);
        chmod(&dir, 0o777);
        chown_to_nobody(&evil);
        chown_to_nobody(&dir);
        Attacker { dir, ran }
    }

    /// A shim directory of its own at `at`: every hook tool -> the evil script, with `stamp`
    /// (what ours holds is stat data of the tools dir and the shim binary, which anyone can
    /// read, so an attacker can write the same).
    fn shims(&self, charm: &Charm, at: &Path, stamp: &[u8]) {
        std::fs::create_dir_all(at).unwrap();
        for tool in std::fs::read_dir(&charm.tools).unwrap() {
            let link = at.join(tool.unwrap().file_name());
            std::os::unix::fs::symlink(self.dir.join("evil"), &link).unwrap();
            chown_to_nobody(&link);
        }
        std::fs::write(at.join(".stamp"), stamp).unwrap();
        chown_to_nobody(&at.join(".stamp"));
        chmod(at, 0o777);
        chown_to_nobody(at);
    }

    /// The hook tools the evil script stood in for (empty: it never ran).
    fn ran(&self) -> String {
        std::fs::read_to_string(&self.ran).unwrap_or_default()
    }
}

/// The stamp of the charm's shim directory, after one dispatch made it.
fn shim_stamp(charm: &Charm) -> Vec<u8> {
    std::fs::read(charm.path(".dispatch-trace/shims/.stamp")).unwrap()
}

// ---- 1. modes and owners ---------------------------------------------------------------------

/// Everything of ours in the charm dir (what starts with `.dispatch-trace`), recursively.
fn ours(charm: &Charm) -> Vec<PathBuf> {
    fn walk(path: &Path, found: &mut Vec<PathBuf>) {
        found.push(path.to_path_buf());
        let meta = std::fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), found);
            }
        }
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&charm.dir).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".dispatch-trace")
        {
            walk(&entry.path(), &mut found);
        }
    }
    found.sort();
    found
}

/// Checks `paths` are owned by `uid`, directories 0700, everything else but symlinks 0600.
fn assert_private(paths: &[PathBuf], uid: u32, when: &str) {
    let mut wrong = Vec::new();
    for path in paths {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let (mode, kind) = (meta.mode() & 0o7777, meta.file_type());
        let wanted = if kind.is_symlink() {
            None
        } else if kind.is_dir() {
            Some(0o700)
        } else {
            Some(0o600)
        };
        if meta.uid() != uid || wanted.is_some_and(|w| w != mode) {
            wrong.push(format!("{} {mode:o} uid {}", path.display(), meta.uid()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{when}: not private to uid {uid}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_state_dir_shims_channel_and_store_are_the_hook_users_alone_even_under_umask_000() {
    // The charm looks at what the dispatch set up for it while it runs: the state dir, the
    // shim dir (first on its PATH), the FIFO, and its started record.
    let charm = charm_running(
        r#"
stat -c '%f %u %n' "$(dirname "$DISPATCH_TRACE_CHANNEL")" "${PATH%%:*}" \
    "$DISPATCH_TRACE_CHANNEL" "$JUJU_CHARM_DIR"/.dispatch-trace.db.inflight/* \
    > "$OUT/while-running" 2>&1
is-leader > /dev/null
"#,
    );
    // A problem to report, so that the memory of the last warning is written too.
    charm.write("dispatch-trace.yaml", "favourite_colour: blue\n");
    give_to_nobody(&charm);
    // The hook's user: nobody when we can be it (so "owned by the hook's user" cannot be
    // mistaken for "owned by root"), else ourselves.
    let hook_uid = if is_root() {
        NOBODY
    } else {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    };
    let dispatch = |event: &str| {
        let mut command = charm.command("dispatch", event, &[]);
        unprivileged(&mut command);
        // SAFETY: umask is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let out = command.output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        out
    };

    dispatch("hooks/install");
    let seen = read_text(&out_dir(&charm).join("while-running"));
    let mut kinds = BTreeMap::new();
    for line in seen.lines() {
        let mut fields = line.splitn(3, ' ');
        let (raw, uid, path) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap_or_else(|| panic!("{seen}")),
        );
        let raw = u32::from_str_radix(raw, 16).unwrap_or_else(|_| panic!("{seen}"));
        let kind = match raw & libc::S_IFMT {
            libc::S_IFDIR => "directory",
            libc::S_IFIFO => "fifo",
            libc::S_IFREG => "file",
            _ => "other",
        };
        let wanted = if kind == "directory" { 0o700 } else { 0o600 };
        assert_eq!(
            (raw & 0o7777, uid.parse::<u32>().unwrap()),
            (wanted, hook_uid),
            "{path} ({kind}) while the charm runs:\n{seen}"
        );
        *kinds.entry(kind).or_insert(0) += 1;
    }
    // The state dir and the shim dir, the FIFO, and at least our own started record.
    assert_eq!(kinds.get("directory"), Some(&2), "{seen}");
    assert_eq!(kinds.get("fifo"), Some(&1), "{seen}");
    assert!(kinds.get("file").is_some_and(|n| *n >= 1), "{seen}");

    let after = ours(&charm);
    for name in [
        ".dispatch-trace",
        ".dispatch-trace/shims",
        ".dispatch-trace/shims/.stamp",
        ".dispatch-trace/records",
        ".dispatch-trace/last-warning",
        ".dispatch-trace.db",
        ".dispatch-trace.db-wal",
        ".dispatch-trace.db.lock",
        ".dispatch-trace.db.inflight",
    ] {
        assert!(after.contains(&charm.path(name)), "no {name} in {after:#?}");
    }
    assert_private(&after, hook_uid, "after a dispatch under umask 000");

    // Someone opened it all up (a careless `chmod -R`, a restore from a backup): the next
    // dispatch makes it private again before using it.
    for path in &after {
        let meta = std::fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            chmod(path, 0o777);
        } else if !meta.file_type().is_symlink()
            && !path.starts_with(charm.path(".dispatch-trace/shims"))
            && !path.ends_with("last-warning")
        {
            chmod(path, 0o666);
        }
    }
    dispatch("hooks/update-status");
    assert_private(
        &ours(&charm),
        hook_uid,
        "after a dispatch found it opened up",
    );

    // A damaged store, world-readable: moved aside, and the copy kept is private too. (Without
    // its WAL, which would still hold a readable first page.)
    let store = charm.store_file();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(charm.path(&format!(".dispatch-trace.db{suffix}")));
    }
    std::fs::write(&store, vec![0x5a; 8192]).unwrap();
    chmod(&store, 0o644);
    dispatch("hooks/start");
    let after = ours(&charm);
    assert!(
        after
            .iter()
            .any(|p| p.to_string_lossy().contains(".dispatch-trace.db.corrupt-")),
        "{after:#?}"
    );
    assert_private(&after, hook_uid, "after a damaged store was moved aside");
    assert_eq!(events(&traces_unprivileged(&charm)), ["start"]);
}

// ---- 2. another local user -------------------------------------------------------------------

#[test]
fn another_user_cannot_reach_the_channel_the_shims_or_the_store_even_knowing_the_nonce() {
    require_root("acting as another local user (`nobody`)");
    let charm = charm_running(
        &[
            AWAIT,
            r#"
[ "$PHASE" = pause ] || exit 0
printf '%s' "$DISPATCH_TRACE_CHANNEL" > "$OUT/channel"
printf '%s' "$DISPATCH_TRACE_NONCE" > "$OUT/nonce"
printf '%s' "${PATH%%:*}" > "$OUT/shims"
touch "$OUT/ready"
await "$OUT/go"
is-leader > /dev/null
"#,
        ]
        .concat(),
    );
    let out = out_dir(&charm);
    // A first dispatch leaves a store for the attacker to try to read.
    assert_eq!(code(&charm.dispatch(HOOK, &[])), 0);
    let hook = charm
        .command("dispatch", HOOK, &[("PHASE", "pause")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = out.join("ready");
    wait_for(ready.display(), Duration::from_secs(20), || ready.exists());
    let channel = read_text(&out.join("channel"));
    let state = Path::new(&channel).parent().unwrap().to_path_buf();
    let shims = read_text(&out.join("shims"));
    // Even given this dispatch's nonce (which it could not read from a root process's
    // environment), `nobody` must not get a record in.
    let record = record_line(&read_text(&out.join("nonce")), 4242);
    let attack = Command::new("/bin/sh")
        .arg("-c")
        .arg(
            r#"
attempt() {
    what=$1
    shift
    if "$@" > /dev/null 2>&1; then echo "$what: done"; else echo "$what: refused"; fi
}
attempt "list the charm dir" ls "$CHARM"
attempt "read the store" cat "$CHARM/.dispatch-trace.db"
attempt "list the state dir" ls "$STATE"
attempt "write a record into the channel" timeout 5 sh -c 'printf "%s" "$RECORD" > "$CHANNEL"'
attempt "plant a file in the state dir" touch "$STATE/planted"
attempt "list the shims" ls "$SHIMS"
attempt "plant a shim" ln -s /bin/true "$SHIMS/planted"
attempt "list the started records" ls "$CHARM/.dispatch-trace.db.inflight"
attempt "plant a started record" sh -c 'printf x > "$CHARM/.dispatch-trace.db.inflight/1-1"'
"#,
        )
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CHARM", &charm.dir)
        .env("STATE", &state)
        .env("SHIMS", &shims)
        .env("CHANNEL", &channel)
        .env("RECORD", &record)
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    std::fs::write(out.join("go"), "").unwrap();
    let hooked = hook.wait_with_output().unwrap();
    assert_eq!(code(&hooked), 0, "{}", text(&hooked.stderr));

    assert_eq!(
        text(&attack.stdout),
        "list the charm dir: done\n\
         read the store: refused\n\
         list the state dir: refused\n\
         write a record into the channel: refused\n\
         plant a file in the state dir: refused\n\
         list the shims: refused\n\
         plant a shim: refused\n\
         list the started records: refused\n\
         plant a started record: refused\n",
        "{}",
        text(&attack.stderr)
    );
    let trace = charm.last_trace();
    let calls = spans_named(&trace, "is-leader");
    assert_eq!(calls.len(), 1, "{trace:#}");
    assert_ne!(calls[0]["attributes"]["process.pid"], 4242);
    assert!(root(&trace)["attributes"]["dispatch.tool_records_ignored"].is_null());
    for planted in [
        state.join("planted"),
        Path::new(&shims).join("planted"),
        charm.path(".dispatch-trace.db.inflight/1-1"),
    ] {
        assert!(!planted.exists(), "{}", planted.display());
    }
}

#[test]
fn a_state_dir_another_user_planted_is_refused_and_nothing_in_it_is_run_or_used() {
    require_root("acting as another local user (`nobody`)");
    let charm = charm_running("is-leader > /dev/null\n");
    assert_eq!(code(&charm.dispatch(HOOK, &[])), 0);
    let stamp = shim_stamp(&charm);
    std::fs::remove_dir_all(charm.path(".dispatch-trace")).unwrap();

    // `nobody` got there first: a state dir of its own, open to all, with its own shims and
    // its own FIFO.
    let attacker = Attacker::new(&charm);
    let state = charm.path(".dispatch-trace");
    std::fs::create_dir(&state).unwrap();
    attacker.shims(&charm, &state.join("shims"), &stamp);
    mkfifo(&state.join("records"), 0o666);
    chown_to_nobody(&state.join("records"));
    chmod(&state, 0o777);
    chown_to_nobody(&state);

    let traced = charm.dispatch(HOOK, NOISY);
    let bare = charm.bare(HOOK, NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(attacker.ran(), "", "the attacker's shims ran in the hook");
    let lines = our_lines(&traced.stderr);
    assert_eq!(lines.len(), 1, "{}", text(&traced.stderr));
    assert!(
        lines[0].contains(".dispatch-trace") && lines[0].contains("owned by uid 65534"),
        "{}",
        lines[0]
    );
    // Left as found, for the operator to look at.
    assert_eq!((owner(&state), mode(&state)), (NOBODY, 0o777));
    assert_eq!(owner(&state.join("records")), NOBODY);
    // The charm's run is still traced, just without its hook-tool calls.
    assert_eq!(charm.traces().len(), 2);
}

#[test]
fn a_state_dir_opened_to_others_is_closed_again_and_nothing_they_left_in_it_is_used() {
    require_root("acting as another local user (`nobody`)");
    let charm = charm_running("is-leader > /dev/null\n");
    assert_eq!(code(&charm.dispatch(HOOK, &[])), 0);
    let stamp = shim_stamp(&charm);
    let state = charm.path(".dispatch-trace");
    let started = charm.path(".dispatch-trace.db.inflight");
    // A careless chmod opened our directories to everyone, and `nobody` used the moment: in
    // a directory it may write, it can rename our shim dir away (the same parent, so no
    // permission on the directory itself is needed) and put a link to its own in its place,
    // replace our FIFO with one of its own, and leave a started record of a dispatch that
    // never was.
    chmod(&state, 0o777);
    chmod(&started, 0o777);
    let attacker = Attacker::new(&charm);
    let theirs = attacker.dir.join("shims");
    attacker.shims(&charm, &theirs, &stamp);
    std::fs::rename(state.join("shims"), state.join("shims.moved")).unwrap();
    std::os::unix::fs::symlink(&theirs, state.join("shims")).unwrap();
    chown_to_nobody(&state.join("shims"));
    std::fs::remove_file(state.join("records")).unwrap();
    mkfifo(&state.join("records"), 0o666);
    chown_to_nobody(&state.join("records"));
    let forged = started.join("1-1");
    let mut record = b"DTI1\t1\t0123456789abcdef0123456789abcdef\tforged-by-nobody\t2\n".to_vec();
    record.extend_from_slice(&[0x0a, 0x00]);
    std::fs::write(&forged, record).unwrap();
    chown_to_nobody(&forged);

    let traced = charm.dispatch(HOOK, NOISY);
    let bare = charm.bare(HOOK, NOISY);
    assert_same_outcome(&traced, &bare);
    assert_eq!(attacker.ran(), "", "the attacker's shims ran in the hook");
    let traces = charm.traces();
    assert!(
        !events(&traces).contains(&"forged-by-nobody".to_string()),
        "a started record another user wrote became a trace: {:?}",
        events(&traces)
    );
    // Our own shims and channel were used: the call is traced.
    assert_eq!(spans_named(traces.last().unwrap(), "is-leader").len(), 1);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&started), 0o700);
    let shims = std::fs::symlink_metadata(state.join("shims")).unwrap();
    assert!(shims.is_dir(), "the planted link is still our shim dir");
    assert_eq!((shims.uid(), shims.mode() & 0o7777), (0, 0o700));
    assert_eq!(
        (owner(&state.join("records")), mode(&state.join("records"))),
        (0, 0o600)
    );
    // What the attacker owns is not ours to delete.
    assert!(std::fs::read_dir(&theirs).unwrap().count() > 1);
}

#[test]
fn files_another_user_planted_beside_a_shared_store_are_never_used() {
    require_root("acting as another local user (`nobody`)");
    // The store moved into a directory others may write (charm storage set up loosely): what
    // `nobody` creates there under our names must not be taken for ours.
    for planted in ["traces.db", "traces.db.lock", "traces.db.inflight"] {
        let charm = Charm::new("shell");
        let shared = charm.scratch.path("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o777);
        charm.write(
            "dispatch-trace.yaml",
            format!("store_path: {}\n", shared.join("traces.db").display()),
        );
        let path = shared.join(planted);
        if planted.ends_with(".inflight") {
            std::fs::create_dir(&path).unwrap();
            chmod(&path, 0o700);
            std::fs::write(
                path.join("1-1"),
                b"DTI1\t1\t0123456789abcdef0123456789abcdef\tforged-by-nobody\t2\n\x0a\x00",
            )
            .unwrap();
            chown_to_nobody(&path.join("1-1"));
        } else {
            std::fs::write(&path, b"").unwrap();
            chmod(&path, 0o666);
        }
        chown_to_nobody(&path);

        let traced = charm.dispatch(HOOK, NOISY);
        let bare = charm.bare(HOOK, NOISY);
        assert_same_outcome(&traced, &bare);
        let lines = our_lines(&traced.stderr);
        assert_eq!(lines.len(), 1, "{planted}: {}", text(&traced.stderr));
        assert!(
            lines[0].contains(planted) && lines[0].contains("owned by uid 65534"),
            "{planted}: {}",
            lines[0]
        );
        assert_eq!(owner(&path), NOBODY, "{planted}");
        if planted == "traces.db" {
            assert_eq!(
                std::fs::read(&path).unwrap(),
                b"",
                "traces went into a file another user owns"
            );
        } else {
            let traces = charm.traces();
            assert_eq!(events(&traces), ["config-changed"], "{planted}");
        }
    }
}

// ---- 3. symlinks -----------------------------------------------------------------------------

/// Every file under `dir` with its contents and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64, i64)> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(snapshot(&path));
            found.insert(path, (Vec::new(), meta.mtime(), meta.mtime_nsec()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            found.insert(path, (bytes, meta.mtime(), meta.mtime_nsec()));
        }
    }
    found
}

#[test]
fn symlinks_planted_where_we_create_or_write_are_refused_and_their_targets_left_alone() {
    // (case, link relative to the scratch root, its target relative to `elsewhere`, what our
    // line names). The store lives in `shared/`, a directory others may write; the state dir
    // in the charm dir.
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "state dir -> a directory",
            "charm/.dispatch-trace",
            "dir",
            ".dispatch-trace",
        ),
        (
            "state dir -> nowhere",
            "charm/.dispatch-trace",
            "nowhere",
            ".dispatch-trace",
        ),
        (
            "dispatch lock -> a file",
            "shared/traces.db.lock",
            "canary",
            "traces.db.lock",
        ),
        (
            "started records -> a directory",
            "shared/traces.db.inflight",
            "dir",
            "traces.db.inflight",
        ),
        (
            // Without a usable state dir, the last warning is remembered beside the store.
            "last warning -> a file",
            "shared/traces.db.last-warning",
            "canary",
            ".dispatch-trace",
        ),
    ];
    for (case, link, target, named) in cases {
        let charm = Charm::new("shell");
        let shared = charm.scratch.path("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o777);
        charm.write(
            "dispatch-trace.yaml",
            format!("store_path: {}\n", shared.join("traces.db").display()),
        );
        let elsewhere = charm.scratch.path("elsewhere");
        std::fs::create_dir_all(elsewhere.join("dir")).unwrap();
        std::fs::write(elsewhere.join("canary"), b"precious\n").unwrap();
        std::fs::write(elsewhere.join("dir/canary"), b"precious too\n").unwrap();
        if case.starts_with("last warning") {
            charm.write(".dispatch-trace", "a file where our state dir should be\n");
        }
        let link = charm.scratch.path(link);
        std::os::unix::fs::symlink(elsewhere.join(target), &link).unwrap();
        let before = snapshot(&elsewhere);

        let traced = charm.dispatch(HOOK, NOISY);
        let bare = charm.bare(HOOK, NOISY);
        assert_same_outcome(&traced, &bare);
        assert_eq!(
            snapshot(&elsewhere),
            before,
            "{case}: the link was followed"
        );
        let lines = our_lines(&traced.stderr);
        assert_eq!(lines.len(), 1, "{case}: {}", text(&traced.stderr));
        assert!(lines[0].contains(named), "{case}: {}", lines[0]);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            elsewhere.join(target),
            "{case}: the link itself is left for the operator to look at"
        );
        // The same again (the line is not repeated, which takes remembering it): still not
        // followed.
        let traced = charm.dispatch(HOOK, NOISY);
        assert_same_outcome(&traced, &bare);
        assert_eq!(
            snapshot(&elsewhere),
            before,
            "{case}: the link was followed"
        );
    }
}

// ---- 4. nonces -------------------------------------------------------------------------------

#[test]
fn records_with_an_empty_altered_or_earlier_dispatchs_nonce_are_ignored() {
    let charm = charm_running(
        r#"
forge() {
    printf 'DTR1\t%s\tis-leader\t%s\t1700000000000000000\t1700000000001000000\tx0\t\t\t0\t\t0\n' \
        "$1" "$2" > "$DISPATCH_TRACE_CHANNEL"
}
printf '%s' "$DISPATCH_TRACE_NONCE" > "$OUT/nonce-$PHASE"
if [ "$PHASE" = second ]; then
    n=$DISPATCH_TRACE_NONCE
    forge "" 4001
    forge "${n}0" 4002
    forge "${n%?}" 4003
    forge " $n" 4004
    forge "$(cat "$OUT/nonce-first")" 4005
    forge "$n" 4242
fi
"#,
    );
    for phase in ["first", "second"] {
        let out = charm.dispatch(HOOK, &[("PHASE", phase)]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }
    let out = out_dir(&charm);
    assert_ne!(
        read_text(&out.join("nonce-first")),
        read_text(&out.join("nonce-second")),
        "each dispatch has its own nonce"
    );
    let trace = charm.last_trace();
    let pids: Vec<&Value> = spans_named(&trace, "is-leader")
        .iter()
        .map(|s| &s["attributes"]["process.pid"])
        .collect();
    assert_eq!(pids, [&json!(4242)], "only the exact nonce counts");
    assert_eq!(
        root(&trace)["attributes"]["dispatch.tool_records_ignored"],
        5
    );
}

/// Posts an OTLP/JSON request with one span `name` to `path` on `port`; returns the status.
fn post_span(port: u16, path: &str, traceparent: &str, name: &str, span_id: u64) -> u16 {
    let mut parts = traceparent.split('-');
    let (trace_id, parent) = (parts.nth(1).unwrap(), parts.next().unwrap());
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace_id, "spanId": format!("{span_id:016x}"), "parentSpanId": parent,
        "name": name, "startTimeUnixNano": "1", "endTimeUnixNano": "2"
    }]}]}]})
    .to_string();
    post_json(port, path, &body)
}

#[test]
fn the_span_listener_takes_spans_only_at_this_dispatchs_exact_nonce_path() {
    let charm = charm_running(
        &[
            AWAIT,
            r#"
printf '%s\n%s\n%s\n' "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" "$DISPATCH_TRACE_NONCE" \
    "$TRACEPARENT" > "$OUT/endpoint.tmp"
mv "$OUT/endpoint.tmp" "$OUT/endpoint-$PHASE"
[ "$PHASE" = second ] && await "$OUT/go"
exit 0
"#,
        ]
        .concat(),
    );
    let out = out_dir(&charm);
    assert_eq!(code(&charm.dispatch(HOOK, &[("PHASE", "first")])), 0);
    let earlier = read_text(&out.join("endpoint-first"))
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let hook = charm
        .command("dispatch", HOOK, &[("PHASE", "second")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let endpoint = out.join("endpoint-second");
    wait_for(endpoint.display(), Duration::from_secs(20), || {
        endpoint.exists()
    });
    let seen = read_text(&out.join("endpoint-second"));
    let lines: Vec<&str> = seen.lines().collect();
    let (endpoint, n, traceparent) = (lines[0], lines[1], lines[2]);
    let port: u16 = endpoint
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{endpoint}"));
    assert_eq!(endpoint, format!("http://127.0.0.1:{port}/{n}/v1/traces"));

    let wrong = [
        format!("/v1/traces?nonce={n}"),
        format!("/v1/traces/{n}"),
        format!("/x/{n}/v1/traces"),
        format!("//{n}/v1/traces"),
        format!("/{n}/v1/traces/"),
        format!("/{n}/v1/../v1/traces"),
        format!("/{n}0/v1/traces"),
        format!("/{}/v1/traces", &n[1..]),
        format!("/{earlier}/v1/traces"),
    ];
    let mut answers = Vec::new();
    for (i, path) in wrong.iter().enumerate() {
        let status = post_span(
            port,
            path,
            traceparent,
            &format!("intruder-{i}"),
            i as u64 + 1,
        );
        answers.push(format!("{path} {status}"));
    }
    let legit = post_span(port, &format!("/{n}/v1/traces"), traceparent, "legit", 99);
    std::fs::write(out.join("go"), "").unwrap();
    let hooked = hook.wait_with_output().unwrap();
    assert_eq!(code(&hooked), 0, "{}", text(&hooked.stderr));

    let expected: Vec<String> = wrong.iter().map(|p| format!("{p} 404")).collect();
    assert_eq!(answers, expected);
    assert_eq!(legit, 200);
    let trace = charm.last_trace();
    let names: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("intruder") || *n == "legit")
        .collect();
    assert_eq!(names, ["legit"]);
    assert_eq!(
        root(&trace)["attributes"]["dispatch.custom_requests_refused"],
        wrong.len()
    );
}

// ---- 5. secrets ------------------------------------------------------------------------------

const SECRET_ID: &str = "secret:cafe0000000000000000";

/// (what, canary, shell command). Canaries reach the tools as `key=value` arguments of the
/// value-writing tools, on stdin, as log text, or come back on a tool's stdout; these extend
/// the set in `hook_tools.rs` to the other tools and forms that carry them.
const CANARIES: &[(&str, &str, &str)] = &[
    (
        "relation-set argument",
        "S3CR3T-relation-set-51f0",
        "relation-set -r db:1 password=S3CR3T-relation-set-51f0",
    ),
    (
        "relation-set --app stdin",
        "S3CR3T-relation-set-stdin-8a2c",
        "printf 'token: S3CR3T-relation-set-stdin-8a2c\\n' | relation-set -r db:1 --app --file -",
    ),
    (
        "leader-set argument",
        "S3CR3T-leader-set-0d4e",
        "leader-set admin-password=S3CR3T-leader-set-0d4e",
    ),
    (
        "state-set stdin",
        "S3CR3T-state-set-stdin-77b1",
        "printf 'token: S3CR3T-state-set-stdin-77b1\\n' | state-set --file -",
    ),
    (
        "action-set nested argument",
        "S3CR3T-action-set-3c9a",
        "action-set result.password=S3CR3T-action-set-3c9a",
    ),
    (
        "secret-add base64 argument",
        "S3CR3T-secret-add-e61d",
        r#"secret-add --label "fresh-$$" 'cert#base64=S3CR3T-secret-add-e61d' > "$OUT/new-secret""#,
    ),
    (
        "secret-set stdin",
        "S3CR3T-secret-set-stdin-29fe",
        r#"printf 'password: S3CR3T-secret-set-stdin-29fe\n' | secret-set "$(cat "$OUT/new-secret")" --file -"#,
    ),
    (
        "secret-set argument",
        "S3CR3T-secret-set-6b13",
        r#"secret-set "$(cat "$OUT/new-secret")" password=S3CR3T-secret-set-6b13"#,
    ),
    (
        "juju-log text after --",
        "S3CR3T-juju-log-c0a7",
        "juju-log --log-level WARNING -- S3CR3T-juju-log-c0a7",
    ),
    (
        "action-log text",
        "S3CR3T-action-log-4f58",
        "action-log S3CR3T-action-log-4f58",
    ),
    (
        "relation-get stdout",
        "S3CR3T-relation-get-9d21",
        r#"relation-get -r db:1 - remote/0 > "$OUT/relation-get.out""#,
    ),
    (
        "leader-get stdout",
        "S3CR3T-leader-get-1e6b",
        r#"leader-get admin > "$OUT/leader-get.out""#,
    ),
    (
        "config-get stdout",
        "S3CR3T-config-get-a3f4",
        r#"config-get api-token > "$OUT/config-get.out""#,
    ),
    (
        "state-get stdout",
        "S3CR3T-state-get-5c80",
        r#"state-get > "$OUT/state-get.out""#,
    ),
    (
        "action-get stdout",
        "S3CR3T-action-get-e0d9",
        r#"action-get > "$OUT/action-get.out""#,
    ),
    (
        "secret-get stdout",
        "S3CR3T-secret-get-7a1b",
        r#"secret-get secret:cafe0000000000000000 > "$OUT/secret-get.out""#,
    ),
    (
        "credential-get stdout",
        "S3CR3T-credential-get-2d6c",
        r#"credential-get --format=json > "$OUT/credential-get.out""#,
    ),
];

fn secrets_charm() -> Charm {
    let script: String = CANARIES
        .iter()
        .map(|(what, _, command)| format!("{command}\necho \"{what}: $?\" >> \"$OUT/codes\"\n"))
        .collect();
    let charm = charm_running(&script);
    let state = json!({
        "unit": UNIT,
        "leader": true,
        "config": {"api-token": "S3CR3T-config-get-a3f4"},
        "leader_data": {"admin": "S3CR3T-leader-get-1e6b"},
        "unit_state": {"api-key": "S3CR3T-state-get-5c80"},
        "action_params": {"secret": "S3CR3T-action-get-e0d9"},
        "relations": {"db": {"db:1": {
            "app": "remote",
            "units": ["remote/0"],
            "data": {
                "remote/0": {"password": "S3CR3T-relation-get-9d21"},
                "remote": {}, "myapp/0": {}, "myapp": {}
            }
        }}},
        "secrets": {SECRET_ID: {
            "label": "db-pass",
            "content": {"password": "S3CR3T-secret-get-7a1b"},
            "revision": 1,
            "owner": "application"
        }},
        "credential": {"type": "fake", "name": "cloud", "credential": {
            "auth-type": "userpass",
            "attributes": {"username": "admin", "password": "S3CR3T-credential-get-2d6c"}
        }}
    });
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
    charm
}

/// Runs the canary charm and checks every secret really went through a tool.
fn run_secrets(charm: &Charm) -> Output {
    let _ = std::fs::remove_file(out_dir(charm).join("codes"));
    let out = charm.dispatch(
        "hooks/db-relation-changed",
        &[
            ("JUJU_RELATION", "db"),
            ("JUJU_RELATION_ID", "db:1"),
            ("JUJU_REMOTE_UNIT", "remote/0"),
            ("JUJU_REMOTE_APP", "remote"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let codes = read_text(&out_dir(charm).join("codes"));
    let expected: String = CANARIES
        .iter()
        .map(|(what, _, _)| format!("{what}: 0\n"))
        .collect();
    assert_eq!(codes, expected, "a tool call failed");
    let calls = read_text(&charm.state.join("calls.jsonl"));
    for (what, canary, command) in CANARIES {
        let seen = match command.split("\"$OUT/").nth(1) {
            Some(file) if what.ends_with("stdout") => {
                read_text(&out_dir(charm).join(file.trim_end_matches('"')))
            }
            _ => calls.clone(),
        };
        assert!(seen.contains(canary), "{what}: {canary} never went through");
    }
    out
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The canary as it would look raw, in hex, or in base64 at any alignment (each suffix whose
/// length is a multiple of three encodes the same wherever a base64 stream starts it).
fn encodings(canary: &str) -> Vec<String> {
    const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = canary.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![canary.to_string(), hex.clone(), hex.to_uppercase()];
    for skip in 0..3 {
        let whole = (bytes.len() - skip) / 3 * 3;
        for alphabet in [STANDARD, URL_SAFE] {
            forms.push(base64(&bytes[skip..skip + whole], alphabet));
        }
    }
    forms
}

/// The tool-mode commands that show what is stored or shipped, searched for secrets.
const SHOWING_COMMANDS: &[&[&str]] = &[
    &["status"],
    &["flush"],
    &["traces", "--last", "0"],
    &["traces", "--last", "0", "--format", "json"],
    &["traces", "--last", "0", "--format", "otlp-json"],
];

#[test]
fn no_secret_reaches_the_wire_status_flush_or_any_file_of_ours_in_any_encoding() {
    let charm = secrets_charm();
    let receiver = Receiver::start(vec![Answer::ok()]);
    set_destination(&charm, &[&receiver.url()]);

    // Shipped once as protobuf, once as OTLP/JSON.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let first = run_secrets(&charm);
    charm.write("dispatch-trace.yaml", "protocol: http/json\n");
    let second = run_secrets(&charm);
    for (n, run) in [first, second].iter().enumerate() {
        places.push((format!("dispatch {n} stdout"), run.stdout.clone()));
        places.push((format!("dispatch {n} stderr"), run.stderr.clone()));
    }
    let requests = receiver.requests();
    let types: Vec<Option<&str>> = requests.iter().map(|r| r.header("content-type")).collect();
    assert_eq!(
        types,
        [Some("application/x-protobuf"), Some("application/json")]
    );
    for (n, request) in requests.iter().enumerate() {
        places.push((format!("request {n} on the wire"), request.body.clone()));
    }
    // The protobuf decoded (a plain read of its strings, whatever the framing).
    let decoded = ExportTraceServiceRequest::decode(requests[0].body.as_slice()).unwrap();
    let decoded = format!("{decoded:?}").into_bytes();
    assert!(
        contains(&decoded, "password=<redacted>"),
        "the request holds the tool spans"
    );
    assert!(contains(&requests[1].body, "password=<redacted>"));
    places.push(("the decoded protobuf request".into(), decoded));

    for args in SHOWING_COMMANDS {
        let out = charm.tool(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        places.push((format!("dispatch {}", args.join(" ")), out.stdout));
        places.push((format!("dispatch {} stderr", args.join(" ")), out.stderr));
    }
    // Every file of ours: the store, its WAL and shared memory, the lock, started records,
    // the state dir (the FIFO is not a regular file; what it carried is what was stored).
    let files: Vec<PathBuf> = ours(&charm)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
        .collect();
    assert!(files.contains(&charm.store_file()));
    assert!(files.contains(&charm.path(".dispatch-trace.db-wal")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        places.push((file.display().to_string(), bytes));
    }

    for (what, canary, _) in CANARIES {
        for form in encodings(canary) {
            for (place, bytes) in &places {
                assert!(
                    !contains(bytes, &form),
                    "{what}: {canary} (as {form}) is in {place}"
                );
            }
        }
    }
}

/// Every file of ours in the charm dir, with its bytes.
fn files_of_ours(charm: &Charm) -> Vec<(String, Vec<u8>)> {
    ours(charm)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Where a canary was found, in any encoding, among `places`.
fn found_in(places: &[(String, Vec<u8>)], canary: &str) -> Vec<String> {
    let mut found = Vec::new();
    for form in encodings(canary) {
        for (place, bytes) in places {
            if contains(bytes, &form) {
                found.push(format!("{place} ({form})"));
            }
        }
    }
    found
}

#[test]
fn a_credential_in_the_destination_is_never_shown_and_no_copy_outlives_its_use() {
    const USER: &str = "us3r-CANARY-8c1f";
    const PASSWORD: &str = "p4ss-CANARY-31d7";
    const TOKEN: &str = "t0ken-CANARY-a9e2";
    let charm = Charm::new("shell");
    // It takes one trace, then refuses with 401 (a credential gone stale).
    let receiver = Receiver::start(vec![
        Answer::ok(),
        Answer::Status(401, vec![], b"no".to_vec()),
    ]);
    let url = format!(
        "http://{USER}:{PASSWORD}@127.0.0.1:{}/v1/traces?token={TOKEN}&tenant=a",
        receiver.port
    );
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |what: &str, out: &Output| {
        places.push((format!("{what} stdout"), out.stdout.clone()));
        places.push((format!("{what} stderr"), out.stderr.clone()));
    };
    let set = charm.tool(&["set-destination", &url]);
    assert_eq!(code(&set), 0, "{}", text(&set.stderr));
    assert_eq!(
        text(&set.stdout),
        format!(
            "destination set to http://<credentials>@127.0.0.1:{}/v1/traces?token=<redacted>&tenant=<redacted>\n",
            receiver.port
        )
    );
    keep("set-destination", &set);
    let shipped = charm.dispatch("hooks/install", &[]);
    assert_eq!(code(&shipped), 0, "{}", text(&shipped.stderr));
    keep("the hook that shipped", &shipped);
    let refused = charm.dispatch("hooks/config-changed", &[]);
    assert_eq!(code(&refused), 0);
    assert_eq!(our_lines(&refused.stderr).len(), 1, "the 401 is said once");
    keep("the hook that was refused", &refused);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].path.contains(TOKEN),
        "the token is what is sent"
    );
    for args in SHOWING_COMMANDS
        .iter()
        .chain([&["check-config"][..]].iter())
    {
        keep(&format!("dispatch {}", args.join(" ")), &charm.tool(args));
    }
    let status = text(&charm.tool(&["status"]).stdout);
    assert!(status.contains("<credentials>@127.0.0.1"), "{status}");
    assert!(
        status.contains("rejected the traces with HTTP 401"),
        "{status}"
    );
    for canary in [USER, PASSWORD, TOKEN] {
        assert_eq!(
            found_in(&places, canary),
            Vec::<String>::new(),
            "{canary} was shown"
        );
    }
    // While in use, the credential is kept where it is needed to send, and nowhere else: in
    // the store (the destination setting), which only the hook's user can read.
    let stored: Vec<String> = found_in(&files_of_ours(&charm), PASSWORD)
        .into_iter()
        .filter(|place| !place.contains(".dispatch-trace.db"))
        .collect();
    assert_eq!(stored, Vec::<String>::new());

    // Replaced: no file of ours holds the old one any more, the WAL included.
    let other = format!("http://127.0.0.1:{}/v1/traces", receiver.port);
    set_destination(&charm, &[&other]);
    for canary in [USER, PASSWORD, TOKEN] {
        assert_eq!(
            found_in(&files_of_ours(&charm), canary),
            Vec::<String>::new(),
            "{canary} outlived set-destination"
        );
    }
    // Set again, used by a hook, then cleared: gone again.
    set_destination(&charm, &[&url]);
    assert_eq!(code(&charm.dispatch("hooks/update-status", &[])), 0);
    assert!(
        !found_in(&files_of_ours(&charm), PASSWORD).is_empty(),
        "in use"
    );
    let cleared = charm.tool(&["clear-destination"]);
    assert_eq!(code(&cleared), 0, "{}", text(&cleared.stderr));
    for canary in [USER, PASSWORD, TOKEN] {
        assert_eq!(
            found_in(&files_of_ours(&charm), canary),
            Vec::<String>::new(),
            "{canary} outlived clear-destination"
        );
    }
}

// ---- 6. TLS ----------------------------------------------------------------------------------

/// Declares the tracing and certificate_transfer endpoints and relates to an https provider at
/// `receiver`, whose receiver entry carries `extra` keys, and (with `ca`) to a CA provider
/// whose app databag is `ca`.
fn relate_https(charm: &Charm, receiver: &Receiver, extra: Value, ca: Option<Value>) {
    charm.write(
        "metadata.yaml",
        "name: shell-charm\nrequires:\n  charm-tracing:\n    interface: tracing\n    limit: 1\n  receive-ca-cert:\n    interface: certificate_transfer\n    limit: 1\n",
    );
    let mut entry = json!({
        "protocol": {"name": "otlp_http", "type": "http"},
        "url": format!("https://127.0.0.1:{}", receiver.port),
    });
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    let mut relations = json!({
        "charm-tracing": {"charm-tracing:3": {
            "app": "tempo",
            "units": ["tempo/0"],
            "data": {
                "tempo": {"receivers": json!([entry]).to_string(), "insecure": "true"},
                "tempo/0": {}, "myapp": {}, "myapp/0": {}
            }
        }}
    });
    if let Some(ca) = ca {
        relations["receive-ca-cert"] = json!({"receive-ca-cert:4": {
            "app": "ca",
            "units": ["ca/0"],
            "data": {"ca": ca, "ca/0": {}, "myapp": {}, "myapp/0": {}}
        }});
    }
    let state = json!({"unit": UNIT, "leader": true, "relations": relations});
    std::fs::write(charm.state.join("state.json"), state.to_string()).unwrap();
}

type Setup = Box<dyn Fn(&Charm, &Receiver, &TestPki) -> Vec<(String, String)>>;

/// A case's set-up: whatever it writes, and the hook's extra environment it returns.
fn setup(f: impl Fn(&Charm, &Receiver, &TestPki) -> Vec<(String, String)> + 'static) -> Setup {
    Box::new(f)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_endpoint(receiver: &Receiver, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = env(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        receiver.https_url().as_str(),
    )]);
    all.extend(env(pairs));
    all
}

#[test]
fn no_input_from_the_operator_juju_or_a_relation_turns_tls_verification_off() {
    let pki = TestPki::new();
    // A server whose certificate nothing here trusts (its CA is nowhere but in `pki`).
    let receiver = Receiver::start_tls(vec![Answer::ok()], &pki);
    let file = |charm: &Charm, name: &str, contents: &str| -> String {
        let path = charm.scratch.path(name);
        std::fs::write(&path, contents).unwrap();
        path_str(&path).to_string()
    };
    // (case, what our one line must say (`None`: nothing to say, traces wait for a CA),
    // set-up).
    let cases: Vec<(&str, Option<&str>, Setup)> = vec![
        (
            "OTEL_EXPORTER_OTLP_INSECURE and OTEL_EXPORTER_OTLP_TRACES_INSECURE",
            Some("TLS"),
            setup(|_, r, _| {
                with_endpoint(
                    r,
                    &[
                        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
                        ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),
                    ],
                )
            }),
        ),
        (
            "other programs' switches",
            Some("TLS"),
            setup(|_, r, _| {
                with_endpoint(
                    r,
                    &[
                        ("NODE_TLS_REJECT_UNAUTHORIZED", "0"),
                        ("PYTHONHTTPSVERIFY", "0"),
                        ("CURL_CA_BUNDLE", ""),
                        ("REQUESTS_CA_BUNDLE", ""),
                        ("SSL_NO_VERIFY", "1"),
                        ("GIT_SSL_NO_VERIFY", "true"),
                    ],
                )
            }),
        ),
        (
            "an empty OTEL_EXPORTER_OTLP_CERTIFICATE",
            Some("TLS"),
            setup(|_, r, _| with_endpoint(r, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "")])),
        ),
        (
            "/dev/null as OTEL_EXPORTER_OTLP_CERTIFICATE",
            Some("holds no PEM certificate"),
            setup(|_, r, _| with_endpoint(r, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/dev/null")])),
        ),
        (
            "the server's own certificate as the CA",
            Some("TLS"),
            setup(move |c, r, p| {
                let leaf = file(c, "leaf.pem", &p.server_cert_pem);
                with_endpoint(r, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", leaf.as_str())])
            }),
        ),
        (
            "a private key as the CA",
            Some("holds no PEM certificate"),
            setup(move |c, r, p| {
                let key = file(c, "key.pem", &p.server_key_pem);
                with_endpoint(r, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", key.as_str())])
            }),
        ),
        (
            "SSL_CERT_FILE and SSL_CERT_DIR pointing at nothing",
            Some("no CA certificates"),
            setup(|_, r, _| {
                with_endpoint(
                    r,
                    &[
                        ("SSL_CERT_FILE", "/dev/null"),
                        ("SSL_CERT_DIR", "/nonexistent"),
                    ],
                )
            }),
        ),
        (
            "an https URL with its scheme in capitals",
            Some("TLS"),
            setup(|_, r, _| {
                env(&[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    r.https_url().replacen("https", "HTTPS", 1).as_str(),
                )])
            }),
        ),
        (
            "verification keys in the config file",
            Some("TLS"),
            setup(|c, r, _| {
                set_destination(c, &[&r.https_url()]);
                c.write(
                    "dispatch-trace.yaml",
                    "insecure: true\ntls_verify: false\nverify: false\n",
                );
                Vec::new()
            }),
        ),
        (
            "/dev/null as the config file's ca_file",
            Some("holds no PEM certificate"),
            setup(|c, r, _| {
                c.write(
                    "dispatch-trace.yaml",
                    format!("endpoint: {}\nca_file: /dev/null\n", r.https_url()),
                );
                Vec::new()
            }),
        ),
        (
            "the server's own certificate given to set-destination",
            Some("TLS"),
            setup(move |c, r, p| {
                let leaf = file(c, "leaf.pem", &p.server_cert_pem);
                set_destination(c, &[&r.https_url(), "--ca-file", &leaf]);
                Vec::new()
            }),
        ),
        (
            "a tracing provider asking for no verification, no CA relation",
            Some("TLS"),
            setup(|c, r, _| {
                relate_https(
                    c,
                    r,
                    json!({"insecure": true, "tls": {"insecure_skip_verify": true}}),
                    None,
                );
                Vec::new()
            }),
        ),
        (
            "a CA relation that sends the server's own certificate",
            Some("TLS"),
            setup(|c, r, p| {
                let certificates = json!([p.server_cert_pem]).to_string();
                relate_https(
                    c,
                    r,
                    json!({"insecure": true}),
                    Some(json!({"certificates": certificates})),
                );
                Vec::new()
            }),
        ),
        (
            // No CA yet, as far as we can tell: traces wait for one (not an error).
            "a CA relation whose certificate is not one",
            None,
            setup(|c, r, _| {
                let certificates = json!(["not a certificate", "insecure"]).to_string();
                relate_https(
                    c,
                    r,
                    json!({"insecure": true}),
                    Some(json!({"certificates": certificates})),
                );
                Vec::new()
            }),
        ),
        (
            "Juju's trace config with an empty CA",
            Some("TLS"),
            setup(|_, r, _| {
                let base = format!("https://127.0.0.1:{}", r.port);
                env(&[
                    ("JUJU_CHARM_TRACE_CONFIG_HTTP", base.as_str()),
                    ("JUJU_CHARM_TRACE_CONFIG_CA_CERT", ""),
                ])
            }),
        ),
        (
            "Juju's trace config with a CA that says insecure",
            Some("insecure"),
            setup(|_, r, _| {
                let base = format!("https://127.0.0.1:{}", r.port);
                env(&[
                    ("JUJU_CHARM_TRACE_CONFIG_HTTP", base.as_str()),
                    ("JUJU_CHARM_TRACE_CONFIG_CA_CERT", "insecure"),
                ])
            }),
        ),
    ];
    for (case, says, setup) in &cases {
        let charm = Charm::new("shell");
        let extra = setup(&charm, &receiver, &pki);
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (&**k, &**v)).collect();
        let out = charm.dispatch("hooks/install", &extra);
        assert_eq!(code(&out), 0, "{case}: {}", text(&out.stderr));
        assert!(
            receiver.requests().is_empty(),
            "{case}: a request reached a server nothing trusts"
        );
        let lines = our_lines(&out.stderr);
        match says {
            Some(says) => {
                assert_eq!(lines.len(), 1, "{case}: {}", text(&out.stderr));
                assert!(
                    lines[0].contains("cannot ship traces") && lines[0].contains(says),
                    "{case}: {}",
                    lines[0]
                );
                let status = text(&charm.tool(&["status"]).stdout);
                let last = status.lines().find(|l| l.starts_with("last export:"));
                assert!(last.is_some_and(|l| l.contains(says)), "{case}: {status}");
            }
            None => {
                assert!(lines.is_empty(), "{case}: {}", text(&out.stderr));
                let status = text(&charm.tool(&["status"]).stdout);
                assert!(
                    status.contains("waiting for the CA certificate"),
                    "{case}: {status}"
                );
            }
        }
        assert_eq!(charm.last_trace()["state"], "pending", "{case}");
    }

    // set-destination has no option to skip verification, and refuses a CA that is none.
    let charm = Charm::new("shell");
    for flag in ["--insecure", "-k", "--no-verify", "--tls-verify=false"] {
        let out = charm.tool(&["set-destination", &receiver.https_url(), flag]);
        assert_eq!(code(&out), 2, "{flag}: {}", text(&out.stderr));
    }
    let key = charm.scratch.path("key.pem");
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    let out = charm.tool(&[
        "set-destination",
        &receiver.https_url(),
        "--ca-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(text(&charm.tool(&["status"]).stdout).contains("destination: none"));

    // The same server is reached with its real CA: nothing above failed for another reason.
    let ca = charm.scratch.path("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let out = charm.dispatch(
        "hooks/install",
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &receiver.https_url()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
        ],
    );
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(receiver.requests().len(), 1);
}
