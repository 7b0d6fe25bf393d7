"""One run end to end: config -> its folder -> data tensors on the device -> model -> the shared loop
(train.fit), then the refit on train + dev where configured. Distillation's teacher trains first."""
import json
import time
from pathlib import Path

import torch

from toolkit import ranks
from toolkit.augment import alternating_flips, batch_augment
from toolkit.checkpoint import changed_keys
from toolkit.config import DATA_RECORD, SCALED_RECORD, describe_scaling, load_config, teacher_path
from toolkit.errors import UserError
from toolkit.faults import in_run
from toolkit.files import write_json
from toolkit.models import MODELS, build_model, init_from_data, place
from toolkit.predict import load_checkpoint
from toolkit.ranks import say
from toolkit.rundirs import shared_folder
from toolkit.steps import amp_dtype, evaluate, join_rows, pick_device
from toolkit.tasks import TASKS, data_files
from toolkit.tensors import load_task
from toolkit.train import fit, fit_fixed, refit
from mlp import make_activation


def as_trained(config, data_dir, device):
    """config as it trains on device, and as a run's identity: a CNN's amp_widths become its widths where
    autocast runs (a CPU with native bf16, a GPU), else they are left unused; your own data's folder is
    recorded. run() trains, saves and compares this config, so model.pt, metrics.json, --resume and a
    sweep's skipping of finished runs all name the net trained and the data it trained on."""
    if config["amp_widths"] and amp_dtype(device, config["amp"]):
        config = {**config, "widths": config["amp_widths"]}
    files = data_files(config["task"], data_dir)
    return {**config, DATA_RECORD: files} if files else config


def run(config, data_dir=None, out_root="runs", folder="new"):
    """Train one configuration; returns the metrics dict, with 'run_dir', the folder of its files.

    `folder` is the folder mode (rundirs.py): "new" (OUT/<name>, else the first free OUT/<name>-2, -3, ...),
    "overwrite", "resume" (the newest unfinished run of this config) or "continue" (OUT/<name>, resumed where
    it has a last.pt; sweeps). The folder is held (an OS lock) until the run ends; a fault of the machine
    raises faults.Fault, one line."""
    start = time.perf_counter()
    try:
        make_activation(config["activation"])  # fail before a minute of featurization, not after
    except ValueError as e:
        raise UserError(f"config '{config['name']}': {e}") from None
    again = "run the same command again: it resumes" if folder == "continue" else "add --resume to continue"
    device = pick_device(config["device"])
    config = as_trained(config, data_dir, device)
    ranks.setup(device)  # under torchrun: join the other ranks (once per process)
    if describe_scaling(config):
        say(describe_scaling(config))
    with shared_folder(out_root, config, folder) as (out_dir, resume), in_run(out_dir, config, again):
        extra, teaching = {}, 0.0
        if config["teacher"]:  # first, so that its model and data are gone before the student's load
            soft, extra["teacher"] = teach(config, data_dir, out_dir, device)
            teaching = extra["teacher"]["wall_seconds"] = time.perf_counter() - start
        data = load_task(config, data_dir, device)
        if config["teacher"]:
            data = {**data, "soft": soft}
        torch.manual_seed(config["seed"])  # the same seed gives the same initial weights
        model = place(build_model(config, data["meta"]), config, device)
        extra["data_seconds"] = time.perf_counter() - start - teaching
        if SCALED_RECORD in config:
            extra[SCALED_RECORD] = config[SCALED_RECORD]
        if init_from_data(model, config, data):  # true when a logistic regression was fitted
            extra["logreg_seconds"] = time.perf_counter() - start - extra["data_seconds"]
        if MODELS[config["model"]].fitted:
            metrics = fit_fixed(model, data, config, out_dir, extra)
        else:
            augment = make_augment(config, len(data["train"][1]))
            metrics = fit(model, data, config, out_dir, augment=augment, extra=extra, resume=resume, started=start)
        if config["refit"] and metrics["best_epoch"] is not None:
            metrics = refit_run(config, data, out_dir, metrics)
    return {**metrics, "run_dir": str(out_dir)}


def run_or_skip(config, data_dir, out_root, force=False):
    """run() into OUT/<name>/ for sweeps, run_config, `main.py default` and teachers: a re-run skips a
    configuration already finished (same config and data) unless force, and resumes an interrupted one
    from its last.pt (also one whose last writes failed after its metrics.json)."""
    trained = as_trained(config, data_dir, pick_device(config["device"]))  # what run() compares and saves
    out_dir = Path(out_root) / config["name"]
    if not force and not (out_dir / "last.pt").is_file() and (out_dir / "metrics.json").is_file():
        metrics = json.loads((out_dir / "metrics.json").read_text())
        if not changed_keys(metrics["config"], trained) and refit_done(metrics):
            print(f"{config['name']}: finished before, skipped (--force, or force=True, runs it again)", flush=True)
            return {**metrics, "run_dir": str(out_dir)}  # as run() returns it
    return run(config, data_dir, out_root, folder="overwrite" if force else "continue")


def refit_done(metrics):
    """False for a run whose refit (config refit = true) was stopped or failed: its metrics.json holds the
    dev-selected run and its last.pt is gone, so without this check a re-run would skip it, the refit never made."""
    return not metrics["config"].get("refit") or metrics["best_epoch"] is None or "refit" in metrics


def teach(config, data_dir, out_dir, device):
    """(the teacher's probabilities on the training images, its record): config's teacher trained into
    out_dir/teacher/ (or its finished run reused), predicting as it does the test (test-time flips included)."""
    teacher = load_config(teacher_path(config), pinned={"name": "teacher", "seed": config["seed"],
                                                        "device": config["device"]})
    for key in ("task", "dev_size", "dev_fraction", "max_train"):  # the same training images, in the same order
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
    model = place(build_model(config, data["meta"]), config, both["train"][0].device)
    init_from_data(model, config, both)
    epochs = 0 if MODELS[config["model"]].fitted else metrics["best_epoch"]
    augment = make_augment(config, len(both["train"][1]))
    metrics = {**metrics, "refit": refit(model, both, config, epochs, out_dir, augment=augment)}
    metrics["seconds"] += metrics["refit"]["seconds"]
    if ranks.is_main():
        write_json(out_dir / "metrics.json", metrics)
    return metrics


def make_augment(config, n):
    """augment(xb, generator, idx, epoch) for the loop, or None: flips and shifts of whole image batches
    when configured; idx are the batch's rows of the n training images, which alternating flips need."""
    nothing = config["flip"] == 0 and config["translate"] == 0  # a short Fashion run (no flips) pays nothing
    if not config["augment"] or TASKS[config["task"]].kind != "image" or nothing:
        return None
    flips = alternating_flips(n, config["seed"]) if config["alternate_flip"] and config["flip"] > 0 else None
    return lambda xb, gen, idx, epoch: batch_augment(xb, gen, config["translate"], config["flip"], pad=config["pad"],
                                                     mirrored=flips(idx, epoch) if flips else None)
