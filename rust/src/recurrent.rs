//! The elementwise part of one time step of the recurrent layers (RNN, LSTM,
//! GRU) over a batch, forward and backward.  The matrix products around a
//! step (input and hidden projections, and their gradients) are done by the
//! caller with [`crate::gemm`].
//!
//! Layout: `b` rows of `h` hidden units; the gate blocks of a row lie side by
//! side (LSTM: i, f, g, o; GRU: r, z, n), so a row of gates holds 4h (3h)
//! values.  In the backward kernels `dy` (the gradient from the layer output)
//! and `dh` (the gradient carried back from the next time step) are added.

use crate::par::{par_for, Rows};
use crate::simd;
use crate::vmath::{sigmoid, tanh};
use crate::{Error, Result};

/// Rows of a batch: checks that every slice holds `b` rows of its width.
fn batch(b: usize, parts: &[(usize, usize)]) -> Result<usize> {
    for &(len, width) in parts {
        if b.checked_mul(width) != Some(len) {
            return Err(Error::Invalid);
        }
    }
    Ok(b)
}

/// Elman step: h = tanh(pre), or max(pre, 0) when `relu`.
pub fn rnn_fwd(relu: bool, pre: &[f32], h: &mut [f32]) -> Result {
    if pre.len() != h.len() {
        return Err(Error::Invalid);
    }
    par_for((h, pre), 8, |(h, pre)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (o, &p) in h.iter_mut().zip(pre) {
                    *o = if relu {
                        if p > 0.0 {
                            p
                        } else {
                            0.0
                        }
                    } else {
                        tanh(p)
                    };
                }
            },
        )
    });
    Ok(())
}

/// Elman step backward: dpre = (dy + dh) * act'(pre), from the output h.
pub fn rnn_bwd(relu: bool, h: &[f32], dy: &[f32], dh: &[f32], dpre: &mut [f32]) -> Result {
    let n = dpre.len();
    if h.len() != n || dy.len() != n || dh.len() != n {
        return Err(Error::Invalid);
    }
    par_for((dpre, h, dy, dh), 4, |(dpre, h, dy, dh)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (((o, &h), &a), &b) in dpre.iter_mut().zip(h).zip(dy).zip(dh) {
                    let g = a + b;
                    *o = if relu {
                        if h > 0.0 {
                            g
                        } else {
                            0.0
                        }
                    } else {
                        g * (1.0 - h * h)
                    };
                }
            },
        )
    });
    Ok(())
}

/// LSTM step.  `gates` (b, 4h) holds the pre-activations of i, f, g, o and is
/// overwritten with their activations; c = f c_prev + i g, hout = o tanh(c).
pub fn lstm_fwd(h: usize, gates: &mut [f32], c_prev: &[f32], c: &mut [f32], hout: &mut [f32]) -> Result {
    if h == 0 {
        return Ok(());
    }
    let b = c.len() / h;
    batch(b, &[(gates.len(), 4 * h), (c_prev.len(), h), (c.len(), h), (hout.len(), h)])?;
    par_for(
        (Rows(gates, 4 * h), Rows(c_prev, h), Rows(c, h), Rows(hout, h)),
        40 * h,
        |(Rows(g, _), Rows(cp, _), Rows(c, _), Rows(ho, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (((g, cp), c), ho) in g
                        .chunks_exact_mut(4 * h)
                        .zip(cp.chunks_exact(h))
                        .zip(c.chunks_exact_mut(h))
                        .zip(ho.chunks_exact_mut(h))
                    {
                        let (gi, rest) = g.split_at_mut(h);
                        let (gf, rest) = rest.split_at_mut(h);
                        let (gg, go) = rest.split_at_mut(h);
                        for (((((i, f), g), o), (&cp, c)), ho) in gi
                            .iter_mut()
                            .zip(gf.iter_mut())
                            .zip(gg.iter_mut())
                            .zip(go.iter_mut())
                            .zip(cp.iter().zip(c.iter_mut()))
                            .zip(ho.iter_mut())
                        {
                            let (ai, af, ag, ao) = (sigmoid(*i), sigmoid(*f), tanh(*g), sigmoid(*o));
                            *i = ai;
                            *f = af;
                            *g = ag;
                            *o = ao;
                            let ct = af * cp + ai * ag;
                            *c = ct;
                            *ho = ao * tanh(ct);
                        }
                    }
                },
            )
        },
    );
    Ok(())
}

