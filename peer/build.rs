//! Generates the VCL interface glue from `vmod.vcc` (see the vmod-build crate).
fn main() {
    vmod_build::build("peer");
}
