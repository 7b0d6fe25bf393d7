"""Does averaging seeds help? A config trained at several seeds in one process (its data loaded once), each
dev-selected model's dev probabilities kept, then the dev accuracy of every group of them averaged (hw3.md
measures it for the IMDB and Fashion-MNIST configs). The refit is off: nothing could score it on dev.

    python -m tools.seed_ensemble CONFIG --data-dir DIR [--seeds 0 1 2] [--set KEY=VALUE ...] [--out DIR]
"""
import argparse
import itertools
import tempfile

import torch

from toolkit.config import load_config
from toolkit.predict import load_checkpoint
from toolkit.run import run
from toolkit.steps import evaluate
from toolkit.tensors import load_task


def dev_probabilities(config, data_dir, out):
    """(dev accuracy, dev probabilities [N, classes], dev labels) of config's dev-selected model, trained into out."""
    metrics = run(config, data_dir, out, folder="overwrite")
    model, checkpoint = load_checkpoint(metrics["run_dir"])
    data = load_task(checkpoint["config"], data_dir, torch.device("cpu"))
    _, acc, _, probs = evaluate(model, *data["dev"], checkpoint["config"], probabilities=True)
    return acc, probs, data["dev"][1].cpu()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        probs = []
        for seed in a.seeds:
            config = load_config(a.config, a.overrides + [f"seed={seed}", "refit=false", "plots=false"])
            config["name"] = f"{config['name']}-seed{seed}"
            acc, p_dev, y = dev_probabilities(config, a.data_dir, a.out or scratch)
            probs.append(p_dev)
            print(f"seed {seed}: dev acc {acc:.4f}", flush=True)
    for k in range(2, len(probs) + 1):
        accs = [((sum(probs[i] for i in group) / k).argmax(1) == y).float().mean().item()
                for group in itertools.combinations(range(len(probs)), k)]
        print(f"{k} seeds averaged: dev acc {min(accs):.4f}-{max(accs):.4f} (mean {sum(accs) / len(accs):.4f} "
              f"over {len(accs)} group{'s' * (len(accs) != 1)})", flush=True)


if __name__ == "__main__":
    main()
