import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from toolkit import features
from toolkit.features import nb_ratios, nb_weigh, to_torch
from toolkit.logreg import fit_logreg, self_train, to_scipy
from mlp import Interpolated, SentimentClassifier


def sparse_problem(seed=0, n=200, d=50):
    rng = np.random.default_rng(seed)
    x = sp.random(n, d, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    y = (x @ rng.normal(size=d) > 0).astype(np.int64)
    return x, y


def test_logreg_is_scikit_learns_logistic_regression_as_a_one_layer_classifier():
    x, y = sparse_problem()
    model = fit_logreg(to_torch(x), torch.from_numpy(y), C=1.0)
    reference = LogisticRegression(C=1.0, solver="liblinear", random_state=0).fit(x, y)
    assert len(model.layers) == 1
    probs = torch.softmax(model(to_torch(x)), 1)[:, 1].detach().numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(x)[:, 1], atol=1e-5)


def test_fitting_logreg_leaves_the_training_tensor_as_it_was():
    x, y = sparse_problem()
    xt = to_torch(x)
    before = xt.values().clone()
    fit_logreg(xt, torch.from_numpy(y), C=1.0)
    assert torch.equal(xt.values(), before) and (to_scipy(xt) != x).nnz == 0


def test_nb_weights_are_the_log_count_ratio_of_the_training_rows():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float32))  # rows 0, 1 positive
    y = np.array([1, 1, 0])
    weighted, other = nb_weigh([x, sp.csr_matrix(np.ones((1, 3), dtype=np.float32))], y)
    p, q = np.array([3, 2, 1]), np.array([1, 2, 2])  # counts + 1 in positive and negative rows
    r = np.log(p / p.sum()) - np.log(q / q.sum())
    np.testing.assert_allclose(other.toarray()[0], r, rtol=1e-6)  # applied to the other parts as well
    np.testing.assert_allclose(weighted.toarray(), x.toarray() * r, rtol=1e-6)


def test_self_training_adds_the_unlabeled_rows_the_nb_logistic_regression_is_sure_of_with_its_guesses():
    x, y = sparse_problem(n=300)
    labelled, unlabeled = x[:200], x[200:]  # y[200:] is never passed
    rows, labels = self_train(labelled, y[:200], unlabeled, C=1.0, rounds=1, margin=0.3)
    r = sp.diags(nb_ratios(labelled, y[:200]))
    fitted = LogisticRegression(C=1.0, solver="liblinear").fit(labelled @ r, y[:200])
    p = fitted.predict_proba(unlabeled @ r)[:, 1]
    sure = np.abs(p - 0.5) >= 0.3
    assert 0 < sure.sum() < 100
    assert (rows[:200] != labelled).nnz == 0 and (rows[200:] != unlabeled[sure]).nnz == 0
    np.testing.assert_array_equal(labels, np.concatenate([y[:200], p[sure] > 0.5]))


def test_a_second_round_of_self_training_refits_on_the_first_rounds_guesses():
    x, y = sparse_problem(n=300)
    first = self_train(x[:200], y[:200], x[200:], C=1.0, rounds=1, margin=0.3)
    second = self_train(x[:200], y[:200], x[200:], C=1.0, rounds=2, margin=0.3)
    again = self_train(*first, x[200:], C=1.0, rounds=1, margin=0.3)  # fitted on labelled + first guesses
    np.testing.assert_array_equal(second[1][200:], again[1][len(first[1]):])


def test_nb_features_are_binary_n_grams_that_keep_punctuation_and_one_letter_words(tmp_path):
    config = {"features": "nb", "ngram_max": 2, "min_df": 1, "max_features": 0}
    (m,), _, _, _ = features.text_features([["a great film ! ! great"]], config, tmp_path)
    assert set(m.data) == {1.0}  # "great" twice is still 1
    vocabulary = features.make_vectorizer(config).fit([features.preprocess("a great film !")]).vocabulary_
    assert {"a", "!", "a great", "film !"} <= set(vocabulary)


def test_nb_and_tfidf_features_of_the_same_texts_are_cached_apart(tmp_path):
    parts = [["good film", "bad film"]]
    base = {"ngram_max": 1, "min_df": 1, "max_features": 0}
    for kind in ("tfidf", "nb"):
        features.text_features(parts, {**base, "features": kind}, tmp_path)
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["nb", "tfidf"]


@pytest.mark.parametrize("weight", [0.25, 0.5, 1.0])
def test_interpolated_model_trains_as_the_mlp_and_evaluates_as_the_mixture(weight):
    torch.manual_seed(0)
    mlp, linear = SentimentClassifier(6, 2, [4]), SentimentClassifier(6, 2, [])
    model = Interpolated(mlp, linear, weight)
    x = torch.randn(5, 6)
    assert torch.equal(model.train()(x), mlp(x))
    mixed = (1 - weight) * torch.softmax(mlp(x), 1) + weight * torch.softmax(linear(x), 1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).exp(), mixed)
    assert all(not p.requires_grad for p in model.linear.parameters())
    assert math.isclose(sum(p.numel() for p in model.parameters() if p.requires_grad), 6 * 4 + 4 + 4 * 2 + 2)
