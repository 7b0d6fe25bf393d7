import csv
import json
import re

import numpy as np
import pytest
import torch

from toolkit.augment import batch_augment
from cnn import Net
from toolkit.config import DEFAULTS, load_config
from toolkit.data import ROOT
from toolkit.errors import UserError
from toolkit.tasks import TASKS, load_raw
from toolkit.run import run
from main import main


def settings(**changes):
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in changes.items()]


def fashion_config(**changes):
    base = dict(task="fashion", dev_size=50, epochs=3, batch_size=32, hidden_dims=[32], lr=3e-3, device="cpu",
                name="fashion")
    return load_config(None, settings(**{**base, **changes}))


def test_local_kaggle_style_folder_loads(fashion_dir):
    loaded = load_raw("fashion", fashion_dir, DEFAULTS)
    x, y = loaded["train"]
    assert x.shape == (300, 28, 28) and x.dtype == np.uint8 and y.tolist()[:3] == [0, 1, 2]
    assert loaded["test"][0].shape == (40, 28, 28) and loaded["test"][1] is None


def without_np_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("np.load called: the prefetched arrays were not used")
    monkeypatch.setattr(np, "load", refuse)


def test_prefetched_image_files_give_the_arrays_np_load_gives(fashion_dir, monkeypatch):
    from toolkit import data
    expected = load_raw("fashion", fashion_dir, DEFAULTS)
    data.prefetch_npz(TASKS["fashion"], fashion_dir)
    without_np_load(monkeypatch)
    loaded = load_raw("fashion", fashion_dir, DEFAULTS)
    assert np.array_equal(loaded["train"][0], expected["train"][0]) and loaded["train"][0].flags.writeable
    assert np.array_equal(loaded["train"][1], expected["train"][1])
    assert np.array_equal(loaded["test"][0], expected["test"][0]) and loaded["test"][1] is None
    assert data._prefetched == {}  # taken once: a later read goes to the file again


def test_a_file_changed_after_its_prefetch_is_read_again(fashion_dir):
    from toolkit import data
    path = fashion_dir / "fashion_mnist" / "train.npz"
    data.prefetch_npz(TASKS["fashion"], fashion_dir)
    data._prefetched[path].result()  # the thread has read the old file
    x = np.full((5, 28, 28), 7, np.uint8)
    np.savez(path, x=x, y=np.arange(5))
    assert np.array_equal(load_raw("fashion", fashion_dir, DEFAULTS)["train"][0], x)


def test_a_new_prefetch_drops_what_an_earlier_run_left_untaken(fashion_dir, cifar_dir):
    from toolkit import data
    data.prefetch_npz(TASKS["fashion"], fashion_dir)  # as if that run had failed before reading its files
    data.prefetch_npz(TASKS["cifar10"], cifar_dir)
    assert sorted(p.parent.name for p in data._prefetched) == ["cifar10", "cifar10"]


def test_files_the_prefetch_leaves_to_np_load_still_load(fashion_dir):
    from toolkit import data
    path = fashion_dir / "fashion_mnist" / "train.npz"
    x = np.asfortranarray(np.arange(6 * 28 * 28, dtype=np.uint8).reshape(6, 28, 28))  # Fortran order
    np.savez(path, x=x, y=np.arange(6))
    data.prefetch_npz(TASKS["fashion"], fashion_dir)
    assert data._prefetched[path].result()[1] is None
    assert np.array_equal(load_raw("fashion", fashion_dir, DEFAULTS)["train"][0], x)


def test_a_damaged_file_gets_the_same_error_with_or_without_the_prefetch(fashion_dir):
    from toolkit import data
    (fashion_dir / "fashion_mnist" / "train.npz").write_bytes(b"PK\x03\x04 cut short")
    errors = []
    for prefetch in (False, True):
        if prefetch:
            data.prefetch_npz(TASKS["fashion"], fashion_dir)
        with pytest.raises(UserError, match="train.npz: not a readable .npz file") as e:
            load_raw("fashion", fashion_dir, DEFAULTS)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros(4, np.uint8)}, "train.npz: missing key 'x'"),
    ({"x": np.zeros((4, 28, 28), np.uint8)}, "train.npz: missing key 'y'"),
    ({"x": np.zeros((4, 28, 27), np.uint8), "y": np.zeros(4, np.uint8)},
     r"train.npz: 'x' must have shape \[N, 28, 28\]"),
    ({"x": np.zeros((4, 28, 28), np.float32), "y": np.zeros(4, np.uint8)}, "train.npz: 'x' must be uint8"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.array([0, 1, 2, 10])},
     "train.npz: 'y' labels must be integers 0..9"),
    ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(3, np.uint8)}, "train.npz: 'y' must be one label per image"),
    ({"x": np.zeros((0, 28, 28), np.uint8), "y": np.zeros(0, np.uint8)}, "train.npz: 'x' holds no images"),
])
def test_malformed_npz_names_the_file_and_the_key(tmp_path, arrays, message):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    np.savez(folder / "train.npz", **arrays)
    np.savez(folder / "test_images.npz", x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match=message):
        load_raw("fashion", tmp_path, DEFAULTS)


