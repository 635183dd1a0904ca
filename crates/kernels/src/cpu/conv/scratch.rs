//! Work arrays that the kernels reuse from call to call: packed weights, operands laid out
//! for the register tile, partial sums. A training step calls the same kernels on the same
//! shapes over and over; fresh multi-megabyte allocations would each come back from the
//! operating system as untouched pages, and the first write to every page is a page fault
//! (measured at 15 K faults per WGAN iteration before this pool).
//!
//! [`Scratch::take`] hands out a buffer of the requested length from a small process-wide
//! pool (or a new one), and dropping the [`Scratch`] puts it back. Its contents are whatever
//! the last user left: the kernels write every element before they read it. Every buffer
//! starts on a 64-byte boundary, a cache line: the register tile's rows of sixteen f32 are
//! then whole cache lines, and an AVX-512 load never straddles two (which halves its rate).

use crate::Element;
use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers the pool keeps; beyond that, returned buffers are freed (the smallest first).
const POOL_BUFFERS: usize = 8;

/// What a work array can hold: the kernels' elements, and the bf16 pairs of the bf16 tile
/// (`u32`, [`super::tile_pairs`]). New buffers start at `Default::default()`: zeros.
pub trait Pooled: Copy + Default + Send + Sync + 'static {}
impl<T: Element> Pooled for T {}
impl Pooled for u32 {}

/// Pooled buffers of any element type (`Vec<T>` behind `Any`), each with its size in bytes.
type Pool = Mutex<Vec<(Box<dyn Any + Send>, usize)>>;

static POOL: Pool = Mutex::new(Vec::new());

/// The alignment of every work array, in bytes: a cache line.
pub const ALIGN: usize = 64;

/// A work array from the pool; back to the pool on drop.
pub struct Scratch<T: Pooled> {
    /// The pooled vector, at the longest length it has been initialised to.
    buffer: Vec<T>,
    /// Where the array handed out starts in `buffer`: its first element on an [`ALIGN`]-byte
    /// boundary.
    offset: usize,
    /// The length handed out.
    len: usize,
}

impl<T: Pooled> Scratch<T> {
    /// A buffer of `len` elements starting on an [`ALIGN`]-byte boundary, with unspecified
    /// contents (left from an earlier use, or zeros): the caller writes every element it reads.
    pub fn take(len: usize) -> Scratch<T> {
        let size = std::mem::size_of::<T>();
        // Room to move the start up to the next boundary (the allocation is aligned to T).
        let buffer = take_from(&POOL, len + ALIGN / size - 1);
        let offset = (buffer.as_ptr() as usize).wrapping_neg() % ALIGN / size;
        Scratch { buffer, offset, len }
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        return_to(&POOL, std::mem::take(&mut self.buffer));
    }
}

/// A buffer of at least `len` elements from `pool`: the smallest pooled `Vec<T>` that holds
/// `len` without growing, else the largest pooled `Vec<T>` (grown), else a new one. Its length is
/// never cut, so that what was once initialised is not zeroed again when it is reused.
fn take_from<T: Pooled>(pool: &Pool, len: usize) -> Vec<T> {
    let mut buffer = {
        let mut pool = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let capacity = |b: &(Box<dyn Any + Send>, usize)| b.0.downcast_ref::<Vec<T>>().map(|v| v.len());
        let fitting = (0..pool.len())
            .filter(|&i| capacity(&pool[i]).is_some_and(|c| c >= len))
            .min_by_key(|&i| capacity(&pool[i]));
        // Else the largest, so that growing it copies the least.
        let any_of_type = || {
            (0..pool.len())
                .filter(|&i| capacity(&pool[i]).is_some())
                .max_by_key(|&i| capacity(&pool[i]))
        };
        match fitting.or_else(any_of_type) {
            Some(i) => *pool
                .swap_remove(i)
                .0
                .downcast::<Vec<T>>()
                .expect("the index was checked for Vec<T>"),
            None => Vec::new(),
        }
    };
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    buffer
}

/// Put `buffer` back into `pool`; beyond [`POOL_BUFFERS`], the smallest pooled buffer is
/// freed (the large ones are the page faults worth saving).
fn return_to<T: Pooled>(pool: &Pool, buffer: Vec<T>) {
    if buffer.is_empty() {
        return;
    }
    let mut pool = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let bytes = buffer.len() * std::mem::size_of::<T>();
    pool.push((Box::new(buffer), bytes));
    if pool.len() > POOL_BUFFERS {
        let smallest = (0..pool.len())
            .min_by_key(|&i| pool[i].1)
            .expect("the pool is not empty");
        pool.swap_remove(smallest);
    }
}

impl<T: Pooled> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buffer[self.offset..self.offset + self.len]
    }
}

impl<T: Pooled> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buffer[self.offset..self.offset + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_buffers_are_handed_out_again() {
        let pool: Pool = Mutex::new(Vec::new());
        let mut a: Vec<f32> = take_from(&pool, 1000);
        a[999] = 7.0;
        let address = a.as_ptr();
        return_to(&pool, a);
        // The same memory, at the length asked, with what the last user left.
        let b: Vec<f32> = take_from(&pool, 500);
        assert_eq!(b.as_ptr(), address);
        return_to(&pool, b);
        let c: Vec<f32> = take_from(&pool, 1000);
        assert_eq!((c.as_ptr(), c[999]), (address, 7.0));
        return_to(&pool, c);
        // Another element type does not get it: a new buffer, and the f32 one stays pooled.
        let d: Vec<f64> = take_from(&pool, 10);
        assert_eq!(d, vec![0.0; 10]);
        assert_eq!(pool.lock().unwrap().len(), 1);
        let e: Vec<f32> = take_from(&pool, 1);
        assert_eq!(e.as_ptr(), address);
        // Through the pool's front door: the length asked for, on a cache line.
        for len in [33, 1, 1000] {
            let s = Scratch::<f32>::take(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
            let s = Scratch::<f64>::take(len);
            assert_eq!((s.len(), s.as_ptr() as usize % ALIGN), (len, 0));
        }
    }

    #[test]
    fn the_pool_keeps_the_largest_buffers() {
        let pool: Pool = Mutex::new(Vec::new());
        for len in 1..=POOL_BUFFERS + 2 {
            return_to(&pool, vec![0.0f32; 100 * len]);
        }
        let kept: Vec<usize> = {
            let pool = pool.lock().unwrap();
            let mut kept: Vec<usize> = pool
                .iter()
                .map(|b| b.0.downcast_ref::<Vec<f32>>().unwrap().len() / 100)
                .collect();
            kept.sort();
            kept
        };
        assert_eq!(kept, (3..=POOL_BUFFERS + 2).collect::<Vec<_>>());
    }
}
