//! N-D grouped, strided, padded and dilated convolution, channel-first or
//! channel-last, as matrix products: im2col / col2im here, the products
//! through [`crate::gemm`].  Convolutions with one input channel per group
//! (depthwise) take the direct kernels of [`crate::depthwise`] instead.
//!
//! Three operations serve convolution and deconvolution (whose forward is
//! convolution's input gradient):
//! - [`FORWARD`]:     y (+)= conv(x, w) [+ bias per output channel]
//! - [`DATA`]:        gx (+)= conv^T(gy, w) [+ bias per input channel]
//! - [`FILTER`]:      gw (+)= d conv / d w applied to gy
//!
//! Layouts, per sample (the batch is the product of the axes before the
//! channel axis), with G groups, Cg = C / G, OCg = OC / G and Kp kernel taps:
//! - channel-first: x (C, L...), y (OC, O...), w (OC, Cg, K...); the column
//!   matrix is (C Kp, P) with rows ordered (channel, tap) and group g's
//!   product is y_g (OCg, P) = W_g (OCg, Cg Kp) @ col_g.
//! - channel-last: x (L..., C), y (O..., OC), w (OC, K..., Cg); the column
//!   matrix is (P, G Kp Cg) with columns ordered (group, tap, channel) and
//!   y_g (P, OCg) = col_g (P, Kp Cg) @ W_g^T.
//!
//! Small channel-first images take a batched path: the columns of several
//! samples sit side by side in one column matrix (built through index tables
//! on zero-padded planes), so that one product serves the block of samples.
//!
//! Threads: when the batch has at least as many samples (or, on the batched
//! path, two blocks) as there are threads, blocks of samples run in
//! parallel, each with its own buffers and single-threaded products (weight
//! gradients are summed per thread, then added up); otherwise samples run in
//! turn with threaded products.

use crate::gemm::{self, MatMut, MatRef};
use crate::par::{self, par_for, Rows};
use crate::window::{self, row_index, Axis, MAX_AXES};
use crate::{depthwise, simd, winograd, Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

pub const FORWARD: u32 = 0;
pub const DATA: u32 = 1;
pub const FILTER: u32 = 2;

/// Geometry of a convolution.
#[derive(Clone, Debug)]
pub struct ConvGeom {
    pub batch: usize,
    pub channels: usize,
    pub out_channels: usize,
    pub group: usize,
    pub channel_last: bool,
    /// Spatial axes: input length, output length, kernel, stride, pad, dilation.
    pub axes: Vec<Axis>,
}

/// Element counts derived from a [`ConvGeom`].
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// spatial input / output positions, kernel taps
    pub pin: usize,
    pub pout: usize,
    pub kp: usize,
    /// total x, y and w sizes
    pub x: usize,
    pub y: usize,
    pub w: usize,
}

impl ConvGeom {
    /// From the C ABI layout: [batch, channels, out_channels, group, ndim,
    /// channel_last, then per spatial axis (len, out, kernel, pad, stride,
    /// dilation)].  `out` must equal the convolution output length.
    pub fn from_slice(v: &[usize]) -> Result<Self> {
        if v.len() < 6 {
            return Err(Error::Invalid);
        }
        let nd = v[4];
        if nd == 0 || nd > MAX_AXES || v.len() != 6 + 6 * nd {
            return Err(Error::Invalid);
        }
        let axes: Vec<Axis> = (0..nd)
            .map(|i| {
                let a = &v[6 + 6 * i..12 + 6 * i];
                Axis { len: a[0], out: a[1], k: a[2], p: a[3], s: a[4], d: a[5] }
            })
            .collect();
        for a in &axes {
            a.check()?;
            if Axis::conv_out(a.len, a.k, a.s, a.p, a.d) != Some(a.out) {
                return Err(Error::Invalid);
            }
        }
        let g = ConvGeom { batch: v[0], channels: v[1], out_channels: v[2], group: v[3], channel_last: v[5] != 0, axes };
        if g.group == 0 || !g.channels.is_multiple_of(g.group) || !g.out_channels.is_multiple_of(g.group) {
            return Err(Error::Invalid);
        }
        g.sizes()?;
        Ok(g)
    }

    pub fn sizes(&self) -> Result<Sizes> {
        let pin = window::product(&self.axes, |a| a.len)?;
        let pout = window::product(&self.axes, |a| a.out)?;
        let kp = window::product(&self.axes, |a| a.k)?;
        let mul = |a: &[usize]| a.iter().try_fold(1usize, |acc, &b| acc.checked_mul(b)).ok_or(Error::Invalid);
        let s = Sizes {
            pin,
            pout,
            kp,
            x: mul(&[self.batch, self.channels, pin])?,
            y: mul(&[self.batch, self.out_channels, pout])?,
            w: mul(&[self.out_channels, self.channels / self.group.max(1), kp])?,
        };
        // column buffer
        mul(&[self.channels, kp, pout])?;
        Ok(s)
    }

    fn cg(&self) -> usize {
        self.channels / self.group
    }

    fn ocg(&self) -> usize {
        self.out_channels / self.group
    }

    /// Whether the column matrix is the input itself (1x1, stride 1, no pad).
    fn identity(&self) -> bool {
        self.axes.iter().all(|a| a.k == 1 && a.s == 1 && a.p == 0)
    }

    /// Whether the direct depthwise kernels apply.
    fn depthwise(&self) -> bool {
        self.cg() == 1 && self.group > 1 && !self.channel_last
    }
}

