//! The `extern "C"` functions Varnish calls (declared in `vmod.vcc`), reading the request
//! out of Varnish's structures, the per-VCL state behind `PRIV_VCL`, VSC segments and VSL
//! logging. Each entry point checks what Varnish hands it, converts, and calls the core.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use varnish::ffi::{
    self, vmod_priv, vmod_priv_methods, vrt_ctx, vsc_seg, VslTag, VCL_BOOL, VCL_DURATION, VCL_INT,
    VCL_STRANDS, VCL_STRING,
};
use varnish::VscMetric;

use crate::dest::Destination;
use crate::sender::{
    check_drain_timeout_ms, check_timeout_ms, EnqueueError, EventLog, Peer, Settings,
};
use crate::snapshot::{split_header_line, Snapshot, Template};
use crate::stats::{CounterStore, LocalCounters, PeerCounters};
use crate::transport::CurlFactory;

extern "C" {
    // vrt_obj.h is not in the bindings.
    fn VRT_r_server_identity(ctx: *const vrt_ctx) -> VCL_STRING;
}

// ---------------------------------------------------------------------------------------
// Small conversions

/// The context, when it is one (not NULL, right magic).
///
/// # Safety
/// `ctx` is NULL or points to a `vrt_ctx` valid for the call.
unsafe fn ctx_ref<'a>(ctx: *const vrt_ctx) -> Option<&'a vrt_ctx> {
    // SAFETY: the caller guarantees NULL or a valid pointer; as_ref checks NULL.
    let ctx = unsafe { ctx.as_ref() }?;
    (ctx.magic == ffi::VRT_CTX_MAGIC).then_some(ctx)
}

/// A VCL string as bytes; NULL is empty.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for `'a`.
unsafe fn vcl_bytes<'a>(s: VCL_STRING) -> &'a [u8] {
    if s.0.is_null() {
        return b"";
    }
    // SAFETY: not NULL, NUL-terminated per the caller.
    unsafe { CStr::from_ptr(s.0) }.to_bytes()
}

/// A VCL string as text (lossy for the rare non-UTF-8 configuration value). Not for what is
/// sent (header names and values are bytes, see [`vcl_bytes`]).
///
/// # Safety
/// As [`vcl_bytes`].
unsafe fn vcl_str(s: VCL_STRING) -> String {
    // SAFETY: same contract.
    String::from_utf8_lossy(unsafe { vcl_bytes(s) }).into_owned()
}

/// The concatenation of a STRANDS argument (NULL parts are empty).
///
/// # Safety
/// `s` is NULL or a valid `strands` whose `n` pointers are NULL or NUL-terminated.
unsafe fn strands_bytes(s: VCL_STRANDS) -> Vec<u8> {
    let mut out = Vec::new();
    // SAFETY: NULL or valid per the caller.
    let Some(strands) = (unsafe { s.0.as_ref() }) else {
        return out;
    };
    if strands.p.is_null() {
        return out;
    }
    for i in 0..usize::try_from(strands.n).unwrap_or(0) {
        // SAFETY: `p` has `n` entries.
        let part = unsafe { *strands.p.add(i) };
        // SAFETY: each entry is NULL or NUL-terminated.
        out.extend_from_slice(unsafe { vcl_bytes(VCL_STRING(part)) });
    }
    out
}

/// A destination argument as text: hosts are ASCII, a base path with other bytes must be
/// given percent-encoded (a lossy conversion would change it).
fn destination_arg(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| {
        "host or URL is not valid UTF-8 (percent-encode the path of a base URL)".into()
    })
}

fn duration(d: VCL_DURATION) -> f64 {
    d.0 .0
}

/// Fails the VCL (in `vcl_init`: the load fails) with `msg`.
fn fail(ctx: &vrt_ctx, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    // SAFETY: ctx is a checked context; "%.*s" reads `len` bytes of `msg`.
    unsafe { ffi::VRT_fail(ctx, c"%.*s".as_ptr(), len, msg.as_ptr()) };
}

