import subprocess
import sys

import pytest

from toolkit import plots
from toolkit.data import ROOT
from toolkit.plots import visualize_configs, visualize_epochs


@pytest.fixture
def drawn(monkeypatch):
    """Each figure as it is saved, to inspect what was drawn."""
    figures, save = [], plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or save(fig, path))
    return figures


def test_drawing_leaves_a_notebooks_matplotlib_backend_and_figures_as_they_were(tmp_path):
    code = ("import matplotlib, matplotlib.pyplot as plt; from toolkit import plots; "
            f"plots.visualize_epochs([1, 0.5], [1, 0.7], {str(tmp_path / 'loss.png')!r}); "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); assert plt.get_fignums() == []")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"MPLBACKEND": "svg", "PATH": ""})  # a backend the user chose
    assert done.returncode == 0, done.stderr[-800:]
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_visualize_epochs_writes_a_png_with_train_and_dev_lines(tmp_path, drawn):
    visualize_epochs([0.7, 0.4, 0.3], [0.6, 0.5, 0.55], tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "dev"]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss" and ax.get_title()


def test_visualize_configs_draws_one_line_per_config(tmp_path, drawn):
    stats = [[0.8, 0.85], [0.7, 0.9, 0.91], [0.6]]
    visualize_configs(stats, ["a", "b", "c"], "dev accuracy", tmp_path / "acc.png")
    assert (tmp_path / "acc.png").stat().st_size > 0
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ax.get_ylabel() == "dev accuracy"


def test_axis_limits_follow_the_data_so_no_curve_is_clipped(tmp_path, drawn):
    visualize_configs([[5.0, 40.0], [0.001, 0.002]], ["big", "small"], "dev loss", tmp_path / "loss.png")
    low, high = drawn[0].axes[0].get_ylim()
    assert low < 0.001 and high > 40.0


def test_no_temporary_files_are_left_beside_the_plot(tmp_path):
    visualize_epochs([1, 0.5], [1, 0.7], tmp_path / "loss.png")
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_a_spread_over_seeds_takes_seeds_that_stopped_early(tmp_path, drawn):
    # a seed that diverged, or ran out of its time budget, has fewer epochs than the others
    plots.plot_spread({"lr=0.1": [[0.5, 0.7, 0.8], [0.4, 0.6]], "lr=1": [[0.3]]}, "dev accuracy", "t",
                      tmp_path / "spread.png")
    lines = drawn[0].axes[0].get_lines()
    assert list(lines[0].get_ydata()) == pytest.approx([0.45, 0.65, 0.8]) and list(lines[1].get_ydata()) == [0.3]


def test_a_run_that_diverged_after_one_epoch_is_a_crossed_point_not_a_baseline(tmp_path, drawn):
    visualize_configs([[0.8, 0.85, 0.9], [0.6], [0.3]], ["a", "nb-logreg", "huge"], "dev accuracy",
                      tmp_path / "acc.png", marked=["huge"])
    ax = drawn[0].axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    crossed = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [0.6, 0.6]  # the baseline fitted once
    assert len(crossed) == 1 and list(crossed[0].get_ydata()) == [0.3]


@pytest.mark.parametrize("k", [2, 10, 100])
def test_a_confusion_matrix_names_every_class_in_readable_type_from_2_to_100_classes(tmp_path, drawn, k):
    names = [f"class {i}" for i in range(k)]
    plots.plot_confusion([i % k for i in range(3 * k)], [(i + 1) % k for i in range(3 * k)], names,
                         tmp_path / "confusion.png")
    fig, ax = drawn[0], drawn[0].axes[0]
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == names and [t.get_text() for t in ax.get_yticklabels()] == names
    assert min(t.get_fontsize() for t in labels) >= 5 and max(fig.get_size_inches()) <= 16
