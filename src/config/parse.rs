//! Reading `dispatch-trace.yaml` into a `Config`, with one line for each mistake.
//!
//! Each mistake a person can type makes one line that says where and what (README,
//! "Configuration"), e.g. `dispatch-trace.yaml line 3 column 10: enabled must be true or
//! false, not "yes please"`. That is why the file is read by the visitors below rather than
//! `derive(Deserialize)`: serde_yaml gives an error raised while a value is read the line and
//! column of that value, and the visitors word it for a person (the derive says
//! `invalid type: string "lots", expected u64`, and nothing about a key's neighbours). The
//! file is first read once with `IgnoredAny`, so a YAML syntax error is what is reported even
//! when a bad key comes before it.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    too_large, Config, Protocol, TraceContextMode, CONFIG_FILE, MAX_EXPORT_BUDGET_MS,
    MAX_FILE_BYTES, MAX_VALUE_BYTES, MIN_STORE_MAX_BYTES,
};

impl Config {
    /// The config in `bytes`, or the one line that says what is wrong with it and where.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(bytes, e))?;
        // Syntax first, over every document.
        let mut documents = serde_yaml::Deserializer::from_str(text);
        if let Some(first) = documents.next() {
            IgnoredAny::deserialize(first).map_err(|e| yaml_problem(text, &e))?;
        }
        if documents.next().is_some() {
            return Err(match second_document(text) {
                Some(place) => located(
                    Some(place),
                    "a second YAML document starts here; the file must hold one",
                ),
                None => located(None, "holds more than one YAML document; it must hold one"),
            });
        }
        let mut said = None;
        let read =
            DocumentSeed { said: &mut said }.deserialize(serde_yaml::Deserializer::from_str(text));
        read.map_err(|e| match said {
            Some(said) => said.with_place(text, &e),
            None => yaml_problem(text, &e),
        })
    }
}

/// `dispatch-trace.yaml line L column C: <what is there>`, or about the whole file,
/// `dispatch-trace.yaml <what it is>`.
fn located(place: Option<(usize, usize)>, message: &str) -> String {
    match place {
        Some((line, column)) => format!("{CONFIG_FILE} line {line} column {column}: {message}"),
        None => format!("{CONFIG_FILE} {message}"),
    }
}

/// Line and column (from 1, in characters, as libyaml counts them) of byte `index`.
fn place_of(text: &str, index: usize) -> (usize, usize) {
    let before = text.get(..index).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Line `number` (from 1) of `text`.
fn line_of(text: &str, number: usize) -> Option<&str> {
    text.lines().nth(number.checked_sub(1)?)
}

fn not_utf8(bytes: &[u8], e: std::str::Utf8Error) -> String {
    let valid = e.valid_up_to();
    // The valid prefix is text, so lines and columns can be counted in it.
    let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let mut message = match bytes.get(valid) {
        Some(byte) => format!("byte 0x{byte:02x} is not UTF-8"),
        None => "the file ends in the middle of a UTF-8 character".to_string(),
    };
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        message.push_str(" (the file looks like UTF-16)");
    }
    message.push_str("; save the file as UTF-8 text");
    located(Some(place_of(prefix, valid)), &message)
}

/// A YAML syntax error (or one serde_yaml found itself), in our words where we have some.
fn yaml_problem(text: &str, e: &serde_yaml::Error) -> String {
    let mut message = e.to_string();
    let Some(location) = e.location() else {
        return located(None, &format!("is not valid YAML: {message}"));
    };
    let mut place = (location.line(), location.column());
    // serde_yaml says where at the end; we say it at the start.
    let suffix = format!(" at line {} column {}", place.0, place.1);
    if let Some(at) = message.find(&suffix) {
        message.replace_range(at..at + suffix.len(), "");
    }
    // A character libyaml's reader refuses (a control character) has only a byte offset.
    const AT_OFFSET: &str = " at position ";
    if let Some(at) = message.find(AT_OFFSET) {
        let digits = &message[at + AT_OFFSET.len()..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if let Ok(index) = digits[..end].parse::<usize>() {
            place = place_of(text, index);
            if let Some(c) = text.get(index..).and_then(|rest| rest.chars().next()) {
                return located(
                    Some(place),
                    &format!(
                        "control character U+{:04X} is not allowed in YAML",
                        c as u32
                    ),
                );
            }
        }
        message.truncate(at);
    }
    // YAML indents with spaces only; libyaml's words for a tab do not say so.
    let indent = |line: &str| {
        line.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    };
    if line_of(text, place.0).is_some_and(indent) {
        return located(
            Some(place),
            "a tab indents this line; YAML indents with spaces only",
        );
    }
    if line_of(text, place.0).is_some_and(|line| line.starts_with(' ')) {
        let _ = write!(message, " (is line {} indented by mistake?)", place.0);
    }
    located(Some(place), &format!("not valid YAML: {message}"))
}

/// Where the second document starts: the first `---` line after some content.
fn second_document(text: &str) -> Option<(usize, usize)> {
    let mut content = false;
    for (number, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker && content {
            return Some((number + 1, 1));
        }
        let trimmed = line.trim();
        content |= !marker && !trimmed.is_empty() && !trimmed.starts_with('#');
    }
    None
}

/// What a problem found by the visitors is about: where serde_yaml's location points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The whole file (its location is the start of the document: not worth saying).
    File,
    Key,
    Value,
}

