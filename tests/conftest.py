"""Small generated data sets, so the suite never needs a real DATA_DIR or the network."""
import gzip
import json
import random

import numpy as np
import pytest

from toolkit import features

POSITIVE = "great superb wonderful loved brilliant moving fun excellent".split()
NEGATIVE = "awful boring terrible hated dull waste poor worst".split()
NEUTRAL = "the movie film plot actor scene story it was and a of director".split()


def make_review(rng, label):
    """A review of neutral words with a few of its class's words: linearly separable, like easy IMDB."""
    words = rng.choices(NEUTRAL, k=12) + rng.choices(POSITIVE if label else NEGATIVE, k=3)
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
