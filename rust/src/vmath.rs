//! Vectorisable f32 transcendentals.
//!
//! Branch-free polynomial approximations (Cephes' single-precision
//! coefficients) with range reduction by bit manipulation, so that LLVM
//! vectorises loops that call them.  All are `#[inline(always)]` so that they
//! are compiled for the instruction set chosen by [`crate::simd::dispatch`].
//! Accuracy against correctly rounded results (see the tests): exp, ln and
//! tanh within 1 ulp, sigmoid within 2 ulp, over the whole f32 range
//! including subnormal results; inf and NaN are handled.  Results are the
//! same bit for bit on every instruction set.
//!
//! Functions used rarely (sin, atan2, erf, ...) are std's scalar methods or
//! `libm`; they are listed in `nncy/_codegen.py`.
// The polynomial coefficients are Cephes' published values.
#![allow(clippy::excessive_precision)]

/// a * b + c, deliberately not fused: results are then the same on every
/// instruction set, and CPUs without FMA do not fall back to a libm call.
/// (Cephes' coefficients and split constants are designed for this.)
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer,
/// which is then found in the low bits of the sum.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// 2^n for n in [-126, 127], built from its bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// e^x.  Overflows to inf above ~88.72, underflows through the subnormals to
/// 0 below ~-103.97.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Clamping keeps 2^n buildable (NaN passes through).
    let x = x.clamp(-104.0, 89.0);
    let t = madd(x, LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = madd(n, -LN2_LO, madd(n, -LN2_HI, x));
    let p = madd(
        madd(madd(madd(madd(1.987_569_1e-4, r, 1.398_199_9e-3), r, 8.333_452e-3), r, 4.166_579_6e-2), r, 0.166_666_65),
        r,
        0.5,
    );
    let e = madd(p, r * r, r) + 1.0;
    // 2^n in two factors, so that subnormal results are rounded only once.
    let n1 = ni >> 1;
    e * pow2i(n1) * pow2i(ni.wrapping_sub(n1))
}

/// Natural logarithm: ln(0) = -inf, ln(x < 0) = NaN, ln(inf) = inf.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // Subnormals are scaled by 2^23 first.
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - if sub { 126 + 23 } else { 126 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // in [0.5, 1)
    let low = m < SQRT_HALF;
    let e = (if low { e - 1 } else { e }) as f32;
    let f = if low { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let p = madd(
        madd(
            madd(
                madd(
                    madd(
                        madd(madd(madd(7.037_683_6e-2, f, -0.115_146_1), f, 0.116_769_98), f, -0.124_201_41),
                        f,
                        0.142_493_23,
                    ),
                    f,
                    -0.166_680_57,
                ),
                f,
                0.200_007_15,
            ),
            f,
            -0.249_999_94,
        ),
        f,
        0.333_333_3,
    );
    let y = madd(z, -0.5, madd(e, -2.121_944_4e-4, p * f * z));
    let r = madd(e, 0.693_359_4, f + y);
    let r = if x == 0.0 { f32::NEG_INFINITY } else { r };
    let r = if x < 0.0 || x.is_nan() { f32::NAN } else { r };
    if x == f32::INFINITY {
        x
    } else {
        r
    }
}

/// Hyperbolic tangent.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = madd(
        madd(madd(madd(-5.704_988_7e-3, z, 2.063_908_9e-2), z, -5.373_971_6e-2), z, 0.133_314_42),
        z,
        -0.333_332_82,
    );
    let small = madd(x * z, p, x);
    let big = 1.0 - 2.0 / (exp(a + a) + 1.0);
    (if a < 0.625 { small } else { big }).copysign(x)
}

/// Logistic sigmoid 1 / (1 + e^-x), accurate in both tails.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    (if x >= 0.0 { 1.0 } else { e }) / (1.0 + e)
}

/// ln(1 + x), accurate near 0: ln(u) * x / (u - 1) with u = 1 + x corrects
/// the rounding of u (Goldberg).  Vectorisable.
#[inline(always)]
pub fn log1p(x: f32) -> f32 {
    let u = 1.0 + x;
    let d = u - 1.0;
    let r = ln(u) * (x / d);
    if d == 0.0 {
        x
    } else if u == f32::INFINITY {
        u
    } else {
        r
    }
}

/// e^x - 1, accurate near 0: its Taylor polynomial for |x| < 1 (terms to
/// x^11; the next is below half an ulp), e^x - 1 beyond (no cancellation
/// there).  Vectorisable.
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    const C: [f32; 10] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362880.0,
        1.0 / 3628800.0,
        1.0 / 39916800.0,
    ];
    let mut p = C[9];
    for k in (0..9).rev() {
        p = madd(p, x, C[k]);
    }
    let small = madd(p * x, x, x);
    if x.abs() < 1.0 {
        small
    } else {
        exp(x) - 1.0
    }
}

