//! Every setting the store keeps, each with one typed owner here: its key, its format and
//! what it means. Nothing else reads or writes the store's `setting` table (key -> text).
//!
//! | key | type | format | written by |
//! |---|---|---|---|
//! | `destination` | `destination::Stored` | `<url>` or `<url>\t<CA file>` | `dispatch set-destination`, `clear-destination` |
//! | `relation.answer` | `relation::Answer` | JSON | hooks that read the relations (DESIGN §3) |
//! | `export.backoff` | `Backoff` | `<destination key>\t<failures>\t<until, unix secs>` | exports (DESIGN §5) |
//! | `export.request_shape` | `RequestShape` | `<destination key>\t<max bytes>\t<0 or 1>` | exports refused for their content |
//! | `export.refused` | `Refused` | `<destination key>\t<chunk id>,<chunk id>...` | exports refused for their content |
//! | `export.last` | `LastExport` | `<unix secs>\t<summary>` | every export that made a request |
//!
//! A destination key is `destination::key`: a SHA-256 digest of the URL and its CA, stable
//! across builds (a persisted key must be) and holding no credential. A setting that does not
//! parse reads as absent: it was written by another version, and what it said is relearnt.
//! The destination, whose URL may carry a credential, is only ever replaced or removed with
//! its old value erased from the store's files (`Store::set_setting_erasing_old`).

use std::time::SystemTime;

use crate::relation::Answer;
use crate::ship::destination::Stored;
use crate::store::Store;

const DESTINATION: &str = "destination";
const RELATION_ANSWER: &str = "relation.answer";
const BACKOFF: &str = "export.backoff";
const REQUEST_SHAPE: &str = "export.request_shape";
const REFUSED: &str = "export.refused";
const LAST_EXPORT: &str = "export.last";

/// What `dispatch set-destination` stored.
pub fn destination(store: &Store) -> rusqlite::Result<Option<Stored>> {
    Ok(store
        .setting(DESTINATION)?
        .map(|text| match text.split_once('\t') {
            Some((url, ca)) => Stored {
                url: url.to_string(),
                ca_file: Some(ca.into()),
            },
            None => Stored {
                url: text,
                ca_file: None,
            },
        }))
}

/// Stores (or, with `None`, forgets) the destination, leaving no copy of the old one.
pub fn set_destination(store: &Store, stored: Option<&Stored>) -> rusqlite::Result<()> {
    let text = stored.map(|stored| match &stored.ca_file {
        Some(ca) => format!("{}\t{}", stored.url, ca.display()),
        None => stored.url.clone(),
    });
    store.set_setting_erasing_old(DESTINATION, text.as_deref())
}

/// The relations' answer cached by the last dispatch that read them.
pub fn relation_answer(store: &Store) -> Option<Answer> {
    let json = store.setting(RELATION_ANSWER).ok()??;
    serde_json::from_str(&json).ok()
}

/// Caches (or, with `None`, forgets) the relations' answer.
pub fn set_relation_answer(store: &Store, answer: Option<&Answer>) {
    let json = answer.and_then(|answer| serde_json::to_string(answer).ok());
    let _ = store.set_setting(RELATION_ANSWER, json.as_deref());
}

/// A destination's backoff after failed exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// `destination::key` of the destination backing off.
    pub key: String,
    /// Consecutive failed exports.
    pub failures: u32,
    /// No request before this unix time (seconds).
    pub until: u64,
}

impl Backoff {
    pub fn load(store: &Store) -> Option<Backoff> {
        let text = store.setting(BACKOFF).ok()??;
        let mut parts = text.split('\t');
        Some(Backoff {
            key: parts.next()?.to_string(),
            failures: parts.next()?.parse().ok()?,
            until: parts.next()?.parse().ok()?,
        })
    }

    pub fn save(&self, store: &Store) {
        let text = format!("{}\t{}\t{}", self.key, self.failures, self.until);
        let _ = store.set_setting(BACKOFF, Some(&text));
    }

    /// Forgets any backoff (the destination changed, or a person asked to flush).
    pub fn clear(store: &Store) {
        let _ = store.set_setting(BACKOFF, None);
    }
}

/// How requests to one destination are cut, learnt from the content it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestShape {
    pub max_bytes: usize,
    pub one_chunk_per_request: bool,
}

impl RequestShape {
    /// What was learnt about the destination with `key`, if anything.
    pub fn load(store: &Store, key: &str) -> Option<RequestShape> {
        let text = store.setting(REQUEST_SHAPE).ok()??;
        let mut parts = text.split('\t');
        if parts.next()? != key {
            return None;
        }
        Some(RequestShape {
            max_bytes: parts.next()?.parse().ok()?,
            one_chunk_per_request: parts.next()? == "1",
        })
    }

