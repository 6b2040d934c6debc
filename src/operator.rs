//! The one stderr line the operator may get from a dispatch (DESIGN §2).
//!
//! Juju logs a hook's stderr at WARNING, and during actions it lands in the action's results,
//! so we write only for a problem the operator can act on, in one line, never during an
//! action, and not again while the cause is unchanged: the last line written is remembered in
//! the state directory and a repeat is suppressed. A dispatch without problems forgets it, so
//! a problem that comes back is reported again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file in the state directory that remembers the last line said.
pub const LAST_WARNING: &str = "last-warning";

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
    pub fn report(&self, problems: &[String]) {
        self.say(problems, true);
    }

    /// Like `report`, for problems that fail the hook: said even when the last line was the
    /// same, since every failed hook must explain itself in the log.
    pub fn report_failure(&self, problems: &[String]) {
        self.say(problems, false);
    }

    fn say(&self, problems: &[String], suppress_repeat: bool) {
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
        let line = format!("dispatch: {}\n", problems.join("; ").replace('\n', " "));
        if let Some(memory) = &self.memory {
            if suppress_repeat && std::fs::read(memory).is_ok_and(|last| last == line.as_bytes()) {
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
                .and_then(|mut file| file.write_all(line.as_bytes()));
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
