"""One run end to end: config -> data tensors on the device -> model -> the shared loop (train.fit)."""
import glob
import json
import math
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch

from toolkit import ranks
from toolkit.augment import alternating_flips, batch_augment
from toolkit.checkpoint import changed_keys, listed, safe_load, saved_config
from cnn import init_whitening, make_cnn
from toolkit.config import DEFAULTS, SCALED_RECORD, UserError, describe_scaling, load_config, teacher_path
from toolkit.data import CLASS_NAMES, cap_train, dev_split, load_images, load_imdb, read_npz, resolve_data_dir
from toolkit.faults import in_run
from toolkit.files import write_json
from toolkit.files import clear, hold, new_run_dir
from mlp import Interpolated, SentimentClassifier, initialize, make_activation
from toolkit.steps import amp_dtype, evaluate, join_rows, pick_device
from toolkit.train import fit, fit_fixed, plot_dev_predictions, refit, say, write_predictions

_loaded = {}  # a sweep loads and featurizes once; later configs with the same data settings reuse it


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
    numbers, and a training step gathers half the bytes. The CNN keeps float32: its whitening stem is
    fitted on the images themselves."""
    return (config["model"] == "mlp" and amp_dtype(device, config["amp"])) or torch.float32


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


def load_sentiment(config, data_dir, device):
    # features.py and logreg.py load scikit-learn's text and linear models: imported where sentiment needs
    # them, not at the top, so a vision run does not pay for them (start-up is part of every run's time)
    import scipy.sparse as sp
    from toolkit.features import nb_weigh, text_features, to_torch
    raw = load_imdb(data_dir)
    texts, labels = raw["train"]
    tr, dv = dev_split(labels, config["dev_size"], block=config["dev_block"])
    tr = cap_train(tr, config["max_train"])
    parts = [[texts[i] for i in tr], [texts[i] for i in dv], raw["test"][0]]
    matrices, seconds, cached = text_features(parts, config)
    m_tr, m_dv, m_te = matrices
    print(f"features: {m_tr.shape[1]} {config['features']} n-grams, {'cache' if cached else 'fitted'} in "
          f"{seconds:.1f}s", flush=True)
    y_test = raw["test"][1]
    label = lambda a: torch.from_numpy(a).to(device)
    tensors = lambda x, y: (to_torch(x, device), None if y is None else label(y))
    meta = {"classes": CLASS_NAMES["sentiment"], "input_dim": m_tr.shape[1],
            "features": {"seconds": seconds, "cached": cached}}
    if config["features"] != "nb":
        return {"train": tensors(m_tr, labels[tr]), "dev": tensors(m_dv, labels[dv]),
                "test": tensors(m_te, y_test), "meta": meta}
    # model selection: train rows (+ pseudo-labelled dev and test rows), ratios from those; dev scores it
    x, y = train_rows(m_tr, labels[tr], sp.vstack([m_dv, m_te]), config)
    train, dev, test = nb_weigh([x, m_dv, m_te], y)
    data = {"train": (train, y), "dev": (dev, labels[dv]), "test": (test, y_test)}
    if config["refit"]:  # the submission's model: train + dev rows (+ pseudo-labelled test rows), ratios anew
        x, y = train_rows(sp.vstack([m_tr, m_dv]).tocsr(), np.concatenate([labels[tr], labels[dv]]), m_te, config)
        train, test = nb_weigh([x, m_te], y)
        data["refit"] = {"train": (train, y), "test": (test, y_test)}
        meta["refit_pseudo_labelled"] = len(y) - len(tr) - len(dv)
    meta["pseudo_labelled"] = len(data["train"][1]) - len(tr)
    if config["self_train"]:
        print(f"self-training: {meta['pseudo_labelled']} of {len(dv) + m_te.shape[0]} unlabeled dev and test "
              f"reviews pseudo-labelled and trained on", flush=True)
    convert = lambda d: {k: tensors(*v) for k, v in d.items()}
    return {**convert({k: data[k] for k in ("train", "dev", "test")}),
            **({"refit": convert(data["refit"])} if "refit" in data else {}), "meta": meta}


def train_rows(x, y, unlabeled, config):
    """The rows and labels to train on: x, y, and with self_train the confident pseudo-labelled unlabeled rows."""
    if not config["self_train"]:
        return x, y
    from toolkit.logreg import self_train
    return self_train(x, y, unlabeled, config["C"], config["self_train"], config["self_train_margin"])


def load_vision(config, data_dir, device):
    raw = load_images(config["task"], data_dir)
    x, y = raw["train"]
    tr, dv = dev_split(y, config["dev_size"])
    tr = cap_train(tr, config["max_train"])
    # the training rows copied once, by torch, which splits the copy over the cores (numpy's x[tr] does not)
    x_train = torch.from_numpy(x)[torch.from_numpy(tr)]
    # normalize with the training part's per-channel statistics (dev and test never leak into them)
    mean, std = (torch.tensor(s, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
                 for s in channel_stats(x_train))
    x_test, y_test = raw["test"]
    label = lambda a: torch.from_numpy(a).to(device)
    dtype = input_dtype(config, device)
    tensor = lambda a: image_tensor(a, mean, std, device, dtype)
    return {"train": (tensor(x_train), label(y[tr])), "dev": (tensor(x[dv]), label(y[dv])),
            "test": (tensor(x_test), None if y_test is None else label(y_test)),
            "meta": {"classes": CLASS_NAMES[config["task"]], "input_dim": int(np.prod(x.shape[1:])),
                     "mean": mean.flatten().tolist(), "std": std.flatten().tolist()}}


def load_task(config, data_dir, device):
    data_dir = resolve_data_dir(data_dir)
    keys = ("task", "dev_size", "max_train")
    if config["task"] == "sentiment":
        from toolkit.features import FEATURE_KEYS
        keys += ("dev_block", *FEATURE_KEYS, "refit", "self_train")  # load_sentiment builds the refit's rows
        keys += ("self_train_margin", "C") if config["self_train"] else ()
    else:
        keys += ("model", "amp")  # input_dtype
    key = (str(data_dir), str(device)) + tuple(str(config[k]) for k in keys)
    if key not in _loaded:
        _loaded.clear()  # keep one data set in memory at a time
        loader = load_sentiment if config["task"] == "sentiment" else load_vision
        _loaded[key] = loader(config, data_dir, device)
    return _loaded[key]


def as_trained(config, device):
    """config as it trains on device: a CNN's amp_widths become its widths where autocast runs (a CPU with
    native bf16, a GPU), else they are left unused. run() trains, saves and compares this config, so
    model.pt, metrics.json, --resume and a sweep's skipping of finished runs all name the net trained."""
    if config["model"] == "cnn" and config["amp_widths"] and amp_dtype(device, config["amp"]):
        return {**config, "widths": config["amp_widths"]}
    return config


