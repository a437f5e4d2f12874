//! The copy of a request taken by `queue_req()` (method, URL, protocol, headers in order
//! with duplicates, body), its validation, and how it is turned into what goes on the
//! wire for one destination.

use std::sync::Arc;

use crate::dest::Destination;
use crate::escape;

#[path = "snapshot_store.rs"]
mod store;
pub use store::{Headers, Parts, Protocol, Snapshot};

/// Name of the loop-prevention header added to every forwarded request.
pub const MARKER_HEADER: &str = "X-Peer-Forwarded";

/// A body, stored once: the snapshot, every destination's job and the transfer (which hands
/// it to libcurl without copying) share it.
pub type Body = Arc<Vec<u8>>;

/// Headers about the client connection or the framing; the copy gets its own. Neither copied
/// from the request nor accepted as fixed headers (see [`Template::check_set_header`]).
const NOT_COPIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "trailer",
    "proxy-authenticate",
];

/// Which client credentials (`Authorization`, `Cookie`) the copies carry.
/// `Proxy-Authorization` is never copied: it is addressed to this Varnish, the proxy the
/// client talked to (RFC 9110 11.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credentials {
    /// To host + port destinations (caches of the same site), not to `http://` /
    /// `https://` URL destinations (APIs, usually someone else's).
    #[default]
    Auto,
    /// To every destination.
    Forward,
    /// To none.
    Drop,
}

impl Credentials {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Credentials::Auto),
            "forward" => Some(Credentials::Forward),
            "drop" => Some(Credentials::Drop),
            _ => None,
        }
    }

    fn forwarded_to(self, dest: &Destination) -> bool {
        match self {
            Credentials::Auto => !dest.is_url,
            Credentials::Forward => true,
            Credentials::Drop => false,
        }
    }
}

/// Client credentials: copied only as [`Credentials`] says.
const CREDENTIALS: &[&str] = &["authorization", "cookie"];
/// Never copied.
const PROXY_CREDENTIALS: &str = "proxy-authorization";
/// Who the client is, as seen by this cache: copied where credentials are
/// ([`Credentials`]), since an API (a URL destination) is someone else's.
const CLIENT_IDENTITY: &[&str] = &["x-forwarded-for", "via"];

/// Why no snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not in a client or backend subroutine.
    NoRequest,
    /// The request has a body that was not cached: a copy without it would be wrong.
    BodyNotCached,
    /// Reading the cached body failed.
    BodyUnreadable,
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::NoRequest => f.write_str("no request here, nothing queued"),
            SnapshotError::BodyNotCached => f.write_str(
                "the request has a body that was not cached: call std.cache_req_body() before, \
                 or give the body to queue_req_body(); nothing queued",
            ),
            SnapshotError::BodyUnreadable => {
                f.write_str("the cached request body could not be read; nothing queued")
            }
        }
    }
}

/// Why a snapshot cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Method,
    Url,
    HeaderName(String),
    HeaderValue(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Method => write!(f, "the method is empty or contains CR, LF, NUL or spaces"),
            Refusal::Url => write!(f, "the URL is empty or contains CR, LF, NUL or spaces"),
            Refusal::HeaderName(n) => write!(f, "header name \"{n}\" is not a valid token"),
            Refusal::HeaderValue(n) => write!(f, "header \"{n}\" has CR, LF or NUL in its value"),
        }
    }
}

/// Why a header given in `vcl_init` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    NotToken(String),
    CrLfNul(String),
    Framing(String),
    Marker(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::NotToken(n) => write!(f, "header name \"{n}\" is not a valid token"),
            HeaderError::CrLfNul(n) => write!(f, "header \"{n}\" has CR, LF or NUL in its value"),
            HeaderError::Framing(n) => write!(
                f,
                "header \"{n}\" cannot be set: the framing and connection headers of each copy \
                 follow its own body and connection"
            ),
            HeaderError::Marker(n) => write!(
                f,
                "header \"{n}\" cannot be set: it is the loop-prevention marker the module adds"
            ),
        }
    }
}

