//! Large output buffers handed back by their last user, kept for the next call that needs one.
//!
//! The hasher's output is tens of megabytes for a batch of ten thousand product texts. Python owns
//! it once it is returned (numpy arrays over the Rust buffer), and when the matrix is dropped the
//! allocator gives those pages back to the OS; the next call then takes a page fault per 4 KiB as
//! it writes, which was about a tenth of a single-threaded transform. The bindings return the
//! buffers here instead (see `bindings::hashing`), so a caller that transforms batch after batch
//! writes into memory that is already mapped.
//!
//! Bounded on both sides: at most [`KEEP`] buffers of at most [`MAX_KEPT_BYTES`] in all per element
//! type, and a buffer is handed out only to a call that needs at least a quarter of its capacity, so
//! that a small result kept alive by its caller never pins a large buffer.

use std::sync::Mutex;

/// Buffers smaller than this are left to the allocator, which serves them from its free lists.
pub const MIN_POOLED_BYTES: usize = 1 << 20;
/// At most this many bytes are kept per element type.
pub const MAX_KEPT_BYTES: usize = 128 << 20;
/// At most this many buffers are kept per element type.
pub const KEEP: usize = 2;

/// A bounded set of spare `Vec<T>` buffers.
pub struct Recycler<T> {
    spare: Mutex<Vec<Vec<T>>>,
}

impl<T> Recycler<T> {
    pub const fn new() -> Self {
        Recycler {
            spare: Mutex::new(Vec::new()),
        }
    }

    fn bytes(v: &Vec<T>) -> usize {
        v.capacity() * std::mem::size_of::<T>()
    }

    /// An empty buffer with room for at least `min_len` elements: a kept one whose capacity is at
    /// most four times `min_len` when there is one, else a fresh allocation.
    pub fn take(&self, min_len: usize) -> Vec<T> {
        self.take_kept(min_len).unwrap_or_else(|| Vec::with_capacity(min_len))
    }

    /// A kept buffer with room for `min_len` elements and a capacity of at most four times that,
    /// cleared (its pages stay mapped), if there is one.
    pub fn take_kept(&self, min_len: usize) -> Option<Vec<T>> {
        let want = min_len.max(1);
        if want.saturating_mul(std::mem::size_of::<T>()) < MIN_POOLED_BYTES {
            return None;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |v: &Vec<T>| v.capacity() >= want && v.capacity() / 4 <= want;
        // The smallest that fits, so that a later, larger call can still find the big one.
        let i = (0..spare.len())
            .filter(|&i| fits(&spare[i]))
            .min_by_key(|&i| spare[i].capacity())?;
        let mut v = spare.swap_remove(i);
        v.clear();
        Some(v)
    }

    /// Keeps `v` for a later [`Recycler::take`] if it is large enough to be worth keeping and the
    /// bounds allow; the smallest buffers are dropped first when they do not.
    pub fn give(&self, v: Vec<T>) {
        let bytes = Self::bytes(&v);
        if !(MIN_POOLED_BYTES..=MAX_KEPT_BYTES).contains(&bytes) {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.push(v);
        spare.sort_unstable_by_key(|v| std::cmp::Reverse(v.capacity()));
        let mut total = 0;
        let mut keep = 0;
        for v in spare.iter() {
            if keep == KEEP || total + Self::bytes(v) > MAX_KEPT_BYTES {
                break;
            }
            total += Self::bytes(v);
            keep += 1;
        }
        // Dropped outside the lock would be nicer, but freeing is quick next to what it saves.
        spare.truncate(keep);
    }

    /// Total bytes of the buffers kept now.
    pub fn kept_bytes(&self) -> usize {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.iter().map(Self::bytes).sum()
    }
}

impl<T> Default for Recycler<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = MIN_POOLED_BYTES / 4; // elements of an i32 buffer of MIN_POOLED_BYTES

    #[test]
    fn small_buffers_are_not_kept() {
        let r = Recycler::<i32>::new();
        r.give(Vec::with_capacity(10));
        assert_eq!(r.kept_bytes(), 0);
    }

    #[test]
    fn a_kept_buffer_comes_back_cleared_with_its_capacity() {
        let r = Recycler::<i32>::new();
        let mut v = vec![7i32; 2 * BIG];
        let ptr = v.as_ptr();
        v.truncate(BIG);
        r.give(v);
        let w = r.take(BIG);
        assert_eq!(w.as_ptr(), ptr);
        assert!(w.is_empty());
        assert!(w.capacity() >= 2 * BIG);
        assert_eq!(r.kept_bytes(), 0);
    }

    #[test]
    fn a_much_larger_buffer_is_not_handed_to_a_small_call() {
        let r = Recycler::<i32>::new();
        r.give(Vec::with_capacity(16 * BIG));
        let w = r.take(BIG);
        assert!(w.capacity() < 16 * BIG);
        assert_eq!(r.kept_bytes(), 16 * BIG * 4, "the large buffer stays for a large call");
        let w = r.take(8 * BIG);
        assert!(w.capacity() >= 16 * BIG);
    }

    #[test]
    fn bounds_hold() {
        let r = Recycler::<u8>::new();
        for _ in 0..5 {
            r.give(Vec::with_capacity(MIN_POOLED_BYTES));
        }
        assert_eq!(r.kept_bytes(), KEEP * MIN_POOLED_BYTES);
        r.give(Vec::with_capacity(MAX_KEPT_BYTES + 1));
        assert_eq!(r.kept_bytes(), KEEP * MIN_POOLED_BYTES, "over the byte bound: dropped");
        r.give(Vec::with_capacity(MAX_KEPT_BYTES - MIN_POOLED_BYTES));
        assert_eq!(r.kept_bytes(), MAX_KEPT_BYTES, "the largest are kept within the bound");
    }
}