/// Runs `op` (FORWARD, DATA or FILTER) after checking the buffer sizes:
/// FORWARD a = x, b = w, out = y, bias (OC); DATA a = gy, b = w, out = gx,
/// bias (C); FILTER a = x, b = gy, out = gw, no bias.
pub fn run(op: u32, g: &ConvGeom, a: &[f32], b: &[f32], out: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let s = g.sizes()?;
    let (na, nb, no, nbias) = match op {
        FORWARD => (s.x, s.w, s.y, Some(g.out_channels)),
        DATA => (s.y, s.w, s.x, Some(g.channels)),
        FILTER => (s.x, s.y, s.w, None),
        _ => return Err(Error::Invalid),
    };
    let bias_ok = match (bias, nbias) {
        (None, _) => true,
        (Some(bv), Some(n)) => bv.len() >= n,
        (Some(_), None) => false,
    };
    if a.len() < na || b.len() < nb || out.len() < no || !bias_ok {
        return Err(Error::Invalid);
    }
    let (a, b, out) = (&a[..na], &b[..nb], &mut out[..no]);
    if g.depthwise() {
        return match op {
            FORWARD => depthwise::forward(g, a, b, out, bias, accum),
            DATA => depthwise::backward_data(g, a, b, out, bias, accum),
            _ => depthwise::backward_filter(g, a, b, out, accum),
        };
    }
    if let Some(sh) = winograd::shape(g, op != DATA) {
        if op == FILTER {
            if winograd::filter_applies(&sh) {
                return winograd::filter(&sh, a, b, out, accum);
            }
            return backward_filter(g, &s, a, b, out, accum);
        }
        let u = winograd::transform_weights(&sh, b, op == DATA);
        return winograd::run(&sh, &u, a, out, bias, accum);
    }
    match op {
        FORWARD => forward(g, &s, a, b, out, bias, accum),
        DATA => backward_data(g, &s, a, b, out, bias, accum),
        _ => backward_filter(g, &s, a, b, out, accum),
    }
}

/// Column blocks aim at this many floats (a fraction of a core's L2 cache),
/// so that the products read what im2col has just written from cache, when
/// samples run in parallel; when one sample's products are threaded, blocks
/// are larger (the products need wide matrices to split well) but still
/// bounded, so that the buffer never grows with the image.
const COL_BLOCK: usize = 64 * 1024;
const COL_BLOCK_THREADED: usize = 4 << 20;

/// A block of output rows [r0, r1) of one sample: positions [p0, p0 + pc).
#[derive(Clone, Copy, Debug)]
struct Chunk {
    r0: usize,
    r1: usize,
    p0: usize,
    pc: usize,
}

/// The output rows of a sample in blocks of about `target` column floats
/// (one block for 1x1 convolutions, which need no column buffer).
fn chunks(g: &ConvGeom, s: &Sizes, target: usize) -> impl Iterator<Item = Chunk> {
    let wl = g.axes[g.axes.len() - 1].out.max(1);
    let rows = window::rows(&g.axes).max(1);
    let step = if g.identity() { rows } else { (target / (g.channels * s.kp * wl).max(1)).clamp(1, rows) };
    (0..rows).step_by(step).map(move |r0| {
        let r1 = (r0 + step).min(rows);
        Chunk { r0, r1, p0: r0 * wl, pc: (r1 - r0) * wl }
    })
}

/// Per-axis tables: input index of (output o, tap t), or usize::MAX in padding.
fn tap_tables(g: &ConvGeom) -> Vec<Vec<usize>> {
    g.axes
        .iter()
        .map(|a| (0..a.out * a.k).map(|i| a.at(i / a.k, i % a.k).unwrap_or(usize::MAX)).collect())
        .collect()
}

/// Channel-first im2col (scatter == false: col <- x) or col2im (scatter ==
/// true: gx += col) of the output rows of `ch`, for the channels whose planes
/// `xs` (or `gx`) hold; col rows are (channel, tap), each `ch.pc` long.
#[inline(always)]
fn im2col_cf_block(g: &ConvGeom, s: &Sizes, ch: Chunk, xs: &[f32], col: &mut [f32], scatter: bool, gx: &mut [f32]) {
    let axes = &g.axes[..];
    let nd = axes.len();
    let last = axes[nd - 1];
    let wl = last.out;
    let in_st = window::strides(axes.iter().map(|a| a.len), nd);
    let k_st = window::strides(axes.iter().map(|a| a.k), nd);
    let planes = col.len() / (s.kp * ch.pc).max(1);
    let mut o = [0usize; MAX_AXES];
    for c in 0..planes {
        for kf in 0..s.kp {
            let crow = &mut col[(c * s.kp + kf) * ch.pc..][..ch.pc];
            let (lo, hi, st) = last.span(kf % last.k);
            for r in ch.r0..ch.r1 {
                row_index(axes, r, &mut o);
                let mut off = Some(0usize);
                for i in 0..nd - 1 {
                    let t = (kf / k_st[i]) % axes[i].k;
                    off = match (off, axes[i].at(o[i], t)) {
                        (Some(v), Some(ii)) => Some(v + ii * in_st[i]),
                        _ => None,
                    };
                }
                let seg = &mut crow[(r - ch.r0) * wl..(r - ch.r0 + 1) * wl];
                match off {
                    Some(off) if scatter => {
                        let gp = &mut gx[c * s.pin..(c + 1) * s.pin];
                        window::axpy_t(gp, off + st, last.s, 1.0, &seg[lo..hi]);
                    }
                    None if scatter => {}
                    Some(off) => {
                        let xp = &xs[c * s.pin..(c + 1) * s.pin];
                        seg[..lo].fill(0.0);
                        seg[hi..].fill(0.0);
                        if last.s == 1 {
                            seg[lo..hi].copy_from_slice(&xp[off + st..off + st + (hi - lo)]);
                        } else {
                            for (j, v) in seg[lo..hi].iter_mut().enumerate() {
                                *v = xp[off + st + j * last.s];
                            }
                        }
                    }
                    None => seg.fill(0.0),
                }
            }
        }
    }
}

