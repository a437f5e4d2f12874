//! The Varnish primitives this VMOD needs, each written once: context and magic checks,
//! VSL logging, failing a task, VSC segments, PRIV helpers, workspace allocation and the
//! panic guards. Nothing here knows about saintmode; the module is meant to move into a
//! crate shared with peer.

use std::any::Any;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use varnish::ffi::{
    busyobj, director, req, vmod_priv, vmod_priv_methods, vrt_ctx, vsb, vsc_seg, VslTag,
    BUSYOBJ_MAGIC, DIRECTOR_MAGIC, REQ_MAGIC, VCL_BACKEND, VRT_CTX_MAGIC,
};

// `ctx->method` bits, from Varnish's generated `vcl.h` (stable across 7.x).
pub const VCL_MET_PIPE: c_uint = 1 << 2;
pub const VCL_MET_PASS: c_uint = 1 << 3;
pub const VCL_MET_PURGE: c_uint = 1 << 5;
pub const VCL_MET_MISS: c_uint = 1 << 6;
pub const VCL_MET_HIT: c_uint = 1 << 7;
pub const VCL_MET_DELIVER: c_uint = 1 << 8;
pub const VCL_MET_BACKEND_RESPONSE: c_uint = 1 << 11;
pub const VCL_MET_BACKEND_ERROR: c_uint = 1 << 12;

/// VCL temperature events (`enum vcl_event_e`), taken as integers so that an unknown value
/// is not undefined behaviour.
pub const VCL_EVENT_WARM: c_uint = varnish::ffi::VclEvent::Warm as c_uint;
pub const VCL_EVENT_COLD: c_uint = varnish::ffi::VclEvent::Cold as c_uint;

/// A C method table in a `static` (they hold pointers, which are not `Sync`).
pub struct SyncMethods<T>(pub T);
// SAFETY: the wrapped tables hold only pointers to static strings and functions.
unsafe impl<T> Sync for SyncMethods<T> {}

