"""cuda implementations of the loss, validation, detection, quantization and
signal-processing functions of ``nncy/_cpu_loss.py``.  Each reuses the CPU
class's ``setup``; the work is CuPy array operations (cuBLAS for the matrix
products, cuFFT through ``cp.fft`` for the transforms) and, in
``kernels/loss.cu``, non-maximum suppression, the power-of-two rounding of
INQ, the overlap-add of short-time Fourier frames and the counts of the
confusion matrix.  Nothing is read back to the host except the flag of the
label check (to raise as the CPU classes do)."""
import numpy as np

from nncy import _cpu_loss as C
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import blocks, contiguous, cp, device, launch, store, sum_to
from nncy.cuda._module import function

FILE = 'loss.cu'
F32 = np.float32
C64 = np.complex64
_TINY = np.float32(np.finfo(np.float32).tiny)


def _uploaded(impl, key, make):
    """A constant of the node (made on the host by ``make``), uploaded once per
    device."""
    cache = impl.__dict__.setdefault('_dev_consts', {})
    k = (cp.cuda.runtime.getDevice(), key)
    if k not in cache:
        cache[k] = make()
    return cache[k]


def _zero_grads(inputs, propagate_down, accum):
    """The gradient of a step function or a count: zero."""
    for v, p, a in zip(inputs, propagate_down, accum):
        if p and not a:
            dev_grad_out(v, False).fill(0)


# ---------------------------------------------------------------------------
# Losses and validation over integer labels.

class _Labels:
    def _labels(self, t):
        """The labels as int64 (outer, 1, inner), checked against the class count."""
        ti = dev_data(t).astype(np.int64).reshape(self.outer, 1, self.inner)
        bad = (ti >= self.c) if self.ignore_negative else (ti < 0) | (ti >= self.c)
        if bool(bad.any()):   # one flag read back, to raise as the CPU does
            first = int(ti.get()[bad.get()][0])
            raise ValueError("%s: argument 'target' holds label %d; labels must lie in [0, %d)"
                             % (self.spec.name, first, self.c))
        return ti

    def _x3(self, x):
        return dev_data(x).astype(F32, copy=False).reshape(self.outer, self.c, self.inner)