/// Channel-last im2col (scatter == false) or col2im (gx += col) of one sample
/// over the output positions [p0, p0 + col.len() / (C Kp)).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn im2col_cl_block(g: &ConvGeom, s: &Sizes, tabs: &[Vec<usize>], p0: usize, x: &[f32], col: &mut [f32], scatter: bool, gx: &mut [f32]) {
    let axes = &g.axes[..];
    let nd = axes.len();
    let (c, cg, gr) = (g.channels, g.cg(), g.group);
    let in_st = window::strides(axes.iter().map(|a| a.len), nd);
    let width = c * s.kp;
    let npos = col.len() / width.max(1);
    let mut o = [0usize; MAX_AXES];
    let mut t = [0usize; MAX_AXES];
    for q in 0..npos {
        // output multi-index of position p0 + q
        let mut rem = p0 + q;
        for i in (0..nd).rev() {
            o[i] = rem % axes[i].out;
            rem /= axes[i].out;
        }
        let crow = &mut col[q * width..(q + 1) * width];
        t[..nd].fill(0);
        for kf in 0..s.kp {
            let mut pos = 0usize;
            let mut ok = true;
            for i in 0..nd {
                let ii = tabs[i][o[i] * axes[i].k + t[i]];
                if ii == usize::MAX {
                    ok = false;
                    break;
                }
                pos += ii * in_st[i];
            }
            for gi in 0..gr {
                let seg = &mut crow[gi * s.kp * cg + kf * cg..][..cg];
                if scatter {
                    if ok {
                        let dst = &mut gx[pos * c + gi * cg..][..cg];
                        for (d, &v) in dst.iter_mut().zip(seg.iter()) {
                            *d += v;
                        }
                    }
                } else if ok {
                    seg.copy_from_slice(&x[pos * c + gi * cg..][..cg]);
                } else {
                    seg.fill(0.0);
                }
            }
            // next tap (row-major)
            for i in (0..nd).rev() {
                t[i] += 1;
                if t[i] < axes[i].k {
                    break;
                }
                t[i] = 0;
            }
        }
    }
}

/// col <- im2col(x) of one sample's output block `ch`.
fn im2col(g: &ConvGeom, s: &Sizes, ch: Chunk, x: &[f32], col: &mut [f32], par: bool) {
    if g.channel_last {
        let tabs = tap_tables(g);
        let width = g.channels * s.kp;
        let f = |(Rows(cs, _), range): (Rows<&mut [f32]>, std::ops::Range<usize>)| {
            simd::dispatch(
                #[inline(always)]
                || im2col_cl_block(g, s, &tabs, range.start, x, cs, false, &mut []),
            )
        };
        if par {
            par_for((Rows(col, width), ch.p0..ch.p0 + ch.pc), width, f);
        } else {
            f((Rows(col, width), ch.p0..ch.p0 + ch.pc));
        }
    } else {
        let block = s.kp * ch.pc;
        let f = |(Rows(cs, _), range): (Rows<&mut [f32]>, std::ops::Range<usize>)| {
            let xs = &x[range.start * s.pin..range.end * s.pin];
            simd::dispatch(
                #[inline(always)]
                || im2col_cf_block(g, s, ch, xs, cs, false, &mut []),
            )
        };
        if par {
            par_for((Rows(col, block), 0..g.channels), block, f);
        } else {
            f((Rows(col, block), 0..g.channels));
        }
    }
}

/// gx += col2im(col) of one sample's output block `ch`.
fn col2im(g: &ConvGeom, s: &Sizes, ch: Chunk, col: &mut [f32], gx: &mut [f32], par: bool) {
    if g.channel_last {
        // windows of neighbouring positions overlap: one pass
        let tabs = tap_tables(g);
        simd::dispatch(
            #[inline(always)]
            || im2col_cl_block(g, s, &tabs, ch.p0, &[], col, true, gx),
        );
    } else if s.pin > 0 {
        let block = s.kp * ch.pc;
        let f = |(Rows(gs, _), Rows(cs, _)): (Rows<&mut [f32]>, Rows<&mut [f32]>)| {
            simd::dispatch(
                #[inline(always)]
                || im2col_cf_block(g, s, ch, &[], cs, true, gs),
            )
        };
        if par {
            par_for((Rows(gx, s.pin), Rows(col, block)), block, f);
        } else {
            f((Rows(gx, s.pin), Rows(col, block)));
        }
    }
}

/// Fills one sample's output (C or OC channels over P positions) with the bias.
fn fill_bias(g: &ConvGeom, out: &mut [f32], b: &[f32], channels: usize) {
    if channels == 0 {
        return;
    }
    let p = out.len() / channels;
    if g.channel_last {
        for row in out.chunks_exact_mut(channels) {
            row.copy_from_slice(&b[..channels]);
        }
    } else {
        for (c, plane) in out.chunks_exact_mut(p.max(1)).enumerate().take(channels) {
            plane.fill(b[c]);
        }
    }
}

/// The column buffer of block `ch`, grown as needed (an allocation failure is
/// an error, not an abort).
fn col_buf<'a>(g: &ConvGeom, s: &Sizes, ch: Chunk, col: &'a mut Vec<f32>) -> Result<&'a mut [f32]> {
    let n = g.channels * s.kp * ch.pc;
    if col.len() < n {
        col.try_reserve(n - col.len()).map_err(|_| Error::Invalid)?;
        col.resize(n, 0.0);
    }
    Ok(&mut col[..n])
}

/// The (rows, cols) view of group gi's block of the "input side" matrix of
/// block `ch` (x itself for 1x1 convolutions, else the column buffer): its
/// base, row stride and column stride, as (channel-taps x positions) for
/// channel-first and (positions x channel-taps) for channel-last data.
fn src_view(g: &ConvGeom, s: &Sizes, ch: Chunk, gi: usize) -> (usize, isize, isize) {
    let kk = g.cg() * s.kp;
    match (g.identity(), g.channel_last) {
        (true, false) => (gi * kk * s.pin + ch.p0, s.pin as isize, 1),
        (true, true) => (ch.p0 * g.channels + gi * kk, g.channels as isize, 1),
        (false, false) => (gi * kk * ch.pc, ch.pc as isize, 1),
        (false, true) => (gi * kk, (g.channels * s.kp) as isize, 1),
    }
}

/// Group gi's block of a y-shaped array (y or gy) over block `ch`: (base,
/// row stride, column stride) as (channels x positions) for channel-first,
/// (positions x channels) for channel-last.
fn out_view(g: &ConvGeom, s: &Sizes, ch: Chunk, gi: usize) -> (usize, isize, isize) {
    let ocg = g.ocg();
    if g.channel_last {
        (ch.p0 * g.out_channels + gi * ocg, g.out_channels as isize, 1)
    } else {
        (gi * ocg * s.pout + ch.p0, s.pout as isize, 1)
    }
}

