"""Text -> sparse TF-IDF features (scikit-learn), cached under data/cache/, and sparse matrices -> torch.

The vectorizer is fitted on the training part only, so dev and test scores are honest. Fitting uni+bigrams
on 20,000 reviews takes about a minute on one core; the cache, keyed by a hash of the texts, the split and
the featurizer settings, makes every later run of a sweep start in seconds.
"""
import hashlib
import json
import re
import sys
import time
import warnings
import zipfile

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from data import ROOT
from files import atomic_path

CACHE_DIR = ROOT / "data" / "cache"
FEATURE_KEYS = ("ngram_max", "min_df", "max_features")
TAG = re.compile(r"<[^>]+>")  # the reviews contain "<br />" line breaks
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # we rely on it; tests cover it


def preprocess(text):
    return TAG.sub(" ", text).lower()


def cache_key(texts, settings):
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for part in texts:
        for t in part:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        h.update(b"\1")  # separates the parts, so moving a review from train to dev changes the key
    return h.hexdigest()[:20]


def save_matrices(path, matrices):
    arrays = {}
    for i, m in enumerate(matrices):
        arrays.update({f"{i}_data": m.data, f"{i}_indices": m.indices, f"{i}_indptr": m.indptr,
                       f"{i}_shape": np.array(m.shape)})
    with atomic_path(path) as tmp:  # a killed or failed write never leaves a half-written cache behind
        np.savez(tmp, **arrays)


def load_matrices(path, count):
    with np.load(path) as f:
        return [sp.csr_matrix((f[f"{i}_data"], f[f"{i}_indices"], f[f"{i}_indptr"]), shape=tuple(f[f"{i}_shape"]))
                for i in range(count)]


def tfidf_features(parts, config, cache_dir=None):
    """[train_texts, *other_texts] -> list of float32 CSR matrices; the vectorizer sees parts[0] only.

    Returns (matrices, seconds, cached)."""
    cache_dir = cache_dir or CACHE_DIR
    settings = {k: config[k] for k in FEATURE_KEYS}
    path = cache_dir / f"tfidf-{cache_key(parts, settings)}.npz"
    start = time.perf_counter()
    if path.is_file():
        try:
            return load_matrices(path, len(parts)), time.perf_counter() - start, True
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged cache is rebuilt, not trusted
            print(f"features: {path} is damaged; fitting again", file=sys.stderr, flush=True)
    vectorizer = TfidfVectorizer(preprocessor=preprocess, ngram_range=(1, config["ngram_max"]),
                                 min_df=config["min_df"], max_features=config["max_features"] or None,
                                 sublinear_tf=True, dtype=np.float32)
    matrices = [vectorizer.fit_transform(parts[0])] + [vectorizer.transform(p) for p in parts[1:]]
    try:
        save_matrices(path, matrices)
    except OSError as e:  # the cache only saves time: a full or read-only cache folder must not stop a run
        print(f"features: not cached ({e.strerror}: {e.filename}); the next run fits them again", file=sys.stderr,
              flush=True)
    return matrices, time.perf_counter() - start, False


def to_torch(m, device="cpu"):
    """scipy CSR -> torch sparse CSR (int64 indices, float32 values) on device."""
    m = m.tocsr()
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device,
                                   check_invariants=False)  # scipy already guarantees a valid CSR
