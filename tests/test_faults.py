"""Faults of the machine and runs against each other: one line, the right exit code, nothing lost.

Writes are made to fail the way a full, read-only or forbidden disk fails them (OSError from open/write at
the bottom, so torch.save, savefig, np.savez and json all meet it), without root and without filling a disk.
"""
import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

from toolkit import features
from toolkit import train
from toolkit.files import write_json
from toolkit.files import FolderInUse
from main import main
from toolkit.plots import visualize_epochs
from conftest import one_error_line, signal_at_call, swept, tiny_run, without_seconds

ROOT = Path(__file__).resolve().parent.parent


class Failing:
    """A file whose first write puts a few bytes on disk, then fails with OSError(code), like a disk filling up."""

    def __init__(self, f, code):
        self.f, self.code = f, code

    def write(self, data):
        self.f.write(data[:8] if isinstance(data, str) else bytes(memoryview(data).cast("B")[:8]))
        raise OSError(self.code, os.strerror(self.code))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def break_writes(monkeypatch, code, name="", nth=1, at_open=False):
    """From the nth write to a path containing `name` on, writes fail with OSError(code): the write itself
    (ENOSPC; counting files opened for writing), or with at_open=True every open for writing, mkdir and rename
    (a read-only or forbidden disk; counting all three)."""
    real_open, real_mkdir, real_replace, seen = io.open, os.mkdir, os.replace, {"n": 0}

    def broken(path):
        if name not in os.fspath(path):
            return False
        seen["n"] += 1
        return seen["n"] >= nth

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and broken(file):
            if at_open:
                raise OSError(code, os.strerror(code), os.fspath(file))
            return Failing(real_open(file, mode, *args, **kwargs), code)
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if at_open and not os.path.isdir(path) and broken(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    def fake_replace(src, dst, *args, **kwargs):
        if at_open and broken(dst):
            raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))
        return real_replace(src, dst, *args, **kwargs)
    for module, attr, fake in ((builtins, "open", fake_open), (io, "open", fake_open), (os, "mkdir", fake_mkdir),
                               (os, "replace", fake_replace)):
        monkeypatch.setattr(module, attr, fake)


def loads(folder):
    """Every result file in a run folder loads, and no temporary file is left beside them."""
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]
    if (folder / "model.pt").exists():
        torch.load(folder / "model.pt", weights_only=True)
    if (folder / "last.pt").exists():
        return torch.load(folder / "last.pt", weights_only=False)
    return None


def test_disk_full_while_saving_the_state_is_one_line_keeps_the_last_good_files_and_resume_finishes_the_run(
        imdb_dir, tmp_path, monkeypatch, capsys):
    assert main(tiny_run(tmp_path, imdb_dir, "whole")) == 0
    whole = json.loads((tmp_path / "whole" / "tiny" / "metrics.json").read_text())
    argv = tiny_run(tmp_path, imdb_dir)
    break_writes(monkeypatch, errno.ENOSPC, name=".last.tmp", nth=2)  # last.pt of epoch 2 meets a full disk
    assert main(argv) == 1
    line = one_error_line(capsys)
    folder = tmp_path / "out" / "tiny"
    assert f"{folder / 'last.pt'}: no space left on device" in line
    assert "model.pt (best, epoch" in line and "last.pt (resumes at epoch 2)" in line and "add --resume" in line
    assert loads(folder)["epoch"] == 2
    monkeypatch.undo()  # space freed
    assert main([*argv, "--resume"]) == 0
    resumed = json.loads((folder / "metrics.json").read_text())
    assert without_seconds(resumed) == without_seconds(whole) and not (folder / "last.pt").exists()


def test_disk_full_at_the_final_writes_keeps_the_trained_state_and_resume_only_writes_the_results(
        imdb_dir, tmp_path, monkeypatch, capsys):
    argv = tiny_run(tmp_path, imdb_dir, epochs=1)
    break_writes(monkeypatch, errno.ENOSPC, name=".metrics.tmp")
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert "metrics.json: no space left on device" in line and "last.pt (all epochs trained)" in line
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    folder = tmp_path / "out" / "tiny"
    assert len(json.loads((folder / "metrics.json").read_text())["history"]) == 1 and not (folder / "last.pt").exists()


