//! Lean kernels for small inference layers (a batch of one, tiny images):
//! direct 2-D convolution with bias and an optional ReLU, 2-D max pooling
//! without padding, and a dense layer (x W + b, optional ReLU).
//!
//! They run on one thread, allocate nothing (the convolution pads its input
//! into a scratch buffer the caller provides) and take everything the
//! general kernels work out per call (geometry, packed weights) from the
//! caller, who computes it once.  The results equal the general kernels' up
//! to the order of the sums.

use crate::simd;
use pulp::{Simd, WithSimd};
use crate::{Error, Result};

/// Output channels per weight block of the packed convolution weights.
pub const OC_BLOCK: usize = 16;

/// Geometry of a direct convolution: input (c, h, w), output (oc, oh, ow),
/// kernel (kh, kw), padding (ph, pw), stride (sh, sw); no dilation, one group.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub ph: usize,
    pub pw: usize,
    pub sh: usize,
    pub sw: usize,
}

impl ConvDims {
    /// From [batch, c, h, w, oc, oh, ow, kh, kw, ph, pw, sh, sw].
    pub fn from_slice(g: &[usize]) -> Result<Self> {
        if g.len() != 13 {
            return Err(Error::Invalid);
        }
        let d = ConvDims {
            batch: g[0], c: g[1], h: g[2], w: g[3], oc: g[4], oh: g[5], ow: g[6],
            kh: g[7], kw: g[8], ph: g[9], pw: g[10], sh: g[11], sw: g[12],
        };
        let fits = |n: usize, o: usize, k: usize, p: usize, s: usize| {
            s >= 1 && k >= 1 && o >= 1 && n + 2 * p >= k && (n + 2 * p - k) / s + 1 == o
        };
        let small = [d.c, d.h, d.w, d.oc, d.kh, d.kw, d.ph, d.pw, d.sh, d.sw]
            .iter()
            .all(|&v| v < 1 << 16);
        if !small || d.c == 0 || d.oc == 0 || !fits(d.h, d.oh, d.kh, d.ph, d.sh) || !fits(d.w, d.ow, d.kw, d.pw, d.sw) {
            return Err(Error::Invalid);
        }
        Ok(d)
    }

    /// Output channels rounded up to whole weight blocks.
    pub fn oc_padded(&self) -> usize {
        self.oc.div_ceil(OC_BLOCK) * OC_BLOCK
    }

    /// Floats of packed weights: (c, kh, kw, oc padded).
    pub fn packed_len(&self) -> usize {
        self.c * self.kh * self.kw * self.oc_padded()
    }

    /// Floats of scratch: one zero-padded input image.
    pub fn scratch_len(&self) -> usize {
        self.c * (self.h + 2 * self.ph) * (self.w + 2 * self.pw)
    }

    pub fn x_len(&self) -> usize {
        self.batch * self.c * self.h * self.w
    }

    pub fn y_len(&self) -> usize {
        self.batch * self.oc * self.oh * self.ow
    }
}

/// Packs weights (oc, c, kh, kw) as (c, kh, kw, oc padded with zeros).
pub fn pack_conv_weight(d: &ConvDims, w: &[f32], out: &mut [f32]) -> Result {
    let (taps, ocp) = (d.c * d.kh * d.kw, d.oc_padded());
    if w.len() < d.oc * taps || out.len() < taps * ocp {
        return Err(Error::Invalid);
    }
    for t in 0..taps {
        for o in 0..ocp {
            out[t * ocp + o] = if o < d.oc { w[o * taps + t] } else { 0.0 };
        }
    }
    Ok(())
}