/// A log line in the transaction of `ctx` (or with no transaction when it has none).
fn log_ctx(ctx: &vrt_ctx, tag: VslTag, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    if ctx.vsl.is_null() {
        log_raw(tag, msg);
    } else {
        // SAFETY: vsl belongs to the current task; the format reads `len` bytes of `msg`.
        unsafe { ffi::VSLb(ctx.vsl, tag, c"%.*s".as_ptr(), len, msg.as_ptr()) };
    }
}

/// A log line with no transaction (vxid 0): from sender threads. `VSL()` is thread safe.
fn log_raw(tag: VslTag, msg: &str) {
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

/// Sender-thread lines go to VSL as `Error` records.
struct VslLog;

impl EventLog for VslLog {
    fn log(&self, line: &str) {
        log_raw(VslTag::Error, line);
    }
}

/// Runs an entry point's body; a panic becomes a VCL failure instead of crossing into C.
fn guard<T>(ctx: Option<&vrt_ctx>, what: &str, default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        if let Some(ctx) = ctx {
            fail(ctx, &format!("{what}: internal error"));
        }
        default
    })
}

// ---------------------------------------------------------------------------------------
// VSC counters in shared memory

/// A `PEER.<vcl>.<name>` segment of [`PeerCounters`].
struct VscCounters {
    metric: *const PeerCounters,
    seg: *mut vsc_seg,
}

// SAFETY: the segment memory is only accessed through atomics (`PeerCounters` is made of
// AtomicU64) and lives until `Drop`, which needs `&mut self`.
unsafe impl Send for VscCounters {}
// SAFETY: as above.
unsafe impl Sync for VscCounters {}

/// Stable name pointer: Varnish keeps it in the segment.
static VSC_NAME: &CStr = c"PEER";

impl VscCounters {
    fn new(vcl: &str, name: &str) -> Option<Self> {
        let vcl = CString::new(vcl).ok()?;
        let name = CString::new(name).ok()?;
        let json = PeerCounters::get_metadata();
        let mut seg = null_mut();
        // SAFETY: called from the CLI thread (vcl_init); the JSON and names outlive the
        // call (the JSON is 'static and Varnish keeps its pointer), the format takes two
        // strings.
        let metric = unsafe {
            ffi::VRT_VSC_AllocVariadic(
                null_mut(),
                &raw mut seg,
                VSC_NAME.as_ptr(),
                size_of::<PeerCounters>(),
                json.as_ptr().cast::<u8>(),
                json.to_bytes().len(),
                c"%s.%s".as_ptr(),
                vcl.as_ptr(),
                name.as_ptr(),
            )
        };
        if metric.is_null() || seg.is_null() {
            return None;
        }
        Some(VscCounters {
            metric: metric.cast::<PeerCounters>(),
            seg,
        })
    }
}

impl CounterStore for VscCounters {
    fn counters(&self) -> &PeerCounters {
        // SAFETY: Varnish allocated (zeroed, 8-aligned) room for a PeerCounters, valid
        // until VRT_VSC_Destroy in Drop.
        unsafe { &*self.metric }
    }
}

impl Drop for VscCounters {
    fn drop(&mut self) {
        // SAFETY: the segment was made by VRT_VSC_AllocVariadic with this name and is
        // destroyed once.
        unsafe { ffi::VRT_VSC_Destroy(VSC_NAME.as_ptr(), self.seg) };
    }
}

fn counters_for(vcl: &str, name: &str) -> Arc<dyn CounterStore> {
    match VscCounters::new(vcl, name) {
        Some(vsc) => Arc::new(vsc),
        None => Arc::new(LocalCounters::default()),
    }
}

// ---------------------------------------------------------------------------------------
// Per-VCL state (PRIV_VCL)

/// What one VCL owns: its default peer and its named peers (to follow temperature events).
struct VclState {
    vcl_name: String,
    marker: String,
    default: RwLock<Option<Arc<Peer>>>,
    named: RwLock<Vec<Arc<Peer>>>,
    connect_timeout_ms: AtomicU64,
    timeout_ms: AtomicU64,
    drain_timeout_ms: AtomicU64,
}