@register('CategoricalCrossEntropy', 'cuda')
class CategoricalCrossEntropy(_Labels, C.CategoricalCrossEntropy):
    def _picked(self, inputs):
        ti = self._labels(inputs[1])
        return ti, cp.take_along_axis(self._x3(inputs[0]), cp.maximum(ti, 0), 1)

    def forward(self, inputs, outputs):
        with device(self):
            ti, p = self._picked(inputs)
            y = cp.where(ti < 0, F32(0), -cp.log(cp.maximum(p, _TINY)))
            dev_data_out(outputs[0])[...] = y.reshape(outputs[0].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        self.no_target_grad(propagate_down)
        if not propagate_down[0]:
            return
        with device(self):
            ti, p = self._picked(inputs)
            gy = dev_grad(outputs[0]).astype(F32, copy=False).reshape(ti.shape)
            val = cp.where(ti < 0, F32(0), -gy / cp.maximum(p, _TINY))
            classes = cp.arange(self.c).reshape(1, self.c, 1)
            g = cp.where(classes == cp.maximum(ti, 0), val, F32(0))
            x = inputs[0]
            store(dev_grad_out(x, accum[0]), g.reshape(x.shape), accum[0])


@register('TopNError', 'cuda')
class TopNError(_Labels, C.TopNError):
    def forward(self, inputs, outputs):
        with device(self):
            x3 = self._x3(inputs[0])
            thresh = cp.take_along_axis(x3, self._labels(inputs[1]), 1)
            rank = (x3 >= thresh).sum(axis=1, keepdims=True)   # the label's place, ties counted
            dev_data_out(outputs[0])[...] = (rank > self.args['n']).reshape(outputs[0].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            _zero_grads(inputs, propagate_down, accum)


@register('ConfusionMatrix', 'cuda')
class ConfusionMatrix(_Labels, C.ConfusionMatrix):
    def forward(self, inputs, outputs):
        with device(self):
            pred = self._x3(inputs[0]).argmax(axis=1).reshape(-1)
            label = self._labels(inputs[1]).reshape(-1)
            cell = contiguous(label * self.c + pred, np.int64)
            # counted by a kernel: cp.bincount reads the largest index back to size
            # its output
            counts = cp.zeros(self.c * self.c, np.int32)
            launch(FILE, 'nncy_count', cell.size, (np.int64(cell.size), cell, counts))
            dev_data_out(outputs[0])[...] = counts.reshape(self.c, self.c)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            _zero_grads(inputs, propagate_down, accum)


@register('KLMultinomial', 'cuda')
class KLMultinomial(C.KLMultinomial):
    def _logs(self, inputs):
        p, q = (dev_data(v).astype(F32, copy=False) for v in inputs)
        return p, q, cp.log(p + F32(1e-8)) - cp.log(q + F32(1e-8))

    def forward(self, inputs, outputs):
        with device(self):
            p, _, d = self._logs(inputs)
            kl = (p * d).sum(axis=self.axes)
            dev_data_out(outputs[0])[...] = kl.reshape(outputs[0].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            p, q, d = self._logs(inputs)
            y = outputs[0]
            gy = dev_grad(y).astype(F32, copy=False).reshape(y.shape[:-1] + (1,) * len(self.axes))
            if propagate_down[0]:
                store(dev_grad_out(inputs[0], accum[0]), gy * (d + F32(1)), accum[0])
            if propagate_down[1]:
                store(dev_grad_out(inputs[1], accum[1]), -gy * p / q, accum[1])


# ---------------------------------------------------------------------------
# Pruning and quantization.

@register('Prune', 'cuda')
class Prune(C.Prune):
    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0]).astype(F32, copy=False)
            if x.size == 0:
                return
            a = cp.abs(x)
            k = int((a.size - 1) * self.args['rate'])
            thresh = cp.partition(a.reshape(-1), k)[k]   # stays on the device
            dev_data_out(outputs[0])[...] = cp.where(a < thresh, F32(0), x)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:   # straight through
            with device(self):
                store(dev_grad_out(inputs[0], accum[0]), dev_grad(outputs[0]), accum[0])


@register('MinMaxQuantize', 'cuda')
class MinMaxQuantize(C.MinMaxQuantize):
    """As on the CPU, the range and the rounding are computed in float64, so that
    values halfway between two levels round the same way."""

    def _range(self, inputs, update):
        a = self.args
        qr_min, qr_max = inputs[1], inputs[2]

        def f64(v):
            return dev_data(v).astype(np.float64)

        if update and a['x_min_max']:
            x = dev_data(inputs[0])
            shape = qr_min.shape
            lead = x.ndim - len(shape)
            axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
            lo, hi = x, x
            if axes:
                lo = x.min(axis=axes, keepdims=True)
                hi = x.max(axis=axes, keepdims=True)
            lo, hi = (v.reshape(shape).astype(np.float64) for v in (lo, hi))
            if a['ema']:
                d = a['decay']
                lo = d * f64(qr_min) + (1 - d) * lo
                hi = d * f64(qr_max) + (1 - d) * hi
            dev_data_out(qr_min)[...] = lo
            dev_data_out(qr_max)[...] = hi
        m, big = f64(qr_min), f64(qr_max)
        if update:   # widen the range to eps (unchanged elements are stored as they were)
            big = cp.where(big - m < a['eps'], m + a['eps'], big)
            dev_data_out(qr_max)[...] = big
        lq, hq = f64(inputs[3]), f64(inputs[4])
        scale = (big - m) / (hq - lq)
        zp = cp.clip(cp.floor(lq - m / scale + 0.5), lq, hq)
        return (lq - zp) * scale, (hq - zp) * scale, scale

    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0])
            y = dev_data_out(outputs[0])
            m, big, scale = self._range(inputs, True)
            if not self.args['quantize']:
                y[...] = x
                return
            c = cp.clip(x.astype(np.float64), m, big)
            y[...] = cp.floor((c - m) / scale + 0.5) * scale + m

    def backward(self, inputs, outputs, propagate_down, accum):
        a = self.args
        with device(self):
            gy = dev_grad(outputs[0]).astype(F32, copy=False)
            x = dev_data(inputs[0]).astype(np.float64)
            m, big, _ = self._range(inputs, False)
            if propagate_down[0]:
                g = gy * ((x >= m) & (x <= big)) if a['ste_fine_grained'] and a['quantize'] \
                    else gy
                store(dev_grad_out(inputs[0], accum[0]), g, accum[0])
            learn = not a['x_min_max'] and not a['ema']
            for i, mask in ((1, x < m), (2, x > big)):
                if not propagate_down[i]:
                    continue
                if learn:
                    store(dev_grad_out(inputs[i], accum[i]), sum_to(gy * mask, inputs[i].shape),
                          accum[i])
                elif not accum[i]:
                    dev_grad_out(inputs[i], False).fill(0)
            _zero_grads(inputs[3:], propagate_down[3:], accum[3:])


