//! The entry points Varnish calls: the functions named by the generated
//! `vcc_saintmode_if.h`, the director callbacks and the PRIV destructor. Each converts its
//! arguments, calls plain Rust (`instance`, and through it `object`, `blame`, `report`) and
//! converts the result, inside a panic guard; the Varnish primitives are the shared crate
//! `vmod-rt`'s.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use varnish::ffi::{
    vdi_methods, vmod_priv, vmod_priv_methods, vrt_ctx, vsb, VslTag, VCL_BACKEND, VCL_BOOL,
    VCL_DURATION, VCL_INT, VCL_STRING, VCL_TIME, VDI_METHODS_MAGIC, VMOD_PRIV_METHODS_MAGIC,
};
use vmod_rt::{
    busyobj_of, check_ctx, director_of, fail_in, guard_callback, guard_event, guard_task, log,
    priv_release, priv_vcl_ref, vsb_append, ws_copy, Event, SyncMethods,
};

use crate::instance::{
    blacklist, init, object_from, object_of, task_digest, Handle, Object, Registry, HANDLE_MAGIC,
};
use crate::report::{list_text, status_json, Snapshot};

static VERSION: &CStr = c"saintmode-0.1.0";

unsafe extern "C" fn registry_fini(_ctx: *const vrt_ctx, p: *mut c_void) {
    guard_callback("saintmode registry fini", (), || {
        // SAFETY: the Arc stored by `priv_vcl_arc`, released once here.
        unsafe { priv_release::<Registry>(p) }
    });
}

pub(crate) static REGISTRY_METHODS: SyncMethods<vmod_priv_methods> =
    SyncMethods(vmod_priv_methods {
        magic: VMOD_PRIV_METHODS_MAGIC,
        type_: c"saintmode registry".as_ptr(),
        fini: Some(registry_fini),
    });

// ---------------------------------------------------------------------------------------
// Director callbacks

unsafe extern "C" fn dir_healthy(
    ctx: *const vrt_ctx,
    be: VCL_BACKEND,
    changed: *mut VCL_TIME,
) -> VCL_BOOL {
    guard_callback("saintmode healthy", VCL_BOOL(0), || {
        // SAFETY: Varnish passes a valid ctx (checked) for the call's duration.
        let (Some(ctx), Some(o)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return VCL_BOOL(0);
        };
        // As varnish-modules: only a fetch has an object to ask about. On the client side
        // (std.healthy(), a director's health) the threshold and the backend count.
        let digest = busyobj_of(ctx).map(|bo| bo.digest);
        VCL_BOOL(c_uint::from(o.healthy(
            ctx,
            digest.as_ref(),
            digest.is_some(),
            changed,
        )))
    })
}

unsafe extern "C" fn dir_resolve(ctx: *const vrt_ctx, be: VCL_BACKEND) -> VCL_BACKEND {
    let none = VCL_BACKEND(ptr::null());
    guard_callback("saintmode resolve", none, || {
        // SAFETY: Varnish passes a valid ctx (checked) for the call's duration.
        let (Some(ctx), Some(o)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return none;
        };
        o.resolve(ctx)
    })
}

unsafe extern "C" fn dir_list(
    ctx: *const vrt_ctx,
    be: VCL_BACKEND,
    vsb: *mut vsb,
    pflag: c_int,
    jflag: c_int,
) {
    guard_callback("saintmode list", (), || {
        // SAFETY: Varnish passes a valid CLI ctx (checked) for the call's duration.
        let (Some(ctx), Some(o)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return;
        };
        // SAFETY: `vsb` is the buffer of this `backend.list` call.
        let _ = unsafe { vsb_append(vsb, &list_text(&o.snapshot(ctx), pflag != 0, jflag != 0)) };
    });
}

unsafe extern "C" fn dir_release(be: VCL_BACKEND) {
    guard_callback("saintmode release", (), || {
        let Some(o) = object_of(be) else { return };
        let mut wrapped = VCL_BACKEND(o.wrapped.swap(ptr::null_mut(), Ordering::AcqRel));
        if !wrapped.0.is_null() {
            // SAFETY: drops the reference taken in `__init`.
            unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, VCL_BACKEND(ptr::null())) };
        }
    });
}