impl VclState {
    /// Queued or in flight over all peers, without allocating (called per request).
    fn pending(&self) -> u64 {
        let named: u64 = self.named.read().iter().map(|p| p.pending()).sum();
        named + self.default.read().as_ref().map_or(0, |p| p.pending())
    }

    fn all(&self) -> Vec<Arc<Peer>> {
        let mut all: Vec<Arc<Peer>> = self.named.read().clone();
        all.extend(self.default.read().iter().cloned());
        all
    }
}

unsafe extern "C" fn free_vcl_state(_ctx: *const vrt_ctx, p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` is the Box made in `vcl_state` and freed only here, once.
        let state = unsafe { Box::from_raw(p.cast::<VclState>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(state)));
    }
}

static VCL_STATE_METHODS: vmod_priv_methods = vmod_priv_methods {
    magic: ffi::VMOD_PRIV_METHODS_MAGIC,
    type_: c"vmod_peer.vcl".as_ptr(),
    fini: Some(free_vcl_state),
};

/// The state of the VCL of `ctx`, made on first use.
///
/// # Safety
/// `priv_` is NULL or this VCL's PRIV_VCL. Creation happens in vcl_init or an event
/// (single-threaded); later calls only read.
unsafe fn vcl_state<'a>(ctx: &vrt_ctx, priv_: *mut vmod_priv) -> Option<&'a VclState> {
    // SAFETY: NULL or the PRIV_VCL per the caller.
    let priv_ = unsafe { priv_.as_mut() }?;
    if priv_.priv_.is_null() {
        let vcl_name = if ctx.vcl.0.is_null() {
            "vcl".to_string()
        } else {
            // SAFETY: ctx.vcl is the VCL being run; VCL_Name returns its name.
            let name = unsafe { ffi::VCL_Name(ctx.vcl.0) };
            // SAFETY: NULL or the NUL-terminated name.
            unsafe { vcl_str(VCL_STRING(name)) }
        };
        // SAFETY: reads heritage; a checked context.
        let identity = unsafe { vcl_str(VRT_r_server_identity(ctx)) };
        let state = Box::new(VclState {
            vcl_name,
            marker: identity,
            default: RwLock::new(None),
            named: RwLock::new(Vec::new()),
            connect_timeout_ms: AtomicU64::new(1000),
            timeout_ms: AtomicU64::new(5000),
            drain_timeout_ms: AtomicU64::new(5000),
        });
        priv_.priv_ = Box::into_raw(state).cast::<c_void>();
        priv_.methods = &raw const VCL_STATE_METHODS;
    }
    // SAFETY: set above to a VclState owned by the priv until free_vcl_state.
    unsafe { priv_.priv_.cast::<VclState>().as_ref() }
}

// ---------------------------------------------------------------------------------------
// Reading the request

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
    // SAFETY: hd has nhd entries.
    let txt = unsafe { &*http.hd.add(idx) };
    if txt.b.is_null() || txt.e.is_null() {
        return None;
    }
    // SAFETY: b..e is one field in the workspace, e >= b.
    let len = unsafe { txt.e.offset_from(txt.b) };
    let len = usize::try_from(len).ok()?;
    // SAFETY: b points to len readable bytes.
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
    // SAFETY: priv_ is the Vec passed by `cached_body`; ptr has len bytes.
    let (out, chunk) = unsafe {
        (
            &mut *priv_.cast::<Vec<u8>>(),
            std::slice::from_raw_parts(ptr.cast::<u8>(), len),
        )
    };
    out.extend_from_slice(chunk);
    0
}

/// The body cached with `std.cache_req_body()`, if any.
fn cached_body(ctx: &vrt_ctx) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let priv_ = (&raw mut body).cast::<c_void>();
    if !ctx.http_req.0.is_null() {
        // SAFETY: NULL or the current req.
        let req = unsafe { ctx.req.as_mut() }?;
        // SAFETY: BS_CACHED is a static of varnishd; only its address is compared.
        if req.req_body_status != unsafe { ffi::BS_CACHED.as_ptr() } {
            return None;
        }
        // SAFETY: the body is cached (so iterating does not consume it); collect_body
        // appends to `body` which outlives the call.
        let r = unsafe {
            ffi::VRB_Iterate(
                req.wrk,
                req.vsl.as_mut_ptr(),
                req,
                Some(collect_body),
                priv_,
            )
        };
        return (r == 0).then_some(body);
    }
    // SAFETY: NULL or the current busyobj.
    let bo = unsafe { ctx.bo.as_mut() }?;
    if bo.bereq_body.is_null() {
        return None;
    }
    // SAFETY: bereq_body is the cached request body object; reading it does not change it.
    let r = unsafe { ffi::ObjIterate(bo.wrk, bo.bereq_body, priv_, Some(collect_body), 0) };
    (r == 0).then_some(body)
}

/// Copies the current request. `body` replaces the request's own.
fn snapshot(ctx: &vrt_ctx, body: Option<Vec<u8>>, method: &[u8], url: &[u8]) -> Option<Snapshot> {
    let http = current_http(ctx)?;
    let method_idx = ffi::HTTP_HDR_METHOD as usize;
    let mut snap = Snapshot {
        method: if method.is_empty() {
            http_field(http, method_idx).unwrap_or_default().to_vec()
        } else {
            method.to_vec()
        },
        url: if url.is_empty() {
            http_field(http, ffi::HTTP_HDR_URL as usize)
                .unwrap_or_default()
                .to_vec()
        } else {
            url.to_vec()
        },
        http10: http_field(http, ffi::HTTP_HDR_PROTO as usize) == Some(b"HTTP/1.0"),
        headers: Vec::with_capacity(usize::from(http.nhd)),
        body: None,
    };
    for idx in ffi::HTTP_HDR_FIRST as usize..usize::from(http.nhd) {
        if let Some((name, value)) = http_field(http, idx).and_then(split_header_line) {
            snap.headers.push((name.to_vec(), value.to_vec()));
        }
    }
    snap.body = body.or_else(|| cached_body(ctx)).map(Arc::from);
    Some(snap)
}

fn enqueue(ctx: &vrt_ctx, fname: &str, peer: &Peer, snap: Option<Snapshot>) {
    let Some(snap) = snap else {
        log_ctx(
            ctx,
            VslTag::VclError,
            &format!("{fname}: no request here, nothing queued"),
        );
        return;
    };
    let name = &peer.settings().name;
    match peer.enqueue(snap) {
        Ok(report) => {
            for dest in report.dropped {
                log_ctx(
                    ctx,
                    VslTag::VclError,
                    &format!("peer {name}: dropped for {dest}"),
                );
            }
        }
        Err(EnqueueError::NoDestination) => log_ctx(
            ctx,
            VslTag::VclError,
            &format!("{fname}: peer {name} has no destination, nothing queued"),
        ),
        Err(EnqueueError::Refused(why)) => log_ctx(
            ctx,
            VslTag::VclError,
            &format!("peer {name}: refused, {why}; nothing queued"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Module functions (the default peer)

/// `$Event`: follows the VCL temperature.
///
/// # Safety
/// Called by Varnish with its context and this VCL's PRIV_VCL.
#[no_mangle]
pub unsafe extern "C" fn vmod_event_function(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    event: c_uint,
) -> c_int {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return 0;
    };
    guard(Some(ctx), "peer", 0, || {
        // SAFETY: this VCL's PRIV_VCL; events run on the CLI thread.
        let Some(state) = (unsafe { vcl_state(ctx, priv_) }) else {
            return 0;
        };
        match event {
            e if e == ffi::VclEvent::Warm as c_uint => state.all().iter().for_each(|p| p.start()),
            e if e == ffi::VclEvent::Cold as c_uint => {
                state.all().iter().for_each(|p| p.begin_drain());
            }
            e if e == ffi::VclEvent::Discard as c_uint => state.all().iter().for_each(|p| p.stop()),
            _ => {}
        }
        0
    })
}

fn default_settings(state: &VclState) -> Settings {
    Settings {
        name: "default".into(),
        connect_timeout_ms: AtomicU64::new(state.connect_timeout_ms.load(Ordering::Relaxed)),
        timeout_ms: AtomicU64::new(state.timeout_ms.load(Ordering::Relaxed)),
        drain_timeout_ms: AtomicU64::new(state.drain_timeout_ms.load(Ordering::Relaxed)),
        ..Settings::default()
    }
}

/// `peer.set(host, port)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    host: VCL_STRING,
    port: VCL_INT,
) {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return;
    };
    guard(Some(ctx), "peer.set()", (), || {
        // SAFETY: this VCL's PRIV_VCL, in vcl_init.
        let Some(state) = (unsafe { vcl_state(ctx, priv_) }) else {
            return;
        };
        // SAFETY: VCL string argument.
        let host = unsafe { vcl_bytes(host) };
        let dest = match destination_arg(host).and_then(|h| Destination::parse(h, port.0)) {
            Ok(d) => d,
            Err(e) => return fail(ctx, &format!("peer.set(): host/port: {e}")),
        };
        let template = Template {
            copy_headers: true,
            marker: state.marker.clone(),
            ..Template::default()
        };
        let peer = Peer::new(
            default_settings(state),
            template,
            counters_for(&state.vcl_name, "default"),
            Arc::new(VslLog),
            Arc::new(CurlFactory),
        );
        if let Err(e) = peer.add_destination(dest) {
            return fail(ctx, &format!("peer.set(): {e}"));
        }
        // Replacing drops the previous peer, which was never started (vcl_init).
        let old = state.default.write().replace(Arc::new(peer));
        drop(old);
    });
}

