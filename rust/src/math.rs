//! Kernels of the reduction, arithmetic, logical and math functions that are
//! not pointwise: max / min with the index of the extreme ([`arg_reduce`])
//! and the scatter of their gradient ([`arg_scatter`]), the gradient of a
//! product reduction ([`prod_grad`]), n-ary sums and products ([`nary`]),
//! `where`, diagonal matrices, `arange` and `fill`.
//!
//! Reductions see their input as (outer, r, inner) and reduce the middle
//! axis; they are threaded over `outer`, and over pieces of one reduction
//! when there are too few outer indices to keep the pool busy.

use crate::par::{self, par_for, Rows};
use crate::simd;
use crate::{Error, Result};
use rayon::prelude::*;

// ---------------------------------------------------------------------------
// max / min with index

/// [`arg_reduce`] op codes.
pub const ARG_MAX: u32 = 0;
pub const ARG_MIN: u32 = 1;

/// Index of a candidate that no element beat (see [`extremes`]).
const NONE: u64 = u64::MAX;

/// Columns processed together.
const G: usize = 256;

/// The value extremes start from: -inf for max, +inf for min.
#[inline(always)]
fn start<const MAX: bool>() -> f32 {
    if MAX {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    }
}

/// Strictly better (NaN never is).
#[inline(always)]
fn better<const MAX: bool>(v: f32, best: f32) -> bool {
    if MAX {
        v > best
    } else {
        v < best
    }
}

/// The hot loop: rows [j0, j1) (fewer than 2^32) of the columns c0 ..
/// c0 + best.len() of a row-major matrix with `stride` columns.  `best` and
/// `idx` start at (start, u32::MAX); a strictly better value replaces them
/// with its row index relative to j0, so ties keep the first and NaN is
/// never taken.
#[inline(always)]
fn cols<const MAX: bool>(x: &[f32], stride: usize, c0: usize, j0: usize, j1: usize, best: &mut [f32], idx: &mut [u32]) {
    let w = best.len();
    let idx = &mut idx[..w];
    for j in j0..j1 {
        let row = &x[j * stride + c0..][..w];
        let jj = (j - j0) as u32;
        for c in 0..w {
            let v = row[c];
            let take = better::<MAX>(v, best[c]);
            best[c] = if take { v } else { best[c] };
            idx[c] = if take { jj } else { idx[c] };
        }
    }
}

/// Extremes of the columns c0 .. c0 + best.len() (at most G) over rows
/// [j0, j1): value and absolute row index, NONE where no element beat the
/// start value (every element NaN or equal to it).
#[inline(always)]
fn extremes<const MAX: bool>(
    x: &[f32],
    stride: usize,
    c0: usize,
    j0: usize,
    j1: usize,
    best: &mut [f32],
    idx: &mut [u64],
) {
    const SEG: usize = 1 << 31;
    let w = best.len();
    best.fill(start::<MAX>());
    idx.fill(NONE);
    let mut sb = [0.0f32; G];
    let mut si = [0u32; G];
    let mut s0 = j0;
    while s0 < j1 {
        let s1 = j1.min(s0 + SEG);
        sb[..w].fill(start::<MAX>());
        si[..w].fill(u32::MAX);
        cols::<MAX>(x, stride, c0, s0, s1, &mut sb[..w], &mut si[..w]);
        // later segments win only when strictly better
        for c in 0..w {
            if si[c] != u32::MAX && better::<MAX>(sb[c], best[c]) {
                best[c] = sb[c];
                idx[c] = (s0 + si[c] as usize) as u64;
            }
        }
        s0 = s1;
    }
}

/// Whether candidate (vb, ib) replaces (va, ia): better, or equal at a
/// smaller index (NONE counts as the largest index).
#[inline(always)]
fn replaces<const MAX: bool>(va: f32, ia: u64, vb: f32, ib: u64) -> bool {
    better::<MAX>(vb, va) || (vb == va && ib < ia)
}

/// Final values and indices of one (r, inner) block from its candidates:
/// a NONE column (nothing beat the start value) takes its first non-NaN
/// element, or index 0 (NaN) when all are NaN.
fn finish(x: &[f32], r: usize, inner: usize, cand: &[(f32, u64)], vals: &mut [f32], idx: &mut [i64]) {
    for (c, &(_, j)) in cand.iter().enumerate() {
        let j = if j != NONE { j as usize } else { (0..r).find(|&j| !x[j * inner + c].is_nan()).unwrap_or(0) };
        vals[c] = x[j * inner + c];
        idx[c] = j as i64;
    }
}

