//! What a VCL call hands over, checked and converted: the context and the objects it points
//! to (magic numbers, as C's `CHECK_OBJ_NOTNULL`), VCL strings, the task's workspace, and
//! the two ways to answer: failing the task and VSL lines.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::fmt::{self, Display};

use varnish::ffi::{
    self, busyobj, director, req, vrt_ctx, VslTag, BUSYOBJ_MAGIC, DIRECTOR_MAGIC, REQ_MAGIC,
    VCL_BACKEND, VCL_STRANDS, VCL_STRING, VRT_CTX_MAGIC,
};

extern "C" {
    // vrt_obj.h is not in the bindings.
    fn VRT_r_server_identity(ctx: *const vrt_ctx) -> VCL_STRING;
}

// `ctx->method` bits, from Varnish's generated `vcl.h` (stable across 7.x).
pub const VCL_MET_PIPE: c_uint = 1 << 2;
pub const VCL_MET_PASS: c_uint = 1 << 3;
pub const VCL_MET_PURGE: c_uint = 1 << 5;
pub const VCL_MET_MISS: c_uint = 1 << 6;
pub const VCL_MET_HIT: c_uint = 1 << 7;
pub const VCL_MET_DELIVER: c_uint = 1 << 8;
pub const VCL_MET_BACKEND_RESPONSE: c_uint = 1 << 11;
pub const VCL_MET_BACKEND_ERROR: c_uint = 1 << 12;

/// The context, when it is one (not NULL, right magic).
///
/// # Safety
/// `ctx` is NULL or points to a `vrt_ctx` valid for `'a`.
pub unsafe fn check_ctx<'a>(ctx: *const vrt_ctx) -> Option<&'a vrt_ctx> {
    // SAFETY: the caller guarantees NULL or a valid pointer; as_ref checks NULL.
    let ctx = unsafe { ctx.as_ref() }?;
    (ctx.magic == VRT_CTX_MAGIC).then_some(ctx)
}

/// The task's busyobj (backend tasks), checked.
pub fn busyobj_of(ctx: &vrt_ctx) -> Option<&busyobj> {
    // SAFETY: a non-NULL `ctx->bo` points to the task's busyobj, alive during the call.
    let bo = unsafe { ctx.bo.as_ref() }?;
    (bo.magic == BUSYOBJ_MAGIC).then_some(bo)
}

/// The task's req (client tasks), checked.
pub fn req_of(ctx: &vrt_ctx) -> Option<&req> {
    // SAFETY: a non-NULL `ctx->req` points to the task's req, alive during the call.
    let req = unsafe { ctx.req.as_ref() }?;
    (req.magic == REQ_MAGIC).then_some(req)
}

/// The director behind a `VCL_BACKEND`, checked.
pub fn director_of<'a>(be: VCL_BACKEND) -> Option<&'a director> {
    // SAFETY: a non-NULL VCL_BACKEND points to a director that outlives the VCL task.
    let d = unsafe { be.0.as_ref() }?;
    (d.magic == DIRECTOR_MAGIC).then_some(d)
}

/// The VCL name of a backend or director, `(none)` for none.
pub fn director_name(be: VCL_BACKEND) -> String {
    director_of(be)
        .filter(|d| !d.vcl_name.is_null())
        // SAFETY: `vcl_name` is a NUL-terminated string owned by the director.
        .map(|d| unsafe { vcl_str(VCL_STRING(d.vcl_name)) })
        .unwrap_or_else(|| "(none)".to_owned())
}

/// A VCL string as bytes; NULL is empty.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for `'a`.
pub unsafe fn vcl_bytes<'a>(s: VCL_STRING) -> &'a [u8] {
    if s.0.is_null() {
        return b"";
    }
    // SAFETY: not NULL, NUL-terminated and valid for 'a per the caller.
    unsafe { CStr::from_ptr(s.0) }.to_bytes()
}

/// A VCL string as text (lossy for the rare non-UTF-8 configuration value). Not for what is
/// sent on the wire (header names and values are bytes, see [`vcl_bytes`]).
///
/// # Safety
/// As [`vcl_bytes`].
pub unsafe fn vcl_str(s: VCL_STRING) -> String {
    // SAFETY: same contract as ours.
    String::from_utf8_lossy(unsafe { vcl_bytes(s) }).into_owned()
}

/// The concatenation of a STRANDS argument (NULL parts are empty).
///
/// # Safety
/// `s` is NULL or a valid `strands` whose `n` pointers are NULL or NUL-terminated.
pub unsafe fn strands_bytes(s: VCL_STRANDS) -> Vec<u8> {
    let mut out = Vec::new();
    // SAFETY: NULL or valid per the caller.
    let Some(strands) = (unsafe { s.0.as_ref() }) else {
        return out;
    };
    if strands.p.is_null() {
        return out;
    }
    for i in 0..usize::try_from(strands.n).unwrap_or(0) {
        // SAFETY: `p` has `n` entries and i < n.
        let part = unsafe { *strands.p.add(i) };
        // SAFETY: each entry is NULL or NUL-terminated, valid for the call.
        out.extend_from_slice(unsafe { vcl_bytes(VCL_STRING(part)) });
    }
    out
}