/// The default peer, or a `VCL_Error` line saying there is none.
fn default_peer(ctx: &vrt_ctx, priv_: *mut vmod_priv, fname: &str) -> Option<Arc<Peer>> {
    // SAFETY: this VCL's PRIV_VCL.
    let peer = unsafe { vcl_state(ctx, priv_) }.and_then(|s| s.default.read().clone());
    if peer.is_none() {
        log_ctx(
            ctx,
            VslTag::VclError,
            &format!("{fname}: no destination (call peer.set() in vcl_init), nothing queued"),
        );
    }
    peer
}

/// `peer.queue_req()` / `peer.enqueue_req()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_queue_req(ctx: *const vrt_ctx, priv_: *mut vmod_priv) {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return;
    };
    guard(Some(ctx), "peer.queue_req()", (), || {
        if let Some(peer) = default_peer(ctx, priv_, "peer.queue_req()") {
            enqueue(
                ctx,
                "peer.queue_req()",
                &peer,
                snapshot(ctx, None, b"", b""),
            );
        }
    });
}

/// `peer.queue_req_body(body)` / `peer.enqueue_req_body()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_queue_req_body(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    body: VCL_STRANDS,
) {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return;
    };
    guard(Some(ctx), "peer.queue_req_body()", (), || {
        if let Some(peer) = default_peer(ctx, priv_, "peer.queue_req_body()") {
            // SAFETY: the STRANDS argument of this call.
            let body = unsafe { strands_bytes(body) };
            enqueue(
                ctx,
                "peer.queue_req_body()",
                &peer,
                snapshot(ctx, Some(body), b"", b""),
            );
        }
    });
}

