//! The resolver of discovered names in varnishd: getaddrinfo with the family and
//! `AI_ADDRCONFIG` as hints (the standard library passes neither).

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::discover::{Family, Resolver};

/// getaddrinfo asked for stream sockets of one family (`AI_ADDRCONFIG` with both: no IPv6
/// address on a machine that has none configured, and the reverse).
#[derive(Debug, Default)]
pub struct Getaddrinfo;

impl Resolver for Getaddrinfo {
    fn resolve(&self, host: &str, port: u16, family: Family) -> Result<Vec<IpAddr>, String> {
        let answer = getaddrinfo(host, port, family);
        if answer.is_err() && family != Family::Any {
            // Only addresses of the other family? Returned, so that the error says so
            // (`resolves to no IPv4 address (family = ipv6 ...)`; the caller filters).
            if let Ok(other) = getaddrinfo(host, port, Family::Any) {
                if !other.is_empty() {
                    return Ok(other);
                }
            }
        }
        answer
    }
}

fn getaddrinfo(host: &str, port: u16, family: Family) -> Result<Vec<IpAddr>, String> {
    {
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
        let other = r.resolve("::1", 80, Family::Ipv4).unwrap();
        assert_eq!(other, [v6], "only the other family: given for the message");
        assert!(r.resolve("a\0b", 80, Family::Any).is_err());
    }
}
