//! Strided views: an output shape (C-contiguous) read from N inputs through
//! element strides (0 for broadcast, negative allowed).
// Index loops over several arrays at once read best as they are.
#![allow(clippy::needless_range_loop)]

use crate::{Error, Result};
use std::ops::Range;

/// Most dimensions an array may have.
pub const MAX_NDIM: usize = 16;

/// A strided input: the element at multi-index 0 is `data[base]`.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub data: &'a [f32],
    pub base: usize,
}

/// Offsets of an array of `shape` with `strides` relative to its first
/// element: (lowest, highest).  `None` on overflow.  `shape` has no zeros.
pub fn extent(shape: &[usize], strides: &[isize]) -> Option<(isize, isize)> {
    let (mut lo, mut hi) = (0isize, 0isize);
    for (&n, &s) in shape.iter().zip(strides) {
        let span = isize::try_from(n - 1).ok()?.checked_mul(s)?;
        if span < 0 {
            lo = lo.checked_add(span)?;
        } else {
            hi = hi.checked_add(span)?;
        }
    }
    Some((lo, hi))
}

impl<'a> Input<'a> {
    /// Checks that every element of the view is inside `data`.
    pub fn new(data: &'a [f32], base: usize, shape: &[usize], strides: &[isize]) -> Result<Self> {
        if shape.contains(&0) {
            return Ok(Input { data, base });
        }
        let (lo, hi) = extent(shape, strides).ok_or(Error::Invalid)?;
        let base = isize::try_from(base).map_err(|_| Error::Invalid)?;
        let inside = base.checked_add(lo).is_some_and(|a| a >= 0)
            && base.checked_add(hi).is_some_and(|b| b < data.len() as isize);
        if inside {
            Ok(Input { data, base: base as usize })
        } else {
            Err(Error::Invalid)
        }
    }
}

/// The iteration space of a pointwise kernel: a C-contiguous output of
/// `shape`, and the element strides of `N` inputs over it.
#[derive(Clone, Copy, Debug)]
pub struct Layout<const N: usize> {
    ndim: usize,
    shape: [usize; MAX_NDIM],
    strides: [[isize; MAX_NDIM]; N],
}

/// Element strides of a C-contiguous array of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> [isize; MAX_NDIM] {
    let mut s = [0isize; MAX_NDIM];
    let mut acc = 1isize;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc = acc.wrapping_mul(shape[d] as isize);
    }
    s
}

impl<const N: usize> Layout<N> {
    /// Validates the shape (at most [`MAX_NDIM`] dims, size fits in memory)
    /// and simplifies it: size-1 dims are dropped, and neighbouring dims that
    /// every input walks contiguously are merged.
    pub fn new(shape: &[usize], strides: [&[isize]; N]) -> Result<Self> {
        if shape.len() > MAX_NDIM || strides.iter().any(|s| s.len() != shape.len()) {
            return Err(Error::Invalid);
        }
        let size = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        if size.is_none_or(|s| s > isize::MAX as usize / 4) {
            return Err(Error::Invalid);
        }
        let mut l = Layout { ndim: 0, shape: [1; MAX_NDIM], strides: [[0; MAX_NDIM]; N] };
        if size == Some(0) {
            l.shape[0] = 0;
            l.ndim = 1;
            return Ok(l);
        }
        for d in 0..shape.len() {
            if shape[d] == 1 {
                continue;
            }
            let nd = l.ndim;
            let mergeable =
                nd > 0 && (0..N).all(|k| strides[k][d].checked_mul(shape[d] as isize) == Some(l.strides[k][nd - 1]));
            if mergeable {
                l.shape[nd - 1] *= shape[d];
                for k in 0..N {
                    l.strides[k][nd - 1] = strides[k][d];
                }
            } else {
                l.shape[nd] = shape[d];
                for k in 0..N {
                    l.strides[k][nd] = strides[k][d];
                }
                l.ndim += 1;
            }
        }
        if l.ndim == 0 {
            l.ndim = 1; // a scalar: one row of one element
        }
        Ok(l)
    }

    /// Number of output elements.
    pub fn size(&self) -> usize {
        self.shape[..self.ndim].iter().product()
    }

