//! Matrix products through the `gemm` crate, behind a bounds-checked wrapper.
//!
//! Products with very few rows (a batch-1 affine layer is a (1, K) x (K, N)
//! product) skip the crate, whose packing and dispatch cost more than the
//! product itself at those sizes, for the row kernels of [`small`]: each
//! output row is a combination of the rows of rhs (rhs rows contiguous) or a
//! set of dot products (rhs columns contiguous).

use crate::par::{self, par_for, MIN_PAR_WORK};
use crate::strided::extent;
use crate::{Error, Result};
use gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// A strided matrix view: element (i, j) is data[base + i * rs + j * cs].
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub base: usize,
    pub rs: isize,
    pub cs: isize,
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub base: usize,
    pub rs: isize,
    pub cs: isize,
}

/// Whether a (rows, cols) view lies inside a buffer of `len` elements.
fn inside(len: usize, base: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let Some((lo, hi)) = extent(&[rows, cols], &[rs, cs]) else {
        return false;
    };
    let Ok(base) = isize::try_from(base) else {
        return false;
    };
    base.checked_add(lo).is_some_and(|a| a >= 0) && base.checked_add(hi).is_some_and(|b| (b as usize) < len)
}

/// Whether no two elements of a (rows, cols) view share memory.
pub fn no_self_overlap(rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    let (mut a, mut b) = ((rows, rs.unsigned_abs()), (cols, cs.unsigned_abs()));
    if a.1 > b.1 {
        std::mem::swap(&mut a, &mut b);
    }
    // a has the smaller stride
    let (a, b) = if a.0 <= 1 { ((1, 1), b) } else { (a, b) };
    (b.0 <= 1 || (a.1 >= 1 && b.1 >= a.1.saturating_mul(a.0))) && (a.0 <= 1 || a.1 >= 1)
}

/// Below this many multiply-adds a product runs on one thread (waking the
/// pool costs as much as a 128^3 product).
const PAR_FLOPS: usize = 4 << 20;

/// dst (m x n) = alpha * dst + beta * lhs (m x k) @ rhs (k x n); when alpha
/// is 0, dst is not read.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, alpha: f32, beta: f32) -> Result {
    check(m, n, k, &dst, &lhs, &rhs)?;
    let flops = m.saturating_mul(n).saturating_mul(k);
    par::install(if flops >= PAR_FLOPS { MIN_PAR_WORK } else { 0 }, |parallel| {
        let p = if parallel { Parallelism::Rayon(par::num_threads()) } else { Parallelism::None };
        run(m, n, k, dst, lhs, rhs, alpha, beta, p)
    });
    Ok(())
}

fn check(m: usize, n: usize, k: usize, dst: &MatMut, lhs: &MatRef, rhs: &MatRef) -> Result {
    let ok = inside(dst.data.len(), dst.base, m, n, dst.rs, dst.cs)
        && inside(lhs.data.len(), lhs.base, m, k, lhs.rs, lhs.cs)
        && inside(rhs.data.len(), rhs.base, k, n, rhs.rs, rhs.cs)
        && no_self_overlap(m, n, dst.rs, dst.cs);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid)
    }
}

