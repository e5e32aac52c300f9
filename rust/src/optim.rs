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

/// w -= lr * g
pub fn sgd(w: &mut [f32], g: &[f32], lr: f32) -> Result {
    same_len(w.len(), &[g.len()])?;
    par_for((w, g), 1, |(w, g)| {
        simd::dispatch(
            #[inline(always)]
            || w.iter_mut().zip(g).for_each(|(w, &g)| *w -= lr * g),
        )
    });
    Ok(())
}

/// v = momentum * v + lr * g; w -= v  (NNabla's Momentum).
pub fn momentum(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, momentum: f32) -> Result {
    same_len(w.len(), &[g.len(), v.len()])?;
    par_for((w, g, v), 2, |(w, g, v)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for ((w, &g), v) in w.iter_mut().zip(g).zip(v) {
                    *v = momentum * *v + lr * g;
                    *w -= *v;
                }
            },
        )
    });
    Ok(())
}

/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= alpha_t m / (sqrt(v) + eps)
/// (the caller folds the bias correction into alpha_t).
#[allow(clippy::too_many_arguments)]
pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha_t: f32, beta1: f32, beta2: f32, eps: f32) -> Result {
    same_len(w.len(), &[g.len(), m.len(), v.len()])?;
    par_for((w, g, m, v), 3, |(w, g, m, v)| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *w -= alpha_t * *m / (v.sqrt() + eps);
                }
            },
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_match_scalar_formulas() {
        for n in [1usize, 100, 300_000] {
            let g: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let w0: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut w = w0.clone();
            sgd(&mut w, &g, 0.5).unwrap();
            assert!(w.iter().zip(&w0).zip(&g).all(|((w, w0), g)| *w == w0 - 0.5 * g));

            let (mut w, mut v) = (w0.clone(), vec![0.25f32; n]);
            momentum(&mut w, &g, &mut v, 0.1, 0.9).unwrap();
            for i in 0..n {
                let vv = 0.9 * 0.25 + 0.1 * g[i];
                assert_eq!(v[i], vv);
                assert_eq!(w[i], w0[i] - vv);
            }

            let (mut w, mut m, mut v) = (w0.clone(), vec![0.1f32; n], vec![0.2f32; n]);
            adam(&mut w, &g, &mut m, &mut v, 0.01, 0.9, 0.999, 1e-8).unwrap();
            for i in 0..n {
                let mm = 0.9 * 0.1 + (1.0 - 0.9) * g[i];
                let vv = 0.999 * 0.2 + (1.0 - 0.999) * g[i] * g[i];
                assert!((m[i] - mm).abs() < 1e-7 && (v[i] - vv).abs() < 1e-7);
                let ww = w0[i] - 0.01 * mm / (vv.sqrt() + 1e-8);
                assert!((w[i] - ww).abs() < 1e-6);
            }
        }
        assert!(sgd(&mut [0.0; 2], &[0.0; 3], 1.0).is_err());
    }
}