def build_model(config, input_dim):
    """The config's model with fresh weights; a logreg model, and the linear part of an interpolated MLP,
    get theirs from fit_linear (or from a checkpoint)."""
    num_classes = len(CLASS_NAMES[config["task"]])
    if config["model"] == "cnn":
        return make_cnn(config, num_classes)
    linear = lambda: SentimentClassifier(input_dim, num_classes, [], sparse_input=True)
    if config["model"] == "logreg":
        return linear()
    model = SentimentClassifier(input_dim, num_classes, config["hidden_dims"], config["activation"],
                                config["dropout"], sparse_input=config["task"] == "sentiment",
                                batch_norm=config["batch_norm"])
    model = initialize(model, config["init"])
    return Interpolated(model, linear(), config["interpolate"]) if config["interpolate"] > 0 else model


def init_from_data(model, config, data):
    """What a fresh model takes from the training data rather than the seed: the CNN's whitening stem (from
    5,000 training images, as airbench) and the NB logistic regression (fit_linear)."""
    if config["model"] == "cnn" and config["whiten"]:
        init_whitening(model, data["train"][0][:5000])
    return fit_linear(model, config, data)  # whether there was one to fit


def fit_linear(model, config, data):
    """Fit the NB logistic regression on the training part into a logreg model or an Interpolated's linear
    part (on --resume too: liblinear gives the same weights again, and last.pt holds them anyway). Returns
    whether there was one to fit."""
    if config["model"] != "logreg" and config["interpolate"] == 0:
        return False
    from toolkit.logreg import fit_logreg
    target = model if config["model"] == "logreg" else model.linear
    target.load_state_dict(fit_logreg(*data["train"], config["C"], config["seed"]).state_dict())
    return True


