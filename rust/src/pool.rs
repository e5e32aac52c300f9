//! Max, sum and average pooling over N-D windows, forward and backward.
//!
//! The input is `outer` contiguous planes of the spatial shape of the axes
//! (channel-last data adds the channel axis as a last axis with one tap, so
//! that the inner loops run over contiguous channels).  Windows follow
//! NNabla: output o of an axis covers padded positions [o s, o s + k);
//! elements in padding are skipped (max, sum) and the average divides by the
//! number of window positions inside the padded input (`including_pad`) or
//! inside the input itself.  Max pooling's gradient goes to the first largest
//! element of each window in row-major order.
//!
//! Forward runs over output rows in parallel; backward over planes.  Many
//! small planes are pooled window by window through an index table.

use crate::par::{par_for, Rows};
use crate::simd;
use crate::window::{self, row_index, Axis, Taps, MAX_AXES};
use crate::{Error, Result};

pub const MAX: u32 = 0;
pub const SUM: u32 = 1;
pub const AVG: u32 = 2;

/// Geometry of a pooling call.
#[derive(Clone, Debug)]
pub struct PoolGeom {
    pub outer: usize,
    pub axes: Vec<Axis>,
    pub including_pad: bool,
}

impl PoolGeom {
    /// From the C ABI layout: [outer, ndim, including_pad, then per axis
    /// (len, out, kernel, stride, pad)].
    pub fn from_slice(g: &[usize]) -> Result<Self> {
        if g.len() < 3 {
            return Err(Error::Invalid);
        }
        let (outer, nd, incl) = (g[0], g[1], g[2]);
        if nd == 0 || nd > MAX_AXES || g.len() != 3 + 5 * nd {
            return Err(Error::Invalid);
        }
        let axes: Vec<Axis> = (0..nd)
            .map(|i| {
                let a = &g[3 + 5 * i..3 + 5 * i + 5];
                Axis { len: a[0], out: a[1], k: a[2], s: a[3], p: a[4], d: 1 }
            })
            .collect();
        for a in &axes {
            a.check()?;
        }
        let geom = PoolGeom { outer, axes, including_pad: incl != 0 };
        geom.sizes()?;
        // taps are numbered with u32 (u32::MAX marks none)
        if window::product(&geom.axes, |a| a.k)? >= u32::MAX as usize {
            return Err(Error::Invalid);
        }
        Ok(geom)
    }

    /// (input plane, output plane, total input, total output) sizes.
    pub fn sizes(&self) -> Result<(usize, usize, usize, usize)> {
        let pin = window::product(&self.axes, |a| a.len)?;
        let pout = window::product(&self.axes, |a| a.out)?;
        let tin = pin.checked_mul(self.outer).ok_or(Error::Invalid)?;
        let tout = pout.checked_mul(self.outer).ok_or(Error::Invalid)?;
        Ok((pin, pout, tin, tout))
    }

    fn last(&self) -> &Axis {
        &self.axes[self.axes.len() - 1]
    }

    /// Window sizes used by average pooling, per axis and output.
    fn counts(&self) -> Vec<Vec<f32>> {
        self.axes
            .iter()
            .map(|a| {
                (0..a.out)
                    .map(|o| {
                        let start = o * a.s; // in padded coordinates
                        let n = if self.including_pad {
                            (start + a.k).min(a.len + 2 * a.p).saturating_sub(start)
                        } else {
                            let lo = start.max(a.p);
                            (start + a.k).min(a.len + a.p).saturating_sub(lo)
                        };
                        n as f32
                    })
                    .collect()
            })
            .collect()
    }
}

#[inline(always)]
fn max_run(y: &mut [f32], x: &[f32], start: usize, s: usize) {
    let n = y.len();
    if n == 0 {
        return;
    }
    let xs = &x[start..start + (n - 1) * s + 1];
    if s == 1 {
        for (v, &u) in y.iter_mut().zip(xs) {
            *v = if u > *v { u } else { *v };
        }
    } else {
        for (v, &u) in y.iter_mut().zip(xs.iter().step_by(s)) {
            *v = if u > *v { u } else { *v };
        }
    }
}

/// Running arg-max over one run of taps: where x beats the best so far (or
/// nothing was taken yet), take it and record tap `ti`.
#[inline(always)]
fn max_arg_run(best: &mut [f32], arg: &mut [u32], ti: u32, x: &[f32], start: usize, s: usize, tmp: &mut [f32]) {
    let n = best.len();
    if n == 0 {
        return;
    }
    let xs = window::gather_run(x, start, s, n, tmp);
    // masks instead of branches: which element wins is data dependent
    for ((b, a), &u) in best.iter_mut().zip(arg.iter_mut()).zip(xs) {
        let m = (((u > *b) | (*a == u32::MAX)) as u32).wrapping_neg();
        *b = f32::from_bits((u.to_bits() & m) | (b.to_bits() & !m));
        *a = (ti & m) | (*a & !m);
    }
}

