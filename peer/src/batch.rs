//! Batching: the one API call a batch peer makes for several queued items (`x.set_batch()`,
//! `x.queue_item()`). Its settings and their checks, how an item is checked for the context
//! it goes into, and how the items become the call's body or header, escaped by `escape`.
//! Plain Rust: the sender thread's side is in `batch_send`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{duration, ConfigError};
use crate::dest::Destination;
use crate::escape;
use crate::sender::Peer;
use crate::snapshot::{
    shown, split_header_line, HeaderError, Prepared, Protocol, Snapshot, Template,
};
use crate::vcl::queue_snapshot;

/// Where the items go in the body or header template.
pub const PLACEHOLDER: &[u8] = b"{items}";
/// Bounds of `max_items`.
pub const MAX_ITEMS: i64 = 10_000;
/// The longest `window`: items wait at most this long for others to join them.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);
/// The longest items header line of a call (name, `: ` and value): 8 KB is the limit of
/// many servers (Varnish's `http_req_hdr_len`, nginx's header buffer), above which the whole
/// call would fail (431). A batch whose items would not fit leaves with those that do.
pub const MAX_ITEMS_HEADER: usize = 8192;

/// How each item is written into the call, and what separates two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFormat {
    /// A JSON string (`escape::push_json_string`), items separated by `,`.
    Json,
    /// As it is, items separated by a space; items that are not list tokens are refused
    /// (`escape::is_list_token`).
    Tokens,
}

impl ItemFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(ItemFormat::Json),
            "tokens" => Some(ItemFormat::Tokens),
            _ => None,
        }
    }

    /// The bytes `item` takes in a list, its separator included.
    fn cost(self, item: &[u8]) -> usize {
        match self {
            ItemFormat::Json => escape::json_string(item).len() + 1,
            ItemFormat::Tokens => item.len() + 1,
        }
    }

    fn push_list(self, out: &mut Vec<u8>, items: &[&[u8]]) {
        for (i, item) in items.iter().enumerate() {
            match self {
                ItemFormat::Json => {
                    if i > 0 {
                        out.push(b',');
                    }
                    escape::push_json_string(out, item);
                }
                ItemFormat::Tokens => {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(item);
                }
            }
        }
    }
}

/// A template cut at its placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Split {
    before: Vec<u8>,
    after: Vec<u8>,
}

impl Split {
    fn render(&self, format: ItemFormat, items: &[&[u8]]) -> Vec<u8> {
        let size: usize = items.iter().map(|i| i.len() + 3).sum();
        let mut out = Vec::with_capacity(self.before.len() + size + self.after.len());
        out.extend_from_slice(&self.before);
        format.push_list(&mut out, items);
        out.extend_from_slice(&self.after);
        out
    }
}

/// Where the placeholder is: in the body, or in the value of one header (then the body is
/// fixed, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Body(Split),
    Header {
        name: Vec<u8>,
        value: Split,
        body: Vec<u8>,
    },
}

/// What is left for items in one call: `max_items`, and the bytes of the items header when
/// the items go in a header (a body has no such bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    items: usize,
    bytes: Option<usize>,
}

impl Room {
    /// No item would fit.
    pub fn is_full(&self) -> bool {
        self.items == 0
    }

    /// Makes room for `item` in the call, or says it does not fit (nothing changes then).
    pub fn take(&mut self, spec: &BatchSpec, item: &[u8]) -> bool {
        if self.items == 0 {
            return false;
        }
        if let Some(bytes) = self.bytes {
            let cost = spec.format.cost(item);
            if cost > bytes {
                return false;
            }
            self.bytes = Some(bytes - cost);
        }
        self.items -= 1;
        true
    }
}

/// The call of a batch peer, checked in `vcl_init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpec {
    pub method: Vec<u8>,
    pub url: Vec<u8>,
    target: Target,
    pub format: ItemFormat,
    pub max_items: usize,
    pub window: Duration,
}

/// The arguments of `x.set_batch()`, in plain types (the window in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchArgs {
    pub url: Vec<u8>,
    pub body: Vec<u8>,
    pub header: Vec<u8>,
    pub items: String,
    pub method: Vec<u8>,
    pub max_items: i64,
    pub window: f64,
}

