//! Softmax, log-softmax and softmax cross-entropy over the middle axis `c` of
//! an (outer, c, inner) array, with their gradients.
//!
//! Two layouts: with inner == 1 each softmax is one contiguous row and the
//! loops run along it (lane-wise reductions); with inner > 1 the loops run
//! along the inner axis, over chunks of up to [`W`] columns at once.  All
//! are max-subtracted (stable) and split over `outer` for the thread pool.

use crate::par::{par_for, Rows};
use crate::reduce::{Max, Reducer, Sum};
use crate::simd;
use crate::vmath::{exp, ln};
use crate::{Error, Result};

const W: usize = 256;
const LANES: usize = 32;

/// R over the lanes of `acc`, folded pairwise.
#[inline(always)]
fn fold<R: Reducer>(mut acc: [f32; LANES]) -> f32 {
    let mut h = LANES;
    while h > 1 {
        h /= 2;
        for k in 0..h {
            acc[k] = R::combine(acc[k], acc[k + h]);
        }
    }
    acc[0]
}

/// R over the elements of `x` mapped by `f`, in LANES independent lanes
/// (vectorised).
#[inline(always)]
fn lanes<R: Reducer>(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut acc = [R::IDENTITY; LANES];
    for ch in chunks {
        for k in 0..LANES {
            acc[k] = R::combine(acc[k], f(ch[k]));
        }
    }
    let t = tail.iter().fold(R::IDENTITY, |r, &v| R::combine(r, f(v)));
    R::combine(fold::<R>(acc), t)
}

/// Sum over i of f(a[i], b[i]) (a and b of the same length), in lanes.
#[inline(always)]
fn lanes_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let (ca, ta) = a.as_chunks::<LANES>();
    let (cb, tb) = b[..a.len()].as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..LANES {
            acc[k] += f(x[k], y[k]);
        }
    }
    let t: f32 = ta.iter().zip(tb).map(|(&x, &y)| f(x, y)).sum();
    fold::<Sum>(acc) + t
}

#[inline(always)]
fn acc(accum: bool, old: f32, v: f32) -> f32 {
    if accum {
        old + v
    } else {
        v
    }
}

/// Per column of a chunk: max over the c rows (row j of the chunk is
/// x[j * inner..][..w]).
#[inline(always)]
fn col_max(x: &[f32], c: usize, inner: usize, m: &mut [f32]) {
    let w = m.len();
    m.fill(f32::NEG_INFINITY);
    for j in 0..c {
        for (m, &v) in m.iter_mut().zip(&x[j * inner..j * inner + w]) {
            *m = m.max(v);
        }
    }
}

/// Per column: sum over rows of exp(x - m).
#[inline(always)]
fn col_sum_exp(x: &[f32], c: usize, inner: usize, m: &[f32], s: &mut [f32]) {
    let w = m.len();
    s.fill(0.0);
    for j in 0..c {
        for ((s, &v), &m) in s.iter_mut().zip(&x[j * inner..j * inner + w]).zip(m) {
            *s += exp(v - m);
        }
    }
}

/// Checks sizes; returns outer * c * inner.
fn size(outer: usize, c: usize, inner: usize, lens: &[usize]) -> Result<usize> {
    let n = outer.checked_mul(c).and_then(|v| v.checked_mul(inner)).ok_or(Error::Invalid)?;
    if lens.iter().any(|&l| l < n) {
        return Err(Error::Invalid);
    }
    Ok(n)
}

