"""Plots, all drawn from saved numbers (metrics.json / summary), so any of them can be redrawn without training."""
import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from files import atomic_path


def save(fig, path):
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)  # also when the write failed: a sweep would otherwise keep every figure open


def plot_curves(curves, ylabel, title, path, marked=()):
    """One line per name in `curves` ({name: per-epoch values}); axis limits follow the data (nothing clipped).
    Names in `marked` (e.g. diverged runs) get a cross at their last point; a single value beside longer
    curves (a baseline fitted once, as the sweeps' nb-logreg row) is a dashed level line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    longest = max(map(len, curves.values()), default=0)
    for name, values in curves.items():
        if len(values) == 1 and longest > 1:
            ax.axhline(values[0], linestyle="--", color="gray", label=name)
            continue
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


def visualize_configs(all_stats, names, metric_name, path, title=None, marked=()):
    """One metric (per-epoch lists in all_stats) across configurations, one line each; `marked` names (runs
    that diverged) end in a cross."""
    plot_curves(dict(zip(names, all_stats)), metric_name, title or f"{metric_name} across configurations", path,
                marked)


def plot_run(history, out_dir, name):
    """loss.png and accuracy.png of one run: train vs dev per epoch."""
    col = lambda key: [h[key] for h in history]
    visualize_epochs(col("train_loss"), col("dev_loss"), out_dir / "loss.png", f"{name}: loss")
    plot_curves({"train": col("train_acc"), "dev": col("dev_acc")}, "accuracy", f"{name}: accuracy",
                out_dir / "accuracy.png")


def plot_confusion(y_true, y_pred, class_names, path, title="confusion matrix (dev)"):
    """scikit-learn's confusion matrix with class names on both axes."""
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(class_names),) * 2)
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=range(len(class_names)),
                                            display_labels=class_names, ax=ax, colorbar=False,
                                            xticks_rotation=45)
    ax.set_title(title)
    save(fig, path)


def plot_image_grid(images, y_true, y_pred, class_names, path, cols=8, title="dev images: predicted (true)"):
    """Images ([N, H, W] or [N, H, W, 3], values in [0, 1]) with their predicted and true labels; mistakes in red."""
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p in zip(axes.flat, images, y_true, y_pred):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ok = t == p
        ax.set_title(class_names[p] if ok else f"{class_names[p]}\n({class_names[t]})", fontsize=7,
                     color="black" if ok else "red")
    fig.suptitle(title)
    save(fig, path)


def plot_spread(runs, ylabel, title, path):
    """{name: [per-seed per-epoch values]}: mean line and min-max band over seeds per name."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curves in runs.items():
        values = np.array(curves, dtype=float)
        epochs = np.arange(1, values.shape[1] + 1)
        line, = ax.plot(epochs, values.mean(0), marker="o", markersize=3, label=f"{name} ({len(values)} seeds)")
        ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)
