//! Every generated op, forward and gradients, against the generated f64
//! references and against finite differences of the f64 forward.

use crate::ops_gen::{self, reference as r};
use crate::pointwise::Operand;
use crate::strided::{Input, Layout};

const XS: [f64; 10] = [-2.3, -1.1, -0.45, -0.05, 0.07, 0.38, 0.9, 1.3, 1.7, 3.1];
const GY: f64 = 0.7;

fn close(got: f32, want: f64, tol: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got as f64 == want;
    }
    (got as f64 - want).abs() <= tol * (1.0 + want.abs())
}

/// Central difference of `f` at `x`, or None near a kink or outside the domain.
fn derivative(f: impl Fn(f64) -> f64, x: f64) -> Option<f64> {
    let h = 1e-6 * x.abs().max(1.0);
    let (a, b, c) = (f(x - h), f(x), f(x + h));
    if !(a.is_finite() && b.is_finite() && c.is_finite()) {
        return None;
    }
    let (left, right) = ((b - a) / h, (c - b) / h);
    if (left - right).abs() > 1e-3 * (1.0 + left.abs()) {
        return None;
    }
    Some((c - a) / (2.0 * h))
}

#[test]
fn unary_ops_forward_and_grad() {
    let x: Vec<f32> = XS.iter().map(|&v| v as f32).collect();
    // a large copy exercises the threaded path
    let big: Vec<f32> = x.iter().copied().cycle().take(200_000).collect();
    for (op, info) in ops_gen::UNARY.iter().enumerate() {
        let op32 = op as u32;
        let p64 = r::UNARY_PARAMS[op];
        let p: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
        let mut y = vec![0.0f32; x.len()];
        ops_gen::unary(op32, Some(&x), &mut y, &p).unwrap();
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            let want = r::unary(op32, xi as f64, p64);
            assert!(close(yi, want, 2e-6), "{} fwd at {xi}: {yi} vs {want}", info.name);
            let _ = i;
        }
        let mut yb = big.clone();
        ops_gen::unary(op32, None, &mut yb, &p).unwrap(); // in place, threaded
        assert!(yb.iter().enumerate().all(|(i, v)| v.to_bits() == y[i % x.len()].to_bits()), "{} big", info.name);

        let Some(_) = info.grads[0] else { continue };
        let gy = vec![GY as f32; x.len()];
        let mut gx = vec![1.0f32; x.len()];
        ops_gen::unary_grad(op32, &x, &y, &gy, &mut gx, &p, true).unwrap();
        for (&xi, &gi) in x.iter().zip(&gx) {
            let xd = xi as f64;
            let yd = r::unary(op32, xd, p64);
            let want = r::unary_grad(op32, xd, yd, GY, p64);
            assert!(close(gi - 1.0, want, 1e-5), "{} grad at {xi}: {} vs {want}", info.name, gi - 1.0);
            // a straight-through gradient is not the derivative: no finite-difference check
            if let Some(d) = derivative(|v| r::unary(op32, v, p64), xd).filter(|_| !r::UNARY_STRAIGHT_THROUGH[op]) {
                assert!(
                    (d * GY - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{} grad vs finite difference at {xi}: {want} vs {}",
                    info.name,
                    d * GY
                );
            }
        }
    }
}

fn inp(d: &[f32]) -> Input<'_> {
    Input { data: d, base: 0 }
}

#[test]
fn binary_ops_forward_and_grad() {
    // all pairs of XS, once as same-shape arrays and once broadcast (row x column)
    let n = XS.len();
    let a: Vec<f32> = XS.iter().map(|&v| v as f32).collect();
    let full0: Vec<f32> = (0..n * n).map(|k| a[k / n]).collect();
    let full1: Vec<f32> = (0..n * n).map(|k| a[k % n]).collect();
    let same = Layout::new(&[n * n], [&[1], &[1]]).unwrap();
    let bcast = Layout::new(&[n, n], [&[1, 0], &[0, 1]]).unwrap();
    for (op, info) in ops_gen::BINARY.iter().enumerate() {
        let op32 = op as u32;
        let p64 = r::BINARY_PARAMS[op];
        let p: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
        let mut y = vec![0.0f32; n * n];
        ops_gen::binary(op32, &same, Operand::In(inp(&full0)), Operand::In(inp(&full1)), &mut y, &p).unwrap();
        let mut yb = vec![0.0f32; n * n];
        ops_gen::binary(op32, &bcast, Operand::In(inp(&a)), Operand::In(inp(&a)), &mut yb, &p).unwrap();
        for k in 0..n * n {
            let (u, v) = (full0[k] as f64, full1[k] as f64);
            let want = r::binary(op32, u, v, p64);
            assert!(close(y[k], want, 2e-6), "{} fwd at ({u}, {v}): {} vs {want}", info.name, y[k]);
            assert_eq!(y[k].to_bits(), yb[k].to_bits(), "{} broadcast", info.name);
        }
        let gy = vec![GY as f32; n * n];
        for which in 0..2 {
            if info.grads[which].is_none() {
                continue;
            }
            let mut g = vec![0.0f32; n * n];
            ops_gen::binary_grad(op32, which as u32, &bcast, inp(&a), inp(&a), &y, &gy, &mut g, &p, false).unwrap();
            for k in 0..n * n {
                let (u, v) = (full0[k] as f64, full1[k] as f64);
                let yd = r::binary(op32, u, v, p64);
                let want = r::binary_grad(op32, which as u32, u, v, yd, GY, p64);
                assert!(close(g[k], want, 1e-5), "{} grad{which} at ({u}, {v}): {} vs {want}", info.name, g[k]);
                let d = if which == 0 {
                    derivative(|t| r::binary(op32, t, v, p64), u)
                } else {
                    derivative(|t| r::binary(op32, u, t, p64), v)
                };
                if let Some(d) = d.filter(|_| !r::BINARY_STRAIGHT_THROUGH[op]) {
                    assert!(
                        (d * GY - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{} grad{which} vs finite difference at ({u}, {v})",
                        info.name
                    );
                }
            }
        }
    }
}

#[test]
fn unknown_ops_and_missing_params() {
    let x = [1.0f32; 4];
    let mut y = [0.0f32; 4];
    assert!(ops_gen::unary(ops_gen::UNARY.len() as u32, Some(&x), &mut y, &[]).is_err());
    if let Some(op) = ops_gen::UNARY.iter().position(|i| i.n_params > 0) {
        assert!(ops_gen::unary(op as u32, Some(&x), &mut y, &[]).is_err());
    }
}
