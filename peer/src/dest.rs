//! Destinations: where a peer sends its copies, parsed from `host` + `port` or from an
//! `http://` / `https://` base URL, with the errors `vcl_init` reports.

use std::fmt;
use std::net::IpAddr;

use crate::escape;

/// The longest host name DNS allows (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_HOST_LEN: usize = 253;

/// The longest destination accepted (a base URL with its path). Request URLs are appended to
/// it; servers commonly refuse request lines over 8 KB.
pub const MAX_DESTINATION_LEN: usize = 8192;

/// At most this many bytes of an argument are quoted in a message.
const QUOTED_MAX: usize = 64;

/// An argument quoted in a message, escaped ([`escape::log_text`]), cut after
/// [`QUOTED_MAX`] bytes (a 100 000-byte host would otherwise fill the CLI answer).
pub(crate) fn quoted(s: &str) -> String {
    let bytes = s.as_bytes();
    if bytes.len() <= QUOTED_MAX {
        return format!("\"{}\"", escape::log_text(bytes));
    }
    format!(
        "\"{}...\" ({} bytes)",
        escape::log_text(&bytes[..QUOTED_MAX]),
        bytes.len()
    )
}

/// Whether `b` may appear as itself in a request-target (RFC 3986 `pchar`, `/`, `?`, and `%`
/// which is left alone: the URL may already be percent-encoded).
fn target_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// Appends `bytes` percent-encoding every byte a request-target may not carry: bytes >= 0x80
/// (RFC 9112 allows only ASCII; raw UTF-8 or Latin-1 makes strict parsers refuse the request),
/// and the ASCII characters RFC 3986 excludes (`"` `#` `<` `>` `[` `\` `]` `^` `` ` `` `{`
/// `|` `}`, and controls, which `Snapshot::validate` refuses anyway). `#` in particular would
/// otherwise be taken by the HTTP client as the start of a fragment and the rest dropped.
pub fn push_encoded_target(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if target_byte_ok(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// `HOST:PORT:ADDRESS:PORT`, a CURLOPT_CONNECT_TO entry: connections for `host`:`port` go to
/// `address` (in brackets when IPv6), same port.
pub fn connect_to_entry(host: &str, port: u16, address: IpAddr) -> String {
    match address {
        IpAddr::V6(a) => format!("{host}:{port}:[{a}]:{port}"),
        IpAddr::V4(a) => format!("{host}:{port}:{a}:{port}"),
    }
}

/// One place requests are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub https: bool,
    /// Host as it appears in a URL (IPv6 addresses in brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` (may be empty).
    pub base_path: String,
    /// Given as an `http://` or `https://` URL (an API), rather than host + port (a cache).
    pub is_url: bool,
    /// One address of `host` (discovered in DNS): connections go there while the URL, the
    /// `Host` header and TLS keep the name. `None`: libcurl resolves `host` itself.
    pub address: Option<IpAddr>,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_base(f)?;
        match self.address {
            Some(IpAddr::V6(a)) => write!(f, " ([{a}])"),
            Some(IpAddr::V4(a)) => write!(f, " ({a})"),
            None => Ok(()),
        }
    }
}

/// Why a destination is refused. Quoted values are cut (see `quoted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestError {
    NotUtf8,
    TooLong(String),
    PortWithUrl {
        port: i64,
        url: String,
    },
    Port(i64),
    /// Port 0 with a host: a host needs a port.
    NoPort,
    HostEmpty,
    HostTooLong(String),
    HostInvalid(String),
    Ipv6Invalid(String),
    Scheme,
    QueryFragmentSpaces,
    UserInfo,
    PortNotNumber(String),
    /// An error about the URL `url` (quoted).
    InUrl {
        url: String,
        error: Box<DestError>,
    },
}

impl fmt::Display for DestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestError::NotUtf8 => f.write_str(
                "host or URL is not valid UTF-8 (percent-encode the path of a base URL)",
            ),
            DestError::TooLong(q) => {
                write!(f, "{q} is too long (at most {MAX_DESTINATION_LEN} bytes)")
            }
            DestError::PortWithUrl { port, url } => write!(
                f,
                "port {port} given with URL \"{url}\" (put the port in the URL)"
            ),
            DestError::Port(port) => write!(f, "port {port} is outside 1..65535"),
            DestError::NoPort => f.write_str(
                "port 0 is outside 1..65535 (a host needs a port, or give an http:// or \
                 https:// URL)",
            ),
            DestError::HostEmpty => f.write_str("host is empty"),
            DestError::HostTooLong(q) => write!(
                f,
                "host {q} is too long (at most {MAX_HOST_LEN} bytes, the DNS limit)"
            ),
            DestError::HostInvalid(q) => write!(f, "host {q} is not valid"),
            DestError::Ipv6Invalid(q) => write!(f, "host {q} is not a valid IPv6 address"),
            DestError::Scheme => f.write_str("scheme must be http or https"),
            DestError::QueryFragmentSpaces => {
                f.write_str("may not have a query, fragment or spaces")
            }
            DestError::UserInfo => f.write_str("credentials in URLs are not supported"),
            DestError::PortNotNumber(q) => write!(f, "port {q} is not a number"),
            // "URL "x" may not have..." reads without a colon; the others take one.
            DestError::InUrl { url, error } => match **error {
                DestError::QueryFragmentSpaces => write!(f, "URL {url} {error}"),
                _ => write!(f, "URL {url}: {error}"),
            },
        }
    }
}