@pytest.mark.parametrize("code, nth, message", [
    (errno.EROFS, 1, "read-only file system"),    # the output folder is read-only from the start
    (errno.EACCES, 1, "permission denied"),
    (errno.EROFS, 8, "read-only file system"),    # remounted mid-run: mkdir, .lock, history.csv (3), model.pt (2) done
])
def test_a_read_only_or_forbidden_output_folder_is_one_line_exit_1_and_earlier_results_still_load(
        imdb_dir, tmp_path, monkeypatch, capsys, code, nth, message):
    argv = tiny_run(tmp_path, imdb_dir, epochs=1)
    assert main(argv) == 0
    before = (tmp_path / "out" / "tiny" / "metrics.json").read_text()
    capsys.readouterr()
    break_writes(monkeypatch, code, name=str(tmp_path / "out"), nth=nth, at_open=True)
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert f"{tmp_path / 'out' / 'tiny-2'}" in line and message in line
    monkeypatch.undo()
    assert (tmp_path / "out" / "tiny" / "metrics.json").read_text() == before
    loads(tmp_path / "out" / "tiny")
    if nth == 8:
        assert "kept in" in line and "model.pt (best, epoch 1" in line
        loads(tmp_path / "out" / "tiny-2")


def test_an_output_folder_deleted_mid_run_is_one_line_not_silently_recreated(imdb_dir, tmp_path, monkeypatch, capsys):
    argv = tiny_run(tmp_path, imdb_dir)
    calls, take = {"n": 0}, train.take

    def delete_during_epoch_2(x, idx):
        calls["n"] += 1
        if calls["n"] == 16:
            shutil.rmtree(tmp_path / "out" / "tiny")
        return take(x, idx)
    monkeypatch.setattr(train, "take", delete_during_epoch_2)
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert "no such file or folder" in line and "is gone" in line
    assert not (tmp_path / "out" / "tiny").exists()


@pytest.mark.parametrize("error, asked", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 "
                            "GiB of which 1.06 GiB is free."), "GPU: asked for 2.00 GiB"),
    (MemoryError("Unable to allocate 3.00 GiB for an array with shape (3, 1000) and data type float64"),
     "CPU: asked for 3.00 GiB"),
])
def test_memory_running_out_mid_run_names_batch_size_hidden_dims_and_the_size_asked(imdb_dir, tmp_path, monkeypatch,
                                                                                   capsys, error, asked):
    argv = tiny_run(tmp_path, imdb_dir)
    calls, step = {"n": 0}, train.train_step

    def out_of_memory_in_epoch_2(*args):
        calls["n"] += 1
        if calls["n"] == 13:
            raise error
        return step(*args)
    monkeypatch.setattr(train, "train_step", out_of_memory_in_epoch_2)
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert f"out of memory on the {asked} with batch_size 32, hidden_dims [16]" in line
    assert "model.pt (best, epoch 1" in line and "last.pt (resumes at epoch 2)" in line
    assert loads(tmp_path / "out" / "tiny")["epoch"] == 2


def test_a_model_too_large_for_memory_is_one_line_naming_hidden_dims(imdb_dir, tmp_path, capsys):
    assert main(tiny_run(tmp_path, imdb_dir, hidden_dims=[10 ** 14])) == 1  # asks ~250 PB: more than any address space
    line = one_error_line(capsys)
    assert "out of memory on the CPU: asked for" in line and "hidden_dims [100000000000000]" in line


