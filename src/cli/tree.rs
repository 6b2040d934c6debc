//! The `tree` view of `dispatch traces`: each dispatch as its spans, indented under their
//! parents, one line each (what ran, its arguments, how long, how it ended), with a failed
//! charm's exception under its span. `-v` adds every span's attributes and events, and the
//! resource's attributes under the heading. Colour only helps a person at a terminal: it is
//! used when stdout is one and `NO_COLOR` is not set (no-color.org), never in a pipe or a file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span, Span};

use super::human;
use super::view::{
    attribute, decode, duration_ms, exception_summary, format_time, hex, is_error, one_line,
    priority_name, spans, state_name, value_text,
};
use crate::store::inflight::Running;
use crate::store::StoredChunk;

/// How the tree is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeStyle {
    /// Attributes and events of every span (`-v`).
    pub verbose: bool,
    pub colour: bool,
}

impl TreeStyle {
    /// Colour if stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout(verbose: bool) -> TreeStyle {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        TreeStyle {
            verbose,
            colour: !no_colour && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// One dispatch: its heading, its spans, then a blank line.
pub fn dispatch(chunk: &StoredChunk, style: TreeStyle) -> String {
    let mut out = String::new();
    let request = match decode(chunk) {
        Ok(request) => request,
        Err(e) => {
            let _ = writeln!(
                out,
                "{}  trace {}  [unreadable: {e:#}]\n",
                style.bold(&chunk.event),
                chunk.trace_id
            );
            return out;
        }
    };
    let spans = spans(&request);
    let ids: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    let mut children: HashMap<&[u8], Vec<&Span>> = HashMap::new();
    let mut roots = Vec::new();
    for span in &spans {
        if ids.contains_key(span.parent_span_id.as_slice()) {
            children
                .entry(span.parent_span_id.as_slice())
                .or_default()
                .push(span);
        } else {
            roots.push(*span);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time_unix_nano);
    }
    let _ = writeln!(
        out,
        "{}  {}  trace {}  [{}, {}]",
        style.bold(&chunk.event),
        format_time(chunk.started_at),
        chunk.trace_id,
        state_name(chunk.state),
        priority_name(chunk.priority)
    );
    if style.verbose {
        let resource = request
            .resource_spans
            .first()
            .and_then(|r| r.resource.as_ref());
        if let Some(resource) = resource.filter(|r| !r.attributes.is_empty()) {
            let _ = writeln!(out, "  {}", style.dim("resource:"));
            attribute_lines(&mut out, "    ", &resource.attributes, style);
        }
    }
    let drawing = Drawing {
        children: &children,
        trace_id: &chunk.trace_id,
        style,
    };
    for root in roots {
        drawing.span(&mut out, root, "", true, true);
    }
    out.push('\n');
    out
}

/// A dispatch whose started record is on disk and whose wrapper still runs (`--follow`).
pub fn running(running: &Running, style: TreeStyle) -> String {
    format!(
        "{}  {}  trace {}  [{}]\n\n",
        style.bold(&running.event),
        format_time(running.started_at),
        running.trace_id,
        style.yellow("running")
    )
}

struct Drawing<'a> {
    children: &'a HashMap<&'a [u8], Vec<&'a Span>>,
    /// The dispatch's trace: a span of another is named as such.
    trace_id: &'a str,
    style: TreeStyle,
}

