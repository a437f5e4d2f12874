//! The only module that talks to Varnish: the `extern "C"` functions named by the generated
//! `vcc_saintmode_if.h`, the director callbacks, the VSC segment and the VSL lines. Every raw
//! pointer is checked (NULL and magic) before use, and every entry point catches panics so
//! none crosses into varnishd. The logic lives in `blacklist` and `report`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use varnish::ffi::{
    busyobj, director, req, vdi_methods, vmod_priv, vmod_priv_methods, vrt_ctx, vsb, vsc_seg,
    VslTag, BUSYOBJ_MAGIC, DIRECTOR_MAGIC, REQ_MAGIC, VCL_BACKEND, VCL_BOOL, VCL_DURATION, VCL_INT,
    VCL_STRING, VCL_TIME, VDI_METHODS_MAGIC, VMOD_PRIV_METHODS_MAGIC, VRT_CTX_MAGIC,
};

use crate::blacklist::{Blacklist, Changes, Crossing, Digest, Listed, Verdict};
use crate::report::{list_text, status_json, Snapshot};

// `ctx->method` bits, from Varnish's generated `vcl.h` (stable across 7.x).
const VCL_MET_PIPE: c_uint = 1 << 2;
const VCL_MET_PASS: c_uint = 1 << 3;
const VCL_MET_PURGE: c_uint = 1 << 5;
const VCL_MET_MISS: c_uint = 1 << 6;
const VCL_MET_HIT: c_uint = 1 << 7;
const VCL_MET_DELIVER: c_uint = 1 << 8;
const VCL_MET_BACKEND_RESPONSE: c_uint = 1 << 11;
const VCL_MET_BACKEND_ERROR: c_uint = 1 << 12;
/// Client subroutines that run after `vcl_hash`, where `req->digest` is the request's.
const VCL_MET_AFTER_HASH: c_uint =
    VCL_MET_HIT | VCL_MET_MISS | VCL_MET_PASS | VCL_MET_PIPE | VCL_MET_PURGE | VCL_MET_DELIVER;

// `enum vcl_event_e` values; taken as an integer so an unknown value is not UB.
const VCL_EVENT_WARM: c_uint = 1;
const VCL_EVENT_COLD: c_uint = 2;

const SAINTMODE_MAGIC: u32 = 0x5a17_3d0e;
const HANDLE_MAGIC: u32 = 0x5a17_4a4e;

static VERSION: &CStr = c"saintmode-0.1.0";

// ---------------------------------------------------------------------------------------
// Counters

/// Per-object counters, published as `SAINTMODE.<vcl>.<object>.<field>`.
#[derive(varnish::VscMetric)]
#[repr(C)]
pub struct Stats {
    /// Entries currently held
    ///
    /// Objects on the list; expired entries leave at the next operation on the object.
    #[gauge]
    blacklisted: AtomicU64,
    /// Calls of blacklist()
    ///
    /// Calls of saintmode.blacklist() or denylist() that reached this object.
    #[counter]
    calls: AtomicU64,
    /// Refreshed entries
    ///
    /// Calls for an object already listed: expiry extended, not counted twice.
    #[counter]
    refreshed: AtomicU64,
    /// Expired entries
    ///
    /// Entries removed because they expired.
    #[counter]
    expired: AtomicU64,
    /// Threshold reached
    ///
    /// Times the live count reached the threshold (backend sick for all objects).
    #[counter]
    threshold_reached: AtomicU64,
    /// Threshold cleared
    ///
    /// Times the live count went back under the threshold.
    #[counter]
    threshold_cleared: AtomicU64,
}

/// The VSC class name; its address is what `VRT_VSC_Destroy` checks, so one static string.
static VSC_CLASS: &CStr = c"SAINTMODE";

/// An allocated VSC segment holding `Stats`.
struct StatsSegment {
    stats: *const Stats,
    seg: *mut vsc_seg,
}

// SAFETY: the segment is shared memory owned by varnishd until `VRT_VSC_Destroy`; `Stats`
// holds only atomics, and the segment is destroyed once, by `Drop`, on the CLI thread.
unsafe impl Send for StatsSegment {}

