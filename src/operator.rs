//! The one stderr line the operator may get from a dispatch (DESIGN §2).
//!
//! Juju logs a hook's stderr at WARNING, and during actions it lands in the action's results,
//! so we write only for a problem the operator can act on, in one line, never during an
//! action, and not again while the cause is unchanged: what the last line said is remembered
//! in the state directory and a repeat is suppressed. A repeat is the same kinds of problem,
//! not the same words: a line whose count or time changes with every hook (records dropped, a
//! store damaged again) is still a repeat. A dispatch without problems forgets it, so a
//! problem that comes back is reported again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file in the state directory that remembers the last line said.
pub const LAST_WARNING: &str = "last-warning";

/// One of our own problems in a dispatch. Every phase adds its own to the dispatch's list;
/// they are reported once, at the end (`Operator::report`), and go on the root span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub text: String,
    /// What makes it the same problem as last time: its kind, for a problem whose words change
    /// from hook to hook with the same cause; else (`None`) the words themselves.
    pub kind: Option<&'static str>,
    pub audience: Audience,
}

/// Who a problem is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Something the operator can act on: their one stderr line (DESIGN §2), and the trace
    /// (`dispatch.problems`).
    Operator,
    /// Only the trace, under its own attribute: nothing to act on (a loopback listener that
    /// could not be opened in a network namespace without one, say).
    Trace(&'static str),
}

impl Problem {
    /// A problem whose words vary (a count, a time) while its cause does not.
    pub fn of_kind(kind: &'static str, text: impl Into<String>) -> Problem {
        Problem {
            text: text.into(),
            kind: Some(kind),
            audience: Audience::Operator,
        }
    }

    /// A problem for the trace only, as the root span's attribute `attribute`.
    pub fn for_the_trace(attribute: &'static str, text: impl Into<String>) -> Problem {
        Problem {
            text: text.into(),
            kind: None,
            audience: Audience::Trace(attribute),
        }
    }

    fn key(&self) -> &str {
        self.kind.unwrap_or(&self.text)
    }
}

impl From<String> for Problem {
    fn from(text: String) -> Problem {
        Problem {
            text,
            kind: None,
            audience: Audience::Operator,
        }
    }
}

/// The words of the operator's problems, for the root span's `dispatch.problems`.
pub fn texts(problems: &[Problem]) -> Vec<String> {
    operators(problems).map(|p| p.text.clone()).collect()
}

/// The words of the trace-only problem kept as the root span's `attribute`, if any.
pub fn for_the_trace(problems: &[Problem], attribute: &str) -> Option<String> {
    problems
        .iter()
        .find(|p| matches!(p.audience, Audience::Trace(name) if name == attribute))
        .map(|p| p.text.clone())
}

fn operators(problems: &[Problem]) -> impl Iterator<Item = &Problem> {
    problems.iter().filter(|p| p.audience == Audience::Operator)
}

pub struct Operator {
    memory: Option<PathBuf>,
    silent: bool,
}

impl Operator {
    /// `memory` is the file where the last line is remembered (`None`: not remembered);
    /// `silent` during actions.
    pub fn new(memory: Option<&Path>, silent: bool) -> Operator {
        Operator {
            memory: memory.map(Path::to_path_buf),
            silent,
        }
    }

    /// Tells the operator about `problems` (joined into one line), or forgets the last
    /// warning when there are none.
    pub fn report(&self, problems: &[Problem]) {
        self.say(problems, true);
    }

    /// Like `report`, for problems that fail the hook: said even when the last line was the
    /// same, since every failed hook must explain itself in the log.
    pub fn report_failure(&self, problems: &[Problem]) {
        self.say(problems, false);
    }

    fn say(&self, problems: &[Problem], suppress_repeat: bool) {
        let problems: Vec<Problem> = operators(problems).cloned().collect();
        let problems = &problems[..];
        if problems.is_empty() {
            if let Some(memory) = &self.memory {
                let _ = std::fs::remove_file(memory);
            }
            return;
        }
        if self.silent {
            // Nothing was said, so nothing is remembered as said.
            return;
        }
        let line = format!(
            "dispatch: {}\n",
            texts(problems).join("; ").replace('\n', " ")
        );
        let said: String = problems.iter().map(|p| format!("{}\n", p.key())).collect();
        if let Some(memory) = &self.memory {
            if suppress_repeat && std::fs::read(memory).is_ok_and(|last| last == said.as_bytes()) {
                return;
            }
            // Beside the store when there is no state dir, maybe in a directory others can
            // write: never through a link they planted, and private whatever the umask.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(memory)
                .and_then(|mut file| file.write_all(said.as_bytes()));
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    #[test]
    fn a_problem_whose_count_changes_is_still_a_repeat_but_another_cause_is_not() {
        let scratch = Scratch::new("operator");
        let memory = scratch.path("last-warning");
        let operator = Operator::new(Some(&memory), false);
        let dropped = |n: u32| {
            Problem::of_kind(
                "records-dropped",
                format!("{n} hook-tool call records were dropped"),
            )
        };
        let said = |problems: &[Problem]| {
            let before = std::fs::read(&memory).ok();
            operator.report(problems);
            std::fs::read(&memory).ok() != before || before.is_none()
        };
        assert!(said(&[dropped(3)]));
        assert!(!said(&[dropped(7)]), "a new count is the same problem");
        let other: Problem = "the config file is bad".to_string().into();
        assert!(said(&[dropped(7), other.clone()]), "another problem joined");
        assert!(!said(&[dropped(9), other]));
        operator.report(&[]);
        assert!(!memory.exists(), "a clean dispatch forgets");
        assert!(said(&[dropped(1)]), "back again after a clean dispatch");
    }

    #[test]
    fn a_problem_for_the_trace_never_reaches_the_operators_line() {
        let scratch = Scratch::new("operator-trace");
        let memory = scratch.path("last-warning");
        let operator = Operator::new(Some(&memory), false);
        let trace_only = Problem::for_the_trace("dispatch.x_error", "cannot listen");
        operator.report(std::slice::from_ref(&trace_only));
        assert!(
            !memory.exists(),
            "nothing was said, so nothing is remembered"
        );
        let problems = [trace_only, "the config file is bad".to_string().into()];
        assert_eq!(texts(&problems), ["the config file is bad"]);
        assert_eq!(
            for_the_trace(&problems, "dispatch.x_error").as_deref(),
            Some("cannot listen")
        );
        assert_eq!(for_the_trace(&problems, "dispatch.other"), None);
    }
}