/// LSTM step backward.  `gates` holds the activations of the forward step,
/// `dc` the gradient with respect to c (from the next step) on entry and with
/// respect to c_prev on exit; `dgates` (b, 4h) receives the gradients of the
/// four pre-activations.
#[allow(clippy::too_many_arguments)]
pub fn lstm_bwd(
    h: usize,
    gates: &[f32],
    c_prev: &[f32],
    c: &[f32],
    dy: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dgates: &mut [f32],
) -> Result {
    if h == 0 {
        return Ok(());
    }
    let b = c.len() / h;
    batch(
        b,
        &[
            (gates.len(), 4 * h),
            (c_prev.len(), h),
            (c.len(), h),
            (dy.len(), h),
            (dh.len(), h),
            (dc.len(), h),
            (dgates.len(), 4 * h),
        ],
    )?;
    let parts =
        (Rows(dgates, 4 * h), Rows(dc, h), Rows(gates, 4 * h), Rows(c_prev, h), (Rows(c, h), Rows(dy, h), Rows(dh, h)));
    par_for(
        parts,
        40 * h,
        |(Rows(dg, _), Rows(dc, _), Rows(g, _), Rows(cp, _), (Rows(c, _), Rows(dy, _), Rows(dh, _)))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let rows = dg
                        .chunks_exact_mut(4 * h)
                        .zip(dc.chunks_exact_mut(h))
                        .zip(g.chunks_exact(4 * h))
                        .zip(cp.chunks_exact(h));
                    let more = c.chunks_exact(h).zip(dy.chunks_exact(h)).zip(dh.chunks_exact(h));
                    for ((((dg, dc), g), cp), ((c, dy), dh)) in rows.zip(more) {
                        let (dgi, rest) = dg.split_at_mut(h);
                        let (dgf, rest) = rest.split_at_mut(h);
                        let (dgg, dgo) = rest.split_at_mut(h);
                        let (gi, gf, gg, go) = (&g[..h], &g[h..2 * h], &g[2 * h..3 * h], &g[3 * h..]);
                        for k in 0..h {
                            let (i, f, gv, o) = (gi[k], gf[k], gg[k], go[k]);
                            let tc = tanh(c[k]);
                            let dht = dy[k] + dh[k];
                            let dct = dc[k] + dht * o * (1.0 - tc * tc);
                            dgi[k] = dct * gv * i * (1.0 - i);
                            dgf[k] = dct * cp[k] * f * (1.0 - f);
                            dgg[k] = dct * i * (1.0 - gv * gv);
                            dgo[k] = dht * tc * o * (1.0 - o);
                            dc[k] = dct * f;
                        }
                    }
                },
            )
        },
    );
    Ok(())
}

/// GRU step.  `gates` (b, 3h) holds the input-side pre-activations of r, z, n
/// (with their input biases) and is overwritten with r, z, n; `hw` (b, 3h)
/// holds the hidden projections h_prev U^T of r, z, n, and its n block gets
/// the hidden bias `bhn` added (kept for backward).
/// r = sig(x_r + hw_r), z = sig(x_z + hw_z), n = tanh(x_n + r hn),
/// hout = (1 - z) n + z h_prev.
pub fn gru_fwd(
    h: usize,
    gates: &mut [f32],
    hw: &mut [f32],
    bhn: Option<&[f32]>,
    h_prev: &[f32],
    hout: &mut [f32],
) -> Result {
    if h == 0 {
        return Ok(());
    }
    let b = hout.len() / h;
    batch(b, &[(gates.len(), 3 * h), (hw.len(), 3 * h), (h_prev.len(), h), (hout.len(), h)])?;
    if bhn.is_some_and(|v| v.len() != h) {
        return Err(Error::Invalid);
    }
    par_for(
        (Rows(gates, 3 * h), Rows(hw, 3 * h), Rows(h_prev, h), Rows(hout, h)),
        40 * h,
        |(Rows(g, _), Rows(hw, _), Rows(hp, _), Rows(ho, _))| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for (((g, hw), hp), ho) in g
                        .chunks_exact_mut(3 * h)
                        .zip(hw.chunks_exact_mut(3 * h))
                        .zip(hp.chunks_exact(h))
                        .zip(ho.chunks_exact_mut(h))
                    {
                        let (gr, rest) = g.split_at_mut(h);
                        let (gz, gn) = rest.split_at_mut(h);
                        let (hr, rest) = hw.split_at_mut(h);
                        let (hz, hn) = rest.split_at_mut(h);
                        for k in 0..h {
                            let r = sigmoid(gr[k] + hr[k]);
                            let z = sigmoid(gz[k] + hz[k]);
                            let hnk = hn[k] + bhn.map_or(0.0, |v| v[k]);
                            let n = tanh(gn[k] + r * hnk);
                            hn[k] = hnk;
                            gr[k] = r;
                            gz[k] = z;
                            gn[k] = n;
                            ho[k] = (1.0 - z) * n + z * hp[k];
                        }
                    }
                },
            )
        },
    );
    Ok(())
}

