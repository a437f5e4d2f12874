//! The entry points Varnish calls: the functions named by the generated
//! `vcc_saintmode_if.h` and the director callbacks. Each converts its arguments, calls the
//! plain Rust of `object`, `blame` and `report`, and converts the result; the Varnish
//! primitives they use are in `varnish`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use varnish::ffi::{
    director, vdi_methods, vmod_priv, vmod_priv_methods, vrt_ctx, vsb, VslTag, VCL_BACKEND,
    VCL_BOOL, VCL_DURATION, VCL_INT, VCL_STRING, VCL_TIME, VDI_METHODS_MAGIC,
    VMOD_PRIV_METHODS_MAGIC,
};

use crate::blacklist::{Digest, Verdict};
use crate::blame::{check_call, find_target, BlacklistError, Trail};
use crate::clock::{Clock, Monotonic, Tick};
use crate::object::{Health, Saintmode};
use crate::report::{
    crossing_line, list_text, listing_detail, listing_line, status_json, veto_line, Snapshot,
};
use crate::stats::Stats;
use crate::varnish::{
    busyobj_of, check_ctx, director_name, director_of, fail, guard_callback, guard_task, log,
    priv_arc_release, priv_task, priv_vcl_arc, priv_vcl_ref, req_of, vsb_append, ws_alloc,
    ws_copy_str, SyncMethods, VscSegment, VCL_EVENT_COLD, VCL_EVENT_WARM, VCL_MET_BACKEND_ERROR,
    VCL_MET_BACKEND_RESPONSE, VCL_MET_DELIVER, VCL_MET_HIT, VCL_MET_MISS, VCL_MET_PASS,
    VCL_MET_PIPE, VCL_MET_PURGE,
};

/// Client subroutines that run after `vcl_hash`, where `req->digest` is the request's.
const VCL_MET_AFTER_HASH: c_uint =
    VCL_MET_HIT | VCL_MET_MISS | VCL_MET_PASS | VCL_MET_PIPE | VCL_MET_PURGE | VCL_MET_DELIVER;

const OBJECT_MAGIC: u32 = 0x5a17_3d0e;
const HANDLE_MAGIC: u32 = 0x5a17_4a4e;

static VERSION: &CStr = c"saintmode-0.1.0";
/// The VSC class name; its address is what `VRT_VSC_Destroy` checks, so one static string.
static VSC_CLASS: &CStr = c"SAINTMODE";

/// A saintmode object with what Varnish needs around the core: its director and the
/// wrapped backend. Shared (`Arc`) by the VCL handle, the director (its `priv`, released
/// by the `destroy` callback) and the VCL registry.
struct Object {
    magic: u32,
    core: Saintmode,
    /// The wrapped backend or director, referenced with `VRT_Assign_Backend`; NULL once the
    /// director's `release` callback dropped the reference.
    wrapped: AtomicPtr<director>,
    /// Our director, NULL after `__fini`.
    director: AtomicPtr<director>,
    /// The counters' segment, dropped in `__fini`.
    stats: Mutex<Option<VscSegment<Stats>>>,
}

impl Object {
    fn wrapped(&self) -> VCL_BACKEND {
        VCL_BACKEND(self.wrapped.load(Ordering::Acquire))
    }

    /// Health of this director for `digest`: saintmode's verdict, then the wrapped
    /// backend's. Logs like varnish-modules when `vsl_task` (a fetch, or `is_healthy()`);
    /// always writes `changed` when given.
    fn healthy(
        &self,
        ctx: &vrt_ctx,
        digest: Option<&Digest>,
        log_veto: bool,
        changed: *mut VCL_TIME,
    ) -> bool {
        let health = self.core.check(digest, Monotonic.now(), ctx.now.0);
        self.report(ctx, &health, log_veto);
        if health.verdict != Verdict::Healthy {
            // SAFETY: NULL or the caller's out-parameter.
            if let Some(changed) = unsafe { changed.as_mut() } {
                changed.0 = varnish::ffi::vtim_real(health.changed_at);
            }
            return false;
        }
        wrapped_healthy(ctx, self.wrapped(), changed)
    }

