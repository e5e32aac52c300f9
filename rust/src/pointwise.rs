//! Generic pointwise kernels.  One instance per op is generated in
//! `ops_gen.rs` with the op's expression as the closure `f`, so that each
//! loop is specialised (and vectorised) for its op.
//!
//! All of them: split the output into pieces for the thread pool when large
//! ([`par_for`]), then run each piece inside [`simd::dispatch`]; the row loops
//! and `f` are `#[inline(always)]` so that they are compiled for the chosen
//! instruction set.
// Index loops over several arrays at once read best as they are.
#![allow(clippy::needless_range_loop)]

use crate::par::{par_for, Rows};
use crate::simd;
use crate::strided::{Input, Layout};

/// What the generated code knows about an op, for argument checks.
#[derive(Debug, Clone, Copy)]
pub struct OpInfo {
    pub name: &'static str,
    /// Number of f32 parameters (the row's numeric arguments, in order).
    pub n_params: usize,
    /// Per input: `None` when it has no gradient, else what the gradient reads.
    pub grads: &'static [Option<Uses>],
}

/// The values a gradient expression reads besides `gy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    /// Input 0 (`x` or `x0`), input 1 (`x1`).
    pub inputs: [bool; 2],
    /// The output `y`.
    pub y: bool,
}

/// Parameter `i` of an op (the generated code reads its arguments with it).
#[inline]
pub fn param(p: &[f32], i: usize) -> crate::Result<f32> {
    p.get(i).copied().ok_or(crate::Error::Invalid)
}

/// `old + v` when accumulating, else `v`.
#[inline(always)]
fn acc(accum: bool, old: f32, v: f32) -> f32 {
    if accum {
        old + v
    } else {
        v
    }
}

/// y = f(x) elementwise; in place (`y = f(y)`) when `x` is `None`.  `cost`:
/// relative cost of `f` per element (1: an add, up to 8), for threading.
pub fn unary<F: Fn(f32) -> f32 + Sync>(x: Option<&[f32]>, y: &mut [f32], cost: usize, f: F) {
    let stream = y.len() >= simd::STREAM_MIN;
    match x {
        Some(x) => par_for((y, x), cost, |(y, x)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    if stream {
                        let x = &x[..y.len()];
                        simd::stream_fill(y, |i| f(x[i]), |i, l| {
                            for (o, &a) in l.iter_mut().zip(&x[i..i + 16]) {
                                *o = f(a);
                            }
                        });
                        return;
                    }
                    for (o, &a) in y.iter_mut().zip(x) {
                        *o = f(a);
                    }
                },
            )
        }),
        None => par_for(y, cost, |y| {
            simd::dispatch(
                #[inline(always)]
                || {
                    for o in y.iter_mut() {
                        *o = f(*o);
                    }
                },
            )
        }),
    }
}

/// gx = (accum ? gx : 0) + f(x, y, gy) elementwise.
pub fn unary_grad<F: Fn(f32, f32, f32) -> f32 + Sync>(
    x: &[f32],
    y: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    accum: bool,
    cost: usize,
    f: F,
) {
    let stream = !accum && gx.len() >= simd::STREAM_MIN;
    par_for((gx, x, y, gy), cost, |(gx, x, y, gy)| {
        simd::dispatch(
            #[inline(always)]
            || {
                if stream {
                    let n = gx.len();
                    let (x, y, gy) = (&x[..n], &y[..n], &gy[..n]);
                    simd::stream_fill(gx, |i| f(x[i], y[i], gy[i]), |i, l| {
                        let (x, y, gy) = (&x[i..i + 16], &y[i..i + 16], &gy[i..i + 16]);
                        for j in 0..16 {
                            l[j] = f(x[j], y[j], gy[j]);
                        }
                    });
                    return;
                }
                for (((g, &x), &y), &gy) in gx.iter_mut().zip(x).zip(y).zip(gy) {
                    *g = acc(accum, *g, f(x, y, gy));
                }
            },
        )
    })
}

