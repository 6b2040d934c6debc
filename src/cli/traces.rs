//! `dispatch traces`: the stored dispatches, filtered, as a tree, JSON or OTLP/JSON.

use std::path::Path;

use anyhow::Result;

use super::locate::{store_path, store_to_read};
use std::io::Write;

use super::tree::{self, TreeStyle};
use super::{did_you_mean, human, print, summary, usage, view};
use crate::store::inflight::Running;
use crate::store::{ChunkFilter, Store, StoredChunk};

/// `--event` as people write it: `install`, `hooks/install`, `actions/backup`, or a glob
/// (`*-relation-changed`, `db-relation-*`), matched with SQLite's GLOB (case-sensitive, as
/// event names are).
pub(super) fn event_glob(event: &str) -> String {
    let event = event.trim();
    event
        .strip_prefix("hooks/")
        .or_else(|| event.strip_prefix("actions/"))
        .unwrap_or(event)
        .to_string()
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Format {
    Tree,
    Json,
    OtlpJson,
    /// `--summary`: one line per dispatch (`summary`).
    Summary,
}

/// How dispatches are printed: the format, and for the tree its style.
#[derive(Clone, Copy, Debug)]
pub(super) struct Show {
    pub format: Format,
    pub tree: TreeStyle,
}

impl Show {
    /// The line above the dispatches, if the format has one.
    pub fn header(&self) -> Option<String> {
        (self.format == Format::Summary).then(|| summary::header() + "\n")
    }

    /// One dispatch as it is printed on its own (JSON as one object on one line).
    pub fn dispatch(&self, chunk: &StoredChunk) -> Result<String> {
        Ok(match self.format {
            Format::Tree => tree::dispatch(chunk, self.tree),
            Format::Summary => summary::line(chunk) + "\n",
            Format::Json => serde_json::to_string(&view::dispatch_json(chunk))? + "\n",
            Format::OtlpJson => view::otlp_json(std::slice::from_ref(chunk))?,
        })
    }

    /// A dispatch still running; OTLP/JSON has no form for one (its trace is not finished).
    pub fn running(&self, running: &Running) -> Option<String> {
        match self.format {
            Format::Tree => Some(tree::running(running, self.tree)),
            Format::Summary => Some(summary::running_line(running) + "\n"),
            Format::Json => Some(
                serde_json::json!({
                    "schema_version": view::JSON_SCHEMA_VERSION,
                    "state": "running",
                    "event": running.event,
                    "trace_id": running.trace_id,
                    "started_at": human::utc_millis(running.started_at),
                })
                .to_string()
                    + "\n",
            ),
            Format::OtlpJson => None,
        }
    }
}

/// `dispatch traces` as asked: which dispatches, shown how, and whether to follow.
#[derive(Debug)]
pub(super) struct Request {
    pub filter: ChunkFilter,
    pub show: Show,
    /// The filters as given, to say what matched nothing.
    pub asked: Vec<String>,
    pub follow: bool,
    /// With `--follow`: stop after this many new dispatches.
    pub count: Option<usize>,
}

impl Request {
    pub fn parse(args: &[String]) -> Result<Request> {
        let mut filter = ChunkFilter {
            last: Some(10),
            ..ChunkFilter::default()
        };
        let mut format = None;
        let mut summary = false;
        let mut verbose = false;
        let mut follow = false;
        let mut count = None;
        // `--last` as given; with a time window and no `--last`, everything in the window.
        let mut last_given = None;
        let now = std::time::SystemTime::now();
        let mut asked = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String> {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| usage(format!("{name} needs a value")))
            };
            match flag {
                "--last" | "--count" => {
                    let name = flag.to_string();
                    let n = value(&name)?;
                    let n: usize = n
                        .parse()
                        .map_err(|_| usage(format!("{name} takes a whole number, not {n:?}")))?;
                    if name == "--last" {
                        last_given = Some(n);
                    } else if n == 0 {
                        return Err(usage("--count takes a number of dispatches above 0"));
                    } else {
                        count = Some(n);
                    }
                }
                "--since" | "--until" => {
                    let name = flag.to_string();
                    let text = value(&name)?;
                    let (first, last) = human::parse_time(&text, now)
                        .map_err(|why| usage(format!("{name}: {why}")))?;
                    if name == "--since" {
                        filter.since = Some(first);
                    } else {
                        filter.until = Some(last);
                    }
                    asked.push(format!("{name} {text}"));
                }
                "--trace-id" => {
                    let id = value("--trace-id")?.trim().to_ascii_lowercase();
                    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(usage(format!(
                            "--trace-id takes a trace id or the start of one (hex digits), not {id:?}"
                        )));
                    }
                    asked.push(format!("--trace-id {id}"));
                    filter.trace_id_prefix = Some(id);
                }
                "--event" => {
                    let event = value("--event")?;
                    if event_glob(&event).is_empty() {
                        return Err(usage("--event needs an event name or a glob"));
                    }
                    filter.event = Some(event_glob(&event));
                    asked.push(format!("--event {event}"));
                }
                "--failed" if inline.is_none() => {
                    filter.failed_only = true;
                    asked.push("--failed".to_string());
                }
                "--summary" if inline.is_none() => summary = true,
                "--follow" | "-f" if inline.is_none() => follow = true,
                "--verbose" | "-v" if inline.is_none() => verbose = true,
                "--format" => {
                    format = Some(match value("--format")?.as_str() {
                        "tree" => Format::Tree,
                        "json" => Format::Json,
                        "otlp-json" => Format::OtlpJson,
                        other => {
                            return Err(usage(format!(
                                "--format must be tree, json or otlp-json, not {other:?}"
                            )))
                        }
                    })
                }
                other => {
                    return Err(usage(format!(
                        "traces: unknown option {other:?}{}",
                        did_you_mean(other)
                    )))
                }
            }
        }
        let format = match (summary, format) {
            (true, Some(_)) => {
                return Err(usage("--summary is a view of its own: leave out --format"))
            }
            (true, None) => Format::Summary,
            (false, format) => format.unwrap_or(Format::Tree),
        };
        if verbose && format != Format::Tree {
            return Err(usage(
                "--verbose adds attributes and events to the tree; --format json already has them",
            ));
        }
        if count.is_some() && !follow {
            return Err(usage(
                "--count is for --follow: how many new dispatches to wait for",
            ));
        }
        if follow && filter.until.is_some() {
            return Err(usage(
                "--follow shows dispatches as they come, and --until ends the window before them: \
                 use one or the other",
            ));
        }
        filter.last = match last_given {
            // While following, `--last 0` is no history (as `tail -n 0 -f`); else everything.
            Some(0) if follow => Some(0),
            Some(0) => None,
            Some(n) => Some(n),
            None if filter.since.is_some()
                || filter.until.is_some()
                || filter.trace_id_prefix.is_some() =>
            {
                None
            }
            None => Some(10),
        };
        Ok(Request {
            filter,
            show: Show {
                format,
                tree: TreeStyle::for_stdout(verbose),
            },
            asked,
            follow,
            count,
        })
    }
}

