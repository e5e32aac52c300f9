//! Winograd F(2x2, 3x3) for 2-D, 3x3, stride-1, undilated, ungrouped,
//! channel-first convolutions: the forward pass and the input gradient (a
//! 3x3 stride-1 convolution of the output gradient with the flipped,
//! transposed kernel and padding 2 - pad).
//!
//! The output is cut into 2x2 tiles, each computed from a 4x4 input tile:
//! with d the input tile and g a 3x3 kernel, a tile of the output is
//! A^T [(G g G^T) . (B^T d B)] A.  Summed over input channels, the 16
//! elementwise products of a tile become 16 independent matrix products
//! M_e (OC x tiles) = U_e (OC x C) @ V_e (C x tiles), 2.25 times fewer
//! multiply-adds than the direct convolution (or im2col and one product).
//!
//! Per block of tile rows of one sample: the input tiles are transformed into
//! V (16, C, tiles), the 16 products give M (16, OC, tiles), and the inverse
//! transform writes the output rows.  Every transform runs along a row of
//! tiles with unit-stride loads and stores (input rows are first split into
//! their even and odd columns), so that the loops vectorise.
//!
//! The weight gradient is the adjoint: per tile, the 4x4 transform of the
//! 2x2 output gradient A gy A^T times the input tile's transform, summed
//! over tiles and samples by 16 products dU_e (OC x C) = W_e V_e^T, then
//! G^T dU G.  Setting `NNCY_NO_WINOGRAD` sends
//! every convolution to im2col (for comparisons).

use crate::conv::ConvGeom;
use crate::gemm::{self, MatMut, MatRef};
use crate::par::{self, MIN_PAR_WORK};
use crate::{simd, Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// One convolution as seen by the tiles: `ci` input planes of (h, w) padded
/// by (ph, pw), `co` output planes of (oh, ow) = (h + 2 ph - 2, w + 2 pw - 2).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Shape {
    /// Tile rows and columns.
    fn tiles(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }

    /// Tile rows per block: V and M of a block hold about [`BLOCK`] floats.
    fn block_rows(&self) -> usize {
        let (th, tw) = self.tiles();
        (BLOCK / (16 * (self.ci + self.co) * tw).max(1)).clamp(1, th.max(1))
    }
}

/// Fewest channels (input and output), output positions, and multiply-adds
/// per sample over the channels (ci co positions) for the tiles to beat
/// im2col and one product: below, the products are too thin and the batched
/// im2col path does better.
const MIN_CHANNELS: usize = 16;
const MIN_POSITIONS: usize = 64;
const MIN_SAMPLE_MACS: usize = 128 * 1024;

/// The shape of `op` (forward or data) on `g` when Winograd applies.
pub fn shape(g: &ConvGeom, forward: bool) -> Option<Shape> {
    if g.channel_last || g.group != 1 || g.axes.len() != 2 {
        return None;
    }
    if !g.axes.iter().all(|a| a.k == 3 && a.s == 1 && a.d == 1 && a.p <= 2) {
        return None;
    }
    if std::env::var_os("NNCY_NO_WINOGRAD").is_some() {
        return None;
    }
    let (a0, a1) = (g.axes[0], g.axes[1]);
    let pos = a0.out * a1.out;
    if g.channels < MIN_CHANNELS || g.out_channels < MIN_CHANNELS || pos < MIN_POSITIONS || g.channels * g.out_channels * pos < MIN_SAMPLE_MACS {
        return None;
    }
    let sh = if forward {
        Shape { batch: g.batch, ci: g.channels, co: g.out_channels, h: a0.len, w: a1.len, ph: a0.p, pw: a1.p, oh: a0.out, ow: a1.out }
    } else {
        // gx = conv(gy padded by 2 - p, flipped kernel transposed)
        Shape { batch: g.batch, ci: g.out_channels, co: g.channels, h: a0.out, w: a1.out, ph: 2 - a0.p, pw: 2 - a1.p, oh: a0.len, ow: a1.len }
    };
    // Wide channels on small images leave few tiles per product: packing the
    // (co, ci) kernels then costs too much and im2col's one deep product wins.
    let (th, tw) = sh.tiles();
    (4 * sh.block_rows().min(th) * tw >= sh.ci.max(sh.co)).then_some(sh)
}