/// R output positions of one row (input offsets `xo`, stride `sw` apart) by
/// NV vectors of output channels from `o0`, summed over all taps, then
/// stored with the bias added.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv_block<S: Simd, const R: usize, const NV: usize>(
    simd: S,
    d: &ConvDims,
    xp: &[f32],
    xo: usize,
    wp: &[f32],
    o0: usize,
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
    q0: usize,
) {
    let (hp, wpad, ocp) = (d.h + 2 * d.ph, d.w + 2 * d.pw, d.oc_padded());
    let lanes = S::F32_LANES;
    let span = (R - 1) * d.sw + d.kw;
    let mut acc = [[simd.splat_f32s(0.0); NV]; R];
    for c in 0..d.c {
        for i in 0..d.kh {
            let row = xo + (c * hp + i) * wpad;
            let xr = &xp[row..row + span];
            let wrow = &wp[((c * d.kh + i) * d.kw) * ocp + o0..];
            for j in 0..d.kw {
                let (wv, _) = S::as_simd_f32s(&wrow[j * ocp..j * ocp + NV * lanes]);
                let wv: &[S::f32s; NV] = wv.try_into().unwrap();
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = simd.splat_f32s(xr[r * d.sw + j]);
                    for v in 0..NV {
                        a[v] = simd.mul_add_e_f32s(xv, wv[v], a[v]);
                    }
                }
            }
        }
    }
    let pos = d.oh * d.ow;
    let mut tmp = [[0.0f32; 64]; R];
    for (tr, a) in tmp.iter_mut().zip(&acc) {
        for v in 0..NV {
            simd.partial_store_f32s(&mut tr[v * lanes..(v + 1) * lanes], a[v]);
        }
    }
    let n = (NV * lanes).min(d.oc.saturating_sub(o0));
    for t in 0..n {
        let b = if bias.is_empty() { 0.0 } else { bias[o0 + t] };
        let dst: &mut [f32; R] = (&mut y[(o0 + t) * pos + q0..][..R]).try_into().unwrap();
        for r in 0..R {
            let v = tmp[r][t] + b;
            dst[r] = if relu && !(v > 0.0) { 0.0 } else { v };
        }
    }
}

/// Output channels per block: 32 where they divide evenly and rows are short
/// (more independent sums per tap), else [`OC_BLOCK`].
fn block_width(d: &ConvDims) -> usize {
    if d.oc_padded() % 32 == 0 && d.ow < 8 {
        32
    } else {
        OC_BLOCK
    }
}

#[inline(always)]
fn conv_image_with<S: Simd, const NV: usize>(simd: S, d: &ConvDims, xp: &[f32], wp: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let width = NV * S::F32_LANES;
    let ocp = d.oc_padded();
    for oy in 0..d.oh {
        let mut ox = 0;
        while ox < d.ow {
            let left = d.ow - ox;
            let xo = oy * d.sh * (d.w + 2 * d.pw) + ox * d.sw;
            let q0 = oy * d.ow + ox;
            let step = if left >= 8 && width <= 16 {
                8
            } else if left >= 4 {
                4
            } else {
                1
            };
            let mut o0 = 0;
            while o0 < ocp {
                match step {
                    8 => conv_block::<S, 8, NV>(simd, d, xp, xo, wp, o0, bias, relu, y, q0),
                    4 => conv_block::<S, 4, NV>(simd, d, xp, xo, wp, o0, bias, relu, y, q0),
                    _ => conv_block::<S, 1, NV>(simd, d, xp, xo, wp, o0, bias, relu, y, q0),
                }
                o0 += width;
            }
            ox += step;
        }
    }
}

/// The same sums one output at a time (instruction sets other than AVX2
/// and AVX-512).
fn conv_image_plain(d: &ConvDims, xp: &[f32], wp: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let (hp, wpad, ocp) = (d.h + 2 * d.ph, d.w + 2 * d.pw, d.oc_padded());
    let pos = d.oh * d.ow;
    for o in 0..d.oc {
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let mut s = 0.0f32;
                for c in 0..d.c {
                    for i in 0..d.kh {
                        for j in 0..d.kw {
                            s += xp[(c * hp + oy * d.sh + i) * wpad + ox * d.sw + j] * wp[((c * d.kh + i) * d.kw + j) * ocp + o];
                        }
                    }
                }
                let v = s + if bias.is_empty() { 0.0 } else { bias[o] };
                y[o * pos + oy * d.ow + ox] = if relu && !(v > 0.0) { 0.0 } else { v };
            }
        }
    }
}

struct ConvImage<'a> {
    d: &'a ConvDims,
    xp: &'a [f32],
    wp: &'a [f32],
    bias: &'a [f32],
    relu: bool,
    y: &'a mut [f32],
}

impl WithSimd for ConvImage<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let ConvImage { d, xp, wp, bias, relu, y } = self;
        match (block_width(d), S::F32_LANES) {
            (16, 16) => conv_image_with::<S, 1>(simd, d, xp, wp, bias, relu, y),
            (32, 16) | (16, 8) => conv_image_with::<S, 2>(simd, d, xp, wp, bias, relu, y),
            (32, 8) => conv_image_with::<S, 4>(simd, d, xp, wp, bias, relu, y),
            _ => conv_image_plain(d, xp, wp, bias, relu, y),
        }
    }
}