/// Checks a `VRT_CTX` pointer like `CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC)`.
///
/// # Safety
/// `ctx` is NULL or points to a `vrt_ctx` valid for `'a`.
pub unsafe fn check_ctx<'a>(ctx: *const vrt_ctx) -> Option<&'a vrt_ctx> {
    // SAFETY: NULL or valid per the contract.
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
        .map(|d| {
            // SAFETY: `vcl_name` is a NUL-terminated string owned by the director.
            unsafe { CStr::from_ptr(d.vcl_name) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "(none)".to_owned())
}

/// A VSL record on the task's log, or a global record outside tasks.
pub fn log(ctx: &vrt_ctx, tag: VslTag, msg: &str) {
    if ctx.vsl.is_null() {
        varnish::vcl::log(tag, msg);
        return;
    }
    let range = msg.as_bytes().as_ptr_range();
    let txt = varnish::ffi::txt {
        b: range.start.cast::<c_char>(),
        e: range.end.cast::<c_char>(),
    };
    // SAFETY: `vsl` is the task's log; `txt` spans `msg`, alive during the call.
    unsafe { varnish::ffi::VSLbt(ctx.vsl, tag, txt) };
}

/// Fails the VCL task (or `vcl_init`/`vcl_fini`) with `msg`. Not for temperature events.
pub fn fail(ctx: &vrt_ctx, msg: &str) {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid ctx of a task or vcl_init/fini; the message goes through "%s".
    unsafe { varnish::ffi::VRT_fail(ctx, c"%s".as_ptr(), msg.as_ptr()) };
}

/// Copies `s` and a NUL onto the task's workspace; NULL when it does not fit.
pub fn ws_copy_str(ctx: &vrt_ctx, s: &str) -> *const c_char {
    let Ok(len) = c_int::try_from(s.len() + 1) else {
        return ptr::null();
    };
    let Ok(c) = CString::new(s) else {
        return ptr::null();
    };
    // SAFETY: the task's workspace; copies `len` bytes (with the NUL) from `c`.
    unsafe { varnish::ffi::WS_Copy(ctx.ws, c.as_ptr().cast::<c_void>(), len) }
        .cast::<c_char>()
        .cast_const()
}

/// Space for one `T` on the task's workspace (freed with the task, no destructor runs),
/// or NULL when the workspace is exhausted.
pub fn ws_alloc<T: Copy>(ctx: &vrt_ctx) -> *mut T {
    let Ok(size) = c_uint::try_from(size_of::<T>()) else {
        return ptr::null_mut();
    };
    if align_of::<T>() > align_of::<*const c_void>() {
        return ptr::null_mut();
    }
    // SAFETY: the task's workspace; WS_Alloc aligns to the pointer size (checked above).
    unsafe { varnish::ffi::WS_Alloc(ctx.ws, size) }.cast::<T>()
}

// ---------------------------------------------------------------------------------------
// PRIV helpers

/// The `PRIV_VCL` object of type `T` tagged with `methods`, created on first use (in
/// `vcl_init`, on the CLI thread), as a new `Arc`.
///
/// # Safety
/// `p` is NULL or this VMOD's `PRIV_VCL`; `methods.fini` releases an `Arc<T>`.
pub unsafe fn priv_vcl_arc<T: Default>(
    p: *mut vmod_priv,
    methods: &'static vmod_priv_methods,
) -> Option<Arc<T>> {
    // SAFETY: per the contract.
    let p = unsafe { p.as_mut() }?;
    if p.priv_.is_null() {
        p.priv_ = Arc::into_raw(Arc::new(T::default()))
            .cast_mut()
            .cast::<c_void>();
        p.methods = methods;
    }
    if !ptr::eq(p.methods, methods) {
        return None;
    }
    let raw = p.priv_.cast::<T>().cast_const();
    // SAFETY: `raw` came from `Arc::into_raw` and the PRIV_VCL still owns that count.
    unsafe { Arc::increment_strong_count(raw) };
    // SAFETY: the count taken just above is the one this Arc owns.
    Some(unsafe { Arc::from_raw(raw) })
}

/// The `PRIV_VCL` object of type `T` tagged with `methods`, if any.
///
/// # Safety
/// `p` is NULL or this VMOD's `PRIV_VCL`, valid for `'a`.
pub unsafe fn priv_vcl_ref<'a, T>(
    p: *const vmod_priv,
    methods: &'static vmod_priv_methods,
) -> Option<&'a T> {
    // SAFETY: per the contract.
    let p = unsafe { p.as_ref() }?;
    if !ptr::eq(p.methods, methods) {
        return None;
    }
    // SAFETY: with these methods, `priv` is an `Arc<T>` owned by the PRIV_VCL until its fini.
    unsafe { p.priv_.cast::<T>().as_ref() }
}

/// Releases an `Arc<T>` stored by `priv_vcl_arc` (the body of a `fini` method).
///
/// # Safety
/// `p` is NULL or the pointer `priv_vcl_arc` stored, released once.
pub unsafe fn priv_arc_release<T>(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: per the contract.
        drop(unsafe { Arc::from_raw(p.cast::<T>()) });
    }
}

/// The task's PRIV slot for `key` (created when `create`): NULL outside a task or when
/// the workspace is exhausted, else a slot valid until the task ends.
pub fn priv_task(ctx: &vrt_ctx, key: *const c_void, create: bool) -> *mut vmod_priv {
    // SAFETY: a checked task context; VRT_priv_task(_get) return NULL or the task's slot.
    unsafe {
        if create {
            varnish::ffi::VRT_priv_task(ctx, key)
        } else {
            varnish::ffi::VRT_priv_task_get(ctx, key)
        }
    }
}

// ---------------------------------------------------------------------------------------
// VSC

/// An allocated VSC segment holding a `T` (a `#[derive(VscMetric)]` struct of atomics).
pub struct VscSegment<T: varnish::VscMetric> {
    block: *mut T,
    seg: *mut vsc_seg,
    class: &'static CStr,
    _owns: PhantomData<T>,
}

// SAFETY: the segment is shared memory owned by varnishd until `VRT_VSC_Destroy`; `T` holds
// only atomics, and the segment is destroyed once, by `Drop`, on the CLI thread.
unsafe impl<T: varnish::VscMetric> Send for VscSegment<T> {}