/// `peer.pending()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_pending(ctx: *const vrt_ctx, priv_: *mut vmod_priv) -> VCL_INT {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return VCL_INT(0);
    };
    guard(Some(ctx), "peer.pending()", VCL_INT(0), || {
        // SAFETY: this VCL's PRIV_VCL.
        let total: u64 = unsafe { vcl_state(ctx, priv_) }
            .map(VclState::pending)
            .unwrap_or(0);
        VCL_INT(i64::try_from(total).unwrap_or(i64::MAX))
    })
}

/// The timeouts of the default peer that `peer.set_*timeout()` set.
#[derive(Clone, Copy)]
enum DefaultTimeout {
    Connect,
    Total,
    Drain,
}

fn set_timeout_ms(ctx: *const vrt_ctx, priv_: *mut vmod_priv, ms: VCL_INT, which: DefaultTimeout) {
    let fname = match which {
        DefaultTimeout::Connect => "peer.set_connect_timeout()",
        DefaultTimeout::Total => "peer.set_timeout()",
        DefaultTimeout::Drain => "peer.set_drain_timeout()",
    };
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return;
    };
    guard(Some(ctx), fname, (), || {
        let Ok(ms) = u64::try_from(ms.0) else {
            return fail(ctx, &format!("{fname}: ms must not be negative ({})", ms.0));
        };
        let checked = match which {
            DefaultTimeout::Drain => check_drain_timeout_ms(ms),
            DefaultTimeout::Connect | DefaultTimeout::Total => check_timeout_ms(ms),
        };
        if let Err(e) = checked {
            return fail(ctx, &format!("{fname}: ms {e} ({ms})"));
        }
        // SAFETY: this VCL's PRIV_VCL.
        let Some(state) = (unsafe { vcl_state(ctx, priv_) }) else {
            return;
        };
        let (stored, peer_field): (&AtomicU64, fn(&Settings) -> &AtomicU64) = match which {
            DefaultTimeout::Connect => (&state.connect_timeout_ms, |s| &s.connect_timeout_ms),
            DefaultTimeout::Total => (&state.timeout_ms, |s| &s.timeout_ms),
            DefaultTimeout::Drain => (&state.drain_timeout_ms, |s| &s.drain_timeout_ms),
        };
        stored.store(ms, Ordering::Relaxed);
        if let Some(peer) = state.default.read().as_ref() {
            peer_field(peer.settings()).store(ms, Ordering::Relaxed);
        }
    });
}