/// An operand of a binary op: a strided input, or the output buffer itself
/// (in-place; it is then read with the output's own contiguous layout).
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    In(Input<'a>),
    Out,
}

impl<'a> Operand<'a> {
    fn input(self) -> Option<Input<'a>> {
        match self {
            Operand::In(i) => Some(i),
            Operand::Out => None,
        }
    }
}

/// How an operand is read along one row, chosen per row so that the common
/// cases get tight loops.
trait Src: Copy {
    /// The operand's value at position `i` of the row whose output is `out`.
    fn at(self, out: &[f32], i: usize) -> f32;
}

/// Contiguous: exactly the row's elements.
#[derive(Clone, Copy)]
struct Contig<'a>(&'a [f32]);
/// One value for the whole row (broadcast).
#[derive(Clone, Copy)]
struct Splat(f32);
/// Any stride.
#[derive(Clone, Copy)]
struct Gather<'a> {
    data: &'a [f32],
    off: isize,
    step: isize,
}
/// The output itself.
#[derive(Clone, Copy)]
struct Out;

impl Src for Contig<'_> {
    #[inline(always)]
    fn at(self, _: &[f32], i: usize) -> f32 {
        self.0[i]
    }
}
impl Src for Splat {
    #[inline(always)]
    fn at(self, _: &[f32], _: usize) -> f32 {
        self.0
    }
}
impl Src for Gather<'_> {
    #[inline(always)]
    fn at(self, _: &[f32], i: usize) -> f32 {
        self.data[(self.off + i as isize * self.step) as usize]
    }
}
impl Src for Out {
    #[inline(always)]
    fn at(self, out: &[f32], i: usize) -> f32 {
        out[i]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Contig,
    Splat,
    Gather,
    Own,
}

#[inline(always)]
fn kind(op: Option<Input>, step: isize) -> Kind {
    match (op, step) {
        (None, _) => Kind::Own,
        (Some(_), 1) => Kind::Contig,
        (Some(_), 0) => Kind::Splat,
        _ => Kind::Gather,
    }
}

/// The per-row readers of one input.
#[derive(Clone, Copy)]
struct Reader<'a> {
    input: Input<'a>,
    step: isize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn pos(&self, off: isize) -> usize {
        (self.input.base as isize + off) as usize
    }
    #[inline(always)]
    fn contig(&self, off: isize, n: usize) -> Contig<'a> {
        let p = self.pos(off);
        Contig(&self.input.data[p..p + n])
    }
    #[inline(always)]
    fn splat(&self, off: isize) -> Splat {
        Splat(self.input.data[self.pos(off)])
    }
    #[inline(always)]
    fn gather(&self, off: isize) -> Gather<'a> {
        Gather { data: self.input.data, off: self.input.base as isize + off, step: self.step }
    }
}

#[inline(always)]
fn map2<F: Fn(f32, f32) -> f32>(out: &mut [f32], a: impl Src, b: impl Src, f: &F) {
    for i in 0..out.len() {
        let v = f(a.at(out, i), b.at(out, i));
        out[i] = v;
    }
}

