"""Training monitors (NNabla's ``nnabla.monitor``), writing the same files.

``Monitor(path)`` names the output folder; the monitors write into it:

* :class:`MonitorSeries` -> ``<name>.series.txt``, lines ``"<index> <value>"``
  (the mean of the values added since the last line, every ``interval``);
* :class:`MonitorTimeElapsed` -> ``<name>.timer.txt``, lines
  ``"<index> <seconds since last line> <iterations since last line> <seconds in total>"``;
* :class:`MonitorImage` -> ``<name>/<index:06d>-<k:03d>.png``, one PNG per image;
* :class:`MonitorImageTile` -> ``<name>/<index:06d>.png``, the images tiled in one.

Spaces in names become ``-`` in file names.  With ``verbose`` the values are
also logged (logger ``nncy``, level INFO).  PNGs are written by a small
built-in encoder (8-bit grey or RGB), so no imaging library is needed.
"""
import logging
import os
import struct
import time
import zlib

import numpy as np

__all__ = ['Monitor', 'MonitorSeries', 'MonitorTimeElapsed', 'MonitorImage', 'MonitorImageTile',
           'tile_images', 'plot_series', 'plot_time_elapsed', 'write_png']


def _logger():
    log = logging.getLogger('nncy')
    if not log.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter('%(asctime)s [nncy][%(levelname)s]: %(message)s'))
        log.addHandler(h)
        log.setLevel(logging.INFO)
    return log


def _file_name(name):
    return name.replace(' ', '-')


class Monitor:
    """The folder that the monitors write into (created if absent).

    Args:
        save_path (str): the folder.
    """

    def __init__(self, save_path):
        self._save_path = save_path
        os.makedirs(save_path, exist_ok=True)

    @property
    def save_path(self):
        return self._save_path


class MonitorSeries:
    """Logs a series of values, averaged over ``interval`` indices.

    ``add(index, value)`` collects values; when ``index`` is at least
    ``interval`` past the last written index, their mean is written.

    Args:
        name (str): name of the series (and of its file).
        monitor (Monitor): where to write ``<name>.series.txt`` (None: log only).
        interval (int): indices between written lines.
        verbose (bool): also log each line.
    """

    def __init__(self, name, monitor=None, interval=1, verbose=True):
        self.name = name
        self.interval = interval
        self.verbose = verbose
        self.sp = None
        if monitor is not None:
            self.sp = os.path.join(monitor.save_path, _file_name(name)) + '.series.txt'
            open(self.sp, 'w').close()
        self.flush_at = -1
        self.buf = []

    def add(self, index, value):
        """Add ``value`` at ``index``."""
        self.buf.append(value)
        if index - self.flush_at < self.interval:
            return
        value = np.mean(self.buf)
        if self.verbose:
            _logger().info('iter={} {{{}}}={}'.format(index, self.name, value))
        if self.sp is not None:
            with open(self.sp, 'a') as f:
                f.write('{} {:g}\n'.format(index, value))
        self.flush_at = index
        self.buf = []


class MonitorTimeElapsed:
    """Logs the time between lines, every ``interval`` indices.

    Args:
        name (str): name of the timer (and of its file).
        monitor (Monitor): where to write ``<name>.timer.txt`` (None: log only).
        interval (int): indices between written lines.
        verbose (bool): also log each line.
    """

    def __init__(self, name, monitor=None, interval=100, verbose=True):
        self.name = name
        self.interval = interval
        self.verbose = verbose
        self.sp = None
        if monitor is not None:
            self.sp = os.path.join(monitor.save_path, _file_name(name)) + '.timer.txt'
            open(self.sp, 'w').close()
        self.flush_at = -1
        self.start = time.time()
        self.lap = self.start

    def add(self, index):
        """Mark ``index``: writes a line when ``interval`` indices have passed."""
        if index - self.flush_at < self.interval:
            return
        now = time.time()
        elapsed, total = now - self.lap, now - self.start
        its = index - self.flush_at
        self.lap = now
        if self.verbose:
            _logger().info('iter={} {{{}}}={}[sec/{}iter] {}[sec]'.format(
                index, self.name, elapsed, its, total))
        if self.sp is not None:
            with open(self.sp, 'a') as f:
                f.write('{} {} {} {}\n'.format(index, elapsed, its, total))
        self.flush_at = index


def _as_numpy(var):
    from nncy._core import NdArray, Variable
    if isinstance(var, Variable):
        return np.array(var.d)
    if isinstance(var, NdArray):
        return np.array(var.data)
    return np.array(var)


