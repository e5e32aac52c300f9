//! Reductions over the middle axis of an (outer, r, inner) array.
//!
//! Every reduction is computed as column reductions of a contiguous (rows,
//! width) matrix: with `inner` >= 64 the columns are the inner axis (in chunks
//! of up to [`W`]); with a narrow `inner` (1 included) `m` consecutive rows
//! are packed into one of width `m * inner` >= 64, and the `m` partial results
//! are folded at the end.  Each column is reduced pairwise over blocks of
//! [`BLOCK`] rows (a cascade), so sums of millions of values stay accurate, and
//! the inner loops run over up to 256 contiguous floats (vectorised).

use crate::par::{self, par_for};
use crate::simd;
use crate::Error;

/// A reduction: identity and combining operation.
pub trait Reducer: Copy + Send + Sync + 'static {
    const IDENTITY: f32;
    fn combine(a: f32, b: f32) -> f32;
}

#[derive(Clone, Copy)]
pub struct Sum;
#[derive(Clone, Copy)]
pub struct Max;
#[derive(Clone, Copy)]
pub struct Min;
#[derive(Clone, Copy)]
pub struct Prod;

impl Reducer for Sum {
    const IDENTITY: f32 = 0.0;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a + b
    }
}
impl Reducer for Max {
    const IDENTITY: f32 = f32::NEG_INFINITY;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a.max(b)
    }
}
impl Reducer for Min {
    const IDENTITY: f32 = f32::INFINITY;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a.min(b)
    }
}
impl Reducer for Prod {
    const IDENTITY: f32 = 1.0;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a * b
    }
}

/// Widest column chunk: rows of up to W floats are streamed through, their
/// partial results (a few times W floats) staying in L1/L2.
pub const W: usize = 2048;
/// Narrow rows are packed to at least this width (and less than 4x it).
const MIN_WIDTH: usize = 64;
/// Rows reduced serially before partial results are combined pairwise.
const BLOCK: usize = 128;

#[inline(always)]
fn combine_into<R: Reducer>(acc: &mut [f32], row: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(row) {
        *a = R::combine(*a, b);
    }
}

/// out[c] = R over rows j0 <= j < j1 of x[j * stride + c].  Columns go in
/// groups of 64 kept in registers while the rows stream by.
#[inline(always)]
fn block<R: Reducer>(x: &[f32], stride: usize, j0: usize, j1: usize, out: &mut [f32]) {
    const G: usize = 64;
    let w = out.len();
    let (groups, rest) = out.as_chunks_mut::<G>();
    for (g, o) in groups.iter_mut().enumerate() {
        let row = |j: usize| -> &[f32; G] { x[j * stride + g * G..][..G].try_into().unwrap() };
        let mut acc = *row(j0);
        for j in j0 + 1..j1 {
            let r = row(j);
            for k in 0..G {
                acc[k] = R::combine(acc[k], r[k]);
            }
        }
        *o = acc;
    }
    let c0 = w - rest.len();
    rest.copy_from_slice(&x[j0 * stride + c0..j0 * stride + w]);
    for j in j0 + 1..j1 {
        combine_into::<R>(rest, &x[j * stride + c0..j * stride + w]);
    }
}

/// acc[c] = R over rows j < `rows` of x[j * stride + c], for c < acc.len()
/// (x starts at the first column); pairwise over blocks of BLOCK rows.
#[inline(always)]
fn cascade<R: Reducer>(x: &[f32], stride: usize, rows: usize, acc: &mut [f32]) {
    let w = acc.len();
    let nblocks = rows.div_ceil(BLOCK);
    if nblocks <= 1 {
        return block::<R>(x, stride, 0, rows, acc);
    }
    // stack[level] holds the partial result of 2^level consecutive blocks.
    let levels = usize::BITS as usize - nblocks.leading_zeros() as usize;
    let mut stack = vec![0.0f32; levels * w];
    let mut cur = [0.0f32; W];
    let cur = &mut cur[..w];
    let mut depth = 0;
    for b in 0..nblocks {
        block::<R>(x, stride, b * BLOCK, ((b + 1) * BLOCK).min(rows), cur);
        let mut t = b;
        while t & 1 == 1 {
            depth -= 1;
            for (c, &p) in cur.iter_mut().zip(&stack[depth * w..(depth + 1) * w]) {
                *c = R::combine(p, *c);
            }
            t >>= 1;
        }
        stack[depth * w..(depth + 1) * w].copy_from_slice(cur);
        depth += 1;
    }
    acc.copy_from_slice(&stack[(depth - 1) * w..depth * w]);
    for d in (0..depth - 1).rev() {
        for (a, &p) in acc.iter_mut().zip(&stack[d * w..(d + 1) * w]) {
            *a = R::combine(p, *a);
        }
    }
}

