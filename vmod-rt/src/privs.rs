//! PRIV slots. A PRIV_VCL holds one object per VCL, an `Arc<T>` that the slot owns until
//! Varnish calls the methods' `fini` (which calls [`priv_release`]); the methods table is
//! the object's type tag. PRIV_TASK slots live as long as the task.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use varnish::ffi::{self, vmod_priv, vmod_priv_methods, vrt_ctx};

/// The PRIV_VCL object of type `T` tagged with `methods`, made by `make` on first use; None
/// when `p` is NULL or holds something else.
///
/// # Safety
/// `p` is NULL or this module's PRIV_VCL, valid for `'a`, whose object is only ever made by
/// this function (or [`priv_vcl_arc`]) with `methods` for a `T`, and whose `methods.fini`
/// calls [`priv_release::<T>`]. Creation happens in `vcl_init` or an event (CLI thread,
/// single-threaded); later calls only read.
pub unsafe fn priv_vcl<'a, T>(
    p: *mut vmod_priv,
    methods: &'static vmod_priv_methods,
    make: impl FnOnce() -> T,
) -> Option<&'a T> {
    // SAFETY: NULL or the PRIV_VCL per the caller.
    let slot = unsafe { p.as_mut() }?;
    if slot.priv_.is_null() {
        slot.priv_ = Arc::into_raw(Arc::new(make())).cast_mut().cast::<c_void>();
        slot.methods = methods;
    }
    // SAFETY: per the caller, the slot is valid for 'a and tagged objects are Arc<T>s.
    unsafe { priv_vcl_ref(p, methods) }
}

/// As [`priv_vcl`], as a new `Arc` (for objects that outlive a call, e.g. a VCL object's
/// handle on its VCL's registry).
///
/// # Safety
/// As [`priv_vcl`].
pub unsafe fn priv_vcl_arc<T>(
    p: *mut vmod_priv,
    methods: &'static vmod_priv_methods,
    make: impl FnOnce() -> T,
) -> Option<Arc<T>> {
    // SAFETY: same contract.
    let object: &T = unsafe { priv_vcl(p, methods, make) }?;
    let raw = ptr::from_ref(object);
    // SAFETY: `raw` came from `Arc::into_raw` and the PRIV_VCL still owns that count.
    unsafe { Arc::increment_strong_count(raw) };
    // SAFETY: the count taken just above is the one this Arc owns.
    Some(unsafe { Arc::from_raw(raw) })
}

/// The PRIV_VCL object of type `T` tagged with `methods`, if it was made.
///
/// # Safety
/// `p` is NULL or this module's PRIV_VCL, valid for `'a`; objects tagged with `methods` are
/// `Arc<T>`s stored by [`priv_vcl`].
pub unsafe fn priv_vcl_ref<'a, T>(
    p: *const vmod_priv,
    methods: &'static vmod_priv_methods,
) -> Option<&'a T> {
    // SAFETY: per the contract.
    let slot = unsafe { p.as_ref() }?;
    if !ptr::eq(slot.methods, methods) {
        return None;
    }
    // SAFETY: with these methods, `priv` is an `Arc<T>` owned by the PRIV_VCL until its fini.
    unsafe { slot.priv_.cast::<T>().as_ref() }
}

/// Releases the `Arc<T>` a PRIV_VCL owns: the body of its methods' `fini` (run it inside
/// [`crate::guard_callback`]: `T`'s destructor runs here when no one else holds it).
///
/// # Safety
/// `p` is NULL or the pointer [`priv_vcl`] stored for a `T`, released once.
pub unsafe fn priv_release<T>(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: per the contract, an Arc<T> count made by priv_vcl.
        drop(unsafe { Arc::from_raw(p.cast::<T>().cast_const()) });
    }
}

/// The task's PRIV slot for `key` (created when `create`): NULL outside a task or when
/// the workspace is exhausted, else a slot valid until the task ends. Only the address of
/// `key` matters: a `static` of the module makes it unique.
pub fn priv_task<K>(ctx: &vrt_ctx, key: &'static K, create: bool) -> *mut vmod_priv {
    let key = ptr::from_ref(key).cast::<c_void>();
    // SAFETY: a checked task context; `key` is only compared as an address;
    // VRT_priv_task(_get) return NULL or the task's slot.
    unsafe {
        if create {
            ffi::VRT_priv_task(ctx, key)
        } else {
            ffi::VRT_priv_task_get(ctx, key)
        }
    }
}