impl Drawing<'_> {
    /// A span and its children; `top` for a tree's first line.
    fn span(&self, out: &mut String, span: &Span, prefix: &str, last: bool, top: bool) {
        let (branch, next) = if top {
            ("", String::new())
        } else if last {
            ("└─ ", format!("{prefix}   "))
        } else {
            ("├─ ", format!("{prefix}│  "))
        };
        let _ = write!(out, "  {prefix}{branch}{}", self.span_line(span));
        // A span of another trace: custom spans the charm started in a trace of its own.
        let own_trace = hex(&span.trace_id);
        if top && own_trace != self.trace_id {
            let _ = write!(out, "  (trace {own_trace}, not {})", self.trace_id);
        }
        out.push('\n');
        let kids = self.children.get(span.span_id.as_slice());
        // What is said about a span sits under it; the children's line continues past it.
        let under = format!("  {next}{}  ", if kids.is_some() { "│" } else { " " });
        let style = self.style;
        for exception in span.events.iter().filter(|e| e.name == "exception") {
            let text = format!("exception: {}", exception_summary(&exception.attributes));
            let _ = writeln!(out, "{under}{}", style.red(&text));
        }
        if let Some(tail) = attribute(&span.attributes, "dispatch.child.stderr_tail") {
            let tail = value_text(tail);
            if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
                let _ = writeln!(
                    out,
                    "{under}{}",
                    style.red(&format!("stderr: {}", one_line(last)))
                );
            }
        }
        if style.verbose {
            attribute_lines(out, &under, &span.attributes, style);
            for event in &span.events {
                let offset = event
                    .time_unix_nano
                    .saturating_sub(span.start_time_unix_nano);
                let heading = format!(
                    "event {} at +{}",
                    event.name,
                    human::took(offset as f64 / 1e6)
                );
                let _ = writeln!(out, "{under}{}", style.dim(&heading));
                attribute_lines(out, &format!("{under}  "), &event.attributes, style);
            }
        }
        if let Some(kids) = kids {
            for (i, kid) in kids.iter().enumerate() {
                self.span(out, kid, &next, i + 1 == kids.len(), false);
            }
        }
    }

    /// One line for a span: name, a tool call's arguments, duration, and how it ended.
    fn span_line(&self, span: &Span) -> String {
        let mut line = span.name.clone();
        if span.kind == span::SpanKind::Client as i32 {
            if let Some(args) = attribute(&span.attributes, "process.command_args") {
                let text = value_text(args);
                let rest = text.strip_prefix(&span.name).unwrap_or(&text).trim();
                if !rest.is_empty() {
                    let _ = write!(line, " {rest}");
                }
            }
        }
        let _ = write!(line, "  {}", human::took(duration_ms(span)));
        // Counted, not listed: `-v` lists them.
        match span.events.len() {
            0 => {}
            _ if self.style.verbose => {}
            1 => line.push_str("  1 event"),
            n => {
                let _ = write!(line, "  {n} events");
            }
        }
        if let Some(code) = attribute(&span.attributes, "process.exit.code") {
            let _ = write!(line, "  exit {}", value_text(code));
        }
        if let Some(reason) = attribute(&span.attributes, "dispatch.skip_reason") {
            let text = format!("skipped: {}", value_text(reason));
            let _ = write!(line, "  {}", self.style.yellow(&text));
        }
        if is_error(span) {
            let message = span.status.as_ref().map_or("", |s| s.message.as_str());
            let _ = write!(line, "  {}", self.style.red(&format!("ERROR {message}")));
        }
        line
    }
}

