//! The C ABI.  Every function validates its arguments, builds slices from the
//! raw pointers (the only `unsafe` here), runs the safe kernel inside
//! `catch_unwind` and returns a status:
//! 0 ok, 1 invalid argument, 2 index/label out of range, 3 internal panic.
//!
//! Buffers are f32 and C-contiguous unless strides are given; strides count
//! elements (0 broadcasts, negative walks backwards).  An input that overlaps
//! the output is copied first, except for the in-place cases the kernels
//! support directly (unary ops with x == y; a binary operand equal to y with
//! y's layout).
//!
//! The exported functions are safe to call from Rust's point of view only in
//! that they check what they can (null pointers, sizes against shapes); the
//! caller (the Cython layer) vouches that each pointer addresses the number
//! of elements it says, as every C ABI does.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::gemm::{MatMut, MatRef};
use crate::pointwise::Operand;
use crate::strided::{contiguous_strides, extent, Input, Layout, MAX_NDIM};
use crate::{gemm, ops_gen, optim, par, reduce, softmax, Error, Result};
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning its result or panic into a status code.
fn guard(f: impl FnOnce() -> Result) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.status(),
        Err(_) => 3,
    }
}

/// The memory a (possibly strided) array occupies: `len` elements from
/// `start` (its lowest element); its element 0 is at `start + base`.
#[derive(Clone, Copy)]
struct Region<T> {
    start: *const T,
    len: usize,
    base: usize,
}

impl<T> Region<T> {
    fn bytes(&self) -> (usize, usize) {
        let a = self.start as usize;
        (a, a + self.len * std::mem::size_of::<T>())
    }

    fn overlaps<U>(&self, o: &Region<U>) -> bool {
        let ((a0, a1), (b0, b1)) = (self.bytes(), o.bytes());
        self.len > 0 && o.len > 0 && a0 < b1 && b0 < a1
    }
}

impl<T: Clone> Region<T> {
    /// `n` contiguous elements at `p`.
    fn contiguous(p: *const T, n: usize) -> Result<Self> {
        Self::strided(p, &[n], &[1])
    }

    /// An array of `shape` and `strides` whose element 0 is at `p`.
    fn strided(p: *const T, shape: &[usize], strides: &[isize]) -> Result<Self> {
        if shape.contains(&0) {
            return Ok(Region { start: p, len: 0, base: 0 });
        }
        let (lo, hi) = extent(shape, strides).ok_or(Error::Invalid)?;
        let size = std::mem::size_of::<T>() as isize;
        let byte_addr = |off: isize| off.checked_mul(size).and_then(|b| (p as usize).checked_add_signed(b));
        let fits = !p.is_null()
            && (p as usize).is_multiple_of(std::mem::align_of::<T>())
            && byte_addr(lo).is_some()
            && byte_addr(hi).and_then(|end| end.checked_add(size as usize)).is_some()
            && hi.checked_sub(lo).and_then(|d| d.checked_add(1)).and_then(|n| n.checked_mul(size)).is_some();
        if !fits {
            return Err(Error::Invalid);
        }
        Ok(Region { start: p.wrapping_offset(lo), len: (hi - lo + 1) as usize, base: (-lo) as usize })
    }

    /// SAFETY: the caller vouches that the region is readable for `'a` and
    /// not written meanwhile.
    unsafe fn read<'a>(&self) -> &'a [T] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.start, self.len)
        }
    }

    /// The region's elements, copied if they overlap one of `outs`.
    /// SAFETY: as [`Region::read`].
    unsafe fn read_apart<'a>(&self, outs: &[Region<f32>]) -> Cow<'a, [T]> {
        if outs.iter().any(|o| self.overlaps(o)) {
            Cow::Owned(self.read().to_vec())
        } else {
            Cow::Borrowed(self.read())
        }
    }

    /// SAFETY: the caller vouches that the region is writable for `'a` and
    /// not accessed otherwise meanwhile.
    unsafe fn write<'a>(&self) -> &'a mut [T] {
        if self.len == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(self.start as *mut T, self.len)
        }
    }
}

/// Copies `dst.len()` values from a caller's array at `p`.
#[inline]
fn read_into<T: Copy>(dst: &mut [T], p: *const T) -> Result {
    let r = Region::contiguous(p, dst.len())?;
    // SAFETY: the caller passes that many readable values at `p`.
    dst.copy_from_slice(unsafe { r.read() });
    Ok(())
}

/// Most parameters an op may have.
const MAX_PARAMS: usize = 16;

/// The op's parameters, copied (checks that enough were given).
#[inline]
fn params(p: *const f32, np: usize, needed: usize) -> Result<[f32; MAX_PARAMS]> {
    let mut out = [0.0; MAX_PARAMS];
    if np < needed || needed > MAX_PARAMS {
        return Err(Error::Invalid);
    }
    read_into(&mut out[..needed], p)?;
    Ok(out)
}

fn op_info(table: &'static [crate::pointwise::OpInfo], op: u32) -> Result<&'static crate::pointwise::OpInfo> {
    table.get(op as usize).ok_or(Error::Invalid)
}

static ZERO: [f32; 1] = [0.0];
static ZERO_STRIDES: [isize; MAX_NDIM] = [0; MAX_NDIM];

/// The hash of the pointwise op table the library was generated from
/// (`nncy._codegen.signature()`).
#[no_mangle]
pub extern "C" fn nncy_ops_signature() -> u64 {
    ops_gen::SIGNATURE
}

/// Number of threads the kernels use (`NNCY_NUM_THREADS`, default: cores).
#[no_mangle]
pub extern "C" fn nncy_num_threads() -> usize {
    catch_unwind(par::num_threads).unwrap_or(1)
}

/// Bytes the kernels hold now and at most since the last reset; `reset`
/// non-zero starts a new peak window first.
#[no_mangle]
pub extern "C" fn nncy_heap_bytes(current: *mut usize, peak: *mut usize, reset: i32) -> i32 {
    guard(|| {
        if current.is_null() || peak.is_null() {
            return Err(Error::Invalid);
        }
        if reset != 0 {
            crate::alloc::reset_peak();
        }
        let (c, p) = crate::alloc::stats();
        // SAFETY: both pointers were checked non-null and point to one usize each.
        unsafe {
            *current = c;
            *peak = p;
        }
        Ok(())
    })
}

/// y[i] = op(x[i]; p) for i < n.  x == y is allowed (in place).
#[no_mangle]
pub extern "C" fn nncy_unary_f32(op: u32, x: *const f32, y: *mut f32, n: usize, p: *const f32, np: usize) -> i32 {
    guard(|| {
        let info = op_info(&ops_gen::UNARY, op)?;
        let p = params(p, np, info.n_params)?;
        let p = &p[..info.n_params];
        let out = Region::contiguous(y as *const f32, n)?;
        if n == 0 {
            return Ok(());
        }
        if std::ptr::eq(x, y) {
            // SAFETY: y holds n writable floats.
            return ops_gen::unary(op, None, unsafe { out.write() }, p);
        }
        let x = Region::contiguous(x, n)?;
        // SAFETY: x holds n readable floats (copied if they overlap y).
        let x = unsafe { x.read_apart(&[out]) };
        ops_gen::unary(op, Some(&x), unsafe { out.write() }, p)
    })
}

/// gx[i] = (accum ? gx[i] : 0) + grad_op(x[i], y[i], gy[i]; p).  x or y may
/// be NULL when the op's gradient does not read it.
#[no_mangle]
pub extern "C" fn nncy_unary_grad_f32(
    op: u32,
    x: *const f32,
    y: *const f32,
    gy: *const f32,
    gx: *mut f32,
    n: usize,
    p: *const f32,
    np: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let info = op_info(&ops_gen::UNARY, op)?;
        let uses = info.grads.first().copied().flatten().ok_or(Error::Invalid)?;
        let p = params(p, np, info.n_params)?;
        let p = &p[..info.n_params];
        let out = Region::contiguous(gx as *const f32, n)?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY (all reads): the caller passes n readable floats for each
        // used pointer; overlaps with gx are copied.
        let gy = unsafe { Region::contiguous(gy, n)?.read_apart(&[out]) };
        let x =
            if uses.inputs[0] { unsafe { Region::contiguous(x, n)?.read_apart(&[out]) } } else { Cow::Borrowed(&*gy) };
        let y = if uses.y { unsafe { Region::contiguous(y, n)?.read_apart(&[out]) } } else { Cow::Borrowed(&*gy) };
        // SAFETY: gx holds n writable floats.
        ops_gen::unary_grad(op, &x, &y, &gy, unsafe { out.write() }, p, accum != 0)
    })
}

/// Shape of the output (into `shape`) and the strides of the inputs (into
/// `strides`), validated; returns the number of elements.
#[inline]
fn shape_and_strides<const N: usize>(
    shape: &mut [usize; MAX_NDIM],
    strides: &mut [[isize; MAX_NDIM]; N],
    shape_p: *const usize,
    ndim: usize,
    strides_p: [*const isize; N],
) -> Result<usize> {
    if ndim > MAX_NDIM {
        return Err(Error::Invalid);
    }
    read_into(&mut shape[..ndim], shape_p)?;
    for k in 0..N {
        read_into(&mut strides[k][..ndim], strides_p[k])?;
    }
    shape[..ndim].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(Error::Invalid)
}

/// Whether strides walk `shape` C-contiguously (size-1 dims ignored).
fn is_contiguous(shape: &[usize], strides: &[isize]) -> bool {
    let c = contiguous_strides(shape);
    shape.iter().zip(strides).zip(c).all(|((&n, &s), c)| n == 1 || s == c)
}

/// y (contiguous, `shape`) = op(x0[idx . s0], x1[idx . s1]; p).
#[no_mangle]
pub extern "C" fn nncy_binary_f32(
    op: u32,
    x0: *const f32,
    s0: *const isize,
    x1: *const f32,
    s1: *const isize,
    y: *mut f32,
    shape: *const usize,
    ndim: usize,
    p: *const f32,
    np: usize,
) -> i32 {
    guard(|| {
        let info = op_info(&ops_gen::BINARY, op)?;
        let p = params(p, np, info.n_params)?;
        let p = &p[..info.n_params];
        let (mut sh, mut st) = ([0usize; MAX_NDIM], [[0isize; MAX_NDIM]; 2]);
        let size = shape_and_strides(&mut sh, &mut st, shape, ndim, [s0, s1])?;
        let shape = &sh[..ndim];
        let out = Region::contiguous(y as *const f32, size)?;
        if size == 0 {
            return Ok(());
        }
        let ptrs = [x0, x1];
        let mut own = [false; 2];
        let mut data: [Cow<[f32]>; 2] = [Cow::Borrowed(&[]), Cow::Borrowed(&[])];
        let mut base = [0usize; 2];
        for k in 0..2 {
            if std::ptr::eq(ptrs[k], y) && is_contiguous(shape, &st[k][..ndim]) {
                own[k] = true;
                st[k] = contiguous_strides(shape);
            } else {
                let r = Region::strided(ptrs[k], shape, &st[k][..ndim])?;
                // SAFETY: the caller passes readable inputs over their extent.
                data[k] = unsafe { r.read_apart(&[out]) };
                base[k] = r.base;
            }
        }
        let lay = Layout::new(shape, [&st[0][..ndim], &st[1][..ndim]])?;
        let operand =
            |k: usize| if own[k] { Operand::Out } else { Operand::In(Input { data: &data[k], base: base[k] }) };
        // SAFETY: y holds `size` writable floats.
        ops_gen::binary(op, &lay, operand(0), operand(1), unsafe { out.write() }, p)
    })
}

