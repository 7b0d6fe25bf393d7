"""Data-parallel runs under torchrun (two gloo processes on the CPU): same history as one process, signals
and resume across ranks, a dead rank never hangs the others. Each torchrun start costs a few seconds."""
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.run import run
from main import main

# Runs main.main under torchrun; fault = (n, rank, signal) makes that rank send the signal to itself at its
# n-th batch selection (training or evaluation), as tests/test_resume.py does in one process. Each rank then
# says whether its process group outlived main.main: destroyed only at the interpreter's exit, a gloo group
# aborts the process now and then (see ranks.teardown).
WORKER = """
import os, signal, sys, weakref
sys.path.insert(0, {root!r})
import main
from toolkit import ranks
from toolkit import train
import torch.distributed as dist
fault = {fault!r}
calls, original = [0], train.take
def take(x, idx):
    calls[0] += 1
    if fault and calls[0] == fault[0] and os.environ["RANK"] == str(fault[1]):
        os.kill(os.getpid(), fault[2])
    return original(x, idx)
train.take = take
group, setup = [lambda: None], ranks.setup
def remember_group(device):
    setup(device)
    group[0] = weakref.ref(dist.group.WORLD)
ranks.setup = remember_group
code = main.main(sys.argv[1:])
print(f"process group alive after main: {{group[0]() is not None}}", file=sys.stderr)
sys.exit(code)
"""


def tiny(**changes):
    """Fashion-MNIST MLP on 200 generated images; batch 33 leaves a last batch of 2 (split 1 + 1)."""
    sets = {"task": "fashion", "dev_size": 100, "epochs": 2, "batch_size": 33, "hidden_dims": [16], "lr": 0.003,
            "optimizer": "sgd", "device": "cpu", "name": "tiny", "dropout": 0.0, "amp": False, **changes}
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]  # TOML and --set both read JSON scalars


def torchrun(tmp_path, data_dir, out, fault=None, extra=(), timeout=120):
    """(exit code, stderr, seconds) of `torchrun --nproc_per_node=2 main.py run tiny.toml ...`."""
    config = tmp_path / "tiny.toml"
    config.write_text("\n".join(tiny()) + "\n")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(root=str(ROOT), fault=fault))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), "run", str(config), "--data-dir", str(data_dir), "--out", str(out), *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr, time.perf_counter() - start


def losses(metrics):
    return [(h["train_loss"], h["dev_loss"], h["train_acc"], h["dev_acc"]) for h in metrics["history"]]


def assert_close(a, b, tol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=tol)