impl StatsSegment {
    /// Allocates `SAINTMODE.<ident>`.
    fn new(ident: &CStr) -> Option<Self> {
        use varnish::VscMetric as _;
        let doc = Stats::get_metadata();
        let mut seg: *mut vsc_seg = ptr::null_mut();
        // SAFETY: called from vcl_init (CLI thread) in the child; the class name is static
        // (Varnish keeps the pointer), the doc is a static NUL-terminated JSON, and the
        // identifier goes through "%s", so it is never read as a format.
        let stats = unsafe {
            varnish::ffi::VRT_VSC_AllocVariadic(
                ptr::null_mut(),
                &mut seg,
                VSC_CLASS.as_ptr(),
                size_of::<Stats>(),
                doc.as_ptr().cast::<u8>(),
                doc.to_bytes().len(),
                c"%s".as_ptr(),
                ident.as_ptr(),
            )
        };
        if stats.is_null() || seg.is_null() {
            return None;
        }
        Some(Self {
            stats: stats.cast::<Stats>(),
            seg,
        })
    }

    fn stats(&self) -> &Stats {
        // SAFETY: non-NULL and sized for `Stats` at allocation; valid until `Drop`.
        unsafe { &*self.stats }
    }

    fn hide(&self, hidden: bool) {
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

impl Drop for StatsSegment {
    fn drop(&mut self) {
        // SAFETY: same class pointer as at allocation, live segment, destroyed once.
        unsafe { varnish::ffi::VRT_VSC_Destroy(VSC_CLASS.as_ptr(), self.seg) };
    }
}

// ---------------------------------------------------------------------------------------
// The saintmode object

/// What the lock protects: the list and the counters it drives.
struct State {
    list: Blacklist,
    /// `None` after `__fini` (or when the segment could not be allocated).
    stats: Option<StatsSegment>,
}

impl State {
    /// Applies the counters of an operation; returns the held count for logs.
    fn record(&self, changes: Changes) -> usize {
        let held = self.list.held();
        if let Some(seg) = &self.stats {
            let s = seg.stats();
            if changes.expired > 0 {
                s.expired.fetch_add(changes.expired, Ordering::Relaxed);
            }
            match changes.crossing {
                Some(Crossing::Reached) => s.threshold_reached.fetch_add(1, Ordering::Relaxed),
                Some(Crossing::Cleared) => s.threshold_cleared.fetch_add(1, Ordering::Relaxed),
                None => 0,
            };
            s.blacklisted.store(held as u64, Ordering::Relaxed);
        }
        held
    }
}

/// One `saintmode.saintmode()` instance. Shared (`Arc`) by the VCL handle, the director
/// (its `priv`, released by the `destroy` callback) and the VCL registry.
pub struct Saintmode {
    magic: u32,
    name: String,
    backend_name: String,
    /// The wrapped backend or director, referenced with `VRT_Assign_Backend`; NULL once the
    /// director's `release` callback dropped the reference.
    wrapped: AtomicPtr<director>,
    /// Our director, NULL after `__fini`.
    director: AtomicPtr<director>,
    state: Mutex<State>,
}

impl Saintmode {
    fn wrapped(&self) -> VCL_BACKEND {
        VCL_BACKEND(self.wrapped.load(Ordering::Acquire))
    }

    fn threshold(&self) -> usize {
        self.state.lock().list.threshold()
    }

    /// Exact live count now, with its counters and crossing log.
    fn live_count(&self, ctx: &vrt_ctx) -> usize {
        let (count, changes, held) = {
            let mut st = self.state.lock();
            let (count, changes) = st.list.live_count(ctx.now.0);
            let held = st.record(changes);
            (count, changes, held)
        };
        self.log_crossing(ctx, changes.crossing, held);
        count
    }

    fn log_crossing(&self, ctx: &vrt_ctx, crossing: Option<Crossing>, held: usize) {
        let Some(crossing) = crossing else { return };
        let threshold = self.threshold();
        let msg = match crossing {
            Crossing::Reached => format!(
                "saintmode: {}: threshold reached for backend {} ({held}/{threshold}), \
                 sick for all objects",
                self.name, self.backend_name
            ),
            Crossing::Cleared => format!(
                "saintmode: {}: back under threshold for backend {} (threshold {threshold})",
                self.name, self.backend_name
            ),
        };
        log(ctx, VslTag::VclLog, &msg);
    }

    /// Saintmode's part of the health of this director for `digest`, then the wrapped
    /// backend's own health.
    fn healthy(&self, ctx: &vrt_ctx, digest: Option<&Digest>, changed: *mut VCL_TIME) -> bool {
        let (verdict, changes, held) = {
            let mut st = self.state.lock();
            let (verdict, changes) = st.list.check(digest, ctx.now.0);
            let held = st.record(changes);
            (verdict, changes, held)
        };
        self.log_crossing(ctx, changes.crossing, held);
        match verdict {
            Verdict::Healthy => {}
            Verdict::Listed | Verdict::OverThreshold => {
                if !ctx.bo.is_null() {
                    let why = if verdict == Verdict::Listed {
                        "object blacklisted"
                    } else {
                        "hit threshold"
                    };
                    log(
                        ctx,
                        VslTag::VclLog,
                        &format!(
                            "saintmode: unhealthy: {why} for backend {}",
                            self.backend_name
                        ),
                    );
                }
                return false;
            }
        }
        let wrapped = self.wrapped();
        if wrapped.0.is_null() {
            return false;
        }
        // SAFETY: ctx was checked by the caller; `wrapped` is referenced until `release`.
        unsafe { varnish::ffi::VRT_Healthy(ctx, wrapped, changed).0 != 0 }
    }

    fn snapshot(&self, ctx: &vrt_ctx) -> Snapshot {
        let count = self.live_count(ctx);
        let threshold = self.threshold();
        let wrapped = self.wrapped();
        let wrapped_healthy = !wrapped.0.is_null()
            // SAFETY: ctx was checked by the caller; `wrapped` is referenced until `release`.
            && unsafe { varnish::ffi::VRT_Healthy(ctx, wrapped, ptr::null_mut()).0 != 0 };
        Snapshot {
            name: self.name.clone(),
            backend: self.backend_name.clone(),
            count,
            threshold,
            healthy: wrapped_healthy && (threshold == 0 || count < threshold),
            backend_healthy: wrapped_healthy,
        }
    }
}

/// The saintmode objects of one VCL, in declaration order (the `PRIV_VCL`).
#[derive(Default)]
struct Registry {
    objects: RwLock<Vec<Arc<Saintmode>>>,
}

/// What `vmod_saintmode__init` hands to Varnish as `struct vmod_saintmode_saintmode *`.
pub struct Handle {
    magic: u32,
    object: Arc<Saintmode>,
    registry: Arc<Registry>,
}

// ---------------------------------------------------------------------------------------
// Small helpers over raw pointers

/// Checks a `VRT_CTX` pointer like `CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC)`.
///
/// # Safety
/// `ctx` is NULL or points to a `vrt_ctx` valid for the duration of the call.
unsafe fn check_ctx<'a>(ctx: *const vrt_ctx) -> Option<&'a vrt_ctx> {
    // SAFETY: NULL or valid per the contract.
    let ctx = unsafe { ctx.as_ref() }?;
    (ctx.magic == VRT_CTX_MAGIC).then_some(ctx)
}

fn busyobj_of(ctx: &vrt_ctx) -> Option<&busyobj> {
    // SAFETY: a non-NULL `ctx->bo` points to the task's busyobj, alive during the call.
    let bo = unsafe { ctx.bo.as_ref() }?;
    (bo.magic == BUSYOBJ_MAGIC).then_some(bo)
}

fn req_of(ctx: &vrt_ctx) -> Option<&req> {
    // SAFETY: a non-NULL `ctx->req` points to the task's req, alive during the call.
    let req = unsafe { ctx.req.as_ref() }?;
    (req.magic == REQ_MAGIC).then_some(req)
}

/// The object this task is about: the fetch's digest, or the request's once `vcl_hash` ran.
fn digest_of(ctx: &vrt_ctx) -> Option<Digest> {
    if let Some(bo) = busyobj_of(ctx) {
        return Some(bo.digest);
    }
    if ctx.method & VCL_MET_AFTER_HASH != 0 {
        return req_of(ctx).map(|r| r.digest);
    }
    None
}

fn director_of<'a>(be: VCL_BACKEND) -> Option<&'a director> {
    // SAFETY: a non-NULL VCL_BACKEND points to a director that outlives the VCL task.
    let d = unsafe { be.0.as_ref() }?;
    (d.magic == DIRECTOR_MAGIC).then_some(d)
}

fn director_name(be: VCL_BACKEND) -> String {
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

/// The saintmode object behind our director (`dir->priv`).
fn object_of<'a>(be: VCL_BACKEND) -> Option<&'a Saintmode> {
    let d = director_of(be)?;
    // SAFETY: directors with our methods table carry `Arc::into_raw(Arc<Saintmode>)` as priv,
    // released only by the `destroy` callback, after which Varnish calls no method.
    let sm = unsafe { d.priv_.cast::<Saintmode>().as_ref() }?;
    (sm.magic == SAINTMODE_MAGIC).then_some(sm)
}

/// A VSL record on the task's log, or a global record outside tasks.
fn log(ctx: &vrt_ctx, tag: VslTag, msg: &str) {
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

/// Fails the VCL task (or `vcl_init`) with `msg`.
fn fail(ctx: &vrt_ctx, msg: &str) {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid ctx; the message goes through "%s".
    unsafe { varnish::ffi::VRT_fail(ctx, c"%s".as_ptr(), msg.as_ptr()) };
}

/// The registry stored in a `PRIV_VCL`, if any.
///
/// # Safety
/// `priv_` is NULL or the `PRIV_VCL` Varnish passes for this VMOD.
unsafe fn registry_of<'a>(priv_: *mut vmod_priv) -> Option<&'a Registry> {
    // SAFETY: per the contract.
    let p = unsafe { priv_.as_ref() }?;
    if p.methods != &raw const REGISTRY_METHODS.0 {
        return None;
    }
    // SAFETY: with our methods, `priv` is `Arc::into_raw(Arc<Registry>)`, freed by the fini.
    unsafe { p.priv_.cast::<Registry>().as_ref() }
}

/// Runs `f`, turning a panic into `default` (no unwinding into varnishd).
fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

struct SyncMethods<T>(T);
// SAFETY: the wrapped tables hold only pointers to static strings and functions.
unsafe impl<T> Sync for SyncMethods<T> {}

// ---------------------------------------------------------------------------------------
// PRIV_VCL: the registry

unsafe extern "C" fn registry_fini(_ctx: *const vrt_ctx, p: *mut c_void) {
    guard((), || {
        if !p.is_null() {
            // SAFETY: set by `registry_for` from `Arc::into_raw`, released once here.
            drop(unsafe { Arc::from_raw(p.cast::<Registry>()) });
        }
    });
}

static REGISTRY_METHODS: SyncMethods<vmod_priv_methods> = SyncMethods(vmod_priv_methods {
    magic: VMOD_PRIV_METHODS_MAGIC,
    type_: c"saintmode registry".as_ptr(),
    fini: Some(registry_fini),
});

/// The VCL's registry, created on first use (in `vcl_init`, on the CLI thread).
///
/// # Safety
/// `priv_` is the non-NULL `PRIV_VCL` of this VMOD.
unsafe fn registry_for(priv_: *mut vmod_priv) -> Option<Arc<Registry>> {
    // SAFETY: per the contract.
    let p = unsafe { priv_.as_mut() }?;
    if p.priv_.is_null() {
        let reg = Arc::new(Registry::default());
        p.priv_ = Arc::into_raw(reg).cast_mut().cast::<c_void>();
        p.methods = &raw const REGISTRY_METHODS.0;
    }
    if p.methods != &raw const REGISTRY_METHODS.0 {
        return None;
    }
    let raw = p.priv_.cast::<Registry>().cast_const();
    // SAFETY: `raw` came from `Arc::into_raw` and the PRIV_VCL still owns that count.
    unsafe { Arc::increment_strong_count(raw) };
    // SAFETY: the count taken just above is the one this Arc owns.
    Some(unsafe { Arc::from_raw(raw) })
}

// ---------------------------------------------------------------------------------------
// PRIV_TASK on the busyobj: which saintmode objects resolved this fetch
//
// `blacklist()` must find the saintmode object "whose director resolved the backend that
// served this fetch", also when that saintmode wraps a director (then `director_resp` is a
// backend the saintmode never saw). Re-resolving the wrapped director later is wrong (random
// and round-robin pick again), and a global "last resolved" slot would race between fetches.
// So the resolve callback records, in a PRIV_TASK of the fetch itself, each saintmode that
// resolved and the backend it resolved to (it resolves the wrapped director fully with
// VRT_DirectorResolve). The record belongs to one busyobj, handled by one thread at a time:
// no lock, no race. A resolution chain starts when a saintmode resolve is entered at depth 0,
// which clears the hops of an earlier chain or attempt (`bo->retries`); nested saintmodes
// push first, so the innermost comes first. `blacklist()` takes the first hop whose backend
// is `bo->director_resp`.

/// One saintmode on the resolution chain and the backend it resolved to.
struct Hop {
    object: Arc<Saintmode>,
    resolved: *const director,
}

struct Trail {
    attempt: c_uint,
    depth: u32,
    hops: Vec<Hop>,
}

/// The PRIV_TASK key: an address unique to this VMOD.
static TRAIL_KEY: u8 = 0;

unsafe extern "C" fn trail_fini(_ctx: *const vrt_ctx, p: *mut c_void) {
    guard((), || {
        if !p.is_null() {
            // SAFETY: set by `trail_of` from `Box::into_raw`, released once here.
            drop(unsafe { Box::from_raw(p.cast::<Trail>()) });
        }
    });
}

static TRAIL_METHODS: SyncMethods<vmod_priv_methods> = SyncMethods(vmod_priv_methods {
    magic: VMOD_PRIV_METHODS_MAGIC,
    type_: c"saintmode trail".as_ptr(),
    fini: Some(trail_fini),
});

/// The fetch's trail; `create` allocates it when missing. NULL outside a backend task or
/// when the workspace is exhausted.
fn trail_of(ctx: &vrt_ctx, create: bool) -> *mut Trail {
    if busyobj_of(ctx).is_none() || !ctx.req.is_null() {
        return ptr::null_mut();
    }
    let key = (&raw const TRAIL_KEY).cast::<c_void>();
    // SAFETY: backend task context (bo set, req NULL) as VRT_priv_task requires.
    let p = unsafe {
        if create {
            varnish::ffi::VRT_priv_task(ctx, key)
        } else {
            varnish::ffi::VRT_priv_task_get(ctx, key)
        }
    };
    // SAFETY: NULL or the task's vmod_priv for our key, alive for the task.
    let Some(p) = (unsafe { p.as_mut() }) else {
        return ptr::null_mut();
    };
    if p.priv_.is_null() {
        if !create {
            return ptr::null_mut();
        }
        let trail = Box::new(Trail {
            attempt: 0,
            depth: 0,
            hops: Vec::new(),
        });
        p.priv_ = Box::into_raw(trail).cast::<c_void>();
        p.methods = &raw const TRAIL_METHODS.0;
    }
    if p.methods != &raw const TRAIL_METHODS.0 {
        return ptr::null_mut();
    }
    p.priv_.cast::<Trail>()
}

// ---------------------------------------------------------------------------------------
// Director callbacks

unsafe extern "C" fn dir_healthy(
    ctx: *const vrt_ctx,
    be: VCL_BACKEND,
    changed: *mut VCL_TIME,
) -> VCL_BOOL {
    guard(VCL_BOOL(0), || {
        // SAFETY: Varnish passes a valid ctx (checked) for the call's duration.
        let (Some(ctx), Some(sm)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return VCL_BOOL(0);
        };
        let digest = digest_of(ctx);
        VCL_BOOL(c_uint::from(sm.healthy(ctx, digest.as_ref(), changed)))
    })
}

unsafe extern "C" fn dir_resolve(ctx: *const vrt_ctx, be: VCL_BACKEND) -> VCL_BACKEND {
    let none = VCL_BACKEND(ptr::null());
    guard(none, || {
        // SAFETY: Varnish passes a valid ctx (checked) for the call's duration.
        let (Some(ctx), Some(sm)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return none;
        };
        let trail = trail_of(ctx, true);
        let attempt = busyobj_of(ctx).map_or(0, |bo| bo.retries);
        // SAFETY: the trail belongs to this fetch, used by this thread only; the borrow ends
        // before the nested resolution below, which may borrow it again.
        if let Some(t) = unsafe { trail.as_mut() } {
            if t.depth == 0 {
                t.attempt = attempt;
                t.hops.clear();
            }
            t.depth += 1;
        }
        let digest = digest_of(ctx);
        let resolved = if sm.healthy(ctx, digest.as_ref(), ptr::null_mut()) {
            // SAFETY: valid ctx; `wrapped` is a referenced director (NULL handled by Varnish).
            unsafe { varnish::ffi::VRT_DirectorResolve(ctx, sm.wrapped()) }
        } else {
            none
        };
        // SAFETY: as above; the nested resolution is over.
        if let Some(t) = unsafe { trail.as_mut() } {
            t.depth = t.depth.saturating_sub(1);
            if !resolved.0.is_null() {
                if let Some(object) = owning_arc(be) {
                    t.hops.push(Hop {
                        object,
                        resolved: resolved.0,
                    });
                }
            }
        }
        resolved
    })
}

/// A new `Arc` on the object behind our director.
fn owning_arc(be: VCL_BACKEND) -> Option<Arc<Saintmode>> {
    object_of(be)?;
    let d = director_of(be)?;
    let raw = d.priv_.cast::<Saintmode>().cast_const();
    // SAFETY: `raw` came from `Arc::into_raw`, whose count the director holds until `destroy`.
    unsafe { Arc::increment_strong_count(raw) };
    // SAFETY: owns the count taken just above.
    Some(unsafe { Arc::from_raw(raw) })
}

unsafe extern "C" fn dir_list(
    ctx: *const vrt_ctx,
    be: VCL_BACKEND,
    vsb: *mut vsb,
    pflag: c_int,
    jflag: c_int,
) {
    guard((), || {
        // SAFETY: Varnish passes a valid CLI ctx (checked) for the call's duration.
        let (Some(ctx), Some(sm)) = (unsafe { check_ctx(ctx) }, object_of(be)) else {
            return;
        };
        if vsb.is_null() {
            return;
        }
        let text = list_text(&sm.snapshot(ctx), pflag != 0, jflag != 0);
        let Some(bcat) = vsb_bcat() else { return };
        let Ok(len) = isize::try_from(text.len()) else {
            return;
        };
        // SAFETY: `vsb` is the CLI's buffer; we append `len` bytes from `text`.
        unsafe { bcat(vsb, text.as_ptr().cast::<c_void>(), len) };
    });
}

type VsbBcat = unsafe extern "C" fn(*mut vsb, *const c_void, isize) -> c_int;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// varnishd's own `VSB_bcat`. Calling `VSB_bcat` directly would make the linker bind it to
/// libvarnishapi (which exports it too) and add that library as a dependency of the VMOD,
/// so loading fails where libvarnishapi is not on the loader path (e.g. a private prefix).
/// varnishd exports the symbol to its VMODs, so look it up in the global scope once.
fn vsb_bcat() -> Option<VsbBcat> {
    static BCAT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *BCAT.get_or_init(|| {
        // SAFETY: RTLD_DEFAULT (NULL on glibc) and a NUL-terminated name.
        unsafe { dlsym(ptr::null_mut(), c"VSB_bcat".as_ptr()) as usize }
    });
    if addr == 0 {
        return None;
    }
    // SAFETY: a non-NULL `VSB_bcat` has this C signature (vsb.h).
    Some(unsafe { std::mem::transmute::<usize, VsbBcat>(addr) })
}

unsafe extern "C" fn dir_release(be: VCL_BACKEND) {
    guard((), || {
        let Some(sm) = object_of(be) else { return };
        let mut wrapped = VCL_BACKEND(sm.wrapped.swap(ptr::null_mut(), Ordering::AcqRel));
        if !wrapped.0.is_null() {
            // SAFETY: drops the reference taken in `__init`.
            unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, VCL_BACKEND(ptr::null())) };
        }
    });
}

unsafe extern "C" fn dir_destroy(be: VCL_BACKEND) {
    guard((), || {
        if object_of(be).is_none() {
            return;
        }
        if let Some(d) = director_of(be) {
            // SAFETY: releases the count given to the director in `__init`; Varnish calls no
            // method of this director after `destroy`.
            drop(unsafe { Arc::from_raw(d.priv_.cast::<Saintmode>().cast_const()) });
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
    guard((), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return;
        };
        if let Err(msg) =
            // SAFETY: forwarded from Varnish as is.
            unsafe { init(ctx, handle, vcl_name, priv_vcl, backend, threshold) }
        {
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
    if director_of(backend).is_none() {
        return Err(format!(
            "{name_str}: backend argument must be a backend or director, not none"
        ));
    }
    let threshold = usize::try_from(threshold.0)
        .map_err(|_| format!("{name_str}: threshold must be >= 0 (got {})", threshold.0))?;
    // SAFETY: the PRIV_VCL of this VMOD, passed by Varnish.
    let registry = unsafe { registry_for(priv_vcl) }
        .ok_or_else(|| format!("{name_str}: PRIV_VCL unavailable"))?;

    if ctx.vcl.0.is_null() {
        return Err(format!("{name_str}: no VCL in this context"));
    }
    // SAFETY: ctx->vcl is the VCL being loaded; VCL_Name returns its NUL-terminated name.
    let vcl = unsafe { CStr::from_ptr(varnish::ffi::VCL_Name(ctx.vcl.0)) }.to_string_lossy();
    let ident = CString::new(format!("{vcl}.{name_str}")).unwrap_or_default();
    let stats = StatsSegment::new(&ident);

    let mut wrapped = VCL_BACKEND(ptr::null());
    // SAFETY: takes a reference on the wrapped director, dropped by `dir_release`.
    unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, backend) };
    let object = Arc::new(Saintmode {
        magic: SAINTMODE_MAGIC,
        name: name_str.clone(),
        backend_name: director_name(backend),
        wrapped: AtomicPtr::new(wrapped.0.cast_mut()),
        director: AtomicPtr::new(ptr::null_mut()),
        state: Mutex::new(State {
            list: Blacklist::new(threshold),
            stats,
        }),
    });

    let director_priv = Arc::into_raw(Arc::clone(&object))
        .cast_mut()
        .cast::<c_void>();
    // SAFETY: static methods table; priv is an owned Arc count, given to the director;
    // the name goes through "%s".
    let dir = unsafe {
        varnish::ffi::VRT_AddDirector(
            ctx,
            &raw const DIRECTOR_METHODS.0,
            director_priv,
            c"%s".as_ptr(),
            name.as_ptr(),
        )
    };
    if dir.0.is_null() {
        // No director: no callback will release its count, nor the wrapped reference.
        // SAFETY: the count from `Arc::into_raw` just above, not handed out.
        drop(unsafe { Arc::from_raw(director_priv.cast::<Saintmode>().cast_const()) });
        let mut wrapped = VCL_BACKEND(object.wrapped.swap(ptr::null_mut(), Ordering::AcqRel));
        // SAFETY: drops the reference taken above.
        unsafe { varnish::ffi::VRT_Assign_Backend(&mut wrapped, VCL_BACKEND(ptr::null())) };
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
    guard((), || {
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
        drop(h.object.state.lock().stats.take());
    });
}

/// # Safety
/// `handle` is NULL or a live object from `__init`.
unsafe fn object_from<'a>(handle: *const Handle) -> Option<&'a Saintmode> {
    // SAFETY: per the contract.
    let h = unsafe { handle.as_ref() }?;
    (h.magic == HANDLE_MAGIC).then_some(&*h.object)
}

/// `sm.backend()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_backend(
    _ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_BACKEND {
    guard(VCL_BACKEND(ptr::null()), || {
        // SAFETY: per the contract.
        let sm = unsafe { object_from(handle) };
        VCL_BACKEND(sm.map_or(ptr::null(), |sm| sm.director.load(Ordering::Acquire)))
    })
}

/// `sm.blacklist_count()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_blacklist_count(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_INT {
    guard(VCL_INT(0), || {
        // SAFETY: per the contract.
        let (Some(ctx), Some(sm)) = (unsafe { check_ctx(ctx) }, unsafe { object_from(handle) })
        else {
            return VCL_INT(0);
        };
        VCL_INT(i64::try_from(sm.live_count(ctx)).unwrap_or(i64::MAX))
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

/// `sm.is_healthy()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and object.
#[no_mangle]
pub unsafe extern "C" fn vmod_saintmode_is_healthy(
    ctx: *const vrt_ctx,
    handle: *const Handle,
) -> VCL_BOOL {
    guard(VCL_BOOL(0), || {
        // SAFETY: per the contract.
        let (Some(ctx), Some(sm)) = (unsafe { check_ctx(ctx) }, unsafe { object_from(handle) })
        else {
            return VCL_BOOL(0);
        };
        let digest = digest_of(ctx);
        VCL_BOOL(c_uint::from(sm.healthy(
            ctx,
            digest.as_ref(),
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
    fname: &str,
) {
    guard((), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return;
        };
        // SAFETY: this VMOD's PRIV_VCL.
        let registry = unsafe { registry_of(priv_vcl) };
        if let Err(why) = blacklist(ctx, registry, expires.0 .0) {
            log(ctx, VslTag::VclError, &format!("{fname}: {why}"));
        }
    });
}

fn blacklist(ctx: &vrt_ctx, registry: Option<&Registry>, expires: f64) -> Result<(), String> {
    if ctx.method & (VCL_MET_BACKEND_RESPONSE | VCL_MET_BACKEND_ERROR) == 0 {
        return Err("called outside vcl_backend_response and vcl_backend_error".into());
    }
    // NaN is rejected too.
    if expires.is_nan() || expires <= 0.0 {
        return Err(format!("expires must be > 0s (got {expires})"));
    }
    let registry = registry.ok_or("no saintmode object in this VCL")?;
    let bo = busyobj_of(ctx).ok_or("no fetch in this context")?;
    let resp = bo.director_resp;
    let object = find_target(ctx, bo, registry).ok_or_else(|| {
        format!(
            "no saintmode object resolved backend {} for this fetch",
            director_name(VCL_BACKEND(resp))
        )
    })?;
    let (listed, changes, held) = {
        let mut st = object.state.lock();
        let (listed, changes) = st.list.add(&bo.digest, ctx.now.0, expires);
        if let Some(seg) = &st.stats {
            let s = seg.stats();
            s.calls.fetch_add(1, Ordering::Relaxed);
            if listed == Listed::Refreshed {
                s.refreshed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let held = st.record(changes);
        (listed, changes, held)
    };
    let threshold = object.threshold();
    let msg = match listed {
        Listed::Disabled => format!(
            "saintmode: {}: threshold 0 (disabled), object not put on blacklist for backend {}",
            object.name, object.backend_name
        ),
        Listed::Added | Listed::Refreshed => format!(
            "saintmode: object put on blacklist for backend {} for {expires:.2} seconds \
             ({}: {held}/{threshold}{})",
            object.backend_name,
            object.name,
            if listed == Listed::Refreshed {
                ", refreshed"
            } else {
                ""
            }
        ),
    };
    log(ctx, VslTag::VclLog, &msg);
    object.log_crossing(ctx, changes.crossing, held);
    Ok(())
}

/// The saintmode object to blame for this fetch (see the PRIV_TASK notes above).
fn find_target(ctx: &vrt_ctx, bo: &busyobj, registry: &Registry) -> Option<Arc<Saintmode>> {
    let resp = bo.director_resp;
    if resp.is_null() {
        return None;
    }
    // SAFETY: the fetch's trail, used by this thread only, not borrowed elsewhere now.
    if let Some(trail) = unsafe { trail_of(ctx, false).as_ref() } {
        // A saintmode took part in this fetch: trust only what it recorded, since
        // `director_resp` may be left over from an earlier attempt.
        if trail.attempt != bo.retries {
            return None;
        }
        return trail
            .hops
            .iter()
            .find(|h| ptr::eq(h.resolved, resp))
            .map(|h| Arc::clone(&h.object));
    }
    // No saintmode resolved this fetch (e.g. `set bereq.backend = s1;`): like the C module,
    // blame the saintmode object that wraps this backend directly.
    registry
        .objects
        .read()
        .iter()
        .find(|o| ptr::eq(o.wrapped.load(Ordering::Acquire), resp))
        .cloned()
}

/// `saintmode.status()`.
///
/// # Safety
/// Called by Varnish with a valid ctx and this VMOD's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_status(ctx: *const vrt_ctx, priv_vcl: *mut vmod_priv) -> VCL_STRING {
    guard(VCL_STRING(ptr::null()), || {
        // SAFETY: Varnish passes a valid ctx.
        let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
            return VCL_STRING(ptr::null());
        };
        // SAFETY: this VMOD's PRIV_VCL.
        let objects: Vec<Arc<Saintmode>> = unsafe { registry_of(priv_vcl) }
            .map(|r| r.objects.read().clone())
            .unwrap_or_default();
        let snapshots: Vec<Snapshot> = objects.iter().map(|o| o.snapshot(ctx)).collect();
        let json = status_json(&snapshots);
        let Ok(len) = c_int::try_from(json.len() + 1) else {
            fail(ctx, "saintmode.status(): result too large");
            return VCL_STRING(ptr::null());
        };
        let Ok(json) = CString::new(json) else {
            return VCL_STRING(ptr::null());
        };
        // SAFETY: the task's workspace; copies `len` bytes (with the NUL) from `json`.
        let copy = unsafe { varnish::ffi::WS_Copy(ctx.ws, json.as_ptr().cast::<c_void>(), len) };
        if copy.is_null() {
            fail(ctx, "saintmode.status(): out of workspace");
        }
        VCL_STRING(copy.cast::<c_char>().cast_const())
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
    guard(0, || {
        let hidden = match event {
            VCL_EVENT_COLD => true,
            VCL_EVENT_WARM => false,
            _ => return 0,
        };
        // SAFETY: this VMOD's PRIV_VCL.
        if let Some(registry) = unsafe { registry_of(priv_vcl) } {
            for o in registry.objects.read().iter() {
                if let Some(seg) = &o.state.lock().stats {
                    seg.hide(hidden);
                }
            }
        }
        0
    })
}
