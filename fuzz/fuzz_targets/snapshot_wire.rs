//! Snapshot -> wire bytes: whatever validate() accepts, rendered for a destination and written
//! out the way libcurl writes a request (request line, Host, the header lines in order with
//! `Name;` as an empty header and `Name:` as a suppression, Content-Length for a body), must parse
//! as exactly one well-formed HTTP/1.1 request with the same method, the same headers in the same
//! order, and the body length it declares.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vmods_fuzz::dest::Destination;
use vmods_fuzz::snapshot::{Snapshot, Template};

fn wire(p: &vmods_fuzz::snapshot::Prepared) -> (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>) {
    // url is scheme://host:port/path: the origin-form target is the path onwards.
    let url = &p.url;
    let after_scheme = url.windows(3).position(|w| w == b"://").map_or(0, |i| i + 3);
    let path_start = url[after_scheme..].iter().position(|b| *b == b'/').map_or(url.len(), |i| after_scheme + i);
    let authority = &url[after_scheme..path_start];
    let target = if path_start < url.len() { &url[path_start..] } else { &b"/"[..] };
    let mut out = Vec::new();
    out.extend_from_slice(&p.method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(if p.http10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    let mut sent = Vec::new();
    let has_host = p.header_lines.iter().any(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"host:"));
    if !has_host {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(authority);
        out.extend_from_slice(b"\r\n");
        sent.push((b"Host".to_vec(), authority.to_vec()));
    }
    for line in &p.header_lines {
        let (name, value) = if let Some(n) = line.strip_suffix(b";") {
            (n.to_vec(), Vec::new())
        } else {
            let colon = line.iter().position(|b| *b == b':').expect("header line without ':' or ';'");
            let v = &line[colon + 1..];
            if v.is_empty() {
                continue; // suppression of a libcurl default
            }
            assert!(v.starts_with(b" "), "value not separated by a space");
            (line[..colon].to_vec(), v[1..].to_vec())
        };
        out.extend_from_slice(&name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
        sent.push((name, value));
    }
    if let Some(body) = &p.body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        sent.push((b"Content-Length".to_vec(), body.len().to_string().into_bytes()));
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = &p.body {
        out.extend_from_slice(body);
    }
    (out, sent)
}

fuzz_target!(|data: &[u8]| {
    let f = vmods_fuzz::fields(data);
    if f.len() < 3 {
        return;
    }
    let mut snap = Snapshot {
        method: f[0].to_vec(),
        url: f[1].to_vec(),
        http10: f[2].first().is_some_and(|b| b & 1 == 1),
        headers: Vec::new(),
        body: None,
    };
    let mut rest = &f[3..];
    if let Some((last, head)) = rest.split_last() {
        if last.first() == Some(&b'B') {
            snap.body = Some(Arc::from(&last[1..]));
            rest = head;
        }
    }
    for pair in rest.chunks(2) {
        snap.headers.push((pair[0].to_vec(), pair.get(1).map_or(Vec::new(), |v| v.to_vec())));
    }
    if snap.validate().is_err() {
        return;
    }
    // Varnish never hands a URL that does not start with '/' or '*' for origin form... but a
    // VCL may set anything; the destination base path is prepended, so test as the VMOD does.
    let t = Template { copy_headers: true, marker: "fuzz-host".into(), ..Template::default() };
    let dest = Destination::parse("127.0.0.1", 8080).expect("fixed destination");
    let p = t.render(&snap, &dest);
    let (bytes, sent) = wire(&p);
    let mut headers = vec![httparse::EMPTY_HEADER; sent.len() + 1];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(&bytes);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("not one well-formed request: {other:?}\n{}", String::from_utf8_lossy(&bytes)),
    };
    assert_eq!(req.method.map(str::as_bytes), Some(&snap.method[..]), "method changed");
    assert_eq!(req.headers.len(), sent.len(), "header count changed");
    for (h, (n, v)) in req.headers.iter().zip(&sent) {
        assert!(h.name.as_bytes().eq_ignore_ascii_case(n), "header name changed");
        assert_eq!(h.value, &v[..], "header value changed");
    }
    let body_len = p.body.as_ref().map_or(0, |b| b.len());
    assert_eq!(bytes.len() - head_len, body_len, "body framing does not match Content-Length");
    // Exactly one request: nothing after the declared body.
});
