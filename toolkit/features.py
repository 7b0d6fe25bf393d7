"""Text -> sparse n-gram features (scikit-learn), cached under data/cache/, and sparse matrices -> torch.

Two kinds (config `features`):
  tfidf  TF-IDF of word n-grams, sublinear tf (the homework's first model)
  nb     binary word n-grams (punctuation ! and ? and one-letter words kept) scaled by their naive Bayes
         log-count ratio r = log(p / |p|_1) - log(q / |q|_1), p and q the n-gram counts over positive and
         negative training reviews plus 1 (Wang & Manning 2012, "NBSVM"): one multiply tells a linear
         layer which n-grams carry sentiment before it learns anything
The vectorizer and the ratios are fitted on the training part only, so dev and test scores are honest.
Fitting uni+trigrams on 20,000 reviews and transforming 30,000 more is slow; the cache, keyed by a hash of
the texts, the split and the featurizer settings, holds the vectorized matrices and the vocabulary (the nb
ratios, quick to compute, are recomputed from the training labels), so later runs start in seconds.
A run's model.pt keeps the vocabulary, the idf weights or nb ratios (its reader), so `predict` featurizes
new texts exactly as the run did (`vectorize`).
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
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from toolkit.data import ROOT
from toolkit.files import atomic_path

CACHE_DIR = ROOT / "data" / "cache"
FEATURE_KEYS = ("features", "ngram_max", "min_df", "max_features")
NB_TOKENS = r"(?u)\b\w+\b|[!?]"  # "a", "i" and "!" carry sentiment in bigrams ("a must", "i loved", "! !")
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


def save_matrices(path, matrices, reader):
    """The matrices, the vocabulary (one n-gram a line: no n-gram holds a line break) and the idf weights."""
    arrays = {"vocabulary": np.frombuffer("\n".join(reader["vocabulary"]).encode("utf-8"), np.uint8)}
    if reader["idf"] is not None:
        arrays["idf"] = reader["idf"].numpy()
    for i, m in enumerate(matrices):
        arrays.update({f"{i}_data": m.data, f"{i}_indices": m.indices, f"{i}_indptr": m.indptr,
                       f"{i}_shape": np.array(m.shape)})
    with atomic_path(path) as tmp:  # a killed or failed write never leaves a half-written cache behind
        np.savez(tmp, **arrays)


def load_matrices(path, count):
    with np.load(path) as f:
        matrices = [sp.csr_matrix((f[f"{i}_data"], f[f"{i}_indices"], f[f"{i}_indptr"]),
                                  shape=tuple(f[f"{i}_shape"])) for i in range(count)]
        reader = {"vocabulary": f["vocabulary"].tobytes().decode("utf-8").split("\n"),
                  "idf": torch.from_numpy(f["idf"]) if "idf" in f.files else None}
    return matrices, reader


def make_vectorizer(config):
    ngrams, min_df, top = (1, config["ngram_max"]), config["min_df"], config["max_features"] or None
    if config["features"] == "nb":
        return CountVectorizer(preprocessor=preprocess, ngram_range=ngrams, min_df=min_df, max_features=top,
                               token_pattern=NB_TOKENS, binary=True, dtype=np.float32)
    return TfidfVectorizer(preprocessor=preprocess, ngram_range=ngrams, min_df=min_df, max_features=top,
                           sublinear_tf=True, dtype=np.float32)


def text_features(parts, config, cache_dir=None):
    """[train_texts, *other_texts] -> list of float32 CSR matrices; the vectorizer sees parts[0] only.
    For features = "nb" the matrices are binary: `weigh` scales them by the training labels' ratios.

    Returns (matrices, seconds, cached, reader: {'vocabulary': n-grams in column order, 'idf': tensor or None})."""
    cache_dir = cache_dir or CACHE_DIR
    settings = {k: config[k] for k in FEATURE_KEYS}
    path = cache_dir / f"{config['features']}-v2-{cache_key(parts, settings)}.npz"
    start = time.perf_counter()
    if path.is_file():
        try:
            matrices, reader = load_matrices(path, len(parts))
            return matrices, time.perf_counter() - start, True, reader
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged cache is rebuilt, not trusted
            # one write per line: under torchrun every rank may say it on the same pipe
            sys.stderr.write(f"features: {path} is damaged; fitting again\n")
    vectorizer = make_vectorizer(config)
    matrices = [vectorizer.fit_transform(parts[0])] + [vectorizer.transform(p) for p in parts[1:]]
    idf = getattr(vectorizer, "idf_", None)
    reader = {"vocabulary": vectorizer.get_feature_names_out().tolist(),
              "idf": None if idf is None else torch.from_numpy(idf)}  # float64, as fitted
    try:
        save_matrices(path, matrices, reader)
    except OSError as e:  # the cache only saves time: a full or read-only cache folder must not stop a run
        sys.stderr.write(f"features: not cached ({e.strerror}: {e.filename}); the next run fits them again\n")
    return matrices, time.perf_counter() - start, False, reader


def vectorize(texts, config, reader):
    """New texts as the run's features: its vocabulary, idf weights or nb ratios (its reader, from model.pt)."""
    vocabulary = {term: i for i, term in enumerate(reader["vocabulary"])}
    vectorizer = make_vectorizer(config).set_params(vocabulary=vocabulary)
    if reader["idf"] is not None:
        vectorizer.idf_ = reader["idf"].numpy()
    matrix = vectorizer.transform(texts)
    return weigh([matrix], reader["ratios"].numpy())[0] if "ratios" in reader else matrix


def nb_ratios(x, y):
    """The naive Bayes log-count ratio of each column of binary x for labels y: for two classes (0/1)
    log(p / |p|_1) - log(q / |q|_1), p and q its counts in class 1 and class 0 plus 1. For more, each class
    against the rest, and a column keeps its largest ratio in size: how well it tells some class apart."""
    classes = np.unique(y)
    if len(classes) <= 2:
        p, q = (1 + np.asarray(x[y == c].sum(0)).ravel() for c in (1, 0))
        return (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)
    total = np.asarray(x.sum(0)).ravel()
    ratios = []
    for c in classes:
        inside = np.asarray(x[y == c].sum(0)).ravel()
        p, q = 1 + inside, 1 + total - inside
        ratios.append(np.abs(np.log(p / p.sum()) - np.log(q / q.sum())))
    return np.max(ratios, axis=0).astype(np.float32)


def weigh(matrices, ratios):
    """Scale every matrix's columns by ratios."""
    r = sp.diags(ratios)
    return [(m @ r).tocsr() for m in matrices]


def nb_weigh(matrices, y_train):
    """Scale every matrix's columns by the naive Bayes log-count ratios of the first (training) one."""
    return weigh(matrices, nb_ratios(matrices[0], y_train))


def to_torch(m, device="cpu"):
    """scipy CSR -> torch sparse CSR (int64 indices, float32 values) on device."""
    m = m.tocsr()
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device,
                                   check_invariants=False)  # scipy already guarantees a valid CSR
