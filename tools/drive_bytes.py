"""Bytes the notebook's built-in parts write into its results folder (a Drive, on Colab) and leave there, measured
by running them through main.py's functions as the notebook does.

    python -m tools.drive_bytes --data-dir DIR --results SCRATCH [--parts structures activations ...]

Every result file is written to a temporary file and renamed into place (files.atomic_path), so the bytes
written are the sizes of the files at their renames, plus TensorBoard's events files, which grow in place.
A file replaced or deleted on a Drive still counts against its quota from the trash: written is what a
Drive's quota sees; kept is the folder's size after the part. The CIFAR-10 part runs the GPU config (as the
notebook on a GPU) on the CPU, compile off: its files are the same, and a slower machine only saves its state
more often, so its count is an upper bound.
"""
import argparse
import json
import os
import time
from pathlib import Path

import main

PARTS = {
    "structures": lambda d, out: main.explore_mlp_structures(data_dir=d, out=out),
    "activations": lambda d, out: main.explore_mlp_activations(data_dir=d, out=out),
    "learning-rates": lambda d, out: main.explore_mlp_learning_rates(data_dir=d, out=out),
    "sentiment": lambda d, out: main.run_config("configs/sentiment_mlp.toml", data_dir=d, out=out),
    "fashion": lambda d, out: main.run_config("configs/fashion_mlp.toml", data_dir=d, out=out),
    "cifar": lambda d, out: main.run_config("configs/cifar10_cnn_gpu.toml", data_dir=d, out=out, device="cpu",
                                            compile=False),
}


def size_of(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def events_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("events.out.tfevents.*"))


parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", required=True)
parser.add_argument("--results", required=True, help="a scratch folder standing in for the Drive")
parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
args = parser.parse_args()
results = Path(args.results).resolve()
written = {"bytes": 0}
replace = os.replace


def counting_replace(src, dst, **kwargs):
    if Path(dst).resolve().is_relative_to(results):
        written["bytes"] += os.path.getsize(src)
    return replace(src, dst, **kwargs)


os.replace = counting_replace
report = {}
for part in args.parts:
    before, kept_before, events_before = written["bytes"], size_of(results), events_bytes(results)
    start = time.perf_counter()
    PARTS[part](args.data_dir, str(results))
    report[part] = {"written_bytes": written["bytes"] - before + events_bytes(results) - events_before,
                    "kept_bytes": size_of(results) - kept_before, "seconds": round(time.perf_counter() - start)}
    print(f"{part}: written {report[part]['written_bytes'] / 1e6:,.1f} MB, kept {report[part]['kept_bytes'] / 1e6:,.1f} "
          f"MB, {report[part]['seconds']} s", flush=True)
total = {k: sum(r[k] for r in report.values()) for k in ("written_bytes", "kept_bytes")}
print(f"all: written {total['written_bytes'] / 1e9:.2f} GB, kept {total['kept_bytes'] / 1e9:.2f} GB")
(results / "drive_bytes.json").write_text(json.dumps({"parts": report, "total": total}, indent=2) + "\n")
