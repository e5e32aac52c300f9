//! Patch correlation (FlowNet's correlation layer) on NCHW arrays.
//!
//! For each sample, each shift (sy, sx) on the grid -shift..=shift by
//! shift_step and each patch position (y, x) = (oy * step_h - pad_t,
//! ox * step_w - pad_l):
//!
//! out[n, iy, ix, oy, ox] = sum over ky < patch_h, kx < patch_w, c of
//!     x1[n, c, y + ky, x + kx] * x2[n, c, y + ky + sy, x + kx + sx],
//!
//! where samples outside the image (zero padding) contribute nothing.  The
//! loops run along image rows: for one output row (n, iy, ix, oy) the
//! products x1 * x2 (shifted) are summed over c and ky into one row `acc` of
//! the image width (contiguous, vectorised), and each output is then the sum
//! of `acc` over its patch's columns.  The gradients use the same rows: the
//! output gradient spread over the columns each patch covers, times the
//! other input's (shifted) row.
//!
//! The forward pass is threaded over output rows (batch, shifts, oy); the
//! gradients over input planes (batch, channel), each written by one thread.

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
    /// `dims` = sizes (n, h, w, c) (the arrays are NCHW); `p` = patch h, w, shift h, w, patch_step h, w,
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
        let extent =
            |size: usize, a: usize, b: usize| size.checked_add(a).and_then(|v| v.checked_add(b)).ok_or(Error::Invalid);
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
        [self.n, self.out[0], self.out[1], self.shifts[0], self.shifts[1]]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or(Error::Invalid)
    }

    /// Top-left corner (y, x) of patch (oy, ox), possibly in the padding.
    #[inline(always)]
    fn corner(&self, oy: usize, ox: usize) -> (isize, isize) {
        ((oy * self.step[0]) as isize - self.pad[0] as isize, (ox * self.step[1]) as isize - self.pad[2] as isize)
    }

    /// Shift (sy, sx) number (iy, ix).
    #[inline(always)]
    fn shift_of(&self, iy: usize, ix: usize) -> (isize, isize) {
        (
            (iy * self.shift_step[0]) as isize - self.shift[0] as isize,
            (ix * self.shift_step[1]) as isize - self.shift[1] as isize,
        )
    }
}

#[inline(always)]
fn fma_row(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        *o += x * y;
    }
}

#[inline(always)]
fn axpy_row(g: &[f32], x: &[f32], y: &mut [f32]) {
    for ((d, &s), &gv) in y.iter_mut().zip(x).zip(g) {
        *d += gv * s;
    }
}

impl Geometry {
    /// Columns [a, b) of x1 whose x2 partner (shifted by sx) is inside too.
    #[inline(always)]
    fn valid(&self, sx: isize) -> (usize, usize) {
        let w = self.w as isize;
        let a = 0.max(-sx);
        let b = w.min(w - sx);
        (a as usize, b.max(a) as usize)
    }

    /// Columns [a, b) of the image covered by patch column ox.
    #[inline(always)]
    fn patch_cols(&self, ox: usize) -> (usize, usize) {
        let (_, x0) = self.corner(0, ox);
        let w = self.w as isize;
        let a = x0.clamp(0, w);
        let b = (x0 + self.patch[1] as isize).clamp(0, w);
        (a as usize, b.max(a) as usize)
    }

    /// Patch rows oy whose patch covers image row y1.
    #[inline(always)]
    fn covering(&self, y1: isize) -> std::ops::Range<usize> {
        let (ph, step) = (self.patch[0] as isize, self.step[0] as isize);
        let lo = y1 - ph + 1 + self.pad[0] as isize; // oy * step >= lo
        let hi = y1 + self.pad[0] as isize; // oy * step <= hi
        let first = if lo <= 0 { 0 } else { (lo + step - 1) / step };
        let last = if hi < 0 { -1 } else { (hi / step).min(self.out[0] as isize - 1) };
        first as usize..(last + 1).max(first) as usize
    }

