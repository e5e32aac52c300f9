//! Grouped statistics and maps for the normalization functions (batch,
//! layer, instance and group normalization, weight standardization, mean
//! subtraction, clipping by norm) and PReLU.
//!
//! An array is seen as `(p, a, c, b)` (C-contiguous); group `g = p * c + c'`
//! holds the `a * b` elements `x[p, :, c', :]`.  That covers statistics over
//! the axes around one block of kept axes (batch norm: `(1, outer, channels,
//! inner)`), per-sample ones (layer norm: `(batch, 1, 1, rest)`) and
//! channel-last instance norm (`(batch, spatial, channels, 1)`); other
//! layouts are transposed by the caller.
//!
//! Two loop orders.  With `b >= ROW_MIN` each group is walked row by row, the
//! loops vectorised along the contiguous runs of `b`.  With a narrow `b`
//! (channel last) whole rows of `c * b` columns are walked and the loops
//! vectorised across columns, each column carrying its group's parameters.
//! Sums are taken in f32 lanes over short runs and folded into f64, so means
//! and variances of millions of values stay accurate; variances come from sums
//! shifted by one sample of the group, in one pass, without the cancellation
//! of E[x^2] - E[x]^2 when the mean is large.  Work is split over groups, and
//! large groups over row ranges; the split depends on the shape only, so the
//! results do not depend on the number of threads.
// Index loops over several arrays at once read best as they are.
#![allow(clippy::needless_range_loop)]

use crate::par::{par_for, Rows};
use crate::simd;
use crate::{Error, Result};

/// Narrowest `b` walked row by row.
const ROW_MIN: usize = 16;
/// Row-mode sums: block width (f32 accumulators), and run summed before
/// folding into f64.
const LANES: usize = 64;
const RUN: usize = 64 * LANES;
/// Column-mode chunk width, and rows summed in f32 before folding.
const COLS: usize = 256;
const ROWS_F32: usize = 64;
/// Elements per unit of work when a large group is split, and most pieces.
const SPLIT: usize = 32 * 1024;
const MAX_SPLITS: usize = 64;

/// The `(p, a, c, b)` view of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub p: usize,
    pub a: usize,
    pub c: usize,
    pub b: usize,
}

impl Pattern {
    /// Checks that the size fits in memory.
    pub fn new(p: usize, a: usize, c: usize, b: usize) -> Result<Self> {
        let n = [p, a, c, b].iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(Error::Invalid)?;
        if n > isize::MAX as usize / 8 {
            return Err(Error::Invalid);
        }
        Ok(Pattern { p, a, c, b })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.p * self.a * self.c * self.b
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.p * self.c
    }

    /// Elements per group.
    pub fn group_size(&self) -> usize {
        self.a * self.b
    }

    fn rows_mode(&self) -> bool {
        self.b >= ROW_MIN
    }

    /// Offset of element (p, a, c, b).
    #[inline(always)]
    fn at(&self, p: usize, a: usize, c: usize, b: usize) -> usize {
        ((p * self.a + a) * self.c + c) * self.b + b
    }

    /// Checks the lengths of element arrays and per-group arrays.
    fn check(&self, elems: &[usize], groups: &[usize]) -> Result {
        if elems.iter().any(|&l| l < self.len()) || groups.iter().any(|&l| l < self.groups()) {
            return Err(Error::Invalid);
        }
        Ok(())
    }
}

#[inline(always)]
fn acc(accum: bool, old: f32, v: f32) -> f32 {
    if accum {
        old + v
    } else {
        v
    }
}

// ---------------------------------------------------------------------------
// Generic grouped sums and maps
//
// The hot loops gather their operands with `at` and `slices` (always inlined)
// rather than `std::array::from_fn`, whose inlining LLVM may decline, which
// would leave a call in the loop and keep it from being vectorised.

/// x[k][j] for every k.
#[inline(always)]
fn at<const K: usize>(x: &[&[f32]; K], j: usize) -> [f32; K] {
    let mut v = [0.0f32; K];
    for k in 0..K {
        v[k] = x[k][j];
    }
    v
}

/// x[k][start..start + len] for every k.
#[inline(always)]
fn slices<'a, const K: usize>(x: &[&'a [f32]; K], start: usize, len: usize) -> [&'a [f32]; K] {
    let mut v: [&[f32]; K] = [&[]; K];
    for k in 0..K {
        v[k] = &x[k][start..start + len];
    }
    v
}

/// Width of the virtual rows of the column-wise loops: narrow rows of `w`
/// columns are packed `COLS / w` at a time (rows are contiguous), so that the
/// loops run over about COLS columns.
fn packed_width(w: usize) -> usize {
    if w >= COLS {
        w
    } else {
        w * (COLS / w)
    }
}

