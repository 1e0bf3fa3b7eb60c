//! The process-wide budget for memory held to serve uploads: piece buffers in the upload caches of every
//! torrent (of a daemon too) and block buffers on their way to a socket. A buffer is charged when it is
//! made and the charge goes back when its last `Bytes` handle drops, so what is counted is what is live,
//! wherever it is referenced from.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Default budget: 64 MiB, 16 pieces of 4 MiB or the whole 32-piece cache of 2 MiB pieces.
pub const DEFAULT_UPLOAD_MEMORY: usize = 64 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_UPLOAD_MEMORY);
static USED: AtomicUsize = AtomicUsize::new(0);

/// Sets the process-wide upload memory budget in bytes (at least one 16 KiB block).
pub fn set_upload_memory(bytes: usize) {
    LIMIT.store(bytes.max(16 * 1024), Ordering::Relaxed);
}

/// The budget in bytes.
pub fn upload_memory_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes of upload buffers live now.
pub fn upload_memory_used() -> usize {
    USED.load(Ordering::Relaxed)
}

/// Bytes charged to the budget, given back on drop.
pub(crate) struct Charge(usize);

impl Charge {
    /// `bytes` if they fit in the budget.
    pub(crate) fn try_new(bytes: usize) -> Option<Charge> {
        let limit = LIMIT.load(Ordering::Relaxed);
        USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            (used + bytes <= limit).then_some(used + bytes)
        })
        .ok()
        .map(|_| Charge(bytes))
    }

    /// `bytes` whether or not they fit: for single blocks, whose number each peer's writer bounds.
    pub(crate) fn force(bytes: usize) -> Charge {
        USED.fetch_add(bytes, Ordering::AcqRel);
        Charge(bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        USED.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// A buffer and its charge: dropping the last `Bytes` over it frees (or pools) the memory and gives the
/// charge back.
struct Charged<B> {
    buf: B,
    _charge: Charge,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Charged<B> {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

/// `buf` as `Bytes` that keep `charge` until the last of them drops.
pub(crate) fn charged<B: AsRef<[u8]> + Send + 'static>(buf: B, charge: Charge) -> Bytes {
    Bytes::from_owner(Charged {
        buf,
        _charge: charge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_over_the_budget_is_refused() {
        assert!(Charge::try_new(upload_memory_limit() + 1).is_none());
        let bytes = charged(vec![7u8; 1000], Charge::force(1000));
        assert_eq!(&bytes.slice(10..13)[..], &[7, 7, 7]);
    }
}
