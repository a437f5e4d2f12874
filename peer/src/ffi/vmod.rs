//! The `extern "C"` functions Varnish calls (declared in `vmod.vcc`). Each one checks and
//! converts what Varnish hands it, calls plain Rust (`vcl`, `config`, `sender`, `escape`),
//! and converts the result: a failed task, a log line, a return value.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::ptr::null_mut;
use std::sync::Arc;

use varnish::ffi::{
    self, vmod_priv, vmod_priv_methods, vrt_ctx, VslTag, VCL_BOOL, VCL_BYTES, VCL_DURATION,
    VCL_ENUM, VCL_INT, VCL_REAL, VCL_STRANDS, VCL_STRING,
};

use vmod_rt::{
    fail_in, guard_callback, guard_event, guard_task, log, log_raw, priv_release, priv_vcl,
    server_identity, strands_bytes, vcl_bytes, vcl_name, vcl_str, ws_copy, Event,
};

use super::request::snapshot;
use super::services::Varnishd;
use crate::config::PeerArgs;
use crate::dest::Destination;
use crate::escape;
use crate::magic::{Tagged, PEER_OBJECT_MAGIC};
use crate::sender::{Peer, SetupError};
use crate::vcl::{queue_on, DefaultTimeout, VclPeers, WarmError};

unsafe extern "C" fn free_vcl_peers(_ctx: *const vrt_ctx, p: *mut std::ffi::c_void) {
    guard_callback("peer: freeing a VCL's state", (), || {
        // SAFETY: `p` is what `peers()` stored in the PRIV_VCL for a VclPeers, released once.
        unsafe { priv_release::<VclPeers>(p) }
    });
}

static VCL_PEERS_METHODS: vmod_priv_methods = vmod_priv_methods {
    magic: ffi::VMOD_PRIV_METHODS_MAGIC,
    type_: c"vmod_peer.vcl".as_ptr(),
    fini: Some(free_vcl_peers),
};

/// This VCL's peers, made on first use.
fn peers<'a>(ctx: &vrt_ctx, priv_: *mut vmod_priv) -> Option<&'a VclPeers> {
    // SAFETY: `priv_` is this VCL's PRIV_VCL, filled only here with VCL_PEERS_METHODS.
    unsafe {
        priv_vcl(priv_, &VCL_PEERS_METHODS, || {
            VclPeers::new(&vcl_name(ctx), &server_identity(ctx), Arc::new(Varnishd))
        })
    }
}

fn queue(
    ctx: &vrt_ctx,
    fname: &str,
    peer: &Peer,
    body: Option<Vec<u8>>,
    method: &[u8],
    url: &[u8],
) {
    queue_on(
        peer,
        fname,
        || snapshot(ctx, body, method, url),
        |line| log(ctx, VslTag::VclError, line),
    );
}

fn vcl_int(n: u64) -> VCL_INT {
    VCL_INT(i64::try_from(n).unwrap_or(i64::MAX))
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
    let f = |ctx: &vrt_ctx, event: Event| {
        let Some(peers) = peers(ctx, priv_) else {
            return Ok::<(), WarmError>(());
        };
        match event {
            Event::Warm => peers.warm()?,
            Event::Cold => peers.cold(),
            Event::Discard => {
                peers.discard();
            }
            Event::Load | Event::Other => {}
        }
        Ok(())
    };
    // SAFETY: the context Varnish passed to this event function.
    unsafe { guard_event(ctx, "peer", event, f) }
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
    let body = |ctx: &vrt_ctx| {
        // SAFETY: VCL string argument.
        let host = unsafe { vcl_bytes(host) };
        match Destination::parse_bytes(host, port.0) {
            Ok(dest) => {
                if let Some(peers) = peers(ctx, priv_) {
                    peers.set_default_destination(dest);
                }
            }
            Err(e) => fail_in(ctx, "peer.set()", format_args!("host/port: {e}")),
        }
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "peer.set()", (), body) };
}

/// `peer.queue_req()` / `peer.enqueue_req()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_queue_req(ctx: *const vrt_ctx, priv_: *mut vmod_priv) {
    // SAFETY: the context Varnish passed to this call.
    unsafe { queue_default(ctx, priv_, "peer.queue_req()", None) };
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
    // SAFETY: the STRANDS argument of this call.
    let body = unsafe { strands_bytes(body) };
    // SAFETY: the context Varnish passed to this call.
    unsafe { queue_default(ctx, priv_, "peer.queue_req_body()", Some(body)) };
}