/// out[g * NS + s] = sum over the elements of group g of f(inputs, params of g)[s].
fn group_sums<const K: usize, const NP: usize, const NS: usize, F>(
    ins: [&[f32]; K],
    pat: Pattern,
    params: [&[f32]; NP],
    out: &mut [f64],
    f: F,
) where
    F: Fn([f32; K], [f32; NP]) -> [f32; NS] + Sync + Copy,
{
    out[..pat.groups() * NS].fill(0.0);
    if pat.is_empty() {
        return;
    }
    if pat.rows_mode() {
        sums_rows(ins, pat, params, out, f)
    } else {
        sums_cols(ins, pat, params, out, f)
    }
}

/// f32 partial sums of a group, folded into f64 (`fold`) every RUN values
/// or FOLD_PIECES runs, whichever comes first.
struct Partial<const NS: usize> {
    lanes: [[f32; LANES]; NS],
    values: usize,
    pieces: usize,
}

/// Most runs summed into the f32 lanes between folds (narrow rows put one
/// value per lane per run).
const FOLD_PIECES: usize = 64;

impl<const NS: usize> Partial<NS> {
    fn new() -> Self {
        Partial { lanes: [[0.0; LANES]; NS], values: 0, pieces: 0 }
    }

    #[inline(always)]
    fn fold(&mut self, acc: &mut [f64; NS]) {
        for s in 0..NS {
            acc[s] += self.lanes[s].iter().map(|&v| v as f64).sum::<f64>();
            self.lanes[s] = [0.0; LANES];
        }
        self.values = 0;
        self.pieces = 0;
    }
}

/// Adds f(ins at off + i, gp) for i < n into `part`: blocks of LANES values
/// column-wise into the f32 lanes (vectorised like the column-wise loops),
/// the last partial block into the first lanes.
#[inline(always)]
fn run_sums<const K: usize, const NP: usize, const NS: usize, F>(
    ins: &[&[f32]; K],
    off: usize,
    n: usize,
    gp: [f32; NP],
    part: &mut Partial<NS>,
    acc: &mut [f64; NS],
    f: F,
) where
    F: Fn([f32; K], [f32; NP]) -> [f32; NS] + Copy,
{
    let mut i = 0;
    while i < n {
        let len = (RUN - part.values).min(n - i);
        let xs = slices(ins, off + i, len);
        let full = len / LANES;
        for c in 0..full {
            let ch = slices(&xs, c * LANES, LANES);
            for l in 0..LANES {
                let v = f(at(&ch, l), gp);
                for s in 0..NS {
                    part.lanes[s][l] += v[s];
                }
            }
        }
        let tail = slices(&xs, full * LANES, len - full * LANES);
        for l in 0..len - full * LANES {
            let v = f(at(&tail, l), gp);
            for s in 0..NS {
                part.lanes[s][l] += v[s];
            }
        }
        part.values += len;
        part.pieces += 1;
        if part.values >= RUN || part.pieces >= FOLD_PIECES {
            part.fold(acc);
        }
        i += len;
    }
}

fn sums_rows<const K: usize, const NP: usize, const NS: usize, F>(
    ins: [&[f32]; K],
    pat: Pattern,
    params: [&[f32]; NP],
    out: &mut [f64],
    f: F,
) where
    F: Fn([f32; K], [f32; NP]) -> [f32; NS] + Sync + Copy,
{
    let groups = pat.groups();
    let m = pat.group_size();
    let splits = if groups >= MAX_SPLITS { 1 } else { (m / SPLIT).clamp(1, MAX_SPLITS) };
    let per = m.div_ceil(splits);
    let units = groups * splits;
    let mut part = vec![[0.0f64; NS]; units];
    par_for((&mut part[..], 0..units), per, |(part, range)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (acc, u) in part.iter_mut().zip(range) {
                    let (g, s) = (u / splits, u % splits);
                    let (p, c) = (g / pat.c, g % pat.c);
                    let gp = at(&params, g);
                    let (mut e, e1) = (s * per, ((s + 1) * per).min(m));
                    let mut partial = Partial::new();
                    while e < e1 {
                        let (r, col) = (e / pat.b, e % pat.b);
                        let n = (pat.b - col).min(e1 - e);
                        run_sums(&ins, pat.at(p, r, c, col), n, gp, &mut partial, acc, f);
                        e += n;
                    }
                    partial.fold(acc);
                }
            },
        )
    });
    for (g, o) in out.chunks_exact_mut(NS).take(groups).enumerate() {
        for v in &part[g * splits..(g + 1) * splits] {
            for s in 0..NS {
                o[s] += v[s];
            }
        }
    }
}