impl std::error::Error for DestError {}

fn check_port(port: i64) -> Result<u16, DestError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(DestError::Port(port))
}

fn check_host(host: &str) -> Result<String, DestError> {
    if host.is_empty() {
        return Err(DestError::HostEmpty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(DestError::HostTooLong(quoted(host)));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(host.to_string());
        }
        return Err(DestError::Ipv6Invalid(quoted(host)));
    }
    if host.contains(':') {
        // A bare IPv6 address: the URL needs brackets.
        if host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(format!("[{host}]"));
        }
        return Err(DestError::HostInvalid(quoted(host)));
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid {
        return Err(DestError::HostInvalid(quoted(host)));
    }
    Ok(host.to_string())
}

impl Destination {
    /// [`Destination::parse`] of a VCL argument given as bytes: hosts are ASCII, and a base
    /// path with other bytes must be given percent-encoded (a lossy conversion would change
    /// it).
    pub fn parse_bytes(destination: &[u8], port: i64) -> Result<Self, DestError> {
        let destination = std::str::from_utf8(destination).map_err(|_| DestError::NotUtf8)?;
        Self::parse(destination, port)
    }

    /// Parses `host` + `port`, or a base URL when `destination` contains `://` (then `port`
    /// must be 0). Errors name the offending argument.
    pub fn parse(destination: &str, port: i64) -> Result<Self, DestError> {
        let destination = destination.trim();
        if destination.len() > MAX_DESTINATION_LEN {
            return Err(DestError::TooLong(quoted(destination)));
        }
        if let Some((scheme, rest)) = destination.split_once("://") {
            if port != 0 {
                return Err(DestError::PortWithUrl {
                    port,
                    url: destination.to_string(),
                });
            }
            return Self::parse_url(scheme, rest, destination);
        }
        let host = check_host(destination)?;
        let port = if port == 0 {
            return Err(DestError::NoPort);
        } else {
            check_port(port)?
        };
        Ok(Destination {
            https: false,
            host,
            port,
            base_path: String::new(),
            is_url: false,
            address: None,
        })
    }

