//! Snapshot -> wire bytes. Whatever validate() accepts is rendered for a destination and written
//! out the way the linked libcurl (7.88, Debian 12; see `wire`) builds a request from
//! `Prepared`, and must parse as exactly one request carrying what the contract in
//! peer/vmod.vcc ("What is sent") promises, computed here from the snapshot independently of
//! `render`: the same method; the URL with only the documented bytes percent-encoded; Host
//! (the request's first one, else the destination's authority), then the request's headers in
//! order with duplicates (minus the framing/connection ones and those replaced by fixed
//! headers), then the fixed headers, then the marker; Content-Length equal to the body sent.
//! Header values are compared without leading/trailing spaces and tabs (a receiver strips
//! them: RFC 9110 OWS).
//!
//! Values may carry control bytes other than CR, LF and NUL (e.g. 0x18): the module forwards
//! them (documented: only CR, LF and NUL are refused, since only they can end a field or a
//! line), and strict parsers such as httparse refuse them. Such requests are checked with
//! `strict_split` below (one request, header names and values unchanged, Content-Length equal
//! to the body); all others with httparse as well.
//!
//! Known module findings (fuzz/regressions/README.md) fail this target by default. Setting
//! FUZZ_TOLERATE_KNOWN_PEER_BUGS=1 skips just those inputs, to explore past them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vmods_fuzz::dest::Destination;
use vmods_fuzz::snapshot::{Parts, Prepared, Snapshot, Template};

/// Whether peer/src/transport.rs asks libcurl to keep dot segments (CURLOPT_PATH_AS_IS).
/// Without it libcurl applies RFC 3986 remove_dot_segments to the path: `/a/../b` goes out as
/// `/b`. Read from the source so that this model follows the module when it changes.
fn path_as_is() -> bool {
    include_str!("../../peer/src/transport.rs").contains("path_as_is(true)")
}

const NOT_COPIED: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "upgrade", "content-length", "transfer-encoding"];

/// C isspace(): what libcurl 7.88 skips after a custom header's colon.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn ows_trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(v.len());
    let e = v.iter().rposition(|b| *b != b' ' && *b != b'\t').map_or(s, |i| i + 1);
    &v[s..e.max(s)]
}

/// RFC 3986 5.2.4 remove_dot_segments, as libcurl applies it to the path (not the query).
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut input = path.to_vec();
    let mut out: Vec<u8> = Vec::new();
    while !input.is_empty() {
        if input.starts_with(b"../") {
            input.drain(..3);
        } else if input.starts_with(b"./") {
            input.drain(..2);
        } else if input.starts_with(b"/./") {
            input.drain(..2);
        } else if input == b"/." {
            input = b"/".to_vec();
        } else if input.starts_with(b"/../") || input == b"/.." {
            if input == b"/.." { input = b"/".to_vec() } else { input.drain(..3); }
            let cut = out.iter().rposition(|b| *b == b'/').unwrap_or(0);
            out.truncate(cut);
        } else if input == b"." || input == b".." {
            input.clear();
        } else {
            let start = usize::from(input[0] == b'/');
            let end = input[start..].iter().position(|b| *b == b'/').map_or(input.len(), |i| start + i);
            out.extend(input.drain(..end));
        }
    }
    out
}