/// U (16, co, ci) = G g G^T of every kernel.  `flip` reads the kernels of
/// the input gradient from the forward weights w (ci_fwd = co, oc_fwd = ci):
/// g[o][i] = w[i][o] rotated by 180 degrees.
pub fn transform_weights(sh: &Shape, w: &[f32], flip: bool) -> Vec<f32> {
    let (ci, co) = (sh.ci, sh.co);
    let mut u = vec![0.0f32; 16 * co * ci];
    for o in 0..co {
        for i in 0..ci {
            let mut k = [0.0f32; 9];
            if flip {
                let src = &w[(i * co + o) * 9..][..9];
                for t in 0..9 {
                    k[t] = src[8 - t];
                }
            } else {
                k.copy_from_slice(&w[(o * ci + i) * 9..][..9]);
            }
            // rows: G g (4 x 3)
            let mut gg = [[0.0f32; 3]; 4];
            for c in 0..3 {
                let (a, b, d) = (k[c], k[3 + c], k[6 + c]);
                gg[0][c] = a;
                gg[1][c] = 0.5 * (a + b + d);
                gg[2][c] = 0.5 * (a - b + d);
                gg[3][c] = d;
            }
            // columns: (G g) G^T (4 x 4)
            for (r, row) in gg.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let v = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (c, &x) in v.iter().enumerate() {
                    u[((r * 4 + c) * co + o) * ci + i] = x;
                }
            }
        }
    }
    u
}

/// Scratch of one thread: V, M and the row buffers.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    rows: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Most floats a thread's scratch keeps between calls.
const KEEP: usize = 1 << 20;

fn grow(v: &mut Vec<f32>, n: usize) -> Result<&mut [f32]> {
    if v.len() < n {
        v.try_reserve(n - v.len()).map_err(|_| Error::Invalid)?;
        v.resize(n, 0.0);
    }
    Ok(&mut v[..n])
}

/// V and M of a block aim at this many floats (about a core's L2 cache).
const BLOCK: usize = 384 * 1024;

/// V (16, ci, nt) <- B^T d B of the tiles of tile rows [r0, r1) of one
/// sample `x` (ci planes); `rows` holds 10 (tw + 1) floats.
#[inline(always)]
fn input_transform(sh: &Shape, x: &[f32], r0: usize, r1: usize, v: &mut [f32], rows: &mut [f32]) {
    let (_, tw) = sh.tiles();
    let nt = (r1 - r0) * tw;
    let (h, w, ci) = (sh.h, sh.w, sh.ci);
    let n1 = tw + 1;
    assert!(v.len() >= 16 * ci * nt && rows.len() >= 10 * n1 && x.len() >= ci * h * w);
    let (ev, rest) = rows.split_at_mut(4 * n1);
    let (od, padded) = rest.split_at_mut(4 * n1);
    let padded = &mut padded[..2 * n1];
    // columns of the padded row that come from the input
    let (lo, hi) = (sh.pw.min(2 * n1), (sh.pw + w).min(2 * n1));
    padded.fill(0.0);
    let stride = ci * nt;
    for c in 0..ci {
        let plane = &x[c * h * w..][..h * w];
        for ti in r0..r1 {
            // even and odd columns of the four input rows of this tile row
            for r in 0..4 {
                let (e, o) = (&mut ev[r * n1..][..n1], &mut od[r * n1..][..n1]);
                let y = (2 * ti + r) as isize - sh.ph as isize;
                if y < 0 || y >= h as isize {
                    e.fill(0.0);
                    o.fill(0.0);
                    continue;
                }
                let src = &plane[y as usize * w..][..w];
                padded[lo..hi].copy_from_slice(&src[..hi - lo]);
                for ((pe, po), pair) in e.iter_mut().zip(o.iter_mut()).zip(padded.chunks_exact(2)) {
                    *pe = pair[0];
                    *po = pair[1];
                }
            }
            let base = c * nt + (ti - r0) * tw;
            let vp = v.as_mut_ptr();
            // column transform of each row, then row transform
            for j in 0..tw {
                // SAFETY: j + 1 < n1, and every store is below
                // 15 stride + ci nt <= 16 ci nt <= v.len() (asserted above).
                unsafe {
                    let col = |r: usize| {
                        let (d0, d1) = (*ev.get_unchecked(r * n1 + j), *od.get_unchecked(r * n1 + j));
                        let (d2, d3) = (*ev.get_unchecked(r * n1 + j + 1), *od.get_unchecked(r * n1 + j + 1));
                        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
                    };
                    let (t0, t1, t2, t3) = (col(0), col(1), col(2), col(3));
                    for k in 0..4 {
                        *vp.add(k * stride + base + j) = t0[k] - t2[k];
                        *vp.add((4 + k) * stride + base + j) = t1[k] + t2[k];
                        *vp.add((8 + k) * stride + base + j) = t2[k] - t1[k];
                        *vp.add((12 + k) * stride + base + j) = t1[k] - t3[k];
                    }
                }
            }
        }
    }
}

