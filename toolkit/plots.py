"""Plots, all drawn from saved numbers (metrics.json / summary), so any of them can be redrawn without training.

Figures are matplotlib's Figure objects, drawn to files without pyplot: no backend is chosen for the process,
so a notebook's own plt.show() keeps working, and no figure is left open.
"""
import numpy as np
import torch
from matplotlib.figure import Figure

from toolkit.files import atomic_path


def figure(figsize):
    """(figure, axes) that belong to no window and no pyplot state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def plot_curves(curves, ylabel, title, path, marked=()):
    """One line per name in `curves` ({name: per-epoch values}); axis limits follow the data (nothing clipped).
    Names in `marked` (e.g. diverged runs) get a cross at their last point; a single value beside longer
    curves (a baseline fitted once, as the sweeps' nb-logreg row) is a dashed level line, unless marked: a run
    that diverged in its second epoch has one value too."""
    fig, ax = figure((6.4, 4.2))
    longest = max(map(len, curves.values()), default=0)
    for name, values in curves.items():
        if len(values) == 1 and longest > 1 and name not in marked:
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
    """Counts of (true, predicted) class pairs, names on both axes, as scikit-learn's ConfusionMatrixDisplay
    draws them; drawn here on one matplotlib axes because importing scikit-learn for it slows every run. The
    figure grows with the classes up to 16 inches, then the cells shrink: with many classes the counts give
    way to the colour scale and the names to a smaller type, so 100 classes still read."""
    k = len(class_names)
    counts = np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)
    side = min(1.2 + 0.55 * k, 16)
    fig, ax = figure((side, side))
    shown = ax.imshow(counts, cmap="viridis")
    if k <= 20:
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, n, ha="center", va="center", fontsize=7, color="black" if n > counts.max() / 2 else "white")
    else:
        fig.colorbar(shown, ax=ax, shrink=0.6, label="dev examples")
    size = min(9, 0.6 * 72 * side / k)  # points: six tenths of a row's height
    ax.set(xticks=range(k), yticks=range(k), xlabel="Predicted label", ylabel="True label", title=title)
    ax.set_xticklabels(class_names, rotation=45 if k <= 20 else 90, ha="right" if k <= 20 else "center", fontsize=size)
    ax.set_yticklabels(class_names, fontsize=size)
    save(fig, path)


def plot_image_grid(images, y_true, y_pred, class_names, path, cols=8, title="dev images: predicted (true)"):
    """Images ([N, H, W] or [N, H, W, 3], values in [0, 1]) with their predicted and true labels; mistakes in
    red. One mosaic on one axes: 32 separate axes are slow to draw."""
    n, h, w = images.shape[:3]
    rows, gap = -(-n // cols), max(h // 2, 6)  # the gap above each row holds the labels
    mosaic = np.ones((rows * (h + gap), cols * (w + 2), *images.shape[3:]))
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap) + gap:(r + 1) * (h + gap), c * (w + 2) + 1:c * (w + 2) + 1 + w] = image
    fig, ax = figure((1.6 * cols, 1.8 * rows))
    ax.imshow(mosaic, cmap="gray" if images.ndim == 3 else None, vmin=0, vmax=1)
    ax.axis("off")
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        r, c = divmod(i, cols)
        ok = t == p
        ax.text(c * (w + 2) + 1 + w / 2, r * (h + gap) + gap - 1, class_names[p] if ok else
                f"{class_names[p]}\n({class_names[t]})", ha="center", va="bottom", fontsize=7,
                color="black" if ok else "red")
    ax.set_title(title)
    save(fig, path)


def plot_spread(runs, ylabel, title, path):
    """{name: [per-seed per-epoch values]}: mean line and min-max band over seeds per name. A seed that stopped
    early (diverged, or ran out of its time budget) counts in the epochs it has."""
    fig, ax = figure((6.4, 4.2))
    for name, curves in runs.items():
        values = np.full((len(curves), max(map(len, curves))), np.nan)
        for row, curve in zip(values, curves):
            row[:len(curve)] = curve
        epochs = np.arange(1, values.shape[1] + 1)
        line, = ax.plot(epochs, np.nanmean(values, 0), marker="o", markersize=3, label=f"{name} ({len(values)} seeds)")
        ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_dev_predictions(x_dev, y_dev, preds, meta, out_dir):
    """Confusion matrix of the best model on dev, and for images a grid of the first 32 with mistakes marked."""
    y_dev = y_dev.cpu().numpy()
    plot_confusion(y_dev, preds.numpy(), meta["classes"], out_dir / "confusion.png")
    if x_dev.dim() == 4:
        mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
        images = (x_dev[:32].float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).squeeze(-1).numpy()
        plot_image_grid(images, y_dev[:32], preds[:32].numpy(), meta["classes"], out_dir / "predictions.png")
