"""A scratch MLP: byhand.layers trains a configuration on real images, beside the toolkit's torch run of it.

    python main.py explore scratch --data-dir DIR [--out runs] [--set epochs=3 ...]

Both sides read configs/fashion_scratch.toml (and the same --set), so architecture, optimizer, batch size,
learning rate and epochs match by construction; both use data.dev_split and the same normalization. Results:
OUT/scratch/torch/ (the toolkit's `run`) and OUT/scratch/numpy/ (metrics.json, curves, submission.csv), and
OUT/scratch/{summary.csv, dev_acc.png, dev_loss.png} comparing the two. Both sides run on one thread.
"""
import copy
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn, which requires it

from byhand import layers as nn
from toolkit.checkpoint import config_hash
from toolkit.config import load_config
from toolkit.errors import UserError
from toolkit.data import ROOT
from toolkit.files import write_json
from toolkit.submission import write_indices
from toolkit.tasks import TASKS, load_raw

SCRATCH_CONFIG = ROOT / "configs" / "fashion_scratch.toml"
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# what byhand.layers has no counterpart for must stay at these values (the toolkit's defaults: "off")
UNSUPPORTED = {"model": "mlp", "dropout": 0.0, "weight_decay": 0.0, "scheduler": "constant", "label_smoothing": 0.0,
               "augment": False, "tta_flip": False, "ema": 0.0, "init": "default", "lookahead": False,
               "budget_minutes": 0.0, "refit": False, "amp": False}
# One thread a side, so the times compare the same work on one core. On a small CPU shared with other busy
# processes, more threads make both sides many times slower; on an idle computer two may be faster for both.
BLAS_THREADS = 1


def check_supported(config):
    """UserError naming the first key byhand.layers cannot honour, before any data is loaded."""
    if TASKS[config["task"]].kind != "image":
        raise UserError(f"explore scratch: task '{config['task']}' is text, and byhand.layers trains on images; use "
                        f"an image task")
    if config["optimizer"] not in ("sgd", "momentum"):
        raise UserError(f"explore scratch: optimizer = '{config['optimizer']}': byhand.layers has sgd and "
                        f"momentum only")
    for key, value in UNSUPPORTED.items():
        if config[key] != value:
            raise UserError(f"explore scratch: {key} = {config[key]!r} has no byhand.layers counterpart "
                            f"(use {value!r})")
    if config["activation"].lower() not in ACTIVATIONS:
        raise UserError(f"explore scratch: activation = '{config['activation']}': byhand.layers has "
                        f"{', '.join(ACTIVATIONS)}")


def load_arrays(config, data_dir):
    """{'train', 'dev', 'test'}: (float32 [N, features], labels or None), split and normalized exactly as
    toolkit.tensors.load_images does: the same dev split and max_train subset, the training part's
    per-channel statistics; and 'classes'."""
    from toolkit.tensors import channel_stats, split
    raw = load_raw(config["task"], data_dir, config)
    x, y = raw["train"]
    tr, x_dev, y_dev = split(raw, config)
    mean, std = (np.array(s, dtype=np.float32).reshape(1, -1, 1, 1) for s in channel_stats(x[tr]))

    def prep(images):  # uint8 [N, H, W(, C)] -> [N, C*H*W] in the torch side's [N, C, H, W] order
        images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        return ((images.astype(np.float32) / 255 - mean) / std).reshape(len(images), -1)

    x_test, y_test = raw["test"]
    return {"train": (prep(x[tr]), y[tr]), "dev": (prep(x_dev), y_dev), "test": (prep(x_test), y_test),
            "classes": raw["classes"]}