/// g (contiguous, `shape`) = (accum ? g : 0) + grad_op_which(x0, x1, y, gy; p).
/// Inputs the gradient does not read (and their strides) may be NULL.
#[no_mangle]
pub extern "C" fn nncy_binary_grad_f32(
    op: u32,
    which: u32,
    x0: *const f32,
    s0: *const isize,
    x1: *const f32,
    s1: *const isize,
    y: *const f32,
    gy: *const f32,
    g: *mut f32,
    shape: *const usize,
    ndim: usize,
    p: *const f32,
    np: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let info = op_info(&ops_gen::BINARY, op)?;
        let uses = info.grads.get(which as usize).copied().flatten().ok_or(Error::Invalid)?;
        let p = params(p, np, info.n_params)?;
        let p = &p[..info.n_params];
        // An input the gradient does not read may come without strides.
        let unused = |k: usize, s: *const isize| if uses.inputs[k] { s } else { ZERO_STRIDES.as_ptr() };
        let (mut sh, mut st) = ([0usize; MAX_NDIM], [[0isize; MAX_NDIM]; 2]);
        let size = shape_and_strides(&mut sh, &mut st, shape, ndim, [unused(0, s0), unused(1, s1)])?;
        let shape = &sh[..ndim];
        let out = Region::contiguous(g as *const f32, size)?;
        if size == 0 {
            return Ok(());
        }
        let ptrs = [x0, x1];
        // unused inputs: a broadcast 0
        let mut data: [Cow<[f32]>; 2] = [Cow::Borrowed(&ZERO), Cow::Borrowed(&ZERO)];
        let mut base = [0usize; 2];
        for k in 0..2 {
            if uses.inputs[k] {
                let r = Region::strided(ptrs[k], shape, &st[k][..ndim])?;
                // SAFETY: the caller passes readable inputs over their extent.
                data[k] = unsafe { r.read_apart(&[out]) };
                base[k] = r.base;
            }
        }
        // SAFETY: y and gy hold `size` readable floats.
        let gy = unsafe { Region::contiguous(gy, size)?.read_apart(&[out]) };
        let y = if uses.y { unsafe { Region::contiguous(y, size)?.read_apart(&[out]) } } else { Cow::Borrowed(&*gy) };
        let lay = Layout::new(shape, [&st[0][..ndim], &st[1][..ndim]])?;
        let input = |k: usize| Input { data: &data[k], base: base[k] };
        // SAFETY: g holds `size` writable floats.
        ops_gen::binary_grad(op, which, &lay, input(0), input(1), &y, &gy, unsafe { out.write() }, p, accum != 0)
    })
}

/// y (contiguous, `shape`) = (accum ? y : 0) + x[idx . xs].
#[no_mangle]
pub extern "C" fn nncy_strided_copy_f32(
    x: *const f32,
    xs: *const isize,
    y: *mut f32,
    shape: *const usize,
    ndim: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let (mut sh, mut st) = ([0usize; MAX_NDIM], [[0isize; MAX_NDIM]; 1]);
        let size = shape_and_strides(&mut sh, &mut st, shape, ndim, [xs])?;
        let (shape, st) = (&sh[..ndim], &st[0][..ndim]);
        let out = Region::contiguous(y as *const f32, size)?;
        if size == 0 {
            return Ok(());
        }
        let r = Region::strided(x, shape, st)?;
        // SAFETY: x is readable over its extent; y holds `size` floats.
        let data = unsafe { r.read_apart(&[out]) };
        let lay = Layout::new(shape, [st])?;
        crate::pointwise::strided_copy(&lay, Input { data: &data, base: r.base }, unsafe { out.write() }, accum != 0);
        Ok(())
    })
}

fn product(dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(Error::Invalid)
}

/// y (outer, inner) = (accum ? y : 0) + scale * R_j x[o, j, i]; op: 0 sum,
/// 1 max, 2 min, 3 prod.
#[no_mangle]
pub extern "C" fn nncy_reduce_f32(
    op: u32,
    x: *const f32,
    y: *mut f32,
    outer: usize,
    r: usize,
    inner: usize,
    scale: f32,
    accum: i32,
) -> i32 {
    guard(|| {
        if op > reduce::PROD {
            return Err(Error::Invalid);
        }
        let out = Region::contiguous(y as *const f32, product(&[outer, inner])?)?;
        let x = Region::contiguous(x, product(&[outer, r, inner])?)?;
        // SAFETY: the caller passes buffers of these sizes.
        let x = unsafe { x.read_apart(&[out]) };
        reduce::reduce(op, &x, unsafe { out.write() }, outer, r, inner, scale, accum != 0)
    })
}

/// softmax (log = 0) or log_softmax (log = 1) over the middle axis of
/// (outer, c, inner).
#[no_mangle]
pub extern "C" fn nncy_softmax_f32(x: *const f32, y: *mut f32, outer: usize, c: usize, inner: usize, log: i32) -> i32 {
    guard(|| {
        let n = product(&[outer, c, inner])?;
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: both buffers hold n floats.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[out]) };
        softmax::softmax(&x, unsafe { out.write() }, outer, c, inner, log != 0)
    })
}

/// softmax: gx = (accum ? gx : 0) + y * (gy - sum_c(gy * y));
/// log_softmax: gx = (accum ? gx : 0) + gy - exp(y) * sum_c(gy).
#[no_mangle]
pub extern "C" fn nncy_softmax_grad_f32(
    y: *const f32,
    gy: *const f32,
    gx: *mut f32,
    outer: usize,
    c: usize,
    inner: usize,
    log: i32,
    accum: i32,
) -> i32 {
    guard(|| {
        let n = product(&[outer, c, inner])?;
        let out = Region::contiguous(gx as *const f32, n)?;
        // SAFETY: the three buffers hold n floats.
        let y = unsafe { Region::contiguous(y, n)?.read_apart(&[out]) };
        let gy = unsafe { Region::contiguous(gy, n)?.read_apart(&[out]) };
        softmax::softmax_grad(&y, &gy, unsafe { out.write() }, outer, c, inner, log != 0, accum != 0)
    })
}

/// y[o, i] = -log_softmax(x)[o, t[o, i], i]; status 2 if a label is outside [0, c).
#[no_mangle]
pub extern "C" fn nncy_softmax_ce_f32(
    x: *const f32,
    t: *const i64,
    y: *mut f32,
    outer: usize,
    c: usize,
    inner: usize,
) -> i32 {
    guard(|| {
        let n = product(&[outer, c, inner])?;
        let nt = product(&[outer, inner])?;
        let out = Region::contiguous(y as *const f32, nt)?;
        // SAFETY: x holds n floats, t and y hold nt values.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[out]) };
        let t = unsafe { Region::contiguous(t, nt)?.read_apart(&[out]) };
        softmax::softmax_ce(&x, &t, unsafe { out.write() }, outer, c, inner)
    })
}

/// gx[o, k, i] = (accum ? gx : 0) + gy[o, i] * (softmax(x)[o, k, i] - (k == t[o, i])).
#[no_mangle]
pub extern "C" fn nncy_softmax_ce_grad_f32(
    x: *const f32,
    t: *const i64,
    gy: *const f32,
    gx: *mut f32,
    outer: usize,
    c: usize,
    inner: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let n = product(&[outer, c, inner])?;
        let nt = product(&[outer, inner])?;
        let out = Region::contiguous(gx as *const f32, n)?;
        // SAFETY: x and gx hold n floats, t and gy hold nt values.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[out]) };
        let t = unsafe { Region::contiguous(t, nt)?.read_apart(&[out]) };
        let gy = unsafe { Region::contiguous(gy, nt)?.read_apart(&[out]) };
        softmax::softmax_ce_grad(&x, &t, &gy, unsafe { out.write() }, outer, c, inner, accum != 0)
    })
}

/// dst (m x n) = alpha * dst + beta * lhs (m x k) @ rhs (k x n); dst is not
/// read when alpha == 0.
#[no_mangle]
pub extern "C" fn nncy_gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    alpha: f32,
    beta: f32,
) -> i32 {
    nncy_batch_gemm_f32(1, m, n, k, dst, 0, dst_rs, dst_cs, lhs, 0, lhs_rs, lhs_cs, rhs, 0, rhs_rs, rhs_cs, alpha, beta)
}

/// `batch` products: dst[b] = alpha * dst[b] + beta * lhs[b] @ rhs[b], the
/// views of batch b starting b * bs elements after those of batch 0.
#[no_mangle]
pub extern "C" fn nncy_batch_gemm_f32(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_bs: isize,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_bs: isize,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_bs: isize,
    rhs_rs: isize,
    rhs_cs: isize,
    alpha: f32,
    beta: f32,
) -> i32 {
    guard(|| {
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let out = Region::strided(dst as *const f32, &[batch, m, n], &[dst_bs, dst_rs, dst_cs])?;
        let l = Region::strided(lhs, &[batch, m, k], &[lhs_bs, lhs_rs, lhs_cs])?;
        let r = Region::strided(rhs, &[batch, k, n], &[rhs_bs, rhs_rs, rhs_cs])?;
        // SAFETY: the caller passes buffers covering these views.
        let (ld, rd) = unsafe { (l.read_apart(&[out]), r.read_apart(&[out])) };
        let dst = MatMut { data: unsafe { out.write() }, base: out.base, rs: dst_rs, cs: dst_cs };
        let lhs = MatRef { data: &ld, base: l.base, rs: lhs_rs, cs: lhs_cs };
        let rhs = MatRef { data: &rd, base: r.base, rs: rhs_rs, cs: rhs_cs };
        if batch == 1 {
            gemm::gemm(m, n, k, dst, lhs, rhs, alpha, beta)
        } else {
            gemm::batch_gemm(batch, m, n, k, dst, dst_bs, lhs, lhs_bs, rhs, rhs_bs, alpha, beta)
        }
    })
}

/// Mutable state buffers of a solver: n floats each, pairwise disjoint.
fn states<const N: usize>(ptrs: [*mut f32; N], n: usize) -> Result<[Region<f32>; N]> {
    let mut out = [Region { start: std::ptr::null(), len: 0, base: 0 }; N];
    for k in 0..N {
        out[k] = Region::contiguous(ptrs[k] as *const f32, n)?;
        if (0..k).any(|j| out[j].overlaps(&out[k])) {
            return Err(Error::Invalid);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Normalization, PReLU and clipping (see `crate::norm`).  Arrays are viewed as
// (p, a, c, b); per-group arrays hold p * c values.  Optional pointers may be
// NULL.

fn pattern(p: usize, a: usize, c: usize, b: usize) -> Result<crate::norm::Pattern> {
    crate::norm::Pattern::new(p, a, c, b)
}

/// `n` readable floats at `x`, or `None` for NULL.
/// SAFETY: as [`Region::read`].
unsafe fn opt_read<'a>(x: *const f32, n: usize, outs: &[Region<f32>]) -> Result<Option<Cow<'a, [f32]>>> {
    if x.is_null() {
        return Ok(None);
    }
    Ok(Some(Region::contiguous(x, n)?.read_apart(outs)))
}

/// mean[g], var[g] = mean and biased variance of group g of x.
#[no_mangle]
pub extern "C" fn nncy_norm_moments_f32(x: *const f32, p: usize, a: usize, c: usize, b: usize, mean: *mut f32, var: *mut f32) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let [m, v] = states([mean, var], pat.groups())?;
        // SAFETY: the caller passes arrays of these sizes.
        let x = unsafe { Region::contiguous(x, pat.len())?.read_apart(&[m, v]) };
        crate::norm::moments(&x, pat, unsafe { m.write() }, unsafe { v.write() })
    })
}

