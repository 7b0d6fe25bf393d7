from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.features import to_torch
from mlp import ACTIVATIONS, Dropout, SentimentClassifier, SparseLinear, make_activation


@pytest.mark.parametrize("hidden_dims", [[], [512], [512, 512], [512, 512, 512], [7, 3]])
def test_layers_come_from_consecutive_size_pairs(hidden_dims):
    model = SentimentClassifier(50, 2, hidden_dims)
    sizes = [50, *hidden_dims, 2]
    assert isinstance(model.layers, nn.ModuleList)
    assert [(l.in_features, l.out_features) for l in model.layers] == list(zip(sizes[:-1], sizes[1:]))
    assert model(torch.randn(4, 50)).shape == (4, 2)


def test_empty_hidden_dims_is_a_single_linear_layer():
    model = SentimentClassifier(10, 3, [])
    assert len(model.layers) == 1
    x = torch.randn(5, 10)
    assert torch.allclose(model(x), model.layers[0](x))


def test_activation_follows_hidden_layers_but_not_the_output():
    model = SentimentClassifier(4, 2, [3], activation="ReLU")
    with torch.no_grad():
        model.layers[1].weight.fill_(-1.0)
        model.layers[1].bias.fill_(-1.0)
    assert (model(torch.randn(8, 4)) < 0).all()  # a ReLU on the output could not be negative


@pytest.mark.parametrize("name", ["Sigmoid", "Tanh", "ReLU", "GELU", "GeLU", "LeakyReLU", "ELU", "SiLU",
                                  "Softplus", "relu", "SIGMOID"])
def test_every_activation_name_builds_and_runs(name):
    model = SentimentClassifier(6, 2, [5], activation=name)
    assert type(model.activation).__name__.lower() == name.lower()
    assert model(torch.randn(3, 6)).shape == (3, 2)


def test_unknown_activation_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swish2'.*Sigmoid.*ReLU.*GELU"):
        make_activation("swish2")
    assert len(ACTIVATIONS) >= 8


def test_sparse_first_layer_equals_dense_reference():
    torch.manual_seed(0)
    dense = torch.rand(6, 40) * (torch.rand(6, 40) < 0.2)  # mostly zeros, like TF-IDF rows
    import scipy.sparse as sp
    x = to_torch(sp.csr_matrix(dense.numpy()))
    layer = SparseLinear(40, 8)
    reference = nn.Linear(40, 8)
    with torch.no_grad():
        reference.weight.copy_(layer.weight.T)
        reference.bias.copy_(layer.bias)
    assert torch.allclose(layer(x), reference(dense), atol=1e-6)
    assert torch.allclose(layer(dense), reference(dense), atol=1e-6)
    # and the gradients agree too
    layer(x).square().sum().backward()
    reference(dense).square().sum().backward()
    assert torch.allclose(layer.weight.grad, reference.weight.grad.T, atol=1e-5)


def test_sparse_model_matches_the_same_model_on_dense_input():
    import scipy.sparse as sp
    torch.manual_seed(0)
    dense = torch.rand(5, 30) * (torch.rand(5, 30) < 0.3)
    model = SentimentClassifier(30, 2, [16, 8], activation="tanh", sparse_input=True).eval()
    assert torch.allclose(model(to_torch(sp.csr_matrix(dense.numpy()))), model(dense), atol=1e-6)


def test_dense_images_are_flattened():
    model = SentimentClassifier(28 * 28, 10, [32])
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_dropout_is_on_in_training_and_off_in_evaluation():
    model = SentimentClassifier(20, 2, [64], dropout=0.5)
    x = torch.randn(3, 20)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_drops_p_of_the_units_and_scales_the_rest_to_keep_the_mean(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, dtype=dtype)
    y = Dropout(p)(x).float()
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002  # 10^6 units: 5 standard errors or less
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)), rtol=1e-2)
    assert abs(y.mean().item() - 1) < 0.01
    assert not torch.equal(y, Dropout(p)(x).float())  # a new mask at every call


def test_dropout_follows_the_seed_and_lets_gradients_through_the_kept_units_only():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(1)
    y = Dropout(0.5)(x)
    torch.manual_seed(1)
    assert torch.equal(y, Dropout(0.5)(x))
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * 2)

@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_symmetric_initialization_keeps_hidden_units_identical_while_training(init):
    from mlp import initialize
    torch.manual_seed(0)
    model = initialize(SentimentClassifier(12, 3, [6], activation="sigmoid"), init)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    w = model.layers[0].weight
    assert torch.allclose(w, w[:1].expand_as(w)), "every hidden unit has the same incoming weights"


def test_kaiming_initialization_of_the_sparse_layer_uses_its_input_fan():
    from mlp import initialize
    model = initialize(SentimentClassifier(10000, 2, [16], sparse_input=True), "kaiming")
    bound = (6 / 10000) ** 0.5  # kaiming_uniform with gain sqrt(2): sqrt(6 / fan_in)
    assert model.layers[0].weight.abs().max() <= bound and model.layers[0].weight.abs().max() > 0.9 * bound


def test_the_homework_imports_its_plotting_helpers_from_mlp_and_a_run_never_loads_matplotlib_for_them(tmp_path):
    import subprocess
    import sys
    code = ("import sys, mlp; assert 'matplotlib' not in sys.modules\n"
            "from mlp import SentimentClassifier, visualize_configs, visualize_epochs\n"
            f"visualize_epochs([0.9, 0.5], [1.0, 0.7], {str(tmp_path / 'loss.png')!r})\n"
            f"visualize_configs([[0.6, 0.8], [0.5, 0.7]], ['[]', '[512]'], 'dev acc', {str(tmp_path / 'acc.png')!r})\n")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "acc.png").stat().st_size > 0


def test_a_name_mlp_does_not_have_is_an_attribute_error():
    import mlp
    with pytest.raises(AttributeError, match="visualize_everything"):
        mlp.visualize_everything


def test_batch_norm_standardises_each_hidden_layer_before_its_activation():
    torch.manual_seed(0)
    model = SentimentClassifier(6, 3, [5, 4], activation="Tanh", batch_norm=True).train()
    assert [type(n) for n in model.norms] == [nn.BatchNorm1d, nn.BatchNorm1d]
    x = torch.randn(32, 6) * 3 + 1
    standardise = lambda h: (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)  # fresh BN: scale 1
    h = torch.tanh(standardise(model.layers[0](x)))
    h = torch.tanh(standardise(model.layers[1](h)))
    assert torch.allclose(model(x), model.layers[2](h), atol=1e-5)


def test_without_batch_norm_the_weights_are_the_plain_mlps():
    keys = set(SentimentClassifier(6, 2, [5, 4]).state_dict())
    assert keys == {f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}  # old checkpoints still load
