"""Colab on its own terms: a set-up cell that clones and installs or stops with one line, a kernel left as the
user had it, a Drive that keeps a few files rather than gigabytes, runs that continue on another GPU kind or
precision, and the GPU config's one compiled batch shape."""
import base64
import os
import subprocess
import sys
import zipfile

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from conftest import signal_at_call, swept, tiny
from main import main
from toolkit import checkpoint, state, steps, train
from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.run import run
from toolkit.sweeps import sweep

NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def setup_cell(repo):
    """The notebook's set-up cell, its REPO field set as a user sets it in Colab's form."""
    cell = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.source.startswith("REPO ="))
    return cell.source.replace('REPO = ""', f"REPO = {repo!r}", 1)


def execute(cells, cwd):
    """The cells' error outputs (as a user sees them) after running them in a fresh kernel in cwd."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return [o for c in nb.cells for o in c.outputs if o.output_type == "error"], nb


def test_the_setup_cell_with_an_empty_repo_field_stops_with_one_line_saying_what_to_put_there(tmp_path):
    errors, _ = execute([setup_cell("")], tmp_path)
    assert [e.traceback for e in errors] == [["set-up stopped: REPO is empty: put your GitHub copy of this "
                                              "repository there (OWNER/REPO) and run again"]]


FAKE_COLAB_SECRETS = """
import sys, types
colab = types.ModuleType("google.colab")
colab.userdata = types.SimpleNamespace(get=lambda name: "SECRET-TOKEN-123")  # Colab's secrets, as a private repo has
sys.modules["google"], sys.modules["google.colab"] = types.ModuleType("google"), colab
"""


def test_a_failing_install_stops_the_setup_cell_with_one_line_naming_the_step_and_the_token_stays_secret(tmp_path):
    repo = tmp_path / "copy"
    repo.mkdir()
    (repo / "main.py").write_text("")
    (repo / "requirements.txt").write_text("./nowhere\n")  # a requirement pip cannot install
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    (tmp_path / "colab").mkdir()
    errors, nb = execute([FAKE_COLAB_SECRETS, setup_cell(str(repo))], tmp_path / "colab")
    [error] = errors
    assert len(error.traceback) == 1 and error.traceback[0].startswith(
        "set-up stopped: pip install -r requirements.txt failed: ERROR: Invalid requirement: './nowhere'")
    clone = tmp_path / "colab" / "classifier-toolkit"
    assert (clone / "main.py").is_file()  # the clone before it worked
    basic = base64.b64encode(b"x-access-token:SECRET-TOKEN-123").decode()  # as git's header carries it
    for text in ((clone / ".git" / "config").read_text(), str([c.outputs for c in nb.cells])):
        assert "SECRET-TOKEN" not in text and basic not in text


def test_a_user_mistake_in_a_cell_is_one_line_in_the_notebooks_words(tmp_path):
    errors, _ = execute([f"import sys; sys.path.insert(0, {str(ROOT)!r}); import main",
                         "main.run_config('configs/fashion_mlp.toml', lr=-1.0)"], tmp_path)
    assert [e.traceback for e in errors] == [["error: lr=-1.0: 'lr' = -1.0 is out of range (must be > 0)"]]


def test_the_notebook_functions_leave_the_kernel_as_the_user_had_it(fashion_dir, tmp_path):
    code = f"""
import os, matplotlib, torch, main
main.run_config("configs/fashion_mlp.toml", data_dir={str(fashion_dir)!r}, out={str(tmp_path)!r}, epochs=1,
                dev_size=50, hidden_dims=[8], device="cpu", deterministic=True)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()  # the user's backend, not Agg