# ---------------------------------------------------------------------------
# Affine layers over binarized or INQ weights.

class _AffineOver:
    """x (m, k) @ effective weight (k, n) [+ bias]; ``has_bias``, ``k`` and ``n``
    come from the CPU class's setup, the bias is the last input."""

    def _affine(self, inputs, outputs, w):
        y = dev_data_out(outputs[0]).reshape(-1, self.n)
        x = contiguous(dev_data(inputs[0]), F32).reshape(-1, self.k)
        r = x @ w
        if self.has_bias:
            r += dev_data(inputs[-1]).astype(F32, copy=False).reshape(1, self.n)
        y[...] = r

    def _affine_grads(self, inputs, outputs, propagate_down, accum, w, w_mask=None):
        """Gradients of x (through w), the weight (input 1, times w_mask) and the bias."""
        gy = contiguous(dev_grad(outputs[0]), F32).reshape(-1, self.n)
        x = inputs[0]
        if propagate_down[0]:
            store(dev_grad_out(x, accum[0]), (gy @ w.T).reshape(x.shape), accum[0])
        if propagate_down[1]:
            xd = contiguous(dev_data(x), F32).reshape(-1, self.k)
            g = xd.T @ gy
            if w_mask is not None:
                g = g * w_mask
            wv = inputs[1]
            store(dev_grad_out(wv, accum[1]), g.reshape(wv.shape), accum[1])
        if self.has_bias and propagate_down[-1]:
            b = inputs[-1]
            store(dev_grad_out(b, accum[-1]), gy.sum(axis=0).reshape(b.shape), accum[-1])


class _BinaryAffine(_AffineOver):
    def forward(self, inputs, outputs):
        with device(self):
            w = dev_data(inputs[1]).astype(F32, copy=False).reshape(self.k, self.n)
            bw = cp.where(w > 0, F32(1), cp.where(w < 0, F32(-1),
                                                  F32(self.args['quantize_zero_to'])))
            dev_data_out(inputs[2])[...] = bw.reshape(inputs[2].shape)
            if self.scaled:
                scale = cp.abs(w).mean(axis=0)
                dev_data_out(inputs[3])[...] = scale.reshape(inputs[3].shape)
                bw = bw * scale.reshape(1, self.n)
            self._affine(inputs, outputs, bw)

    def backward(self, inputs, outputs, propagate_down, accum):
        # binary_weight and alpha (inputs 2, 3) receive no gradient
        with device(self):
            bw = dev_data(inputs[2]).astype(F32, copy=False).reshape(self.k, self.n)
            if self.scaled:       # the effective weight is alpha * binary_weight
                bw = bw * dev_data(inputs[3]).astype(F32, copy=False).reshape(1, self.n)
            self._affine_grads(inputs, outputs, propagate_down, accum, bw)


