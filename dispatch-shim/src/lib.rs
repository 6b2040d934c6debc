//! The contract between `dispatch` and `dispatch-shim`: the environment variables the wrapper
//! hands to the charm, the hook tools that get a shim, how arguments are redacted, and the
//! one-line record a shim writes to the wrapper's channel for every hook-tool call.
//!
//! Both binaries link this file, so the record format has exactly one definition. It is a text
//! line of tab-separated fields (tabs, newlines and backslashes escaped) so a record can be read
//! by a person with `cat` when debugging, and it is capped at [`MAX_RECORD`] bytes, below
//! PIPE_BUF, because the kernel only promises that a FIFO write of at most PIPE_BUF bytes is
//! atomic: records from concurrent tool calls then never interleave.
//!
//! Secrets never enter a record: `key=value` arguments of the tools that write data (DESIGN §2)
//! keep their key only, and free text given to `juju-log`/`action-log` is reduced to its length
//! unless the charm's config opted in. Tool stdin and stdout are never looked at.

pub mod child;
pub mod relay;

/// Absolute path of the directory holding Juju's real hook tools.
pub const ENV_TOOLS_DIR: &str = "DISPATCH_TRACE_TOOLS";
/// Path of the record channel (a FIFO).
pub const ENV_CHANNEL: &str = "DISPATCH_TRACE_CHANNEL";
/// Per-dispatch nonce; records without it are ignored by the wrapper.
pub const ENV_NONCE: &str = "DISPATCH_TRACE_NONCE";
/// Set to `1` when the config opts in to recording `juju-log` message text.
pub const ENV_LOG_TEXT: &str = "DISPATCH_TRACE_LOG_TEXT";
/// Set to `1` when a charm's uncaught exception is to be kept for its trace
/// (`record_exceptions`, on by default).
pub const ENV_EXCEPTIONS: &str = "DISPATCH_TRACE_EXCEPTIONS";
/// Recursion backstop: how many shims are already on the call stack.
pub const ENV_DEPTH: &str = "DISPATCH_TRACE_DEPTH";
/// Deepest shim nesting tolerated before a shim refuses to run (a misconfigured tools dir that
/// points back at the shims would otherwise loop forever).
pub const MAX_DEPTH: u32 = 4;

/// Records are written with one `write(2)`; Linux's PIPE_BUF is 4096.
pub const MAX_RECORD: usize = 4000;
/// Longest single argument kept in a record, in bytes.
pub const MAX_ARG: usize = 256;
/// Budget for all arguments of one record together, in bytes.
pub const MAX_ARGS_TOTAL: usize = 2400;
/// Longest log message text kept when the config opts in.
pub const MAX_LOG_TEXT: usize = 512;

/// How ops reports an uncaught exception: one `juju-log --log-level ERROR` call whose message
/// is this line, then the traceback (`ops.log.setup_root_logging`). A shim seeing that call
/// leaves the message beside the channel (`EXCEPTION_SUFFIX`), because a record cannot hold
/// it; the wrapper reads it when the charm has failed.
pub const OPS_UNCAUGHT_EXCEPTION: &str = "Uncaught exception while in charm code:";
/// The file beside the record channel holding the last uncaught exception: this dispatch's
/// nonce on the first line, then the message as ops logged it.
pub const EXCEPTION_SUFFIX: &str = ".exception";

/// Record format tag; bump when the field list changes.
pub const RECORD_TAG: &str = "DTR1";