/// su[g] = sum of u', suv[g] = sum of u' (v - center[g]) over group g, with
/// u' = u masked to mask > 0 (mask NULL: no mask); v NULL means u, center
/// NULL means 0.
#[no_mangle]
pub extern "C" fn nncy_norm_sums_f32(
    u: *const f32,
    v: *const f32,
    center: *const f32,
    mask: *const f32,
    p: usize,
    a: usize,
    c: usize,
    b: usize,
    su: *mut f32,
    suv: *mut f32,
) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let outs = states([su, suv], pat.groups())?;
        let (n, gn) = (pat.len(), pat.groups());
        // SAFETY: the caller passes arrays of these sizes (or NULL).
        let u = unsafe { Region::contiguous(u, n)?.read_apart(&outs) };
        let v = unsafe { opt_read(v, n, &outs)? };
        let center = unsafe { opt_read(center, gn, &outs)? };
        let mask = unsafe { opt_read(mask, n, &outs)? };
        let [su, suv] = outs;
        crate::norm::sums(&u, v.as_deref(), center.as_deref(), mask.as_deref(), pat, unsafe { su.write() }, unsafe { suv.write() })
    })
}

/// y = (x - center[g]) * sa[g] + sb[g] (+ z), then ReLU when `relu`.
#[no_mangle]
pub extern "C" fn nncy_norm_affine_f32(
    x: *const f32,
    p: usize,
    a: usize,
    c: usize,
    b: usize,
    center: *const f32,
    sa: *const f32,
    sb: *const f32,
    z: *const f32,
    relu: i32,
    y: *mut f32,
) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let (n, gn) = (pat.len(), pat.groups());
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: the caller passes arrays of these sizes (or NULL for z).
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[out]) };
        let center = unsafe { Region::contiguous(center, gn)?.read_apart(&[out]) };
        let sa = unsafe { Region::contiguous(sa, gn)?.read_apart(&[out]) };
        let sb = unsafe { Region::contiguous(sb, gn)?.read_apart(&[out]) };
        let z = unsafe { opt_read(z, n, &[out])? };
        crate::norm::affine(&x, pat, &center, &sa, &sb, z.as_deref(), relu != 0, unsafe { out.write() })
    })
}

/// out = (accum ? out : 0) + ca[g] u' + cb[g] (v - center[g]) + cc[g], u' as
/// in `nncy_norm_sums_f32` (v NULL means u).
#[no_mangle]
pub extern "C" fn nncy_norm_combine_f32(
    u: *const f32,
    v: *const f32,
    mask: *const f32,
    p: usize,
    a: usize,
    c: usize,
    b: usize,
    ca: *const f32,
    cb: *const f32,
    center: *const f32,
    cc: *const f32,
    out: *mut f32,
    accum: i32,
) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let (n, gn) = (pat.len(), pat.groups());
        let o = Region::contiguous(out as *const f32, n)?;
        // SAFETY: the caller passes arrays of these sizes (or NULL).
        let u = unsafe { Region::contiguous(u, n)?.read_apart(&[o]) };
        let v = unsafe { opt_read(v, n, &[o])? };
        let mask = unsafe { opt_read(mask, n, &[o])? };
        let ca = unsafe { Region::contiguous(ca, gn)?.read_apart(&[o]) };
        let cb = unsafe { Region::contiguous(cb, gn)?.read_apart(&[o]) };
        let center = unsafe { Region::contiguous(center, gn)?.read_apart(&[o]) };
        let cc = unsafe { Region::contiguous(cc, gn)?.read_apart(&[o]) };
        crate::norm::combine(&u, v.as_deref(), mask.as_deref(), pat, &ca, &cb, &center, &cc, unsafe { o.write() }, accum != 0)
    })
}

/// out = (accum ? out : 0) + (y > 0 ? dy : 0) over n elements.
#[no_mangle]
pub extern "C" fn nncy_relu_mask_f32(y: *const f32, dy: *const f32, out: *mut f32, n: usize, accum: i32) -> i32 {
    guard(|| {
        let o = Region::contiguous(out as *const f32, n)?;
        // SAFETY: the caller passes n floats in each buffer.
        let y = unsafe { Region::contiguous(y, n)?.read_apart(&[o]) };
        let dy = unsafe { Region::contiguous(dy, n)?.read_apart(&[o]) };
        crate::norm::relu_mask(&y, &dy, unsafe { o.write() }, accum != 0)
    })
}

/// PReLU: y = x >= 0 ? x : w[g] x (one slope per group).
#[no_mangle]
pub extern "C" fn nncy_prelu_f32(x: *const f32, w: *const f32, p: usize, a: usize, c: usize, b: usize, y: *mut f32) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let o = Region::contiguous(y as *const f32, pat.len())?;
        // SAFETY: the caller passes arrays of these sizes.
        let x = unsafe { Region::contiguous(x, pat.len())?.read_apart(&[o]) };
        let w = unsafe { Region::contiguous(w, pat.groups())?.read_apart(&[o]) };
        crate::norm::prelu(&x, &w, pat, unsafe { o.write() })
    })
}

/// PReLU gradients; dx or dw may be NULL (not computed).
#[no_mangle]
pub extern "C" fn nncy_prelu_grad_f32(
    x: *const f32,
    w: *const f32,
    dy: *const f32,
    p: usize,
    a: usize,
    c: usize,
    b: usize,
    dx: *mut f32,
    accum_x: i32,
    dw: *mut f32,
    accum_w: i32,
) -> i32 {
    guard(|| {
        let pat = pattern(p, a, c, b)?;
        let (n, gn) = (pat.len(), pat.groups());
        let mut outs = Vec::new();
        let rx = if dx.is_null() { None } else { Some(Region::contiguous(dx as *const f32, n)?) };
        let rw = if dw.is_null() { None } else { Some(Region::contiguous(dw as *const f32, gn)?) };
        outs.extend(rx);
        outs.extend(rw);
        if let (Some(a), Some(b)) = (rx, rw) {
            if a.overlaps(&b) {
                return Err(Error::Invalid);
            }
        }
        // SAFETY: the caller passes arrays of these sizes.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&outs) };
        let w = unsafe { Region::contiguous(w, gn)?.read_apart(&outs) };
        let dy = unsafe { Region::contiguous(dy, n)?.read_apart(&outs) };
        let dx = rx.map(|r| unsafe { r.write() });
        let dw = rw.map(|r| unsafe { r.write() });
        crate::norm::prelu_grad(&x, &w, &dy, pat, dx, accum_x != 0, dw, accum_w != 0)
    })
}

/// A clipping bound: n floats at `p`, or the number `v` when `p` is NULL.
/// SAFETY: as [`Region::read`].
unsafe fn bound<'a>(p: *const f32, v: f32, n: usize, outs: &[Region<f32>]) -> Result<(Option<Cow<'a, [f32]>>, f32)> {
    Ok((opt_read(p, n, outs)?, v))
}