/// gx[start + j s] += gy[j] where window j's maximum is tap `ti`.
#[inline(always)]
fn route_run(gx: &mut [f32], start: usize, s: usize, arg: &[u32], ti: u32, gy: &[f32], tmp: &mut [f32]) {
    let n = gy.len();
    if n == 0 {
        return;
    }
    let t = &mut tmp[..n];
    for ((v, &a), &g) in t.iter_mut().zip(arg).zip(gy) {
        *v = f32::from_bits(g.to_bits() & ((a == ti) as u32).wrapping_neg());
    }
    window::axpy_t(gx, start, s, 1.0, t);
}

/// Work of one output row, for splitting across threads.
fn row_cost(g: &PoolGeom) -> usize {
    let taps: usize = g.axes.iter().map(|a| a.k).product();
    g.last().out.max(1).saturating_mul(taps.max(1))
}

/// Marks a tap in the padding.
const NONE: u32 = u32::MAX;

/// Small planes, many of them: for each output position q, the input
/// index of each of its taps (row-major, NONE in the padding), and for
/// average pooling the window size, so that the loops run over windows
/// instead of rows of a few outputs.
struct Table {
    pin: usize,
    pout: usize,
    kp: usize,
    idx: Vec<u32>,
    div: Vec<f32>,
}

impl Table {
    /// The table when rows are short (the row loops would run a few
    /// outputs at a time) and it is small against the work it serves.
    fn new(g: &PoolGeom) -> Option<Table> {
        let (pin, pout, _, _) = g.sizes().ok()?;
        let kp = window::product(&g.axes, |a| a.k).ok()?;
        let n = pout.checked_mul(kp)?;
        if g.last().out >= 16 || n == 0 || n > 16 * 1024 || g.outer < 4 || pin >= NONE as usize {
            return None;
        }
        let axes = &g.axes[..];
        let nd = axes.len();
        let ost = window::strides(axes.iter().map(|a| a.out), nd);
        let kst = window::strides(axes.iter().map(|a| a.k), nd);
        let ist = window::strides(axes.iter().map(|a| a.len), nd);
        let o = |q: usize, j: usize| (q / ost[j]) % axes[j].out;
        let idx = (0..n)
            .map(|i| {
                let (q, kf) = (i / kp, i % kp);
                let at = |j: usize| axes[j].at(o(q, j), (kf / kst[j]) % axes[j].k).map(|v| v * ist[j]);
                (0..nd).try_fold(0usize, |acc, j| Some(acc + at(j)?)).map_or(NONE, |v| v as u32)
            })
            .collect();
        let counts = g.counts();
        let div = (0..pout).map(|q| (0..nd).map(|j| counts[j][o(q, j)]).product()).collect();
        Some(Table { pin, pout, kp, idx, div })
    }

    fn forward(&self, op: u32, g: &PoolGeom, x: &[f32], y: &mut [f32], accum: bool) {
        let (pin, pout) = (self.pin, self.pout);
        par_for((Rows(y, pout), 0..g.outer), pout * self.kp, |(Rows(ys, _), range)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (yp, plane) in ys.chunks_exact_mut(pout).zip(range) {
                        let xp = &x[plane * pin..][..pin];
                        for ((v, taps), &d) in yp.iter_mut().zip(self.idx.chunks_exact(self.kp)).zip(&self.div) {
                            let inside = taps.iter().filter(|&&j| j != NONE).map(|&j| xp[j as usize]);
                            let r = match op {
                                MAX => inside.fold(f32::NEG_INFINITY, |m, u| if u > m { u } else { m }),
                                SUM => inside.sum(),
                                _ => inside.sum::<f32>() / d,
                            };
                            *v = if accum { *v + r } else { r };
                        }
                    }
                },
            )
        });
    }

    fn backward(&self, op: u32, g: &PoolGeom, x: &[f32], gy: &[f32], gx: &mut [f32], accum: bool) {
        let (pin, pout) = (self.pin, self.pout);
        par_for((Rows(gx, pin), 0..g.outer), pout * self.kp, |(Rows(gxs, _), range)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (gxp, plane) in gxs.chunks_exact_mut(pin).zip(range) {
                        if !accum {
                            gxp.fill(0.0);
                        }
                        let gyp = &gy[plane * pout..][..pout];
                        for ((&gv, taps), &d) in gyp.iter().zip(self.idx.chunks_exact(self.kp)).zip(&self.div) {
                            if op == MAX {
                                // the first largest element of the window
                                let xp = &x[plane * pin..][..pin];
                                let (mut best, mut arg) = (f32::NEG_INFINITY, NONE);
                                for &j in taps.iter().filter(|&&j| j != NONE) {
                                    // selects, not branches: the winner is data dependent
                                    let u = xp[j as usize];
                                    let take = u > best || arg == NONE;
                                    best = if take { u } else { best };
                                    arg = if take { j } else { arg };
                                }
                                if arg != NONE {
                                    gxp[arg as usize] += gv;
                                }
                            } else {
                                let v = if op == AVG { gv / d } else { gv };
                                for &j in taps.iter().filter(|&&j| j != NONE) {
                                    gxp[j as usize] += v;
                                }
                            }
                        }
                    }
                },
            )
        });
    }
}