/// Juju 3.6 hook tool names (plus `add-metric`, gone in 3.6.10). Only names on this list get a
/// shim; anything else in the tools dir is left alone.
pub const HOOK_TOOLS: &[&str] = &[
    "action-fail",
    "action-get",
    "action-log",
    "action-set",
    "add-metric",
    "application-version-set",
    "close-port",
    "config-get",
    "credential-get",
    "goal-state",
    "is-leader",
    "juju-log",
    "juju-reboot",
    "k8s-raw-get",
    "k8s-raw-set",
    "k8s-spec-get",
    "k8s-spec-set",
    "leader-get",
    "leader-set",
    "network-get",
    "open-port",
    "opened-ports",
    "payload-register",
    "payload-status-set",
    "payload-unregister",
    "pod-spec-get",
    "pod-spec-set",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-model-get",
    "relation-set",
    "resource-get",
    "secret-add",
    "secret-get",
    "secret-grant",
    "secret-ids",
    "secret-info-get",
    "secret-remove",
    "secret-revoke",
    "secret-set",
    "state-delete",
    "state-get",
    "state-set",
    "status-get",
    "status-set",
    "storage-add",
    "storage-get",
    "storage-list",
    "unit-get",
];

pub fn is_hook_tool(name: &str) -> bool {
    HOOK_TOOLS.binary_search(&name).is_ok()
}

/// Tools whose `key=value` arguments carry data that may be secret (DESIGN §2).
const VALUE_REDACTED_TOOLS: &[&str] = &[
    "action-set",
    "leader-set",
    "relation-set",
    "secret-add",
    "secret-set",
    "state-set",
];

/// Tools whose positional arguments are free text (a log line): recorded as a length only.
const FREE_TEXT_TOOLS: &[&str] = &["action-log", "juju-log"];

/// Tools that change something in the model; a dispatch that called one is kept longer.
const STATE_CHANGING_TOOLS: &[&str] = &[
    "action-fail",
    "action-set",
    "application-version-set",
    "close-port",
    "juju-reboot",
    "k8s-raw-set",
    "k8s-spec-set",
    "leader-set",
    "open-port",
    "payload-register",
    "payload-status-set",
    "payload-unregister",
    "pod-spec-set",
    "relation-set",
    "secret-add",
    "secret-grant",
    "secret-remove",
    "secret-revoke",
    "secret-set",
    "state-delete",
    "state-set",
    "status-set",
    "storage-add",
];

pub fn changes_state(tool: &str) -> bool {
    STATE_CHANGING_TOOLS.contains(&tool)
}

/// What is shown instead of a redacted value.
pub const REDACTED: &str = "<redacted>";

/// How a tool call ended, as the shim saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    Exited(i32),
    Signaled(i32),
    /// The real tool could not be started (errno); the shim exited 127.
    SpawnFailed(i32),
}

/// One hook-tool call as reported by a shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub nonce: String,
    pub tool: String,
    pub pid: u32,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub end: CallEnd,
    /// The `TRACEPARENT` the shim found in its own environment, if any.
    pub traceparent: String,
    /// `juju-log` level, when the call is a log call.
    pub log_level: String,
    /// Length in bytes of the free text of a log call.
    pub log_length: usize,
    /// Message text, only when the charm's config opted in.
    pub log_text: String,
    /// Number of arguments the tool got (after argv[0]), before any were cut.
    pub arg_count: usize,
    /// Redacted and bounded arguments (after argv[0]).
    pub args: Vec<String>,
}