def place(model, config, device):
    """Model on the device; CNNs in NHWC (channels_last), the layout oneDNN and cuDNN convolutions prefer."""
    model = model.to(device)
    if config["model"] == "cnn" and config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def check_run_dir(out_dir, config):
    """Refuse to overwrite a folder that holds a different configuration's run."""
    for name in ("metrics.json", "last.pt"):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())["config"] if name == "metrics.json" else saved_config(path)
        except Exception:
            raise UserError(f"{path}: exists but is unreadable; move it away or choose another --out") from None
        changed = changed_keys(saved, config)
        if changed:
            raise UserError(f"{out_dir} holds a run with a different config ({listed(changed, saved, config)}); choose "
                            f"another --out, or --force (force=True) to replace it")


def resume_dir(out_root, config):
    """The folder --resume continues: of OUT/<name> and OUT/<name>-2, -3, ... holding a last.pt, the newest one
    saved with this config (else the newest, whose load then says what differs)."""
    first = Path(out_root) / config["name"]
    numbered = [p for p in first.parent.glob(f"{glob.escape(config['name'])}-*") if p.name.rpartition("-")[2].isdigit()]
    unfinished = [p for p in [first, *numbered] if (p / "last.pt").is_file()]
    if not unfinished:
        raise UserError(f"{first / 'last.pt'}: nothing to resume (no checkpoint); run without --resume to start")

    def same_config(folder):
        try:
            return not changed_keys(saved_config(folder / "last.pt"), config)
        except Exception:
            return False
    return max([p for p in unfinished if same_config(p)] or unfinished, key=lambda p: (p / "last.pt").stat().st_mtime)


@contextmanager
def run_dir(out_root, config, resume, overwrite, fixed):
    """Hold the run's folder (see folders.py) for the block: the one --resume continues, OUT/<name> for a sweep
    (fixed) or --overwrite, else OUT/<name> or the first free OUT/<name>-2, -3, ..."""
    if resume:
        folder = Path(out_root) / config["name"] if fixed else resume_dir(out_root, config)
        if (folder / "last.pt").is_file():
            saved_config(folder / "last.pt")  # a crafted or foreign last.pt is refused before anything is touched
        with hold(folder):
            yield folder
    elif fixed:
        with hold(Path(out_root) / config["name"]) as folder:
            if not overwrite:
                check_run_dir(folder, config)
            clear(folder)  # what is left is a failed start of this config, or what --force replaces
            yield folder
    else:
        with new_run_dir(out_root, config["name"], overwrite) as folder:
            yield folder


@contextmanager
def shared_run_dir(out_root, config, resume, overwrite, fixed):
    """run_dir, held by rank 0 alone under torchrun (one lock, one choice of folder); the other ranks are
    told the folder it chose, or the one-line error it met, so that all of them use it or all stop."""
    with ExitStack() as stack:
        folder, error = None, None
        if ranks.is_main():
            try:
                folder = stack.enter_context(run_dir(out_root, config, resume, overwrite, fixed))
            except UserError as e:
                error = e
        chosen, message = ranks.gather((folder and str(folder), error and str(error)))[0]
        if error is not None:
            raise error
        if message is not None:
            raise UserError(message)
        yield Path(chosen)


def run(config, data_dir=None, out_root="runs", resume=False, overwrite=False, fixed=False):
    """Train one configuration; returns the metrics dict, with 'run_dir', the folder of its files.

    A fresh run writes to OUT/<name>/ when that holds no run, else to the first free OUT/<name>-2, -3, ...;
    overwrite=True replaces OUT/<name>'s results; resume=True continues the newest unfinished run of this
    config. fixed=True (sweeps) always uses OUT/<name>, refusing another config's run. The folder is held
    (an OS lock) until the run ends; a fault of the machine raises faults.Fault, one line."""
    start = time.perf_counter()
    try:
        make_activation(config["activation"])  # fail before a minute of featurization, not after
    except ValueError as e:
        raise UserError(f"config '{config['name']}': {e}") from None
    again = "run the same command again: it resumes" if fixed else "add --resume to continue"
    device = pick_device(config["device"])
    config = as_trained(config, device)
    ranks.setup(device)  # under torchrun: join the other ranks (once per process)
    if describe_scaling(config):
        say(describe_scaling(config))
    with shared_run_dir(out_root, config, resume, overwrite, fixed) as out_dir, in_run(out_dir, config, again):
        extra, teaching = {}, 0.0
        if config["teacher"]:  # first, so that its model and data are gone before the student's load
            soft, extra["teacher"] = teach(config, data_dir, out_dir, device)
            teaching = extra["teacher"]["wall_seconds"] = time.perf_counter() - start
        data = load_task(config, data_dir, device)
        if config["teacher"]:
            data = {**data, "soft": soft}
        torch.manual_seed(config["seed"])  # the same seed gives the same initial weights
        model = place(build_model(config, data["meta"]["input_dim"]), config, device)
        extra["data_seconds"] = time.perf_counter() - start - teaching
        if SCALED_RECORD in config:
            extra[SCALED_RECORD] = config[SCALED_RECORD]
        if init_from_data(model, config, data):  # true when a logistic regression was fitted
            extra["logreg_seconds"] = time.perf_counter() - start - extra["data_seconds"]
        if config["model"] == "logreg":
            metrics = fit_fixed(model, data, config, out_dir, extra)
        else:
            augment = make_augment(config, len(data["train"][1]))
            metrics = fit(model, data, config, out_dir, augment=augment, extra=extra, resume=resume, started=start)
        if config["refit"] and metrics["best_epoch"] is not None:
            metrics = refit_run(config, data, out_dir, metrics)
    return {**metrics, "run_dir": str(out_dir)}