/// One sample: y (+)= conv(x, w) [+ bias].
#[allow(clippy::too_many_arguments)]
fn forward_sample(g: &ConvGeom, s: &Sizes, x: &[f32], w: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool, col: &mut Vec<f32>, par: bool) -> Result {
    let (cg, ocg) = (g.cg(), g.ocg());
    let mut alpha = if accum { 1.0 } else { 0.0 };
    if let (false, Some(b)) = (accum, bias) {
        fill_bias(g, y, b, g.out_channels);
        alpha = 1.0;
    }
    let kk = cg * s.kp;
    for ch in chunks(g, s, if par { COL_BLOCK_THREADED } else { COL_BLOCK }) {
        let src: &[f32] = if g.identity() {
            x
        } else {
            let cb = col_buf(g, s, ch, col)?;
            im2col(g, s, ch, x, cb, par);
            cb
        };
        for gi in 0..g.group {
            let wg = MatRef { data: w, base: gi * ocg * kk, rs: kk as isize, cs: 1 };
            let (sb, srs, scs) = src_view(g, s, ch, gi);
            let sv = MatRef { data: src, base: sb, rs: srs, cs: scs };
            let (yb, yrs, ycs) = out_view(g, s, ch, gi);
            let dst = MatMut { data: &mut *y, base: yb, rs: yrs, cs: ycs };
            if g.channel_last {
                // y_g (pc x OCg) = col_g (pc x kk) @ W_g^T
                gemm::gemm_maybe_par(par, ch.pc, ocg, kk, dst, sv, MatRef { rs: 1, cs: kk as isize, ..wg }, alpha)?;
            } else {
                // y_g (OCg x pc) = W_g (OCg x kk) @ col_g (kk x pc)
                gemm::gemm_maybe_par(par, ocg, ch.pc, kk, dst, wg, sv, alpha)?;
            }
        }
    }
    Ok(())
}

/// One sample: gx (+)= conv^T(gy, w) [+ bias].
#[allow(clippy::too_many_arguments)]
fn data_sample(g: &ConvGeom, s: &Sizes, gy: &[f32], w: &[f32], gx: &mut [f32], bias: Option<&[f32]>, accum: bool, col: &mut Vec<f32>, par: bool) -> Result {
    let (cg, ocg) = (g.cg(), g.ocg());
    let kk = cg * s.kp;
    let identity = g.identity();
    let mut alpha = 1.0;
    if !accum {
        match bias {
            Some(b) => fill_bias(g, gx, b, g.channels),
            None if !identity => gx.fill(0.0),
            None => alpha = 0.0,
        }
    }
    for ch in chunks(g, s, if par { COL_BLOCK_THREADED } else { COL_BLOCK }) {
        for gi in 0..g.group {
            let wg = MatRef { data: w, base: gi * ocg * kk, rs: kk as isize, cs: 1 };
            let (yb, yrs, ycs) = out_view(g, s, ch, gi);
            let gv = MatRef { data: gy, base: yb, rs: yrs, cs: ycs };
            let (sb, srs, scs) = src_view(g, s, ch, gi);
            let (dst, a) = if identity {
                (MatMut { data: &mut *gx, base: sb, rs: srs, cs: scs }, alpha)
            } else {
                (MatMut { data: col_buf(g, s, ch, col)?, base: sb, rs: srs, cs: scs }, 0.0)
            };
            if g.channel_last {
                // col_g (pc x kk) = gy_g (pc x OCg) @ W_g (OCg x kk)
                gemm::gemm_maybe_par(par, ch.pc, kk, ocg, dst, gv, wg, a)?;
            } else {
                // col_g (kk x pc) = W_g^T (kk x OCg) @ gy_g (OCg x pc)
                gemm::gemm_maybe_par(par, kk, ch.pc, ocg, dst, MatRef { rs: 1, cs: kk as isize, ..wg }, gv, a)?;
            }
        }
        if !identity {
            col2im(g, s, ch, col_buf(g, s, ch, col)?, gx, par);
        }
    }
    Ok(())
}

/// One sample: gw = alpha gw + d conv / d w applied to gy.
#[allow(clippy::too_many_arguments)]
fn filter_sample(g: &ConvGeom, s: &Sizes, x: &[f32], gy: &[f32], gw: &mut [f32], alpha: f32, col: &mut Vec<f32>, par: bool) -> Result {
    let (cg, ocg) = (g.cg(), g.ocg());
    let kk = cg * s.kp;
    for (i, ch) in chunks(g, s, if par { COL_BLOCK_THREADED } else { COL_BLOCK }).enumerate() {
        let a = if i == 0 { alpha } else { 1.0 };
        let src: &[f32] = if g.identity() {
            x
        } else {
            let cb = col_buf(g, s, ch, col)?;
            im2col(g, s, ch, x, cb, par);
            cb
        };
        for gi in 0..g.group {
            let dst = MatMut { data: &mut *gw, base: gi * ocg * kk, rs: kk as isize, cs: 1 };
            let (sb, srs, scs) = src_view(g, s, ch, gi);
            let (yb, yrs, ycs) = out_view(g, s, ch, gi);
            if g.channel_last {
                // gw_g (OCg x kk) += gy_g^T (OCg x pc) @ col_g (pc x kk)
                let lhs = MatRef { data: gy, base: yb, rs: ycs, cs: yrs };
                gemm::gemm_maybe_par(par, ocg, kk, ch.pc, dst, lhs, MatRef { data: src, base: sb, rs: srs, cs: scs }, a)?;
            } else {
                // gw_g (OCg x kk) += gy_g (OCg x pc) @ col_g^T (pc x kk)
                let lhs = MatRef { data: gy, base: yb, rs: yrs, cs: ycs };
                gemm::gemm_maybe_par(par, ocg, kk, ch.pc, dst, lhs, MatRef { data: src, base: sb, rs: scs, cs: srs }, a)?;
            }
        }
    }
    Ok(())
}

/// Fewest multiply-adds for threads: in a training step the pool's threads
/// have gone to sleep between two layers, and waking them, with the data in
/// the other cores' caches, costs more than it saves on smaller work (a
/// few tens of microseconds of it).
const PAR_MACS: usize = 16 << 20;

/// How the batch is cut into blocks of `nb` samples: blocks run in
/// parallel (each single-threaded) or in turn (with threaded products);
/// `tabs` is set when blocks take the batched path.
struct Plan {
    nb: usize,
    parallel: bool,
    tabs: Option<Tables>,
}

