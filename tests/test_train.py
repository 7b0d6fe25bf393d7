import csv
import inspect
import json
import subprocess
import sys

import pytest
import torch

from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.models import build_model
from toolkit.run import run
from toolkit.tensors import load_task
from toolkit.steps import evaluate, join_rows, take


def tiny(**changes):
    """A small, fast sentiment config: 400 generated reviews, 100 held out for dev."""
    sets = {"dev_size": 100, "epochs": 4, "batch_size": 32, "hidden_dims": [16], "lr": 0.01, "min_df": 1,
            "device": "cpu", "name": "tiny", **changes}
    return load_config(None, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sets.items()])


def test_training_on_generated_reviews_reaches_high_accuracy(imdb_dir, tmp_path):
    metrics = run(tiny(), imdb_dir, tmp_path / "runs")
    assert metrics["best_dev_acc"] >= 0.95
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_a_run_writes_metrics_checkpoint_plots_and_submission(imdb_dir, tmp_path):
    out = tmp_path / "runs" / "tiny"
    metrics = run(tiny(), imdb_dir, tmp_path / "runs")
    saved = json.loads((out / "metrics.json").read_text())
    assert metrics.pop("run_dir") == str(out)  # where the run wrote: returned, not saved (folders move)
    assert saved == json.loads(json.dumps(metrics))
    assert saved["config"]["lr"] == 0.01 and saved["seed"] == 0 and "torch" in saved["versions"]
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3, 4]
    assert set(saved["history"][0]) >= {"epoch", "train_loss", "train_acc", "dev_loss", "dev_acc", "seconds"}
    assert saved["best_dev_acc"] == max(h["dev_acc"] for h in saved["history"])
    assert saved["test_acc"] is None  # the generated test file has no labels
    for name in ("model.pt", "loss.png", "accuracy.png", "submission.csv"):
        assert (out / name).stat().st_size > 0


def test_submission_has_kaggle_header_ids_from_one_and_class_indices(imdb_dir, tmp_path):
    run(tiny(), imdb_dir, tmp_path / "runs")
    with open(tmp_path / "runs" / "tiny" / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 101))
    assert {r[1] for r in rows[1:]} <= {"0", "1"}


def test_reloaded_checkpoint_predicts_identically(imdb_dir, tmp_path):
    config = tiny()
    run(config, imdb_dir, tmp_path / "runs")
    data = load_task(config, imdb_dir, torch.device("cpu"))
    checkpoint = torch.load(tmp_path / "runs" / "tiny" / "model.pt", weights_only=True)
    model = build_model(checkpoint["config"], checkpoint["meta"])
    model.load_state_dict(checkpoint["model"])
    _, dev_acc, _ = evaluate(model, *data["dev"], config)
    assert dev_acc == checkpoint["dev_acc"]
    _, _, preds = evaluate(model, data["test"][0], None, config)
    with open(tmp_path / "runs" / "tiny" / "submission.csv") as f:
        assert [int(line.split(",")[1]) for line in f.readlines()[1:]] == preds.tolist()


def test_same_seed_gives_identical_history(imdb_dir, tmp_path):
    strip = lambda m: [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in m["history"]]
    a = run(tiny(), imdb_dir, tmp_path / "a")
    b = run(tiny(), imdb_dir, tmp_path / "b")
    assert strip(a) == strip(b)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("scheduler", ["constant", "exponential", "cosine", "onecycle"])
def test_every_optimizer_and_scheduler_trains(imdb_dir, tmp_path, optimizer, scheduler):
    lr = 0.5 if optimizer in ("sgd", "momentum", "nesterov") else 0.01
    metrics = run(tiny(optimizer=optimizer, scheduler=scheduler, lr=lr, epochs=2), imdb_dir, tmp_path)
    assert metrics["history"][-1]["train_loss"] < 0.7  # below chance-level cross-entropy (ln 2)


def test_take_selects_the_same_rows_of_sparse_and_dense_matrices():
    torch.manual_seed(0)
    dense = torch.rand(9, 7) * (torch.rand(9, 7) < 0.4)
    idx = torch.tensor([8, 0, 3, 3, 5])
    assert torch.equal(take(dense.to_sparse_csr(), idx).to_dense(), take(dense, idx))


