//! The Varnish primitives this module needs, in one place so they can be lifted into a crate
//! shared with saintmode: checking what Varnish hands over, reading VCL arguments, failing a
//! task, VSL lines, VSC segments, the PRIV_VCL slot, and the panic guard that knows where it
//! runs (a VCL task or `vcl_init`/`vcl_fini` fail with a message; a WARM event returns an
//! error; a COLD or DISCARD event only logs: Varnish asserts if those fail).

use std::ffi::{c_int, c_uint, c_void, CStr, CString};
use std::marker::PhantomData;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;

use varnish::ffi::{
    self, vmod_priv, vmod_priv_methods, vrt_ctx, vsc_seg, VslTag, VCL_STRANDS, VCL_STRING,
};
use varnish::VscMetric;

extern "C" {
    // vrt_obj.h is not in the bindings.
    fn VRT_r_server_identity(ctx: *const vrt_ctx) -> VCL_STRING;
    // libc (glibc >= 2.34 has these in libc itself).
    fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    fn dlopen(file: *const std::ffi::c_char, mode: c_int) -> *mut c_void;
}

/// glibc's `Dl_info`.
#[repr(C)]
struct DlInfo {
    dli_fname: *const std::ffi::c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const std::ffi::c_char,
    dli_saddr: *mut c_void,
}

const RTLD_NOW: c_int = 2;
const RTLD_NOLOAD: c_int = 4;
const RTLD_NODELETE: c_int = 0x1000;