def run_or_skip(config, data_dir, out_root, force=False):
    """run() into OUT/<name>/ for sweeps, `main.py default` and teachers: a re-run skips a configuration
    already finished (same config hash) unless force, and resumes an interrupted one from its last.pt (also
    one whose last writes failed after its metrics.json)."""
    config = as_trained(config, pick_device(config["device"]))  # what run() compares and saves
    out_dir = Path(out_root) / config["name"]
    resume = not force and (out_dir / "last.pt").is_file()
    if not force and not resume and (out_dir / "metrics.json").is_file():
        metrics = json.loads((out_dir / "metrics.json").read_text())
        if not changed_keys(metrics["config"], config) and refit_done(metrics):
            print(f"{config['name']}: finished before, skipped (--force, or force=True, runs it again)", flush=True)
            return {**metrics, "run_dir": str(out_dir)}  # as run() returns it
    return run(config, data_dir, out_root, resume=resume, overwrite=force, fixed=True)


def refit_done(metrics):
    """False for a run whose refit (config refit = true) was stopped or failed: its metrics.json holds the
    dev-selected run and its last.pt is gone, so without this check a re-run would skip it, the refit never made."""
    return not metrics["config"].get("refit") or metrics["best_epoch"] is None or "refit" in metrics


def teach(config, data_dir, out_dir, device):
    """(the teacher's probabilities on the training images, its record): config's teacher trained into
    out_dir/teacher/ (or its finished run reused), predicting as it does the test (test-time flips included)."""
    teacher = load_config(teacher_path(config), last={"name": "teacher", "seed": config["seed"],
                                                      "device": config["device"]})
    for key in ("task", "dev_size", "max_train"):  # the same training images, in the same order
        if teacher[key] != config[key]:
            raise UserError(f"config '{config['name']}': its teacher {config['teacher']} has {key} = "
                            f"{teacher[key]!r}, the student {config[key]!r}; they must train on the same images")
    metrics = run_or_skip(teacher, data_dir, out_dir)
    model, checkpoint = load_checkpoint(metrics["run_dir"])
    trained = checkpoint["config"]
    data = load_task(trained, data_dir, device)
    probs = evaluate(place(model, trained, device), data["train"][0], None, trained, probabilities=True)[3]
    record = {"config": config["teacher"], "best_dev_acc": metrics["best_dev_acc"], "seconds": metrics["seconds"]}
    return probs.to(device), record


def refit_run(config, data, out_dir, metrics):
    """The config afresh on train + dev for the dev-selected run's best epoch count (train.refit); its record
    goes into metrics.json as "refit" and submission.csv comes from it."""
    # NB features bring their own (ratios from train + dev, test pseudo-labelled anew); the rest join the rows
    joined = lambda: {"train": tuple(join_rows(a, b) for a, b in zip(data["train"], data["dev"]))}
    both = {**data, **(data["refit"] if "refit" in data else joined())}
    torch.manual_seed(config["seed"])
    model = place(build_model(config, data["meta"]["input_dim"]), config, both["train"][0].device)
    init_from_data(model, config, both)
    epochs = 0 if config["model"] == "logreg" else metrics["best_epoch"]
    augment = make_augment(config, len(both["train"][1]))
    metrics = {**metrics, "refit": refit(model, both, config, epochs, out_dir, augment=augment)}
    metrics["seconds"] += metrics["refit"]["seconds"]
    if ranks.is_main():
        write_json(out_dir / "metrics.json", metrics)
    return metrics