/// `peer.set_connect_timeout(ms)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set_connect_timeout(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    ms: VCL_INT,
) {
    set_timeout_ms(ctx, priv_, ms, DefaultTimeout::Connect);
}

/// `peer.set_timeout(ms)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set_timeout(ctx: *const vrt_ctx, priv_: *mut vmod_priv, ms: VCL_INT) {
    set_timeout_ms(ctx, priv_, ms, DefaultTimeout::Total);
}

/// `peer.set_drain_timeout(ms)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set_drain_timeout(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    ms: VCL_INT,
) {
    set_timeout_ms(ctx, priv_, ms, DefaultTimeout::Drain);
}

static VERSION: &CStr = c"peer-0.1.0";

/// `peer.version()`.
///
/// # Safety
/// Called by Varnish.
#[no_mangle]
pub unsafe extern "C" fn vmod_version(_ctx: *const vrt_ctx) -> VCL_STRING {
    VCL_STRING(VERSION.as_ptr())
}

// ---------------------------------------------------------------------------------------
// The peer object

/// What `new x = peer.peer()` points to.
pub struct PeerObject {
    peer: Arc<Peer>,
}

/// The arguments of `peer.peer()`, as Varnish passes them.
struct PeerArgs {
    queue_size: VCL_INT,
    concurrency: VCL_INT,
    max_attempts: VCL_INT,
    backoff: VCL_DURATION,
    max_backoff: VCL_DURATION,
    max_age: VCL_DURATION,
    connect_timeout: VCL_DURATION,
    timeout: VCL_DURATION,
    tls_verify: VCL_BOOL,
    ca_file: String,
    drain_timeout: VCL_DURATION,
}

