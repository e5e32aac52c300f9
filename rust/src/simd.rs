//! Run-time choice of the instruction set.
//!
//! [`dispatch`] runs a closure inside a function compiled for AVX-512
//! (x86-64-v4), AVX2 + FMA (x86-64-v3) or the baseline, whichever is the best
//! this CPU supports; the choice is made once and cached.  For the loops in the
//! closure to be vectorised with those instructions, the closure and every
//! function its hot loop calls must be `#[inline(always)]` (a call to a normal
//! function leaves the target-feature context).
//!
//! `NNCY_SIMD=scalar|avx2|avx512` caps the level (to test the fallbacks).

use pulp::Arch;
use std::sync::OnceLock;

static ARCH: OnceLock<Arch> = OnceLock::new();

fn detect() -> Arch {
    let best = Arch::new();
    match std::env::var("NNCY_SIMD").as_deref() {
        Ok("scalar") | Ok("none") => Arch::Scalar,
        #[cfg(target_arch = "x86_64")]
        Ok("avx2") => match best {
            Arch::V4(_) | Arch::V3(_) => pulp::x86::V3::try_new().map_or(Arch::Scalar, Arch::V3),
            _ => best,
        },
        _ => best,
    }
}

/// The instruction set in use.
#[inline(always)]
pub fn arch() -> Arch {
    *ARCH.get_or_init(detect)
}

/// Runs `f` compiled for the instruction set in use.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    arch().dispatch(f)
}

/// A short name of the instruction set in use ("avx512", "avx2", "scalar").
pub fn isa_name() -> &'static str {
    #[allow(unreachable_patterns)]
    match arch() {
        #[cfg(target_arch = "x86_64")]
        Arch::V4(_) => "avx512",
        #[cfg(target_arch = "x86_64")]
        Arch::V3(_) => "avx2",
        Arch::Scalar => "scalar",
        _ => "simd",
    }
}

/// Outputs of at least this many floats (32 MB) are written with streaming
/// (non-temporal) stores by the pointwise kernels: such an output does not
/// stay in the caches anyway, and a streaming store skips the read of each
/// cache line that a normal store does first, a third of a map's traffic.
pub const STREAM_MIN: usize = 1 << 23;

/// Whether [`stream_fill`] uses streaming stores on this CPU (AVX-512 in use).
#[inline(always)]
pub fn streaming() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(arch(), Arch::V4(_))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i] = one(i)` for every i, the 64-byte-aligned middle 16 values at a
/// time (`sixteen(i, lanes)` fills lanes with the values of i..i + 16) and
/// written with streaming stores when [`streaming`].  Call it inside
/// [`dispatch`] so that the lane loops are vectorised.
#[inline(always)]
#[allow(clippy::needless_range_loop)]   // index loops over one output and its sources
pub fn stream_fill(
    out: &mut [f32],
    one: impl Fn(usize) -> f32,
    sixteen: impl Fn(usize, &mut [f32; 16]),
) {
    let n = out.len();
    #[cfg(target_arch = "x86_64")]
    if streaming() {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_stream_ps, _mm_sfence};
        let head = out.as_ptr().align_offset(64).min(n);
        for i in 0..head {
            out[i] = one(i);
        }
        let mut i = head;
        let mut lanes = [0.0f32; 16];
        while i + 16 <= n {
            sixteen(i, &mut lanes);
            // SAFETY: AVX-512 is available (streaming()); out[i..i + 16] is in
            // bounds and 64-byte aligned (i - head is a multiple of 16).
            unsafe { _mm512_stream_ps(out.as_mut_ptr().add(i), _mm512_loadu_ps(lanes.as_ptr())) };
            i += 16;
        }
        for k in i..n {
            out[k] = one(k);
        }
        // SAFETY: a store fence; orders the streaming stores before later ones.
        unsafe { _mm_sfence() };
        return;
    }
    for i in 0..n {
        out[i] = one(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_fill_writes_every_element_at_any_alignment() {
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        let f = |v: f32| v * v - 1.0;
        let mut buf = vec![0.0f32; 320];
        for start in 0..17 {
            for len in [0, 1, 15, 16, 17, 31, 64, 100, 283] {
                buf.fill(f32::NAN);
                let out = &mut buf[start..start + len];
                let x = &src[..len];
                dispatch(|| {
                    stream_fill(out, |i| f(x[i]), |i, l| {
                        for (o, &v) in l.iter_mut().zip(&x[i..i + 16]) {
                            *o = f(v);
                        }
                    })
                });
                assert!(buf[start..start + len].iter().zip(x).all(|(o, &v)| *o == f(v)));
                assert!(buf[..start].iter().chain(&buf[start + len..]).all(|v| v.is_nan()));
            }
        }
    }
}
