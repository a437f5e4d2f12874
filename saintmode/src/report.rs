//! Text that saintmode hands to users: the `status()` JSON document and the `backend.list`
//! columns. Plain string building, tested without varnishd.

use std::fmt::Write as _;

/// One saintmode object as reported by `status()` and `backend.list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The VCL name of the saintmode object (`new <name> = ...`).
    pub name: String,
    /// The VCL name of the wrapped backend or director.
    pub backend: String,
    /// Live (unexpired) entries.
    pub count: usize,
    pub threshold: usize,
    /// Health for no object in particular: wrapped backend healthy and count under threshold.
    pub healthy: bool,
    /// The wrapped backend's own health.
    pub backend_healthy: bool,
}

/// Appends `s` as a JSON string literal (quotes included), escaping what RFC 8259 requires.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"saintmode":[{"name":...,"backend":...,"count":N,"threshold":T},...]}`.
pub fn status_json(objects: &[Snapshot]) -> String {
    let mut out = String::from("{\"saintmode\":[");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_json_str(&mut out, &o.name);
        out.push_str(",\"backend\":");
        push_json_str(&mut out, &o.backend);
        let _ = write!(
            out,
            ",\"count\":{},\"threshold\":{}}}",
            o.count, o.threshold
        );
    }
    out.push_str("]}");
    out
}

fn health_word(healthy: bool) -> &'static str {
    if healthy {
        "healthy"
    } else {
        "sick"
    }
}

/// What the director's `list` callback writes for `backend.list`, by flags:
/// - plain: the `Probe` and `Health` columns, `count/threshold<TAB>health`;
/// - `-j`: the `probe_message` value, `[count, threshold, "health"]`;
/// - `-p`: a details block after the row: the wrapped backend, its own health, the count
///   and the threshold;
/// - `-j -p`: the `probe_details` value, a JSON object followed by `,\n` (Varnish writes
///   `"last_change"` right after it).
pub fn list_text(o: &Snapshot, details: bool, json: bool) -> String {
    let health = health_word(o.healthy);
    match (details, json) {
        (false, false) => format!("{}/{}\t{}", o.count, o.threshold, health),
        (false, true) => format!("[{}, {}, \"{}\"]", o.count, o.threshold, health),
        (true, false) => format!(
            "\n\tBackend\tHealth\tBlacklisted\tThreshold\n\t{}\t{}\t{}\t{}\n",
            o.backend.replace(['\t', '\n'], " "),
            health_word(o.backend_healthy),
            o.count,
            o.threshold
        ),
        (true, true) => {
            let mut out = String::from("{\"backend\": ");
            push_json_str(&mut out, &o.backend);
            let _ = writeln!(
                out,
                ", \"backend_health\": \"{}\", \"blacklisted\": {}, \"threshold\": {}}},",
                health_word(o.backend_healthy),
                o.count,
                o.threshold
            );
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, backend: &str) -> Snapshot {
        Snapshot {
            name: name.into(),
            backend: backend.into(),
            count: 3,
            threshold: 10,
            healthy: true,
            backend_healthy: true,
        }
    }

    #[test]
    fn empty_status_is_valid_json() {
        assert_eq!(status_json(&[]), r#"{"saintmode":[]}"#);
    }

    #[test]
    fn status_lists_objects_in_order() {
        let json = status_json(&[snap("sm1", "s1"), snap("sm2", "s2")]);
        assert_eq!(
            json,
            r#"{"saintmode":[{"name":"sm1","backend":"s1","count":3,"threshold":10},{"name":"sm2","backend":"s2","count":3,"threshold":10}]}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn list_columns() {
        let mut o = snap("sm1", "s1");
        assert_eq!(list_text(&o, false, false), "3/10\thealthy");
        o.healthy = false;
        assert_eq!(list_text(&o, false, true), r#"[3, 10, "sick"]"#);
        assert!(list_text(&o, true, false).contains("\ts1\thealthy\t3\t10\n"));
        assert_eq!(
            list_text(&o, true, true),
            "{\"backend\": \"s1\", \"backend_health\": \"healthy\", \"blacklisted\": 3, \
             \"threshold\": 10},\n"
        );
    }
}
