//! What the charm sees (README, *What the charm sees*; DESIGN §4): the hook's environment,
//! unchanged but for exactly these.
//!
//! - `PATH` with our shim directory in front, and for the shims `DISPATCH_TRACE_TOOLS` (the
//!   real tools), `DISPATCH_TRACE_CHANNEL` (the record FIFO), `DISPATCH_TRACE_NONCE`, with
//!   `record_log_messages` `DISPATCH_TRACE_LOG_TEXT`, and with `record_exceptions` (the
//!   default) `DISPATCH_TRACE_EXCEPTIONS` (`Interception`);
//! - `TRACEPARENT` pointing at the `charm` span, and `JUJU_DISPATCH_PATH` only when we derived
//!   it (legacy `hooks/<name>` links);
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`/`_PROTOCOL` for the loopback listener, named in
//!   `DISPATCH_TRACE_INJECTED` (`custom_span_env`);
//! - `DISPATCH_TRACE_EXEC_DEPTH` (`decide`).
//!
//! Setting up the interception (the persistent shim directory, the record channel) is here
//! too: it is what those variables point at.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use dispatch_shim::{ENV_CHANNEL, ENV_EXCEPTIONS, ENV_LOG_TEXT, ENV_NONCE, ENV_TOOLS_DIR};

use crate::config::Config;
use crate::intercept::channel::Channel;
use crate::intercept::shims;
use crate::ship::destination;

/// The hook-tool interception of one dispatch: shims in front of the real tools, and the
/// channel their records come back on.
pub struct Interception {
    shim_dir: PathBuf,
    pub tools_dir: PathBuf,
    pub channel: Channel,
    path_var: OsString,
}

impl Interception {
    /// The child's variables for the shims.
    pub fn env(&self, nonce: &str, config: &Config) -> Vec<(OsString, OsString)> {
        let mut env = vec![
            (
                "PATH".into(),
                shims::child_path(&self.shim_dir, &self.path_var),
            ),
            (
                ENV_TOOLS_DIR.into(),
                self.tools_dir.clone().into_os_string(),
            ),
            (
                ENV_CHANNEL.into(),
                self.channel.path.clone().into_os_string(),
            ),
            (ENV_NONCE.into(), nonce.into()),
        ];
        if config.record_log_messages {
            env.push((ENV_LOG_TEXT.into(), "1".into()));
        }
        if config.record_exceptions {
            env.push((ENV_EXCEPTIONS.into(), "1".into()));
        }
        env
    }
}

/// The child's standard OpenTelemetry variables for the custom-span listener (README, *Your
/// own spans and events*).
///
/// Traces only: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL, used as is by every SDK)
/// and `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf` (SDKs that default to gRPC, and
/// the Python SDK's `OTEL_TRACES_EXPORTER=otlp` auto-configuration, pick OTLP/HTTP from it).
/// Never `OTEL_EXPORTER_OTLP_ENDPOINT`, which would send metrics and logs here too, to be
/// refused; and no `OTEL_METRICS_EXPORTER`/`OTEL_LOGS_EXPORTER`: left alone, an SDK does with
/// metrics and logs exactly what it did before the charm was wrapped. An endpoint the hook
/// already had (the operator's destination) is replaced for the child, since we forward
/// everything there ourselves; the wrapper reads its own environment, which keeps it. The
/// names go into `DISPATCH_TRACE_INJECTED`, so our tool mode run inside the hook
/// (`dispatch status`, `dispatch flush`) never takes them for a destination.
pub fn custom_span_env(endpoint: &str) -> Vec<(OsString, OsString)> {
    const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    vec![
        (ENDPOINT.into(), endpoint.into()),
        (PROTOCOL.into(), "http/protobuf".into()),
        (
            destination::ENV_INJECTED.into(),
            format!("{ENDPOINT},{PROTOCOL}").into(),
        ),
    ]
}

/// Sets up hook-tool interception; `Ok(None)` when there are no hook tools on PATH (not a
/// problem: `juju exec` style runs and tests without tools).
pub fn intercept(charm_dir: &Path, state_dir: &Path) -> Result<Option<Interception>, String> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let shim_dir_path = state_dir.join("shims");
    let Some(tools_dir) = shims::find_tools_dir(&path_var, &shim_dir_path) else {
        return Ok(None);
    };
    let shim_binary = charm_dir.join(shims::SHIM_BINARY);
    if !shim_binary.exists() {
        return Err(format!(
            "{} is missing, so hook-tool calls are not traced (install it beside dispatch)",
            shim_binary.display()
        ));
    }
    let shim_dir = shims::ensure_shim_dir(state_dir, &tools_dir, &shim_binary).map_err(|e| {
        format!(
            "cannot prepare the hook-tool shims in {}: {e}",
            state_dir.display()
        )
    })?;
    let channel = Channel::open(state_dir).map_err(|e| {
        format!(
            "cannot open the record channel in {}: {e}",
            state_dir.display()
        )
    })?;
    Ok(Some(Interception {
        shim_dir,
        tools_dir,
        channel,
        path_var,
    }))
}