def make_augment(config, n):
    """augment(xb, generator, idx, epoch) for the loop, or None: flips and shifts of whole image batches
    when configured; idx are the batch's rows of the n training images, which alternating flips need."""
    if not config["augment"] or config["task"] == "sentiment" or config["flip"] == 0 and config["translate"] == 0:
        return None  # nothing to draw: a short Fashion run (no flips) pays nothing for augmentation
    flips = alternating_flips(n, config["seed"]) if config["alternate_flip"] and config["flip"] > 0 else None
    return lambda xb, gen, idx, epoch: batch_augment(xb, gen, config["translate"], config["flip"], pad=config["pad"],
                                                     mirrored=flips(idx, epoch) if flips else None)


def load_checkpoint(run_dir):
    """(model in eval mode, checkpoint dict) from RUN_DIR/model.pt, with one-line errors for bad files."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        if (Path(run_dir) / "metrics.json").is_file():  # a run that diverged in its first epoch saves no model
            raise UserError(f"{path}: no checkpoint; the run kept none ({Path(run_dir) / 'metrics.json'} says why)")
        raise UserError(f"{path}: no checkpoint (train with `main.py run` first)")
    try:
        checkpoint = safe_load(path)
        # a checkpoint saved before a key existed trained with that key's default
        checkpoint["config"] = {**DEFAULTS, **checkpoint["config"]}
        model = build_model(checkpoint["config"], checkpoint["meta"]["input_dim"])
        model.load_state_dict(checkpoint["model"])
    except UserError:
        raise
    except Exception as e:  # truncated file, another program's .pt, a mismatched state dict
        raise UserError(f"{path}: not a readable checkpoint of this toolkit ({type(e).__name__})") from None
    return model.eval(), checkpoint


def saved_run_device(config):
    """Where predict and plot evaluate a saved run: the device it trained on where this machine has one, else
    the best one here, so that a run trained on a Colab GPU can be read on a laptop."""
    try:
        return pick_device(config["device"])
    except UserError:
        return pick_device("auto")


def predict(run_dir, images, out, probabilities=False):
    """Write a Kaggle submission (Id,Category) for the images in an .npz file with the run's best weights,
    and with probabilities=True probabilities.csv beside it (train.write_predictions)."""
    model, checkpoint = load_checkpoint(run_dir)
    config, meta = checkpoint["config"], checkpoint["meta"]
    if config["task"] == "sentiment":
        raise UserError(f"{run_dir}: predict takes images; a sentiment run writes submission.csv for its test texts "
                        f"(and probabilities.csv with --set probabilities=true)")
    if not Path(images).is_file():
        raise UserError(f"{images}: no such file (--images names an .npz of test images)")
    device = saved_run_device(config)
    x, _ = read_npz(Path(images), config["task"], need_labels=False)
    mean, std = (torch.tensor(meta[k], device=device).view(1, -1, 1, 1) for k in ("mean", "std"))
    _, _, preds, *probs = evaluate(place(model, config, device), image_tensor(x, mean, std, device), None, config,
                                   probabilities=probabilities)
    write_predictions(out, preds, probs, meta["classes"])
    return preds


def redraw_run(run_dir, data_dir=None):
    """Redraw a run's curves from metrics.json and its dev confusion matrix (and image grid) from model.pt."""
    from toolkit.plots import plot_run
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # model.pt is read first, so that a refused one leaves the folder untouched; without one, the curves are
    # still drawn before load_checkpoint says why there is none
    loaded = load_checkpoint(run_dir) if (run_dir / "model.pt").is_file() else None
    with hold(run_dir):  # not while a run writes the same files
        plot_run(metrics["history"], run_dir, metrics["name"])
        model, checkpoint = loaded or load_checkpoint(run_dir)
        config = checkpoint["config"]
        device = saved_run_device(config)
        try:
            data = load_task(config, data_dir, device)
        except UserError as e:  # most often a missing --data-dir, which the run itself had
            raise UserError(f"{run_dir}: curves redrawn, but the confusion matrix and image grid need the run's "
                            f"data (--data-dir): {e}") from None
        _, dev_acc, preds = evaluate(place(model, config, device), *data["dev"], config)
        plot_dev_predictions(*data["dev"], preds, checkpoint["meta"], run_dir)
    print(f"{run_dir}: plots redrawn; dev accuracy of model.pt {dev_acc:.4f}")