/// The product on checked views.
#[allow(clippy::too_many_arguments)]
fn run(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, alpha: f32, beta: f32, p: Parallelism) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // dst = alpha * dst (nothing to add)
        for i in 0..m {
            for j in 0..n {
                let at = (dst.base as isize + i as isize * dst.rs + j as isize * dst.cs) as usize;
                dst.data[at] = if alpha == 0.0 { 0.0 } else { alpha * dst.data[at] };
            }
        }
        return;
    }
    if let Some(kind) = small_kind(m, n, k, &dst, &lhs, &rhs) {
        if m == 1 && n > 1 && matches!(p, Parallelism::Rayon(_)) {
            // one contiguous output row, cut into column ranges
            let row = &mut dst.data[dst.base..dst.base + n];
            par_for((row, 0..n), k, |(d, cols): (&mut [f32], Range<usize>)| {
                small::run(kind, 1, k, cols, d, 0, 0, &lhs, &rhs, alpha, beta)
            });
        } else {
            small::run(kind, m, k, 0..n, dst.data, dst.base, dst.rs, &lhs, &rhs, alpha, beta);
        }
        return;
    }
    // SAFETY: `check` verified that every element of the three views lies
    // inside its slice and that dst's elements are distinct; dst is borrowed
    // mutably, so it cannot overlap lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dst.base),
            dst.cs,
            dst.rs,
            alpha != 0.0,
            lhs.data.as_ptr().add(lhs.base),
            lhs.cs,
            lhs.rs,
            rhs.data.as_ptr().add(rhs.base),
            rhs.cs,
            rhs.rs,
            alpha,
            beta,
            false,
            false,
            false,
            p,
        )
    }
}

/// Products with at most this many lhs rows take the [`small`] kernels.
const SMALL_M: usize = 4;

/// How the [`small`] kernels run a product, if they do: they need dst rows
/// contiguous and either rhs rows contiguous ([`small::Kind::Rows`]) or rhs
/// columns and lhs rows contiguous ([`small::Kind::Dots`]).  Above the
/// threading threshold, only single-row products (which split by columns)
/// stay here.
fn small_kind(m: usize, n: usize, k: usize, dst: &MatMut, lhs: &MatRef, rhs: &MatRef) -> Option<small::Kind> {
    if m > SMALL_M || (dst.cs != 1 && n > 1) || (m > 1 && m * n * k >= PAR_FLOPS) {
        return None;
    }
    if rhs.cs == 1 || n == 1 {
        Some(small::Kind::Rows)
    } else if rhs.rs == 1 && (lhs.cs == 1 || k == 1) {
        Some(small::Kind::Dots)
    } else {
        None
    }
}

mod small {
    use super::MatRef;
    use crate::simd;
    use std::ops::Range;

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Kind {
        Rows,
        Dots,
    }

    #[inline(always)]
    fn at(base: usize, i: usize, rs: isize) -> usize {
        (base as isize + i as isize * rs) as usize
    }

    /// lhs rows [0, R) times rhs columns [j, j + W), rhs rows contiguous:
    /// W-wide combinations of rhs rows, R rows sharing each rhs load, R x W
    /// independent sums (enough to hide the latency of the additions).
    #[inline(always)]
    fn rows_tile<const R: usize, const W: usize, const FUSED: bool>(k: usize, lhs: &MatRef, rhs: &MatRef, j: usize) -> [[f32; W]; R] {
        let mut acc = [[0.0f32; W]; R];
        let lrow: [usize; R] = std::array::from_fn(|r| at(lhs.base, r, lhs.rs));
        let rb = at(rhs.base, j, rhs.cs);
        if W == 1 {
            // one column: U interleaved sums, not one chain of additions
            const U: usize = 8;
            let mut part = [[0.0f32; U]; R];
            let full = k / U * U;
            for p0 in (0..full).step_by(U) {
                for u in 0..U {
                    let b = rhs.data[at(rb, p0 + u, rhs.rs)];
                    for r in 0..R {
                        part[r][u] = madd::<FUSED>(lhs.data[at(lrow[r], p0 + u, lhs.cs)], b, part[r][u]);
                    }
                }
            }
            for r in 0..R {
                let mut s = part[r].iter().sum::<f32>();
                for p in full..k {
                    s = madd::<FUSED>(lhs.data[at(lrow[r], p, lhs.cs)], rhs.data[at(rb, p, rhs.rs)], s);
                }
                acc[r][0] = s;
            }
            return acc;
        }
        for p in 0..k {
            let o = at(rb, p, rhs.rs);
            let b: &[f32; W] = rhs.data[o..o + W].try_into().unwrap();
            for r in 0..R {
                let a = lhs.data[at(lrow[r], p, lhs.cs)];
                for w in 0..W {
                    acc[r][w] = madd::<FUSED>(a, b[w], acc[r][w]);
                }
            }
        }
        acc
    }

