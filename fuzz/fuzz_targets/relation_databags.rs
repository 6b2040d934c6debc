//! The `tracing` and `certificate_transfer` relations: what the providers (another charm,
//! so outside input) put in their databags, as the hook tools answer it, read by
//! `relation::discover` and `relation::publish`, and by each parser on its own
//! (`traces_url`, `certificates_v1`/`v0`, `merged_requirer_receivers`, `lowest_relation`).
//!
//! Input: the hook tools' answers in the order they are asked, separated by NUL bytes
//! (`relation-ids`, `relation-list`, `relation-get`, ...). Each piece also goes to every
//! parser directly.
#![no_main]

use std::collections::BTreeMap;

use dispatch::config::Config;
use dispatch::relation::{self, Answer, Endpoints, Tools};
use dispatch::ship::destination;
use libfuzzer_sys::fuzz_target;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Hook tools answering from the input, one piece per call; out of pieces, a tool fails.
struct Scripted<'a> {
    answers: std::vec::IntoIter<&'a [u8]>,
    written: Vec<String>,
}

impl<'a> Scripted<'a> {
    fn new(data: &'a [u8]) -> Scripted<'a> {
        Scripted {
            answers: data.split(|&b| b == 0).collect::<Vec<_>>().into_iter(),
            written: Vec::new(),
        }
    }
}

impl Tools for Scripted<'_> {
    fn run(&mut self, tool: &str, args: &[&str]) -> Option<Vec<u8>> {
        if tool == "relation-set" {
            self.written.extend(
                args.iter()
                    .filter(|a| a.contains('='))
                    .map(|a| a.to_string()),
            );
            return Some(Vec::new());
        }
        self.answers.next().map(<[u8]>::to_vec)
    }
}

fn check_answer(answer: &Answer) {
    if let Some(url) = &answer.url {
        assert!(url.ends_with("/v1/traces"));
    }
    for pem in &answer.ca {
        assert!(pem.starts_with(BEGIN) && pem.ends_with(END), "{pem:?}");
    }
    // The answer is cached in the store as JSON.
    let json = serde_json::to_string(answer).expect("serializes");
    assert_eq!(
        &serde_json::from_str::<Answer>(&json).expect("reads back"),
        answer
    );
    let _ = destination::waits_for_ca(Some(answer));
    let _ = destination::resolve(&BTreeMap::new(), &Config::default(), None, Some(answer));
}

fuzz_target!(|data: &[u8]| {
    let endpoints = Endpoints {
        tracing: Some("charm-tracing".into()),
        ca: Some("receive-ca-cert".into()),
        otlp: Some("send-otlp".into()),
    };
    if let Some(answer) = relation::discover(&mut Scripted::new(data), &endpoints, None) {
        check_answer(&answer);
    }
    if let Some(answer) = relation::discover(
        &mut Scripted::new(data),
        &endpoints,
        Some("charm-tracing:5"),
    ) {
        check_answer(&answer);
    }
    let mut tools = Scripted::new(data);
    relation::publish(&mut tools, &endpoints, "myapp", None);
    for setting in &tools.written {
        if let Some(value) = setting.strip_prefix("receivers=") {
            let list: Vec<String> = serde_json::from_str(value).expect("a JSON list");
            assert!(list.iter().any(|r| r == "otlp_http"));
        }
    }

    for piece in data.split(|&b| b == 0) {
        let (lowest, count) = relation::lowest_relation(piece, None);
        assert_eq!(lowest.is_some(), count > 0);
        if let Ok(text) = std::str::from_utf8(piece) {
            if let Some(url) = relation::traces_url(text) {
                assert!(url.ends_with("/v1/traces"));
            }
            if let relation::otlp::Traces::Http(url) = relation::otlp::traces(text) {
                assert!(url.ends_with("/v1/traces"));
            }
            if let Some(merged) = relation::merged_requirer_receivers(Some(text)) {
                let list: Vec<String> = serde_json::from_str(&merged).expect("a JSON list");
                assert_eq!(list.last().map(String::as_str), Some("otlp_http"));
            }
        }
        if let Ok(databag) = serde_json::from_slice(piece) {
            let pems = relation::certificates_v1(&databag)
                .into_iter()
                .chain(relation::certificates_v0(&databag));
            for pem in pems {
                assert!(pem.starts_with(BEGIN) && pem.ends_with(END), "{pem:?}");
            }
        }
    }
});
