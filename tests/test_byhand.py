"""Specification of the by-hand homework: backprop written three ways gives one answer, the scratch MLP
trains beside the toolkit's torch run of the same config, and the SGD learning-rate sweep."""
import csv
import json

import numpy as np
import pytest

from byhand import layers as nn
from byhand.checks import BACKPROP_FORMS, backprop_batch, explore_backprop, mlp_problem
from toolkit.sweeps import explore_sgd_learning_rates
from main import main
from byhand.scratch import explore_scratch

TINY = ["epochs=2", "dev_size=50", "hidden_dims=[16]", "batch_size=32"]


@pytest.fixture(scope="module")
def problem():
    return mlp_problem(np.random.default_rng(0), n=6, d=5, hidden=4, k=3)


@pytest.mark.parametrize("form", ["scalar loops", "per-example vectors"])
def test_scalar_and_per_example_backprop_give_the_batch_form_gradients_and_loss(problem, form):
    loss, grads = BACKPROP_FORMS[form](*problem)
    ref_loss, ref = backprop_batch(*problem)
    assert np.isclose(loss, ref_loss, rtol=1e-12)
    for key in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(grads[key], ref[key], rtol=1e-10, atol=1e-14)


def test_batch_backprop_equals_the_layer_package_on_the_same_weights(problem):
    x, y, W1, b1, W2, b2 = problem
    first, second = nn.Linear(5, 4, np.random.default_rng(), np.float64), nn.Linear(4, 3, np.random.default_rng(),
                                                                                  np.float64)
    first.params, second.params = {"weight": W1, "bias": b1}, {"weight": W2, "bias": b2}
    net, ce = nn.Sequential(first, nn.Sigmoid(), second), nn.SoftmaxCrossEntropy()
    loss = ce.forward(net.forward(x), y)
    net.backward(ce.backward())
    ref_loss, ref = backprop_batch(*problem)
    assert np.isclose(loss, ref_loss)
    for layer, w, b in ((first, "W1", "b1"), (second, "W2", "b2")):
        np.testing.assert_allclose(layer.grads["weight"], ref[w], atol=1e-14)
        np.testing.assert_allclose(layer.grads["bias"], ref[b], atol=1e-14)


def test_backprop_timing_writes_one_row_per_form_with_equal_gradients(tmp_path):
    explore_backprop(tmp_path, n=4, d=6, hidden=3, k=2)
    with open(tmp_path / "backprop" / "backprop.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["form"] for r in table] == list(BACKPROP_FORMS)
    assert all(float(r["seconds_per_batch"]) > 0 and float(r["max_abs_grad_diff_vs_batch"]) < 1e-12 for r in table)


def test_scratch_trains_numpy_and_torch_on_the_same_config_and_writes_a_submission(fashion_dir, tmp_path, capsys):
    assert explore_scratch(fashion_dir, tmp_path, TINY) == 0
    runs = {name: json.loads((tmp_path / "scratch" / name / "metrics.json").read_text()) for name in ("torch", "numpy")}
    for key in ("hidden_dims", "activation", "optimizer", "lr", "momentum", "batch_size", "epochs", "dev_size"):
        assert runs["numpy"]["config"][key] == runs["torch"]["config"][key]
    assert [len(m["history"]) for m in runs.values()] == [2, 2]
    assert runs["numpy"]["best_dev_acc"] > 0.5  # the banded images are easy: far above chance (0.1)
    with open(tmp_path / "scratch" / "numpy" / "submission.csv", newline="") as f:
        submission = list(csv.reader(f))
    assert submission[0] == ["Id", "Category"] and len(submission) == 41
    assert (tmp_path / "scratch" / "dev_acc.png").is_file()
    assert "numpy - torch, best dev accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [("optimizer=adam", "optimizer = 'adam'"),
                                              ("lookahead=true", "lookahead = True"),
                                              ("budget_minutes=1", "budget_minutes = 1.0")])
def test_scratch_refuses_a_setting_the_numpy_layers_do_not_have(fashion_dir, tmp_path, capsys, setting, message):
    code = main(["explore", "scratch", "--data-dir", str(fashion_dir), "--out", str(tmp_path), "--set", setting])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "scratch").exists()


def test_scratch_trains_both_sides_on_the_same_max_train_subset(fashion_dir, tmp_path):
    assert explore_scratch(fashion_dir, tmp_path, [*TINY, "max_train=100"]) == 0
    runs = {name: json.loads((tmp_path / "scratch" / name / "metrics.json").read_text()) for name in ("torch", "numpy")}
    assert runs["torch"]["train_examples"] == runs["numpy"]["train_examples"] == 100


def test_sgd_learning_rate_sweep_runs_every_rate_for_every_seed_and_plots_bands(fashion_dir, tmp_path):
    metrics = explore_sgd_learning_rates(fashion_dir, tmp_path, ["epochs=1", "dev_size=50", "hidden_dims=[8]"],
                                         seeds=(0, 1), lrs=(1e-3, 3e-2))
    assert sorted(m["name"] for m in metrics) == ["lr=0.001-seed0", "lr=0.001-seed1", "lr=0.03-seed0", "lr=0.03-seed1"]
    assert all((tmp_path / "sgd-learning-rates" / f"{k}.png").is_file() for k in ("dev_acc", "dev_loss", "train_loss"))


def test_main_py_plot_redraws_a_seeded_sweep_with_its_seed_bands(fashion_dir, tmp_path, monkeypatch):
    from toolkit import sweeps as explore
    drawn, spread = [], explore.plot_spread
    monkeypatch.setattr(explore, "plot_spread", lambda *args: drawn.append(args) or spread(*args))
    explore_sgd_learning_rates(fashion_dir, tmp_path, ["epochs=2", "dev_size=50", "hidden_dims=[8]"],
                               seeds=(0, 1), lrs=(1e-3, 3e-2))
    by_sweep, drawn[:] = list(drawn), []
    assert main(["plot", str(tmp_path / "sgd-learning-rates")]) == 0
    assert drawn == by_sweep and len(drawn) == 3  # dev accuracy, dev loss, train loss: bands over the 2 seeds
    assert [len(runs) for runs in drawn[0][0].values()] == [2, 2]
