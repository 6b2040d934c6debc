//! The commands that change what hooks do: `set-destination`, `clear-destination`, `flush`,
//! `enable` and `disable`. Each takes the dispatch lock, so none runs beside a hook.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::locate::{hold_dispatch_lock, store_path, store_to_read, store_to_write};
use super::{print, usage};
use crate::config::{Config, CONFIG_FILE};
use crate::ship::{destination, export, Outcome};
use crate::store::settings;

pub(super) fn set_destination(charm_dir: &Path, args: &[String]) -> Result<i32> {
    let mut url = None;
    let mut ca_file = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca-file" => {
                let path = args.next().ok_or_else(|| usage("--ca-file needs a path"))?;
                ca_file = Some(PathBuf::from(path));
            }
            flag if flag.starts_with("--ca-file=") => {
                ca_file = Some(PathBuf::from(&flag["--ca-file=".len()..]));
            }
            flag if flag.starts_with('-') => {
                return Err(usage(format!("set-destination: unknown option {flag:?}")))
            }
            value if url.is_none() => url = Some(value.to_string()),
            extra => {
                return Err(usage(format!(
                    "set-destination: unexpected {:?}",
                    destination::redact_url(extra)
                )))
            }
        }
    }
    let url = url.ok_or_else(|| usage("set-destination needs a URL"))?;
    let url =
        destination::parse_url(&url).map_err(|why| usage(destination::bad_url(&url, &why)))?;
    let ca_file = match ca_file {
        Some(path) => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            let pem = std::fs::read(&path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("{} holds no PEM certificate", path.display());
            }
            Some(path)
        }
        None => None,
    };
    let wanted = destination::Stored { url, ca_file };
    let path = store_path(charm_dir);
    let _lock = hold_dispatch_lock(&path)?;
    let store = store_to_write(&path)?;
    if settings::destination(&store)?.as_ref() == Some(&wanted) {
        print("destination unchanged\n")?;
    } else {
        // The old URL may hold a credential: no copy of it may stay behind.
        settings::set_destination(&store, Some(&wanted)).context("storing the destination")?;
        export::reset_backoff(&store);
        print(&format!(
            "destination set to {}\n",
            destination::redact_url(&wanted.url)
        ))?;
    }
    // Say so when another source wins over what was just set.
    let loaded = Config::load(charm_dir);
    let env = crate::ship::environment();
    if let Some(winner) = destination::resolve(&env, &loaded.config, Some(&wanted), None) {
        if winner.source != destination::Source::SetDestination {
            eprintln!(
                "dispatch: note: {} takes precedence over set-destination: traces go to {} while \
                 it is set",
                winner.source.describe(),
                destination::redact_url(&winner.url)
            );
        }
    }
    Ok(0)
}

pub(super) fn clear_destination(charm_dir: &Path) -> Result<i32> {
    let path = store_path(charm_dir);
    let set = match store_to_read(&path)? {
        Some(store) => settings::destination(&store)
            .map_err(|e| store.read_error(e))?
            .is_some(),
        None => false,
    };
    if !set {
        print("no destination was set\n")?;
        return Ok(0);
    }
    let _lock = hold_dispatch_lock(&path)?;
    let store = store_to_write(&path)?;
    settings::set_destination(&store, None).context("erasing the destination")?;
    export::reset_backoff(&store);
    print("destination cleared\n")?;
    Ok(0)
}

/// Ships everything waiting, ignoring backoff; exit 1 if something could not be sent.
pub(super) fn flush(charm_dir: &Path) -> Result<i32> {
    let loaded = Config::load(charm_dir);
    let path = loaded.config.store_file(charm_dir);
    // Flush writes (what was shipped), but it never creates a store to ship nothing from.
    if path.symlink_metadata().is_err() {
        print("nothing to ship: no traces recorded yet\n")?;
        return Ok(0);
    }
    // Not while a dispatch exports the same backlog (both would send it): wait for its lock.
    let _lock = hold_dispatch_lock(&path)?;
    let mut store = store_to_write(&path)?;
    let (destination, report) = match crate::ship::flush(&mut store, &loaded.config) {
        Outcome::Nowhere { waits_for_ca: true } => bail!(
            "not sending yet: the relation's URL is https and the certificate_transfer \
             relation has not delivered its CA certificate"
        ),
        Outcome::Nowhere {
            waits_for_ca: false,
        } => bail!(
            "no destination: set one with `dispatch set-destination URL` or relate the charm to \
             a tracing provider"
        ),
        Outcome::Unusable(failure) | Outcome::NoClient(_, failure) => bail!("{}", failure.cause),
        // A flush never backs off.
        Outcome::BackingOff => bail!("the destination is backing off"),
        Outcome::Exported(destination, report) => (destination, report),
    };
    print(&format!(
        "sent {} dispatch(es) to {} in {} request(s)\n",
        report.chunks_sent,
        destination::redact_url(&destination.url),
        report.requests
    ))?;
    if let Some(failure) = report.failure {
        bail!("{}", failure.cause);
    }
    if report.out_of_budget {
        bail!("ran out of time; run `dispatch flush` again to send the rest");
    }
    Ok(0)
}

/// `disable` leaves a flag file beside the store (one `stat` per dispatch to check).
pub(super) fn set_enabled(charm_dir: &Path, enabled: bool) -> Result<i32> {
    let flag = crate::store::disabled_flag(&store_path(charm_dir));
    if enabled {
        match std::fs::remove_file(&flag) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", flag.display())),
        }
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&flag)
            .with_context(|| format!("creating {}", flag.display()))?;
    }
    let note = if enabled {
        "tracing enabled"
    } else {
        "tracing disabled: dispatches now run the charm directly, untraced"
    };
    print(&format!("{note}\n"))?;
    if enabled && !Config::load(charm_dir).config.enabled {
        eprintln!("dispatch: note: {CONFIG_FILE} still says enabled: false");
    }
    Ok(0)
}
