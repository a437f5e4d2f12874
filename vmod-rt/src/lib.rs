//! The runtime both VMODs share: every Varnish primitive they need, written once. The
//! modules' own FFI layers (`peer/src/ffi/`, `saintmode/src/ffi.rs`) only convert arguments
//! and call their pure cores; what they need from Varnish comes from here.
//!
//! - [`ctx`]: checking what Varnish hands over (context, busyobj, req, director magics),
//!   VCL strings and STRANDS, the workspace, failing a task, VSL lines, `VCL_MET_*` bits;
//! - [`guard`]: the panic guard that knows where it runs (VCL task, temperature event or
//!   callback), the VCL events, and the test-only panic trigger of debug builds;
//! - [`vsc`]: VSC counter segments (create, hide, destroy with the class they were made with);
//! - [`privs`]: PRIV_VCL objects (`Arc`s owned by the slot) and PRIV_TASK slots;
//! - [`dl`]: what varnishd exports only at run time (`VSB_bcat`), pinning a module in memory,
//!   and `static` C method tables.
//!
//! Only [`guard`]'s message formatting, payload text and event mapping are pure; they carry
//! the unit tests. The rest calls symbols only varnishd provides: a binary that links this
//! crate without varnishd must not reach them (the linker drops what nothing calls).

pub mod ctx;
pub mod dl;
pub mod guard;
pub mod privs;
pub mod vsc;

pub use ctx::{
    busyobj_of, check_ctx, director_name, director_of, fail, fail_in, log, log_raw, req_of,
    server_identity, strands_bytes, vcl_bytes, vcl_name, vcl_str, ws_alloc, ws_copy, WsError,
};
pub use dl::{pin_module, vsb_append, SyncMethods};
pub use guard::{guard_callback, guard_event, guard_task, test_panic, Event};
pub use privs::{priv_release, priv_task, priv_vcl, priv_vcl_arc, priv_vcl_ref};
pub use vsc::VscSegment;