fn settings_from(name: &str, a: &PeerArgs) -> Result<Settings, String> {
    let count = |arg: &str, v: VCL_INT, max: i64| -> Result<usize, String> {
        if (1..=max).contains(&v.0) {
            usize::try_from(v.0).map_err(|e| e.to_string())
        } else {
            Err(format!("{arg} must be between 1 and {max} ({})", v.0))
        }
    };
    let dur = |arg: &str, d: VCL_DURATION| -> Result<Duration, String> {
        let secs = duration(d);
        Duration::try_from_secs_f64(secs).map_err(|_| {
            if secs.is_finite() && secs > 0.0 {
                format!("{arg} is too large ({secs})")
            } else {
                format!("{arg} must not be negative ({secs})")
            }
        })
    };
    // libcurl takes 0 as "no timeout": a wait must always be bounded.
    let timeout_ms = |arg: &str, d: VCL_DURATION| -> Result<AtomicU64, String> {
        let ms = u64::try_from(dur(arg, d)?.as_millis()).unwrap_or(u64::MAX);
        check_timeout_ms(ms).map_err(|e| format!("{arg} {e} ({})", duration(d)))?;
        Ok(AtomicU64::new(ms))
    };
    let ca_file = if a.ca_file.is_empty() {
        None
    } else {
        let path = PathBuf::from(&a.ca_file);
        if let Err(e) = std::fs::File::open(&path) {
            return Err(format!("ca_file \"{}\" cannot be read: {e}", a.ca_file));
        }
        Some(path)
    };
    Ok(Settings {
        name: name.to_string(),
        queue_size: count("queue_size", a.queue_size, 10_000_000)?,
        concurrency: count("concurrency", a.concurrency, 64)?,
        policy: crate::policy::RetryPolicy {
            max_attempts: u32::try_from(count("max_attempts", a.max_attempts, 1000)?)
                .unwrap_or(1000),
            backoff: dur("backoff", a.backoff)?,
            max_backoff: dur("max_backoff", a.max_backoff)?,
            max_age: dur("max_age", a.max_age)?,
        },
        connect_timeout_ms: timeout_ms("connect_timeout", a.connect_timeout)?,
        timeout_ms: timeout_ms("timeout", a.timeout)?,
        tls_verify: a.tls_verify.0 != 0,
        ca_file,
        drain_timeout_ms: {
            let d = dur("drain_timeout", a.drain_timeout)?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            check_drain_timeout_ms(ms)
                .map_err(|e| format!("drain_timeout {e} ({})", duration(a.drain_timeout)))?;
            AtomicU64::new(ms)
        },
    })
}

/// `new x = peer.peer(...)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn vmod_peer__init(
    ctx: *const vrt_ctx,
    objp: *mut *mut PeerObject,
    vcl_name: *const c_char,
    priv_: *mut vmod_priv,
    queue_size: VCL_INT,
    concurrency: VCL_INT,
    max_attempts: VCL_INT,
    backoff: VCL_DURATION,
    max_backoff: VCL_DURATION,
    max_age: VCL_DURATION,
    connect_timeout: VCL_DURATION,
    timeout: VCL_DURATION,
    tls_verify: VCL_BOOL,
    ca_file: VCL_STRING,
    drain_timeout: VCL_DURATION,
    copy_headers: VCL_BOOL,
) {
    // SAFETY: pointer from Varnish.
    let Some(ctx) = (unsafe { ctx_ref(ctx) }) else {
        return;
    };
    // SAFETY: objp is where Varnish stores the object; NULL checked.
    let Some(objp) = (unsafe { objp.as_mut() }) else {
        return;
    };
    guard(Some(ctx), "peer.peer()", (), || {
        // SAFETY: the object name, a VCL string.
        let name = unsafe { vcl_str(VCL_STRING(vcl_name)) };
        let args = PeerArgs {
            queue_size,
            concurrency,
            max_attempts,
            backoff,
            max_backoff,
            max_age,
            connect_timeout,
            timeout,
            tls_verify,
            // SAFETY: VCL string argument.
            ca_file: unsafe { vcl_str(ca_file) },
            drain_timeout,
        };
        let settings = match settings_from(&name, &args) {
            Ok(s) => s,
            Err(e) => return fail(ctx, &format!("peer.peer(): {e}")),
        };
        // SAFETY: this VCL's PRIV_VCL, in vcl_init.
        let Some(state) = (unsafe { vcl_state(ctx, priv_) }) else {
            return;
        };
        let template = Template {
            copy_headers: copy_headers.0 != 0,
            marker: state.marker.clone(),
            ..Template::default()
        };
        let peer = Arc::new(Peer::new(
            settings,
            template,
            counters_for(&state.vcl_name, &name),
            Arc::new(VslLog),
            Arc::new(CurlFactory),
        ));
        state.named.write().push(Arc::clone(&peer));
        *objp = Box::into_raw(Box::new(PeerObject { peer }));
    });
}

/// Frees a peer object.
///
/// # Safety
/// Called by Varnish with the pointer set by `vmod_peer__init`.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer__fini(objp: *mut *mut PeerObject) {
    // SAFETY: NULL or Varnish's slot for the object.
    let Some(slot) = (unsafe { objp.as_mut() }) else {
        return;
    };
    let obj = std::mem::replace(slot, null_mut());
    if !obj.is_null() {
        // SAFETY: made by Box::into_raw in __init, freed once (the slot is now NULL).
        let obj = unsafe { Box::from_raw(obj) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(obj)));
    }
}

