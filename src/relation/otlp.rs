//! The `otlp` interface (README, *Relations*), as `charmlibs-interfaces-otlp` (canonical/
//! charmlibs `interfaces/otlp`) writes it; there is no spec in charm-relation-interfaces, the
//! library is the reference. The provider's leader writes one key in its app databag,
//! `endpoints`: a JSON list of `{"protocol": "http"|"grpc", "endpoint": <base URL>,
//! "telemetries": ["logs"|"metrics"|"traces", ...], "insecure": <bool>}`. Unknown fields are
//! ignored and `insecure` defaults to false, as the library's models do.
//!
//! We speak OTLP/HTTP, so we take the first `http` entry that lists `traces` (the library's
//! own requirer prefers gRPC, which we do not speak) and post to its `endpoint` +
//! `/v1/traces`, as the collector's `otlphttp` exporter does with it. `insecure` says the
//! endpoint has no TLS (the collector charm derives it from its own TLS); the URL's scheme
//! already says that, and the library's own examples publish `http://` URLs with
//! `insecure: false`, so it is read for nothing: an `https` URL is always verified. The
//! requirer side needs nothing from us (its `metadata` and `rules` carry log and metric rules,
//! and the provider publishes its endpoints without them), so nothing is published.

use serde::Deserialize;

use super::decode_value;

#[derive(Deserialize)]
struct Endpoint {
    protocol: String,
    endpoint: String,
    telemetries: Vec<String>,
}

/// What a provider's `endpoints` offer for traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traces {
    /// The traces URL of its first http endpoint for traces.
    Http(String),
    /// Traces over gRPC only.
    GrpcOnly,
    /// No endpoint for traces (or nothing readable).
    Nothing,
}

/// Reads a provider's `endpoints` value.
pub fn traces(endpoints: &str) -> Traces {
    let Ok(endpoints) = serde_json::from_str::<Vec<Endpoint>>(&decode_value(endpoints)) else {
        return Traces::Nothing;
    };
    let for_traces = |e: &&Endpoint| e.telemetries.iter().any(|t| t == "traces");
    let http = endpoints
        .iter()
        .filter(for_traces)
        .filter(|e| e.protocol == "http")
        .map(|e| e.endpoint.trim().trim_end_matches('/'))
        .find(|base| !base.is_empty());
    match http {
        Some(base) if base.ends_with("/v1/traces") => Traces::Http(base.to_string()),
        Some(base) => Traces::Http(format!("{base}/v1/traces")),
        None if endpoints
            .iter()
            .filter(for_traces)
            .any(|e| e.protocol == "grpc") =>
        {
            Traces::GrpcOnly
        }
        None => Traces::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_http_endpoint_for_traces_is_taken_whatever_insecure_says() {
        // As the library's provider writes it (ops saves the list as one JSON string).
        let endpoints = r#"[{"protocol": "grpc", "endpoint": "http://otelcol-0:4317", "telemetries": ["logs", "metrics", "traces"], "insecure": true}, {"protocol": "http", "endpoint": "http://otelcol-0:4318", "telemetries": ["logs", "metrics", "traces"], "insecure": false}]"#;
        assert_eq!(
            traces(endpoints),
            Traces::Http("http://otelcol-0:4318/v1/traces".into())
        );
        let https = r#"[{"protocol":"http","endpoint":"https://c.example/","telemetries":["traces"],"insecure":true,"future":1}]"#;
        assert_eq!(
            traces(https),
            Traces::Http("https://c.example/v1/traces".into())
        );
        let metrics_first = r#"[{"protocol":"http","endpoint":"http://m:4318","telemetries":["metrics"]},
                                {"protocol":"http","endpoint":"http://t:4318","telemetries":["traces"]}]"#;
        assert_eq!(
            traces(metrics_first),
            Traces::Http("http://t:4318/v1/traces".into())
        );
    }

    #[test]
    fn grpc_only_or_nothing_for_traces_is_told_apart() {
        let grpc = r#"[{"protocol":"grpc","endpoint":"otelcol-0:4317","telemetries":["traces"]}]"#;
        assert_eq!(traces(grpc), Traces::GrpcOnly);
        let logs = r#"[{"protocol":"http","endpoint":"http://l:4318","telemetries":["logs"]}]"#;
        assert_eq!(traces(logs), Traces::Nothing);
        assert_eq!(traces("[]"), Traces::Nothing);
        assert_eq!(traces("not json"), Traces::Nothing);
        // The library requires `telemetries` as a list: an entry without is not read.
        let bare = r#"[{"protocol":"http","endpoint":"http://x:4318","telemetries":"traces"}]"#;
        assert_eq!(traces(bare), Traces::Nothing);
    }
}
