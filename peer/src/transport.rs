//! The libcurl transport: one multi + easy handle per sender thread, so the connection to
//! the destination is kept alive and reused; per-attempt timeouts; TLS verification; a
//! transfer in progress is abandoned shortly after the drain deadline.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use curl::easy::{Easy2, Handler, HttpVersion, List, WriteError};
use curl::multi::Multi;

use crate::config::Settings;
use crate::dest::Destination;
use crate::ffi::HeaderBlock;
use crate::h1::H1Client;
use crate::policy::{parse_retry_after, Failure, Outcome};
use crate::sender::{Control, Transport, TransportFactory};
use crate::snapshot::{Body, Prepared};
use crate::worker::ABORT_CHECK;

/// Makes the transport of each sender thread: the built-in HTTP/1.1 client for plain HTTP
/// to an address without a proxy ([`crate::h1`]), libcurl for the rest.
#[derive(Debug, Default)]
pub struct HttpFactory;

impl TransportFactory for HttpFactory {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(Http {
            direct: H1Client::default(),
            curl: CurlTransport::new(),
        })
    }
}

/// Makes a [`CurlTransport`] per sender thread: libcurl for every destination.
#[derive(Debug, Default)]
pub struct CurlFactory;

impl TransportFactory for CurlFactory {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(CurlTransport::new())
    }
}

/// One sender thread's two clients.
struct Http {
    direct: H1Client,
    curl: CurlTransport,
}

impl Transport for Http {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        settings: &Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        match crate::h1::direct_address(dest, settings) {
            Some(addr) => match self.direct.send(addr, dest, req, settings, control) {
                Ok(answer) => {
                    status_outcome(u32::from(answer.status), answer.retry_after.as_deref())
                }
                Err(outcome) => outcome,
            },
            None => self.curl.send(dest, req, settings, control),
        }
    }
}

/// Discards the response body; keeps the response's `Retry-After`.
#[derive(Default)]
struct Sink {
    retry_after: Option<Vec<u8>>,
}

impl Handler for Sink {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        Ok(data.len())
    }

    fn header(&mut self, line: &[u8]) -> bool {
        if line.starts_with(b"HTTP/") {
            // A new response (after a 1xx): its headers replace the previous ones.
            self.retry_after = None;
        } else if let Some((name, value)) = crate::snapshot::split_header_line(line) {
            if name.eq_ignore_ascii_case(b"retry-after") {
                self.retry_after = Some(value.trim_ascii().to_vec());
            }
        }
        true
    }
}

/// A multi handle driving one easy handle at a time: the multi handle keeps the
/// connection cache (keep-alive across requests), and its wait loop lets a transfer be
/// abandoned within [`ABORT_CHECK`] of the drain deadline.
///
/// The handle is not reset between transfers: the options that follow the destination and
/// the settings are set when they change ([`Fixed`]), and every transfer sets all the others
/// (URL, method, body or none, headers, HTTP version). A transfer that cannot be set up
/// loses its handle, so that no half-set handle is used again.
pub struct CurlTransport {
    // Field order is drop order: the handles go before the header block and body they may
    // point to.
    multi: Multi,
    easy: Option<Easy2<Sink>>,
    /// The options the handle was set up with; `None` for a new handle.
    fixed: Option<Fixed>,
    headers: HeaderBlock,
    /// The body libcurl reads from (CURLOPT_POSTFIELDS does not copy it): kept until the
    /// handle points to another body or none.
    body: Option<Body>,
}

/// The options of a handle that follow the destination and the settings, not the request.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    proxy: String,
    /// A discovered address, with the host and port it stands for (CURLOPT_CONNECT_TO).
    address: Option<(IpAddr, String, u16)>,
    connect_timeout: Duration,
    timeout: Duration,
    tls_verify: bool,
    ca_file: Option<std::path::PathBuf>,
}

/// Never a proxy from varnishd's environment (`https_proxy` would route API tokens through
/// whatever it names): "" disables them; only the `proxy` argument sets one.
fn proxy_of(settings: &Settings) -> &str {
    settings
        .proxy
        .as_ref()
        .map_or("", crate::config::ProxyUrl::as_str)
}

impl Fixed {
    fn of(dest: &Destination, settings: &Settings) -> Self {
        Fixed {
            proxy: proxy_of(settings).to_owned(),
            address: dest.address.map(|a| (a, dest.host.clone(), dest.port)),
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            tls_verify: settings.tls_verify,
            ca_file: settings.ca_file.clone(),
        }
    }

