"""Your own images, read from the data folder as Kaggle and torchvision ship them (task `images`), any of:
  train/<class>/*   with test/*                       (torchvision's ImageFolder; val/<class>/* is dev)
  train/<id>.<ext>  with test/<id>.<ext> and a labels table whose first column names the training files
  train and test tables of pixels: a label column and columns pixel0.. (or pixel1..) of square images
The columns and labels follow folders.py's rules; image files are decoded by images.py.
"""
import math
import re
from pathlib import Path

import numpy as np

from toolkit import images
from toolkit.errors import UserError
from toolkit.folders import (LABEL_NAMES, MEMORY_PER_PIXEL, MEMORY_PER_TEXT_BYTE, VAL, check_fits, column,
                             encode_labels, given_labels, id_column, label_column, layouts_expected, pick_column,
                             roles, sample_of, test_labels, unpacked_size)
from toolkit.submission import read_sample
from toolkit.tables import SAMPLE, read_table, refused_files, table_files

PIXEL = re.compile(r"pixel(\d+)$", re.I)  # pixel0, pixel1, ... (Kaggle's digit recognizer, Fashion-MNIST)


def kind_of(root):
    """What a competition's folder holds, "image" or "text", asked of its files: image files in a train folder,
    or a training table of pixel columns, are images; other training tables, texts."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    train_dir = subfolder(root, "train")
    if train_dir is not None and any(images.is_image(p) for p in train_dir.rglob("*")):
        return "image"
    trains = roles(table_files(root))["train"]
    if not trains:
        raise refused_files(root, ("train", "test")) or layouts_expected(root)
    return "image" if any(PIXEL.match(c) for c in read_table(trains[0]).columns) else "text"


def subfolder(root, word):
    """The folder in root whose name holds `word` (train, test), any case; None where there is none."""
    matches = sorted(p for p in root.iterdir() if p.is_dir() and word in p.name.lower() and not VAL.search(p.name.lower()))
    return matches[0] if matches else None


def val_folder(root):
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and VAL.search(p.name.lower())), None)


def image_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and images.is_image(p))


def read_images(task, root, config):
    """Raw data (data.py) from a folder of image files or of pixel tables."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (--data-dir names the folder holding the competition's files)")
    train_dir, test_dir = subfolder(root, "train"), subfolder(root, "test")
    if train_dir is None or test_dir is None:
        return read_pixel_tables(root, config)
    size, sample = config["image_size"], sample_of(root)
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and image_files(p))
    if classes:  # train/<class>/*
        train = [(p, i) for i, c in enumerate(classes) for p in image_files(train_dir / c)]
        if len(classes) < 2:
            raise UserError(f"{train_dir}: one class folder ({classes[0]}); classifying needs two or more")
    else:  # train/<id>.<ext> and a labels table
        train, classes = labelled_files(root, train_dir, config)
    tests = image_files(test_dir)
    if not tests:
        raise UserError(f"{test_dir}: no image files ({', '.join(images.EXTENSIONS)})")
    dev_dir = val_folder(root)
    dev = [(p, classes.index(p.parent.name)) for p in image_files(dev_dir) if p.parent.name in classes] if dev_dir else []
    groups = [[p for p, _ in train], tests] + ([[p for p, _ in dev]] if dev else [])
    check_fits(root, MEMORY_PER_PIXEL * 3 * size * size * sum(map(len, groups)))
    from toolkit.features import CACHE_DIR
    arrays = images.read_images(groups, size, CACHE_DIR)
    raw = {"train": (arrays[0], np.array([c for _, c in train], dtype=np.int64)), "test": (arrays[1], None),
           "classes": classes, "related": False, "ids": [p.stem for p in tests], "sample": sample,
           "keys": [(p.name, p.stem) for p in tests], "columns": {"image_size": size}}
    if dev:
        raw["dev"] = (arrays[2], np.array([c for _, c in dev], dtype=np.int64))
    return raw