    /// a * b + c, in one rounding where the instruction set has FMA (a
    /// software fused multiply-add would be slow).
    #[inline(always)]
    fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
        if FUSED {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    /// Sum of a[i] * b[i], in 4 x 16 lanes.
    #[inline(always)]
    fn dot<const FUSED: bool>(a: &[f32], b: &[f32]) -> f32 {
        const L: usize = 64;
        let mut acc = [0.0f32; L];
        let split = a.len() / L * L;
        for (x, y) in a[..split].chunks_exact(L).zip(b[..split].chunks_exact(L)) {
            for l in 0..L {
                acc[l] = madd::<FUSED>(x[l], y[l], acc[l]);
            }
        }
        let mut s = 0.0;
        for (x, y) in a[split..].iter().zip(&b[split..]) {
            s += x * y;
        }
        for l in 0..L / 2 {
            acc[l] += acc[l + L / 2];
        }
        s + acc[..L / 2].iter().sum::<f32>()
    }

    /// d[i, j] = alpha * d[i, j] + beta * v, alpha 0 not reading d.
    #[inline(always)]
    fn put(d: &mut f32, v: f32, alpha: f32, beta: f32) {
        *d = if alpha == 0.0 { 0.0 } else { alpha * *d } + beta * v;
    }

    /// Output rows [0, m) over the columns `cols` of a checked product: element
    /// (i, j) of dst is d[base + i * rs + j - cols.start].
    #[allow(clippy::too_many_arguments)]
    pub fn run(kind: Kind, m: usize, k: usize, cols: Range<usize>, d: &mut [f32], base: usize, rs: isize, lhs: &MatRef, rhs: &MatRef, alpha: f32, beta: f32) {
        if matches!(simd::arch(), pulp::Arch::Scalar) {
            run_with::<false>(kind, m, k, cols, d, base, rs, lhs, rhs, alpha, beta)
        } else {
            run_with::<true>(kind, m, k, cols, d, base, rs, lhs, rhs, alpha, beta)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with<const FUSED: bool>(kind: Kind, m: usize, k: usize, cols: Range<usize>, d: &mut [f32], base: usize, rs: isize, lhs: &MatRef, rhs: &MatRef, alpha: f32, beta: f32) {
        simd::dispatch(
            #[inline(always)]
            || match (kind, m) {
                (Kind::Dots, _) => {
                    for i in 0..m {
                        let a = &lhs.data[at(lhs.base, i, lhs.rs)..][..k];
                        let row = at(base, i, rs);
                        for j in cols.clone() {
                            let v = dot::<FUSED>(a, &rhs.data[at(rhs.base, j, rhs.cs)..][..k]);
                            put(&mut d[row + j - cols.start], v, alpha, beta);
                        }
                    }
                }
                // tiles of R x W accumulators, at most 128 (8 AVX-512 registers)
                (Kind::Rows, 1) => rows::<1, 256, FUSED>(k, cols, d, base, rs, lhs, rhs, alpha, beta),
                (Kind::Rows, 2) => rows::<2, 128, FUSED>(k, cols, d, base, rs, lhs, rhs, alpha, beta),
                (Kind::Rows, 3) => rows::<3, 64, FUSED>(k, cols, d, base, rs, lhs, rhs, alpha, beta),
                (Kind::Rows, _) => rows::<4, 64, FUSED>(k, cols, d, base, rs, lhs, rhs, alpha, beta),
            },
        )
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn rows<const R: usize, const W: usize, const FUSED: bool>(k: usize, cols: Range<usize>, d: &mut [f32], base: usize, rs: isize, lhs: &MatRef, rhs: &MatRef, alpha: f32, beta: f32) {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn tile<const R: usize, const W: usize, const FUSED: bool>(k: usize, j: usize, c0: usize, d: &mut [f32], base: usize, rs: isize, lhs: &MatRef, rhs: &MatRef, alpha: f32, beta: f32) {
            let acc = rows_tile::<R, W, FUSED>(k, lhs, rhs, j);
            for (r, a) in acc.iter().enumerate() {
                let o = at(base, r, rs) + j - c0;
                for (dv, &v) in d[o..o + W].iter_mut().zip(a) {
                    put(dv, v, alpha, beta);
                }
            }
        }
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn tiles<const R: usize, const W: usize, const FUSED: bool>(k: usize, j: &mut usize, cols: &Range<usize>, d: &mut [f32], base: usize, rs: isize, lhs: &MatRef, rhs: &MatRef, alpha: f32, beta: f32) {
            while *j + W <= cols.end {
                tile::<R, W, FUSED>(k, *j, cols.start, d, base, rs, lhs, rhs, alpha, beta);
                *j += W;
            }
        }
        // widest tiles first, narrower ones for the remaining columns
        let mut j = cols.start;
        tiles::<R, W, FUSED>(k, &mut j, &cols, d, base, rs, lhs, rhs, alpha, beta);
        tiles::<R, 32, FUSED>(k, &mut j, &cols, d, base, rs, lhs, rhs, alpha, beta);
        tiles::<R, 8, FUSED>(k, &mut j, &cols, d, base, rs, lhs, rhs, alpha, beta);
        tiles::<R, 1, FUSED>(k, &mut j, &cols, d, base, rs, lhs, rhs, alpha, beta);
    }
}

/// `batch` products; the views of batch b start `b * bs` elements after
/// those of batch 0.
#[allow(clippy::too_many_arguments)]
pub fn batch_gemm(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    dst_bs: isize,
    lhs: MatRef,
    lhs_bs: isize,
    rhs: MatRef,
    rhs_bs: isize,
    alpha: f32,
    beta: f32,
) -> Result {
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    // Every batch's views must be inside: check the first and the last.
    let shift = |base: usize, bs: isize| -> Result<usize> {
        let off = isize::try_from(batch - 1).ok().and_then(|b| b.checked_mul(bs)).ok_or(Error::Invalid)?;
        let b = (base as isize).checked_add(off).ok_or(Error::Invalid)?;
        usize::try_from(b).map_err(|_| Error::Invalid)
    };
    let last = (shift(dst.base, dst_bs)?, shift(lhs.base, lhs_bs)?, shift(rhs.base, rhs_bs)?);
    check(m, n, k, &dst, &lhs, &rhs)?;
    // Views move linearly with b: the first and last batch inside => all are.
    let last_inside = inside(dst.data.len(), last.0, m, n, dst.rs, dst.cs)
        && inside(lhs.data.len(), last.1, m, k, lhs.rs, lhs.cs)
        && inside(rhs.data.len(), last.2, k, n, rhs.rs, rhs.cs);
    if !last_inside {
        return Err(Error::Invalid);
    }
    let at = |base: usize, bs: isize, b: usize| (base as isize + b as isize * bs) as usize;
    let flops = m.saturating_mul(n).saturating_mul(k);
    let (lo, hi) = extent(&[m, n], &[dst.rs, dst.cs]).ok_or(Error::Invalid)?;
    let span = (hi - lo + 1) as usize;
    let disjoint = dst_bs.unsigned_abs() >= span;
    if disjoint && batch >= 2 && flops < 4 * PAR_FLOPS * par::num_threads() && flops.saturating_mul(batch) >= PAR_FLOPS
    {
        // Many small products: one per task, each single-threaded.  Cut dst
        // into per-batch chunks (they are disjoint), in memory order.
        let bs = dst_bs.unsigned_abs();
        let first = if dst_bs >= 0 { 0 } else { batch - 1 };
        let start = (at(dst.base, dst_bs, first) as isize + lo) as usize;
        let chunks = dst.data[start..].par_chunks_mut(bs).take(batch);
        par::install(MIN_PAR_WORK, |_| {
            chunks.enumerate().for_each(|(c, chunk)| {
                let b = if dst_bs >= 0 { c } else { batch - 1 - c };
                let d = MatMut { data: chunk, base: (-lo) as usize, rs: dst.rs, cs: dst.cs };
                let l = MatRef { base: at(lhs.base, lhs_bs, b), ..lhs };
                let r = MatRef { base: at(rhs.base, rhs_bs, b), ..rhs };
                run(m, n, k, d, l, r, alpha, beta, Parallelism::None);
            })
        });
        return Ok(());
    }
    let dst_data = dst.data;
    for b in 0..batch {
        let d = MatMut { data: &mut *dst_data, base: at(dst.base, dst_bs, b), rs: dst.rs, cs: dst.cs };
        let l = MatRef { base: at(lhs.base, lhs_bs, b), ..lhs };
        let r = MatRef { base: at(rhs.base, rhs_bs, b), ..rhs };
        gemm(m, n, k, d, l, r, alpha, beta)?;
    }
    Ok(())
}

/// dst (m x n) = alpha dst + lhs (m x k) @ rhs (k x n): [`gemm`] when `par`,
/// else [`gemm_serial`] (callers that decide threading per product).
#[allow(clippy::too_many_arguments)]
pub fn gemm_maybe_par(par: bool, m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, alpha: f32) -> Result {
    if par {
        gemm(m, n, k, dst, lhs, rhs, alpha, 1.0)
    } else {
        gemm_serial(m, n, k, dst, lhs, rhs, alpha, 1.0)
    }
}

/// As [`gemm`], on the calling thread only: for callers that already run
/// several products in parallel.
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, alpha: f32, beta: f32) -> Result {
    check(m, n, k, &dst, &lhs, &rhs)?;
    run(m, n, k, dst, lhs, rhs, alpha, beta, Parallelism::None);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::too_many_arguments)]
mod tests {
    use super::*;

    use crate::testdata::data;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        d: &mut [f32],
        dv: (usize, isize, isize),
        l: &[f32],
        lv: (usize, isize, isize),
        r: &[f32],
        rv: (usize, isize, isize),
        alpha: f32,
        beta: f32,
    ) {
        let at = |v: (usize, isize, isize), i: usize, j: usize| {
            (v.0 as isize + i as isize * v.1 + j as isize * v.2) as usize
        };
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| l[at(lv, i, p)] as f64 * r[at(rv, p, j)] as f64).sum();
                let o = &mut d[at(dv, i, j)];
                *o = if alpha == 0.0 { 0.0 } else { alpha * *o } + beta * s as f32;
            }
        }
    }

    type View = (usize, isize, isize);

    /// Runs [`gemm`] on the views (dst starting from `d`) and checks the
    /// result against [`naive`] on a copy.
    fn check_against_naive(
        (m, n, k): (usize, usize, usize),
        mut d: Vec<f32>,
        dv: View,
        (l, lv): (&[f32], View),
        (r, rv): (&[f32], View),
        (alpha, beta): (f32, f32),
        what: &str,
    ) {
        let mut want = d.clone();
        naive(m, n, k, &mut want, dv, l, lv, r, rv, alpha, beta);
        gemm(
            m,
            n,
            k,
            MatMut { data: &mut d, base: dv.0, rs: dv.1, cs: dv.2 },
            MatRef { data: l, base: lv.0, rs: lv.1, cs: lv.2 },
            MatRef { data: r, base: rv.0, rs: rv.1, cs: rv.2 },
            alpha,
            beta,
        )
        .unwrap();
        for (g, w) in d.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k} {what}: {g} vs {w}");
        }
    }

    #[test]
    fn gemm_matches_naive_with_strides() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (64, 48, 33), (130, 70, 257), (5, 4, 0), (300, 200, 100)] {
            let l = data(m * k + 8, 1);
            let r = data(k * n + 8, 2);
            // lhs row-major, rhs transposed (column-major), dst transposed
            let lv = (0, k as isize, 1);
            let rv = (0, 1, k as isize);
            let dv = (0, 1, m as isize);
            for (alpha, beta) in [(0.0, 1.0), (1.0, 0.5), (0.25, -2.0)] {
                let mut d = data(m * n, 3);
                d.iter_mut().for_each(|v| {
                    if alpha == 0.0 {
                        *v = f32::NAN
                    }
                });
                check_against_naive((m, n, k), d, dv, (&l, lv), (&r, rv), (alpha, beta), "");
            }
        }
        // negative strides: lhs rows reversed
        let (m, n, k) = (6, 5, 4);
        let l = data(m * k, 4);
        let r = data(k * n, 5);
        let mut d = vec![0.0; m * n];
        let mut want = d.clone();
        let lv = ((m - 1) * k, -(k as isize), 1);
        naive(m, n, k, &mut want, (0, n as isize, 1), &l, lv, &r, (0, n as isize, 1), 0.0, 1.0);
        gemm(
            m,
            n,
            k,
            MatMut { data: &mut d, base: 0, rs: n as isize, cs: 1 },
            MatRef { data: &l, base: lv.0, rs: lv.1, cs: 1 },
            MatRef { data: &r, base: 0, rs: n as isize, cs: 1 },
            0.0,
            1.0,
        )
        .unwrap();
        assert!(d.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-5));
    }

    #[test]
    fn batch_gemm_matches_naive() {
        for &(batch, m, n, k) in &[(1, 3, 4, 5), (7, 8, 9, 10), (256, 32, 32, 32), (3, 200, 150, 100)] {
            let l = data(batch * m * k, 6);
            let r = data(k * n, 7); // rhs shared: batch stride 0
            let mut d = vec![0.0; batch * m * n];
            let mut want = d.clone();
            for b in 0..batch {
                naive(
                    m,
                    n,
                    k,
                    &mut want,
                    (b * m * n, n as isize, 1),
                    &l,
                    (b * m * k, k as isize, 1),
                    &r,
                    (0, n as isize, 1),
                    0.0,
                    1.0,
                );
            }
            batch_gemm(
                batch,
                m,
                n,
                k,
                MatMut { data: &mut d, base: 0, rs: n as isize, cs: 1 },
                (m * n) as isize,
                MatRef { data: &l, base: 0, rs: k as isize, cs: 1 },
                (m * k) as isize,
                MatRef { data: &r, base: 0, rs: n as isize, cs: 1 },
                0,
                0.0,
                1.0,
            )
            .unwrap();
            assert!(d.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-4 * (1.0 + w.abs())), "{batch}x{m}x{n}x{k}");
        }
        // negative batch stride and accumulation into one dst (bs = 0)
        let (batch, m, n, k) = (40, 8, 8, 8);
        let l = data(batch * m * k, 8);
        let r = data(batch * k * n, 9);
        let mut d = vec![1.0; batch * m * n];
        let mut want = d.clone();
        for b in 0..batch {
            let db = (batch - 1 - b) * m * n;
            naive(
                m,
                n,
                k,
                &mut want,
                (db, n as isize, 1),
                &l,
                (b * m * k, k as isize, 1),
                &r,
                (b * k * n, n as isize, 1),
                1.0,
                1.0,
            );
        }
        batch_gemm(
            batch,
            m,
            n,
            k,
            MatMut { data: &mut d, base: (batch - 1) * m * n, rs: n as isize, cs: 1 },
            -((m * n) as isize),
            MatRef { data: &l, base: 0, rs: k as isize, cs: 1 },
            (m * k) as isize,
            MatRef { data: &r, base: 0, rs: n as isize, cs: 1 },
            (k * n) as isize,
            1.0,
            1.0,
        )
        .unwrap();
        assert!(d.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-4 * (1.0 + w.abs())));
        let mut d = vec![0.0; m * n];
        let mut want = d.clone();
        for b in 0..batch {
            naive(
                m,
                n,
                k,
                &mut want,
                (0, n as isize, 1),
                &l,
                (b * m * k, k as isize, 1),
                &r,
                (b * k * n, n as isize, 1),
                1.0,
                1.0,
            );
        }
        batch_gemm(
            batch,
            m,
            n,
            k,
            MatMut { data: &mut d, base: 0, rs: n as isize, cs: 1 },
            0,
            MatRef { data: &l, base: 0, rs: k as isize, cs: 1 },
            (m * k) as isize,
            MatRef { data: &r, base: 0, rs: n as isize, cs: 1 },
            (k * n) as isize,
            1.0,
            1.0,
        )
        .unwrap();
        assert!(d.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-4 * (1.0 + w.abs())));
    }

    /// Few-row products in every layout the small kernels take (and some
    /// they leave to the crate), odd sizes, accumulation, one threaded case.
    #[test]
    fn small_m_products_match_naive() {
        let shapes = [(1, 1, 1), (1, 7, 3), (1, 33, 100), (2, 70, 65), (3, 8, 1), (4, 300, 17), (5, 9, 9), (1, 2048, 2048)];
        for &(m, n, k) in &shapes {
            let l = data(m * k + 3, 11);
            let r = data(k * n + 3, 12);
            // (lhs view, rhs view): row-major; rhs transposed; lhs transposed; both transposed
            let layouts = [
                ((1, k as isize, 1), (2, n as isize, 1)),
                ((1, k as isize, 1), (2, 1, k as isize)),
                ((1, 1, m as isize), (2, n as isize, 1)),
                ((1, 1, m as isize), (2, 1, k as isize)),
            ];
            for (lv, rv) in layouts {
                // dst row-major, or rows reversed (negative row stride)
                for dv in [(0usize, n as isize, 1isize), ((m - 1) * n, -(n as isize), 1)] {
                    for (alpha, beta) in [(0.0, 1.0), (1.0, -0.5)] {
                        let mut d = data(m * n, 13);
                        if alpha == 0.0 {
                            d.iter_mut().for_each(|v| *v = f32::NAN);
                        }
                        let what = format!("{lv:?} {rv:?}");
                        check_against_naive((m, n, k), d, dv, (&l, lv), (&r, rv), (alpha, beta), &what);
                    }
                }
            }
        }
        let view = |rs, cs| MatRef { data: &[], base: 0, rs, cs };
        let dst = MatMut { data: &mut [], base: 0, rs: 8, cs: 1 };
        assert_eq!(small_kind(1, 8, 8, &dst, &view(8, 1), &view(8, 1)), Some(small::Kind::Rows));
        assert_eq!(small_kind(4, 8, 8, &dst, &view(8, 1), &view(1, 8)), Some(small::Kind::Dots));
        assert_eq!(small_kind(2, 8, 8, &dst, &view(1, 2), &view(1, 8)), None);
        assert_eq!(small_kind(5, 8, 8, &dst, &view(8, 1), &view(8, 1)), None);
    }

    #[test]
    fn rejects_bad_views() {
        let l = [0.0f32; 12];
        let mut d = [0.0f32; 12];
        fn mv(d: &mut [f32], rs: isize, cs: isize) -> MatMut<'_> {
            MatMut { data: d, base: 0, rs, cs }
        }
        let lr = MatRef { data: &l, base: 0, rs: 4, cs: 1 };
        // rhs too small
        assert!(gemm(3, 4, 4, mv(&mut d, 4, 1), lr, lr, 0.0, 1.0).is_err());
        // dst with a zero stride writes one element twice
        assert!(gemm(3, 2, 2, mv(&mut d, 0, 1), lr, MatRef { rs: 1, cs: 2, ..lr }, 0.0, 1.0).is_err());
        assert!(no_self_overlap(3, 4, 4, 1) && no_self_overlap(3, 4, 1, 3) && no_self_overlap(1, 4, 0, 1));
        assert!(!no_self_overlap(3, 4, 2, 1) && !no_self_overlap(2, 2, 0, 1));
    }
}
