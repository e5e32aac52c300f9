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