    fn report(&self, ctx: &vrt_ctx, health: &Health, log_veto: bool) {
        if log_veto {
            if let Some(line) = veto_line(health.verdict, &self.core.backend_name) {
                log(ctx, VslTag::VclLog, line.as_str());
            }
        }
        if let Some(crossing) = health.crossing {
            let c = &self.core;
            let line = crossing_line(&c.name, &c.backend_name, crossing, c.threshold());
            log(ctx, VslTag::VclLog, line.as_str());
        }
    }

    fn snapshot(&self, ctx: &vrt_ctx) -> Snapshot {
        let (count, crossing) = self.core.live_count(Monotonic.now(), ctx.now.0);
        if let Some(crossing) = crossing {
            let c = &self.core;
            let line = crossing_line(&c.name, &c.backend_name, crossing, c.threshold());
            log(ctx, VslTag::VclLog, line.as_str());
        }
        let threshold = self.core.threshold();
        let backend_healthy = wrapped_healthy(ctx, self.wrapped(), ptr::null_mut());
        Snapshot {
            name: self.core.name.clone(),
            backend: self.core.backend_name.clone(),
            count,
            threshold,
            healthy: backend_healthy && (threshold == 0 || count < threshold),
            backend_healthy,
        }
    }
}

fn wrapped_healthy(ctx: &vrt_ctx, wrapped: VCL_BACKEND, changed: *mut VCL_TIME) -> bool {
    if wrapped.0.is_null() {
        return false;
    }
    // SAFETY: checked ctx; `wrapped` is referenced until `release`; `changed` is NULL or
    // the caller's out-parameter.
    unsafe { varnish::ffi::VRT_Healthy(ctx, wrapped, changed).0 != 0 }
}

/// The saintmode objects of one VCL, in declaration order (the `PRIV_VCL`).
#[derive(Default)]
struct Registry {
    objects: RwLock<Vec<Arc<Object>>>,
}

unsafe extern "C" fn registry_fini(_ctx: *const vrt_ctx, p: *mut c_void) {
    guard_callback("saintmode registry fini", (), || {
        // SAFETY: the Arc stored by `priv_vcl_arc`, released once here.
        unsafe { priv_arc_release::<Registry>(p) }
    });
}

static REGISTRY_METHODS: SyncMethods<vmod_priv_methods> = SyncMethods(vmod_priv_methods {
    magic: VMOD_PRIV_METHODS_MAGIC,
    type_: c"saintmode registry".as_ptr(),
    fini: Some(registry_fini),
});

/// What `vmod_saintmode__init` hands to Varnish as `struct vmod_saintmode_saintmode *`.
pub struct Handle {
    magic: u32,
    object: Arc<Object>,
    registry: Arc<Registry>,
}

/// # Safety
/// `handle` is NULL or a live object from `__init`.
unsafe fn object_from<'a>(handle: *const Handle) -> Option<&'a Object> {
    // SAFETY: per the contract.
    let h = unsafe { handle.as_ref() }?;
    (h.magic == HANDLE_MAGIC).then_some(&*h.object)
}

/// The object behind one of our directors (`dir->priv`).
fn object_of<'a>(be: VCL_BACKEND) -> Option<&'a Object> {
    let d = director_of(be)?;
    // SAFETY: directors with our methods table carry `Arc::into_raw(Arc<Object>)` as priv,
    // released only by the `destroy` callback, after which Varnish calls no method.
    let o = unsafe { d.priv_.cast::<Object>().as_ref() }?;
    (o.magic == OBJECT_MAGIC).then_some(o)
}

/// The object this task is about: the fetch's digest, or the request's once `vcl_hash` ran.
fn task_digest(ctx: &vrt_ctx) -> Option<Digest> {
    if let Some(bo) = busyobj_of(ctx) {
        return Some(bo.digest);
    }
    if ctx.method & VCL_MET_AFTER_HASH != 0 {
        return req_of(ctx).map(|r| r.digest);
    }
    None
}

// ---------------------------------------------------------------------------------------
// The fetch's trail (see `blame`): on the busyobj's workspace, found through a PRIV_TASK.

type FetchTrail = Trail<*const Object, *const director>;

/// The PRIV_TASK key: an address unique to this VMOD.
static TRAIL_KEY: u8 = 0;

/// Marks PRIV_TASK slots holding a `FetchTrail`; no `fini`: the workspace goes with the task.
static TRAIL_METHODS: SyncMethods<vmod_priv_methods> = SyncMethods(vmod_priv_methods {
    magic: VMOD_PRIV_METHODS_MAGIC,
    type_: c"saintmode trail".as_ptr(),
    fini: None,
});