def test_malformed_data_exits_2_from_the_command_line(tmp_path, capsys):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    np.savez(folder / "train.npz", x=np.zeros((4, 28, 28), np.uint8))
    np.savez(folder / "test_images.npz", x=np.zeros((2, 28, 28), np.uint8))
    assert main(["run", str(ROOT / "configs/fashion_mlp.toml"), "--data-dir", str(tmp_path),
                 "--out", str(tmp_path)]) == 2
    assert "train.npz: missing key 'y'" in capsys.readouterr().err


def test_augmentation_keeps_shape_and_is_deterministic_under_a_seed():
    x = torch.randn(16, 3, 32, 32)
    a = batch_augment(x, torch.Generator().manual_seed(1), translate=2)
    b = batch_augment(x, torch.Generator().manual_seed(1), translate=2)
    c = batch_augment(x, torch.Generator().manual_seed(2), translate=2)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_augmentation_gives_each_image_or_its_mirror():
    x = torch.randn(32, 1, 28, 28)
    out = batch_augment(x, torch.Generator().manual_seed(0), translate=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_translation_moves_an_image_by_at_most_the_given_pixels():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre; flips keep it in the centre column
    out = batch_augment(x, torch.Generator().manual_seed(0), translate=2)
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64 and (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5


def test_reflect_padding_shifts_in_the_image_mirrored_at_its_edge_and_zeros_shift_in_zeros():
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)  # no zeros inside the image
    zeros = batch_augment(x, torch.Generator().manual_seed(0), translate=1, flip=0.0)
    reflect = batch_augment(x, torch.Generator().manual_seed(0), translate=1, flip=0.0, pad="reflect")
    assert (zeros == 0).any() and not (reflect == 0).any()
    moved = (zeros == 0).flatten(1).any(1)  # the same draws: the same images moved
    assert torch.equal(moved, ~(reflect == x).flatten(1).all(1))
    assert set(reflect.unique().tolist()) <= set(x.unique().tolist())  # only the image's own pixels


def test_flip_sets_the_share_of_mirrored_images():
    x = torch.arange(2.0).repeat(1000, 1, 1, 1)  # [1000, 1, 1, 2] rows (0, 1); mirrored rows are (1, 0)
    for flip in (0.0, 0.2, 1.0):
        out = batch_augment(x, torch.Generator().manual_seed(0), translate=0, flip=flip)
        assert abs((out[:, 0, 0, 0] == 1).float().mean().item() - flip) < 0.04


def test_alternating_flips_show_every_image_both_ways_in_each_two_epochs():
    from toolkit.run import make_augment
    config = load_config(None, ["task='cifar10'", "augment=true", "alternate_flip=true", "translate=0"])
    augment = make_augment(config, 1000)
    x = torch.arange(2.0).repeat(1000, 1, 1, 1)  # [1000, 1, 1, 2] rows (0, 1); mirrored rows are (1, 0)
    idx = torch.randperm(1000)
    mirrored = lambda epoch, rows: augment(x[rows], torch.Generator(), rows, epoch)[:, 0, 0, 0] == 1
    first, second, third = (mirrored(epoch, idx) for epoch in (1, 2, 3))
    assert abs(first.float().mean().item() - 0.5) < 0.05  # a random half, fixed by the seed...
    assert torch.equal(second, ~first) and torch.equal(third, first)  # ...then the other half, and back
    assert torch.equal(mirrored(1, idx[:100]), first[:100])  # the image decides, not its batch
    other = make_augment(load_config(None, ["task='cifar10'", "augment=true", "alternate_flip=true",
                                            "translate=0", "seed=1"]), 1000)
    assert not torch.equal(other(x[idx], torch.Generator(), idx, 1)[:, 0, 0, 0] == 1, first)


def test_a_short_fashion_run_has_no_flips_and_so_no_augmentation_step():
    from toolkit.run import make_augment
    config = lambda epochs: load_config(ROOT / "configs" / "fashion_mlp.toml", [f"epochs={epochs}"])
    assert config(10)["flip"] == 0.0 and make_augment(config(10), 100) is None
    assert config(30)["flip"] == 0.5 and make_augment(config(30), 100) is not None


def test_cnn_maps_a_batch_of_images_to_class_scores():
    assert Net([8, 16, 32]).eval()(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_fashion_mlp_trains_and_writes_the_homework_plots(fashion_dir, tmp_path):
    metrics = run(fashion_config(), fashion_dir, tmp_path)
    assert metrics["best_dev_acc"] >= 0.9
    for name in ("loss.png", "accuracy.png", "confusion.png", "predictions.png", "submission.csv"):
        assert (tmp_path / "fashion" / name).stat().st_size > 0


def test_a_few_cnn_steps_on_tiny_images_reduce_the_loss(cifar_dir, tmp_path):
    config = load_config(None, settings(task="cifar10", model="cnn", widths=[8, 16], dev_size=50, epochs=3,
                                        batch_size=50, lr=0.05, optimizer="nesterov", scheduler="onecycle",
                                        augment=True, tta_flip=True, ema=0.9, amp=True, device="cpu", name="cnn"))
    metrics = run(config, cifar_dir, tmp_path)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]


def test_gpu_config_runs_one_short_epoch_on_the_cpu(cifar_dir, tmp_path):
    config = load_config(ROOT / "configs/cifar10_cnn_gpu.toml", ["epochs=1", "device='cpu'", "compile=false",
                                                          "dev_size=50", "batch_size=64"])
    metrics = run(config, cifar_dir, tmp_path)
    with open(tmp_path / "cifar10_cnn_gpu" / "submission.csv", newline="") as f:
        predicted = [int(row["Category"]) for row in csv.DictReader(f)]
    assert len(metrics["history"]) == 1 and len(predicted) == 30 and set(predicted) <= set(range(10))


def test_predict_on_a_saved_run_writes_a_kaggle_submission(fashion_dir, tmp_path):
    run(fashion_config(), fashion_dir, tmp_path)
    out = tmp_path / "submission.csv"
    assert main(["predict", str(tmp_path / "fashion"), "--images", str(fashion_dir / "fashion_mnist" /
                                                                        "test_images.npz"), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"] and len(rows) == 41
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 41)) and all(0 <= int(r[1]) <= 9 for r in rows[1:])
    # the run's own submission for the same test images agrees
    assert out.read_text() == (tmp_path / "fashion" / "submission.csv").read_text()


def test_predict_refuses_images_of_the_wrong_shape(fashion_dir, tmp_path, capsys):
    run(fashion_config(), fashion_dir, tmp_path)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 32, 32, 3), np.uint8))
    assert main(["predict", str(tmp_path / "fashion"), "--images", str(tmp_path / "wrong.npz"),
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "wrong.npz: 'x' must have shape [N, 28, 28]" in capsys.readouterr().err


def test_predict_with_images_that_are_not_there_is_a_user_mistake(fashion_dir, tmp_path, capsys):
    run(fashion_config(), fashion_dir, tmp_path)
    assert main(["predict", str(tmp_path / "fashion"), "--images", str(tmp_path / "nope.npz"),
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "nope.npz: no such file" in capsys.readouterr().err


def test_a_run_trained_on_a_gpu_predicts_and_plots_on_a_machine_without_one(fashion_dir, tmp_path, monkeypatch):
    run(fashion_config(), fashion_dir, tmp_path)
    model_pt = tmp_path / "fashion" / "model.pt"
    checkpoint = torch.load(model_pt, weights_only=True)
    checkpoint["config"]["device"] = "cuda"  # as a Colab run with configs/cifar10_cnn_gpu.toml saves it
    torch.save(checkpoint, model_pt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", str(tmp_path / "fashion"),
                 "--images", str(fashion_dir / "fashion_mnist" / "test_images.npz"),
                 "--out", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "fashion" / "submission.csv").read_text()
    assert main(["plot", str(tmp_path / "fashion"), "--data-dir", str(fashion_dir)]) == 0


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_predict_with_a_missing_or_broken_checkpoint_exits_2(tmp_path, capsys, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "model.pt").write_bytes(content)
    assert main(["predict", str(run_dir), "--images", "x.npz", "--out", str(tmp_path / "s.csv")]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_a_runs_plots_can_be_redrawn_from_its_metrics_and_checkpoint(fashion_dir, tmp_path):
    run(fashion_config(), fashion_dir, tmp_path)
    for name in ("loss.png", "confusion.png", "predictions.png"):
        (tmp_path / "fashion" / name).unlink()
    assert main(["plot", str(tmp_path / "fashion"), "--data-dir", str(fashion_dir)]) == 0
    assert all((tmp_path / "fashion" / n).is_file() for n in ("loss.png", "confusion.png", "predictions.png"))


def test_plot_of_a_run_without_its_data_says_that_the_figures_need_data_dir(fashion_dir, tmp_path, capsys,
                                                                           monkeypatch):
    from torchvision import datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("network is unreachable")
    run(fashion_config(), fashion_dir, tmp_path)
    monkeypatch.setattr(datasets, "FashionMNIST", no_network)
    assert main(["plot", str(tmp_path / "fashion"), "--data-dir", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert "curves redrawn, but the confusion matrix and image grid need the run's data (--data-dir)" in err
    assert "FashionMNIST not found" in err and err.count("\n") == 1


def test_a_run_that_fails_before_writing_leaves_no_empty_folder(fashion_dir, tmp_path, capsys):
    run(fashion_config(), fashion_dir, tmp_path)
    (tmp_path / "fashion.toml").write_text('task = "fashion"\nepochs = 1\nhidden_dims = [8]\n')
    broken = tmp_path / "broken" / "fashion_mnist"
    broken.mkdir(parents=True)
    (broken / "train.npz").write_bytes(b"not a zip")
    (broken / "test.npz").write_bytes(b"not a zip")
    args = ["run", str(tmp_path / "fashion.toml"), "--out", str(tmp_path)]
    assert main([*args, "--data-dir", str(broken.parent)]) == 2  # a finished run there: this one would take fashion-2
    assert "fashion-2" in capsys.readouterr().out
    assert not (tmp_path / "fashion-2").exists() and (tmp_path / "fashion" / "model.pt").is_file()


def test_plots_false_draws_no_figures_and_main_py_plot_draws_them_later(fashion_dir, tmp_path):
    figures = ("loss.png", "accuracy.png", "confusion.png", "predictions.png")
    run(fashion_config(plots=False), fashion_dir, tmp_path)
    assert (tmp_path / "fashion" / "submission.csv").is_file()
    assert not any((tmp_path / "fashion" / n).exists() for n in figures)
    assert main(["plot", str(tmp_path / "fashion"), "--data-dir", str(fashion_dir)]) == 0
    assert all((tmp_path / "fashion" / n).is_file() for n in figures)


def test_normalization_statistics_are_exact_on_large_image_sets():
    from toolkit.tensors import channel_stats
    x = np.full((7000, 32, 32, 3), 200, np.uint8)  # 7.2M values per channel: float32 sums drift here
    x[:, :, :, 1] = 50
    mean, std = channel_stats(x)
    assert mean == pytest.approx([200 / 255, 50 / 255, 200 / 255], abs=1e-9) and std == pytest.approx([0, 0, 0])


@pytest.mark.parametrize("shape", [(300, 28, 28), (300, 32, 32, 3)])
def test_normalization_statistics_match_float64_numpy_per_channel(shape):
    from toolkit.tensors import channel_stats
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    if x.ndim == 4:
        x[..., 1] //= 4  # channels with different statistics, so a mix-up of channels shows
    values = (x / 255).reshape(-1, shape[3] if len(shape) == 4 else 1)
    mean, std = channel_stats(x)
    assert mean == pytest.approx(values.mean(0), abs=1e-12) and std == pytest.approx(values.std(0), abs=1e-12)


def test_training_images_are_normalized_to_zero_mean_and_unit_std(cifar_dir):
    from toolkit.tensors import load_task
    config = load_config(None, settings(task="cifar10", model="cnn", dev_size=50, device="cpu"))
    x = load_task(config, cifar_dir, torch.device("cpu"))["train"][0]
    assert x.mean((0, 2, 3)).abs().max() < 1e-4 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("model, stored", [("mlp", torch.bfloat16), ("cnn", torch.float32)])
def test_under_bf16_autocast_an_mlp_keeps_its_images_in_bf16_and_a_cnn_in_float32(cifar_dir, monkeypatch, model,
                                                                                   stored):
    import toolkit.tensors
    monkeypatch.setattr(toolkit.tensors, "amp_dtype", lambda device, enabled: torch.bfloat16 if enabled else None)
    config = load_config(None, settings(task="cifar10", model=model, dev_size=50, device="cpu", amp=True))
    data = toolkit.tensors.load_task(config, cifar_dir, torch.device("cpu"))  # this test's own folder: loaded afresh
    assert {data[part][0].dtype for part in ("train", "dev", "test")} == {stored}


def test_a_linear_layer_under_bf16_autocast_computes_the_same_from_bf16_images_as_from_float32_ones():
    from toolkit.tensors import image_tensor
    x = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    mean, std = torch.tensor(0.286).view(1, 1, 1, 1), torch.tensor(0.353).view(1, 1, 1, 1)
    layer = torch.nn.Linear(784, 16)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(image_tensor(x, mean, std, "cpu", dtype).flatten(1))
        out.float().square().sum().backward()
        results.append((out, layer.weight.grad))
        layer.weight.grad = None
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_missing_image_data_without_network_says_where_it_looked(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("network is unreachable")
    monkeypatch.setattr(datasets, "CIFAR10", no_network)
    with pytest.raises(UserError, match=f"CIFAR10 not found: looked for {tmp_path}/cifar10/train.npz.*--data-dir"):
        load_raw("cifar10", tmp_path, DEFAULTS)


def test_predict_refuses_a_foreign_torch_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "run" / "model.pt")  # valid torch, not ours
    assert main(["predict", str(tmp_path / "run"), "--images", "x.npz", "--out", str(tmp_path / "s.csv")]) == 2
    assert "not a readable checkpoint of this toolkit" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_device_is_a_one_line_error(fashion_dir, tmp_path, capsys):
    assert main(["run", str(ROOT / "configs/fashion_mlp.toml"), "--data-dir", str(fashion_dir), "--out", str(tmp_path),
                 "--set", "device='cuda'"]) == 2
    assert "device = 'cuda' is not available" in capsys.readouterr().err


def test_the_global_max_pool_gives_adaptive_max_pools_values_and_gradients_ties_included():
    # the same numbers as nn.AdaptiveMaxPool2d(1), whose CUDA backward --deterministic refuses
    from cnn import GlobalMaxPool
    x = torch.randint(0, 4, (16, 8, 3, 3)).to(torch.bfloat16).to(memory_format=torch.channels_last)  # many ties
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, pooled = torch.nn.AdaptiveMaxPool2d(1)(a), GlobalMaxPool()(b)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    pooled.backward(grad)
    assert torch.equal(pooled, expected) and torch.equal(b.grad, a.grad)


def test_a_labelled_test_split_gets_its_accuracy_and_still_a_submission(fashion_dir, tmp_path):
    # torchvision's download has test labels: the notebook hands each run's submission.csv over all the same
    folder = fashion_dir / "fashion_mnist"
    x = np.load(folder / "test_images.npz")["x"]
    np.savez(folder / "test.npz", x=x, y=np.arange(len(x)) % 10)  # read before test_images.npz
    metrics = run(fashion_config(), fashion_dir, tmp_path)
    assert metrics["test_acc"] is not None
    with open(tmp_path / "fashion" / "submission.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Id"]) for r in rows] == list(range(1, len(x) + 1))


def test_the_closing_line_gives_the_training_time_and_the_loading_time_apart(fashion_dir, tmp_path, capsys):
    # the run's "seconds" count training and testing only, so the line names the loading time apart
    assert main(["run", str(ROOT / "configs/fashion_mlp.toml"), "--data-dir", str(fashion_dir), "--out", str(tmp_path),
                 "--set", "epochs=1", "--set", "dev_size=50", "--set", "plots=false"]) == 0
    assert re.search(r"test acc withheld \([^)]*submission.csv[^)]*\), \d+s training after \d+s loading; results in",
                     capsys.readouterr().out)


def test_the_fashion_cnn_config_trains_on_one_channel_images(fashion_dir, tmp_path):
    config = load_config(ROOT / "configs" / "fashion_cnn.toml", settings(epochs=2, dev_size=50, batch_size=50,
                                                                         widths=[8, 16], device="cpu"))
    metrics = run(config, fashion_dir, tmp_path)
    assert len(metrics["history"]) == 2 and (tmp_path / "fashion_cnn" / "submission.csv").is_file()


def teacher_file(tmp_path):
    path = tmp_path / "teacher.toml"
    path.write_text('task = "fashion"\nmodel = "cnn"\nwidths = [8, 16]\nepochs = 2\nbatch_size = 50\n'
                    'dev_size = 50\ntta_flip = true\n')
    return path


def test_a_distilled_mlp_trains_its_teacher_first_and_learns_from_its_probabilities(fashion_dir, tmp_path,
                                                                                     monkeypatch):
    from toolkit import train
    seen, original = [], train.distilled_targets
    monkeypatch.setattr(train, "distilled_targets", lambda probs, *rest: seen.append(probs) or original(probs, *rest))
    metrics = run(fashion_config(teacher=str(teacher_file(tmp_path)), distill=0.5), fashion_dir, tmp_path)
    teacher = json.loads((tmp_path / "fashion" / "teacher" / "metrics.json").read_text())
    assert teacher["config"]["model"] == "cnn" and metrics["teacher"]["best_dev_acc"] == teacher["best_dev_acc"]
    assert seen and seen[0].shape == (32, 10) and torch.allclose(seen[0].sum(1), torch.ones(32))
    assert (tmp_path / "fashion" / "submission.csv").is_file()


def test_a_second_run_of_a_distilled_config_reuses_its_finished_teacher(fashion_dir, tmp_path, capsys):
    config = fashion_config(teacher=str(teacher_file(tmp_path)), epochs=1)
    run(config, fashion_dir, tmp_path)
    model = (tmp_path / "fashion" / "teacher" / "model.pt").stat().st_mtime_ns
    run({**config, "epochs": 2}, fashion_dir, tmp_path, folder="overwrite")  # the student changed, its teacher did not
    assert "teacher: finished before, skipped" in capsys.readouterr().out
    assert (tmp_path / "fashion" / "teacher" / "model.pt").stat().st_mtime_ns == model


def test_distilled_targets_mix_the_teachers_probabilities_with_the_one_hot_label():
    from toolkit.train import distilled_targets
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    torch.testing.assert_close(distilled_targets(probs, torch.tensor([1]), 0.25),
                               torch.tensor([[0.175, 0.8, 0.025]]))


@pytest.mark.parametrize("changes, message", [
    (dict(teacher="nowhere.toml"), "teacher = 'nowhere.toml': config file not found"),
    (dict(teacher="configs/fashion_cnn.toml", refit=True), "distillation needs an image task and refit = false"),
    (dict(teacher="configs/fashion_cnn.toml", task="sentiment"), "distillation needs an image task")])
def test_a_teacher_that_cannot_teach_is_refused_before_anything_runs(changes, message):
    with pytest.raises(UserError, match=re.escape(message)):
        fashion_config(**changes)


def test_a_teacher_of_other_images_is_refused(fashion_dir, tmp_path):
    with pytest.raises(UserError, match="teacher .* has dev_size = 5000, the student 50"):
        run(fashion_config(teacher="configs/fashion_cnn.toml"), fashion_dir, tmp_path)


def test_a_new_built_in_data_set_is_one_row_and_one_config(tmp_path, monkeypatch, capsys):
    from toolkit import data
    from toolkit.tasks import Task
    classes = tuple(f"kind {i}" for i in range(100))
    row = Task("image", data.read_npz_folder, folder="cifar100", classes=classes, submit="index", shape=(32, 32),
               channels=3, download=data.torchvision_set("CIFAR100"))
    monkeypatch.setitem(TASKS, "cifar100", row)  # as a line in toolkit/tasks.py would add it
    config = (ROOT / "configs/cifar10_cnn.toml").read_text().replace('task = "cifar10"', 'task = "cifar100"')
    (tmp_path / "cifar100_cnn.toml").write_text(config)
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar100"
    folder.mkdir(parents=True)
    np.savez(folder / "train.npz", x=rng.integers(0, 255, (400, 32, 32, 3), dtype=np.uint8), y=np.arange(400) % 100)
    np.savez(folder / "test_images.npz", x=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8))
    small = ["--set", "budget_minutes=0", "--set", "epochs=1", "--set", "dev_size=100", "--set", "widths=[24, 8]",
             "--set", "amp_widths=[]", "--set", "tta_shift=0"]
    assert main(["run", str(tmp_path / "cifar100_cnn.toml"), "--data-dir", str(tmp_path / "data"), "--out",
                 str(tmp_path / "out"), *small]) == 0
    metrics = json.loads((tmp_path / "out" / "cifar100_cnn" / "metrics.json").read_text())
    assert metrics["classes"] == list(classes) and metrics["config"]["task"] == "cifar100"
    with open(tmp_path / "out" / "cifar100_cnn" / "submission.csv", newline="") as f:
        assert all(0 <= int(row["Category"]) < 100 for row in csv.DictReader(f))