/// The request libcurl 7.88 writes for `p` (lib/http.c: Curl_http, Curl_http_host,
/// Curl_add_custom_headers, Curl_http_bodysend), given how transport.rs configures it.
fn wire(p: &Prepared) -> Vec<u8> {
    let url = &p.url;
    let after_scheme = url.windows(3).position(|w| w == b"://").map_or(0, |i| i + 3);
    let path_start = url[after_scheme..].iter().position(|b| *b == b'/').map_or(url.len(), |i| after_scheme + i);
    let authority = &url[after_scheme..path_start];
    let mut target = if path_start < url.len() { url[path_start..].to_vec() } else { b"/".to_vec() };
    if !path_as_is() {
        let q = target.iter().position(|b| *b == b'?').unwrap_or(target.len());
        let mut t = remove_dot_segments(&target[..q]);
        if t.is_empty() {
            t.push(b'/');
        }
        t.extend_from_slice(&target[q..]);
        target = t;
    }
    let mut out = Vec::new();
    out.extend_from_slice(&p.method);
    out.push(b' ');
    out.extend_from_slice(&target);
    out.extend_from_slice(if p.http10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    // Curl_http_host: a custom Host ("Host:" or "Host;" prefix, Curl_checkheaders) replaces
    // the default and goes first; exactly "Host:" sends none.
    let custom_host = p
        .header_lines
        .iter()
        .find(|l| l.len() >= 5 && l[..4].eq_ignore_ascii_case(b"host") && matches!(l[4], b':' | b';'));
    let mut host_sent = true;
    match custom_host {
        Some(l) if &l[..] == b"Host:" => host_sent = false,
        Some(l) => {
            out.extend_from_slice(b"Host:");
            out.extend_from_slice(&l[5..]);
            out.extend_from_slice(b"\r\n");
        }
        None => {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(authority);
            out.extend_from_slice(b"\r\n");
        }
    }
    // Accept, Content-Type and Expect are suppressed by render's "Name:" lines (or given).
    // Curl_add_custom_headers.
    for line in &p.header_lines {
        let compare: Vec<u8> = if let Some(colon) = line.iter().position(|b| *b == b':') {
            if colon == 0 || line[colon + 1..].iter().all(|b| c_space(*b)) {
                continue; // "no content, do not send this" (a suppression, or a blank value)
            }
            line.clone()
        } else if let Some(semi) = line.iter().position(|b| *b == b';') {
            if semi == 0 || semi + 1 != line.len() {
                continue;
            }
            let mut l = line.clone();
            l[semi] = b':';
            l
        } else {
            continue;
        };
        if host_sent && compare.len() >= 5 && compare[..5].eq_ignore_ascii_case(b"host:") {
            continue;
        }
        if compare.len() >= 11 && compare[..11].eq_ignore_ascii_case(b"connection:") {
            continue;
        }
        out.extend_from_slice(&compare);
        out.extend_from_slice(b"\r\n");
    }
    // HEAD: CURLOPT_NOBODY, no body; otherwise a body is a POSTFIELDS body with its length.
    let body = p.body.as_ref().filter(|_| !p.method.eq_ignore_ascii_case(b"HEAD"));
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// The request-target vmod.vcc promises: the URL (with a leading `/` when it has none) with
/// bytes >= 0x80 and `" # < > [ \ ] ^ ` { | }` percent-encoded, everything else unchanged.
fn expected_target(url: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    if !url.starts_with(b"/") {
        t.push(b'/');
    }
    for &b in url {
        if b >= 0x80 || b"\"#<>[\\]^`{|}".contains(&b) {
            t.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            t.push(b);
        }
    }
    t
}

/// A request parsed without judging header value bytes: the head ends at the first CRLFCRLF,
/// every line ends with CRLF (no other CR or LF, no NUL anywhere in the head), the request line
/// is `method SP target SP HTTP/1.x`, every field line is `token ":" value`.
struct Parsed {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    head_len: usize,
}

fn is_token(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(c))
}

fn strict_split(bytes: &[u8]) -> Result<Parsed, String> {
    let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of head")? + 4;
    let head = &bytes[..head_len - 4];
    let mut lines = Vec::new();
    let mut rest = head;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    for l in &lines {
        if l.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(format!("bare CR, LF or NUL in line {:?}", String::from_utf8_lossy(l)));
        }
    }
    let rl: Vec<&[u8]> = lines[0].split(|b| *b == b' ').collect();
    if rl.len() != 3 || !is_token(rl[0]) || rl[1].is_empty() || !(rl[2] == b"HTTP/1.1" || rl[2] == b"HTTP/1.0") {
        return Err("bad request line".into());
    }
    let mut headers = Vec::new();
    for l in &lines[1..] {
        let colon = l.iter().position(|b| *b == b':').ok_or("field line without ':'")?;
        if !is_token(&l[..colon]) {
            return Err("field name is not a token".into());
        }
        headers.push((l[..colon].to_vec(), ows_trim(&l[colon + 1..]).to_vec()));
    }
    Ok(Parsed { method: rl[0].to_vec(), target: rl[1].to_vec(), headers, head_len })
}