/// The fetch's trail; `create` allocates it on the workspace when missing. NULL outside a
/// backend task or when the workspace is exhausted.
fn trail_of(ctx: &vrt_ctx, create: bool) -> *mut FetchTrail {
    if busyobj_of(ctx).is_none() || !ctx.req.is_null() {
        return ptr::null_mut();
    }
    let p = priv_task(ctx, (&raw const TRAIL_KEY).cast::<c_void>(), create);
    // SAFETY: NULL or this task's slot for our key, used by this thread only, alive for the
    // task; no other reference to it exists during this call.
    let Some(p) = (unsafe { p.as_mut() }) else {
        return ptr::null_mut();
    };
    if p.priv_.is_null() {
        if !create {
            return ptr::null_mut();
        }
        let trail = ws_alloc::<FetchTrail>(ctx);
        if trail.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: fresh workspace space sized and aligned for a FetchTrail.
        unsafe { trail.write(Trail::new((ptr::null(), ptr::null()))) };
        p.priv_ = trail.cast::<c_void>();
        p.methods = &TRAIL_METHODS.0;
    }
    if !ptr::eq(p.methods, &TRAIL_METHODS.0) {
        return ptr::null_mut();
    }
    p.priv_.cast::<FetchTrail>()
}

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
        let bo = busyobj_of(ctx);
        let trail = trail_of(ctx, true);
        // SAFETY: the trail belongs to this fetch, used by this thread only; each borrow ends
        // before the nested resolution below, which may borrow it again.
        if let Some(t) = unsafe { trail.as_mut() } {
            t.enter(bo.map_or(0, |bo| bo.retries));
        }
        let digest = bo.map(|bo| bo.digest);
        let resolved = if o.healthy(ctx, digest.as_ref(), bo.is_some(), ptr::null_mut()) {
            // SAFETY: valid ctx; `wrapped` is a referenced director (NULL handled by Varnish).
            unsafe { varnish::ffi::VRT_DirectorResolve(ctx, o.wrapped()) }
        } else {
            none
        };
        // SAFETY: as above; the nested resolution is over.
        if let Some(t) = unsafe { trail.as_mut() } {
            t.leave(
                ptr::from_ref(o),
                (!resolved.0.is_null()).then_some(resolved.0),
            );
        }
        resolved
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
        vsb_append(vsb, &list_text(&o.snapshot(ctx), pflag != 0, jflag != 0));
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

static DIRECTOR_METHODS: SyncMethods<vdi_methods> = SyncMethods(vdi_methods {
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
    guard_task(ctx, "saintmode.saintmode()", (), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return;
        };
        // SAFETY: forwarded from Varnish as is.
        if let Err(msg) = unsafe { init(ctx, handle, vcl_name, priv_vcl, backend, threshold) } {
            fail(ctx, &format!("saintmode.saintmode(): {msg}"));
        }
    });
}

