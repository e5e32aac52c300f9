//! The library's heap allocator: the system allocator, counting the bytes
//! that the kernels hold (im2col buffers, packed GEMM panels, scratch rows),
//! so that tests and benchmarks can bound a training step's peak memory.
//! Two relaxed atomic updates per allocation; nothing else changes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, size);
        if !q.is_null() {
            CURRENT.fetch_sub(layout.size(), Relaxed);
            grew(size);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (bytes held now, most bytes held since the last [`reset_peak`]).
pub fn stats() -> (usize, usize) {
    (CURRENT.load(Relaxed), PEAK.load(Relaxed))
}

/// Starts a new peak window at the current holding.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Relaxed), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_raises_the_peak() {
        // other tests allocate concurrently: only lower bounds hold
        reset_peak();
        let (before, _) = stats();
        let v = vec![1u8; 1 << 24];
        assert!(stats().1 >= before + (1 << 24));
        drop(v);
        assert!(stats().1 >= before + (1 << 24));
    }
}