/// y = softmax(x) (or log_softmax when `log`) over the middle axis.
pub fn softmax(x: &[f32], y: &mut [f32], outer: usize, c: usize, inner: usize, log: bool) -> Result {
    let n = size(outer, c, inner, &[x.len(), y.len()])?;
    if n == 0 {
        return Ok(());
    }
    let per = c * inner;
    par_for((Rows(&mut y[..n], per), Rows(&x[..n], per)), 4 * per, |(Rows(y, _), Rows(x, _))| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (y, x) in y.chunks_exact_mut(per).zip(x.chunks_exact(per)) {
                    if inner == 1 {
                        let m = lanes::<Max>(x, |v| v);
                        if log {
                            let ls = ln(lanes::<Sum>(x, |v| exp(v - m)));
                            y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x - m) - ls);
                        } else {
                            y.iter_mut().zip(x).for_each(|(y, &x)| *y = exp(x - m));
                            let s = lanes::<Sum>(y, |v| v);
                            y.iter_mut().for_each(|y| *y /= s);
                        }
                        continue;
                    }
                    for c0 in (0..inner).step_by(W) {
                        let w = W.min(inner - c0);
                        let (mut m, mut s) = ([0.0f32; W], [0.0f32; W]);
                        let (m, s) = (&mut m[..w], &mut s[..w]);
                        col_max(&x[c0..], c, inner, m);
                        col_sum_exp(&x[c0..], c, inner, m, s);
                        if log {
                            s.iter_mut().for_each(|s| *s = ln(*s));
                        }
                        for j in 0..c {
                            let at = j * inner + c0..j * inner + c0 + w;
                            let (y, x) = (&mut y[at.clone()], &x[at]);
                            for (((y, &x), &m), &s) in y.iter_mut().zip(x).zip(&*m).zip(&*s) {
                                *y = if log { (x - m) - s } else { exp(x - m) / s };
                            }
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// Softmax: gx = (accum ? gx : 0) + y * (gy - sum_c(gy * y));
/// log-softmax: gx = (accum ? gx : 0) + gy - exp(y) * sum_c(gy).
#[allow(clippy::too_many_arguments)]
pub fn softmax_grad(
    y: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    outer: usize,
    c: usize,
    inner: usize,
    log: bool,
    accum: bool,
) -> Result {
    let n = size(outer, c, inner, &[y.len(), gy.len(), gx.len()])?;
    if n == 0 {
        return Ok(());
    }
    let per = c * inner;
    #[inline(always)]
    fn grad(log: bool, y: f32, gy: f32, d: f32) -> f32 {
        if log {
            gy - exp(y) * d
        } else {
            y * (gy - d)
        }
    }
    let data = (Rows(&mut gx[..n], per), Rows(&y[..n], per), Rows(&gy[..n], per));
    par_for(data, 3 * per, |(Rows(gx, _), Rows(y, _), Rows(gy, _))| {
        simd::dispatch(
            #[inline(always)]
            || {
                let rows = gx.chunks_exact_mut(per).zip(y.chunks_exact(per)).zip(gy.chunks_exact(per));
                for ((gx, y), gy) in rows {
                    if inner == 1 {
                        let d = if log { lanes::<Sum>(gy, |v| v) } else { lanes_sum2(gy, y, |g, y| g * y) };
                        for ((g, &y), &gy) in gx.iter_mut().zip(y).zip(gy) {
                            *g = acc(accum, *g, grad(log, y, gy, d));
                        }
                        continue;
                    }
                    for c0 in (0..inner).step_by(W) {
                        let w = W.min(inner - c0);
                        let mut d = [0.0f32; W];
                        let d = &mut d[..w];
                        for j in 0..c {
                            let at = j * inner + c0..j * inner + c0 + w;
                            for ((d, &y), &gy) in d.iter_mut().zip(&y[at.clone()]).zip(&gy[at]) {
                                *d += if log { gy } else { gy * y };
                            }
                        }
                        for j in 0..c {
                            let at = j * inner + c0..j * inner + c0 + w;
                            let (g, y, gy) = (&mut gx[at.clone()], &y[at.clone()], &gy[at]);
                            for (((g, &y), &gy), &d) in g.iter_mut().zip(y).zip(gy).zip(&*d) {
                                *g = acc(accum, *g, grad(log, y, gy, d));
                            }
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// Labels as indices, or `OutOfRange` if any is outside [0, c).
fn check_labels(t: &[i64], c: usize) -> Result {
    if t.iter().all(|&v| v >= 0 && (v as u64) < c as u64) {
        Ok(())
    } else {
        Err(Error::OutOfRange)
    }
}

/// y[o, i] = -log_softmax(x)[o, t[o, i], i].
pub fn softmax_ce(x: &[f32], t: &[i64], y: &mut [f32], outer: usize, c: usize, inner: usize) -> Result {
    let n = size(outer, c, inner, &[x.len()])?;
    let nt = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    if t.len() < nt || y.len() < nt {
        return Err(Error::Invalid);
    }
    if nt == 0 {
        return Ok(());
    }
    let t = &t[..nt];
    check_labels(t, c)?; // c == 0 fails here
    let per = c * inner;
    let data = (Rows(&mut y[..nt], inner), Rows(&x[..n], per), Rows(t, inner));
    par_for(data, 2 * per, |(Rows(y, _), Rows(x, _), Rows(t, _))| {
        simd::dispatch(
            #[inline(always)]
            || {
                let rows = y.chunks_exact_mut(inner).zip(x.chunks_exact(per)).zip(t.chunks_exact(inner));
                for ((y, x), t) in rows {
                    if inner == 1 {
                        let m = lanes::<Max>(x, |v| v);
                        let s = lanes::<Sum>(x, |v| exp(v - m));
                        y[0] = (m - x[t[0] as usize]) + ln(s);
                        continue;
                    }
                    for c0 in (0..inner).step_by(W) {
                        let w = W.min(inner - c0);
                        let (mut m, mut s) = ([0.0f32; W], [0.0f32; W]);
                        let (m, s) = (&mut m[..w], &mut s[..w]);
                        col_max(&x[c0..], c, inner, m);
                        col_sum_exp(&x[c0..], c, inner, m, s);
                        for i in 0..w {
                            let label = t[c0 + i] as usize;
                            y[c0 + i] = (m[i] - x[label * inner + c0 + i]) + ln(s[i]);
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// gx[o, k, i] = (accum ? gx : 0) + gy[o, i] * (softmax(x)[o, k, i] - (k == t[o, i])).
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce_grad(
    x: &[f32],
    t: &[i64],
    gy: &[f32],
    gx: &mut [f32],
    outer: usize,
    c: usize,
    inner: usize,
    accum: bool,
) -> Result {
    let n = size(outer, c, inner, &[x.len(), gx.len()])?;
    let nt = outer.checked_mul(inner).ok_or(Error::Invalid)?;
    if t.len() < nt || gy.len() < nt {
        return Err(Error::Invalid);
    }
    if nt == 0 {
        return Ok(());
    }
    let t = &t[..nt];
    check_labels(t, c)?;
    let per = c * inner;
    let data = (Rows(&mut gx[..n], per), Rows(&x[..n], per), Rows(t, inner), Rows(&gy[..nt], inner));
    par_for(data, 3 * per, |(Rows(gx, _), Rows(x, _), Rows(t, _), Rows(gy, _))| {
        simd::dispatch(
            #[inline(always)]
            || {
                let rows = gx
                    .chunks_exact_mut(per)
                    .zip(x.chunks_exact(per))
                    .zip(t.chunks_exact(inner))
                    .zip(gy.chunks_exact(inner));
                for (((gx, x), t), gy) in rows {
                    if inner == 1 {
                        let m = lanes::<Max>(x, |v| v);
                        let s = lanes::<Sum>(x, |v| exp(v - m));
                        let (scale, label) = (gy[0] / s, t[0] as usize);
                        for (g, &x) in gx.iter_mut().zip(x) {
                            *g = acc(accum, *g, exp(x - m) * scale);
                        }
                        gx[label] -= gy[0];
                        continue;
                    }
                    for c0 in (0..inner).step_by(W) {
                        let w = W.min(inner - c0);
                        let (mut m, mut s) = ([0.0f32; W], [0.0f32; W]);
                        let (m, s) = (&mut m[..w], &mut s[..w]);
                        col_max(&x[c0..], c, inner, m);
                        col_sum_exp(&x[c0..], c, inner, m, s);
                        s.iter_mut().zip(&gy[c0..c0 + w]).for_each(|(s, &g)| *s = g / *s);
                        for j in 0..c {
                            let at = j * inner + c0..j * inner + c0 + w;
                            let (g, x) = (&mut gx[at.clone()], &x[at]);
                            for (((g, &x), &m), &s) in g.iter_mut().zip(x).zip(&*m).zip(&*s) {
                                *g = acc(accum, *g, exp(x - m) * s);
                            }
                        }
                        for i in 0..w {
                            gx[t[c0 + i] as usize * inner + c0 + i] -= gy[c0 + i];
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

    fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    /// f64 reference softmax (log or not) over the middle axis.
    fn ref_softmax(x: &[f32], outer: usize, c: usize, inner: usize, log: bool) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * c + j) * inner + i;
                let m = (0..c).map(|j| x[at(j)] as f64).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..c).map(|j| (x[at(j)] as f64 - m).exp()).sum();
                for j in 0..c {
                    let v = x[at(j)] as f64 - m;
                    y[at(j)] = if log { v - s.ln() } else { v.exp() / s };
                }
            }
        }
        y
    }

    fn close(got: &[f32], want: &[f64], tol: f64) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "at {i}: {g} vs {w}");
        }
    }

    const SHAPES: [(usize, usize, usize); 7] =
        [(1, 1, 1), (5, 10, 1), (3, 100, 1), (2, 7, 3), (4, 33, 300), (3000, 20, 1), (2, 1000, 40)];

    #[test]
    fn softmax_forward_and_grad() {
        for &(outer, c, inner) in &SHAPES {
            let n = outer * c * inner;
            // large values: the max subtraction must keep this finite
            let x: Vec<f32> = data(n, 1, 20.0).iter().map(|v| v + 1e4).collect();
            let gy = data(n, 2, 2.0);
            for log in [false, true] {
                let mut y = vec![0.0; n];
                softmax(&x, &mut y, outer, c, inner, log).unwrap();
                let want = ref_softmax(&x, outer, c, inner, log);
                close(&y, &want, 2e-5);
                // gradient (f64 reference from the f32 outputs)
                let mut gx = vec![0.5; n];
                softmax_grad(&y, &gy, &mut gx, outer, c, inner, log, true).unwrap();
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |j: usize| (o * c + j) * inner + i;
                        let d: f64 = (0..c).map(|j| gy[at(j)] as f64 * if log { 1.0 } else { y[at(j)] as f64 }).sum();
                        for j in 0..c {
                            let (yv, g) = (y[at(j)] as f64, gy[at(j)] as f64);
                            let w = 0.5 + if log { g - yv.exp() * d } else { yv * (g - d) };
                            assert!(
                                (gx[at(j)] as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                                "log={log} {outer}x{c}x{inner}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn cross_entropy_and_grad() {
        for &(outer, c, inner) in &SHAPES {
            let n = outer * c * inner;
            let x: Vec<f32> = data(n, 3, 30.0).iter().map(|v| v - 1e4).collect();
            let t: Vec<i64> = (0..outer * inner).map(|k| ((k * 7 + 3) % c) as i64).collect();
            let gy = data(outer * inner, 4, 2.0);
            let mut y = vec![0.0; outer * inner];
            softmax_ce(&x, &t, &mut y, outer, c, inner).unwrap();
            let ls = ref_softmax(&x, outer, c, inner, true);
            let sm = ref_softmax(&x, outer, c, inner, false);
            let want: Vec<f64> =
                (0..outer * inner).map(|k| -ls[((k / inner) * c + t[k] as usize) * inner + k % inner]).collect();
            close(&y, &want, 2e-5);
            let mut gx = vec![1.0; n];
            softmax_ce_grad(&x, &t, &gy, &mut gx, outer, c, inner, true).unwrap();
            for o in 0..outer {
                for j in 0..c {
                    for i in 0..inner {
                        let at = (o * c + j) * inner + i;
                        let onehot = (t[o * inner + i] == j as i64) as i32 as f64;
                        let w = 1.0 + gy[o * inner + i] as f64 * (sm[at] - onehot);
                        assert!((gx[at] as f64 - w).abs() < 1e-5 * (1.0 + w.abs()));
                    }
                }
            }
            let mut gx2 = vec![f32::NAN; n];
            softmax_ce_grad(&x, &t, &gy, &mut gx2, outer, c, inner, false).unwrap();
            assert!(gx2.iter().zip(&gx).all(|(a, b)| (a + 1.0 - b).abs() < 1e-5));
        }
    }

    #[test]
    fn labels_out_of_range() {
        let x = [0.0f32; 6];
        let mut y = [0.0f32; 2];
        let mut gx = [0.0f32; 6];
        for bad in [[0i64, 3], [-1, 0]] {
            assert_eq!(softmax_ce(&x, &bad, &mut y, 2, 3, 1), Err(Error::OutOfRange));
            assert_eq!(softmax_ce_grad(&x, &bad, &[1.0; 2], &mut gx, 2, 3, 1, false), Err(Error::OutOfRange));
        }
        assert_eq!(y, [0.0; 2]); // nothing written
        assert_eq!(softmax(&x, &mut gx, 2, 4, 1, false), Err(Error::Invalid));
    }
}