@register('BinaryConnectAffine', 'cuda')
class BinaryConnectAffine(_BinaryAffine, C.BinaryConnectAffine):
    pass


@register('BinaryWeightAffine', 'cuda')
class BinaryWeightAffine(_BinaryAffine, C.BinaryWeightAffine):
    pass


@register('INQAffine', 'cuda')
class INQAffine(_AffineOver, C.INQAffine):
    """The schedule of the CPU class on device arrays.  Random selection draws
    one number per weight from the node's host generator (the CPU class draws
    one per learnable weight): the first selection picks the same weights as
    on the CPU, later ones continue the stream at a different place."""

    def _fix_more(self, w, fixed):
        """The indicator after the selections due at this count (a new array)."""
        n = w.size
        for it in self.its:
            if it != self.count or n == 0:
                continue
            free = ~fixed
            if it == self.its[-1]:
                fixed = cp.ones(n, bool)
                continue
            if self.args['selection_algorithm'] == 'largest_abs':
                # place of each weight by falling magnitude, learnable ones first,
                # ties by index; the first max(free // 2, 1) places get fixed
                key = cp.where(free, -cp.abs(w).astype(np.float64), np.inf)
                order = cp.lexsort(cp.stack([cp.arange(n, dtype=np.float64), key]))
                place = cp.empty(n, np.int64)
                place[order] = cp.arange(n, dtype=np.int64)
                nfree = free.sum()
                m = cp.maximum(nfree // 2, 1) * (nfree > 0)
                fixed = fixed | (free & (place < m))
            else:
                # the r-th learnable weight takes the r-th draw
                u = cp.asarray(self.rng.rand(n))
                rank = cp.maximum(cp.cumsum(free.astype(np.int64)) - 1, 0)
                fixed = fixed | (free & (u[rank] < 0.5))
        return fixed

    def _weight(self, inputs):
        """One forward pass of the schedule (see _INQWeights.weight): the weights
        as a (k, n) device array, written back with the indicator."""
        wv, iv = inputs[1], inputs[2]
        w = contiguous(dev_data(wv), F32).reshape(-1)
        if self.old is not None:    # weights fixed by an earlier pass keep their values
            w = cp.where(self.old[1], self.old[0], w)
        fixed = contiguous(dev_data(iv).reshape(-1) != 0, bool)
        fixed = contiguous(self._fix_more(w, fixed), bool)
        self.count += 1
        q = cp.empty_like(w)
        if w.size:
            amax = cp.abs(w).max().astype(F32).reshape(1)
            launch(FILE, 'nncy_inq_quantize', w.size,
                   (np.int64(w.size), w, fixed, amax, np.int32(self.args['num_bits']), q))
        self.old = (q, fixed)
        dev_data_out(wv)[...] = q.reshape(wv.shape)
        dev_data_out(iv)[...] = fixed.reshape(iv.shape)
        return q.reshape(self.k, self.n)

    def forward(self, inputs, outputs):
        with device(self):
            self._affine(inputs, outputs, self._weight(inputs))

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            w = contiguous(dev_data(inputs[1]), F32).reshape(self.k, self.n)
            free = dev_data(inputs[2]).reshape(self.k, self.n) == 0
            self._affine_grads(inputs, outputs, propagate_down, accum, w, free)
            _zero_grads(inputs[2:3], propagate_down[2:3], accum[2:3])


# ---------------------------------------------------------------------------
# Virtual adversarial noise.

@register('VATNoise', 'cuda')
class VATNoise(C.VATNoise):
    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0]).astype(F32, copy=False)
            norm = cp.sqrt((x * x).sum(axis=self.axes, keepdims=True) + F32(self.C))
            dev_data_out(outputs[0])[...] = F32(self.args['eps']) * x / norm

    def backward(self, inputs, outputs, propagate_down, accum):
        x, w = inputs
        with device(self):
            gy = dev_grad(outputs[0]).astype(F32, copy=False)
            dev_data_out(w)[...] = (F32(self.args['eps']) * gy).reshape(w.shape)
            _zero_grads([x], propagate_down[:1], accum[:1])