fn sums_cols<const K: usize, const NP: usize, const NS: usize, F>(
    ins: [&[f32]; K],
    pat: Pattern,
    params: [&[f32]; NP],
    out: &mut [f64],
    f: F,
) where
    F: Fn([f32; K], [f32; NP]) -> [f32; NS] + Sync + Copy,
{
    // For each p, the (a, width) matrix walked as virtual rows of vw columns.
    let width = pat.c * pat.b;
    let vw = packed_width(width);
    let slab = pat.a * width;
    let vrows = slab.div_ceil(vw);
    let wu = vw.min(COLS);
    let chunks = vw.div_ceil(COLS);
    let base = pat.p * chunks;
    let rsplits = if base >= MAX_SPLITS { 1 } else { (vrows * wu / SPLIT).clamp(1, MAX_SPLITS) };
    let rows_per = vrows.div_ceil(rsplits);
    let units = base * rsplits;
    let group_of = |p: usize, j: usize| p * pat.c + (j % width) / pat.b;
    let mut part = vec![0.0f64; units * NS * wu];
    par_for((Rows(&mut part[..], NS * wu), 0..units), rows_per * wu, |(Rows(part, _), range)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (acc64, u) in part.chunks_exact_mut(NS * wu).zip(range) {
                    let (pc, rs) = (u / rsplits, u % rsplits);
                    let (p, ch) = (pc / chunks, pc % chunks);
                    let j0 = ch * COLS;
                    let w = COLS.min(vw - j0);
                    let (r0, r1) = (rs * rows_per, ((rs + 1) * rows_per).min(vrows));
                    let mut cp = [[0.0f32; COLS]; NP];
                    for k in 0..NP {
                        for j in 0..w {
                            cp[k][j] = params[k][group_of(p, j0 + j)];
                        }
                    }
                    let mut cps: [&[f32]; NP] = [&[]; NP];
                    for k in 0..NP {
                        cps[k] = &cp[k][..w];
                    }
                    let mut r = r0;
                    while r < r1 {
                        let r_end = (r + ROWS_F32).min(r1);
                        let mut sums = [[0.0f32; COLS]; NS];
                        for rr in r..r_end {
                            let start = rr * vw + j0;
                            if start >= slab {
                                break;
                            }
                            let len = w.min(slab - start);
                            let xs = slices(&ins, p * slab + start, len);
                            let ps = slices(&cps, 0, len);
                            let accs: [&mut [f32]; NS] = sums.each_mut().map(|s| &mut s[..len]);
                            for j in 0..len {
                                let v = f(at(&xs, j), at(&ps, j));
                                for s in 0..NS {
                                    accs[s][j] += v[s];
                                }
                            }
                        }
                        for s in 0..NS {
                            for (o, &v) in acc64[s * wu..s * wu + w].iter_mut().zip(&sums[s][..w]) {
                                *o += v as f64;
                            }
                        }
                        r = r_end;
                    }
                }
            },
        )
    });
    for u in 0..units {
        let p = u / rsplits / chunks;
        let j0 = (u / rsplits % chunks) * COLS;
        let w = COLS.min(vw - j0);
        let src = &part[u * NS * wu..(u + 1) * NS * wu];
        for j in 0..w {
            let g = group_of(p, j0 + j);
            for s in 0..NS {
                out[g * NS + s] += src[s * wu + j];
            }
        }
    }
}

/// out[j] (+)= f(xs at j, ps at j) for every j < out.len().  Every source is
/// first cut to the output's length, which spares most of the run's bounds
/// checks, and `accum` is tested once, outside the loop.
#[inline(always)]
fn map_run<const K: usize, const M: usize>(
    out: &mut [f32],
    xs: [&[f32]; K],
    ps: [&[f32]; M],
    accum: bool,
    f: impl Fn([f32; K], [f32; M]) -> f32,
) {
    let n = out.len();
    let xs = slices(&xs, 0, n);
    let ps = slices(&ps, 0, n);
    // SAFETY: every source was just cut to n values, and j < n.
    let get = |j: usize| unsafe { f(at_unchecked(&xs, j), at_unchecked(&ps, j)) };
    if accum {
        for j in 0..n {
            out[j] += get(j);
        }
    } else {
        for j in 0..n {
            out[j] = get(j);
        }
    }
}

/// x[k][j] for every k, without bounds checks.
///
/// # Safety
/// j < x[k].len() for every k.
#[inline(always)]
unsafe fn at_unchecked<const K: usize>(x: &[&[f32]; K], j: usize) -> [f32; K] {
    let mut v = [0.0f32; K];
    for k in 0..K {
        // SAFETY: in bounds by the caller's promise.
        v[k] = unsafe { *x[k].get_unchecked(j) };
    }
    v
}