    /// Whether a handle set up with `self` needs no change for `dest` and `settings`
    /// (compared in place, without building a value: this runs for every transfer).
    fn fits(&self, dest: &Destination, settings: &Settings) -> bool {
        self.proxy == proxy_of(settings)
            && self.connect_timeout == settings.connect_timeout
            && self.timeout == settings.timeout
            && self.tls_verify == settings.tls_verify
            && self.ca_file == settings.ca_file
            && match (&self.address, dest.address) {
                (None, None) => true,
                (Some((a, host, port)), Some(b)) => {
                    *a == b && *host == dest.host && *port == dest.port
                }
                _ => false,
            }
    }

    fn apply(&self, easy: &mut Easy2<Sink>) -> Result<(), curl::Error> {
        easy.signal(false)?;
        easy.proxy(&self.proxy)?;
        // A discovered address: connect there, while the URL (hence `Host`, SNI and the
        // certificate check) keeps the name.
        if let Some((address, host, port)) = &self.address {
            let mut list = List::new();
            list.append(&crate::dest::connect_to_entry(host, *port, *address))?;
            easy.connect_to(list)?;
        }
        // Send the path as queued: libcurl would otherwise resolve "." and ".." segments,
        // and a copied `PURGE /a/../b` would purge `/b` at the destination.
        easy.path_as_is(true)?;
        easy.connect_timeout(self.connect_timeout)?;
        easy.timeout(self.timeout)?;
        easy.ssl_verify_peer(self.tls_verify)?;
        easy.ssl_verify_host(self.tls_verify)?;
        if let Some(ca) = &self.ca_file {
            easy.cainfo(ca)?;
        }
        Ok(())
    }
}

impl CurlTransport {
    fn new() -> Self {
        CurlTransport {
            multi: Multi::new(),
            easy: None,
            fixed: None,
            headers: HeaderBlock::default(),
            body: None,
        }
    }

    /// Sets the handle up for `req`: [`Fixed`] when it changed, then everything that belongs
    /// to the request.
    fn configure(
        &mut self,
        easy: &mut Easy2<Sink>,
        req: &Prepared,
        dest: &Destination,
        settings: &Settings,
    ) -> Result<(), curl::Error> {
        if !self.fixed.as_ref().is_some_and(|f| f.fits(dest, settings)) {
            if self.fixed.take().is_some() {
                // Some options (a CA file, a connect-to list) cannot be set back but by a
                // reset: a handle whose settings changed starts from libcurl's defaults.
                easy.reset();
                // A reset handle points to no body.
                self.body = None;
            }
            let fixed = Fixed::of(dest, settings);
            fixed.apply(easy)?;
            self.fixed = Some(fixed);
        }
        easy.get_mut().retry_after = None;
        crate::ffi::curl_set_url(easy, &req.url)?;
        // A HEAD goes without a body, as before this handle was kept: with one, libcurl
        // would send it and then wait for the answer's body, which a HEAD answer never has.
        let head = req.method.eq_ignore_ascii_case(b"HEAD");
        match &req.body {
            Some(req_body) if !head => {
                easy.nobody(false)?;
                easy.post(true)?;
                // SAFETY: the Arc is kept in `self.body` (below) until the handle points to
                // another body or none, so libcurl reads live, unchanged memory.
                unsafe { crate::ffi::curl_set_post_body(easy, req_body) }?;
                self.body = Some(Arc::clone(req_body));
            }
            _ => {
                // The body goes first: setting CURLOPT_POSTFIELDS makes the method POST,
                // which `nobody` / `get` below then set back.
                if self.body.is_some() {
                    crate::ffi::curl_clear_post_body(easy)?;
                    // The handle no longer points to it.
                    self.body = None;
                }
                if head {
                    easy.nobody(true)?;
                } else {
                    easy.nobody(false)?;
                    easy.get(true)?;
                }
            }
        }
        crate::ffi::curl_set_method(easy, &req.method)?;
        self.headers.set(easy, &req.header_lines)?;
        easy.http_version(if req.http10 {
            HttpVersion::V10
        } else {
            HttpVersion::V11
        })?;
        Ok(())
    }
}

