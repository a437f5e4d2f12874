//! What a peer is configured with, and how the arguments of `peer.peer()` (or of the default
//! peer's `peer.set*()` functions) become it: one set of defaults (the same as `vmod.vcc`'s,
//! checked by a test), one set of bounds, and the errors `vcl_init` reports, naming the
//! argument.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::gate::GateSettings;
use crate::policy::RetryPolicy;
pub use crate::snapshot::Credentials;

/// The largest per-attempt timeout accepted: libcurl takes milliseconds as a C `long`, and
/// anything longer than an hour is a mistake, not a choice.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest drain accepted. `vcl.discard` may wait for the drain on the CLI thread, and
/// the manager kills the child when a CLI command takes longer than `cli_timeout` (60 s by
/// default).
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `backoff`, `max_backoff` or `max_age` accepted: longer would not be a retry
/// policy but a leak (and far larger values overflow the clock arithmetic).
pub const MAX_POLICY_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bounds of the counts.
pub const MAX_QUEUE_SIZE: i64 = 10_000_000;
pub const MAX_CONCURRENCY: i64 = 64;
pub const MAX_ATTEMPTS: i64 = 1000;
/// Bounds of a destination queue in bytes: 1 KB to 64 GB.
pub const MIN_QUEUE_BYTES: i64 = 1024;
pub const MAX_QUEUE_BYTES: i64 = 64 << 30;

/// The arguments of `peer.peer()`, in plain types (durations in seconds, as VCL has them).
/// `Default` is the defaults of `vmod.vcc`; the default peer starts from them too.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerArgs {
    pub queue_size: i64,
    pub concurrency: i64,
    pub max_attempts: i64,
    pub backoff: f64,
    pub max_backoff: f64,
    pub max_age: f64,
    pub connect_timeout: f64,
    pub timeout: f64,
    pub tls_verify: bool,
    pub ca_file: String,
    pub drain_timeout: f64,
    pub copy_headers: bool,
    pub queue_bytes: i64,
    pub credentials: String,
    pub proxy: String,
    pub rate: f64,
    pub burst: i64,
    pub circuit_failures: i64,
    pub circuit_interval: f64,
}

impl Default for PeerArgs {
    fn default() -> Self {
        PeerArgs {
            queue_size: 1000,
            concurrency: 1,
            max_attempts: 5,
            backoff: 0.5,
            max_backoff: 30.0,
            max_age: 60.0,
            connect_timeout: 1.0,
            timeout: 5.0,
            tls_verify: true,
            ca_file: String::new(),
            drain_timeout: 5.0,
            copy_headers: true,
            queue_bytes: 64 << 20,
            credentials: "auto".into(),
            proxy: String::new(),
            rate: 0.0,
            burst: 1,
            circuit_failures: 0,
            circuit_interval: 5.0,
        }
    }
}

/// A peer's settings, fixed before its first use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub queue_size: usize,
    pub queue_bytes: usize,
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub drain_timeout: Duration,
    /// `None`: no proxy, whatever varnishd's environment says.
    pub proxy: Option<ProxyUrl>,
    pub copy_headers: bool,
    pub credentials: Credentials,
    /// Each destination's rate limit and circuit.
    pub gate: GateSettings,
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults are valid by construction (a unit test checks it).
        settings_from("default", &PeerArgs::default()).unwrap_or_else(|_| unreachable!())
    }
}

/// Why an argument was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// A count outside its range.
    Count {
        arg: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    Negative {
        arg: &'static str,
        secs: f64,
    },
    /// 0 where it cannot be: a libcurl timeout (0 means "wait forever" to libcurl), max_age.
    Zero {
        arg: &'static str,
        secs: f64,
        /// What 0 would do (`mean no timeout`).
        would: &'static str,
    },
    TooLong {
        arg: &'static str,
        secs: f64,
        max: Duration,
        why: &'static str,
    },
    CaFile {
        path: String,
        error: String,
    },
    Credentials(String),
    Proxy(String),
    /// Not 0 and outside `MIN_RATE..=MAX_RATE` (see `gate.rs`).
    Rate(f64),
}

impl ConfigError {
    /// The argument refused.
    pub fn arg(&self) -> &'static str {
        match self {
            ConfigError::Count { arg, .. }
            | ConfigError::Negative { arg, .. }
            | ConfigError::Zero { arg, .. }
            | ConfigError::TooLong { arg, .. } => arg,
            ConfigError::CaFile { .. } => "ca_file",
            ConfigError::Credentials(_) => "credentials",
            ConfigError::Proxy(_) => "proxy",
            ConfigError::Rate(_) => "rate",
        }
    }

    /// Why, without the argument's name: for messages that name it their own way
    /// (`peer.set_batch(): p: window: must not be negative (-1)`).
    pub fn why(&self) -> Why<'_> {
        Why(self)
    }
}

