import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.config import DEFAULTS, describe_scaling, load_config
from toolkit.errors import UserError
from main import main

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_overrides_defaults_and_set_overrides_file(tmp_path):
    path = write(tmp_path, "lr = 0.01\nepochs = 3\nhidden_dims = [64, 32]\n")
    config = load_config(path, ["epochs=5", "activation=tanh"])
    assert (config["lr"], config["epochs"], config["hidden_dims"], config["activation"]) == (0.01, 5, [64, 32], "tanh")
    assert config["name"] == "exp"  # the file's stem names the run
    assert config["batch_size"] == DEFAULTS["batch_size"]


def test_ints_are_accepted_where_floats_are_expected():
    assert load_config(None, ["lr=1"])["lr"] == 1.0


def test_a_run_shorter_than_reg_epochs_gets_its_regularisation_scaled_down(tmp_path):
    path = write(tmp_path, "reg_epochs = 30\nepochs = 30\ndropout = 0.3\nlabel_smoothing = 0.1\nweight_decay = 1e-4\n")
    full = load_config(path)
    assert (full["dropout"], full["label_smoothing"], full["weight_decay"], full["flip"]) == (0.3, 0.1, 1e-4, 0.5)
    short = load_config(path, ["epochs=10"])
    assert short["label_smoothing"] == pytest.approx(0.1 / 3)
    assert short["weight_decay"] == pytest.approx(1e-4 / 3)
    assert short["dropout"] == 0.0 and short["flip"] == 0.0  # these fall faster: none at half of reg_epochs or less
    middle = load_config(path, ["epochs=20"])  # 2 * 20 / 30 - 1 = 1/3 of each
    assert middle["dropout"] == pytest.approx(0.1) and middle["flip"] == pytest.approx(0.5 / 3)
    assert load_config(path, ["epochs=60"])["dropout"] == 0.3  # longer runs keep the values as given


def test_what_reg_epochs_scaled_is_recorded_and_a_full_length_run_records_nothing(tmp_path):
    path = write(tmp_path, "reg_epochs = 30\nepochs = 30\ndropout = 0.3\nlabel_smoothing = 0.1\n")
    assert "scaled_by_reg_epochs" not in load_config(path)
    short = load_config(path, ["epochs=10"])
    assert short["scaled_by_reg_epochs"] == {"dropout": [0.3, 0.0], "flip": [0.5, 0.0],
                                             "label_smoothing": [0.1, pytest.approx(0.1 / 3)]}  # weight_decay 0 stays 0
    assert describe_scaling(short) == ("reg_epochs = 30: this 10-epoch run scales dropout 0.3 -> 0, flip 0.5 -> 0, "
                                       "label_smoothing 0.1 -> 0.0333")


def test_a_run_shorter_than_reg_epochs_predicts_without_mirror_images(tmp_path):
    path = write(tmp_path, "reg_epochs = 30\nepochs = 30\ntta_flip = true\n")
    assert load_config(path)["tta_flip"] is True
    short = load_config(path, ["epochs=20"])  # trained on few mirrored images: their guesses would cost accuracy
    assert short["tta_flip"] is False and short["scaled_by_reg_epochs"]["tta_flip"] == [True, False]
    assert "tta_flip true -> false" in describe_scaling(short)
    assert load_config(path, ["epochs=60"])["tta_flip"] is True