unsafe extern "C" fn dir_destroy(be: VCL_BACKEND) {
    guard_callback("saintmode destroy", (), || {
        if object_of(be).is_none() {
            return;
        }
        if let Some(d) = director_of(be) {
            // SAFETY: releases the count given to the director in `__init`; Varnish calls no
            // method of this director after `destroy`.
            drop(unsafe { Arc::from_raw(d.priv_.cast::<Object>().cast_const()) });
        }
    });
}

pub(crate) static DIRECTOR_METHODS: SyncMethods<vdi_methods> = SyncMethods(vdi_methods {
    magic: VDI_METHODS_MAGIC,
    type_: c"saintmode".as_ptr(),
    http1pipe: None,
    healthy: Some(dir_healthy),
    resolve: Some(dir_resolve),
    gethdrs: None,
    getip: None,
    finish: None,
    event: None,
    release: Some(dir_release),
    destroy: Some(dir_destroy),
    panic: None,
    list: Some(dir_list),
});

// ---------------------------------------------------------------------------------------
// VCL entry points (prototypes in vcc_saintmode_if.h)

/// `new name = saintmode.saintmode(backend, threshold)`.
///
/// # Safety
/// Called by Varnish in `vcl_init` with valid pointers.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode__init(
    ctx: *const vrt_ctx,
    handle: *mut *mut Handle,
    vcl_name: *const c_char,
    priv_vcl: *mut vmod_priv,
    backend: VCL_BACKEND,
    threshold: VCL_INT,
) {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: forwarded from Varnish as is.
        if let Err(msg) = unsafe { init(ctx, handle, vcl_name, priv_vcl, backend, threshold) } {
            fail_in(ctx, "saintmode.saintmode()", msg);
        }
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "saintmode.saintmode()", (), body) };
}

/// Object destructor: unregisters, deletes the director, destroys the counters.
///
/// # Safety
/// Called by Varnish on VCL discard (or a failed load) with the slot `__init` filled.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode__fini(handle: *mut *mut Handle) {
    guard_callback("saintmode.saintmode() fini", (), || {
        if handle.is_null() {
            return;
        }
        // SAFETY: the slot is valid; take ownership and clear it.
        let raw = unsafe { std::mem::replace(&mut *handle, ptr::null_mut()) };
        if raw.is_null() {
            return;
        }
        // SAFETY: from `Box::into_raw` in `init`, released once here.
        let h = unsafe { Box::from_raw(raw) };
        if h.magic != HANDLE_MAGIC {
            std::mem::forget(h);
            return;
        }
        h.registry
            .objects
            .write()
            .retain(|o| !Arc::ptr_eq(o, &h.object));
        let mut dir = VCL_BACKEND(h.object.director.swap(ptr::null_mut(), Ordering::AcqRel));
        if !dir.0.is_null() {
            // SAFETY: our director, reference-counted (see `init`): no task holds it now;
            // a director of this VCL finalised after us may still hold a reference, and
            // Varnish frees ours (`release` drops the wrapped reference, `destroy` the
            // director's Arc count) when the last one goes.
            unsafe { varnish::ffi::VRT_DelDirector(&mut dir) };
        }
        // Counters go now, on the CLI thread, even if another director still holds ours.
        h.object.core.detach_stats();
        drop(h.object.stats.lock().take());
    });
}

/// `sm.backend()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_backend(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_BACKEND {
    let body = |_: &vrt_ctx| {
        // SAFETY: per the contract.
        let o = unsafe { object_from(handle) };
        VCL_BACKEND(o.map_or(ptr::null(), |o| o.director.load(Ordering::Acquire)))
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "sm.backend()", VCL_BACKEND(ptr::null()), body) }
}

/// `sm.blacklist_count()` and `sm.denylist_count()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_blacklist_count(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_INT {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: per the contract.
        let Some(o) = (unsafe { object_from(handle) }) else {
            return VCL_INT(0);
        };
        let count = o.live_count(ctx).live.live;
        VCL_INT(i64::try_from(count).unwrap_or(i64::MAX))
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "sm.blacklist_count()", VCL_INT(0), body) }
}

