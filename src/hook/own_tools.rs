//! The wrapper's own hook-tool calls: reading the `tracing` and `certificate_transfer`
//! relations and, as leader, publishing our side (DESIGN §3). They run Juju's real tools by
//! absolute path (the shims are only on the charm's `PATH`), are recorded like a shim records
//! a call (redacted, as tool spans under the root span, since they are part of the hook), and
//! all of them in one dispatch share `OWN_CALLS_BUDGET`: a tool that hangs (an agent in
//! trouble) must not hold the hook up on our account. Which calls happen on which events is
//! `relation`'s business (README, *Relations, with no code in the charm*).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::juju::HookEnv;
use crate::relation;
use crate::trace::spans;

/// The relation being broken in a `<endpoint>-relation-broken` event: gone, not to be read.
pub fn broken_relation(env: &HookEnv) -> Option<String> {
    env.event_name()
        .ends_with("-relation-broken")
        .then(|| env.get("JUJU_RELATION_ID").map(String::from))
        .flatten()
}

/// Runs Juju's real hook tools for the wrapper's own calls, and records each like a shim
/// would (redacted), so they appear in the trace under the root span.
pub struct HookTools {
    tools_dir: PathBuf,
    traceparent: String,
    pub records: Vec<dispatch_shim::Record>,
    spent: Duration,
    /// `relation-ids` answers, failures included (`None`): relation ids do not change within
    /// a hook, publishing and discovering (before and after the charm) all need them, and a
    /// tool that failed or timed out once would only cost the hook again.
    relation_ids: Vec<(String, Option<Vec<u8>>)>,
}

impl HookTools {
    pub fn new(tools_dir: &Path, traceparent: String) -> HookTools {
        HookTools {
            tools_dir: tools_dir.to_path_buf(),
            traceparent,
            records: Vec::new(),
            spent: Duration::ZERO,
            relation_ids: Vec::new(),
        }
    }
}

impl relation::Tools for HookTools {
    fn run(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
        if tool != "relation-ids" {
            return self.run_traced(tool, args);
        }
        let question = args.join(" ");
        if let Some((_, known)) = self.relation_ids.iter().find(|(q, _)| *q == question) {
            return known.clone();
        }
        let stdout = self.run_traced(tool, args);
        self.relation_ids.push((question, stdout.clone()));
        stdout
    }
}

impl HookTools {
    /// Runs a tool within what is left of `OWN_CALLS_BUDGET`, recording it as a tool span.
    fn run_traced(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
        let start = spans::time_to_unix_nanos(SystemTime::now());
        let left = OWN_CALLS_BUDGET.saturating_sub(self.spent);
        let begun = Instant::now();
        let outcome = if left.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            run_bounded(&self.tools_dir.join(tool), args, left)
        };
        self.spent += begun.elapsed();
        let end = spans::time_to_unix_nanos(SystemTime::now());
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let summary = dispatch_shim::summarize_args(tool, &raw, false);
        let (call_end, stdout) = match outcome {
            Ok((status, stdout)) => match status.code() {
                Some(code) => (
                    dispatch_shim::CallEnd::Exited(code),
                    (code == 0).then_some(stdout),
                ),
                None => (
                    dispatch_shim::CallEnd::Signaled(
                        std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
                    ),
                    None,
                ),
            },
            Err(e) => (
                dispatch_shim::CallEnd::SpawnFailed(e.raw_os_error().unwrap_or(libc::ETIMEDOUT)),
                None,
            ),
        };
        self.records.push(dispatch_shim::Record {
            nonce: String::new(),
            tool: tool.to_string(),
            pid: 0,
            start_unix_nanos: start,
            end_unix_nanos: end,
            end: call_end,
            traceparent: self.traceparent.clone(),
            log_level: summary.log_level,
            log_length: summary.log_length,
            log_text: String::new(),
            arg_count: args.len(),
            args: summary.args,
        });
        stdout
    }
}

/// All of the wrapper's own hook-tool calls in one dispatch share this much time: a hook tool
/// that hangs (an agent in trouble) must not hold the hook up on our account.
const OWN_CALLS_BUDGET: Duration = Duration::from_secs(5);

/// Runs a tool with its stdout captured, killing it if it outlives `limit`.
fn run_bounded(
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>)> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Read on a thread so a large answer cannot fill the pipe while we wait.
    let mut pipe = child.stdout.take();
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.read_to_end(&mut out);
        }
        let _ = sender.send(out);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // Not a join: a process the tool left behind may hold its stdout open. Past the deadline
    // the reader is abandoned (it ends with the wrapper) and the call counts as timed out.
    let left = deadline.saturating_duration_since(Instant::now());
    let stdout = answer
        .recv_timeout(left)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    Ok((status, stdout))
}