/// Extremes of a (r, inner) block with inner >= 64: chunks of G columns, in
/// parallel over chunks when `parallel`.
fn extreme_wide<const MAX: bool>(x: &[f32], r: usize, inner: usize, vals: &mut [f32], idx: &mut [i64], parallel: bool) {
    let run = |(vals, idx, cols_r): (&mut [f32], &mut [i64], std::ops::Range<usize>)| {
        let mut best = [0.0f32; G];
        let mut bi = [0u64; G];
        let mut cand = Vec::with_capacity(G);
        for c0 in cols_r.clone().step_by(G) {
            let w = G.min(cols_r.end - c0);
            simd::dispatch(
                #[inline(always)]
                || extremes::<MAX>(x, inner, c0, 0, r, &mut best[..w], &mut bi[..w]),
            );
            cand.clear();
            cand.extend(best[..w].iter().copied().zip(bi[..w].iter().copied()));
            let o = c0 - cols_r.start;
            finish(&x[c0..], r, inner, &cand, &mut vals[o..o + w], &mut idx[o..o + w]);
        }
    };
    if parallel {
        par_for((vals, idx, 0..inner), r, run);
    } else {
        run((vals, idx, 0..inner));
    }
}

/// Extremes of a (r, inner) block with inner < 64: `m` consecutive rows are
/// packed into one of width m * inner >= 64, the packed rows are reduced (in
/// pieces over the pool when `parallel`), and the candidates are folded with
/// the rows left over.
fn extreme_narrow<const MAX: bool>(
    x: &[f32],
    r: usize,
    inner: usize,
    vals: &mut [f32],
    idx: &mut [i64],
    parallel: bool,
) {
    let m = 64usize.div_ceil(inner);
    let w = m * inner;
    let packed = r / m;
    let mut cand: Vec<(f32, u64)> = vec![(start::<MAX>(), NONE); inner];
    let mut fold = |v: f32, j: u64, c: usize| {
        let (bv, bj) = cand[c];
        if replaces::<MAX>(bv, bj, v, j) {
            cand[c] = (v, j);
        }
    };
    if packed > 0 {
        // one piece of packed rows: per packed column, (value, packed row)
        let piece = |j0: usize, j1: usize| -> Vec<(f32, u64)> {
            let mut bv = [0.0f32; G];
            let mut bj = [0u64; G];
            simd::dispatch(
                #[inline(always)]
                || extremes::<MAX>(x, w, 0, j0, j1, &mut bv[..w], &mut bj[..w]),
            );
            bv[..w].iter().copied().zip(bj[..w].iter().copied()).collect()
        };
        let work = packed * w;
        let pieces = if parallel && work >= 2 * par::MIN_PAR_WORK {
            (work / (par::MIN_PAR_WORK / 2)).clamp(1, 4 * par::num_threads()).min(packed)
        } else {
            1
        };
        let bounds = |p: usize| p * packed / pieces;
        let parts: Vec<Vec<(f32, u64)>> = if pieces > 1 {
            (0..pieces).into_par_iter().map(|p| piece(bounds(p), bounds(p + 1))).collect()
        } else {
            vec![piece(0, packed)]
        };
        for part in &parts {
            for (q, &(v, jp)) in part.iter().enumerate() {
                if jp != NONE {
                    fold(v, jp * m as u64 + (q / inner) as u64, q % inner);
                }
            }
        }
    }
    for j in packed * m..r {
        for c in 0..inner {
            let v = x[j * inner + c];
            if better::<MAX>(v, start::<MAX>()) {
                fold(v, j as u64, c);
            }
        }
    }
    finish(x, r, inner, &cand, vals, idx);
}