/// # Safety
/// `ctx` is NULL or the context Varnish passed to the calling entry point.
unsafe fn queue_default(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    fname: &str,
    body: Option<Vec<u8>>,
) {
    let run = |ctx: &vrt_ctx| match peers(ctx, priv_).and_then(VclPeers::default_peer) {
        Some(peer) => queue(ctx, fname, &peer, body, b"", b""),
        None => log(
            ctx,
            VslTag::VclError,
            &format!("{fname}: no destination (call peer.set() in vcl_init), nothing queued"),
        ),
    };
    // SAFETY: per the caller.
    unsafe { guard_task(ctx, fname, (), run) };
}

/// `peer.pending()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_pending(ctx: *const vrt_ctx, priv_: *mut vmod_priv) -> VCL_INT {
    let body = |ctx: &vrt_ctx| vcl_int(peers(ctx, priv_).map_or(0, VclPeers::pending));
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "peer.pending()", VCL_INT(0), body) }
}

fn set_default_timeout(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    ms: VCL_INT,
    which: DefaultTimeout,
) {
    let fname = match which {
        DefaultTimeout::Connect => "peer.set_connect_timeout()",
        DefaultTimeout::Total => "peer.set_timeout()",
        DefaultTimeout::Drain => "peer.set_drain_timeout()",
    };
    let body = |ctx: &vrt_ctx| {
        if let Some(peers) = peers(ctx, priv_) {
            if let Err(e) = peers.set_default_timeout(which, ms.0) {
                fail_in(ctx, fname, e);
            }
        }
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, fname, (), body) };
}

/// `peer.set_connect_timeout(ms)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set_connect_timeout(
    ctx: *const vrt_ctx,
    priv_: *mut vmod_priv,
    ms: VCL_INT,
) {
    set_default_timeout(ctx, priv_, ms, DefaultTimeout::Connect);
}

/// `peer.set_timeout(ms)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_set_timeout(ctx: *const vrt_ctx, priv_: *mut vmod_priv, ms: VCL_INT) {
    set_default_timeout(ctx, priv_, ms, DefaultTimeout::Total);
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
    set_default_timeout(ctx, priv_, ms, DefaultTimeout::Drain);
}

fn escaped(ctx: *const vrt_ctx, fname: &str, s: VCL_STRING, f: fn(&[u8]) -> Vec<u8>) -> VCL_STRING {
    let body = |ctx: &vrt_ctx| {
        // SAFETY: VCL string argument.
        let s = unsafe { vcl_bytes(s) };
        ws_string(ctx, fname, &f(s))
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, fname, VCL_STRING(std::ptr::null()), body) }
}

/// `peer.json_string(s)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_json_string(ctx: *const vrt_ctx, s: VCL_STRING) -> VCL_STRING {
    escaped(ctx, "peer.json_string()", s, escape::json_string)
}

/// `peer.url_component(s)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_url_component(ctx: *const vrt_ctx, s: VCL_STRING) -> VCL_STRING {
    escaped(ctx, "peer.url_component()", s, escape::url_component)
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

/// What `new x = peer.peer()` points to: tagged with [`PEER_OBJECT_MAGIC`], checked before
/// every use.
pub type PeerObject = Tagged<Arc<Peer>>;

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
    queue_bytes: VCL_BYTES,
    credentials: VCL_ENUM,
    proxy: VCL_STRING,
    rate: VCL_REAL,
    burst: VCL_INT,
    circuit_failures: VCL_INT,
    circuit_interval: VCL_DURATION,
) {
    // SAFETY: objp is where Varnish stores the object; NULL checked.
    let Some(objp) = (unsafe { objp.as_mut() }) else {
        return;
    };
    let body = |ctx: &vrt_ctx| {
        // SAFETY: the object name and the string arguments are VCL strings of this call (an
        // ENUM is one too).
        let (name, ca_file, credentials, proxy) = unsafe {
            (
                vcl_str(VCL_STRING(vcl_name)),
                vcl_str(ca_file),
                vcl_str(VCL_STRING(credentials.0)),
                vcl_str(proxy),
            )
        };
        let args = PeerArgs {
            queue_size: queue_size.0,
            concurrency: concurrency.0,
            max_attempts: max_attempts.0,
            backoff: backoff.0 .0,
            max_backoff: max_backoff.0 .0,
            max_age: max_age.0 .0,
            connect_timeout: connect_timeout.0 .0,
            timeout: timeout.0 .0,
            tls_verify: tls_verify.0 != 0,
            ca_file,
            drain_timeout: drain_timeout.0 .0,
            copy_headers: copy_headers.0 != 0,
            queue_bytes: queue_bytes.0,
            credentials,
            proxy,
            rate: rate.0,
            burst: burst.0,
            circuit_failures: circuit_failures.0,
            circuit_interval: circuit_interval.0 .0,
        };
        let Some(peers) = peers(ctx, priv_) else {
            return;
        };
        match peers.new_peer(&name, &args) {
            Ok(peer) => *objp = Box::into_raw(Box::new(Tagged::new(PEER_OBJECT_MAGIC, peer))),
            Err(e) => fail_in(ctx, "peer.peer()", e),
        }
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, "peer.peer()", (), body) };
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
    // SAFETY: NULL or the object made by __init, not yet freed (the slot held it).
    if unsafe { obj.as_ref() }.is_some_and(|o| !o.is(PEER_OBJECT_MAGIC)) {
        // Not ours, or already freed: leaked rather than freed twice.
        log_raw(
            VslTag::Error,
            "peer.peer(): bad object magic at fini, not freed",
        );
        return;
    }
    if !obj.is_null() {
        // SAFETY: made by Box::into_raw in __init, freed once (the slot is now NULL).
        let obj = unsafe { Box::from_raw(obj) };
        guard_callback("peer.peer() fini", (), move || drop(obj));
    }
}

