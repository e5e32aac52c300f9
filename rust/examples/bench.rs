//! Throughput figures (not a test):
//!     cargo run --release --example bench [stream|cache|reduce|softmax|gemm|small|threshold ...]
//! Set NNCY_NUM_THREADS to compare thread counts.  Machines are noisy: compare
//! a kernel with the `copy` baseline of the same run rather than across runs.

use nncy_kernels::ffi::*;
use nncy_kernels::ops_gen::{BINARY, UNARY};
use nncy_kernels::pointwise::OpInfo;
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

fn op(table: &[OpInfo], name: &str) -> u32 {
    table.iter().position(|i| i.name == name).unwrap() as u32
}

fn gbs(what: &str, bytes: usize, t: f64) {
    println!("{what:<28} {:8.2} ms  {:6.1} GB/s", t * 1e3, bytes as f64 / t / 1e9);
}

const N: usize = 1 << 24;

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 0.01).collect()
}

fn stream() {
    let (x, x1, mut y) = (data(N), data(N), vec![0.0f32; N]);
    let (shape, one) = ([N], [1isize]);
    gbs(
        "copy 16M (baseline)",
        8 * N,
        best(10, || {
            assert_eq!(nncy_strided_copy_f32(x.as_ptr(), one.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 1, 0), 0)
        }),
    );
    gbs("memcpy, 1 thread", 8 * N, best(10, || y.copy_from_slice(&x)));
    for name in ["relu", "exp", "sigmoid", "tanh"] {
        let o = op(&UNARY, name);
        gbs(
            &format!("{name} 16M"),
            8 * N,
            best(10, || assert_eq!(nncy_unary_f32(o, x.as_ptr(), y.as_mut_ptr(), N, null(), 0), 0)),
        );
    }
    let relu = op(&UNARY, "relu");
    gbs(
        "relu in place 16M",
        8 * N,
        best(10, || assert_eq!(nncy_unary_f32(relu, y.as_ptr(), y.as_mut_ptr(), N, null(), 0), 0)),
    );
    let add = op(&BINARY, "add2");
    gbs(
        "add2 16M",
        12 * N,
        best(10, || {
            assert_eq!(
                nncy_binary_f32(
                    add,
                    x.as_ptr(),
                    one.as_ptr(),
                    x1.as_ptr(),
                    one.as_ptr(),
                    y.as_mut_ptr(),
                    shape.as_ptr(),
                    1,
                    null(),
                    0
                ),
                0
            )
        }),
    );
    let (shape2, s0, s1) = ([N / 1024, 1024], [1024isize, 1], [0isize, 1]);
    gbs(
        "add2 16M + row broadcast",
        8 * N,
        best(10, || {
            assert_eq!(
                nncy_binary_f32(
                    add,
                    x.as_ptr(),
                    s0.as_ptr(),
                    x1.as_ptr(),
                    s1.as_ptr(),
                    y.as_mut_ptr(),
                    shape2.as_ptr(),
                    2,
                    null(),
                    0
                ),
                0
            )
        }),
    );
    let mut g = vec![0.0f32; N];
    gbs(
        "relu grad, accum 16M",
        16 * N,
        best(10, || {
            assert_eq!(nncy_unary_grad_f32(relu, null(), x.as_ptr(), x1.as_ptr(), g.as_mut_ptr(), N, null(), 0, 1), 0)
        }),
    );
    let t = [4096usize, 4096];
    gbs(
        "transpose 4096^2",
        8 * N,
        best(10, || {
            assert_eq!(nncy_strided_copy_f32(x.as_ptr(), [1isize, 4096].as_ptr(), y.as_mut_ptr(), t.as_ptr(), 2, 0), 0)
        }),
    );
    let (mut w, mut m, mut v) = (data(N), data(N), vec![0.1f32; N]);
    gbs(
        "adam 16M",
        28 * N,
        best(10, || {
            assert_eq!(
                nncy_solver_update_f32(
                    7,
                    w.as_mut_ptr(),
                    x.as_ptr(),
                    m.as_mut_ptr(),
                    v.as_mut_ptr(),
                    std::ptr::null_mut(),
                    N,
                    [1e-3f32, 0.9, 0.999, 1e-8, 0.0, f32::NEG_INFINITY, f32::INFINITY].as_ptr(),
                    7
                ),
                0
            )
        }),
    );
}

fn reduce() {
    let x = data(N);
    let mut s = vec![0.0f32; N / 1000];
    gbs("sum 16M", 4 * N, best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), 1, N, 1, 1.0, 0), 0)));
    gbs(
        "sum axis 0 of (4096, 4096)",
        4 * N,
        best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), 1, N / 4096, 4096, 1.0, 0), 0)),
    );
    gbs(
        "sum rows of 1000",
        4 * N,
        best(10, || assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), N / 1000, 1000, 1, 1.0, 0), 0)),
    );
    gbs(
        "max rows of 1000",
        4 * N,
        best(10, || assert_eq!(nncy_reduce_f32(1, x.as_ptr(), s.as_mut_ptr(), N / 1000, 1000, 1, 1.0, 0), 0)),
    );
}

fn softmax() {
    let (x, mut y) = (data(N), vec![0.0f32; N]);
    let n = N / 1000 * 1000;
    gbs(
        "softmax rows of 1000",
        8 * n,
        best(10, || assert_eq!(nncy_softmax_f32(x.as_ptr(), y.as_mut_ptr(), N / 1000, 1000, 1, 0), 0)),
    );
    let n = N / 256000 * 256000;
    gbs(
        "log_softmax c=1000 inner=256",
        8 * n,
        best(10, || assert_eq!(nncy_softmax_f32(x.as_ptr(), y.as_mut_ptr(), N / 256000, 1000, 256, 1), 0)),
    );
}

