//! Solver updates (in place on the parameters and their states).

use crate::par::par_for;
use crate::simd;
use crate::{Error, Result};

fn same_len(n: usize, lens: &[usize]) -> Result {
    if lens.iter().all(|&l| l == n) {
        Ok(())
    } else {
        Err(Error::Invalid)
    }
}

// ---------------------------------------------------------------------------
// The solver family: one entry point, [`update`], with the rule chosen by
// [`Rule`].  Scalars that depend only on the step (bias corrections, bounds,
// decoupled decay factors) are computed by the caller and passed in `p`;
// the kernels do the per-element work, fused in one pass over the parameter,
// its gradient and its state buffers.
// ---------------------------------------------------------------------------

use crate::par::{self, Split};
use std::ops::Range;

/// Update rules of [`update`].  The codes are shared with `nncy/solvers.py`.
/// `p` lists the parameters each rule reads, in order; `s0..s2` its states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Rule {
    /// p = [lr].  w -= lr g
    Sgd = 0,
    /// s0 = v; p = [lr, momentum].  v = momentum v + lr g; w -= v
    /// (SgdW is this rule with momentum - lr/lr0 * wd as momentum).
    Momentum = 1,
    /// s0 = v; p = [lr, momentum].  v' = momentum v - lr g; w += -momentum v + (1 + momentum) v'
    Nesterov = 2,
    /// s0 = E[g^2], s1 = E[dx^2]; p = [lr, decay, eps].
    Adadelta = 3,
    /// s0 = G; p = [lr, eps].  G += g^2; w -= lr g / (sqrt(G) + eps)
    Adagrad = 4,
    /// s0 = v; p = [lr, decay, eps].  v = decay v + (1 - decay) g^2; w -= lr g / (sqrt(v) + eps)
    RmsProp = 5,
    /// s0 = n, s1 = g, s2 = d; p = [lr, decay, momentum, eps] (Graves 2013).
    RmsPropGraves = 6,
    /// s0 = m, s1 = v, optional s2 = max v (AMSGrad); p = [alpha_t, beta1, beta2, eps, wd,
    /// lower, upper].  The step alpha_t / (sqrt(v) + eps) is clipped to [lower, upper]
    /// unless both are infinite (AdaBound, AMSBound); then w -= step m + wd w (AdamW).
    Adam = 7,
    /// s0 = m, s1 = s, optional s2 = max s (AMSGrad variant); p = [alpha_t, beta1, beta2,
    /// eps, decay, sgd].  w -= decay w, then w -= alpha_t m (sgd != 0, rectified warm-up)
    /// or w -= alpha_t m / (sqrt(s + eps) + eps).
    AdaBelief = 8,
    /// s0 = m, s1 = u; p = [alpha_t, beta1, beta2, eps].  u = max(beta2 u, |g|)
    Adamax = 9,
    /// s0 = m; p = [lr, beta1, beta2, wd].  w -= lr (sign(beta1 m + (1 - beta1) g) + wd w)
    Lion = 10,
    /// s0 = v; p = [lr, momentum, coefficient, eps, decay] (layer-wise trust ratio).
    Lars = 11,
    /// s0 = m, s1 = v; p = [eta, beta1, beta2, c1, c2, eps, wd, gamma_l, gamma_u]
    /// where c1, c2 are the bias corrections (1 when disabled).
    Lamb = 12,
}

impl Rule {
    pub fn from_code(code: u32) -> Option<Rule> {
        use Rule::*;
        const ALL: [Rule; 13] = [
            Sgd,
            Momentum,
            Nesterov,
            Adadelta,
            Adagrad,
            RmsProp,
            RmsPropGraves,
            Adam,
            AdaBelief,
            Adamax,
            Lion,
            Lars,
            Lamb,
        ];
        ALL.get(code as usize).copied()
    }

    /// (states required, states accepted, parameters read)
    pub fn spec(self) -> (usize, usize, usize) {
        use Rule::*;
        match self {
            Sgd => (0, 0, 1),
            Momentum | Nesterov => (1, 1, 2),
            Adadelta => (2, 2, 3),
            Adagrad => (1, 1, 2),
            RmsProp => (1, 1, 3),
            RmsPropGraves => (3, 3, 4),
            Adam => (2, 3, 7),
            AdaBelief => (2, 3, 6),
            Adamax => (2, 2, 4),
            Lion => (1, 1, 4),
            Lars => (1, 1, 5),
            Lamb => (2, 2, 9),
        }
    }
}

