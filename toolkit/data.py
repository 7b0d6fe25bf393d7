"""The built-in data sets' files, the dev split, and downloading the standard way.

Each built-in task (tasks.py) reads its own folder in the data folder DIR (--data-dir, $DATA_DIR or data/):
  DIR/imdb/train.jsonl[.gz] + test.jsonl[.gz] or test_texts.jsonl[.gz]   {"text", "label"} per line
  DIR/aclImdb/, as Stanford's archive unpacks
  DIR/fashion_mnist/ or DIR/cifar10/: train.npz (x, y) + test.npz (x, y) or test_images.npz (x)
A reader returns None where its files are missing, and the task's download fetches the official archive
into DIR. Every problem with the files is a UserError that names the file and what is wrong.

What every reader returns, built in or your own (folders.py), is the raw data:
  train, test  (x, y): texts (list of str) or uint8 images [N, H, W] (grey) or [N, H, W, C]; y int64
               class indices, None for a test set without labels
  classes      class names, where the files say them (else the task's row does)
  related      True where neighbouring training rows describe the same thing (dev takes whole blocks)
and, where the folder has them, dev (a given validation split), unlabeled (texts), ids (the test rows'
ids), sample (the sample submission, submission.py).
"""
import errno
import gzip
import json
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from toolkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # the repository: configs/, data/
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"  # as torchtext checks it: a truncated archive fails it
# a download that failed on these is a fault of the machine (exit 1), not data missing (exit 2)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
SPLIT_SEED = 0  # the dev split is the same for every run and seed, so runs compare on the same examples


def resolve_data_dir(data_dir=None):
    """--data-dir, else $DATA_DIR, else data/ beside this file."""
    return Path(data_dir or os.environ.get("DATA_DIR") or ROOT / "data")


def dev_size(config, n):
    """How many of n training examples dev holds: dev_size, or dev_fraction of them where that is fewer."""
    return min(config["dev_size"], max(1, int(config["dev_fraction"] * n)))


def dev_split(labels, dev_size, seed=SPLIT_SEED, block=1):
    """Seeded, stratified (train_idx, dev_idx): class balance is kept even when the file is sorted by label.

    Each class gives its share of dev_size as whole blocks of `block` consecutive examples of that class,
    drawn at random (the last block taken is cut to size); block 1 is a random stratified split. IMDB lists
    a movie's reviews next to each other and its official test set holds other movies: a random dev split
    rewards remembering titles and actors, a block split does not (see hw3.md for how far it can be
    trusted). Plain numpy rather than scikit-learn's train_test_split, whose import is slow beside a short
    run."""
    if dev_size >= len(labels):
        raise UserError(f"dev_size = {dev_size} must be smaller than the {len(labels)} training examples")
    idx = np.arange(len(labels))
    block = max(block, 1)
    rng, dev = np.random.default_rng(seed), []
    classes, counts = np.unique(labels, return_counts=True)
    wanted = np.floor(dev_size * counts / len(labels)).astype(int)
    wanted[: dev_size - wanted.sum()] += 1  # the rounding remainder, one example each, as stratified splits do
    for c, n in zip(classes, wanted):
        rows = idx[labels == c]
        blocks = [rows[i:i + block] for i in range(0, len(rows), block)]
        taken = np.concatenate([blocks[b] for b in rng.permutation(len(blocks))])[:n]  # whole blocks, then a cut
        dev.append(taken)
    dev_idx = np.sort(np.concatenate(dev))
    return np.setdiff1d(idx, dev_idx), dev_idx


def cap_train(train_idx, max_train, seed=SPLIT_SEED):
    """A seeded random subset of max_train training indices (all of them when max_train is 0 or larger)."""
    if not max_train or max_train >= len(train_idx):
        return train_idx
    return np.sort(np.random.default_rng(seed).permutation(train_idx)[:max_train])


def neighbours_related(texts, labels, pairs=2000, seed=SPLIT_SEED):
    """Whether neighbouring texts of a class share clearly more words than random pairs of that class do: a
    file that lists one movie's (or author's, or product's) texts together. Then a random dev split would
    hold out texts whose neighbours, nearly the same, stay in training, and read high; dev takes whole blocks."""
    rng = np.random.default_rng(seed)
    words = lambda i: set(texts[i].lower().split())
    jaccard = lambda a, b: len(a & b) / max(len(a | b), 1)
    same = np.flatnonzero(labels[1:] == labels[:-1])
    if len(same) < 20:
        return False
    near = rng.choice(same, min(pairs, len(same)), replace=False)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    far = [rng.choice(by_class[labels[i]], 2) for i in near]
    near_overlap = np.mean([jaccard(words(i), words(i + 1)) for i in near])
    far_overlap = np.mean([jaccard(words(a), words(b)) for a, b in far])
    return near_overlap > 1.2 * far_overlap


def first_existing(folder, names):
    return next((folder / n for n in names if (folder / n).is_file()), None)