fn arg_reduce_impl<const MAX: bool>(
    x: &[f32],
    vals: &mut [f32],
    idx: &mut [i64],
    outer: usize,
    r: usize,
    inner: usize,
) {
    let per = r * inner;
    let one = |x: &[f32], v: &mut [f32], i: &mut [i64], parallel: bool| {
        if inner >= 64 {
            extreme_wide::<MAX>(x, r, inner, v, i, parallel)
        } else {
            extreme_narrow::<MAX>(x, r, inner, v, i, parallel)
        }
    };
    if outer >= 4 * par::num_threads() || per < par::MIN_PAR_WORK {
        par_for((Rows(vals, inner), Rows(idx, inner), Rows(x, per)), per, |(Rows(v, _), Rows(i, _), Rows(x, _))| {
            for ((v, i), x) in v.chunks_exact_mut(inner).zip(i.chunks_exact_mut(inner)).zip(x.chunks_exact(per)) {
                one(x, v, i, false);
            }
        });
    } else {
        par::install(outer * per, |parallel| {
            for ((v, i), x) in vals.chunks_exact_mut(inner).zip(idx.chunks_exact_mut(inner)).zip(x.chunks_exact(per)) {
                one(x, v, i, parallel);
            }
        });
    }
}

/// For x viewed as (outer, r, inner): vals[o, i] = the largest (ARG_MAX) or
/// smallest (ARG_MIN) of x[o, :, i] and idx[o, i] its first index along r.
/// NaN is skipped unless the whole line is NaN (then NaN at index 0).
pub fn arg_reduce(
    op: u32,
    x: &[f32],
    vals: &mut [f32],
    idx: &mut [i64],
    outer: usize,
    r: usize,
    inner: usize,
) -> Result {
    let n_out = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    let n_in = n_out.checked_mul(r).ok_or(Error::Invalid)?;
    if op > ARG_MIN || x.len() < n_in || vals.len() < n_out || idx.len() < n_out || (r == 0 && n_out > 0) {
        return Err(Error::Invalid);
    }
    if n_out == 0 {
        return Ok(());
    }
    let (x, vals, idx) = (&x[..n_in], &mut vals[..n_out], &mut idx[..n_out]);
    if op == ARG_MAX {
        arg_reduce_impl::<true>(x, vals, idx, outer, r, inner);
    } else {
        arg_reduce_impl::<false>(x, vals, idx, outer, r, inner);
    }
    Ok(())
}

/// gx (outer, r, inner) = (accum ? gx : 0) + gy[o, i] at [o, idx[o, i], i]:
/// the gradient of a max / min reduction.  Indices outside [0, r) are refused
/// (OutOfRange) before anything is written.
pub fn arg_scatter(
    gy: &[f32],
    idx: &[i64],
    gx: &mut [f32],
    outer: usize,
    r: usize,
    inner: usize,
    accum: bool,
) -> Result {
    let n_out = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    let n_in = n_out.checked_mul(r).ok_or(Error::Invalid)?;
    if gy.len() < n_out || idx.len() < n_out || gx.len() < n_in {
        return Err(Error::Invalid);
    }
    if idx[..n_out].iter().any(|&i| i < 0 || i as u64 >= r as u64) {
        return Err(Error::OutOfRange);
    }
    if n_in == 0 {
        return Ok(());
    }
    let per = r * inner;
    par_for(
        (Rows(&mut gx[..n_in], per), Rows(&gy[..n_out], inner), Rows(&idx[..n_out], inner)),
        per,
        |(Rows(gx, _), Rows(gy, _), Rows(idx, _))| {
            for ((gx, gy), idx) in gx.chunks_exact_mut(per).zip(gy.chunks_exact(inner)).zip(idx.chunks_exact(inner)) {
                if !accum {
                    gx.fill(0.0);
                }
                for (i, (&g, &j)) in gy.iter().zip(idx).enumerate() {
                    gx[j as usize * inner + i] += g;
                }
            }
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// product reduction

/// Products of columns [c0, c0 + acc.len()) over rows [j0, j1) of a row-major
/// matrix with `stride` columns, multiplied into `acc` (f64).
#[inline(always)]
fn prod_cols(x: &[f32], stride: usize, c0: usize, j0: usize, j1: usize, acc: &mut [f64]) {
    let w = acc.len();
    for j in j0..j1 {
        let row = &x[j * stride + c0..][..w];
        for c in 0..w {
            acc[c] *= row[c] as f64;
        }
    }
}

/// Products over r of one (r, inner) block, accumulated in f64.
fn prod_one(x: &[f32], r: usize, inner: usize, y: &mut [f32], parallel: bool) {
    if inner >= 16 {
        let run = |(y, cols_r): (&mut [f32], std::ops::Range<usize>)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut acc = [1.0f64; G];
                    for c0 in cols_r.clone().step_by(G) {
                        let w = G.min(cols_r.end - c0);
                        acc[..w].fill(1.0);
                        prod_cols(x, inner, c0, 0, r, &mut acc[..w]);
                        for (o, &a) in y[c0 - cols_r.start..][..w].iter_mut().zip(&acc[..w]) {
                            *o = a as f32;
                        }
                    }
                },
            )
        };
        if parallel {
            par_for((y, 0..inner), r, run);
        } else {
            run((y, 0..inner));
        }
        return;
    }
    // narrow: m rows packed into one of width w = m * inner >= 16
    let m = 16usize.div_ceil(inner);
    let w = m * inner;
    let packed = r / m;
    let piece = |j0: usize, j1: usize| -> Vec<f64> {
        let mut acc = vec![1.0f64; w];
        simd::dispatch(
            #[inline(always)]
            || prod_cols(x, w, 0, j0, j1, &mut acc),
        );
        acc
    };
    let work = packed * w;
    let pieces = if parallel && work >= 2 * par::MIN_PAR_WORK {
        (work / (par::MIN_PAR_WORK / 2)).clamp(1, 4 * par::num_threads()).min(packed)
    } else {
        1
    };
    let bounds = |p: usize| p * packed / pieces;
    let parts: Vec<Vec<f64>> = if pieces > 1 {
        (0..pieces).into_par_iter().map(|p| piece(bounds(p), bounds(p + 1))).collect()
    } else {
        vec![piece(0, packed)]
    };
    let mut acc = vec![1.0f64; inner];
    for part in &parts {
        for (q, &v) in part.iter().enumerate() {
            acc[q % inner] *= v;
        }
    }
    for (k, &v) in x[packed * w..r * inner].iter().enumerate() {
        acc[k % inner] *= v as f64;
    }
    for (o, &a) in y.iter_mut().zip(&acc) {
        *o = a as f32;
    }
}

