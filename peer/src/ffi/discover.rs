//! `x.add_dns_destinations()`: converts its arguments and calls `discover.rs`.

use std::sync::Arc;

use varnish::ffi::{vrt_ctx, VCL_DURATION, VCL_ENUM, VCL_INT, VCL_STRING};
use vmod_rt::{fail_in, vcl_bytes, vcl_str};

use super::vmod::{with_obj, PeerObject};
use super::Getaddrinfo;
use crate::discover::{add_dns_destinations, Family, Resolver, INIT_RESOLVE_TIMEOUT};
use crate::sender::Peer;

/// `x.add_dns_destinations(destination, port, refresh, family)`.
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
    family: VCL_ENUM,
) {
    const F: &str = "peer.add_dns_destinations()";
    let f = |ctx: &vrt_ctx, peer: &Peer| {
        // SAFETY: VCL string and enum arguments (an enum is a static string of vmod.vcc).
        let (destination, family) =
            unsafe { (vcl_bytes(destination), vcl_str(VCL_STRING(family.0))) };
        let Some(family) = Family::from_vcl(&family) else {
            fail_in(
                ctx,
                F,
                format_args!("{}: family: unknown ({family})", peer.name()),
            );
            return;
        };
        let resolver: Arc<dyn Resolver> = Arc::new(Getaddrinfo);
        let (port, refresh) = (port.0, refresh.0 .0);
        let limit = INIT_RESOLVE_TIMEOUT;
        if let Err(e) =
            add_dns_destinations(peer, destination, port, refresh, family, &resolver, limit)
        {
            fail_in(ctx, F, format_args!("{}: {e}", peer.name()));
        }
    };
    // SAFETY: pointers from Varnish; `f` reads only this call's arguments.
    unsafe { with_obj(ctx, obj, F, (), f) }
}