/// y = conv(x, w) + bias, then max(., 0) where `relu`; `wp` packed by
/// [`pack_conv_weight`], `bias` empty or oc long, `scratch` of
/// [`ConvDims::scratch_len`] floats.
pub fn conv2d(d: &ConvDims, x: &[f32], wp: &[f32], bias: &[f32], relu: bool, scratch: &mut [f32], y: &mut [f32]) -> Result {
    if x.len() < d.x_len() || wp.len() < d.packed_len() || y.len() < d.y_len()
        || scratch.len() < d.scratch_len() || !(bias.is_empty() || bias.len() >= d.oc)
    {
        return Err(Error::Invalid);
    }
    let (hp, wpad) = (d.h + 2 * d.ph, d.w + 2 * d.pw);
    let (xn, yn) = (d.c * d.h * d.w, d.oc * d.oh * d.ow);
    let scratch = &mut scratch[..d.scratch_len()];
    {
        {
            for n in 0..d.batch {
                let xi = &x[n * xn..][..xn];
                let xp: &[f32] = if d.ph == 0 && d.pw == 0 {
                    xi
                } else {
                    scratch.fill(0.0);
                    for c in 0..d.c {
                        for i in 0..d.h {
                            let dst = (c * hp + i + d.ph) * wpad + d.pw;
                            scratch[dst..dst + d.w].copy_from_slice(&xi[(c * d.h + i) * d.w..][..d.w]);
                        }
                    }
                    &scratch[..]
                };
                let y = &mut y[n * yn..][..yn];
                simd::arch().dispatch(ConvImage { d, xp, wp, bias, relu, y });
            }
        }
    }
    Ok(())
}

/// Geometry of max pooling without padding, every window inside the input:
/// `planes` planes of (h, w) to (oh, ow), kernel (kh, kw), stride (sh, sw).
#[derive(Clone, Copy, Debug)]
pub struct PoolDims {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
}

impl PoolDims {
    /// From [planes, h, w, oh, ow, kh, kw, sh, sw].
    pub fn from_slice(g: &[usize]) -> Result<Self> {
        if g.len() != 9 {
            return Err(Error::Invalid);
        }
        let d = PoolDims { planes: g[0], h: g[1], w: g[2], oh: g[3], ow: g[4], kh: g[5], kw: g[6], sh: g[7], sw: g[8] };
        let inside = |n: usize, o: usize, k: usize, s: usize| {
            k >= 1 && s >= 1 && (o == 0 || (o - 1).checked_mul(s).and_then(|v| v.checked_add(k)).is_some_and(|e| e <= n))
        };
        if !inside(d.h, d.oh, d.kh, d.sh) || !inside(d.w, d.ow, d.kw, d.sw) {
            return Err(Error::Invalid);
        }
        d.planes.checked_mul(d.h * d.w).ok_or(Error::Invalid)?;
        Ok(d)
    }
}

/// y = max over each window of x (the largest in row-major order wins, NaN
/// only where it comes first, as in [`crate::pool`]).
pub fn max_pool2d(d: &PoolDims, x: &[f32], y: &mut [f32]) -> Result {
    let (pin, pout) = (d.h * d.w, d.oh * d.ow);
    if x.len() < d.planes * pin || y.len() < d.planes * pout {
        return Err(Error::Invalid);
    }
    let max = |m: f32, u: f32| if u > m { u } else { m };
    for p in 0..d.planes {
        let xp = &x[p * pin..][..pin];
        let yp = &mut y[p * pout..][..pout];
        if d.kh == 2 && d.kw == 2 && d.sw == 2 {
            // the common 2x2 window, rows read as pairs
            for (oy, yr) in yp.chunks_exact_mut(d.ow).enumerate() {
                let r0 = &xp[oy * d.sh * d.w..][..2 * d.ow];
                let r1 = &xp[(oy * d.sh + 1) * d.w..][..2 * d.ow];
                for ((v, a), b) in yr.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                    *v = max(max(max(max(f32::NEG_INFINITY, a[0]), a[1]), b[0]), b[1]);
                }
            }
            continue;
        }
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let mut m = f32::NEG_INFINITY;
                for i in 0..d.kh {
                    let row = &xp[(oy * d.sh + i) * d.w + ox * d.sw..][..d.kw];
                    for &u in row {
                        m = if u > m { u } else { m };
                    }
                }
                yp[oy * d.ow + ox] = m;
            }
        }
    }
    Ok(())
}