/// [`cascade`], split in halves over the pool when `parallel` and large.
fn rows_reduce<R: Reducer>(x: &[f32], stride: usize, rows: usize, acc: &mut [f32], parallel: bool) {
    let w = acc.len();
    if parallel && rows >= 4 * BLOCK && rows * w >= 2 * par::MIN_PAR_WORK {
        let half = (rows / 2).next_multiple_of(BLOCK);
        let mut tmp = [0.0f32; W];
        let tmp = &mut tmp[..w];
        let hi = &x[half * stride..];
        rayon::join(
            || rows_reduce::<R>(x, stride, half, acc, true),
            || rows_reduce::<R>(hi, stride, rows - half, tmp, true),
        );
        combine_into::<R>(acc, tmp);
    } else {
        simd::dispatch(
            #[inline(always)]
            || cascade::<R>(x, stride, rows, acc),
        )
    }
}

/// out[i] = R over j < r of x[j * inner + i], for i < out.len() (one outer
/// index; `x` holds r * inner values).  `finish` stores each result.
fn reduce_one<R: Reducer>(
    x: &[f32],
    r: usize,
    inner: usize,
    out: &mut [f32],
    parallel: bool,
    finish: &(impl Fn(&mut f32, f32) + Sync),
) {
    if r == 0 {
        return out.iter_mut().for_each(|o| finish(o, R::IDENTITY));
    }
    if inner >= MIN_WIDTH {
        // Wide: chunks of columns, in parallel over chunks if there are enough.
        let chunks = inner.div_ceil(W);
        let by_chunk = parallel && chunks >= 2 * par::num_threads();
        let run = |(out, cols): (&mut [f32], std::ops::Range<usize>)| {
            let mut acc = [0.0f32; W];
            for c0 in cols.clone().step_by(W) {
                let w = W.min(cols.end - c0);
                rows_reduce::<R>(&x[c0..], inner, r, &mut acc[..w], parallel && !by_chunk);
                for (o, &a) in out[c0 - cols.start..][..w].iter_mut().zip(&acc[..w]) {
                    finish(o, a);
                }
            }
        };
        if by_chunk {
            par_for((out, 0..inner), r, run);
        } else {
            run((out, 0..inner));
        }
        return;
    }
    // Narrow: pack m rows into one of width w = m * inner >= MIN_WIDTH (m a
    // power of two), reduce the packed rows, fold in the r % m rows left,
    // then fold the m segments of the result pairwise.
    let m = MIN_WIDTH.div_ceil(inner).next_power_of_two();
    let w = m * inner;
    let packed = r / m;
    let mut acc = [R::IDENTITY; 4 * MIN_WIDTH];
    let acc = &mut acc[..w];
    if packed > 0 {
        rows_reduce::<R>(x, w, packed, acc, parallel);
    }
    let rest = &x[packed * w..r * inner];
    simd::dispatch(
        #[inline(always)]
        || {
            combine_into::<R>(&mut acc[..rest.len()], rest);
            let mut h = m;
            while h > 1 {
                h /= 2;
                let (lo, hi) = acc.split_at_mut(h * inner);
                combine_into::<R>(lo, &hi[..h * inner]);
            }
        },
    );
    for (o, &a) in out.iter_mut().zip(&acc[..inner]) {
        finish(o, a);
    }
}

fn reduce_impl<R: Reducer>(x: &[f32], y: &mut [f32], outer: usize, r: usize, inner: usize, scale: f32, accum: bool) {
    let finish = move |o: &mut f32, v: f32| *o = if accum { *o + scale * v } else { scale * v };
    let per = r * inner;
    if per < par::MIN_PAR_WORK || outer >= 4 * par::num_threads() {
        // Many (or small) independent reductions: split over `outer`.
        par_for((par::Rows(y, inner), par::Rows(x, per)), per, |(par::Rows(y, _), par::Rows(x, _))| {
            for (yo, xo) in y.chunks_exact_mut(inner).zip(x.chunks_exact(per.max(1))) {
                reduce_one::<R>(xo, r, inner, yo, false, &finish);
            }
            if per == 0 {
                y.iter_mut().for_each(|o| finish(o, R::IDENTITY));
            }
        });
    } else {
        // Few large ones: parallel inside each.
        par::install(outer * per, |parallel| {
            for (yo, xo) in y.chunks_exact_mut(inner).zip(x.chunks_exact(per)) {
                reduce_one::<R>(xo, r, inner, yo, parallel, &finish);
            }
        });
    }
}

/// Reduction codes of the C ABI.
pub const SUM: u32 = 0;
pub const MAX: u32 = 1;
pub const MIN: u32 = 2;
pub const PROD: u32 = 3;