/// out[i] (+)= f(inputs at i, params of i's group) for every element.
fn group_map<const K: usize, const NP: usize, F>(
    ins: [&[f32]; K],
    pat: Pattern,
    params: [&[f32]; NP],
    out: &mut [f32],
    accum: bool,
    f: F,
) where
    F: Fn([f32; K], [f32; NP]) -> f32 + Sync + Copy,
{
    let n = pat.len();
    if n == 0 {
        return;
    }
    if pat.rows_mode() {
        let b = pat.b;
        let ac = pat.a * pat.c;
        par_for((Rows(&mut out[..n], b), 0..n / b), b, |(Rows(out, _), rows)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (o, q) in out.chunks_exact_mut(b).zip(rows) {
                        let gp = at(&params, (q / ac) * pat.c + q % pat.c);
                        map_run(o, slices(&ins, q * b, b), [], accum, |x, []| f(x, gp));
                    }
                },
            )
        });
        return;
    }
    // Column-wise: the parameters of every column of a virtual row, per p;
    // the elements of each p form a contiguous slab walked in pieces that
    // line up with the virtual rows.
    let w = pat.c * pat.b;
    let vw = packed_width(w);
    let slab = pat.a * w;
    // (vw is a whole number of rows of w columns; each group spans b columns.)
    let tiled: Vec<Vec<f32>> = (0..NP)
        .map(|k| {
            let mut t = Vec::with_capacity(pat.p * vw);
            for p in 0..pat.p {
                for _ in 0..vw / w {
                    for &v in &params[k][p * pat.c..(p + 1) * pat.c] {
                        t.resize(t.len() + pat.b, v);
                    }
                }
            }
            t
        })
        .collect();
    let mut tp: [&[f32]; NP] = [&[]; NP];
    for k in 0..NP {
        tp[k] = &tiled[k];
    }
    par_for((&mut out[..n], 0..n), 1, |(out, range)| {
        simd::dispatch(
            #[inline(always)]
            || {
                let mut rest = out;
                let mut i = range.start;
                while i < range.end {
                    let (p, within) = (i / slab, i % slab);
                    let off = within % vw;
                    let len = (vw - off).min(range.end - i).min(slab - within);
                    let (seg, more) = std::mem::take(&mut rest).split_at_mut(len);
                    map_run(seg, slices(&ins, i, len), slices(&tp, p * vw + off, len), accum, f);
                    rest = more;
                    i += len;
                }
            },
        )
    });
}

// ---------------------------------------------------------------------------
// Kernels

/// Mean and (biased) variance of every group; NaN for empty groups.
pub fn moments(x: &[f32], pat: Pattern, mean: &mut [f32], var: &mut [f32]) -> Result {
    pat.check(&[x.len()], &[mean.len(), var.len()])?;
    let groups = pat.groups();
    let m = pat.group_size();
    // One sample of each group: sums of x - shift do not cancel.
    let shift: Vec<f32> = (0..groups).map(|g| if m == 0 { 0.0 } else { x[pat.at(g / pat.c, 0, g % pat.c, 0)] }).collect();
    let mut s = vec![0.0f64; groups * 2];
    group_sums(
        [x],
        pat,
        [&shift],
        &mut s,
        #[inline(always)]
        |[v], [sh]| {
            let d = v - sh;
            [d, d * d]
        },
    );
    let mf = m as f64;
    for g in 0..groups {
        let mu = s[2 * g] / mf;
        let v = s[2 * g + 1] / mf - mu * mu;
        mean[g] = (shift[g] as f64 + mu) as f32;
        var[g] = (if v < 0.0 { 0.0 } else { v }) as f32;
    }
    Ok(())
}

/// su[g] = sum of u', suv[g] = sum of u' (v - center[g]) over group g, where
/// u' = u, or u where mask > 0 and 0 elsewhere; v defaults to u, center to 0.
#[allow(clippy::too_many_arguments)]
pub fn sums(
    u: &[f32],
    v: Option<&[f32]>,
    center: Option<&[f32]>,
    mask: Option<&[f32]>,
    pat: Pattern,
    su: &mut [f32],
    suv: &mut [f32],
) -> Result {
    let v = v.unwrap_or(u);
    let zeros;
    let center = match center {
        Some(c) => c,
        None => {
            zeros = vec![0.0f32; pat.groups()];
            &zeros
        }
    };
    pat.check(&[u.len(), v.len(), mask.map_or(usize::MAX, |m| m.len())], &[center.len(), su.len(), suv.len()])?;
    let mut s = vec![0.0f64; pat.groups() * 2];
    match mask {
        None => group_sums(
            [u, v],
            pat,
            [center],
            &mut s,
            #[inline(always)]
            |[u, v], [c]| [u, u * (v - c)],
        ),
        Some(m) => group_sums(
            [u, v, m],
            pat,
            [center],
            &mut s,
            #[inline(always)]
            |[u, v, m], [c]| {
                let u = if m > 0.0 { u } else { 0.0 };
                [u, u * (v - c)]
            },
        ),
    }
    for g in 0..pat.groups() {
        su[g] = s[2 * g] as f32;
        suv[g] = s[2 * g + 1] as f32;
    }
    Ok(())
}