/// -1, 0 or 1 by the sign of x (NaN and -0 are returned as they are).
#[inline(always)]
pub fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// The error function (scalar, from `libm`).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// f64 counterparts, for the generated reference tests.
#[cfg(test)]
pub mod reference {
    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    pub fn sign(x: f64) -> f64 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            x
        }
    }
    pub fn erf(x: f64) -> f64 {
        libm::erf(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place (0 for two NaNs).
    pub fn ulps(a: f32, b: f32) -> u64 {
        if a.is_nan() && b.is_nan() || a == b {
            return 0;
        }
        if a.is_nan() || b.is_nan() {
            return u64::MAX;
        }
        let key = |v: f32| {
            let m = (v.to_bits() & 0x7fff_ffff) as i64;
            if v.is_sign_negative() {
                -m
            } else {
                m
            }
        };
        (key(a) - key(b)).unsigned_abs()
    }

    /// Max ulp error of `f` against `r` (f64, rounded) over a sweep of the
    /// f32 range (every 61st bit pattern, both signs).
    fn sweep(f: impl Fn(f32) -> f32, r: impl Fn(f64) -> f64) -> (u64, f32) {
        let mut worst = (0, 0.0);
        let mut xs: Vec<f32> = (0..0xffff_ffffu32).step_by(61).map(f32::from_bits).collect();
        xs.extend([0.0, -0.0, 1.0, -1.0, 0.625, -0.625, 88.72, 88.73, -87.5, -103.5, -104.5]);
        // Vectorised path: run through a loop over a slice.
        let ys: Vec<f32> = crate::simd::dispatch(
            #[inline(always)]
            || xs.iter().map(|&x| f(x)).collect(),
        );
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = r(x as f64) as f32;
            let u = ulps(y, want);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        eprintln!("max error {} ulp at x = {:e}", worst.0, worst.1);
        worst
    }

    /// Every f32 (slow: `cargo test --release -- --ignored exhaustive`).
    #[test]
    #[ignore]
    fn exhaustive() {
        use rayon::prelude::*;
        type Case = (&'static str, fn(f32) -> f32, fn(f64) -> f64);
        let cases: [Case; 4] = [
            ("exp", exp, f64::exp),
            ("ln", ln, f64::ln),
            ("tanh", tanh, f64::tanh),
            ("sigmoid", sigmoid, reference::sigmoid),
        ];
        for (name, f, r) in cases {
            let worst = (0..=u32::MAX >> 16)
                .into_par_iter()
                .map(|hi| {
                    let xs: Vec<f32> = (0..1u32 << 16).map(|lo| f32::from_bits(hi << 16 | lo)).collect();
                    let ys: Vec<f32> = crate::simd::dispatch(
                        #[inline(always)]
                        || xs.iter().map(|&x| f(x)).collect(),
                    );
                    xs.iter().zip(&ys).map(|(&x, &y)| (ulps(y, r(x as f64) as f32), x.to_bits())).max().unwrap()
                })
                .max()
                .unwrap();
            eprintln!("{name}: max {} ulp at x = {:e}", worst.0, f32::from_bits(worst.1));
        }
    }

    #[test]
    fn exp_accuracy() {
        let (u, x) = sweep(exp, f64::exp);
        assert!(u <= 2, "exp: {u} ulp at {x}");
        assert_eq!(exp(88.8), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-103.99), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-100.0) > 0.0); // subnormal
    }

    #[test]
    fn ln_accuracy() {
        let (u, x) = sweep(ln, f64::ln);
        assert!(u <= 2, "ln: {u} ulp at {x}");
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(-0.0), f32::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
        assert!(ln(f32::NAN).is_nan());
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(1e-45), (1e-45f32 as f64).ln() as f32);
    }

    #[test]
    fn tanh_accuracy() {
        let (u, x) = sweep(tanh, f64::tanh);
        assert!(u <= 2, "tanh: {u} ulp at {x}");
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert!(tanh(-0.0).is_sign_negative());
    }

    #[test]
    fn sigmoid_accuracy() {
        let (u, x) = sweep(sigmoid, reference::sigmoid);
        assert!(u <= 2, "sigmoid: {u} ulp at {x}");
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn log1p_expm1_accuracy() {
        let (u, x) = sweep(log1p, f64::ln_1p);
        assert!(u <= 4, "log1p: {u} ulp at {x}");
        let (u, x) = sweep(expm1, f64::exp_m1);
        assert!(u <= 4, "expm1: {u} ulp at {x}");
        for v in [0.0f32, -0.0, 1e-30, -1e-30, 1e-8, -1e-8] {
            assert_eq!(log1p(v), v);
            assert_eq!(expm1(v), v);
        }
        assert_eq!(log1p(-1.0), f32::NEG_INFINITY);
        assert!(log1p(-2.0).is_nan() && log1p(f32::NAN).is_nan());
        assert_eq!(log1p(f32::INFINITY), f32::INFINITY);
        assert_eq!(expm1(f32::INFINITY), f32::INFINITY);
        assert_eq!(expm1(100.0), f32::INFINITY);
        assert_eq!(expm1(f32::NEG_INFINITY), -1.0);
        assert_eq!(expm1(-100.0), -1.0);
        assert!(expm1(f32::NAN).is_nan());
    }

    #[test]
    fn small_helpers() {
        assert_eq!(sign(-3.0), -1.0);
        assert_eq!(sign(2.0), 1.0);
        assert_eq!(sign(0.0), 0.0);
        assert!(sign(f32::NAN).is_nan());
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
    }
}
