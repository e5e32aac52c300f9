//! Sliding windows over N-D arrays: the geometry shared by convolution
//! (im2col / col2im and the direct depthwise kernels) and pooling.
//!
//! An array is seen as `outer` contiguous planes of a spatial shape; the
//! kernels walk the output one *row* (a run along the last spatial axis) at a
//! time.  For one output row, [`Taps::row`] lists the input rows that the
//! window's taps over the other axes reach (taps in padding are dropped), in
//! row-major order of the taps; along the last axis, [`Axis::span`] gives the
//! run of outputs whose tap lands inside the input, so that the innermost
//! loops are plain strided runs without bounds tests (vectorised when the
//! stride is 1).

use crate::{Error, Result};

/// Most spatial axes a window may have.
pub const MAX_AXES: usize = 8;

/// One spatial axis of a sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    /// Input length.
    pub len: usize,
    /// Output length.
    pub out: usize,
    /// Number of taps (kernel size).
    pub k: usize,
    /// Stride, at least 1.
    pub s: usize,
    /// Padding before the first element.
    pub p: usize,
    /// Dilation, at least 1.
    pub d: usize,
}

impl Axis {
    /// Checks stride, dilation and that `out` outputs fit in a sane range.
    pub fn check(&self) -> Result {
        if self.s == 0 || self.d == 0 || self.k == 0 {
            return Err(Error::Invalid);
        }
        // positions computed below must not overflow
        let reach = self
            .out
            .checked_mul(self.s)
            .and_then(|v| v.checked_add(self.k.checked_mul(self.d)?))
            .and_then(|v| v.checked_add(self.len))
            .and_then(|v| v.checked_add(self.p));
        if reach.is_none_or(|r| r > isize::MAX as usize / 2) {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// The convolution output length of this axis:
    /// (len + 2p - d (k - 1) - 1) / s + 1, or None when the dilated kernel
    /// does not fit in the padded input.
    pub fn conv_out(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
        let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
        let padded = len.checked_add(p.checked_mul(2)?)?;
        if s == 0 || padded < span {
            return None;
        }
        Some((padded - span) / s + 1)
    }

    /// Input index of output `o`, tap `t`, or None when it falls in padding.
    #[inline(always)]
    pub fn at(&self, o: usize, t: usize) -> Option<usize> {
        let i = o * self.s + t * self.d;
        if i >= self.p && i - self.p < self.len {
            Some(i - self.p)
        } else {
            None
        }
    }

    /// For tap `t`: the outputs `[lo, hi)` whose tap lies inside the input,
    /// and the input index of output `lo` (consecutive outputs step by `s`).
    #[inline(always)]
    pub fn span(&self, t: usize) -> (usize, usize, usize) {
        let off = t * self.d;
        let lim = self.len + self.p;
        if off >= lim {
            return (0, 0, 0);
        }
        let hi = (lim - off).div_ceil(self.s).min(self.out);
        let lo = if off >= self.p { 0 } else { (self.p - off).div_ceil(self.s) };
        if lo >= hi {
            return (0, 0, 0);
        }
        (lo, hi, lo * self.s + off - self.p)
    }
}

/// Product of `f` over the axes, with overflow checks.
pub fn product(axes: &[Axis], f: impl Fn(&Axis) -> usize) -> Result<usize> {
    axes.iter().try_fold(1usize, |a, x| a.checked_mul(f(x))).ok_or(Error::Invalid)
}

/// Element strides of a C-contiguous array of the given lengths.
pub fn strides(lens: impl Iterator<Item = usize>, n: usize) -> [usize; MAX_AXES] {
    let mut lens_a = [0usize; MAX_AXES];
    for (i, l) in lens.take(n).enumerate() {
        lens_a[i] = l;
    }
    let mut s = [0usize; MAX_AXES];
    let mut acc = 1usize;
    for i in (0..n).rev() {
        s[i] = acc;
        acc = acc.wrapping_mul(lens_a[i]);
    }
    s
}

/// The taps of a window over all axes but the last, for one output row.
pub struct Taps {
    /// (offset of the input row in the plane, flat index of the tap's first
    /// element along the last axis in the kernel)
    pub list: Vec<(usize, usize)>,
    tmp: Vec<(usize, usize)>,
    in_st: [usize; MAX_AXES],
    k_st: [usize; MAX_AXES],
}

impl Taps {
    pub fn new(axes: &[Axis]) -> Self {
        let n = axes.len();
        Taps {
            list: Vec::new(),
            tmp: Vec::new(),
            in_st: strides(axes.iter().map(|a| a.len), n),
            k_st: strides(axes.iter().map(|a| a.k), n),
        }
    }

    /// Fills `list` for the output row with multi-index `o` (one entry per
    /// axis but the last), taps in row-major order.
    #[inline]
    pub fn row(&mut self, axes: &[Axis], o: &[usize]) {
        self.list.clear();
        self.list.push((0, 0));
        for (i, (a, &oi)) in axes.iter().zip(o).enumerate() {
            std::mem::swap(&mut self.list, &mut self.tmp);
            self.list.clear();
            for &(off, kb) in &self.tmp {
                for t in 0..a.k {
                    if let Some(ii) = a.at(oi, t) {
                        self.list.push((off + ii * self.in_st[i], kb + t * self.k_st[i]));
                    }
                }
            }
        }
    }
}

/// Multi-index of output row `r` over the axes but the last (row-major).
#[inline]
pub fn row_index(axes: &[Axis], mut r: usize, o: &mut [usize; MAX_AXES]) {
    let n = axes.len() - 1;
    for i in (0..n).rev() {
        let m = axes[i].out.max(1);
        o[i] = r % m;
        r /= m;
    }
}

/// Number of output rows (outputs over all axes but the last).
pub fn rows(axes: &[Axis]) -> usize {
    axes[..axes.len() - 1].iter().map(|a| a.out).product()
}

/// y[j] += a * x[start + j * s] for j < y.len(): one run of taps.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32], start: usize, s: usize) {
    let n = y.len();
    if n == 0 {
        return;
    }
    let xs = &x[start..start + (n - 1) * s + 1];
    if s == 1 {
        for (v, &u) in y.iter_mut().zip(xs) {
            *v += a * u;
        }
    } else {
        for (v, &u) in y.iter_mut().zip(xs.iter().step_by(s)) {
            *v += a * u;
        }
    }
}

/// x[start + j * s] += a * y[j] for j < y.len(): the transpose of [`axpy`].
#[inline(always)]
pub fn axpy_t(x: &mut [f32], start: usize, s: usize, a: f32, y: &[f32]) {
    let n = y.len();
    if n == 0 {
        return;
    }
    let xs = &mut x[start..start + (n - 1) * s + 1];
    if s == 1 {
        for (v, &u) in xs.iter_mut().zip(y) {
            *v += a * u;
        }
    } else {
        for (v, &u) in xs.iter_mut().step_by(s).zip(y) {
            *v += a * u;
        }
    }
}

/// Lanes of the partial sums kept by [`dot_lanes`].
pub const LANES: usize = 16;

/// lanes[k] += sum over j = k (mod LANES) of y[j] * x[j]: a dot product
/// whose final reduction is left to the caller (so that many short dot
/// products into the same sum cost no horizontal reduction each).
#[inline(always)]
pub fn dot_lanes(lanes: &mut [f32; LANES], y: &[f32], x: &[f32]) {
    let n = y.len().min(x.len());
    let (yc, yr) = y[..n].as_chunks::<LANES>();
    let (xc, xr) = x[..n].as_chunks::<LANES>();
    for (a, b) in yc.iter().zip(xc) {
        for k in 0..LANES {
            lanes[k] += a[k] * b[k];
        }
    }
    for (k, (a, b)) in yr.iter().zip(xr).enumerate() {
        lanes[k] += a * b;
    }
}

/// Pairwise sum of the lanes.
#[inline(always)]
pub fn sum_lanes(lanes: &[f32; LANES]) -> f32 {
    let mut v = *lanes;
    let mut h = LANES;
    while h > 1 {
        h /= 2;
        for k in 0..h {
            v[k] += v[k + h];
        }
    }
    v[0]
}

/// The run x[start + j s], j < n: a slice of x itself when s == 1, else
/// gathered into `tmp` (so that the loops that use it are contiguous).
#[inline(always)]
pub fn gather_run<'a>(x: &'a [f32], start: usize, s: usize, n: usize, tmp: &'a mut [f32]) -> &'a [f32] {
    if s == 1 || n == 0 {
        return &x[start..start + n];
    }
    let xs = &x[start..start + (n - 1) * s + 1];
    for (t, &u) in tmp[..n].iter_mut().zip(xs.iter().step_by(s)) {
        *t = u;
    }
    &tmp[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_matches_at() {
        for len in 0..7 {
            for k in 1..4 {
                for s in 1..4 {
                    for p in 0..4 {
                        for d in 1..3 {
                            let Some(out) = Axis::conv_out(len, k, s, p, d) else { continue };
                            let a = Axis { len, out: out + 2, k, s, p, d };
                            for t in 0..k {
                                let (lo, hi, start) = a.span(t);
                                for o in 0..a.out {
                                    let inside = o >= lo && o < hi;
                                    assert_eq!(a.at(o, t).is_some(), inside, "{a:?} t={t} o={o}");
                                    if inside {
                                        assert_eq!(a.at(o, t), Some(start + (o - lo) * s));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(Axis::conv_out(5, 3, 1, 1, 1), Some(5));
        assert_eq!(Axis::conv_out(5, 3, 2, 0, 2), Some(1));
        assert_eq!(Axis::conv_out(1, 3, 1, 0, 1), None);
    }

    #[test]
    fn taps_in_row_major_order() {
        let axes = [
            Axis { len: 3, out: 3, k: 2, s: 1, p: 1, d: 1 },
            Axis { len: 4, out: 2, k: 3, s: 2, p: 1, d: 1 },
            Axis { len: 5, out: 5, k: 1, s: 1, p: 0, d: 1 },
        ];
        let mut taps = Taps::new(&axes);
        taps.row(&axes, &[0, 1]);
        // axis 0: o=0 -> taps 0 (padding), 1 (i=0); axis 1: o=1 -> i = 1, 2, 3
        let want: Vec<(usize, usize)> = (0..3).map(|t| ((1 + t) * 5, 3 + t)).collect();
        assert_eq!(taps.list, want);
        let mut o = [0; MAX_AXES];
        row_index(&axes, 5, &mut o);
        assert_eq!(&o[..2], &[2, 1]);
        assert_eq!(rows(&axes), 6);
    }

    #[test]
    fn dot_and_axpy() {
        let x: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
        let y: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        for s in 1..3 {
            let want: f32 = y.iter().enumerate().map(|(j, v)| v * x[3 + j * s]).sum();
            let mut tmp = vec![0.0f32; 37];
            let mut lanes = [0.0f32; LANES];
            dot_lanes(&mut lanes, &y, gather_run(&x, 3, s, 37, &mut tmp));
            assert!((sum_lanes(&lanes) - want).abs() < 1e-3 * want.abs().max(1.0));
            let mut z = vec![1.0f32; 37];
            axpy(&mut z, 2.0, &x, 3, s);
            assert!(z.iter().enumerate().all(|(j, v)| *v == 1.0 + 2.0 * x[3 + j * s]));
            let mut w = x.clone();
            axpy_t(&mut w, 3, s, 2.0, &y);
            assert_eq!(w[3 + 36 * s], x[3 + 36 * s] + 2.0 * y[36]);
        }
    }
}