impl Plan {
    fn new(g: &ConvGeom, s: &Sizes) -> Plan {
        let threads = par::num_threads();
        let (batch, per) = (g.batch, g.channels * s.kp * s.pout);
        let work = per.saturating_mul(g.ocg()).saturating_mul(batch);
        let nonempty = s.pin * g.channels > 0 && s.pout * g.out_channels > 0;
        let tabs = (nonempty && !g.channel_last && 2 * per <= COL_BLOCK).then(|| Tables::new(g, s)).flatten();
        let mut nb = if tabs.is_some() { (COL_BLOCK / per).clamp(1, batch.max(1)) } else { 1 };
        let parallel = threads > 1 && nonempty && work >= PAR_MACS && batch >= if tabs.is_some() { 2 } else { threads };
        if parallel && tabs.is_some() {
            // whole rounds of blocks, one per thread
            let blocks = batch.div_ceil(nb).next_multiple_of(threads).min(batch);
            nb = batch.div_ceil(blocks);
        }
        Plan { nb, parallel, tabs }
    }

    /// (first sample, samples) of each block.
    fn blocks(&self, batch: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..batch).step_by(self.nb).map(move |n0| (n0, self.nb.min(batch - n0)))
    }

    /// Runs `block(bufs, nb, src, dst, threaded)` over the batch's sample
    /// blocks (`sp`, `dp`: floats per sample of `src`, `dst`): blocks in
    /// parallel when the plan says so, else one after another with threaded
    /// products.
    fn over_blocks<B>(&self, batch: usize, src: &[f32], sp: usize, dst: &mut [f32], dp: usize, block: B) -> Result
    where
        B: Fn(&mut Bufs, usize, &[f32], &mut [f32], bool) -> Result + Sync,
    {
        if self.parallel {
            return par::install(usize::MAX, |_| {
                dst.par_chunks_mut(self.nb * dp)
                    .zip(src.par_chunks(self.nb * sp))
                    .try_for_each(|(db, sb)| with_bufs(|bufs| block(bufs, db.len() / dp, sb, db, false)))
            });
        }
        with_bufs(|bufs| {
            self.blocks(batch)
                .try_for_each(|(n0, nb)| block(bufs, nb, &src[n0 * sp..(n0 + nb) * sp], &mut dst[n0 * dp..(n0 + nb) * dp], true))
        })
    }
}

/// Scratch buffers of one thread.
#[derive(Default)]
struct Bufs {
    col: Vec<f32>,
    /// a y-shaped block regrouped as (OC, samples x positions)
    y: Vec<f32>,
    /// one zero-padded input plane
    pad: Vec<f32>,
}

impl Bufs {
    fn floats(&self) -> usize {
        self.col.capacity() + self.y.capacity() + self.pad.capacity()
    }
}

/// Most scratch floats a thread keeps between calls.
const KEEP: usize = 1 << 20;

thread_local! {
    /// Scratch buffers kept between calls: the page faults of fresh buffers
    /// cost as much as a small convolution.
    static SCRATCH: RefCell<Bufs> = RefCell::new(Bufs::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are in
/// use), dropped afterwards when they have grown past [`KEEP`].
fn with_bufs<R>(f: impl FnOnce(&mut Bufs) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let r = f(&mut bufs);
            if bufs.floats() > KEEP {
                *bufs = Bufs::default();
            }
            r
        }
        Err(_) => f(&mut Bufs::default()),
    })
}

/// `v` grown to at least `n` elements (an allocation failure is an error).
fn grow(v: &mut Vec<f32>, n: usize) -> Result<&mut [f32]> {
    if v.len() < n {
        v.try_reserve(n - v.len()).map_err(|_| Error::Invalid)?;
        v.resize(n, 0.0);
    }
    Ok(&mut v[..n])
}

/// Tables of the batched path, for small channel-first images: several
/// samples share one column matrix (C Kp, samples x P), so that one product
/// serves them all.  Each input plane is copied into a zero-padded plane of
/// `pp` floats, where the input of output position q under tap kf is element
/// `koff[kf] + qoff[q]`, and input row r starts at element `rows[r]`.
struct Tables {
    pp: usize,
    koff: Vec<usize>,
    qoff: Vec<u32>,
    rows: Vec<usize>,
    len: usize,
}

impl Tables {
    fn new(g: &ConvGeom, s: &Sizes) -> Option<Tables> {
        let axes = &g.axes[..];
        let nd = axes.len();
        let pp = window::product(axes, |a| a.len + 2 * a.p).ok()?;
        if pp > COL_BLOCK {
            return None;
        }
        let pst = window::strides(axes.iter().map(|a| a.len + 2 * a.p), nd);
        // offset in the padded plane of flat index i over the lengths `n` of
        // the axes, each index scaled by `f`
        let offsets = |count: usize, n: &dyn Fn(&Axis) -> usize, f: &dyn Fn(&Axis) -> usize| -> Vec<usize> {
            let st = window::strides(axes.iter().map(n), nd);
            (0..count).map(|i| axes.iter().enumerate().map(|(j, a)| (i / st[j]) % n(a) * f(a) * pst[j]).sum()).collect()
        };
        // every tap lies in the padded input (the output length guarantees it)
        let koff = offsets(s.kp, &|a| a.k, &|a| a.d);
        let qoff = offsets(s.pout, &|a| a.out, &|a| a.s).into_iter().map(|v| v as u32).collect();
        let len = axes[nd - 1].len;
        let ist = window::strides(axes.iter().map(|a| a.len), nd);
        let rows = (0..s.pin / len)
            .map(|r| axes.iter().enumerate().map(|(j, a)| ((r * len / ist[j]) % a.len + a.p) * pst[j]).sum())
            .collect();
        Some(Tables { pp, koff, qoff, rows, len })
    }

    #[inline(always)]
    /// col (C Kp rows of `ld`, this sample's columns from `q0`) <- im2col of
    /// one sample's planes `x` (C of P_in).
    fn im2col(&self, s: &Sizes, x: &[f32], pad: &mut [f32], col: &mut [f32], ld: usize, q0: usize) {
        let pad = &mut pad[..self.pp];
        for (c, xp) in x.chunks_exact(s.pin).enumerate() {
            for (&off, xr) in self.rows.iter().zip(xp.chunks_exact(self.len)) {
                pad[off..off + self.len].copy_from_slice(xr);
            }
            for (kf, &ko) in self.koff.iter().enumerate() {
                let crow = &mut col[(c * s.kp + kf) * ld + q0..][..s.pout];
                let src = &pad[ko..];
                for (d, &j) in crow.iter_mut().zip(&self.qoff) {
                    *d = src[(j as usize).min(src.len() - 1)];
                }
            }
        }
    }