/// y rows of tile rows [r0, r1) (+)= A^T m A [+ bias] from M (16, co, nt);
/// `rows` holds 4 tw floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_transform(sh: &Shape, m: &[f32], r0: usize, r1: usize, y: &mut [f32], bias: Option<&[f32]>, accum: bool, rows: &mut [f32]) {
    let (_, tw) = sh.tiles();
    let nt = (r1 - r0) * tw;
    let (oh, ow, co) = (sh.oh, sh.ow, sh.co);
    let stride = co * nt;
    assert!(m.len() >= 16 * co * nt && rows.len() >= 4 * tw && ow <= 2 * tw);
    let (q00, rest) = rows[..4 * tw].split_at_mut(tw);
    let (q01, rest) = rest.split_at_mut(tw);
    let (q10, q11) = rest.split_at_mut(tw);
    for o in 0..co {
        let b = bias.map_or(0.0, |b| b[o]);
        let plane = &mut y[o * oh * ow..][..oh * ow];
        for ti in r0..r1 {
            let base = o * nt + (ti - r0) * tw;
            for j in 0..tw {
                let mut s = [[0.0f32; 2]; 4];
                for (a, sa) in s.iter_mut().enumerate() {
                    // SAFETY: below 15 stride + co nt <= m.len() (asserted above)
                    let q = |k: usize| unsafe { *m.get_unchecked((a * 4 + k) * stride + base + j) };
                    let (m0, m1, m2, m3) = (q(0), q(1), q(2), q(3));
                    sa[0] = m0 + m1 + m2;
                    sa[1] = m1 - m2 - m3;
                }
                q00[j] = s[0][0] + s[1][0] + s[2][0] + b;
                q01[j] = s[0][1] + s[1][1] + s[2][1] + b;
                q10[j] = s[1][0] - s[2][0] - s[3][0] + b;
                q11[j] = s[1][1] - s[2][1] - s[3][1] + b;
            }
            for (dy, (ev, od)) in [(&*q00, &*q01), (&*q10, &*q11)].into_iter().enumerate() {
                let yy = 2 * ti + dy;
                if yy >= oh {
                    break;
                }
                let dst = &mut plane[yy * ow..][..ow];
                let (pairs, tail) = dst.split_at_mut(ow & !1);
                for ((d, &e), &f) in pairs.chunks_exact_mut(2).zip(ev).zip(od) {
                    if accum {
                        d[0] += e;
                        d[1] += f;
                    } else {
                        d[0] = e;
                        d[1] = f;
                    }
                }
                if let Some(d) = tail.first_mut() {
                    let e = ev[ow / 2];
                    *d = if accum { *d + e } else { e };
                }
            }
        }
    }
}

