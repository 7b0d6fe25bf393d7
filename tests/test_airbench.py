"""The airbench options of the CIFAR-10 CNN (cnn.py, config keys whiten ... lookahead, tta_shift)."""
import pytest
import torch

from cnn import Net, init_whitening
from toolkit.config import load_config
from toolkit.errors import UserError
from toolkit import steps, train
from toolkit.run import run
from conftest import signal_at_call, without_seconds
from toolkit.muon import orthogonalize
from toolkit.steps import make_optimizer, tta_logits
from toolkit.state import TrainState, lookahead_step


def settings(**changes):
    base = dict(task="cifar10", model="cnn", widths=[24, 8, 16], whiten=True, dev_size=50, epochs=2, batch_size=50,
                lr=0.05, optimizer="nesterov", scheduler="onecycle", augment=True, device="cpu", name="cnn")
    return [f"{k}={v!r}" for k, v in {**base, **changes}.items()]


def test_the_whitening_stem_decorrelates_2x2_patches_to_unit_variance():
    torch.manual_seed(0)
    images = torch.randn(300, 3, 8, 8) @ torch.randn(8, 8)  # neighbouring pixels correlated
    net = Net([24, 8], whiten=True)
    init_whitening(net, images)
    out = net[0](images) - net[0].bias[:, None, None]
    first_half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the other 12 channels are their negatives
    covariance = first_half.T @ first_half / len(first_half)
    assert torch.allclose(covariance, torch.eye(12), atol=1e-3)
    assert torch.allclose(out[:, 12:], -out[:, :12], atol=1e-5)
    assert not net[0].weight.requires_grad


def test_the_whitening_stem_has_eight_channels_per_image_channel_whatever_widths_0_says():
    for channels, stem in ((3, 24), (1, 8)):
        net = Net([32, 16], whiten=True, in_channels=channels)
        assert net[0].out_channels == stem and net[2][0].in_channels == stem  # the first group takes the stem's
        init_whitening(net, torch.randn(50, channels, 8, 8))
        assert torch.isfinite(net[0].weight).all()


def test_frozen_bn_scales_dirac_convs_and_logit_scale():
    net = Net([24, 8, 16], whiten=True, logit_scale=1 / 9, bn_scale=False, dirac=True)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    conv = net[2][0]  # the first group's first conv: 24 -> 8 channels
    assert torch.equal(conv.weight[:, :, 1, 1][:, :8], torch.eye(8))  # identity on the first 8 input channels
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x), torch.nn.Sequential(*list(net)[:-1])(x) / 9)


def test_bias_lr_gives_batch_norm_its_own_lr_and_the_same_decay_per_step():
    net = Net([24, 8], whiten=True, bn_scale=False)
    config = load_config(None, settings(bias_lr=64.0, weight_decay=1e-3, lr=0.5))
    rest, norms = make_optimizer(net, config, torch.device("cpu")).param_groups
    assert len(norms["params"]) == 2 and norms["lr"] == 32.0 and norms["weight_decay"] == pytest.approx(1e-3 / 64)
    assert rest["lr"] * rest["weight_decay"] == pytest.approx(norms["lr"] * norms["weight_decay"])


def test_lookahead_pulls_the_weights_towards_their_average_and_ends_on_it():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    config = load_config(None, settings(lookahead=True, epochs=1))
    state = TrainState(net, config, steps_per_epoch=10, device=torch.device("cpu"))
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    state.step = 4
    lookahead_step(state, 10)  # not a 5th step: nothing happens
    assert torch.equal(net.weight, start + 1)
    state.step = 5
    lookahead_step(state, 10)  # decay 0.95^5 * 0.5^3 = 0.097: mostly the new weights
    decay = 0.95 ** 5 * 0.5 ** 3
    assert torch.allclose(net.weight, decay * start + (1 - decay) * (start + 1))
    moved = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    state.step = 10
    lookahead_step(state, 10)  # the last step: the weights become the average
    assert torch.allclose(net.weight, moved) and torch.equal(state.lookahead[0], net.weight)


def test_shift_tta_averages_shifted_views_half_and_half_with_the_unshifted_one():
    calls = []
    model = lambda x: calls.append(x) or x.mean((2, 3))
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = tta_logits(model, x, {"tta_flip": False, "tta_shift": 1})
    up_left, down_right = calls[1], calls[2]
    assert torch.equal(up_left[..., :3, :3], x[..., 1:, 1:]) and torch.equal(down_right[..., 1:, 1:], x[..., :3, :3])
    assert torch.allclose(out, x.mean((2, 3)) / 2 + (up_left.mean((2, 3)) + down_right.mean((2, 3))) / 4)