def test_second_run_reads_features_from_the_cache(imdb_dir, tmp_path):
    from toolkit.tensors import forget
    first = run(tiny(), imdb_dir, tmp_path / "a")
    forget()  # a new process: only the disk cache is left
    second = run(tiny(), imdb_dir, tmp_path / "b")
    assert (first["features"]["cached"], second["features"]["cached"]) == (False, True)


def test_logreg_run_writes_the_same_files_as_a_trained_model(imdb_dir, tmp_path):
    config = tiny(model="logreg", features="nb", C=1.0)
    metrics = run(config, imdb_dir, tmp_path / "runs")
    out = tmp_path / "runs" / "tiny"
    files = {p.name for p in out.iterdir()}
    assert {"metrics.json", "model.pt", "submission.csv", "history.csv", "loss.png", "confusion.png"} <= files
    assert len(metrics["history"]) == 1 and metrics["best_dev_acc"] >= 0.95 and not (out / "last.pt").exists()
    assert 0.9 <= metrics["history"][0]["train_acc"] <= 1  # its training accuracy, over every training example
    model = build_model(config, metrics)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True)["model"])
    data = load_task(config, imdb_dir, torch.device("cpu"))
    assert evaluate(model, *data["dev"], config)[1] == metrics["best_dev_acc"]


def test_interpolated_run_evaluates_the_mixture_with_the_fitted_linear_model(imdb_dir, tmp_path):
    config = tiny(features="nb", interpolate=0.5, epochs=2)
    metrics = run(config, imdb_dir, tmp_path / "runs")
    saved = torch.load(tmp_path / "runs" / "tiny" / "model.pt", weights_only=True)["model"]
    assert any(k.startswith("linear.") for k in saved) and metrics["best_dev_acc"] >= 0.95
    model = build_model(config, metrics)
    model.load_state_dict(saved)
    data = load_task(config, imdb_dir, torch.device("cpu"))
    assert evaluate(model, *data["dev"], config)[1] == metrics["best_dev_acc"]


def test_refit_trains_afresh_on_train_and_dev_and_writes_the_submission_from_that_model(imdb_dir, tmp_path):
    config = tiny(features="nb", interpolate=0.5, epochs=2, refit=True)
    metrics = run(config, imdb_dir, tmp_path / "runs")
    out = tmp_path / "runs" / "tiny"
    assert metrics["refit"]["epochs"] == metrics["best_epoch"] and metrics["refit"]["train_examples"] == 400
    assert json.loads((out / "metrics.json").read_text())["refit"]["epochs"] == metrics["best_epoch"]
    refitted = torch.load(out / "model_refit.pt", weights_only=True)
    model = build_model(config, metrics)
    model.load_state_dict(refitted["model"])
    data = load_task(config, imdb_dir, torch.device("cpu"))
    _, _, preds = evaluate(model, data["refit"]["test"][0], None, config)  # NB-weighed by train + dev
    with open(out / "submission.csv", newline="") as f:
        assert [int(r["Category"]) for r in csv.DictReader(f)] == preds.tolist()
    dev_selected = torch.load(out / "model.pt", weights_only=True)["model"]
    assert not torch.equal(dev_selected["mlp.layers.0.weight"], refitted["model"]["mlp.layers.0.weight"])


def test_the_nb_refit_weighs_its_rows_by_the_log_count_ratios_of_train_and_dev(imdb_dir):
    from toolkit.features import nb_ratios
    data = load_task(tiny(features="nb", refit=True), imdb_dir, torch.device("cpu"))
    x_train, y_train = data["refit"]["train"]
    assert len(y_train) == 400 and data["meta"]["refit_pseudo_labelled"] == 0
    binary = x_train.to_dense().ne(0).float().numpy()  # the binary n-grams the weights multiply
    weighed = binary * nb_ratios(binary, y_train.numpy())
    torch.testing.assert_close(x_train.to_dense(), torch.from_numpy(weighed))


