//! Adaptive separable convolution (NCHW): every output pixel has its own
//! vertical kernel kv (Kv taps) and horizontal kernel kh (Kh taps), shared by
//! the channels of its sample:
//!
//!   y[b, c, h, w] = sum_{j < Kv, i < Kh} kv[b, j, h, w] kh[b, i, h, w] x[b, c, h + j, w + i]
//!
//! with y of spatial size (H - Kv + 1, W - Kh + 1).  kv is (B, Kv, Hv, Wv) and
//! kh (B, Kh, Hh, Wh), with Hv, Hh >= the output height and Wv, Wh >= the
//! output width (entries beyond the output are not used; their gradient is 0).
//! The loops run along w, contiguous in every array.  Forward and the input
//! gradient are split across threads by (sample, channel) planes; the kernel
//! gradients by (sample, tap) planes.

use crate::par::{par_for, Rows};
use crate::simd;
use crate::{Error, Result};

/// Shapes of the three inputs.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kv: usize,
    pub hv: usize,
    pub wv: usize,
    pub kh: usize,
    pub hh: usize,
    pub wh: usize,
}

pub const FORWARD: u32 = 0;
pub const GRAD_X: u32 = 1;
pub const GRAD_KV: u32 = 2;
pub const GRAD_KH: u32 = 3;

impl Dims {
    /// From [B, C, H, W, Kv, Hv, Wv, Kh, Hh, Wh].
    pub fn from_slice(v: &[usize]) -> Result<Self> {
        let [b, c, h, w, kv, hv, wv, kh, hh, wh] = v.try_into().map_err(|_| Error::Invalid)?;
        let d = Dims { b, c, h, w, kv, hv, wv, kh, hh, wh };
        let (oh, ow) = d.out().ok_or(Error::Invalid)?;
        if hv < oh || hh < oh || wv < ow || wh < ow {
            return Err(Error::Invalid);
        }
        d.sizes()?;
        Ok(d)
    }

    /// Output height and width.
    pub fn out(&self) -> Option<(usize, usize)> {
        if self.kv == 0 || self.kh == 0 || self.h < self.kv || self.w < self.kh {
            return None;
        }
        Some((self.h - self.kv + 1, self.w - self.kh + 1))
    }

    /// Sizes of x, kv, kh and y.
    pub fn sizes(&self) -> Result<[usize; 4]> {
        let m = |a: &[usize]| a.iter().try_fold(1usize, |s, &v| s.checked_mul(v)).ok_or(Error::Invalid);
        let (oh, ow) = self.out().ok_or(Error::Invalid)?;
        Ok([
            m(&[self.b, self.c, self.h, self.w])?,
            m(&[self.b, self.kv, self.hv, self.wv])?,
            m(&[self.b, self.kh, self.hh, self.wh])?,
            m(&[self.b, self.c, oh, ow])?,
        ])
    }
}