/// y[j0 .. j0 + NV lanes] of one row (or the `part` elements left, in one
/// partly used vector) = x w + bias, ReLU'd where `relu`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dense_block<S: Simd, const NV: usize>(simd: S, x: &[f32], w: &[f32], n: usize, j0: usize, part: usize, bias: &[f32], relu: bool, y: &mut [f32]) {
    let lanes = S::F32_LANES;
    let mut acc = [simd.splat_f32s(0.0); NV];
    for (kk, &xv) in x.iter().enumerate() {
        let xv = simd.splat_f32s(xv);
        let wr = &w[kk * n + j0..];
        if part > 0 {
            acc[0] = simd.mul_add_e_f32s(xv, simd.partial_load_f32s(&wr[..part]), acc[0]);
        } else {
            let (wv, _) = S::as_simd_f32s(&wr[..NV * lanes]);
            for v in 0..NV {
                acc[v] = simd.mul_add_e_f32s(xv, wv[v], acc[v]);
            }
        }
    }
    let mut tmp = [0.0f32; 256];
    for v in 0..NV {
        simd.partial_store_f32s(&mut tmp[v * lanes..(v + 1) * lanes], acc[v]);
    }
    let cnt = if part > 0 { part } else { NV * lanes };
    for (t, &s) in tmp[..cnt].iter().enumerate() {
        let v = s + if bias.is_empty() { 0.0 } else { bias[j0 + t] };
        y[j0 + t] = if relu && !(v > 0.0) { 0.0 } else { v };
    }
}

struct Dense<'a> {
    m: usize,
    k: usize,
    n: usize,
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    relu: bool,
    y: &'a mut [f32],
}

impl WithSimd for Dense<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Dense { m, k, n, x, w, bias, relu, y } = self;
        let lanes = S::F32_LANES;
        for i in 0..m {
            let xr = &x[i * k..][..k];
            let yr = &mut y[i * n..][..n];
            let mut j = 0;
            // as many vectors per pass over x as the registers hold (the
            // passes read w in step), at least a few for independent sums
            if lanes == 16 {
                while n - j >= 16 * lanes {
                    dense_block::<S, 16>(simd, xr, w, n, j, 0, bias, relu, yr);
                    j += 16 * lanes;
                }
            }
            if lanes <= 16 {
                while n - j >= 8 * lanes {
                    dense_block::<S, 8>(simd, xr, w, n, j, 0, bias, relu, yr);
                    j += 8 * lanes;
                }
                if n - j >= 4 * lanes {
                    dense_block::<S, 4>(simd, xr, w, n, j, 0, bias, relu, yr);
                    j += 4 * lanes;
                }
                if n - j >= 2 * lanes {
                    dense_block::<S, 2>(simd, xr, w, n, j, 0, bias, relu, yr);
                    j += 2 * lanes;
                }
                if n - j >= lanes {
                    dense_block::<S, 1>(simd, xr, w, n, j, 0, bias, relu, yr);
                    j += lanes;
                }
            }
            while j < n {
                let part = (n - j).min(lanes);
                dense_block::<S, 1>(simd, xr, w, n, j, part, bias, relu, yr);
                j += part;
            }
        }
    }
}