    #[inline(always)]
    /// gx (one sample's C planes) += col2im of its columns from `q0`.
    fn col2im(&self, s: &Sizes, col: &[f32], pad: &mut [f32], gx: &mut [f32], ld: usize, q0: usize) {
        let pad = &mut pad[..self.pp];
        for (c, gp) in gx.chunks_exact_mut(s.pin).enumerate() {
            pad.fill(0.0);
            for (kf, &ko) in self.koff.iter().enumerate() {
                let crow = &col[(c * s.kp + kf) * ld + q0..][..s.pout];
                let dst = &mut pad[ko..];
                let last = dst.len() - 1;
                for (&v, &j) in crow.iter().zip(&self.qoff) {
                    dst[(j as usize).min(last)] += v;
                }
            }
            for (&off, gr) in self.rows.iter().zip(gp.chunks_exact_mut(self.len)) {
                for (u, &v) in gr.iter_mut().zip(&pad[off..off + self.len]) {
                    *u += v;
                }
            }
        }
    }
}

/// b (rows, nb p) <- the `nb` (rows, p) matrices of `a`, side by side.
fn regroup(nb: usize, rows: usize, p: usize, a: &[f32], b: &mut [f32]) {
    for i in 0..nb {
        for r in 0..rows {
            b[(r * nb + i) * p..][..p].copy_from_slice(&a[(i * rows + r) * p..][..p]);
        }
    }
}

/// The inverse of [`regroup`]: a = b, or a += b when `add`.
fn ungroup(nb: usize, rows: usize, p: usize, b: &[f32], a: &mut [f32], add: bool) {
    for i in 0..nb {
        for r in 0..rows {
            let (sa, sb) = (&mut a[(i * rows + r) * p..][..p], &b[(r * nb + i) * p..][..p]);
            if add {
                sa.iter_mut().zip(sb).for_each(|(u, &v)| *u += v);
            } else {
                sa.copy_from_slice(sb);
            }
        }
    }
}

/// col <- im2col of the `nb` samples of `x`, side by side.
fn im2col_batched(t: &Tables, g: &ConvGeom, s: &Sizes, nb: usize, x: &[f32], bufs: &mut Bufs) -> Result {
    let ld = nb * s.pout;
    let pad = grow(&mut bufs.pad, t.pp)?;
    pad.fill(0.0);
    let col = grow(&mut bufs.col, g.channels * s.kp * ld)?;
    simd::dispatch(
        #[inline(always)]
        || {
            for (i, xn) in x.chunks_exact(g.channels * s.pin).take(nb).enumerate() {
                t.im2col(s, xn, pad, col, ld, i * s.pout);
            }
        },
    );
    Ok(())
}

/// Batched path, `nb` samples: y (+)= conv(x, w) [+ bias].
#[allow(clippy::too_many_arguments)]
fn forward_batched(g: &ConvGeom, s: &Sizes, t: &Tables, nb: usize, x: &[f32], w: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool, bufs: &mut Bufs) -> Result {
    let (ocg, kk, ld) = (g.ocg(), g.cg() * s.kp, nb * s.pout);
    im2col_batched(t, g, s, nb, x, bufs)?;
    let yb = grow(&mut bufs.y, g.out_channels * ld)?;
    let alpha = match (accum, bias) {
        (false, Some(b)) => {
            for (row, &v) in yb.chunks_exact_mut(ld).zip(b) {
                row.fill(v);
            }
            1.0
        }
        _ => 0.0,
    };
    for gi in 0..g.group {
        let wg = MatRef { data: w, base: gi * ocg * kk, rs: kk as isize, cs: 1 };
        let cv = MatRef { data: &bufs.col, base: gi * kk * ld, rs: ld as isize, cs: 1 };
        let dst = MatMut { data: &mut *yb, base: gi * ocg * ld, rs: ld as isize, cs: 1 };
        gemm::gemm_serial(ocg, ld, kk, dst, wg, cv, alpha, 1.0)?;
    }
    ungroup(nb, g.out_channels, s.pout, yb, y, accum);
    Ok(())
}

/// Batched path, `nb` samples: gx (+)= conv^T(gy, w) [+ bias].
#[allow(clippy::too_many_arguments)]
fn data_batched(g: &ConvGeom, s: &Sizes, t: &Tables, nb: usize, gy: &[f32], w: &[f32], gx: &mut [f32], bias: Option<&[f32]>, accum: bool, bufs: &mut Bufs) -> Result {
    let (ocg, kk, ld) = (g.ocg(), g.cg() * s.kp, nb * s.pout);
    let yb = grow(&mut bufs.y, g.out_channels * ld)?;
    regroup(nb, g.out_channels, s.pout, gy, yb);
    let col = grow(&mut bufs.col, g.channels * s.kp * ld)?;
    for gi in 0..g.group {
        let wt = MatRef { data: w, base: gi * ocg * kk, rs: 1, cs: kk as isize };
        let gv = MatRef { data: &bufs.y, base: gi * ocg * ld, rs: ld as isize, cs: 1 };
        let dst = MatMut { data: &mut *col, base: gi * kk * ld, rs: ld as isize, cs: 1 };
        gemm::gemm_serial(kk, ld, ocg, dst, wt, gv, 0.0, 1.0)?;
    }
    let xs = g.channels * s.pin;
    if !accum {
        for gxn in gx.chunks_exact_mut(xs).take(nb) {
            match bias {
                Some(b) => fill_bias(g, gxn, b, g.channels),
                None => gxn.fill(0.0),
            }
        }
    }
    let pad = grow(&mut bufs.pad, t.pp)?;
    simd::dispatch(
        #[inline(always)]
        || {
            for (i, gxn) in gx.chunks_exact_mut(xs).take(nb).enumerate() {
                t.col2im(s, col, pad, gxn, ld, i * s.pout);
            }
        },
    );
    Ok(())
}

