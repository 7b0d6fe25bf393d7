"""Plots, all drawn from saved numbers (metrics.json / summary), so any of them can be redrawn without training."""
import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from files import atomic_path


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(curves, ylabel, title, path, marked=()):
    """One line per name in `curves` ({name: per-epoch values}); axis limits follow the data (nothing clipped).
    Names in `marked` (e.g. diverged runs) get a cross at their last point."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in curves.items():
        epochs = np.arange(1, len(values) + 1)
        line, = ax.plot(epochs, values, marker="o", markersize=3, label=name)
        if name in marked and len(values):
            ax.plot(epochs[-1], values[-1], "x", color=line.get_color(), markersize=10)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.margins(x=0.03, y=0.08)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def visualize_epochs(train_losses, dev_losses, path, title="train vs dev loss"):
    """Train and dev loss over epochs for one configuration."""
    plot_curves({"train": train_losses, "dev": dev_losses}, "loss", title, path)


def visualize_configs(all_stats, names, metric_name, path, title=None):
    """One metric (per-epoch lists in all_stats) across configurations, one line each."""
    plot_curves(dict(zip(names, all_stats)), metric_name, title or f"{metric_name} across configurations", path)


def plot_run(history, out_dir, name):
    """loss.png and accuracy.png of one run: train vs dev per epoch."""
    col = lambda key: [h[key] for h in history]
    visualize_epochs(col("train_loss"), col("dev_loss"), out_dir / "loss.png", f"{name}: loss")
    plot_curves({"train": col("train_acc"), "dev": col("dev_acc")}, "accuracy", f"{name}: accuracy",
                out_dir / "accuracy.png")
