"""A task's raw data as tensors on the device: the dev split, text features (and self-training) or normalized
images, what the submission needs, and what `predict` needs to read new data the same way.

load_task returns {'train', 'dev', 'test': (x, y), 'meta', 'reader', 'form'} and with refit (text, nb) a
'refit' of its own. meta goes into metrics.json and model.pt: classes, what the submission writes for each
(written), input_dim, and the images' channels and normalization. reader goes into model.pt only: the
vocabulary and weights of the text features, the columns read. form is the submission's (submission.py).
A sweep loads once: later configs with the same data settings reuse the tensors (one data set at a time).
"""
import math

import numpy as np
import torch

from toolkit.data import cap_train, dev_size, dev_split, resolve_data_dir
from toolkit.models import MODELS
from toolkit.steps import amp_dtype
from toolkit.submission import key, plain_form, sample_form
from toolkit.tasks import TASKS, load_raw

_loaded = {}


def forget():
    """Drop the tensors kept for the next run (a new process would have only the disk caches)."""
    _loaded.clear()


def image_tensor(x, mean, std, device, dtype=torch.float32):
    """uint8 [N, H, W(, C)] -> normalized [N, C, H, W] on device, converted once for the whole split:
    (x / 255 - mean) / std in float32 as one converting copy into the output, then a multiply and an add in
    place; then rounded once to dtype."""
    x = torch.as_tensor(x).to(device)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    out = torch.empty(x.shape, dtype=torch.float32, device=device)  # contiguous, whatever x's strides
    return out.copy_(x).mul_(1 / (255 * std)).add_(-mean / std).to(dtype)


def input_dtype(config, device):
    """The dtype an image task keeps its tensors in: an MLP's first layer is a Linear, which autocast feeds
    its input in the autocast dtype (bf16 on a CPU that has it), so images stored in it give the same
    numbers, and a training step gathers half the bytes. A convolutional net keeps float32: its whitening
    stem is fitted on the images themselves."""
    return (not MODELS[config["model"]].convolutional and amp_dtype(device, config["amp"])) or torch.float32


def channel_stats(x):
    """Per-channel (means, stds) of uint8 images [N, H, W(, C)] (numpy or torch) in [0, 1] units, exact: from
    each channel's histogram of its 256 values, summed in Python's integers (a float32 sum over CIFAR's 46M
    values per channel stalls past 2^24 and gets the means wrong). The histogram is faster than integer sums
    of the values and their squares."""
    x = torch.as_tensor(x)
    channels = [x] if x.dim() == 3 else x.unbind(3)
    totals = [torch.bincount(c.flatten(), minlength=256).tolist() for c in channels]
    n = x.numel() // len(channels)  # values per channel
    sums = [sum(v * k for v, k in enumerate(t)) for t in totals]
    squares = [sum(v * v * k for v, k in enumerate(t)) for t in totals]
    # the variance as n^2 var = n sum(v^2) - sum(v)^2 in exact integers: never negative, so never NaN
    return (tuple(s / n / 255 for s in sums),
            tuple(math.sqrt(n * q - s * s) / n / 255 for s, q in zip(sums, squares)))


def split(raw, config):
    """(train rows, dev x, dev y) of the raw training data: the folder's own dev split where it gives one, else
    a seeded stratified one (whole blocks where neighbouring rows are related); max_train caps the rows."""
    x, y = raw["train"]
    if "dev" in raw:
        return cap_train(np.arange(len(y)), config["max_train"]), *raw["dev"]
    block = config["dev_block"] if raw["related"] else 1
    tr, dv = dev_split(y, dev_size(config, len(y)), block=block)
    take = (lambda rows: [x[i] for i in rows]) if isinstance(x, list) else (lambda rows: x[rows])
    return cap_train(tr, config["max_train"]), take(dv), y[dv]


def submission_form(raw, config):
    """The submission's form (submission.py): the sample's where the folder has one, else Id,Category."""
    n_test = len(raw["test"][0])
    ids = raw.get("ids")
    keys = raw.get("keys") or (ids and [(key(i),) for i in ids])
    if raw.get("sample"):
        return sample_form(raw["sample"], keys or None, n_test, raw["classes"], config["probabilities"])
    return plain_form(ids, n_test)


def describe(raw, config):
    """meta's common part: the classes and what the submission writes for each."""
    classes = [str(c) for c in raw["classes"]]
    written = [str(i) for i in range(len(classes))] if TASKS[config["task"]].submit == "index" else classes
    return {"classes": classes, "written": written}