def test_a_data_file_that_fails_midway_is_a_fault_of_the_machine_not_of_the_file(fashion_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    def failing_read(self, n=-1):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(zipfile.ZipExtFile, "read", failing_read)
    assert main(tiny_run(tmp_path, fashion_dir, task="fashion")) == 1
    assert f"{fashion_dir / 'fashion_mnist' / 'train.npz'}: input/output error" in one_error_line(capsys)


def test_a_data_folder_this_user_may_not_read_is_one_line_exit_1(fashion_dir, tmp_path, monkeypatch, capsys):
    is_file = Path.is_file
    def forbidden(path):  # as Path.is_file meets EACCES in a folder without search permission (not as root)
        if str(path).startswith(str(fashion_dir)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return is_file(path)
    monkeypatch.setattr(Path, "is_file", forbidden)
    assert main(tiny_run(tmp_path, fashion_dir, task="fashion")) == 1
    line = one_error_line(capsys)
    assert str(fashion_dir) in line and "permission denied" in line.lower(), line


def test_ctrl_c_while_torch_loads_is_one_line_and_exit_130(fashion_dir, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__
    def interrupted(name, *args, **kwargs):  # as Ctrl-C lands in the first second, inside torch's import
        if name == "toolkit.checkpoint":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert main(tiny_run(tmp_path, fashion_dir, task="fashion")) == 130
    err = capsys.readouterr().err
    assert "stopped by Ctrl-C while starting" in err and "Traceback" not in err


def test_failed_writes_name_the_file_leave_the_previous_one_and_no_temporary_file(tmp_path, monkeypatch):
    write_json(tmp_path / "metrics.json", {"epoch": 1})
    visualize_epochs([0.5], [0.6], tmp_path / "loss.png")
    png = (tmp_path / "loss.png").read_bytes()
    break_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError, match=f"No space left on device: '{tmp_path / 'metrics.json'}'"):
        write_json(tmp_path / "metrics.json", {"epoch": 2})
    with pytest.raises(OSError, match="loss.png"):
        visualize_epochs([0.5, 0.4], [0.6, 0.5], tmp_path / "loss.png")
    monkeypatch.undo()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"epoch": 1}
    assert (tmp_path / "loss.png").read_bytes() == png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.json"]


def test_a_feature_cache_that_cannot_be_written_or_read_costs_time_not_the_run(tmp_path, monkeypatch, capsys):
    parts, config = [["good film", "bad film", "good plot"], ["bad plot"]], {"features": "tfidf", "ngram_max": 1,
                                                                            "min_df": 1, "max_features": 0}
    break_writes(monkeypatch, errno.ENOSPC, name="cache")
    matrices, _, cached, _ = features.text_features(parts, config, tmp_path / "cache")
    assert not cached and matrices[0].shape == (3, 4) and "not cached" in capsys.readouterr().err
    monkeypatch.undo()
    assert [p for p in (tmp_path / "cache").iterdir()] == []  # the half-written .npz is gone
    features.text_features(parts, config, tmp_path / "cache")
    [path] = (tmp_path / "cache").iterdir()
    path.write_bytes(path.read_bytes()[:100])  # damaged, as by a failing disk
    matrices, _, cached, _ = features.text_features(parts, config, tmp_path / "cache")
    assert not cached and (sp.csr_matrix(matrices[0]) != features.load_matrices(path, 2)[0][0]).nnz == 0


def hold_in_another_process(folder):
    """A real second process holding `folder` the way a run does; returns it once it holds the lock."""
    code = "import sys, time; from toolkit.files import hold; h = hold(sys.argv[1]); h.__enter__(); " \
           "print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_run_on_a_held_folder_goes_to_its_own_and_a_killed_holder_leaves_no_stale_lock(
        imdb_dir, tmp_path, monkeypatch, capsys):
    argv = tiny_run(tmp_path, imdb_dir, epochs=2)
    signal_at_call(monkeypatch, 5)
    assert main(argv) == 130  # an unfinished run in out/tiny
    monkeypatch.undo()
    holder = hold_in_another_process(tmp_path / "out" / "tiny")
    try:
        assert main(argv) == 0  # a fresh run goes to its own folder and says why
        assert f"is in use by pid {holder.pid}" in capsys.readouterr().out
        assert (tmp_path / "out" / "tiny-2" / "metrics.json").is_file()
        assert main([*argv, "--resume"]) == 2  # resuming the held run is refused, naming the holder
        assert f"out/tiny is in use by pid {holder.pid}" in one_error_line(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main([*argv, "--resume"]) == 0  # kill -9 released the lock
    assert json.loads((tmp_path / "out" / "tiny" / "metrics.json").read_text())["config"]["epochs"] == 2


def test_a_lock_file_replaced_while_it_was_being_taken_is_taken_again(tmp_path, monkeypatch):
    from toolkit import files as folders
    opened = []

    def open_then_lose_it(path):  # a failed run removes the bare folder, and another run makes it again
        f = builtins.open(path)
        if not opened:
            path.unlink()
            path.touch()
        opened.append(path)
        return f
    monkeypatch.setattr(folders, "open", open_then_lose_it, raising=False)
    f = folders.try_lock(tmp_path / "run")
    assert len(opened) == 2 and os.fstat(f.fileno()).st_ino == (tmp_path / "run" / ".lock").stat().st_ino
    assert "pid" in (tmp_path / "run" / ".lock").read_text()
    f.close()


def test_a_fault_of_the_machine_before_a_runs_first_file_keeps_the_folder_its_line_names(tmp_path):
    from toolkit import files as folders
    with pytest.raises(OSError):
        with folders.new_run_dir(tmp_path, "run"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (tmp_path / "run" / ".lock").is_file()


def test_a_sweep_on_a_folder_another_process_holds_is_refused_naming_it(imdb_dir, tmp_path):
    from toolkit.sweeps import sweep
    holder = hold_in_another_process(tmp_path / "s")
    try:
        with pytest.raises(FolderInUse, match=f"s is in use by pid {holder.pid}"):
            sweep("s", "lr", [0.01], ["a"], base=None, data_dir=imdb_dir, out=tmp_path, overrides=swept(epochs=1))
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "s" / "a").exists()


def test_a_run_into_a_used_folder_goes_to_a_numbered_one_and_only_overwrite_replaces(imdb_dir, tmp_path, capsys):
    argv = tiny_run(tmp_path, imdb_dir, epochs=1)
    assert main(argv) == 0
    before = (tmp_path / "out" / "tiny" / "metrics.json").read_text()
    assert main([*argv, "--set", "lr=0.5"]) == 0  # another config, same name
    assert main(argv) == 0  # the same config again
    out = capsys.readouterr().out
    assert "holds a finished run (--overwrite replaces it); this run writes to" in out
    assert (tmp_path / "out" / "tiny" / "metrics.json").read_text() == before
    assert json.loads((tmp_path / "out" / "tiny-2" / "metrics.json").read_text())["config"]["lr"] == 0.5
    assert (tmp_path / "out" / "tiny-3" / "metrics.json").is_file()
    assert main([*argv, "--set", "lr=0.02", "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "tiny" / "metrics.json").read_text())["config"]["lr"] == 0.02
    assert not (tmp_path / "out" / "tiny-4").exists()


def test_overwrite_leaves_no_file_of_the_run_it_replaces(imdb_dir, tmp_path):
    argv = tiny_run(tmp_path, imdb_dir, epochs=1)
    assert main([*argv, "--set", "refit=true"]) == 0
    assert (tmp_path / "out" / "tiny" / "model_refit.pt").is_file()
    assert main([*argv, "--overwrite"]) == 0  # no refit: its model_refit.pt must not stay beside the new run
    assert not (tmp_path / "out" / "tiny" / "model_refit.pt").exists()


def test_resume_continues_the_numbered_folder_where_the_stopped_run_of_this_config_is(imdb_dir, tmp_path,
                                                                                        monkeypatch, capsys):
    argv = tiny_run(tmp_path, imdb_dir, epochs=2)
    assert main(argv) == 0  # out/tiny holds a finished run
    signal_at_call(monkeypatch, 12)  # the same config again goes to out/tiny-2, and is stopped there
    assert main(argv) == 130
    monkeypatch.undo()
    assert (tmp_path / "out" / "tiny-2" / "last.pt").is_file()
    assert main([*argv, "--resume"]) == 0
    assert "resuming tiny at epoch" in capsys.readouterr().out
    assert (tmp_path / "out" / "tiny-2" / "metrics.json").is_file() and not (tmp_path / "out" / "tiny-3").exists()
    assert not (tmp_path / "out" / "tiny-2" / "last.pt").exists()


def test_resume_and_overwrite_together_are_refused(imdb_dir, tmp_path, capsys):
    assert main([*tiny_run(tmp_path, imdb_dir), "--resume", "--overwrite"]) == 2
    assert "--resume continues a run, --overwrite starts one afresh" in one_error_line(capsys)
