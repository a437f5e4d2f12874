//! Text that saintmode hands to users: the `status()` JSON document, the `backend.list`
//! columns and the log lines. Plain string building, tested without varnishd. The log lines
//! that varnish-modules 0.25 writes are reproduced word for word (alerts grep for them);
//! what this module adds goes on lines of its own.

use std::fmt::{self, Write as _};

use crate::blacklist::{Crossing, Listed, Verdict};

/// A log line built on the stack (no allocation on the fetch path) while it fits in `N`
/// bytes; longer text (a long backend name) moves to the heap whole: the C-compatible lines
/// that alerts grep for are never cut.
pub struct Line<const N: usize = 256> {
    buf: [u8; N],
    len: usize,
    spilled: Option<String>,
}

impl<const N: usize> Line<N> {
    pub fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            spilled: None,
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.spilled {
            Some(s) => s,
            // Only whole `str`s were copied in.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(spilled) = &mut self.spilled {
            spilled.push_str(s);
        } else if s.len() <= N - self.len {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut spilled = String::with_capacity(2 * (self.len + s.len()));
            spilled.push_str(self.as_str());
            spilled.push_str(s);
            self.spilled = Some(spilled);
        }
        Ok(())
    }
}

/// Formats into a stack `Line`.
pub fn line(args: fmt::Arguments<'_>) -> Line {
    let mut l = Line::new();
    let _ = l.write_fmt(args);
    l
}

/// varnish-modules' line when a health check says no because of saintmode, or None.
pub fn veto_line(verdict: Verdict, backend: &str) -> Option<Line> {
    match verdict {
        Verdict::Healthy => None,
        Verdict::Listed => Some(line(format_args!(
            "saintmode: unhealthy: object denylisted for backend {backend}"
        ))),
        Verdict::OverThreshold => Some(line(format_args!(
            "saintmode: unhealthy: hit threshold for backend {backend}"
        ))),
    }
}

/// varnish-modules' line for `blacklist()`/`denylist()`, written whatever the outcome (the C
/// module lists with threshold 0 too, only its health check ignores the list).
pub fn listing_line(backend: &str, expires: f64) -> Line {
    line(format_args!(
        "saintmode: object put on denylist for backend {backend} for {expires:.2} seconds"
    ))
}

/// This module's line when `blacklist()` is called after an attempt that contacted no
/// backend (saintmode refused it, or a director found no healthy member): nothing listed.
pub fn no_backend_line(attempt: u32) -> Line {
    line(format_args!(
        "saintmode: nothing listed: no backend was contacted in attempt {attempt} of this fetch"
    ))
}

/// This module's own line after `listing_line`: which object, the count, what happened.
pub fn listing_detail(name: &str, listed: Listed, held: usize, threshold: usize) -> Line {
    match listed {
        Listed::Added => line(format_args!("saintmode: {name}: {held}/{threshold} held")),
        Listed::Refreshed => line(format_args!(
            "saintmode: {name}: {held}/{threshold} held, already listed (expiry extended)"
        )),
        Listed::Disabled => line(format_args!(
            "saintmode: {name}: threshold 0 (disabled), nothing stored"
        )),
        Listed::Full => line(format_args!(
            "saintmode: {name}: list full ({held} entries), nothing stored"
        )),
    }
}

/// This module's line when the live count crosses the threshold.
pub fn crossing_line(name: &str, backend: &str, crossing: Crossing, threshold: usize) -> Line {
    match crossing {
        Crossing::Reached => line(format_args!(
            "saintmode: {name}: threshold {threshold} reached for backend {backend}, \
             sick for all objects"
        )),
        Crossing::Cleared => line(format_args!(
            "saintmode: {name}: back under threshold {threshold} for backend {backend}"
        )),
    }
}

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
    fn log_lines_are_varnish_modules_0_25_word_for_word() {
        assert_eq!(
            listing_line("s1", 0.5).as_str(),
            "saintmode: object put on denylist for backend s1 for 0.50 seconds"
        );
        assert_eq!(
            veto_line(Verdict::Listed, "s1").map(|l| l.as_str().to_owned()),
            Some("saintmode: unhealthy: object denylisted for backend s1".to_owned())
        );
        assert_eq!(
            veto_line(Verdict::OverThreshold, "s1").map(|l| l.as_str().to_owned()),
            Some("saintmode: unhealthy: hit threshold for backend s1".to_owned())
        );
        assert!(veto_line(Verdict::Healthy, "s1").is_none());
    }

    /// A 300-byte backend name (VCL names have no length limit): the C-compatible lines
    /// come out whole, never cut at 256 bytes.
    #[test]
    fn long_backend_names_are_never_cut() {
        let be = "b".repeat(300);
        assert_eq!(
            listing_line(&be, 1.0).as_str(),
            format!("saintmode: object put on denylist for backend {be} for 1.00 seconds")
        );
        assert_eq!(
            veto_line(Verdict::Listed, &be).map(|l| l.as_str().to_owned()),
            Some(format!(
                "saintmode: unhealthy: object denylisted for backend {be}"
            ))
        );
        let l = crossing_line("sm", &be, Crossing::Reached, 10);
        assert!(l
            .as_str()
            .ends_with(&format!("backend {be}, sick for all objects")));
    }

    #[test]
    fn multibyte_text_past_the_stack_buffer_is_kept_whole() {
        let long = "é".repeat(200);
        let l = line(format_args!("{long}{long}"));
        assert_eq!(l.as_str(), format!("{long}{long}"));
        let short = line(format_args!("{}", "é".repeat(10)));
        assert_eq!(short.as_str(), "é".repeat(10));
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