pub(super) fn traces(charm_dir: &Path, args: &[String]) -> Result<i32> {
    let request = Request::parse(args)?;
    let path = store_path(charm_dir);
    if request.follow {
        return super::follow::follow(&path, &request);
    }
    let filter = &request.filter;
    if request.show.format == Format::Summary && filter.trace_id_prefix.is_none() {
        // Streamed: printed as read, whatever the store holds.
        let (given, stored) = match store_to_read(&path)? {
            Some(store) => {
                let given = stream_summary(&store, filter)?;
                let stored = match given {
                    0 => store.stats().map_err(|e| store.read_error(e))?.chunks,
                    _ => 0,
                };
                (given, stored)
            }
            None => (0, 0),
        };
        if given == 0 {
            tell_nothing_matched(&path, stored, &request.asked);
        }
        return Ok(0);
    }
    let (chunks, stored) = match store_to_read(&path)? {
        Some(store) => {
            let chunks = store.chunks(filter).map_err(|e| store.read_error(e))?;
            let stored = if chunks.is_empty() {
                store.stats().map_err(|e| store.read_error(e))?.chunks
            } else {
                0
            };
            (chunks, stored)
        }
        None => (Vec::new(), 0),
    };
    if let Some(prefix) = &filter.trace_id_prefix {
        let mut ids: Vec<&str> = chunks.iter().map(|c| c.trace_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 {
            let shown: Vec<&str> = ids.iter().take(5).copied().collect();
            return Err(usage(format!(
                "--trace-id {prefix} is the start of {} traces ({}{}): give more of it",
                ids.len(),
                shown.join(", "),
                if ids.len() > shown.len() { ", ..." } else { "" }
            )));
        }
    }
    if chunks.is_empty() {
        tell_nothing_matched(&path, stored, &request.asked);
    }
    let text = match request.show.format {
        Format::Tree | Format::Summary if chunks.is_empty() => String::new(),
        Format::Json => view::json(&chunks)?,
        _ => {
            let mut text = request.show.header().unwrap_or_default();
            for chunk in &chunks {
                text.push_str(&request.show.dispatch(chunk)?);
            }
            text
        }
    };
    print(&text)?;
    Ok(0)
}

/// Says on stderr that nothing matched (so that stdout stays what the format promises: `[]`
/// for json), and whether anything is stored at all.
fn tell_nothing_matched(path: &Path, stored: i64, asked: &[String]) {
    let since = match crate::store::file::moved_aside(path).first() {
        Some(copy) => format!(
            " since the damaged store was moved aside to {} ({})",
            copy.path.display(),
            human::utc_and_relative(copy.when, std::time::SystemTime::now())
        ),
        None => String::new(),
    };
    if stored == 0 {
        eprintln!(
            "dispatch: no traces recorded{since} (store: {})",
            path.display()
        );
    } else {
        eprintln!(
            "dispatch: no trace matches {}; {stored} stored{since}",
            asked.join(" ")
        );
    }
}

/// `--summary`, a line at a time as the store is read; a closed pipe (`| head`) ends it
/// quietly. Returns how many dispatches were read.
fn stream_summary(store: &Store, filter: &ChunkFilter) -> Result<usize> {
    let mut out = std::io::LineWriter::new(std::io::stdout().lock());
    let mut failed: Option<std::io::Error> = None;
    let mut header = Some(summary::header());
    let given = store
        .each_chunk(filter, &mut |chunk| {
            let mut text = header.take().map(|h| h + "\n").unwrap_or_default();
            text.push_str(&summary::line(&chunk));
            text.push('\n');
            match out.write_all(text.as_bytes()) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .map_err(|e| store.read_error(e))?;
    match failed {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(given),
    }
}