def check_labels(where, y, classes):
    """y as int64 indices into classes, or a UserError naming the file (and key) and the values found."""
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
        raise UserError(f"{where} labels must be integers 0..{len(classes) - 1}, got {y.dtype} in "
                        f"[{y.min()}, {y.max()}]")
    return y.astype(np.int64)


# ---------------------------------------------------------------- IMDB

def read_jsonl(path, need_labels, classes):
    """Texts and labels (None when no line has one) of a .jsonl or .jsonl.gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    texts, labels = [], []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{n}: not a JSON object ({line.strip()[:40]!r})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise UserError(f"{path}:{n}: each line needs a string 'text'")
                texts.append(row["text"])
                if "label" in row:
                    if row["label"] not in range(len(classes)) or isinstance(row["label"], bool):
                        raise UserError(f"{path}:{n}: 'label' must be an integer 0..{len(classes) - 1}, got "
                                        f"{row['label']!r}")
                    labels.append(row["label"])
    except (UnicodeDecodeError, OSError, EOFError) as e:
        if isinstance(e, OSError) and e.errno:  # the disk failed, not the file: a fault of the machine
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise UserError(f"{path}: cannot read as UTF-8 JSON lines ({e})") from None
    if not texts:
        raise UserError(f"{path}: no reviews in the file")
    if labels and len(labels) != len(texts):
        raise UserError(f"{path}: 'label' is on {len(labels)} of {len(texts)} lines; give it on all or none")
    if need_labels and not labels:
        raise UserError(f"{path}: training reviews need a 'label' on every line")
    return texts, (np.array(labels, dtype=np.int64) if labels else None)


def read_acl_imdb(folder, split):
    """The reviews of aclImdb/<split>/{neg,pos}/<id>_<rating>.txt in the order of their ids, whose runs are
    one movie's reviews (the block dev split keeps them together); sorted as strings, 10000 came before 1000."""
    texts, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        paths = sorted((folder / split / sub).glob("*.txt"), key=lambda p: (len(p.stem.split("_")[0]), p.stem))
        if not paths:
            raise UserError(f"{folder / split / sub}: no reviews (*.txt); the aclImdb folder is incomplete")
        for path in paths:
            texts.append(path.read_text(encoding="utf-8"))
            labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def read_imdb(task, root, config):
    """IMDB from DIR/imdb/*.jsonl[.gz] or DIR/aclImdb/, or None where neither is there. A movie's reviews sit
    next to each other in both."""
    local = root / task.folder
    train_file = first_existing(local, ["train.jsonl", "train.jsonl.gz"])
    if train_file:
        test_file = first_existing(local, ["test.jsonl", "test.jsonl.gz", "test_texts.jsonl", "test_texts.jsonl.gz"])
        if test_file is None:
            raise UserError(f"{local}: found {train_file.name} but no test.jsonl[.gz] or test_texts.jsonl[.gz]")
        return {"train": read_jsonl(train_file, True, task.classes), "test": read_jsonl(test_file, False, task.classes),
                "related": True}
    acl = root / "aclImdb"
    if acl.is_dir():
        return {"train": read_acl_imdb(acl, "train"), "test": read_acl_imdb(acl, "test"), "related": True}
    return None


def new_folders(path):
    """`path` and those of its parents that do not exist yet, deepest first: what a download into `path` may
    create, for remove_empty to take away again when it fails."""
    path = Path(path).absolute()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty(folders):
    """Remove each of `folders`, deepest first, that a failed download created and left empty; a folder with
    a file in it (a part of a download) stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or never made
            pass


def download_failed(name, e, looked_for):
    """The error for a failed download: `e` itself where the disk failed it, else a UserError that says where
    the data was looked for (no network, a proxy, a corrupt download)."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        return e
    return UserError(f"{name} not found: looked for {looked_for}, and the download failed ({type(e).__name__}); put the "
                     f"files there or pass --data-dir (or DATA_DIR) naming the folder that holds them")


def download_imdb(task, root):
    """The Stanford archive into DIR, its MD5 checked (torchvision fetches it again where a file there fails
    it), then extracted beside aclImdb/ and renamed into place whole: an interrupted run leaves no part of
    aclImdb/ for the next one to read as all of it."""
    from torchvision.datasets.utils import download_url, extract_archive
    made = new_folders(root)
    try:
        download_url(IMDB_URL, str(root), md5=IMDB_MD5)
        partial = root / "aclImdb.partial"
        shutil.rmtree(partial, ignore_errors=True)
        extract_archive(str(root / "aclImdb_v1.tar.gz"), str(partial))
        (partial / "aclImdb").rename(root / "aclImdb")
        shutil.rmtree(partial)
    except Exception as e:
        remove_empty(made)
        raise download_failed("IMDB", e, f"{root / task.folder}/train.jsonl[.gz] and {root / 'aclImdb'}/train/") from None
    return read_imdb(task, root, None)


# ---------------------------------------------------------------- images in .npz files

_prefetched = {}  # path -> Future of (its stamp when read, {key: array} or None), from prefetch_npz
# the .npy format versions inflate_npz reads itself, by their header readers; np.load reads the others
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
TEST_NPZ = ["test.npz", "test_images.npz"]