/// y[o, i] = prod over j of x[o, j, i] for x viewed as (outer, r, inner),
/// accumulated in f64 (a float32 product of n factors carries about sqrt(n)
/// roundings whatever the order; this one is rounded once).
pub fn prod_reduce(x: &[f32], y: &mut [f32], outer: usize, r: usize, inner: usize) -> Result {
    let n_out = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    let n_in = n_out.checked_mul(r).ok_or(Error::Invalid)?;
    if x.len() < n_in || y.len() < n_out {
        return Err(Error::Invalid);
    }
    if n_out == 0 {
        return Ok(());
    }
    let (x, y) = (&x[..n_in], &mut y[..n_out]);
    let per = r * inner;
    if outer >= 4 * par::num_threads() || per < par::MIN_PAR_WORK {
        par_for((Rows(y, inner), Rows(x, per)), per.max(1), |(Rows(y, _), Rows(x, _))| {
            for (k, yo) in y.chunks_exact_mut(inner).enumerate() {
                prod_one(&x[(k * per).min(x.len())..], r, inner, yo, false);
            }
        });
    } else {
        par::install(outer * per, |parallel| {
            for (yo, xo) in y.chunks_exact_mut(inner).zip(x.chunks_exact(per)) {
                prod_one(xo, r, inner, yo, parallel);
            }
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// product reduction gradient

/// gx[o, j, i] = (accum ? gx : 0) + gy[o, i] * prod_{k != j} x[o, k, i]: the
/// gradient of a product over the middle axis, from exclusive products (no
/// division, so exact where x holds zeros).
pub fn prod_grad(x: &[f32], gy: &[f32], gx: &mut [f32], outer: usize, r: usize, inner: usize, accum: bool) -> Result {
    let n_out = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    let n_in = n_out.checked_mul(r).ok_or(Error::Invalid)?;
    if x.len() < n_in || gy.len() < n_out || gx.len() < n_in {
        return Err(Error::Invalid);
    }
    if n_in == 0 {
        return Ok(());
    }
    let per = r * inner;
    par_for(
        (Rows(&mut gx[..n_in], per), Rows(&x[..n_in], per), Rows(&gy[..n_out], inner)),
        2 * per,
        |(Rows(gx, _), Rows(x, _), Rows(gy, _))| {
            let mut acc = vec![0.0f32; inner];
            let mut pre = if accum { vec![0.0f32; per] } else { Vec::new() };
            simd::dispatch(
                #[inline(always)]
                || {
                    for ((gx, x), gy) in gx.chunks_exact_mut(per).zip(x.chunks_exact(per)).zip(gy.chunks_exact(inner)) {
                        // prefix products (of the rows before j): into gx itself, or
                        // into `pre` when gx must be added to
                        let dst: &mut [f32] = if accum { &mut pre[..] } else { &mut *gx };
                        acc.fill(1.0);
                        for j in 0..r {
                            let (p, xr) = (&mut dst[j * inner..(j + 1) * inner], &x[j * inner..(j + 1) * inner]);
                            for i in 0..inner {
                                p[i] = acc[i];
                                acc[i] *= xr[i];
                            }
                        }
                        // times gy and the suffix products (of the rows after j)
                        acc.copy_from_slice(gy);
                        for j in (0..r).rev() {
                            let xr = &x[j * inner..(j + 1) * inner];
                            let g = &mut gx[j * inner..(j + 1) * inner];
                            if accum {
                                let p = &pre[j * inner..(j + 1) * inner];
                                for i in 0..inner {
                                    g[i] += p[i] * acc[i];
                                    acc[i] *= xr[i];
                                }
                            } else {
                                for i in 0..inner {
                                    g[i] *= acc[i];
                                    acc[i] *= xr[i];
                                }
                            }
                        }
                    }
                },
            );
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// n-ary sum and product

/// [`nary`] op codes.
pub const NARY_SUM: u32 = 0;
pub const NARY_PROD: u32 = 1;

/// Elements per block of [`nary`].
const NARY_BLOCK: usize = 1024;

/// y (+)= the sum (NARY_SUM) or product (NARY_PROD) of the inputs `xs`
/// except `xs[skip]` (none when skip >= xs.len()), the product times `gy`
/// when given.  With skip = i and gy the output gradient, the product gives
/// the gradient of mul_n for input i, exact where other inputs hold zeros.
pub fn nary(op: u32, xs: &[&[f32]], skip: usize, gy: Option<&[f32]>, y: &mut [f32], accum: bool) -> Result {
    let n = y.len();
    if op > NARY_PROD
        || xs.iter().any(|x| x.len() < n)
        || gy.is_some_and(|g| g.len() < n)
        || (op == NARY_SUM && gy.is_some())
    {
        return Err(Error::Invalid);
    }
    let cost = xs.len().max(1);
    par_for((y, 0..n), cost, |(y, range)| {
        simd::dispatch(
            #[inline(always)]
            || {
                let mut buf = [0.0f32; NARY_BLOCK];
                for (yb, start) in y.chunks_mut(NARY_BLOCK).zip(range.clone().step_by(NARY_BLOCK)) {
                    let len = yb.len();
                    let b = &mut buf[..len];
                    match (op, gy) {
                        (NARY_PROD, Some(g)) => b.copy_from_slice(&g[start..start + len]),
                        (NARY_PROD, None) => b.fill(1.0),
                        _ => b.fill(0.0),
                    }
                    for (k, x) in xs.iter().enumerate() {
                        if k == skip {
                            continue;
                        }
                        let xk = &x[start..start + len];
                        if op == NARY_PROD {
                            for (a, &v) in b.iter_mut().zip(xk) {
                                *a *= v;
                            }
                        } else {
                            for (a, &v) in b.iter_mut().zip(xk) {
                                *a += v;
                            }
                        }
                    }
                    if accum {
                        for (o, &v) in yb.iter_mut().zip(b.iter()) {
                            *o += v;
                        }
                    } else {
                        yb.copy_from_slice(b);
                    }
                }
            },
        )
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// where

/// y[o, i] = cond[o] != 0 ? xt[o, i] : xf[o, i] for (outer, inner) arrays;
/// a NaN condition counts as true.
pub fn where_(cond: &[f32], xt: &[f32], xf: &[f32], y: &mut [f32], outer: usize, inner: usize) -> Result {
    let n = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    if cond.len() < outer || xt.len() < n || xf.len() < n || y.len() < n {
        return Err(Error::Invalid);
    }
    if n == 0 {
        return Ok(());
    }
    if inner == 1 {
        // an elementwise select
        par_for((&mut y[..n], &xt[..n], &xf[..n], &cond[..n]), 1, |(y, t, f, c)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (((y, &t), &f), &c) in y.iter_mut().zip(t).zip(f).zip(c) {
                        *y = if c != 0.0 { t } else { f };
                    }
                },
            )
        });
        return Ok(());
    }
    par_for(
        (Rows(&mut y[..n], inner), Rows(&xt[..n], inner), Rows(&xf[..n], inner), &cond[..outer]),
        inner,
        |(Rows(y, _), Rows(t, _), Rows(f, _), c)| {
            for (((y, t), f), &c) in
                y.chunks_exact_mut(inner).zip(t.chunks_exact(inner)).zip(f.chunks_exact(inner)).zip(c)
            {
                y.copy_from_slice(if c != 0.0 { t } else { f });
            }
        },
    );
    Ok(())
}

/// g[o, i] (+)= gy[o, i] where (cond[o] != 0) == `on_true`, else 0: the
/// gradient of `where` for x_true (on_true) or x_false.
pub fn where_grad(
    cond: &[f32],
    gy: &[f32],
    g: &mut [f32],
    outer: usize,
    inner: usize,
    on_true: bool,
    accum: bool,
) -> Result {
    let n = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    if cond.len() < outer || gy.len() < n || g.len() < n {
        return Err(Error::Invalid);
    }
    if n == 0 {
        return Ok(());
    }
    let inner = inner.max(1);
    par_for(
        (Rows(&mut g[..n], inner), Rows(&gy[..n], inner), &cond[..outer]),
        inner,
        |(Rows(g, _), Rows(gy, _), c)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for ((g, gy), &c) in g.chunks_exact_mut(inner).zip(gy.chunks_exact(inner)).zip(c) {
                        let pass = (c != 0.0) == on_true;
                        match (pass, accum) {
                            (true, true) => g.iter_mut().zip(gy).for_each(|(a, &b)| *a += b),
                            (true, false) => g.copy_from_slice(gy),
                            (false, true) => {}
                            (false, false) => g.fill(0.0),
                        }
                    }
                },
            )
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// diagonal matrices, arange, fill

/// y (batch, n, n): x[b] on the diagonal of matrix b, zeros elsewhere; with
/// `accum`, x[b] is added to the diagonal and the rest is left as it is.
pub fn matrix_diag(x: &[f32], y: &mut [f32], batch: usize, n: usize, accum: bool) -> Result {
    let nx = batch.checked_mul(n).ok_or(Error::Invalid)?;
    let ny = nx.checked_mul(n).ok_or(Error::Invalid)?;
    if x.len() < nx || y.len() < ny {
        return Err(Error::Invalid);
    }
    if ny == 0 {
        return Ok(());
    }
    let nn = n * n;
    par_for((Rows(&mut y[..ny], nn), Rows(&x[..nx], n)), nn, |(Rows(y, _), Rows(x, _))| {
        for (m, d) in y.chunks_exact_mut(nn).zip(x.chunks_exact(n)) {
            if !accum {
                m.fill(0.0);
            }
            for (i, &v) in d.iter().enumerate() {
                m[i * (n + 1)] += v;
            }
        }
    });
    Ok(())
}

/// How many values `arange` yields: start, start + step, ... accumulated in
/// f32 while below `stop` (above it for a negative step).  Refused (Invalid)
/// for a zero or non-finite step, and (OutOfRange) beyond `cap` values or
/// where adding `step` no longer changes the value (an endless range).
pub fn arange_count(start: f32, stop: f32, step: f32, cap: usize) -> Result<usize> {
    if step == 0.0 || !step.is_finite() {
        return Err(Error::Invalid);
    }
    let mut v = start;
    let mut n = 0usize;
    while (step > 0.0 && v < stop) || (step < 0.0 && v > stop) {
        n += 1;
        let next = v + step;
        if n > cap || next == v {
            return Err(Error::OutOfRange);
        }
        v = next;
    }
    Ok(n)
}

/// y[i] = start + step + ... + step (i steps, accumulated in f32, as
/// [`arange_count`] counts them).
pub fn arange(start: f32, step: f32, y: &mut [f32]) {
    let mut v = start;
    for o in y.iter_mut() {
        *o = v;
        v += step;
    }
}

/// y[i] = v.
pub fn fill(y: &mut [f32], v: f32) {
    par_for(y, 1, |y| y.fill(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // coarse values: ties are common
                ((s >> 40) % 64) as f32 - 32.0
            })
            .collect()
    }

    fn naive(max: bool, x: &[f32], outer: usize, r: usize, inner: usize) -> (Vec<f32>, Vec<i64>) {
        let (mut v, mut ix) = (vec![0.0; outer * inner], vec![0i64; outer * inner]);
        for o in 0..outer {
            for i in 0..inner {
                let mut best = (f32::NAN, 0usize);
                for j in 0..r {
                    let val = x[(o * r + j) * inner + i];
                    let better = if max { val > best.0 } else { val < best.0 };
                    if best.0.is_nan() && !val.is_nan() || better {
                        best = (val, j);
                    }
                }
                v[o * inner + i] = best.0;
                ix[o * inner + i] = best.1 as i64;
            }
        }
        (v, ix)
    }

    #[test]
    fn arg_reduce_matches_naive() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 1),
            (2, 17, 3),
            (1, 100_003, 1),
            (2, 70_000, 1),
            (5, 33, 7),
            (1, 3000, 5),
            (4, 9, 16),
            (3, 70, 300),
            (100, 40, 17),
            (1, 4, 2000),
            (1, 20_000, 20),
        ];
        for &(outer, r, inner) in &shapes {
            let mut x = data(outer * r * inner, (outer * 31 + r * 7 + inner) as u64);
            if x.len() > 10 {
                x[3] = f32::NAN;
                let mid = x.len() / 2;
                x[mid] = f32::INFINITY;
            }
            for (op, max) in [(ARG_MAX, true), (ARG_MIN, false)] {
                let (wv, wi) = naive(max, &x, outer, r, inner);
                let mut v = vec![0.0; outer * inner];
                let mut ix = vec![-1i64; outer * inner];
                arg_reduce(op, &x, &mut v, &mut ix, outer, r, inner).unwrap();
                assert_eq!(ix, wi, "{op} {outer}x{r}x{inner}");
                assert!(v.iter().zip(&wv).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
        // only -inf and NaN: the first -inf; -0 and 0 tie
        for (x, want) in [([f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY], 1i64), ([-0.0f32, 0.0, -1.0], 0)] {
            let (mut v, mut ix) = ([0.0f32; 1], [5i64; 1]);
            arg_reduce(ARG_MAX, &x, &mut v, &mut ix, 1, 3, 1).unwrap();
            assert_eq!((ix[0], v[0].to_bits()), (want, x[want as usize].to_bits()));
        }
        // all NaN: NaN at index 0
        let x = [f32::NAN; 40];
        let (mut v, mut ix) = ([0.0f32; 2], [5i64; 2]);
        arg_reduce(ARG_MAX, &x, &mut v, &mut ix, 2, 20, 1).unwrap();
        assert!(v[0].is_nan() && ix == [0, 0]);
        assert_eq!(arg_reduce(ARG_MAX, &x, &mut v, &mut ix, 2, 0, 1), Err(Error::Invalid));
        assert_eq!(arg_reduce(2, &x, &mut v, &mut ix, 2, 20, 1), Err(Error::Invalid));
    }

    #[test]
    fn prod_reduce_is_accurate() {
        for &(outer, r, inner) in &[
            (1, 1, 1),
            (3, 5, 1),
            (2, 0, 3),
            (1, 1_000_000, 1),
            (4, 1000, 3),
            (2, 300, 70),
            (70, 30, 1),
            (1, 50_000, 20),
        ] {
            let mut s = 7u64;
            let x: Vec<f32> = (0..outer * r * inner)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    1.0 + ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2e-3
                })
                .collect();
            let mut y = vec![0.0f32; outer * inner];
            prod_reduce(&x, &mut y, outer, r, inner).unwrap();
            for o in 0..outer {
                for i in 0..inner {
                    let want: f64 = (0..r).map(|j| x[(o * r + j) * inner + i] as f64).product();
                    let got = y[o * inner + i] as f64;
                    assert!((got - want).abs() <= 1e-7 * want.abs(), "{outer}x{r}x{inner}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn scatter_and_prod_grad() {
        let gy = [1.0f32, 2.0, 3.0, 4.0];
        let idx = [0i64, 2, 1, 1];
        let mut gx = vec![9.0f32; 2 * 3 * 2];
        arg_scatter(&gy, &idx, &mut gx, 2, 3, 2, false).unwrap();
        assert_eq!(gx, [1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
        arg_scatter(&gy, &idx, &mut gx, 2, 3, 2, true).unwrap();
        assert_eq!(gx[0], 2.0);
        assert_eq!(arg_scatter(&gy, &[0, 3, 0, 0], &mut gx, 2, 3, 2, false), Err(Error::OutOfRange));
        assert_eq!(gx[0], 2.0); // nothing written

        // prod over r of (outer, r, inner) with zeros
        let (outer, r, inner) = (3, 5, 4);
        let mut x = data(outer * r * inner, 3).iter().map(|v| v / 16.0).collect::<Vec<_>>();
        x[1] = 0.0;
        x[5] = 0.0;
        x[22] = 0.0;
        let gy: Vec<f32> = (0..outer * inner).map(|i| i as f32 - 2.5).collect();
        for accum in [false, true] {
            let mut gx = vec![0.5f32; outer * r * inner];
            prod_grad(&x, &gy, &mut gx, outer, r, inner, accum).unwrap();
            for o in 0..outer {
                for j in 0..r {
                    for i in 0..inner {
                        let p: f64 = (0..r).filter(|&k| k != j).map(|k| x[(o * r + k) * inner + i] as f64).product();
                        let want = p * gy[o * inner + i] as f64 + if accum { 0.5 } else { 0.0 };
                        let got = gx[(o * r + j) * inner + i] as f64;
                        assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{o} {j} {i}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn nary_where_diag_arange() {
        let n = 70_001;
        let a = data(n, 1);
        let b = data(n, 2);
        let c = data(n, 3);
        let mut y = vec![0.0f32; n];
        nary(NARY_SUM, &[&a, &b, &c], 3, None, &mut y, false).unwrap();
        assert!((0..n).all(|i| y[i] == a[i] + b[i] + c[i]));
        nary(NARY_PROD, &[&a, &b, &c], 3, None, &mut y, false).unwrap();
        assert!((0..n).all(|i| y[i] == a[i] * b[i] * c[i]));
        nary(NARY_PROD, &[&a, &b, &c], 1, Some(&c), &mut y, true).unwrap();
        assert!((0..n).all(|i| y[i] == a[i] * b[i] * c[i] + c[i] * a[i] * c[i]));
        assert_eq!(nary(NARY_SUM, &[&a, &b[..5]], 2, None, &mut y, false), Err(Error::Invalid));

        let cond = [1.0f32, 0.0, f32::NAN];
        let t = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f = [-1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0];
        let mut y = [0.0f32; 6];
        where_(&cond, &t, &f, &mut y, 3, 2).unwrap();
        assert_eq!(y, [1.0, 2.0, -3.0, -4.0, 5.0, 6.0]);
        let mut g = [1.0f32; 6];
        where_grad(&cond, &t, &mut g, 3, 2, false, true).unwrap();
        assert_eq!(g, [1.0, 1.0, 4.0, 5.0, 1.0, 1.0]);
        where_grad(&cond, &t, &mut g, 3, 2, true, false).unwrap();
        assert_eq!(g, [1.0, 2.0, 0.0, 0.0, 5.0, 6.0]);

        let mut m = [7.0f32; 8];
        matrix_diag(&[1.0, 2.0, 3.0, 4.0], &mut m, 2, 2, false).unwrap();
        assert_eq!(m, [1.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 4.0]);
        matrix_diag(&[1.0, 1.0, 1.0, 1.0], &mut m, 2, 2, true).unwrap();
        assert_eq!(m, [2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 5.0]);

        assert_eq!(arange_count(0.0, 10.0, 1.0, 100), Ok(10));
        // accumulated in f32: 0.1 added 25 times stays below 2.5 (NumPy's arange gives 25 values)
        assert_eq!(arange_count(0.0, 2.5, 0.1, 100), Ok(26));
        assert_eq!(arange_count(5.0, 0.0, -2.0, 100), Ok(3));
        assert_eq!(arange_count(0.0, 10.0, -1.0, 100), Ok(0));
        assert_eq!(arange_count(0.0, 1000.0, 1.0, 10), Err(Error::OutOfRange));
        assert_eq!(arange_count(1e8, 2e8, 1.0, usize::MAX), Err(Error::OutOfRange));
        assert_eq!(arange_count(0.0, 1.0, 0.0, 10), Err(Error::Invalid));
        assert_eq!(arange_count(0.0, 1.0, f32::NAN, 10), Err(Error::Invalid));
        let mut y = [0.0f32; 3];
        arange(5.0, -2.0, &mut y);
        assert_eq!(y, [5.0, 3.0, 1.0]);
        let mut z = vec![0.0f32; 100_000];
        fill(&mut z, 2.5);
        assert!(z.iter().all(|&v| v == 2.5));
    }
}
