//! The span tree of one dispatch (DESIGN §4), built as OpenTelemetry SDK span data with
//! explicit ids and timestamps, and encoded by opentelemetry-proto into one OTLP
//! `ExportTraceServiceRequest` (the store's chunk format).
//!
//! Shape: a root span named after the event, a `charm` span for the child process, and one
//! CLIENT span per hook-tool call. A tool call is parented to the span in the shim's own
//! `TRACEPARENT` when that belongs to this trace (a charm that propagates its own spans gets
//! tool spans nested under them), else to `charm` with a link to the foreign context.
//!
//! The ids it builds with, and the context Juju handed the hook, are `trace_context`'s; the
//! custom spans the charm's code sent (`listen`) join the same request with their own
//! resources, adopted here.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_shim::{CallEnd, Record};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::juju::HookEnv;
use crate::supervise::{signal_name, ChildEnd, ChildRun};
use crate::trace::context::{parse_traceparent, DispatchIds, IncomingContext};
use crate::trace::failure::Exception;

/// The instrumentation scope of every span we make.
pub const SCOPE_NAME: &str = "juju-dispatch-trace";

/// Everything the root span says about the dispatch besides the child and the tool calls.
#[derive(Debug, Clone, Default)]
pub struct RootFacts {
    pub start: Option<SystemTime>,
    pub target: Option<String>,
    /// No target: nothing ran, like a missing hook in Juju. Why (`no target for <event>`).
    pub skipped: Option<String>,
    /// Problems on our side the operator should know about (config, store, shims...).
    pub problems: Vec<String>,
    pub records_dropped: u64,
    pub records_ignored: u64,
    pub incoming: Option<IncomingContext>,
    pub continued: bool,
    /// Spans the charm's code sent us (kept), and what was turned away.
    pub custom_spans: usize,
    pub custom_spans_dropped: u64,
    pub custom_requests_refused: u64,
    /// Why the custom-span listener did not work (bind failure, internal error): not for the
    /// operator's stderr, there is nothing to act on, but whoever misses their spans finds it.
    pub custom_spans_error: Option<String>,
}

/// What became of the charm, for `TraceBuilder::finished`.
pub struct CharmEnd<'a> {
    /// How it ran; `None` when nothing ran.
    pub run: Option<&'a ChildRun>,
    /// What it reported before failing (`failure`).
    pub exception: Option<&'a Exception>,
    /// The last bytes it wrote to stderr, when it failed (`stderr_tail`).
    pub stderr_tail: Option<&'a str>,
    /// The target was this program: refused, with this reason and exit code.
    pub itself: Option<(String, i32)>,
}

/// Builds the resource and spans of a dispatch.
pub struct TraceBuilder {
    pub ids: DispatchIds,
    resource: Resource,
    /// The Juju topology part of our resource, added to the resources of custom spans.
    topology: Vec<(&'static str, String)>,
    scope: InstrumentationScope,
    event_name: String,
    event_attributes: Vec<KeyValue>,
}

impl TraceBuilder {
    /// The W3C `traceparent` of the root span (for the wrapper's own hook-tool calls, which
    /// are children of the root).
    pub fn root_traceparent(&self) -> String {
        format!("00-{}-{}-01", self.ids.trace_id, self.ids.root_span_id)
    }