    /// The simplified shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.ndim]
    }

    /// The strides of input `k` over the simplified shape.
    pub fn strides(&self, k: usize) -> &[isize] {
        &self.strides[k][..self.ndim]
    }

    /// Stride of each input along the innermost (row) dimension.
    #[inline(always)]
    pub fn row_strides(&self) -> [isize; N] {
        std::array::from_fn(|k| self.strides[k][self.ndim - 1])
    }

    /// Calls `row(out, offsets, len)` for the pieces of rows (runs along the
    /// innermost dimension) that cover the output elements `range`, in order:
    /// `out` is the flat output index of the first element, `offsets` the
    /// offsets of that element in each input.
    #[inline(always)]
    pub fn for_rows(&self, range: Range<usize>, mut row: impl FnMut(usize, [isize; N], usize)) {
        if range.is_empty() {
            return;
        }
        let last = self.ndim - 1;
        let len = self.shape[last];
        let (mut r, col) = (range.start / len, range.start % len);
        let mut idx = [0usize; MAX_NDIM];
        let mut offs = [0isize; N];
        for d in (0..last).rev() {
            idx[d] = r % self.shape[d];
            r /= self.shape[d];
            for k in 0..N {
                offs[k] += idx[d] as isize * self.strides[k][d];
            }
        }
        let mut pos = range.start;
        let mut first = col;
        while pos < range.end {
            let n = (len - first).min(range.end - pos);
            row(pos, std::array::from_fn(|k| offs[k] + first as isize * self.strides[k][last]), n);
            pos += n;
            first = 0;
            for d in (0..last).rev() {
                idx[d] += 1;
                for k in 0..N {
                    offs[k] += self.strides[k][d];
                }
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
                for k in 0..N {
                    offs[k] -= self.shape[d] as isize * self.strides[k][d];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplify_merges_and_drops() {
        // (2, 1, 3, 4) contiguous + broadcast row (0, 0, 0, 1)
        let l = Layout::<2>::new(&[2, 1, 3, 4], [&[12, 12, 4, 1], &[0, 0, 0, 1]]).unwrap();
        assert_eq!(l.shape(), &[6, 4]);
        assert_eq!(l.strides(0), &[4, 1]);
        assert_eq!(l.strides(1), &[0, 1]);
        let l = Layout::<1>::new(&[2, 3], [&[3, 1]]).unwrap();
        assert_eq!(l.shape(), &[6]);
        let l = Layout::<1>::new(&[], [&[]]).unwrap();
        assert_eq!((l.shape(), l.size()), (&[1][..], 1));
        assert!(Layout::<1>::new(&[1; 17], [&[0; 17]]).is_err());
        assert!(Layout::<1>::new(&[usize::MAX, 2], [&[0, 0]]).is_err());
        assert_eq!(Layout::<1>::new(&[3, 0], [&[1, 1]]).unwrap().size(), 0);
    }

    #[test]
    fn rows_cover_range_with_offsets() {
        // transpose of a (3, 4) array: output (4, 3), input strides (1, 4)
        let l = Layout::<1>::new(&[4, 3], [&[1, 4]]).unwrap();
        for (a, b) in [(0, 12), (1, 11), (5, 6), (4, 10)] {
            let mut seen = vec![];
            l.for_rows(a..b, |pos, off, n| {
                for i in 0..n {
                    seen.push((pos + i, off[0] + i as isize * 4));
                }
            });
            let want: Vec<_> = (a..b).map(|p| (p, ((p % 3) * 4 + p / 3) as isize)).collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn extents() {
        assert_eq!(extent(&[3, 4], &[-4, 1]), Some((-8, 3)));
        assert_eq!(extent(&[3, 4], &[0, 0]), Some((0, 0)));
        assert!(extent(&[usize::MAX, 2], &[2, 1]).is_none());
        let d = [0.0f32; 12];
        assert!(Input::new(&d, 8, &[3, 4], &[-4, 1]).is_ok());
        assert!(Input::new(&d, 7, &[3, 4], &[-4, 1]).is_err());
    }
}