/// # Safety
/// As `vmod_saintmode__init`.
unsafe fn init(
    ctx: &vrt_ctx,
    handle: *mut *mut Handle,
    vcl_name: *const c_char,
    priv_vcl: *mut vmod_priv,
    backend: VCL_BACKEND,
    threshold: VCL_INT,
) -> Result<(), String> {
    if handle.is_null() || vcl_name.is_null() {
        return Err("called without an object slot".into());
    }
    // SAFETY: NUL-terminated instance name from VCC.
    let name = unsafe { CStr::from_ptr(vcl_name) };
    let name_str = name.to_string_lossy().into_owned();
    // A test-only trigger (debug builds): proves that a panic here fails vcl.load.
    #[cfg(debug_assertions)]
    if name_str == "panic_in_init_for_test" {
        panic!("test-only panic trigger");
    }
    if director_of(backend).is_none() {
        return Err(format!(
            "{name_str}: backend argument must be a backend or director, not none"
        ));
    }
    let threshold = usize::try_from(threshold.0)
        .map_err(|_| format!("{name_str}: threshold must be >= 0 (got {})", threshold.0))?;
    // SAFETY: the PRIV_VCL of this VMOD, passed by Varnish; the fini releases the Arc.
    let registry = unsafe { priv_vcl_arc::<Registry>(priv_vcl, &REGISTRY_METHODS.0) }
        .ok_or_else(|| format!("{name_str}: PRIV_VCL unavailable"))?;
    if ctx.vcl.0.is_null() {
        return Err(format!("{name_str}: no VCL in this context"));
    }
    // SAFETY: ctx->vcl is the VCL being loaded; VCL_Name returns its NUL-terminated name.
    let vcl = unsafe { CStr::from_ptr(varnish::ffi::VCL_Name(ctx.vcl.0)) }.to_string_lossy();
    let stats = VscSegment::<Stats>::new(VSC_CLASS, &format!("{vcl}.{name_str}"));

    let core = Saintmode::new(name_str.clone(), director_name(backend), threshold);
    if let Some(seg) = &stats {
        // SAFETY: the segment lives in `Object::stats` until `__fini`, which detaches the
        // block before dropping it; no task runs on this VCL by then.
        unsafe { core.attach_stats(seg.block()) };
    }
    let mut wrapped = VCL_BACKEND(ptr::null());
    // SAFETY: takes a reference on the wrapped director, dropped by `dir_release`.
    unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, backend) };
    let object = Arc::new(Object {
        magic: OBJECT_MAGIC,
        core,
        wrapped: AtomicPtr::new(wrapped.0.cast_mut()),
        director: AtomicPtr::new(ptr::null_mut()),
        stats: Mutex::new(stats),
    });
    let director_priv = Arc::into_raw(Arc::clone(&object))
        .cast_mut()
        .cast::<c_void>();
    // SAFETY: static methods table; priv is an owned Arc count, given to the director;
    // the name goes through "%s".
    let dir = unsafe {
        varnish::ffi::VRT_AddDirector(
            ctx,
            &DIRECTOR_METHODS.0,
            director_priv,
            c"%s".as_ptr(),
            name.as_ptr(),
        )
    };
    if dir.0.is_null() {
        // No director: no callback will release its count, nor the wrapped reference.
        // SAFETY: the count from `Arc::into_raw` just above, not handed out.
        drop(unsafe { Arc::from_raw(director_priv.cast::<Object>().cast_const()) });
        let mut wrapped = VCL_BACKEND(object.wrapped.swap(ptr::null_mut(), Ordering::AcqRel));
        // SAFETY: drops the reference taken above.
        unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, VCL_BACKEND(ptr::null())) };
        object.core.detach_stats();
        return Err(format!(
            "{name_str}: cannot create the director (VCL cooling?)"
        ));
    }
    object.director.store(dir.0.cast_mut(), Ordering::Release);
    registry.objects.write().push(Arc::clone(&object));
    let boxed = Box::new(Handle {
        magic: HANDLE_MAGIC,
        object,
        registry,
    });
    // SAFETY: `handle` is the object slot VCC gave us (checked non-NULL).
    unsafe { *handle = Box::into_raw(boxed) };
    Ok(())
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
            // SAFETY: our director; `release` drops the wrapped reference and `destroy` (now
            // or when the last holder lets go) drops the director's Arc count.
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
    guard_task(ctx, "sm.backend()", VCL_BACKEND(ptr::null()), || {
        // SAFETY: per the contract.
        let o = unsafe { object_from(handle) };
        VCL_BACKEND(o.map_or(ptr::null(), |o| o.director.load(Ordering::Acquire)))
    })
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
    guard_task(ctx, "sm.blacklist_count()", VCL_INT(0), || {
        // SAFETY: per the contract.
        let (Some(ctx), Some(o)) = (unsafe { check_ctx(ctx) }, unsafe { object_from(handle) })
        else {
            return VCL_INT(0);
        };
        let (count, crossing) = o.core.live_count(Monotonic.now(), ctx.now.0);
        let health = Health {
            verdict: Verdict::Healthy,
            crossing,
            changed_at: 0.0,
        };
        o.report(ctx, &health, false);
        VCL_INT(i64::try_from(count).unwrap_or(i64::MAX))
    })
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
    guard_task(ctx, "sm.is_healthy()", VCL_BOOL(0), || {
        // SAFETY: per the contract.
        let (Some(ctx), Some(o)) = (unsafe { check_ctx(ctx) }, unsafe { object_from(handle) })
        else {
            return VCL_BOOL(0);
        };
        let digest = task_digest(ctx);
        VCL_BOOL(c_uint::from(o.healthy(
            ctx,
            digest.as_ref(),
            true,
            ptr::null_mut(),
        )))
    })
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
    guard_task(ctx, function, (), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return;
        };
        // SAFETY: this VMOD's PRIV_VCL.
        let registry = unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) };
        if let Err(why) = blacklist(ctx, registry, expires.0 .0) {
            log(ctx, VslTag::VclError, &format!("{function}: {why}"));
        }
    });
}