/// y = (x - center[g]) * a[g] + b[g] (+ z), then max(., 0) when `relu`.
#[allow(clippy::too_many_arguments)]
pub fn affine(
    x: &[f32],
    pat: Pattern,
    center: &[f32],
    a: &[f32],
    b: &[f32],
    z: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> Result {
    pat.check(&[x.len(), y.len(), z.map_or(usize::MAX, |z| z.len())], &[center.len(), a.len(), b.len()])?;
    #[inline(always)]
    fn r(v: f32) -> f32 {
        if v > 0.0 {
            v
        } else {
            0.0
        }
    }
    match (z, relu) {
        (None, false) => group_map(
            [x],
            pat,
            [center, a, b],
            y,
            false,
            #[inline(always)]
            |[x], [c, a, b]| (x - c) * a + b,
        ),
        (None, true) => group_map(
            [x],
            pat,
            [center, a, b],
            y,
            false,
            #[inline(always)]
            |[x], [c, a, b]| r((x - c) * a + b),
        ),
        (Some(z), false) => group_map(
            [x, z],
            pat,
            [center, a, b],
            y,
            false,
            #[inline(always)]
            |[x, z], [c, a, b]| (x - c) * a + b + z,
        ),
        (Some(z), true) => group_map(
            [x, z],
            pat,
            [center, a, b],
            y,
            false,
            #[inline(always)]
            |[x, z], [c, a, b]| r((x - c) * a + b + z),
        ),
    }
    Ok(())
}

/// out (+)= a[g] u' + b[g] (v - center[g]) + c[g], with u' as in [`sums`]
/// (v defaults to u).
#[allow(clippy::too_many_arguments)]
pub fn combine(
    u: &[f32],
    v: Option<&[f32]>,
    mask: Option<&[f32]>,
    pat: Pattern,
    a: &[f32],
    b: &[f32],
    center: &[f32],
    c: &[f32],
    out: &mut [f32],
    accum: bool,
) -> Result {
    let v = v.unwrap_or(u);
    pat.check(&[u.len(), v.len(), out.len(), mask.map_or(usize::MAX, |m| m.len())], &[a.len(), b.len(), center.len(), c.len()])?;
    match mask {
        None => group_map(
            [u, v],
            pat,
            [a, b, center, c],
            out,
            accum,
            #[inline(always)]
            |[u, v], [a, b, m, c]| a * u + b * (v - m) + c,
        ),
        Some(mk) => group_map(
            [u, v, mk],
            pat,
            [a, b, center, c],
            out,
            accum,
            #[inline(always)]
            |[u, v, mk], [a, b, m, c]| a * (if mk > 0.0 { u } else { 0.0 }) + b * (v - m) + c,
        ),
    }
    Ok(())
}

/// out (+)= dy where y > 0, 0 elsewhere (the gradient through a ReLU from its output).
pub fn relu_mask(y: &[f32], dy: &[f32], out: &mut [f32], accum: bool) -> Result {
    let n = out.len();
    if y.len() < n || dy.len() < n {
        return Err(Error::Invalid);
    }
    par_for((out, &y[..n], &dy[..n]), 1, |(out, y, dy)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for ((o, &y), &g) in out.iter_mut().zip(y).zip(dy) {
                    *o = acc(accum, *o, if y > 0.0 { g } else { 0.0 });
                }
            },
        )
    });
    Ok(())
}

/// PReLU: y = x where x >= 0, w[g] x elsewhere.
pub fn prelu(x: &[f32], w: &[f32], pat: Pattern, y: &mut [f32]) -> Result {
    pat.check(&[x.len(), y.len()], &[w.len()])?;
    group_map(
        [x],
        pat,
        [w],
        y,
        false,
        #[inline(always)]
        |[x], [w]| if x >= 0.0 { x } else { x * w },
    );
    Ok(())
}