/// y (m, n) = x (m, k) w (k, n) + bias (n, or empty), then max(., 0) where
/// `relu`.
#[allow(clippy::too_many_arguments)]
pub fn dense(m: usize, k: usize, n: usize, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) -> Result {
    let (mk, kn, mn) = (
        m.checked_mul(k).ok_or(Error::Invalid)?,
        k.checked_mul(n).ok_or(Error::Invalid)?,
        m.checked_mul(n).ok_or(Error::Invalid)?,
    );
    if x.len() < mk || w.len() < kn || y.len() < mn || !(bias.is_empty() || bias.len() >= n) {
        return Err(Error::Invalid);
    }
    simd::arch().dispatch(Dense { m, k, n, x, w, bias, relu, y });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1).
    fn data(n: usize, seed: u64) -> Vec<f32> {
        crate::testdata::data(n, seed).into_iter().map(|v| 2.0 * v).collect()
    }

    #[test]
    fn conv2d_matches_naive() {
        for &(b, c, h, w, oc, kh, kw, ph, pw, sh, sw) in &[
            (1, 1, 8, 8, 16, 5, 5, 2, 2, 1, 1),
            (1, 16, 4, 4, 32, 3, 3, 1, 1, 1, 1),
            (2, 3, 7, 9, 5, 3, 2, 1, 0, 2, 1),
            (1, 2, 5, 13, 40, 1, 3, 0, 1, 1, 2),
        ] {
            let oh = (h + 2 * ph - kh) / sh + 1;
            let ow = (w + 2 * pw - kw) / sw + 1;
            let d = ConvDims::from_slice(&[b, c, h, w, oc, oh, ow, kh, kw, ph, pw, sh, sw]).unwrap();
            let x = data(d.x_len(), 1);
            let wt = data(oc * c * kh * kw, 2);
            let bias = data(oc, 3);
            let mut wp = vec![0.0; d.packed_len()];
            pack_conv_weight(&d, &wt, &mut wp).unwrap();
            let mut scratch = vec![0.0; d.scratch_len()];
            for relu in [false, true] {
                let mut y = vec![f32::NAN; d.y_len()];
                conv2d(&d, &x, &wp, &bias, relu, &mut scratch, &mut y).unwrap();
                for n in 0..b {
                    for o in 0..oc {
                        for i in 0..oh {
                            for j in 0..ow {
                                let mut s = bias[o] as f64;
                                for cc in 0..c {
                                    for u in 0..kh {
                                        for v in 0..kw {
                                            let (yy, xx) = ((i * sh + u) as isize - ph as isize, (j * sw + v) as isize - pw as isize);
                                            if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                                s += (x[((n * c + cc) * h + yy as usize) * w + xx as usize]
                                                    * wt[((o * c + cc) * kh + u) * kw + v]) as f64;
                                            }
                                        }
                                    }
                                }
                                if relu {
                                    s = s.max(0.0);
                                }
                                let got = y[((n * oc + o) * oh + i) * ow + j];
                                assert!((got as f64 - s).abs() < 1e-5, "{got} vs {s}");
                            }
                        }
                    }
                }
            }
        }
        assert!(ConvDims::from_slice(&[1, 1, 8, 8, 16, 9, 8, 5, 5, 2, 2, 1, 1]).is_err());
    }

    #[test]
    fn max_pool_and_dense_match_naive() {
        for g in [[3, 5, 6, 2, 3, 2, 2, 2, 2], [2, 7, 7, 2, 3, 3, 2, 2, 2], [1, 5, 5, 4, 2, 2, 3, 1, 2]] {
            let d = PoolDims::from_slice(&g).unwrap();
            let x = data(d.planes * d.h * d.w, 4);
            let mut y = vec![0.0; d.planes * d.oh * d.ow];
            max_pool2d(&d, &x, &mut y).unwrap();
            for p in 0..d.planes {
                for i in 0..d.oh {
                    for j in 0..d.ow {
                        let mut m = f32::NEG_INFINITY;
                        for u in 0..d.kh {
                            for v in 0..d.kw {
                                m = m.max(x[p * d.h * d.w + (d.sh * i + u) * d.w + d.sw * j + v]);
                            }
                        }
                        assert_eq!(y[(p * d.oh + i) * d.ow + j], m);
                    }
                }
            }
        }
        assert!(PoolDims::from_slice(&[1, 4, 4, 3, 2, 2, 2, 2, 2]).is_err());
        for &(m, k, n) in &[(1, 128, 64), (2, 7, 83), (1, 3, 10), (1, 9, 300), (1, 5, 520)] {
            let (x, w, b) = (data(m * k, 5), data(k * n, 6), data(n, 7));
            for relu in [false, true] {
                let mut y = vec![f32::NAN; m * n];
                dense(m, k, n, &x, &w, &b, relu, &mut y).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = b[j] as f64;
                        for t in 0..k {
                            s += (x[i * k + t] * w[t * n + j]) as f64;
                        }
                        if relu {
                            s = s.max(0.0);
                        }
                        assert!((y[i * n + j] as f64 - s).abs() < 1e-5);
                    }
                }
            }
        }
    }
}