def make_mlp(sizes, activation, rng):
    """Linear layers between consecutive sizes, the activation after every one but the last."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, rng), ACTIVATIONS[activation.lower()]()]
    return nn.Sequential(*layers[:-1])


def evaluate(net, x, y, batch_size=2048):
    """(mean loss or None, accuracy or None, predicted classes)."""
    ce, loss, preds = nn.SoftmaxCrossEntropy(), 0.0, []
    for i in range(0, len(x), batch_size):
        logits = net.forward(x[i:i + batch_size])
        preds.append(logits.argmax(1))
        if y is not None:
            loss += float(ce.forward(logits, y[i:i + batch_size])) * len(logits)
    preds = np.concatenate(preds)
    return (None, None, preds) if y is None else (loss / len(y), float((preds == y).mean()), preds)


def train_numpy(config, data_dir, out_dir):
    """The toolkit's loop, by hand: shuffle, step, evaluate on dev each epoch, keep the best-on-dev weights,
    test them (or write submission.csv). Writes metrics.json and the curves; returns the metrics dict."""
    from toolkit.plots import plot_run
    start = time.perf_counter()
    data = load_arrays(config, data_dir)
    data_seconds = time.perf_counter() - start
    (x, y), (x_dev, y_dev) = data["train"], data["dev"]
    rng = np.random.default_rng(config["seed"])  # initial weights and batch order
    net = make_mlp([x.shape[1], *config["hidden_dims"], len(data["classes"])], config["activation"], rng)
    momentum = config["momentum"] if config["optimizer"] == "momentum" else 0.0
    opt, ce = nn.SGD(net, config["lr"], momentum), nn.SoftmaxCrossEntropy()
    history, best, diverged, bs = [], {"dev_acc": -1.0, "epoch": None}, None, config["batch_size"]
    with threadpool_limits(BLAS_THREADS, "blas"):
        for epoch in range(1, config["epochs"] + 1):
            t0 = time.perf_counter()
            perm, loss_sum, correct = rng.permutation(len(x)), 0.0, 0
            for i in range(0, len(x), bs):
                idx = perm[i:i + bs]
                logits = net.forward(x[idx])
                loss = ce.forward(logits, y[idx])
                if not np.isfinite(loss):
                    diverged = {"epoch": epoch, "step": i // bs + 1}
                    break
                net.backward(ce.backward())
                opt.step()
                loss_sum += float(loss) * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
            if diverged:
                break
            dev_loss, dev_acc, _ = evaluate(net, x_dev, y_dev)
            history.append({"epoch": epoch, "train_loss": loss_sum / len(x), "train_acc": correct / len(x),
                            "dev_loss": dev_loss, "dev_acc": dev_acc, "seconds": time.perf_counter() - t0,
                            "lr": config["lr"]})
            print(f"{config['name']} epoch {epoch}: train loss {loss_sum / len(x):.4f} acc {correct / len(x):.4f} | "
                  f"dev loss {dev_loss:.4f} acc {dev_acc:.4f} | {history[-1]['seconds']:.1f}s", flush=True)
            if dev_acc > best["dev_acc"]:
                best = {"dev_acc": dev_acc, "epoch": epoch, "params": copy.deepcopy([l.params for l in net.layers])}
        test_acc = None
        if best["epoch"] is not None:
            for layer, params in zip(net.layers, best["params"]):
                layer.params = params
            x_test, y_test = data["test"]
            _, test_acc, preds = evaluate(net, x_test, y_test)
            write_indices(out_dir / "submission.csv", preds)
    metrics = {"name": config["name"], "config": config, "config_hash": config_hash(config), "seed": config["seed"],
               "framework": "byhand.layers", "versions": {"numpy": np.__version__}, "blas_threads": BLAS_THREADS,
               "params": sum(layer.params[name].size for layer, name in net.parameters()),
               "train_examples": len(data["train"][1]),
               "history": history, "best_epoch": best["epoch"],
               "best_dev_acc": best["dev_acc"] if best["epoch"] else None, "test_acc": test_acc,
               "diverged": diverged is not None, "diverged_at": diverged, "seconds": time.perf_counter() - start,
               "data_seconds": data_seconds}
    write_json(out_dir / "metrics.json", metrics)
    if history:
        plot_run(history, out_dir, config["name"])
    return metrics


def numpy_or_skip(config, data_dir, out_dir, force):
    """Like toolkit.run.run_or_skip: a finished run with the same config is not trained again unless force."""
    path = out_dir / "metrics.json"
    if not force and path.is_file():
        metrics = json.loads(path.read_text())
        if metrics.get("config_hash") == config_hash(config):
            print(f"{config['name']}: finished before, skipped (--force, or force=True, runs it again)", flush=True)
            return metrics
    return train_numpy(config, data_dir, out_dir)


def describe(m):
    h = m["history"]
    train_seconds = sum(e["seconds"] for e in h)
    return (f"best dev acc {m['best_dev_acc']:.4f} (epoch {m['best_epoch']}), last epoch {h[-1]['dev_acc']:.4f}; "
            f"{len(h)} epoch{'s' * (len(h) != 1)} in {train_seconds:.1f}s ({train_seconds / len(h):.1f}s an epoch, "
            f"dev evaluation included), {m['seconds']:.1f}s start to finish")


def explore_scratch(data_dir=None, out="runs", overrides=(), force=False):
    """Train configs/fashion_scratch.toml (+ overrides) with the toolkit's torch loop and with byhand.layers;
    print both and the gap in best dev accuracy. Returns 0, or 1 when a run diverged."""
    import torch
    from toolkit.run import run_or_skip
    from toolkit.sweeps import draw_sweep
    config = load_config(SCRATCH_CONFIG, overrides)
    check_supported(config)
    sweep_dir = Path(out) / "scratch"
    threads = torch.get_num_threads()
    torch.set_num_threads(BLAS_THREADS)
    try:
        runs = {"torch": run_or_skip({**config, "name": "torch"}, data_dir, sweep_dir, force),
                "numpy": numpy_or_skip({**config, "name": "numpy"}, data_dir, sweep_dir / "numpy", force)}
    finally:
        torch.set_num_threads(threads)
    draw_sweep(sweep_dir, list(runs))
    if any(m["best_epoch"] is None for m in runs.values()):
        print("a run diverged in its first epoch: nothing to compare", flush=True)
        return 1
    for name, m in runs.items():
        print(f"{name}: {describe(m)}")
    gap = 100 * (runs["numpy"]["best_dev_acc"] - runs["torch"]["best_dev_acc"])
    print(f"numpy - torch, best dev accuracy: {gap:+.2f} points (both on {BLAS_THREADS} thread)")
    return 1 if any(m["diverged"] for m in runs.values()) else 0