impl<T: varnish::VscMetric> VscSegment<T> {
    /// Allocates `<class>.<ident>` (in `vcl_init`, on the CLI thread). `class` must be one
    /// static string: Varnish keeps the pointer and `VRT_VSC_Destroy` compares it.
    pub fn new(class: &'static CStr, ident: &str) -> Option<Self> {
        let ident = CString::new(ident.replace('\0', " ")).ok()?;
        let doc = T::get_metadata();
        let mut seg: *mut vsc_seg = ptr::null_mut();
        // SAFETY: called from vcl_init (CLI thread) in the child; the class name is static,
        // the doc is a static NUL-terminated JSON, and the identifier goes through "%s".
        let block = unsafe {
            varnish::ffi::VRT_VSC_AllocVariadic(
                ptr::null_mut(),
                &mut seg,
                class.as_ptr(),
                size_of::<T>(),
                doc.as_ptr().cast::<u8>(),
                doc.to_bytes().len(),
                c"%s".as_ptr(),
                ident.as_ptr(),
            )
        };
        if block.is_null() || seg.is_null() {
            return None;
        }
        Some(Self {
            block: block.cast::<T>(),
            seg,
            class,
            _owns: PhantomData,
        })
    }

    /// The counters, valid until this segment is dropped.
    pub fn block(&self) -> *mut T {
        self.block
    }

    /// Hides the counters from varnishstat (cold VCL) or shows them again.
    pub fn hide(&self, hidden: bool) {
        // SAFETY: `seg` is a live segment returned by VRT_VSC_Alloc.
        unsafe {
            if hidden {
                varnish::ffi::VRT_VSC_Hide(self.seg);
            } else {
                varnish::ffi::VRT_VSC_Reveal(self.seg);
            }
        }
    }
}

impl<T: varnish::VscMetric> Drop for VscSegment<T> {
    fn drop(&mut self) {
        // SAFETY: same class pointer as at allocation, live segment, destroyed once.
        unsafe { varnish::ffi::VRT_VSC_Destroy(self.class.as_ptr(), self.seg) };
    }
}

// ---------------------------------------------------------------------------------------
// VSB

type VsbBcat = unsafe extern "C" fn(*mut vsb, *const c_void, isize) -> c_int;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// Appends `text` to a CLI buffer with varnishd's own `VSB_bcat`. Calling `VSB_bcat`
/// directly would make the linker bind it to libvarnishapi (which exports it too) and add
/// that library as a dependency of the VMOD, so loading fails where libvarnishapi is not on
/// the loader path (e.g. a private prefix). varnishd exports the symbol to its VMODs, so
/// look it up in the global scope once.
pub fn vsb_append(vsb: *mut vsb, text: &str) {
    static BCAT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *BCAT.get_or_init(|| {
        // SAFETY: RTLD_DEFAULT (NULL on glibc) and a NUL-terminated name.
        unsafe { dlsym(ptr::null_mut(), c"VSB_bcat".as_ptr()) as usize }
    });
    let Ok(len) = isize::try_from(text.len()) else {
        return;
    };
    if addr == 0 || vsb.is_null() {
        return;
    }
    // SAFETY: a non-NULL `VSB_bcat` has this C signature (vsb.h).
    let bcat = unsafe { std::mem::transmute::<usize, VsbBcat>(addr) };
    // SAFETY: `vsb` is the CLI's buffer; we append `len` bytes from `text`.
    unsafe { bcat(vsb, text.as_ptr().cast::<c_void>(), len) };
}

// ---------------------------------------------------------------------------------------
// Panic guards: no unwinding into varnishd

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// For VCL functions, methods, `__init` and `__fini` bodies: a panic fails the task (or
/// `vcl.load`) with `<function>: panic: <message>` and returns `default`.
pub fn guard_task<T>(ctx: *const vrt_ctx, function: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            // SAFETY: Varnish passes a valid ctx (or NULL, then nothing to fail).
            if let Some(ctx) = unsafe { check_ctx(ctx) } {
                fail(
                    ctx,
                    &format!("{function}: panic: {}", panic_text(&*payload)),
                );
            }
            default
        }
    }
}

/// For director callbacks, PRIV destructors and temperature events, where failing the task
/// is not allowed: a panic is logged and `default` returned (for a WARM event, an error
/// value so that Varnish refuses the temperature change).
pub fn guard_callback<T>(what: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            varnish::vcl::log(
                VslTag::Error,
                format!("{what}: panic: {}", panic_text(&*payload)),
            );
            default
        }
    }
}