/// y = f(x0, x1) elementwise over `lay` (x0, x1 strided; y contiguous).
/// An [`Operand::Out`] must have been given contiguous strides in `lay`.
pub fn binary<F: Fn(f32, f32) -> f32 + Sync>(
    lay: &Layout<2>,
    x0: Operand,
    x1: Operand,
    y: &mut [f32],
    cost: usize,
    f: F,
) {
    let n = lay.size().min(y.len());
    let [s0, s1] = lay.row_strides();
    let (i0, i1) = (x0.input(), x1.input());
    let (k0, k1) = (kind(i0, s0), kind(i1, s1));
    let dummy = Input { data: &[0.0], base: 0 };
    let r0 = Reader { input: i0.unwrap_or(dummy), step: s0 };
    let r1 = Reader { input: i1.unwrap_or(dummy), step: s1 };
    let stream = n >= simd::STREAM_MIN;
    par_for((&mut y[..n], 0..n), cost, |(y, range)| {
        let start = range.start;
        simd::dispatch(
            #[inline(always)]
            || {
                lay.for_rows(
                    range,
                    #[inline(always)]
                    |pos, [o0, o1], len| {
                        let out = &mut y[pos - start..pos - start + len];
                        use Kind::*;
                        match (k0, k1) {
                            (Contig, Contig) if stream => {
                                let (a, b) = (r0.contig(o0, len).0, r1.contig(o1, len).0);
                                simd::stream_fill(out, |i| f(a[i], b[i]), |i, l| {
                                    for ((o, &u), &v) in l.iter_mut().zip(&a[i..i + 16]).zip(&b[i..i + 16]) {
                                        *o = f(u, v);
                                    }
                                })
                            }
                            (Contig, Contig) => map2(out, r0.contig(o0, len), r1.contig(o1, len), &f),
                            (Contig, Splat) => map2(out, r0.contig(o0, len), r1.splat(o1), &f),
                            (Splat, Contig) => map2(out, r0.splat(o0), r1.contig(o1, len), &f),
                            (Own, Own) => map2(out, Out, Out, &f),
                            (Own, Contig) => map2(out, Out, r1.contig(o1, len), &f),
                            (Own, Splat) => map2(out, Out, r1.splat(o1), &f),
                            (Own, _) => map2(out, Out, r1.gather(o1), &f),
                            (Contig, Own) => map2(out, r0.contig(o0, len), Out, &f),
                            (Splat, Own) => map2(out, r0.splat(o0), Out, &f),
                            (_, Own) => map2(out, r0.gather(o0), Out, &f),
                            _ => map2(out, r0.gather(o0), r1.gather(o1), &f),
                        }
                    },
                )
            },
        )
    })
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad2<F: Fn(f32, f32, f32, f32) -> f32>(
    g: &mut [f32],
    a: impl Src,
    b: impl Src,
    y: &[f32],
    gy: &[f32],
    accum: bool,
    f: &F,
) {
    let (y, gy) = (&y[..g.len()], &gy[..g.len()]);
    for i in 0..g.len() {
        g[i] = acc(accum, g[i], f(a.at(y, i), b.at(y, i), y[i], gy[i]));
    }
}

/// g = (accum ? g : 0) + f(x0, x1, y, gy) elementwise over `lay`; y, gy
/// and g are contiguous with the output shape.
#[allow(clippy::too_many_arguments)]
pub fn binary_grad<F: Fn(f32, f32, f32, f32) -> f32 + Sync>(
    lay: &Layout<2>,
    x0: Input,
    x1: Input,
    y: &[f32],
    gy: &[f32],
    g: &mut [f32],
    accum: bool,
    cost: usize,
    f: F,
) {
    let n = lay.size().min(g.len()).min(y.len()).min(gy.len());
    let [s0, s1] = lay.row_strides();
    let (k0, k1) = (kind(Some(x0), s0), kind(Some(x1), s1));
    let r0 = Reader { input: x0, step: s0 };
    let r1 = Reader { input: x1, step: s1 };
    par_for((&mut g[..n], &y[..n], &gy[..n], 0..n), cost, |(g, y, gy, range)| {
        let start = range.start;
        simd::dispatch(
            #[inline(always)]
            || {
                lay.for_rows(
                    range,
                    #[inline(always)]
                    |pos, [o0, o1], len| {
                        let at = pos - start..pos - start + len;
                        let (g, y, gy) = (&mut g[at.clone()], &y[at.clone()], &gy[at]);
                        use Kind::*;
                        match (k0, k1) {
                            (Contig, Contig) => grad2(g, r0.contig(o0, len), r1.contig(o1, len), y, gy, accum, &f),
                            (Contig, Splat) => grad2(g, r0.contig(o0, len), r1.splat(o1), y, gy, accum, &f),
                            (Splat, Contig) => grad2(g, r0.splat(o0), r1.contig(o1, len), y, gy, accum, &f),
                            _ => grad2(g, r0.gather(o0), r1.gather(o1), y, gy, accum, &f),
                        }
                    },
                )
            },
        )
    })
}

/// y = (accum ? y : 0) + x elementwise over `lay` (x strided, y contiguous):
/// broadcast, transpose, slicing.
pub fn strided_copy(lay: &Layout<1>, x: Input, y: &mut [f32], accum: bool) {
    let n = lay.size().min(y.len());
    let (shape, st) = (lay.shape(), lay.strides(0));
    let nd = shape.len();
    if nd >= 2 && st[nd - 1] != 1 && st[nd - 2] == 1 && shape[nd - 1] >= 16 && shape[nd - 2] >= 16 {
        return transpose_copy(lay, x, &mut y[..n], accum);
    }
    let [s] = lay.row_strides();
    let r = Reader { input: x, step: s };
    #[inline(always)]
    fn copy(out: &mut [f32], a: impl Src, accum: bool) {
        for i in 0..out.len() {
            out[i] = acc(accum, out[i], a.at(&[], i));
        }
    }
    par_for((&mut y[..n], 0..n), 1, |(y, range)| {
        let start = range.start;
        simd::dispatch(
            #[inline(always)]
            || {
                lay.for_rows(
                    range,
                    #[inline(always)]
                    |pos, [o], len| {
                        let out = &mut y[pos - start..pos - start + len];
                        match s {
                            1 => copy(out, r.contig(o, len), accum),
                            0 => copy(out, r.splat(o), accum),
                            _ => copy(out, r.gather(o), accum),
                        }
                    },
                )
            },
        )
    })
}

/// [`strided_copy`] when the input is contiguous along the second-to-last
/// dimension and strided along the last (a transpose of the last two
/// dimensions): the (rows, cols) planes are copied in T x T tiles through a
/// buffer, so that both sides are read and written along runs.
fn transpose_copy(lay: &Layout<1>, x: Input, y: &mut [f32], accum: bool) {
    const T: usize = 64;
    let (shape, st) = (lay.shape(), lay.strides(0));
    let nd = shape.len();
    let (rows, cols, sc) = (shape[nd - 2], shape[nd - 1], st[nd - 1]);
    // offset in x of the plane with index p (over the leading dims)
    let plane_offset = |p: usize| {
        let (mut r, mut off) = (p, x.base as isize);
        for d in (0..nd - 2).rev() {
            off += (r % shape[d]) as isize * st[d];
            r /= shape[d];
        }
        off
    };
    let all_rows = y.len() / cols;
    par_for((Rows(y, cols), 0..all_rows), cols, |(Rows(y, _), range)| {
        // output rows `range` of the (planes * rows, cols) output
        let mut r = range.start;
        while r < range.end {
            let (p, r0) = (r / rows, r % rows);
            let r1 = rows.min(r0 + range.end - r);
            let base = plane_offset(p);
            let y = &mut y[(r - range.start) * cols..];
            for rb in (r0..r1).step_by(T) {
                let re = r1.min(rb + T);
                for cb in (0..cols).step_by(T) {
                    let ce = cols.min(cb + T);
                    // read the tile along x's contiguous axis, write it along y's
                    let mut tile = [[0.0f32; T]; T];
                    for (j, t) in (cb..ce).zip(tile.iter_mut()) {
                        let at = (base + rb as isize + j as isize * sc) as usize;
                        t[..re - rb].copy_from_slice(&x.data[at..at + re - rb]);
                    }
                    for i in rb..re {
                        let out = &mut y[(i - r0) * cols + cb..(i - r0) * cols + ce];
                        for (o, t) in out.iter_mut().zip(&tile) {
                            *o = acc(accum, *o, t[i - rb]);
                        }
                    }
                }
            }
            r += r1 - r0;
        }
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::strided::contiguous_strides;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    pub fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n).map(|_| lcg(&mut s)).collect()
    }

    /// Reference: y[idx] = f(x0[idx . s0 + b0], x1[idx . s1 + b1]).
    fn reference(shape: &[usize], ins: [(&[f32], usize, &[isize]); 2], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut p| {
                let mut offs = [0isize; 2];
                for d in (0..shape.len()).rev() {
                    let i = (p % shape[d]) as isize;
                    p /= shape[d];
                    for k in 0..2 {
                        offs[k] += i * ins[k].2[d];
                    }
                }
                let v = |k: usize| ins[k].0[(ins[k].1 as isize + offs[k]) as usize];
                f(v(0), v(1))
            })
            .collect()
    }

    #[test]
    fn unary_inplace_and_not() {
        for n in [0, 1, 17, 100_000, 1 << 20, 3 << 20] {
            let x = random(n, 1);
            let mut y = vec![0.0; n];
            unary(Some(&x), &mut y, 1, |v| v * 2.0 + 1.0);
            assert!(y.iter().zip(&x).all(|(y, x)| *y == x * 2.0 + 1.0));
            unary(None, &mut y, 1, |v| v - 1.0);
            assert!(y.iter().zip(&x).all(|(y, x)| *y == x * 2.0));
            let mut gx = vec![1.0; n];
            unary_grad(&x, &y, &x, &mut gx, true, 1, |x, y, gy| x + y * gy);
            assert!(gx.iter().zip(&x).all(|(g, x)| *g == 1.0 + (x + x * 2.0 * x)));
            unary_grad(&x, &y, &x, &mut gx, false, 8, |x, _, _| x);
            assert_eq!(gx, x);
        }
    }

    /// Broadcast cases: (shape, strides0, strides1) over inputs of 64K
    /// elements with a base offset (for negative strides).
    fn cases() -> Vec<(Vec<usize>, Vec<isize>, Vec<isize>, usize, usize)> {
        vec![
            (vec![3, 4], vec![4, 1], vec![4, 1], 0, 0),            // same shape
            (vec![300, 400], vec![400, 1], vec![0, 1], 0, 0),      // row broadcast
            (vec![300, 400], vec![400, 1], vec![1, 0], 0, 0),      // column broadcast
            (vec![300, 400], vec![0, 0], vec![400, 1], 0, 0),      // scalar
            (vec![2, 3, 4], vec![12, 4, 1], vec![-4, 0, 1], 0, 8), // negative stride
            (vec![5, 7], vec![1, 5], vec![7, -1], 0, 6),           // transposed, reversed
            (vec![2, 1, 3, 1], vec![3, 9, 1, 0], vec![0, 0, 1, 0], 0, 0),
            (vec![512, 300], vec![300, 1], vec![1, 512], 0, 0), // transpose, large
            (vec![3, 40, 50], vec![2000, 50, 1], vec![1, 3, 120], 0, 0), // planes transposed
            (vec![2, 70, 33], vec![0, 1, -70], vec![0, 33, 1], 2310, 0), // reversed columns
            (vec![], vec![], vec![], 0, 0),                     // scalar
            (vec![4, 0, 3], vec![0, 3, 1], vec![0, 3, 1], 0, 0), // empty
        ]
    }

    #[test]
    fn binary_matches_reference() {
        let d0 = random(1 << 18, 2);
        let d1 = random(1 << 18, 3);
        let f = |a: f32, b: f32| a * 3.0 - b;
        for (shape, s0, s1, b0, b1) in cases() {
            let n: usize = shape.iter().product();
            let lay = Layout::new(&shape, [&s0, &s1]).unwrap();
            let x0 = Input::new(&d0, b0, &shape, &s0).unwrap();
            let x1 = Input::new(&d1, b1, &shape, &s1).unwrap();
            let mut y = vec![f32::NAN; n];
            binary(&lay, Operand::In(x0), Operand::In(x1), &mut y, 8, f);
            let want = reference(&shape, [(&d0, b0, &s0), (&d1, b1, &s1)], f);
            assert_eq!(y, want, "{shape:?} {s0:?} {s1:?}");

            // gradient with accumulation: g = 1 + x0 * x1 + y * gy
            let gy = random(n, 4);
            let mut g = vec![1.0; n];
            binary_grad(&lay, x0, x1, &y, &gy, &mut g, true, 8, |a, b, y, gy| a * b + y * gy);
            let ab = reference(&shape, [(&d0, b0, &s0), (&d1, b1, &s1)], |a, b| a * b);
            for i in 0..n {
                assert_eq!(g[i], 1.0 + (ab[i] + y[i] * gy[i]), "{shape:?} at {i}");
            }
        }
    }

    #[test]
    fn outputs_past_the_streaming_size() {
        // odd length and an offset input view: unaligned heads and tails
        let n = simd::STREAM_MIN + 37;
        let x = random(n + 3, 11);
        let mut y = vec![0.0; n];
        unary(Some(&x[3..]), &mut y, 1, |v| v * 3.0 - 1.0);
        assert!(y.iter().zip(&x[3..]).all(|(y, x)| *y == x * 3.0 - 1.0));
        let b = random(n, 12);
        let lay = Layout::new(&[n], [&[1], &[1]]).unwrap();
        let (i0, i1) = (Input { data: &x, base: 3 }, Input { data: &b, base: 0 });
        binary(&lay, Operand::In(i0), Operand::In(i1), &mut y, 1, |a, b| a - b);
        assert!(y.iter().zip(&x[3..]).zip(&b).all(|((y, a), b)| *y == a - b));
        let mut g = vec![0.0; n];
        unary_grad(&x[3..], &b, &y, &mut g, false, 1, |x, b, y| x * b + y);
        assert!((0..n).all(|i| g[i] == x[i + 3] * b[i] + y[i]));
    }

    #[test]
    fn binary_in_place() {
        let shape = [300usize, 400];
        let cs = contiguous_strides(&shape);
        let x1 = random(400, 5);
        for which in 0..2 {
            let mut y = random(120_000, 6);
            let orig = y.clone();
            let (s0, s1): ([isize; 2], [isize; 2]) =
                if which == 0 { ([cs[0], cs[1]], [0, 1]) } else { ([0, 1], [cs[0], cs[1]]) };
            let lay = Layout::new(&shape, [&s0, &s1]).unwrap();
            let other = Operand::In(Input { data: &x1, base: 0 });
            let (a, b) = if which == 0 { (Operand::Out, other) } else { (other, Operand::Out) };
            binary(&lay, a, b, &mut y, 8, |a, b| a - 2.0 * b);
            for i in 0..y.len() {
                let (o, r) = (orig[i], x1[i % 400]);
                let want = if which == 0 { o - 2.0 * r } else { r - 2.0 * o };
                assert_eq!(y[i], want);
            }
        }
        let mut y = random(1000, 7);
        let orig = y.clone();
        let lay = Layout::new(&[1000], [&[1], &[1]]).unwrap();
        binary(&lay, Operand::Out, Operand::Out, &mut y, 1, |a, b| a * b);
        assert!(y.iter().zip(&orig).all(|(y, o)| *y == o * o));
    }

    #[test]
    fn strided_copy_matches_reference() {
        let d = random(1 << 18, 8);
        for (shape, s0, _, b0, _) in cases() {
            let n: usize = shape.iter().product();
            let lay = Layout::new(&shape, [&s0]).unwrap();
            let x = Input::new(&d, b0, &shape, &s0).unwrap();
            let want = reference(&shape, [(&d, b0, &s0), (&d, b0, &s0)], |a, _| a);
            let mut y = vec![2.0; n];
            strided_copy(&lay, x, &mut y, true);
            assert!(y.iter().zip(&want).all(|(y, w)| *y == 2.0 + w), "{shape:?}");
            strided_copy(&lay, x, &mut y, false);
            assert_eq!(y, want);
        }
    }
}
