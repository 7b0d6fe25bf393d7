"""Runs that survive: interruption and exact resume, divergence, sweep re-runs, no silent overwrites."""
import json
import signal

import pytest
import torch

from toolkit import train
from toolkit.config import load_config
from toolkit.run import run
from toolkit.sweeps import sweep
from toolkit.files import atomic_path
from main import main
from conftest import signal_at_call, swept, tiny, without_seconds


@pytest.mark.parametrize("call", [4, 16])  # mid-epoch 1, and in epoch 2 after a full-state save
def test_interrupted_and_resumed_run_ends_exactly_like_an_uninterrupted_one(imdb_dir, tmp_path, monkeypatch, call):
    config = load_config(None, tiny())
    whole = run(config, imdb_dir, tmp_path / "whole")
    signal_at_call(monkeypatch, call)
    with pytest.raises(train.Interrupted) as stopped:
        run(config, imdb_dir, tmp_path / "split")
    assert stopped.value.code == 130 and (tmp_path / "split" / "tiny" / "last.pt").is_file()
    monkeypatch.undo()
    resumed = run(config, imdb_dir, tmp_path / "split", folder="resume")
    assert without_seconds(resumed) == without_seconds(whole)
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert (tmp_path / "split/tiny/submission.csv").read_text() == (tmp_path / "whole/tiny/submission.csv").read_text()
    assert not (tmp_path / "split" / "tiny" / "last.pt").exists()  # finished runs keep no training state


def stopped_in_epoch_2(config, imdb_dir, tmp_path, monkeypatch):
    """(last.pt's path, its contents) of a run of config stopped by Ctrl-C in its second epoch."""
    signal_at_call(monkeypatch, 16)
    with pytest.raises(train.Interrupted):
        run(config, imdb_dir, tmp_path)
    monkeypatch.undo()
    last = tmp_path / "tiny" / "last.pt"
    return last, torch.load(last, weights_only=False)


def test_a_resumed_runs_seconds_count_the_interrupted_process_too(imdb_dir, tmp_path, monkeypatch):
    config = load_config(None, tiny())
    last, state = stopped_in_epoch_2(config, imdb_dir, tmp_path, monkeypatch)
    assert 0 < state["seconds"] < 1000  # what the interrupted process took
    state["seconds"] = 1000.0  # as if it had taken 1,000 s
    torch.save(state, last)
    resumed = run(config, imdb_dir, tmp_path, folder="resume")
    assert 1000 < resumed["seconds"] < 2000  # the saved 1,000 s counted once, and this process's few


