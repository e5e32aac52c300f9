//! Throughput of the grouped normalization kernels (not a test):
//! `cargo run --release --example norm_probe`.
use nncy_kernels::norm::{self, Pattern};
use std::time::Instant;

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

fn main() {
    let n = 1usize << 20;
    let x: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 0.01).collect();
    let mut y = vec![0.0f32; n];
    for (p, a, c, b) in [(1, 64, 16, 1024), (1, 65536, 16, 1), (1, 8192, 128, 1), (64, 1, 1, 16384)] {
        let pat = Pattern::new(p, a, c, b).unwrap();
        let g = pat.groups();
        let (mut m, mut v) = (vec![0.0f32; g], vec![0.0f32; g]);
        let one = vec![1.0f32; g];
        let zero = vec![0.0f32; g];
        let t0 = best(20, || norm::moments(&x, pat, &mut m, &mut v).unwrap());
        let t1 = best(20, || norm::affine(&x, pat, &zero, &one, &zero, None, false, &mut y).unwrap());
        let t2 = best(20, || norm::combine(&x, None, None, pat, &one, &zero, &zero, &zero, &mut y, false).unwrap());
        let mut su = vec![0.0f32; g];
        let t3 = best(20, || norm::sums(&x, Some(&x), Some(&m), None, pat, &mut su, &mut v).unwrap());
        let t4 = best(20, || assert_eq!(nncy_kernels::ffi::nncy_norm_affine_f32(x.as_ptr(), p, a, c, b, zero.as_ptr(), one.as_ptr(), zero.as_ptr(), std::ptr::null(), 0, y.as_mut_ptr()), 0));
        println!("ffi affine {:.3} ms", t4 * 1e3);
        println!("{:?}: moments {:.3} ms, affine {:.3} ms, combine {:.3} ms, sums {:.3} ms", (p, a, c, b), t0 * 1e3, t1 * 1e3, t2 * 1e3, t3 * 1e3);
    }
}

#[allow(dead_code)]
fn ffi_probe() {}