/// PReLU gradients: dx (+)= dy where x >= 0, w[g] dy elsewhere; dw[g] (+)=
/// sum of dy x where x < 0.
#[allow(clippy::too_many_arguments)]
pub fn prelu_grad(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    pat: Pattern,
    dx: Option<&mut [f32]>,
    accum_x: bool,
    dw: Option<&mut [f32]>,
    accum_w: bool,
) -> Result {
    pat.check(&[x.len(), dy.len(), dx.as_ref().map_or(usize::MAX, |d| d.len())], &[w.len(), dw.as_ref().map_or(usize::MAX, |d| d.len())])?;
    if let Some(dx) = dx {
        group_map(
            [x, dy],
            pat,
            [w],
            dx,
            accum_x,
            #[inline(always)]
            |[x, g], [w]| if x >= 0.0 { g } else { g * w },
        );
    }
    if let Some(dw) = dw {
        let mut s = vec![0.0f64; pat.groups()];
        group_sums(
            [x, dy],
            pat,
            [],
            &mut s,
            #[inline(always)]
            |[x, g], []| [if x < 0.0 { g * x } else { 0.0 }],
        );
        for (d, &v) in dw.iter_mut().zip(&s) {
            *d = acc(accum_w, *d, v as f32);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clipping by value

/// A clipping bound: one number, or one value per element.
#[derive(Clone, Copy, Debug)]
pub enum Bound<'a> {
    Scalar(f32),
    Array(&'a [f32]),
}

/// Read access to a bound over a piece of the elements.
trait Src: Copy + Sync {
    fn piece(self, start: usize, len: usize) -> Self;
    fn get(&self, i: usize) -> f32;
}

impl Src for f32 {
    #[inline(always)]
    fn piece(self, _: usize, _: usize) -> Self {
        self
    }
    #[inline(always)]
    fn get(&self, _: usize) -> f32 {
        *self
    }
}

impl Src for &[f32] {
    #[inline(always)]
    fn piece(self, start: usize, len: usize) -> Self {
        &self[start..start + len]
    }
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self[i]
    }
}

/// min(max(x, lo), hi) with std::max / std::min semantics (a NaN x stays NaN).
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let t = if x < lo { lo } else { x };
    if hi < t {
        hi
    } else {
        t
    }
}

/// out (+)= f(x[i], lo[i], hi[i], extra[i]) over n elements, threaded.
fn bounded<L: Src, H: Src>(x: &[f32], lo: L, hi: H, extra: &[f32], out: &mut [f32], accum: bool, f: impl Fn(f32, f32, f32, f32) -> f32 + Sync + Copy) {
    let n = out.len();
    par_for((out, 0..n), 1, |(out, r)| {
        let (lo, hi) = (lo.piece(r.start, r.len()), hi.piece(r.start, r.len()));
        let x = &x[r.start..r.end];
        let e = &extra[r.start..r.end];
        simd::dispatch(
            #[inline(always)]
            || {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = acc(accum, *o, f(x[i], lo.get(i), hi.get(i), e[i]));
                }
            },
        )
    });
}