fn classify(e: &curl::Error) -> Outcome {
    let tls = e.is_peer_failed_verification()
        || e.is_ssl_cacert()
        || e.is_ssl_cacert_badfile()
        || e.is_ssl_certproblem()
        || e.is_ssl_issuer_error();
    if tls {
        Outcome::Failed(Failure::Tls(e.to_string()))
    } else if e.is_url_malformed() || e.is_unsupported_protocol() || e.is_bad_function_argument() {
        Outcome::Failed(Failure::BadRequest(e.to_string()))
    } else if e.is_couldnt_resolve_host() {
        Outcome::Failed(Failure::Dns(e.to_string()))
    } else {
        Outcome::Failed(Failure::Network(e.to_string()))
    }
}

/// The outcome of an answer: a 429 or 503 with a usable `Retry-After` says when to retry.
fn status_outcome(code: u32, retry_after: Option<&[u8]>) -> Outcome {
    let status = u16::try_from(code).unwrap_or(0);
    match retry_after {
        Some(value) if status == 429 || status == 503 => {
            match parse_retry_after(value, SystemTime::now()) {
                Some(retry_after) => Outcome::Throttled {
                    status,
                    retry_after,
                },
                None => Outcome::Status(status),
            }
        }
        _ => Outcome::Status(status),
    }
}

impl Transport for CurlTransport {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        settings: &Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        let mut easy = self.easy.take().unwrap_or_else(|| {
            self.fixed = None;
            Easy2::new(Sink::default())
        });
        if let Err(e) = self.configure(&mut easy, req, dest, settings) {
            // Dropped half set up (it may point to a header block being refilled); the next
            // transfer makes a new one.
            drop(easy);
            self.fixed = None;
            return Outcome::Failed(Failure::BadRequest(format!(
                "cannot set up the transfer: {e}"
            )));
        }
        let handle = match self.multi.add2(easy) {
            Ok(handle) => handle,
            Err(e) => {
                return Outcome::Failed(Failure::Network(format!("cannot start the transfer: {e}")))
            }
        };
        let mut result = None;
        let mut stopped = None;
        while result.is_none() && stopped.is_none() {
            if let Err(e) = self.multi.perform() {
                stopped = Some(Outcome::Failed(Failure::Network(e.to_string())));
                break;
            }
            self.multi.messages(|m| {
                if let Some(r) = m.result_for2(&handle) {
                    result = Some(r);
                }
            });
            if result.is_some() {
                break;
            }
            if control.aborted() {
                stopped = Some(Outcome::Failed(Failure::Shutdown));
            } else if let Err(e) = self.multi.wait(&mut [], ABORT_CHECK) {
                stopped = Some(Outcome::Failed(Failure::Network(e.to_string())));
            }
        }
        // Removing the handle ends an unfinished transfer; a failed removal loses the handle
        // (a new one is made next time).
        let easy = self.multi.remove2(handle).ok();
        let outcome = match (result, stopped) {
            (Some(Ok(())), _) => match easy.as_ref().map(|e| (e.response_code(), e.get_ref())) {
                Some((Ok(code), sink)) => status_outcome(code, sink.retry_after.as_deref()),
                Some((Err(e), _)) => Outcome::Failed(Failure::Network(e.to_string())),
                None => Outcome::Failed(Failure::Network("transfer handle lost".into())),
            },
            (Some(Err(e)), _) => classify(&e),
            (None, Some(outcome)) => outcome,
            (None, None) => {
                Outcome::Failed(Failure::Network("transfer ended without a result".into()))
            }
        };
        self.easy = easy;
        outcome
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::{Parts, Template};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Length of the first complete request in `buf` (headers + Content-Length body).
    pub(crate) fn request_len(buf: &[u8]) -> Option<usize> {
        let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        let body = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        (buf.len() >= head + body).then_some(head + body)
    }

    /// `method` `url` with no header, rendered for `dest` by the default template.
    pub(crate) fn request(method: &[u8], url: &[u8], dest: &Destination) -> Prepared {
        Template::default().render(
            &Parts {
                method: method.to_vec(),
                url: url.to_vec(),
                ..Parts::default()
            }
            .into(),
            dest,
        )
    }

