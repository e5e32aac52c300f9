"""nncy.monitor (NNabla's file formats) and nncy.utils.learning_rate_scheduler."""
import logging
import math
import os
import struct
import zlib

import numpy as np
import pytest

import nncy as nn
from nncy import monitor as M
from nncy.utils import learning_rate_scheduler as L


def read_png(path):
    """A minimal decoder for the PNGs write_png makes (8-bit, filter 0)."""
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    pos, chunks = 8, {}
    while pos < len(data):
        n, tag = struct.unpack('>I4s', data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + payload) & 0xffffffff
        chunks[tag] = chunks.get(tag, b'') + payload
        pos += 12 + n
    w, h, depth, color = struct.unpack('>IIBB', chunks[b'IHDR'][:10])
    assert depth == 8 and b'IEND' in chunks
    c = {0: 1, 2: 3}[color]
    raw = np.frombuffer(zlib.decompress(chunks[b'IDAT']), np.uint8).reshape(h, 1 + w * c)
    assert np.all(raw[:, 0] == 0)
    img = raw[:, 1:].reshape(h, w, c)
    return img[..., 0] if c == 1 else img


def test_series_file(tmp_path, caplog):
    mon = M.Monitor(str(tmp_path / 'mon'))
    s = M.MonitorSeries('train loss', mon, interval=2)
    with caplog.at_level(logging.INFO, logger='nncy'):
        for i in range(6):
            s.add(i, float(i) * 2)
    lines = open(str(tmp_path / 'mon' / 'train-loss.series.txt')).read().splitlines()
    # flushed at 1 (mean of 0, 2), 3 (4, 6), 5 (8, 10)
    assert lines == ['1 1', '3 5', '5 9']
    assert 'iter=3 {train loss}=5.0' in caplog.text
    q = M.MonitorSeries('quiet', mon, verbose=False)
    q.add(0, 1e-7)
    q.add(1, 123456789.0)
    assert open(str(tmp_path / 'mon' / 'quiet.series.txt')).read() == '0 1e-07\n1 1.23457e+08\n'
    M.MonitorSeries('no file').add(0, 1.0)  # without a Monitor: log only


def test_timer_file(tmp_path):
    mon = M.Monitor(str(tmp_path))
    t = M.MonitorTimeElapsed('epoch time', mon, interval=3, verbose=False)
    for i in range(7):
        t.add(i)
    lines = [l.split() for l in open(str(tmp_path / 'epoch-time.timer.txt')).read().splitlines()]
    assert [l[0] for l in lines] == ['2', '5'] and [l[2] for l in lines] == ['3', '3']
    assert all(float(l[1]) >= 0 and float(l[3]) >= float(l[1]) for l in lines)


def test_image_files(tmp_path):
    mon = M.Monitor(str(tmp_path))
    mi = M.MonitorImage('fake images', mon, interval=2, num_images=2, verbose=False)
    x = np.random.RandomState(0).rand(5, 3, 4, 6).astype(np.float32)
    for i in range(4):
        mi.add(i, nn.Variable.from_numpy_array(x))
    d = tmp_path / 'fake-images'
    assert sorted(os.listdir(str(d))) == ['000000-000.png', '000000-001.png',
                                         '000001-000.png', '000001-001.png',
                                         '000003-000.png', '000003-001.png']
    img = read_png(str(d / '000001-001.png'))
    norm = (x[:2] - x[:2].min()) / (x[:2].max() - x[:2].min())
    assert img.shape == (4, 6, 3)
    np.testing.assert_array_equal(img, (norm[1].transpose(1, 2, 0) * 255).astype(np.uint8))
    # one channel -> grey; two channels -> a third channel of ones
    g = M.MonitorImage('grey', mon, interval=1, num_images=1, verbose=False)
    g.add(0, np.linspace(0, 1, 12).reshape(1, 1, 3, 4))
    assert read_png(str(tmp_path / 'grey' / '000000-000.png')).shape == (3, 4)
    two = M.MonitorImage('two', mon, interval=1, num_images=1, verbose=False,
                         normalize_method=lambda a: a)
    two.add(0, np.zeros((1, 2, 2, 2)))
    rgb = read_png(str(tmp_path / 'two' / '000000-000.png'))
    assert rgb.shape == (2, 2, 3) and np.all(rgb[..., 2] == 255) and np.all(rgb[..., :2] == 0)
    with pytest.raises(ValueError, match='images must be'):
        g.add(0, np.zeros((3, 4)))


def test_image_tile(tmp_path):
    mon = M.Monitor(str(tmp_path))
    mt = M.MonitorImageTile('tiles', mon, interval=10, num_images=4, verbose=False)
    mt.add(0, np.ones((5, 1, 3, 3)))
    img = read_png(str(tmp_path / 'tiles' / '000000.png'))
    assert img.shape == (8, 8)  # 2 x 2 tiles of (3 + 1 pad)
    assert img[0, 0] == 0  # a constant batch normalizes to zeros
    t = M.tile_images(np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2), padsize=0)
    assert t.shape == (4, 4, 3)
    np.testing.assert_array_equal(t[:2, 2:, 0], [[12, 13], [14, 15]])


def test_write_png_checks(tmp_path):
    with pytest.raises(ValueError, match='image'):
        M.write_png(str(tmp_path / 'x.png'), np.zeros((2, 2, 4)))
    M.write_png(str(tmp_path / 'u8.png'), np.array([[0, 128, 255]], np.uint8))
    np.testing.assert_array_equal(read_png(str(tmp_path / 'u8.png')), [[0, 128, 255]])


def test_schedulers():
    p = L.PolynomialScheduler(0.1, 100, 2.0)
    assert p.get_learning_rate(0) == 0.1 and p.get_learning_rate(50) == pytest.approx(0.025)
    c = L.CosineScheduler(0.1, 100)
    assert c.get_learning_rate(0) == pytest.approx(0.1)
    assert c.get_learning_rate(50) == pytest.approx(0.05) and c.get_learning_rate(100) == pytest.approx(0)
    e = L.ExponentialScheduler(0.1, 0.5, iter_interval=10)
    assert [e.get_learning_rate(i) for i in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    assert L.ExponentialScheduler(1.0, 0.9).get_learning_rate(2) == pytest.approx(0.81)
    s = L.StepScheduler(0.1, 0.1, [10, 20])
    assert [s.get_learning_rate(i) for i in (0, 9, 10, 19, 20, 100)] == \
        [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1, 0.1 * 0.1 * 0.1]
    w = L.LinearWarmupScheduler(L.StepScheduler(1.0, 0.5, [6]), 4)
    assert [w.get_learning_rate(i) for i in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5, 0.5]
    for cls in (L.PolynomialScheduler, L.CosineScheduler, L.ExponentialScheduler,
                L.StepScheduler, L.LinearWarmupScheduler):
        assert issubclass(cls, L.BaseLearningRateScheduler)
    with pytest.raises(NotImplementedError):
        L.BaseLearningRateScheduler().get_learning_rate(0)
    assert math.isclose(L.CosineScheduler(2.0, 4).get_learning_rate(1), 2.0 * (math.cos(math.pi / 4) + 1) / 2)
