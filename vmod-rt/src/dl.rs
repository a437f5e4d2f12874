//! What the dynamic loader gives: varnishd's own `VSB_bcat` (found at run time), keeping a
//! module mapped after Varnish closes it, and C method tables held in `static`s.

use std::ffi::{c_char, c_int, c_void};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use varnish::ffi::{vdi_methods, vmod_priv_methods, vsb};

extern "C" {
    // libc (glibc >= 2.34 has these in libc itself).
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void;
}

/// glibc's `Dl_info`.
#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

const RTLD_NOW: c_int = 2;
const RTLD_NOLOAD: c_int = 4;
const RTLD_NODELETE: c_int = 0x1000;

/// A C method table in a `static` (they hold pointers, which are not `Sync`). `Sync` only for
/// the two tables the modules register: a director's `vdi_methods` and a PRIV's
/// `vmod_priv_methods`.
pub struct SyncMethods<T>(pub T);
// SAFETY: `vdi_methods` (vdi.h) is plain data: a `c_uint` magic, a `*const c_char` type name
// and `Option<unsafe extern "C" fn>` callbacks; it has no interior mutability (no `Cell`,
// `UnsafeCell`, atomics), so through `&SyncMethods<vdi_methods>` every thread can only read
// values that never change. The one raw pointer is never dereferenced by Rust code; Varnish
// reads it as a NUL-terminated name, which our statics point at C string literals
// (`c"..."`), immutable for the life of the process.
unsafe impl Sync for SyncMethods<vdi_methods> {}
// SAFETY: `vmod_priv_methods` (vrt.h) is plain data in the same way: a `c_uint` magic, a
// `*const c_char` type name pointing at a C string literal, and an `Option<unsafe extern "C"
// fn>` fini callback; no interior mutability, so shared references only read immutable values.
unsafe impl Sync for SyncMethods<vmod_priv_methods> {}

/// Keeps the shared object holding this code mapped for the life of the process
/// (`RTLD_NODELETE`), so that a thread still running its code survives the `dlclose()`
/// Varnish makes when the module's last VCL is discarded. The extra handle is never closed:
/// on purpose. This crate is linked into each module, so "this code" is the caller's module.
pub fn pin_module() -> bool {
    let mut info = DlInfo {
        dli_fname: null(),
        dli_fbase: null_mut(),
        dli_sname: null(),
        dli_saddr: null_mut(),
    };
    let here = pin_module as fn() -> bool;
    // SAFETY: dladdr reads the address (a function of this object) and fills `info`.
    let found = unsafe { dladdr(here as *const c_void, &raw mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: dli_fname is the NUL-terminated path of this loaded object; RTLD_NOLOAD only
    // takes a new reference to it (it is already loaded) and RTLD_NODELETE keeps it mapped.
    let handle = unsafe { dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) };
    !handle.is_null()
}

type VsbBcat = unsafe extern "C" fn(*mut vsb, *const c_void, isize) -> c_int;

/// Appends `text` to a buffer of varnishd (a CLI answer, an event's `ctx->msg`) with
/// varnishd's own `VSB_bcat`; false when it could not. Calling `VSB_bcat` directly would
/// make the linker bind it to libvarnishapi (which exports it too) and add that library as a
/// dependency of the VMOD, so loading fails where libvarnishapi is not on the loader path
/// (e.g. a private prefix). varnishd exports the symbol to its VMODs: look it up once.
///
/// # Safety
/// `vsb` is NULL or a buffer varnishd handed over for this call (a `list` callback's, an
/// event's `ctx->msg`), not used by another thread meanwhile.
pub unsafe fn vsb_append(vsb: *mut vsb, text: &str) -> bool {
    static BCAT: OnceLock<usize> = OnceLock::new();
    let addr = *BCAT.get_or_init(|| {
        // SAFETY: RTLD_DEFAULT (NULL on glibc) and a NUL-terminated name.
        unsafe { dlsym(null_mut(), c"VSB_bcat".as_ptr()) as usize }
    });
    let Ok(len) = isize::try_from(text.len()) else {
        return false;
    };
    if addr == 0 || vsb.is_null() {
        return false;
    }
    // SAFETY: a non-NULL `VSB_bcat` has this C signature (vsb.h: int VSB_bcat(struct vsb *,
    // const void *, ssize_t)).
    let bcat = unsafe { std::mem::transmute::<usize, VsbBcat>(addr) };
    // SAFETY: `vsb` is a live buffer of varnishd (per the caller, not NULL: checked above);
    // we append `len` bytes from `text`, alive during the call.
    unsafe { bcat(vsb, text.as_ptr().cast::<c_void>(), len) == 0 }
}