/// [`ConfigError::why`].
pub struct Why<'a>(&'a ConfigError);

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ConfigError::Count {
                value, min, max, ..
            } => write!(f, "must be between {min} and {max} ({value})"),
            ConfigError::Negative { secs, .. } => write!(f, "must not be negative ({secs})"),
            ConfigError::Zero { secs, would, .. } => {
                write!(f, "must be at least 1 ms (0 would {would}) ({secs})")
            }
            ConfigError::TooLong { secs, max, why, .. } => {
                write!(f, "must be at most {} ms{why} ({secs})", max.as_millis())
            }
            ConfigError::CaFile { path, error } => {
                write!(f, "\"{path}\" cannot be read: {error}")
            }
            ConfigError::Credentials(s) => write!(f, "must be auto, forward or drop (\"{s}\")"),
            ConfigError::Proxy(s) => write!(
                f,
                "\"{s}\" must be an http://, https://, socks4://, socks5:// or socks5h:// URL"
            ),
            ConfigError::Rate(r) => crate::gate::RateError(*r).fmt(f),
        }
    }
}

/// `<argument> <why>`, e.g. `queue_size must be between 1 and 10000000 (0)`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.arg(), self.why())
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn count(
    arg: &'static str,
    value: i64,
    min: i64,
    max: i64,
) -> Result<usize, ConfigError> {
    if (min..=max).contains(&value) {
        usize::try_from(value).map_err(|_| ConfigError::Count {
            arg,
            value,
            min,
            max,
        })
    } else {
        Err(ConfigError::Count {
            arg,
            value,
            min,
            max,
        })
    }
}

/// A duration argument: not negative, not NaN, at most `max` (`why` says why, if need be).
/// `zero_would` refuses 0 (below 1 ms), saying what it would do; `None` accepts it.
pub fn duration(
    arg: &'static str,
    secs: f64,
    max: Duration,
    zero_would: Option<&'static str>,
    why: &'static str,
) -> Result<Duration, ConfigError> {
    if secs.is_nan() || secs < 0.0 {
        return Err(ConfigError::Negative { arg, secs });
    }
    if secs > max.as_secs_f64() {
        return Err(ConfigError::TooLong {
            arg,
            secs,
            max,
            why,
        });
    }
    let d = Duration::try_from_secs_f64(secs).map_err(|_| ConfigError::TooLong {
        arg,
        secs,
        max,
        why,
    })?;
    // Below a millisecond, libcurl (which counts in ms) would read 0.
    if let Some(would) = zero_would.filter(|_| d < Duration::from_millis(1)) {
        return Err(ConfigError::Zero { arg, secs, would });
    }
    Ok(d)
}

/// What a timeout of 0 would be to libcurl.
pub(crate) const NO_TIMEOUT: &str = "mean no timeout";

fn timeout(arg: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    duration(arg, secs, MAX_TIMEOUT, Some(NO_TIMEOUT), "")
}

/// A drain timeout: 0 (give up what is queued at once) up to [`MAX_DRAIN_TIMEOUT`].
pub fn drain_timeout(arg: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    duration(
        arg,
        secs,
        MAX_DRAIN_TIMEOUT,
        None,
        " (vcl.discard waits for the drain on the CLI, which must answer within cli_timeout)",
    )
}

/// A proxy URL. It may carry `user:password@`: its `Debug` hides that, like every message
/// that shows it ([`redact_userinfo`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(String);

impl ProxyUrl {
    /// The URL as given, credentials included: for libcurl only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_userinfo(&self.0))
    }
}

/// `s` with the `user:password` of its authority replaced by `***`: safe for a log line or
/// the CLI.
pub fn redact_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let rest = &s[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..scheme_end], &rest[at..]),
        None => s.to_string(),
    }
}

fn proxy(s: &str) -> Result<Option<ProxyUrl>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    // Compared as bytes: a string slice at a scheme's length may cut a UTF-8 character.
    let scheme_ok = [
        "http://",
        "https://",
        "socks4://",
        "socks5://",
        "socks5h://",
    ]
    .iter()
    .any(|p| s.len() > p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()));
    if !scheme_ok || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Proxy(redact_userinfo(s)));
    }
    Ok(Some(ProxyUrl(s.to_string())))
}

