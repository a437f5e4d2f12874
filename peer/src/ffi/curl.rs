//! The few libcurl options that take bytes (the curl crate takes `&str`; header values and
//! URLs from Varnish need not be UTF-8).

use std::ffi::CString;
use std::ptr::null_mut;

/// A libcurl header list built from byte lines (values need not be UTF-8).
pub struct CurlHeaderList {
    raw: *mut curl_sys::curl_slist,
}

impl CurlHeaderList {
    /// Lines must not contain NUL (the snapshot was validated).
    pub fn new(lines: &[Vec<u8>]) -> Result<Self, curl::Error> {
        let mut list = CurlHeaderList { raw: null_mut() };
        for line in lines {
            let line = CString::new(line.as_slice())
                .map_err(|_| curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT))?;
            // SAFETY: list.raw is NULL or a list from curl_slist_append; libcurl copies the
            // string.
            let appended = unsafe { curl_sys::curl_slist_append(list.raw, line.as_ptr()) };
            if appended.is_null() {
                return Err(curl::Error::new(curl_sys::CURLE_OUT_OF_MEMORY));
            }
            list.raw = appended;
        }
        Ok(list)
    }

    /// Sets it as the handle's CURLOPT_HTTPHEADER; the list must outlive the transfer.
    pub fn apply<H>(&self, easy: &curl::easy::Easy2<H>) -> Result<(), curl::Error> {
        // SAFETY: a live easy handle; the list is kept by the caller until the next reset.
        let rc = unsafe {
            curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_HTTPHEADER, self.raw)
        };
        check(rc)
    }
}

impl Drop for CurlHeaderList {
    fn drop(&mut self) {
        // SAFETY: NULL or a list from curl_slist_append, freed once.
        unsafe { curl_sys::curl_slist_free_all(self.raw) };
    }
}

fn check(rc: curl_sys::CURLcode) -> Result<(), curl::Error> {
    if rc == curl_sys::CURLE_OK {
        Ok(())
    } else {
        Err(curl::Error::new(rc))
    }
}

fn set_bytes_option<H>(
    easy: &curl::easy::Easy2<H>,
    option: curl_sys::CURLoption,
    value: &[u8],
) -> Result<(), curl::Error> {
    let value =
        CString::new(value).map_err(|_| curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT))?;
    // SAFETY: a live easy handle; libcurl copies string options.
    let rc = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, value.as_ptr()) };
    check(rc)
}

/// CURLOPT_URL from bytes.
pub fn curl_set_url<H>(easy: &curl::easy::Easy2<H>, url: &[u8]) -> Result<(), curl::Error> {
    set_bytes_option(easy, curl_sys::CURLOPT_URL, url)
}

/// CURLOPT_CUSTOMREQUEST from bytes.
pub fn curl_set_method<H>(easy: &curl::easy::Easy2<H>, method: &[u8]) -> Result<(), curl::Error> {
    set_bytes_option(easy, curl_sys::CURLOPT_CUSTOMREQUEST, method)
}

/// The body of a POST, without copying it (CURLOPT_POSTFIELDS + its size).
///
/// # Safety
/// The caller keeps `body` alive and unchanged until the handle has another body or none
/// (the transport keeps the `Arc` it came from).
pub unsafe fn curl_set_post_body<H>(
    easy: &curl::easy::Easy2<H>,
    body: &[u8],
) -> Result<(), curl::Error> {
    let len = curl_sys::curl_off_t::try_from(body.len())
        .map_err(|_| curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT))?;
    // SAFETY: a live easy handle; the size is set before the pointer so libcurl never reads
    // the data as a NUL-terminated string.
    check(unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_POSTFIELDSIZE_LARGE, len)
    })?;
    // SAFETY: a live easy handle; libcurl reads `len` bytes from the pointer during the
    // transfers of this handle, and the caller keeps them alive until it is replaced.
    check(unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_POSTFIELDS, body.as_ptr())
    })
}
