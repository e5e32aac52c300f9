//! Embedding lookup: rows of a table picked by integer indices, and the
//! gradient, which adds the output rows back onto the table rows they came
//! from (repeated indices accumulate).

use crate::par::{par_for, Rows};
use crate::{Error, Result};

/// Checks the indices against `rows`: OutOfRange if one is outside [0, rows).
fn check(idx: &[i64], rows: usize) -> Result {
    if idx.iter().any(|&i| i < 0 || i as u64 >= rows as u64) {
        return Err(Error::OutOfRange);
    }
    Ok(())
}

/// y[k] = w[idx[k]] for rows of `width` values; w holds `rows` rows.
pub fn embed(idx: &[i64], w: &[f32], rows: usize, width: usize, y: &mut [f32]) -> Result {
    if rows.checked_mul(width) != Some(w.len()) || idx.len().checked_mul(width) != Some(y.len()) {
        return Err(Error::Invalid);
    }
    check(idx, rows)?;
    if width == 0 {
        return Ok(());
    }
    par_for((Rows(y, width), idx), width, |(Rows(y, _), idx)| {
        for (yr, &i) in y.chunks_exact_mut(width).zip(idx) {
            yr.copy_from_slice(&w[i as usize * width..][..width]);
        }
    });
    Ok(())
}

/// gw[idx[k]] += gy[k].  Threads split the table rows, so that each row is
/// summed by one thread in index order (deterministic).
pub fn embed_grad(idx: &[i64], gy: &[f32], rows: usize, width: usize, gw: &mut [f32]) -> Result {
    if rows.checked_mul(width) != Some(gw.len()) || idx.len().checked_mul(width) != Some(gy.len()) {
        return Err(Error::Invalid);
    }
    check(idx, rows)?;
    if width == 0 || rows == 0 {
        return Ok(());
    }
    let cost = idx.len().saturating_mul(width).div_ceil(rows) + 1;
    par_for((Rows(gw, width), 0..rows), cost, |(Rows(gw, _), range)| {
        for (k, &i) in idx.iter().enumerate() {
            let i = i as usize;
            if range.contains(&i) {
                let dst = &mut gw[(i - range.start) * width..][..width];
                for (d, &g) in dst.iter_mut().zip(&gy[k * width..][..width]) {
                    *d += g;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_and_scatters() {
        let w: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 4 rows of 3
        let idx = [2i64, 0, 2, 3];
        let mut y = vec![0.0; 12];
        embed(&idx, &w, 4, 3, &mut y).unwrap();
        assert_eq!(y, [6., 7., 8., 0., 1., 2., 6., 7., 8., 9., 10., 11.]);
        let gy = vec![1.0; 12];
        let mut gw = vec![0.5; 12];
        embed_grad(&idx, &gy, 4, 3, &mut gw).unwrap();
        assert_eq!(gw, [1.5, 1.5, 1.5, 0.5, 0.5, 0.5, 2.5, 2.5, 2.5, 1.5, 1.5, 1.5]);
        assert_eq!(embed(&[4], &w, 4, 3, &mut [0.0; 3]), Err(Error::OutOfRange));
        assert_eq!(embed(&[-1], &w, 4, 3, &mut [0.0; 3]), Err(Error::OutOfRange));
        assert_eq!(embed_grad(&[7], &[0.0; 3], 4, 3, &mut gw), Err(Error::OutOfRange));
        assert_eq!(embed(&[0], &w, 4, 3, &mut [0.0; 2]), Err(Error::Invalid));
    }

    #[test]
    fn large_gradient_is_threaded_and_exact() {
        let (rows, width, n) = (1000, 64, 5000);
        let idx: Vec<i64> = (0..n).map(|k| ((k * 7919) % rows) as i64).collect();
        let gy: Vec<f32> = (0..n * width).map(|v| (v % 13) as f32).collect();
        let mut gw = vec![0.0; rows * width];
        embed_grad(&idx, &gy, rows, width, &mut gw).unwrap();
        let mut want = vec![0.0f32; rows * width];
        for (k, &i) in idx.iter().enumerate() {
            for j in 0..width {
                want[i as usize * width + j] += gy[k * width + j];
            }
        }
        assert_eq!(gw, want);
    }
}
