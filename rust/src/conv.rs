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
//! Threads: when the batch has at least as many samples as there are
//! threads, samples run in parallel, each with its own column buffer and
//! single-threaded products (weight gradients are summed per thread, then
//! added up); otherwise samples run in turn with threaded products.

use crate::gemm::{self, MatMut, MatRef};
use crate::par::{self, par_for, Rows, MIN_PAR_WORK};
use crate::window::{self, row_index, Axis, MAX_AXES};
use crate::{depthwise, simd, Error, Result};
use rayon::prelude::*;

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
        self.cg() == 1 && !self.channel_last
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
    match op {
        FORWARD => forward(g, &s, a, b, out, bias, accum),
        DATA => backward_data(g, &s, a, b, out, bias, accum),
        _ => backward_filter(g, &s, a, b, out, accum),
    }
}

/// Whether samples run in parallel (each single-threaded).
fn by_sample(g: &ConvGeom, s: &Sizes) -> bool {
    let threads = par::num_threads();
    let per = s.pout.saturating_mul(s.kp).saturating_mul(g.channels).saturating_mul(g.ocg().max(1));
    threads > 1
        && g.batch >= threads
        && per.saturating_mul(g.batch) >= 4 * MIN_PAR_WORK
        && s.pin * g.channels > 0
        && s.pout * g.out_channels > 0
}

#[allow(clippy::too_many_arguments)]
fn mm(par: bool, m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, alpha: f32) -> Result {
    if par {
        gemm::gemm(m, n, k, dst, lhs, rhs, alpha, 1.0)
    } else {
        gemm::gemm_serial(m, n, k, dst, lhs, rhs, alpha, 1.0)
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
                mm(par, ch.pc, ocg, kk, dst, sv, MatRef { rs: 1, cs: kk as isize, ..wg }, alpha)?;
            } else {
                // y_g (OCg x pc) = W_g (OCg x kk) @ col_g (kk x pc)
                mm(par, ocg, ch.pc, kk, dst, wg, sv, alpha)?;
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
                mm(par, ch.pc, kk, ocg, dst, gv, wg, a)?;
            } else {
                // col_g (kk x pc) = W_g^T (kk x OCg) @ gy_g (OCg x pc)
                mm(par, kk, ch.pc, ocg, dst, MatRef { rs: 1, cs: kk as isize, ..wg }, gv, a)?;
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
                mm(par, ocg, kk, ch.pc, dst, lhs, MatRef { data: src, base: sb, rs: srs, cs: scs }, a)?;
            } else {
                // gw_g (OCg x kk) += gy_g (OCg x pc) @ col_g^T (pc x kk)
                let lhs = MatRef { data: gy, base: yb, rs: yrs, cs: ycs };
                mm(par, ocg, kk, ch.pc, dst, lhs, MatRef { data: src, base: sb, rs: scs, cs: srs }, a)?;
            }
        }
    }
    Ok(())
}

fn forward(g: &ConvGeom, s: &Sizes, x: &[f32], w: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    if by_sample(g, s) {
        return par::install(usize::MAX, |_| {
            y.par_chunks_mut(ys)
                .zip(x.par_chunks(xs))
                .try_for_each_init(Vec::new, |col, (yn, xn)| forward_sample(g, s, xn, w, yn, bias, accum, col, false))
        });
    }
    let mut col = Vec::new();
    for n in 0..g.batch {
        forward_sample(g, s, &x[n * xs..(n + 1) * xs], w, &mut y[n * ys..(n + 1) * ys], bias, accum, &mut col, true)?;
    }
    Ok(())
}

fn backward_data(g: &ConvGeom, s: &Sizes, gy: &[f32], w: &[f32], gx: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    if by_sample(g, s) {
        return par::install(usize::MAX, |_| {
            gx.par_chunks_mut(xs)
                .zip(gy.par_chunks(ys))
                .try_for_each_init(Vec::new, |col, (gxn, gyn)| data_sample(g, s, gyn, w, gxn, bias, accum, col, false))
        });
    }
    let mut col = Vec::new();
    for n in 0..g.batch {
        data_sample(g, s, &gy[n * ys..(n + 1) * ys], w, &mut gx[n * xs..(n + 1) * xs], bias, accum, &mut col, true)?;
    }
    Ok(())
}

fn backward_filter(g: &ConvGeom, s: &Sizes, x: &[f32], gy: &[f32], gw: &mut [f32], accum: bool) -> Result {
    let (xs, ys) = (g.channels * s.pin, g.out_channels * s.pout);
    if by_sample(g, s) {
        let wn = gw.len();
        let total = par::install(usize::MAX, |_| {
            (0..g.batch)
                .into_par_iter()
                .try_fold(
                    || (Vec::new(), vec![0.0f32; wn]),
                    |(mut col, mut acc), n| {
                        filter_sample(g, s, &x[n * xs..(n + 1) * xs], &gy[n * ys..(n + 1) * ys], &mut acc, 1.0, &mut col, false)?;
                        Ok::<_, Error>((col, acc))
                    },
                )
                .map(|r| r.map(|(_, acc)| acc))
                .try_reduce_with(|mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                    Ok(a)
                })
        });
        let total = total.transpose()?;
        match total {
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
    let mut col = Vec::new();
    for n in 0..g.batch {
        let alpha = if accum || n > 0 { 1.0 } else { 0.0 };
        filter_sample(g, s, &x[n * xs..(n + 1) * xs], &gy[n * ys..(n + 1) * ys], gw, alpha, &mut col, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

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
