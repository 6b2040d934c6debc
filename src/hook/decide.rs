//! The first phase of a hook: what to run, and whether to trace it (README, *What runs*).
//!
//! - What runs: `target::resolve` (the configured target, `dispatch.orig`, the hook or action
//!   script, or nothing, as Juju would).
//! - Never a target that is this program, nor anything once dispatches nest
//!   `MAX_EXEC_DEPTH` deep: either would spin forever. The hook fails instead, saying why.
//! - Not traced (the target is exec'd, so nothing of ours stays in the process tree):
//!   `OPERATOR_DISPATCH` (ops re-running `hooks/<event>`), a nested dispatch (our nonce in the
//!   environment), `OTEL_SDK_DISABLED=true`, `enabled: false`, `dispatch disable`.
//! - Otherwise traced: a `Dispatch`, the facts the later phases work from.
//!
//! Every child, traced or not, gets the exec depth plus one (`DISPATCH_TRACE_EXEC_DEPTH`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use dispatch_shim::{child, ENV_NONCE};

use crate::config::Config;
use crate::juju::{EventKind, HookEnv};
use crate::operator::{self, Operator, Problem};
use crate::state_dir;
use crate::store;
use crate::supervise::{self, InheritedSignals};
use crate::target::{self, Target, ENV_EXEC_DEPTH, MAX_EXEC_DEPTH, REFUSED_EXIT};

/// What this hook does.
pub enum Decision {
    /// Run nothing, exit `REFUSED_EXIT` with this reason: dispatches nested too deep.
    Refuse { reason: String, env: HookEnv },
    /// Exec the target, untraced.
    PassThrough {
        target: Target,
        env: HookEnv,
        /// The charm dir, when the charm has nothing to run for any event.
        nothing_at_all: Option<PathBuf>,
    },
    /// Run the target under a trace.
    Trace(Box<Dispatch>),
}

/// A traced dispatch: what was found out deciding to trace it, and the problems found so far
/// (every later phase adds its own; they are reported once, at the end).
pub struct Dispatch {
    pub charm_dir: PathBuf,
    pub config: Config,
    pub env: HookEnv,
    pub target: Target,
    pub problems: Vec<Problem>,
    /// Our private directory (shims, record channel, last warning), when usable.
    pub state_dir: Option<PathBuf>,
    pub store_path: PathBuf,
    pub start: SystemTime,
}

impl Dispatch {
    /// Where the operator's last line is remembered: in the state dir, or beside the store
    /// when there is none (an unusable state dir must not turn into the same line on every
    /// hook).
    pub fn warning_memory(&self) -> PathBuf {
        match &self.state_dir {
            Some(dir) => dir.join(operator::LAST_WARNING),
            None => store::with_suffix(&self.store_path, ".last-warning"),
        }
    }
}

/// The binary's real path and the charm dir beside it (DESIGN §2: never from argv[0]).
pub fn locate_charm_dir(argv0: &OsString) -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe()
        .or_else(|_| std::fs::canonicalize(argv0))
        .unwrap_or_else(|_| PathBuf::from(argv0));
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    (exe, dir)
}