class MonitorImage:
    """Saves images: ``add(index, x)`` with ``x`` of shape ``(N, ..., C, H, W)``
    writes the first ``num_images`` of them as PNGs, at index 0 and then
    whenever ``index + 1`` is a multiple of ``interval``.  Values are mapped
    to [0, 1] by ``normalize_method`` (default: min-max over the batch); a
    2-channel image gets a third channel of ones, channels past 3 are dropped.

    Args:
        name (str): name of the image series (and of its folder).
        monitor (Monitor): where to make the folder ``<name>``.
        interval (int): see above.
        verbose (bool): log each save.
        num_images (int): images saved per call.
        normalize_method (callable): maps an NCHW batch into [0, 1].
    """

    def __init__(self, name, monitor, interval=1000, verbose=True, num_images=16,
                 normalize_method=None):
        self.name = name
        self.interval = interval
        self.verbose = verbose
        self.num_images = num_images
        self.normalize_method = normalize_method or self.default_normalize_method
        self.save_dir = os.path.join(monitor.save_path, _file_name(name))
        os.makedirs(self.save_dir, exist_ok=True)

    @staticmethod
    def default_normalize_method(x):
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)

    def _batch(self, index, var):
        if index != 0 and (index + 1) % self.interval != 0:
            return None
        data = _as_numpy(var)
        if data.ndim < 3:
            raise ValueError('%s.add: images must be (N, ..., C, H, W), got shape %s'
                             % (type(self).__name__, data.shape))
        channels = data.shape[-3]
        data = data.reshape((-1,) + data.shape[-3:])[:self.num_images]
        data = self.normalize_method(data)
        if channels > 3:
            data = data[:, :3]
        elif channels == 2:
            data = np.concatenate([data, np.ones((data.shape[0], 1) + data.shape[-2:])], axis=1)
        return data

    def add(self, index, var):
        """Save images of ``var`` (Variable, NdArray or NumPy array) at ``index``."""
        data = self._batch(index, var)
        if data is None:
            return
        tmpl = os.path.join(self.save_dir, '{:06d}-{}.png')
        for j in range(data.shape[0]):
            img = data[j].transpose(1, 2, 0)
            write_png(tmpl.format(index, '{:03d}'.format(j)), img[..., 0] if img.shape[-1] == 1 else img)
        if self.verbose:
            _logger().info('iter={} {{{}}} are written to {}.'.format(
                index, self.name, tmpl.format(index, '*')))


class MonitorImageTile(MonitorImage):
    """Like :class:`MonitorImage`, but the ``num_images`` images are tiled
    into one PNG ``<name>/<index:06d>.png``."""

    def add(self, index, var):
        data = self._batch(index, var)
        if data is None:
            return
        path = os.path.join(self.save_dir, '{:06d}.png'.format(index))
        write_png(path, tile_images(data))
        if self.verbose:
            _logger().info('iter={} {{{}}} is written to {}.'.format(index, self.name, path))


def tile_images(data, padsize=1, padval=0):
    """Tile a ``(B, C, H, W)`` batch into one ``(H', W'[, C])`` image: a square
    grid of ``ceil(sqrt(B))`` tiles, each padded by ``padsize`` on the bottom
    and the right with ``padval``."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError('tile_images: expected a (B, C, H, W) array, got shape %s' % (data.shape,))
    data = data.transpose(0, 2, 3, 1)
    n = int(np.ceil(np.sqrt(data.shape[0])))
    pad = ((0, n * n - data.shape[0]), (0, padsize), (0, padsize), (0, 0))
    data = np.pad(data, pad, mode='constant', constant_values=padval)
    h, w, c = data.shape[1:]
    data = data.reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4).reshape(n * h, n * w, c)
    return data[..., 0] if c == 1 else data


def _to_uint8(img):
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        img = np.nan_to_num(img) * 255.0
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path, img):
    """Write ``img`` as an 8-bit PNG: ``(H, W)`` grey or ``(H, W, 3)`` RGB;
    float images are taken in [0, 1], integer images in [0, 255]."""
    img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError('write_png: expected an (H, W) or (H, W, 3) image, got shape %s'
                         % (img.shape,))
    h, w = img.shape[:2]
    rows = np.ascontiguousarray(img).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row

    def chunk(tag, payload):
        return (struct.pack('>I', len(payload)) + tag + payload
                + struct.pack('>I', zlib.crc32(tag + payload) & 0xffffffff))

    png = (b'\x89PNG\r\n\x1a\n'
           + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, color, 0, 0, 0))
           + chunk(b'IDAT', zlib.compress(raw, 6))
           + chunk(b'IEND', b''))
    with open(path, 'wb') as f:
        f.write(png)


def plot_series(filename, plot_kwargs=None):
    """Plot a ``*.series.txt`` file with matplotlib (which must be installed)."""
    import matplotlib.pyplot as plt
    data = np.loadtxt(filename, ndmin=2)
    plt.plot(data[:, 0], data[:, 1], **(plot_kwargs or {}))


def plot_time_elapsed(filename, elapsed=False, unit='s', plot_kwargs=None):
    """Plot a ``*.timer.txt`` file with matplotlib: the time per interval, or
    the total time with ``elapsed``; ``unit`` is one of ``s``, ``m``, ``h``, ``d``."""
    import matplotlib.pyplot as plt
    scale = {'s': 1.0, 'm': 60.0, 'h': 3600.0, 'd': 86400.0}
    if unit not in scale:
        raise ValueError("plot_time_elapsed: unit must be one of 's', 'm', 'h', 'd', got %r" % (unit,))
    data = np.loadtxt(filename, ndmin=2)
    plt.plot(data[:, 0], data[:, 3 if elapsed else 1] / scale[unit], **(plot_kwargs or {}))