def test_a_scaled_run_says_what_it_set_at_its_start_and_metrics_json_keeps_it(fashion_dir, tmp_path, capsys):
    path = write(tmp_path, "task = 'fashion'\nhidden_dims = [16]\nreg_epochs = 4\nepochs = 4\ndropout = 0.2\n"
                           "max_train = 100\ndev_size = 50\nplots = false\n")
    assert main(["run", str(path), "--data-dir", str(fashion_dir), "--out", str(tmp_path / "out"),
                 "--set", "epochs=1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "reg_epochs = 4: this 1-epoch run scales dropout 0.2 -> 0, flip 0.5 -> 0"
    metrics = json.loads((tmp_path / "out" / "exp" / "metrics.json").read_text())
    assert metrics["scaled_by_reg_epochs"] == {"dropout": [0.2, 0.0], "flip": [0.5, 0.0]}
    assert metrics["config"]["dropout"] == 0.0


def test_every_shipped_config_is_valid():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        load_config(path)


@pytest.mark.parametrize("setting, message", [
    ("lr_rate=0.1", "unknown key 'lr_rate'"),
    ("epochs=2.5", "'epochs' must be int"),
    ("epochs=0", "'epochs' = 0 is out of range"),
    ("batch_size=0", "'batch_size' = 0 is out of range"),
    ("lr=0", "'lr' = 0.0 is out of range"),
    ("lr=-1e-3", "'lr' = -0.001 is out of range"),
    ("hidden_dims=[512, 0]", "'hidden_dims' = [512, 0]: every size must be >= 1"),
    ("hidden_dims=512", "'hidden_dims' must be list"),
    ("optimizer=rmsprop", "'optimizer' = 'rmsprop' is not one of"),
    ("scheduler=step", "'scheduler' = 'step' is not one of"),
    ("device=tpu", "'device' = 'tpu' is not one of"),
    ("dropout=1.5", "'dropout' = 1.5 is out of range"),
    ("seed=-1", "'seed' = -1 is out of range"),  # numpy refused it as a traceback after the data had loaded
    ("name=..", "'name' = '..' must be a plain folder name"),  # it wrote the run's files beside --out
    ("name=a/b", "'name' = 'a/b' must be a plain folder name"),
    ("augment=yes", "'augment' must be bool"),
    ("epochs", "expected key=value"),
    ("self_train=2", "self_train = 2 needs a text task with features 'nb'"),  # TF-IDF rows: it did nothing
    ("features=bow", "'features' = 'bow' is not one of"),
])
def test_bad_values_are_rejected_with_a_message_naming_the_key(setting, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [setting])


@pytest.mark.parametrize("settings, message", [
    (["task=fashion", "model=logreg"], "model 'logreg' takes text data, and task 'fashion' is image data"),
    (["task=images", "model=cnn", "interpolate=0.5"], "interpolate = 0.5 needs a text task"),
    (["task=texts", "model=cnn"], "model 'cnn' takes image data, and task 'texts' is text data"),
])
def test_a_model_or_option_for_another_kind_of_data_is_refused_naming_both(settings, message):
    with pytest.raises(UserError, match=message):
        load_config(None, settings)


def test_batch_norm_with_batches_of_one_is_refused_before_any_data_loads():
    with pytest.raises(UserError, match="batch_norm = true needs batch_size >= 2"):
        load_config(None, ["batch_norm=true", "batch_size=1"])


def test_bad_key_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "epochs = 3\nbatchsize = 64\n")
    with pytest.raises(UserError, match=f"{path}: unknown key 'batchsize'"):
        load_config(path)


def test_malformed_toml_names_the_file(tmp_path):
    path = write(tmp_path, "epochs = = 3\n")
    with pytest.raises(UserError, match=f"{path}: not valid TOML"):
        load_config(path)


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.toml"], "missing.toml: config file not found"),
    (["run", "configs/sentiment_mlp.toml", "--set", "epochs=0"], "'epochs' = 0 is out of range"),
    (["run", "configs/sentiment_mlp.toml", "--set", "activation=swish2"], "unknown activation 'swish2'"),
    (["explore", "structures", "--set", "lr=-1"], "'lr' = -1.0 is out of range"),
    (["explore", "theory", "--set", "lr=1"], "explore theory has no settings; drop --set lr=1"),
    (["explore", "gradcheck", "--set", "epochs=1"], "explore gradcheck has no settings; drop --set epochs=1"),
])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert main([*argv, "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_out_path_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "results").write_text("keep me")
    assert main(["run", str(ROOT / "configs/sentiment_mlp.toml"), "--out", str(tmp_path / "results")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "results").read_text() == "keep me"


def test_the_command_line_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", str(ROOT / "configs/sentiment_mlp.toml"),
                             "--set", "batch_size=0", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr


def test_an_empty_name_falls_back_to_the_config_files_stem():
    assert load_config(ROOT / "configs/fashion_mlp.toml", ["name="])["name"] == "fashion_mlp"
    assert load_config(None, ["task=fashion"])["name"] == "fashion"  # no file: the task