/// A problem found by the visitors, in our words (serde_yaml adds the place to the error).
struct Said {
    scope: Scope,
    message: String,
}

impl Said {
    fn with_place(self, text: &str, e: &serde_yaml::Error) -> String {
        let place = match self.scope {
            Scope::File => None,
            Scope::Key | Scope::Value => e.location().map(|l| (l.line(), l.column())),
        };
        let mut message = self.message;
        // `enabled: true` followed by a line indented by mistake reads as one plain value,
        // `true bad indent`: say why.
        if let (Scope::Value, Some((line, _))) = (self.scope, place) {
            let next = line_of(text, line + 1).unwrap_or_default();
            let trimmed = next.trim_start();
            if next.len() > trimmed.len() && !trimmed.is_empty() && !trimmed.starts_with('#') {
                let _ = write!(
                    message,
                    " (line {} is indented, so YAML reads it as part of this value)",
                    line + 1
                );
            }
        }
        located(place, &message)
    }
}

fn fail<E: de::Error>(said: &mut Option<Said>, scope: Scope, message: String) -> E {
    let error = E::custom(&message);
    *said = Some(Said { scope, message });
    error
}

/// A value as written, as far as a key cares.
enum Seen {
    /// `key:` with nothing after it, or `~`/`null`.
    Empty,
    Bool(bool),
    /// A number: as written (floats as Rust prints them), and as a `u64` when it is one.
    Number(String, Option<u64>),
    Text(String),
    List,
    Mapping,
    /// `!something value`
    Tagged,
}

impl Seen {
    /// The value in a message.
    fn shown(&self) -> String {
        match self {
            Seen::Empty => "empty".into(),
            Seen::Bool(b) => b.to_string(),
            Seen::Number(text, _) => text.clone(),
            Seen::Text(text) => quoted(text),
            Seen::List => "a list".into(),
            Seen::Mapping => "a mapping (`key: value` lines)".into(),
            Seen::Tagged => "a value with a YAML tag (`!...`)".into(),
        }
    }
}

/// A string for a message: quoted, escaped onto one line, and cut short when long.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

fn wrong(key: &str, expected: &str, seen: &Seen) -> String {
    match seen {
        Seen::Empty => format!("{key} is empty; it must be {expected}"),
        other => format!("{key} must be {expected}, not {}", other.shown()),
    }
}

fn flag(key: &str, seen: Seen) -> Result<bool, String> {
    match seen {
        Seen::Bool(b) => Ok(b),
        other => Err(wrong(key, "true or false", &other)),
    }
}

/// A whole number of `unit` within `range`.
fn whole(
    key: &str,
    seen: Seen,
    unit: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    let (least, most) = (*range.start(), *range.end());
    match seen {
        Seen::Number(_, Some(n)) if n < least => {
            Err(format!("{key} must be at least {least}, not {n}"))
        }
        Seen::Number(_, Some(n)) if n > most => {
            Err(format!("{key} must be at most {most}, not {n}"))
        }
        Seen::Number(_, Some(n)) => Ok(n),
        other => {
            let mut expected = format!("a whole number of {unit}");
            if least > 0 {
                let _ = write!(expected, ", at least {least}");
            }
            if most < u64::MAX {
                let _ = write!(expected, ", at most {most}");
            }
            Err(wrong(key, &expected, &other))
        }
    }
}

