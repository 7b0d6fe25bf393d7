"""Specification of byhand.layers: each layer's forward agrees with torch, each hand-written backward with torch
autograd and with finite differences, and the optimizer with torch.optim.SGD."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byhand import layers as nn
from byhand.checks import TOLERANCE, gradcheck_rows
from toolkit.data import ROOT
from main import main


@pytest.fixture(scope="module")
def rows():
    return gradcheck_rows()


def test_gradcheck_covers_every_layer_and_every_parameter(rows):
    names = {(r[0], r[2]) for r in rows}
    for layer in ("linear", "conv"):
        assert {(layer, "weight"), (layer, "bias"), (layer, "input")} <= names
    for layer in ("pool", "relu", "sigmoid", "tanh", "softmax", "flatten"):
        assert (layer, "input") in names


def test_every_hand_written_gradient_matches_torch_autograd_and_finite_differences(rows):
    for layer, case, param, shape, vs_torch, vs_fd in rows:
        assert vs_torch < TOLERANCE and vs_fd < TOLERANCE, (layer, case, param, vs_torch, vs_fd)


def test_gradcheck_command_writes_a_csv_whose_error_columns_are_all_below_tolerance(tmp_path, capsys):
    assert main(["explore", "gradcheck", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "gradcheck" / "gradcheck.csv", newline="") as f:
        table = list(csv.DictReader(f))
    err_columns = [c for c in table[0] if "err" in c]
    assert len(err_columns) == 2
    assert {r["layer"] for r in table} == {"linear", "conv", "pool", "relu", "sigmoid", "tanh", "softmax", "flatten"}
    assert all(float(r[c]) < 1e-6 for r in table for c in err_columns)
    assert "worst rel_err_vs_finite_differences" in capsys.readouterr().out


def test_a_wrong_backward_is_caught_by_the_check(monkeypatch):
    monkeypatch.setattr(nn.Tanh, "backward", lambda self, grad: grad * (1 - self.out))  # a plausible slip
    bad = [r for r in gradcheck_rows() if r[0] == "tanh"]
    assert bad[0][4] > 1e-2 and bad[0][5] > 1e-2


@pytest.mark.parametrize("stride,padding,size", [(1, 0, 5), (1, 1, 6), (2, 1, 7), (2, 0, 8), (3, 2, 9)])
def test_conv2d_forward_equals_torch_conv2d(stride, padding, size):
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(3, 4, 3, rng, stride, padding, np.float64)
    x = rng.standard_normal((2, 3, size, size))
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(conv.params["weight"]),
                        torch.from_numpy(conv.params["bias"]), stride, padding).numpy()
    np.testing.assert_allclose(conv.forward(x), expected, atol=1e-12)


@pytest.mark.parametrize("k,stride", [(2, 2), (3, 2), (2, 1)])
def test_maxpool_forward_equals_torch_max_pool2d(k, stride):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7))
    expected = F.max_pool2d(torch.from_numpy(x), k, stride).numpy()
    np.testing.assert_array_equal(nn.MaxPool2d(k, stride).forward(x), expected)


def test_softmax_cross_entropy_is_finite_for_huge_logits_and_matches_torch():
    logits, labels = np.array([[1000.0, 0.0, -1000.0], [0.0, 2.0, 1.0]]), np.array([2, 1])
    loss = nn.SoftmaxCrossEntropy().forward(logits, labels)
    assert np.isclose(loss, F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())


def test_sigmoid_of_large_inputs_has_no_overflow_warning():
    with np.errstate(over="raise"):
        np.testing.assert_allclose(nn.Sigmoid().forward(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])


def test_sgd_with_momentum_follows_torch_sgd_step_for_step():
    rng = np.random.default_rng(0)
    layer = nn.Linear(4, 3, rng, np.float64)
    w = torch.tensor(layer.params["weight"], requires_grad=True)
    b = torch.tensor(layer.params["bias"], requires_grad=True)
    ours, theirs = nn.SGD(nn.Sequential(layer), lr=0.1, momentum=0.9), torch.optim.SGD([w, b], lr=0.1, momentum=0.9)
    for _ in range(5):
        x = rng.standard_normal((6, 4))
        layer.forward(x)
        layer.backward(np.ones((6, 3)))
        ours.step()
        theirs.zero_grad()
        (torch.from_numpy(x) @ w + b).sum().backward()
        theirs.step()
    np.testing.assert_allclose(layer.params["weight"], w.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.params["bias"], b.detach().numpy(), atol=1e-12)


def test_a_small_conv_net_learns_a_separable_image_problem():
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = rng.standard_normal((64, 1, 8, 8)) * 0.3
    x[y == 1, :, :4] += 1.0  # class 1: bright top half
    net = nn.Sequential(nn.Conv2d(1, 4, 3, rng, padding=1, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64, 2, rng, np.float64))
    ce, opt = nn.SoftmaxCrossEntropy(), nn.SGD(net, lr=0.1, momentum=0.9)
    for _ in range(30):
        loss = ce.forward(net.forward(x), y)
        net.backward(ce.backward())
        opt.step()
    assert loss < 0.1 and (net.forward(x).argmax(1) == y).all()


def test_the_layer_package_does_not_import_torch():
    code = "import sys, byhand.layers; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