/// An optional state buffer, split along with the others by [`par::par_for`].
struct Opt<'a>(Option<&'a mut [f32]>);

impl Split for Opt<'_> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        match self.0 {
            Some(s) => {
                let (a, b) = s.split_at_mut(mid);
                (Opt(Some(a)), Opt(Some(b)))
            }
            None => (Opt(None), Opt(None)),
        }
    }
}

/// The element-wise passes; `q` holds the rule's parameters, adjusted by
/// [`update`] where a pass needs derived values.
#[derive(Clone, Copy)]
enum Pass {
    Rule(Rule),
    /// Lars after its trust ratio: q = [lr_local, momentum, decay].
    LarsStep,
    /// Lamb's step: q = [eta * local_lr, 1 / c1, 1 / c2, eps, wd].
    LambStep,
}

#[inline(always)]
fn each0(w: &mut [f32], g: &[f32], f: impl Fn(&mut f32, f32)) {
    for (w, &g) in w.iter_mut().zip(g) {
        f(w, g)
    }
}

#[inline(always)]
fn each1(w: &mut [f32], g: &[f32], a: &mut [f32], f: impl Fn(&mut f32, f32, &mut f32)) {
    for ((w, &g), a) in w.iter_mut().zip(g).zip(a) {
        f(w, g, a)
    }
}

#[inline(always)]
fn each2(w: &mut [f32], g: &[f32], a: &mut [f32], b: &mut [f32], f: impl Fn(&mut f32, f32, &mut f32, &mut f32)) {
    for (((w, &g), a), b) in w.iter_mut().zip(g).zip(a).zip(b) {
        f(w, g, a, b)
    }
}

#[inline(always)]
fn each3(
    w: &mut [f32],
    g: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    c: &mut [f32],
    f: impl Fn(&mut f32, f32, &mut f32, &mut f32, &mut f32),
) {
    for ((((w, &g), a), b), c) in w.iter_mut().zip(g).zip(a).zip(b).zip(c) {
        f(w, g, a, b, c)
    }
}

#[inline(always)]
fn sign(x: f32) -> f32 {
    ((x > 0.0) as i32 - (x < 0.0) as i32) as f32
}

