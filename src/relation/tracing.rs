//! The `tracing` interface, v2 (DESIGN §3): the provider's `receivers` and our requirer side.

use serde::Deserialize;

use super::decode_value;

#[derive(Deserialize)]
struct Receiver {
    protocol: Protocol,
    url: String,
}

#[derive(Deserialize)]
struct Protocol {
    name: String,
}

/// The traces URL from a provider's `receivers` value: the first `otlp_http` receiver.
pub fn traces_url(receivers: &str) -> Option<String> {
    let receivers: Vec<Receiver> = serde_json::from_str(receivers).ok()?;
    let receiver = receivers
        .into_iter()
        .find(|r| r.protocol.name == "otlp_http")?;
    let base = receiver.url.trim().trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    Some(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Our `receivers` value with `otlp_http` added if missing (never removing entries); `None`
/// when nothing needs to be written.
pub fn merged_requirer_receivers(current: Option<&str>) -> Option<String> {
    let mut list: Vec<String> = match current {
        // Something we cannot read is not ours to replace.
        Some(value) => serde_json::from_str(&decode_value(value)).ok()?,
        None => Vec::new(),
    };
    if list.iter().any(|r| r == "otlp_http") {
        return None;
    }
    list.push("otlp_http".to_string());
    serde_json::to_string(&list).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_otlp_http_receiver_gives_the_traces_url() {
        let receivers = r#"[{"protocol":{"name":"otlp_grpc","type":"grpc"},"url":"tempo:4317"},
                           {"protocol":{"name":"otlp_http","type":"http"},"url":"http://tempo:4318/"}]"#;
        assert_eq!(
            traces_url(receivers).as_deref(),
            Some("http://tempo:4318/v1/traces")
        );
        assert_eq!(
            traces_url(r#"[{"protocol":{"name":"zipkin","type":"http"},"url":"http://z"}]"#),
            None
        );
        assert_eq!(traces_url("not json"), None);
    }

    #[test]
    fn our_receivers_are_merged_never_overwritten() {
        assert_eq!(
            merged_requirer_receivers(None).as_deref(),
            Some(r#"["otlp_http"]"#)
        );
        assert_eq!(
            merged_requirer_receivers(Some(r#"["otlp_grpc"]"#)).as_deref(),
            Some(r#"["otlp_grpc","otlp_http"]"#)
        );
        assert_eq!(
            merged_requirer_receivers(Some(r#"["otlp_http","zipkin"]"#)),
            None
        );
    }
}