def load_text(config, raw, device):
    # features.py and logreg.py load scikit-learn's text and linear models: imported where text needs them, not
    # at the top, so an image run does not pay for them (start-up is part of every run's time)
    import scipy.sparse as sp
    from toolkit.features import nb_ratios, text_features, to_torch, weigh
    texts, labels = raw["train"]
    tr, dev_texts, dev_y = split(raw, config)
    unlabeled = raw.get("unlabeled", [])
    parts = [[texts[i] for i in tr], dev_texts, raw["test"][0], *([unlabeled] if unlabeled else [])]
    matrices, seconds, cached, reader = text_features(parts, config)
    m_tr, m_dv, m_te, *m_un = matrices
    print(f"features: {m_tr.shape[1]} {config['features']} n-grams, {'cache' if cached else 'fitted'} in "
          f"{seconds:.1f}s", flush=True)
    y_test = raw["test"][1]
    label = lambda a: torch.from_numpy(a).to(device)
    tensors = lambda x, y: (to_torch(x, device), None if y is None else label(y))
    meta = {**describe(raw, config), "input_dim": m_tr.shape[1], "features": {"seconds": seconds, "cached": cached}}
    reader = {**reader, "columns": raw.get("columns")}
    if config["features"] != "nb":
        return {"train": tensors(m_tr, labels[tr]), "dev": tensors(m_dv, dev_y), "test": tensors(m_te, y_test),
                "meta": meta, "reader": reader}
    # model selection: train rows (+ pseudo-labelled unlabeled rows), ratios from those; dev scores it
    x, y = train_rows(m_tr, labels[tr], sp.vstack([m_dv, m_te, *m_un]).tocsr(), config)
    ratios = nb_ratios(x, y)
    train, dev, test = weigh([x, m_dv, m_te], ratios)
    data = {"train": tensors(train, y), "dev": tensors(dev, dev_y), "test": tensors(test, y_test),
            "reader": {**reader, "ratios": torch.from_numpy(ratios)}}
    if config["refit"]:  # the submission's model: train + dev rows (+ pseudo-labelled test rows), ratios anew
        x, y = train_rows(sp.vstack([m_tr, m_dv]).tocsr(), np.concatenate([labels[tr], dev_y]),
                          sp.vstack([m_te, *m_un]).tocsr(), config)
        ratios = nb_ratios(x, y)
        train, test = weigh([x, m_te], ratios)
        data["refit"] = {"train": tensors(train, y), "test": tensors(test, y_test),
                         "reader": {**reader, "ratios": torch.from_numpy(ratios)}}
        meta["refit_pseudo_labelled"] = len(y) - len(tr) - len(dev_y)
    meta["pseudo_labelled"] = len(data["train"][1]) - len(tr)
    if config["self_train"]:
        pool = len(dev_y) + m_te.shape[0] + sum(m.shape[0] for m in m_un)
        print(f"self-training: {meta['pseudo_labelled']} of {pool} unlabeled dev, test{' and other' * bool(m_un)} "
              f"texts pseudo-labelled and trained on", flush=True)
    return {**data, "meta": meta}


def train_rows(x, y, unlabeled, config):
    """The rows and labels to train on: x, y, and with self_train the confident pseudo-labelled unlabeled rows."""
    if not config["self_train"]:
        return x, y
    from toolkit.logreg import self_train
    return self_train(x, y, unlabeled, config["C"], config["self_train"], config["self_train_margin"])


def load_images(config, raw, device):
    x, y = raw["train"]
    tr, x_dev, y_dev = split(raw, config)
    # the training rows copied once, by torch, which splits the copy over the cores (numpy's x[tr] does not)
    x_train = torch.from_numpy(x)[torch.from_numpy(tr)]
    # normalize with the training part's per-channel statistics (dev and test never leak into them)
    mean, std = (torch.tensor(s, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
                 for s in channel_stats(x_train))
    x_test, y_test = raw["test"]
    label = lambda a: torch.from_numpy(a).to(device)
    dtype = input_dtype(config, device)
    tensor = lambda a: image_tensor(a, mean, std, device, dtype)
    stats = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    return {"train": (tensor(x_train), label(y[tr])), "dev": (tensor(x_dev), label(y_dev)),
            "test": (tensor(x_test), None if y_test is None else label(y_test)),
            "meta": {**describe(raw, config), "input_dim": int(np.prod(x.shape[1:])),
                     "channels": 1 if x.ndim == 3 else x.shape[3], **stats},
            "reader": {**stats, "columns": raw.get("columns")}}


def load_task(config, data_dir, device):
    """The tensors of config's task on device (see the module's docstring), kept for the next run that asks
    for the same data settings."""
    from toolkit.features import FEATURE_KEYS
    kind = TASKS[config["task"]].kind
    keys = ("task", "dev_size", "dev_fraction", "max_train", "text_column", "label_column", "id_column",
            "probabilities")
    if kind == "text":
        keys += ("dev_block", *FEATURE_KEYS, "refit", "self_train")  # load_text builds the refit's rows
        keys += ("self_train_margin", "C") if config["self_train"] else ()
    else:
        keys += ("model", "amp", "image_size")  # input_dtype; the files' size
    cache_key = (str(resolve_data_dir(data_dir)), str(device)) + tuple(str(config[k]) for k in keys)
    if cache_key not in _loaded:
        _loaded.clear()  # keep one data set in memory at a time
        raw = load_raw(config["task"], data_dir, config)
        data = (load_text if kind == "text" else load_images)(config, raw, device)
        form = submission_form(raw, config)
        _loaded[cache_key] = {**data, "form": form, "meta": {**data["meta"], "metric": form["metric"]}}
    return _loaded[cache_key]