/// Keeps this shared object mapped for the life of the process (`RTLD_NODELETE`), so that
/// a thread still running its code survives the `dlclose()` Varnish makes when the module's
/// last VCL is discarded. The extra handle is never closed: on purpose.
pub fn pin_module() -> bool {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: null_mut(),
        dli_sname: std::ptr::null(),
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

type VsbBcat = unsafe extern "C" fn(*mut ffi::vsb, *const c_void, isize) -> c_int;

/// varnishd's own `VSB_bcat`, looked up at run time: linking to the symbol would resolve it
/// in libvarnishapi and make the module need that library, which varnishd does not load.
fn vsb_bcat() -> Option<VsbBcat> {
    // SAFETY: RTLD_DEFAULT (NULL) searches the global symbols of the process; the name is a
    // NUL-terminated literal.
    let p = unsafe { dlsym(null_mut(), c"VSB_bcat".as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: VSB_bcat has this signature (vsb.h: int VSB_bcat(struct vsb *, const void *,
    // ssize_t)).
    Some(unsafe { std::mem::transmute::<*mut c_void, VsbBcat>(p) })
}

/// The context, when it is one (not NULL, right magic).
///
/// # Safety
/// `ctx` is NULL or points to a `vrt_ctx` valid for `'a`.
pub unsafe fn ctx_ref<'a>(ctx: *const vrt_ctx) -> Option<&'a vrt_ctx> {
    // SAFETY: the caller guarantees NULL or a valid pointer; as_ref checks NULL.
    let ctx = unsafe { ctx.as_ref() }?;
    (ctx.magic == ffi::VRT_CTX_MAGIC).then_some(ctx)
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
/// sent (header names and values are bytes, see [`vcl_bytes`]).
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

/// A copy of `bytes` on the task's workspace, as a VCL string; NULL (with a failed task)
/// when the workspace is exhausted or `bytes` has a NUL.
pub fn ws_string(ctx: &vrt_ctx, fname: &str, bytes: &[u8]) -> VCL_STRING {
    let Ok(c) = CString::new(bytes) else {
        fail(ctx, &format!("{fname}: the result would contain NUL"));
        return VCL_STRING(std::ptr::null());
    };
    let len = c.as_bytes_with_nul().len();
    let Ok(ilen) = std::ffi::c_long::try_from(len) else {
        fail(ctx, &format!("{fname}: result too long"));
        return VCL_STRING(std::ptr::null());
    };
    // SAFETY: ctx.ws is the task's workspace (checked context); WS_Copy copies `len` bytes
    // from a live buffer and returns NULL when out of space.
    let p = unsafe { ffi::WS_Copy(ctx.ws, c.as_ptr().cast(), ilen as _) };
    if p.is_null() {
        fail(ctx, &format!("{fname}: out of workspace"));
        return VCL_STRING(std::ptr::null());
    }
    VCL_STRING(p.cast())
}

/// Fails the VCL task (in `vcl_init`: the load fails) with `msg`. Only for VCL tasks and
/// `vcl_init`/`vcl_fini`: Varnish asserts when a temperature event fails this way.
pub fn fail(ctx: &vrt_ctx, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    // SAFETY: ctx is a checked context of a task; "%.*s" reads `len` bytes of `msg`.
    unsafe { ffi::VRT_fail(ctx, c"%.*s".as_ptr(), len, msg.as_ptr()) };
}

/// A log line in the transaction of `ctx` (or with no transaction when it has none).
pub fn log_ctx(ctx: &vrt_ctx, tag: VslTag, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    if ctx.vsl.is_null() {
        log_raw(tag, msg);
    } else {
        // SAFETY: vsl belongs to the current task; the format reads `len` bytes of `msg`.
        unsafe { ffi::VSLb(ctx.vsl, tag, c"%.*s".as_ptr(), len, msg.as_ptr()) };
    }
}

/// A log line with no transaction (vxid 0): from sender threads. `VSL()` is thread safe.
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

/// The name of the VCL of `ctx`.
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
    // SAFETY: reads the heritage through a checked context.
    unsafe { vcl_str(VRT_r_server_identity(ctx)) }
}

/// A VSC segment holding a `T` (counters made of atomics), destroyed on drop.
pub struct VscSegment<T: VscMetric> {
    metric: *const T,
    seg: *mut vsc_seg,
    class: &'static CStr,
    _t: PhantomData<T>,
}

// SAFETY: the segment memory is only accessed through `&T`, whose fields are atomics
// (`T: Sync`), and lives until `Drop`, which needs `&mut self`.
unsafe impl<T: VscMetric + Sync> Send for VscSegment<T> {}
// SAFETY: as above.
unsafe impl<T: VscMetric + Sync> Sync for VscSegment<T> {}

impl<T: VscMetric> VscSegment<T> {
    /// `<class>.<vcl>.<name>`, e.g. `PEER.boot.cdn`.
    pub fn new(class: &'static CStr, vcl: &str, name: &str) -> Option<Self> {
        let vcl = CString::new(vcl).ok()?;
        let name = CString::new(name).ok()?;
        let json = T::get_metadata();
        let mut seg = null_mut();
        // SAFETY: called from the CLI thread; the JSON and class are 'static (Varnish keeps
        // their pointers), the names outlive the call, the format takes two strings.
        let metric = unsafe {
            ffi::VRT_VSC_AllocVariadic(
                null_mut(),
                &raw mut seg,
                class.as_ptr(),
                size_of::<T>(),
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
        Some(VscSegment {
            metric: metric.cast::<T>(),
            seg,
            class,
            _t: PhantomData,
        })
    }

    pub fn get(&self) -> &T {
        // SAFETY: Varnish allocated zeroed, 8-aligned room for a T (all-zero atomics are
        // valid), alive until VRT_VSC_Destroy in Drop.
        unsafe { &*self.metric }
    }
}

impl<T: VscMetric> Drop for VscSegment<T> {
    fn drop(&mut self) {
        // SAFETY: the segment was made by VRT_VSC_AllocVariadic and is destroyed once; the
        // call takes the VSC lock, so any thread may make it.
        unsafe { ffi::VRT_VSC_Destroy(self.class.as_ptr(), self.seg) };
    }
}

/// The object behind this VCL's PRIV_VCL, made by `make` on first use and freed by Varnish
/// when the VCL is discarded.
///
/// # Safety
/// `priv_` is NULL or this VCL's PRIV_VCL, only ever filled by this function with the same
/// `T` and `methods`. Creation happens in vcl_init or an event (CLI thread, single-threaded);
/// later calls only read.
pub unsafe fn priv_vcl<'a, T>(
    priv_: *mut vmod_priv,
    methods: &'static vmod_priv_methods,
    make: impl FnOnce() -> T,
) -> Option<&'a T> {
    // SAFETY: NULL or the PRIV_VCL per the caller.
    let priv_ = unsafe { priv_.as_mut() }?;
    if priv_.priv_.is_null() {
        priv_.priv_ = Box::into_raw(Box::new(make())).cast::<c_void>();
        priv_.methods = methods;
    }
    // SAFETY: set above (or by an earlier call) to a T owned by the priv until `free_priv`.
    unsafe { priv_.priv_.cast::<T>().as_ref() }
}

/// The `fini` of a PRIV_VCL made by [`priv_vcl`] with a `T`.
///
/// # Safety
/// `p` is NULL or the pointer [`priv_vcl`] made for a `T`, freed only here, once.
pub unsafe fn free_priv<T>(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: per the caller, a Box<T> made by priv_vcl.
        let state = unsafe { Box::from_raw(p.cast::<T>()) };
        if catch_unwind(AssertUnwindSafe(move || drop(state))).is_err() {
            log_raw(
                VslTag::Error,
                "peer: internal error (panic) while freeing a VCL's state",
            );
        }
    }
}

/// Runs the body of a VCL function (a task, `vcl_init` or `vcl_fini`): a panic fails the
/// task with a `peer.<fn>():` message instead of crossing into C.
pub fn guard_task<T>(ctx: &vrt_ctx, fname: &str, default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(|| {
        test_panic(fname);
        f()
    }))
    .unwrap_or_else(|_| {
        fail(ctx, &format!("{fname}: internal error (panic)"));
        default
    })
}

/// The VCL temperature events, as Varnish numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Load,
    Warm,
    Cold,
    Discard,
    Other,
}

impl Event {
    pub fn from_raw(e: c_uint) -> Self {
        match e {
            e if e == ffi::VclEvent::Load as c_uint => Event::Load,
            e if e == ffi::VclEvent::Warm as c_uint => Event::Warm,
            e if e == ffi::VclEvent::Cold as c_uint => Event::Cold,
            e if e == ffi::VclEvent::Discard as c_uint => Event::Discard,
            _ => Event::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Event::Load => "load",
            Event::Warm => "warm",
            Event::Cold => "cold",
            Event::Discard => "discard",
            Event::Other => "other",
        }
    }
}

/// Runs an event function's body. An error or a panic in LOAD or WARM makes the event fail
/// with the message in the CLI answer (Varnish allows those to fail); in COLD and DISCARD,
/// which Varnish does not allow to fail (it asserts), it is only logged.
pub fn guard_event<E: std::fmt::Display>(
    ctx: &vrt_ctx,
    event: Event,
    f: impl FnOnce() -> Result<(), E>,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        test_panic(event.name());
        f().map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| {
        Err(format!(
            "peer: internal error (panic) in the {} event",
            event.name()
        ))
    });
    let Err(msg) = result else {
        return 0;
    };
    match event {
        Event::Load | Event::Warm if !ctx.msg.is_null() => {
            let len = isize::try_from(msg.len()).unwrap_or(0);
            if let Some(bcat) = vsb_bcat() {
                // SAFETY: ctx.msg is the event's message buffer (Varnish gives one for LOAD
                // and WARM), the bytes are live for the call.
                unsafe { bcat(ctx.msg, msg.as_ptr().cast(), len) };
            } else {
                log_raw(VslTag::Error, &msg);
            }
            1
        }
        _ => {
            log_raw(VslTag::Error, &msg);
            0
        }
    }
}

/// A panic on purpose where the environment variable `VMOD_PEER_TEST_PANIC` names `point`
/// (an event name or a `peer.<fn>()`), to prove the guards. Debug builds only: release
/// builds do not contain it.
#[cfg(debug_assertions)]
fn test_panic(point: &str) {
    if std::env::var("VMOD_PEER_TEST_PANIC").is_ok_and(|v| v == point) {
        panic!("VMOD_PEER_TEST_PANIC={point}");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn test_panic(_point: &str) {}