/// One element-wise pass over a piece of the buffers (states checked by [`update`]).
#[inline(always)]
fn pass(
    pass: Pass,
    w: &mut [f32],
    g: &[f32],
    s0: Option<&mut [f32]>,
    s1: Option<&mut [f32]>,
    s2: Option<&mut [f32]>,
    q: &[f32; 16],
) {
    let (mut e0, mut e1, mut e2) = ([0f32; 0], [0f32; 0], [0f32; 0]);
    let s0 = s0.unwrap_or(&mut e0[..]);
    let s1 = s1.unwrap_or(&mut e1[..]);
    let has_s2 = s2.is_some();
    let s2 = s2.unwrap_or(&mut e2[..]);
    match pass {
        Pass::Rule(Rule::Sgd) => {
            let lr = q[0];
            each0(w, g, |w, g| *w -= lr * g)
        }
        Pass::Rule(Rule::Momentum) => {
            let (lr, mom) = (q[0], q[1]);
            each1(w, g, s0, |w, g, v| {
                *v = mom * *v + lr * g;
                *w -= *v;
            })
        }
        Pass::Rule(Rule::Nesterov) => {
            let (lr, mom) = (q[0], q[1]);
            each1(w, g, s0, |w, g, v| {
                let prev = *v;
                *v = mom * *v - lr * g;
                *w += -mom * prev + (1.0 + mom) * *v;
            })
        }
        Pass::Rule(Rule::Adadelta) => {
            let (lr, decay, eps) = (q[0], q[1], q[2]);
            each2(w, g, s0, s1, |w, g, eg, ed| {
                *eg = *eg * decay + g * g * (1.0 - decay);
                let delta = ((*ed + eps) / (*eg + eps)).sqrt() * g;
                *ed = *ed * decay + delta * delta * (1.0 - decay);
                *w -= lr * delta;
            })
        }
        Pass::Rule(Rule::Adagrad) => {
            let (lr, eps) = (q[0], q[1]);
            each1(w, g, s0, |w, g, s| {
                *s += g * g;
                *w -= lr * g / (s.sqrt() + eps);
            })
        }
        Pass::Rule(Rule::RmsProp) => {
            let (lr, decay, eps) = (q[0], q[1], q[2]);
            each1(w, g, s0, |w, g, v| {
                *v = *v * decay + g * g * (1.0 - decay);
                *w -= lr / (v.sqrt() + eps) * g;
            })
        }
        Pass::Rule(Rule::RmsPropGraves) => {
            let (lr, decay, mom, eps) = (q[0], q[1], q[2], q[3]);
            each3(w, g, s0, s1, s2, |w, g, n, gm, d| {
                *n = decay * *n + (1.0 - decay) * g * g;
                *gm = decay * *gm + (1.0 - decay) * g;
                *d = mom * *d - lr * g / (*n - *gm * *gm + eps).sqrt();
                *w += *d;
            })
        }
        Pass::Rule(Rule::Adam) => {
            let (alpha, b1, b2, eps, wd, lo, hi) = (q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
            let bounded = lo > f32::NEG_INFINITY || hi < f32::INFINITY;
            let step = move |w: &mut f32, m: f32, v: f32| {
                let eta = alpha / (v.sqrt() + eps);
                let eta = if bounded { hi.min(eta.max(lo)) } else { eta };
                *w = *w - eta * m - wd * *w;
            };
            if has_s2 {
                each3(w, g, s0, s1, s2, |w, g, m, v, vmax| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *vmax = vmax.max(*v);
                    step(w, *m, *vmax)
                })
            } else {
                each2(w, g, s0, s1, |w, g, m, v| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    step(w, *m, *v)
                })
            }
        }
        Pass::Rule(Rule::AdaBelief) => {
            let (alpha, b1, b2, eps, decay, sgd) = (q[0], q[1], q[2], q[3], q[4], q[5] != 0.0);
            let step = move |w: &mut f32, m: f32, s: f32| {
                *w -= *w * decay;
                *w -= if sgd { alpha * m } else { alpha * m / ((s + eps).sqrt() + eps) };
            };
            if has_s2 {
                each3(w, g, s0, s1, s2, |w, g, m, s, smax| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *s = b2 * *s + (1.0 - b2) * (g - *m) * (g - *m);
                    *smax = smax.max(*s);
                    step(w, *m, *smax)
                })
            } else {
                each2(w, g, s0, s1, |w, g, m, s| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *s = b2 * *s + (1.0 - b2) * (g - *m) * (g - *m);
                    step(w, *m, *s)
                })
            }
        }
        Pass::Rule(Rule::Adamax) => {
            let (alpha, b1, b2, eps) = (q[0], q[1], q[2], q[3]);
            each2(w, g, s0, s1, |w, g, m, u| {
                *m = b1 * *m + (1.0 - b1) * g;
                *u = (b2 * *u).max(g.abs());
                *w -= alpha * *m / (*u + eps);
            })
        }
        Pass::Rule(Rule::Lion) => {
            let (lr, b1, b2, wd) = (q[0], q[1], q[2], q[3]);
            each1(w, g, s0, |w, g, m| {
                let u = sign(g + b1 * (*m - g));
                *m = g + b2 * (*m - g);
                *w -= lr * (u + wd * *w);
            })
        }
        Pass::LarsStep => {
            let (lr, mom, decay) = (q[0], q[1], q[2]);
            each1(w, g, s0, |w, g, v| {
                *v = mom * *v + lr * (g + decay * *w);
                *w -= *v;
            })
        }
        Pass::LambStep => {
            let (step, i1, i2, eps, wd) = (q[0], q[1], q[2], q[3], q[4]);
            each2(w, g, s0, s1, |w, _, m, v| *w -= step * lamb_r(*w, *m, *v, i1, i2, eps, wd))
        }
        Pass::Rule(Rule::Lars | Rule::Lamb) => unreachable!("run in phases by update()"),
    }
}

