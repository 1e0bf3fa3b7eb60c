//! Page-aligned byte buffers: pieces assembled in them can be written with O_DIRECT, which skips the
//! page-cache copy (the largest CPU cost of a fast download here) and the writeback stall at the end.
//!
//! Dropped buffers go back to a small process-wide pool: a fresh piece-sized allocation is new memory
//! from the kernel, and faulting in and zeroing a MiB per piece cost about a sixth of a fast
//! download's CPU and a fifth of a seeder's.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use parking_lot::Mutex;

/// O_DIRECT needs buffer addresses, file offsets and lengths aligned to the logical block size; 4 KiB
/// covers every common device.
pub const ALIGN: usize = 4096;

pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

/// At most this many bytes of free buffers are kept for reuse; the rest go back to the allocator.
const POOL_BYTES: usize = 64 << 20;

/// Free buffers, any lengths, and their total size.
struct Pool {
    free: Vec<AlignedBuf>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

impl AlignedBuf {
    /// A buffer of `len` bytes starting on an `ALIGN` boundary whose contents are unspecified (zeros
    /// or what an earlier user of the memory left there): for callers that overwrite all of it.
    pub fn reused(len: usize) -> AlignedBuf {
        let mut pool = POOL.lock();
        if let Some(i) = pool.free.iter().position(|b| b.len == len) {
            let buf = pool.free.swap_remove(i);
            pool.bytes -= len;
            return buf;
        }
        drop(pool);
        Self::zeroed(len)
    }

    /// A zeroed buffer of `len` bytes starting on an `ALIGN` boundary.
    pub fn zeroed(len: usize) -> AlignedBuf {
        if len == 0 {
            return AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, ALIGN) {
            Ok(layout) => layout,
            // Only for lengths near usize::MAX, which piece sizes (at most 512 MiB) never are.
            Err(_) => panic!("buffer of {len} bytes is too large"),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        let mut pool = POOL.lock();
        if pool.bytes + self.len <= POOL_BYTES {
            pool.bytes += self.len;
            // The pooled value owns the memory now; this one must not free it.
            let kept = AlignedBuf {
                ptr: self.ptr,
                len: self.len,
            };
            self.len = 0;
            pool.free.push(kept);
            return;
        }
        drop(pool);
        // SAFETY: allocated in `zeroed` with this same layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialised bytes (or is dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_writable() {
        for len in [0, 1, 4095, 4096, 1 << 20, (1 << 20) + 3] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|x| *x == 0));
            if len > 0 {
                assert_eq!(b.as_ptr() as usize % ALIGN, 0);
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
    }

    #[test]
    fn dropped_buffers_are_reused_and_the_pool_is_bounded() {
        // A length no other test uses, so buffers from tests running beside this one don't interfere.
        let len = (1 << 20) + 4096 * 3;
        let first = AlignedBuf::reused(len);
        let addr = first.as_ptr() as usize;
        drop(first);
        let again = AlignedBuf::reused(len);
        assert_eq!(
            again.as_ptr() as usize,
            addr,
            "a freed buffer of the same length is handed out again"
        );
        assert_eq!(again.len(), len);
        assert_eq!(again.as_ptr() as usize % ALIGN, 0);
        drop(again);

        let many: Vec<AlignedBuf> = (0..(POOL_BYTES / len) + 8)
            .map(|_| AlignedBuf::reused(len))
            .collect();
        drop(many);
        assert!(POOL.lock().bytes <= POOL_BYTES);
    }
}