/// True when some byte of `bytes` is `bad`. Checked a block at a time without an early exit
/// inside the block, so that the compiler vectorizes it: this runs over every header value
/// and URL of every `queue_req()`, on the worker's time (byte by byte, it was two thirds of
/// the cost of copying a 1 KB request).
fn any_byte(bytes: &[u8], bad: impl Fn(u8) -> bool) -> bool {
    bytes
        .chunks(64)
        .any(|block| block.iter().fold(false, |found, b| found | bad(*b)))
}

fn has_crlf_nul(bytes: &[u8]) -> bool {
    any_byte(bytes, |b| matches!(b, b'\r' | b'\n' | 0))
}

/// `tchar` of RFC 9110 5.6.2, one table lookup per byte: this runs on every header name of
/// every `queue_req()`, on the worker's time (a `contains` over the delimiter list per byte
/// was half of `peer_queue_req_ns`).
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_graphic()
            && !matches!(
                c,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'@'
                    | b','
                    | b';'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'='
                    | b'{'
                    | b'}'
            );
        b += 1;
    }
    table
};

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| TCHAR[usize::from(*b)])
}

/// At most this many bytes of a name are quoted in a message.
const SHOWN_MAX: usize = 64;

/// Bytes quoted in a message: escaped ([`escape::log_text`]), cut after [`SHOWN_MAX`] bytes.
pub fn shown(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_MAX {
        return escape::log_text(bytes);
    }
    format!(
        "{}... ({} bytes)",
        escape::log_text(&bytes[..SHOWN_MAX]),
        bytes.len()
    )
}

fn no_space_or_ctl(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !any_byte(bytes, |b| b <= b' ' || b == 0x7f)
}

/// Splits a Varnish header line (`Name: value`) into name and value, the value without the
/// leading blanks. `None` for a line without a colon.
pub fn split_header_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let (name, rest) = line.split_at(colon);
    let value = &rest[1..];
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    Some((name, &value[start..]))
}