def test_the_checkpoint_is_chosen_without_the_shifted_views_and_its_dev_and_test_predicted_with_them(cifar_dir,
                                                                                                    tmp_path,
                                                                                                    monkeypatch):
    from toolkit.predict import load_checkpoint
    from toolkit.tensors import load_task
    from toolkit.steps import evaluate
    shifts, views = [], steps.tta_logits  # the tta_shift of every evaluated batch, in order
    monkeypatch.setattr(steps, "tta_logits", lambda model, xb, config: shifts.append(config["tta_shift"]) or
                        views(model, xb, config))
    config = load_config(None, settings(tta_flip=True, tta_shift=1, epochs=3))
    metrics = run(config, cifar_dir, tmp_path)
    assert shifts == [0, 0, 0, 1, 1]  # dev after each epoch (one batch each), then the best checkpoint's dev and test
    model, _ = load_checkpoint(tmp_path / "cnn")
    data = load_task(config, cifar_dir, torch.device("cpu"))
    flips_only = evaluate(model, *data["dev"], {**config, "tta_shift": 0})[1]
    assert [h["dev_acc"] for h in metrics["history"]][metrics["best_epoch"] - 1] == metrics["best_dev_acc"] \
        == flips_only
    assert metrics["final_dev_acc"] == evaluate(model, *data["dev"], config)[1]
    test_preds = evaluate(model, data["test"][0], None, config)[2]
    rows = (tmp_path / "cnn/submission.csv").read_text().split()[1:]
    assert [int(r.split(",")[1]) for r in rows] == test_preds.tolist()


def test_the_airbench_recipe_trains_and_an_interrupted_run_resumes_exactly(cifar_dir, tmp_path, monkeypatch):
    config = load_config(None, settings(bn_scale=False, dirac=True, logit_scale=1 / 9, bias_lr=64.0, lookahead=True,
                                        tta_flip=True, tta_shift=1, bn_momentum=0.4, label_smoothing=0.2, epochs=3))
    whole = run(config, cifar_dir, tmp_path / "whole")
    losses = [h["train_loss"] for h in whole["history"]]
    assert losses[-1] < losses[0]
    signal_at_call(monkeypatch, 6)  # in epoch 2, after the lookahead's first averaging steps
    with pytest.raises(train.Interrupted):
        run(config, cifar_dir, tmp_path / "split")
    monkeypatch.undo()
    resumed = run(config, cifar_dir, tmp_path / "split", folder="resume")
    assert without_seconds(resumed) == without_seconds(whole)
    assert (tmp_path / "split/cnn/submission.csv").read_text() == (tmp_path / "whole/cnn/submission.csv").read_text()


def test_the_loop_hands_alternating_flips_every_training_row_once_an_epoch_with_its_epoch(cifar_dir, tmp_path,
                                                                                          monkeypatch):
    import toolkit.run
    calls, real = [], toolkit.run.alternating_flips

    def recording(n, seed):
        mirrored = real(n, seed)
        calls.append(n)
        return lambda idx, epoch: calls.append((idx.clone(), epoch)) or mirrored(idx, epoch)
    monkeypatch.setattr(toolkit.run, "alternating_flips", recording)
    run(load_config(None, settings(alternate_flip=True)), cifar_dir, tmp_path)
    n, batches = calls[0], calls[1:]
    assert n == 150  # the 200 images less 50 for dev
    for epoch in (1, 2):
        rows = torch.cat([idx for idx, e in batches if e == epoch])
        assert torch.equal(rows.sort().values, torch.arange(n))
    assert [e for _, e in batches] == sorted(e for _, e in batches)


@pytest.mark.parametrize("autocast, trained", [(torch.bfloat16, [24, 16, 32]), (None, [24, 8, 16])])
def test_amp_widths_are_the_net_trained_saved_and_recognised_as_finished_where_autocast_runs(
        cifar_dir, tmp_path, monkeypatch, capsys, autocast, trained):
    import toolkit.run
    from toolkit.predict import load_checkpoint
    monkeypatch.setattr(toolkit.run, "amp_dtype", lambda device, enabled: autocast if enabled else None)
    config = load_config(None, settings(amp_widths=[24, 16, 32], amp=True, epochs=1))
    assert run(config, cifar_dir, tmp_path)["config"]["widths"] == trained
    model, checkpoint = load_checkpoint(tmp_path / "cnn")  # what predict builds from model.pt
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    assert checkpoint["config"]["widths"] == trained and head.in_features == trained[-1]
    toolkit.run.run_or_skip(config, cifar_dir, tmp_path)
    assert "finished before, skipped" in capsys.readouterr().out