fn blacklist(
    ctx: &vrt_ctx,
    registry: Option<&Registry>,
    expires: f64,
) -> Result<(), BlacklistError> {
    let in_backend_subs = ctx.method & (VCL_MET_BACKEND_RESPONSE | VCL_MET_BACKEND_ERROR) != 0;
    let ttl: Tick = check_call(in_backend_subs, expires)?;
    let registry = registry.ok_or(BlacklistError::NotConfigured)?;
    let bo = busyobj_of(ctx).ok_or(BlacklistError::NoFetch)?;
    let resp = (!bo.director_resp.is_null()).then_some(bo.director_resp);
    // SAFETY: the fetch's trail, used by this thread only, not borrowed elsewhere now.
    let trail = unsafe { trail_of(ctx, false).as_ref() };
    let target = {
        let objects = registry.objects.read();
        let wrapping = objects.iter().map(|o| {
            (
                Arc::as_ptr(o),
                o.wrapped.load(Ordering::Acquire).cast_const(),
            )
        });
        find_target(trail, bo.retries, resp, wrapping)
    };
    // SAFETY: a trail or registry entry: the object lives as long as its director, which
    // lives as long as the VCL this fetch holds a reference on.
    let Some(object) = (unsafe { target.and_then(|t| t.as_ref()) }) else {
        return Err(BlacklistError::NoTarget(director_name(VCL_BACKEND(
            bo.director_resp,
        ))));
    };
    let core = &object.core;
    let listing = core.add(&bo.digest, Monotonic.now(), ttl, ctx.now.0);
    log(
        ctx,
        VslTag::VclLog,
        listing_line(&core.backend_name, expires).as_str(),
    );
    let detail = listing_detail(&core.name, listing.listed, listing.held, core.threshold());
    log(ctx, VslTag::VclLog, detail.as_str());
    let health = Health {
        verdict: Verdict::Healthy,
        crossing: listing.crossing,
        changed_at: 0.0,
    };
    object.report(ctx, &health, false);
    Ok(())
}

/// `saintmode.status()`. On workspace overflow it logs and returns NULL (no string), as the
/// C module does, instead of failing the task.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_status(ctx: *const vrt_ctx, priv_vcl: *mut vmod_priv) -> VCL_STRING {
    guard_task(ctx, "saintmode.status()", VCL_STRING(ptr::null()), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return VCL_STRING(ptr::null());
        };
        // SAFETY: this VMOD's PRIV_VCL.
        let objects: Vec<Arc<Object>> =
            unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) }
                .map(|r| r.objects.read().clone())
                .unwrap_or_default();
        let snapshots: Vec<Snapshot> = objects.iter().map(|o| o.snapshot(ctx)).collect();
        let copy = ws_copy_str(ctx, &status_json(&snapshots));
        if copy.is_null() {
            log(
                ctx,
                VslTag::VclError,
                "saintmode.status(): workspace overflow",
            );
        }
        VCL_STRING(copy)
    })
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
    _ctx: *const vrt_ctx,
    priv_vcl: *mut vmod_priv,
    event: c_uint,
) -> c_int {
    // A panic refuses a WARM event (non-zero); other events cannot be refused.
    let on_panic = c_int::from(event == VCL_EVENT_WARM);
    guard_callback("saintmode event", on_panic, || {
        let hidden = match event {
            VCL_EVENT_COLD => true,
            VCL_EVENT_WARM => false,
            _ => return 0,
        };
        // SAFETY: this VMOD's PRIV_VCL.
        if let Some(registry) = unsafe { priv_vcl_ref::<Registry>(priv_vcl, &REGISTRY_METHODS.0) } {
            for o in registry.objects.read().iter() {
                if let Some(seg) = &*o.stats.lock() {
                    seg.hide(hidden);
                }
            }
        }
        0
    })
}