pub fn decide(argv0: &OsString, start: SystemTime) -> Decision {
    let env = HookEnv::from_vars(std::env::vars_os(), argv0);
    let depth = exec_depth();
    if depth >= MAX_EXEC_DEPTH {
        return Decision::Refuse {
            reason: format!(
                "the charm's own entrypoint is missing: what dispatch runs starts dispatch \
                 again ({ENV_EXEC_DEPTH}={depth} nested dispatches), so nothing was run; put \
                 the charm's original dispatch back as {}",
                target::ORIGINAL_DISPATCH
            ),
            env,
        };
    }
    let (exe, charm_dir) = locate_charm_dir(argv0);
    let loaded = Config::load(&charm_dir);
    let mut said: Vec<String> = loaded.problem.into_iter().collect();
    let target = target::resolve(&charm_dir, &loaded.config, &env, &exe, &mut said);
    let mut problems: Vec<Problem> = said.into_iter().map(Problem::from).collect();
    // Only a charm with no target for this event pays for looking at the others.
    let nothing_at_all = target == Target::Nothing && target::runs_nothing_at_all(&charm_dir, &exe);
    match &target {
        // First in the line: it is why the hook fails.
        Target::Itself(itself) => problems.insert(0, itself.reason().into()),
        Target::Nothing if nothing_at_all => problems.push(target::nothing_at_all_reason().into()),
        _ => {}
    }

    let sdk_disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let nested =
        std::env::var_os("OPERATOR_DISPATCH").is_some() || std::env::var_os(ENV_NONCE).is_some();
    let untraced = |target, env| Decision::PassThrough {
        target,
        env,
        nothing_at_all: nothing_at_all.then(|| charm_dir.clone()),
    };
    if nested || sdk_disabled || !loaded.config.enabled {
        return untraced(target, env);
    }

    let state_dir = state_dir::path(&charm_dir);
    let state_dir = match state_dir::ensure_private_dir(&state_dir) {
        Ok(()) => Some(state_dir),
        Err(e) => {
            problems.push(
                format!(
                    "cannot use {}: {e}; hook tools are not traced",
                    state_dir.display()
                )
                .into(),
            );
            None
        }
    };
    let store_path = loaded.config.store_file(&charm_dir);
    if store::disabled_flag(&store_path).exists() {
        return untraced(target, env);
    }
    Decision::Trace(Box::new(Dispatch {
        charm_dir,
        config: loaded.config,
        env,
        target,
        problems,
        state_dir,
        store_path,
        start,
    }))
}

/// Exec the target with nothing of ours around it (pass-through modes).
pub fn pass_through(
    target: &Target,
    argv0: &OsString,
    env: &HookEnv,
    inherited: &InheritedSignals,
) -> i32 {
    match target {
        Target::Nothing => 0,
        Target::Itself(itself) => refuse(&itself.reason(), env),
        Target::Program(program) => {
            if env.dispatch_path_derived {
                std::env::set_var("JUJU_DISPATCH_PATH", &env.dispatch_path);
            }
            std::env::set_var(ENV_EXEC_DEPTH, child_exec_depth());
            let error = supervise::exec(program, argv0, inherited);
            if env.event_kind() != EventKind::Action {
                eprintln!("dispatch: cannot run {}: {error}", program.display());
            }
            child::exec_failure_code(error.raw_os_error())
        }
    }
}

/// Runs nothing and fails the hook, saying why (every time: each failed hook must explain
/// itself in the log), except during actions (DESIGN §2).
pub fn refuse(reason: &str, env: &HookEnv) -> i32 {
    if env.event_kind() != EventKind::Action {
        eprintln!("dispatch: {reason}");
    }
    REFUSED_EXIT
}

/// An untraced charm with nothing to run for any event still earns its one line (repeats
/// suppressed like any other), so a broken install shows even with tracing off.
pub fn warn_nothing_at_all(charm_dir: &Path, env: &HookEnv) {
    let state_dir = state_dir::path(charm_dir);
    let memory = state_dir::ensure_private_dir(&state_dir)
        .ok()
        .map(|()| state_dir.join(operator::LAST_WARNING));
    let silent = env.event_kind() == EventKind::Action;
    Operator::new(memory.as_deref(), silent).report(&[target::nothing_at_all_reason().into()]);
}

/// How many dispatches run this one, one inside the other (`ENV_EXEC_DEPTH`).
fn exec_depth() -> u32 {
    std::env::var(ENV_EXEC_DEPTH)
        .ok()
        .and_then(|depth| depth.trim().parse().ok())
        .unwrap_or(0)
}

/// The depth the child of this dispatch gets.
pub fn child_exec_depth() -> String {
    exec_depth().saturating_add(1).to_string()
}

/// Last resort when deciding itself failed (a panic): run `dispatch.orig` beside us, untraced.
pub fn fallback_exec(argv0: &OsString, inherited: &InheritedSignals) -> i32 {
    let (_, charm_dir) = locate_charm_dir(argv0);
    let original = charm_dir.join(target::ORIGINAL_DISPATCH);
    let in_action = std::env::var_os("JUJU_ACTION_NAME").is_some();
    if !in_action {
        eprintln!("dispatch: internal error while preparing the trace; running the charm untraced");
    }
    std::env::set_var(ENV_EXEC_DEPTH, child_exec_depth());
    let error = supervise::exec(&original, argv0, inherited);
    if !in_action {
        eprintln!("dispatch: cannot run {}: {error}", original.display());
    }
    child::exec_failure_code(error.raw_os_error())
}
