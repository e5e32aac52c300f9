//! Direct kernels for convolutions with one input channel per group
//! (depthwise convolution with a multiplier; its transpose serves depthwise
//! deconvolution), channel-first, any number of spatial axes.
//!
//! Output channel `oc` reads input channel `oc / m` (m = out_channels /
//! channels) through the window of weight row `oc`.  The loops run along the
//! last spatial axis (see [`crate::window`]): forward and the gradient to the
//! input are axpy runs, the weight gradient dot products.  Forward is split
//! across threads by output rows, the input gradient by input planes and the
//! weight gradient by output channels.

use crate::conv::ConvGeom;
use crate::par::{par_for, Rows};
use crate::simd;
use crate::window::{self, row_index, Taps, MAX_AXES};
use crate::Result;

/// y (+)= depthwise_conv(x, w) [+ bias per output channel].
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let s = g.sizes()?;
    let (c, oc) = (g.channels, g.out_channels);
    let m = oc / c.max(1);
    let axes = &g.axes[..];
    let last = axes[axes.len() - 1];
    let rows = window::rows(axes);
    let wl = last.out;
    if s.y == 0 {
        return Ok(());
    }
    par_for((Rows(&mut y[..s.y], wl), 0..g.batch * oc * rows), wl * s.kp, |(Rows(ys, _), range)| {
        let mut taps = Taps::new(axes);
        let mut o = [0usize; MAX_AXES];
        simd::dispatch(
            #[inline(always)]
            || {
                for (yrow, q) in ys.chunks_exact_mut(wl).zip(range.clone()) {
                    let (plane, r) = (q / rows, q % rows);
                    let (n, ch) = (plane / oc, plane % oc);
                    let xp = &x[(n * c + ch / m) * s.pin..][..s.pin];
                    let wk = &w[ch * s.kp..(ch + 1) * s.kp];
                    if !accum {
                        yrow.fill(bias.map_or(0.0, |b| b[ch]));
                    }
                    row_index(axes, r, &mut o);
                    taps.row(axes, &o[..axes.len() - 1]);
                    for &(xoff, kb) in &taps.list {
                        for t in 0..last.k {
                            let (lo, hi, st) = last.span(t);
                            window::axpy(&mut yrow[lo..hi], wk[kb + t], xp, xoff + st, last.s);
                        }
                    }
                }
            },
        )
    });
    Ok(())
}

/// gx (+)= transpose of [`forward`] applied to gy [+ bias per input channel].
pub fn backward_data(g: &ConvGeom, gy: &[f32], w: &[f32], gx: &mut [f32], bias: Option<&[f32]>, accum: bool) -> Result {
    let s = g.sizes()?;
    let (c, oc) = (g.channels, g.out_channels);
    let m = oc / c.max(1);
    let axes = &g.axes[..];
    let last = axes[axes.len() - 1];
    let rows = window::rows(axes);
    let wl = last.out;
    if s.x == 0 {
        return Ok(());
    }
    if s.pin == 0 {
        return Ok(());
    }
    let cost = s.pout.saturating_mul(s.kp).saturating_mul(m.max(1));
    par_for((Rows(&mut gx[..s.x], s.pin), 0..g.batch * c), cost, |(Rows(gxs, _), range)| {
        let mut taps = Taps::new(axes);
        let mut o = [0usize; MAX_AXES];
        simd::dispatch(
            #[inline(always)]
            || {
                for (gxp, plane) in gxs.chunks_exact_mut(s.pin).zip(range.clone()) {
                    let (n, ch) = (plane / c, plane % c);
                    if !accum {
                        gxp.fill(bias.map_or(0.0, |b| b[ch]));
                    }
                    for r in 0..rows {
                        row_index(axes, r, &mut o);
                        taps.row(axes, &o[..axes.len() - 1]);
                        for j in 0..m {
                            let och = ch * m + j;
                            let gyr = &gy[(n * oc + och) * s.pout + r * wl..][..wl];
                            let wk = &w[och * s.kp..(och + 1) * s.kp];
                            for &(xoff, kb) in &taps.list {
                                for t in 0..last.k {
                                    let (lo, hi, st) = last.span(t);
                                    window::axpy_t(gxp, xoff + st, last.s, wk[kb + t], &gyr[lo..hi]);
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

/// gw (+)= gradient of [`forward`] with respect to the weights.
pub fn backward_filter(g: &ConvGeom, x: &[f32], gy: &[f32], gw: &mut [f32], accum: bool) -> Result {
    let s = g.sizes()?;
    let (c, oc) = (g.channels, g.out_channels);
    let m = oc / c.max(1);
    let axes = &g.axes[..];
    let last = axes[axes.len() - 1];
    let rows = window::rows(axes);
    let wl = last.out;
    if s.w == 0 {
        return Ok(());
    }
    let cost = g.batch.saturating_mul(s.pout).saturating_mul(s.kp);
    par_for((Rows(&mut gw[..s.w], s.kp), 0..oc), cost, |(Rows(gws, _), range)| {
        let mut taps = Taps::new(axes);
        let mut o = [0usize; MAX_AXES];
        // per tap: partial sums of one sample in lanes, totals over samples in f64
        let mut lanes = vec![[0.0f32; window::LANES]; s.kp];
        let mut acc = vec![0.0f64; s.kp];
        let mut tmp = vec![0.0f32; wl];
        simd::dispatch(
            #[inline(always)]
            || {
                for (gwk, och) in gws.chunks_exact_mut(s.kp).zip(range.clone()) {
                    acc.fill(0.0);
                    for n in 0..g.batch {
                        let xp = &x[(n * c + och / m) * s.pin..][..s.pin];
                        let gyp = &gy[(n * oc + och) * s.pout..][..s.pout];
                        lanes.iter_mut().for_each(|l| l.fill(0.0));
                        for r in 0..rows {
                            row_index(axes, r, &mut o);
                            taps.row(axes, &o[..axes.len() - 1]);
                            let gyr = &gyp[r * wl..(r + 1) * wl];
                            for &(xoff, kb) in &taps.list {
                                for t in 0..last.k {
                                    let (lo, hi, st) = last.span(t);
                                    let run = window::gather_run(xp, xoff + st, last.s, hi - lo, &mut tmp);
                                    window::dot_lanes(&mut lanes[kb + t], &gyr[lo..hi], run);
                                }
                            }
                        }
                        for (a, l) in acc.iter_mut().zip(&lanes) {
                            *a += window::sum_lanes(l) as f64;
                        }
                    }
                    for (v, &a) in gwk.iter_mut().zip(&acc) {
                        *v = if accum { *v + a as f32 } else { a as f32 };
                    }
                }
            },
        )
    });
    Ok(())
}