/// `sm.denylist_count()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_denylist_count(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_INT {
    // SAFETY: same contract.
    unsafe { vmod_saintmode_blacklist_count(ctx, handle) }
}

/// `sm.is_healthy()`: the per-object question, in backend tasks and in client subroutines
/// after `vcl_hash`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_is_healthy(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_BOOL {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: per the contract.
        let Some(o) = (unsafe { object_from(handle) }) else {
            return VCL_BOOL(0);
        };
        let digest = task_digest(ctx);
        VCL_BOOL(c_uint::from(o.healthy(
            ctx,
            digest.as_ref(),
            true,
            ptr::null_mut(),
        )))
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "sm.is_healthy()", VCL_BOOL(0), body) }
}

/// `saintmode.blacklist(expires)`.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_blacklist(
    ctx: *const vrt_ctx,
    priv_vcl: *mut vmod_priv,
    expires: VCL_DURATION,
) {
    // SAFETY: same contract.
    unsafe { blacklist_entry(ctx, priv_vcl, expires, "saintmode.blacklist()") }
}

/// `saintmode.denylist(expires)`.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_denylist(
    ctx: *const vrt_ctx,
    priv_vcl: *mut vmod_priv,
    expires: VCL_DURATION,
) {
    // SAFETY: same contract.
    unsafe { blacklist_entry(ctx, priv_vcl, expires, "saintmode.denylist()") }
}

/// # Safety
/// As `vmod_blacklist`.
unsafe fn blacklist_entry(
    ctx: *const vrt_ctx,
    priv_vcl: *mut vmod_priv,
    expires: VCL_DURATION,
    function: &str,
) {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: this VMOD's PRIV_VCL.
        let registry = unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) };
        if let Err(why) = blacklist(ctx, registry, expires.0 .0) {
            log(ctx, VslTag::VclError, &format!("{function}: {why}"));
        }
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, function, (), body) };
}

/// `saintmode.status()`. On workspace overflow it logs and returns NULL (no string), as the
/// C module does, instead of failing the task.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_status(ctx: *const vrt_ctx, priv_vcl: *mut vmod_priv) -> VCL_STRING {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: this VMOD's PRIV_VCL.
        let objects: Vec<Arc<Object>> =
            unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) }
                .map(|r| r.objects.read().clone())
                .unwrap_or_default();
        let snapshots: Vec<Snapshot> = objects.iter().map(|o| o.snapshot(ctx)).collect();
        ws_copy(ctx, status_json(&snapshots).as_bytes()).unwrap_or_else(|_| {
            log(
                ctx,
                VslTag::VclError,
                "saintmode.status(): workspace overflow",
            );
            VCL_STRING(ptr::null())
        })
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "saintmode.status()", VCL_STRING(ptr::null()), body) }
}

/// `saintmode.version()`.
///
/// # Safety
/// Called by Varnish.
#[no_mangle]
pub unsafe extern "C" fn vmod_version(_ctx: *const vrt_ctx) -> VCL_STRING {
    VCL_STRING(VERSION.as_ptr())
}

/// VCL temperature events: counters are hidden while the VCL is cold.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_event(
    ctx: *const vrt_ctx,
    priv_vcl: *mut vmod_priv,
    event: c_uint,
) -> c_int {
    let f = |_: &vrt_ctx, event: Event| {
        let hidden = match event {
            Event::Cold => true,
            Event::Warm => false,
            _ => return Ok::<(), std::convert::Infallible>(()),
        };
        // SAFETY: this VMOD's PRIV_VCL.
        if let Some(registry) = unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) } {
            for o in registry.objects.read().iter() {
                if let Some(seg) = &*o.stats.lock() {
                    seg.hide(hidden);
                }
            }
        }
        Ok(())
    };
    // SAFETY: the context Varnish passed to this event function.
    unsafe { guard_event(ctx, "saintmode", event, f) }
}
