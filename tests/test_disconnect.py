"""A notebook's kernel that dies (a Colab disconnect, a time-out, Runtime > Restart) loses at most the training
since its last save (checkpoint_minutes; here 0, every epoch) and the epoch in progress: calling the same main.*
function again, as running the notebook again from the top does, continues each interrupted run from its
last.pt and skips each finished one, and ends as if nothing had happened."""
import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebook_cell(out, data_dir, die_at=None):
    """main.run_config then a sweep, as the notebook calls them, in a fresh Python process; die_at=N kills that
    process with SIGKILL at its N-th training batch, as a dead kernel stops, with no chance to save."""
    code = textwrap.dedent(f"""
        import os, signal
        from toolkit import train
        if {die_at!r}:
            calls, take = [0], train.take
            def dying(x, idx):
                calls[0] += 1
                if calls[0] == {die_at!r}:
                    os.kill(os.getpid(), signal.SIGKILL)
                return take(x, idx)
            train.take = dying
        import main
        # refit off: its batches would shift the counts below (a refit has no last.pt: a kill in it trains again)
        settings = dict(epochs=3, max_train=120, dev_size=50, plots=False, device="cpu", checkpoint_minutes=0,
                        refit=False)
        main.run_config("configs/fashion_mlp.toml", data_dir={str(data_dir)!r}, out={str(out)!r}, **settings)
        main.explore_mlp_learning_rates(data_dir={str(data_dir)!r}, out={str(out)!r}, epochs=2, max_train=60,
                                        dev_size=50, hidden_dims=[8], min_df=1, plots=False, device="cpu",
                                        checkpoint_minutes=0)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def history(path):
    rows = list(csv.DictReader(open(path, newline="")))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def results(out):
    runs = sorted(p.parent for p in Path(out).glob("**/metrics.json"))
    epochs = lambda p: json.loads((p / "metrics.json").read_text())["history"]
    return {str(p.relative_to(out)): ([{k: v for k, v in h.items() if "seconds" not in k} for h in epochs(p)],
                                      (p / "submission.csv").read_text(), history(p / "history.csv")) for p in runs}


def test_a_killed_kernel_loses_at_most_an_epoch_and_a_second_pass_ends_as_an_uninterrupted_one(
        imdb_dir, fashion_dir, tmp_path):
    assert imdb_dir == fashion_dir
    whole = notebook_cell(tmp_path / "whole", imdb_dir)
    assert whole.returncode == 0, whole.stderr
    # one training batch an epoch: the Fashion-MNIST run's batches are calls 1-3, the sweep's first run's 4-5
    for die_at, skipped in ((2, False), (7, True)):  # in the run's 2nd epoch; in the sweep's 2nd run's 2nd epoch
        out = tmp_path / f"died-{die_at}"
        died = notebook_cell(out, imdb_dir, die_at=die_at)
        assert died.returncode == -signal.SIGKILL
        again = notebook_cell(out, imdb_dir)
        assert again.returncode == 0, again.stderr
        assert "resuming" in again.stdout and ("finished before, skipped" in again.stdout) == skipped
        assert results(out) == results(tmp_path / "whole")
