"""main.py's experiment functions, called from Python as the homework skeleton does, and the pieces they
rely on: max_train, skipping finished runs, quiet progress bars off a terminal, a --help that loads no torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main
from toolkit import system
from toolkit.config import load_config
from toolkit.errors import UserError
from toolkit.tensors import load_task
from toolkit.progress import progress_bar
from toolkit.tasks import TASKS
from toolkit.steps import pick_device


def test_explore_functions_in_main_take_keyword_settings_and_return_each_configs_history(imdb_dir, tmp_path):
    stats = main.explore_mlp_activations(data_dir=imdb_dir, out=tmp_path, epochs=2, device="cpu", dev_size=100,
                                         min_df=1, hidden_dims=[16])
    assert list(stats) == ["sigmoid", "tanh", "relu", "gelu", "nb-logreg"]  # the linear baseline last
    assert all(len(m["history"]) == 2 and 0 <= m["best_dev_acc"] <= 1 for n, m in stats.items() if n != "nb-logreg")
    assert stats["relu"]["config"]["epochs"] == 2 and (tmp_path / "activations" / "dev_acc.png").is_file()


def test_a_misspelt_keyword_stops_before_any_training_with_the_key_named(imdb_dir, tmp_path):
    with pytest.raises(UserError, match="unknown key 'epcohs'"):
        main.explore_mlp_learning_rates(data_dir=imdb_dir, out=tmp_path, epcohs=1)
    assert not (tmp_path / "learning-rates").exists()


def test_importing_main_and_asking_for_help_load_no_torch():
    code = "import sys, main\ntry:\n    main.main(['--help'])\nexcept SystemExit:\n    print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(main.__file__).parent)
    assert result.stdout.strip().endswith("False")


def test_max_train_keeps_the_same_random_subset_and_the_whole_dev_and_test_sets(fashion_dir):
    config = load_config(None, ["task='fashion'", "dev_size=50", "max_train=60"])
    train, dev, test = (load_task(config, fashion_dir, pick_device("cpu"))[k][0] for k in ("train", "dev", "test"))
    assert (train.shape[0], dev.shape[0], test.shape[0]) == (60, 50, 40)
    labels = load_task(config, fashion_dir, pick_device("cpu"))["train"][1]
    assert len(set(labels.tolist())) > 5  # a shuffled subset, not the first rows of one class
    everything = load_config(None, ["task='fashion'", "dev_size=50", "max_train=0"])
    assert load_task(everything, fashion_dir, pick_device("cpu"))["train"][0].shape[0] == 250


def test_negative_max_train_is_a_user_error_naming_the_key():
    with pytest.raises(UserError, match="'max_train' = -1 is out of range"):
        load_config(None, ["max_train=-1"])


def test_a_run_saved_before_a_config_key_existed_is_still_recognised_as_finished(fashion_dir, tmp_path, capsys):
    kwargs = dict(data_dir=fashion_dir, out=tmp_path, epochs=1, device="cpu", dev_size=50, hidden_dims=[8])
    main.run_config("configs/fashion_mlp.toml", **kwargs)
    path = tmp_path / "fashion_mlp" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["config"]["max_train"]  # as written before max_train was added
    path.write_text(json.dumps(metrics))
    capsys.readouterr()
    main.run_config("configs/fashion_mlp.toml", **kwargs)
    assert "finished before, skipped" in capsys.readouterr().out


def test_a_batch_norm_mlps_checkpoint_predicts_dev_as_the_run_scored_it(fashion_dir, tmp_path):
    import torch
    from toolkit.predict import load_checkpoint
    from toolkit.steps import evaluate
    metrics = main.run_config("configs/fashion_mlp.toml", data_dir=fashion_dir, out=tmp_path, epochs=2,
                              device="cpu", dev_size=50, hidden_dims=[16], batch_norm=True, plots=False)
    model, checkpoint = load_checkpoint(tmp_path / "fashion_mlp")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    dev = load_task(checkpoint["config"], fashion_dir, pick_device("cpu"))["dev"]
    assert evaluate(model, *dev, checkpoint["config"])[1] == metrics["best_dev_acc"]  # running statistics saved


def test_a_checkpoint_saved_before_a_model_key_existed_loads_with_that_keys_default(fashion_dir, tmp_path):
    import torch
    from toolkit.predict import load_checkpoint
    main.run_config("configs/fashion_mlp.toml", data_dir=fashion_dir, out=tmp_path, epochs=1, device="cpu",
                    dev_size=50, hidden_dims=[16], batch_norm=False, plots=False)
    path = tmp_path / "fashion_mlp" / "model.pt"
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["config"]["batch_norm"]  # as saved before batch_norm was added
    torch.save(checkpoint, path)
    assert load_checkpoint(tmp_path / "fashion_mlp")[1]["config"]["batch_norm"] is False


def test_progress_bar_writes_nothing_when_output_is_not_a_terminal(capsys):
    for _ in progress_bar(range(500), "quiet"):
        pass
    assert capsys.readouterr().err == ""


def test_progress_bar_draws_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for _ in progress_bar(range(5), "shown"):
        pass
    assert "shown" in capsys.readouterr().err



@pytest.mark.parametrize("task, huge", [("sentiment", True), ("texts", True), (None, True), ("fashion", False),
                                        ("images", False)])
def test_only_commands_that_may_train_on_texts_put_torch_on_huge_pages(monkeypatch, task, huge):
    # the sentiment MLP's 400 MB gradient gains from huge pages; image tasks keep freed memory instead
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    monkeypatch.setattr(os, "environ", env)  # this test's own copy: what set_allocator sets ends with it
    kept = []
    monkeypatch.setattr(system, "keep_freed_memory", lambda: kept.append(True))
    system.set_allocator(task and TASKS[task].kind)
    assert (env.get("THP_MEM_ALLOC_ENABLE") == "1") == huge
    assert kept == ([] if huge else [True])


def test_run_config_refuses_another_config_in_its_folder_naming_what_the_user_changed(fashion_dir, tmp_path):
    kwargs = dict(data_dir=fashion_dir, out=tmp_path, device="cpu", dev_size=50, hidden_dims=[8])
    first = main.run_config("configs/fashion_mlp.toml", epochs=1, **kwargs)
    assert main.run_config("configs/fashion_mlp.toml", epochs=1, **kwargs)["run_dir"] == first["run_dir"]  # skipped
    with pytest.raises(UserError, match=r"different config \(epochs, label_smoothing, weight_decay; below reg_epochs, "
                                        r"label_smoothing, weight_decay follow epochs\); choose another --out, or "
                                        r"--force \(force=True\)"):
        main.run_config("configs/fashion_mlp.toml", epochs=2, **kwargs)
    with pytest.raises(UserError, match=r"different config \(hidden_dims\); choose"):  # nothing follows epochs
        main.run_config("configs/fashion_mlp.toml", epochs=1, **{**kwargs, "hidden_dims": [4]})


def test_make_runs_command_takes_force_as_its_refusal_advises(imdb_dir, fashion_dir, tmp_path, capsys):
    assert imdb_dir == fashion_dir  # one folder holds both generated data sets
    argv = ["default", "--data-dir", str(imdb_dir), "--out", str(tmp_path / "runs"), "--set", "epochs=1",
            "--set", "dev_size=50", "--set", "min_df=1", "--set", "hidden_dims=[8]"]
    assert main.main(argv) == 0
    assert main.main([*argv, "--set", "lr=0.002"]) == 2  # another config in the same folders
    assert "--force" in capsys.readouterr().err
    assert main.main([*argv, "--set", "lr=0.002", "--force"]) == 0