/// y (+)= pool(x) for op MAX, SUM or AVG.
pub fn forward(op: u32, g: &PoolGeom, x: &[f32], y: &mut [f32], accum: bool) -> Result {
    if op > AVG {
        return Err(Error::Invalid);
    }
    let (pin, _, tin, tout) = g.sizes()?;
    if x.len() < tin || y.len() < tout {
        return Err(Error::Invalid);
    }
    let y = &mut y[..tout];
    if tout == 0 {
        return Ok(());
    }
    if let Some(t) = Table::new(g) {
        return Ok(t.forward(op, g, x, y, accum));
    }
    let axes = &g.axes[..];
    let last = *g.last();
    let rows = window::rows(axes);
    let counts = if op == AVG { g.counts() } else { Vec::new() };
    let wl = last.out;
    par_for((Rows(y, wl), 0..g.outer * rows), row_cost(g), |(Rows(ys, _), range)| {
        let mut taps = Taps::new(axes);
        let mut o = [0usize; MAX_AXES];
        let mut acc = vec![0.0f32; if accum { wl } else { 0 }];
        simd::dispatch(
            #[inline(always)]
            || {
                for (out, q) in ys.chunks_exact_mut(wl).zip(range.clone()) {
                    // accumulating: pool into a scratch row, then add
                    let yrow: &mut [f32] = if accum { &mut acc[..] } else { &mut *out };
                    let (plane, r) = (q / rows, q % rows);
                    let xp = &x[plane * pin..(plane + 1) * pin];
                    row_index(axes, r, &mut o);
                    taps.row(axes, &o[..axes.len() - 1]);
                    yrow.fill(if op == MAX { f32::NEG_INFINITY } else { 0.0 });
                    for &(xoff, _) in &taps.list {
                        for t in 0..last.k {
                            let (lo, hi, st) = last.span(t);
                            if op == MAX {
                                max_run(&mut yrow[lo..hi], xp, xoff + st, last.s);
                            } else {
                                window::axpy(&mut yrow[lo..hi], 1.0, xp, xoff + st, last.s);
                            }
                        }
                    }
                    if op == AVG {
                        let c: f32 = (0..axes.len() - 1).map(|i| counts[i][o[i]]).product();
                        for (v, &cl) in yrow.iter_mut().zip(&counts[axes.len() - 1]) {
                            *v /= c * cl;
                        }
                    }
                    if accum {
                        for (v, &a) in out.iter_mut().zip(&acc) {
                            *v += a;
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// gx (+)= d pool / d x applied to gy.  `x` is read by MAX only.
pub fn backward(op: u32, g: &PoolGeom, x: &[f32], gy: &[f32], gx: &mut [f32], accum: bool) -> Result {
    if op > AVG {
        return Err(Error::Invalid);
    }
    let (pin, pout, tin, tout) = g.sizes()?;
    if gx.len() < tin || gy.len() < tout || (op == MAX && x.len() < tin) {
        return Err(Error::Invalid);
    }
    let gx = &mut gx[..tin];
    if tin == 0 {
        return Ok(());
    }
    let gy = &gy[..tout];
    if let Some(t) = Table::new(g) {
        return Ok(t.backward(op, g, x, gy, gx, accum));
    }
    let axes = &g.axes[..];
    let last = *g.last();
    let rows = window::rows(axes);
    let counts = if op == AVG { g.counts() } else { Vec::new() };
    let wl = last.out;
    let cost = row_cost(g).saturating_mul(rows.max(1));
    // Each plane's gradient depends on that plane only.
    let run = |gxs: &mut [f32], gys: &[f32], xs: &[f32]| {
        let mut taps = Taps::new(axes);
        let mut o = [0usize; MAX_AXES];
        let mut best = vec![0.0f32; wl];
        let mut arg = vec![u32::MAX; wl];
        let mut gs = vec![0.0f32; wl];
        let mut tmp = vec![0.0f32; wl];
        simd::dispatch(
            #[inline(always)]
            || {
                if !accum {
                    gxs.fill(0.0);
                }
                if pin == 0 {
                    return;
                }
                let planes = gxs.len() / pin;
                for p in 0..planes {
                    let gxp = &mut gxs[p * pin..(p + 1) * pin];
                    let gyp = &gys[p * pout..(p + 1) * pout];
                    for r in 0..rows {
                        row_index(axes, r, &mut o);
                        taps.row(axes, &o[..axes.len() - 1]);
                        let gyr = &gyp[r * wl..(r + 1) * wl];
                        if op == MAX {
                            // first pass: the tap (in row-major order) of each
                            // window's first maximum; second pass: route gy to it
                            let xp = &xs[p * pin..(p + 1) * pin];
                            best.fill(f32::NEG_INFINITY);
                            arg.fill(u32::MAX);
                            let mut ti = 0u32;
                            for &(xoff, _) in &taps.list {
                                for t in 0..last.k {
                                    let (lo, hi, st) = last.span(t);
                                    max_arg_run(&mut best[lo..hi], &mut arg[lo..hi], ti, xp, xoff + st, last.s, &mut tmp);
                                    ti += 1;
                                }
                            }
                            let mut ti = 0u32;
                            for &(xoff, _) in &taps.list {
                                for t in 0..last.k {
                                    let (lo, hi, st) = last.span(t);
                                    route_run(gxp, xoff + st, last.s, &arg[lo..hi], ti, &gyr[lo..hi], &mut tmp);
                                    ti += 1;
                                }
                            }
                        } else {
                            gs.copy_from_slice(gyr);
                            if op == AVG {
                                let c: f32 = (0..axes.len() - 1).map(|i| counts[i][o[i]]).product();
                                for (v, &cl) in gs.iter_mut().zip(&counts[axes.len() - 1]) {
                                    *v /= c * cl;
                                }
                            }
                            for &(xoff, _) in &taps.list {
                                for t in 0..last.k {
                                    let (lo, hi, st) = last.span(t);
                                    window::axpy_t(gxp, xoff + st, last.s, 1.0, &gs[lo..hi]);
                                }
                            }
                        }
                    }
                }
            },
        )
    };
    if op == MAX {
        par_for((Rows(gx, pin), Rows(gy, pout), Rows(&x[..tin], pin)), cost, |(Rows(a, _), Rows(b, _), Rows(c, _))| {
            run(a, b, c)
        });
    } else {
        par_for((Rows(gx, pin), Rows(gy, pout)), cost, |(Rows(a, _), Rows(b, _))| run(a, b, &[]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testdata::data;

    /// Direct evaluation of one output over the whole window.
    fn naive(op: u32, g: &PoolGeom, x: &[f32], plane: usize, o: &[usize]) -> (f32, Option<usize>) {
        let nd = g.axes.len();
        let pin: usize = g.axes.iter().map(|a| a.len).product();
        let kn: usize = g.axes.iter().map(|a| a.k).product();
        let (mut acc, mut best, mut arg) = (0.0f32, f32::NEG_INFINITY, None);
        for kf in 0..kn {
            let (mut rem, mut pos, mut ok) = (kf, 0usize, true);
            let mut t = vec![0; nd];
            for i in (0..nd).rev() {
                t[i] = rem % g.axes[i].k;
                rem /= g.axes[i].k;
            }
            for i in 0..nd {
                match g.axes[i].at(o[i], t[i]) {
                    Some(ii) => pos = pos * g.axes[i].len + ii,
                    None => ok = false,
                }
            }
            if ok {
                let v = x[plane * pin + pos];
                acc += v;
                if arg.is_none() || v > best {
                    best = v;
                    arg = Some(pos);
                }
            }
        }
        let cnt: f32 = g.counts().iter().zip(o).map(|(c, &oi)| c[oi]).product();
        match op {
            MAX => (best, arg),
            SUM => (acc, None),
            _ => (acc / cnt, None),
        }
    }

    #[test]
    fn forward_and_backward_match_naive() {
        // (lens, kernel, stride, pad, ignore_border)
        type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], &'a [usize], bool);
        let cases: &[Case] = &[
            (&[5, 6], &[2, 2], &[2, 2], &[0, 0], true),
            (&[5, 6], &[3, 2], &[2, 1], &[1, 1], false),
            (&[7], &[3], &[2], &[1], true),
            (&[3, 4, 5], &[2, 2, 3], &[1, 2, 2], &[1, 0, 1], false),
            (&[4, 4, 3], &[2, 2, 1], &[2, 2, 1], &[0, 0, 0], true), // channel-last style
        ];
        for &(lens, k, s, p, ib) in cases {
            // 3 planes take the row loops, 5 the window table
            for (incl, outer) in [(true, 3), (false, 3), (true, 5), (false, 5)] {
                let axes: Vec<Axis> = (0..lens.len())
                    .map(|i| {
                        let out = (lens[i] + p[i] - if ib { k[i] - p[i] } else { 1 }) / s[i] + 1;
                        Axis { len: lens[i], out, k: k[i], s: s[i], p: p[i], d: 1 }
                    })
                    .collect();
                let g = PoolGeom { outer, axes, including_pad: incl };
                let (pin, pout, tin, tout) = g.sizes().unwrap();
                let x = data(tin, 7);
                let gy = data(tout, 8);
                for op in [MAX, SUM, AVG] {
                    let mut y = vec![f32::NAN; tout];
                    forward(op, &g, &x, &mut y, false).unwrap();
                    let mut y1 = vec![1.0f32; tout];
                    forward(op, &g, &x, &mut y1, true).unwrap();
                    assert!(y1.iter().zip(&y).all(|(a, b)| (a - 1.0 - b).abs() < 1e-5));
                    let mut gx = vec![1.0f32; tin];
                    backward(op, &g, &x, &gy, &mut gx, true).unwrap();
                    let mut want_gx = vec![1.0f32; tin];
                    for plane in 0..outer {
                        for q in 0..pout {
                            let (mut rem, mut o) = (q, vec![0; g.axes.len()]);
                            for i in (0..g.axes.len()).rev() {
                                o[i] = rem % g.axes[i].out;
                                rem /= g.axes[i].out;
                            }
                            let (v, arg) = naive(op, &g, &x, plane, &o);
                            let got = y[plane * pout + q];
                            assert!((got - v).abs() < 1e-5, "op {op} {lens:?}: {got} vs {v}");
                            let gyv = gy[plane * pout + q];
                            if op == MAX {
                                want_gx[plane * pin + arg.unwrap()] += gyv;
                            } else {
                                // spread over the window
                                let nd = g.axes.len();
                                let kn: usize = g.axes.iter().map(|a| a.k).product();
                                let cnt: f32 = g.counts().iter().zip(&o).map(|(c, &oi)| c[oi]).product();
                                for kf in 0..kn {
                                    let (mut rem, mut pos, mut ok) = (kf, 0usize, true);
                                    let mut t = vec![0; nd];
                                    for i in (0..nd).rev() {
                                        t[i] = rem % g.axes[i].k;
                                        rem /= g.axes[i].k;
                                    }
                                    for i in 0..nd {
                                        match g.axes[i].at(o[i], t[i]) {
                                            Some(ii) => pos = pos * g.axes[i].len + ii,
                                            None => ok = false,
                                        }
                                    }
                                    if ok {
                                        want_gx[plane * pin + pos] += if op == AVG { gyv / cnt } else { gyv };
                                    }
                                }
                            }
                        }
                    }
                    for (a, b) in gx.iter().zip(&want_gx) {
                        assert!((a - b).abs() < 1e-5, "grad op {op} {lens:?}: {a} vs {b}");
                    }
                    let mut gx0 = vec![f32::NAN; tin];
                    backward(op, &g, &x, &gy, &mut gx0, false).unwrap();
                    for (a, b) in gx0.iter().zip(&want_gx) {
                        assert!((a + 1.0 - b).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(PoolGeom::from_slice(&[1, 1, 0, 4, 2, 2, 0, 0]).is_err()); // stride 0
        assert!(PoolGeom::from_slice(&[1, 0, 0]).is_err());
        assert!(PoolGeom::from_slice(&[1, 1, 0, 4, 2, 2, 2]).is_err()); // short
        let g = PoolGeom::from_slice(&[2, 1, 1, 4, 2, 2, 2, 0]).unwrap();
        let mut y = [0.0; 3];
        assert!(forward(MAX, &g, &[0.0; 8], &mut y, false).is_err());
        assert!(forward(5, &g, &[0.0; 8], &mut [0.0; 4], false).is_err());
    }
}
