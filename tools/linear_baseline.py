"""The tuned linear baseline a config must beat, on the config's own data and dev split: for texts, TF-IDF of
word 1-2 grams into scikit-learn's LogisticRegression; for images, a logistic regression on the pixels. C is
chosen on dev from a grid; accuracy decides, or log loss where the sample submission asks for probabilities.

    python -m tools.linear_baseline configs/texts.toml --data-dir DIR [--out FILE.csv]

Prints dev accuracy and log loss at each C and the best; with --out, the best model's submission in the form
the run writes (refitted on train + dev, as the configs refit).
"""
import argparse
import time

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from toolkit.config import load_config
from toolkit.submission import write_submission
from toolkit.tasks import TASKS, load_raw
from toolkit.tensors import describe, split, submission_form

TEXT_C = (1.0, 3.0, 10.0, 30.0, 100.0)
IMAGE_C = (0.001, 0.01, 0.1)

parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("--data-dir", required=True)
parser.add_argument("--out")
parser.add_argument("--set", action="append", default=[])
args = parser.parse_args()
config = load_config(args.config, args.set)
start = time.perf_counter()
raw = load_raw(config["task"], args.data_dir, config)
tr, x_dev, y_dev = split(raw, config)
x, y = raw["train"]
form = submission_form(raw, config)
text = TASKS[config["task"]].kind == "text"
if text:
    x_train = [x[i] for i in tr]
    features = lambda fit_on: TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(fit_on)
    grid = TEXT_C
else:
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255
    x_train, x_dev = flat(x[tr]), flat(x_dev)

    class Pixels:  # standardized pixels: the training part's mean and spread per pixel
        def __init__(self, fit_on):
            self.mean, self.std = fit_on.mean(0), fit_on.std(0) + 1e-3

        def transform(self, a):
            return (a - self.mean) / self.std
    features, grid = Pixels, IMAGE_C
y_train = y[tr]
vectors = features(x_train)
train, dev = vectors.transform(x_train), vectors.transform(x_dev)
by_loss = form["metric"] == "log loss"
results = []
for C in grid:
    t = time.perf_counter()
    model = LogisticRegression(C=C, max_iter=300).fit(train, y_train)
    p = model.predict_proba(dev)
    acc, loss = float((model.classes_[p.argmax(1)] == y_dev).mean()), log_loss(y_dev, p, labels=model.classes_)
    results.append((loss if by_loss else -acc, C, acc, loss))
    print(f"C={C:g}: dev acc {acc:.4f}, dev log loss {loss:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
_, C, acc, loss = min(results)
print(f"baseline: best C={C:g}, dev acc {acc:.4f}, dev log loss {loss:.4f}, chosen by "
      f"{'log loss' if by_loss else 'accuracy'}; {time.perf_counter() - start:.0f}s in all")
if args.out:
    both_x = list(x_train) + list(x_dev) if text else np.concatenate([x_train, x_dev])
    both_y = np.concatenate([y_train, y_dev])
    vectors = features(both_x)
    model = LogisticRegression(C=C, max_iter=300).fit(vectors.transform(both_x), both_y)
    test = raw["test"][0] if text else flat(raw["test"][0])
    probs = torch.from_numpy(model.predict_proba(vectors.transform(test)).astype(np.float32))
    write_submission(args.out, form, probs.argmax(1), probs, describe(raw, config)["written"])
    print(f"submission in {args.out}")
