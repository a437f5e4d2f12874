//! The Varnish-side saintmode object, between the entry points (`ffi`) and the pure core
//! (`object`): the director and wrapped-backend pointers around a `Saintmode`, the VCL's
//! registry of objects, the fetch's trail on the workspace, and the bodies of
//! `saintmode.saintmode()` and `blacklist()` once their arguments are converted.

use std::ffi::{c_char, c_uint, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use varnish::ffi::{
    busyobj, director, vmod_priv, vmod_priv_methods, vrt_ctx, VslTag, VCL_BACKEND, VCL_INT,
    VCL_TIME, VMOD_PRIV_METHODS_MAGIC,
};

use crate::blacklist::{Crossing, Digest, Verdict};
use crate::blame::{check_call, find_target, BlacklistError, Blame, Trail};
use crate::clock::{TaskClock, Tick};
use crate::ffi::{DIRECTOR_METHODS, REGISTRY_METHODS};
use crate::object::{Count, Saintmode};
use crate::report::{
    crossing_line, listing_detail, listing_line, no_backend_line, veto_line, Snapshot,
};
use crate::stats::Stats;
use vmod_rt::ctx::{
    VCL_MET_BACKEND_ERROR, VCL_MET_BACKEND_RESPONSE, VCL_MET_DELIVER, VCL_MET_HIT, VCL_MET_MISS,
    VCL_MET_PASS, VCL_MET_PIPE, VCL_MET_PURGE,
};
use vmod_rt::{
    busyobj_of, director_name, director_of, log, priv_task, priv_vcl_arc, req_of, test_panic,
    ws_alloc, SyncMethods, VscSegment,
};

/// Client subroutines that run after `vcl_hash`, where `req->digest` is the request's.
const VCL_MET_AFTER_HASH: c_uint =
    VCL_MET_HIT | VCL_MET_MISS | VCL_MET_PASS | VCL_MET_PIPE | VCL_MET_PURGE | VCL_MET_DELIVER;

pub(crate) const OBJECT_MAGIC: u32 = 0x5a17_3d0e;
pub(crate) const HANDLE_MAGIC: u32 = 0x5a17_4a4e;

/// The VSC class name; its address is what `VRT_VSC_Destroy` checks, so one static string.
static VSC_CLASS: &CStr = c"SAINTMODE";

/// A saintmode object with what Varnish needs around the core: its director and the
/// wrapped backend. Shared (`Arc`) by the VCL handle, the director (its `priv`, released
/// by the `destroy` callback) and the VCL registry. `repr(C)` keeps `magic` first, where
/// `object_of` reads it, as C's `CHECK_OBJ` does.
#[repr(C)]
pub(crate) struct Object {
    pub(crate) magic: u32,
    pub(crate) core: Saintmode,
    /// The wrapped backend or director, referenced with `VRT_Assign_Backend`; NULL once the
    /// director's `release` callback dropped the reference.
    pub(crate) wrapped: AtomicPtr<director>,
    /// Our director, NULL after `__fini`.
    pub(crate) director: AtomicPtr<director>,
    /// The counters' segment, dropped in `__fini`.
    pub(crate) stats: Mutex<Option<VscSegment<Stats>>>,
}

impl Object {
    pub(crate) fn wrapped(&self) -> VCL_BACKEND {
        VCL_BACKEND(self.wrapped.load(Ordering::Acquire))
    }

    /// Health of this director for `digest`: saintmode's verdict, then the wrapped
    /// backend's. With `log_veto` (a fetch, or `is_healthy()`) a refusal is logged as
    /// varnish-modules logs it; `changed`, when given, is always written.
    pub(crate) fn healthy(
        &self,
        ctx: &vrt_ctx,
        digest: Option<&Digest>,
        log_veto: bool,
        changed: *mut VCL_TIME,
    ) -> bool {
        if let Some(bo) = busyobj_of(ctx).filter(|_| resolving(ctx)) {
            // SAFETY: the fetch's trail, used by this thread only; no other borrow of it is
            // live (a resolve callback's borrows end before it asks for health).
            if let Some(t) = unsafe { trail_of(ctx, true).as_mut() } {
                t.begin(bo.retries, response_of(bo));
            }
        }
        self.health(ctx, digest, log_veto, changed)
    }

    /// The director's `resolve`: the wrapped backend or director resolved when `healthy`
    /// says yes, else none; the resolution is noted in the fetch's trail (see `blame`),
    /// found once for both notes (a PRIV_TASK lookup is most of this callback's cost).
    pub(crate) fn resolve(&self, ctx: &vrt_ctx) -> VCL_BACKEND {
        let bo = busyobj_of(ctx);
        let trail = trail_of(ctx, true);
        // SAFETY: the trail belongs to this fetch, used by this thread only; each borrow
        // ends before the nested resolution below, which may borrow it again. (`enter` and
        // `begin` of one attempt commute: each only starts the attempt if it is new.)
        if let (Some(bo), Some(t)) = (bo, unsafe { trail.as_mut() }) {
            t.enter(bo.retries);
            if resolving(ctx) {
                t.begin(bo.retries, response_of(bo));
            }
        }
        let digest = bo.map(|bo| bo.digest);
        let resolved = if self.health(ctx, digest.as_ref(), bo.is_some(), ptr::null_mut()) {
            // SAFETY: valid ctx; `wrapped` is a referenced director (NULL handled by Varnish).
            unsafe { varnish::ffi::VRT_DirectorResolve(ctx, self.wrapped()) }
        } else {
            VCL_BACKEND(ptr::null())
        };
        // SAFETY: as above; the nested resolution is over.
        if let Some(t) = unsafe { trail.as_mut() } {
            t.leave(
                ptr::from_ref(self),
                (!resolved.0.is_null()).then_some(resolved.0),
            );
        }
        resolved
    }

    /// `healthy` without the trail's note.
    fn health(
        &self,
        ctx: &vrt_ctx,
        digest: Option<&Digest>,
        log_veto: bool,
        changed: *mut VCL_TIME,
    ) -> bool {
        let health = self.core.check(digest, &task_clock(ctx));
        if log_veto {
            if let Some(line) = veto_line(health.verdict, &self.core.backend_name) {
                log(ctx, VslTag::VclLog, line.as_str());
            }
        }
        self.log_crossing(ctx, health.crossing);
        let wrapped = self.wrapped();
        if health.verdict != Verdict::Healthy || wrapped.0.is_null() {
            let since = if wrapped.0.is_null() {
                self.core.wrapped_gone(ctx.now.0)
            } else {
                health.changed_at
            };
            // SAFETY: NULL or the caller's out-parameter.
            if let Some(changed) = unsafe { changed.as_mut() } {
                changed.0 = varnish::ffi::vtim_real(since);
            }
            return false;
        }
        wrapped_healthy(ctx, wrapped, changed)
    }

    /// This module's own line for a threshold crossing, once per crossing.
    pub(crate) fn log_crossing(&self, ctx: &vrt_ctx, crossing: Option<Crossing>) {
        if let Some(crossing) = crossing {
            let c = &self.core;
            let line = crossing_line(&c.name, &c.backend_name, crossing, c.threshold());
            log(ctx, VslTag::VclLog, line.as_str());
        }
    }

    /// The live entries (see `Saintmode::live_count`), logging a crossing it records.
    pub(crate) fn live_count(&self, ctx: &vrt_ctx) -> Count {
        let count = self.core.live_count(&task_clock(ctx));
        self.log_crossing(ctx, count.crossing);
        count
    }

    pub(crate) fn snapshot(&self, ctx: &vrt_ctx) -> Snapshot {
        let count = self.live_count(ctx);
        let backend_healthy = wrapped_healthy(ctx, self.wrapped(), ptr::null_mut());
        Snapshot {
            name: self.core.name.clone(),
            backend: self.core.backend_name.clone(),
            count: count.live.live,
            threshold: self.core.threshold(),
            healthy: backend_healthy && !count.over,
            backend_healthy,
        }
    }
}

/// The clocks saintmode reads in a task: monotonic ticks, and the task's `ctx->now`.
fn task_clock(ctx: &vrt_ctx) -> TaskClock {
    TaskClock { wall: ctx.now.0 }
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
pub(crate) struct Registry {
    pub(crate) objects: RwLock<Vec<Arc<Object>>>,
}

/// What `vmod_saintmode__init` hands to Varnish as `struct vmod_saintmode_saintmode *`.
#[repr(C)]
pub struct Handle {
    pub(crate) magic: u32,
    pub(crate) object: Arc<Object>,
    pub(crate) registry: Arc<Registry>,
}

/// # Safety
/// `handle` is NULL or a live object from `__init`.
pub(crate) unsafe fn object_from<'a>(handle: *const Handle) -> Option<&'a Object> {
    // SAFETY: per the contract.
    let h = unsafe { handle.as_ref() }?;
    (h.magic == HANDLE_MAGIC).then_some(&*h.object)
}

/// The object behind one of our directors (`dir->priv`).
pub(crate) fn object_of<'a>(be: VCL_BACKEND) -> Option<&'a Object> {
    let d = director_of(be)?;
    // SAFETY: directors with our methods table carry `Arc::into_raw(Arc<Object>)` as priv,
    // released only by the `destroy` callback, after which Varnish calls no method.
    let o = unsafe { d.priv_.cast::<Object>().as_ref() }?;
    (o.magic == OBJECT_MAGIC).then_some(o)
}

/// The object this task is about: the fetch's digest, or the request's once `vcl_hash` ran.
pub(crate) fn task_digest(ctx: &vrt_ctx) -> Option<Digest> {
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

pub(crate) type FetchTrail = Trail<*const Object, *const director>;

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
pub(crate) fn trail_of(ctx: &vrt_ctx, create: bool) -> *mut FetchTrail {
    if busyobj_of(ctx).is_none() || !ctx.req.is_null() {
        return ptr::null_mut();
    }
    let p = priv_task(ctx, &TRAIL_KEY, create);
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

/// Whether a saintmode callback in this subroutine runs while the fetch's current attempt
/// is being resolved, i.e. before its outcome is known: anywhere but
/// `vcl_backend_response` and `vcl_backend_error`. Such a callback records in the trail
/// what `bo->director_resp` held before the attempt contacted any backend (see `blame`).
fn resolving(ctx: &vrt_ctx) -> bool {
    ctx.method & (VCL_MET_BACKEND_RESPONSE | VCL_MET_BACKEND_ERROR) == 0
}

/// `bo->director_resp`, None for NULL.
fn response_of(bo: &busyobj) -> Option<*const director> {
    (!bo.director_resp.is_null()).then_some(bo.director_resp)
}

/// # Safety
/// As `vmod_saintmode__init`.
pub(crate) unsafe fn init(
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
    // Debug builds: VMOD_SAINTMODE_TEST_PANIC=<object name> panics here, to prove that a
    // panic fails vcl.load (panic_in_init_fails_vcl_load.vtc).
    test_panic("saintmode", &name_str);
    if director_of(backend).is_none() {
        return Err(format!(
            "{name_str}: backend argument must be a backend or director, not none"
        ));
    }
    let threshold = usize::try_from(threshold.0)
        .map_err(|_| format!("{name_str}: threshold must be >= 0 (got {})", threshold.0))?;
    // SAFETY: the PRIV_VCL of this VMOD, passed by Varnish; the fini releases the Arc.
    let registry = unsafe { priv_vcl_arc(priv_vcl, &REGISTRY_METHODS.0, Registry::default) }
        .ok_or_else(|| format!("{name_str}: PRIV_VCL unavailable"))?;
    if ctx.vcl.0.is_null() {
        return Err(format!("{name_str}: no VCL in this context"));
    }
    let stats = VscSegment::<Stats>::new(VSC_CLASS, &vmod_rt::vcl_name(ctx), &name_str);

    let core = Saintmode::new(name_str.clone(), director_name(backend), threshold);
    if let Some(seg) = &stats {
        // SAFETY: the segment lives in `Object::stats` until `__fini`, which detaches the
        // block before dropping it; no task runs on this VCL by then.
        unsafe { core.attach_stats(seg.as_ptr()) };
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
    // Not a static director (VRT_StaticDirector), though it is made here and deleted in
    // `__fini`: objects are finalised in the reverse order of their `new`, so a director
    // declared before this one (`new fb = directors.fallback()` first) still holds ours
    // when our `__fini` runs, and releases it afterwards. Varnish's reference count keeps
    // ours alive until then; a static one would be freed under it.
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

pub(crate) fn blacklist(
    ctx: &vrt_ctx,
    registry: Option<&Registry>,
    expires: f64,
) -> Result<(), BlacklistError> {
    let in_backend_subs = ctx.method & (VCL_MET_BACKEND_RESPONSE | VCL_MET_BACKEND_ERROR) != 0;
    let ttl: Tick = check_call(in_backend_subs, expires)?;
    let registry = registry.ok_or(BlacklistError::NotConfigured)?;
    let bo = busyobj_of(ctx).ok_or(BlacklistError::NoFetch)?;
    let resp = response_of(bo);
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
    let target = match target {
        Blame::Object(o) => o,
        Blame::NoBackendContacted(attempt) => {
            // A retry loop in vcl_backend_error calls this after every attempt, also those
            // saintmode refused: nothing failed, so nothing is listed (and no error).
            let line = no_backend_line(attempt);
            log(ctx, VslTag::VclLog, line.as_str());
            return Ok(());
        }
        Blame::NotFound => ptr::null(),
    };
    // SAFETY: a trail or registry entry: the object lives as long as its director, which
    // lives as long as the VCL this fetch holds a reference on.
    let Some(object) = (unsafe { target.as_ref() }) else {
        return Err(BlacklistError::NoTarget(director_name(VCL_BACKEND(
            bo.director_resp,
        ))));
    };
    let core = &object.core;
    let listing = core.add(&bo.digest, ttl, &task_clock(ctx));
    log(
        ctx,
        VslTag::VclLog,
        listing_line(&core.backend_name, expires).as_str(),
    );
    let detail = listing_detail(&core.name, listing.listed, listing.held, core.threshold());
    log(ctx, VslTag::VclLog, detail.as_str());
    object.log_crossing(ctx, listing.crossing);
    Ok(())
}
