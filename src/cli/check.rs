//! `dispatch check-config`: what both charmcraft parts run at pack time (release/wrap-charm).
//! Checks the config, the metadata, the target, the shim and the store path; changes nothing.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::locate::{not_a_charm, why_not_creatable};
use super::print;
use crate::config::Config;
use crate::metadata::CharmMetadata;
use crate::store::Store;
use crate::target::{self, Target};

/// Whether hooks will be able to keep their traces at `store_path`: a store of ours, or a
/// place one can be created. (An absolute path whose directory does not exist here may be
/// charm storage that exists only on the unit: a note, not a problem.)
fn check_store_path(
    charm_dir: &Path,
    config: &Config,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let path = config.store_file(charm_dir);
    match Store::open_to_read(&path) {
        Ok(Some(_)) => notes.push(format!("store: {} (a trace store)", path.display())),
        Ok(None) => match why_not_creatable(&path) {
            None => notes.push(format!(
                "store: {} (the first hook creates it)",
                path.display()
            )),
            Some(why)
                if config.store_path.as_ref().is_some_and(|p| p.is_absolute())
                    && path.parent().is_some_and(|dir| !dir.exists()) =>
            {
                notes.push(format!(
                    "store: {} ({why} here; it must exist on the unit, e.g. as charm storage)",
                    path.display()
                ))
            }
            Some(why) => problems.push(format!(
                "store_path {}: no store can be created there: {why}",
                path.display()
            )),
        },
        Err(e) => problems.push(e.to_string()),
    }
}

pub(super) fn check_config(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let mut problems: Vec<String> = loaded.problem.into_iter().collect();
    let mut notes = Vec::new();
    problems.extend(not_a_charm(charm_dir));
    if let Err(problem) = CharmMetadata::load(charm_dir) {
        problems.push(problem);
    }
    let exe = std::env::current_exe().context("cannot find this binary's own path")?;
    let env = crate::juju::HookEnv::from_vars(std::iter::empty(), &OsString::from("dispatch"));
    match target::resolve(charm_dir, &loaded.config, &env, &exe, &mut problems) {
        Target::Program(program) => {
            if nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK).is_err() {
                problems.push(format!("target {} is not executable", program.display()));
            } else {
                notes.push(format!("target: {}", program.display()));
            }
        }
        Target::Itself(itself) => problems.push(itself.reason()),
        Target::Nothing if target::runs_nothing_at_all(charm_dir, &exe) => {
            problems.push(target::nothing_at_all_reason())
        }
        Target::Nothing => notes.push(format!(
            "target: none ({} missing; only hooks/<event> scripts will run)",
            target::ORIGINAL_DISPATCH
        )),
    }
    check_store_path(charm_dir, &loaded.config, &mut notes, &mut problems);
    if !charm_dir
        .join(crate::intercept::shims::SHIM_BINARY)
        .exists()
    {
        problems.push(format!(
            "{} is missing beside dispatch: hook-tool calls would not be traced",
            crate::intercept::shims::SHIM_BINARY
        ));
    }
    let mut out = String::new();
    for note in &notes {
        out.push_str(&format!("ok: {note}\n"));
    }
    for problem in &problems {
        out.push_str(&format!("PROBLEM: {problem}\n"));
    }
    if problems.is_empty() {
        out.push_str("config ok\n");
        print(&out)?;
        Ok(0)
    } else {
        print(&out)?;
        bail!("{} problem(s) found", problems.len())
    }
}
