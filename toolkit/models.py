"""The models a config can name, one row each: what input it takes, how it is built, what sizes it. Code that
needs a fact about a model reads its row (`MODELS[name].convolutional`); nothing compares model names.

Importing this module loads no torch (config.py checks configs against the table before torch loads); the
functions load it when called.
"""
from dataclasses import dataclass
from typing import Callable

from toolkit.tasks import TASKS


def mlp_net(config, meta):
    """SentimentClassifier over n-gram rows (its first layer sparse) or flattened images, initialized as the
    config says; with interpolate > 0 mixed with a linear model that fit_linear fits."""
    from mlp import Interpolated, SentimentClassifier, initialize
    sparse = TASKS[config["task"]].kind == "text"
    model = SentimentClassifier(meta["input_dim"], len(meta["classes"]), config["hidden_dims"], config["activation"],
                                config["dropout"], sparse_input=sparse, batch_norm=config["batch_norm"])
    model = initialize(model, config["init"])
    return Interpolated(model, linear_net(config, meta), config["interpolate"]) if config["interpolate"] > 0 else model


def linear_net(config, meta):
    """A single sparse linear layer: the logistic regression fit_linear fills in."""
    from mlp import SentimentClassifier
    return SentimentClassifier(meta["input_dim"], len(meta["classes"]), [], sparse_input=True)


def cnn_net(config, meta):
    """cnn.Net for the images' channels: the whitening stem is as wide as their 2x2 patches need."""
    from cnn import make_cnn
    return make_cnn(config, len(meta["classes"]), meta["channels"])


@dataclass(frozen=True)
class Model:
    takes: tuple                # the task kinds it reads: "text" (sparse n-gram rows), "image"
    build: Callable             # build(config, meta) -> torch module with fresh weights
    keys: tuple = ()            # the config keys of its own shape (a sweep over another model's keys is refused)
    size: str = ""              # the key that sizes it: what to lower when memory runs out
    convolutional: bool = False  # conv filters: Muon, whitening and channels_last apply; float32 inputs
    fitted: bool = False        # weights fitted by scikit-learn (fit_linear), not trained by the loop


MODELS = {
    "mlp": Model(("text", "image"), mlp_net, keys=("hidden_dims", "activation", "dropout", "batch_norm", "init",
                                                   "interpolate"), size="hidden_dims"),
    "cnn": Model(("image",), cnn_net, keys=("widths", "amp_widths", "whiten", "bn_scale", "bn_momentum", "dirac",
                                            "logit_scale"), size="widths", convolutional=True),
    "logreg": Model(("text",), linear_net, fitted=True),  # the NB logistic regression (logreg.py)
}
SHAPE_KEYS = {k for m in MODELS.values() for k in m.keys}


def build_model(config, meta):
    """The config's model with fresh weights for data described by meta (input_dim, classes, channels); a
    logreg model, and the linear part of an interpolated MLP, get theirs from fit_linear (or a checkpoint)."""
    return MODELS[config["model"]].build(config, meta)


def place(model, config, device):
    """Model on the device; convolutional nets in NHWC (channels_last), the layout oneDNN and cuDNN prefer."""
    import torch
    model = model.to(device)
    if MODELS[config["model"]].convolutional and config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def init_from_data(model, config, data):
    """What a fresh model takes from the training data rather than the seed: the CNN's whitening stem (from
    5,000 training images, as airbench) and the NB logistic regression (fit_linear). Returns whether a
    logistic regression was fitted."""
    if config["whiten"]:
        from cnn import init_whitening
        init_whitening(model, data["train"][0][:5000])
    return fit_linear(model, config, data)


def fit_linear(model, config, data):
    """Fit the logistic regression on the training part into a logreg model or an Interpolated's linear part
    (on --resume too: liblinear gives the same weights again, and last.pt holds them anyway). Returns
    whether there was one to fit."""
    from mlp import Interpolated
    if not MODELS[config["model"]].fitted and not isinstance(model, Interpolated):
        return False
    from toolkit.logreg import fit_logreg
    target = model.linear if isinstance(model, Interpolated) else model
    fitted = fit_logreg(*data["train"], config["C"], config["seed"], len(data["meta"]["classes"]))
    target.load_state_dict(fitted.state_dict())
    return True
