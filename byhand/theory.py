"""Numerical checks of the backprop theory the classifier toolkit relies on.

run_theory(out_dir) compares autograd against closed forms (activation
derivatives, softmax Jacobian, cross-entropy gradient, a small computation
graph), shows why initialization matters on XOR, and records the Jacobian
shapes autograd produces. Everything is small, deterministic and CPU-only.
"""
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from toolkit.files import write_json
from toolkit.plots import figure, save as save_figure  # atomic; no pyplot state

SEED = 0
XOR_INPUTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_TARGETS = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
# From random init, 2 hidden units usually fail on XOR (dead ReLUs, bad local minima);
# 16 units solve it for every seed tried, in 500 Adam steps.
RANDOM_INIT_HIDDEN = 16


# ---------- activations ----------

def gelu_derivative(x):
    # GELU(x) = x * Phi(x)  =>  GELU'(x) = Phi(x) + x * phi(x)
    normal_cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    normal_pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return normal_cdf + x * normal_pdf


# name -> (function, closed-form derivative)
ACTIVATIONS = {
    "sigmoid": (torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),  # torch uses 0 at x = 0 too
    "gelu": (F.gelu, gelu_derivative),  # F.gelu default is the exact erf form
}


def autograd_derivative(fn, x):
    # Elementwise fn: d(sum fn(x))/dx_i equals fn'(x_i).
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def activation_errors(grid):
    return {name: (autograd_derivative(fn, grid) - deriv(grid)).abs().max().item()
            for name, (fn, deriv) in ACTIVATIONS.items()}


def plot_activations(grid, path):
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    for ax, (name, (fn, _)) in zip(axes.flat, ACTIVATIONS.items()):
        ax.plot(grid.numpy(), fn(grid).numpy(), label=f"{name}(x)")
        ax.plot(grid.numpy(), autograd_derivative(fn, grid).numpy(), "--", label=f"{name}'(x)")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set(title=name, xlabel="x", ylabel="value")
        ax.legend()
    fig.suptitle("Activations and derivatives (flat derivative = saturation)")
    fig.tight_layout()
    save_figure(fig, path)


# ---------- softmax and cross-entropy ----------

def softmax_jacobian_error(logits):
    worst = 0.0
    for z in logits:
        s = torch.softmax(z, dim=0)
        autograd_jac = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, dim=0), z)
        closed_form = torch.diag(s) - torch.outer(s, s)
        worst = max(worst, (autograd_jac - closed_form).abs().max().item())
    return worst


def cross_entropy_grad_error(logits, targets):
    # Mean reduction divides by batch size, so use sum to get per-row s - onehot.
    z = logits.clone().requires_grad_(True)
    F.cross_entropy(z, targets, reduction="sum").backward()
    closed_form = torch.softmax(logits, dim=1) - F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (z.grad - closed_form).abs().max().item()


# ---------- computation graph f(x, y, z) = ln x + exp(y) * z ----------

def graph_values(x=1.0, y=3.0, z=2.0):
    """Forward values and backward gradients df/d(node) for every node."""
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for k, v in {"x": x, "y": y, "z": z}.items()}
    nodes = dict(leaves)
    nodes["h1"] = torch.log(leaves["x"])
    nodes["h2"] = torch.exp(leaves["y"])
    nodes["h3"] = nodes["h2"] * leaves["z"]
    nodes["f"] = nodes["h1"] + nodes["h3"]
    for name in ("h1", "h2", "h3", "f"):
        nodes[name].retain_grad()  # keep gradients of intermediate nodes for the figure
    nodes["f"].backward()
    return {k: (t.item(), t.grad.item()) for k, t in nodes.items()}