/// The name of the VCL of `ctx` (`vcl` when the context has none).
pub fn vcl_name(ctx: &vrt_ctx) -> String {
    if ctx.vcl.0.is_null() {
        return "vcl".to_string();
    }
    // SAFETY: ctx.vcl is the VCL being run; VCL_Name returns its NUL-terminated name.
    let name = unsafe { ffi::VCL_Name(ctx.vcl.0) };
    // SAFETY: NULL or the NUL-terminated name, alive with the VCL.
    unsafe { vcl_str(VCL_STRING(name)) }
}

/// `server.identity`.
pub fn server_identity(ctx: &vrt_ctx) -> String {
    // SAFETY: reads the heritage through a checked context; the result is NULL or a
    // NUL-terminated string that lives as long as the child.
    unsafe { vcl_str(VRT_r_server_identity(ctx)) }
}

/// Why a copy onto the workspace was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// The bytes hold a NUL: a VCL string cannot carry them.
    Nul,
    /// Longer than the workspace API takes.
    TooLong,
    /// The workspace is exhausted.
    Overflow,
}

impl Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WsError::Nul => "the result would contain NUL",
            WsError::TooLong => "result too long",
            WsError::Overflow => "out of workspace",
        })
    }
}

/// A copy of `bytes` and a NUL on the task's workspace, as a VCL string (freed with the task).
pub fn ws_copy(ctx: &vrt_ctx, bytes: &[u8]) -> Result<VCL_STRING, WsError> {
    if bytes.contains(&0) {
        return Err(WsError::Nul);
    }
    let mut c = Vec::with_capacity(bytes.len() + 1);
    c.extend_from_slice(bytes);
    c.push(0);
    let len = c_int::try_from(c.len()).map_err(|_| WsError::TooLong)?;
    // SAFETY: ctx.ws is the task's workspace (checked context); WS_Copy copies `len` bytes
    // from a live buffer and returns NULL when out of space.
    let p = unsafe { ffi::WS_Copy(ctx.ws, c.as_ptr().cast::<c_void>(), len) };
    if p.is_null() {
        return Err(WsError::Overflow);
    }
    Ok(VCL_STRING(p.cast::<c_char>().cast_const()))
}

/// Space for one `T` on the task's workspace (freed with the task, no destructor runs),
/// or NULL when the workspace is exhausted.
pub fn ws_alloc<T: Copy>(ctx: &vrt_ctx) -> *mut T {
    let Ok(size) = c_uint::try_from(size_of::<T>()) else {
        return std::ptr::null_mut();
    };
    if align_of::<T>() > align_of::<*const c_void>() {
        return std::ptr::null_mut();
    }
    // SAFETY: the task's workspace; WS_Alloc aligns to the pointer size (checked above).
    unsafe { ffi::WS_Alloc(ctx.ws, size) }.cast::<T>()
}

/// Fails the VCL task (in `vcl_init`: the load fails) with `msg`. Only for VCL tasks and
/// `vcl_init`/`vcl_fini`: Varnish asserts when a temperature event fails this way.
pub fn fail(ctx: &vrt_ctx, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    // SAFETY: ctx is a checked context of a task; "%.*s" reads `len` bytes of `msg`.
    unsafe { ffi::VRT_fail(ctx, c"%.*s".as_ptr(), len, msg.as_ptr()) };
}

/// Fails the task with `<function>: <what>`, `function` being the VCL name of the call
/// (`peer.set()`, `saintmode.saintmode()`).
pub fn fail_in(ctx: &vrt_ctx, function: &str, what: impl Display) {
    fail(ctx, &crate::guard::task_message(function, what));
}

/// A log line in the transaction of `ctx` (or with no transaction when it has none).
pub fn log(ctx: &vrt_ctx, tag: VslTag, msg: &str) {
    if ctx.vsl.is_null() {
        log_raw(tag, msg);
        return;
    }
    let range = msg.as_bytes().as_ptr_range();
    let txt = ffi::txt {
        b: range.start.cast::<c_char>(),
        e: range.end.cast::<c_char>(),
    };
    // SAFETY: `vsl` is the task's log; `txt` spans `msg`, alive during the call.
    unsafe { ffi::VSLbt(ctx.vsl, tag, txt) };
}

/// A log line with no transaction (vxid 0): from threads of our own and callbacks without a
/// task. `VSL()` is thread safe.
pub fn log_raw(tag: VslTag, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    // SAFETY: the format reads `len` bytes of `msg`.
    unsafe {
        ffi::VSL(
            tag,
            ffi::vxids::default(),
            c"%.*s".as_ptr(),
            len,
            msg.as_ptr(),
        )
    };
}