/// Text, or `None` for an empty value (the default). A number is taken as written.
fn text(key: &str, seen: Seen) -> Result<Option<String>, String> {
    let text = match seen {
        Seen::Empty => return Ok(None),
        Seen::Text(text) | Seen::Number(text, _) => text,
        other => return Err(wrong(key, "text", &other)),
    };
    if text.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "{key} is {} bytes long; at most {MAX_VALUE_BYTES}",
            text.len()
        ));
    }
    Ok(Some(text))
}

fn path(key: &str, seen: Seen) -> Result<Option<PathBuf>, String> {
    Ok(text(key, seen)?.map(PathBuf::from))
}

fn url(key: &str, seen: Seen) -> Result<Option<String>, String> {
    let url = text(key, seen)?;
    if let Some(url) = &url {
        crate::ship::destination::parse_url(url)
            .map_err(|why| format!("{key} {}", crate::ship::destination::bad_url(url, &why)))?;
    }
    Ok(url)
}

/// One of `choices` (name, value), by name.
fn choice<T: Copy>(key: &str, seen: Seen, choices: &[(&str, T)]) -> Result<T, String> {
    if let Seen::Text(text) = &seen {
        if let Some((_, value)) = choices.iter().find(|(name, _)| name == text) {
            return Ok(*value);
        }
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    Err(wrong(key, &names.join(" or "), &seen))
}

type Setter = fn(&mut Config, &'static str, Seen) -> Result<(), String>;

/// Every key, and how its value is read and checked.
const KEYS: &[(&str, Setter)] = &[
    ("enabled", |c, k, v| flag(k, v).map(|x| c.enabled = x)),
    ("target", |c, k, v| path(k, v).map(|x| c.target = x)),
    ("service_name", |c, k, v| {
        text(k, v).map(|x| c.service_name = x)
    }),
    ("tracing_endpoint", |c, k, v| {
        text(k, v).map(|x| c.tracing_endpoint = x)
    }),
    ("ca_endpoint", |c, k, v| {
        text(k, v).map(|x| c.ca_endpoint = x)
    }),
    ("otlp_endpoint", |c, k, v| {
        text(k, v).map(|x| c.otlp_endpoint = x)
    }),
    ("endpoint", |c, k, v| url(k, v).map(|x| c.endpoint = x)),
    ("ca_file", |c, k, v| path(k, v).map(|x| c.ca_file = x)),
    ("protocol", |c, k, v| {
        choice(k, v, PROTOCOLS).map(|x| c.protocol = x)
    }),
    ("store_path", |c, k, v| path(k, v).map(|x| c.store_path = x)),
    ("store_max_bytes", |c, k, v| {
        whole(k, v, "bytes", MIN_STORE_MAX_BYTES..=u64::MAX).map(|x| c.store_max_bytes = x)
    }),
    ("export_budget_ms", |c, k, v| {
        whole(k, v, "milliseconds", 0..=MAX_EXPORT_BUDGET_MS).map(|x| c.export_budget_ms = x)
    }),
    ("publish_requirer_data", |c, k, v| {
        flag(k, v).map(|x| c.publish_requirer_data = x)
    }),
    ("juju_trace_context", |c, k, v| {
        choice(k, v, CONTEXT_MODES).map(|x| c.juju_trace_context = x)
    }),
    ("record_log_messages", |c, k, v| {
        flag(k, v).map(|x| c.record_log_messages = x)
    }),
    ("record_exceptions", |c, k, v| {
        flag(k, v).map(|x| c.record_exceptions = x)
    }),
    ("stderr_tail", |c, k, v| {
        let max = dispatch_shim::relay::MAX_TAIL as u64;
        whole(k, v, "bytes", 0..=max).map(|x| c.stderr_tail = x)
    }),
    ("custom_spans", |c, k, v| {
        flag(k, v).map(|x| c.custom_spans = x)
    }),
];

const PROTOCOLS: &[(&str, Protocol)] = &[
    ("http/protobuf", Protocol::HttpProtobuf),
    ("http/json", Protocol::HttpJson),
];

const CONTEXT_MODES: &[(&str, TraceContextMode)] = &[
    ("link", TraceContextMode::Link),
    ("continue", TraceContextMode::Continue),
];

/// `unknown key "enabeld" (did you mean "enabled"?)`, or the list of keys when none is close.
fn unknown_key(key: &str) -> String {
    match closest_key(key) {
        Some(known) => format!("unknown key {} (did you mean {known:?}?)", quoted(key)),
        None => {
            let names: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
            format!(
                "unknown key {}; the keys are {}",
                quoted(key),
                names.join(", ")
            )
        }
    }
}

/// The known key a mistyped one was most likely meant to be.
fn closest_key(key: &str) -> Option<&'static str> {
    closest(key, KEYS.iter().map(|(name, _)| *name))
}

/// The word among `known` a mistyped one was most likely meant to be (a key here, a command
/// or an option in tool mode): the fewest edits away (a swap of two neighbours counting as
/// one, case and `-` for `_` as none), if that is few for its length.
pub fn closest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // No word we know is this long: not a typo of one (and the distance costs length squared).
    if typed.len() > 64 {
        return None;
    }
    let fold = |word: &str| -> Vec<char> {
        word.chars()
            .map(|c| match c.to_ascii_lowercase() {
                '-' | ' ' | '.' => '_',
                c => c,
            })
            .collect()
    };
    let typed = fold(typed);
    known
        .into_iter()
        .map(|name| (edit_distance(&typed, &fold(name)), name))
        .min_by_key(|(distance, _)| *distance)
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .map(|(_, name)| name)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // Rows i-2, i-1 and i of the usual table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The whole file: a mapping of keys, or nothing at all (all defaults).
struct DocumentSeed<'a> {
    said: &'a mut Option<Said>,
}