/// The four combinations of bound kinds, resolved once per call.
#[derive(Clone, Copy)]
enum BoundPair<'a> {
    SS(f32, f32),
    SA(f32, &'a [f32]),
    AS(&'a [f32], f32),
    AA(&'a [f32], &'a [f32]),
}

fn pair<'a>(lo: Bound<'a>, hi: Bound<'a>, n: usize) -> Result<BoundPair<'a>> {
    let ok = |b: &Bound| !matches!(b, Bound::Array(a) if a.len() < n);
    if !ok(&lo) || !ok(&hi) {
        return Err(Error::Invalid);
    }
    Ok(match (lo, hi) {
        (Bound::Scalar(l), Bound::Scalar(h)) => BoundPair::SS(l, h),
        (Bound::Scalar(l), Bound::Array(h)) => BoundPair::SA(l, h),
        (Bound::Array(l), Bound::Scalar(h)) => BoundPair::AS(l, h),
        (Bound::Array(l), Bound::Array(h)) => BoundPair::AA(l, h),
    })
}

macro_rules! with_pair {
    ($pair:expr, |$lo:ident, $hi:ident| $body:expr) => {
        match $pair {
            BoundPair::SS($lo, $hi) => $body,
            BoundPair::SA($lo, $hi) => $body,
            BoundPair::AS($lo, $hi) => $body,
            BoundPair::AA($lo, $hi) => $body,
        }
    };
}

/// y (+)= min(max(x, lo), hi) elementwise.
pub fn clip(x: &[f32], lo: Bound, hi: Bound, y: &mut [f32], accum: bool) -> Result {
    let n = y.len();
    if x.len() < n {
        return Err(Error::Invalid);
    }
    let p = pair(lo, hi, n)?;
    with_pair!(p, |l, h| bounded(
        x,
        l,
        h,
        x,
        y,
        accum,
        #[inline(always)]
        |x, l, h, _| clamp(x, l, h)
    ));
    Ok(())
}

/// Gradient of min(max(x, lo), hi) with respect to x (which = 0), lo (1) or
/// hi (2), times gy: g (+)= gy where that operand is the one passed through.
pub fn clip_grad(x: &[f32], lo: Bound, hi: Bound, gy: &[f32], which: u32, g: &mut [f32], accum: bool) -> Result {
    let n = g.len();
    if x.len() < n || gy.len() < n || which > 2 {
        return Err(Error::Invalid);
    }
    let p = pair(lo, hi, n)?;
    with_pair!(p, |l, h| match which {
        0 => bounded(
            x,
            l,
            h,
            gy,
            g,
            accum,
            #[inline(always)]
            |x, l, h, gy| if !(x < l) && !(h < x) { gy } else { 0.0 }
        ),
        1 => bounded(
            x,
            l,
            h,
            gy,
            g,
            accum,
            #[inline(always)]
            |x, l, h, gy| if x < l && !(h < l) { gy } else { 0.0 }
        ),
        _ => bounded(
            x,
            l,
            h,
            gy,
            g,
            accum,
            #[inline(always)]
            |x, l, h, gy| if h < (if x < l { l } else { x }) { gy } else { 0.0 }
        ),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 mean and variance of each group, directly from the definition.
    fn reference(x: &[f32], pat: Pattern) -> (Vec<f64>, Vec<f64>) {
        let mut mean = vec![0.0; pat.groups()];
        let mut var = vec![0.0; pat.groups()];
        for g in 0..pat.groups() {
            let (p, c) = (g / pat.c, g % pat.c);
            let vals: Vec<f64> = (0..pat.a).flat_map(|a| (0..pat.b).map(move |b| (a, b))).map(|(a, b)| x[pat.at(p, a, c, b)] as f64).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            mean[g] = m;
            var[g] = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
        }
        (mean, var)
    }

    fn data(n: usize, offset: f32) -> Vec<f32> {
        // deterministic pseudo-random values around `offset`
        let mut s = 12345u32;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                offset + ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    const PATTERNS: [(usize, usize, usize, usize); 9] =
        [(1, 1, 1, 1), (1, 5, 3, 17), (2, 3, 4, 33), (1, 7, 3, 1), (3, 5, 4, 2), (2, 1, 1, 100), (1, 1000, 5, 1), (1, 3, 300, 2), (2, 70_000, 1, 1)];

    #[test]
    fn moments_match_reference() {
        for &(p, a, c, b) in &PATTERNS {
            let pat = Pattern::new(p, a, c, b).unwrap();
            for offset in [0.0f32, 1000.0] {
                let x = data(pat.len(), offset);
                let (mut m, mut v) = (vec![0.0; pat.groups()], vec![0.0; pat.groups()]);
                moments(&x, pat, &mut m, &mut v).unwrap();
                let (rm, rv) = reference(&x, pat);
                for g in 0..pat.groups() {
                    assert!((m[g] as f64 - rm[g]).abs() <= 1e-6 * (1.0 + rm[g].abs()), "{pat:?} mean {} vs {}", m[g], rm[g]);
                    assert!((v[g] as f64 - rv[g]).abs() <= 1e-5 * (1e-3 + rv[g]), "{pat:?} var {} vs {}", v[g], rv[g]);
                }
            }
        }
    }

    #[test]
    fn large_group_is_split_and_accurate() {
        let pat = Pattern::new(1, 1, 1, 3_000_001).unwrap();
        let x = data(pat.len(), 5.0);
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        moments(&x, pat, &mut m, &mut v).unwrap();
        let (rm, rv) = reference(&x, pat);
        assert!((m[0] as f64 - rm[0]).abs() < 1e-6 * rm[0].abs());
        assert!((v[0] as f64 - rv[0]).abs() < 1e-5 * rv[0]);
    }

    #[test]
    fn sums_combine_affine() {
        for &(p, a, c, b) in &PATTERNS {
            let pat = Pattern::new(p, a, c, b).unwrap();
            let n = pat.len();
            let (u, v, mk) = (data(n, 0.0), data(n, 1.0), data(n, 0.2));
            let gn = pat.groups();
            let center: Vec<f32> = (0..gn).map(|g| g as f32 * 0.1).collect();
            let (mut su, mut suv) = (vec![0.0; gn], vec![0.0; gn]);
            sums(&u, Some(&v), Some(&center), Some(&mk), pat, &mut su, &mut suv).unwrap();
            let (ga, gb, gc): (Vec<f32>, Vec<f32>, Vec<f32>) =
                ((0..gn).map(|g| 1.0 + g as f32).collect(), (0..gn).map(|g| 0.5 - g as f32).collect(), (0..gn).map(|g| g as f32 * 0.25).collect());
            let mut out = vec![1.0f32; n];
            combine(&u, Some(&v), Some(&mk), pat, &ga, &gb, &center, &gc, &mut out, true).unwrap();
            let mut y = vec![0.0f32; n];
            affine(&u, pat, &center, &ga, &gb, Some(&v), true, &mut y).unwrap();
            let mut want = vec![(0.0f64, 0.0f64); gn];
            for pp in 0..p {
                for aa in 0..a {
                    for cc in 0..c {
                        for bb in 0..b {
                            let i = pat.at(pp, aa, cc, bb);
                            let g = pp * c + cc;
                            let uu = if mk[i] > 0.0 { u[i] as f64 } else { 0.0 };
                            let d = v[i] as f64 - center[g] as f64;
                            want[g].0 += uu;
                            want[g].1 += uu * d;
                            let o = 1.0 + ga[g] as f64 * uu + gb[g] as f64 * d + gc[g] as f64;
                            assert!((out[i] as f64 - o).abs() < 1e-4 * (1.0 + o.abs()), "combine {pat:?}");
                            let yy = ((u[i] - center[g]) * ga[g] + gb[g] + v[i]).max(0.0);
                            assert!((y[i] - yy).abs() <= 1e-5 * (1.0 + yy.abs()), "affine {pat:?}");
                        }
                    }
                }
            }
            for g in 0..gn {
                assert!((su[g] as f64 - want[g].0).abs() < 1e-4 * (1.0 + want[g].0.abs()), "su {pat:?}");
                assert!((suv[g] as f64 - want[g].1).abs() < 1e-4 * (1.0 + want[g].1.abs()), "suv {pat:?}");
            }
        }
    }

    #[test]
    fn prelu_and_relu_mask() {
        let pat = Pattern::new(1, 3, 2, 20).unwrap();
        let x = data(pat.len(), 0.0);
        let dy = data(pat.len(), 0.5);
        let w = [0.25f32, -2.0];
        let mut y = vec![0.0; x.len()];
        prelu(&x, &w, pat, &mut y).unwrap();
        let (mut dx, mut dw) = (vec![0.0; x.len()], [1.0f32, 1.0]);
        prelu_grad(&x, &w, &dy, pat, Some(&mut dx), false, Some(&mut dw), true).unwrap();
        let mut want = [1.0f64, 1.0];
        for i in 0..x.len() {
            let c = (i / 20) % 2;
            assert_eq!(y[i], if x[i] >= 0.0 { x[i] } else { x[i] * w[c] });
            assert_eq!(dx[i], if x[i] >= 0.0 { dy[i] } else { dy[i] * w[c] });
            if x[i] < 0.0 {
                want[c] += (dy[i] * x[i]) as f64;
            }
        }
        for c in 0..2 {
            assert!((dw[c] as f64 - want[c]).abs() < 1e-5);
        }
        let mut m = vec![0.0; x.len()];
        relu_mask(&y, &dy, &mut m, false).unwrap();
        assert!(m.iter().zip(&y).zip(&dy).all(|((&m, &y), &g)| m == if y > 0.0 { g } else { 0.0 }));
    }

    #[test]
    fn clip_values_and_grads() {
        let x = [-3.0f32, -1.0, 0.0, 0.5, 2.0, f32::NAN];
        let hi = [1.0f32, 1.0, 1.0, 0.2, 5.0, 1.0];
        let mut y = [0.0f32; 6];
        clip(&x, Bound::Scalar(-2.0), Bound::Array(&hi), &mut y, false).unwrap();
        assert_eq!(&y[..5], &[-2.0, -1.0, 0.0, 0.2, 2.0]);
        assert!(y[5].is_nan());
        let gy = [1.0f32; 6];
        let mut g = [0.0f32; 6];
        clip_grad(&x, Bound::Scalar(-2.0), Bound::Array(&hi), &gy, 0, &mut g, false).unwrap();
        assert_eq!(&g[..5], &[0.0, 1.0, 1.0, 0.0, 1.0]);
        clip_grad(&x, Bound::Scalar(-2.0), Bound::Array(&hi), &gy, 1, &mut g, false).unwrap();
        assert_eq!(&g[..5], &[1.0, 0.0, 0.0, 0.0, 0.0]);
        clip_grad(&x, Bound::Scalar(-2.0), Bound::Array(&hi), &gy, 2, &mut g, true).unwrap();
        assert_eq!(&g[..5], &[1.0, 0.0, 0.0, 1.0, 0.0]);
        assert!(clip(&x, Bound::Array(&hi[..3]), Bound::Scalar(1.0), &mut y, false).is_err());
        assert!(clip_grad(&x, Bound::Scalar(0.0), Bound::Scalar(1.0), &gy, 3, &mut g, false).is_err());
    }

    #[test]
    fn checks_lengths() {
        let pat = Pattern::new(1, 2, 3, 4).unwrap();
        let x = vec![0.0f32; 23];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        assert!(moments(&x, pat, &mut m, &mut v).is_err());
        let x = vec![0.0f32; 24];
        assert!(moments(&x, pat, &mut m[..2], &mut v).is_err());
        assert!(Pattern::new(usize::MAX, 2, 1, 1).is_err());
    }
}
