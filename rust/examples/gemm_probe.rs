use nncy_kernels::ffi::*;
use std::time::Instant;
fn main() {
    let size: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2048);
    let a = vec![0.5f32; size * size];
    let b = vec![0.25f32; size * size];
    let mut d = vec![0.0f32; size * size];
    let s = size as isize;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(nncy_gemm_f32(size, size, size, d.as_mut_ptr(), s, 1, a.as_ptr(), s, 1, b.as_ptr(), s, 1, 0.0, 1.0), 0);
        let t = t.elapsed().as_secs_f64();
        println!("gemm {size}: {:.1} GFLOP/s", 2.0 * (size as f64).powi(3) / t / 1e9);
    }
}