fn as_bound<'a>(b: &'a (Option<Cow<'a, [f32]>>, f32)) -> crate::norm::Bound<'a> {
    match &b.0 {
        Some(a) => crate::norm::Bound::Array(a),
        None => crate::norm::Bound::Scalar(b.1),
    }
}

/// y = (accum ? y : 0) + min(max(x, lo), hi) over n elements; a bound is an
/// array (lo, hi) or, when that pointer is NULL, a number (lo_v, hi_v).
#[no_mangle]
pub extern "C" fn nncy_clip_f32(x: *const f32, lo: *const f32, lo_v: f32, hi: *const f32, hi_v: f32, y: *mut f32, n: usize, accum: i32) -> i32 {
    guard(|| {
        let o = Region::contiguous(y as *const f32, n)?;
        // SAFETY: the caller passes n floats in each non-NULL buffer.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[o]) };
        let (lo, hi) = unsafe { (bound(lo, lo_v, n, &[o])?, bound(hi, hi_v, n, &[o])?) };
        crate::norm::clip(&x, as_bound(&lo), as_bound(&hi), unsafe { o.write() }, accum != 0)
    })
}

/// g = (accum ? g : 0) + d min(max(x, lo), hi) / d operand * gy, operand
/// `which`: 0 x, 1 lo, 2 hi.
#[no_mangle]
pub extern "C" fn nncy_clip_grad_f32(
    x: *const f32,
    lo: *const f32,
    lo_v: f32,
    hi: *const f32,
    hi_v: f32,
    gy: *const f32,
    which: u32,
    g: *mut f32,
    n: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let o = Region::contiguous(g as *const f32, n)?;
        // SAFETY: the caller passes n floats in each non-NULL buffer.
        let x = unsafe { Region::contiguous(x, n)?.read_apart(&[o]) };
        let gy = unsafe { Region::contiguous(gy, n)?.read_apart(&[o]) };
        let (lo, hi) = unsafe { (bound(lo, lo_v, n, &[o])?, bound(hi, hi_v, n, &[o])?) };
        crate::norm::clip_grad(&x, as_bound(&lo), as_bound(&hi), &gy, which, unsafe { o.write() }, accum != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::{null, null_mut};

    fn op(name: &str, table: &[crate::pointwise::OpInfo]) -> u32 {
        table.iter().position(|i| i.name == name).expect(name) as u32
    }

    #[test]
    fn guard_maps_results_and_panics() {
        assert_eq!(guard(|| Ok(())), 0);
        assert_eq!(guard(|| Err(Error::Invalid)), 1);
        assert_eq!(guard(|| Err(Error::OutOfRange)), 2);
        assert_eq!(guard(|| panic!("boom")), 3);
        assert_eq!(nncy_ops_signature(), ops_gen::SIGNATURE);
        assert!(nncy_num_threads() >= 1);
    }

    #[test]
    fn unary_checks_and_in_place() {
        let relu = op("relu", &ops_gen::UNARY);
        let mul = op("mul_scalar", &ops_gen::UNARY);
        let mut y = [0.0f32; 4];
        let x = [-1.0f32, 2.0, -3.0, 4.0];
        assert_eq!(nncy_unary_f32(relu, x.as_ptr(), y.as_mut_ptr(), 4, null(), 0), 0);
        assert_eq!(y, [0.0, 2.0, 0.0, 4.0]);
        assert_eq!(nncy_unary_f32(relu, null(), y.as_mut_ptr(), 4, null(), 0), 1);
        assert_eq!(nncy_unary_f32(relu, x.as_ptr(), null_mut(), 4, null(), 0), 1);
        assert_eq!(nncy_unary_f32(relu, null(), null_mut(), 0, null(), 0), 0);
        assert_eq!(nncy_unary_f32(999, x.as_ptr(), y.as_mut_ptr(), 4, null(), 0), 1);
        assert_eq!(nncy_unary_f32(mul, x.as_ptr(), y.as_mut_ptr(), 4, null(), 0), 1); // no parameter
        let p = [3.0f32];
        assert_eq!(nncy_unary_f32(mul, x.as_ptr(), y.as_mut_ptr(), 4, p.as_ptr(), 1), 0);
        assert_eq!(y, [-3.0, 6.0, -9.0, 12.0]);
        // misaligned pointer
        let bytes = [0u8; 64];
        let odd = unsafe { bytes.as_ptr().add(1) } as *const f32;
        assert_eq!(nncy_unary_f32(relu, odd, y.as_mut_ptr(), 4, null(), 0), 1);
        // in place, and shifted overlap (copied first)
        let mut v: Vec<f32> = (0..10).map(|i| i as f32 - 5.0).collect();
        assert_eq!(nncy_unary_f32(mul, v.as_ptr(), v.as_mut_ptr(), 10, p.as_ptr(), 1), 0);
        assert_eq!(v[0], -15.0);
        let src = v.as_ptr();
        assert_eq!(nncy_unary_f32(mul, src, unsafe { v.as_mut_ptr().add(1) }, 9, p.as_ptr(), 1), 0);
        assert_eq!(&v[..3], &[-15.0, -45.0, -36.0]);
    }

    #[test]
    fn unary_grad_null_inputs() {
        let relu = op("relu", &ops_gen::UNARY); // gradient reads y only
        let log = op("log", &ops_gen::UNARY); // gradient reads x only
        let y = [0.0f32, 2.0];
        let gy = [5.0f32, 7.0];
        let mut gx = [1.0f32, 1.0];
        assert_eq!(nncy_unary_grad_f32(relu, null(), y.as_ptr(), gy.as_ptr(), gx.as_mut_ptr(), 2, null(), 0, 1), 0);
        assert_eq!(gx, [1.0, 8.0]);
        assert_eq!(nncy_unary_grad_f32(relu, null(), null(), gy.as_ptr(), gx.as_mut_ptr(), 2, null(), 0, 1), 1);
        let x = [2.0f32, 4.0];
        assert_eq!(nncy_unary_grad_f32(log, x.as_ptr(), null(), gy.as_ptr(), gx.as_mut_ptr(), 2, null(), 0, 0), 0);
        assert_eq!(gx, [2.5, 1.75]);
        assert_eq!(nncy_unary_grad_f32(log, null(), y.as_ptr(), gy.as_ptr(), gx.as_mut_ptr(), 2, null(), 0, 0), 1);
    }

    /// A binary op without parameters.
    #[allow(clippy::too_many_arguments)]
    fn binary(
        op: u32,
        x0: *const f32,
        s0: *const isize,
        x1: *const f32,
        s1: *const isize,
        y: *mut f32,
        shape: *const usize,
        ndim: usize,
    ) -> i32 {
        nncy_binary_f32(op, x0, s0, x1, s1, y, shape, ndim, null(), 0)
    }

    /// The gradient `which` of a binary op without parameters, y NULL,
    /// accumulated over a (2, 3) shape.
    #[allow(clippy::too_many_arguments)]
    fn binary_grad(
        op: u32,
        which: u32,
        x0: *const f32,
        s0: *const isize,
        x1: *const f32,
        s1: *const isize,
        gy: *const f32,
        g: *mut f32,
    ) -> i32 {
        nncy_binary_grad_f32(op, which, x0, s0, x1, s1, null(), gy, g, [2usize, 3].as_ptr(), 2, null(), 0, 1)
    }

    #[test]
    fn binary_broadcast_in_place_and_checks() {
        let sub = op("sub2", &ops_gen::BINARY);
        let mul = op("mul2", &ops_gen::BINARY);
        // (2, 3) - reversed row (3,) broadcast
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [10.0f32, 20.0, 30.0];
        let shape = [2usize, 3];
        let (sa, sb) = ([3isize, 1], [0isize, -1]);
        let mut y = [0.0f32; 6];
        let bl = unsafe { b.as_ptr().add(2) };
        assert_eq!(binary(sub, a.as_ptr(), sa.as_ptr(), bl, sb.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 2), 0);
        assert_eq!(y, [-29.0, -18.0, -7.0, -26.0, -15.0, -4.0]);
        // in place: y = y * b
        let yp = y.as_mut_ptr();
        assert_eq!(binary(mul, yp, sa.as_ptr(), b.as_ptr(), [0isize, 1].as_ptr(), yp, shape.as_ptr(), 2), 0);
        assert_eq!(y, [-290.0, -360.0, -210.0, -260.0, -300.0, -120.0]);
        // checks
        let big = [1usize; 17];
        let zeros = [0isize; 17];
        let s17 = zeros.as_ptr();
        assert_eq!(binary(sub, a.as_ptr(), s17, a.as_ptr(), s17, y.as_mut_ptr(), big.as_ptr(), 17), 1);
        assert_eq!(binary(sub, a.as_ptr(), sa.as_ptr(), null(), sb.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 2), 1);
        assert_eq!(binary(77, a.as_ptr(), sa.as_ptr(), a.as_ptr(), sa.as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 2), 1);
        let zero = [2usize, 0];
        assert_eq!(binary(sub, null(), sa.as_ptr(), null(), sb.as_ptr(), null_mut(), zero.as_ptr(), 2), 0);
        // scalar (ndim 0)
        let mut one = [0.0f32];
        assert_eq!(binary(mul, a.as_ptr(), null(), b.as_ptr(), null(), one.as_mut_ptr(), null(), 0), 0);
        assert_eq!(one, [10.0]);

        // gradient of mul2 w.r.t. x0 = gy * x1 (x0 and y unused: NULL)
        let gy = [1.0f32; 6];
        let mut g = [0.5f32; 6];
        let strides = [0isize, 1];
        let (row, gyp) = (strides.as_ptr(), gy.as_ptr());
        assert_eq!(binary_grad(mul, 0, null(), null(), b.as_ptr(), row, gyp, g.as_mut_ptr()), 0);
        assert_eq!(g, [10.5, 20.5, 30.5, 10.5, 20.5, 30.5]);
        // no third gradient, a NULL input the gradient reads
        assert_eq!(binary_grad(mul, 2, a.as_ptr(), sa.as_ptr(), b.as_ptr(), row, gyp, g.as_mut_ptr()), 1);
        assert_eq!(binary_grad(mul, 0, a.as_ptr(), sa.as_ptr(), null(), row, gyp, g.as_mut_ptr()), 1);
    }

    #[test]
    fn strided_copy_transpose_and_reduce() {
        let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut y = [0.0f32; 6];
        let shape = [3usize, 2];
        assert_eq!(nncy_strided_copy_f32(x.as_ptr(), [1isize, 3].as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 2, 0), 0);
        assert_eq!(y, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(nncy_strided_copy_f32(x.as_ptr(), [1isize, 3].as_ptr(), y.as_mut_ptr(), shape.as_ptr(), 2, 1), 0);
        assert_eq!(y, [0.0, 6.0, 2.0, 8.0, 4.0, 10.0]);
        let mut s = [0.0f32; 3];
        assert_eq!(nncy_reduce_f32(0, x.as_ptr(), s.as_mut_ptr(), 3, 2, 1, 1.0, 0), 0);
        assert_eq!(s, [1.0, 5.0, 9.0]);
        assert_eq!(nncy_reduce_f32(1, x.as_ptr(), s.as_mut_ptr(), 1, 2, 3, 1.0, 0), 0);
        assert_eq!(s, [3.0, 4.0, 5.0]);
        assert_eq!(nncy_reduce_f32(4, x.as_ptr(), s.as_mut_ptr(), 1, 2, 3, 1.0, 0), 1);
        assert_eq!(nncy_reduce_f32(0, null(), s.as_mut_ptr(), 1, 2, 3, 1.0, 0), 1);
    }

    #[test]
    fn softmax_entry_points() {
        let x = [1.0f32, 2.0, 3.0, 1e4, 1e4, 1e4];
        let mut y = [0.0f32; 6];
        assert_eq!(nncy_softmax_f32(x.as_ptr(), y.as_mut_ptr(), 2, 3, 1, 0), 0);
        assert!((y[3] - 1.0 / 3.0).abs() < 1e-6 && (y.iter().sum::<f32>() - 2.0).abs() < 1e-5);
        let t = [2i64, 0];
        let mut l = [0.0f32; 2];
        assert_eq!(nncy_softmax_ce_f32(x.as_ptr(), t.as_ptr(), l.as_mut_ptr(), 2, 3, 1), 0);
        assert!((l[1] - 3f32.ln()).abs() < 1e-6);
        let bad = [3i64, 0];
        assert_eq!(nncy_softmax_ce_f32(x.as_ptr(), bad.as_ptr(), l.as_mut_ptr(), 2, 3, 1), 2);
        let mut gx = [0.0f32; 6];
        assert_eq!(nncy_softmax_ce_grad_f32(x.as_ptr(), bad.as_ptr(), l.as_ptr(), gx.as_mut_ptr(), 2, 3, 1, 0), 2);
        assert_eq!(nncy_softmax_grad_f32(y.as_ptr(), x.as_ptr(), gx.as_mut_ptr(), 2, 3, 1, 1, 0), 0);
        // in place softmax
        let mut z = x;
        assert_eq!(nncy_softmax_f32(z.as_ptr(), z.as_mut_ptr(), 2, 3, 1, 0), 0);
        assert_eq!(z, y);
    }

    #[test]
    fn gemm_entry_points() {
        // 2x3 @ 3x2 with rhs given transposed
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0f32, 0.0, 1.0, 0.0, 1.0, 1.0]; // rhs^T (2x3)
        let mut d = [f32::NAN; 4];
        assert_eq!(nncy_gemm_f32(2, 2, 3, d.as_mut_ptr(), 2, 1, a.as_ptr(), 3, 1, bt.as_ptr(), 1, 3, 0.0, 1.0), 0);
        assert_eq!(d, [4.0, 5.0, 10.0, 11.0]);
        assert_eq!(nncy_gemm_f32(2, 2, 3, d.as_mut_ptr(), 0, 1, a.as_ptr(), 3, 1, bt.as_ptr(), 1, 3, 0.0, 1.0), 1);
        assert_eq!(nncy_gemm_f32(2, 2, 3, d.as_mut_ptr(), 2, 1, null(), 3, 1, bt.as_ptr(), 1, 3, 0.0, 1.0), 1);
        assert_eq!(nncy_gemm_f32(2, 2, 0, d.as_mut_ptr(), 2, 1, null(), 0, 1, null(), 1, 0, 2.0, 1.0), 0);
        assert_eq!(d, [8.0, 10.0, 20.0, 22.0]);
        // dst overlapping lhs: lhs is copied first
        let mut m = [1.0f32, 2.0, 3.0, 4.0];
        let mp = m.as_mut_ptr();
        assert_eq!(nncy_gemm_f32(2, 2, 2, mp, 2, 1, mp, 2, 1, [1.0f32, 0.0, 0.0, 1.0].as_ptr(), 2, 1, 0.0, 2.0), 0);
        assert_eq!(m, [2.0, 4.0, 6.0, 8.0]);
        // batch of 2 with a shared rhs
        let mut bd = [0.0f32; 8];
        let lhs = [1.0f32, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0];
        let rhs = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(
            nncy_batch_gemm_f32(
                2,
                2,
                2,
                2,
                bd.as_mut_ptr(),
                4,
                2,
                1,
                lhs.as_ptr(),
                4,
                2,
                1,
                rhs.as_ptr(),
                0,
                2,
                1,
                0.0,
                1.0
            ),
            0
        );
        assert_eq!(bd, [1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0]);
    }
}

// ---------------------------------------------------------------------------
// Neural-network layers: recurrent cells, embedding, patch
// correlation.
// ---------------------------------------------------------------------------

use crate::{correlation, embed, recurrent};

/// Output buffers of `n` floats each that must not overlap one another.
fn outputs<const N: usize>(bufs: [(*mut f32, usize); N]) -> Result<[Region<f32>; N]> {
    let mut out = [Region { start: std::ptr::null(), len: 0, base: 0 }; N];
    for k in 0..N {
        out[k] = Region::contiguous(bufs[k].0 as *const f32, bufs[k].1)?;
        if (0..k).any(|j| out[j].overlaps(&out[k])) {
            return Err(Error::Invalid);
        }
    }
    Ok(out)
}

/// Elman cell: h = tanh(pre), or max(pre, 0) when relu != 0 (n values).
#[no_mangle]
pub extern "C" fn nncy_rnn_cell_f32(relu: i32, n: usize, pre: *const f32, h: *mut f32) -> i32 {
    guard(|| {
        let [out] = outputs([(h, n)])?;
        // SAFETY: the caller passes n floats in each buffer.
        let pre = unsafe { Region::contiguous(pre, n)?.read_apart(&[out]) };
        recurrent::rnn_fwd(relu != 0, &pre, unsafe { out.write() })
    })
}

/// Elman cell backward: dpre = (dy + dh) * act'(pre), from the output h.
#[no_mangle]
pub extern "C" fn nncy_rnn_cell_grad_f32(
    relu: i32,
    n: usize,
    h: *const f32,
    dy: *const f32,
    dh: *const f32,
    dpre: *mut f32,
) -> i32 {
    guard(|| {
        let [out] = outputs([(dpre, n)])?;
        // SAFETY: the caller passes n floats in each buffer.
        let (h, dy, dh) = unsafe {
            (
                Region::contiguous(h, n)?.read_apart(&[out]),
                Region::contiguous(dy, n)?.read_apart(&[out]),
                Region::contiguous(dh, n)?.read_apart(&[out]),
            )
        };
        recurrent::rnn_bwd(relu != 0, &h, &dy, &dh, unsafe { out.write() })
    })
}

/// LSTM cell over b rows of h units: gates (b, 4h) pre-activations of
/// i, f, g, o in, activations out; c = f c_prev + i g; hout = o tanh(c).
#[no_mangle]
pub extern "C" fn nncy_lstm_cell_f32(
    b: usize,
    h: usize,
    gates: *mut f32,
    c_prev: *const f32,
    c: *mut f32,
    hout: *mut f32,
) -> i32 {
    guard(|| {
        let (bh, b4h) = (product(&[b, h])?, product(&[b, 4, h])?);
        let outs = outputs([(gates, b4h), (c, bh), (hout, bh)])?;
        // SAFETY: the caller passes buffers of these sizes.
        let cp = unsafe { Region::contiguous(c_prev, bh)?.read_apart(&outs) };
        let [g, c, ho] = outs;
        recurrent::lstm_fwd(h, unsafe { g.write() }, &cp, unsafe { c.write() }, unsafe { ho.write() })
    })
}

/// LSTM cell backward: dgates (b, 4h) = gradients of the pre-activations; dc
/// holds dL/dc on entry and dL/dc_prev on exit; dy + dh is dL/dhout.
#[no_mangle]
pub extern "C" fn nncy_lstm_cell_grad_f32(
    b: usize,
    h: usize,
    gates: *const f32,
    c_prev: *const f32,
    c: *const f32,
    dy: *const f32,
    dh: *const f32,
    dc: *mut f32,
    dgates: *mut f32,
) -> i32 {
    guard(|| {
        let (bh, b4h) = (product(&[b, h])?, product(&[b, 4, h])?);
        let outs = outputs([(dc, bh), (dgates, b4h)])?;
        // SAFETY: the caller passes buffers of these sizes.
        let (g, cp, cc, dy, dh) = unsafe {
            (
                Region::contiguous(gates, b4h)?.read_apart(&outs),
                Region::contiguous(c_prev, bh)?.read_apart(&outs),
                Region::contiguous(c, bh)?.read_apart(&outs),
                Region::contiguous(dy, bh)?.read_apart(&outs),
                Region::contiguous(dh, bh)?.read_apart(&outs),
            )
        };
        let [dc, dg] = outs;
        recurrent::lstm_bwd(h, &g, &cp, &cc, &dy, &dh, unsafe { dc.write() }, unsafe { dg.write() })
    })
}

/// GRU cell: gates (b, 3h) input-side pre-activations of r, z, n in, r, z, n
/// out; hw (b, 3h) hidden projections in, its n block plus bhn (h values, may
/// be null) out; hout = (1 - z) n + z h_prev.
#[no_mangle]
pub extern "C" fn nncy_gru_cell_f32(
    b: usize,
    h: usize,
    gates: *mut f32,
    hw: *mut f32,
    bhn: *const f32,
    h_prev: *const f32,
    hout: *mut f32,
) -> i32 {
    guard(|| {
        let (bh, b3h) = (product(&[b, h])?, product(&[b, 3, h])?);
        let outs = outputs([(gates, b3h), (hw, b3h), (hout, bh)])?;
        // SAFETY: the caller passes buffers of these sizes (bhn: h or null).
        let hp = unsafe { Region::contiguous(h_prev, bh)?.read_apart(&outs) };
        let bias = if bhn.is_null() { None } else { Some(unsafe { Region::contiguous(bhn, h)?.read_apart(&outs) }) };
        let [g, hw, ho] = outs;
        recurrent::gru_fwd(h, unsafe { g.write() }, unsafe { hw.write() }, bias.as_deref(), &hp, unsafe { ho.write() })
    })
}

/// GRU cell backward: dgx, dgh (b, 3h) gradients of the input-side
/// pre-activations and of the hidden projections; dh_prev = (dy + dh) z.
#[no_mangle]
pub extern "C" fn nncy_gru_cell_grad_f32(
    b: usize,
    h: usize,
    gates: *const f32,
    hw: *const f32,
    h_prev: *const f32,
    dy: *const f32,
    dh: *const f32,
    dgx: *mut f32,
    dgh: *mut f32,
    dh_prev: *mut f32,
) -> i32 {
    guard(|| {
        let (bh, b3h) = (product(&[b, h])?, product(&[b, 3, h])?);
        let outs = outputs([(dgx, b3h), (dgh, b3h), (dh_prev, bh)])?;
        // SAFETY: the caller passes buffers of these sizes.
        let (g, hw, hp, dy, dh) = unsafe {
            (
                Region::contiguous(gates, b3h)?.read_apart(&outs),
                Region::contiguous(hw, b3h)?.read_apart(&outs),
                Region::contiguous(h_prev, bh)?.read_apart(&outs),
                Region::contiguous(dy, bh)?.read_apart(&outs),
                Region::contiguous(dh, bh)?.read_apart(&outs),
            )
        };
        let [dgx, dgh, dhp] = outs;
        recurrent::gru_bwd(h, &g, &hw, &hp, &dy, &dh, unsafe { dgx.write() }, unsafe { dgh.write() }, unsafe {
            dhp.write()
        })
    })
}

/// y[k] = w[idx[k]] for rows of `width` floats; status 2 if an index is
/// outside [0, rows).
#[no_mangle]
pub extern "C" fn nncy_embed_f32(
    idx: *const i64,
    n: usize,
    w: *const f32,
    rows: usize,
    width: usize,
    y: *mut f32,
) -> i32 {
    guard(|| {
        let [out] = outputs([(y, product(&[n, width])?)])?;
        // SAFETY: the caller passes n indices, rows * width and n * width floats.
        let idx = unsafe { Region::contiguous(idx, n)?.read_apart(&[out]) };
        let w = unsafe { Region::contiguous(w, product(&[rows, width])?)?.read_apart(&[out]) };
        embed::embed(&idx, &w, rows, width, unsafe { out.write() })
    })
}

/// gw[idx[k]] += gy[k] (rows of `width` floats); status 2 if an index is
/// outside [0, rows).
#[no_mangle]
pub extern "C" fn nncy_embed_grad_f32(
    idx: *const i64,
    n: usize,
    gy: *const f32,
    rows: usize,
    width: usize,
    gw: *mut f32,
) -> i32 {
    guard(|| {
        let [out] = outputs([(gw, product(&[rows, width])?)])?;
        // SAFETY: the caller passes n indices, n * width and rows * width floats.
        let idx = unsafe { Region::contiguous(idx, n)?.read_apart(&[out]) };
        let gy = unsafe { Region::contiguous(gy, product(&[n, width])?)?.read_apart(&[out]) };
        embed::embed_grad(&idx, &gy, rows, width, unsafe { out.write() })
    })
}

fn geometry(dims: *const usize, params: *const i64) -> Result<correlation::Geometry> {
    let mut d = [0usize; 4];
    let mut p = [0i64; 12];
    read_into(&mut d, dims)?;
    read_into(&mut p, params)?;
    correlation::Geometry::new(d, p)
}

/// Patch correlation of NCHW x1, x2 (dims n, h, w, c) into y (n, cy, cx, oh,
/// ow); params: patch h, w, shift h, w, patch_step h, w, shift_step h, w,
/// padding top, bottom, left, right.
#[no_mangle]
pub extern "C" fn nncy_patch_correlation_f32(
    x1: *const f32,
    x2: *const f32,
    y: *mut f32,
    dims: *const usize,
    params: *const i64,
) -> i32 {
    guard(|| {
        let g = geometry(dims, params)?;
        let [out] = outputs([(y, g.out_len()?)])?;
        let ni = g.in_len()?;
        // SAFETY: the caller passes arrays of the sizes the geometry gives.
        let (a, b) =
            unsafe { (Region::contiguous(x1, ni)?.read_apart(&[out]), Region::contiguous(x2, ni)?.read_apart(&[out])) };
        correlation::forward(&g, &a, &b, unsafe { out.write() })
    })
}

/// Gradient of the patch correlation with respect to x1 (which = 0) or x2
/// (which = 1): gx = (accum ? gx : 0) + d(sum(y * gy)) / dx.
#[no_mangle]
pub extern "C" fn nncy_patch_correlation_grad_f32(
    which: u32,
    x1: *const f32,
    x2: *const f32,
    gy: *const f32,
    gx: *mut f32,
    dims: *const usize,
    params: *const i64,
    accum: i32,
) -> i32 {
    guard(|| {
        let g = geometry(dims, params)?;
        let ni = g.in_len()?;
        let [out] = outputs([(gx, ni)])?;
        // SAFETY: the caller passes arrays of the sizes the geometry gives.
        let (a, b, gy) = unsafe {
            (
                Region::contiguous(x1, ni)?.read_apart(&[out]),
                Region::contiguous(x2, ni)?.read_apart(&[out]),
                Region::contiguous(gy, g.out_len()?)?.read_apart(&[out]),
            )
        };
        correlation::backward(&g, which, &a, &b, &gy, unsafe { out.write() }, accum != 0)
    })
}

// Reduction, arithmetic, logical and math kernels (`math`).

/// vals[o, i] = max (op 0) or min (op 1) of x[o, :, i] for x viewed as
/// (outer, r, inner), idx[o, i] the first index of it along r (NaN skipped
/// unless all are NaN).  r must be positive; vals and idx must not overlap.
#[no_mangle]
pub extern "C" fn nncy_arg_reduce_f32(
    op: u32,
    x: *const f32,
    vals: *mut f32,
    idx: *mut i64,
    outer: usize,
    r: usize,
    inner: usize,
) -> i32 {
    guard(|| {
        let n_out = product(&[outer, inner])?;
        let vr = Region::contiguous(vals as *const f32, n_out)?;
        let ir = Region::contiguous(idx as *const i64, n_out)?;
        if vr.overlaps(&ir) {
            return Err(Error::Invalid);
        }
        let xr = Region::contiguous(x, product(&[outer, r, inner])?)?;
        // SAFETY: the caller passes buffers of these sizes; x is copied if it
        // overlaps an output.
        let x = unsafe {
            if xr.overlaps(&ir) {
                Cow::Owned(xr.read().to_vec())
            } else {
                xr.read_apart(&[vr])
            }
        };
        crate::math::arg_reduce(op, &x, unsafe { vr.write() }, unsafe { ir.write() }, outer, r, inner)
    })
}

/// gx (outer, r, inner) = (accum ? gx : 0) + gy[o, i] at [o, idx[o, i], i];
/// status 2 (nothing written) if an index is outside [0, r).
#[no_mangle]
pub extern "C" fn nncy_arg_scatter_f32(
    gy: *const f32,
    idx: *const i64,
    gx: *mut f32,
    outer: usize,
    r: usize,
    inner: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let n_out = product(&[outer, inner])?;
        let out = Region::contiguous(gx as *const f32, product(&[outer, r, inner])?)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let gy = unsafe { Region::contiguous(gy, n_out)?.read_apart(&[out]) };
        let idx = unsafe { Region::contiguous(idx, n_out)?.read_apart(&[out]) };
        crate::math::arg_scatter(&gy, &idx, unsafe { out.write() }, outer, r, inner, accum != 0)
    })
}