/// Batched path, `nb` samples: gw = alpha gw + d conv / d w applied to gy.
#[allow(clippy::too_many_arguments)]
fn filter_batched(g: &ConvGeom, s: &Sizes, t: &Tables, nb: usize, x: &[f32], gy: &[f32], gw: &mut [f32], alpha: f32, bufs: &mut Bufs) -> Result {
    let (ocg, kk, ld) = (g.ocg(), g.cg() * s.kp, nb * s.pout);
    im2col_batched(t, g, s, nb, x, bufs)?;
    let yb = grow(&mut bufs.y, g.out_channels * ld)?;
    regroup(nb, g.out_channels, s.pout, gy, yb);
    for gi in 0..g.group {
        let dst = MatMut { data: &mut *gw, base: gi * ocg * kk, rs: kk as isize, cs: 1 };
        let gv = MatRef { data: &bufs.y, base: gi * ocg * ld, rs: ld as isize, cs: 1 };
        let ct = MatRef { data: &bufs.col, base: gi * kk * ld, rs: 1, cs: ld as isize };
        gemm::gemm_serial(ocg, kk, ld, dst, gv, ct, alpha, 1.0)?;
    }
    Ok(())
}

fn forward(g: &ConvGeom, s: &Sizes, x: &[f32], w: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let p = Plan::new(g, s);
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    let block = |bufs: &mut Bufs, nb: usize, x: &[f32], y: &mut [f32], par: bool| match &p.tabs {
        Some(t) => forward_batched(g, s, t, nb, x, w, y, bias, accum, bufs),
        None => forward_sample(g, s, x, w, y, bias, accum, &mut bufs.col, par),
    };
    p.over_blocks(g.batch, x, xs, y, ys, block)
}

fn backward_data(g: &ConvGeom, s: &Sizes, gy: &[f32], w: &[f32], gx: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let p = Plan::new(g, s);
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    let block = |bufs: &mut Bufs, nb: usize, gy: &[f32], gx: &mut [f32], par: bool| match &p.tabs {
        Some(t) => data_batched(g, s, t, nb, gy, w, gx, bias, accum, bufs),
        None => data_sample(g, s, gy, w, gx, bias, accum, &mut bufs.col, par),
    };
    p.over_blocks(g.batch, gy, ys, gx, xs, block)
}

