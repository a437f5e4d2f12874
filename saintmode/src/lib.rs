//! vmod_saintmode.
use std::ffi::c_char;

use varnish::ffi::{vrt_ctx, VCL_STRING};

static VERSION: &std::ffi::CStr = c"saintmode-0.1.0";

/// `saintmode.version()`.
///
/// # Safety
/// Called by Varnish with a valid context.
#[no_mangle]
pub unsafe extern "C" fn vmod_version(_ctx: *const vrt_ctx) -> VCL_STRING {
    VCL_STRING(VERSION.as_ptr().cast::<c_char>())
}

extern "C" {
    static Vmod_saintmode_Data: u8;
}
/// Keeps the C descriptor in the link.
#[used]
// SAFETY: only the address is taken.
static KEEP_DESCRIPTOR: &u8 = unsafe { &Vmod_saintmode_Data };
