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