fn backward_filter(g: &ConvGeom, s: &Sizes, x: &[f32], gy: &[f32], gw: &mut [f32], accum: bool) -> Result {
    let p = Plan::new(g, s);
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    let block = |bufs: &mut Bufs, (n0, nb): (usize, usize), gw: &mut [f32], alpha: f32, par: bool| {
        let (x, gy) = (&x[n0 * xs..(n0 + nb) * xs], &gy[n0 * ys..(n0 + nb) * ys]);
        match &p.tabs {
            Some(t) => filter_batched(g, s, t, nb, x, gy, gw, alpha, bufs),
            None => filter_sample(g, s, x, gy, gw, alpha, &mut bufs.col, par),
        }
    };
    if p.parallel {
        // partial sums per task, then added up
        let wn = gw.len();
        let blocks: Vec<(usize, usize)> = p.blocks(g.batch).collect();
        let total = par::install(usize::MAX, |_| {
            blocks
                .into_par_iter()
                .try_fold(
                    || vec![0.0f32; wn],
                    |mut acc, b| {
                        with_bufs(|bufs| block(bufs, b, &mut acc, 1.0, false))?;
                        Ok::<_, Error>(acc)
                    },
                )
                .try_reduce_with(|mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                    Ok(a)
                })
        });
        match total.transpose()? {
            Some(t) => {
                for (v, &u) in gw.iter_mut().zip(&t) {
                    *v = if accum { *v + u } else { u };
                }
            }
            None if !accum => gw.fill(0.0),
            None => {}
        }
        return Ok(());
    }
    if g.batch == 0 && !accum {
        gw.fill(0.0);
    }
    with_bufs(|bufs| {
        p.blocks(g.batch)
            .enumerate()
            .try_for_each(|(i, b)| block(bufs, b, gw, if accum || i > 0 { 1.0 } else { 0.0 }, true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testdata::data;

    /// Direct convolution y[n, oc, o] = sum over the group's channels and the
    /// taps of w x, with its gradients for the output gradient gy:
    /// returns (y without bias, gx, gw).
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32], gy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let s = g.sizes().unwrap();
        let nd = g.axes.len();
        let (c, oc, cg, ocg) = (g.channels, g.out_channels, g.cg(), g.ocg());
        let (mut y, mut gx, mut gw) = (vec![0.0f64; s.y], vec![0.0f64; s.x], vec![0.0f64; s.w]);
        let idx = |flat: usize, lens: &dyn Fn(usize) -> usize| {
            let mut v = vec![0; nd];
            let mut r = flat;
            for i in (0..nd).rev() {
                v[i] = r % lens(i);
                r /= lens(i);
            }
            v
        };
        for n in 0..g.batch {
            for o in 0..oc {
                let gi = o / ocg;
                for q in 0..s.pout {
                    let ov = idx(q, &|i| g.axes[i].out);
                    let yi = if g.channel_last { (n * s.pout + q) * oc + o } else { (n * oc + o) * s.pout + q };
                    for ci in 0..cg {
                        let ch = gi * cg + ci;
                        for kf in 0..s.kp {
                            let tv = idx(kf, &|i| g.axes[i].k);
                            let mut pos = 0;
                            let mut ok = true;
                            for i in 0..nd {
                                match g.axes[i].at(ov[i], tv[i]) {
                                    Some(ii) => pos = pos * g.axes[i].len + ii,
                                    None => ok = false,
                                }
                            }
                            if !ok {
                                continue;
                            }
                            let (xi, wi) = if g.channel_last {
                                ((n * s.pin + pos) * c + ch, (o * s.kp + kf) * cg + ci)
                            } else {
                                ((n * c + ch) * s.pin + pos, (o * cg + ci) * s.kp + kf)
                            };
                            y[yi] += x[xi] as f64 * w[wi] as f64;
                            gx[xi] += gy[yi] as f64 * w[wi] as f64;
                            gw[wi] += gy[yi] as f64 * x[xi] as f64;
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
        (f(y), f(gx), f(gw))
    }

    fn geom(batch: usize, c: usize, oc: usize, group: usize, cl: bool, spec: &[(usize, usize, usize, usize, usize)]) -> ConvGeom {
        let mut v = vec![batch, c, oc, group, spec.len(), cl as usize];
        for &(len, k, p, s, d) in spec {
            v.extend([len, Axis::conv_out(len, k, s, p, d).unwrap(), k, p, s, d]);
        }
        ConvGeom::from_slice(&v).unwrap()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{what}[{i}]: {u} vs {v}");
        }
    }

    #[test]
    fn all_ops_match_naive() {
        let cases = [
            geom(2, 4, 6, 2, false, &[(7, 3, 1, 2, 1), (6, 2, 0, 1, 2)]),
            geom(2, 4, 6, 2, true, &[(7, 3, 1, 2, 1), (6, 2, 0, 1, 2)]),
            geom(3, 3, 2, 1, false, &[(9, 3, 2, 1, 2)]),
            geom(1, 2, 4, 1, true, &[(4, 2, 1, 1, 1), (3, 1, 0, 1, 1), (5, 3, 1, 2, 1)]),
            geom(2, 6, 4, 1, false, &[(5, 1, 0, 1, 1), (4, 1, 0, 1, 1)]), // identity
            geom(2, 6, 4, 2, true, &[(5, 1, 0, 1, 1)]),                   // identity, cl
            geom(2, 3, 6, 3, false, &[(6, 3, 1, 1, 1), (5, 3, 1, 2, 1)]), // depthwise m=2
            geom(4, 3, 3, 3, false, &[(8, 3, 2, 2, 2)]),                  // depthwise
            geom(5, 8, 8, 1, false, &[(8, 3, 1, 1, 1), (8, 3, 1, 1, 1)]), // by sample
            // by sample, several column blocks per sample
            geom(2, 16, 16, 1, false, &[(24, 3, 1, 1, 1), (24, 3, 1, 1, 1)]),
            geom(2, 16, 8, 2, true, &[(24, 3, 1, 1, 1), (23, 3, 0, 2, 1)]),
            // batched path: one input channel, odd batch, blocks in parallel, 3-D
            geom(7, 1, 5, 1, false, &[(8, 5, 2, 1, 1), (8, 5, 2, 1, 1)]),
            geom(64, 32, 32, 1, false, &[(8, 3, 1, 1, 1), (8, 3, 1, 1, 1)]),
            geom(3, 4, 6, 2, false, &[(3, 2, 1, 1, 1), (4, 3, 1, 2, 1), (5, 1, 0, 1, 1)]),
        ];
        for g in &cases {
            let s = g.sizes().unwrap();
            let x = data(s.x, 1);
            let w = data(s.w, 2);
            let b = data(g.out_channels.max(g.channels), 3);
            let gy = data(s.y, 4);
            let (yv, want_gx, want_gw) = naive(g, &x, &w, &gy);
            let pin = s.pin;
            let chan_of = |i: usize, p: usize, n: usize| if g.channel_last { i % n } else { (i / p) % n };
            // forward, with and without bias, overwrite and accumulate
            let want: Vec<f32> = (0..s.y).map(|i| yv[i] + b[chan_of(i, s.pout, g.out_channels)]).collect();
            let mut y = vec![f32::NAN; s.y];
            run(FORWARD, g, &x, &w, &mut y, Some(&b), false).unwrap();
            close(&y, &want, "forward");
            let mut y2 = vec![1.0; s.y];
            run(FORWARD, g, &x, &w, &mut y2, None, true).unwrap();
            close(&y2, &yv.iter().map(|v| v + 1.0).collect::<Vec<_>>(), "forward accum");
            // input gradient
            let mut gx = vec![f32::NAN; s.x];
            run(DATA, g, &gy, &w, &mut gx, None, false).unwrap();
            close(&gx, &want_gx, "data");
            let mut gxb = vec![2.0f32; s.x];
            run(DATA, g, &gy, &w, &mut gxb, Some(&b), true).unwrap();
            close(&gxb, &want_gx.iter().map(|v| v + 2.0).collect::<Vec<_>>(), "data accum");
            let mut gxc = vec![f32::NAN; s.x];
            run(DATA, g, &gy, &w, &mut gxc, Some(&b), false).unwrap();
            let with_b: Vec<f32> = (0..s.x).map(|i| want_gx[i] + b[chan_of(i, pin, g.channels)]).collect();
            close(&gxc, &with_b, "data bias");
            // filter gradient
            let mut gw = vec![f32::NAN; s.w];
            run(FILTER, g, &x, &gy, &mut gw, None, false).unwrap();
            close(&gw, &want_gw, "filter");
            let mut gw2 = vec![0.5f32; s.w];
            run(FILTER, g, &x, &gy, &mut gw2, None, true).unwrap();
            close(&gw2, &want_gw.iter().map(|v| v + 0.5).collect::<Vec<_>>(), "filter accum");
        }
    }

    #[test]
    fn rejects_bad_geometry_and_sizes() {
        // output length disagreeing with the formula
        assert!(ConvGeom::from_slice(&[1, 2, 2, 1, 1, 0, 5, 4, 3, 0, 1, 1]).is_err());
        // channels not divisible by group
        assert!(ConvGeom::from_slice(&[1, 3, 2, 2, 1, 0, 5, 3, 3, 0, 1, 1]).is_err());
        // stride 0
        assert!(ConvGeom::from_slice(&[1, 2, 2, 1, 1, 0, 5, 3, 3, 0, 0, 1]).is_err());
        let g = ConvGeom::from_slice(&[1, 2, 2, 1, 1, 0, 5, 3, 3, 0, 1, 1]).unwrap();
        let mut y = vec![0.0; 6];
        assert!(run(FORWARD, &g, &[0.0; 10], &[0.0; 11], &mut y, None, false).is_err());
        assert!(run(FORWARD, &g, &[0.0; 10], &[0.0; 12], &mut y, Some(&[0.0]), false).is_err());
        assert!(run(FILTER, &g, &[0.0; 10], &[0.0; 6], &mut [0.0; 12], Some(&[0.0; 2]), false).is_err());
        assert!(run(7, &g, &[0.0; 10], &[0.0; 12], &mut y, None, false).is_err());
        assert!(run(FORWARD, &g, &[0.0; 10], &[0.0; 12], &mut y, None, false).is_ok());
    }
}