    pub fn new(
        ids: DispatchIds,
        env: &HookEnv,
        charm_name: Option<&str>,
        service_name: Option<&str>,
    ) -> TraceBuilder {
        let mut resource = Vec::new();
        let app = env.application_name();
        if let Some(service) = service_name.or(app).or(charm_name) {
            resource.push(KeyValue::new("service.name", service.to_string()));
        }
        let pairs = [
            ("service.namespace", env.get("JUJU_MODEL_UUID")),
            ("service.namespace.name", env.get("JUJU_MODEL_NAME")),
            ("service.instance.id", env.unit_number()),
            ("charm", charm_name),
            ("juju_unit", env.unit_name()),
            ("juju_application", app),
            ("juju_model", env.get("JUJU_MODEL_NAME")),
            ("juju_model_uuid", env.get("JUJU_MODEL_UUID")),
        ];
        let mut topology = Vec::new();
        if let Some(service) = service_name.or(app).or(charm_name) {
            topology.push(("service.name", service.to_string()));
        }
        for (key, value) in pairs {
            if let Some(value) = value {
                resource.push(KeyValue::new(key, value.to_string()));
                topology.push((key, value.to_string()));
            }
        }
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(resource)
            .build();
        let scope = InstrumentationScope::builder(SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        TraceBuilder {
            ids,
            resource,
            topology,
            scope,
            event_name: env.event_name().to_string(),
            event_attributes: env
                .event_attributes()
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect(),
        }
    }

    fn span(
        &self,
        span_id: SpanId,
        parent: SpanId,
        kind: SpanKind,
        name: String,
        window: (SystemTime, SystemTime),
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.ids.trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: window.0,
            end_time: window.1,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The root span. `failed` carries the charm's failure (or our interruption) as ERROR.
    pub fn root_span(
        &self,
        facts: &RootFacts,
        end: SystemTime,
        failure: Option<String>,
        extra: Vec<KeyValue>,
    ) -> SpanData {
        let start = facts.start.unwrap_or(end);
        let mut span = self.span(
            self.ids.root_span_id,
            self.ids.root_parent.unwrap_or(SpanId::INVALID),
            SpanKind::Internal,
            self.event_name.clone(),
            (start, end),
        );
        span.parent_span_is_remote = self.ids.root_parent.is_some();
        span.attributes = self.event_attributes.clone();
        if let Some(target) = &facts.target {
            span.attributes
                .push(KeyValue::new("dispatch.target", target.clone()));
        }
        if let Some(reason) = &facts.skipped {
            span.attributes
                .push(KeyValue::new("dispatch.skipped", true));
            span.attributes
                .push(KeyValue::new("dispatch.skip_reason", reason.clone()));
        }
        if !facts.problems.is_empty() {
            span.attributes.push(KeyValue::new(
                "dispatch.problems",
                string_array(facts.problems.iter().cloned()),
            ));
        }
        if facts.records_dropped > 0 {
            span.attributes.push(KeyValue::new(
                "dispatch.tool_records_dropped",
                facts.records_dropped as i64,
            ));
        }
        if facts.records_ignored > 0 {
            span.attributes.push(KeyValue::new(
                "dispatch.tool_records_ignored",
                facts.records_ignored as i64,
            ));
        }
        for (key, count) in [
            ("dispatch.custom_spans", facts.custom_spans as u64),
            ("dispatch.custom_spans_dropped", facts.custom_spans_dropped),
            (
                "dispatch.custom_requests_refused",
                facts.custom_requests_refused,
            ),
        ] {
            if count > 0 {
                span.attributes.push(KeyValue::new(key, count as i64));
            }
        }
        if let Some(error) = &facts.custom_spans_error {
            span.attributes
                .push(KeyValue::new("dispatch.custom_spans_error", error.clone()));
        }
        if let Some(incoming) = &facts.incoming {
            if !facts.continued {
                span.links.links.push(Link::new(
                    incoming.context.clone(),
                    vec![KeyValue::new("dispatch.link.source", incoming.source)],
                    0,
                ));
            }
        }
        span.attributes.extend(extra);
        if let Some(description) = failure {
            span.status = Status::error(description);
        }
        span
    }

    /// The `charm` span for the child process.
    /// The `charm` span. `exception`: what the charm reported before it failed, as an
    /// `exception` event at `exception_time` (only on a failed run).
    pub fn charm_span(
        &self,
        run: &ChildRun,
        executable: &str,
        exception: Option<(&Exception, SystemTime)>,
    ) -> SpanData {
        let mut span = self.span(
            self.ids.charm_span_id,
            self.ids.root_span_id,
            SpanKind::Internal,
            "charm".to_string(),
            (run.started, run.ended),
        );
        let name = executable.rsplit('/').next().unwrap_or(executable);
        span.attributes.extend([
            KeyValue::new("process.executable.name", name.to_string()),
            KeyValue::new("process.executable.path", executable.to_string()),
        ]);
        if let Some(pid) = run.pid {
            span.attributes
                .push(KeyValue::new("process.pid", pid as i64));
        }
        match run.end {
            ChildEnd::Exited(code) => {
                span.attributes
                    .push(KeyValue::new("process.exit.code", code as i64));
                if code != 0 {
                    span.attributes
                        .push(KeyValue::new("error.type", code.to_string()));
                    span.status = Status::error(match &run.spawn_error {
                        Some(e) => format!("could not run {executable}: {e}"),
                        None => format!("exit code {code}"),
                    });
                }
            }
            ChildEnd::Signaled(signal) => {
                let name = signal_name(signal);
                span.attributes
                    .push(KeyValue::new("error.type", name.clone()));
                span.attributes
                    .push(KeyValue::new("dispatch.child.signal", name.clone()));
                span.status = Status::error(format!("killed by {name}"));
            }
        }
        if let (Some((exception, time)), true) = (exception, run.end.failed()) {
            span.events.events.push(exception.event(time));
        }
        if !run.signals.is_empty() {
            let names = |forwarded: bool| {
                string_array(
                    run.signals
                        .iter()
                        .filter(move |s| s.forwarded == forwarded)
                        .map(|s| signal_name(s.signal)),
                )
            };
            span.attributes
                .push(KeyValue::new("dispatch.signals.forwarded", names(true)));
            span.attributes.push(KeyValue::new(
                "dispatch.signals.not_forwarded",
                names(false),
            ));
        }
        if let Some(usage) = &run.usage {
            span.attributes.extend([
                KeyValue::new("dispatch.child.cpu_user_seconds", usage.user.as_secs_f64()),
                KeyValue::new(
                    "dispatch.child.cpu_system_seconds",
                    usage.system.as_secs_f64(),
                ),
                KeyValue::new("dispatch.child.max_rss_bytes", usage.max_rss_bytes as i64),
            ]);
        }
        span
    }

    /// One CLIENT span for a hook-tool call reported by a shim.
    pub fn tool_span(&self, record: &Record) -> SpanData {
        let span_id = RandomIdGenerator::default().new_span_id();
        let (parent, foreign) = match parse_traceparent(&record.traceparent) {
            Some(ctx) if ctx.trace_id() == self.ids.trace_id => (ctx.span_id(), None),
            Some(ctx) => (self.ids.charm_span_id, Some(ctx)),
            None => (self.ids.charm_span_id, None),
        };
        let mut span = self.span(
            span_id,
            parent,
            SpanKind::Client,
            record.tool.clone(),
            (
                unix_nanos_to_time(record.start_unix_nanos),
                unix_nanos_to_time(record.end_unix_nanos),
            ),
        );
        let command = std::iter::once(record.tool.clone()).chain(record.args.iter().cloned());
        span.attributes
            .push(KeyValue::new("process.command_args", string_array(command)));
        if record.args.len() < record.arg_count {
            span.attributes.push(KeyValue::new(
                "dispatch.args_omitted",
                (record.arg_count - record.args.len()) as i64,
            ));
        }
        if record.pid != 0 {
            span.attributes
                .push(KeyValue::new("process.pid", record.pid as i64));
        }
        match record.end {
            CallEnd::Exited(code) => {
                span.attributes
                    .push(KeyValue::new("process.exit.code", code as i64));
                if code != 0 {
                    span.attributes
                        .push(KeyValue::new("error.type", code.to_string()));
                    span.status = Status::error(format!("exit code {code}"));
                }
            }
            CallEnd::Signaled(signal) => {
                let name = signal_name(signal);
                span.attributes
                    .push(KeyValue::new("error.type", name.clone()));
                span.status = Status::error(format!("killed by {name}"));
            }
            CallEnd::SpawnFailed(errno) => {
                span.attributes
                    .push(KeyValue::new("process.exit.code", 127_i64));
                span.attributes
                    .push(KeyValue::new("error.type", "127".to_string()));
                span.status = Status::error(format!(
                    "could not run the real tool: {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
        }
        match record.tool.as_str() {
            "status-set" => {
                let (application, positional) = status_set_args(&record.args);
                if let Some(status) = positional.first() {
                    span.attributes
                        .push(KeyValue::new("juju.status", status.to_string()));
                }
                if let Some(message) = positional.get(1) {
                    span.attributes
                        .push(KeyValue::new("juju.status.message", message.to_string()));
                }
                span.attributes
                    .push(KeyValue::new("juju.status.application", application));
            }
            "juju-log" | "action-log" => {
                if !record.log_level.is_empty() {
                    span.attributes
                        .push(KeyValue::new("juju.log.level", record.log_level.clone()));
                }
                span.attributes.push(KeyValue::new(
                    "juju.log.message_length",
                    record.log_length as i64,
                ));
                if !record.log_text.is_empty() {
                    span.attributes
                        .push(KeyValue::new("juju.log.message", record.log_text.clone()));
                }
            }
            _ => {}
        }
        if let Some(foreign) = foreign {
            span.links.links.push(Link::new(
                foreign,
                vec![KeyValue::new("dispatch.link.source", "TRACEPARENT")],
                0,
            ));
        }
        span
    }

    /// Encodes spans as one OTLP request (protobuf bytes).
    pub fn encode(&self, spans: Vec<SpanData>) -> Vec<u8> {
        self.request(spans).encode_to_vec()
    }

    pub fn request(&self, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(&self.resource);
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
    }

    /// The span model's verdict on a finished dispatch (DESIGN §4, §5): a span for every
    /// hook-tool call (the charm's, then ours), the `charm` span, the root span with the
    /// failure if there was one (the charm exited non-zero or died of a signal, or the target
    /// was this program), the charm's own spans, and the priority the store keeps it by:
    /// failed > changed something (a state-changing hook tool was called) > quiet.
    pub fn finished(
        &self,
        facts: &RootFacts,
        charm_calls: &[Record],
        own_calls: &[Record],
        custom: Vec<ResourceSpans>,
        charm: CharmEnd,
    ) -> (Vec<u8>, crate::store::Priority) {
        use crate::store::Priority;
        let CharmEnd {
            run,
            exception,
            stderr_tail,
            itself,
        } = charm;
        let mut spans = Vec::with_capacity(charm_calls.len() + own_calls.len() + 2);
        let mut changed = false;
        for record in charm_calls.iter().chain(own_calls) {
            changed |= dispatch_shim::changes_state(&record.tool);
            spans.push(self.tool_span(record));
        }
        let mut extra = vec![KeyValue::new(
            "dispatch.tool_calls",
            charm_calls.len() as i64,
        )];
        let failure = match run {
            Some(run) => {
                let target = facts.target.clone().unwrap_or_default();
                // When ops logged it: the charm's last `juju-log` at ERROR.
                let logged_at = charm_calls
                    .iter()
                    .rfind(|r| r.tool == "juju-log" && r.log_level == "ERROR")
                    .map_or(run.ended, |r| unix_nanos_to_time(r.start_unix_nanos));
                let exception = exception.map(|e| (e, logged_at));
                let mut charm = self.charm_span(run, &target, exception);
                if let Some(tail) = stderr_tail.filter(|_| run.end.failed()) {
                    charm.attributes.push(KeyValue::new(
                        "dispatch.child.stderr_tail",
                        tail.to_string(),
                    ));
                }
                spans.push(charm);
                match run.end {
                    ChildEnd::Exited(code) => {
                        extra.push(KeyValue::new("dispatch.exit_code", code as i64));
                        (code != 0).then(|| format!("charm exited with code {code}"))
                    }
                    ChildEnd::Signaled(signal) => {
                        Some(format!("charm killed by {}", signal_name(signal)))
                    }
                }
            }
            // The target was this program: refused, with this reason and exit code.
            None => itself.map(|(reason, code)| {
                extra.push(KeyValue::new("dispatch.exit_code", code as i64));
                reason
            }),
        };
        let priority = if failure.is_some() {
            Priority::Failed
        } else if changed {
            Priority::Changed
        } else {
            Priority::Quiet
        };
        spans.push(self.root_span(facts, SystemTime::now(), failure, extra));
        (self.encode_with_custom(spans, custom), priority)
    }

    /// Our spans, then the spans the charm's code sent (README, *Your own spans and events*),
    /// as one OTLP request.
    pub fn encode_with_custom(&self, spans: Vec<SpanData>, custom: Vec<ResourceSpans>) -> Vec<u8> {
        let mut request = self.request(spans);
        request
            .resource_spans
            .extend(custom.into_iter().map(|r| self.adopt(r)));
        request.encode_to_vec()
    }

    /// Custom spans keep their own resource (the charm chose it: its `service.name`, its SDK's
    /// `telemetry.sdk.*`), with the Juju topology keys it lacks added, so that whatever finds
    /// our spans by unit, application or model finds these too. An SDK's default
    /// `service.name` (`unknown_service`, `unknown_service:<exe>`) is not a choice: ours
    /// replaces it.
    fn adopt(&self, mut custom: ResourceSpans) -> ResourceSpans {
        use opentelemetry_proto::tonic::common::v1::{
            any_value, AnyValue, KeyValue as ProtoKeyValue,
        };
        let resource = custom.resource.get_or_insert_with(Default::default);
        let attributes = &mut resource.attributes;
        let unnamed = |kv: &ProtoKeyValue| {
            kv.key == "service.name"
                && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(name)) => {
                        name.is_empty() || name.starts_with("unknown_service")
                    }
                    _ => true,
                }
        };
        attributes.retain(|kv| !unnamed(kv));
        for (key, value) in &self.topology {
            if !attributes.iter().any(|kv| kv.key == *key) {
                attributes.push(ProtoKeyValue {
                    key: key.to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(value.clone())),
                    }),
                    ..ProtoKeyValue::default()
                });
            }
        }
        custom
    }
}

/// `status-set [--application[=BOOL]] [--] <status> [message]` as Juju's flag parser reads
/// it (ops passes `--application=True|False`): whose status, and the positional arguments.
fn status_set_args(args: &[String]) -> (bool, Vec<&String>) {
    let mut application = false;
    let mut positional = Vec::new();
    let mut flags_done = false;
    for arg in args {
        if flags_done || !arg.starts_with('-') || arg == "-" {
            positional.push(arg);
        } else if arg == "--" {
            flags_done = true;
        } else if arg == "--application" || arg == "-application" {
            application = true;
        } else if let Some(value) = arg
            .strip_prefix("--application=")
            .or_else(|| arg.strip_prefix("-application="))
        {
            application = matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True");
        }
    }
    (application, positional)
}

/// Adds a string attribute to one span of an encoded OTLP request; `None` if the request does
/// not decode or holds no such span.
pub fn annotate_span(payload: &[u8], span_id: SpanId, key: &str, value: &str) -> Option<Vec<u8>> {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as ProtoKeyValue};
    let mut request = ExportTraceServiceRequest::decode(payload).ok()?;
    let wanted = span_id.to_bytes();
    let span = request
        .resource_spans
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut())
        .flat_map(|s| s.spans.iter_mut())
        .find(|s| s.span_id == wanted)?;
    span.attributes.push(ProtoKeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..ProtoKeyValue::default()
    });
    Some(request.encode_to_vec())
}

