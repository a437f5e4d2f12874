//! Reading the current request out of Varnish's structures into a [`Snapshot`]: `req` on
//! the client side, `bereq` on the backend side, and the body when it was cached.

use std::ffi::{c_int, c_uint, c_void};

use varnish::ffi::{self, vrt_ctx};

use crate::snapshot::{Snapshot, SnapshotError};

/// The `http` of the current request: `req` on the client side, `bereq` on the backend side.
fn current_http(ctx: &vrt_ctx) -> Option<&ffi::http> {
    let http = if ctx.http_req.0.is_null() {
        ctx.http_bereq.0
    } else {
        ctx.http_req.0
    };
    // SAFETY: NULL or the task's http, valid during the call.
    let http = unsafe { http.as_ref() }?;
    (http.magic == ffi::HTTP_MAGIC).then_some(http)
}

fn http_field(http: &ffi::http, idx: usize) -> Option<&[u8]> {
    if idx >= usize::from(http.nhd) || http.hd.is_null() {
        return None;
    }
    // SAFETY: hd has nhd entries and idx < nhd.
    let txt = unsafe { &*http.hd.add(idx) };
    if txt.b.is_null() || txt.e.is_null() {
        return None;
    }
    // SAFETY: b..e is one field in the workspace, e >= b.
    let len = unsafe { txt.e.offset_from(txt.b) };
    let len = usize::try_from(len).ok()?;
    // SAFETY: b points to len readable bytes, alive for the task.
    Some(unsafe { std::slice::from_raw_parts(txt.b.cast::<u8>(), len) })
}

unsafe extern "C" fn collect_body(
    priv_: *mut c_void,
    _flush: c_uint,
    ptr: *const c_void,
    len: isize,
) -> c_int {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    if priv_.is_null() || ptr.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: priv_ is the Vec passed by `cached_body`, alive and not otherwise borrowed
    // during the iteration; ptr has len readable bytes.
    let (out, chunk) = unsafe {
        (
            &mut *priv_.cast::<Vec<u8>>(),
            std::slice::from_raw_parts(ptr.cast::<u8>(), len),
        )
    };
    // Extending a Vec cannot unwind here except on allocation failure, which aborts.
    out.extend_from_slice(chunk);
    0
}

/// True when `req` has a body that was not cached (its status is neither "none" nor
/// "cached").
fn has_uncached_body(req: &ffi::req) -> bool {
    let status = req.req_body_status;
    // SAFETY: BS_* are statics of varnishd; only their addresses are compared.
    let (none, cached) = unsafe { (ffi::BS_NONE.as_ptr(), ffi::BS_CACHED.as_ptr()) };
    !status.is_null() && status != none && status != cached
}

/// The request's body: `Ok(None)` when it has none, the cached body, or an error when there
/// is a body that was not cached.
fn request_body(ctx: &vrt_ctx) -> Result<Option<Vec<u8>>, SnapshotError> {
    let mut body = Vec::new();
    let priv_ = (&raw mut body).cast::<c_void>();
    if !ctx.http_req.0.is_null() {
        // SAFETY: NULL or the current req.
        let Some(req) = (unsafe { ctx.req.as_mut() }) else {
            return Ok(None);
        };
        if has_uncached_body(req) {
            return Err(SnapshotError::BodyNotCached);
        }
        // SAFETY: BS_CACHED is a static of varnishd; only its address is compared.
        if req.req_body_status != unsafe { ffi::BS_CACHED.as_ptr() } {
            return Ok(None);
        }
        if let Ok(bytes) = usize::try_from(req.acct.req_bodybytes) {
            body.reserve_exact(bytes);
        }
        // SAFETY: the body is cached (so iterating does not consume it); collect_body
        // appends to `body`, which outlives the call.
        let r = unsafe {
            ffi::VRB_Iterate(
                req.wrk,
                req.vsl.as_mut_ptr(),
                req,
                Some(collect_body),
                priv_,
            )
        };
        return if r < 0 {
            Err(SnapshotError::BodyUnreadable)
        } else {
            Ok(Some(body))
        };
    }
    // SAFETY: NULL or the current busyobj.
    let Some(bo) = (unsafe { ctx.bo.as_mut() }) else {
        return Ok(None);
    };
    if bo.bereq_body.is_null() {
        // No cached body. In a pass of a request whose body was not cached, `bo.req` is the
        // request whose body is sent to the backend as it is read: a copy would lack it.
        // SAFETY: NULL or the request this fetch serves, alive while the fetch uses it.
        if let Some(req) = unsafe { bo.req.as_ref() } {
            if has_uncached_body(req) {
                return Err(SnapshotError::BodyNotCached);
            }
        }
        return Ok(None);
    }
    // SAFETY: bereq_body is the cached request body object; reading it does not change it.
    let r = unsafe { ffi::ObjIterate(bo.wrk, bo.bereq_body, priv_, Some(collect_body), 0) };
    if r < 0 {
        Err(SnapshotError::BodyUnreadable)
    } else {
        Ok(Some(body))
    }
}

/// Copies the current request. `body` replaces the request's own; a non-empty `method` or
/// `url` replaces the request's.
pub fn snapshot<'a>(
    ctx: &'a vrt_ctx,
    body: Option<Vec<u8>>,
    method: &'a [u8],
    url: &'a [u8],
) -> Result<Snapshot, SnapshotError> {
    let http = current_http(ctx).ok_or(SnapshotError::NoRequest)?;
    let field = |idx: u32| {
        usize::try_from(idx)
            .ok()
            .and_then(|i| http_field(http, i))
            .unwrap_or_default()
    };
    let or_own = |given: &'a [u8], idx: u32| if given.is_empty() { field(idx) } else { given };
    let body = match body {
        Some(b) => Some(b),
        None => request_body(ctx)?,
    };
    let first = usize::try_from(ffi::HTTP_HDR_FIRST).unwrap_or(usize::MAX);
    let lines = (first..usize::from(http.nhd).max(first))
        .map(|idx| http_field(http, idx).unwrap_or_default());
    Ok(Snapshot::from_fields(
        or_own(method, ffi::HTTP_HDR_METHOD),
        or_own(url, ffi::HTTP_HDR_URL),
        field(ffi::HTTP_HDR_PROTO),
        lines,
        body,
    ))
}