/// y[o, i] = product over j of x[o, j, i] (x viewed as (outer, r, inner)),
/// accumulated in f64.
#[no_mangle]
pub extern "C" fn nncy_prod_f32(x: *const f32, y: *mut f32, outer: usize, r: usize, inner: usize) -> i32 {
    guard(|| {
        let out = Region::contiguous(y as *const f32, product(&[outer, inner])?)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let x = unsafe { Region::contiguous(x, product(&[outer, r, inner])?)?.read_apart(&[out]) };
        crate::math::prod_reduce(&x, unsafe { out.write() }, outer, r, inner)
    })
}

/// gx[o, j, i] = (accum ? gx : 0) + gy[o, i] * prod_{k != j} x[o, k, i].
#[no_mangle]
pub extern "C" fn nncy_prod_grad_f32(
    x: *const f32,
    gy: *const f32,
    gx: *mut f32,
    outer: usize,
    r: usize,
    inner: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        let n_in = product(&[outer, r, inner])?;
        let out = Region::contiguous(gx as *const f32, n_in)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let x = unsafe { Region::contiguous(x, n_in)?.read_apart(&[out]) };
        let gy = unsafe { Region::contiguous(gy, product(&[outer, inner])?)?.read_apart(&[out]) };
        crate::math::prod_grad(&x, &gy, unsafe { out.write() }, outer, r, inner, accum != 0)
    })
}

