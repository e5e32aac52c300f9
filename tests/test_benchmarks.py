"""The training-step benchmark runs (PyTorch is compared when installed)."""
import numpy as np


def test_train_step_benchmark_runs(capsys):
    from benchmarks import bench_train, train_step
    train_step.main(['--repeat', '3', '--batch', '8'])
    out = capsys.readouterr().out
    assert 'LeNet training step' in out and 'nncy' in out
    b = bench_train.TimeTrainStep()
    b.setup('nncy')
    b.time_step('nncy')


def test_train_step_learns_its_batch():
    from benchmarks import train_step
    step = train_step.nncy_step(*train_step.data(16))
    first = float(step().d)
    for _ in range(30):
        last = float(step().d)
    assert np.isfinite(first) and last < 0.5 * first


def test_peakmem_benchmarks_run():
    from benchmarks.bench_memory import PeakmemTrainStep
    for model in PeakmemTrainStep.params[0]:
        b = PeakmemTrainStep()
        b.setup(model, 'Adam')
        b.peakmem_step(model, 'Adam')


def test_ratio_table_has_every_target(monkeypatch):
    """The targets table names every figure it promises, from one quick run."""
    from benchmarks import compare, infer_latency, overhead, train_step
    monkeypatch.setattr(overhead, 'measure', lambda **k: {'nncy auto_forward F.relu': 1.0})
    monkeypatch.setattr(train_step, 'compare', lambda **k: {'nncy': 1.0, 'torch': 2.0})
    monkeypatch.setattr(infer_latency, 'compare', lambda *a, **k: {'ratio': 0.5})
    rows = [(name, 1.0, 2.0, 4.0) for name in
            ('affine 512x512', 'relu 1M', 'exp 1M', 'sigmoid 1M', 'add2 1M', 'sum 1M',
             'conv3x3 fwd (8, 64, 28, 28)', 'conv3x3 fwd+bwd')]
    got = {label: v for label, v, _ in compare.targets(rows, quick=True)}
    assert got['affine 2048 / NumPy'] == 0.5 and got['affine 2048 / PyTorch'] == 0.25
    assert got['LeNet training step / PyTorch'] == 0.5
    assert got['LeNet batch-1 inference / onnxruntime'] == 0.5
    assert got['dispatch, auto_forward relu (us)'] == 1.0
    assert len(got) == len(compare.KERNEL_TARGETS) + 3
