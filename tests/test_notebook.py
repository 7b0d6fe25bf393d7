"""notebooks/colab.ipynb: committed without outputs, and run top to bottom in smoke mode on generated data,
in a copy of the repository (so its runs and feature cache land in the test's folder, not the project's)."""
import csv
import json
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import text_competition

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def test_committed_notebook_carries_no_outputs():
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells and all(c["outputs"] == [] and c["execution_count"] is None for c in cells)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_notebook_runs_every_part_in_smoke_mode_and_writes_a_submission_per_task_and_competition(
        imdb_dir, fashion_dir, cifar_dir, tmp_path, monkeypatch):
    assert imdb_dir == fashion_dir == cifar_dir  # one folder with all three
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".*", "data", "runs", "plots", "tests", "__pycache__"))
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("DATA_DIR", str(imdb_dir))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "drive" / "runs"))  # stands in for Google Drive
    text_competition(tmp_path / "drive" / "spooky")
    monkeypatch.setenv("COMPETITION_DIR", str(tmp_path / "drive" / "spooky"))  # a competition's files on Drive
    nb = nbformat.read(repo / "notebooks" / "colab.ipynb", as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(repo / "notebooks")}}).execute()  # a cell error raises

    assert not (repo / "runs").exists()
    out = tmp_path / "drive" / "runs" / "smoke"
    for run, test_size in (("sentiment_mlp", 100), ("fashion_mlp", 40), ("cifar10_cnn", 30)):
        submission = rows(out / run / "submission.csv")
        assert submission[0] == ["Id", "Category"] and len(submission) == 1 + test_size  # the whole test set
        assert json.loads((out / run / "metrics.json").read_text())["config"]["max_train"] == 400
        assert len(rows(out / run / "history.csv")) == 1 + 1  # header, the one smoke epoch
    own = rows(out / "spooky" / "texts" / "submission.csv")
    assert own[0] == ["id", "label"] and len(own) == 1 + 60  # the sample's form, every test text
    for sweep, configs in (("structures", 4), ("activations", 4), ("learning-rates", 5)):
        assert len(rows(out / sweep / "summary.csv")) == 1 + configs + 1  # header, MLPs, nb-logreg
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert text.count("data:image/png;base64") >= 3 * 6 + 4 * 4 + 2  # sweeps, runs and theory shown inline
    assert "cpu_capability" in text and "epoch 1:" in text
