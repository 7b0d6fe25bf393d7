"""The two usual alternatives to `main.py run configs/fashion_mlp.toml`, as whole processes, for `main.py bench`.

    python -m toolkit.peers textbook|sklearn [--data-dir DIR] [--out DIR] [--hidden 256 128] [--epochs 10]
                                  [--dev-size 5000]

Each is what a student would write: load the images, scale pixels to [0, 1], train the same
784-256-128-10 ReLU MLP with Adam lr 1e-3 for the same epochs on the same 55,000-image training part (the
toolkit's dev split, data.dev_split), then write OUT/submission.csv for the test images and OUT/metrics.json
(dev accuracy, seconds inside the process).
- textbook: the homework skeleton's loop, a DataLoader shuffling a TensorDataset in batches of 64, loss.item()
  and the batch's accuracy read back every step.
- sklearn: MLPClassifier with its defaults (batch 200), no L2, no early stop.
Timed start to finish by bench.py (python start-up and imports included), as the toolkit's run is; bench.py
also times textbook_loop and mlp_classifier in-process, on the toolkit's own arrays.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from toolkit.config import DEFAULTS
from toolkit.data import dev_split
from toolkit.files import write_json
from toolkit.submission import write_indices
from toolkit.tasks import load_raw


def load(data_dir, dev_size):
    """The toolkit's loader, so that the peers read what it reads: the npz files, or torchvision's download
    (which imports torchvision only then)."""
    images = load_raw("fashion", data_dir, DEFAULTS)
    (x, y), x_test = images["train"], images["test"][0]
    x = x.reshape(len(x), -1) / np.float32(255)
    tr, dv = dev_split(y, dev_size)
    return (x[tr], y[tr]), (x[dv], y[dv]), x_test.reshape(-1, 784) / np.float32(255)


def textbook_loop(train, hidden, epochs, seed=0):
    """The homework skeleton's loop on (x [N, 784] float32, y [N] int64) numpy arrays. Returns (predict, the
    seconds training took): predict(x) -> labels. bench.py times it in-process too."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(seed)
    sizes = [784, *hidden]
    layers = [m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(*map(torch.from_numpy, train)), batch_size=64, shuffle=True)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses, accs = [], []
        for xb, yb in loader:
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            accs += (logits.argmax(1) == yb).float().tolist()
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f} acc {np.mean(accs):.4f}", flush=True)
    seconds = time.perf_counter() - start
    model.eval()

    @torch.no_grad()
    def predict(x):
        return model(torch.from_numpy(x)).argmax(1).numpy()
    return predict, seconds


def mlp_classifier(train, hidden, epochs, seed=0):
    """scikit-learn's MLPClassifier, as textbook_loop: (predict, training seconds)."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=epochs, random_state=seed, alpha=0.0,
                        n_iter_no_change=epochs + 1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter = epochs is the point here
        clf.fit(*train)
    return clf.predict, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=["textbook", "sklearn"])
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default=".")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dev-size", type=int, default=5000)
    args = parser.parse_args()
    start = time.perf_counter()
    train, dev, test = load(args.data_dir, args.dev_size)
    fit = {"textbook": textbook_loop, "sklearn": mlp_classifier}[args.system]
    predict, _ = fit(train, args.hidden, args.epochs)
    acc = (predict(dev[0]) == dev[1]).mean()
    out = Path(args.out)
    write_indices(out / "submission.csv", predict(test))
    seconds = time.perf_counter() - start
    write_json(out / "metrics.json", {"system": args.system, "dev_acc": float(acc), "seconds": seconds})
    print(f"{args.system}: dev accuracy {acc:.4f}, {seconds:.1f}s in the process; wrote {out}/submission.csv")


if __name__ == "__main__":
    main()
