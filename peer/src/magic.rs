//! A magic number in front of what the module hands Varnish as an object pointer, checked
//! before every use (as varnish-modules' `CHECK_OBJ_NOTNULL` does): a stale or foreign
//! pointer becomes a VCL error instead of a wild read.

use std::sync::atomic::{compiler_fence, Ordering};

/// "PEER" in ASCII: the magic of a `new x = peer.peer()` object.
pub const PEER_OBJECT_MAGIC: u32 = 0x5045_4552;

/// `value` tagged with `magic`; the tag is wiped when it is dropped, so a pointer kept past
/// `__fini` no longer passes the check (while its memory is not reused).
pub struct Tagged<T> {
    magic: u32,
    value: T,
}

impl<T> Tagged<T> {
    pub fn new(magic: u32, value: T) -> Self {
        Tagged { magic, value }
    }

    /// The value, if the tag is `magic`.
    pub fn get(&self, magic: u32) -> Option<&T> {
        (self.magic == magic).then_some(&self.value)
    }

    /// True when the tag is `magic`.
    pub fn is(&self, magic: u32) -> bool {
        self.magic == magic
    }
}

impl<T> Drop for Tagged<T> {
    fn drop(&mut self) {
        self.magic = 0;
        // Keeps the store: the memory is freed right after, which the compiler may see.
        compiler_fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_magic_gives_the_value() {
        let t = Tagged::new(PEER_OBJECT_MAGIC, 7);
        assert_eq!(t.get(PEER_OBJECT_MAGIC), Some(&7));
        assert_eq!(t.get(0x5341_494e), None);
        assert!(t.is(PEER_OBJECT_MAGIC) && !t.is(0));
    }
}
