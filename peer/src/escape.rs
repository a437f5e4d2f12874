//! Escaping for bodies and URLs built in VCL from request data (`peer.json_string()`,
//! `peer.url_component()`): without it a crafted `req.url` could add keys to a JSON body or
//! segments to an API path.

/// `s` as a JSON string literal, quotes included (RFC 8259): `"`, `\` and control characters
/// escaped; bytes that are not UTF-8 replaced by U+FFFD (JSON text is UTF-8).
pub fn json_string(s: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(s);
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            // U+2028/2029 are valid JSON but end a line in JavaScript: escaped too.
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
    out
}

/// `s` percent-encoded for one URL path segment or query value (RFC 3986): everything but
/// the unreserved characters `A-Z a-z 0-9 - . _ ~` is encoded, `/`, `?`, `&`, `=`, `%` and
/// `#` included.
pub fn url_component(s: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        String::from_utf8(json_string(s.as_bytes())).unwrap()
    }

    #[test]
    fn a_crafted_url_stays_one_json_string() {
        assert_eq!(json("/a"), r#""/a""#);
        assert_eq!(
            json(r#"/x"],"purge_everything":true,"a":[""#),
            r#""/x\"],\"purge_everything\":true,\"a\":[\"""#
        );
        assert_eq!(json("a\\b\n\u{1}\u{7f}"), r#""a\\b\n\u0001\u007f""#);
        assert_eq!(json("café"), "\"café\"");
        assert_eq!(
            String::from_utf8(json_string(b"\xff")).unwrap(),
            "\"\u{fffd}\""
        );
    }

    #[test]
    fn url_components_keep_only_unreserved_characters() {
        assert_eq!(url_component(b"a-b._~Z9"), b"a-b._~Z9");
        assert_eq!(
            url_component(b"/x?y=1&z#f %"),
            b"%2Fx%3Fy%3D1%26z%23f%20%25"
        );
        assert_eq!(url_component("é".as_bytes()), b"%C3%A9");
        assert_eq!(url_component(b"../admin"), b"..%2Fadmin");
    }
}
