"""What a run leaves for reading while it goes and for comparing afterwards: history.csv, TensorBoard events,
and probabilities.csv for Kaggle competitions scored by probability."""
import csv
import json

import numpy as np
import pytest

from toolkit import logs, train
from toolkit.config import load_config
from toolkit.run import run
from main import main
from conftest import signal_at_call, tiny

COLUMNS = ["epoch", "steps", "train_loss", "train_acc", "dev_loss", "dev_acc", "lr", "seconds"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_history_csv_has_one_row_an_epoch_with_the_numbers_of_metrics_json(imdb_dir, tmp_path):
    metrics = run(load_config(None, tiny()), imdb_dir, tmp_path)
    rows = read_csv(tmp_path / "tiny" / "history.csv")
    assert list(rows[0]) == COLUMNS
    assert [{k: float(v) for k, v in r.items()} for r in rows] == [
        {k: pytest.approx(h[k]) for k in COLUMNS} for h in metrics["history"]]


def test_history_csv_is_written_as_each_epoch_ends(imdb_dir, tmp_path, monkeypatch):
    seen = []
    end_epoch = train.end_epoch

    def reading_after(state, *args, **kwargs):  # what a user reading the file between epochs finds
        end_epoch(state, *args, **kwargs)
        seen.append(len(read_csv(tmp_path / "tiny" / "history.csv")))
    monkeypatch.setattr(train, "end_epoch", reading_after)
    run(load_config(None, tiny()), imdb_dir, tmp_path)
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("call", [4, 16])  # in epoch 1, and in epoch 2 after the first epoch's checkpoint
def test_a_resumed_run_continues_history_csv_and_its_events_without_duplicates(imdb_dir, tmp_path, monkeypatch,
                                                                             call):
    config = load_config(None, tiny())
    whole = run(config, imdb_dir, tmp_path / "whole")
    signal_at_call(monkeypatch, call)
    with pytest.raises(train.Interrupted):
        run(config, imdb_dir, tmp_path / "split")
    monkeypatch.undo()
    resumed = run(config, imdb_dir, tmp_path / "split", folder="resume")
    folder = tmp_path / "split" / "tiny"
    assert [r["epoch"] for r in read_csv(folder / "history.csv")] == ["1", "2", "3"]
    assert [(e, pytest.approx(v)) for e, v in scalars(folder, "accuracy/dev")] == [
        (h["epoch"], h["dev_acc"]) for h in whole["history"]]
    assert [float(r["dev_loss"]) for r in read_csv(folder / "history.csv")] == pytest.approx(
        [h["dev_loss"] for h in resumed["history"]])


def test_tensorboard_events_hold_each_epochs_metrics_and_the_finished_runs_hparams(imdb_dir, tmp_path):
    metrics = run(load_config(None, tiny()), imdb_dir, tmp_path)
    folder = tmp_path / "tiny"
    for tag, key in logs.SCALARS.items():
        assert scalars(folder, tag) == [(h["epoch"], pytest.approx(h[key])) for h in metrics["history"]]
    assert scalars(folder, "hparam/best_dev_acc") == [(metrics["best_epoch"], pytest.approx(metrics["best_dev_acc"]))]


def test_without_tensorboard_a_run_says_how_to_get_it_in_one_line_and_writes_everything_else(imdb_dir, tmp_path,
                                                                                           monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    logs.summary_writer_class.cache_clear()
    try:
        run(load_config(None, tiny()), imdb_dir, tmp_path)
        run(load_config(None, tiny(name="again")), imdb_dir, tmp_path)
    finally:
        logs.summary_writer_class.cache_clear()
    said = [line for line in capsys.readouterr().out.splitlines() if "tensorboard" in line]
    assert said == ["tensorboard is not installed, so no dashboard events are written (history.csv has the same "
                    "numbers): pip install tensorboard"]  # once a process, not once a run
    assert not list((tmp_path / "tiny").glob("events.out.tfevents.*"))
    assert (tmp_path / "tiny" / "history.csv").is_file() and (tmp_path / "tiny" / "metrics.json").is_file()


def test_a_binary_task_writes_the_probability_of_class_1_beside_the_submission(imdb_dir, tmp_path):
    config = load_config(None, tiny(probabilities=True))
    run(config, imdb_dir, tmp_path)
    probs = read_csv(tmp_path / "tiny" / "probabilities.csv")
    categories = read_csv(tmp_path / "tiny" / "submission.csv")
    assert list(probs[0]) == ["Id", "Probability"] and len(probs) == len(categories) == 100
    assert [r["Id"] for r in probs] == [str(i) for i in range(1, 101)]
    p = np.array([float(r["Probability"]) for r in probs])
    assert ((p >= 0) & (p <= 1)).all() and len(set(p)) > 1
    assert ((p > 0.5).astype(int) == [int(r["Category"]) for r in categories]).all()


def test_without_the_setting_no_probabilities_are_written(imdb_dir, tmp_path):
    run(load_config(None, tiny()), imdb_dir, tmp_path)
    assert not (tmp_path / "tiny" / "probabilities.csv").exists()


def test_predict_probabilities_writes_one_column_per_class_whose_rows_sum_to_1(fashion_dir, tmp_path, capsys):
    config = tmp_path / "f.toml"
    config.write_text("task = 'fashion'\nhidden_dims = [16]\nepochs = 1\ndev_size = 50\nplots = false\n")
    assert main(["run", str(config), "--data-dir", str(fashion_dir), "--out", str(tmp_path / "out")]) == 0
    images = fashion_dir / "fashion_mnist" / "test_images.npz"
    out = tmp_path / "kaggle" / "submission.csv"
    out.parent.mkdir()
    assert main(["predict", str(tmp_path / "out" / "f"), "--images", str(images), "--out", str(out),
                 "--probabilities"]) == 0
    assert "and " + str(out.with_name("probabilities.csv")) in capsys.readouterr().out
    rows = read_csv(out.with_name("probabilities.csv"))
    classes = json.loads((tmp_path / "out" / "f" / "metrics.json").read_text())["classes"]
    assert list(rows[0]) == ["Id", *classes] and len(classes) == 10
    p = np.array([[float(r[c]) for c in classes] for r in rows])
    assert p.sum(1) == pytest.approx(np.ones(len(rows)), abs=1e-5)
    assert (p.argmax(1) == [int(r["Category"]) for r in read_csv(out)]).all()
