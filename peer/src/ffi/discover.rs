//! `x.add_dns_destinations()`: converts its arguments and calls `discover.rs`; and the
//! resolver used in varnishd, getaddrinfo with the family and `AI_ADDRCONFIG` as hints.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use varnish::ffi::{vrt_ctx, VCL_DURATION, VCL_ENUM, VCL_INT, VCL_STRING};
use vmod_rt::{fail_in, vcl_bytes, vcl_str};

use super::vmod::{with_obj, PeerObject};
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

/// getaddrinfo asked for stream sockets of one family (`AI_ADDRCONFIG` with both: no IPv6
/// address on a machine that has none configured, and the reverse).
#[derive(Debug, Default)]
pub(super) struct Getaddrinfo;

impl Resolver for Getaddrinfo {
    fn resolve(&self, host: &str, port: u16, family: Family) -> Result<Vec<IpAddr>, String> {
        let host = CString::new(host).map_err(|_| "a NUL byte in the name".to_string())?;
        let service = CString::new(port.to_string()).map_err(|e| e.to_string())?;
        // SAFETY: an all-zero addrinfo is the documented "no hints" value.
        let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_socktype = libc::SOCK_STREAM;
        (hints.ai_family, hints.ai_flags) = match family {
            Family::Ipv4 => (libc::AF_INET, 0),
            Family::Ipv6 => (libc::AF_INET6, 0),
            Family::Any => (libc::AF_UNSPEC, libc::AI_ADDRCONFIG),
        };
        let mut list: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings and hints that outlive the call; `list` is written.
        let rc = unsafe { libc::getaddrinfo(host.as_ptr(), service.as_ptr(), &hints, &mut list) };
        if rc != 0 {
            // SAFETY: gai_strerror returns a static NUL-terminated string for any code.
            let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
            return Err(why.to_string_lossy().into_owned());
        }
        let mut addrs = Vec::new();
        let mut next = list;
        while !next.is_null() {
            // SAFETY: a node of the list getaddrinfo returned, not freed yet.
            let ai = unsafe { &*next };
            addrs.extend(address_of(ai));
            next = ai.ai_next;
        }
        // SAFETY: the list getaddrinfo returned, freed once, not used afterwards.
        unsafe { libc::freeaddrinfo(list) };
        Ok(addrs)
    }
}

/// The address of one getaddrinfo result.
fn address_of(ai: &libc::addrinfo) -> Option<IpAddr> {
    if ai.ai_addr.is_null() {
        return None;
    }
    match ai.ai_family {
        libc::AF_INET => {
            // SAFETY: an AF_INET result's ai_addr is a sockaddr_in.
            let sin = unsafe { &*ai.ai_addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 result's ai_addr is a sockaddr_in6.
            let sin6 = unsafe { &*ai.ai_addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getaddrinfo_gives_the_addresses_of_the_family_asked_for() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let r = Getaddrinfo;
        assert_eq!(r.resolve("127.0.0.1", 80, Family::Ipv4), Ok(vec![v4]));
        assert_eq!(r.resolve("::1", 80, Family::Ipv6), Ok(vec![v6]));
        assert!(r.resolve("::1", 80, Family::Ipv4).is_err());
        assert!(r.resolve("a\0b", 80, Family::Any).is_err());
    }
}
