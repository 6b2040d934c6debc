//! What Juju tells a dispatch through its environment (DESIGN §2), and how it maps onto
//! span attributes (DESIGN §4).
//!
//! Juju builds a hook's environment from scratch, so this is the only input we get about the
//! event. The mapping from `JUJU_*` variables to `juju.*` attributes is a table here, and the
//! README carries the same table for users.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// `JUJU_*` event variable -> root span attribute, in the order the README lists them.
pub const EVENT_ATTRIBUTES: &[(&str, &str)] = &[
    ("JUJU_DISPATCH_PATH", "juju.dispatch_path"),
    ("JUJU_HOOK_NAME", "juju.hook_name"),
    ("JUJU_UNIT_NAME", "juju.unit_name"),
    ("JUJU_MODEL_NAME", "juju.model_name"),
    ("JUJU_MODEL_UUID", "juju.model_uuid"),
    ("JUJU_VERSION", "juju.version"),
    ("JUJU_CONTEXT_ID", "juju.context_id"),
    ("JUJU_MACHINE_ID", "juju.machine_id"),
    ("JUJU_AVAILABILITY_ZONE", "juju.availability_zone"),
    ("JUJU_PRINCIPAL_UNIT", "juju.principal_unit"),
    ("JUJU_RELATION", "juju.relation"),
    ("JUJU_RELATION_ID", "juju.relation_id"),
    ("JUJU_REMOTE_UNIT", "juju.remote_unit"),
    ("JUJU_REMOTE_APP", "juju.remote_app"),
    ("JUJU_DEPARTING_UNIT", "juju.departing_unit"),
    ("JUJU_ACTION_NAME", "juju.action_name"),
    ("JUJU_ACTION_UUID", "juju.action_uuid"),
    ("JUJU_WORKLOAD_NAME", "juju.workload_name"),
    ("JUJU_NOTICE_ID", "juju.notice_id"),
    ("JUJU_NOTICE_TYPE", "juju.notice_type"),
    ("JUJU_NOTICE_KEY", "juju.notice_key"),
    ("JUJU_PEBBLE_CHECK_NAME", "juju.pebble_check_name"),
    ("JUJU_SECRET_ID", "juju.secret_id"),
    ("JUJU_SECRET_LABEL", "juju.secret_label"),
    ("JUJU_SECRET_REVISION", "juju.secret_revision"),
    ("JUJU_STORAGE_ID", "juju.storage_id"),
    ("JUJU_STORAGE_LOCATION", "juju.storage_location"),
    ("JUJU_STORAGE_KIND", "juju.storage_kind"),
];

/// Whether the dispatch runs a hook or an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Hook,
    Action,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Hook => "hook",
            EventKind::Action => "action",
        }
    }
}

/// The hook environment as far as tracing cares.
#[derive(Debug, Clone)]
pub struct HookEnv {
    vars: BTreeMap<String, String>,
    /// `JUJU_DISPATCH_PATH`, or the value derived from argv[0] when Juju did not set it.
    pub dispatch_path: String,
    /// True when `dispatch_path` was derived here and must be exported to the child.
    pub dispatch_path_derived: bool,
}