# ---------------------------------------------------------------------------
# Non-maximum suppression (forward only; the CPU class's backward refuses).

@register('NmsDetection2d', 'cuda')
class NmsDetection2d(C.NmsDetection2d):
    @staticmethod
    def _greedy_keep(x, prob, nms):
        """(B, N, C) 1 for the boxes that greedy suppression keeps per class."""
        b, n, nc = prob.shape
        p = b * nc
        keep = cp.zeros(prob.shape, F32)
        if p * n == 0:
            return keep
        # the boxes of each problem (b, c) by falling score, ties by index: one
        # sort by (problem, -score, index)
        flat = cp.arange(p * n, dtype=np.int64)
        keys = cp.stack([(flat % n).astype(np.float64), -prob.transpose(0, 2, 1).reshape(-1),
                         (flat // n).astype(np.float64)])
        order = contiguous(cp.lexsort(keys) % n, np.int64)
        sup = cp.zeros(p * n, np.int32)
        function(FILE, 'nncy_nms_greedy')(
            (blocks(p, 1),), (256,),   # one block per problem
            (np.int64(p), np.int64(n), np.int64(nc), np.int64(x.shape[2]), prob, order, x,
             nms, sup, keep))
        return keep

    def forward(self, inputs, outputs):
        with device(self):
            x = contiguous(dev_data(inputs[0]), F32)
            b, n, d = x.shape
            thresh = self.args['thresh']
            nms = np.float64(self.args['nms'])
            x4 = x[..., 4].astype(np.float64)
            obj = cp.where(x4 < thresh, 0.0, x4)
            prob = obj[..., None] * x[..., 5:].astype(np.float64)
            prob = contiguous(cp.where(prob < thresh, 0.0, prob), np.float64)   # (B, N, C)
            if self.args['nms_per_class']:
                prob = prob * self._greedy_keep(x, prob, nms)
            else:
                obj = contiguous(obj, np.float64)
                keep = cp.empty((b, n), F32)
                launch(FILE, 'nncy_nms_by_objectness', b * n,
                       (np.int64(b), np.int64(n), np.int64(d), obj, x, nms, keep))
                obj = obj * keep
                prob = prob * keep[..., None]
            y = dev_data_out(outputs[0])
            y[..., :4] = x[..., :4]
            y[..., 4] = obj
            y[..., 5:] = prob


# ---------------------------------------------------------------------------
# Fourier transforms (cuFFT).  The host stand-in of the tests returns
# complex128 host arrays: results are moved and cast explicitly.

def _fft(name, a, **kw):
    return cp.asarray(getattr(cp.fft, name)(a, **kw))


def _complex(re, im):
    """re + i im as complex64."""
    c = re.astype(C64)
    c += C64(1j) * im.astype(F32, copy=False)
    return c


class _FFT:
    def _transform(self, a, inverse, norm):
        """(..., 2) -> (..., 2) float32: the transform of (real, imaginary) pairs."""
        fn = 'ifftn' if inverse else 'fftn'
        z = _fft(fn, _complex(a[..., 0], a[..., 1]), axes=self.axes, norm=norm)
        return cp.stack([z.real, z.imag], axis=-1).astype(F32)

    def forward(self, inputs, outputs):
        with device(self):
            norm = 'ortho' if self.args['normalized'] else 'backward'
            y = self._transform(dev_data(inputs[0]), self.inverse, norm)
            dev_data_out(outputs[0])[...] = y

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            # the adjoint: the other direction with the forward's scale
            norm = 'ortho' if self.args['normalized'] else 'forward'
            g = self._transform(dev_grad(outputs[0]), not self.inverse, norm)
            store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('FFT', 'cuda')
class FFT(_FFT, C.FFT):
    pass


@register('IFFT', 'cuda')
class IFFT(_FFT, C.IFFT):
    pass


def _gather(sig, idx):
    """sig (B, L) at positions idx (T, N), position L reading 0: (B, T, N)."""
    pad = cp.concatenate([sig.astype(F32, copy=False), cp.zeros((sig.shape[0], 1), F32)], axis=1)
    return pad[:, idx]


def _overlap_add(frames, idx, length):
    """(B, length): the sum of frames (B, T, N) at positions idx (T, N); other
    positions are dropped."""
    frames = contiguous(frames, F32)
    out = cp.zeros((frames.shape[0], length), F32)
    launch(FILE, 'nncy_overlap_add', frames.size,
           (np.int64(frames.size), frames, idx, np.int64(idx.size), np.int64(length), out))
    return out


def _positions(impl, where, length):
    """where (T, N) as a device array, positions outside [0, length) -> length."""
    def make():
        w = np.where((where >= 0) & (where < length), where, length)
        return cp.asarray(np.ascontiguousarray(w, np.int64))
    return _uploaded(impl, 'idx', make)


def _window(impl, win):
    return _uploaded(impl, 'win', lambda: cp.asarray(np.asarray(win, F32)))


@register('STFT', 'cuda')
class STFT(C.STFT):
    def forward(self, inputs, outputs):
        with device(self):
            idx = _positions(self, self.idx, self.L)
            frames = _gather(dev_data(inputs[0]), idx) * _window(self, self.win)
            z = _fft('rfft', frames, axis=-1)                   # (B, T, K)
            for out, part in zip(outputs, (z.real, z.imag)):
                dev_data_out(out)[...] = part.astype(F32).transpose(0, 2, 1)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            n = self.args['fft_size']
            gr, gi = (dev_grad(o).astype(F32, copy=False).transpose(0, 2, 1) for o in outputs)
            # frame m = sum over k < K of gr cos(2 pi k m / n) - gi sin(...): the real
            # part of the length-n DFT of conj(gr + i gi), zero-padded
            gf = _fft('fft', _complex(gr, -gi), n=n, axis=-1).real.astype(F32)
            gf = gf * _window(self, self.win)
            idx = _positions(self, self.idx, self.L)
            g = _overlap_add(gf, idx, self.L)
            store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('ISTFT', 'cuda')
class ISTFT(C.ISTFT):
    def _length(self):
        return self.total - 2 * self.cut

    def forward(self, inputs, outputs):
        with device(self):
            n = self.args['fft_size']
            yr, yi = (dev_data(v).astype(F32).transpose(0, 2, 1) for v in inputs)
            yi[..., 0] = 0                 # the imaginary parts of DC and Nyquist are
            if n % 2 == 0:                 # ignored, as by the CPU class
                yi[..., -1] = 0
            frames = _fft('irfft', _complex(yr, yi), n=n, axis=-1).astype(F32)
            frames = frames * _window(self, self.win)
            idx = _positions(self, self.pos - self.cut, self._length())
            dev_data_out(outputs[0])[...] = _overlap_add(frames, idx, self._length())

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            idx = _positions(self, self.pos - self.cut, self._length())
            gf = _gather(dev_grad(outputs[0]), idx) * _window(self, self.win)
            r = _fft('rfft', gf, axis=-1)                       # (B, T, K)
            # irfft's weights (1 / n at DC and Nyquist, 2 / n between): the first
            # column of the CPU class's cosine matrix
            wk = _uploaded(self, 'wk', lambda: cp.asarray(self.C[:, 0].astype(F32)))
            for i, part in enumerate((r.real, r.imag)):
                if propagate_down[i]:
                    v = inputs[i]
                    g = (part.astype(F32) * wk).transpose(0, 2, 1)
                    store(dev_grad_out(v, accum[i]), g, accum[i])