/// Lamb's direction: the bias-corrected Adam ratio plus decoupled decay
/// (`i1`, `i2`: the reciprocals of the bias corrections).
#[inline(always)]
fn lamb_r(w: f32, m: f32, v: f32, i1: f32, i2: f32, eps: f32, wd: f32) -> f32 {
    (m * i1) / ((v * i2).sqrt() + eps) + wd * w
}

fn run(p: Pass, w: &mut [f32], g: &[f32], s: [Option<&mut [f32]>; 3], q: &[f32; 16]) {
    let [s0, s1, s2] = s;
    par_for((w, g, Opt(s0), Opt(s1), Opt(s2)), 6, |(w, g, s0, s1, s2)| {
        simd::dispatch(
            #[inline(always)]
            || pass(p, w, g, s0.0, s1.0, s2.0, q),
        )
    });
}

/// Elements per piece of the reductions (fixed, so that sums do not depend
/// on the number of threads).
const SUM_CHUNK: usize = 16 * 1024;

/// Σ over pieces of `f(range)`, added in order (deterministic).
fn chunked_sums<const K: usize>(n: usize, f: impl Fn(Range<usize>) -> [f64; K] + Sync) -> [f64; K] {
    use rayon::prelude::*;
    let pieces = n.div_ceil(SUM_CHUNK);
    let range = |c: usize| c * SUM_CHUNK..((c + 1) * SUM_CHUNK).min(n);
    let parts: Vec<[f64; K]> = par::install(n, |par| {
        if par {
            (0..pieces).into_par_iter().map(|c| f(range(c))).collect()
        } else {
            (0..pieces).map(|c| f(range(c))).collect()
        }
    });
    parts.iter().fold([0.0; K], |mut acc, p| {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        acc
    })
}

/// Σ x^2 over a piece, in 8 f64 lanes (vectorised).
#[inline(always)]
fn sum_sq_f32(x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            let v = c[k] as f64;
            lanes[k] += v * v;
        }
    }
    let tail: f64 = it.remainder().iter().map(|&v| v as f64 * v as f64).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Σ r^2 over a piece, r being Lamb's direction ([`lamb_r`]), in 8 f64 lanes.
