"""The MLP family: SentimentClassifier for review n-gram features, the same class for flattened images;
Interpolated, an MLP whose predictions mix in a fixed linear model's. The homework's plotting helpers
visualize_epochs and visualize_configs are importable from here too (toolkit/plots.py draws them)."""
import math

import torch
from torch import nn

ACTIVATIONS = {cls.__name__.lower(): cls for cls in
               (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus, nn.Mish)}


def make_activation(name):
    """nn.Module for an activation name, case-insensitive ('GeLU', 'relu', ...)."""
    cls = ACTIVATIONS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown activation {name!r}; valid names: "
                         f"{', '.join(c.__name__ for c in ACTIVATIONS.values())}")
    return cls()


INITS = {
    "zeros": lambda w: nn.init.zeros_(w),
    "constant": lambda w: nn.init.constant_(w, 0.1),
    "normal": lambda w: nn.init.normal_(w, std=1.0),  # what some students did: far too large for wide layers
    "xavier": lambda w: nn.init.xavier_uniform_(w),
    "kaiming": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
}


def initialize(model, name):
    """Re-initialize every weight matrix of the model (biases to zero), unless name is 'default'."""
    if name == "default":
        return model
    for layer in model.layers:
        # SparseLinear stores weight as [in, out]; its transpose has nn.Linear's layout, so fans come out right
        INITS[name](layer.weight.T if isinstance(layer, SparseLinear) else layer.weight)
        nn.init.zeros_(layer.bias)
    return model


class SparseLinear(nn.EmbeddingBag):
    """y = x @ weight + bias for a sparse CSR x, without ever densifying x.

    Each row of x picks rows of weight by its non-zero columns and sums them scaled by the values: exactly
    nn.EmbeddingBag(mode="sum") with per-sample weights. weight is [in_features, out_features], the
    transpose of nn.Linear's, because that is the layout EmbeddingBag gathers from. The gradient stays
    dense so every optimizer (and weight decay) works unchanged; on 200k features x 512 units that is a
    large write every step, which large batches amortise.
    """

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, mode="sum")
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.layout == torch.sparse_csr:
            return super().forward(x.col_indices(), x.crow_indices()[:-1], per_sample_weights=x.values()) + self.bias
        return x @ self.weight + self.bias


class Dropout(nn.Dropout):
    """nn.Dropout whose mask, on a CPU, takes 16 random bits an activation, four from each 64-bit draw:
    bernoulli_ draws one number an activation, one at a time, 4x slower, and that was half of the Fashion MLP's
    step. A unit is dropped with probability p to within 2^-17; on a GPU this is nn.Dropout itself."""

    def forward(self, x):
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, 2**63 - 1).view(torch.int16)[:n]
        keep = bits.view(x.shape) >= round(self.p * 65536) - 32768
        return x * (keep.to(x.dtype) * (1 / (1 - self.p)))


class SentimentClassifier(nn.Module):
    """MLP whose layers sit in an nn.ModuleList built from consecutive pairs of [input_dim, *hidden_dims,
    num_classes]; hidden_dims=[] is logistic regression. The activation (and dropout) follows every hidden
    layer, never the output. sparse_input=True makes the first layer a SparseLinear for TF-IDF rows.
    Dense inputs of any shape are flattened, so the same class is the Fashion-MNIST MLP. batch_norm=True puts
    a BatchNorm1d (in self.norms) between each hidden layer and its activation (Ioffe & Szegedy 2015)."""

    def __init__(self, input_dim, num_classes, hidden_dims, activation="ReLU", dropout=0.0, sparse_input=False,
                 batch_norm=False):
        super().__init__()
        sizes = [input_dim, *hidden_dims, num_classes]
        self.layers = nn.ModuleList(
            SparseLinear(a, b) if sparse_input and i == 0 else nn.Linear(a, b)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) if batch_norm else nn.Identity() for h in hidden_dims)
        self.activation = make_activation(activation)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        if x.layout == torch.strided:
            x = x.flatten(1)
        for layer, norm in zip(self.layers[:-1], self.norms):
            x = self.dropout(self.activation(norm(layer(x))))
        return self.layers[-1](x)


class Interpolated(nn.Module):
    """An MLP trained alone whose evaluation mixes in a fixed linear model: p = (1 - w) softmax(mlp(x)) +
    w softmax(linear(x)), returned as log p (valid logits for cross-entropy and argmax). In training mode
    it is the MLP alone, so train loss and accuracy are the MLP's and dev and test the mixture's. The
    linear layer (an NB logistic regression, logreg.fit_logreg) is frozen: no gradient, no weight decay."""

    def __init__(self, mlp, linear, weight):
        super().__init__()
        self.mlp, self.linear = mlp, linear.requires_grad_(False)
        self.register_buffer("log_weights", torch.tensor([1 - weight, weight]).log(), persistent=False)

    def forward(self, x):
        logits = self.mlp(x)
        if self.training:
            return logits
        both = torch.stack([logits.float().log_softmax(1), self.linear(x).float().log_softmax(1)])
        return (both + self.log_weights.view(2, 1, 1)).logsumexp(0)


def __getattr__(name):
    """`from mlp import visualize_epochs, visualize_configs`, as the homework skeleton writes it; matplotlib is
    loaded only then, so a run that draws nothing never pays for it."""
    if name in ("visualize_epochs", "visualize_configs"):
        from toolkit import plots
        return getattr(plots, name)
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")
