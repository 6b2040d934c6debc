//! `dispatch traces --summary`: one line per dispatch, for a person scanning what happened, as
//! `juju show-status-log` or `jhack tail` would show it: when, which event (with its relation
//! or action), how long, how it ended, how many hook-tool calls, whether it was shipped, and
//! why a failed one failed. Fixed-width columns, so lines can be printed as they are read
//! (`traces` streams them) and still line up.

use opentelemetry_proto::tonic::trace::v1::Span;

use super::view::{
    attribute, decode, duration_ms, exception_summary, one_line, scoped_spans, state_name,
    value_text,
};
use crate::store::inflight::Running;
use crate::store::StoredChunk;
use crate::trace::spans::SCOPE_NAME;

/// The column headers, aligned with `line`.
pub fn header() -> String {
    format!(
        "{:<24}  {:<34}  {:>9}  {:<18}  {:>5}  {:<7}  {}",
        "STARTED (UTC)", "EVENT", "TOOK", "OUTCOME", "CALLS", "STATE", "WHY"
    )
}

/// One dispatch on one line.
pub fn line(chunk: &StoredChunk) -> String {
    let started = super::human::utc_millis(chunk.started_at);
    let request = match decode(chunk) {
        Ok(request) => request,
        Err(e) => {
            return format!(
                "{started:<24}  {:<34}  {:>9}  {:<18}  {:>5}  {:<7}  unreadable: {}",
                one_line(&chunk.event),
                "-",
                "-",
                "-",
                state_name(chunk.state),
                one_line(&format!("{e:#}"))
            )
        }
    };
    let ours: Vec<&Span> = scoped_spans(&request)
        .into_iter()
        .filter(|(scope, _)| *scope == SCOPE_NAME)
        .map(|(_, span)| span)
        .collect();
    let root = ours
        .iter()
        .find(|span| {
            !ours
                .iter()
                .any(|other| other.span_id == span.parent_span_id)
        })
        .copied();
    let charm = root.and_then(|root| {
        ours.iter()
            .find(|span| span.name == "charm" && span.parent_span_id == root.span_id)
            .copied()
    });
    let root_attribute = |key: &str| {
        root.and_then(|root| attribute(&root.attributes, key))
            .map(value_text)
    };
    let mut event = chunk.event.clone();
    if let Some(relation) = root_attribute("juju.relation_id") {
        event.push_str(&format!(" ({relation})"));
    } else if root_attribute("juju.action_name").is_some() {
        event.push_str(" (action)");
    }
    let outcome = if root_attribute("dispatch.interrupted").as_deref() == Some("true") {
        "interrupted".to_string()
    } else if root_attribute("dispatch.skipped").as_deref() == Some("true") {
        "skipped".to_string()
    } else if let Some(signal) =
        charm.and_then(|c| attribute(&c.attributes, "dispatch.child.signal").map(value_text))
    {
        format!("killed by {signal}")
    } else if let Some(code) = root_attribute("dispatch.exit_code") {
        format!("exit {code}")
    } else {
        "-".to_string()
    };
    let calls = root_attribute("dispatch.tool_calls").unwrap_or_else(|| "-".into());
    let took = root.map_or_else(
        || "-".to_string(),
        |root| super::human::took(duration_ms(root)),
    );
    let why = charm
        .and_then(|c| c.events.iter().find(|e| e.name == "exception"))
        .map(|e| exception_summary(&e.attributes))
        .unwrap_or_default();
    format!(
        "{started:<24}  {:<34}  {took:>9}  {outcome:<18}  {calls:>5}  {:<7}  {why}",
        one_line(&event),
        state_name(chunk.state),
    )
    .trim_end()
    .to_string()
}

/// A dispatch still running (`--follow`), in the same columns.
pub fn running_line(running: &Running) -> String {
    format!(
        "{:<24}  {:<34}  {:>9}  {:<18}  {:>5}  {:<7}",
        super::human::utc_millis(running.started_at),
        one_line(&running.event),
        "-",
        "running",
        "-",
        "-"
    )
    .trim_end()
    .to_string()
}
