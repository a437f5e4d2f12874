//! The `extern "C"` functions of batch peers (declared in `vmod.vcc`): `x.set_batch()`,
//! `x.queue_item()` and `x.queue_items()`. Each converts its arguments and calls `batch`.

use varnish::ffi::{vrt_ctx, VslTag, VCL_DURATION, VCL_ENUM, VCL_INT, VCL_STRING};

use vmod_rt::{fail_in, log, vcl_bytes, vcl_str};

use super::vmod::{with_obj, PeerObject};
use crate::batch::{queue_item_on, split_list, BatchArgs, BatchSpec, ListSplit};
use crate::sender::Peer;

/// `x.set_batch(url, body, header, items, method, max_items, window)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn vmod_peer_set_batch(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    url: VCL_STRING,
    body: VCL_STRING,
    header: VCL_STRING,
    items: VCL_ENUM,
    method: VCL_STRING,
    max_items: VCL_INT,
    window: VCL_DURATION,
) {
    const F: &str = "peer.set_batch()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string arguments of this call (an ENUM is one too).
        let args = unsafe {
            BatchArgs {
                url: vcl_bytes(url).to_vec(),
                body: vcl_bytes(body).to_vec(),
                header: vcl_bytes(header).to_vec(),
                items: vcl_str(VCL_STRING(items.0)),
                method: vcl_bytes(method).to_vec(),
                max_items: max_items.0,
                window: window.0 .0,
            }
        };
        let set = BatchSpec::new(&args, peer.settings().policy.max_age)
            .map_err(|e| e.to_string())
            .and_then(|spec| peer.set_batch(spec).map_err(|e| e.to_string()));
        if let Err(e) = set {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}

/// `x.queue_item(item)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_queue_item(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    item: VCL_STRING,
) {
    const F: &str = "peer.queue_item()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string argument.
        let item = unsafe { vcl_bytes(item) };
        queue_item_on(peer, F, item, |line| log(ctx, VslTag::VclError, line));
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}

/// `x.queue_items(list, split)`.
///
/// # Safety
/// Called by Varnish with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_queue_items(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    list: VCL_STRING,
    split: VCL_ENUM,
) {
    const F: &str = "peer.queue_items()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string arguments (an ENUM is one too).
        let (list, split) = unsafe { (vcl_bytes(list), vcl_str(VCL_STRING(split.0))) };
        // vmodtool only passes the ENUM's values; the default stands for anything else.
        let split = ListSplit::parse(&split).unwrap_or(ListSplit::Xkey);
        for item in split_list(list, split) {
            queue_item_on(peer, F, item, |line| log(ctx, VslTag::VclError, line));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}