/// Redacts and bounds the arguments of one tool call, and pulls out the log level, the
/// length of free text and (with `keep_log_text`) the text itself.
pub fn summarize_args<'a>(tool: &str, args: &[&'a [u8]], keep_log_text: bool) -> ArgSummary<'a> {
    let redact_values = VALUE_REDACTED_TOOLS.contains(&tool);
    let free_text = FREE_TEXT_TOOLS.contains(&tool);
    let mut summary = ArgSummary {
        log_level: String::new(),
        log_length: 0,
        log_text: String::new(),
        args: Vec::new(),
        message: Vec::new(),
    };
    let mut text_parts: Vec<&[u8]> = Vec::new();
    let mut expect_level = false;
    // After `--` every argument is positional, whatever it starts with (ops passes log
    // messages as `juju-log --log-level LEVEL -- message`).
    let mut flags_done = false;
    let mut total = 0usize;
    let mut kept_all = true;
    for &raw in args {
        let is_flag = !flags_done && raw.starts_with(b"-") && raw.len() > 1;
        let shown: Vec<u8> = if !flags_done && raw == b"--" {
            flags_done = true;
            raw.to_vec()
        } else if free_text {
            if expect_level {
                expect_level = false;
                summary.log_level = lossy(raw);
                raw.to_vec()
            } else if is_flag && (raw == b"-l" || raw == b"--log-level") {
                expect_level = true;
                raw.to_vec()
            } else if let Some(level) = raw
                .strip_prefix(b"--log-level=")
                .or_else(|| raw.strip_prefix(b"-l="))
                .filter(|_| is_flag)
            {
                summary.log_level = lossy(level);
                raw.to_vec()
            } else if is_flag && raw == b"--debug" {
                summary.log_level = "DEBUG".to_string();
                raw.to_vec()
            } else if is_flag && is_known_flag(raw, LOG_FLAGS) {
                raw.to_vec()
            } else {
                // Anything else, even if it looks like a flag, is message text (Juju would
                // reject an unknown flag, but the text is in our hands before it does).
                text_parts.push(raw);
                format!("<{} bytes>", raw.len()).into_bytes()
            }
        } else if redact_values && !(is_flag && is_known_flag(raw, VALUE_TOOL_FLAGS)) {
            match raw.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let mut v = raw[..eq + 1].to_vec();
                    v.extend_from_slice(REDACTED.as_bytes());
                    v
                }
                None => raw.to_vec(),
            }
        } else {
            raw.to_vec()
        };
        if !kept_all {
            continue;
        }
        let arg = bounded(&shown, MAX_ARG);
        if total + arg.len() > MAX_ARGS_TOTAL {
            kept_all = false;
            continue;
        }
        total += arg.len();
        summary.args.push(arg);
    }
    if free_text {
        if summary.log_level.is_empty() && tool == "juju-log" {
            summary.log_level = "INFO".to_string();
        }
        // Juju joins the message words with spaces.
        summary.log_length =
            text_parts.iter().map(|p| p.len()).sum::<usize>() + text_parts.len().saturating_sub(1);
        if keep_log_text {
            let joined = text_parts.join(&b' ');
            summary.log_text = bounded(&joined, MAX_LOG_TEXT);
        }
        summary.message = text_parts;
    }
    summary
}

/// The message of a `juju-log` call that reports an uncaught exception the way ops does
/// (`OPS_UNCAUGHT_EXCEPTION` at ERROR), whole, as Juju would log it.
pub fn uncaught_exception(tool: &str, summary: &ArgSummary) -> Option<Vec<u8>> {
    if tool != "juju-log" || summary.log_level != "ERROR" {
        return None;
    }
    let first = summary.message.first()?;
    first
        .starts_with(OPS_UNCAUGHT_EXCEPTION.as_bytes())
        .then(|| summary.message.join(&b' '))
}

/// Flags of `juju-log`/`action-log` that are kept as they are.
const LOG_FLAGS: &[&str] = &["-l", "--log-level", "--debug", "--format", "-h", "--help"];

/// Flags (with or without `=value`) of the value-writing tools that are kept as they are;
/// their values are paths, ids and labels, not data.
const VALUE_TOOL_FLAGS: &[&str] = &[
    "-r",
    "--relation",
    "--app",
    "--file",
    "--format",
    "--label",
    "--description",
    "--expire",
    "--rotate",
    "--owner",
    "-h",
    "--help",
];

/// Whether `raw` is one of `flags`, alone or as `flag=value`.
fn is_known_flag(raw: &[u8], flags: &[&str]) -> bool {
    let name = raw.split(|&b| b == b'=').next().unwrap_or_default();
    flags.iter().any(|f| f.as_bytes() == name)
}

