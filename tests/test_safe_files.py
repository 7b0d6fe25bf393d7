"""Run folders travel (a classmate's Drive, a Kaggle dataset, a zip): every file the toolkit reads back is
read without executing anything, and a crafted or foreign file is refused in one line, exit code 2, with
nothing else in its folder touched."""
import os

import pytest
import torch

from toolkit.checkpoint import safe_load
from toolkit.errors import UserError
from main import main
from conftest import one_error_line, tiny_run
from conftest import signal_at_call


class Payload:
    """What a crafted pickle carries: a call that runs when the file is loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def craft(path, marker):
    torch.save({"config": {"epochs": 1}, "model": Payload(marker)}, path)


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def stopped_run(tmp_path, imdb_dir, monkeypatch):
    """argv and folder of a run stopped by Ctrl-C in its second epoch (last.pt, model.pt, history.csv kept)."""
    argv = tiny_run(tmp_path, imdb_dir, epochs=3)
    signal_at_call(monkeypatch, 16)
    assert main(argv) == 130
    monkeypatch.undo()
    return argv, tmp_path / "out" / "tiny"


def test_the_toolkits_own_last_pt_reads_back_without_executing_anything(tmp_path, imdb_dir, monkeypatch):
    _, folder = stopped_run(tmp_path, imdb_dir, monkeypatch)
    state = torch.load(folder / "last.pt", weights_only=True)  # RNG states included
    assert state["epoch"] == 2 and state["rng"][0]["numpy"]["keys"].dtype == torch.int64


def test_a_crafted_last_pt_is_refused_by_resume_in_one_line_and_its_folder_left_as_it_was(tmp_path, imdb_dir,
                                                                                        monkeypatch, capsys):
    argv, folder = stopped_run(tmp_path, imdb_dir, monkeypatch)
    craft(folder / "last.pt", tmp_path / "ran")
    before = snapshot(folder)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    line = one_error_line(capsys)
    assert f"{folder / 'last.pt'}: refused" in line
    assert not (tmp_path / "ran").exists()
    assert snapshot(folder) == before


def test_a_sweep_rerun_refuses_a_crafted_last_pt_of_one_of_its_runs(tmp_path, imdb_dir, capsys):
    from conftest import swept
    argv = ["explore", "learning-rates", "--data-dir", str(imdb_dir), "--out", str(tmp_path / "out"),
            *(a for s in swept(epochs=1) for a in ("--set", s))]
    (tmp_path / "out" / "learning-rates" / "lr=0.0001").mkdir(parents=True)
    craft(tmp_path / "out" / "learning-rates" / "lr=0.0001" / "last.pt", tmp_path / "ran")
    capsys.readouterr()
    assert main(argv) == 2
    assert "last.pt: refused" in one_error_line(capsys) and not (tmp_path / "ran").exists()


@pytest.mark.parametrize("command", ["predict", "plot"])
def test_predict_and_plot_refuse_a_crafted_model_pt(tmp_path, fashion_dir, capsys, command):
    config = tmp_path / "f.toml"
    config.write_text("task = 'fashion'\nhidden_dims = [8]\nepochs = 1\ndev_size = 50\nplots = false\n")
    assert main(["run", str(config), "--data-dir", str(fashion_dir), "--out", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "f"
    craft(folder / "model.pt", tmp_path / "ran")
    before = snapshot(folder)
    capsys.readouterr()
    argv = {"predict": ["predict", str(folder), "--images", str(fashion_dir / "fashion_mnist" / "test_images.npz"),
                        "--out", str(tmp_path / "submission.csv")],
            "plot": ["plot", str(folder), "--data-dir", str(fashion_dir)]}[command]
    assert main(argv) == 2
    assert f"{folder / 'model.pt'}: refused" in one_error_line(capsys)
    assert not (tmp_path / "ran").exists() and not (tmp_path / "submission.csv").exists()
    assert snapshot(folder) == before


def test_safe_load_names_the_file_it_refuses(tmp_path):
    craft(tmp_path / "model_refit.pt", tmp_path / "ran")
    with pytest.raises(UserError, match=r"model_refit.pt: refused"):
        safe_load(tmp_path / "model_refit.pt")
    assert not (tmp_path / "ran").exists()