/// A checked context and object, or nothing.
///
/// # Safety
/// Pointers from Varnish.
unsafe fn ctx_obj<'a>(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
) -> Option<(&'a vrt_ctx, &'a Peer)> {
    // SAFETY: per the caller.
    let ctx = unsafe { ctx_ref(ctx) }?;
    // SAFETY: NULL or the object made by __init, alive until __fini.
    let obj = unsafe { obj.as_ref() }?;
    Some((ctx, &obj.peer))
}

/// `x.add_destination(destination, port)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_add_destination(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    destination: VCL_STRING,
    port: VCL_INT,
) {
    // SAFETY: pointers from Varnish.
    let Some((ctx, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return;
    };
    guard(Some(ctx), "add_destination()", (), || {
        // SAFETY: VCL string argument.
        let destination = unsafe { vcl_bytes(destination) };
        let name = &peer.settings().name;
        let result = destination_arg(destination)
            .and_then(|d| Destination::parse(d, port.0))
            .and_then(|d| peer.add_destination(d));
        if let Err(e) = result {
            fail(
                ctx,
                &format!("peer.add_destination(): {name}: destination: {e}"),
            );
        }
    });
}

/// `x.set_header(name, value)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_set_header(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    name: VCL_STRING,
    value: VCL_STRING,
) {
    // SAFETY: pointers from Varnish.
    let Some((ctx, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return;
    };
    guard(Some(ctx), "set_header()", (), || {
        // SAFETY: VCL string arguments.
        let (name, value) = unsafe { (vcl_bytes(name), vcl_bytes(value)) };
        if let Err(e) = peer.set_header(name, value) {
            fail(
                ctx,
                &format!("peer.set_header(): {}: {e}", peer.settings().name),
            );
        }
    });
}

/// `x.unset_header(name)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_unset_header(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    name: VCL_STRING,
) {
    // SAFETY: pointers from Varnish.
    let Some((ctx, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return;
    };
    guard(Some(ctx), "unset_header()", (), || {
        // SAFETY: VCL string argument.
        let name = unsafe { vcl_bytes(name) };
        if let Err(e) = peer.unset_header(name) {
            fail(
                ctx,
                &format!("peer.unset_header(): {}: {e}", peer.settings().name),
            );
        }
    });
}

/// `x.queue_req(method, url)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_queue_req(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    method: VCL_STRING,
    url: VCL_STRING,
) {
    // SAFETY: pointers from Varnish.
    let Some((ctx, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return;
    };
    guard(Some(ctx), "queue_req()", (), || {
        // SAFETY: VCL string arguments.
        let (method, url) = unsafe { (vcl_bytes(method), vcl_bytes(url)) };
        enqueue(
            ctx,
            "peer.queue_req()",
            peer,
            snapshot(ctx, None, method, url),
        );
    });
}

/// `x.queue_req_body(body, method, url)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_queue_req_body(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    body: VCL_STRANDS,
    method: VCL_STRING,
    url: VCL_STRING,
) {
    // SAFETY: pointers from Varnish.
    let Some((ctx, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return;
    };
    guard(Some(ctx), "queue_req_body()", (), || {
        // SAFETY: arguments of this call.
        let (body, method, url) =
            unsafe { (strands_bytes(body), vcl_bytes(method), vcl_bytes(url)) };
        enqueue(
            ctx,
            "peer.queue_req_body()",
            peer,
            snapshot(ctx, Some(body), method, url),
        );
    });
}

/// `x.pending()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_pending(ctx: *const vrt_ctx, obj: *const PeerObject) -> VCL_INT {
    // SAFETY: pointers from Varnish.
    let Some((_, peer)) = (unsafe { ctx_obj(ctx, obj) }) else {
        return VCL_INT(0);
    };
    VCL_INT(i64::try_from(peer.pending()).unwrap_or(i64::MAX))
}
