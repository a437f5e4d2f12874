//! Header validation: validate() accepts a snapshot only if nothing in it can start a new line
//! or a new field on the wire (exactly CR, LF, NUL in values; a token as name), check_fixed()
//! agrees with it for the same name and value (as bytes), and check_set_header() refuses exactly
//! that plus the framing/connection headers and the loop-prevention marker.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmods_fuzz::snapshot::{split_header_line, Parts, Snapshot, Template};

const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";

fuzz_target!(|data: &[u8]| {
    let f = vmods_fuzz::fields(data);
    let (name, value) = (f[0], f.get(1).copied().unwrap_or(b""));
    let snap = Snapshot::from(Parts {
        method: b"PURGE".to_vec(),
        url: b"/".to_vec(),
        headers: [(name, value)].into_iter().collect(),
        ..Parts::default()
    });
    let ok = snap.validate().is_ok();
    let token = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(b));
    let clean = !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
    assert_eq!(ok, token && clean, "validate() disagrees with RFC 9110 token / no CR-LF-NUL");
    // Fixed header values are bytes (need not be UTF-8): the same rule.
    assert_eq!(Template::check_fixed(name, value).is_ok(), ok, "check_fixed() disagrees with validate()");
    // .set_header() also refuses the framing/connection headers and the marker, and only them.
    const RESERVED: &[&str] = &[
        "connection", "keep-alive", "proxy-connection", "te", "upgrade", "content-length",
        "transfer-encoding", "x-peer-forwarded",
    ];
    let reserved = RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r.as_bytes()));
    assert_eq!(Template::check_set_header(name, value).is_ok(), ok && !reserved, "check_set_header()");
    // Method and URL: no space, CR, LF or NUL may pass.
    let s2 = Snapshot::from(Parts { method: name.to_vec(), url: value.to_vec(), ..Parts::default() });
    if s2.validate().is_ok() {
        assert!(!s2.method().iter().chain(s2.url()).any(|b| *b <= b' ' || *b == 0x7f));
    }
    // split_header_line never panics and its name has no colon.
    if let Some((n, _)) = split_header_line(data) {
        assert!(!n.contains(&b':'));
    }
});
