//! OTLP/JSON trace requests (what the JavaScript exporter, otel-cli with `http/json` and
//! hand-made clients send) decoded into opentelemetry-proto's types, by hand, from a
//! `serde_json::Value`.
//!
//! By hand because opentelemetry-proto's derived `Deserialize` impls cost about 100 KB of
//! binary, against DESIGN §7's 4 MiB cap, while `Value` is parsed elsewhere already. The
//! mapping is the OTLP spec's JSON Protobuf Encoding: lowerCamelCase keys (the proto's
//! snake_case names are accepted too, as protobuf's JSON parsers do), trace and span ids as
//! hex (either case), enums as integers (their proto names are accepted too), 64-bit integers
//! as strings or numbers, bytes as base64; unknown keys are ignored and `null` is absent.
//! Untrusted input: errors say where (`resourceSpans[0].scopeSpans[1].spans[2].traceId: ...`).
//! Held to opentelemetry-proto's own serde by the tests below: hundreds of generated
//! requests, in every spelling the mapping allows, decode to what was serialized.
//!
//! What the protobuf path keeps and this one does not, each for its size against the cap:
//! a resource's `entityRefs` (Development status in the OTLP spec; 3 KB), and the last bit
//! of a double written with more than 15 digits (zeros included) or a decimal exponent
//! beyond ±22 (serde_json's default parser can be one unit in the last place off there; its
//! exact parser, the `float_roundtrip` feature, costs 23 KB). The Profiling-only fields
//! (`keyStrindex`, `stringValueStrindex`) are left out, as the spec asks of other signals.
//! Base64 is decoded here too, in a few lines: the base64 crate is linked, but only its
//! encoder is compiled in, and its decoder takes one alphabet at a time where OTLP/JSON
//! clients send either.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::{Map, Value};

type Object = Map<String, Value>;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let request = value.as_object().ok_or("expected an object")?;
    Ok(ExportTraceServiceRequest {
        resource_spans: items(request, "resourceSpans", "resource_spans", resource_spans)?,
    })
}

fn resource_spans(o: &Object) -> Result<ResourceSpans, String> {
    Ok(ResourceSpans {
        resource: optional(o, "resource", "resource", |r| {
            Ok(Resource {
                attributes: key_values(r, "attributes")?,
                dropped_attributes_count: count(r)?,
                ..Resource::default()
            })
        })?,
        scope_spans: items(o, "scopeSpans", "scope_spans", scope_spans)?,
        schema_url: string(o, "schemaUrl", "schema_url")?,
    })
}

fn scope_spans(o: &Object) -> Result<ScopeSpans, String> {
    Ok(ScopeSpans {
        scope: optional(o, "scope", "scope", |s| {
            Ok(InstrumentationScope {
                name: string(s, "name", "name")?,
                version: string(s, "version", "version")?,
                attributes: key_values(s, "attributes")?,
                dropped_attributes_count: count(s)?,
            })
        })?,
        spans: items(o, "spans", "spans", one_span)?,
        schema_url: string(o, "schemaUrl", "schema_url")?,
    })
}

