//! Threads: one dedicated rayon pool, sized by `NNCY_NUM_THREADS` (default:
//! the number of cores), built on first use.  Work below [`MIN_PAR_WORK`]
//! elements runs on the calling thread without touching the pool.
//!
//! A process forked after the pool was built (Python multiprocessing) has no
//! worker threads: there the kernels run single-threaded instead of waiting
//! forever for the pool.

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::ops::Range;
use std::sync::OnceLock;

/// Below this much work (elements, weighted by a relative cost of 1 for a
/// cheap elementwise op, up to 8) a kernel runs single-threaded: waking the
/// pool costs several microseconds, as much as ~256K cheap elements.  With
/// costs of at most 8, nothing below 32K elements is ever threaded.
pub const MIN_PAR_WORK: usize = 256 * 1024;

/// The pool and the id of the process that built it.
static POOL: OnceLock<(u32, Option<ThreadPool>)> = OnceLock::new();

fn requested_threads() -> usize {
    std::env::var("NNCY_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The pool, or `None` when running single-threaded (one thread requested, or
/// threads could not be started).
pub fn pool() -> Option<&'static ThreadPool> {
    let (pid, pool) = POOL.get_or_init(|| {
        let n = requested_threads();
        let pool = if n <= 1 {
            None
        } else {
            ThreadPoolBuilder::new().num_threads(n).thread_name(|i| format!("nncy-{i}")).build().ok()
        };
        (std::process::id(), pool)
    });
    match pool {
        Some(p) if *pid == std::process::id() => Some(p),
        _ => None,
    }
}

/// Number of threads the kernels use.
pub fn num_threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// Runs `f` inside the pool when `work` is large enough to be split, so that
/// `rayon::join` and parallel iterators in `f` use it; returns whether it did.
/// `f` receives that flag: when false it must not use rayon.
pub fn install<R: Send>(work: usize, f: impl FnOnce(bool) -> R + Send) -> R {
    match if work >= MIN_PAR_WORK { pool() } else { None } {
        Some(p) => p.install(|| f(true)),
        None => f(false),
    }
}

/// Data that can be cut in two at an index, for [`par_for`]: slices, ranges,
/// [`Rows`] and tuples of them (cut at the same index).
pub trait Split: Sized + Send {
    /// Number of units.
    fn len(&self) -> usize;
    /// Whether there are no units.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Cuts after `mid` units.
    fn split_at(self, mid: usize) -> (Self, Self);
}

impl<T: Sync> Split for &[T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at(self, mid)
    }
}

impl<T: Send> Split for &mut [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
}

impl Split for Range<usize> {
    fn len(&self) -> usize {
        self.end - self.start
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        (self.start..self.start + mid, self.start + mid..self.end)
    }
}

/// A slice seen as rows of `.1` elements: one unit is one row.
pub struct Rows<S>(pub S, pub usize);

impl<S: Split> Split for Rows<S> {
    fn len(&self) -> usize {
        self.0.len() / self.1.max(1)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, b) = self.0.split_at(mid * self.1);
        (Rows(a, self.1), Rows(b, self.1))
    }
}

macro_rules! split_tuple {
    ($($t:ident $v:ident),+) => {
        impl<$($t: Split),+> Split for ($($t,)+) {
            fn len(&self) -> usize {
                self.0.len()
            }
            fn split_at(self, mid: usize) -> (Self, Self) {
                let ($($v,)+) = self;
                $(let $v = $v.split_at(mid);)+
                (($($v.0,)+), ($($v.1,)+))
            }
        }
    };
}

split_tuple!(A a);
split_tuple!(A a, B b);
split_tuple!(A a, B b, C c);
split_tuple!(A a, B b, C c, D d);
split_tuple!(A a, B b, C c, D d, E e);

/// Runs `f` on pieces of `data` in parallel when `data.len() * cost` (the
/// work) reaches [`MIN_PAR_WORK`], else on the calling thread in one piece.
/// Pieces are cut at multiples of 16 units (whole cache lines of f32).
pub fn par_for<S: Split, F: Fn(S) + Sync>(data: S, cost: usize, f: F) {
    let n = data.len();
    let work = n.saturating_mul(cost.max(1));
    if work < MIN_PAR_WORK || n < 2 {
        return f(data);
    }
    let Some(pool) = pool() else {
        return f(data);
    };
    let threads = pool.current_num_threads();
    let pieces = (work / (MIN_PAR_WORK / 8)).clamp(1, 4 * threads);
    let grain = n.div_ceil(pieces).next_multiple_of(16).min(n);
    pool.install(|| split_rec(data, grain, &f));
}

fn split_rec<S: Split, F: Fn(S) + Sync>(data: S, grain: usize, f: &F) {
    let n = data.len();
    if n <= grain {
        return f(data);
    }
    let mid = (n / grain).div_ceil(2) * grain;
    let (a, b) = data.split_at(mid);
    rayon::join(|| split_rec(a, grain, f), || split_rec(b, grain, f));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn par_for_covers_everything_once() {
        for n in [0usize, 1, 15, 1000, 100_003, 1 << 20] {
            let mut v = vec![0u32; n];
            let pieces = AtomicUsize::new(0);
            par_for((&mut v[..], 0..n), 1, |(v, r)| {
                pieces.fetch_add(1, Ordering::Relaxed);
                assert_eq!(v.len(), r.end - r.start);
                for (x, i) in v.iter_mut().zip(r) {
                    *x += i as u32 + 1;
                }
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
            if n >= 1 << 20 && num_threads() > 1 {
                assert!(pieces.load(Ordering::Relaxed) > 1);
            }
        }
    }

    #[test]
    fn rows_split_whole_rows() {
        let mut v = vec![0usize; 7 * 5000];
        par_for(Rows(&mut v[..], 7), 7, |Rows(chunk, w)| {
            assert_eq!(chunk.len() % w, 0);
            for row in chunk.chunks_mut(w) {
                row.fill(row.len());
            }
        });
        assert!(v.iter().all(|&x| x == 7));
    }
}