/// The tile-row blocks of one sample: per block [r0, r1) of `nt` tiles,
/// transforms the input tiles of `x` into V (16, ci, nt), sizes M to
/// (16, co, nt), and hands both with the row buffers to `step`.
#[inline(always)]
fn for_blocks(sh: &Shape, x: &[f32], sc: &mut Scratch, mut step: impl FnMut(usize, usize, usize, &[f32], &mut [f32], &mut [f32]) -> Result) -> Result {
    let (th, tw) = sh.tiles();
    let rb = sh.block_rows();
    let rows = grow(&mut sc.rows, 10 * (tw + 1))?;
    let mut r0 = 0;
    while r0 < th {
        let r1 = (r0 + rb).min(th);
        let nt = (r1 - r0) * tw;
        let v = grow(&mut sc.v, 16 * sh.ci * nt)?;
        simd::dispatch(
            #[inline(always)]
            || input_transform(sh, x, r0, r1, v, rows),
        );
        let m = grow(&mut sc.m, 16 * sh.co * nt)?;
        step(r0, r1, nt, v, m, rows)?;
        r0 = r1;
    }
    Ok(())
}

/// One sample: y (co planes) (+)= conv(x (ci planes)) [+ bias], with
/// threaded products when `par`.
#[allow(clippy::too_many_arguments)]
fn sample(sh: &Shape, u: &[f32], x: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool, sc: &mut Scratch, par: bool) -> Result {
    let (ci, co) = (sh.ci, sh.co);
    for_blocks(sh, x, sc, |r0, r1, nt, v, m, rows| {
        // M_e = U_e V_e
        for e in 0..16 {
            let dst = MatMut { data: &mut *m, base: e * co * nt, rs: nt as isize, cs: 1 };
            let lhs = MatRef { data: u, base: e * co * ci, rs: ci as isize, cs: 1 };
            let rhs = MatRef { data: v, base: e * ci * nt, rs: nt as isize, cs: 1 };
            gemm::gemm_maybe_par(par, co, nt, ci, dst, lhs, rhs, 0.0)?;
        }
        simd::dispatch(
            #[inline(always)]
            || output_transform(sh, m, r0, r1, y, bias, accum, rows),
        );
        Ok(())
    })
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => {
            let r = f(&mut sc);
            if sc.v.capacity() + sc.m.capacity() + sc.rows.capacity() > KEEP {
                *sc = Scratch::default();
            }
            r
        }
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Fewest multiply-adds (of the direct convolution) for threads.
const PAR_MACS: usize = 16 << 20;

/// y = conv(x) [+ bias], or y += conv(x) when `accum` (the bias is then
/// ignored, as on the im2col path), over the batch, with the transformed
/// kernels `u` of [`transform_weights`].
pub fn run(sh: &Shape, u: &[f32], x: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let bias = if accum { None } else { bias };
    let (xs, ys) = (sh.ci * sh.h * sh.w, sh.co * sh.oh * sh.ow);
    if x.len() < sh.batch * xs || y.len() < sh.batch * ys || u.len() < 16 * sh.ci * sh.co || bias.is_some_and(|b| b.len() < sh.co) {
        return Err(Error::Invalid);
    }
    if ys == 0 {
        return Ok(());
    }
    let threads = par::num_threads();
    let work = (sh.batch * ys).saturating_mul(9 * sh.ci);
    if threads > 1 && sh.batch >= threads && work >= PAR_MACS {
        return par::install(usize::MAX, |_| {
            y[..sh.batch * ys]
                .par_chunks_mut(ys)
                .zip(x.par_chunks(xs.max(1)))
                .try_for_each(|(yn, xn)| with_scratch(|sc| sample(sh, u, xn, yn, bias, accum, sc, false)))
        });
    }
    let par = work >= MIN_PAR_WORK;
    with_scratch(|sc| {
        for n in 0..sh.batch {
            sample(sh, u, &x[n * xs..(n + 1) * xs], &mut y[n * ys..(n + 1) * ys], bias, accum, sc, par)?;
        }
        Ok(())
    })
}

/// W (16, co, nt) <- A gy A^T of the 2x2 output-gradient tiles of tile rows
/// [r0, r1) of one sample `gy` (co planes; zero past the output's edge);
/// `rows` holds 6 tw floats.
#[inline(always)]
fn grad_transform(sh: &Shape, gy: &[f32], r0: usize, r1: usize, wb: &mut [f32], rows: &mut [f32]) {
    let (_, tw) = sh.tiles();
    let nt = (r1 - r0) * tw;
    let (oh, ow, co) = (sh.oh, sh.ow, sh.co);
    let stride = co * nt;
    assert!(wb.len() >= 16 * co * nt && rows.len() >= 6 * tw && ow <= 2 * tw && gy.len() >= co * oh * ow);
    let (ev, rest) = rows[..6 * tw].split_at_mut(2 * tw);
    let (od, padded) = rest.split_at_mut(2 * tw);
    padded[ow..].fill(0.0);
    for o in 0..co {
        let plane = &gy[o * oh * ow..][..oh * ow];
        for ti in r0..r1 {
            for dy in 0..2 {
                let (e, d) = (&mut ev[dy * tw..][..tw], &mut od[dy * tw..][..tw]);
                let yy = 2 * ti + dy;
                if yy >= oh {
                    e.fill(0.0);
                    d.fill(0.0);
                    continue;
                }
                padded[..ow].copy_from_slice(&plane[yy * ow..][..ow]);
                for ((pe, pd), pair) in e.iter_mut().zip(d.iter_mut()).zip(padded.chunks_exact(2)) {
                    *pe = pair[0];
                    *pd = pair[1];
                }
            }
            let base = o * nt + (ti - r0) * tw;
            let wp = wb.as_mut_ptr();
            for j in 0..tw {
                // tile [[a, b], [c, d]]; rows of A gy, then (A gy) A^T
                let (a, b, c, d) = (ev[j], od[j], ev[tw + j], od[tw + j]);
                let rws = [[a, b], [a + c, b + d], [a - c, b - d], [-c, -d]];
                for (k, [p, q]) in rws.into_iter().enumerate() {
                    let vals = [p, p + q, p - q, -q];
                    for (l, &v) in vals.iter().enumerate() {
                        // SAFETY: below 15 stride + co nt <= wb.len() (asserted above)
                        unsafe { *wp.add((k * 4 + l) * stride + base + j) = v };
                    }
                }
            }
        }
    }
}

/// dU (16, co, ci) += sum over the tiles of one sample of W_e V_e^T.
fn filter_sample(sh: &Shape, x: &[f32], gy: &[f32], du: &mut [f32], sc: &mut Scratch, par: bool) -> Result {
    let (ci, co) = (sh.ci, sh.co);
    // M holds W, the transformed output-gradient tiles
    for_blocks(sh, x, sc, |r0, r1, nt, v, wb, rows| {
        simd::dispatch(
            #[inline(always)]
            || grad_transform(sh, gy, r0, r1, wb, rows),
        );
        for e in 0..16 {
            let dst = MatMut { data: &mut *du, base: e * co * ci, rs: ci as isize, cs: 1 };
            let lhs = MatRef { data: &*wb, base: e * co * nt, rs: nt as isize, cs: 1 };
            let rhs = MatRef { data: v, base: e * ci * nt, rs: 1, cs: nt as isize };
            gemm::gemm_maybe_par(par, co, ci, nt, dst, lhs, rhs, 1.0)?;
        }
        Ok(())
    })
}

/// Fewest channels (input and output) for the weight gradient's tiles: its
/// products (OC x C, summed over tiles) are too small below.
const MIN_FILTER_CHANNELS: usize = 64;

/// Whether the weight gradient of the forward shape `sh` takes the tiles.
pub fn filter_applies(sh: &Shape) -> bool {
    sh.ci.min(sh.co) >= MIN_FILTER_CHANNELS
}

/// gw (co, ci, 3, 3) = [gw +] d conv / d w applied to gy, for the forward
/// shape `sh`: dU_e = sum over tiles of (A gy A^T)_e (B^T d B)_e^T, then
/// gw = G^T dU G.
pub fn filter(sh: &Shape, x: &[f32], gy: &[f32], gw: &mut [f32], accum: bool) -> Result {
    let (xs, ys) = (sh.ci * sh.h * sh.w, sh.co * sh.oh * sh.ow);
    let (ci, co) = (sh.ci, sh.co);
    if x.len() < sh.batch * xs || gy.len() < sh.batch * ys || gw.len() < co * ci * 9 {
        return Err(Error::Invalid);
    }
    let nu = 16 * co * ci;
    let threads = par::num_threads();
    let work = (sh.batch * ys).saturating_mul(9 * ci);
    let du = if threads > 1 && sh.batch >= threads && work >= PAR_MACS && ys > 0 {
        let per = sh.batch.div_ceil(threads);
        let parts: Vec<Result<Vec<f32>>> = par::install(usize::MAX, |_| {
            x[..sh.batch * xs]
                .par_chunks(per * xs.max(1))
                .zip(gy[..sh.batch * ys].par_chunks(per * ys))
                .map(|(xb, gb)| {
                    let mut du = Vec::new();
                    grow(&mut du, nu)?;
                    with_scratch(|sc| {
                        for (xn, gn) in xb.chunks_exact(xs.max(1)).zip(gb.chunks_exact(ys)) {
                            filter_sample(sh, xn, gn, &mut du, sc, false)?;
                        }
                        Ok(du)
                    })
                })
                .collect()
        });
        let mut total: Option<Vec<f32>> = None;
        for p in parts {
            let p = p?;
            match &mut total {
                None => total = Some(p),
                Some(t) => t.iter_mut().zip(&p).for_each(|(u, v)| *u += v),
            }
        }
        total.unwrap_or_else(|| vec![0.0; nu])
    } else {
        let mut du = Vec::new();
        grow(&mut du, nu)?;
        if ys > 0 {
            let par = work >= MIN_PAR_WORK;
            with_scratch(|sc| {
                for n in 0..sh.batch {
                    filter_sample(sh, &x[n * xs..(n + 1) * xs], &gy[n * ys..(n + 1) * ys], &mut du, sc, par)?;
                }
                Ok::<(), Error>(())
            })?;
        }
        du
    };
    // gw = G^T dU G per kernel
    let gt = |v: [f32; 4]| [v[0] + 0.5 * (v[1] + v[2]), 0.5 * (v[1] - v[2]), 0.5 * (v[1] + v[2]) + v[3]];
    for o in 0..co {
        for i in 0..ci {
            let at = |e: usize| du[(e * co + o) * ci + i];
            // columns first: rows r of dU G (4 x 3)
            let rg: [[f32; 3]; 4] = std::array::from_fn(|r| gt([at(r * 4), at(r * 4 + 1), at(r * 4 + 2), at(r * 4 + 3)]));
            let dst = &mut gw[(o * ci + i) * 9..][..9];
            for c in 0..3 {
                let col = gt([rg[0][c], rg[1][c], rg[2][c], rg[3][c]]);
                for r in 0..3 {
                    dst[r * 3 + c] = if accum { dst[r * 3 + c] + col[r] } else { col[r] };
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testdata::data;

    /// Direct definition in f64: y[n, o] = sum_i conv(x[n, i], g[o][i]).
    fn direct(sh: &Shape, x: &[f32], k: &dyn Fn(usize, usize, usize) -> f32, bias: Option<&[f32]>) -> Vec<f64> {
        let mut y = vec![0.0f64; sh.batch * sh.co * sh.oh * sh.ow];
        for n in 0..sh.batch {
            for o in 0..sh.co {
                for yy in 0..sh.oh {
                    for xx in 0..sh.ow {
                        let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                        for i in 0..sh.ci {
                            for t in 0..9 {
                                let (r, c) = ((yy + t / 3) as isize - sh.ph as isize, (xx + t % 3) as isize - sh.pw as isize);
                                if r < 0 || c < 0 || r >= sh.h as isize || c >= sh.w as isize {
                                    continue;
                                }
                                let xv = x[((n * sh.ci + i) * sh.h + r as usize) * sh.w + c as usize];
                                acc += xv as f64 * k(o, i, t) as f64;
                            }
                        }
                        y[((n * sh.co + o) * sh.oh + yy) * sh.ow + xx] = acc;
                    }
                }
            }
        }
        y
    }

    fn check(got: &[f32], want: &[f64], scale: f64, what: &str) {
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!((a as f64 - b).abs() <= 1e-4 * (scale + b.abs()), "{what}[{i}]: {a} vs {b}");
        }
    }

    #[test]
    fn matches_direct() {
        // (batch, ci, co, h, w, ph, pw)
        let cases = [
            (1, 3, 5, 7, 9, 1, 1),
            (2, 17, 19, 9, 8, 0, 2),
            (3, 20, 18, 11, 13, 2, 1),
            (1, 5, 3, 4, 5, 0, 0),
            (2, 33, 17, 15, 10, 1, 0),
        ];
        for &(batch, ci, co, h, w, ph, pw) in &cases {
            let (oh, ow) = (h + 2 * ph - 2, w + 2 * pw - 2);
            let sh = Shape { batch, ci, co, h, w, ph, pw, oh, ow };
            let x = data(batch * ci * h * w, 1);
            let wt = data(co * ci * 9, 2);
            let b = data(co, 3);
            let scale = (ci as f64 * 9.0).sqrt() * 0.3;
            let want = direct(&sh, &x, &|o, i, t| wt[(o * ci + i) * 9 + t], Some(&b));
            let u = transform_weights(&sh, &wt, false);
            let mut y = vec![f32::NAN; want.len()];
            run(&sh, &u, &x, &mut y, Some(&b), false).unwrap();
            check(&y, &want, scale, "forward");
            let mut y2 = vec![1.0f32; want.len()];
            run(&sh, &u, &x, &mut y2, Some(&b), true).unwrap();
            let co_plane = sh.oh * sh.ow;
            let acc: Vec<f64> = want.iter().enumerate().map(|(i, v)| v - b[(i / co_plane) % co] as f64 + 1.0).collect();
            check(&y2, &acc, scale, "accum");
            // weight gradient against the direct sum over positions
            let gy = data(batch * co * oh * ow, 5);
            let mut want_gw = vec![0.0f64; co * ci * 9];
            for n in 0..batch {
                for o in 0..co {
                    for yy in 0..oh {
                        for xx in 0..ow {
                            let gv = gy[((n * co + o) * oh + yy) * ow + xx] as f64;
                            for i in 0..ci {
                                for t in 0..9 {
                                    let (r, c) = ((yy + t / 3) as isize - ph as isize, (xx + t % 3) as isize - pw as isize);
                                    if r >= 0 && c >= 0 && r < h as isize && c < w as isize {
                                        want_gw[(o * ci + i) * 9 + t] += gv * x[((n * ci + i) * h + r as usize) * w + c as usize] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let gscale = ((batch * oh * ow) as f64).sqrt() * 0.3;
            let mut gw = vec![f32::NAN; co * ci * 9];
            filter(&sh, &x, &gy, &mut gw, false).unwrap();
            check(&gw, &want_gw, gscale, "filter");
            let mut gw2 = vec![0.5f32; co * ci * 9];
            filter(&sh, &x, &gy, &mut gw2, true).unwrap();
            check(&gw2, &want_gw.iter().map(|v| v + 0.5).collect::<Vec<_>>(), gscale, "filter accum");
            // flipped and transposed kernels: w holds (ci_fwd = co, oc_fwd = ci)
            let wf = data(ci * co * 9, 4);
            let want = direct(&sh, &x, &|o, i, t| wf[(i * co + o) * 9 + 8 - t], None);
            let u = transform_weights(&sh, &wf, true);
            let mut y = vec![f32::NAN; want.len()];
            run(&sh, &u, &x, &mut y, None, false).unwrap();
            check(&y, &want, scale, "flipped");
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Times of the transforms and products (cargo test --release -- --ignored --nocapture winograd_bench).
    #[test]
    #[ignore]
    fn winograd_bench() {
        let (batch, c, hw) = (4, 64, 56);
        let sh = Shape { batch, ci: c, co: c, h: hw, w: hw, ph: 1, pw: 1, oh: hw, ow: hw };
        let x = vec![0.5f32; batch * c * hw * hw];
        let w = vec![0.1f32; c * c * 9];
        let mut y = vec![0.0f32; batch * c * hw * hw];
        let u = transform_weights(&sh, &w, false);
        let macs = (batch * c * c * 9 * hw * hw) as f64;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            with_scratch(|sc| {
                for n in 0..batch {
                    sample(&sh, &u, &x[n * c * hw * hw..], &mut y[n * c * hw * hw..], None, false, sc, false).unwrap();
                }
            });
            let dt = t.elapsed().as_secs_f64();
            println!("winograd total {:.2} ms, {:.1} effective GF/s", dt * 1e3, 2.0 * macs / dt / 1e9);
            // parts
            let (th, tw) = sh.tiles();
            let rb = (BLOCK / (16 * (2 * c) * tw)).clamp(1, th);
            let nt = rb * tw;
            let mut v = vec![0.0f32; 16 * c * nt];
            let mut m = vec![0.0f32; 16 * c * nt];
            let mut rows = vec![0.0f32; 10 * (tw + 1)];
            let blocks = batch * th.div_ceil(rb);
            let t = std::time::Instant::now();
            for _ in 0..blocks {
                simd::dispatch(|| input_transform(&sh, &x, 0, rb, &mut v, &mut rows));
            }
            let ti = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            for _ in 0..blocks {
                for e in 0..16 {
                    let dst = MatMut { data: &mut m, base: e * c * nt, rs: nt as isize, cs: 1 };
                    let lhs = MatRef { data: &u, base: e * c * c, rs: c as isize, cs: 1 };
                    let rhs = MatRef { data: &v, base: e * c * nt, rs: nt as isize, cs: 1 };
                    gemm::gemm_serial(c, nt, c, dst, lhs, rhs, 0.0, 1.0).unwrap();
                }
            }
            let tg = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            for _ in 0..blocks {
                simd::dispatch(|| output_transform(&sh, &m, 0, rb, &mut y, None, false, &mut rows));
            }
            let to = t.elapsed().as_secs_f64();
            println!("nt {nt}: input {:.2} ms, gemm {:.2} ms ({:.1} GF/s), output {:.2} ms", ti * 1e3, tg * 1e3, 2.0 * (blocks * 16 * c * c * nt) as f64 / tg / 1e9, to * 1e3);
        }
        // im2col path, one thread per call
        std::env::set_var("NNCY_NO_WINOGRAD", "1");
        let v: Vec<usize> = vec![1, c, c, 1, 2, 0, hw, hw, 3, 1, 1, 1, hw, hw, 3, 1, 1, 1];
        let g = ConvGeom::from_slice(&v).unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for n in 0..batch {
                crate::conv::run(crate::conv::FORWARD, &g, &x[n * c * hw * hw..(n + 1) * c * hw * hw], &w, &mut y[n * c * hw * hw..(n + 1) * c * hw * hw], None, false).unwrap();
            }
            let dt = t.elapsed().as_secs_f64();
            println!("im2col {:.2} ms, {:.1} GF/s", dt * 1e3, 2.0 * macs / dt / 1e9);
        }
        std::env::remove_var("NNCY_NO_WINOGRAD");
    }
}