fn string_array(items: impl Iterator<Item = String>) -> Value {
    Value::Array(Array::String(items.map(StringValue::from).collect()))
}

pub fn unix_nanos_to_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

pub fn time_to_unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::hook_env as env;

    #[test]
    fn status_set_flags_are_read_like_juju_reads_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let read = |a: &[&str]| {
            let owned = args(a);
            let (app, pos) = status_set_args(&owned);
            (app, pos.into_iter().cloned().collect::<Vec<String>>())
        };
        assert_eq!(
            read(&["--application=True", "active", "ready"]),
            (true, args(&["active", "ready"]))
        );
        assert!(!read(&["--application=False", "blocked"]).0);
        assert!(read(&["--application", "waiting"]).0);
        assert_eq!(read(&["--", "blocked", "-x"]).1, args(&["blocked", "-x"]));
    }

    #[test]
    fn an_attribute_can_be_added_to_a_stored_span() {
        let ids = DispatchIds::new(None);
        let builder = TraceBuilder::new(ids, &env(&[]), None, None);
        let payload = builder.encode(vec![builder.root_span(
            &RootFacts::default(),
            SystemTime::now(),
            None,
            vec![],
        )]);
        let annotated = annotate_span(&payload, ids.root_span_id, "k", "v").unwrap();
        let request = ExportTraceServiceRequest::decode(annotated.as_slice()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert!(span.attributes.iter().any(|a| a.key == "k"));
        assert!(annotate_span(&payload, SpanId::from_bytes([9; 8]), "k", "v").is_none());
        assert!(annotate_span(b"junk", ids.root_span_id, "k", "v").is_none());
    }

    #[test]
    fn custom_spans_keep_their_resource_with_the_juju_topology_added() {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as Kv};
        use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
        let string = |key: &str, value: &str| Kv {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Kv::default()
        };
        let ids = DispatchIds::new(None);
        let hook = env(&[
            ("JUJU_UNIT_NAME", "myapp/0"),
            ("JUJU_MODEL_NAME", "m"),
            ("JUJU_MODEL_UUID", "uuid"),
        ]);
        let builder = TraceBuilder::new(ids, &hook, Some("my-charm"), None);
        let custom = |attributes: Vec<Kv>| ResourceSpans {
            resource: Some(ProtoResource {
                attributes,
                ..ProtoResource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "theirs".into(),
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        };
        let ours = builder.root_span(&RootFacts::default(), SystemTime::now(), None, vec![]);
        let payload = builder.encode_with_custom(
            vec![ours],
            vec![
                custom(vec![
                    string("service.name", "my-workload"),
                    string("juju_unit", "theirs/9"),
                    string("telemetry.sdk.language", "python"),
                ]),
                custom(vec![string("service.name", "unknown_service")]),
            ],
        );
        let request = ExportTraceServiceRequest::decode(payload.as_slice()).unwrap();
        let value = |r: &ResourceSpans, key: &str| {
            r.resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .filter(|kv| kv.key == key)
                .map(|kv| kv.value.clone().unwrap().value.unwrap())
                .collect::<Vec<_>>()
        };
        let s = |v: &str| vec![any_value::Value::StringValue(v.into())];
        assert_eq!(request.resource_spans.len(), 3);
        assert_eq!(
            request.resource_spans[0].scope_spans[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            SCOPE_NAME,
            "ours first"
        );
        let named = &request.resource_spans[1];
        assert_eq!(value(named, "service.name"), s("my-workload"));
        assert_eq!(value(named, "juju_unit"), s("theirs/9"), "theirs win");
        assert_eq!(value(named, "juju_application"), s("myapp"));
        assert_eq!(value(named, "charm"), s("my-charm"));
        assert_eq!(value(named, "service.namespace"), s("uuid"));
        assert_eq!(value(named, "telemetry.sdk.language"), s("python"));
        let unnamed = &request.resource_spans[2];
        assert_eq!(value(unnamed, "service.name"), s("myapp"));
        assert_eq!(unnamed.scope_spans[0].spans[0].name, "theirs");
    }

    #[test]
    fn the_root_span_counts_custom_spans_and_names_a_listener_failure() {
        let builder = TraceBuilder::new(DispatchIds::new(None), &env(&[]), None, None);
        let facts = RootFacts {
            custom_spans: 2,
            custom_spans_dropped: 1,
            custom_spans_error: Some("cannot listen".into()),
            ..RootFacts::default()
        };
        let root = builder.root_span(&facts, SystemTime::now(), None, vec![]);
        let attributes = &root.attributes;
        assert!(attributes.contains(&KeyValue::new("dispatch.custom_spans", 2_i64)));
        assert!(attributes.contains(&KeyValue::new("dispatch.custom_spans_dropped", 1_i64)));
        assert!(attributes.contains(&KeyValue::new(
            "dispatch.custom_spans_error",
            "cannot listen".to_string()
        )));
        assert!(!attributes
            .iter()
            .any(|kv| kv.key.as_str() == "dispatch.custom_requests_refused"));
        assert!(
            matches!(root.status, Status::Unset),
            "not the charm's failure"
        );
    }

    fn record(traceparent: String) -> Record {
        Record {
            nonce: "n".into(),
            tool: "status-set".into(),
            pid: 7,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            end: CallEnd::Exited(1),
            traceparent,
            log_level: String::new(),
            log_length: 0,
            log_text: String::new(),
            arg_count: 2,
            args: vec!["active".into(), "ready".into()],
        }
    }

    #[test]
    fn tool_spans_nest_under_a_same_trace_parent_and_link_a_foreign_one() {
        let ids = DispatchIds::new(None);
        let builder = TraceBuilder::new(ids, &env(&[]), None, None);
        let mine = format!("00-{}-{}-01", ids.trace_id, "1111111111111111");
        let span = builder.tool_span(&record(mine));
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("1111111111111111").unwrap()
        );
        assert!(span.links.links.is_empty());
        assert_eq!(span.span_kind, SpanKind::Client);
        assert!(matches!(span.status, Status::Error { .. }));

        let foreign = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string();
        let span = builder.tool_span(&record(foreign));
        assert_eq!(span.parent_span_id, ids.charm_span_id);
        assert_eq!(span.links.links.len(), 1);
        assert!(span
            .attributes
            .contains(&KeyValue::new("juju.status", "active".to_string())));
    }
}
