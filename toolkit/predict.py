"""A finished run read back: its model from model.pt (or model_refit.pt, which wrote its submission), new data
predicted in the same form (`main.py predict`), and its plots redrawn (`main.py plot`)."""
import json
from pathlib import Path

import torch

from toolkit.checkpoint import safe_load
from toolkit.config import DEFAULTS
from toolkit.errors import UserError
from toolkit.files import hold
from toolkit.models import build_model, place
from toolkit.steps import evaluate, pick_device
from toolkit.submission import key, plain_form, sample_form
from toolkit.tasks import TASKS
from toolkit.tensors import image_tensor, load_task
from toolkit.submission import write_predictions


def load_checkpoint(run_dir, name="model.pt"):
    """(model in eval mode, checkpoint dict) from RUN_DIR/model.pt (or `name`), with one-line errors for bad files."""
    path = Path(run_dir) / name
    if not path.is_file():
        metrics = Path(run_dir) / "metrics.json"
        if metrics.is_file():
            if not json.loads(metrics.read_text())["config"].get("keep_weights", True):
                raise UserError(f"{path}: no checkpoint; the run kept no weights (keep_weights = false, as in a sweep)")
            raise UserError(f"{path}: no checkpoint; the run kept none ({metrics} says why)")  # diverged at once
        raise UserError(f"{path}: no checkpoint (train with `main.py run` first)")
    try:
        checkpoint = safe_load(path)
        # a checkpoint saved before a key existed trained with that key's default
        checkpoint["config"] = {**DEFAULTS, **checkpoint["config"]}
        model = build_model(checkpoint["config"], checkpoint["meta"])
        model.load_state_dict(checkpoint["model"])
        checkpoint["reader"]  # what predict needs to read new data as the run read its own
    except UserError:
        raise
    except Exception as e:  # truncated file, another program's .pt, a mismatched state dict, an older format
        raise UserError(f"{path}: not a readable checkpoint of this toolkit ({type(e).__name__}); train it again "
                        f"with this version") from None
    return model.eval(), checkpoint


def saved_run_device(config):
    """Where predict and plot evaluate a saved run: the device it trained on where this machine has one, else
    the best one here, so that a run trained on a Colab GPU can be read on a laptop."""
    try:
        return pick_device(config["device"])
    except UserError:
        return pick_device("auto")


def new_inputs(source, config, meta, reader, probabilities):
    """(inputs as the run's model takes them, on the CPU, and the submission's form) of the data at `source`:
    an .npz of images (the built-in sets), a table (.csv/.tsv) or .jsonl of texts or pixels, a folder of
    images, or a folder laid out as the run's own data (its test part, and its sample submission)."""
    from toolkit import folders
    source, task = Path(source), TASKS[config["task"]]
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    sample = folders.sample_of(source) if source.is_dir() else None
    columns = reader.get("columns") or {}
    if task.kind == "text":
        texts, ids = read_new_texts(source, task, columns)
        from toolkit.features import to_torch, vectorize
        x = to_torch(vectorize(texts, config, reader))
    else:
        x, ids, keys = read_new_images(source, task, meta, columns)
        mean, std = (torch.tensor(reader[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
        x = image_tensor(x, mean, std, torch.device("cpu"))
    n, keys = x.shape[0], (keys if task.kind == "image" else None) or (ids and [(key(i),) for i in ids])
    form = sample_form(sample, keys or None, n, meta["classes"], probabilities) if sample else plain_form(ids, n)
    return x, form


def read_new_texts(source, task, columns):
    """(texts, ids or None) of a texts file or of a folder's test table, read by the run's columns."""
    from toolkit import data, folders, tables
    if source.suffix.lower() in (".jsonl", ".gz") and ".jsonl" in source.name.lower():
        return data.read_jsonl(source, False, task.classes)[0], None
    if source.is_dir():
        found = folders.roles(tables.table_files(source))
        tables_found = found["test"] or [p for p in tables.table_files(source) if not tables.SAMPLE.search(p.name)]
        if not tables_found:
            raise UserError(f"{source}: no test table (.csv or .tsv with 'test' in its name)")
        source = tables_found[0]
    table = tables.read_table(source)
    text = folders.pick_named(table, columns.get("text") or "text", source)
    ids = tables.column(table, columns["id"]) if columns.get("id") else tables.column(table, "id")
    return table[text].tolist(), (table[ids].tolist() if ids else None)


def read_new_images(source, task, meta, columns):
    """(uint8 images, ids, match keys) of an .npz, a pixels table, or a folder of image files (its test/ if it
    has one), in the run's image size and channels."""
    from toolkit import data, folders, images, tables
    from toolkit.image_folders import PIXEL, image_files, pixel_images, subfolder
    if source.suffix == ".npz":
        if not task.shape:
            raise UserError(f"{source}: this run trained on image files; give a folder of them")
        return data.read_npz(source, task, need_labels=False)[0], None, None
    if "pixels" in columns:
        path = source
        if source.is_dir():
            found = folders.roles(tables.table_files(source))["test"]
            if not found:
                raise UserError(f"{source}: no test table of pixel columns")
            path = found[0]
        table = tables.read_table(path, numeric=PIXEL)
        side = int(len(columns["pixels"]) ** 0.5)
        ids = tables.column(table, columns["id"]) if columns.get("id") else None
        return pixel_images(table, columns["pixels"], side, path), table[ids].tolist() if ids else None, None
    folder = (subfolder(source, "test") or source) if source.is_dir() else None
    if folder is None:
        raise UserError(f"{source}: give a folder of image files (or one holding test/)")
    paths = image_files(folder)
    if not paths:
        raise UserError(f"{folder}: no image files ({', '.join(images.EXTENSIONS)})")
    x = images.decode_all(paths, columns["image_size"], meta["channels"])
    return images.stack(x, meta["channels"] == 1, columns["image_size"]), [p.stem for p in paths], \
        [(p.name, p.stem) for p in paths]


def predict(run_dir, source, out, probabilities=False):
    """Write a submission for the data at `source` with the run's model, in the form its folder's sample
    submission asks for (else Id,Category), and with probabilities=True probabilities.csv beside it. The
    model is the one that wrote the run's own submission: model_refit.pt where the run refitted."""
    name = "model_refit.pt" if (Path(run_dir) / "model_refit.pt").is_file() else "model.pt"
    model, checkpoint = load_checkpoint(run_dir, name)
    config, meta = checkpoint["config"], checkpoint["meta"]
    device = saved_run_device(config)
    x, form = new_inputs(source, config, meta, checkpoint["reader"], probabilities)
    _, _, preds, *probs = evaluate(place(model, config, device), x.to(device), None, config,
                                   probabilities=probabilities or form["target"] != "label")
    write_predictions(out, form, preds, probs if probabilities or form["target"] != "label" else [], meta,
                      probabilities)
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
            data = load_task(config, data_dir or config.get("data"), device)
        except UserError as e:  # most often a missing --data-dir, which the run itself had
            raise UserError(f"{run_dir}: curves redrawn, but the confusion matrix and image grid need the run's "
                            f"data (--data-dir): {e}") from None
        _, dev_acc, preds = evaluate(place(model, config, device), *data["dev"], config)
        from toolkit.plots import plot_dev_predictions  # matplotlib: imported only when drawing
        plot_dev_predictions(*data["dev"], preds, checkpoint["meta"], run_dir)
    print(f"{run_dir}: plots redrawn; dev accuracy of model.pt {dev_acc:.4f}")
