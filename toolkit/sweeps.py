"""Sweeps: one key varied over a few values on top of a base config; summary.csv and plots per sweep. The
base is the homework's (configs/sentiment_mlp.toml, configs/fashion_init.toml) unless one is given, as
`main.py explore structures --config configs/texts.toml --data-dir DIR` gives your own texts.

Importable for notebooks and Colab:
    from toolkit.sweeps import explore_mlp_structures
    explore_mlp_structures(data_dir="path/to/data", out="runs")
"""
import csv
import json
import re
from contextlib import nullcontext
from pathlib import Path

from toolkit import ranks
from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.errors import UserError
from toolkit.estimates import describe_offsets
from toolkit.files import hold, write_csv
from toolkit.models import MODELS, SHAPE_KEYS
from toolkit.plots import plot_spread, visualize_configs, visualize_epochs
from toolkit.run import run_or_skip
from toolkit.tasks import TASKS

SENTIMENT_BASE = ROOT / "configs" / "sentiment_mlp.toml"
SENTIMENT_LINEAR = ROOT / "configs" / "sentiment_logreg.toml"  # the baseline row of the homework's sweeps
INIT_BASE = ROOT / "configs" / "fashion_init.toml"
# the homework sweeps' own n-gram features, whatever sentiment_mlp.toml keeps: a 512-unit layer over every n-gram
# would not fit a notebook's memory or Drive, and the sweeps' results stay comparable from one version to the next
SWEEP_FEATURES = ["max_features=200000"]
SUMMARY_HEADER = ["config", "best_dev_acc", "best_epoch", "test_acc", "seconds"]


def check_varied(config, key, sweep_name):
    """A sweep over a key of a model's shape needs a model that has it."""
    if key in SHAPE_KEYS and key not in MODELS[config["model"]].keys:
        raise UserError(f"explore {sweep_name}: it varies {key}, which model '{config['model']}' does not have; "
                        f"give a config of a model that does (--set model=mlp)")


def sweep(sweep_name, key, values, names, base=SENTIMENT_BASE, data_dir=None, out="runs", overrides=(), force=False):
    """Run the base config once per value of `key`; write OUT/<sweep_name>/{summary.csv, plots}. A sweep of a
    text task trains the MLPs alone on the training texts (no interpolation, refit or self-training) and
    adds the NB logistic regression on the same features as a last row (the homework's:
    configs/sentiment_logreg.toml)."""
    sweep_dir = Path(out) / sweep_name
    # validate every config before the first (possibly long) run starts
    text = TASKS[load_config(base, overrides)["task"]].kind == "text"
    pinned = {"keep_weights": False}  # a sweep compares metrics and plots; its runs' weights would fill a Drive
    if text:
        pinned.update(interpolate=0.0, refit=False, self_train=0)  # MLPs alone, dev-selected
    configs = [load_config(base, overrides, pinned={**pinned, key: value, "name": name})
               for value, name in zip(values, names)]
    check_varied(configs[0], key, sweep_name)
    if text and configs[0]["features"] == "nb":
        homework = Path(base).resolve() == SENTIMENT_BASE
        linear = (SENTIMENT_LINEAR, {"keep_weights": False}) if homework else (base, {**pinned, "model": "logreg"})
        configs.append(load_config(linear[0], overrides, pinned={**linear[1], "name": "nb-logreg"}))
        names = [*names, "nb-logreg"]
    with hold_sweep(sweep_dir):  # a second process on the same sweep is refused, naming this one
        metrics = [run_or_skip(config, data_dir, sweep_dir, force) for config in configs]
        if not ranks.is_main():
            return metrics  # under torchrun every configuration trains on all ranks; rank 0 draws and writes
        return draw_sweep(sweep_dir, names)


def hold_sweep(sweep_dir):
    """The sweep's folder lock, taken by rank 0 alone under torchrun (its ranks are one run, not rivals)."""
    return hold(sweep_dir) if ranks.is_main() else nullcontext()