def test_whiten_needs_a_convolutional_model():
    with pytest.raises(UserError, match="whiten = true needs a convolutional model.*'mlp'"):
        load_config(None, settings(model="mlp", optimizer="adam"))


def test_orthogonalize_evens_out_a_matrix_spectrum_keeping_its_directions():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(16, 16))
    v, _ = torch.linalg.qr(torch.randn(72, 16))
    g = u @ torch.diag(torch.logspace(0, -1, 16)) @ v.T  # a [16, 72] filter-bank step, singular values 1 to 0.1
    for matrix in (g, g.T):  # wide and tall
        s = torch.linalg.svdvals(orthogonalize(matrix))
        assert s.min() > 0.5 and s.max() < 1.5  # a 10x spread brought into airbench's band around 1
    # U S' V^T: g's own singular directions, only their sizes changed (and all of them positive)
    inner = u.T @ orthogonalize(g) @ v
    assert torch.allclose(inner, torch.diag(inner.diagonal()), atol=1e-5) and (inner.diagonal() > 0.5).all()


def test_muon_steps_filters_orthogonally_at_fixed_norm_and_everything_else_as_nesterov_sgd():
    torch.manual_seed(0)
    net = Net([24, 8, 16], whiten=True, bn_scale=False)
    config = load_config(None, settings(optimizer="muon", muon_lr=0.1, muon_momentum=0.6, bias_lr=64.0,
                                        weight_decay=1e-3, lr=0.5, momentum=0.85))
    optimizer = make_optimizer(net, config, torch.device("cpu"))
    *rest, filters = optimizer.param_groups
    assert filters["orthogonal"] and filters["lr"] == 0.1 and filters["momentum"] == 0.6
    assert {p.dim() for p in filters["params"]} == {4} and len(filters["params"]) == 4  # the whitening conv is fixed
    assert [g["lr"] for g in rest] == [0.5, 32.0]  # head and whitening bias; batch-norm shifts at bias_lr
    trained = [p for p in net.parameters() if p.requires_grad]
    twins = [p.detach().clone().requires_grad_() for p in trained]
    sgd = torch.optim.SGD([{"params": [t for p, t in zip(trained, twins) if any(p is q for q in g["params"])],
                            "lr": g["lr"], "weight_decay": g["weight_decay"]} for g in rest],
                          lr=0.5, momentum=0.85, nesterov=True)
    conv = filters["params"][0]
    start, grads = conv.detach().clone(), [[torch.randn_like(p) for p in trained] for _ in range(3)]
    for step in grads:  # the same gradients for both: the update rules alone are compared
        for p, t, g in zip(trained, twins, step):
            p.grad, t.grad = g.clone(), g.clone()
        optimizer.step()
        sgd.step()
        if step is grads[0]:  # first step: rescale, then lr times the orthogonalized (1 + momentum) gradient
            g = step[[p is conv for p in trained].index(True)]
            expected = start * len(start) ** 0.5 / start.norm() - 0.1 * orthogonalize(1.6 * g.reshape(len(g), -1)
                                                                                       ).view_as(g)
            assert torch.allclose(conv, expected, atol=1e-6)
    for p, t in zip(trained, twins):
        if p.dim() == 4:
            assert p.norm().item() == pytest.approx(len(p) ** 0.5, rel=0.1)  # rescaled before each step
        else:
            assert torch.allclose(p, t, atol=1e-6)


def test_muon_trains_a_cnn_and_resumes_exactly(cifar_dir, tmp_path, monkeypatch):
    config = load_config(None, settings(optimizer="muon", bias_lr=64.0, lookahead=True, epochs=3))
    whole = run(config, cifar_dir, tmp_path / "whole")
    assert whole["history"][-1]["train_loss"] < whole["history"][0]["train_loss"]
    signal_at_call(monkeypatch, 6)
    with pytest.raises(train.Interrupted):
        run(config, cifar_dir, tmp_path / "split")
    monkeypatch.undo()
    assert without_seconds(run(config, cifar_dir, tmp_path / "split", folder="resume")) == without_seconds(whole)


def test_muon_needs_conv_filters():
    with pytest.raises(UserError, match="optimizer 'muon' needs a convolutional model.*'mlp'"):
        load_config(None, ["task='fashion'", "optimizer='muon'"])
