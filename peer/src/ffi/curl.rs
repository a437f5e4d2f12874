//! The few libcurl options that take bytes (the curl crate takes `&str`; header values and
//! URLs from Varnish need not be UTF-8).

use std::ffi::CString;
use std::ptr::null_mut;

/// A libcurl header list built in memory this type owns: the lines, NUL-terminated, in one
/// buffer, and the list nodes in one vector that point into it. Refilled for each transfer
/// with no allocation once both have grown to their working size (`curl_slist_append` makes
/// two allocations per line).
///
/// libcurl only reads a CURLOPT_HTTPHEADER list, during the transfers of the handle it is
/// set on; it never frees nor changes it.
#[derive(Default)]
pub struct HeaderBlock {
    text: Vec<u8>,
    nodes: Vec<curl_sys::curl_slist>,
}

// SAFETY: the raw pointers in `nodes` point into `text` (the data) and into `nodes` itself
// (the links): both are heap buffers this value owns, which do not move when the value moves
// to another thread, and nothing else holds them (no Clone; libcurl only reads them during
// transfers on the owning thread).
unsafe impl Send for HeaderBlock {}

impl HeaderBlock {
    /// Replaces the lines and points `easy` at them (CURLOPT_HTTPHEADER; NULL when there
    /// are none). A line holding a NUL byte is refused and nothing changes (the snapshot was
    /// validated: none does).
    ///
    /// The block must outlive the transfers of `easy` (the transport drops the handle first)
    /// and of any other handle it was set on before (none: one transport, one handle).
    pub fn set<H>(
        &mut self,
        easy: &curl::easy::Easy2<H>,
        lines: &[Vec<u8>],
    ) -> Result<(), curl::Error> {
        self.fill(lines)?;
        // SAFETY: a live easy handle. libcurl keeps the pointer and only reads the list
        // during the handle's transfers; the list is rewritten only by this method, which
        // points the handle at the new one before any transfer can run (no transfer runs
        // while `&mut self` is held here). Should this setopt fail, the handle may still
        // point at the previous list, now rewritten: the caller discards the handle on any
        // error (`CurlTransport::send` does), so no transfer reads it.
        check(unsafe {
            curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_HTTPHEADER, self.head())
        })
    }

    /// Replaces the lines (see [`HeaderBlock::set`], the only caller outside tests).
    fn fill(&mut self, lines: &[Vec<u8>]) -> Result<(), curl::Error> {
        // Checked before anything changes: a refused fill leaves the block as it was.
        if lines.iter().any(|line| line.contains(&0)) {
            return Err(curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT));
        }
        self.text.clear();
        self.nodes.clear();
        for line in lines {
            self.text.extend_from_slice(line);
            self.text.push(0);
        }
        // Pointers are taken only now that `text` no longer grows (its buffer stays put).
        let base = self.text.as_mut_ptr();
        let mut offset = 0;
        for line in lines {
            self.nodes.push(curl_sys::curl_slist {
                // SAFETY: `offset` is the start of this line in `text`: within its length.
                data: unsafe { base.add(offset) }.cast(),
                next: null_mut(),
            });
            offset += line.len() + 1;
        }
        // Links are made only now that `nodes` no longer grows.
        let first = self.nodes.as_mut_ptr();
        for i in 1..self.nodes.len() {
            // SAFETY: i - 1 and i are below nodes.len(): both nodes are in the vector.
            unsafe { (*first.add(i - 1)).next = first.add(i) };
        }
        Ok(())
    }

    /// The lines, as libcurl reads them (for tests).
    #[cfg(test)]
    fn walk(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut node: *const curl_sys::curl_slist = self.head();
        while !node.is_null() {
            // SAFETY: a node of this block, linked by `fill`; its data is a NUL-terminated
            // line in `text`.
            unsafe {
                out.push(std::ffi::CStr::from_ptr((*node).data).to_bytes().to_vec());
                node = (*node).next;
            }
        }
        out
    }

    fn head(&self) -> *mut curl_sys::curl_slist {
        if self.nodes.is_empty() {
            null_mut()
        } else {
            self.nodes.as_ptr().cast_mut()
        }
    }
}