/// y (+)= sum (op 0) or product (op 1) of the n_in arrays at xs[k] (n floats
/// each) for k != skip; a product is also multiplied by gy unless gy is NULL.
#[no_mangle]
pub extern "C" fn nncy_nary_f32(
    op: u32,
    xs: *const *const f32,
    n_in: usize,
    skip: usize,
    gy: *const f32,
    y: *mut f32,
    n: usize,
    accum: i32,
) -> i32 {
    guard(|| {
        if n_in > 1 << 20 {
            return Err(Error::Invalid);
        }
        let mut ptrs = vec![std::ptr::null::<f32>(); n_in];
        read_into(&mut ptrs, xs)?;
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: every pointer holds n readable floats (copied on overlap with y).
        let mut ins = Vec::with_capacity(n_in);
        for &p in &ptrs {
            ins.push(unsafe { Region::contiguous(p, n)?.read_apart(&[out]) });
        }
        let gy = if gy.is_null() { None } else { Some(unsafe { Region::contiguous(gy, n)?.read_apart(&[out]) }) };
        let slices: Vec<&[f32]> = ins.iter().map(|c| &c[..]).collect();
        crate::math::nary(op, &slices, skip, gy.as_deref(), unsafe { out.write() }, accum != 0)
    })
}

/// y[o, i] = cond[o] != 0 ? xt[o, i] : xf[o, i] ((outer, inner) arrays).
#[no_mangle]
pub extern "C" fn nncy_where_f32(
    cond: *const f32,
    xt: *const f32,
    xf: *const f32,
    y: *mut f32,
    outer: usize,
    inner: usize,
) -> i32 {
    guard(|| {
        let n = product(&[outer, inner])?;
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let c = unsafe { Region::contiguous(cond, outer)?.read_apart(&[out]) };
        let t = unsafe { Region::contiguous(xt, n)?.read_apart(&[out]) };
        let f = unsafe { Region::contiguous(xf, n)?.read_apart(&[out]) };
        crate::math::where_(&c, &t, &f, unsafe { out.write() }, outer, inner)
    })
}

/// g (+)= gy where (cond[o] != 0) == on_true, else 0 (the gradient of where
/// for x_true when on_true, for x_false otherwise).
#[no_mangle]
pub extern "C" fn nncy_where_grad_f32(
    cond: *const f32,
    gy: *const f32,
    g: *mut f32,
    outer: usize,
    inner: usize,
    on_true: i32,
    accum: i32,
) -> i32 {
    guard(|| {
        let n = product(&[outer, inner])?;
        let out = Region::contiguous(g as *const f32, n)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let c = unsafe { Region::contiguous(cond, outer)?.read_apart(&[out]) };
        let gy = unsafe { Region::contiguous(gy, n)?.read_apart(&[out]) };
        crate::math::where_grad(&c, &gy, unsafe { out.write() }, outer, inner, on_true != 0, accum != 0)
    })
}

/// y (batch, n, n) = diagonal matrices of x (batch, n); with accum, x is
/// added to the diagonals and the rest of y is kept.
#[no_mangle]
pub extern "C" fn nncy_matrix_diag_f32(x: *const f32, y: *mut f32, batch: usize, n: usize, accum: i32) -> i32 {
    guard(|| {
        let out = Region::contiguous(y as *const f32, product(&[batch, n, n])?)?;
        // SAFETY: the caller passes buffers of these sizes (copied on overlap).
        let x = unsafe { Region::contiguous(x, product(&[batch, n])?)?.read_apart(&[out]) };
        crate::math::matrix_diag(&x, unsafe { out.write() }, batch, n, accum != 0)
    })
}

/// *count = number of values of arange(start, stop, step) accumulated in f32;
/// status 1 for a zero or non-finite step, 2 beyond `cap` values or for a
/// range that never reaches stop.
#[no_mangle]
pub extern "C" fn nncy_arange_count_f32(start: f32, stop: f32, step: f32, cap: usize, count: *mut usize) -> i32 {
    guard(|| {
        let out = Region::contiguous(count as *const usize, 1)?;
        let n = crate::math::arange_count(start, stop, step, cap)?;
        // SAFETY: the caller passes one writable usize.
        let out: &mut [usize] = unsafe { out.write() };
        out[0] = n;
        Ok(())
    })
}

/// y[i] = start accumulated with i steps in f32, for i < n.
#[no_mangle]
pub extern "C" fn nncy_arange_f32(start: f32, step: f32, y: *mut f32, n: usize) -> i32 {
    guard(|| {
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: the caller passes n writable floats.
        crate::math::arange(start, step, unsafe { out.write() });
        Ok(())
    })
}

/// y[i] = v for i < n.
#[no_mangle]
pub extern "C" fn nncy_fill_f32(y: *mut f32, n: usize, v: f32) -> i32 {
    guard(|| {
        let out = Region::contiguous(y as *const f32, n)?;
        // SAFETY: the caller passes n writable floats.
        crate::math::fill(unsafe { out.write() }, v);
        Ok(())
    })
}

#[cfg(test)]
mod layer_tests {
    use super::*;
    use std::ptr::{null, null_mut};