impl HookEnv {
    /// Reads the variables we use from an environment snapshot. Non-UTF-8 values are kept
    /// lossily: they only ever become attribute text.
    pub fn from_vars<I>(vars: I, argv0: &OsString) -> HookEnv
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                (k.starts_with("JUJU_") || k == "TRACEPARENT" || k == "TRACESTATE")
                    .then(|| (k, v.to_string_lossy().into_owned()))
            })
            .collect();
        let (dispatch_path, derived) = match vars.get("JUJU_DISPATCH_PATH") {
            Some(path) if !path.is_empty() => (path.clone(), false),
            _ => (dispatch_path_from_argv0(argv0), true),
        };
        HookEnv {
            vars,
            dispatch_path,
            dispatch_path_derived: derived,
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The event name: the last component of the dispatch path (`install`,
    /// `db-relation-changed`, `backup` for `actions/backup`).
    pub fn event_name(&self) -> &str {
        let name = self.dispatch_path.rsplit('/').next().unwrap_or_default();
        if name.is_empty() {
            "dispatch"
        } else {
            name
        }
    }

    pub fn event_kind(&self) -> EventKind {
        if self.dispatch_path.starts_with("actions/") || self.get("JUJU_ACTION_NAME").is_some() {
            EventKind::Action
        } else {
            EventKind::Hook
        }
    }

    /// `juju.*` attributes for every event variable that is set, plus the derived dispatch path.
    pub fn event_attributes(&self) -> Vec<(&'static str, String)> {
        let mut attributes = Vec::new();
        for (var, attribute) in EVENT_ATTRIBUTES {
            if *var == "JUJU_DISPATCH_PATH" {
                attributes.push((*attribute, self.dispatch_path.clone()));
            } else if let Some(value) = self.get(var) {
                attributes.push((*attribute, value.to_string()));
            }
        }
        attributes.push(("juju.event.kind", self.event_kind().as_str().to_string()));
        attributes
    }

    pub fn unit_name(&self) -> Option<&str> {
        self.get("JUJU_UNIT_NAME")
    }

    pub fn application_name(&self) -> Option<&str> {
        self.unit_name().map(|u| u.split('/').next().unwrap_or(u))
    }

    pub fn unit_number(&self) -> Option<&str> {
        self.unit_name()
            .and_then(|u| u.rsplit_once('/'))
            .map(|(_, n)| n)
    }
}

/// Juju's legacy layout runs `hooks/<name>` (a symlink to dispatch). charmcraft's dispatch
/// script uses `$0` then, which is the path Juju ran; keep its last two components when the
/// parent is `hooks` or `actions`, as charmcraft's generated dispatch would see it relative
/// to the charm dir.
pub fn dispatch_path_from_argv0(argv0: &OsString) -> String {
    let text = argv0.to_string_lossy();
    let mut parts = text.rsplit('/');
    let name = parts.next().unwrap_or_default();
    match parts.next() {
        Some(parent @ ("hooks" | "actions")) => format!("{parent}/{name}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)], argv0: &str) -> HookEnv {
        HookEnv::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            &OsString::from(argv0),
        )
    }

    #[test]
    fn event_name_is_the_last_component_of_the_dispatch_path() {
        let hook = env(
            &[("JUJU_DISPATCH_PATH", "hooks/db-relation-changed")],
            "./dispatch",
        );
        assert_eq!(hook.event_name(), "db-relation-changed");
        assert_eq!(hook.event_kind(), EventKind::Hook);
        let action = env(&[("JUJU_DISPATCH_PATH", "actions/backup")], "./dispatch");
        assert_eq!(action.event_name(), "backup");
        assert_eq!(action.event_kind(), EventKind::Action);
    }

    #[test]
    fn dispatch_path_is_derived_from_a_legacy_hook_symlink() {
        let hook = env(&[], "/var/lib/juju/agents/unit-a-0/charm/hooks/install");
        assert_eq!(hook.dispatch_path, "hooks/install");
        assert!(hook.dispatch_path_derived);
        assert_eq!(hook.event_name(), "install");
        let bare = env(&[], "./dispatch");
        assert_eq!(bare.dispatch_path, "dispatch");
    }

    #[test]
    fn only_set_variables_become_attributes() {
        let hook = env(
            &[
                ("JUJU_DISPATCH_PATH", "hooks/start"),
                ("JUJU_UNIT_NAME", "app/3"),
                ("JUJU_RELATION", ""),
                ("HOME", "/root"),
            ],
            "dispatch",
        );
        let attributes = hook.event_attributes();
        assert!(attributes.contains(&("juju.unit_name", "app/3".to_string())));
        assert!(attributes.contains(&("juju.dispatch_path", "hooks/start".to_string())));
        assert!(attributes.contains(&("juju.event.kind", "hook".to_string())));
        assert!(!attributes.iter().any(|(k, _)| *k == "juju.relation"));
        assert_eq!(hook.application_name(), Some("app"));
        assert_eq!(hook.unit_number(), Some("3"));
    }
}