impl Snapshot {
    /// Refuses anything that could inject a line into the outbound request.
    pub fn validate(&self) -> Result<(), Refusal> {
        // One pass over the fields in their order: method, URL, then name and value of each
        // header.
        let mut fields = self.fields();
        if !is_token(fields.next().unwrap_or_default()) {
            return Err(Refusal::Method);
        }
        if !no_space_or_ctl(fields.next().unwrap_or_default()) {
            return Err(Refusal::Url);
        }
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if !is_token(name) {
                return Err(Refusal::HeaderName(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            if has_crlf_nul(value) {
                return Err(Refusal::HeaderValue(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// How a peer rewrites snapshots: fixed headers, removed headers, whether the request's
/// headers are copied at all, which credentials, and the marker value.
///
/// No `Debug`: fixed headers hold API tokens, and a debug print would log them.
#[derive(Clone, Default)]
pub struct Template {
    pub copy_headers: bool,
    /// Name and value, as bytes: a value need not be UTF-8 and is sent unchanged.
    pub fixed: Vec<(Vec<u8>, Vec<u8>)>,
    pub unset: Vec<Vec<u8>>,
    pub marker: String,
    pub credentials: Credentials,
    /// The call of a batch peer (`x.set_batch()`): its jobs are items, sent together.
    pub batch: Option<Arc<crate::batch::BatchSpec>>,
}

/// One request ready for the transport: everything as bytes, the header lines in the
/// order they are sent (`Name: value`, or `Name:` to suppress a header the HTTP client
/// would add on its own, or `Name;` for an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub method: Vec<u8>,
    pub url: Vec<u8>,
    pub http10: bool,
    pub header_lines: Vec<Vec<u8>>,
    pub body: Option<Body>,
}

fn header_line(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut line = name.to_vec();
    // libcurl drops a header whose value is empty or only blanks ("Name:" removes it);
    // "Name;" sends it with an empty value, so the header still reaches the destination.
    if value
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | 0x0b | 0x0c))
    {
        line.push(b';');
    } else {
        line.extend_from_slice(b": ");
        line.extend_from_slice(value);
    }
    line
}

/// The header names listed in the request's `Connection` headers.
fn connection_tokens(snap: &Snapshot) -> Vec<&[u8]> {
    snap.headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

impl Template {
    /// Checks the syntax of a header name and value given in `vcl_init`: the same rules as
    /// [`Snapshot::validate`] applies to a request's headers (a token, no CR, LF or NUL).
    pub fn check_fixed<N, V>(name: &N, value: &V) -> Result<(), HeaderError>
    where
        N: AsRef<[u8]> + ?Sized,
        V: AsRef<[u8]> + ?Sized,
    {
        let (name, value) = (name.as_ref(), value.as_ref());
        if !is_token(name) {
            return Err(HeaderError::NotToken(shown(name)));
        }
        if has_crlf_nul(value) {
            return Err(HeaderError::CrLfNul(shown(name)));
        }
        Ok(())
    }

    /// Checks a header for `.set_header()`: [`Template::check_fixed`], and not one of the
    /// headers the module sets itself. A fixed `Content-Length` or `Transfer-Encoding` would
    /// contradict the body actually sent (on a kept-alive connection the destination would
    /// read the rest as the next request: request smuggling), the connection headers belong
    /// to each connection, and a fixed marker would defeat loop prevention.
    pub fn check_set_header(name: &[u8], value: &[u8]) -> Result<(), HeaderError> {
        Self::check_fixed(name, value)?;
        if NOT_COPIED
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        {
            return Err(HeaderError::Framing(shown(name)));
        }
        if MARKER_HEADER.as_bytes().eq_ignore_ascii_case(name) {
            return Err(HeaderError::Marker(shown(name)));
        }
        Ok(())
    }

    /// Whether the request header `name` is left out of the copy for `dest`.
    fn not_copied(&self, name: &[u8], snap: &Snapshot, dest: &Destination, hop: &[&[u8]]) -> bool {
        let eq = |n: &[u8]| n.eq_ignore_ascii_case(name);
        NOT_COPIED.iter().any(|n| eq(n.as_bytes()))
            // Exactly one marker, the module's: a client could otherwise send one that the
            // destination reads first.
            || eq(MARKER_HEADER.as_bytes())
            || eq(PROXY_CREDENTIALS.as_bytes())
            || (CREDENTIALS.iter().chain(CLIENT_IDENTITY).any(|n| eq(n.as_bytes()))
                && !self.credentials.forwarded_to(dest))
            // The client's expectation is about its own body: a copied `Expect: 100-continue`
            // makes libcurl wait up to 1 s for an interim answer before every POST copy.
            // Only `.set_header()` can ask for one (a fixed header, below).
            || eq(b"expect")
            // Hop-by-hop headers the client named in its Connection header (RFC 9110 7.6.1).
            || hop.iter().any(|n| eq(n))
            || (snap.h2() && eq(b"scheme"))
            // The client's Host is not the name of a URL destination (an API, http or
            // https): libcurl sends the URL's, which the certificate and SNI are checked
            // against. A host + port destination is a cache of the same site: it gets it.
            || (dest.is_url && eq(b"host"))
            || self.unset.iter().any(|n| eq(n))
            || self.fixed.iter().any(|(n, _)| eq(n))
    }

    /// The request for `dest`: the snapshot's headers minus the ones not copied, then the
    /// fixed headers, then the marker, then suppressions of libcurl's defaults.
    pub fn render(&self, snap: &Snapshot, dest: &Destination) -> Prepared {
        let mut lines = Vec::with_capacity(snap.header_count() + self.fixed.len() + 4);
        let mut present: Vec<&[u8]> = Vec::new();
        if self.copy_headers {
            let hop = connection_tokens(snap);
            for (name, value) in snap.headers() {
                if !self.not_copied(name, snap, dest, &hop) {
                    lines.push(header_line(name, value));
                    present.push(name);
                }
            }
        }
        for (name, value) in &self.fixed {
            lines.push(header_line(name, value));
            present.push(name);
        }
        lines.push(header_line(
            MARKER_HEADER.as_bytes(),
            self.marker.as_bytes(),
        ));
        // libcurl adds these unless told not to; the copy carries only what was asked for.
        for default in ["Accept", "Content-Type", "Expect"] {
            if !present
                .iter()
                .any(|n| n.eq_ignore_ascii_case(default.as_bytes()))
            {
                lines.push(format!("{default}:").into_bytes());
            }
        }
        // A request that libcurl sends without a body carries no framing at all; for the
        // methods that define a body, some APIs answer 411 Length Required to that.
        if snap.body().is_none()
            && [&b"POST"[..], b"PUT", b"PATCH"]
                .iter()
                .any(|m| m.eq_ignore_ascii_case(snap.method()))
        {
            lines.push(b"Content-Length: 0".to_vec());
        }
        Prepared {
            method: snap.method().to_vec(),
            // Percent-encoded where the URL has bytes a request-target may not carry.
            url: dest.url_for(snap.url()),
            http10: snap.http10(),
            header_lines: lines,
            body: snap.body().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_is_rfc_9110_tchar_for_every_byte() {
        // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
        //         / "|" / "~" / DIGIT / ALPHA
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token(&[b]), tchar, "byte {b:#04x}");
        }
        assert!(!is_token(b""));
        assert!(is_token(b"X-Purge-Reason"));
        assert!(!is_token(b"X Purge"));
    }

    /// Tests change a request field by field, then take the snapshot.
    impl Parts {
        fn validate(&self) -> Result<(), Refusal> {
            Snapshot::from(self.clone()).validate()
        }
    }

    impl Template {
        fn render_parts(&self, parts: &Parts, dest: &Destination) -> Prepared {
            self.render(&parts.clone().into(), dest)
        }
    }

    fn snap() -> Parts {
        Parts {
            method: b"PURGE".to_vec(),
            url: b"/a?b=1".to_vec(),
            http10: false,
            h2: false,
            headers: [
                (&b"Host"[..], &b"www.example.com"[..]),
                (b"X-Dup", b"1"),
                (b"Connection", b"close"),
                (b"X-Dup", b"2"),
                (b"X-Bin", &[0xff, 0xfe, b'a']),
                (b"X-Empty", b""),
                (b"Cookie", b"c=1"),
            ]
            .into_iter()
            .collect(),
            body: None,
        }
    }

    #[test]
    fn header_lines_keep_order_duplicates_and_bytes() {
        let t = Template {
            copy_headers: true,
            marker: "v1".into(),
            ..Template::default()
        };
        let d = Destination::parse("127.0.0.1", 8080).unwrap();
        let p = t.render_parts(&snap(), &d);
        let expect: Vec<Vec<u8>> = vec![
            b"Host: www.example.com".to_vec(),
            b"X-Dup: 1".to_vec(),
            b"X-Dup: 2".to_vec(),
            [b"X-Bin: ".as_slice(), &[0xff, 0xfe, b'a']].concat(),
            b"X-Empty;".to_vec(),
            b"Cookie: c=1".to_vec(),
            b"X-Peer-Forwarded: v1".to_vec(),
            b"Accept:".to_vec(),
            b"Content-Type:".to_vec(),
            b"Expect:".to_vec(),
        ];
        assert_eq!(p.header_lines, expect);
        assert_eq!(p.url, b"http://127.0.0.1:8080/a?b=1");
        assert_eq!(p.method, b"PURGE");
    }

    #[test]
    fn fixed_and_unset_headers_replace_the_clients() {
        let t = Template {
            copy_headers: true,
            fixed: vec![(b"Authorization".to_vec(), b"Bearer t".to_vec())],
            unset: vec![b"cookie".to_vec()],
            marker: "m".into(),
            ..Template::default()
        };
        let mut s = snap();
        s.headers.push(b"authorization", b"client");
        s.headers.push(b"Content-Type", b"text/plain");
        let d = Destination::parse("https://api.example/v2", 0).unwrap();
        s.body = Some(Arc::new(b"{}".to_vec()));
        let p = t.render_parts(&s, &d);
        let text: Vec<String> = p
            .header_lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert!(!text
            .iter()
            .any(|l| l.contains("client") || l.starts_with("Cookie")));
        assert!(text.contains(&"Authorization: Bearer t".to_string()));
        assert!(text.contains(&"Content-Type: text/plain".to_string()));
        assert!(!text.contains(&"Content-Type:".to_string()));
        assert_eq!(p.url, b"https://api.example:443/v2/a?b=1");
        assert_eq!(p.body.as_deref().map(Vec::as_slice), Some(&b"{}"[..]));
    }

    fn rendered(t: &Template, s: &Parts, dest: &str, port: i64) -> Vec<String> {
        let d = Destination::parse(dest, port).unwrap();
        t.render_parts(s, &d)
            .header_lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn copying() -> Template {
        Template {
            copy_headers: true,
            marker: "me".into(),
            ..Template::default()
        }
    }

    #[test]
    fn the_copy_carries_exactly_one_marker_the_modules() {
        let mut s = snap();
        s.headers = std::iter::once((&b"x-peer-forwarded"[..], &b"client"[..]))
            .chain(s.headers.iter())
            .collect();
        s.headers.push(b"X-Peer-Forwarded", b"client2");
        let lines = rendered(&copying(), &s, "h", 1);
        let markers: Vec<&String> = lines
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-peer-forwarded"))
            .collect();
        assert_eq!(markers, vec!["X-Peer-Forwarded: me"]);
    }

    #[test]
    fn headers_named_in_connection_and_h2_scheme_are_not_forwarded() {
        let mut s = snap();
        s.headers.push(b"Connection", b"X-Hop, x-other ,,");
        s.headers.push(b"X-Hop", b"1");
        s.headers.push(b"X-Other", b"2");
        s.headers.push(b"X-Kept", b"3");
        s.headers.push(b"scheme", b"https");
        let lines = rendered(&copying(), &s, "h", 1);
        assert!(!lines
            .iter()
            .any(|l| l.starts_with("X-Hop") || l.starts_with("X-Other")));
        assert!(lines.contains(&"X-Kept: 3".to_string()));
        // Over HTTP/1 a "scheme" header is an ordinary header; over HTTP/2 it is :scheme.
        assert!(lines.contains(&"scheme: https".to_string()));
        s.h2 = true;
        let lines = rendered(&copying(), &s, "h", 1);
        assert!(!lines.iter().any(|l| l.starts_with("scheme")), "{lines:?}");
    }

    #[test]
    fn credentials_go_to_peer_caches_but_not_to_url_destinations_unless_chosen() {
        let mut s = snap();
        s.headers.push(b"Authorization", b"Basic c2VjcmV0");
        s.headers.push(b"Proxy-Authorization", b"Basic cHJveHk=");
        let has = |lines: &[String], name: &str| lines.iter().any(|l| l.starts_with(name));
        // auto: a host + port destination is a cache of the same site.
        let cache = rendered(&copying(), &s, "10.0.0.2", 80);
        assert!(has(&cache, "Authorization") && has(&cache, "Cookie"));
        assert!(!has(&cache, "Proxy-Authorization"));
        // auto: a URL destination is an API.
        for url in ["http://api.example/v1", "https://api.example"] {
            let api = rendered(&copying(), &s, url, 0);
            assert!(
                !has(&api, "Authorization") && !has(&api, "Cookie"),
                "{api:?}"
            );
            assert!(!has(&api, "Proxy-Authorization"));
        }
        let forward = Template {
            credentials: Credentials::Forward,
            ..copying()
        };
        let api = rendered(&forward, &s, "https://api.example", 0);
        assert!(has(&api, "Authorization") && has(&api, "Cookie"));
        assert!(!has(&api, "Proxy-Authorization"));
        let drop = Template {
            credentials: Credentials::Drop,
            ..copying()
        };
        let cache = rendered(&drop, &s, "10.0.0.2", 80);
        assert!(!has(&cache, "Authorization") && !has(&cache, "Cookie"));
    }

    #[test]
    fn url_destinations_get_the_host_of_their_url_and_caches_the_clients() {
        for url in [
            "https://api.example",
            "http://api.example/v1",
            "http://cache2:8080",
        ] {
            let lines = rendered(&copying(), &snap(), url, 0);
            assert!(!lines.iter().any(|l| l.starts_with("Host")), "{lines:?}");
        }
        let lines = rendered(&copying(), &snap(), "cache2", 8080);
        assert!(lines.contains(&"Host: www.example.com".to_string()));
        let fixed = Template {
            fixed: vec![(b"Host".to_vec(), b"purge.example".to_vec())],
            ..copying()
        };
        let lines = rendered(&fixed, &snap(), "https://api.example", 0);
        assert!(lines.contains(&"Host: purge.example".to_string()));
    }

    #[test]
    fn client_address_and_via_go_where_credentials_go() {
        let mut s = snap();
        s.headers.push(b"X-Forwarded-For", b"192.0.2.7");
        s.headers.push(b"Via", b"1.1 varnish (Varnish/7.7)");
        let has = |lines: &[String], name: &str| lines.iter().any(|l| l.starts_with(name));
        let cache = rendered(&copying(), &s, "10.0.0.2", 80);
        assert!(has(&cache, "X-Forwarded-For") && has(&cache, "Via"));
        for url in ["http://api.example/v1", "https://api.example"] {
            let api = rendered(&copying(), &s, url, 0);
            assert!(
                !has(&api, "X-Forwarded-For") && !has(&api, "Via"),
                "{api:?}"
            );
        }
        let forward = Template {
            credentials: Credentials::Forward,
            ..copying()
        };
        let api = rendered(&forward, &s, "http://api.example/v1", 0);
        assert!(has(&api, "X-Forwarded-For") && has(&api, "Via"));
    }

    #[test]
    fn trailer_proxy_authenticate_and_expect_are_never_copied() {
        let mut s = snap();
        s.headers.push(b"Trailer", b"X-Sum");
        s.headers.push(b"Proxy-Authenticate", b"Basic");
        s.headers.push(b"Expect", b"100-continue");
        let lines = rendered(&copying(), &s, "10.0.0.2", 80);
        assert!(!lines.iter().any(|l| l.starts_with("Trailer")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("Proxy-Authenticate")));
        assert!(
            !lines.iter().any(|l| l.starts_with("Expect: ")),
            "{lines:?}"
        );
        // libcurl is told not to add its own Expect either.
        assert!(lines.contains(&"Expect:".to_string()), "{lines:?}");
        assert!(Template::check_set_header(b"Trailer", b"X-Sum").is_err());
        // A fixed Expect is the only way to send one.
        let fixed = Template {
            fixed: vec![(b"Expect".to_vec(), b"100-continue".to_vec())],
            ..copying()
        };
        let lines = rendered(&fixed, &s, "10.0.0.2", 80);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("Expect"))
                .collect::<Vec<_>>(),
            vec!["Expect: 100-continue"]
        );
    }

    #[test]
    fn a_post_put_or_patch_without_body_says_content_length_0() {
        for method in ["POST", "put", "PATCH"] {
            let mut s = snap();
            s.method = method.as_bytes().to_vec();
            let lines = rendered(&copying(), &s, "10.0.0.2", 80);
            assert!(
                lines.contains(&"Content-Length: 0".to_string()),
                "{lines:?}"
            );
            s.body = Some(Arc::new(b"x".to_vec()));
            let lines = rendered(&copying(), &s, "10.0.0.2", 80);
            assert!(!lines.iter().any(|l| l.starts_with("Content-Length")));
        }
        for method in ["GET", "PURGE", "DELETE"] {
            let mut s = snap();
            s.method = method.as_bytes().to_vec();
            let lines = rendered(&copying(), &s, "10.0.0.2", 80);
            assert!(
                !lines.iter().any(|l| l.starts_with("Content-Length")),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn a_template_cannot_be_debug_printed_so_tokens_never_reach_a_log() {
        // Compile-time property: `Template` does not implement Debug. This assertion fails to
        // build if a derive comes back.
        trait NotDebug {
            const IS_DEBUG: bool = false;
        }
        impl<T> NotDebug for T {}
        struct Probe<T>(std::marker::PhantomData<T>);
        #[allow(dead_code)]
        impl<T: std::fmt::Debug> Probe<T> {
            const IS_DEBUG: bool = true;
        }
        const { assert!(!<Probe<Template>>::IS_DEBUG) };
    }

    #[test]
    fn headers_keep_order_duplicates_and_bytes_in_one_buffer() {
        let lines: [&[u8]; 4] = [b"A: 1", b"nocolon", b"a:  2", b"B:"];
        let s = Snapshot::from_fields(b"GET", b"/", b"HTTP/2.0", lines.iter().copied(), None);
        let got: Vec<(&[u8], &[u8])> = s.headers().collect();
        assert_eq!(got, vec![(&b"A"[..], &b"1"[..]), (b"a", b"2"), (b"B", b"")]);
        assert!(s.h2() && !s.http10());
        assert_eq!(s.header_count(), 3);
        let s = Snapshot::from_fields(b"GET", b"/", b"HTTP/1.0", lines.iter().copied(), None);
        assert!(!s.h2() && s.http10());
    }

    #[test]
    fn snapshot_size_counts_every_byte_held() {
        let mut s = snap();
        let before = Snapshot::from(s.clone()).size();
        // Method, URL, 7 names and values, and a 4-byte offset for each of those 16 fields.
        let text: usize = 5
            + 6
            + s.headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        assert_eq!(before, text + 16 * 4);
        s.body = Some(Arc::new(vec![0; 1000]));
        assert_eq!(Snapshot::from(s).size(), before + 1000);
    }

    #[test]
    fn without_copy_only_fixed_headers_are_sent() {
        let t = Template {
            copy_headers: false,
            fixed: vec![(b"X-Api-Key".to_vec(), b"k".to_vec())],
            ..Template::default()
        };
        let d = Destination::parse("h", 1).unwrap();
        let p = t.render_parts(&snap(), &d);
        assert_eq!(p.header_lines[0], b"X-Api-Key: k");
        assert!(!p.header_lines.iter().any(|l| l.starts_with(b"Host")));
    }

    #[test]
    fn every_forbidden_byte_is_found_at_any_place_in_a_long_value() {
        for len in [1, 63, 64, 65, 200] {
            for at in [0, len / 2, len - 1] {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(
                        has_crlf_nul(&v),
                        matches!(b, b'\r' | b'\n' | 0),
                        "{len} {at} {b}"
                    );
                    assert_eq!(no_space_or_ctl(&v), b > b' ' && b != 0x7f, "{len} {at} {b}");
                }
            }
        }
        assert!(!has_crlf_nul(b"") && !no_space_or_ctl(b""));
    }

    #[test]
    fn injection_is_refused() {
        assert_eq!(snap().validate(), Ok(()));
        let mut s = snap();
        s.headers.push(b"X-A", b"a\r\nX-Injected: 1");
        assert_eq!(s.validate(), Err(Refusal::HeaderValue("X-A".into())));
        let mut s = snap();
        s.headers.push(b"X A", b"a");
        assert!(matches!(s.validate(), Err(Refusal::HeaderName(_))));
        let mut s = snap();
        s.headers.push(b"X-N", b"a\0b");
        assert!(s.validate().is_err());
        let mut s = snap();
        s.url = b"/a HTTP/1.1\r\nX: y".to_vec();
        assert_eq!(s.validate(), Err(Refusal::Url));
        let mut s = snap();
        s.method = b"GET /x".to_vec();
        assert_eq!(s.validate(), Err(Refusal::Method));
        assert!(Template::check_fixed("Authorization", "Bearer x").is_ok());
        assert!(Template::check_fixed("Bad:Name", "x").is_err());
        assert!(Template::check_fixed("X", "a\nb").is_err());
    }

    #[test]
    fn set_header_refuses_framing_connection_and_marker_headers() {
        for name in [
            "Content-Length",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "TE",
            "Upgrade",
            "Proxy-Connection",
            "x-peer-forwarded",
        ] {
            let e = Template::check_set_header(name.as_bytes(), b"5")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("header \"{name}\" cannot be set")),
                "{e}"
            );
        }
        assert!(Template::check_set_header(b"Content-Type", b"application/json").is_ok());
        assert!(Template::check_set_header(b"Host", b"api.example").is_ok());
        // The syntax check alone (shared with validate()) still accepts them.
        assert!(Template::check_fixed("Content-Length", "5").is_ok());
    }

    #[test]
    fn fixed_header_values_are_sent_byte_exact() {
        let value = vec![b'a', 0xff, 0xfe, b'b'];
        assert!(Template::check_set_header(b"X-Bin", &value).is_ok());
        let t = Template {
            fixed: vec![(b"X-Bin".to_vec(), value.clone())],
            ..Template::default()
        };
        let d = Destination::parse("h", 1).unwrap();
        let p = t.render_parts(&snap(), &d);
        assert_eq!(p.header_lines[0], [b"X-Bin: ".as_slice(), &value].concat());
        assert!(Template::check_set_header(b"X-Bin", b"a\r\nb").is_err());
        assert!(Template::check_set_header(b"X-Bin", b"a\0b").is_err());
    }

    #[test]
    fn url_bytes_outside_a_request_target_are_percent_encoded() {
        let d = Destination::parse("127.0.0.1", 8080).unwrap();
        let t = Template::default();
        let mut s = snap();
        // The snapshot_wire fuzz crash: raw bytes >= 0x80 reached the request line.
        s.url = b"=\x87\x87\x87".to_vec();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(
            t.render_parts(&s, &d).url,
            b"http://127.0.0.1:8080/=%87%87%87"
        );
        s.url = "/café?q={a|b}&r=[1]#frag\\\"<>^`".as_bytes().to_vec();
        assert_eq!(
            t.render_parts(&s, &d).url,
            b"http://127.0.0.1:8080/caf%C3%A9?q=%7Ba%7Cb%7D&r=%5B1%5D%23frag%5C%22%3C%3E%5E%60"
        );
        // Allowed characters, and existing escapes, are left alone.
        s.url = b"/a-b._~!$&'()*+,;=:@/p?x=%20%zz".to_vec();
        assert_eq!(
            t.render_parts(&s, &d).url,
            b"http://127.0.0.1:8080/a-b._~!$&'()*+,;=:@/p?x=%20%zz"
        );
        // Space and control bytes stay refused, not encoded.
        s.url = b"/a b".to_vec();
        assert_eq!(s.validate(), Err(Refusal::Url));
    }

    #[test]
    fn blank_values_are_sent_as_empty_headers() {
        assert_eq!(header_line(b"X", b""), b"X;".to_vec());
        assert_eq!(header_line(b"X", b" \t"), b"X;".to_vec());
        assert_eq!(header_line(b"X", &[0x0b]), b"X;".to_vec());
        assert_eq!(header_line(b"X", b" a "), b"X:  a ".to_vec());
    }

    #[test]
    fn header_line_split() {
        assert_eq!(
            split_header_line(b"Host:  a:b"),
            Some((&b"Host"[..], &b"a:b"[..]))
        );
        assert_eq!(split_header_line(b"X:"), Some((&b"X"[..], &b""[..])));
        assert_eq!(split_header_line(b"nocolon"), None);
    }
}
