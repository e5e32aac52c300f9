//! Patch correlation (FlowNet's correlation layer) on NHWC arrays.
//!
//! For each sample, each patch position (y, x) = (oy * step_h - pad_t,
//! ox * step_w - pad_l) and each shift (sy, sx) on the grid
//! -shift..=shift by shift_step:
//!
//! out[n, oy, ox, iy, ix] = sum over ky < patch_h, kx < patch_w, c of
//!     x1[n, y + ky, x + kx, c] * x2[n, y + ky + sy, x + kx + sx, c],
//!
//! where samples outside the image (zero padding) contribute nothing.  For a
//! fixed (ky, sy) the valid kx form one range, so the inner sum is a dot
//! product over one contiguous span of (kx, c) values.
//!
//! The forward pass is threaded over output rows (n, oy); the gradients are
//! gathered per input row (n, h), so each row is written by one thread.

use crate::par::{par_for, Rows};
use crate::simd;
use crate::{Error, Result};

/// Shapes and parameters, all checked by [`Geometry::new`].
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// patch (h, w), shift (h, w), patch_step (h, w), shift_step (h, w)
    pub patch: [usize; 2],
    pub shift: [usize; 2],
    pub step: [usize; 2],
    pub shift_step: [usize; 2],
    /// top, bottom, left, right
    pub pad: [usize; 4],
    /// output positions (oh, ow) and shifts (cy, cx)
    pub out: [usize; 2],
    pub shifts: [usize; 2],
}

impl Geometry {
    /// `dims` = (n, h, w, c); `p` = patch h, w, shift h, w, patch_step h, w,
    /// shift_step h, w, padding t, b, l, r.
    pub fn new(dims: [usize; 4], p: [i64; 12]) -> Result<Self> {
        let [n, h, w, c] = dims;
        let nonneg = |v: i64| usize::try_from(v).map_err(|_| Error::Invalid);
        let pos = |v: i64| nonneg(v).and_then(|u| if u > 0 { Ok(u) } else { Err(Error::Invalid) });
        let patch = [pos(p[0])?, pos(p[1])?];
        let shift = [nonneg(p[2])?, nonneg(p[3])?];
        let step = [pos(p[4])?, pos(p[5])?];
        let shift_step = [pos(p[6])?, pos(p[7])?];
        let pad = [nonneg(p[8])?, nonneg(p[9])?, nonneg(p[10])?, nonneg(p[11])?];
        let extent = |size: usize, a: usize, b: usize| size.checked_add(a).and_then(|v| v.checked_add(b)).ok_or(Error::Invalid);
        let (eh, ew) = (extent(h, pad[0], pad[1])?, extent(w, pad[2], pad[3])?);
        if eh < patch[0] || ew < patch[1] || shift[0] > 1 << 30 || shift[1] > 1 << 30 {
            return Err(Error::Invalid);
        }
        let out = [(eh - patch[0]) / step[0] + 1, (ew - patch[1]) / step[1] + 1];
        let shifts = [2 * shift[0] / shift_step[0] + 1, 2 * shift[1] / shift_step[1] + 1];
        let g = Geometry { n, h, w, c, patch, shift, step, shift_step, pad, out, shifts };
        // every size must be addressable
        g.in_len()?;
        g.out_len()?;
        Ok(g)
    }

    pub fn in_len(&self) -> Result<usize> {
        [self.n, self.h, self.w, self.c].iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or(Error::Invalid)
    }

    pub fn out_len(&self) -> Result<usize> {
        [self.n, self.out[0], self.out[1], self.shifts[0], self.shifts[1]].iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or(Error::Invalid)
    }

    /// Top-left corner (y, x) of patch (oy, ox), possibly in the padding.
    #[inline(always)]
    fn corner(&self, oy: usize, ox: usize) -> (isize, isize) {
        ((oy * self.step[0]) as isize - self.pad[0] as isize, (ox * self.step[1]) as isize - self.pad[2] as isize)
    }

    /// Shift (sy, sx) number (iy, ix).
    #[inline(always)]
    fn shift_of(&self, iy: usize, ix: usize) -> (isize, isize) {
        ((iy * self.shift_step[0]) as isize - self.shift[0] as isize, (ix * self.shift_step[1]) as isize - self.shift[1] as isize)
    }

    /// The x1 columns [a, b) of the patch at column x whose x2 columns
    /// (shifted by sx) are inside the image too.
    #[inline(always)]
    fn cols(&self, x: isize, sx: isize) -> (isize, isize) {
        let w = self.w as isize;
        let a = x.max(0).max(-sx);
        let b = (x + self.patch[1] as isize).min(w).min(w - sx);
        (a, b.max(a))
    }
}

const LANES: usize = 16;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ta) = a.as_chunks::<LANES>();
    let (cb, tb) = b[..a.len()].as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0.0;
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    let mut h = LANES;
    while h > 1 {
        h /= 2;
        for k in 0..h {
            acc[k] += acc[k + h];
        }
    }
    acc[0] + s
}

