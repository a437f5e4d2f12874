//! VSC counter segments: made in `vcl_init`, hidden while their VCL is cold, destroyed with
//! the class pointer they were made with (Varnish compares it).

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::null_mut;

use varnish::ffi::{self, vsc_seg};
use varnish::VscMetric;

/// A VSC segment `<class>.<vcl>.<name>` holding a `T` (a `#[derive(VscMetric)]` struct of
/// atomics), destroyed on drop.
pub struct VscSegment<T: VscMetric> {
    metric: *mut T,
    seg: *mut vsc_seg,
    class: &'static CStr,
    _t: PhantomData<T>,
}

// SAFETY: the segment memory is only accessed through `&T`, whose fields are atomics
// (`T: Sync`), and lives until `Drop`, which needs `&mut self`.
unsafe impl<T: VscMetric + Sync> Send for VscSegment<T> {}
// SAFETY: as above.
unsafe impl<T: VscMetric + Sync> Sync for VscSegment<T> {}

impl<T: VscMetric> VscSegment<T> {
    /// Allocates `<class>.<vcl>.<name>`, e.g. `PEER.boot.cdn` (in `vcl_init` or an event, on
    /// the CLI thread). `class` must be one static string: Varnish keeps the pointer and
    /// `VRT_VSC_Destroy` compares it. None when a name holds a NUL or Varnish refuses.
    pub fn new(class: &'static CStr, vcl: &str, name: &str) -> Option<Self> {
        let vcl = CString::new(vcl).ok()?;
        let name = CString::new(name).ok()?;
        let json = T::get_metadata();
        let mut seg = null_mut();
        // SAFETY: called from the CLI thread; the JSON and class are 'static (Varnish keeps
        // their pointers), the names outlive the call, the format takes two strings.
        let metric = unsafe {
            ffi::VRT_VSC_AllocVariadic(
                null_mut(),
                &raw mut seg,
                class.as_ptr(),
                size_of::<T>(),
                json.as_ptr().cast::<u8>(),
                json.to_bytes().len(),
                c"%s.%s".as_ptr(),
                vcl.as_ptr(),
                name.as_ptr(),
            )
        };
        if metric.is_null() || seg.is_null() {
            return None;
        }
        Some(VscSegment {
            metric: metric.cast::<T>(),
            seg,
            class,
            _t: PhantomData,
        })
    }

    /// The counters.
    pub fn get(&self) -> &T {
        // SAFETY: Varnish allocated zeroed, 8-aligned room for a T (all-zero atomics are
        // valid), alive until VRT_VSC_Destroy in Drop.
        unsafe { &*self.metric }
    }

    /// The counters as a pointer, valid until this segment is dropped.
    pub fn as_ptr(&self) -> *mut T {
        self.metric
    }

    /// Hides the counters from varnishstat (cold VCL) or shows them again.
    pub fn hide(&self, hidden: bool) {
        // SAFETY: `seg` is a live segment returned by VRT_VSC_AllocVariadic.
        unsafe {
            if hidden {
                ffi::VRT_VSC_Hide(self.seg);
            } else {
                ffi::VRT_VSC_Reveal(self.seg);
            }
        }
    }
}

impl<T: VscMetric> Drop for VscSegment<T> {
    fn drop(&mut self) {
        // SAFETY: the segment was made by VRT_VSC_AllocVariadic with this class pointer and
        // is destroyed once; the call takes the VSC lock, so any thread may make it.
        unsafe { ffi::VRT_VSC_Destroy(self.class.as_ptr(), self.seg) };
    }
}