/// Runs `f` with a checked context and object, guarded for `fname`.
///
/// # Safety
/// Pointers from Varnish: `obj` is NULL or the object made by __init, alive until __fini.
pub(super) unsafe fn with_obj<T>(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    fname: &str,
    default: T,
    f: impl FnOnce(&vrt_ctx, &Peer) -> T,
) -> T {
    // SAFETY: per the caller.
    let Some(obj) = (unsafe { obj.as_ref() }) else {
        return default;
    };
    let Some(peer) = obj.get(PEER_OBJECT_MAGIC) else {
        // SAFETY: per the caller.
        unsafe {
            guard_task(ctx, fname, (), |ctx| {
                fail_in(ctx, fname, "not a peer object (bad magic)");
            });
        }
        return default;
    };
    // SAFETY: per the caller.
    unsafe { guard_task(ctx, fname, default, |ctx| f(ctx, peer)) }
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
    name: VCL_STRING,
) {
    const F: &str = "peer.add_destination()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string arguments.
        let (destination, name) = unsafe { (vcl_bytes(destination), vcl_str(name)) };
        let added = match Destination::parse_bytes(destination, port.0) {
            // The name's error says "name: ..." itself.
            Ok(dest) => peer
                .add_named_destination(dest, &name)
                .map_err(|e| match e {
                    SetupError::Name(e) => e.to_string(),
                    e => format!("destination: {e}"),
                }),
            Err(e) => Err(format!("destination: {e}")),
        };
        if let Err(e) = added {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
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
    const F: &str = "peer.set_header()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string arguments.
        let (name, value) = unsafe { (vcl_bytes(name), vcl_bytes(value)) };
        if let Err(e) = peer.set_header(name, value) {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
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
    const F: &str = "peer.unset_header()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string argument.
        let name = unsafe { vcl_bytes(name) };
        if let Err(e) = peer.unset_header(name) {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
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
    const F: &str = "peer.queue_req()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string arguments.
        let (method, url) = unsafe { (vcl_bytes(method), vcl_bytes(url)) };
        queue(ctx, F, peer, None, method, url);
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
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
    const F: &str = "peer.queue_req_body()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: arguments of this call.
        let (body, method, url) =
            unsafe { (strands_bytes(body), vcl_bytes(method), vcl_bytes(url)) };
        queue(ctx, F, peer, Some(body), method, url);
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}

/// `x.pending()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_pending(ctx: *const vrt_ctx, obj: *const PeerObject) -> VCL_INT {
    // SAFETY: pointers from Varnish.
    unsafe {
        with_obj(ctx, obj, "peer.pending()", VCL_INT(0), |_, peer| {
            vcl_int(peer.pending())
        })
    }
}

/// `bytes` on the workspace, or NULL and a failed task when they do not fit.
fn ws_string(ctx: &vrt_ctx, fname: &str, bytes: &[u8]) -> VCL_STRING {
    ws_copy(ctx, bytes).unwrap_or_else(|e| {
        fail_in(ctx, fname, e);
        VCL_STRING(std::ptr::null())
    })
}

/// `x.report()`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_report(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
) -> VCL_STRING {
    const F: &str = "peer.report()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        let mut json = String::new();
        peer.report_json(&mut json);
        ws_string(ctx, F, json.as_bytes())
    };
    // SAFETY: pointers from Varnish.
    unsafe { with_obj(ctx, obj, F, VCL_STRING(std::ptr::null()), f) }
}

/// `peer.report()`: every peer of this VCL.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_report(ctx: *const vrt_ctx, priv_: *mut vmod_priv) -> VCL_STRING {
    const F: &str = "peer.report()";
    let body = |ctx: &vrt_ctx| {
        let json = peers(ctx, priv_).map_or_else(|| "{\"peers\":[]}".into(), VclPeers::report_json);
        ws_string(ctx, F, json.as_bytes())
    };
    // SAFETY: the context Varnish passed to this call.
    unsafe { guard_task(ctx, F, VCL_STRING(std::ptr::null()), body) }
}