assert not torch.are_deterministic_algorithms_enabled()  # deterministic=True lasted the call
assert "THP_MEM_ALLOC_ENABLE" not in os.environ and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
"""
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "CUBLAS_WORKSPACE_CONFIG")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "MPLBACKEND": "svg"})
    assert done.returncode == 0, done.stderr[-1500:]


def test_hand_over_puts_every_submission_in_one_zip(tmp_path):
    from toolkit.notebook import hand_over
    for run_name in ("fashion_mlp", "spooky/texts"):
        (tmp_path / run_name).mkdir(parents=True)
        (tmp_path / run_name / "submission.csv").write_text("Id,Category\n1,0\n")
    with zipfile.ZipFile(hand_over(tmp_path)) as z:
        assert sorted(z.namelist()) == ["fashion_mlp.csv", "spooky-texts.csv"]


# ---------------------------------------------------------------- what goes to the Drive

def saves(monkeypatch):
    """Every last.pt and model.pt written, as a list of file names."""
    written, torch_save = [], checkpoint.torch_save
    monkeypatch.setattr(checkpoint, "torch_save", lambda obj, path: written.append(path.name) or torch_save(obj, path))
    return written


def test_a_run_saves_its_state_by_time_not_at_every_epoch(imdb_dir, tmp_path, monkeypatch):
    written = saves(monkeypatch)
    run(load_config(None, tiny(epochs=3, checkpoint_minutes=5)), imdb_dir, tmp_path / "by-time")  # within 5 minutes
    assert written == ["model.pt"]  # the best weights once, at the end; no last.pt to write and delete
    written.clear()
    run(load_config(None, tiny(epochs=3, checkpoint_minutes=0)), imdb_dir, tmp_path / "every-epoch")
    assert written.count("last.pt") == 3 and written.index("model.pt") < written.index("last.pt")


def test_a_sweeps_runs_keep_their_metrics_and_plots_but_no_weights(imdb_dir, tmp_path, monkeypatch, capsys):
    written = saves(monkeypatch)
    sweep("s", "lr", [0.01, 0.02], ["a", "b"], base=None, data_dir=imdb_dir, out=tmp_path,
          overrides=swept(epochs=2, checkpoint_minutes=5))
    assert written == []
    assert sorted(p.name for p in (tmp_path / "s" / "a").iterdir() if not p.name.startswith("events")) == \
        [".lock", "accuracy.png", "confusion.png", "history.csv", "loss.png", "metrics.json", "submission.csv"]
    assert main(["plot", str(tmp_path / "s" / "a"), "--data-dir", str(imdb_dir)]) == 2
    assert "kept no weights (keep_weights = false, as in a sweep)" in capsys.readouterr().err


# ---------------------------------------------------------------- another GPU kind, another precision

def on_a_machine(monkeypatch, precision):
    """This process as a machine whose autocast runs in `precision` (None: fp32), its data loaded afresh."""
    import toolkit.tensors
    for module in (state, steps, toolkit.tensors):
        monkeypatch.setattr(module, "amp_dtype", lambda device, enabled: precision if enabled else None)
    toolkit.tensors.forget()


@pytest.mark.parametrize("first, then", [(None, torch.float16), (torch.float16, None)])
def test_a_run_resumed_in_another_precision_continues_and_says_what_changed(fashion_dir, tmp_path, monkeypatch,
                                                                             capsys, first, then):
    # fp16 on the CPU stands in for a T4 (fp16 with a grad scaler); None for a CPU without bf16 (fp32, no scaler)
    config = load_config(None, ["task='fashion'", "dev_size=50", "epochs=2", "batch_size=32", "hidden_dims=[16]",
                                "device='cpu'", "name='tiny'", "checkpoint_minutes=0", "amp=true",
                                "optimizer='momentum'", "lr=0.01"])
    on_a_machine(monkeypatch, first)
    signal_at_call(monkeypatch, 9)  # in epoch 2 (5 training batches and 1 of dev an epoch), after epoch 1's save
    with pytest.raises(train.Interrupted):
        run(config, fashion_dir, tmp_path)
    monkeypatch.undo()
    on_a_machine(monkeypatch, then)
    resumed = run(config, fashion_dir, tmp_path, folder="resume")
    was, now = (str(p or torch.float32).removeprefix("torch.") for p in (first, then))
    assert f"resuming on cpu in {now}; trained so far on cpu in {was}" in capsys.readouterr().out
    assert [h["precision"] for h in resumed["history"]] == [was, now] and resumed["best_epoch"] is not None


def test_where_the_precision_picks_the_net_a_resume_elsewhere_says_what_to_do(cifar_dir, tmp_path, monkeypatch):
    import toolkit.run
    from toolkit.errors import UserError
    config = load_config(None, ["task='cifar10'", "model='cnn'", "widths=[8, 16]", "amp_widths=[8, 32]", "amp=true",
                                "dev_size=50", "epochs=2", "batch_size=50", "device='cpu'", "name='cnn'",
                                "checkpoint_minutes=0", "optimizer='nesterov'", "lr=0.05"])
    monkeypatch.setattr(toolkit.run, "amp_dtype", lambda device, enabled: torch.bfloat16 if enabled else None)
    signal_at_call(monkeypatch, 5)
    with pytest.raises(train.Interrupted):
        run(config, cifar_dir, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(toolkit.run, "amp_dtype", lambda device, enabled: None)  # a machine without bf16
    with pytest.raises(UserError, match=r"the net is amp_widths \[8, 32\] where autocast runs and widths elsewhere, "
                                        r"and it trained as \[8, 32\]: continue it where the precision is as it was"):
        run(config, cifar_dir, tmp_path, folder="resume")


# ---------------------------------------------------------------- the GPU config

def test_a_gpu_config_epoch_trains_in_one_batch_shape_so_it_compiles_once(cifar_dir, tmp_path, monkeypatch):
    shapes, step = [], train.train_step
    monkeypatch.setattr(train, "train_step", lambda model, opt, scaler, crit, xb, yb, amp:
                        shapes.append(tuple(xb.shape)) or step(model, opt, scaler, crit, xb, yb, amp))
    config = load_config(ROOT / "configs/cifar10_cnn_gpu.toml", ["epochs=2", "device='cpu'", "compile=false",
                                                                 "dev_size=50", "batch_size=64"])
    metrics = run(config, cifar_dir, tmp_path)
    assert set(shapes) == {(64, 3, 32, 32)} and len(shapes) == 2 * (150 // 64)  # the last 22 images left out
    assert metrics["train_examples"] == 150 and len(metrics["history"]) == 2
