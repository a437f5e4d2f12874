//! Every raw pointer of the crate lives under this module: `vmod` (what Varnish calls),
//! `vrt` (the Varnish primitives it uses), `request` (reading a request out of Varnish's
//! structures) and `curl` (libcurl options set from bytes).
//!
//! `vmod` is left out of unit-test builds: it links against symbols only varnishd
//! provides, which a test executable does not have.

mod curl;
#[cfg(not(test))]
mod request;
#[cfg(not(test))]
mod vmod;
#[cfg(not(test))]
mod vrt;

pub use curl::{curl_set_method, curl_set_post_body, curl_set_url, CurlHeaderList};