fn one_span(o: &Object) -> Result<Span, String> {
    Ok(Span {
        trace_id: hex(o, "traceId", "trace_id")?,
        span_id: hex(o, "spanId", "span_id")?,
        trace_state: string(o, "traceState", "trace_state")?,
        parent_span_id: hex(o, "parentSpanId", "parent_span_id")?,
        flags: uint(o, "flags", "flags")? as u32,
        name: string(o, "name", "name")?,
        kind: enumeration(o, "kind", |name| {
            span::SpanKind::from_str_name(name).map(|k| k as i32)
        })?,
        start_time_unix_nano: uint(o, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: uint(o, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: key_values(o, "attributes")?,
        dropped_attributes_count: count(o)?,
        events: items(o, "events", "events", |e| {
            Ok(span::Event {
                time_unix_nano: uint(e, "timeUnixNano", "time_unix_nano")?,
                name: string(e, "name", "name")?,
                attributes: key_values(e, "attributes")?,
                dropped_attributes_count: count(e)?,
            })
        })?,
        dropped_events_count: uint(o, "droppedEventsCount", "dropped_events_count")? as u32,
        links: items(o, "links", "links", |l| {
            Ok(span::Link {
                trace_id: hex(l, "traceId", "trace_id")?,
                span_id: hex(l, "spanId", "span_id")?,
                trace_state: string(l, "traceState", "trace_state")?,
                attributes: key_values(l, "attributes")?,
                dropped_attributes_count: count(l)?,
                flags: uint(l, "flags", "flags")? as u32,
            })
        })?,
        dropped_links_count: uint(o, "droppedLinksCount", "dropped_links_count")? as u32,
        status: optional(o, "status", "status", |s| {
            Ok(Status {
                message: string(s, "message", "message")?,
                code: enumeration(s, "code", |name| {
                    status::StatusCode::from_str_name(name).map(|c| c as i32)
                })?,
            })
        })?,
    })
}

/// `attributes`, or a kvlist's `values`.
fn key_values(o: &Object, key: &str) -> Result<Vec<KeyValue>, String> {
    items(o, key, key, |kv| {
        Ok(KeyValue {
            key: string(kv, "key", "key")?,
            value: optional(kv, "value", "value", any_value_of)?,
            ..KeyValue::default()
        })
    })
}

fn any_value_of(o: &Object) -> Result<AnyValue, String> {
    use any_value::Value as V;
    let mut found = None;
    for (key, value) in o {
        let expected = |what: &str| format!("{key}: expected {what}");
        found = match key.as_str() {
            _ if value.is_null() => continue,
            "stringValue" | "string_value" => Some(V::StringValue(
                value
                    .as_str()
                    .ok_or_else(|| expected("a string"))?
                    .to_string(),
            )),
            "boolValue" | "bool_value" => Some(V::BoolValue(
                value.as_bool().ok_or_else(|| expected("true or false"))?,
            )),
            "intValue" | "int_value" => Some(V::IntValue(
                match value {
                    Value::String(s) => s.trim().parse().ok(),
                    other => other.as_i64(),
                }
                .ok_or_else(|| expected("a 64-bit integer"))?,
            )),
            "doubleValue" | "double_value" => Some(V::DoubleValue(
                match value {
                    Value::String(s) => s.trim().parse().ok(),
                    other => other.as_f64(),
                }
                .ok_or_else(|| expected("a number"))?,
            )),
            "arrayValue" | "array_value" => Some(V::ArrayValue(ArrayValue {
                values: optional(o, key, key, |a| items(a, "values", "values", any_value_of))?
                    .unwrap_or_default(),
            })),
            "kvlistValue" | "kvlist_value" => Some(V::KvlistValue(KeyValueList {
                values: optional(o, key, key, |l| key_values(l, "values"))?.unwrap_or_default(),
            })),
            "bytesValue" | "bytes_value" => Some(V::BytesValue(
                value
                    .as_str()
                    .and_then(base64)
                    .ok_or_else(|| expected("base64"))?,
            )),
            _ => continue,
        };
    }
    Ok(AnyValue { value: found })
}

/// A field by its JSON name or its proto name; `null` counts as absent.
fn field<'a>(o: &'a Object, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

/// An object field, decoded by `decode` (absent: `None`).
fn optional<T>(
    o: &Object,
    camel: &str,
    snake: &str,
    decode: impl Fn(&Object) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match field(o, camel, snake) {
        None => Ok(None),
        Some(Value::Object(inner)) => decode(inner).map(Some).map_err(|e| format!("{camel}.{e}")),
        Some(_) => Err(format!("{camel}: expected an object")),
    }
}

/// An array field of objects, each decoded by `decode` (absent: empty). Errors name the item.
fn items<T>(
    o: &Object,
    camel: &str,
    snake: &str,
    decode: impl Fn(&Object) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let list = match field(o, camel, snake) {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("{camel}: expected an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let decoded = match item {
            Value::Object(inner) => decode(inner),
            _ => Err("expected an object".to_string()),
        };
        out.push(decoded.map_err(|e| format!("{camel}[{i}].{e}"))?);
    }
    Ok(out)
}

fn string(o: &Object, camel: &str, snake: &str) -> Result<String, String> {
    match field(o, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{camel}: expected a string")),
    }
}

fn hex(o: &Object, camel: &str, snake: &str) -> Result<Vec<u8>, String> {
    let text = string(o, camel, snake)?;
    let digits = text.as_bytes();
    let nibble = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks(2) {
        match pair {
            [high, low] => match (nibble(*high), nibble(*low)) {
                (Some(high), Some(low)) => out.push((high << 4 | low) as u8),
                _ => return Err(format!("{camel}: expected hex")),
            },
            _ => return Err(format!("{camel}: expected hex")),
        }
    }
    Ok(out)
}

/// A non-negative integer, as a number or a string (absent: 0).
fn uint(o: &Object, camel: &str, snake: &str) -> Result<u64, String> {
    match field(o, camel, snake) {
        None => Some(0),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(value) => value.as_u64(),
    }
    .ok_or_else(|| format!("{camel}: expected a non-negative integer"))
}

fn count(o: &Object) -> Result<u32, String> {
    Ok(uint(o, "droppedAttributesCount", "dropped_attributes_count")? as u32)
}

/// An enum: its number, or its proto name.
fn enumeration(
    o: &Object,
    key: &str,
    by_name: impl Fn(&str) -> Option<i32>,
) -> Result<i32, String> {
    match field(o, key, key) {
        None => Some(0),
        Some(Value::String(name)) => by_name(name),
        Some(value) => value.as_i64().and_then(|n| i32::try_from(n).ok()),
    }
    .ok_or_else(|| format!("{key}: expected an enum value"))
}

/// Standard or URL-safe base64, padded or not.
fn base64(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for group in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in group.iter().enumerate() {
            bits |= digit(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_as_sdks_send_it_decodes_field_by_field() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"otel-cli"}}],"droppedAttributesCount":1},
          "scopeSpans":[{"scope":{"name":"my-lib","version":"1.0"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "parentSpanId":"eee19b7ec3c1b173","name":"render","kind":3,"flags":257,
            "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
            "attributes":[{"key":"n","value":{"intValue":"42"}},
                          {"key":"m","value":{"intValue":-7}},
                          {"key":"ok","value":{"boolValue":true}},
                          {"key":"b","value":{"bytesValue":"aGk="}},
                          {"key":"kv","value":{"kvlistValue":{"values":[{"key":"x","value":{"stringValue":"y"}}]}}},
                          {"key":"list","value":{"arrayValue":{"values":[{"doubleValue":1.5},{"doubleValue":"2"}]}}},
                          {"key":"empty","value":{}}],
            "events":[{"timeUnixNano":"1544712660500000000","name":"written",
                       "attributes":[{"key":"bytes","value":{"intValue":10}}]}],
            "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175",
                      "attributes":[{"key":"why","value":{"stringValue":"retry"}}]}],
            "status":{"code":2,"message":"boom"},
            "unknownField":"ignored"}]}],"schemaUrl":"https://opentelemetry.io/schemas/1.21.0"}]}"#;
        let request = decode(body).unwrap();
        let resource_spans = &request.resource_spans[0];
        assert_eq!(
            resource_spans.schema_url,
            "https://opentelemetry.io/schemas/1.21.0"
        );
        assert_eq!(
            resource_spans
                .resource
                .as_ref()
                .unwrap()
                .dropped_attributes_count,
            1
        );
        let scope = &resource_spans.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().version, "1.0");
        let span = &scope.spans[0];
        assert_eq!(span.trace_id[..2], [0x5b, 0x8e]);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.parent_span_id[7], 0x73);
        assert_eq!((span.kind, span.flags), (3, 257));
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        let values: Vec<_> = span
            .attributes
            .iter()
            .map(|kv| kv.value.clone().unwrap().value)
            .collect();
        use any_value::Value as V;
        assert_eq!(values[0], Some(V::IntValue(42)));
        assert_eq!(values[1], Some(V::IntValue(-7)));
        assert_eq!(values[2], Some(V::BoolValue(true)));
        assert_eq!(values[3], Some(V::BytesValue(b"hi".to_vec())));
        assert!(matches!(&values[4], Some(V::KvlistValue(kv)) if kv.values[0].key == "x"));
        assert!(matches!(&values[5], Some(V::ArrayValue(a)) if a.values.len() == 2));
        assert_eq!(values[6], None);
        assert_eq!(span.events[0].name, "written");
        assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
        assert_eq!(span.links[0].attributes[0].key, "why");
        let status = span.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
    }

    #[test]
    fn proto_names_and_enum_names_are_accepted_too() {
        let request = decode(
            br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"07070707070707070707070707070707",
                "span_id":"0909090909090909","kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_OK"}}]}]}]}"#,
        )
        .unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 1);
        assert_eq!(decode(b"{}").unwrap().resource_spans.len(), 0);
    }

    #[test]
    fn errors_say_where() {
        for (body, wanted) in [
            (&br#"[]"#[..], "expected an object"),
            (br#"{"resourceSpans":{}}"#, "resourceSpans: expected an array"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
                "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected hex",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#,
                "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected a non-negative integer",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"x"}}]}]}]}]}"#,
                "spans[0].attributes[0].value.intValue: expected a 64-bit integer",
            ),
            (br#"{"resourceSpans":[{"resource":{"attributes":[{"key":1}]}}]}"#, "resourceSpans[0].resource.attributes[0].key: expected a string"),
            (b"{not json", "key must be a string"),
        ] {
            let error = decode(body).unwrap_err();
            assert!(error.contains(wanted), "{error:?} lacks {wanted:?}");
        }
    }

    #[test]
    fn base64_decodes_padded_unpadded_and_url_safe() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64("").unwrap(), b"");
        assert!(base64("a").is_none());
        assert!(base64("a*==").is_none());
    }

    /// Requests for the cross-checks: deterministic (splitmix64 from a fixed seed, so a
    /// failure names a case that fails again), varied in every field the decoder reads.
    struct Generator(u64);

    impl Generator {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// An id of the usual length, sometimes absent.
        fn id(&mut self, len: usize) -> Vec<u8> {
            if self.one_in(8) {
                Vec::new()
            } else {
                self.bytes(len)
            }
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "",
                "render",
                "db.query",
                "é",
                "日本語",
                "🦀",
                "\"quoted\"",
                "back\\slash",
                "line\nbreak",
                "\u{0}\u{1f}\t",
                "/v1/traces?x=1",
                "unknown_service",
            ];
            (0..self.below(3))
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn count(&mut self) -> u32 {
            if self.one_in(2) {
                0
            } else {
                self.next() as u32
            }
        }

        /// Up to 9 significant digits, between 1e-7 and 1e13: serde_json writes these with
        /// at most 15 digits and reads them back exactly (see the header).
        fn double(&mut self) -> f64 {
            let digits = self.below(1_000_000_000) as i64;
            let sign = if self.one_in(2) { -1 } else { 1 };
            let exponent = self.below(12) as i64 - 7;
            format!("{}e{exponent}", sign * digits).parse().unwrap()
        }

        fn value(&mut self, depth: u32) -> AnyValue {
            use any_value::Value as V;
            let kinds = if depth >= 2 { 6 } else { 8 };
            let value = match self.below(kinds) {
                0 => None,
                1 => Some(V::StringValue(self.text())),
                2 => Some(V::BoolValue(self.one_in(2))),
                3 => Some(V::IntValue(match self.below(4) {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => self.next() as i64,
                })),
                4 => Some(V::DoubleValue(self.double())),
                5 => {
                    let len = self.below(12) as usize;
                    Some(V::BytesValue(self.bytes(len)))
                }
                6 => Some(V::ArrayValue(ArrayValue {
                    values: (0..self.below(4)).map(|_| self.value(depth + 1)).collect(),
                })),
                _ => Some(V::KvlistValue(KeyValueList {
                    values: self.attributes(depth + 1),
                })),
            };
            AnyValue { value }
        }

        fn attributes(&mut self, depth: u32) -> Vec<KeyValue> {
            (0..self.below(5))
                .map(|_| KeyValue {
                    key: self.text(),
                    value: if self.one_in(10) {
                        None
                    } else {
                        Some(self.value(depth))
                    },
                    ..KeyValue::default()
                })
                .collect()
        }

        fn span(&mut self) -> Span {
            Span {
                trace_id: self.id(16),
                span_id: self.id(8),
                trace_state: if self.one_in(3) {
                    "k=v,a=b".into()
                } else {
                    String::new()
                },
                parent_span_id: self.id(8),
                flags: self.count(),
                name: self.text(),
                kind: self.below(7) as i32,
                start_time_unix_nano: self.next(),
                end_time_unix_nano: self.next(),
                attributes: self.attributes(0),
                dropped_attributes_count: self.count(),
                events: (0..self.below(3))
                    .map(|_| span::Event {
                        time_unix_nano: self.next(),
                        name: self.text(),
                        attributes: self.attributes(0),
                        dropped_attributes_count: self.count(),
                    })
                    .collect(),
                dropped_events_count: self.count(),
                links: (0..self.below(3))
                    .map(|_| span::Link {
                        trace_id: self.id(16),
                        span_id: self.id(8),
                        trace_state: self.text(),
                        attributes: self.attributes(0),
                        dropped_attributes_count: self.count(),
                        flags: self.count(),
                    })
                    .collect(),
                dropped_links_count: self.count(),
                status: (!self.one_in(3)).then(|| Status {
                    message: self.text(),
                    code: self.below(4) as i32,
                }),
            }
        }

        fn request(&mut self) -> ExportTraceServiceRequest {
            ExportTraceServiceRequest {
                resource_spans: (0..self.below(4))
                    .map(|_| ResourceSpans {
                        resource: (!self.one_in(4)).then(|| Resource {
                            attributes: self.attributes(0),
                            dropped_attributes_count: self.count(),
                            // Not `entity_refs`: the decoder leaves them out (see the
                            // header).
                            ..Resource::default()
                        }),
                        scope_spans: (0..self.below(4))
                            .map(|_| ScopeSpans {
                                scope: (!self.one_in(4)).then(|| InstrumentationScope {
                                    name: self.text(),
                                    version: self.text(),
                                    attributes: self.attributes(0),
                                    dropped_attributes_count: self.count(),
                                }),
                                spans: (0..self.below(5)).map(|_| self.span()).collect(),
                                schema_url: self.text(),
                            })
                            .collect(),
                        schema_url: self.text(),
                    })
                    .collect(),
            }
        }
    }

    /// opentelemetry-proto's own serde (the crate is built `with-serde`; only its
    /// `Serialize` is in the binary, for `dispatch traces --format otlp-json`) is the
    /// reference the hand-written decoder is held to.
    #[test]
    fn what_opentelemetry_protos_serde_writes_decodes_to_the_same_request() {
        let mut generator = Generator(0x0d15_7a7c);
        for case in 0..400 {
            let request = generator.request();
            let json = serde_json::to_vec(&request).unwrap();
            let text = String::from_utf8_lossy(&json);
            let decoded = decode(&json).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}"));
            assert_eq!(decoded, request, "case {case}: {text}");
            // And the two decoders agree.
            let theirs: ExportTraceServiceRequest = serde_json::from_slice(&json).unwrap();
            assert_eq!(decoded, theirs, "case {case}: {text}");
        }
    }

    /// Rewrites OTLP/JSON, at random, as other exporters and hand-made clients spell it:
    /// proto (snake_case) field names, 64-bit integers as numbers, enums by name, ids in
    /// uppercase hex, doubles as strings, base64 unpadded or URL-safe.
    fn respell(value: &mut Value, generator: &mut Generator) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| respell(v, generator)),
            Value::Object(object) => {
                for (key, mut value) in std::mem::take(object) {
                    respell(&mut value, generator);
                    let respelled = generator.one_in(2);
                    let other = match (key.as_str(), &value) {
                        (_, _) if !respelled => None,
                        (
                            "startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano",
                            Value::String(n),
                        ) => n.parse::<u64>().ok().map(Value::from),
                        ("intValue", Value::String(n)) => n.parse::<i64>().ok().map(Value::from),
                        ("doubleValue", Value::Number(n)) => {
                            n.as_f64().map(|d| Value::String(d.to_string()))
                        }
                        ("traceId" | "spanId" | "parentSpanId", Value::String(id)) => {
                            Some(Value::String(id.to_uppercase()))
                        }
                        ("bytesValue", Value::String(b)) => Some(Value::String(
                            b.trim_end_matches('=').replace('+', "-").replace('/', "_"),
                        )),
                        ("kind", Value::Number(n)) => n
                            .as_i64()
                            .and_then(|n| span::SpanKind::try_from(n as i32).ok())
                            .map(|k| Value::from(k.as_str_name())),
                        ("code", Value::Number(n)) => n
                            .as_i64()
                            .and_then(|n| status::StatusCode::try_from(n as i32).ok())
                            .map(|c| Value::from(c.as_str_name())),
                        _ => None,
                    };
                    let value = other.unwrap_or(value);
                    let key = if generator.one_in(2) {
                        snake_case(&key)
                    } else {
                        key
                    };
                    object.insert(key, value);
                }
            }
            _ => {}
        }
    }

    fn snake_case(camel: &str) -> String {
        let mut out = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn every_spelling_the_otlp_json_mapping_allows_decodes_to_the_same_request() {
        let mut generator = Generator(0x05be_11ed);
        for case in 0..400 {
            let request = generator.request();
            let mut json = serde_json::to_value(&request).unwrap();
            respell(&mut json, &mut generator);
            let text = json.to_string();
            let decoded =
                decode(text.as_bytes()).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}"));
            assert_eq!(decoded, request, "case {case}: {text}");
        }
    }
}
