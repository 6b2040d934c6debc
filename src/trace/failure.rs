//! Why a hook failed, in words the trace can carry (README, *Why a hook failed*).
//!
//! An ops charm that raises reports the exception through `juju-log` at ERROR: one call whose
//! message is `Uncaught exception while in charm code:` and then Python's traceback
//! (`ops.log.setup_root_logging`). The shim leaves that message beside the record channel
//! (`intercept::channel`); when the charm then fails, it becomes an OpenTelemetry `exception`
//! event on the `charm` span with the semantic conventions' `exception.type`,
//! `exception.message` and `exception.stacktrace`, as ops[tracing] records an exception on
//! its span. The traceback is cut to its last `MAX_STACKTRACE` bytes: the frames nearest the
//! error, and the exception itself, are at its end.

use std::time::SystemTime;

use opentelemetry::trace::Event;
use opentelemetry::KeyValue;

/// The most of a traceback kept on a span.
pub const MAX_STACKTRACE: usize = 16 * 1024;

/// An exception as the semantic conventions describe one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// The exception's class, qualified as Python prints it (`ValueError`,
    /// `ops.model.ModelError`); empty when the text names none.
    pub kind: String,
    pub message: String,
    pub stacktrace: String,
}

impl Exception {
    /// The exception in a message ops logged (`dispatch_shim::OPS_UNCAUGHT_EXCEPTION`, then the
    /// traceback); `None` when no traceback follows.
    pub fn from_ops_log(logged: &str) -> Option<Exception> {
        let (_, traceback) = logged.split_once('\n')?;
        let traceback = traceback.trim_end();
        if traceback.trim().is_empty() {
            return None;
        }
        let (kind, message) = last_exception(traceback);
        Some(Exception {
            kind,
            message,
            stacktrace: tail(traceback, MAX_STACKTRACE),
        })
    }

    /// `Type: message`, or whichever of the two there is: how a person reads it in a list.
    pub fn summary(&self) -> String {
        match (self.kind.is_empty(), self.message.is_empty()) {
            (false, false) => format!("{}: {}", self.kind, self.message),
            (false, true) => self.kind.clone(),
            _ => self.message.clone(),
        }
    }

    /// The span event (`exception`, at `time`).
    pub fn event(&self, time: SystemTime) -> Event {
        let mut attributes = Vec::with_capacity(3);
        if !self.kind.is_empty() {
            attributes.push(KeyValue::new("exception.type", self.kind.clone()));
        }
        attributes.push(KeyValue::new("exception.message", self.message.clone()));
        attributes.push(KeyValue::new(
            "exception.stacktrace",
            self.stacktrace.clone(),
        ));
        Event::new("exception", time, attributes, 0)
    }
}

/// The type and message of the exception a Python traceback ends with: the first line at the
/// left margin after its last `Traceback (most recent call last):` (frames are indented; a
/// chained exception's traceback comes last), with the lines after it (a message of several
/// lines, notes). Without such a header, the last line.
fn last_exception(traceback: &str) -> (String, String) {
    let lines: Vec<&str> = traceback.lines().collect();
    let header = lines
        .iter()
        .rposition(|line| line.starts_with("Traceback (most recent call last):"));
    let exception_lines: &[&str] = match header {
        Some(header) => {
            let after = &lines[header + 1..];
            match after
                .iter()
                .position(|line| !line.starts_with([' ', '\t']) && !line.is_empty())
            {
                Some(first) => &after[first..],
                // Cut before the exception (ops splits a message over 128 KiB): the last line.
                None => &lines[lines.len() - 1..],
            }
        }
        None => &lines[lines.len().saturating_sub(1)..],
    };
    let text = exception_lines.join("\n");
    let text = text.trim();
    let first_line = text.lines().next().unwrap_or_default();
    let (head, rest) = match first_line.split_once(':') {
        Some((head, _)) => (head, text[head.len() + 1..].trim_start_matches(' ')),
        None => (first_line, ""),
    };
    if is_class_name(head) {
        (head.to_string(), rest.to_string())
    } else {
        (String::new(), text.to_string())
    }
}

