//! How a [`Snapshot`] holds a request: one allocation for everything but the body, behind a
//! one-word pointer, and the changeable [`Parts`] that tests and fuzzing build one from.

use std::sync::Arc;
use std::time::Instant;

use triomphe::ThinArc;

use super::{split_header_line, Body};

/// A request as it was when `queue_req()` was called: method, URL, protocol, headers in
/// order with duplicates, body. Bytes, not strings: Varnish does not require UTF-8 and
/// neither does the copy.
///
/// One allocation holds everything but the body (which is shared with the transfer), behind
/// a one-word pointer that every destination's job clones: a queued request costs its bytes
/// rounded up to one allocator size class, plus a word in each queue (`bench/run.sh`'s
/// `peer_bytes_per_queued_request`). The slice is an index of `u32` end offsets (method,
/// URL, then name and value of each header), then the bytes they index.
#[derive(Clone)]
pub struct Snapshot(ThinArc<Head, u8>);

/// What a snapshot holds besides its bytes.
struct Head {
    /// When the copy was taken: a queued request's age (`max_age`) counts from here.
    taken_at: Instant,
    body: Option<Body>,
    http10: bool,
    h2: bool,
    /// Fields indexed: method, URL, and two per header.
    fields: u32,
}

/// Size in the index of one field's end offset.
const INDEX_ENTRY: usize = std::mem::size_of::<u32>();

impl Snapshot {
    /// A snapshot of `method`, `url` and `headers` (name, value), taken now.
    pub fn new<'a>(
        method: &[u8],
        url: &[u8],
        protocol: Protocol,
        headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        body: Option<Body>,
    ) -> Self {
        // The fields once (a Varnish header line is split here, once), then sized, so that
        // the snapshot is allocated once and exact.
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(headers.size_hint().1.unwrap_or(0));
        let mut text = method.len() + url.len();
        for (name, value) in headers {
            text += name.len() + value.len();
            pairs.push((name, value));
        }
        let fields = 2 + 2 * pairs.len();
        let head = Head {
            taken_at: Instant::now(),
            body,
            http10: protocol == Protocol::Http10,
            h2: protocol == Protocol::Http2,
            fields: u32::try_from(fields).unwrap_or(u32::MAX),
        };
        // Allocated zeroed, then written in place: no second buffer, no second copy.
        let mut snap = ThinArc::from_header_and_iter(
            head,
            std::iter::repeat_n(0u8, fields * INDEX_ENTRY + text),
        );
        snap.with_arc_mut(|arc| {
            // Just made, so not shared: always `Some`.
            let Some((index, text)) = triomphe::Arc::get_mut(arc)
                .and_then(|h| h.slice_mut().split_at_mut_checked(fields * INDEX_ENTRY))
            else {
                return;
            };
            let mut out = Writer {
                index: index.chunks_exact_mut(INDEX_ENTRY),
                text,
                end: 0,
            };
            out.put(method);
            out.put(url);
            for (name, value) in pairs {
                out.put(name);
                out.put(value);
            }
        });
        Snapshot(snap)
    }

    /// A snapshot from the fields of a Varnish `http`: method, URL, protocol, and the header
    /// lines (`Name: value`; lines without a colon are skipped).
    pub fn from_fields<'a>(
        method: &[u8],
        url: &[u8],
        proto: &[u8],
        lines: impl Iterator<Item = &'a [u8]> + Clone,
        body: Option<Vec<u8>>,
    ) -> Self {
        Snapshot::new(
            method,
            url,
            Protocol::of(proto),
            lines.filter_map(split_header_line),
            body.map(Arc::new),
        )
    }

    fn head(&self) -> &Head {
        &self.0.header.header
    }

    /// Every field in order: method, URL, then name and value of each header.
    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        self.field_iter()
    }

    fn field_iter(&self) -> Fields<'_> {
        let bytes = &self.0.slice;
        let index = usize::try_from(self.head().fields)
            .unwrap_or(0)
            .saturating_mul(INDEX_ENTRY)
            .min(bytes.len());
        let (ends, text) = bytes.split_at(index);
        Fields {
            ends: ends.chunks_exact(INDEX_ENTRY),
            text,
            start: 0,
        }
    }

    pub fn method(&self) -> &[u8] {
        self.field_iter().next().unwrap_or_default()
    }

    pub fn url(&self) -> &[u8] {
        self.field_iter().nth(1).unwrap_or_default()
    }

    pub fn http10(&self) -> bool {
        self.head().http10
    }

    /// Received over HTTP/2: Varnish keeps its `:scheme` pseudo-header as a `scheme` header.
    pub fn h2(&self) -> bool {
        self.head().h2
    }

    pub fn body(&self) -> Option<&Body> {
        self.head().body.as_ref()
    }

    /// When the copy was taken.
    pub fn taken_at(&self) -> Instant {
        self.head().taken_at
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        usize::try_from(self.head().fields).map_or(0, |f| f.saturating_sub(2) / 2)
    }

    /// The headers (name, value) in order, duplicates kept.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        let mut fields = self.field_iter().skip(2);
        std::iter::from_fn(move || Some((fields.next()?, fields.next()?)))
    }

    /// Bytes held by the copy, for the byte bound of the queues (the body is counted in full
    /// for each destination even though it is stored once: the bound is on what a backlog
    /// may hold on to).
    pub fn size(&self) -> usize {
        self.0.slice.len() + self.body().map_or(0, |b| b.len())
    }

    /// The snapshot as fields that can be changed (tests, fuzzing).
    pub fn parts(&self) -> Parts {
        Parts {
            method: self.method().to_vec(),
            url: self.url().to_vec(),
            http10: self.http10(),
            h2: self.h2(),
            headers: self.headers().collect(),
            body: self.body().cloned(),
        }
    }
}