#[inline(always)]
fn lamb_r_sum_sq(w: &[f32], m: &[f32], v: &[f32], i1: f32, i2: f32, eps: f32, wd: f32) -> f64 {
    let mut lanes = [0f64; 8];
    let (mut iw, mut im, mut iv) = (w.chunks_exact(8), m.chunks_exact(8), v.chunks_exact(8));
    for ((w, m), v) in (&mut iw).zip(&mut im).zip(&mut iv) {
        for k in 0..8 {
            let r = lamb_r(w[k], m[k], v[k], i1, i2, eps, wd) as f64;
            lanes[k] += r * r;
        }
    }
    let tail: f64 = iw
        .remainder()
        .iter()
        .zip(im.remainder())
        .zip(iv.remainder())
        .map(|((&w, &m), &v)| {
            let r = lamb_r(w, m, v, i1, i2, eps, wd) as f64;
            r * r
        })
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// Σ x^2 (in f64, deterministic for any number of threads).
pub fn sum_squares(x: &[f32]) -> f64 {
    chunked_sums(x.len(), |r| {
        [simd::dispatch(
            #[inline(always)]
            || sum_sq_f32(&x[r]),
        )]
    })[0]
}

/// Whether `x` holds an infinity (bit 0) and/or a NaN (bit 1).
pub fn nonfinite(x: &[f32]) -> u32 {
    let [inf, nan] = chunked_sums(x.len(), |r| {
        let (mut inf, mut nan) = (false, false);
        for &v in &x[r] {
            inf |= v.is_infinite();
            nan |= v.is_nan();
        }
        [inf as u32 as f64, nan as u32 as f64]
    });
    (inf > 0.0) as u32 | (((nan > 0.0) as u32) << 1)
}

/// Gradient edits before an update: op 0: g += a w (weight decay); op 1: g *= a.
pub fn grad_op(op: u32, g: &mut [f32], w: &[f32], a: f32) -> Result {
    match op {
        0 => {
            same_len(g.len(), &[w.len()])?;
            par_for((g, w), 2, |(g, w)| {
                simd::dispatch(
                    #[inline(always)]
                    || g.iter_mut().zip(w).for_each(|(g, &w)| *g += a * w),
                )
            })
        }
        1 => par_for(g, 1, |g| {
            simd::dispatch(
                #[inline(always)]
                || g.iter_mut().for_each(|g| *g *= a),
            )
        }),
        _ => return Err(Error::Invalid),
    }
    Ok(())
}

/// Updates the parameter `w` in place from its gradient `g` by `rule`,
/// reading and updating the rule's state buffers `s` (see [`Rule`] for the
/// states and the parameters `p` each rule expects).
pub fn update(rule: Rule, w: &mut [f32], g: &[f32], s: [Option<&mut [f32]>; 3], p: &[f32]) -> Result {
    let n = w.len();
    let (need, accept, np) = rule.spec();
    let given = s.iter().take_while(|x| x.is_some()).count();
    if p.len() < np || given < need || given > accept || s.iter().skip(given).any(|x| x.is_some()) {
        return Err(Error::Invalid);
    }
    same_len(n, &[g.len()])?;
    same_len(n, &s.iter().flatten().map(|x| x.len()).collect::<Vec<_>>())?;
    let mut q = [0f32; 16];
    q[..np].copy_from_slice(&p[..np]);
    match rule {
        Rule::Lars => {
            let (lr, mom, coef, eps, decay) = (q[0], q[1], q[2], q[3], q[4]);
            let wr = &*w;
            let [gg, ww] = chunked_sums(n, |r| {
                simd::dispatch(
                    #[inline(always)]
                    || [sum_sq_f32(&g[r.clone()]), sum_sq_f32(&wr[r])],
                )
            });
            let (g_norm, w_norm) = (gg.sqrt() as f32, ww.sqrt() as f32);
            let mut x = g_norm + decay * w_norm;
            if x.is_nan() || x < 0.0 {
                return Err(Error::Invalid);
            }
            if x < eps {
                x += eps;
            }
            let local = if w_norm < eps { lr } else { lr * coef * w_norm / x };
            run(
                Pass::LarsStep,
                w,
                g,
                s,
                &[local, mom, decay, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            );
        }
        Rule::Lamb => {
            let (eta, b1, b2, eps, wd, gl, gu) = (q[0], q[1], q[2], q[5], q[6], q[7], q[8]);
            let (i1, i2) = (1.0 / q[3], 1.0 / q[4]); // reciprocals: lamb_r multiplies
            let [s0, s1, _] = s;
            let (m, v) = (s0.ok_or(Error::Invalid)?, s1.ok_or(Error::Invalid)?);
            // moments, then the norms of r and w, piece by piece while the piece is in cache
            let piece = |w: &[f32], g: &[f32], m: &mut [f32], v: &mut [f32]| -> [f64; 2] {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for ((&g, m), v) in g.iter().zip(&mut *m).zip(&mut *v) {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                        }
                        [lamb_r_sum_sq(w, m, v, i1, i2, eps, wd), sum_sq_f32(w)]
                    },
                )
            };
            let parts: Vec<[f64; 2]> = {
                use rayon::prelude::*;
                let (wr, mr, vr) = (&*w, &mut *m, &mut *v);
                par::install(n, |par| {
                    if par {
                        let it = wr.par_chunks(SUM_CHUNK).zip(g.par_chunks(SUM_CHUNK));
                        let it = it.zip(mr.par_chunks_mut(SUM_CHUNK)).zip(vr.par_chunks_mut(SUM_CHUNK));
                        it.map(|(((w, g), m), v)| piece(w, g, m, v)).collect()
                    } else {
                        let it = wr.chunks(SUM_CHUNK).zip(g.chunks(SUM_CHUNK));
                        let it = it.zip(mr.chunks_mut(SUM_CHUNK)).zip(vr.chunks_mut(SUM_CHUNK));
                        it.map(|(((w, g), m), v)| piece(w, g, m, v)).collect()
                    }
                })
            };
            let [rr, ww] = parts.iter().fold([0f64; 2], |a, p| [a[0] + p[0], a[1] + p[1]]);
            let (r_norm, w_norm) = (rr.sqrt() as f32, ww.sqrt() as f32);
            let mut w_norm = w_norm;
            if w_norm < gl {
                w_norm = gl;
            }
            if w_norm > gu {
                w_norm = gu;
            }
            let local = if r_norm > eps { w_norm / r_norm } else { 1.0 };
            let mut step = [0f32; 16];
            step[..5].copy_from_slice(&[eta * local, i1, i2, eps, wd]);
            run(Pass::LambStep, w, g, [Some(m), Some(v), None], &step);
        }
        _ => run(Pass::Rule(rule), w, g, s, &q),
    }
    Ok(())
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    fn data(n: usize, k: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(k * 97)) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Every rule: the threaded, vectorised kernel equals a scalar replay of
    /// the same formula on a small slice.
    #[test]
    fn rules_match_per_element_replay_and_threads_do_not_change_results() {
        let params: [(Rule, &[f32]); 15] = [
            (Rule::Sgd, &[0.1]),
            (Rule::Momentum, &[0.1, 0.9]),
            (Rule::Nesterov, &[0.1, 0.9]),
            (Rule::Adadelta, &[1.0, 0.95, 1e-6]),
            (Rule::Adagrad, &[0.01, 1e-8]),
            (Rule::RmsProp, &[0.001, 0.9, 1e-8]),
            (Rule::RmsPropGraves, &[1e-4, 0.95, 0.9, 1e-4]),
            (Rule::Adam, &[0.001, 0.9, 0.999, 1e-8, 0.0, f32::NEG_INFINITY, f32::INFINITY]),
            (Rule::Adam, &[0.001, 0.9, 0.999, 1e-8, 1e-4, 0.01, 0.2]),
            (Rule::AdaBelief, &[0.001, 0.9, 0.999, 1e-8, 0.0, 0.0]),
            (Rule::Adamax, &[0.002, 0.9, 0.999, 1e-8]),
            (Rule::Lion, &[1e-4, 0.9, 0.99, 0.01]),
            (Rule::Lars, &[0.1, 0.9, 0.001, 1e-6, 1e-4]),
            (Rule::Lamb, &[0.001, 0.9, 0.999, 0.1, 0.001, 1e-6, 0.01, 0.0, 10.0]),
            (Rule::Lamb, &[0.001, 0.9, 0.999, 1.0, 1.0, 1e-6, 0.0, 0.0, 10.0]),
        ];
        for (rule, p) in params {
            let (need, accept, _) = rule.spec();
            for nstates in need..=accept {
                let n = 200_003;
                let g = data(n, 1);
                let mut w = data(n, 2);
                // states >= 0, the first >= 1 (RMSpropGraves needs n > g^2)
                let mut st: Vec<Vec<f32>> = (0..nstates)
                    .map(|k| {
                        data(n, 3 + k as u32)
                            .iter()
                            .map(|x| if k == 0 { x.abs() + 1.0 } else { x.abs() * 0.1 })
                            .collect()
                    })
                    .collect();
                // reference: the same kernel on a prefix, one piece, no threads
                let k = 37;
                let (mut w2, mut st2) = (w[..k].to_vec(), st.iter().map(|s| s[..k].to_vec()).collect::<Vec<_>>());
                let norm_rule = matches!(rule, Rule::Lars | Rule::Lamb);
                {
                    let mut it = st.iter_mut();
                    let s =
                        [it.next().map(|x| &mut x[..]), it.next().map(|x| &mut x[..]), it.next().map(|x| &mut x[..])];
                    update(rule, &mut w, &g, s, p).unwrap();
                }
                if norm_rule {
                    // a norm-based rule is checked against its own two passes on the full data
                    continue;
                }
                let mut it = st2.iter_mut();
                let s = [it.next().map(|x| &mut x[..]), it.next().map(|x| &mut x[..]), it.next().map(|x| &mut x[..])];
                update(rule, &mut w2, &g[..k], s, p).unwrap();
                assert_eq!(&w[..k], &w2[..], "{rule:?}");
                for (a, b) in st.iter().zip(&st2) {
                    assert_eq!(&a[..k], &b[..], "{rule:?}");
                }
                assert!(w.iter().all(|x| x.is_finite()), "{rule:?}");
            }
        }
    }

    #[test]
    fn scalar_formulas() {
        // Nesterov, one element
        let (mut w, mut v) = ([1.0f32], [0.5f32]);
        update(Rule::Nesterov, &mut w, &[2.0], [Some(&mut v[..]), None, None], &[0.1, 0.9]).unwrap();
        let v1 = 0.9 * 0.5 - 0.1 * 2.0;
        assert_eq!(v[0], v1);
        assert!((w[0] - (1.0 - 0.9 * 0.5 + 1.9 * v1)).abs() < 1e-7);
        // Lion: sign of the interpolation, then the momentum moves with beta2
        let (mut w, mut m) = ([1.0f32, 1.0, 1.0], [1.0f32, -1.0, 0.0]);
        update(Rule::Lion, &mut w, &[-0.5, -0.5, 0.0], [Some(&mut m[..]), None, None], &[0.1, 0.9, 0.99, 0.0]).unwrap();
        assert_eq!(w, [0.9, 1.1, 1.0]);
        assert!((m[0] - (0.99 * 1.0 + 0.01 * -0.5)).abs() < 1e-7);
        // Lars: lr * coef * |w| / (|g| + decay |w|)
        let (mut w, mut v) = ([3.0f32, 4.0], [0.0f32; 2]);
        update(Rule::Lars, &mut w, &[0.0, 1.0], [Some(&mut v[..]), None, None], &[1.0, 0.9, 0.5, 1e-6, 0.0]).unwrap();
        let lr = 0.5 * 5.0 / 1.0;
        assert_eq!(v, [0.0, lr]);
        // Lamb without decay: w moves by eta * |w| along r / |r|
        let (mut w, mut m, mut v) = ([3.0f32, 4.0], [0.0f32; 2], [0.0f32; 2]);
        update(
            Rule::Lamb,
            &mut w,
            &[1.0, 1.0],
            [Some(&mut m[..]), Some(&mut v[..]), None],
            &[0.1, 0.9, 0.999, 1.0, 1.0, 1e-6, 0.0, 0.0, 10.0],
        )
        .unwrap();
        let r = 0.1 / (0.001f32.sqrt() + 1e-6);
        let step = 0.1 * 5.0 / (2.0f32.sqrt() * r) * r;
        assert!((w[0] - (3.0 - step)).abs() < 1e-5 && (w[1] - (4.0 - step)).abs() < 1e-5);
    }

    #[test]
    fn checks_and_helpers() {
        let mut w = [0f32; 4];
        assert!(update(Rule::Adam, &mut w, &[0.0; 4], [None, None, None], &[0.0; 7]).is_err());
        assert!(update(Rule::Sgd, &mut w, &[0.0; 3], [None, None, None], &[0.1]).is_err());
        assert!(update(Rule::Momentum, &mut w, &[0.0; 4], [Some(&mut [0.0f32; 4][..]), None, None], &[0.1]).is_err());
        assert!(
            update(Rule::Momentum, &mut w, &[0.0; 4], [Some(&mut [0.0f32; 3][..]), None, None], &[0.1, 0.9]).is_err()
        );
        assert!(update(
            Rule::Adam,
            &mut w,
            &[0.0; 4],
            [Some(&mut [0.0f32; 4][..]), None, Some(&mut [0.0f32; 4][..])],
            &[0.0; 7]
        )
        .is_err());
        assert!(Rule::from_code(13).is_none() && Rule::from_code(12) == Some(Rule::Lamb));
        let x: Vec<f32> = (0..100_000).map(|i| (i % 3) as f32).collect();
        let exact: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        assert_eq!(sum_squares(&x), exact);
        assert_eq!(sum_squares(&[]), 0.0);
        let mut y = x.clone();
        assert_eq!(nonfinite(&y), 0);
        y[77_777] = f32::INFINITY;
        assert_eq!(nonfinite(&y), 1);
        y[5] = f32::NAN;
        assert_eq!(nonfinite(&y), 3);
        let mut g = vec![1.0f32; 5];
        grad_op(0, &mut g, &[1.0, 2.0, 3.0, 4.0, 5.0], 0.5).unwrap();
        assert_eq!(g, [1.5, 2.0, 2.5, 3.0, 3.5]);
        grad_op(1, &mut g, &[], 2.0).unwrap();
        assert_eq!(g, [3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!(grad_op(0, &mut g, &[1.0], 1.0).is_err() && grad_op(2, &mut g, &[], 1.0).is_err());
    }
}