def test_a_run_saved_on_a_gpu_resumes_on_a_cpu(imdb_dir, tmp_path, monkeypatch):
    # device = "auto" on Colab's GPU, then the laptop: the augmentation generator's saved state is a CUDA one
    config = load_config(None, tiny(device="auto"))
    last, state = stopped_in_epoch_2(config, imdb_dir, tmp_path, monkeypatch)
    state["rng"][0]["gen"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator's state
    torch.save(state, last)
    resumed = run(config, imdb_dir, tmp_path, folder="resume")
    assert len(resumed["history"]) == 3 and not last.exists()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_state_prints_how_to_resume_and_exits_with_the_shell_code(imdb_dir, tmp_path, monkeypatch,
                                                                                capsys, signum, code):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny()) + "\n")
    signal_at_call(monkeypatch, 5, signum)
    argv = ["run", str(tmp_path / "tiny.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "training state saved in" in err and "--resume" in err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0


def test_resume_without_a_checkpoint_is_a_one_line_error(imdb_dir, tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny()) + "\n")
    assert main(["run", str(tmp_path / "tiny.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path),
                 "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(b"truncated", "not a readable training checkpoint"),
                                              (None, "different config")])
def test_resume_refuses_a_broken_checkpoint_or_one_from_another_config(imdb_dir, tmp_path, monkeypatch, capsys,
                                                                       content, message):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny()) + "\n")
    argv = ["run", str(tmp_path / "tiny.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path / "out")]
    signal_at_call(monkeypatch, 5)
    assert main(argv) == 130
    monkeypatch.undo()
    if content is not None:
        (tmp_path / "out" / "tiny" / "last.pt").write_bytes(content)
    assert main([*argv, "--resume", "--set", "lr=0.02"] if content is None else [*argv, "--resume"]) == 2
    assert message in capsys.readouterr().err


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(imdb_dir, tmp_path):
    metrics = sweep("lrs", "lr", [1e30, 0.5], ["huge", "fine"], base=None, data_dir=imdb_dir, out=tmp_path,
                    overrides=swept(optimizer="sgd"))
    huge, fine = metrics
    assert huge["diverged"] and huge["diverged_at"]["epoch"] == 1 and huge["best_dev_acc"] is None
    assert not fine["diverged"] and fine["best_dev_acc"] > 0.5
    saved = json.loads((tmp_path / "lrs" / "huge" / "metrics.json").read_text())
    assert saved["diverged"] is True
    assert "huge (diverged)" in (tmp_path / "lrs" / "summary.csv").read_text()


def test_a_run_whose_refit_was_stopped_is_run_again_not_skipped(imdb_dir, tmp_path, capsys):
    from toolkit.run import run_or_skip
    config = load_config(None, tiny(epochs=1, refit=True))
    path = tmp_path / "tiny" / "metrics.json"
    run_or_skip(config, imdb_dir, tmp_path)
    metrics = json.loads(path.read_text())
    del metrics["refit"]  # as metrics.json stands when Ctrl-C or a full disk stops the refit
    path.write_text(json.dumps(metrics))
    capsys.readouterr()
    again = run_or_skip(config, imdb_dir, tmp_path)
    assert "skipped" not in capsys.readouterr().out and again["refit"]["epochs"] == 1
    assert "refit" in json.loads(path.read_text())
    run_or_skip(config, imdb_dir, tmp_path)
    assert "skipped" in capsys.readouterr().out


def test_a_run_that_diverged_in_its_first_epoch_says_where_and_why_it_has_no_model(imdb_dir, tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny(lr=1e30, optimizer="sgd")) + "\n")
    assert main(["run", str(tmp_path / "tiny.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path)]) == 1
    assert "non-finite loss at its check after step" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "tiny"), "--data-dir", str(imdb_dir)]) == 2
    assert "no checkpoint; the run kept none" in capsys.readouterr().err


def test_a_run_that_diverges_later_keeps_the_best_weights_from_before_it(imdb_dir, tmp_path, monkeypatch):
    calls, step = [0], train.train_step
    def poisoned(*args):  # from the 11th step, epoch 2 (10 steps an epoch), the loss is NaN
        calls[0] += 1
        logits, loss = step(*args)
        return logits, loss * float("nan") if calls[0] > 10 else loss
    monkeypatch.setattr(train, "train_step", poisoned)
    metrics = run(load_config(None, tiny()), imdb_dir, tmp_path)
    assert metrics["diverged"] and metrics["diverged_at"]["epoch"] == 2 and metrics["best_epoch"] == 1
    assert torch.load(tmp_path / "tiny" / "model.pt", weights_only=True)["epoch"] == 1
    assert (tmp_path / "tiny" / "submission.csv").is_file()  # the test predicted with the kept weights


def test_a_sweep_rerun_skips_finished_configs_unless_forced(imdb_dir, tmp_path, capsys):
    args = dict(base=None, data_dir=imdb_dir, out=tmp_path, overrides=swept(epochs=1))
    sweep("s", "lr", [0.01, 0.02], ["a", "b"], **args)
    capsys.readouterr()
    sweep("s", "lr", [0.01, 0.02], ["a", "b"], **args)
    assert capsys.readouterr().out.count("skipped") == 2
    sweep("s", "lr", [0.01, 0.02], ["a", "b"], force=True, **args)
    assert "skipped" not in capsys.readouterr().out


def test_a_sweep_rerun_resumes_an_interrupted_config(imdb_dir, tmp_path, monkeypatch):
    args = dict(base=None, data_dir=imdb_dir, out=tmp_path, overrides=swept(epochs=2))
    signal_at_call(monkeypatch, 30)  # during the second configuration
    with pytest.raises(train.Interrupted):
        sweep("s", "lr", [0.01, 0.02], ["a", "b"], **args)
    monkeypatch.undo()
    metrics = sweep("s", "lr", [0.01, 0.02], ["a", "b"], **args)
    assert [len(m["history"]) for m in metrics] == [2, 2]


def test_a_crash_while_writing_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("killed")
    assert path.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_deterministic_flag_turns_on_deterministic_algorithms(imdb_dir, tmp_path):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny(epochs=1)) + "\n")
    try:
        assert main(["run", str(tmp_path / "tiny.toml"), "--data-dir", str(imdb_dir), "--out", str(tmp_path),
                     "--deterministic"]) == 0
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
