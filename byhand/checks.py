"""Backprop by hand: gradient checks of the numpy layers, and one MLP's backprop written three ways.

    python main.py explore gradcheck [--out DIR]   DIR/gradcheck/gradcheck.csv: every layer's hand-written
                                                   gradients against torch autograd and finite differences
    python main.py explore backprop [--out DIR]    DIR/backprop/backprop.csv: scalar loops, per-example
                                                   vectors and batch matrices: same gradients, time per batch
    python main.py explore scratch --data-dir DIR  the numpy MLP against the toolkit's torch run (scratch.py)

Everything here is float64 and small: the checks take seconds and need no data.
"""
import math
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn, which requires it

from byhand import layers as nn
from toolkit.files import write_csv

TOLERANCE = 1e-6  # every relative error in gradcheck.csv must stay below this
FD_STEP = 1e-6    # central differences: truncation ~h^2, rounding ~1e-16/h; both far below TOLERANCE here
GRADCHECK_HEADER = ["layer", "case", "parameter", "shape", "rel_err_vs_torch_autograd",
                    "rel_err_vs_finite_differences"]


def rel_err(a, b):
    """||a - b|| / (||a|| + ||b||): 0 for equal arrays, 1 for opposite ones; scale-free."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def finite_differences(loss, array):
    """d loss() / d array by central differences, perturbing `array` in place one entry at a time."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        orig = array[i]
        array[i] = orig + FD_STEP
        plus = loss()
        array[i] = orig - FD_STEP
        minus = loss()
        array[i] = orig
        grad[i] = (plus - minus) / (2 * FD_STEP)
    return grad


# ---------------------------------------------------------------- gradient checks

