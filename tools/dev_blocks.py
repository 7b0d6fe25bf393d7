"""How far the IMDB dev split can be trusted: dev accuracy of two linear models by dev block length.

    python -m tools.dev_blocks --data-dir path/to/data [--blocks 1 3 10 30 100 500] [--seeds 5]

For each block length and seed, data.dev_split holds out 5,000 reviews as whole blocks of consecutive
reviews of each class, and two scikit-learn models are fitted on the rest: TF-IDF uni+bigrams with
LogisticRegression(C=16), and NB-weighted binary uni-trigrams (features.py's "nb") with C=0.1. Each
vectorizer is fitted once on all 25,000 training texts, a small leak of vocabulary that the product does
not have, so that a row costs seconds. Compare the means with the withheld-test scores in hw3.md. The
defaults take several minutes on a laptop.
"""
import argparse

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from toolkit.config import DEFAULTS
from toolkit.data import dev_split
from toolkit.tasks import load_raw
from toolkit.features import make_vectorizer, nb_weigh, preprocess


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 3, 10, 30, 100, 500])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    texts, y = load_raw("sentiment", args.data_dir, DEFAULTS)["train"]
    tfidf = TfidfVectorizer(preprocessor=preprocess, ngram_range=(1, 2), min_df=2, max_features=200000,
                            sublinear_tf=True).fit_transform(texts).tocsr()
    binary = make_vectorizer({"features": "nb", "ngram_max": 3, "min_df": 2, "max_features": 200000}
                             ).fit_transform(texts).tocsr()
    print("block  seed  tfidf_logreg_dev  nb_logreg_dev", flush=True)
    for block in args.blocks:
        accs = []
        for seed in range(args.seeds):
            tr, dv = dev_split(y, 5000, seed=seed, block=block)
            lr = LogisticRegression(C=16, solver="liblinear").fit(tfidf[tr], y[tr])
            a = (lr.predict(tfidf[dv]) == y[dv]).mean()
            x_tr, x_dv = nb_weigh([binary[tr], binary[dv]], y[tr])
            nb = LogisticRegression(C=0.1, solver="liblinear").fit(x_tr, y[tr])
            accs.append((a, (nb.predict(x_dv) == y[dv]).mean()))
            print(f"{block:<6} {seed:<5} {accs[-1][0]:.4f}            {accs[-1][1]:.4f}", flush=True)
        mean, sd = np.mean(accs, 0), np.std(accs, 0)
        print(f"{block:<6} mean  {mean[0]:.4f} (sd {sd[0]:.4f})   {mean[1]:.4f} (sd {sd[1]:.4f})", flush=True)


if __name__ == "__main__":
    main()
