//! `x.add_dns_destinations()`: converts its arguments and calls `discover.rs`.

use varnish::ffi::{vrt_ctx, VCL_DURATION, VCL_INT, VCL_STRING};
use vmod_rt::{fail_in, vcl_bytes};

use super::vmod::{with_obj, PeerObject};
use crate::discover::{add_dns_destinations, SystemResolver};
use crate::sender::Peer;

/// `x.add_dns_destinations(destination, port, refresh)`.
///
/// # Safety
/// Called by Varnish (vcl_init) with valid arguments.
#[no_mangle]
pub unsafe extern "C" fn vmod_peer_add_dns_destinations(
    ctx: *const vrt_ctx,
    obj: *const PeerObject,
    destination: VCL_STRING,
    port: VCL_INT,
    refresh: VCL_DURATION,
) {
    const F: &str = "peer.add_dns_destinations()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string argument.
        let destination = unsafe { vcl_bytes(destination) };
        if let Err(e) =
            add_dns_destinations(peer, destination, port.0, refresh.0 .0, &SystemResolver)
        {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}