/// GRU step backward.  `gates` holds r, z, n and `hw` the hidden projections
/// (n block with its bias) of the forward step.  Writes the gradients of the
/// input-side pre-activations `dgx` (b, 3h), of the hidden projections `dgh`
/// (b, 3h), and the direct part (dy + dh) z of the gradient of h_prev.
#[allow(clippy::too_many_arguments)]
pub fn gru_bwd(
    h: usize,
    gates: &[f32],
    hw: &[f32],
    h_prev: &[f32],
    dy: &[f32],
    dh: &[f32],
    dgx: &mut [f32],
    dgh: &mut [f32],
    dh_prev: &mut [f32],
) -> Result {
    if h == 0 {
        return Ok(());
    }
    let b = h_prev.len() / h;
    batch(
        b,
        &[
            (gates.len(), 3 * h),
            (hw.len(), 3 * h),
            (h_prev.len(), h),
            (dy.len(), h),
            (dh.len(), h),
            (dgx.len(), 3 * h),
            (dgh.len(), 3 * h),
            (dh_prev.len(), h),
        ],
    )?;
    let parts = (
        Rows(dgx, 3 * h),
        Rows(dgh, 3 * h),
        Rows(dh_prev, h),
        (Rows(gates, 3 * h), Rows(hw, 3 * h)),
        (Rows(h_prev, h), Rows(dy, h), Rows(dh, h)),
    );
    par_for(
        parts,
        40 * h,
        |(
            Rows(dgx, _),
            Rows(dgh, _),
            Rows(dhp, _),
            (Rows(g, _), Rows(hw, _)),
            (Rows(hp, _), Rows(dy, _), Rows(dh, _)),
        )| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let outs =
                        dgx.chunks_exact_mut(3 * h).zip(dgh.chunks_exact_mut(3 * h)).zip(dhp.chunks_exact_mut(h));
                    let ins = g
                        .chunks_exact(3 * h)
                        .zip(hw.chunks_exact(3 * h))
                        .zip(hp.chunks_exact(h))
                        .zip(dy.chunks_exact(h).zip(dh.chunks_exact(h)));
                    for (((dgx, dgh), dhp), (((g, hw), hp), (dy, dh))) in outs.zip(ins) {
                        let (xr, rest) = dgx.split_at_mut(h);
                        let (xz, xn) = rest.split_at_mut(h);
                        let (hr, rest) = dgh.split_at_mut(h);
                        let (hz, hn_) = rest.split_at_mut(h);
                        for k in 0..h {
                            let (r, z, n) = (g[k], g[h + k], g[2 * h + k]);
                            let hn = hw[2 * h + k];
                            let dht = dy[k] + dh[k];
                            let dpn = dht * (1.0 - z) * (1.0 - n * n);
                            let dpr = dpn * hn * r * (1.0 - r);
                            let dpz = dht * (hp[k] - n) * z * (1.0 - z);
                            xr[k] = dpr;
                            xz[k] = dpz;
                            xn[k] = dpn;
                            hr[k] = dpr;
                            hz[k] = dpz;
                            hn_[k] = dpn * r;
                            dhp[k] = dht * z;
                        }
                    }
                },
            )
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        crate::testdata::data(n, seed).into_iter().map(|v| 3.0 * v).collect()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Central differences of a scalar function of one input vector.
    fn numeric(x: &[f32], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        (0..x.len())
            .map(|i| {
                let (mut p, mut m) = (xd.clone(), xd.clone());
                p[i] += 1e-6;
                m[i] -= 1e-6;
                (f(&p) - f(&m)) / 2e-6
            })
            .collect()
    }

    #[test]
    fn rnn_matches_reference() {
        let n = 37;
        let pre = data(n, 1);
        for relu in [false, true] {
            let mut h = vec![0.0; n];
            rnn_fwd(relu, &pre, &mut h).unwrap();
            let want: Vec<f64> =
                pre.iter().map(|&p| if relu { (p as f64).max(0.0) } else { (p as f64).tanh() }).collect();
            close(&h, &want, 1e-6);
            let (dy, dh) = (data(n, 2), data(n, 3));
            let mut dpre = vec![0.0; n];
            rnn_bwd(relu, &h, &dy, &dh, &mut dpre).unwrap();
            let want: Vec<f64> = (0..n)
                .map(|k| {
                    (dy[k] + dh[k]) as f64
                        * if relu { (pre[k] > 0.0) as i32 as f64 } else { 1.0 - (pre[k] as f64).tanh().powi(2) }
                })
                .collect();
            close(&dpre, &want, 1e-5);
        }
        assert!(rnn_fwd(false, &pre, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn lstm_forward_and_gradients() {
        let (b, h) = (3, 5);
        let pre = data(b * 4 * h, 4);
        let cp = data(b * h, 5);
        let (dy, dh, dc_in) = (data(b * h, 6), data(b * h, 7), data(b * h, 8));
        let mut g = pre.clone();
        let (mut c, mut ho) = (vec![0.0; b * h], vec![0.0; b * h]);
        lstm_fwd(h, &mut g, &cp, &mut c, &mut ho).unwrap();
        // objective: sum(hout * (dy + dh)) + sum(c * dc_in), as a function of pre and c_prev
        let obj = |pre: &[f64], cp: &[f64]| -> f64 {
            let mut s = 0.0;
            for r in 0..b {
                for k in 0..h {
                    let p = |gate: usize| pre[r * 4 * h + gate * h + k];
                    let (i, f, gg, o) = (sig(p(0)), sig(p(1)), p(2).tanh(), sig(p(3)));
                    let ct = f * cp[r * h + k] + i * gg;
                    s += o * ct.tanh() * (dy[r * h + k] + dh[r * h + k]) as f64 + ct * dc_in[r * h + k] as f64;
                }
            }
            s
        };
        let cpd: Vec<f64> = cp.iter().map(|&v| v as f64).collect();
        let pred: Vec<f64> = pre.iter().map(|&v| v as f64).collect();
        let want_c: Vec<f64> = (0..b * h)
            .map(|j| {
                let (r, k) = (j / h, j % h);
                let p = |gate: usize| pred[r * 4 * h + gate * h + k];
                sig(p(1)) * cpd[j] + sig(p(0)) * p(2).tanh()
            })
            .collect();
        close(&c, &want_c, 1e-5);
        let mut dc = dc_in.clone();
        let mut dg = vec![0.0; b * 4 * h];
        lstm_bwd(h, &g, &cp, &c, &dy, &dh, &mut dc, &mut dg).unwrap();
        close(&dg, &numeric(&pre, |p| obj(p, &cpd)), 1e-4);
        close(&dc, &numeric(&cp, |c| obj(&pred, c)), 1e-4);
    }

    #[test]
    fn gru_forward_and_gradients() {
        let (b, h) = (2, 4);
        let gx = data(b * 3 * h, 9);
        let hw0 = data(b * 3 * h, 10);
        let bhn = data(h, 11);
        let hp = data(b * h, 12);
        let (dy, dh) = (data(b * h, 13), data(b * h, 14));
        let mut g = gx.clone();
        let mut hw = hw0.clone();
        let mut ho = vec![0.0; b * h];
        gru_fwd(h, &mut g, &mut hw, Some(&bhn), &hp, &mut ho).unwrap();
        // objective over (x-side pre, hidden projections, h_prev)
        let obj = |gx: &[f64], hw: &[f64], hp: &[f64]| -> f64 {
            let mut s = 0.0;
            for r in 0..b {
                for k in 0..h {
                    let x = |gate: usize| gx[r * 3 * h + gate * h + k];
                    let u = |gate: usize| hw[r * 3 * h + gate * h + k];
                    let rr = sig(x(0) + u(0));
                    let z = sig(x(1) + u(1));
                    let n = (x(2) + rr * (u(2) + bhn[k] as f64)).tanh();
                    let out = (1.0 - z) * n + z * hp[r * h + k];
                    s += out * (dy[r * h + k] + dh[r * h + k]) as f64;
                }
            }
            s
        };
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (gxd, hwd, hpd) = (f64s(&gx), f64s(&hw0), f64s(&hp));
        let (mut dgx, mut dgh, mut dhp) = (vec![0.0; b * 3 * h], vec![0.0; b * 3 * h], vec![0.0; b * h]);
        gru_bwd(h, &g, &hw, &hp, &dy, &dh, &mut dgx, &mut dgh, &mut dhp).unwrap();
        close(&dgx, &numeric(&gx, |v| obj(v, &hwd, &hpd)), 1e-4);
        close(&dgh, &numeric(&hw0, |v| obj(&gxd, v, &hpd)), 1e-4);
        // the direct part of dh_prev: (dy + dh) z
        let zs: Vec<f64> = (0..b * h).map(|j| g[(j / h) * 3 * h + h + j % h] as f64 * (dy[j] + dh[j]) as f64).collect();
        close(&dhp, &zs, 1e-5);
    }
}
