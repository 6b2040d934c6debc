//! Tool mode: `dispatch <command>`, run by a person (`juju ssh`, `juju exec`) or a test.
//! Juju never passes arguments, so any argument means tool mode.
//!
//! The store is found from the binary's own directory, so the commands work from any cwd.
//! Bad usage prints a clear message and exits 2; other failures exit 1.
// Tool mode prints: it (with its submodules) is the one place in `dispatch` allowed to write
// to stdout.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

mod check;
mod control;
mod follow;
mod help;
pub mod human;
mod locate;
mod status;
mod summary;
mod traces;
pub mod tree;
pub mod view;

use std::ffi::OsString;
use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use help::{command_help, usage_text, COMMANDS};
use locate::{another_users_store, charm_dir, not_a_charm, store_path};

/// Exit codes of tool mode.
const EXIT_USAGE: i32 = 2;

#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// `dispatch` run at a terminal with no arguments, outside any hook: say what it is.
pub fn not_run_by_juju() -> i32 {
    eprintln!(
        "dispatch: run without arguments, dispatch is what Juju runs for each event of the charm, \
         and runs the charm's own dispatch under a trace; outside a hook (no JUJU_* variables) \
         it does nothing. Try `dispatch status`, `dispatch traces` or `dispatch --help`."
    );
    EXIT_USAGE
}

pub fn run(args: Vec<OsString>) -> i32 {
    let args: Result<Vec<String>> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect();
    let result = args.and_then(|args| dispatch_command(&args));
    match result {
        Ok(code) => code,
        Err(error) => {
            if error.downcast_ref::<UsageError>().is_some() {
                eprintln!("dispatch: {error}\nRun `dispatch --help` for usage.");
                EXIT_USAGE
            } else {
                eprintln!("dispatch: {error:#}");
                1
            }
        }
    }
}

fn dispatch_command(args: &[String]) -> Result<i32> {
    let (command, rest) = args.split_first().ok_or_else(|| usage("no command"))?;
    let asks_help = |arg: &String| matches!(arg.as_str(), "--help" | "-h");
    match command.as_str() {
        "--help" | "-h" => {
            print(&usage_text())?;
            return Ok(0);
        }
        "help" => {
            let text = match rest.first() {
                None => usage_text(),
                Some(name) => {
                    command_help(name).ok_or_else(|| usage(format!("unknown command {name:?}")))?
                }
            };
            print(&text)?;
            return Ok(0);
        }
        "--version" | "-V" => {
            print(&format!(
                "dispatch {} (commit {}, {})\n",
                env!("CARGO_PKG_VERSION"),
                env!("DISPATCH_COMMIT"),
                env!("DISPATCH_TARGET")
            ))?;
            return Ok(0);
        }
        name if rest.iter().any(asks_help) => {
            if let Some(text) = command_help(name) {
                print(&text)?;
                return Ok(0);
            }
        }
        _ => {}
    }
    let charm_dir = charm_dir()?;
    if command != "check-config" && COMMANDS.iter().any(|c| c.name == command) {
        if let Some(why) = not_a_charm(&charm_dir) {
            bail!("{why}");
        }
        // Hooks keep their traces in the default store while `store_path` names something
        // not ours; a person asking about the store is told to fix it first.
        let loaded = Config::load(&charm_dir);
        if loaded.store_path_refused && command != "status" {
            bail!("{}", loaded.problem.unwrap_or_default());
        }
        if let Some(why) = another_users_store(&store_path(&charm_dir)) {
            bail!("{why}");
        }
    }
    match command.as_str() {
        "traces" => traces::traces(&charm_dir, rest),
        "status" => {
            no_more(command, rest)?;
            status::status(&charm_dir)
        }
        "set-destination" => control::set_destination(&charm_dir, rest),
        "clear-destination" => {
            no_more(command, rest)?;
            control::clear_destination(&charm_dir)
        }
        "flush" => {
            no_more(command, rest)?;
            control::flush(&charm_dir)
        }
        "disable" | "enable" => {
            no_more(command, rest)?;
            control::set_enabled(&charm_dir, command == "enable")
        }
        "check-config" => {
            no_more(command, rest)?;
            check::check_config(&charm_dir)
        }
        other => Err(usage(format!(
            "unknown command {other:?}{}",
            did_you_mean(other)
        ))),
    }
}

/// ` (did you mean "traces"?)` for a mistyped command or option, else nothing.
fn did_you_mean(typed: &str) -> String {
    const OPTIONS: [&str; 12] = [
        "--last",
        "--follow",
        "--count",
        "--verbose",
        "--summary",
        "--event",
        "--failed",
        "--format",
        "--since",
        "--until",
        "--trace-id",
        "--ca-file",
    ];
    let known = COMMANDS.iter().map(|c| c.name).chain(OPTIONS);
    match crate::config::closest(typed, known) {
        Some(word) if word != typed => format!(" (did you mean {word:?}?)"),
        _ => String::new(),
    }
}

fn no_more(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(extra) => Err(usage(format!(
            "{command} takes no arguments (got {extra:?})"
        ))),
        None => Ok(()),
    }
}

fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // A closed pipe (`dispatch traces | head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}