    #[test]
    fn layer_entry_points_validate() {
        let mut y = [0.0f32; 6];
        let w = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(nncy_embed_f32([1i64, 0, 1].as_ptr(), 3, w.as_ptr(), 2, 2, y.as_mut_ptr()), 0);
        assert_eq!(y, [3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(nncy_embed_f32([2i64].as_ptr(), 1, w.as_ptr(), 2, 2, y.as_mut_ptr()), 2);
        assert_eq!(nncy_embed_f32(null(), 1, w.as_ptr(), 2, 2, y.as_mut_ptr()), 1);
        let mut g = [0.0f32; 8];
        let mut c = [0.0f32; 2];
        // outputs may not overlap
        let gp = g.as_mut_ptr();
        assert_eq!(nncy_lstm_cell_f32(1, 2, gp, c.as_ptr(), gp, c.as_mut_ptr()), 1);
        assert_eq!(nncy_rnn_cell_f32(0, 2, null(), null_mut()), 1);
        let dims = [1usize, 2, 2, 1];
        let bad = [0i64; 12];
        assert_eq!(nncy_patch_correlation_f32(w.as_ptr(), w.as_ptr(), y.as_mut_ptr(), dims.as_ptr(), bad.as_ptr()), 1);
    }
}

#[cfg(test)]
mod math_tests {
    use super::*;
    use std::ptr::{null, null_mut};

    #[test]
    fn math_entry_points() {
        let x = [3.0f32, 1.0, 2.0, 5.0, 0.0, 4.0];
        let (mut v, mut i) = ([0.0f32; 2], [0i64; 2]);
        assert_eq!(nncy_arg_reduce_f32(0, x.as_ptr(), v.as_mut_ptr(), i.as_mut_ptr(), 2, 3, 1), 0);
        assert_eq!((v, i), ([3.0, 5.0], [0, 0]));
        assert_eq!(nncy_arg_reduce_f32(1, x.as_ptr(), v.as_mut_ptr(), i.as_mut_ptr(), 1, 2, 3), 0);
        assert_eq!((v, i), ([3.0, 0.0], [0, 1]));
        assert_eq!(nncy_arg_reduce_f32(0, null(), v.as_mut_ptr(), i.as_mut_ptr(), 2, 3, 1), 1);
        let vi = v.as_mut_ptr() as *mut i64; // outputs overlapping
        assert_eq!(nncy_arg_reduce_f32(0, x.as_ptr(), v.as_mut_ptr(), vi, 1, 6, 1), 1);
        let mut gx = [1.0f32; 6];
        assert_eq!(nncy_arg_scatter_f32([1.0f32, 2.0].as_ptr(), [2i64, 0].as_ptr(), gx.as_mut_ptr(), 2, 3, 1, 0), 0);
        assert_eq!(gx, [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
        assert_eq!(nncy_arg_scatter_f32([1.0f32, 2.0].as_ptr(), [3i64, 0].as_ptr(), gx.as_mut_ptr(), 2, 3, 1, 0), 2);
        assert_eq!(nncy_prod_grad_f32(x.as_ptr(), [1.0f32, 1.0].as_ptr(), gx.as_mut_ptr(), 2, 3, 1, 0), 0);
        assert_eq!(gx, [2.0, 6.0, 3.0, 0.0, 20.0, 0.0]);

        let (a, b) = ([1.0f32, 2.0, 3.0], [4.0f32, 5.0, 6.0]);
        let ptrs = [a.as_ptr(), b.as_ptr()];
        let mut y = [0.0f32; 3];
        assert_eq!(nncy_nary_f32(1, ptrs.as_ptr(), 2, 2, null(), y.as_mut_ptr(), 3, 0), 0);
        assert_eq!(y, [4.0, 10.0, 18.0]);
        assert_eq!(nncy_nary_f32(0, ptrs.as_ptr(), 2, 2, null(), y.as_mut_ptr(), 3, 1), 0);
        assert_eq!(y, [9.0, 17.0, 27.0]);
        assert_eq!(nncy_nary_f32(1, ptrs.as_ptr(), 2, 0, b.as_ptr(), y.as_mut_ptr(), 3, 0), 0);
        assert_eq!(y, [16.0, 25.0, 36.0]);
        let bad = [a.as_ptr(), null()];
        assert_eq!(nncy_nary_f32(0, bad.as_ptr(), 2, 2, null(), y.as_mut_ptr(), 3, 0), 1);
        // in place: y is also an input
        let yp = y.as_mut_ptr();
        let ptrs2 = [yp as *const f32, a.as_ptr()];
        assert_eq!(nncy_nary_f32(0, ptrs2.as_ptr(), 2, 2, null(), yp, 3, 0), 0);
        assert_eq!(y, [17.0, 27.0, 39.0]);

        let mut w = [0.0f32; 3];
        assert_eq!(nncy_where_f32([0.0f32, 1.0, 0.0].as_ptr(), a.as_ptr(), b.as_ptr(), w.as_mut_ptr(), 3, 1), 0);
        assert_eq!(w, [4.0, 2.0, 6.0]);
        assert_eq!(nncy_where_grad_f32([0.0f32, 1.0, 0.0].as_ptr(), a.as_ptr(), w.as_mut_ptr(), 3, 1, 1, 0), 0);
        assert_eq!(w, [0.0, 2.0, 0.0]);
        let mut m = [1.0f32; 4];
        assert_eq!(nncy_matrix_diag_f32([2.0f32, 3.0].as_ptr(), m.as_mut_ptr(), 1, 2, 0), 0);
        assert_eq!(m, [2.0, 0.0, 0.0, 3.0]);
        let mut count = 0usize;
        assert_eq!(nncy_arange_count_f32(0.0, 3.0, 0.5, 100, &mut count), 0);
        assert_eq!(count, 6);
        assert_eq!(nncy_arange_count_f32(0.0, 3.0, 0.0, 100, &mut count), 1);
        assert_eq!(nncy_arange_count_f32(0.0, 3.0, 0.5, 100, null_mut()), 1);
        let mut r = [0.0f32; 6];
        assert_eq!(nncy_arange_f32(0.0, 0.5, r.as_mut_ptr(), 6), 0);
        assert_eq!(r, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(nncy_fill_f32(r.as_mut_ptr(), 6, 7.0), 0);
        assert_eq!(r, [7.0; 6]);
        assert_eq!(nncy_fill_f32(null_mut(), 6, 7.0), 1);
    }
}

// ---------------------------------------------------------------------------
// The solver family (optim::update) and the gradient helpers of the solvers.
// ---------------------------------------------------------------------------

/// Updates the parameter `w` (n floats) in place by solver rule `rule`
/// (`optim::Rule`) from its gradient `g`, updating the rule's state buffers
/// `s0`, `s1`, `s2` (n floats each; NULL for states the rule does not keep,
/// which must be the last ones).  `p` holds the rule's `np` parameters.
/// `w` and the states must not overlap; `g` is copied first if it overlaps them.
#[no_mangle]
pub extern "C" fn nncy_solver_update_f32(
    rule: u32,
    w: *mut f32,
    g: *const f32,
    s0: *mut f32,
    s1: *mut f32,
    s2: *mut f32,
    n: usize,
    p: *const f32,
    np: usize,
) -> i32 {
    guard(|| {
        let rule = optim::Rule::from_code(rule).ok_or(Error::Invalid)?;
        let (_, _, needed) = rule.spec();
        let p = params(p, np, needed)?;
        let mut outs = vec![Region::contiguous(w as *const f32, n)?];
        let mut present = [false; 3];
        for (k, s) in [s0, s1, s2].into_iter().enumerate() {
            if !s.is_null() {
                let r = Region::contiguous(s as *const f32, n)?;
                if outs.iter().any(|o| o.overlaps(&r)) {
                    return Err(Error::Invalid);
                }
                outs.push(r);
                present[k] = true;
            }
        }
        // SAFETY: the caller passes n floats in each non-NULL buffer; the
        // writable ones are pairwise disjoint and g is copied if it overlaps them.
        let gd = unsafe { Region::contiguous(g, n)?.read_apart(&outs) };
        let mut it = outs[1..].iter();
        let mut state = || -> Option<&mut [f32]> { it.next().map(|r| unsafe { r.write() }) };
        let s = [
            if present[0] { state() } else { None },
            if present[1] { state() } else { None },
            if present[2] { state() } else { None },
        ];
        optim::update(rule, unsafe { outs[0].write() }, &gd, s, &p[..needed])
    })
}

/// Gradient edits: op 0: g += a * w (weight decay); op 1: g *= a (w unused, may be NULL).
#[no_mangle]
pub extern "C" fn nncy_solver_grad_f32(op: u32, g: *mut f32, w: *const f32, n: usize, a: f32) -> i32 {
    guard(|| {
        let out = Region::contiguous(g as *const f32, n)?;
        let wd: Cow<[f32]> = if op == 0 {
            // SAFETY: the caller passes n readable floats at w (copied if they overlap g).
            unsafe { Region::contiguous(w, n)?.read_apart(&[out]) }
        } else {
            Cow::Borrowed(&[])
        };
        // SAFETY: g holds n writable floats.
        optim::grad_op(op, unsafe { out.write() }, &wd, a)
    })
}

/// *out = Σ x[i]^2 over n floats (in double precision).
#[no_mangle]
pub extern "C" fn nncy_sum_squares_f32(x: *const f32, n: usize, out: *mut f64) -> i32 {
    guard(|| {
        let o = Region::contiguous(out as *const f64, 1)?;
        // SAFETY: the caller passes n readable floats and one writable double.
        let s = optim::sum_squares(unsafe { Region::contiguous(x, n)?.read() });
        unsafe { o.write()[0] = s };
        Ok(())
    })
}

/// *out = (1 if x holds an infinity) | (2 if x holds a NaN), over n floats.
#[no_mangle]
pub extern "C" fn nncy_nonfinite_f32(x: *const f32, n: usize, out: *mut u32) -> i32 {
    guard(|| {
        let o = Region::contiguous(out as *const u32, 1)?;
        // SAFETY: the caller passes n readable floats and one writable u32.
        let s = optim::nonfinite(unsafe { Region::contiguous(x, n)?.read() });
        unsafe { o.write()[0] = s };
        Ok(())
    })
}

#[cfg(test)]
mod solver_family_tests {
    use super::*;
    use std::ptr::{null, null_mut};

    /// Solver rule `rule` on n floats with states `s` and parameters `p`.
    fn update(rule: u32, w: *mut f32, g: *const f32, s: [*mut f32; 3], n: usize, p: &[f32]) -> i32 {
        nncy_solver_update_f32(rule, w, g, s[0], s[1], s[2], n, p.as_ptr(), p.len())
    }

    #[test]
    fn solver_update_entry_point() {
        let g = [1.0f32, -2.0, 0.5];
        let (mut w, mut m, mut v) = ([1.0f32; 3], [0.0f32; 3], [0.0f32; 3]);
        let p = [0.1f32, 0.9, 0.999, 1e-8, 0.0, f32::NEG_INFINITY, f32::INFINITY];
        let adam = optim::Rule::Adam as u32;
        let (wp, mp, vp) = (w.as_mut_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
        assert_eq!(update(adam, wp, g.as_ptr(), [mp, vp, null_mut()], 3, &p), 0);
        let want = 1.0 - 0.1 * 0.1 / (0.001f32.sqrt() + 1e-8);
        assert!((w[0] - want).abs() < 1e-5, "{w:?} {want}");
        // too few parameters, unknown rule, a missing state, overlapping states, NULL gradient
        assert_eq!(update(adam, wp, g.as_ptr(), [mp, vp, null_mut()], 3, &p[..6]), 1);
        assert_eq!(update(99, wp, g.as_ptr(), [null_mut(); 3], 3, &p), 1);
        assert_eq!(update(adam, wp, g.as_ptr(), [mp, null_mut(), null_mut()], 3, &p), 1);
        assert_eq!(update(adam, wp, g.as_ptr(), [mp, mp, null_mut()], 3, &p), 1);
        assert_eq!(update(adam, wp, null(), [mp, vp, null_mut()], 3, &p), 1);
        // a state after a missing one
        assert_eq!(update(adam, wp, g.as_ptr(), [mp, null_mut(), vp], 3, &p), 1);
        // g may alias w (it is copied first)
        let mut x = [2.0f32; 3];
        let xp = x.as_mut_ptr();
        assert_eq!(update(optim::Rule::Sgd as u32, xp, xp, [null_mut(); 3], 3, &[0.5]), 0);
        assert_eq!(x, [1.0; 3]);
        // empty parameters are fine
        assert_eq!(update(0, null_mut(), null(), [null_mut(); 3], 0, &[0.5]), 0);
    }

    #[test]
    fn gradient_helpers() {
        let mut g = [1.0f32, 2.0];
        assert_eq!(nncy_solver_grad_f32(0, g.as_mut_ptr(), [2.0f32, 4.0].as_ptr(), 2, 0.5), 0);
        assert_eq!(g, [2.0, 4.0]);
        assert_eq!(nncy_solver_grad_f32(1, g.as_mut_ptr(), null(), 2, 0.25), 0);
        assert_eq!(g, [0.5, 1.0]);
        assert_eq!(nncy_solver_grad_f32(0, g.as_mut_ptr(), null(), 2, 0.25), 1);
        let mut s = 0f64;
        assert_eq!(nncy_sum_squares_f32(g.as_ptr(), 2, &mut s), 0);
        assert_eq!(s, 1.25);
        assert_eq!(nncy_sum_squares_f32(g.as_ptr(), 2, null_mut()), 1);
        let mut f = 9u32;
        assert_eq!(nncy_nonfinite_f32([1.0f32, f32::NAN].as_ptr(), 2, &mut f), 0);
        assert_eq!(f, 2);
    }
}

// ---------------------------------------------------------------------------
// Convolution and pooling (neural-network layers)
// ---------------------------------------------------------------------------

/// Most entries of a geometry array.
const MAX_GEOM: usize = 64;

/// The geometry array of `n` sizes at `p`.
fn read_geometry(p: *const usize, n: usize) -> Result<Vec<usize>> {
    if n > MAX_GEOM {
        return Err(Error::Invalid);
    }
    let mut v = vec![0usize; n];
    read_into(&mut v, p)?;
    Ok(v)
}

/// Convolution through im2col and matrix products (direct kernels when each
/// group has one input channel).  `geom`: [batch, channels, out_channels,
/// group, ndim, channel_last, then per spatial axis (len, out, kernel, pad,
/// stride, dilation)] with `out` the convolution output length.
/// op 0: out (y) (+)= conv(a = x, b = w) [+ bias (out_channels)];
/// op 1: out (gx) (+)= conv^T(a = gy, b = w) [+ bias (channels)];
/// op 2: out (gw) (+)= d conv / d w (a = x, b = gy), bias NULL.
/// Layouts in `conv`; `accum` adds to `out` instead of overwriting it.
#[no_mangle]
pub extern "C" fn nncy_conv_f32(
    op: u32,
    geom: *const usize,
    ngeom: usize,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    bias: *const f32,
    accum: i32,
) -> i32 {
    guard(|| {
        let g = crate::conv::ConvGeom::from_slice(&read_geometry(geom, ngeom)?)?;
        let s = g.sizes()?;
        let (na, nb, no, nbias) = match op {
            crate::conv::FORWARD => (s.x, s.w, s.y, g.out_channels),
            crate::conv::DATA => (s.y, s.w, s.x, g.channels),
            crate::conv::FILTER if bias.is_null() => (s.x, s.y, s.w, 0),
            _ => return Err(Error::Invalid),
        };
        let o = Region::contiguous(out as *const f32, no)?;
        // SAFETY: the caller passes buffers of these sizes; inputs that
        // overlap the output are copied first.
        let (a, b) = unsafe { (Region::contiguous(a, na)?.read_apart(&[o]), Region::contiguous(b, nb)?.read_apart(&[o])) };
        let bias = if bias.is_null() { None } else { Some(unsafe { Region::contiguous(bias, nbias)?.read_apart(&[o]) }) };
        crate::conv::run(op, &g, &a, &b, unsafe { o.write() }, bias.as_deref(), accum != 0)
    })
}

/// y (+)= pooling of `outer` planes of x: op 0 max, 1 sum, 2 average.
/// `geom`: [outer, ndim, including_pad, then per axis (len, out, kernel,
/// stride, pad)].
#[no_mangle]
pub extern "C" fn nncy_pool_f32(op: u32, geom: *const usize, ngeom: usize, x: *const f32, y: *mut f32, accum: i32) -> i32 {
    guard(|| {
        let g = crate::pool::PoolGeom::from_slice(&read_geometry(geom, ngeom)?)?;
        let (_, _, tin, tout) = g.sizes()?;
        let o = Region::contiguous(y as *const f32, tout)?;
        // SAFETY: x holds tin floats (copied if it overlaps y), y tout floats.
        let x = unsafe { Region::contiguous(x, tin)?.read_apart(&[o]) };
        crate::pool::forward(op, &g, &x, unsafe { o.write() }, accum != 0)
    })
}

/// gx (+)= gradient of [`nncy_pool_f32`] applied to gy; x is read by max
/// pooling only (NULL allowed otherwise).
#[no_mangle]
pub extern "C" fn nncy_pool_grad_f32(op: u32, geom: *const usize, ngeom: usize, x: *const f32, gy: *const f32, gx: *mut f32, accum: i32) -> i32 {
    guard(|| {
        let g = crate::pool::PoolGeom::from_slice(&read_geometry(geom, ngeom)?)?;
        let (_, _, tin, tout) = g.sizes()?;
        let o = Region::contiguous(gx as *const f32, tin)?;
        // SAFETY: gy holds tout floats, x (read for max) and gx tin floats.
        let gy = unsafe { Region::contiguous(gy, tout)?.read_apart(&[o]) };
        let x = if op == crate::pool::MAX { unsafe { Region::contiguous(x, tin)?.read_apart(&[o]) } } else { Cow::Borrowed(&[][..]) };
        crate::pool::backward(op, &g, &x, &gy, unsafe { o.write() }, accum != 0)
    })
}

/// Adaptive separable convolution.  `dims`: [B, C, H, W, Kv, Hv, Wv, Kh, Hh,
/// Wh] (x, vertical kernel kv, horizontal kernel kh).  which 0: out = y;
/// 1: out (+)= gx; 2: out (+)= gkv; 3: out (+)= gkh (gy read by 1 to 3).
#[no_mangle]
pub extern "C" fn nncy_asconv_f32(
    which: u32,
    dims: *const usize,
    x: *const f32,
    kv: *const f32,
    kh: *const f32,
    gy: *const f32,
    out: *mut f32,
    accum: i32,
) -> i32 {
    guard(|| {
        let d = crate::asconv::Dims::from_slice(&read_geometry(dims, 10)?)?;
        let [nx, nkv, nkh, ny] = d.sizes()?;
        let no = match which {
            crate::asconv::FORWARD => ny,
            crate::asconv::GRAD_X => nx,
            crate::asconv::GRAD_KV => nkv,
            crate::asconv::GRAD_KH => nkh,
            _ => return Err(Error::Invalid),
        };
        let o = Region::contiguous(out as *const f32, no)?;
        // SAFETY: the caller passes buffers of these sizes; overlaps are copied.
        let (x, kv, kh) = unsafe {
            (
                Region::contiguous(x, nx)?.read_apart(&[o]),
                Region::contiguous(kv, nkv)?.read_apart(&[o]),
                Region::contiguous(kh, nkh)?.read_apart(&[o]),
            )
        };
        let gy = if which == crate::asconv::FORWARD { Cow::Borrowed(&[][..]) } else { unsafe { Region::contiguous(gy, ny)?.read_apart(&[o]) } };
        crate::asconv::run(which, &d, &x, &kv, &kh, &gy, unsafe { o.write() }, accum != 0)
    })
}

#[cfg(test)]
mod conv_tests {
    use super::*;
    use std::ptr::null;

    #[test]
    fn conv_and_pool_entry_points() {
        // 1 sample, 1 channel, 4 -> 2 outputs of a 3-tap kernel
        let geom = [1usize, 1, 1, 1, 1, 0, 4, 2, 3, 0, 1, 1];
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let w = [1.0f32, 0.0, -1.0];
        let mut y = [0.0f32; 2];
        assert_eq!(nncy_conv_f32(0, geom.as_ptr(), geom.len(), x.as_ptr(), w.as_ptr(), y.as_mut_ptr(), [10.0f32].as_ptr(), 0), 0);
        assert_eq!(y, [8.0, 8.0]);
        // bad op, bias for the filter gradient, short geometry, null input
        assert_eq!(nncy_conv_f32(3, geom.as_ptr(), geom.len(), x.as_ptr(), w.as_ptr(), y.as_mut_ptr(), null(), 0), 1);
        let mut gw = [0.0f32; 3];
        assert_eq!(nncy_conv_f32(2, geom.as_ptr(), geom.len(), x.as_ptr(), y.as_ptr(), gw.as_mut_ptr(), w.as_ptr(), 0), 1);
        assert_eq!(nncy_conv_f32(2, geom.as_ptr(), geom.len(), x.as_ptr(), y.as_ptr(), gw.as_mut_ptr(), null(), 0), 0);
        assert_eq!(gw, [8.0 * 3.0, 8.0 * 5.0, 8.0 * 7.0]);
        assert_eq!(nncy_conv_f32(0, geom.as_ptr(), 5, x.as_ptr(), w.as_ptr(), y.as_mut_ptr(), null(), 0), 1);
        assert_eq!(nncy_conv_f32(0, geom.as_ptr(), geom.len(), null(), w.as_ptr(), y.as_mut_ptr(), null(), 0), 1);
        // the output overlapping an input: the input is copied first
        let mut buf = [1.0f32, 2.0, 3.0, 4.0];
        let bp = buf.as_mut_ptr();
        assert_eq!(nncy_conv_f32(0, geom.as_ptr(), geom.len(), bp, w.as_ptr(), bp, null(), 0), 0);
        assert_eq!(&buf[..2], &[-2.0, -2.0]);
        // 2x2 max pooling of a 2x4 plane
        let pg = [1usize, 2, 1, 2, 1, 2, 2, 0, 4, 2, 2, 2, 0];
        let px = [1.0f32, 5.0, 2.0, 0.0, 3.0, 4.0, 8.0, 7.0];
        let mut py = [0.0f32; 2];
        assert_eq!(nncy_pool_f32(0, pg.as_ptr(), pg.len(), px.as_ptr(), py.as_mut_ptr(), 0), 0);
        assert_eq!(py, [5.0, 8.0]);
        let mut pgx = [0.0f32; 8];
        assert_eq!(nncy_pool_grad_f32(0, pg.as_ptr(), pg.len(), px.as_ptr(), [1.0f32, 2.0].as_ptr(), pgx.as_mut_ptr(), 0), 0);
        assert_eq!(pgx, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
        assert_eq!(nncy_pool_grad_f32(0, pg.as_ptr(), pg.len(), null(), [1.0f32, 2.0].as_ptr(), pgx.as_mut_ptr(), 0), 1);
        assert_eq!(nncy_pool_grad_f32(2, pg.as_ptr(), pg.len(), null(), [1.0f32, 2.0].as_ptr(), pgx.as_mut_ptr(), 0), 0);
        assert_eq!(pgx[0], 0.25);
        assert_eq!(nncy_pool_f32(3, pg.as_ptr(), pg.len(), px.as_ptr(), py.as_mut_ptr(), 0), 1);
        // adaptive separable convolution: 1x1 kernels scale the input
        let dims = [1usize, 1, 2, 2, 1, 2, 2, 1, 2, 2];
        let ones = [1.0f32; 4];
        let mut ay = [0.0f32; 4];
        assert_eq!(nncy_asconv_f32(0, dims.as_ptr(), px.as_ptr(), ones.as_ptr(), [2.0f32; 4].as_ptr(), null(), ay.as_mut_ptr(), 0), 0);
        assert_eq!(ay, [2.0, 10.0, 4.0, 0.0]);
        assert_eq!(nncy_asconv_f32(1, dims.as_ptr(), px.as_ptr(), ones.as_ptr(), ones.as_ptr(), null(), ay.as_mut_ptr(), 0), 1);
    }
}

// ---------------------------------------------------------------------------
// Lean kernels for small inference layers (see `infer`)
// ---------------------------------------------------------------------------

/// `n` sizes at `p` into a fixed array (no allocation).
fn read_dims<const N: usize>(p: *const usize) -> Result<[usize; N]> {
    let mut d = [0usize; N];
    read_into(&mut d, p)?;
    Ok(d)
}

/// Packs convolution weights (oc, c, kh, kw) for [`nncy_infer_conv2d_f32`]
/// into `out` (c * kh * kw * oc rounded up to 16 floats).  `dims` as there.
#[no_mangle]
pub extern "C" fn nncy_infer_pack_conv_f32(dims: *const usize, w: *const f32, out: *mut f32) -> i32 {
    guard(|| {
        let d = crate::infer::ConvDims::from_slice(&read_dims::<13>(dims)?)?;
        let o = Region::contiguous(out as *const f32, d.packed_len())?;
        // SAFETY: w holds oc * c * kh * kw floats, out packed_len floats.
        let w = unsafe { Region::contiguous(w, d.oc * d.c * d.kh * d.kw)?.read_apart(&[o]) };
        crate::infer::pack_conv_weight(&d, &w, unsafe { o.write() })
    })
}

/// Scratch floats [`nncy_infer_conv2d_f32`] needs for `dims` (0 if invalid).
#[no_mangle]
pub extern "C" fn nncy_infer_conv_sizes(dims: *const usize, packed: *mut usize, scratch: *mut usize) -> i32 {
    guard(|| {
        let d = crate::infer::ConvDims::from_slice(&read_dims::<13>(dims)?)?;
        let p = Region::contiguous(packed as *const usize, 1)?;
        let s = Region::contiguous(scratch as *const usize, 1)?;
        // SAFETY: both point at one writable size.
        unsafe {
            p.write()[0] = d.packed_len();
            s.write()[0] = d.scratch_len();
        }
        Ok(())
    })
}

/// y = conv2d(x, w) + bias (NULL: none), then ReLU where `relu` != 0; batch
/// of NCHW images, no dilation, one group.  `dims`: [batch, c, h, w, oc, oh,
/// ow, kh, kw, ph, pw, sh, sw]; `wp` packed by [`nncy_infer_pack_conv_f32`];
/// `scratch` (apart from x and y) as [`nncy_infer_conv_sizes`] says.
#[no_mangle]
pub extern "C" fn nncy_infer_conv2d_f32(
    dims: *const usize,
    x: *const f32,
    wp: *const f32,
    bias: *const f32,
    relu: i32,
    scratch: *mut f32,
    y: *mut f32,
) -> i32 {
    guard(|| {
        let d = crate::infer::ConvDims::from_slice(&read_dims::<13>(dims)?)?;
        let o = Region::contiguous(y as *const f32, d.y_len())?;
        let s = Region::contiguous(scratch as *const f32, d.scratch_len())?;
        if s.overlaps(&o) {
            return Err(Error::Invalid);
        }
        // SAFETY: the caller passes buffers of these sizes; inputs overlapping
        // y or the scratch are copied.
        let x = unsafe { Region::contiguous(x, d.x_len())?.read_apart(&[o, s]) };
        let wp = unsafe { Region::contiguous(wp, d.packed_len())?.read_apart(&[o, s]) };
        let b = if bias.is_null() { Cow::Borrowed(&[][..]) } else { unsafe { Region::contiguous(bias, d.oc)?.read_apart(&[o, s]) } };
        crate::infer::conv2d(&d, &x, &wp, &b, relu != 0, unsafe { s.write() }, unsafe { o.write() })
    })
}

/// 2-D max pooling without padding, every window inside the input.  `dims`:
/// [planes, h, w, oh, ow, kh, kw, sh, sw].
#[no_mangle]
pub extern "C" fn nncy_infer_max_pool2d_f32(dims: *const usize, x: *const f32, y: *mut f32) -> i32 {
    guard(|| {
        let d = crate::infer::PoolDims::from_slice(&read_dims::<9>(dims)?)?;
        let o = Region::contiguous(y as *const f32, d.planes * d.oh * d.ow)?;
        // SAFETY: x holds planes * h * w floats (copied if it overlaps y).
        let x = unsafe { Region::contiguous(x, d.planes * d.h * d.w)?.read_apart(&[o]) };
        crate::infer::max_pool2d(&d, &x, unsafe { o.write() })
    })
}

/// y (m, n) = x (m, k) w (k, n) + bias (n floats; NULL: none), then ReLU
/// where `relu` != 0.
#[no_mangle]
pub extern "C" fn nncy_infer_dense_f32(m: usize, k: usize, n: usize, x: *const f32, w: *const f32, bias: *const f32, relu: i32, y: *mut f32) -> i32 {
    guard(|| {
        let o = Region::contiguous(y as *const f32, m.checked_mul(n).ok_or(Error::Invalid)?)?;
        // SAFETY: the caller passes buffers of these sizes; overlaps are copied.
        let x = unsafe { Region::contiguous(x, m.checked_mul(k).ok_or(Error::Invalid)?)?.read_apart(&[o]) };
        let w = unsafe { Region::contiguous(w, k.checked_mul(n).ok_or(Error::Invalid)?)?.read_apart(&[o]) };
        let b = if bias.is_null() { Cow::Borrowed(&[][..]) } else { unsafe { Region::contiguous(bias, n)?.read_apart(&[o]) } };
        crate::infer::dense(m, k, n, &x, &w, &b, relu != 0, unsafe { o.write() })
    })
}