/// `ValueError`, `ops.model.ModelError`, `__main__.Boom`: a dotted Python name.
fn is_class_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The last `max` bytes of `text` (from a character boundary), marked as cut when they are
/// not all of it.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[{start} bytes cut]\n{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGGED: &str = "Uncaught exception while in charm code:\n\
        Traceback (most recent call last):\n  \
        File \"/var/lib/juju/agents/unit-web-0/charm/./src/charm.py\", line 93, in <module>\n    \
        ops.main(OpsCharm)\n  \
        File \"/var/lib/juju/agents/unit-web-0/charm/./src/charm.py\", line 60, in _port\n    \
        raise ValueError(f\"invalid port {port}: must be 1-65535\")\n\
        ValueError: invalid port 0: must be 1-65535";

    #[test]
    fn an_ops_traceback_gives_type_message_and_stacktrace() {
        let exception = Exception::from_ops_log(LOGGED).unwrap();
        assert_eq!(exception.kind, "ValueError");
        assert_eq!(exception.message, "invalid port 0: must be 1-65535");
        assert!(exception
            .stacktrace
            .starts_with("Traceback (most recent call last):\n  File"));
        assert!(exception.stacktrace.ends_with("must be 1-65535"));
        assert_eq!(
            exception.summary(),
            "ValueError: invalid port 0: must be 1-65535"
        );
    }

    #[test]
    fn a_chained_exception_is_the_last_one_and_keeps_its_lines() {
        let logged = "Uncaught exception while in charm code:\n\
            Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\n\
            KeyError: 'port'\n\n\
            During handling of the above exception, another exception occurred:\n\n\
            Traceback (most recent call last):\n  File \"a.py\", line 3, in h\n    \
            raise ops.model.ModelError(msg)\n\
            ops.model.ModelError: ERROR permission denied\nsecond line";
        let exception = Exception::from_ops_log(logged).unwrap();
        assert_eq!(exception.kind, "ops.model.ModelError");
        assert_eq!(exception.message, "ERROR permission denied\nsecond line");
        assert!(exception.stacktrace.contains("KeyError: 'port'"));
    }

    #[test]
    fn an_exception_without_a_message_or_a_readable_type_still_says_something() {
        let bare = "Uncaught exception while in charm code:\n\
            Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nKeyboardInterrupt";
        let exception = Exception::from_ops_log(bare).unwrap();
        assert_eq!(
            (exception.kind.as_str(), exception.message.as_str()),
            ("KeyboardInterrupt", "")
        );
        let odd = "Uncaught exception while in charm code:\nsomething went wrong: badly";
        let exception = Exception::from_ops_log(odd).unwrap();
        assert_eq!(exception.kind, "");
        assert_eq!(exception.message, "something went wrong: badly");
        assert_eq!(
            Exception::from_ops_log("Uncaught exception while in charm code:"),
            None
        );
        assert_eq!(
            Exception::from_ops_log("Uncaught exception while in charm code:\n \n"),
            None
        );
    }

    #[test]
    fn a_long_traceback_keeps_its_end() {
        let frames = "  File \"x.py\", line 1, in f\n    f()\n".repeat(2000);
        let logged = format!(
            "Uncaught exception while in charm code:\nTraceback (most recent call last):\n\
             {frames}RecursionError: maximum recursion depth exceeded"
        );
        let exception = Exception::from_ops_log(&logged).unwrap();
        assert_eq!(exception.kind, "RecursionError");
        assert!(exception.stacktrace.len() <= MAX_STACKTRACE + 32);
        assert!(exception.stacktrace.starts_with('['));
        assert!(exception
            .stacktrace
            .ends_with("maximum recursion depth exceeded"));
        assert_eq!(tail("héllo", 4), "[3 bytes cut]\nllo");
    }
}