pub struct ArgSummary<'a> {
    pub log_level: String,
    pub log_length: usize,
    pub log_text: String,
    pub args: Vec<String>,
    /// The free text of a log call, as given (never recorded: see `uncaught_exception`).
    pub message: Vec<&'a [u8]>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Lossy UTF-8, cut at `max` bytes on a character boundary with a marker saying how much went.
fn bounded(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...(+{} bytes)", &text[..cut], text.len() - cut)
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn escape_into(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

impl Record {
    /// The record as one line, newline included, at most [`MAX_RECORD`] bytes: arguments are
    /// dropped from the end (the count still says how many there were) until it fits.
    pub fn encode(&self) -> Vec<u8> {
        let mut args = self.args.len();
        loop {
            let line = self.encode_with_args(args);
            // The newline makes it one byte longer.
            if line.len() < MAX_RECORD || args == 0 {
                let mut bytes = line.into_bytes();
                bytes.truncate(MAX_RECORD - 1);
                bytes.push(b'\n');
                return bytes;
            }
            args -= 1;
        }
    }

    fn encode_with_args(&self, args: usize) -> String {
        let end = match self.end {
            CallEnd::Exited(code) => format!("x{code}"),
            CallEnd::Signaled(sig) => format!("s{sig}"),
            CallEnd::SpawnFailed(errno) => format!("e{errno}"),
        };
        let mut line = String::with_capacity(256);
        let fields: [&str; 3] = [RECORD_TAG, &self.nonce, &self.tool];
        for f in fields {
            escape_into(&mut line, f);
            line.push('\t');
        }
        line.push_str(&format!(
            "{}\t{}\t{}\t{}\t",
            self.pid, self.start_unix_nanos, self.end_unix_nanos, end
        ));
        // Both come from the caller's environment or arguments: bounded so that a record
        // always has room for its fixed fields.
        escape_into(&mut line, cut(&self.traceparent, 128));
        line.push('\t');
        escape_into(&mut line, cut(&self.log_level, 32));
        line.push('\t');
        line.push_str(&self.log_length.to_string());
        line.push('\t');
        escape_into(&mut line, &self.log_text);
        line.push('\t');
        line.push_str(&self.arg_count.to_string());
        for arg in &self.args[..args] {
            line.push('\t');
            escape_into(&mut line, arg);
        }
        line
    }

    /// Parses one line (without its newline). `None` for anything that is not a well-formed
    /// record of this format version.
    pub fn decode(line: &[u8]) -> Option<Record> {
        let line = std::str::from_utf8(line).ok()?;
        let mut fields = line.split('\t');
        if fields.next()? != RECORD_TAG {
            return None;
        }
        let nonce = unescape(fields.next()?);
        let tool = unescape(fields.next()?);
        let pid = fields.next()?.parse().ok()?;
        let start_unix_nanos = fields.next()?.parse().ok()?;
        let end_unix_nanos = fields.next()?.parse().ok()?;
        let end_field = fields.next()?;
        let (kind, number) = end_field.split_at_checked(1)?;
        let number: i32 = number.parse().ok()?;
        let end = match kind {
            "x" => CallEnd::Exited(number),
            "s" => CallEnd::Signaled(number),
            "e" => CallEnd::SpawnFailed(number),
            _ => return None,
        };
        let traceparent = unescape(fields.next()?);
        let log_level = unescape(fields.next()?);
        let log_length = fields.next()?.parse().ok()?;
        let log_text = unescape(fields.next()?);
        let arg_count = fields.next()?.parse().ok()?;
        let args = fields.map(unescape).collect();
        if !is_hook_tool(&tool) {
            return None;
        }
        Some(Record {
            nonce,
            tool,
            pid,
            start_unix_nanos,
            end_unix_nanos,
            end,
            traceparent,
            log_level,
            log_length,
            log_text,
            arg_count,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            nonce: "abc123".into(),
            tool: "relation-set".into(),
            pid: 42,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_100_000_000,
            end: CallEnd::Exited(0),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            log_level: String::new(),
            log_length: 0,
            log_text: String::new(),
            arg_count: 3,
            args: vec![
                "-r".into(),
                "db:1".into(),
                "weird\targ\nwith\\escapes".into(),
            ],
        }
    }

    #[test]
    fn hook_tool_list_is_sorted_for_binary_search() {
        let mut sorted = HOOK_TOOLS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, HOOK_TOOLS);
    }

    #[test]
    fn record_round_trips_through_its_line_form() {
        let record = sample();
        let line = record.encode();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let decoded = Record::decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(decoded, record);
    }

    #[test]
    fn every_end_kind_round_trips() {
        for end in [
            CallEnd::Exited(2),
            CallEnd::Signaled(9),
            CallEnd::SpawnFailed(2),
        ] {
            let record = Record { end, ..sample() };
            let line = record.encode();
            assert_eq!(Record::decode(&line[..line.len() - 1]).unwrap().end, end);
        }
    }

    #[test]
    fn oversized_records_drop_arguments_to_stay_atomic() {
        let record = Record {
            args: vec!["x".repeat(MAX_ARG); 40],
            arg_count: 40,
            ..sample()
        };
        let line = record.encode();
        assert!(line.len() <= MAX_RECORD);
        let decoded = Record::decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(decoded.arg_count, 40);
        assert!(decoded.args.len() < 40);
    }

    #[test]
    fn huge_environment_fields_cannot_push_a_record_past_pipe_buf() {
        let record = Record {
            traceparent: "x".repeat(10_000),
            log_level: "y".repeat(10_000),
            args: vec!["a".repeat(MAX_ARG); 20],
            arg_count: 20,
            ..sample()
        };
        let line = record.encode();
        assert!(line.len() <= MAX_RECORD);
        assert!(Record::decode(&line[..line.len() - 1]).is_some());
    }

    #[test]
    fn garbage_and_unknown_tools_are_not_records() {
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(b"DTR1\tonly\tthree"), None);
        assert_eq!(Record::decode(&[0xff, 0xfe, b'\t']), None);
        let mut record = sample();
        record.tool = "rm".into();
        let line = record.encode();
        assert_eq!(Record::decode(&line[..line.len() - 1]), None);
    }

    #[test]
    fn relation_set_values_are_redacted_but_keys_and_flags_kept() {
        let args: Vec<&[u8]> = vec![
            b"-r",
            b"db:1",
            b"password=hunter2",
            b"--file",
            b"-",
            b"empty=",
        ];
        let summary = summarize_args("relation-set", &args, false);
        assert_eq!(
            summary.args,
            [
                "-r",
                "db:1",
                "password=<redacted>",
                "--file",
                "-",
                "empty=<redacted>"
            ]
        );
    }

    #[test]
    fn every_value_writing_tool_redacts_key_value_arguments() {
        for tool in VALUE_REDACTED_TOOLS {
            let summary = summarize_args(tool, &[b"k=CANARY"], false);
            assert_eq!(summary.args, ["k=<redacted>"], "{tool}");
        }
    }

    #[test]
    fn other_tools_keep_their_arguments() {
        let summary = summarize_args("relation-get", &[b"-r", b"db:1", b"-", b"app/0"], false);
        assert_eq!(summary.args, ["-r", "db:1", "-", "app/0"]);
    }

    #[test]
    fn juju_log_keeps_level_and_length_but_not_text() {
        let summary = summarize_args(
            "juju-log",
            &[b"--log-level", b"WARNING", b"secret", b"words"],
            false,
        );
        assert_eq!(summary.log_level, "WARNING");
        assert_eq!(summary.log_length, "secret words".len());
        assert!(summary.log_text.is_empty());
        assert_eq!(
            summary.args,
            ["--log-level", "WARNING", "<6 bytes>", "<5 bytes>"]
        );
    }

    #[test]
    fn juju_log_text_is_kept_when_opted_in() {
        let summary = summarize_args("juju-log", &[b"-l", b"DEBUG", b"hello", b"world"], true);
        assert_eq!(summary.log_level, "DEBUG");
        assert_eq!(summary.log_text, "hello world");
    }

    #[test]
    fn juju_log_text_after_double_dash_is_text_even_with_a_leading_dash() {
        let summary = summarize_args(
            "juju-log",
            &[b"--log-level", b"DEBUG", b"--", b"-> CANARY", b"--debug"],
            false,
        );
        assert_eq!(summary.log_level, "DEBUG");
        assert_eq!(
            summary.args,
            ["--log-level", "DEBUG", "--", "<9 bytes>", "<7 bytes>"]
        );
        assert_eq!(summary.log_length, "-> CANARY --debug".len());
    }

    #[test]
    fn juju_log_level_with_short_flag_and_equals_is_read() {
        assert_eq!(
            summarize_args("juju-log", &[b"-l=ERROR", b"x"], false).log_level,
            "ERROR"
        );
    }

    #[test]
    fn values_after_double_dash_are_redacted_whatever_they_start_with() {
        let summary = summarize_args("relation-set", &[b"--", b"-k=CANARY"], false);
        assert_eq!(summary.args, ["--", "-k=<redacted>"]);
    }

    #[test]
    fn unknown_dash_arguments_are_text_or_redacted_not_kept() {
        let log = summarize_args("juju-log", &[b"-----BEGIN KEY----- SECRET"], false);
        assert_eq!(log.args, ["<26 bytes>"]);
        assert_eq!(log.log_length, 26);
        let set = summarize_args(
            "relation-set",
            &[b"-password=hunter2", b"--file=x.yaml", b"-r=db:1"],
            false,
        );
        assert_eq!(
            set.args,
            ["-password=<redacted>", "--file=x.yaml", "-r=db:1"]
        );
    }

    #[test]
    fn juju_log_defaults_to_info_level() {
        assert_eq!(
            summarize_args("juju-log", &[b"hi"], false).log_level,
            "INFO"
        );
    }

    #[test]
    fn long_arguments_are_cut_with_a_marker() {
        let long = vec![b'a'; 1000];
        let summary = summarize_args("config-get", &[&long], false);
        assert!(summary.args[0].starts_with(&"a".repeat(MAX_ARG)));
        assert!(summary.args[0].ends_with("...(+744 bytes)"));
    }

    #[test]
    fn only_ops_uncaught_exception_message_at_error_is_an_exception() {
        let message = b"Uncaught exception while in charm code:\nTraceback...\nKeyError: 'x'";
        let call = |tool: &str, args: &[&[u8]]| {
            uncaught_exception(tool, &summarize_args(tool, args, false))
        };
        let logged = call("juju-log", &[b"--log-level", b"ERROR", b"--", message]);
        assert_eq!(logged.as_deref(), Some(&message[..]));
        // ops' own spelling, and the short flag; Juju joins the words of a message.
        let split = call(
            "juju-log",
            &[
                b"-l=ERROR",
                b"Uncaught exception while in charm code:",
                b"x",
            ],
        );
        assert_eq!(
            split.as_deref(),
            Some(&b"Uncaught exception while in charm code: x"[..])
        );
        assert_eq!(
            call("juju-log", &[b"--log-level", b"WARNING", b"--", message]),
            None
        );
        assert_eq!(
            call("juju-log", &[b"--log-level", b"ERROR", b"--", b"other"]),
            None
        );
        assert_eq!(call("action-log", &[message]), None);
    }

    #[test]
    fn total_argument_budget_is_enforced() {
        let arg = vec![b'b'; MAX_ARG];
        let args: Vec<&[u8]> = (0..100).map(|_| arg.as_slice()).collect();
        let summary = summarize_args("config-get", &args, false);
        let total: usize = summary.args.iter().map(String::len).sum();
        assert!(total <= MAX_ARGS_TOTAL);
        assert!(summary.args.len() < 100);
    }
}