def plot_graph(values, path):
    positions = {"x": (0, 3), "y": (0, 1.5), "z": (0, 0), "h1": (2.5, 3),
                 "h2": (2.5, 1.5), "h3": (5, 0.75), "f": (7.5, 1.9)}
    labels = {"x": "x", "y": "y", "z": "z", "h1": "h1 = ln x", "h2": "h2 = exp(y)",
              "h3": "h3 = h2 * z", "f": "f = h1 + h3"}
    edges = [("x", "h1"), ("y", "h2"), ("h2", "h3"), ("z", "h3"), ("h1", "f"), ("h3", "f")]
    fig, ax = figure((10, 4.5))
    for src, dst in edges:
        ax.annotate("", xy=positions[dst], xytext=positions[src],
                    arrowprops=dict(arrowstyle="->", lw=1.5, shrinkA=38, shrinkB=38))
    for name, (x, y) in positions.items():
        value, grad = values[name]
        ax.text(x, y, f"{labels[name]}\nvalue = {value:.4g}\ndf/d{name} = {grad:.4g}",
                ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round", facecolor="lightyellow", edgecolor="black"))
    ax.set(xlim=(-0.8, 8.3), ylim=(-0.6, 3.6),
           title="f(x, y, z) = ln x + exp(y) z at (1, 3, 2): forward values, backward gradients")
    ax.axis("off")
    save_figure(fig, path)


# ---------- XOR and initialization ----------

def make_xor_net(hidden=2):
    """h = ReLU(W1 x + b1), y = W2 h + b2, scalar regression output."""
    return torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


def set_weights(net, w1, b1, w2, b2):
    with torch.no_grad():
        for param, value in zip(net.parameters(), (w1, b1, w2, b2)):
            param.copy_(torch.as_tensor(value, dtype=param.dtype).reshape(param.shape))
    return net


def fill_weights(net, value):
    with torch.no_grad():
        for param in net.parameters():
            param.fill_(value)
    return net


def first_layer_grad_norm(net):
    net.zero_grad()
    F.mse_loss(net(XOR_INPUTS), XOR_TARGETS).backward()
    return net[0].weight.grad.norm().item()


def train_xor(net, steps=500, lr=0.05):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.mse_loss(net(XOR_INPUTS), XOR_TARGETS).backward()
        optimizer.step()
    return net


def xor_accuracy(net):
    with torch.no_grad():
        predicted = (net(XOR_INPUTS) > 0.5).float()
    return (predicted == XOR_TARGETS).float().mean().item()


def xor_results():
    handset = set_weights(make_xor_net(2), [[1, 1], [1, 1]], [0, -1], [1, -2], 0)
    with torch.no_grad():
        handset_predictions = handset(XOR_INPUTS).flatten().tolist()

    random_net = train_xor(make_xor_net(RANDOM_INIT_HIDDEN))

    # All-zero init: h = ReLU(0) = 0 and W2 = 0, so W1, b1, W2 get zero gradient
    # forever; only b2 learns and the output is the same constant for every input.
    zero_net = fill_weights(make_xor_net(2), 0.0)
    zero_grad_norm = first_layer_grad_norm(zero_net)
    train_xor(zero_net)

    # Constant non-zero init: every hidden unit gets the same gradient, so the
    # symmetry is never broken and the hidden layer acts like a single unit.
    # Both input weights also stay equal, so the output is a monotone function
    # of x1 + x2 and cannot be low-high-low as XOR needs.
    constant_net = train_xor(fill_weights(make_xor_net(2), 0.5))
    w1, b1 = constant_net[0].weight, constant_net[0].bias
    identical = bool(torch.equal(w1, w1[:1].expand_as(w1)) and torch.equal(b1, b1[:1].expand_as(b1)))

    return {
        "handset_predictions": handset_predictions,
        "random_init_hidden": RANDOM_INIT_HIDDEN,
        "random_init_accuracy": xor_accuracy(random_net),
        "zero_init_accuracy": xor_accuracy(zero_net),
        "zero_init_grad_norm": zero_grad_norm,
        "zero_init_predictions": zero_net(XOR_INPUTS).detach().flatten().tolist(),
        "constant_init_accuracy": xor_accuracy(constant_net),
        "constant_init_hidden_units_identical": identical,
    }


# ---------- Jacobian shapes ----------

def jacobian_shapes(n=5, d=3, k=4):
    X, w, W, x = torch.randn(n, d), torch.randn(d), torch.randn(k, d), torch.randn(d)
    functions = {
        "c": (lambda v: (v * 0).sum() + 7.0, w),  # constant, but still a function of w
        "norm_sq": (lambda v: (v * v).sum(), w),
        "wTx": (lambda v: v @ x, w),
        "Xw": (lambda v: X @ v, w),
        "w": (lambda v: v, w),
        "w_squared": (lambda v: v ** 2, w),
        "XWT": (lambda V: X @ V.T, W),  # output n x k, input k x d
    }
    return {name: list(torch.autograd.functional.jacobian(fn, arg).shape)
            for name, (fn, arg) in functions.items()}


# ---------- output ----------

def run_theory(out_dir):
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # deterministic without disturbing the caller's RNG
        torch.manual_seed(SEED)
        grid = torch.linspace(-6, 6, 1201, dtype=torch.float64)
        logits = torch.randn(4, 5, dtype=torch.float64)
        targets = torch.randint(0, 5, (4,))
        graph = graph_values()
        results = {
            "activations": activation_errors(grid),
            "softmax_jacobian_max_abs_err": softmax_jacobian_error(logits),
            "ce_grad_max_abs_err": cross_entropy_grad_error(logits, targets),
            "graph": {"f": graph["f"][0], "df_dx": graph["x"][1],
                      "df_dy": graph["y"][1], "df_dz": graph["z"][1]},
            "xor": xor_results(),
            "jacobian_shapes": jacobian_shapes(),
        }
        plot_activations(grid, out_dir / "activations.png")
        plot_graph(graph, out_dir / "graph.png")
    write_json(out_dir / "theory.json", results)
    return results


if __name__ == "__main__":
    print(json.dumps(run_theory("runs/theory"), indent=2))