fn check(rc: curl_sys::CURLcode) -> Result<(), curl::Error> {
    if rc == curl_sys::CURLE_OK {
        Ok(())
    } else {
        Err(curl::Error::new(rc))
    }
}

fn set_bytes_option<H>(
    easy: &curl::easy::Easy2<H>,
    option: curl_sys::CURLoption,
    value: &[u8],
) -> Result<(), curl::Error> {
    let value =
        CString::new(value).map_err(|_| curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT))?;
    // SAFETY: a live easy handle; libcurl copies string options.
    let rc = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, value.as_ptr()) };
    check(rc)
}

/// CURLOPT_URL from bytes.
pub fn curl_set_url<H>(easy: &curl::easy::Easy2<H>, url: &[u8]) -> Result<(), curl::Error> {
    set_bytes_option(easy, curl_sys::CURLOPT_URL, url)
}

/// CURLOPT_CUSTOMREQUEST from bytes.
pub fn curl_set_method<H>(easy: &curl::easy::Easy2<H>, method: &[u8]) -> Result<(), curl::Error> {
    set_bytes_option(easy, curl_sys::CURLOPT_CUSTOMREQUEST, method)
}

/// No body any more: CURLOPT_POSTFIELDS back to NULL, so the handle no longer points to the
/// previous body (which may then be freed).
pub fn curl_clear_post_body<H>(easy: &curl::easy::Easy2<H>) -> Result<(), curl::Error> {
    // SAFETY: a live easy handle; -1 is libcurl's "no size set" and NULL is no data.
    check(unsafe {
        curl_sys::curl_easy_setopt(
            easy.raw(),
            curl_sys::CURLOPT_POSTFIELDSIZE_LARGE,
            curl_sys::curl_off_t::from(-1i8),
        )
    })?;
    // SAFETY: a live easy handle; NULL is the option's default.
    check(unsafe {
        curl_sys::curl_easy_setopt(
            easy.raw(),
            curl_sys::CURLOPT_POSTFIELDS,
            std::ptr::null::<u8>(),
        )
    })
}

/// The body of a POST, without copying it (CURLOPT_POSTFIELDS + its size).
///
/// # Safety
/// The caller keeps `body` alive and unchanged until the handle has another body or none
/// (the transport keeps the `Arc` it came from).
pub unsafe fn curl_set_post_body<H>(
    easy: &curl::easy::Easy2<H>,
    body: &[u8],
) -> Result<(), curl::Error> {
    let len = curl_sys::curl_off_t::try_from(body.len())
        .map_err(|_| curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT))?;
    // SAFETY: a live easy handle; the size is set before the pointer so libcurl never reads
    // the data as a NUL-terminated string.
    check(unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_POSTFIELDSIZE_LARGE, len)
    })?;
    // SAFETY: a live easy handle; libcurl reads `len` bytes from the pointer during the
    // transfers of this handle, and the caller keeps them alive until it is replaced.
    check(unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), curl_sys::CURLOPT_POSTFIELDS, body.as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_links_every_line_in_order_and_refills_in_place() {
        let mut block = HeaderBlock::default();
        assert!(block.head().is_null());
        let lines = vec![
            b"Host: a".to_vec(),
            b"X-Bin: caf\xe9".to_vec(),
            b"X-E;".to_vec(),
        ];
        block.fill(&lines).unwrap();
        assert_eq!(block.walk(), lines);
        let (text, nodes) = (block.text.as_ptr(), block.nodes.as_ptr());
        // Fewer lines: the same buffers, no allocation, the list ends where it should.
        block.fill(&lines[1..2]).unwrap();
        assert_eq!(block.walk(), lines[1..2].to_vec());
        assert_eq!((block.text.as_ptr(), block.nodes.as_ptr()), (text, nodes));
        block.fill(&[]).unwrap();
        assert!(block.head().is_null());
        assert!(block.walk().is_empty());
    }

    #[test]
    fn header_block_refuses_a_line_with_nul() {
        let mut block = HeaderBlock::default();
        block.fill(&[b"A: 1".to_vec()]).unwrap();
        assert!(block.fill(&[b"A: 1".to_vec(), b"B: \0".to_vec()]).is_err());
        assert_eq!(block.walk(), vec![b"A: 1".to_vec()]);
    }
}