/// Checks every argument and makes the settings of the peer `name`.
pub fn settings_from(name: &str, a: &PeerArgs) -> Result<Settings, ConfigError> {
    let policy_duration =
        |arg, secs, zero_would| duration(arg, secs, MAX_POLICY_DURATION, zero_would, "");
    let ca_file = if a.ca_file.is_empty() {
        None
    } else {
        if let Err(e) = std::fs::File::open(&a.ca_file) {
            return Err(ConfigError::CaFile {
                path: a.ca_file.clone(),
                error: e.to_string(),
            });
        }
        Some(PathBuf::from(&a.ca_file))
    };
    let max_attempts = count("max_attempts", a.max_attempts, 1, MAX_ATTEMPTS)?;
    let (connect_timeout, timeout) = (
        timeout("connect_timeout", a.connect_timeout)?,
        timeout("timeout", a.timeout)?,
    );
    let max_backoff = policy_duration("max_backoff", a.max_backoff, None)?;
    Ok(Settings {
        name: name.to_string(),
        queue_size: count("queue_size", a.queue_size, 1, MAX_QUEUE_SIZE)?,
        queue_bytes: count(
            "queue_bytes",
            a.queue_bytes,
            MIN_QUEUE_BYTES,
            MAX_QUEUE_BYTES,
        )?,
        concurrency: count("concurrency", a.concurrency, 1, MAX_CONCURRENCY)?,
        policy: RetryPolicy {
            max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
            backoff: policy_duration("backoff", a.backoff, None)?,
            max_backoff,
            max_age: policy_duration("max_age", a.max_age, Some("expire every request"))?,
        },
        connect_timeout,
        timeout,
        tls_verify: a.tls_verify,
        ca_file,
        drain_timeout: drain_timeout("drain_timeout", a.drain_timeout)?,
        proxy: proxy(&a.proxy)?,
        copy_headers: a.copy_headers,
        credentials: Credentials::parse(&a.credentials)
            .ok_or_else(|| ConfigError::Credentials(a.credentials.clone()))?,
        gate: GateSettings::from_args(a, max_backoff, connect_timeout + timeout)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `name=value` defaults of `$Object peer(...)` in vmod.vcc.
    fn vcc_defaults() -> Vec<(String, String)> {
        let vcc = include_str!("../vmod.vcc");
        let line = vcc
            .lines()
            .find(|l| l.starts_with("$Object peer("))
            .expect("$Object peer in vmod.vcc");
        let inner = &line["$Object peer(".len()..line.rfind(')').expect(")")];
        // ENUM {a, b, c} holds commas: drop the braces' content first.
        let mut flat = String::new();
        let mut depth = 0;
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ if depth == 0 => flat.push(c),
                _ => {}
            }
        }
        flat.split(',')
            .filter_map(|arg| {
                let (decl, value) = arg.split_once('=')?;
                let name = decl.split_whitespace().last()?.to_string();
                Some((name, value.trim().trim_matches('"').to_string()))
            })
            .collect()
    }

    #[test]
    fn defaults_are_the_ones_vmod_vcc_documents() {
        let d = PeerArgs::default();
        let code: Vec<(&str, String)> = vec![
            ("queue_size", d.queue_size.to_string()),
            ("concurrency", d.concurrency.to_string()),
            ("max_attempts", d.max_attempts.to_string()),
            ("backoff", d.backoff.to_string()),
            ("max_backoff", d.max_backoff.to_string()),
            ("max_age", d.max_age.to_string()),
            ("connect_timeout", d.connect_timeout.to_string()),
            ("timeout", d.timeout.to_string()),
            ("tls_verify", u8::from(d.tls_verify).to_string()),
            ("ca_file", d.ca_file.clone()),
            ("drain_timeout", d.drain_timeout.to_string()),
            ("copy_headers", u8::from(d.copy_headers).to_string()),
            ("queue_bytes", d.queue_bytes.to_string()),
            ("credentials", d.credentials.clone()),
            ("proxy", d.proxy.clone()),
            ("rate", d.rate.to_string()),
            ("burst", d.burst.to_string()),
            ("circuit_failures", d.circuit_failures.to_string()),
            ("circuit_interval", d.circuit_interval.to_string()),
        ];
        let vcc = vcc_defaults();
        assert_eq!(vcc.len(), code.len(), "{vcc:?}");
        for (name, value) in code {
            let documented = vcc.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            assert_eq!(documented.as_deref(), Some(value.as_str()), "{name}");
        }
        // The default peer's timeout functions document the same values in ms.
        let text = include_str!("../vmod.vcc")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (function, secs) in [
            ("set_connect_timeout", d.connect_timeout),
            ("set_timeout", d.timeout),
            ("set_drain_timeout", d.drain_timeout),
        ] {
            let section = text
                .split("$Function VOID ")
                .find(|s| s.starts_with(function))
                .expect(function);
            let documented = format!("(default {}", secs * 1000.0);
            assert!(section.contains(&documented), "{function}: {documented}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = settings_from("x", &PeerArgs::default()).unwrap();
        assert_eq!(s.policy, RetryPolicy::default());
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.proxy, None);
        assert_eq!(s.credentials, Credentials::Auto);
        assert_eq!(Settings::default().queue_size, 1000);
    }

    fn refused(change: impl FnOnce(&mut PeerArgs)) -> String {
        let mut a = PeerArgs::default();
        change(&mut a);
        settings_from("x", &a).unwrap_err().to_string()
    }

    #[test]
    fn max_age_zero_is_refused_because_it_would_expire_everything() {
        let e = refused(|a| a.max_age = 0.0);
        assert!(
            e.starts_with("max_age must be at least 1 ms (0 would expire"),
            "{e}"
        );
    }

    #[test]
    fn absurd_durations_are_refused_naming_the_argument() {
        for (arg, e) in [
            ("backoff", refused(|a| a.backoff = 1e300)),
            ("max_backoff", refused(|a| a.max_backoff = 1e20)),
            ("max_age", refused(|a| a.max_age = f64::INFINITY)),
            ("timeout", refused(|a| a.timeout = 1e12)),
            ("connect_timeout", refused(|a| a.connect_timeout = 7200.0)),
            ("drain_timeout", refused(|a| a.drain_timeout = 31.0)),
        ] {
            assert!(e.starts_with(&format!("{arg} must be at most")), "{e}");
        }
        let e = refused(|a| a.backoff = f64::NAN);
        assert!(e.starts_with("backoff must not be negative"), "{e}");
        let e = refused(|a| a.max_backoff = -1.0);
        assert!(e.starts_with("max_backoff must not be negative"), "{e}");
    }

    #[test]
    fn zero_timeouts_are_refused_because_libcurl_would_wait_forever() {
        assert_eq!(
            refused(|a| a.timeout = 0.0),
            "timeout must be at least 1 ms (0 would mean no timeout) (0)"
        );
        assert!(refused(|a| a.connect_timeout = 0.0004).starts_with("connect_timeout must be"));
        assert!(settings_from(
            "x",
            &PeerArgs {
                drain_timeout: 0.0,
                ..PeerArgs::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn counts_credentials_and_proxy_are_checked() {
        assert_eq!(
            refused(|a| a.queue_size = 0),
            "queue_size must be between 1 and 10000000 (0)"
        );
        assert!(refused(|a| a.concurrency = 65).starts_with("concurrency must be between 1 and 64"));
        assert!(refused(|a| a.queue_bytes = 10).starts_with("queue_bytes must be between 1024"));
        assert!(refused(|a| a.credentials = "all".into()).starts_with("credentials must be"));
        assert!(refused(|a| a.proxy = "127.0.0.1:3128".into()).starts_with("proxy \""));
        assert!(refused(|a| a.ca_file = "/nonexistent/ca.pem".into()).starts_with("ca_file"));
        let s = settings_from(
            "x",
            &PeerArgs {
                proxy: "http://127.0.0.1:3128".into(),
                ..PeerArgs::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.proxy.as_ref().map(ProxyUrl::as_str),
            Some("http://127.0.0.1:3128")
        );
    }

    #[test]
    fn a_proxy_with_non_ascii_bytes_is_refused_without_a_panic() {
        for bad in [
            "http:/\u{e9}\u{e9}",
            "\u{e9}",
            "socks5\u{e9}://x",
            "h\u{1f600}tp://x",
        ] {
            assert!(
                refused(|a| a.proxy = bad.into()).starts_with("proxy \""),
                "{bad}"
            );
        }
    }

    #[test]
    fn proxy_credentials_never_show_in_errors_or_debug() {
        let e = refused(|a| a.proxy = "ftp://alice:s3cret@proxy.example:21".into());
        assert!(!e.contains("s3cret") && !e.contains("alice"), "{e}");
        assert!(e.contains("ftp://***@proxy.example:21"), "{e}");
        let s = settings_from(
            "x",
            &PeerArgs {
                proxy: "http://alice:s3cret@127.0.0.1:3128/p@th".into(),
                ..PeerArgs::default()
            },
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("http://***@127.0.0.1:3128/p@th"), "{shown}");
        assert_eq!(
            s.proxy.as_ref().map(ProxyUrl::as_str),
            Some("http://alice:s3cret@127.0.0.1:3128/p@th")
        );
        assert_eq!(redact_userinfo("no scheme@x"), "no scheme@x");
        assert_eq!(redact_userinfo("http://h/a@b"), "http://h/a@b");
    }
}