/// y (outer, inner) = (accum ? y : 0) + scale * R_j x[o, j, i] for x viewed
/// as (outer, r, inner).
#[allow(clippy::too_many_arguments)]
pub fn reduce(
    op: u32,
    x: &[f32],
    y: &mut [f32],
    outer: usize,
    r: usize,
    inner: usize,
    scale: f32,
    accum: bool,
) -> crate::Result {
    let n_in = outer.checked_mul(r).and_then(|v| v.checked_mul(inner)).ok_or(Error::Invalid)?;
    if x.len() < n_in || y.len() < outer * inner {
        return Err(Error::Invalid);
    }
    if outer == 0 || inner == 0 {
        return Ok(());
    }
    let (x, y) = (&x[..n_in], &mut y[..outer * inner]);
    match op {
        SUM => reduce_impl::<Sum>(x, y, outer, r, inner, scale, accum),
        MAX => reduce_impl::<Max>(x, y, outer, r, inner, scale, accum),
        MIN => reduce_impl::<Min>(x, y, outer, r, inner, scale, accum),
        PROD => reduce_impl::<Prod>(x, y, outer, r, inner, scale, accum),
        _ => return Err(Error::Invalid),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-0.5, 1.5).
    fn data(n: usize, seed: u64) -> Vec<f32> {
        crate::testdata::data(n, seed).into_iter().map(|v| 2.0 * v + 0.5).collect()
    }

    fn reference(op: u32, x: &[f32], outer: usize, r: usize, inner: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let vals = (0..r).map(|j| x[(o * r + j) * inner + i] as f64);
                y[o * inner + i] = match op {
                    SUM => vals.sum(),
                    MAX => vals.fold(f64::NEG_INFINITY, f64::max),
                    MIN => vals.fold(f64::INFINITY, f64::min),
                    _ => vals.product(),
                };
            }
        }
        y
    }

    #[test]
    fn all_ops_shapes_accum() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 1),
            (2, 1000, 1),
            (1, 100_000, 1),
            (7, 33, 3),
            (2, 5000, 5),
            (4, 9, 64),
            (3, 70, 300),
            (1, 3000, 100),
            (100, 40, 17),
            (1000, 64, 1),
            (2, 0, 3),
            (1, 4, 2000),
            (1, 200, 600),
        ];
        for &(outer, r, inner) in &shapes {
            let x = data(outer * r * inner, (outer + r + inner) as u64);
            for op in [SUM, MAX, MIN, PROD] {
                // keep products finite
                let x: Vec<f32> = if op == PROD { x.iter().map(|v| 1.0 + v * 0.001).collect() } else { x.clone() };
                let want = reference(op, &x, outer, r, inner);
                let mut y = vec![1.0f32; outer * inner];
                reduce(op, &x, &mut y, outer, r, inner, 0.5, true).unwrap();
                // a product of r factors carries ~sqrt(r) roundings whatever the order
                let tol = if op == PROD { 1e-4 } else { 1e-5 };
                for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                    let w = 1.0 + 0.5 * w;
                    assert!(
                        (g as f64 - w).abs() <= tol * w.abs().max(1.0) || (g as f64) == w,
                        "op {op} {outer}x{r}x{inner} at {i}: {g} vs {w}"
                    );
                }
                reduce(op, &x, &mut y, outer, r, inner, 1.0, false).unwrap();
                for (&g, &w) in y.iter().zip(&want) {
                    assert!((g as f64 - w).abs() <= tol * w.abs().max(1.0) || g as f64 == w);
                }
            }
        }
    }

    #[test]
    fn big_sum_is_accurate() {
        // 16M values of 0.1: a serial f32 sum would be off by percents.
        let n = 1 << 24;
        let x = vec![0.1f32; n];
        let mut y = [0.0f32];
        reduce(SUM, &x, &mut y, 1, n, 1, 1.0, false).unwrap();
        let want = n as f64 * 0.1f32 as f64;
        assert!(((y[0] as f64 - want) / want).abs() < 1e-6, "{} vs {}", y[0], want);
        // mean over a big inner axis, one and several outers
        let x = data(4 * 4096 * 300, 9);
        let mut y = vec![0.0f32; 4 * 300];
        reduce(SUM, &x, &mut y, 4, 4096, 300, 1.0 / 4096.0, false).unwrap();
        let want = reference(SUM, &x, 4, 4096, 300);
        for (&g, &w) in y.iter().zip(&want) {
            assert!((g as f64 - w / 4096.0).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_arguments() {
        let x = [1.0f32; 4];
        let mut y = [0.0f32; 2];
        assert_eq!(reduce(9, &x, &mut y, 1, 4, 1, 1.0, false), Err(Error::Invalid));
        assert_eq!(reduce(SUM, &x, &mut y, 1, 5, 1, 1.0, false), Err(Error::Invalid));
        assert_eq!(reduce(SUM, &x, &mut y, usize::MAX, 5, 2, 1.0, false), Err(Error::Invalid));
    }
}