/// Runs `which`: FORWARD out = y; GRAD_X out (+)= gx; GRAD_KV out (+)= gkv;
/// GRAD_KH out (+)= gkh.  `gy` is unused by FORWARD.
#[allow(clippy::too_many_arguments)]
pub fn run(which: u32, d: &Dims, x: &[f32], kv: &[f32], kh: &[f32], gy: &[f32], out: &mut [f32], accum: bool) -> Result {
    let [nx, nkv, nkh, ny] = d.sizes()?;
    let no = match which {
        FORWARD => ny,
        GRAD_X => nx,
        GRAD_KV => nkv,
        GRAD_KH => nkh,
        _ => return Err(Error::Invalid),
    };
    if x.len() < nx || kv.len() < nkv || kh.len() < nkh || out.len() < no || (which != FORWARD && gy.len() < ny) {
        return Err(Error::Invalid);
    }
    let out = &mut out[..no];
    if no == 0 {
        return Ok(());
    }
    let (oh, ow) = d.out().ok_or(Error::Invalid)?;
    let (hw, ohw) = (d.h * d.w, oh * ow);
    // rows of the kernels at (b, tap, h)
    let kv_row = |b: usize, j: usize, h: usize| &kv[((b * d.kv + j) * d.hv + h) * d.wv..][..ow];
    let kh_row = |b: usize, i: usize, h: usize| &kh[((b * d.kh + i) * d.hh + h) * d.wh..][..ow];
    match which {
        FORWARD | GRAD_X => {
            let plane = if which == FORWARD { ohw } else { hw };
            let cost = ohw * d.kv * d.kh;
            if plane == 0 {
                return Ok(());
            }
            par_for((Rows(out, plane), 0..d.b * d.c), cost, |(Rows(os, _), range)| {
                let mut t = vec![0.0f32; ow];
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for (op, q) in os.chunks_exact_mut(plane).zip(range.clone()) {
                            let b = q / d.c;
                            if which == FORWARD {
                                let xp = &x[q * hw..(q + 1) * hw];
                                for h in 0..oh {
                                    let yr = &mut op[h * ow..(h + 1) * ow];
                                    yr.fill(0.0);
                                    for j in 0..d.kv {
                                        t.fill(0.0);
                                        for i in 0..d.kh {
                                            let xr = &xp[(h + j) * d.w + i..][..ow];
                                            for ((tv, &kv), &xv) in t.iter_mut().zip(kh_row(b, i, h)).zip(xr) {
                                                *tv += kv * xv;
                                            }
                                        }
                                        for ((yv, &kv), &tv) in yr.iter_mut().zip(kv_row(b, j, h)).zip(&t) {
                                            *yv += kv * tv;
                                        }
                                    }
                                }
                            } else {
                                if !accum {
                                    op.fill(0.0);
                                }
                                let gp = &gy[q * ohw..(q + 1) * ohw];
                                for h in 0..oh {
                                    let gr = &gp[h * ow..(h + 1) * ow];
                                    for j in 0..d.kv {
                                        for ((tv, &g), &kv) in t.iter_mut().zip(gr).zip(kv_row(b, j, h)) {
                                            *tv = g * kv;
                                        }
                                        for i in 0..d.kh {
                                            let xr = &mut op[(h + j) * d.w + i..][..ow];
                                            for ((xv, &tv), &kh) in xr.iter_mut().zip(&t).zip(kh_row(b, i, h)) {
                                                *xv += tv * kh;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                )
            });
        }
        _ => {
            // gradient of one kernel: planes (b, tap) of (Hk, Wk)
            let vertical = which == GRAD_KV;
            let (taps, hk, wk) = if vertical { (d.kv, d.hv, d.wv) } else { (d.kh, d.hh, d.wh) };
            let plane = hk * wk;
            if plane == 0 {
                return Ok(());
            }
            let cost = d.c * ohw * if vertical { d.kh } else { d.kv };
            par_for((Rows(out, plane), 0..d.b * taps), cost, |(Rows(os, _), range)| {
                let mut t = vec![0.0f32; ow];
                let mut acc = vec![0.0f32; ow];
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for (op, q) in os.chunks_exact_mut(plane).zip(range.clone()) {
                            let (b, tap) = (q / taps, q % taps);
                            if !accum {
                                op.fill(0.0);
                            }
                            for h in 0..oh {
                                acc.fill(0.0);
                                for c in 0..d.c {
                                    let xp = &x[(b * d.c + c) * hw..][..hw];
                                    let gr = &gy[((b * d.c + c) * oh + h) * ow..][..ow];
                                    t.fill(0.0);
                                    if vertical {
                                        // sum_i kh[i] x[h + tap, w + i]
                                        for i in 0..d.kh {
                                            let xr = &xp[(h + tap) * d.w + i..][..ow];
                                            for ((tv, &k), &xv) in t.iter_mut().zip(kh_row(b, i, h)).zip(xr) {
                                                *tv += k * xv;
                                            }
                                        }
                                    } else {
                                        // sum_j kv[j] x[h + j, w + tap]
                                        for j in 0..d.kv {
                                            let xr = &xp[(h + j) * d.w + tap..][..ow];
                                            for ((tv, &k), &xv) in t.iter_mut().zip(kv_row(b, j, h)).zip(xr) {
                                                *tv += k * xv;
                                            }
                                        }
                                    }
                                    for ((a, &g), &tv) in acc.iter_mut().zip(gr).zip(&t) {
                                        *a += g * tv;
                                    }
                                }
                                for (o, &a) in op[h * wk..h * wk + ow].iter_mut().zip(&acc) {
                                    *o += a;
                                }
                            }
                        }
                    },
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testdata::data;

    #[test]
    fn matches_direct_sums() {
        let d = Dims::from_slice(&[2, 3, 6, 7, 3, 5, 6, 2, 4, 7]).unwrap();
        let [nx, nkv, nkh, ny] = d.sizes().unwrap();
        let (oh, ow) = d.out().unwrap();
        let (x, kv, kh, gy) = (data(nx, 1), data(nkv, 2), data(nkh, 3), data(ny, 4));
        let xi = |b: usize, c: usize, h: usize, w: usize| ((b * d.c + c) * d.h + h) * d.w + w;
        let kvi = |b: usize, j: usize, h: usize, w: usize| ((b * d.kv + j) * d.hv + h) * d.wv + w;
        let khi = |b: usize, i: usize, h: usize, w: usize| ((b * d.kh + i) * d.hh + h) * d.wh + w;
        let mut y = vec![f32::NAN; ny];
        run(FORWARD, &d, &x, &kv, &kh, &[], &mut y, false).unwrap();
        let (mut gx, mut gkv, mut gkh) = (vec![0.0f32; nx], vec![0.0f32; nkv], vec![0.0f32; nkh]);
        for b in 0..d.b {
            for c in 0..d.c {
                for h in 0..oh {
                    for w in 0..ow {
                        let mut v = 0.0f32;
                        let g = gy[((b * d.c + c) * oh + h) * ow + w];
                        for j in 0..d.kv {
                            for i in 0..d.kh {
                                let (a, k2, xv) = (kv[kvi(b, j, h, w)], kh[khi(b, i, h, w)], x[xi(b, c, h + j, w + i)]);
                                v += a * k2 * xv;
                                gx[xi(b, c, h + j, w + i)] += g * a * k2;
                                gkv[kvi(b, j, h, w)] += g * k2 * xv;
                                gkh[khi(b, i, h, w)] += g * a * xv;
                            }
                        }
                        assert!((y[((b * d.c + c) * oh + h) * ow + w] - v).abs() < 1e-5);
                    }
                }
            }
        }
        for (which, want) in [(GRAD_X, &gx), (GRAD_KV, &gkv), (GRAD_KH, &gkh)] {
            let mut got = vec![f32::NAN; want.len()];
            run(which, &d, &x, &kv, &kh, &gy, &mut got, false).unwrap();
            assert!(got.iter().zip(want.iter()).all(|(a, b)| (a - b).abs() < 1e-5), "which {which}");
            let mut acc = vec![1.0f32; want.len()];
            run(which, &d, &x, &kv, &kh, &gy, &mut acc, true).unwrap();
            assert!(acc.iter().zip(want.iter()).all(|(a, b)| (a - 1.0 - b).abs() < 1e-5));
        }
        assert!(Dims::from_slice(&[1, 1, 3, 3, 4, 3, 3, 1, 3, 3]).is_err()); // kernel taller than x
        assert!(Dims::from_slice(&[1, 1, 5, 5, 2, 3, 4, 2, 4, 4]).is_err()); // kv too short
    }
}
