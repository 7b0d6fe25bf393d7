"""Do character n-grams help the NB logistic regression on IMDB? Binary word 1-3 grams (the sentiment config's
tokens, two reviews or more), then the same with character 2-5 grams within words beside them, each block
weighted by its naive Bayes log-count ratios, into scikit-learn's liblinear at C 0.1 and 0.033; dev is the
sentiment config's block dev (hw3.md, Part 1).

    python -m tools.nb_char_ngrams --data-dir DIR
"""
import argparse
import time

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.features import NB_TOKENS, nb_ratios
from toolkit.logreg import logistic_regression
from toolkit.tasks import load_raw
from toolkit.tensors import split

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data-dir", default=None)
args = parser.parse_args()
config = load_config(ROOT / "configs" / "sentiment_mlp.toml", [])
raw = load_raw(config["task"], args.data_dir, config)
tr, dev_texts, y_dev = split(raw, config)
texts, y = raw["train"]
clean = lambda t: t.replace("<br />", " ")
train_texts, y_train = [clean(texts[i]) for i in tr], np.asarray(y)[tr]
dev_texts, y_dev = [clean(t) for t in dev_texts], np.asarray(y_dev)


def words():
    return CountVectorizer(ngram_range=(1, 3), min_df=2, token_pattern=NB_TOKENS, binary=True)


def chars():
    return CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, binary=True)


for label, blocks in (("word 1-3 grams", [words()]), ("word 1-3 and char 2-5 grams", [words(), chars()])):
    start, train, dev = time.perf_counter(), [], []
    for vectorizer in blocks:
        a = vectorizer.fit_transform(train_texts).astype(np.float32)
        ratios = sp.diags(nb_ratios(a, y_train))
        train.append(a @ ratios)
        dev.append(vectorizer.transform(dev_texts).astype(np.float32) @ ratios)
    train, dev = sp.hstack(train).tocsr(), sp.hstack(dev).tocsr()
    for C in (0.1, 0.1 / 3):
        fitted = logistic_regression(C, 2, seed=0).fit(train, y_train)
        print(f"{label}, C={C:.3g}: dev {(fitted.predict(dev) == y_dev).mean():.2%}, {train.shape[1]:,} features, "
              f"{time.perf_counter() - start:.0f}s", flush=True)
