//! Destinations: where a peer sends its copies, parsed from `host` + `port` or from an
//! `http://` / `https://` base URL, with the errors `vcl_init` reports.

use std::fmt;

/// One place requests are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub https: bool,
    /// Host as it appears in a URL (IPv6 addresses in brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` (may be empty).
    pub base_path: String,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host, self.port, self.base_path
        )
    }
}

fn check_port(port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is outside 1..65535"))
}

fn check_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("host is empty".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(host.to_string());
        }
        return Err(format!("host \"{host}\" is not a valid IPv6 address"));
    }
    if host.contains(':') {
        // A bare IPv6 address: the URL needs brackets.
        if host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(format!("[{host}]"));
        }
        return Err(format!("host \"{host}\" is not valid"));
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid {
        return Err(format!("host \"{host}\" is not valid"));
    }
    Ok(host.to_string())
}

impl Destination {
    /// Parses `host` + `port`, or a base URL when `destination` contains `://` (then `port`
    /// must be 0). Errors name the offending argument.
    pub fn parse(destination: &str, port: i64) -> Result<Self, String> {
        let destination = destination.trim();
        if let Some((scheme, rest)) = destination.split_once("://") {
            if port != 0 {
                return Err(format!(
                    "port {port} given with URL \"{destination}\" (put the port in the URL)"
                ));
            }
            return Self::parse_url(scheme, rest, destination);
        }
        let host = check_host(destination)?;
        let port = check_port(port)?;
        Ok(Destination {
            https: false,
            host,
            port,
            base_path: String::new(),
        })
    }

    fn parse_url(scheme: &str, rest: &str, whole: &str) -> Result<Self, String> {
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(format!("URL \"{whole}\": scheme must be http or https")),
        };
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "URL \"{whole}\" may not have a query, fragment or spaces"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "URL \"{whole}\": credentials in URLs are not supported"
            ));
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
        let host = check_host(host).map_err(|e| format!("URL \"{whole}\": {e}"))?;
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
                    .map_err(|_| format!("URL \"{whole}\": port \"{p}\" is not a number"))?;
                check_port(n).map_err(|e| format!("URL \"{whole}\": {e}"))?
            }
        };
        let base_path = path.trim_end_matches('/').to_string();
        Ok(Destination {
            https,
            host,
            port,
            base_path,
        })
    }

    /// The full URL of a request target (`req.url`) at this destination.
    pub fn url_for(&self, target: &[u8]) -> Vec<u8> {
        let mut url = self.to_string().into_bytes();
        if !target.starts_with(b"/") {
            url.push(b'/');
        }
        url.extend_from_slice(target);
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
            .contains("host is empty"));
        assert!(Destination::parse("a b", 80).is_err());
        assert!(Destination::parse("h", 0).unwrap_err().contains("port 0"));
        assert!(Destination::parse("h", 65536)
            .unwrap_err()
            .contains("65536"));
        assert!(Destination::parse("h", -1).is_err());
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
}