/// Why `x.set_batch()` was refused. Each message starts with the argument it is about.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchError {
    NoPlaceholder,
    /// `{items}` more than once, or in both the body and the header.
    Placeholders,
    /// A header given without the placeholder (fixed headers are for `.set_header()`).
    FixedHeader,
    HeaderSyntax,
    Header(HeaderError),
    Method,
    Url,
    Items(String),
    MaxItems(i64),
    Window(ConfigError),
    /// The items header's fixed part leaves no room for items under [`MAX_ITEMS_HEADER`].
    HeaderTooLong(usize),
    /// The window is not shorter than `max_age`: items would expire while they wait.
    WindowVsMaxAge {
        window: Duration,
        max_age: Duration,
    },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::NoPlaceholder => f.write_str(
                "body: neither body nor header has the {items} placeholder: the items would \
                 not be sent",
            ),
            BatchError::Placeholders => f.write_str(
                "body: {items} must appear exactly once, in body or in header (not both)",
            ),
            BatchError::FixedHeader => f.write_str(
                "header: has no {items} placeholder (set a fixed header with .set_header())",
            ),
            BatchError::HeaderSyntax => {
                f.write_str("header: must be \"Name: value\", the value with {items}")
            }
            BatchError::Header(e) => write!(f, "header: {e}"),
            BatchError::Method => f.write_str("method: must be a token (e.g. POST)"),
            BatchError::Url => {
                f.write_str("url: must not be empty or contain spaces, CR, LF or NUL")
            }
            BatchError::Items(s) => write!(f, "items: must be json or tokens (\"{s}\")"),
            BatchError::MaxItems(n) => {
                write!(f, "max_items: must be between 1 and {MAX_ITEMS} ({n})")
            }
            BatchError::Window(e) => write!(f, "window: {}", e.why()),
            BatchError::HeaderTooLong(n) => write!(
                f,
                "header: {n} bytes without the items, leaving no room for them under \
                 {MAX_ITEMS_HEADER} bytes"
            ),
            BatchError::WindowVsMaxAge { window, max_age } => write!(
                f,
                "window: must be shorter than the peer's max_age ({} ms), or items would \
                 expire while they wait ({} ms)",
                max_age.as_millis(),
                window.as_millis()
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// Why `x.queue_item()` refused an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    Empty,
    NotToken(String),
    /// Not UTF-8, for a JSON string (which would carry U+FFFD in its place).
    NotUtf8(String),
    /// Longer (as written in the items header) than a call's items header may be.
    TooLong {
        len: usize,
        max: usize,
    },
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemError::Empty => f.write_str("the item is empty"),
            ItemError::NotToken(s) => write!(
                f,
                "item \"{s}\" cannot go in a token list (a space, a control character, a \
                 quote, a backslash or a byte outside ASCII)"
            ),
            ItemError::NotUtf8(s) => write!(
                f,
                "item \"{s}\" is not UTF-8 and cannot go in a JSON string unaltered (an \
                 altered item would purge something else)"
            ),
            ItemError::TooLong { len, max } => write!(
                f,
                "the item takes {len} bytes in the items header, more than the {max} a call \
                 may carry"
            ),
        }
    }
}

