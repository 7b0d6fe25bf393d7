"""Your own data, read from the data folder as Kaggle ships it: what the folder holds, its columns and labels,
and the texts (task `texts`; image_folders.py reads the images).

Texts: a training and a test table (.csv or .tsv, plain, .gz or a one-file .zip), found by "train" and "test"
in their names, any case. Of several training tables the labelled one trains; the others' texts are
unlabeled (self-training may read them). A table named like "val" or "dev" is the dev split.
Columns: the label column is the training table's column that the test table lacks (else one named label,
target, class, category, sentiment or y); the id column is the sample submission's first, else one named
id; the text column is the other column with the longest texts. Where that does not decide, one line names
the columns and the `--set text_column=`, `label_column=`, `id_column=` that settle it. Labels may be strings
or integers, two classes or more; they are written back as the training table wrote them.
Out of scope, each refused in one line: tables without a header row, numeric regression targets, several
labels per row, .7z/.rar archives, JSON or Excel files, data that would not fit in memory.
"""
import re
from pathlib import Path

import numpy as np

from toolkit.data import neighbours_related
from toolkit.errors import UserError
from toolkit.submission import read_sample
from toolkit.tables import SAMPLE, column, is_number, read_table, refused_files, table_files

LABEL_NAMES = ("label", "labels", "target", "class", "category", "sentiment", "y")
VAL = re.compile(r"(^|[^a-z])(val|valid|validation|dev)([^a-z]|$)")
MEMORY_PER_TEXT_BYTE = 20  # a run's peak memory over its tables' bytes (strings, n-gram matrices, copies)
MEMORY_PER_PIXEL = 16  # uint8 files, float32 tensors, copies


# ---------------------------------------------------------------- what the folder holds

def roles(paths):
    """{'train', 'test', 'val': [paths], 'sample': path or None} by the words in the names."""
    found = {"train": [], "test": [], "val": [], "sample": None}
    for p in paths:
        name = p.name.lower()
        if SAMPLE.search(name):
            found["sample"] = found["sample"] or p
        elif VAL.search(name):
            found["val"].append(p)
        elif "train" in name:
            found["train"].append(p)
        elif "test" in name:
            found["test"].append(p)
    return found


def layouts_expected(root):
    """The one line for a folder in none of the layouts: what was expected, and what is there."""
    there = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(root).iterdir())[:8] if Path(root).is_dir() \
        else []
    return UserError(f"{root}: no data in a layout this toolkit reads; expected, for texts, train and test .csv/.tsv "
                     f"files; for images, train/<class>/* with test/*, train/<id>.png|jpg with a labels .csv and "
                     f"test/, or train and test .csv files with pixel0.. columns (found: "
                     f"{', '.join(there) or 'nothing'})")


def sample_of(root):
    sample = roles(table_files(root))["sample"]
    return read_sample(sample) if sample else None


def available_memory():
    """Bytes of memory free for this process (Linux's MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(root, needed):
    """Refuse, before loading, data that would not fit in memory."""
    free = available_memory()
    if free is not None and needed > free:
        raise UserError(f"{root}: these data need about {needed / 2**30:.1f} GB of memory and {free / 2**30:.1f} GB "
                        f"are free; data that do not fit in memory are out of scope (use max_train on a subset)")


def unpacked_size(path):
    """A table file's size once unpacked: gzip records it (mod 4 GB) in its last 4 bytes, a zip in its index."""
    import zipfile
    name = path.name.lower()
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, 2)
            return max(int.from_bytes(f.read(4), "little"), path.stat().st_size)
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist())
    return path.stat().st_size


# ---------------------------------------------------------------- columns

def pick_column(config, key, table, path, columns_found):
    """The column a --set names, checked against the table."""
    name = config[key]
    match = column(table, name)
    if match is None:
        raise UserError(f"{path}: --set {key}={name!r}, but its columns are {', '.join(columns_found)}")
    return match


def label_column(config, train, test, path, test_path, sample=None):
    """The training table's label column: the --set one, else the one column the test table lacks (ids aside),
    else the one named like a label."""
    if config["label_column"]:
        return pick_column(config, "label_column", train, path, list(train.columns))
    missing = lacked(config, train, test, sample)
    if len(missing) == 1:
        return missing[0]
    if len(missing) > 1:
        raise UserError(f"{path}: {len(missing)} columns that {Path(test_path).name} lacks ({', '.join(missing[:6])}); "
                        f"several labels per row are out of scope: --set label_column=NAME trains on one of them")
    named = [c for c in train.columns if c.lower() in LABEL_NAMES]
    if len(named) == 1:
        return named[0]
    raise UserError(f"{path}: cannot tell the label column: {Path(test_path).name} has every one of its columns "
                    f"({', '.join(train.columns)}); --set label_column=NAME says which")


def id_column(config, table, sample, path):
    """The test table's id column: the --set one, else the sample's first column, else one named id; or None."""
    if config["id_column"]:
        return pick_column(config, "id_column", table, path, list(table.columns))
    if sample is not None and column(table, sample["columns"][0]) is not None:
        return column(table, sample["columns"][0])
    return column(table, "id")