/// `key = value` lines under `prefix`, sorted by key; a value of several lines (a stack
/// trace) continues on lines of its own, indented under its key.
fn attribute_lines(out: &mut String, prefix: &str, attributes: &[KeyValue], style: TreeStyle) {
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        let value = value_text(&kv.value);
        let mut lines = value.lines();
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "{prefix}{} {first}",
            style.dim(&format!("{} =", kv.key))
        );
        for more in lines {
            let _ = writeln!(out, "{prefix}    {more}");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::STATE_PENDING;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans};
    use prost::Message;

    fn tree(chunks: &[StoredChunk], style: TreeStyle) -> String {
        chunks.iter().map(|chunk| dispatch(chunk, style)).collect()
    }

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    /// A span of `trace` with id `[id; 8]`, lasting 1 ms (shared with `view`'s tests).
    pub(in crate::cli) fn make(trace: [u8; 16], id: u8, parent: Option<u8>, name: &str) -> Span {
        Span {
            trace_id: trace.to_vec(),
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: u64::from(id),
            end_time_unix_nano: u64::from(id) + 1_000_000,
            ..Span::default()
        }
    }

    /// A stored dispatch of `trace` holding each scope's spans.
    pub(in crate::cli) fn chunk_of(trace: [u8; 16], scopes: Vec<(&str, Vec<Span>)>) -> StoredChunk {
        let request = ExportTraceServiceRequest {
            resource_spans: scopes
                .into_iter()
                .map(|(scope, spans)| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: scope.into(),
                            ..InstrumentationScope::default()
                        }),
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                })
                .collect(),
        };
        StoredChunk {
            id: 1,
            state: STATE_PENDING,
            priority: 0,
            started_at: 0,
            event: "install".into(),
            trace_id: hex(&trace),
            payload: request.encode_to_vec(),
        }
    }

    #[test]
    fn an_unreadable_chunk_is_named_not_fatal() {
        let chunk = StoredChunk {
            payload: vec![0xff, 0xff, 0xff],
            ..chunk_of([1; 16], vec![])
        };
        assert!(tree(&[chunk], TreeStyle::default()).contains("[unreadable"));
    }

    #[test]
    fn custom_spans_nest_in_the_tree_and_a_foreign_trace_is_named() {
        let ours = [7u8; 16];
        let mut custom = make(ours, 3, Some(2), "reconcile");
        custom.events.push(Event {
            name: "done".into(),
            ..Event::default()
        });
        let chunk = chunk_of(
            ours,
            vec![
                (
                    "juju-dispatch-trace",
                    vec![
                        make(ours, 1, None, "install"),
                        make(ours, 2, Some(1), "charm"),
                    ],
                ),
                ("mine", vec![custom, make([9; 16], 4, None, "elsewhere")]),
            ],
        );
        let tree = tree(&[chunk], TreeStyle::default());
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[1].starts_with("  install  "), "{tree}");
        assert!(lines[2].starts_with("  └─ charm  "), "{tree}");
        assert!(lines[3].starts_with("     └─ reconcile  "), "{tree}");
        assert!(lines[3].ends_with("  1 event"), "{tree}");
        assert!(lines[4].starts_with("  elsewhere  "), "{tree}");
        assert!(
            lines[4].contains(&format!("(trace {}, not ", hex(&[9; 16]))),
            "{tree}"
        );
        assert!(!tree.contains('\x1b'), "no colour unless asked: {tree}");
    }

    #[test]
    fn verbose_shows_attributes_and_events_under_their_span_and_seconds_past_one() {
        let ours = [7u8; 16];
        let mut root = make(ours, 1, None, "install");
        root.end_time_unix_nano = 2_500_000_000;
        root.attributes.push(text("juju.relation_id", "db:4"));
        let mut charm = make(ours, 2, Some(1), "charm");
        charm.attributes.push(text("dispatch.problems", "one\ntwo"));
        charm.events.push(Event {
            name: "exception".into(),
            time_unix_nano: 2 + 1_500_000,
            attributes: vec![
                text("exception.type", "KeyError"),
                text("exception.message", "x"),
            ],
            ..Event::default()
        });
        let chunk = chunk_of(ours, vec![("juju-dispatch-trace", vec![root, charm])]);

        let plain = tree(std::slice::from_ref(&chunk), TreeStyle::default());
        assert!(plain.contains("  install  2.50 s\n"), "{plain}");
        assert!(plain.contains("  └─ charm  1.00 ms  1 event\n"), "{plain}");
        assert!(!plain.contains("db:4"), "{plain}");

        let style = TreeStyle {
            verbose: true,
            colour: false,
        };
        let verbose = tree(&[chunk], style);
        let lines: Vec<&str> = verbose.trim_end().lines().collect();
        assert_eq!(
            &lines[1..],
            [
                "  install  2.50 s",
                "  │  juju.relation_id = db:4",
                "  └─ charm  1.00 ms",
                "        exception: KeyError: x",
                "        dispatch.problems = one",
                "            two",
                "        event exception at +1.50 ms",
                "          exception.message = x",
                "          exception.type = KeyError",
            ],
            "{verbose}"
        );
    }

    #[test]
    fn colour_marks_errors_and_the_event_when_asked() {
        let ours = [7u8; 16];
        let mut root = make(ours, 1, None, "install");
        root.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
            message: "exit 1".into(),
        });
        let chunk = chunk_of(ours, vec![("juju-dispatch-trace", vec![root])]);
        let style = TreeStyle {
            verbose: false,
            colour: true,
        };
        let coloured = tree(&[chunk], style);
        assert!(
            coloured.starts_with("\x1b[1minstall\x1b[0m  "),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("\x1b[31mERROR exit 1\x1b[0m"),
            "{coloured:?}"
        );
    }
}