fn split_once(template: &[u8]) -> Result<Option<Split>, BatchError> {
    let Some(at) = find(template, PLACEHOLDER) else {
        return Ok(None);
    };
    let after = &template[at + PLACEHOLDER.len()..];
    if find(after, PLACEHOLDER).is_some() {
        return Err(BatchError::Placeholders);
    }
    Ok(Some(Split {
        before: template[..at].to_vec(),
        after: after.to_vec(),
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl BatchSpec {
    /// Checks the arguments of `x.set_batch()` for a peer whose `max_age` is `max_age`.
    pub fn new(a: &BatchArgs, max_age: Duration) -> Result<Self, BatchError> {
        let format =
            ItemFormat::parse(&a.items).ok_or_else(|| BatchError::Items(a.items.clone()))?;
        let probe = |method: &[u8], url: &[u8]| {
            Snapshot::new(method, url, Protocol::Http11, std::iter::empty(), None).validate()
        };
        if probe(&a.method, &a.url).is_err() {
            // Which one: the method is checked first.
            let method_ok = probe(&a.method, b"/").is_ok();
            return Err(if method_ok {
                BatchError::Url
            } else {
                BatchError::Method
            });
        }
        let body = split_once(&a.body)?;
        let target = if a.header.is_empty() {
            Target::Body(body.ok_or(BatchError::NoPlaceholder)?)
        } else {
            let (name, value) = split_header_line(&a.header).ok_or(BatchError::HeaderSyntax)?;
            Template::check_set_header(name, value).map_err(BatchError::Header)?;
            let value = split_once(value)?.ok_or(BatchError::FixedHeader)?;
            if body.is_some() {
                return Err(BatchError::Placeholders);
            }
            Target::Header {
                name: name.to_vec(),
                value,
                body: a.body.clone(),
            }
        };
        if let Target::Header { name, value, .. } = &target {
            let fixed = name.len() + 2 + value.before.len() + value.after.len();
            if fixed >= MAX_ITEMS_HEADER {
                return Err(BatchError::HeaderTooLong(fixed));
            }
        }
        if !(1..=MAX_ITEMS).contains(&a.max_items) {
            return Err(BatchError::MaxItems(a.max_items));
        }
        let window =
            duration("window", a.window, MAX_WINDOW, None, "").map_err(BatchError::Window)?;
        if window >= max_age {
            return Err(BatchError::WindowVsMaxAge { window, max_age });
        }
        Ok(BatchSpec {
            method: a.method.clone(),
            url: a.url.clone(),
            target,
            format,
            max_items: usize::try_from(a.max_items).unwrap_or(1),
            window,
        })
    }

    /// Checks an item for the context it goes into.
    pub fn check_item(&self, item: &[u8]) -> Result<(), ItemError> {
        if item.is_empty() {
            return Err(ItemError::Empty);
        }
        match self.format {
            ItemFormat::Tokens if !escape::is_list_token(item) => {
                return Err(ItemError::NotToken(shown(item)));
            }
            ItemFormat::Json if std::str::from_utf8(item).is_err() => {
                return Err(ItemError::NotUtf8(shown(item)));
            }
            _ => {}
        }
        if let Some(max) = self.room().bytes {
            let len = self.format.cost(item) - 1;
            if len > max - 1 {
                return Err(ItemError::TooLong { len, max: max - 1 });
            }
        }
        Ok(())
    }

    /// The room of an empty call.
    pub fn room(&self) -> Room {
        Room {
            items: self.max_items,
            // The first item has no separator: one byte more for the list.
            bytes: match &self.target {
                Target::Body(_) => None,
                Target::Header { name, value, .. } => Some(
                    (MAX_ITEMS_HEADER + 1)
                        .saturating_sub(name.len() + 2 + value.before.len() + value.after.len()),
                ),
            },
        }
    }

    /// What `x.queue_item()` queues: the call's method and URL (so that the queue checks
    /// and bounds apply as to any request) with the item as the body.
    pub fn item_snapshot(&self, item: &[u8]) -> Snapshot {
        Snapshot::new(
            &self.method,
            &self.url,
            Protocol::Http11,
            std::iter::empty(),
            Some(Arc::new(item.to_vec())),
        )
    }

    /// The call for `items` to `dest`: method and URL, the fixed headers of `template` and
    /// its marker, the body, and the items header when the placeholder is in a header (it
    /// replaces a fixed header of the same name).
    pub fn prepare(&self, template: &Template, items: &[&[u8]], dest: &Destination) -> Prepared {
        let (body, header) = match &self.target {
            Target::Body(split) => (split.render(self.format, items), None),
            Target::Header { name, value, body } => {
                let mut line = name.clone();
                line.extend_from_slice(b": ");
                line.extend_from_slice(&value.render(self.format, items));
                (body.clone(), Some((name, line)))
            }
        };
        let call = Snapshot::new(
            &self.method,
            &self.url,
            Protocol::Http11,
            std::iter::empty(),
            (!body.is_empty()).then(|| Arc::new(body)),
        );
        let mut prepared = template.render(&call, dest);
        if let Some((name, line)) = header {
            prepared.header_lines.retain(|l| {
                !(l.len() > name.len()
                    && l[..name.len()].eq_ignore_ascii_case(name)
                    && matches!(l[name.len()], b':' | b';'))
            });
            prepared.header_lines.insert(0, line);
        }
        prepared
    }
}

/// The item a queued job carries (its body, see [`BatchSpec::item_snapshot`]).
pub fn item_of(snap: &Snapshot) -> &[u8] {
    snap.body().map_or(&[][..], |b| b.as_slice())
}

/// Queues one item on a batch peer for `fname` (`x.queue_item()`), or says why not: hands
/// `log` the lines to log as `VCL_Error` in the request's transaction.
pub fn queue_item_on(peer: &Peer, fname: &str, item: &[u8], mut log: impl FnMut(&str)) {
    let name = peer.name();
    let Some(spec) = peer.batch() else {
        peer.count_refused();
        log(&format!(
            "{fname}: peer {name} has no batch call (configure one with {name}.set_batch() \
             in vcl_init); nothing queued"
        ));
        return;
    };
    if let Err(e) = spec.check_item(item) {
        peer.count_refused();
        log(&format!(
            "{fname}: peer {name}: refused, {e}; nothing queued"
        ));
        return;
    }
    queue_snapshot(peer, fname, || Ok(spec.item_snapshot(item)), log);
}

/// Where `x.queue_items()` splits its list (its `split` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSplit {
    /// On spaces, tabs and commas, as vmod_xkey splits its headers.
    Xkey,
    /// On spaces and tabs only: for URLs, which may contain commas but no spaces.
    Spaces,
}

impl ListSplit {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xkey" => Some(ListSplit::Xkey),
            "spaces" => Some(ListSplit::Spaces),
            _ => None,
        }
    }
}

/// The items of a list as `x.queue_items()` splits it, empty parts skipped.
pub fn split_list(list: &[u8], split: ListSplit) -> impl Iterator<Item = &[u8]> {
    list.split(move |b| match split {
        ListSplit::Xkey => matches!(b, b' ' | b'\t' | b','),
        ListSplit::Spaces => matches!(b, b' ' | b'\t'),
    })
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
