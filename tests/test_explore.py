import csv
import json
import math

import pytest

from toolkit.errors import UserError
from toolkit.sweeps import explore_init, explore_mlp_activations, explore_mlp_learning_rates, explore_mlp_structures
from main import main


def test_structures_sweep_writes_one_loss_plot_per_config_two_summary_plots_and_a_table(imdb_dir, tmp_path, capsys):
    metrics = explore_mlp_structures(imdb_dir, tmp_path, ["epochs=2", "dev_size=100", "min_df=1", "batch_size=64"])
    assert all(m["config"]["self_train"] == 0 and not m["config"]["refit"] for m in metrics)  # training texts only
    assert all(m["config"]["interpolate"] == 0 for m in metrics[:-1])  # the MLPs alone
    sweep = tmp_path / "structures"
    names = ["linear", "512", "512-512", "512-512-512", "nb-logreg"]  # the linear baseline row comes last
    assert all((sweep / n / "loss.png").stat().st_size > 0 for n in names)
    assert (sweep / "dev_loss.png").is_file() and (sweep / "dev_acc.png").is_file()
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["config", "best_dev_acc", "best_epoch", "test_acc", "seconds"]
    assert [r[0] for r in rows[1:]] == names
    assert "512-512-512" in capsys.readouterr().out


def test_sweep_plots_can_be_redrawn_from_saved_metrics_without_training(imdb_dir, tmp_path):
    explore_mlp_structures(imdb_dir, tmp_path, ["epochs=1", "dev_size=100", "min_df=1"])
    (tmp_path / "structures" / "dev_acc.png").unlink()
    summary = (tmp_path / "structures" / "summary.csv").read_text()
    assert main(["plot", str(tmp_path / "structures")]) == 0
    assert (tmp_path / "structures" / "dev_acc.png").is_file()
    order = lambda text: [row.split(",")[0] for row in text.splitlines()]
    assert order((tmp_path / "structures" / "summary.csv").read_text()) == order(summary)  # the sweep's order


def test_plot_of_a_folder_that_is_not_there_is_one_line_and_makes_no_folder(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nonexist")]) == 2
    assert "nonexist: no such folder" in capsys.readouterr().err and not (tmp_path / "nonexist").exists()


def test_plot_of_the_results_folder_itself_is_refused_and_writes_nothing_there(tmp_path, capsys):
    (tmp_path / "fashion_mlp").mkdir()
    (tmp_path / "fashion_mlp" / "metrics.json").write_text("{}")  # a run's folder inside: not a sweep's runs
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither a run's folder (no metrics.json) nor a finished sweep's" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fashion_mlp"]


@pytest.mark.parametrize("sweep, setting", [(explore_mlp_learning_rates, "lr=1e-3"),
                                            (explore_mlp_activations, "activation='ReLU'"),
                                            (explore_mlp_structures, "name='mine'"),
                                            (explore_init, "seed=3")])
def test_a_sweep_refuses_a_setting_it_makes_itself_rather_than_ignore_it(sweep, setting, tmp_path):
    with pytest.raises(UserError, match=f"--set {setting}: this sweep sets {setting.split('=')[0]} itself"):
        sweep(None, tmp_path, [setting])
    assert list(tmp_path.iterdir()) == []


def test_init_sweep_runs_every_initialization_for_every_seed(fashion_dir, tmp_path):
    metrics = explore_init(fashion_dir, tmp_path, ["epochs=1", "dev_size=50", "hidden_dims=[8]"], seeds=(0, 1))
    assert sorted(m["name"] for m in metrics) == sorted(f"{i}-seed{s}" for i in
                                                        ["zeros", "constant", "normal", "xavier", "kaiming"]
                                                        for s in (0, 1))
    assert (tmp_path / "init" / "dev_acc.png").stat().st_size > 0


def test_theory_exploration_writes_the_written_parts_answers_checked_against_autograd(tmp_path):
    assert main(["explore", "theory", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "theory" / "theory.json").read_text())
    assert results["softmax_jacobian_max_abs_err"] < 1e-12 and results["ce_grad_max_abs_err"] < 1e-12
    graph = results["graph"]  # f(x, y, z) = ln x + exp(y) z at (1, 3, 2)
    assert graph["f"] == pytest.approx(2 * math.exp(3)) and graph["df_dx"] == pytest.approx(1)
    assert graph["df_dy"] == pytest.approx(2 * math.exp(3)) and graph["df_dz"] == pytest.approx(math.exp(3))


def test_the_activations_sweep_uses_one_hidden_layer_of_512_unless_told_otherwise(imdb_dir, tmp_path):
    args = ["epochs=1", "dev_size=100", "min_df=1"]
    metrics = explore_mlp_activations(imdb_dir, tmp_path / "a", args)
    assert {tuple(m["config"]["hidden_dims"]) for m in metrics[:-1]} == {(512,)}  # the last row: nb-logreg
    assert {m["config"]["max_features"] for m in metrics} == {200000}  # the sweeps' own, not sentiment_mlp's
    metrics = explore_mlp_activations(imdb_dir, tmp_path / "b", [*args, "hidden_dims=[16]"])
    assert {tuple(m["config"]["hidden_dims"]) for m in metrics[:-1]} == {(16,)}