    pub fn save(&self, store: &Store, key: &str) {
        let flag = if self.one_chunk_per_request { "1" } else { "0" };
        let text = format!("{key}\t{}\t{flag}", self.max_bytes);
        let _ = store.set_setting(REQUEST_SHAPE, Some(&text));
    }
}

/// Ids of pending chunks the destination with `key` refused for their content.
pub struct Refused;

impl Refused {
    pub fn load(store: &Store, key: &str) -> Vec<i64> {
        let Some(text) = store.setting(REFUSED).ok().flatten() else {
            return Vec::new();
        };
        match text.split_once('\t') {
            Some((owner, ids)) if owner == key => {
                ids.split(',').filter_map(|id| id.parse().ok()).collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn save(store: &Store, key: &str, refused: &[i64]) {
        let ids: Vec<String> = refused.iter().map(i64::to_string).collect();
        let text = (!ids.is_empty()).then(|| format!("{key}\t{}", ids.join(",")));
        if text != store.setting(REFUSED).ok().flatten() {
            let _ = store.set_setting(REFUSED, text.as_deref());
        }
    }
}

/// The last export's outcome, for `dispatch status`.
pub struct LastExport;

impl LastExport {
    /// `summary` must already have its URLs redacted (`destination::redact_url`).
    pub fn save(store: &Store, summary: &str, when: SystemTime) {
        let secs = when
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = store.set_setting(LAST_EXPORT, Some(&format!("{secs}\t{summary}")));
    }

    /// What happened and when.
    pub fn load(store: &Store) -> Option<(String, Option<SystemTime>)> {
        let text = store.setting(LAST_EXPORT).ok().flatten()?;
        if let Some((secs, summary)) = text.split_once('\t') {
            if let Ok(secs) = secs.parse::<u64>() {
                return Some((
                    summary.to_string(),
                    Some(crate::cli::human::from_unix_secs(secs)),
                ));
            }
        }
        // Earlier versions wrote `<summary> at <unix secs>`, URLs and all.
        match text.rsplit_once(" at ") {
            Some((summary, secs))
                if !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let when = secs.parse().ok().map(crate::cli::human::from_unix_secs);
                Some((crate::ship::destination::redact_url(summary), when))
            }
            _ => Some((text, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    #[test]
    fn every_setting_round_trips_and_a_foreign_owner_reads_as_absent() {
        let scratch = Scratch::new("settings");
        let store = Store::open(&scratch.path("t.db")).unwrap();
        for stored in [
            Stored {
                url: "http://a/v1/traces".into(),
                ca_file: None,
            },
            Stored {
                url: "https://a/v1/traces".into(),
                ca_file: Some("/ca.pem".into()),
            },
        ] {
            set_destination(&store, Some(&stored)).unwrap();
            assert_eq!(destination(&store).unwrap(), Some(stored));
        }
        set_destination(&store, None).unwrap();
        assert_eq!(destination(&store).unwrap(), None);

        let answer = Answer {
            url: Some("http://tempo:4318/v1/traces".into()),
            ..Answer::default()
        };
        set_relation_answer(&store, Some(&answer));
        assert_eq!(relation_answer(&store), Some(answer));
        set_relation_answer(&store, None);
        assert_eq!(relation_answer(&store), None);

        let backoff = Backoff {
            key: "k".into(),
            failures: 3,
            until: 99,
        };
        backoff.save(&store);
        assert_eq!(Backoff::load(&store), Some(backoff));
        Backoff::clear(&store);
        assert_eq!(Backoff::load(&store), None);

        let shape = RequestShape {
            max_bytes: 16384,
            one_chunk_per_request: true,
        };
        shape.save(&store, "k");
        assert_eq!(RequestShape::load(&store, "k"), Some(shape));
        assert_eq!(RequestShape::load(&store, "other"), None);

        Refused::save(&store, "k", &[3, 5]);
        assert_eq!(Refused::load(&store, "k"), [3, 5]);
        assert!(Refused::load(&store, "other").is_empty());

        let when = crate::cli::human::from_unix_secs(1_796_396_531);
        LastExport::save(&store, "ok: 2 dispatches sent to http://a/v1/traces", when);
        assert_eq!(
            LastExport::load(&store),
            Some((
                "ok: 2 dispatches sent to http://a/v1/traces".into(),
                Some(when)
            ))
        );
    }

    #[test]
    fn a_last_export_written_by_an_earlier_version_is_read_with_its_urls_redacted() {
        let scratch = Scratch::new("settings-old");
        let store = Store::open(&scratch.path("t.db")).unwrap();
        store
            .set_setting(
                LAST_EXPORT,
                Some("ok: 8 dispatches sent to http://u:p4ss@h:1/v1/traces at 1796396531"),
            )
            .unwrap();
        let (summary, when) = LastExport::load(&store).unwrap();
        assert!(!summary.contains("p4ss"), "{summary}");
        assert_eq!(when, Some(crate::cli::human::from_unix_secs(1_796_396_531)));
    }
}