    fn parse_url(scheme: &str, rest: &str, whole: &str) -> Result<Self, DestError> {
        let in_url = |error| DestError::InUrl {
            url: quoted(whole),
            error: Box::new(error),
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(in_url(DestError::Scheme)),
        };
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(in_url(DestError::QueryFragmentSpaces));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(in_url(DestError::UserInfo));
        }
        let (host, port) = if let Some(end) = authority.find(']') {
            let (h, p) = authority.split_at(end + 1);
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host = check_host(host).map_err(in_url)?;
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => {
                let n: i64 = p
                    .parse()
                    .map_err(|_| in_url(DestError::PortNotNumber(quoted(p))))?;
                check_port(n).map_err(in_url)?
            }
        };
        let mut base_path = Vec::new();
        push_encoded_target(&mut base_path, path.trim_end_matches('/').as_bytes());
        // Only ASCII was pushed.
        let base_path = String::from_utf8_lossy(&base_path).into_owned();
        Ok(Destination {
            https,
            host,
            port,
            base_path,
            is_url: true,
            address: None,
        })
    }

    /// The same destination reached at `address` (one address its host resolves to).
    #[must_use]
    pub fn at(&self, address: IpAddr) -> Self {
        Destination {
            address: Some(address),
            ..self.clone()
        }
    }

    /// The host as a resolver takes it: IPv6 addresses without their brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The base URL: scheme, host, port and base path (never the address).
    fn write_base(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host, self.port, self.base_path
        )
    }

    /// The full URL of a request target (`req.url`) at this destination, the target
    /// percent-encoded where it has bytes a request-target may not carry.
    pub fn url_for(&self, target: &[u8]) -> Vec<u8> {
        let mut base = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_base(&mut base);
        let mut url = base.into_bytes();
        url.reserve(target.len() + 1);
        if !target.starts_with(b"/") {
            url.push(b'/');
        }
        push_encoded_target(&mut url, target);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        let d = Destination::parse("cache2.example.com", 8080).unwrap();
        assert_eq!(d.to_string(), "http://cache2.example.com:8080");
        assert_eq!(d.url_for(b"/a?b"), b"http://cache2.example.com:8080/a?b");
        assert_eq!(Destination::parse("::1", 80).unwrap().host, "[::1]");
    }

    #[test]
    fn bad_host_and_port() {
        assert!(Destination::parse("", 80)
            .unwrap_err()
            .to_string()
            .contains("host is empty"));
        assert!(Destination::parse("a b", 80).is_err());
        assert!(Destination::parse("h", 0)
            .unwrap_err()
            .to_string()
            .contains("port 0"));
        assert!(Destination::parse("h", 65536)
            .unwrap_err()
            .to_string()
            .contains("65536"));
        assert!(Destination::parse("h", -1).is_err());
    }

    #[test]
    fn host_longer_than_the_dns_limit_is_refused_with_a_short_message() {
        let ok = "a".repeat(MAX_HOST_LEN);
        assert!(Destination::parse(&ok, 80).is_ok());
        let huge = "a".repeat(100_000);
        for e in [
            Destination::parse(&"a".repeat(MAX_HOST_LEN + 1), 80)
                .unwrap_err()
                .to_string(),
            Destination::parse(&huge[..5000], 0)
                .unwrap_err()
                .to_string(),
            Destination::parse(&format!("http://{}/", &huge[..5000]), 0)
                .unwrap_err()
                .to_string(),
        ] {
            assert!(e.contains("is too long (at most 253 bytes"), "{e}");
            assert!(!e.contains("port"), "{e}");
            assert!(e.len() < 300, "{e}");
        }
    }

    #[test]
    fn destination_longer_than_8_kb_is_refused_before_the_port_check() {
        let huge = "a".repeat(100_000);
        let e = Destination::parse(&huge, 0).unwrap_err().to_string();
        assert!(
            e.contains("(100000 bytes) is too long (at most 8192 bytes)"),
            "{e}"
        );
        assert!(!e.contains("port"), "{e}");
        let e = Destination::parse(&format!("http://h/{huge}"), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 8192 bytes"), "{e}");
        // A host without a port says so.
        let e = Destination::parse("h", 0).unwrap_err().to_string();
        assert!(e.contains("a host needs a port"), "{e}");
    }

    #[test]
    fn base_path_is_percent_encoded() {
        let d = Destination::parse("http://h/v1/caf\u{e9} x{}", 0);
        assert!(d.is_err(), "spaces stay refused");
        let d = Destination::parse("http://h/v1/caf\u{e9}{}", 0).unwrap();
        assert_eq!(d.base_path, "/v1/caf%C3%A9%7B%7D");
        assert_eq!(d.url_for(b"/p"), b"http://h:80/v1/caf%C3%A9%7B%7D/p");
    }

    #[test]
    fn urls() {
        let d = Destination::parse("https://api.cdn.example/v1/", 0).unwrap();
        assert!(d.https);
        assert_eq!(d.port, 443);
        assert_eq!(
            d.url_for(b"/purge"),
            b"https://api.cdn.example:443/v1/purge"
        );
        let d = Destination::parse("http://[::1]:81", 0).unwrap();
        assert_eq!(d.to_string(), "http://[::1]:81");
        assert!(Destination::parse("ftp://x", 0).is_err());
        assert!(Destination::parse("http://", 0).is_err());
        assert!(Destination::parse("http://h:99999", 0).is_err());
        assert!(Destination::parse("http://h:x", 0).is_err());
        assert!(Destination::parse("http://h", 80).is_err());
        assert!(Destination::parse("http://u@h", 0).is_err());
    }

    #[test]
    fn an_address_is_shown_and_connected_to_but_the_url_keeps_the_name() {
        let d = Destination::parse("cache.example", 8080).unwrap();
        assert_eq!(d.address, None);
        let v4 = d.at("127.0.0.2".parse().unwrap());
        assert_eq!(v4.to_string(), "http://cache.example:8080 (127.0.0.2)");
        assert_eq!(v4.url_for(b"/a"), b"http://cache.example:8080/a");
        assert_eq!(
            connect_to_entry(&v4.host, v4.port, v4.address.unwrap()),
            "cache.example:8080:127.0.0.2:8080"
        );
        let v6 = Destination::parse("https://api.example/v1", 0)
            .unwrap()
            .at("::1".parse().unwrap());
        assert_eq!(v6.to_string(), "https://api.example:443/v1 ([::1])");
        assert_eq!(v6.url_for(b"/p"), b"https://api.example:443/v1/p");
        assert_eq!(
            connect_to_entry(&v6.host, v6.port, v6.address.unwrap()),
            "api.example:443:[::1]:443"
        );
        assert_ne!(v4, d, "an address makes another destination");
        assert_eq!(Destination::parse("::1", 80).unwrap().bare_host(), "::1");
    }
}
