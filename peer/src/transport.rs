//! The libcurl transport: one easy handle per sender thread, so its connection to the
//! destination is kept alive and reused; per-attempt timeouts; TLS verification; abort at
//! the drain deadline through the progress callback.

use std::sync::Arc;

use curl::easy::{Easy2, Handler, HttpVersion, WriteError};

use crate::dest::Destination;
use crate::ffi::CurlHeaderList;
use crate::policy::Outcome;
use crate::sender::{Control, Settings, Transport, TransportFactory};
use crate::snapshot::Prepared;

/// Makes a [`CurlTransport`] per sender thread.
#[derive(Debug, Default)]
pub struct CurlFactory;

impl TransportFactory for CurlFactory {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(CurlTransport {
            easy: Easy2::new(Sink::default()),
            headers: None,
        })
    }
}

/// Discards the response body and aborts transfers after the deadline.
#[derive(Default)]
struct Sink {
    control: Option<Arc<Control>>,
}

impl Handler for Sink {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        Ok(data.len())
    }

    fn progress(&mut self, _: f64, _: f64, _: f64, _: f64) -> bool {
        !self.control.as_ref().is_some_and(|c| c.aborted())
    }
}

pub struct CurlTransport {
    // Declared first: dropped before the header list it may point to.
    easy: Easy2<Sink>,
    headers: Option<CurlHeaderList>,
}

impl CurlTransport {
    fn configure(&mut self, req: &Prepared, settings: &Settings) -> Result<(), curl::Error> {
        let easy = &mut self.easy;
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
        self.headers = Some(list);
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
        easy.progress(true)?;
        Ok(())
    }
}

fn classify(e: &curl::Error) -> Outcome {
    let tls = e.is_peer_failed_verification()
        || e.is_ssl_cacert()
        || e.is_ssl_cacert_badfile()
        || e.is_ssl_certproblem()
        || e.is_ssl_issuer_error();
    if e.is_aborted_by_callback() {
        Outcome::Permanent("transfer aborted: shutdown".into())
    } else if tls {
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
        if let Err(e) = self.configure(req, settings) {
            return Outcome::Permanent(format!("cannot set up the transfer: {e}"));
        }
        self.easy.get_mut().control = Some(Arc::clone(control));
        let result = self.easy.perform();
        self.easy.get_mut().control = None;
        match result {
            Ok(()) => match self.easy.response_code() {
                Ok(code) => Outcome::Status(u16::try_from(code).unwrap_or(0)),
                Err(e) => Outcome::Transient(e.to_string()),
            },
            Err(e) => classify(&e),
        }
    }
}