fn has_other_ctl(v: &[u8]) -> bool {
    v.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
}

fuzz_target!(|data: &[u8]| {
    let f = vmods_fuzz::fields(data);
    if f.len() < 3 {
        return;
    }
    let flags = f[2].first().copied().unwrap_or(0);
    let mut snap = Parts {
        method: f[0].to_vec(),
        url: f[1].to_vec(),
        http10: flags & 1 == 1,
        ..Parts::default()
    };
    let mut rest = &f[3..];
    if let Some((last, head)) = rest.split_last() {
        if last.first() == Some(&b'B') {
            snap.body = Some(Arc::new(last[1..].to_vec()));
            rest = head;
        }
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for pair in rest.chunks(2) {
        // As the VMOD reads Varnish's header lines (split_header_line): no leading blanks.
        let v = pair.get(1).map_or(&b""[..], |v| v);
        let s = v.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(v.len());
        pairs.push((pair[0].to_vec(), v[s..].to_vec()));
    }
    let mut t = Template { copy_headers: flags & 2 == 0, marker: "fuzz-host".into(), ..Template::default() };
    // flags & 4: the first pair is a fixed header (.set_header) instead of a request header.
    let fixed = if flags & 4 != 0 && !pairs.is_empty() { Some(pairs.remove(0)) } else { None };
    snap.headers = pairs.iter().map(|(n, v)| (n, v)).collect();
    if let Some((n, v)) = fixed {
        let v = f.get(4).map_or(v, |raw| raw.to_vec()); // a fixed value keeps its blanks
        if Template::check_set_header(&n, &v).is_err() {
            return;
        }
        t.fixed.push((n, v));
    }
    let taken = Snapshot::from(snap.clone());
    if taken.validate().is_err() {
        return;
    }
    let dest = Destination::parse("127.0.0.1", 8080).expect("fixed destination");
    let p = t.render(&taken, &dest);
    let bytes = wire(&p);

    // What the contract says goes out.
    let eq = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    // Hop-by-hop: the names the request's Connection headers list.
    let hop: Vec<Vec<u8>> = pairs
        .iter()
        .filter(|(n, _)| eq(n, "connection"))
        .flat_map(|(_, v)| v.split(|b| *b == b',').map(|t| t.trim_ascii().to_vec()).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect();
    // Never copied: the framing/connection headers, the client's marker, Proxy-Authorization,
    // the Connection-named ones, and what fixed headers replace. A host + port destination is a
    // cache: Authorization and Cookie are copied (credentials = auto).
    let replaced = |n: &[u8]| {
        NOT_COPIED.iter().any(|x| eq(n, x))
            || eq(n, "x-peer-forwarded")
            || eq(n, "proxy-authorization")
            || hop.iter().any(|h| h.eq_ignore_ascii_case(n))
            || t.fixed.iter().any(|(f, _)| f.eq_ignore_ascii_case(n))
    };
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if t.copy_headers {
        all.extend(pairs.iter().filter(|(n, _)| !replaced(n)).cloned());
    }
    all.extend(t.fixed.iter().cloned());
    // One Host, first: the request's (or fixed) first Host, else the destination's authority.
    // libcurl sends the first Host only (two would make the request invalid, RFC 9112 3.2).
    let host = all.iter().find(|(n, _)| eq(n, "host")).map_or(b"127.0.0.1:8080".to_vec(), |(_, v)| v.clone());
    let mut expect: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"Host".to_vec(), host)];
    expect.extend(all.into_iter().filter(|(n, _)| !eq(n, "host")));
    expect.push((b"X-Peer-Forwarded".to_vec(), b"fuzz-host".to_vec()));
    let body: &[u8] = match &snap.body {
        Some(b) if !snap.method.eq_ignore_ascii_case(b"HEAD") => b,
        _ => b"",
    };
    if snap.body.is_some() && !snap.method.eq_ignore_ascii_case(b"HEAD") {
        expect.push((b"Content-Length".to_vec(), body.len().to_string().into_bytes()));
    }
    let target = expected_target(&snap.url);

    if std::env::var_os("FUZZ_TOLERATE_KNOWN_PEER_BUGS").is_some() {
        // Finding A: dot segments removed by libcurl. Finding B: a value made only of
        // blanks/VT/FF (non-empty) is dropped by libcurl.
        let q = target.iter().position(|b| *b == b'?').unwrap_or(target.len());
        let dots = !path_as_is() && remove_dot_segments(&target[..q]) != target[..q];
        let blank = expect.iter().any(|(_, v)| !v.is_empty() && v.iter().all(|b| c_space(*b)));
        let blank_fixed = t.fixed.iter().any(|(_, v)| !v.is_empty() && v.iter().all(|b| c_space(*b)));
        if dots || blank || blank_fixed {
            return;
        }
    }

    let show = || String::from_utf8_lossy(&bytes).into_owned();
    let parsed = strict_split(&bytes).unwrap_or_else(|e| panic!("not one request: {e}\n{}", show()));
    assert_eq!(parsed.method, snap.method, "method changed\n{}", show());
    assert_eq!(parsed.target, target, "request-target is not the documented encoding of the URL\n{}", show());
    let got: Vec<(Vec<u8>, Vec<u8>)> = parsed.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> =
        expect
            .iter()
            .map(|(n, v)| {
                // vmod.vcc: a value that is empty or only blanks is sent empty.
                let v = if v.iter().all(|b| c_space(*b)) { Vec::new() } else { ows_trim(v).to_vec() };
                (n.to_ascii_lowercase(), v)
            })
            .collect();
    assert_eq!(got, want, "headers (names, values, order) changed\n{}", show());
    // Framing: no Transfer-Encoding, Content-Length (if any) equals what follows the head,
    // and nothing else follows (exactly one request).
    let cl: Vec<&(Vec<u8>, Vec<u8>)> = parsed.headers.iter().filter(|(n, _)| eq(n, "content-length")).collect();
    assert!(cl.len() <= 1, "several Content-Length");
    assert!(!parsed.headers.iter().any(|(n, _)| eq(n, "transfer-encoding")), "Transfer-Encoding sent");
    let declared = cl.first().map_or(0, |(_, v)| std::str::from_utf8(v).unwrap().parse::<usize>().unwrap());
    assert_eq!(&bytes[parsed.head_len..], body, "body changed or not framed by Content-Length");
    assert_eq!(declared, body.len(), "Content-Length is not the body length");

    // Without other control bytes, a strict general-purpose parser agrees.
    if !bytes[..parsed.head_len].iter().any(|b| (*b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || *b == 0x7f)
        && !expect.iter().any(|(_, v)| has_other_ctl(v))
    {
        let mut hs = vec![httparse::EMPTY_HEADER; parsed.headers.len() + 1];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&bytes) {
            Ok(httparse::Status::Complete(n)) => assert_eq!(n, parsed.head_len, "httparse: other head length"),
            other => panic!("httparse refuses it: {other:?}\n{}", show()),
        }
        assert_eq!(req.headers.len(), parsed.headers.len(), "httparse: other header count");
        for (h, (n, v)) in req.headers.iter().zip(&parsed.headers) {
            assert!(h.name.as_bytes().eq_ignore_ascii_case(n), "httparse: other name");
            assert_eq!(h.value, &v[..], "httparse: other value");
        }
    }
});