def labelled_files(root, train_dir, config):
    """[(path, class)] of train/<id>.<ext> files and the classes, from the table whose first column names them."""
    files = image_files(train_dir)
    if not files:
        raise UserError(f"{train_dir}: no image files and no class folders")
    by_name = {k: p for p in files for k in (p.name, p.stem)}
    for path in table_files(root):
        if SAMPLE.search(path.name):
            continue
        table = read_table(path)
        names = table.iloc[:, 0].str.strip().tolist()
        listed = sum(n in by_name for n in names[:200])
        if listed < 0.9 * min(len(names), 200):
            continue
        label = labels_column(config, table, path)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UserError(f"{path}: {len(missing)} of its rows name no file in {train_dir} (first: {missing[0]!r})")
        y, classes = encode_labels(table[label], path, label)
        unlisted = len(files) - len({by_name[n] for n in names})
        if unlisted:
            raise UserError(f"{train_dir}: {unlisted} image files that {path.name} does not list")
        return list(zip([by_name[n] for n in names], y.tolist())), classes
    raise UserError(f"{root}: {train_dir.name}/ holds image files but no table here names them in its first column "
                    f"(trainLabels.csv: id,label, say)")


def labels_column(config, table, path):
    """The label column of a labels table: the --set one, its only other column, or one named like a label."""
    if config["label_column"]:
        return pick_column(config, "label_column", table, path, list(table.columns))
    others = list(table.columns[1:])
    named = [c for c in others if c.lower() in LABEL_NAMES]
    if len(others) == 1 or len(named) == 1:
        return others[0] if len(others) == 1 else named[0]
    raise UserError(f"{path}: cannot tell the label column among {', '.join(others)}; --set label_column=NAME says which")


def pixel_columns(table, path):
    """The table's pixel<k> columns in order of k, and the side of the square images they hold."""
    found = sorted((int(PIXEL.match(c).group(1)), c) for c in table.columns if PIXEL.match(c))
    side = math.isqrt(len(found))
    if side * side != len(found) or not found:
        raise UserError(f"{path}: {len(found)} pixel columns; square images need a square number of them")
    return [c for _, c in found], side


def read_pixel_tables(root, config):
    """Raw data from train and test tables of pixel<k> columns (Kaggle's digit recognizer, Fashion-MNIST)."""
    found = roles(table_files(root))
    if not found["train"] or not found["test"]:
        raise refused_files(root, ("train", "test")) or layouts_expected(root)
    check_fits(root, MEMORY_PER_TEXT_BYTE * sum(unpacked_size(p) for p in [found["train"][0], found["test"][0]]))
    sample = read_sample(found["sample"]) if found["sample"] else None
    path, test_path = found["train"][0], found["test"][0]
    train, test = read_table(path, numeric=PIXEL), read_table(test_path, numeric=PIXEL)
    pixels, side = pixel_columns(train, path)
    if not all(column(test, c) for c in pixels):
        raise UserError(f"{test_path}: lacks pixel columns that {path.name} has")
    label = label_column(config, train, test, path, test_path, sample)
    y, classes = encode_labels(train[label], path, label)
    ids = id_column(config, test, sample, test_path)
    raw = {"train": (pixel_images(train, pixels, side, path), y), "classes": classes, "related": False,
           "test": (pixel_images(test, pixels, side, test_path), test_labels(test, label, classes)),
           "ids": test[ids].tolist() if ids else None, "sample": sample,
           "columns": {"pixels": pixels, "id": ids, "label": label}}
    if found["val"]:
        dev = read_table(found["val"][0], numeric=PIXEL)
        raw["dev"] = (pixel_images(dev, pixels, side, found["val"][0]), given_labels(dev, label, classes, found["val"][0]))
    return raw


def pixel_images(table, pixels, side, path):
    """uint8 [N, side, side] from a table's pixel columns, each value checked to be an integer 0..255."""
    try:
        values = table[pixels].to_numpy(dtype=np.float64)
    except (ValueError, KeyError) as e:
        raise UserError(f"{path}: pixel values must be numbers ({e})") from None
    if values.min() < 0 or values.max() > 255 or np.any(values % 1):
        raise UserError(f"{path}: pixel values must be integers 0..255, got [{values.min():g}, {values.max():g}]")
    return values.astype(np.uint8).reshape(len(table), side, side)