    fn rows_out(&self) -> usize {
        self.n * self.shifts[0] * self.shifts[1] * self.out[0]
    }
}

/// The forward pass: `y` is (n, cy, cx, oh, ow).
pub fn forward(g: &Geometry, x1: &[f32], x2: &[f32], y: &mut [f32]) -> Result {
    let (ni, no) = (g.in_len()?, g.out_len()?);
    if x1.len() != ni || x2.len() != ni || y.len() != no {
        return Err(Error::Invalid);
    }
    if no == 0 {
        return Ok(());
    }
    let (h, w, c) = (g.h, g.w, g.c);
    let (oh, ow) = (g.out[0], g.out[1]);
    let (cy, cx) = (g.shifts[0], g.shifts[1]);
    let cost = g.patch[0] * c * w + ow * g.patch[1];
    par_for((Rows(y, ow), 0..g.rows_out()), cost, |(Rows(y, _), rows)| {
        let mut acc = vec![0.0f32; w];
        simd::dispatch(
            #[inline(always)]
            || {
                for (out, r) in y.chunks_exact_mut(ow).zip(rows) {
                    let (oy, rest) = (r % oh, r / oh);
                    let (ix, rest) = (rest % cx, rest / cx);
                    let (iy, n) = (rest % cy, rest / cy);
                    let (y0, _) = g.corner(oy, 0);
                    let (sy, sx) = g.shift_of(iy, ix);
                    let (a, b) = g.valid(sx);
                    acc.fill(0.0);
                    for ky in 0..g.patch[0] as isize {
                        let (y1, y2) = (y0 + ky, y0 + ky + sy);
                        if a >= b || y1 < 0 || y1 >= h as isize || y2 < 0 || y2 >= h as isize {
                            continue;
                        }
                        for ch in 0..c {
                            let plane = (n * c + ch) * h * w;
                            let r1 = &x1[plane + y1 as usize * w..][..w];
                            let r2 = &x2[plane + y2 as usize * w..][..w];
                            let b2 = (b as isize + sx) as usize;
                            fma_row(&mut acc[a..b], &r1[a..b], &r2[(a as isize + sx) as usize..b2]);
                        }
                    }
                    for (ox, o) in out.iter_mut().enumerate() {
                        let (lo, hi) = g.patch_cols(ox);
                        *o = acc[lo..hi].iter().sum();
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
    if ni == 0 {
        return Ok(());
    }
    let (h, w, c) = (g.h, g.w, g.c);
    let (oh, ow) = (g.out[0], g.out[1]);
    let (cy, cx) = (g.shifts[0], g.shifts[1]);
    // spread[n, iy, ix, oy, x]: the output gradient summed over the patches
    // (of row oy) that cover image column x.
    let mut spread = vec![0.0f32; g.rows_out().checked_mul(w).ok_or(Error::Invalid)?];
    par_for((Rows(&mut spread[..], w), Rows(gy, ow)), ow * g.patch[1] + w, |(Rows(sp, _), Rows(gr, _))| {
        for (s, gr) in sp.chunks_exact_mut(w).zip(gr.chunks_exact(ow)) {
            s.fill(0.0);
            for (ox, &gv) in gr.iter().enumerate() {
                let (lo, hi) = g.patch_cols(ox);
                s[lo..hi].iter_mut().for_each(|v| *v += gv);
            }
        }
    });
    let spread = &spread[..];
    let cost = cy * cx * g.patch[0] * h * w;
    par_for((Rows(gx, h * w), 0..g.n * c), cost, |(Rows(gx, _), planes)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (gp, pl) in gx.chunks_exact_mut(h * w).zip(planes) {
                    let n = pl / c;
                    if !accum {
                        gp.fill(0.0);
                    }
                    let (p1, p2) = (&x1[pl * h * w..][..h * w], &x2[pl * h * w..][..h * w]);
                    for yr in 0..h as isize {
                        for iy in 0..cy {
                            let (sy, _) = g.shift_of(iy, 0);
                            // this row is x1's row y1 (which = 0) or x2's row y1 + sy
                            let y1 = if which == 0 { yr } else { yr - sy };
                            let other = if which == 0 { y1 + sy } else { y1 };
                            if y1 < 0 || y1 >= h as isize || other < 0 || other >= h as isize {
                                continue;
                            }
                            let src = if which == 0 {
                                &p2[other as usize * w..][..w]
                            } else {
                                &p1[other as usize * w..][..w]
                            };
                            let dst = &mut gp[yr as usize * w..][..w];
                            for oy in g.covering(y1) {
                                for ix in 0..cx {
                                    let (_, sx) = g.shift_of(iy, ix);
                                    let (a, b) = g.valid(sx);
                                    if a >= b {
                                        continue;
                                    }
                                    let srow = &spread[(((n * cy + iy) * cx + ix) * oh + oy) * w..][..w];
                                    let (sa, sb) = ((a as isize + sx) as usize, (b as isize + sx) as usize);
                                    if which == 0 {
                                        axpy_row(&srow[a..b], &src[sa..sb], &mut dst[a..b]);
                                    } else {
                                        axpy_row(&srow[a..b], &src[a..b], &mut dst[sa..sb]);
                                    }
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

    use crate::testdata::data;

    /// The definition, element by element (as NNabla writes it).
    fn naive(g: &Geometry, x1: &[f32], x2: &[f32], gy: &[f32], y: &mut [f64], gx1: &mut [f64], gx2: &mut [f64]) {
        let (h, w, c) = (g.h as isize, g.w as isize, g.c);
        // element (n, ch, yy, xx) of an NCHW array
        let at = |n: usize, ch: usize, yy: isize, xx: isize| ((n * c + ch) * g.h + yy as usize) * g.w + xx as usize;
        let mut k = 0;
        for n in 0..g.n {
            for iy in 0..g.shifts[0] {
                for ix in 0..g.shifts[1] {
                    for oy in 0..g.out[0] {
                        for ox in 0..g.out[1] {
                            let (y0, x0) = g.corner(oy, ox);
                            let (sy, sx) = g.shift_of(iy, ix);
                            let mut v = 0.0f64;
                            for ky in 0..g.patch[0] as isize {
                                for kx in 0..g.patch[1] as isize {
                                    let (a, b) = ((y0 + ky, x0 + kx), (y0 + ky + sy, x0 + kx + sx));
                                    if a.0 < 0
                                        || a.0 >= h
                                        || a.1 < 0
                                        || a.1 >= w
                                        || b.0 < 0
                                        || b.0 >= h
                                        || b.1 < 0
                                        || b.1 >= w
                                    {
                                        continue;
                                    }
                                    for ch in 0..c {
                                        let (i1, i2) = (at(n, ch, a.0, a.1), at(n, ch, b.0, b.1));
                                        v += x1[i1] as f64 * x2[i2] as f64;
                                        gx1[i1] += x2[i2] as f64 * gy[k] as f64;
                                        gx2[i2] += x1[i1] as f64 * gy[k] as f64;
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
            let close =
                |a: &[f32], b: &[f64]| a.iter().zip(b).all(|(x, y)| (*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()));
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
        // 1x2x3x4 ones, patch (3, 1), shift (0, 1): [[0,6,6,6],[6,6,6,6],[6,6,6,0]]
        let g = Geometry::new([1, 3, 4, 2], [3, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]).unwrap(); // dims n, h, w, c
        assert_eq!((g.out, g.shifts), ([1, 4], [1, 3]));
        let x = vec![1.0; 24];
        let mut y = vec![0.0; 12];
        forward(&g, &x, &x, &mut y).unwrap();
        // layout (n, iy, ix, oy, ox)
        assert_eq!(y, [0., 6., 6., 6., 6., 6., 6., 6., 6., 6., 6., 0.]);
        assert!(Geometry::new([1, 3, 4, 2], [4, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [1, 1, -1, 0, 1, 1, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(Geometry::new([1, 3, 4, 2], [1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0]).is_err());
        assert!(forward(&g, &x, &x, &mut [0.0; 3]).is_err());
    }
}
