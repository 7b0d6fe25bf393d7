"""Small generated data sets, so the suite never needs a real DATA_DIR or the network, and the helpers the test
modules share."""
import csv
import gzip
import io
import json
import os
import random
import signal
import zipfile

import numpy as np
import pytest

from toolkit import features, train

POSITIVE = "great superb wonderful loved brilliant moving fun excellent".split()
NEGATIVE = "awful boring terrible hated dull waste poor worst".split()
MIDDLING = "average okay fine mediocre decent passable fair ordinary".split()
NEUTRAL = "the movie film plot actor scene story it was and a of director".split()


def make_review(rng, label):
    """A review of neutral words with a few of its class's words (0 negative, 1 positive, 2 middling): linearly
    separable, like easy IMDB."""
    words = rng.choices(NEUTRAL, k=12) + rng.choices((NEGATIVE, POSITIVE, MIDDLING)[label], k=3)
    rng.shuffle(words)
    return " ".join(words) + " <br /><br />"


def write_jsonl(path, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Feature caches go to the test's own folder, never to the project's data/cache."""
    monkeypatch.setattr(features, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("DATA_DIR", raising=False)
    # system.set_allocator sets this for the process; restored after each test, so no later test inherits it
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)


@pytest.fixture
def imdb_dir(tmp_path):
    """DIR/imdb with 400 labelled training reviews (sorted by label, like the real file) and 100 unlabelled."""
    rng = random.Random(0)
    folder = tmp_path / "data" / "imdb"
    folder.mkdir(parents=True)
    labels = [0] * 200 + [1] * 200
    write_jsonl(folder / "train.jsonl.gz", [{"text": make_review(rng, y), "label": y} for y in labels])
    write_jsonl(folder / "test_texts.jsonl.gz", [{"text": make_review(rng, i % 2)} for i in range(100)])
    return tmp_path / "data"


def image_folder(root, name, x, y, test_x):
    """root/data/<name>/ laid out like a real DATA_DIR: train.npz (x, y) and test_images.npz (x only)."""
    folder = root / "data" / name
    folder.mkdir(parents=True)
    np.savez(folder / "train.npz", x=x, y=y.astype(np.uint8))
    np.savez(folder / "test_images.npz", x=test_x)
    return root / "data"


def banded_images(rng, n, shape, band):
    """n noisy uint8 images labelled 0..9 in turn; band(image, label) brightens a class-specific region."""
    y = np.arange(n) % 10
    x = rng.integers(0, 70, size=(n, *shape), dtype=np.uint8)
    for image, c in zip(x, y):
        band(image, c)
    return x, y


@pytest.fixture
def fashion_dir(tmp_path):
    """DIR/fashion_mnist with 300 28x28 images whose class sets the brightness of one row band."""
    def band(image, c):
        image[2 * c + 4:2 * c + 6] = 250
    rng = np.random.default_rng(0)
    x, y = banded_images(rng, 300, (28, 28), band)
    return image_folder(tmp_path, "fashion_mnist", x, y, banded_images(rng, 40, (28, 28), band)[0])


@pytest.fixture
def cifar_dir(tmp_path):
    """DIR/cifar10 with 200 32x32 RGB images whose class sets which colour channel and stripe are bright."""
    def band(image, c):
        image[3 * c:3 * c + 3, :, c % 3] = 255
    x, y = banded_images(np.random.default_rng(0), 200, (32, 32, 3), band)
    return image_folder(tmp_path, "cifar10", x, y, x[:30])


# ---------------------------------------------------------------- competitions as Kaggle ships them

def write_table(path, rows, sep=","):
    """rows (the header first) as a table; a .gz or .zip name packs it so."""
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\n").writerows(rows)
    data = out.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(path.stem, data)
    else:
        path.write_bytes(data)
    return path


def text_competition(root, labels=("neg", "pos"), n_train=300, n_test=60, seed=0):
    """root/train.csv (id, text, label), test.csv (id, text) and sample_submission.csv (id, label: its ids in
    another order than the test's); returns {test id: its true label}."""
    rng = random.Random(seed)
    train = [[f"r{i}", make_review(rng, i % len(labels)), labels[i % len(labels)]] for i in range(n_train)]
    test = [[f"t{i:03d}", make_review(rng, i % len(labels)), labels[i % len(labels)]] for i in range(n_test)]
    write_table(root / "train.csv", [["id", "text", "label"], *train])
    write_table(root / "test.csv", [["id", "text"], *[row[:2] for row in test]])
    sample = sorted(test, key=lambda row: row[0][::-1])
    write_table(root / "sample_submission.csv", [["id", "label"], *[[row[0], labels[0]] for row in sample]])
    return {row[0]: row[2] for row in test}


def class_image(rng, label, size=12, channels=3):
    """A noisy image whose class lights one horizontal band (and, in colour, one channel)."""
    image = rng.integers(0, 60, (size, size, channels), dtype=np.uint8)
    band = slice(2 * label * size // 12, (2 * label + 2) * size // 12)
    image[band, :, label % channels] = 250
    return image if channels == 3 else image[..., 0]


def image_competition(root, layout, n_train=120, n_test=30, classes=("ant", "bee", "cat"), channels=3, seed=0):
    """A competition of images of `classes` laid out as `layout`: "folders" (train/<class>/*.png, test/*.png),
    "ids" (train/<id>.png, trainLabels.csv, test/<id>.png) or "pixels" (train.csv, test.csv of pixel0..);
    each with a sample submission; returns {test id: true label}."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    train = [(f"{i}", i % len(classes)) for i in range(n_train)]
    test = [(f"{1000 + i}", i % len(classes)) for i in range(n_test)]
    if layout == "pixels":
        flat = lambda c: class_image(rng, c, 12, 1).reshape(-1).tolist()
        pixels = [f"pixel{k}" for k in range(144)]
        write_table(root / "train.csv", [["label", *pixels], *[[classes[c], *flat(c)] for _, c in train]])
        write_table(root / "test.csv", [["ImageId", *pixels], *[[name, *flat(c)] for name, c in test]])
    else:
        for split, rows in (("train", train), ("test", test)):
            for name, c in rows:
                folder = root / split / (classes[c] if layout == "folders" and split == "train" else "")
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(class_image(rng, c, 12, channels)).save(folder / f"{name}.png")
        if layout == "ids":
            write_table(root / "trainLabels.csv", [["id", "label"], *[[name, classes[c]] for name, c in train]])
    write_table(root / "sample_submission.csv", [["ImageId", "label"], *[[name, classes[0]] for name, _ in test]])
    return {name: classes[c] for name, c in test}


# ---------------------------------------------------------------- helpers the test modules share

def tiny(**changes):
    """A small sentiment MLP on imdb_dir that saves its state after every epoch, as the resume tests need."""
    sets = {"dev_size": 100, "epochs": 3, "batch_size": 32, "hidden_dims": [16], "lr": 0.01, "min_df": 1,
            "device": "cpu", "name": "tiny", "dropout": 0.2, "checkpoint_minutes": 0, **changes}
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sets.items()]


def swept(**changes):
    """tiny's settings for a sweep over lr, which names each run and sets its lr itself."""
    return [s for s in tiny(**changes) if not s.startswith(("lr=", "name="))]


def signal_at_call(monkeypatch, n, signum=signal.SIGINT):
    """Deliver a real signal to this process during the n-th batch selection (training or evaluation)."""
    calls = {"n": 0}
    original = train.take

    def take(x, idx):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signum)
        return original(x, idx)
    monkeypatch.setattr(train, "take", take)


def without_seconds(metrics):
    return [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in metrics["history"]]


def tiny_run(tmp_path, data_dir, out="out", **changes):
    (tmp_path / "tiny.toml").write_text("\n".join(tiny(**changes)) + "\n")
    return ["run", str(tmp_path / "tiny.toml"), "--data-dir", str(data_dir), "--out", str(tmp_path / out)]


def one_error_line(capsys):
    """The single 'error:' line on stderr (tqdm's bars aside), checked to come without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