def text_column(config, train, test, taken, path):
    """The text column: the --set one, else of the columns both tables share (bar label and id), the one with
    the longest texts, where no other comes within 10% of it."""
    if config["text_column"]:
        return pick_column(config, "text_column", train, path, list(train.columns))
    shared = [c for c in train.columns if c not in taken and column(test, c) is not None]
    lengths = {c: train[c].head(2000).str.len().mean() for c in shared}
    ranked = sorted(shared, key=lengths.get, reverse=True)
    if not ranked or len(ranked) > 1 and lengths[ranked[1]] > 0.9 * lengths[ranked[0]]:
        found = ", ".join(f"{c} ({lengths[c]:.0f} characters)" for c in ranked) or "none besides label and id"
        raise UserError(f"{path}: cannot tell the text column among {found}; --set text_column=NAME says which")
    return ranked[0]


def class_order(label):
    """Labels sort as numbers where they are numbers (2 before 10), else as strings."""
    return (0, float(label), label) if is_number(label) else (1, 0.0, label)


def encode_labels(values, path, name):
    """(class index per row, the classes sorted), with the classification checks: no empty label, not a numeric
    regression target, at least two classes."""
    values = list(values)
    empty = sum(1 for v in values if not v.strip())
    if empty:
        raise UserError(f"{path}: {empty} rows have no {name!r}; every training row needs its label")
    classes = sorted(set(values), key=class_order)
    numeric = all(is_number(c) for c in classes)
    if numeric and (any(float(c) % 1 for c in classes) or len(classes) > max(100, len(values) // 2)):
        raise UserError(f"{path}: {name!r} holds {len(classes)} different numbers: a numeric regression target, which "
                        f"is out of scope (this toolkit classifies)")
    if len(classes) < 2:
        raise UserError(f"{path}: every row has {name} {classes[0]!r}; classifying needs two classes or more")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def labels_of(values, classes):
    """Class indices of a test or dev table's labels, or None where one of them is not a training class."""
    index = {c: i for i, c in enumerate(classes)}
    codes = [index.get(v) for v in values]
    return None if None in codes else np.array(codes, dtype=np.int64)


# ---------------------------------------------------------------- texts

def read_texts(task, root, config):
    """Raw data (data.py) from a folder of training and test tables of texts."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (--data-dir names the folder holding the competition's files)")
    found = roles(table_files(root))
    if not found["train"] or not found["test"]:
        raise refused_files(root, ("train", "test")) or layouts_expected(root)
    check_fits(root, MEMORY_PER_TEXT_BYTE * sum(unpacked_size(p) for p in [*found["train"], *found["test"]]))
    sample = read_sample(found["sample"]) if found["sample"] else None
    tests = {p: read_table(p) for p in found["test"]}
    trains = {p: read_table(p) for p in found["train"]}
    test_path = max(tests, key=lambda p: shared_columns(tests[p], trains))  # test_labels.csv shares less
    test = tests[test_path]
    labelled = [p for p, t in trains.items() if is_labelled(config, t, test, sample)] or list(trains)[:1]
    if len(labelled) > 1:
        raise UserError(f"{root}: several labelled training tables ({', '.join(p.name for p in labelled)}); keep one")
    path, train = labelled[0], trains[labelled[0]]
    label = label_column(config, train, test, path, test_path, sample)
    ids = id_column(config, test, sample, test_path)
    text = text_column(config, train, test, {label, column(train, ids) if ids else None}, path)
    y, classes = encode_labels(train[label], path, label)
    texts = train[text].tolist()
    raw = {"train": (texts, y), "classes": classes, "related": neighbours_related(texts, y),
           "test": (test[column(test, text)].tolist(), test_labels(test, label, classes)),
           "ids": test[ids].tolist() if ids else None, "sample": sample,
           "columns": {"text": text, "id": ids, "label": label}}
    unlabeled = [t[column(t, text)].tolist() for p, t in trains.items() if p != path and column(t, text)]
    if unlabeled:
        raw["unlabeled"] = [s for texts in unlabeled for s in texts]
    if found["val"]:
        dev = read_table(found["val"][0])
        raw["dev"] = (dev[pick_named(dev, text, found["val"][0])].tolist(),
                      given_labels(dev, label, classes, found["val"][0]))
    return raw


def shared_columns(table, trains):
    return max(sum(column(t, c) is not None for c in table.columns) for t in trains.values())


def lacked(config, train, test, sample):
    """The training table's columns that the test table lacks, its id columns aside."""
    ids = {"id", config["id_column"].lower(), sample["columns"][0].lower() if sample else "id"}
    return [c for c in train.columns if column(test, c) is None and c.lower() not in ids]


def is_labelled(config, train, test, sample):
    """Whether a training table has a label: the --set label column, a column the test table lacks, or (where the
    test table has them all) a column named like a label."""
    if config["label_column"]:
        return column(train, config["label_column"]) is not None
    return bool(lacked(config, train, test, sample)) or any(c.lower() in LABEL_NAMES for c in train.columns)


def test_labels(test, label, classes):
    """The test table's labels where it has the label column and all its values are training classes."""
    name = column(test, label)
    return None if name is None else labels_of(test[name].tolist(), classes)


def pick_named(table, name, path):
    found = column(table, name)
    if found is None:
        raise UserError(f"{path}: no column {name!r} (its columns: {', '.join(table.columns)})")
    return found


def given_labels(table, label, classes, path):
    """A dev table's labels as class indices; every one must be a training class."""
    y = labels_of(table[pick_named(table, label, path)].tolist(), classes)
    if y is None:
        raise UserError(f"{path}: labels that the training table does not have")
    return y
