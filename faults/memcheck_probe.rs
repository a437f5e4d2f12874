// memcheck.sh self-test: a deliberate heap-buffer-overflow read in instrumented Rust code, run
// from an .init_array constructor when preloaded into varnishd. memcheck.sh checks that ASan
// reports it and that memcheck_classify.py attributes it to "our code" (the cdylib is named
// libvmod_peer_asan_probe.so); otherwise the run is not trusted.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = memcheck_probe;

#[no_mangle]
pub extern "C" fn memcheck_probe() {
    let v: Vec<u8> = vec![1u8; 16];
    let x = unsafe { std::ptr::read_volatile(v.as_ptr().add(16)) };
    std::hint::black_box(x);
}
