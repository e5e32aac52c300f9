//! Per-call overhead of the C ABI on tiny inputs: `cargo run --release --example small_calls`.
use nncy_kernels::ffi::*;
use std::hint::black_box;
use std::ptr::null;
use std::time::Instant;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let calls = 20_000_000;
    let xs = [0.5f32];
    let mut ys = [0.0f32];
    let one = [1isize];
    let sh = [1usize];
    let t = Instant::now();
    for _ in 0..calls {
        black_box(match which.as_str() {
            "add" => nncy_binary_f32(0, black_box(xs.as_ptr()), one.as_ptr(), xs.as_ptr(), one.as_ptr(), ys.as_mut_ptr(), sh.as_ptr(), 1, null(), 0),
            "sum" => nncy_reduce_f32(0, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, 1, 1, 1.0, 0),
            _ => nncy_unary_f32(0, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, null(), 0),
        });
    }
    println!("{which}: {:.1} ns/call", t.elapsed().as_secs_f64() / calls as f64 * 1e9);
}