#[inline(always)]
fn axpy(g: f32, x: &[f32], y: &mut [f32]) {
    for (d, &s) in y.iter_mut().zip(x) {
        *d += g * s;
    }
}

/// The forward pass: `y` is (n, oh, ow, cy, cx).
pub fn forward(g: &Geometry, x1: &[f32], x2: &[f32], y: &mut [f32]) -> Result {
    let (ni, no) = (g.in_len()?, g.out_len()?);
    if x1.len() != ni || x2.len() != ni || y.len() != no {
        return Err(Error::Invalid);
    }
    let row = g.out[1] * g.shifts[0] * g.shifts[1];
    if no == 0 {
        return Ok(());
    }
    let (h, w, c) = (g.h as isize, g.w, g.c);
    let cost = row * g.patch[0] * g.patch[1] * c;
    par_for((Rows(y, row), 0..g.n * g.out[0]), cost, |(Rows(y, _), rows)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (out, r) in y.chunks_exact_mut(row).zip(rows) {
                    let (n, oy) = (r / g.out[0], r % g.out[0]);
                    let img1 = &x1[n * g.h * w * c..][..g.h * w * c];
                    let img2 = &x2[n * g.h * w * c..][..g.h * w * c];
                    let mut o = out.iter_mut();
                    for ox in 0..g.out[1] {
                        let (y0, x0) = g.corner(oy, ox);
                        for iy in 0..g.shifts[0] {
                            for ix in 0..g.shifts[1] {
                                let (sy, sx) = g.shift_of(iy, ix);
                                let (a, b) = g.cols(x0, sx);
                                let mut v = 0.0;
                                if a < b {
                                    for ky in 0..g.patch[0] as isize {
                                        let (y1, y2) = (y0 + ky, y0 + ky + sy);
                                        if y1 < 0 || y1 >= h || y2 < 0 || y2 >= h {
                                            continue;
                                        }
                                        let s1 = &img1[(y1 as usize * w + a as usize) * c..(y1 as usize * w + b as usize) * c];
                                        let s2 = &img2[(y2 as usize * w + (a + sx) as usize) * c..][..s1.len()];
                                        v += dot(s1, s2);
                                    }
                                }
                                if let Some(o) = o.next() {
                                    *o = v;
                                }
                            }
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// The gradient with respect to x1 (`which` = 0) or x2 (`which` = 1):
/// gx = (accum ? gx : 0) + d(sum(y * gy)) / dx.
pub fn backward(g: &Geometry, which: u32, x1: &[f32], x2: &[f32], gy: &[f32], gx: &mut [f32], accum: bool) -> Result {
    let (ni, no) = (g.in_len()?, g.out_len()?);
    if x1.len() != ni || x2.len() != ni || gy.len() != no || gx.len() != ni || which > 1 {
        return Err(Error::Invalid);
    }
    let (w, c) = (g.w, g.c);
    let row = w * c;
    if ni == 0 {
        return Ok(());
    }
    let (oh, ow) = (g.out[0], g.out[1]);
    let (cy, cx) = (g.shifts[0], g.shifts[1]);
    let (ph, step_h) = (g.patch[0] as isize, g.step[0] as isize);
    let cost = (g.out_len()? / (g.n * g.h).max(1) + 1) * g.patch[0] * g.patch[1] * c;
    // Patch rows oy whose patch covers image row y1.
    let covering = move |y1: isize| {
        let lo = y1 - ph + 1 + g.pad[0] as isize; // oy * step >= lo
        let hi = y1 + g.pad[0] as isize; // oy * step <= hi
        let first = if lo <= 0 { 0 } else { (lo + step_h - 1) / step_h };
        let last = if hi < 0 { -1 } else { (hi / step_h).min(oh as isize - 1) };
        first..last + 1
    };
    par_for((Rows(gx, row), 0..g.n * g.h), cost, |(Rows(gx, _), rows)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (grow, r) in gx.chunks_exact_mut(row).zip(rows) {
                    let (n, yr) = (r / g.h, (r % g.h) as isize);
                    if !accum {
                        grow.fill(0.0);
                    }
                    let base = n * g.h * row;
                    let gyn = &gy[n * oh * ow * cy * cx..][..oh * ow * cy * cx];
                    for iy in 0..cy {
                        let (sy, _) = g.shift_of(iy, 0);
                        // this row is x1's row y1 (which = 0) or x2's row y1 + sy
                        let y1 = if which == 0 { yr } else { yr - sy };
                        let other = if which == 0 { y1 + sy } else { y1 };
                        if y1 < 0 || y1 >= g.h as isize || other < 0 || other >= g.h as isize {
                            continue;
                        }
                        let src = if which == 0 { &x2[base + other as usize * row..][..row] } else { &x1[base + other as usize * row..][..row] };
                        for oy in covering(y1) {
                            let oy = oy as usize;
                            for ox in 0..ow {
                                let (_, x0) = g.corner(oy, ox);
                                for ix in 0..cx {
                                    let (_, sx) = g.shift_of(iy, ix);
                                    let (a, b) = g.cols(x0, sx);
                                    if a >= b {
                                        continue;
                                    }
                                    let gv = gyn[((oy * ow + ox) * cy + iy) * cx + ix];
                                    let (da, sa) = if which == 0 { (a, a + sx) } else { (a + sx, a) };
                                    let len = (b - a) as usize * c;
                                    axpy(gv, &src[sa as usize * c..][..len], &mut grow[da as usize * c..][..len]);
                                }
                            }
                        }
                    }
                }
            },
        )
    });
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

    /// The definition, element by element (as NNabla writes it).
    fn naive(g: &Geometry, x1: &[f32], x2: &[f32], gy: &[f32], y: &mut [f64], gx1: &mut [f64], gx2: &mut [f64]) {
        let (h, w, c) = (g.h as isize, g.w as isize, g.c);
        let at = |n: usize, yy: isize, xx: isize| (n * g.h * g.w + yy as usize * g.w + xx as usize) * c;
        let mut k = 0;
        for n in 0..g.n {
            for oy in 0..g.out[0] {
                for ox in 0..g.out[1] {
                    let (y0, x0) = g.corner(oy, ox);
                    for iy in 0..g.shifts[0] {
                        for ix in 0..g.shifts[1] {
                            let (sy, sx) = g.shift_of(iy, ix);
                            let mut v = 0.0f64;
                            for ky in 0..g.patch[0] as isize {
                                for kx in 0..g.patch[1] as isize {
                                    let (a, b) = ((y0 + ky, x0 + kx), (y0 + ky + sy, x0 + kx + sx));
                                    if a.0 < 0 || a.0 >= h || a.1 < 0 || a.1 >= w || b.0 < 0 || b.0 >= h || b.1 < 0 || b.1 >= w {
                                        continue;
                                    }
                                    let (i1, i2) = (at(n, a.0, a.1), at(n, b.0, b.1));
                                    for ch in 0..c {
                                        v += x1[i1 + ch] as f64 * x2[i2 + ch] as f64;
                                        gx1[i1 + ch] += x2[i2 + ch] as f64 * gy[k] as f64;
                                        gx2[i2 + ch] += x1[i1 + ch] as f64 * gy[k] as f64;
                                    }
                                }
                            }
                            y[k] = v;
                            k += 1;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        let cases: [([usize; 4], [i64; 12]); 6] = [
            ([1, 3, 4, 2], [3, 4, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]),
            ([2, 5, 6, 3], [2, 2, 1, 2, 1, 1, 1, 1, 0, 0, 0, 0]),
            ([1, 5, 7, 1], [3, 1, 2, 1, 2, 3, 2, 1, 1, 2, 0, 3]),
            ([3, 4, 4, 5], [1, 1, 3, 3, 1, 1, 2, 3, 2, 1, 1, 2]),
            ([1, 6, 5, 17], [2, 3, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1]),
            ([2, 9, 8, 4], [3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]),
        ];
        for (dims, p) in cases {
            let g = Geometry::new(dims, p).unwrap();
            let ni = g.in_len().unwrap();
            let no = g.out_len().unwrap();
            let (x1, x2, gy) = (data(ni, 1), data(ni, 2), data(no, 3));
            let (mut y, mut g1, mut g2) = (vec![0.0; no], vec![0.0; ni], vec![0.0; ni]);
            naive(&g, &x1, &x2, &gy, &mut y, &mut g1, &mut g2);
            let mut out = vec![f32::NAN; no];
            forward(&g, &x1, &x2, &mut out).unwrap();
            let close = |a: &[f32], b: &[f64]| a.iter().zip(b).all(|(x, y)| (*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()));
            assert!(close(&out, &y), "{dims:?} {p:?}");
            let mut gx = vec![f32::NAN; ni];
            backward(&g, 0, &x1, &x2, &gy, &mut gx, false).unwrap();
            assert!(close(&gx, &g1), "gx1 {dims:?} {p:?}");
            let mut gx = vec![1.0; ni];
            backward(&g, 1, &x1, &x2, &gy, &mut gx, true).unwrap();
            let want: Vec<f64> = g2.iter().map(|v| v + 1.0).collect();
            assert!(close(&gx, &want), "gx2 {dims:?} {p:?}");
        }
    }

    #[test]
    fn reference_example_and_bad_parameters() {
        // 1x3x4x2 ones, patch (3, 1), shift (0, 1): [[0,6,6,6],[6,6,6,6],[6,6,6,0]]
        let g = Geometry::new([1, 3, 4, 2], [3, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!((g.out, g.shifts), ([1, 4], [1, 3]));
        let x = vec![1.0; 24];
        let mut y = vec![0.0; 12];
        forward(&g, &x, &x, &mut y).unwrap();
        // layout (n, oy, ox, iy, ix)
        assert_eq!(y, [0., 6., 6., 6., 6., 6., 6., 6., 6., 6., 6., 0.]);
        assert!(Geometry::new([1, 3, 4, 2], [4, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [1, 1, -1, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(forward(&g, &x, &x, &mut [0.0; 3]).is_err());
    }
}
