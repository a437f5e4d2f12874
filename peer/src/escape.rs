//! Escaping for bodies and URLs built from request data: in VCL (`peer.json_string()`,
//! `peer.url_component()`) and in the calls of a batch peer (`batch`), with the same code.
//! Without it a crafted `req.url` could add keys to a JSON body or segments to an API path.

/// `s` as a JSON string literal, quotes included (RFC 8259): `"`, `\` and control characters
/// escaped; bytes that are not UTF-8 replaced by U+FFFD (JSON text is UTF-8).
pub fn json_string(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

/// Appends `s` to `out` as a JSON string literal (see [`json_string`]): the one
/// implementation behind `peer.json_string()` and the `json` items of a batch call.
pub fn push_json_string(out: &mut Vec<u8>, s: &[u8]) {
    let text = String::from_utf8_lossy(s);
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
}

/// True when `s` can be one element of a space-separated list in a header value (Fastly's
/// `Surrogate-Key`): not empty, visible ASCII only, and no `"` or `\`. There is no escaping
/// in such a list: an element with a space would become two keys, and one with a control
/// character or a byte outside ASCII would not reach the API intact, so it is refused
/// rather than altered (an altered key would purge nothing). Without quotes and
/// backslashes it also stays inert inside a quoted string of a body.
pub fn is_list_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\')
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

/// `s` as it is shown in a log line or a CLI message, with C's escapes (as a `.vtc` writes
/// them): `\"`, `\\`, `\t`, `\n`, `\r`, and `\xNN` for every other control byte and
/// every byte outside ASCII. A request value can then neither end the quotes around it, nor
/// add a field or a line, nor bring bytes a log reader would mangle.
pub fn log_text(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
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

    #[test]
    fn push_json_string_appends_the_same_literal_as_json_string() {
        let mut out = b"[".to_vec();
        push_json_string(&mut out, b"a\"b");
        out.push(b',');
        push_json_string(&mut out, b"c\\");
        assert_eq!(out, br#"["a\"b","c\\""#);
    }

    #[test]
    fn list_tokens_are_visible_ascii_without_quotes_or_backslashes() {
        for ok in [
            &b"k1"[..],
            b"product/42",
            b"user:7,a",
            b"~!#$%&'()*+-./;<=>?@[]^_`{|}",
        ] {
            assert!(is_list_token(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"a b",
            b"a\tb",
            b"a\r\n",
            b"\x7f",
            b"caf\xc3\xa9",
            b"a\"b",
            b"a\\b",
        ] {
            assert!(!is_list_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn log_text_escapes_quotes_controls_and_bytes_outside_ascii() {
        assert_eq!(log_text(b"a b/c:d"), "a b/c:d");
        assert_eq!(log_text(b"q\"q\\"), r#"q\"q\\"#);
        assert_eq!(log_text(b"\t\r\n\x00\x7f"), r"\t\r\n\x00\x7f");
        assert_eq!(log_text("caf\u{e9}".as_bytes()), r"caf\xc3\xa9");
        assert_eq!(log_text(b"caf\xe9"), r"caf\xe9");
    }
}