/// Writes the fields of a new snapshot in order: each one's bytes, and its end offset.
struct Writer<'a> {
    index: std::slice::ChunksExactMut<'a, u8>,
    text: &'a mut [u8],
    end: usize,
}

impl Writer<'_> {
    fn put(&mut self, field: &[u8]) {
        let start = self.end;
        self.end += field.len();
        if let Some(slot) = self.index.next() {
            // Varnish's workspaces are far below 4 GiB: an offset that does not fit (it
            // cannot happen) saturates, and the field reads back empty instead of wrong.
            slot.copy_from_slice(&u32::try_from(self.end).unwrap_or(u32::MAX).to_ne_bytes());
        }
        if let Some(dst) = self.text.get_mut(start..self.end) {
            dst.copy_from_slice(field);
        }
    }
}

/// The fields of a snapshot, read in order from the index of end offsets.
#[derive(Clone)]
struct Fields<'a> {
    ends: std::slice::ChunksExact<'a, u8>,
    text: &'a [u8],
    start: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = <[u8; INDEX_ENTRY]>::try_from(self.ends.next()?)
            .map_or(0, |b| usize::try_from(u32::from_ne_bytes(b)).unwrap_or(0));
        let field = self.text.get(self.start..end).unwrap_or_default();
        self.start = end;
        Some(field)
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.parts().fmt(f)
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Snapshot {}

impl Default for Snapshot {
    fn default() -> Self {
        Parts::default().into()
    }
}

/// The protocol a request came with, as far as the copy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http10,
    Http11,
    Http2,
}

impl Protocol {
    /// From Varnish's protocol field (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`).
    pub fn of(proto: &[u8]) -> Self {
        match proto {
            b"HTTP/1.0" => Protocol::Http10,
            b"HTTP/2.0" => Protocol::Http2,
            _ => Protocol::Http11,
        }
    }
}

/// The fields of a snapshot, each one changeable: how tests and fuzzing build one
/// (`Parts { .. }.into()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    pub method: Vec<u8>,
    pub url: Vec<u8>,
    pub http10: bool,
    pub h2: bool,
    pub headers: Headers,
    pub body: Option<Body>,
}

impl From<Parts> for Snapshot {
    fn from(p: Parts) -> Self {
        let protocol = match (p.http10, p.h2) {
            (true, _) => Protocol::Http10,
            (false, true) => Protocol::Http2,
            (false, false) => Protocol::Http11,
        };
        Snapshot::new(&p.method, &p.url, protocol, p.headers.iter(), p.body)
    }
}

/// Headers in order, duplicates kept, as bytes (the headers of [`Parts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Vec<u8>, Vec<u8>)>);

