//! Reused buffers: a forward pass allocates tens to hundreds of megabytes of activations and
//! scratch, and fresh large allocations are fresh memory mappings whose every page faults on
//! first touch (a quarter of AlexNet's batch-8 time before this pool). The engine takes its
//! buffers from a [`Pool`] and gives them back, so repeated passes reuse warm memory.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers kept for reuse at most.
const KEEP: usize = 64;

/// A set of `f32` buffers to reuse.
#[derive(Debug, Default)]
pub struct Pool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A zero-filled vector of `len` values, reusing the smallest free buffer that is large
    /// enough (or allocating one). Give it back with [`give`](Self::give).
    pub fn vec(&self, len: usize) -> Vec<f32> {
        let mut v = self.reuse(len);
        v.clear();
        v.resize(len, 0.0);
        v
    }

    /// A vector of `len` values left over from earlier use (zeros where it grew), for outputs
    /// the caller overwrites entirely: clearing megabytes that are about to be written was 3% of
    /// an AlexNet batch-1 pass.
    pub fn overwrite(&self, len: usize) -> Vec<f32> {
        let mut v = self.reuse(len);
        v.resize(len, 0.0);
        v
    }

    /// The smallest free buffer with room for `len` values (or a new empty one).
    fn reuse(&self, len: usize) -> Vec<f32> {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            fit.map(|i| free.swap_remove(i))
        };
        reused.unwrap_or_default()
    }

    /// Returns a vector to the pool.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(v);
        }
    }

    /// A scratch buffer of `len` values with unspecified contents (see
    /// [`overwrite`](Self::overwrite)) that goes back to the pool when dropped.
    pub fn scratch(&self, len: usize) -> Scratch<'_> {
        Scratch {
            data: self.overwrite(len),
            pool: self,
        }
    }
}

/// A buffer borrowed from a [`Pool`], returned on drop.
#[derive(Debug)]
pub struct Scratch<'a> {
    data: Vec<f32>,
    pool: &'a Pool,
}

impl Deref for Scratch<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for Scratch<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_zeroed() {
        let pool = Pool::new();
        let mut v = pool.vec(1000);
        v[3] = 5.0;
        let ptr = v.as_ptr();
        pool.give(v);
        let w = pool.vec(800);
        assert_eq!(w.as_ptr(), ptr, "the free buffer is reused");
        assert!(w.iter().all(|&x| x == 0.0) && w.len() == 800);
        pool.give(w);
        {
            let s = pool.scratch(10);
            assert_eq!(s.as_ptr(), ptr);
            assert_eq!(s.len(), 10);
        }
        let again = pool.vec(1);
        assert_eq!(again.as_ptr(), ptr, "scratch went back on drop");
    }
}
