//! Quick throughput figures (not a test): `cargo run --release --example bench`.
//! Set NNCY_NUM_THREADS to compare thread counts.

use nncy_kernels::ffi::*;
use nncy_kernels::ops_gen::{BINARY, UNARY};
use std::hint::black_box;
use std::ptr::null;
use std::time::Instant;

/// Best time of `reps` runs of `f`, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn op(table: &[nncy_kernels::pointwise::OpInfo], name: &str) -> u32 {
    table.iter().position(|i| i.name == name).unwrap() as u32
}

fn main() {
    println!("threads: {}, isa: {}", nncy_num_threads(), nncy_kernels::simd::isa_name());
    let n = 1usize << 24;
    let x: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 0.01).collect();
    let x1: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut y = vec![0.0f32; n];
    let gb = |bytes: usize, t: f64| bytes as f64 / t / 1e9;

    let shape = [n];
    let one = [1isize];
    let t = best(10, || assert_eq!(nncy_strided_copy_f32(x.as_ptr(), one.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 1, 0), 0));
    println!("copy 16M (baseline)    {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));
    let t = best(10, || y.copy_from_slice(&x));
    println!("memcpy 1 thread        {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));
    for name in ["relu", "exp", "sigmoid", "tanh"] {
        let o = op(&UNARY, name);
        let t = best(10, || assert_eq!(nncy_unary_f32(o, x.as_ptr(), y.as_mut_ptr(), n, null(), 0), 0));
        println!("{name:<8} 16M           {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));
    }
    let o = op(&UNARY, "relu");
    let t = best(10, || assert_eq!(nncy_unary_f32(o, y.as_ptr(), y.as_mut_ptr(), n, null(), 0), 0));
    println!("relu in place 16M      {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));
    let add = op(&BINARY, "add2");
    let t = best(10, || assert_eq!(nncy_binary_f32(add, x.as_ptr(), one.as_ptr(), x1.as_ptr(), one.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 1, null(), 0), 0));
    println!("add2 16M               {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(12 * n, t));
    let shape2 = [n / 1024, 1024];
    let (s0, s1) = ([1024isize, 1], [0isize, 1]);
    let t = best(10, || assert_eq!(nncy_binary_f32(add, x.as_ptr(), s0.as_ptr(), x1.as_ptr(), s1.as_ptr(), y.as_mut_ptr(), shape2.as_ptr(), 2, null(), 0), 0));
    println!("add2 16M + row bcast   {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));
    let gy = x1.clone();
    let mut g = vec![0.0f32; n];
    let t = best(10, || assert_eq!(nncy_unary_grad_f32(o, null(), x.as_ptr(), gy.as_ptr(), g.as_mut_ptr(), n, null(), 0, 1), 0));
    println!("relu grad accum 16M    {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(16 * n, t));

    let mut s = [0.0f32];
    let t = best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), 1, n, 1, 1.0, 0), 0));
    println!("sum 16M (inner 1)      {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(4 * n, t));
    let mut s = vec![0.0f32; 4096];
    let t = best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), 1, n / 4096, 4096, 1.0, 0), 0));
    println!("sum axis 0 (4K x 4096) {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(4 * n, t));
    let mut s = vec![0.0f32; n / 1000];
    let t = best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), n / 1000, 1000, 1, 1.0, 0), 0));
    println!("sum rows of 1000       {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(4 * n, t));
    let t = best(10, || assert_eq!(nncy_reduce_f32(1, x.as_ptr(), s.as_mut_ptr(), n / 1000, 1000, 1, 1.0, 0), 0));
    println!("max rows of 1000       {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(4 * n, t));

    let (rows, c) = (n / 1000, 1000);
    let t = best(10, || assert_eq!(nncy_softmax_f32(x.as_ptr(), y.as_mut_ptr(), rows, c, 1, 0), 0));
    println!("softmax rows of 1000   {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * rows * c, t));
    let t = best(10, || assert_eq!(nncy_softmax_f32(x.as_ptr(), y.as_mut_ptr(), n / (1000 * 256), 1000, 256, 1), 0));
    println!("log_softmax c=1000 in=256 {:5.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n / 1000 * 1000, t));

    let shape_t = [4096usize, 4096];
    let t = best(10, || assert_eq!(nncy_strided_copy_f32(x.as_ptr(), [1isize, 4096].as_ptr(), y.as_mut_ptr(), shape_t.as_ptr(), 2, 0), 0));
    println!("transpose 4096^2       {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(8 * n, t));

    let w = vec![0.1f32; n];
    let (mut w1, mut m1, mut v1) = (w.clone(), w.clone(), w.clone());
    let t = best(10, || assert_eq!(nncy_adam_update_f32(w1.as_mut_ptr(), x.as_ptr(), m1.as_mut_ptr(), v1.as_mut_ptr(), n, 1e-3, 0.9, 0.999, 1e-8), 0));
    println!("adam 16M               {:7.2} ms  {:6.1} GB/s", t * 1e3, gb(28 * n, t));

    for size in [256usize, 1024, 2048] {
        let a = vec![0.5f32; size * size];
        let b = vec![0.25f32; size * size];
        let mut d = vec![0.0f32; size * size];
        let s = size as isize;
        let t = best(5, || assert_eq!(nncy_gemm_f32(size, size, size, d.as_mut_ptr(), s, 1, a.as_ptr(), s, 1, b.as_ptr(), s, 1, 0.0, 1.0), 0));
        println!("gemm {size}^3            {:7.2} ms  {:6.1} GFLOP/s", t * 1e3, 2.0 * (size as f64).powi(3) / t / 1e9);
    }
    let (bt, sz) = (256usize, 64usize);
    let a = vec![0.5f32; bt * sz * sz];
    let mut d = vec![0.0f32; bt * sz * sz];
    let (bs, s) = ((sz * sz) as isize, sz as isize);
    let t = best(5, || assert_eq!(nncy_batch_gemm_f32(bt, sz, sz, sz, d.as_mut_ptr(), bs, s, 1, a.as_ptr(), bs, s, 1, a.as_ptr(), bs, 1, s, 0.0, 1.0), 0));
    println!("batch gemm 256 x 64^3  {:7.2} ms  {:6.1} GFLOP/s", t * 1e3, 2.0 * bt as f64 * (sz as f64).powi(3) / t / 1e9);

    // In-cache throughput (8K elements: one thread), shows the vectorisation.
    let m = 8192;
    let xs: Vec<f32> = (0..m).map(|i| (i as f32 - 4096.0) * 0.001 + 0.5).collect();
    let mut ys = vec![0.0f32; m];
    for name in ["relu", "exp", "log", "sigmoid", "tanh", "pow_scalar"] {
        let o = op(&UNARY, name);
        let p = [2.5f32];
        let t = best(5, || {
            for _ in 0..1000 {
                black_box(nncy_unary_f32(o, xs.as_ptr(), ys.as_mut_ptr(), m, p.as_ptr(), 1));
            }
        });
        println!("{name:<10} in cache      {:7.3} ns/element", t / (1000 * m) as f64 * 1e9);
    }
    for name in ["add2", "div2"] {
        let o = op(&BINARY, name);
        let sh = [m];
        let t = best(5, || {
            for _ in 0..1000 {
                black_box(nncy_binary_f32(o, xs.as_ptr(), one.as_ptr(), xs.as_ptr(), one.as_ptr(), ys.as_mut_ptr(), sh.as_ptr(), 1, null(), 0));
            }
        });
        println!("{name:<10} in cache      {:7.3} ns/element", t / (1000 * m) as f64 * 1e9);
    }

    // Per-call overhead on tiny inputs.
    let calls = 1_000_000;
    let xs = [0.5f32];
    let mut ys = [0.0f32];
    let t = best(3, || {
        for _ in 0..calls {
            black_box(nncy_unary_f32(o, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, null(), 0));
        }
    });
    println!("relu, 1 element        {:7.1} ns/call", t / calls as f64 * 1e9);
    let sh = [1usize];
    let t = best(3, || {
        for _ in 0..calls {
            black_box(nncy_binary_f32(add, black_box(xs.as_ptr()), one.as_ptr(), xs.as_ptr(), one.as_ptr(), ys.as_mut_ptr(), sh.as_ptr(), 1, null(), 0));
        }
    });
    println!("add2, 1 element        {:7.1} ns/call", t / calls as f64 * 1e9);
    let t = best(3, || {
        for _ in 0..calls {
            black_box(nncy_reduce_f32(0, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, 1, 1, 1.0, 0));
        }
    });
    println!("sum, 1 element         {:7.1} ns/call", t / calls as f64 * 1e9);
}
