"""Sweeps: one key varied over a few values on top of a base config; summary.csv and plots per sweep.

Importable for notebooks and Colab:
    from explore import explore_mlp_structures
    explore_mlp_structures(data_dir="../shared/data", out="runs")
"""
import json
from pathlib import Path

from config import load_config
from data import ROOT
from experiment import run
from files import write_csv
from plots import plot_spread, visualize_configs, visualize_epochs

SENTIMENT_BASE = ROOT / "configs" / "sentiment_mlp.toml"
SUMMARY_HEADER = ["config", "best_dev_acc", "best_epoch", "test_acc", "seconds"]


def sweep(sweep_name, key, values, names, base=SENTIMENT_BASE, data_dir=None, out="runs", overrides=()):
    """Run the base config once per value of `key`; write OUT/<sweep_name>/{summary.csv, plots}."""
    sweep_dir = Path(out) / sweep_name
    # validate every config before the first (possibly long) run starts
    configs = [load_config(base, overrides, last={key: value, "name": name}) for value, name in zip(values, names)]
    for config in configs:
        run(config, data_dir, sweep_dir)
    return draw_sweep(sweep_dir, names)


def draw_sweep(sweep_dir, names):
    """Read each run's metrics.json and (re)draw the sweep's plots and summary; no training involved."""
    sweep_dir = Path(sweep_dir)
    metrics = [json.loads((sweep_dir / n / "metrics.json").read_text()) for n in names]
    col = lambda m, k: [h[k] for h in m["history"]]
    for m in metrics:
        visualize_epochs(col(m, "train_loss"), col(m, "dev_loss"), sweep_dir / m["name"] / "loss.png",
                         f"{sweep_dir.name}: {m['name']}")
    visualize_configs([col(m, "dev_loss") for m in metrics], names, "dev loss", sweep_dir / "dev_loss.png",
                      f"{sweep_dir.name}: dev loss")
    visualize_configs([col(m, "dev_acc") for m in metrics], names, "dev accuracy", sweep_dir / "dev_acc.png",
                      f"{sweep_dir.name}: dev accuracy")
    return write_summary(sweep_dir, metrics)


def write_summary(sweep_dir, metrics):
    """summary.csv of a sweep, also printed as a table."""
    rows = [[m["name"], f"{m['best_dev_acc']:.4f}", m["best_epoch"],
             "" if m["test_acc"] is None else f"{m['test_acc']:.4f}", f"{m['seconds']:.1f}"] for m in metrics]
    write_csv(sweep_dir / "summary.csv", SUMMARY_HEADER, rows)
    print_table(SUMMARY_HEADER, rows)
    print(f"plots and summary.csv in {sweep_dir}/", flush=True)
    return metrics


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def explore_mlp_structures(data_dir=None, out="runs", overrides=()):
    dims = [[], [512], [512, 512], [512, 512, 512]]
    names = ["linear"] + ["-".join(map(str, d)) for d in dims[1:]]
    return sweep("structures", "hidden_dims", dims, names, data_dir=data_dir, out=out, overrides=overrides)


def explore_mlp_activations(data_dir=None, out="runs", overrides=()):
    acts = ["Sigmoid", "Tanh", "ReLU", "GELU"]
    return sweep("activations", "activation", acts, [a.lower() for a in acts], data_dir=data_dir, out=out,
                 overrides=[*overrides, "hidden_dims=[512]"])


def explore_mlp_learning_rates(data_dir=None, out="runs", overrides=()):
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]  # two orders of magnitude around Adam's usual 1e-3
    return sweep("learning-rates", "lr", lrs, [f"lr={lr:g}" for lr in lrs], data_dir=data_dir, out=out,
                 overrides=[*overrides, "hidden_dims=[512]"])


def explore_init(data_dir=None, out="runs", overrides=(), seeds=(0, 1, 2)):
    """Fashion-MNIST MLP under five initializations, several seeds each: mean and spread of dev accuracy."""
    inits = ["zeros", "constant", "normal", "xavier", "kaiming"]
    sweep_dir = Path(out) / "init"
    configs = [load_config(ROOT / "configs" / "fashion_init.toml", overrides,
                           last={"init": init, "seed": seed, "name": f"{init}-seed{seed}"})
               for init in inits for seed in seeds]
    metrics = [run(config, data_dir, sweep_dir) for config in configs]
    curves = {init: [[h["dev_acc"] for h in m["history"]] for m in metrics if m["config"]["init"] == init]
              for init in inits}
    plot_spread(curves, "dev accuracy", "initialization: mean and min-max over seeds", sweep_dir / "dev_acc.png")
    return write_summary(sweep_dir, metrics)


SWEEPS = {"structures": explore_mlp_structures, "activations": explore_mlp_activations,
          "learning-rates": explore_mlp_learning_rates, "init": explore_init}