impl Headers {
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.0.push((name.to_vec(), value.to_vec()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.0.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.as_ref().to_vec(), v.as_ref().to_vec()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The system allocator, counting the allocations of the current thread (tests run in
    /// parallel: only this thread's are the test's).
    struct PerThread;
    thread_local! {
        static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
    }
    fn count(allocs: isize, bytes: isize) {
        // `try_with`: a thread's allocations after its locals are gone are not counted.
        let _ = LIVE.try_with(|c| {
            let (a, b) = c.get();
            c.set((a + allocs, b + bytes));
        });
    }
    // SAFETY: every call goes to `System` unchanged; only counted.
    unsafe impl GlobalAlloc for PerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(1, layout.size().cast_signed());
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(-1, -layout.size().cast_signed());
            // SAFETY: allocated by `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
    #[global_allocator]
    static COUNTING: PerThread = PerThread;

    /// Allocations and bytes still held after `f`, and what it returned.
    fn held<T>(f: impl FnOnce() -> T) -> (T, isize, isize) {
        let before = LIVE.with(Cell::get);
        let out = f();
        let after = LIVE.with(Cell::get);
        (out, after.0 - before.0, after.1 - before.1)
    }

    /// `bench/run.sh`'s 1 KB request (`peer_bytes_per_queued_request`) as `vcl_recv` sees it.
    fn one_kb_lines() -> Vec<Vec<u8>> {
        vec![
            b"Host: 127.0.0.1:45845".to_vec(),
            [&b"X-Pad: "[..], &[b'p'; 966]].concat(),
            b"X-Forwarded-For: 127.0.0.1".to_vec(),
            b"Via: 1.1 vm (Varnish/7.7)".to_vec(),
        ]
    }

    #[test]
    fn a_snapshot_is_one_exact_allocation_behind_one_word() {
        assert_eq!(
            std::mem::size_of::<Snapshot>(),
            std::mem::size_of::<usize>()
        );
        let lines = one_kb_lines();
        let (snap, allocs, bytes) = held(|| {
            Snapshot::from_fields(
                b"GET",
                b"/q/1-1234",
                b"HTTP/1.1",
                lines.iter().map(Vec::as_slice),
                None,
            )
        });
        assert_eq!(allocs, 1, "one allocation per snapshot");
        let text = 3 + 9 + lines.iter().map(|l| l.len() - 2).sum::<usize>();
        let index = (2 + 2 * 4) * 4;
        assert_eq!(snap.size(), text + index);
        // The head (reference count, taken_at, body, flags, length) is what it adds.
        let overhead = bytes.cast_unsigned() - snap.size();
        assert!(overhead <= 64, "{overhead} bytes besides the request's");
        // Under jemalloc's 1280-byte class, with the text (1048 bytes) over the 1024 one.
        assert!(
            bytes <= 1280 && text > 1024,
            "{bytes} bytes for {text} of text"
        );
        // Clones share it.
        let (copy, allocs, _) = held(|| snap.clone());
        assert_eq!(allocs, 0);
        assert_eq!(copy, snap);
    }

    #[test]
    fn fields_read_back_exactly_empty_binary_and_duplicates_included() {
        let parts = Parts {
            method: b"PURGE".to_vec(),
            url: Vec::new(),
            http10: false,
            h2: true,
            headers: [
                (&b"A"[..], &b""[..]),
                (b"", b"v"),
                (b"X-Bin", &[0, 0xff, b'\n']),
                (b"A", b"2"),
            ]
            .into_iter()
            .collect(),
            body: Some(Arc::new(b"body".to_vec())),
        };
        let snap = Snapshot::from(parts.clone());
        assert_eq!(snap.parts(), parts);
        assert_eq!(snap.method(), b"PURGE");
        assert_eq!(snap.url(), b"");
        assert_eq!(snap.header_count(), 4);
        assert!(snap.h2() && !snap.http10());
        assert_eq!(snap.body().map(|b| b.as_slice()), Some(&b"body"[..]));
        let empty = Snapshot::default();
        assert_eq!(
            (empty.method(), empty.url(), empty.header_count()),
            (&b""[..], &b""[..], 0)
        );
        assert_eq!(empty.headers().count(), 0);
    }

    #[test]
    fn age_counts_from_when_the_copy_was_taken() {
        let before = Instant::now();
        let snap = Snapshot::default();
        assert!(snap.taken_at() >= before && snap.taken_at() <= Instant::now());
        assert_eq!(snap.clone().taken_at(), snap.taken_at());
    }
}