impl DocumentSeed<'_> {
    fn not_a_mapping<E: de::Error>(self, seen: &Seen) -> E {
        let mut message = format!(
            "must hold `key: value` lines, not {}",
            match seen {
                Seen::List | Seen::Tagged => seen.shown(),
                other => format!("the single value {}", other.shown()),
            }
        );
        if matches!(seen, Seen::Text(text) if text.contains(':')) {
            message.push_str(" (a space must follow the colon)");
        }
        fail(self.said, Scope::File, message)
    }
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Config;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Config, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Config;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`key: value` lines")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Config, A::Error> {
        let mut config = Config::default();
        let mut seen = Vec::new();
        while let Some((name, set)) = map.next_key_seed(KeySeed {
            seen: &mut seen,
            said: &mut *self.said,
        })? {
            map.next_value_seed(ValueSeed {
                name,
                set,
                config: &mut config,
                said: &mut *self.said,
            })?;
        }
        Ok(config)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Config, E> {
        Ok(Config::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Config, E> {
        Ok(Config::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Config, A::Error> {
        Err(self.not_a_mapping(&Seen::List))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Config, E> {
        Err(self.not_a_mapping(&Seen::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Config, E> {
        Err(self.not_a_mapping(&number(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Config, E> {
        Err(self.not_a_mapping(&number(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Config, E> {
        Err(self.not_a_mapping(&float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Config, E> {
        Err(self.not_a_mapping(&Seen::Text(v.to_string())))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Config, A::Error> {
        Err(self.not_a_mapping(&Seen::Tagged))
    }
}

fn number<N: ToString + TryInto<u64>>(n: N) -> Seen {
    Seen::Number(n.to_string(), n.try_into().ok())
}

fn float(v: f64) -> Seen {
    Seen::Number(format!("{v:?}"), None)
}

/// A key: one of `KEYS`, and not seen before in the file. (Read as text: a key written as
/// a number or `true` is just an unknown key.)
struct KeySeed<'a> {
    seen: &'a mut Vec<&'static str>,
    said: &'a mut Option<Said>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (&'static str, Setter);

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (&'static str, Setter);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let Some(&(name, set)) = KEYS.iter().find(|(name, _)| *name == v) else {
            return Err(fail(self.said, Scope::Key, unknown_key(v)));
        };
        if self.seen.contains(&name) {
            let message = format!("{name} is set a second time");
            return Err(fail(self.said, Scope::Key, message));
        }
        self.seen.push(name);
        Ok((name, set))
    }
}

/// The value of key `name`, read and checked by `set` straight into the config.
struct ValueSeed<'a> {
    name: &'static str,
    set: Setter,
    config: &'a mut Config,
    said: &'a mut Option<Said>,
}

impl ValueSeed<'_> {
    fn take<E: de::Error>(self, seen: Seen) -> Result<(), E> {
        (self.set)(self.config, self.name, seen).map_err(|m| fail(self.said, Scope::Value, m))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a value for {}", self.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take(Seen::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take(Seen::Empty)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.take(Seen::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.take(number(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.take(number(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.take(number(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.take(number(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.take(float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.take(Seen::Text(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.take(Seen::List)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.take(Seen::Mapping)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.take(Seen::Tagged)
    }
}