def prefetch_npz(task, data_dir):
    """Read a task's .npz files in a thread, for read_npz to take: main.py starts it before importing torch,
    whose import is Python holding the GIL, while zlib inflates without it. A task whose files are not .npz
    starts nothing."""
    if task.load is not read_npz_folder:
        return
    local = resolve_data_dir(data_dir) / task.folder
    paths = [p for p in (local / "train.npz", first_existing(local, TEST_NPZ)) if p]
    pool = ThreadPoolExecutor(1)
    _prefetched.clear()  # what a failed run left untaken: one run's files are held at most
    _prefetched.update({p: pool.submit(inflate_npz, p) for p in paths if p.is_file()})
    pool.shutdown(wait=False)  # its thread ends after these reads


def stamp(path):
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def inflate_npz(path):
    """(stamp, {key: array}) of an .npz file, each member inflated by one read straight into its array, so the
    thread needs the GIL a few times per file (np.load reads in small pieces and waits for the GIL after each,
    which beside torch's import is slower than no thread at all). (stamp, None) leaves to np.load what it
    alone should judge: other .npy versions, object arrays, Fortran order, a short member."""
    before, arrays = stamp(path), {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as f:
                header = NPY_HEADERS.get(np.lib.format.read_magic(f))
                if header is None:
                    return before, None
                shape, fortran_order, dtype = header(f)
                if fortran_order or dtype.hasobject:
                    return before, None
                array = np.empty(shape, dtype)
                if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != array.nbytes:
                    return before, None
                arrays[name.removesuffix(".npy")] = array
    return before, arrays


def npz_arrays(path):
    """{key: array} of an .npz file: prefetch_npz's arrays when it read the file as it is now, else np.load's
    (which meets any problem the thread met again, and reports it as if there had been no thread)."""
    job = _prefetched.pop(path, None)
    if job is not None and job.exception() is None:
        when_read, arrays = job.result()
        if arrays is not None and when_read == stamp(path):
            return arrays
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def image_shape(task):
    """The shape of one of the task's images as an array: [H, W] for grey, [H, W, C] else."""
    return task.shape if task.channels == 1 else (*task.shape, task.channels)


def read_npz(path, task, need_labels):
    """(x uint8 [N, *shape], y int64 [N] or None) with every key, shape, dtype and range checked."""
    try:
        arrays = npz_arrays(path)
    except MemoryError:
        raise
    except OSError as e:
        if not e.errno:
            raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
        raise OSError(e.errno, e.strerror, str(path)) from e  # the disk failed, not the file
    except Exception as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if "x" not in arrays:
        raise UserError(f"{path}: missing key 'x' (found: {', '.join(arrays) or 'nothing'})")
    x, y = arrays["x"], arrays.get("y")
    shape = image_shape(task)
    if x.dtype != np.uint8:
        raise UserError(f"{path}: 'x' must be uint8 images, got dtype {x.dtype}")
    if x.ndim != 1 + len(shape) or x.shape[1:] != shape:
        raise UserError(f"{path}: 'x' must have shape [N, {', '.join(map(str, shape))}], got {list(x.shape)}")
    if len(x) == 0:
        raise UserError(f"{path}: 'x' holds no images")
    if y is None:
        if need_labels:
            raise UserError(f"{path}: missing key 'y' (labels 0..{len(task.classes) - 1})")
        return x, None
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{path}: 'y' must be one label per image: x has {len(x)}, y has shape {list(y.shape)}")
    return x, check_labels(f"{path}: 'y'", y, task.classes)


def read_npz_folder(task, root, config):
    """{'train': (x, y), 'test': (x, y or None)} from DIR/<folder>/*.npz, or None where train.npz is missing."""
    local = root / task.folder
    if not (local / "train.npz").is_file():
        return None
    test_file = first_existing(local, TEST_NPZ)
    if test_file is None:
        raise UserError(f"{local}: found train.npz but no {' or '.join(TEST_NPZ)}")
    return {"train": read_npz(local / "train.npz", task, True), "test": read_npz(test_file, task, False),
            "related": False}


def torchvision_set(name):
    """download(task, root) for torchvision's data set class `name` (FashionMNIST, CIFAR10, CIFAR100, ...):
    its files in DIR, downloaded where missing, as uint8 arrays."""
    def download(task, root):
        from torchvision import datasets
        cls = getattr(datasets, name)
        made = new_folders(root / cls.__name__ / "raw")  # where FashionMNIST downloads; CIFAR10 into DIR
        try:
            train, test = (cls(str(root), train=t, download=True) for t in (True, False))
        except Exception as e:
            remove_empty(made)
            raise download_failed(name, e, f"{root / task.folder}/train.npz and torchvision's files in {root}") from None
        as_numpy = lambda d: (np.asarray(d.data, dtype=np.uint8), np.asarray(d.targets, dtype=np.int64))
        return {"train": as_numpy(train), "test": as_numpy(test), "related": False}
    return download