    /// Serves `answers` requests on one connection with `status`; returns the raw bytes.
    fn one_connection(status: u16, answers: usize) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        one_connection_at("127.0.0.1:0", status, answers)
    }

    /// [`one_connection`] on `addr`. A HEAD is answered with a `Content-Length` and no body,
    /// as servers do.
    fn one_connection_at(
        addr: &str,
        status: u16,
        answers: usize,
    ) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let (mut seen, mut pending) = (Vec::new(), Vec::new());
            let mut buf = [0u8; 4096];
            for _ in 0..answers {
                let len = loop {
                    if let Some(len) = request_len(&pending) {
                        break len;
                    }
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "connection closed early");
                    pending.extend_from_slice(&buf[..n]);
                };
                let head = pending.starts_with(b"HEAD ");
                seen.extend(pending.drain(..len));
                let body = if head { "" } else { "ok" };
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{body}");
                conn.write_all(resp.as_bytes()).unwrap();
            }
            seen
        });
        (port, handle)
    }

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn snapshot_goes_on_the_wire_byte_exact_on_one_connection() {
        let (port, server) = one_connection(200, 2);
        let dest = Destination::parse("127.0.0.1", i64::from(port)).unwrap();
        let template = Template {
            copy_headers: true,
            marker: "me".into(),
            ..Template::default()
        };
        let snap = Parts {
            method: b"PURGE".to_vec(),
            url: b"/a?b=1".to_vec(),
            http10: false,
            h2: false,
            headers: [
                (&b"Host"[..], &b"www.example.com"[..]),
                (b"X-Dup", b"1"),
                (b"X-Bin", &[b'c', b'a', b'f', 0xe9]),
                (b"X-Dup", b"2"),
                (b"X-Empty", b""),
            ]
            .into_iter()
            .collect(),
            body: None,
        };
        let mut with_body = snap.clone();
        with_body.method = b"POST".to_vec();
        with_body.body = Some(Arc::new(b"body!".to_vec()));
        let mut transport = CurlFactory.create();
        let control = Arc::new(Control::default());
        for s in [snap, with_body] {
            let prepared = template.render(&s.into(), &dest);
            assert_eq!(
                transport.send(&dest, &prepared, &settings(), &control),
                Outcome::Status(200)
            );
        }
        let wire = server.join().unwrap();
        let expected = [
            &b"PURGE /a?b=1 HTTP/1.1\r\nHost: www.example.com\r\nX-Dup: 1\r\nX-Bin: caf\xe9\r\n"[..],
            b"X-Dup: 2\r\nX-Empty:\r\nX-Peer-Forwarded: me\r\n\r\n",
            b"POST /a?b=1 HTTP/1.1\r\nHost: www.example.com\r\nX-Dup: 1\r\nX-Bin: caf\xe9\r\n",
            b"X-Dup: 2\r\nX-Empty:\r\nX-Peer-Forwarded: me\r\nContent-Length: 5\r\n\r\nbody!",
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&wire),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(wire, expected);
    }

    /// The handle is not reset between transfers: what one request set (a body, HEAD,
    /// headers, HTTP/1.0) must not leak into the next one on the same handle.
    #[test]
    fn no_option_of_a_request_leaks_into_the_next_on_the_same_handle() {
        let (port, server) = one_connection(200, 7);
        let dest = Destination::parse("127.0.0.1", i64::from(port)).unwrap();
        let template = Template {
            copy_headers: true,
            marker: "m".into(),
            ..Template::default()
        };
        let req = |method: &[u8], body: Option<&[u8]>, headers: &[(&[u8], &[u8])], http10| {
            template.render(
                &Parts {
                    method: method.to_vec(),
                    url: b"/r".to_vec(),
                    http10,
                    body: body.map(|b| Arc::new(b.to_vec())),
                    headers: headers.iter().copied().collect(),
                    ..Parts::default()
                }
                .into(),
                &dest,
            )
        };
        type Headers<'a> = &'a [(&'a [u8], &'a [u8])];
        let two: Headers = &[(b"X-A", b"1"), (b"X-B", b"2")];
        let one: Headers = &[(b"X-C", b"3")];
        let mut transport = CurlFactory.create();
        let control = Arc::new(Control::default());
        for prepared in [
            req(b"POST", Some(b"one"), two, false),
            req(b"PURGE", None, one, false),
            req(b"PUT", Some(b"three"), &[], false),
            req(b"HEAD", None, two, false),
            req(b"BAN", None, one, true),
            // A HEAD with a body (queue_req_body on a HEAD): sent without it.
            req(b"HEAD", Some(b"never"), &[], false),
            req(b"GET", None, &[], false),
        ] {
            assert_eq!(
                transport.send(&dest, &prepared, &settings(), &control),
                Outcome::Status(200)
            );
        }
        let wire = String::from_utf8(server.join().unwrap()).unwrap();
        let h = format!("Host: 127.0.0.1:{port}\r\n");
        let m = "X-Peer-Forwarded: m\r\n";
        let expected = [
            format!("POST /r HTTP/1.1\r\n{h}X-A: 1\r\nX-B: 2\r\n{m}Content-Length: 3\r\n\r\none"),
            format!("PURGE /r HTTP/1.1\r\n{h}X-C: 3\r\n{m}\r\n"),
            format!("PUT /r HTTP/1.1\r\n{h}{m}Content-Length: 5\r\n\r\nthree"),
            format!("HEAD /r HTTP/1.1\r\n{h}X-A: 1\r\nX-B: 2\r\n{m}\r\n"),
            format!("BAN /r HTTP/1.0\r\n{h}X-C: 3\r\n{m}\r\n"),
            format!("HEAD /r HTTP/1.1\r\n{h}{m}\r\n"),
            format!("GET /r HTTP/1.1\r\n{h}{m}\r\n"),
        ]
        .concat();
        assert_eq!(wire, expected);
    }

    /// A destination that changes (another address, no address, other settings) gets its
    /// options set again on the same handle.
    #[test]
    fn a_new_address_or_new_settings_reconfigure_the_handle() {
        let (port, server_a) = one_connection(200, 1);
        // The same port on another loopback address: a stale connect-to entry for the name
        // at that port would still reach 127.0.0.1 (closed by then: refused).
        let (_, server_b) = one_connection_at(&format!("127.0.0.2:{port}"), 204, 1);
        let (port_c, server_c) = one_connection(202, 2);
        let at = |ip: &str| {
            Destination::parse("peer-test.invalid", i64::from(port))
                .unwrap()
                .at(ip.parse().unwrap())
        };
        let plain = Destination::parse("127.0.0.1", i64::from(port_c)).unwrap();
        let mut transport = CurlFactory.create();
        let control = Arc::new(Control::default());
        let (a, b) = (at("127.0.0.1"), at("127.0.0.2"));
        for (dest, settings, status) in [
            (&a, settings(), 200),
            (&b, settings(), 204),
            (&plain, settings(), 202),
            (
                &plain,
                Settings {
                    timeout: Duration::from_secs(7),
                    ..settings()
                },
                202,
            ),
        ] {
            assert_eq!(
                transport.send(dest, &request(b"PURGE", b"/x", dest), &settings, &control),
                Outcome::Status(status)
            );
        }
        server_a.join().unwrap();
        server_b.join().unwrap();
        server_c.join().unwrap();
    }

    #[test]
    fn a_discovered_address_is_connected_to_while_the_url_keeps_the_name() {
        let (port, server) = one_connection(200, 1);
        // A name nothing resolves: only the address can be connected to.
        let dest = Destination::parse("peer-test.invalid", i64::from(port))
            .unwrap()
            .at("127.0.0.1".parse().unwrap());
        let prepared = request(b"PURGE", b"/x", &dest);
        let mut transport = CurlFactory.create();
        let control = Arc::new(Control::default());
        assert_eq!(
            transport.send(&dest, &prepared, &settings(), &control),
            Outcome::Status(200)
        );
        let wire = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            wire.starts_with(&format!(
                "PURGE /x HTTP/1.1\r\nHost: peer-test.invalid:{port}\r\n"
            )),
            "{wire}"
        );
    }

    #[test]
    fn refused_connection_is_transient_and_5xx_is_a_status() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dest = Destination::parse("127.0.0.1", i64::from(port)).unwrap();
        let prepared = request(b"GET", b"/", &dest);
        let mut transport = CurlFactory.create();
        let control = Arc::new(Control::default());
        let outcome = transport.send(&dest, &prepared, &settings(), &control);
        assert!(
            matches!(outcome, Outcome::Failed(Failure::Network(_))),
            "{outcome:?}"
        );

        let (port, server) = one_connection(503, 1);
        let dest = Destination::parse("127.0.0.1", i64::from(port)).unwrap();
        let prepared = request(b"GET", b"/", &dest);
        assert_eq!(
            transport.send(&dest, &prepared, &settings(), &control),
            Outcome::Status(503)
        );
        server.join().unwrap();
    }
}
