//! The libcurl transport: one multi + easy handle per sender thread, so the connection to
//! the destination is kept alive and reused; per-attempt timeouts; TLS verification; a
//! transfer in progress is abandoned shortly after the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy2, Handler, HttpVersion, WriteError};
use curl::multi::Multi;

use crate::dest::Destination;
use crate::ffi::CurlHeaderList;
use crate::policy::Outcome;
use crate::sender::{Control, Settings, Transport, TransportFactory};
use crate::snapshot::Prepared;

/// How often a transfer in progress checks the drain deadline.
const ABORT_CHECK: Duration = Duration::from_millis(100);

/// Makes a [`CurlTransport`] per sender thread.
#[derive(Debug, Default)]
pub struct CurlFactory;

impl TransportFactory for CurlFactory {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(CurlTransport {
            multi: Multi::new(),
            easy: None,
            headers: None,
        })
    }
}

/// Discards the response body.
struct Sink;

impl Handler for Sink {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        Ok(data.len())
    }
}

/// A multi handle driving one easy handle at a time: the multi handle keeps the
/// connection cache (keep-alive across requests), and its wait loop lets a transfer be
/// abandoned within [`ABORT_CHECK`] of the drain deadline.
pub struct CurlTransport {
    // Field order is drop order: the handles go before the header list they may point to.
    multi: Multi,
    easy: Option<Easy2<Sink>>,
    headers: Option<CurlHeaderList>,
}

fn configure(
    easy: &mut Easy2<Sink>,
    headers: &mut Option<CurlHeaderList>,
    req: &Prepared,
    settings: &Settings,
) -> Result<(), curl::Error> {
    easy.reset();
    easy.signal(false)?;
    crate::ffi::curl_set_url(easy, &req.url)?;
    if req.method.eq_ignore_ascii_case(b"HEAD") {
        easy.nobody(true)?;
    } else if let Some(body) = &req.body {
        easy.post(true)?;
        easy.post_fields_copy(body)?;
    } else {
        easy.get(true)?;
    }
    crate::ffi::curl_set_method(easy, &req.method)?;
    let list = CurlHeaderList::new(&req.header_lines)?;
    list.apply(easy)?;
    // The previous list is freed only now that the handle points to the new one.
    *headers = Some(list);
    easy.http_version(if req.http10 {
        HttpVersion::V10
    } else {
        HttpVersion::V11
    })?;
    easy.connect_timeout(settings.connect_timeout())?;
    easy.timeout(settings.timeout())?;
    easy.ssl_verify_peer(settings.tls_verify)?;
    easy.ssl_verify_host(settings.tls_verify)?;
    if let Some(ca) = &settings.ca_file {
        easy.cainfo(ca)?;
    }
    Ok(())
}

fn classify(e: &curl::Error) -> Outcome {
    let tls = e.is_peer_failed_verification()
        || e.is_ssl_cacert()
        || e.is_ssl_cacert_badfile()
        || e.is_ssl_certproblem()
        || e.is_ssl_issuer_error();
    if tls {
        Outcome::Permanent(format!("TLS: {e}"))
    } else if e.is_url_malformed() || e.is_unsupported_protocol() || e.is_bad_function_argument() {
        Outcome::Permanent(format!("bad request: {e}"))
    } else if e.is_couldnt_resolve_host() {
        Outcome::Transient(format!("DNS: {e}"))
    } else {
        Outcome::Transient(e.to_string())
    }
}

impl Transport for CurlTransport {
    fn send(
        &mut self,
        _dest: &Destination,
        req: &Prepared,
        settings: &Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        let mut easy = self.easy.take().unwrap_or_else(|| Easy2::new(Sink));
        if let Err(e) = configure(&mut easy, &mut self.headers, req, settings) {
            self.easy = Some(easy);
            return Outcome::Permanent(format!("cannot set up the transfer: {e}"));
        }
        let handle = match self.multi.add2(easy) {
            Ok(handle) => handle,
            Err(e) => return Outcome::Transient(format!("cannot start the transfer: {e}")),
        };
        let mut result = None;
        let mut stopped = None;
        while result.is_none() && stopped.is_none() {
            if let Err(e) = self.multi.perform() {
                stopped = Some(Outcome::Transient(e.to_string()));
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
                stopped = Some(Outcome::Permanent("transfer aborted: shutdown".into()));
            } else if let Err(e) = self.multi.wait(&mut [], ABORT_CHECK) {
                stopped = Some(Outcome::Transient(e.to_string()));
            }
        }
        // Removing the handle ends an unfinished transfer; a failed removal loses the handle
        // (a new one is made next time).
        let easy = self.multi.remove2(handle).ok();
        let outcome = match (result, stopped) {
            (Some(Ok(())), _) => match easy.as_ref().map(Easy2::response_code) {
                Some(Ok(code)) => Outcome::Status(u16::try_from(code).unwrap_or(0)),
                Some(Err(e)) => Outcome::Transient(e.to_string()),
                None => Outcome::Transient("transfer handle lost".into()),
            },
            (Some(Err(e)), _) => classify(&e),
            (None, Some(outcome)) => outcome,
            (None, None) => Outcome::Transient("transfer ended without a result".into()),
        };
        self.easy = easy;
        outcome
    }
}
