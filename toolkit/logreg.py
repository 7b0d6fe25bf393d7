"""The linear baseline: logistic regression on NB-weighted n-grams (NBSVM's model with a logistic loss),
fitted by scikit-learn's liblinear and carried as the toolkit's one-layer SentimentClassifier, so that
evaluation, model.pt, metrics.json and submission.csv are the shared loop's, and an MLP can mix its
probabilities in (config `interpolate`, mlp.Interpolated)."""
import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from mlp import SentimentClassifier


def to_scipy(x):
    """torch sparse CSR -> scipy CSR, a copy: LogisticRegression fitted on a view of the tensors would change
    the toolkit's own training rows."""
    x = x.cpu()
    arrays = (x.values(), x.col_indices(), x.crow_indices())
    return sp.csr_matrix(tuple(a.numpy().copy() for a in arrays), shape=x.shape)


def logistic_regression(C, num_classes, seed):
    """scikit-learn's L2 logistic regression as the toolkit fits it: liblinear for two classes, the multinomial
    model (lbfgs) for more."""
    if num_classes == 2:
        return LogisticRegression(C=C, solver="liblinear", random_state=seed)
    return LogisticRegression(C=C, max_iter=1000, random_state=seed)


def fit_logreg(x, y, C, seed=0, num_classes=2):
    """SentimentClassifier(hidden_dims=[]) holding the weights of an L2 logistic regression fitted to x, y.

    Two classes: liblinear, exact, deterministic and quick at this size, on one core; the binary model's w and
    b become the two logits -(w.x + b)/2 and +(w.x + b)/2, whose softmax is the same sigmoid(w.x + b). More
    classes: the multinomial model (lbfgs), whose scores are the logits; a class missing from these rows
    gets a logit far below the others."""
    rows, y = to_scipy(x), y.cpu().numpy()
    fitted = logistic_regression(C, num_classes, seed).fit(rows, y)
    if num_classes == 2:
        w, b = fitted.coef_[0] / 2, fitted.intercept_[0] / 2
        weight, bias = np.stack([-w, w], 1), np.array([-b, b])
    else:
        weight, bias = np.zeros((x.shape[1], num_classes), np.float32), np.full(num_classes, -30.0)
        weight[:, fitted.classes_], bias[fitted.classes_] = fitted.coef_.T, fitted.intercept_
    model = SentimentClassifier(x.shape[1], num_classes, [], sparse_input=True)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.from_numpy(weight))
        model.layers[0].bias.copy_(torch.from_numpy(bias))
    return model.to(x.device)


def self_train(x, y, unlabeled, C, rounds, margin):
    """Self-training on binary n-gram rows: (x + the confidently pseudo-labelled rows of `unlabeled`, their labels).

    Each round fits the NB logistic regression (ratios and weights) to the labelled rows plus the previous
    round's confident guesses, and guesses every unlabeled row again; a row joins when its likeliest class's
    probability is at least 0.5 + `margin` (two classes: at least `margin` from 0.5). The unlabeled rows' own
    labels are never read. A movie's reviews share names and words the labelled reviews lack, and its
    confident reviews teach them to the rest."""
    from toolkit.features import nb_ratios
    rows, guess = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=y.dtype)
    for _ in range(rounds):
        x_fit, y_fit = sp.vstack([x, unlabeled[rows]]).tocsr(), np.concatenate([y, guess])
        r = sp.diags(nb_ratios(x_fit, y_fit))
        classes = len(np.unique(y_fit))
        fitted = logistic_regression(C, classes, seed=None).fit(x_fit @ r, y_fit)
        p = fitted.predict_proba(unlabeled @ r)
        if classes == 2:
            rows = np.flatnonzero(np.abs(p[:, 1] - 0.5) >= margin)
            guess = (p[rows, 1] > 0.5).astype(y.dtype)
        else:
            rows = np.flatnonzero(p.max(1) >= 0.5 + margin)
            guess = fitted.classes_[p[rows].argmax(1)].astype(y.dtype)
    return sp.vstack([x, unlabeled[rows]]).tocsr(), np.concatenate([y, guess])
