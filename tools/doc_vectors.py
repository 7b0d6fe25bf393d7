"""Document vectors trained with cosine similarity on every IMDB text (dv-cosine, Thongtan & Phienthrakul 2019):
each review's vector learns to point towards the vectors of its own uni-, bi- and trigrams and away from sampled
others (PV-DBOW with negative sampling, the score alpha x cosine), over the training, dev and test texts; then a
logistic regression on the training reviews' vectors, scored on dev, and mixed with the NB logistic regression.
hw3.md (Part 1) reports what it reached on 2 cores.

    python -m tools.doc_vectors --data-dir DIR [--epochs 10] [--dim 100] [--per-doc 64] [--negatives 5]
"""
import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from toolkit.config import load_config
from toolkit.data import ROOT
from toolkit.features import nb_ratios, text_features, weigh
from toolkit.logreg import logistic_regression
from toolkit.tasks import load_raw
from toolkit.tensors import split

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data-dir", default=None)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--dim", type=int, default=100)
p.add_argument("--per-doc", type=int, default=64, help="n-grams drawn from each review per epoch")
p.add_argument("--negatives", type=int, default=5, help="sampled n-grams per drawn one")
p.add_argument("--alpha", type=float, default=6.0, help="the cosine's scale inside the sigmoid")
p.add_argument("--lr", type=float, default=0.01, help="SparseAdam's")
p.add_argument("--batch", type=int, default=1024, help="reviews per step")
a = p.parse_args()
torch.manual_seed(0)

# the sentiment config's dev split and n-grams (every one in two training reviews or more), binary
config = load_config(ROOT / "configs" / "sentiment_mlp.toml")
raw = load_raw("sentiment", a.data_dir, config)
texts, labels = raw["train"]
tr, dev_texts, dev_y = split(raw, config)
matrices = text_features([[texts[i] for i in tr], dev_texts, raw["test"][0]], config)[0]
n_train, n_dev = matrices[0].shape[0], matrices[1].shape[0]
m = sp.vstack(matrices).tocsr()
n_docs, n_grams = m.shape
print(f"{n_docs} texts, {n_grams} n-grams, {m.nnz} pairs", flush=True)
indptr, indices = (torch.from_numpy(v.astype(np.int64)) for v in (m.indptr, m.indices))
lengths = (indptr[1:] - indptr[:-1]).float()
noise = torch.from_numpy(np.cumsum(np.asarray(m.sum(0)).ravel() ** 0.75)).float()  # word2vec's df^0.75
noise /= noise[-1].clone()

docs, grams = torch.nn.Embedding(n_docs, a.dim, sparse=True), torch.nn.Embedding(n_grams, a.dim, sparse=True)
for e in (docs, grams):
    torch.nn.init.uniform_(e.weight, -0.5 / a.dim, 0.5 / a.dim)
optimizer = torch.optim.SparseAdam([docs.weight, grams.weight], lr=a.lr)


def doc_vector_model():
    """(dev accuracy, C, dev probabilities of positive) of a logistic regression on the training vectors."""
    x = F.normalize(docs.weight.detach(), dim=1).numpy()
    best = None
    for c in (0.1, 1, 10):
        fitted = LogisticRegression(C=c, max_iter=2000).fit(x[:n_train], labels[tr])
        probs = fitted.predict_proba(x[n_train:n_train + n_dev])[:, 1]
        acc = ((probs > 0.5) == dev_y).mean()
        if best is None or acc > best[0]:
            best = (acc, c, probs)
    return best


start = time.perf_counter()
for epoch in range(1, a.epochs + 1):
    total = 0.0
    for batch in torch.randperm(n_docs).split(a.batch):
        b = len(batch)
        own = indices[indptr[batch, None] + (torch.rand(b, a.per_doc) * lengths[batch, None]).long()]
        others = torch.searchsorted(noise, torch.rand(b, a.per_doc * a.negatives)).clamp_(max=n_grams - 1)
        d = F.normalize(docs(batch), dim=1)[:, :, None]
        near = a.alpha * torch.bmm(F.normalize(grams(own), dim=2), d).squeeze(-1)
        far = a.alpha * torch.bmm(F.normalize(grams(others), dim=2), d).squeeze(-1)
        loss = -(F.logsigmoid(near).sum() + F.logsigmoid(-far).sum()) / (b * a.per_doc)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * b
    line = f"epoch {epoch}: loss {total / n_docs:.4f}, {time.perf_counter() - start:.0f}s"
    if epoch % 5 == 0 or epoch == a.epochs:
        acc, c, _ = doc_vector_model()
        line += f" | logistic regression on the vectors: dev acc {acc:.4f} (C={c})"
    print(line, flush=True)

acc, c, p_vectors = doc_vector_model()
x_train, x_dev = weigh(matrices[:2], nb_ratios(matrices[0], labels[tr]))
p_nb = logistic_regression(config["C"], 2, seed=None).fit(x_train, labels[tr]).predict_proba(x_dev)[:, 1]
print(f"NB logistic regression: dev acc {((p_nb > 0.5) == dev_y).mean():.4f}")
for w in (0.2, 0.3, 0.5):
    print(f"mixed with the vectors' at weight {w}: dev acc {(((1 - w) * p_nb + w * p_vectors > 0.5) == dev_y).mean():.4f}")