def test_two_ranks_reproduce_one_process_and_only_rank_0_writes(fashion_dir, tmp_path):
    one = run(load_config(None, tiny()), fashion_dir, tmp_path / "one")
    code, err, _ = torchrun(tmp_path, fashion_dir, tmp_path / "two")
    assert code == 0, err
    assert err.count("process group alive after main: False") == 2, err
    metrics = json.loads((tmp_path / "two" / "tiny" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == "gloo" and one["world_size"] == 1
    assert_close(losses(metrics), losses(one))
    names = lambda folder: sorted(re.sub(r"tfevents\..*", "tfevents", p.name) for p in folder.iterdir())
    assert names(tmp_path / "two" / "tiny") == names(tmp_path / "one" / "tiny")  # no second copy, no temporary left
    # the ranks' shares of the test gathered in order: one process's submission
    assert (tmp_path / "two" / "tiny" / "submission.csv").read_text() == \
        (tmp_path / "one" / "tiny" / "submission.csv").read_text()


def test_two_ranks_train_on_your_own_images_as_one_process_does(tmp_path):
    from conftest import image_competition
    image_competition(tmp_path / "comp", "pixels", n_train=200)
    one = run(load_config(None, tiny(task="images")), tmp_path / "comp", tmp_path / "one")
    code, err, _ = torchrun(tmp_path, tmp_path / "comp", tmp_path / "two", extra=["--set", 'task="images"'])
    assert code == 0, err
    two = json.loads((tmp_path / "two" / "tiny" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["classes"] == ["ant", "bee", "cat"]
    assert_close(losses(two), losses(one))
    assert (tmp_path / "two" / "tiny" / "submission.csv").read_text() == \
        (tmp_path / "one" / "tiny" / "submission.csv").read_text()


def test_a_signal_on_one_rank_stops_both_at_the_same_step_and_resume_continues(fashion_dir, tmp_path):
    one = run(load_config(None, tiny()), fashion_dir, tmp_path / "one")
    code, err, _ = torchrun(tmp_path, fashion_dir, tmp_path / "two", fault=(4, 0, 2))  # SIGINT to rank 0 only
    assert code != 0 and err.count("exitcode  : 130") == 2, err  # rank 1 got no signal, yet stopped too
    assert err.count("process group alive after main: False") == 2, err
    assert "training state saved in" in err and "torchrun --standalone --nproc_per_node=2 main.py" in err
    assert (tmp_path / "two" / "tiny" / "last.pt").is_file()
    shutil.copytree(tmp_path / "two", tmp_path / "two-then-one")
    resumed_alone = run(load_config(None, tiny()), fashion_dir, tmp_path / "two-then-one", folder="resume")
    assert_close(losses(resumed_alone), losses(one))  # a resume may also use another number of ranks
    code, err, _ = torchrun(tmp_path, fashion_dir, tmp_path / "two", extra=["--resume"])
    assert code == 0, err
    assert_close(losses(json.loads((tmp_path / "two" / "tiny" / "metrics.json").read_text())), losses(one))


def test_a_killed_rank_ends_the_other_with_an_error_not_a_hang(fashion_dir, tmp_path):
    code, err, _ = torchrun(tmp_path, fashion_dir, tmp_path / "two", fault=(4, 1, 9), timeout=90)  # a hang times out
    assert code != 0
    assert "Signal 9 (SIGKILL)" in err  # torchrun's report on rank 1
    assert "error: rank 0: lost contact with another rank" in err  # rank 0's own one line


def test_a_bad_config_fails_on_every_rank_with_the_same_line_and_exit_2(fashion_dir, tmp_path):
    code, err, _ = torchrun(tmp_path, fashion_dir, tmp_path / "two", extra=["--set", "lr=-1"])
    assert code != 0 and err.count("exitcode  : 2 ") == 2, err
    assert err.count("error: --set lr=-1: 'lr' = -1.0 is out of range (must be > 0)\n") == 2


def test_an_error_line_is_one_write_so_that_ranks_failing_together_cannot_garble_it(monkeypatch, tmp_path):
    writes = []

    class Stderr:  # records each write as the pipe under torchrun would receive it
        def write(self, text):
            writes.append(text)
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Stderr())
    assert main(["run", str(ROOT / "configs/fashion_mlp.toml"), "--set", "lr=-1", "--out", str(tmp_path)]) == 2
    assert writes == ["error: --set lr=-1: 'lr' = -1.0 is out of range (must be > 0)\n"]


def test_cpu_ranks_score_dev_with_the_batch_norm_statistics_model_pt_keeps(cifar_dir, tmp_path):
    # without SyncBatchNorm each CPU rank's running statistics follow its own slice of the batch; the scores
    # in metrics.json must be those of model.pt (rank 0's), as one process or `main.py predict` reads it
    import torch
    from toolkit.predict import load_checkpoint
    from toolkit.tensors import load_task
    from toolkit.steps import evaluate
    cnn = {"task": "cifar10", "model": "cnn", "widths": [8, 16], "epochs": 1, "optimizer": "nesterov"}
    code, err, _ = torchrun(tmp_path, cifar_dir, tmp_path / "two",
                            extra=[a for k, v in cnn.items() for a in ("--set", f"{k}={json.dumps(v)}")])
    assert code == 0, err
    metrics = json.loads((tmp_path / "two" / "tiny" / "metrics.json").read_text())
    model, checkpoint = load_checkpoint(tmp_path / "two" / "tiny")
    config = checkpoint["config"]
    dev_loss = evaluate(model, *load_task(config, cifar_dir, torch.device("cpu"))["dev"], config)[0]
    assert dev_loss == pytest.approx(metrics["history"][0]["dev_loss"], rel=1e-6)