def away_from_zero(rng, shape):
    """Inputs with |x| >= 0.1, so that a finite-difference step never crosses ReLU's kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


def layer_cases(rng):
    """(layer name, case, numpy layer, input, torch forward(tensors by name)) for every layer of byhand.layers."""
    import torch.nn.functional as F
    f64 = np.float64
    return [
        ("linear", "5 -> 4, batch 3", nn.Linear(5, 4, rng, f64), rng.standard_normal((3, 5)),
         lambda t: t["input"] @ t["weight"] + t["bias"]),
        ("conv", "3 -> 4 channels, 3x3, stride 1, padding 1, 6x6", nn.Conv2d(3, 4, 3, rng, 1, 1, f64),
         rng.standard_normal((2, 3, 6, 6)), lambda t: F.conv2d(t["input"], t["weight"], t["bias"], 1, 1)),
        ("conv", "3 -> 2 channels, 3x3, stride 2, padding 0, 8x8 (last row and column unused)",
         nn.Conv2d(3, 2, 3, rng, 2, 0, f64), rng.standard_normal((2, 3, 8, 8)),
         lambda t: F.conv2d(t["input"], t["weight"], t["bias"], 2, 0)),
        ("pool", "max 2x2, stride 2, 6x6", nn.MaxPool2d(2), rng.standard_normal((2, 3, 6, 6)),
         lambda t: F.max_pool2d(t["input"], 2)),
        ("pool", "max 3x3, stride 2 (overlapping), 7x7", nn.MaxPool2d(3, 2), rng.standard_normal((2, 2, 7, 7)),
         lambda t: F.max_pool2d(t["input"], 3, 2)),
        ("relu", "batch 3 x 7", nn.ReLU(), away_from_zero(rng, (3, 7)), lambda t: t["input"].relu()),
        ("sigmoid", "batch 3 x 7, |x| up to 4", nn.Sigmoid(), 4 * rng.uniform(-1, 1, (3, 7)),
         lambda t: t["input"].sigmoid()),
        ("tanh", "batch 3 x 7, |x| up to 3", nn.Tanh(), 3 * rng.uniform(-1, 1, (3, 7)), lambda t: t["input"].tanh()),
        ("flatten", "2 x 3 x 4 x 4 -> 2 x 48", nn.Flatten(), rng.standard_normal((2, 3, 4, 4)),
         lambda t: t["input"].flatten(1)),
    ]


def check_gradients(numpy_loss, numpy_grads, torch_loss, arrays):
    """One row per array: (name, shape, rel. error vs torch autograd, rel. error vs finite differences).

    numpy_loss() -> float and numpy_grads() -> {name: grad} read the arrays in `arrays` (perturbed in place);
    torch_loss(tensors) computes the same scalar from float64 copies of them."""
    import torch
    hand = numpy_grads()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    torch_loss(tensors).backward()
    return [(name, "x".join(map(str, a.shape)), rel_err(hand[name], tensors[name].grad.numpy()),
             rel_err(hand[name], finite_differences(numpy_loss, a))) for name, a in arrays.items()]


def check_layer(layer, x, torch_forward, rng):
    """Check a layer through the scalar sum(forward(x) * G), G a fixed random upstream gradient: its
    gradient is exactly what backward(G) returns, and every entry of every gradient is exercised."""
    import torch
    upstream = rng.standard_normal(layer.forward(x).shape)
    arrays = {**layer.params, "input": x}

    def grads():
        layer.forward(x)
        dx = layer.backward(upstream)
        return {**layer.grads, "input": dx}

    return check_gradients(lambda: float((layer.forward(x) * upstream).sum()), grads,
                           lambda t: (torch_forward(t) * torch.from_numpy(upstream)).sum(), arrays)


def check_softmax_cross_entropy(rng):
    import torch
    import torch.nn.functional as F
    logits, labels = 3 * rng.standard_normal((4, 5)), rng.integers(0, 5, size=4)
    ce = nn.SoftmaxCrossEntropy()

    def grads():
        ce.forward(logits, labels)
        return {"input": ce.backward()}

    return check_gradients(lambda: ce.forward(logits, labels), grads,
                           lambda t: F.cross_entropy(t["input"], torch.from_numpy(labels)), {"input": logits})


def gradcheck_rows(seed=0):
    """Every row of gradcheck.csv: layer, case, parameter, shape and the two relative errors."""
    rng = np.random.default_rng(seed)
    rows = [(name, case, *r) for name, case, layer, x, fwd in layer_cases(rng) for r in check_layer(layer, x, fwd, rng)]
    rows += [("softmax", "cross-entropy, mean over batch 4, 5 classes", *r) for r in check_softmax_cross_entropy(rng)]
    return rows


def explore_gradcheck(out="runs"):
    """Write OUT/gradcheck/gradcheck.csv, print it and its worst errors; exit code 1 when one is >= TOLERANCE."""
    from toolkit.sweeps import print_table
    rows = gradcheck_rows()
    path = Path(out) / "gradcheck" / "gradcheck.csv"
    write_csv(path, GRADCHECK_HEADER, [(*r[:4], f"{r[4]:.2e}", f"{r[5]:.2e}") for r in rows])
    print_table(GRADCHECK_HEADER, [(*r[:4], f"{r[4]:.2e}", f"{r[5]:.2e}") for r in rows])
    worst = [max(rows, key=lambda r: r[i]) for i in (4, 5)]
    for col, r in zip(GRADCHECK_HEADER[4:], worst):
        print(f"worst {col}: {r[GRADCHECK_HEADER.index(col)]:.2e} ({r[0]} {r[2]}, {r[1]})")
    bad = [r for r in rows if max(r[4], r[5]) >= TOLERANCE]
    print(f"{len(rows)} rows, {len(bad)} at or above {TOLERANCE:g}; table in {path}")
    return 1 if bad else 0


# ---------------------------------------------------------------- backprop three ways
# One hidden layer: h = sigmoid(x W1 + b1), logits = h W2 + b2, loss = mean cross-entropy of softmax(logits).
# Weights are [in, out] as in byhand.layers.Linear. Each function returns (loss, {"W1", "b1", "W2", "b2"}).

def sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def backprop_scalar(x, y, W1, b1, W2, b2):
    """Python floats and for-loops only: every multiply-add of the chain rule written out."""
    x, W1, b1, W2, b2 = (a.tolist() for a in (x, W1, b1, W2, b2))
    n, d, hid, k = len(x), len(W1), len(b1), len(b2)
    gW1, gW2 = [[0.0] * hid for _ in range(d)], [[0.0] * k for _ in range(hid)]
    gb1, gb2, loss = [0.0] * hid, [0.0] * k, 0.0
    for e in range(n):
        h = []
        for j in range(hid):
            z = b1[j]
            for i in range(d):
                z += x[e][i] * W1[i][j]
            h.append(sigmoid(z))
        logits = []
        for c in range(k):
            z = b2[c]
            for j in range(hid):
                z += h[j] * W2[j][c]
            logits.append(z)
        top = max(logits)
        total = sum(math.exp(v - top) for v in logits)
        loss += (top + math.log(total) - logits[y[e]]) / n
        dlogits = [(math.exp(v - top) / total - (c == y[e])) / n for c, v in enumerate(logits)]  # softmax - onehot
        for c in range(k):
            gb2[c] += dlogits[c]
            for j in range(hid):
                gW2[j][c] += h[j] * dlogits[c]
        for j in range(hid):
            dh = 0.0
            for c in range(k):
                dh += W2[j][c] * dlogits[c]
            dz = dh * h[j] * (1 - h[j])  # sigmoid' = s (1 - s)
            gb1[j] += dz
            for i in range(d):
                gW1[i][j] += x[e][i] * dz
    return loss, {name: np.array(g) for name, g in (("W1", gW1), ("b1", gb1), ("W2", gW2), ("b2", gb2))}


def backprop_vector(x, y, W1, b1, W2, b2):
    """One example at a time, as vectors: outer products accumulate the weight gradients."""
    n = len(x)
    grads = {"W1": np.zeros_like(W1), "b1": np.zeros_like(b1), "W2": np.zeros_like(W2), "b2": np.zeros_like(b2)}
    loss = 0.0
    for xe, ye in zip(x, y):
        h = 1 / (1 + np.exp(-(xe @ W1 + b1)))
        logits = h @ W2 + b2
        p = np.exp(logits - logits.max())
        p /= p.sum()
        loss -= np.log(p[ye]) / n
        dlogits = p.copy()
        dlogits[ye] -= 1
        dlogits /= n
        grads["W2"] += np.outer(h, dlogits)
        grads["b2"] += dlogits
        dz = (W2 @ dlogits) * h * (1 - h)
        grads["W1"] += np.outer(xe, dz)
        grads["b1"] += dz
    return loss, grads


def backprop_batch(x, y, W1, b1, W2, b2):
    """The whole batch as matrices: each sum over examples becomes a matrix product."""
    n = len(x)
    h = 1 / (1 + np.exp(-(x @ W1 + b1)))
    logits = h @ W2 + b2
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    dz = (dlogits @ W2.T) * h * (1 - h)
    return -log_p[np.arange(n), y].mean(), {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ dlogits,
                                             "b2": dlogits.sum(0)}


BACKPROP_FORMS = {"scalar loops": backprop_scalar, "per-example vectors": backprop_vector,
                  "batch matrices": backprop_batch}


def mlp_problem(rng, n, d, hidden, k):
    """Random float64 batch and weights (PyTorch's default init scale) for the three forms."""
    w = lambda fan_in, shape: rng.uniform(-1, 1, shape) / math.sqrt(fan_in)
    return (rng.standard_normal((n, d)), rng.integers(0, k, size=n), w(d, (d, hidden)), w(d, hidden),
            w(hidden, (hidden, k)), w(hidden, k))


def seconds_per_call(fn, args, min_seconds=1.0, min_calls=3, max_calls=1000):
    """Median time of repeated calls: at least min_calls, and as many as fit in about min_seconds."""
    times = []
    while len(times) < min_calls or (sum(times) < min_seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def explore_backprop(out="runs", n=64, d=784, hidden=64, k=10):
    """OUT/backprop/backprop.csv: the three forms on one batch of Fashion-MNIST's shape (random values; time
    does not depend on them), on one BLAS thread: seconds per batch (median of repeated calls) and the
    largest gradient difference from the batch form."""
    from toolkit.sweeps import print_table
    problem = mlp_problem(np.random.default_rng(0), n, d, hidden, k)
    reference = backprop_batch(*problem)[1]
    header = ["form", "seconds_per_batch", "calls_timed", "time_relative_to_batch_matrices",
              "max_abs_grad_diff_vs_batch"]
    rows = []
    for name, fn in BACKPROP_FORMS.items():
        grads = fn(*problem)[1]
        with threadpool_limits(1, "blas"):  # one BLAS thread, as in scratch.py: steady times on a shared CPU
            seconds, calls = seconds_per_call(fn, problem)
        diff = max(float(np.abs(grads[key] - reference[key]).max()) for key in reference)
        rows.append([name, f"{seconds:.3g}", calls, seconds, f"{diff:.1e}"])
    batch_seconds = rows[-1][3]
    for r in rows:
        r[3] = f"{r[3] / batch_seconds:.0f}"
    path = Path(out) / "backprop" / "backprop.csv"
    write_csv(path, header, rows)
    print(f"one batch of {n} examples, {d} -> {hidden} sigmoid -> {k} softmax, float64:")
    print_table(header, rows)
    print(f"table in {path}")
    return 0


def explore(sweep, data_dir, out, overrides, force):
    """The `main.py explore` entry for gradcheck, backprop and scratch; returns the exit code."""
    if sweep == "scratch":
        from byhand.scratch import explore_scratch
        return explore_scratch(data_dir, out, overrides, force)
    return explore_gradcheck(out) if sweep == "gradcheck" else explore_backprop(out)