fn cache() {
    // 8K elements (one thread): shows the vectorisation.
    let m = 8192;
    let xs: Vec<f32> = (0..m).map(|i| (i as f32 - 4096.0) * 0.001 + 0.5).collect();
    let mut ys = vec![0.0f32; m];
    let per = |t: f64| t / (1000 * m) as f64 * 1e9;
    for name in ["relu", "exp", "log", "sigmoid", "tanh", "pow_scalar"] {
        let (o, p) = (op(&UNARY, name), [2.5f32]);
        let t = best(5, || {
            (0..1000).for_each(|_| assert_eq!(nncy_unary_f32(o, xs.as_ptr(), ys.as_mut_ptr(), m, p.as_ptr(), 1), 0))
        });
        println!("{name:<12} in cache         {:7.3} ns/element", per(t));
    }
    let (sh, one) = ([m], [1isize]);
    for name in ["add2", "div2"] {
        let o = op(&BINARY, name);
        let t = best(5, || {
            (0..1000).for_each(|_| {
                assert_eq!(
                    nncy_binary_f32(
                        o,
                        xs.as_ptr(),
                        one.as_ptr(),
                        xs.as_ptr(),
                        one.as_ptr(),
                        ys.as_mut_ptr(),
                        sh.as_ptr(),
                        1,
                        null(),
                        0
                    ),
                    0
                )
            })
        });
        println!("{name:<12} in cache         {:7.3} ns/element", per(t));
    }
}

fn gemm() {
    for size in [32usize, 64, 128, 256, 512, 1024, 2048] {
        let (a, b, mut d) = (vec![0.5f32; size * size], vec![0.25f32; size * size], vec![0.0f32; size * size]);
        let s = size as isize;
        let reps = ((1usize << 30) / (size * size * size)).max(1);
        let t = best(5, || {
            (0..reps).for_each(|_| {
                assert_eq!(
                    nncy_gemm_f32(size, size, size, d.as_mut_ptr(), s, 1, a.as_ptr(), s, 1, b.as_ptr(), s, 1, 0.0, 1.0),
                    0
                )
            })
        }) / reps as f64;
        println!("gemm {size}^3{:<18} {:8.3} ms  {:6.1} GFLOP/s", "", t * 1e3, 2.0 * (size as f64).powi(3) / t / 1e9);
    }
    let (bt, sz) = (256usize, 64usize);
    let (a, mut d) = (vec![0.5f32; bt * sz * sz], vec![0.0f32; bt * sz * sz]);
    let (bs, s) = ((sz * sz) as isize, sz as isize);
    let t = best(5, || {
        assert_eq!(
            nncy_batch_gemm_f32(
                bt,
                sz,
                sz,
                sz,
                d.as_mut_ptr(),
                bs,
                s,
                1,
                a.as_ptr(),
                bs,
                s,
                1,
                a.as_ptr(),
                bs,
                1,
                s,
                0.0,
                1.0
            ),
            0
        )
    });
    println!(
        "batch gemm 256 x 64^3        {:8.3} ms  {:6.1} GFLOP/s",
        t * 1e3,
        2.0 * bt as f64 * (sz as f64).powi(3) / t / 1e9
    );
}

fn small() {
    // Per-call cost of the C ABI on one element.
    let calls = 1_000_000;
    let (xs, mut ys, one, sh) = ([0.5f32], [0.0f32], [1isize], [1usize]);
    let (relu, add) = (op(&UNARY, "relu"), op(&BINARY, "add2"));
    let per = |t: f64| t / calls as f64 * 1e9;
    let t = best(3, || {
        (0..calls).for_each(|_| {
            black_box(nncy_unary_f32(relu, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, null(), 0));
        })
    });
    println!("relu, 1 element              {:7.1} ns/call", per(t));
    let t = best(3, || {
        (0..calls).for_each(|_| {
            black_box(nncy_binary_f32(
                add,
                black_box(xs.as_ptr()),
                one.as_ptr(),
                xs.as_ptr(),
                one.as_ptr(),
                ys.as_mut_ptr(),
                sh.as_ptr(),
                1,
                null(),
                0,
            ));
        })
    });
    println!("add2, 1 element              {:7.1} ns/call", per(t));
    let t = best(3, || {
        (0..calls).for_each(|_| {
            black_box(nncy_reduce_f32(0, black_box(xs.as_ptr()), ys.as_mut_ptr(), 1, 1, 1, 1.0, 0));
        })
    });
    println!("sum, 1 element               {:7.1} ns/call", per(t));
}

fn threshold() {
    // Time per call around the size where threads start to be used.
    for name in ["relu", "exp", "pow_scalar"] {
        let o = op(&UNARY, name);
        for n in [16usize << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20] {
            let (x, mut y, p) = (vec![0.5f32; n], vec![0.0f32; n], [2.5f32]);
            let reps = (16 << 20) / n;
            let t = best(5, || {
                (0..reps).for_each(|_| assert_eq!(nncy_unary_f32(o, x.as_ptr(), y.as_mut_ptr(), n, p.as_ptr(), 1), 0))
            }) / reps as f64;
            println!("{name:<12} n = {:5}K          {:8.2} us", n >> 10, t * 1e6);
        }
    }
}

fn main() {
    println!("threads: {}, isa: {}", nncy_num_threads(), nncy_kernels::simd::isa_name());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sections: [(&str, fn()); 7] = [
        ("stream", stream),
        ("reduce", reduce),
        ("softmax", softmax),
        ("cache", cache),
        ("gemm", gemm),
        ("small", small),
        ("threshold", threshold),
    ];
    for (name, f) in sections {
        if args.is_empty() || args.iter().any(|a| a == name) {
            f();
        }
    }
}
