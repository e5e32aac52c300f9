//! CPU kernels of nncy.
//!
//! The kernels are safe Rust, vectorised by LLVM inside functions compiled for
//! the best instruction set found at run time ([`simd`]), and threaded with a
//! dedicated rayon pool ([`par`]).  [`ffi`] is the C ABI used by the Cython
//! extension: it validates every argument, builds slices from the raw
//! pointers (its only `unsafe`, besides the call into `gemm`) and never lets a
//! panic cross the boundary.
//!
//! The pointwise ops (relu, add2, ...) are generated from `nncy/_table.py` by
//! `python -m nncy._codegen` into [`ops_gen`]; the generic kernels that run
//! them live in [`pointwise`].

pub mod alloc;
pub mod ffi;
pub mod gemm;
pub mod math;
pub mod norm;
pub mod optim;
#[rustfmt::skip]
pub mod ops_gen;
pub mod par;
pub mod pointwise;
pub mod reduce;
pub mod simd;
pub mod softmax;
pub mod strided;
pub mod vmath;

// Convolution and pooling (neural-network layers).
pub mod asconv;
pub mod conv;
pub mod depthwise;
pub mod infer;
pub mod pool;
pub mod window;
pub mod winograd;

#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod testdata;

/// Why a kernel refused its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Null pointer, bad size, unknown op code, too few parameters ...
    Invalid,
    /// An index or label outside its range.
    OutOfRange,
}

impl Error {
    /// The C ABI status code (see `ffi`).
    pub fn status(self) -> i32 {
        match self {
            Error::Invalid => 1,
            Error::OutOfRange => 2,
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, Error>;

// Neural-network layers: recurrent cells, embedding, patch correlation.
pub mod correlation;
pub mod embed;
pub mod recurrent;