def test_self_training_adds_confident_guesses_on_the_dev_and_test_texts_to_the_training_rows(imdb_dir):
    cpu = torch.device("cpu")
    off = load_task(tiny(features="nb", refit=True), imdb_dir, cpu)
    on = load_task(tiny(features="nb", refit=True, self_train=2), imdb_dir, cpu)
    assert len(off["train"][1]) == 300 and off["meta"]["pseudo_labelled"] == 0  # off: the training texts only
    added = on["meta"]["pseudo_labelled"]
    assert 0 < added <= 200 and len(on["train"][1]) == 300 + added  # of 100 dev + 100 test texts
    assert torch.equal(on["train"][1][:300], off["train"][1])
    assert torch.equal(on["dev"][1], off["dev"][1]) and on["dev"][0].shape == off["dev"][0].shape
    refit_added = on["meta"]["refit_pseudo_labelled"]  # the refit guesses the test texts alone, from 400 labels
    assert 0 < refit_added <= 100 and len(on["refit"]["train"][1]) == 400 + refit_added


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_logreg_refit_runs_under_any_schedule(imdb_dir, tmp_path, scheduler):
    # scikit-learn fits it, so its refit trains no steps: the schedule divided by zero and ended the run
    config = tiny(model="logreg", features="nb", refit=True, scheduler=scheduler)
    metrics = run(config, imdb_dir, tmp_path)
    assert metrics["refit"]["epochs"] == 0 and (tmp_path / "tiny" / "submission.csv").is_file()


def test_join_rows_stacks_sparse_and_dense_matrices_alike():
    dense = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    joined = join_rows(dense[:2].to_sparse_csr(), dense[2:].to_sparse_csr())
    assert torch.equal(joined.to_dense(), dense) and torch.equal(join_rows(dense[:1], dense[1:]), dense)


def test_ctrl_c_outside_training_ends_with_one_line_and_exit_130(imdb_dir, tmp_path, monkeypatch, capsys):
    from toolkit import features
    from main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(features, "text_features", interrupted)  # Ctrl-C while featurizing
    (tmp_path / "c.toml").write_text('dev_size = 100\nmin_df = 1\ndevice = "cpu"\n')
    assert main(["run", str(tmp_path / "c.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stopped by Ctrl-C outside training: nothing to resume; every file already written is complete"]


def test_the_one_cycle_schedule_follows_torchs_one_cycle_lr_when_its_length_is_fixed():
    from toolkit.steps import make_scheduler
    config = load_config(None, ["scheduler='onecycle'", "warmup=0.25", "lr=0.4"])
    ours, theirs = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4) for _ in range(2))
    mine = make_scheduler(ours, config, 10, lambda: 100)
    torch_one = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.4, total_steps=100, pct_start=0.25,
                                                    anneal_strategy="linear", cycle_momentum=False,
                                                    div_factor=10, final_div_factor=100)
    for _ in range(100):
        # the same line from 0.04 up to 0.4 and down to 0.0004; torch's reaches each end one step sooner
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], abs=0.4 * 0.9 / 24)
        ours.step(), theirs.step(), mine.step(), torch_one.step()


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "momentum", "nesterov"])
def test_the_loops_optimizers_update_as_torch_optims_do_to_the_bit(optimizer):
    from toolkit.steps import make_optimizer
    config = load_config(None, [f"optimizer='{optimizer}'", "lr=0.01", "weight_decay=0.01", "momentum=0.9"])
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    theirs.load_state_dict(ours.state_dict())
    mine = make_optimizer(ours, config, torch.device("cpu"))
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(optimizer, torch.optim.SGD)
    asked = inspect.signature(kind).parameters  # the same hyperparameters, fused Adam included
    torch_opt = kind(theirs.parameters(), **{k: v for k, v in mine.defaults.items() if k in asked})
    for step in range(4):
        x = torch.randn(16, 8)
        for model, opt in ((ours, mine), (theirs, torch_opt)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    torch_opt.load_state_dict(mine.state_dict())  # a checkpoint's optimizer state is torch.optim's own
    assert isinstance(mine, kind)


def test_a_run_that_does_not_compile_never_imports_torch_dynamo(fashion_dir, tmp_path):
    # torch.optim's guards against torch.compile import torch._dynamo: seconds of every short run
    code = ("import sys, main; main.main(['run', 'configs/fashion_mlp.toml', '--data-dir', sys.argv[1], '--out', "
            "sys.argv[2], '--set', 'epochs=1', '--set', 'dev_size=20', '--set', 'plots=false']); "
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(fashion_dir), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False"


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_a_gpu_without_bf16_hardware_trains_in_fp16(monkeypatch, capability, dtype):
    # a T4 (7.5), Colab's free GPU, emulates bf16, which torch.cuda.is_bf16_supported() counts by default
    from toolkit.steps import amp_dtype
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype(torch.device("cuda", 0), True) == dtype