def redraw_sweep(sweep_dir):
    """`main.py plot SWEEP_DIR`: a sweep's plots and summary drawn again from its runs' metrics.json, as the
    sweep drew them (seed bands for a sweep of values x seeds)."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "summary.csv").is_file():  # the results folder itself (runs/), say: not one sweep's runs
        raise UserError(f"{sweep_dir}: neither a run's folder (no metrics.json) nor a finished sweep's (no "
                        f"summary.csv); plot takes one of those (an unfinished sweep: run it again to finish it)")
    with hold(sweep_dir):  # not while the sweep writes the same files
        with open(sweep_dir / "summary.csv", newline="") as f:  # the sweep's order; runs it does not list after
            order = [row["config"].removesuffix(" (diverged)") for row in csv.DictReader(f)]
        paths = sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (
            order.index(p.parent.name) if p.parent.name in order else len(order), p.parent.name))
        if not paths:
            raise UserError(f"{sweep_dir}: no */metrics.json to plot")
        if all(re.fullmatch(r".+-seed\d+", p.parent.name) for p in paths):
            return draw_seeded(sweep_dir, [json.loads(p.read_text()) for p in paths])
        return draw_sweep(sweep_dir, [p.parent.name for p in paths])


def draw_sweep(sweep_dir, names):
    """Read each run's metrics.json and (re)draw the sweep's plots and summary; no training involved."""
    sweep_dir = Path(sweep_dir)
    metrics = [json.loads((sweep_dir / n / "metrics.json").read_text()) for n in names]
    col = lambda m, k: [h[k] for h in m["history"]]
    for m in metrics:
        if not m["history"]:
            continue  # diverged in its first epoch: nothing to draw
        visualize_epochs(col(m, "train_loss"), col(m, "dev_loss"), sweep_dir / m["name"] / "loss.png",
                         f"{sweep_dir.name}: {m['name']}")
    diverged = [m["name"] for m in metrics if m.get("diverged")]  # drawn with a cross where they stopped
    for key, label in (("dev_loss", "dev loss"), ("dev_acc", "dev accuracy")):
        visualize_configs([col(m, key) for m in metrics], names, label, sweep_dir / f"{key}.png",
                          f"{sweep_dir.name}: {label}", marked=diverged)
    return write_summary(sweep_dir, metrics)


def write_summary(sweep_dir, metrics):
    """summary.csv of a sweep, also printed as a table."""
    fmt = lambda v: "" if v is None else f"{v:.4f}"
    rows = [[m["name"] + (" (diverged)" if m.get("diverged") else ""), fmt(m["best_dev_acc"]), m["best_epoch"] or "",
             fmt(m["test_acc"]), f"{m['seconds']:.1f}"] for m in metrics]
    write_csv(sweep_dir / "summary.csv", SUMMARY_HEADER, rows)
    print_table(SUMMARY_HEADER, rows)
    offsets = describe_offsets([m["config"] for m in metrics])
    if offsets:
        print(offsets)
    print(f"plots and summary.csv in {sweep_dir}/", flush=True)
    return metrics


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def homework(base, overrides):
    """The base and overrides of a sentiment sweep: a given base as it is; the homework's with its own features
    (SWEEP_FEATURES) unless the overrides say otherwise."""
    return (base, list(overrides)) if base else (SENTIMENT_BASE, [*SWEEP_FEATURES, *overrides])


def explore_mlp_structures(data_dir=None, out="runs", overrides=(), force=False, base=None):
    dims = [[], [512], [512, 512], [512, 512, 512]]
    names = ["linear"] + ["-".join(map(str, d)) for d in dims[1:]]
    base, overrides = homework(base, overrides)
    return sweep("structures", "hidden_dims", dims, names, base, data_dir, out, overrides, force)


def explore_mlp_activations(data_dir=None, out="runs", overrides=(), force=False, base=None):
    """One hidden layer of 512 (the homework's) unless --set hidden_dims says otherwise."""
    acts = ["Sigmoid", "Tanh", "ReLU", "GELU"]
    base, overrides = homework(base, overrides)
    return sweep("activations", "activation", acts, [a.lower() for a in acts], base, data_dir, out,
                 ["hidden_dims=[512]", *overrides], force)


def explore_mlp_learning_rates(data_dir=None, out="runs", overrides=(), force=False, base=None):
    """One hidden layer of 512 (an MLP's; another model keeps its shape) at lr 1e-4 ... 1e-2."""
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # two orders of magnitude around Adam's usual 1e-3
    base, overrides = homework(base, overrides)
    shape = ["hidden_dims=[512]"] if "hidden_dims" in MODELS[load_config(base, overrides)["model"]].keys else []
    return sweep("learning-rates", "lr", lrs, [f"lr={lr:g}" for lr in lrs], base, data_dir, out,
                 [*shape, *overrides], force)


def draw_seeded(sweep_dir, metrics):
    """The plots and summary of a sweep of values x seeds (seeded_configs): per value, the mean and min-max band
    over its seeds of dev accuracy, dev loss and train loss. `main.py plot` redraws the same from the files."""
    groups = {}
    for m in metrics:
        groups.setdefault(m["name"].rpartition("-seed")[0], []).append(m)
    for key, label in (("dev_acc", "dev accuracy"), ("dev_loss", "dev loss"), ("train_loss", "train loss")):
        curves = {value: [[h[key] for h in m["history"]] for m in runs] for value, runs in groups.items()}
        plot_spread(curves, label, f"{sweep_dir.name}: {label}, mean and min-max over seeds", sweep_dir / f"{key}.png")
    return write_summary(sweep_dir, metrics)


def seeded_configs(key, values, label, seeds, overrides, base=None):
    """The base config (configs/fashion_init.toml) with each of `values` for `key` and each seed, named
    <label(value)>-seed<seed>; values outer, seeds inner. All are read before a sweep takes its folder, so a
    bad override leaves none."""
    configs = [load_config(base or INIT_BASE, overrides, pinned={key: value, "seed": seed, "keep_weights": False,
                                                                 "name": f"{label(value)}-seed{seed}"})
               for value in values for seed in seeds]
    check_varied(configs[0], key, "init")
    return configs


def explore_init(data_dir=None, out="runs", overrides=(), force=False, base=None, seeds=(0, 1, 2)):
    """Fashion-MNIST MLP under five initializations, several seeds each: mean and spread of dev accuracy."""
    inits = ["zeros", "constant", "normal", "xavier", "kaiming"]
    sweep_dir = Path(out) / "init"
    configs = seeded_configs("init", inits, lambda init: init, seeds, overrides, base)
    with hold_sweep(sweep_dir):
        metrics = [run_or_skip(config, data_dir, sweep_dir, force) for config in configs]
        return draw_seeded(sweep_dir, metrics) if ranks.is_main() else metrics


def explore_sgd_learning_rates(data_dir=None, out="runs", overrides=(), force=False, base=None, seeds=(0, 1, 2),
                               lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)):
    """The first assignment's learning-rate experiment on the init sweep's model (configs/fashion_init.toml: a
    one-hidden-layer sigmoid MLP, SGD with momentum, 4 epochs): each rate with several seeds, mean and spread.
    It runs on the toolkit's torch loop rather than byhand.layers: re-runs skip finished runs, each run keeps its
    metrics.json for `main.py plot`, and `explore scratch` shows byhand.layers lands where this loop does."""
    sweep_dir = Path(out) / "sgd-learning-rates"
    configs = seeded_configs("lr", lrs, lambda lr: f"lr={lr:g}", seeds, overrides, base)
    with hold_sweep(sweep_dir):
        metrics = [run_or_skip(config, data_dir, sweep_dir, force) for config in configs]
        return draw_seeded(sweep_dir, metrics) if ranks.is_main() else metrics


SWEEPS = {"structures": explore_mlp_structures, "activations": explore_mlp_activations,
          "learning-rates": explore_mlp_learning_rates, "init": explore_init,
          "sgd-learning-rates": explore_sgd_learning_rates}
