//! Every raw pointer of the crate lives under this module: `vmod` (what Varnish calls;
//! `batch` for the batch methods, `discover` for `x.add_dns_destinations()`), `services`
//! (VSC segments and VSL for the peers),
//! `request` (reading a request out of Varnish's structures), `curl` (libcurl options set
//! from bytes), `poll` (the built-in HTTP client's bounded connect) and `resolve`
//! (getaddrinfo for DNS discovery). The Varnish primitives they use are the shared crate `vmod-rt`'s.
//!
//! `vmod`, `services` and `request` are left out of unit-test builds and of builds without the
//! `vmod` feature: they link against symbols only varnishd provides, which a test or bench
//! executable does not have.

#[cfg(all(not(test), feature = "vmod"))]
mod batch;
mod curl;
#[cfg(all(not(test), feature = "vmod"))]
mod discover;
mod poll;
#[cfg(all(not(test), feature = "vmod"))]
mod request;
mod resolve;
#[cfg(all(not(test), feature = "vmod"))]
mod services;
#[cfg(all(not(test), feature = "vmod"))]
mod vmod;

pub use curl::{
    curl_clear_post_body, curl_set_method, curl_set_post_body, curl_set_url, HeaderBlock,
};
pub use poll::{readable_now, wait_writable};
pub use resolve::Getaddrinfo;
