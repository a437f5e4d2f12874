//! Every raw pointer of the crate lives under this module: `vmod` (what Varnish calls and
//! the varnishd functions it calls back) and `curl` (libcurl options set from bytes).
//!
//! `vmod` is left out of unit-test builds: it links against symbols only varnishd
//! provides, which a test executable does not have.

mod curl;
#[cfg(not(test))]
mod vmod;

pub use curl::{curl_set_method, curl_set_url, CurlHeaderList};
