"""`main.py bench`: the toolkit against the usual alternatives, in one process, on the same data.

1. Fashion-MNIST MLP, same layers and epochs: the toolkit's loop; the textbook loop (DataLoader over a
   TensorDataset, batch 64, loss.item() and accuracy(...).tolist() every batch, as the homework skeleton);
   scikit-learn's MLPClassifier.
2. Sentiment: TF-IDF featurization cold and cached, and training samples per second.
3. CIFAR-10 CNN: training images per second and achieved GFLOP/s (FLOPs from FlopCounterMode), beside
   this machine's matmul GFLOP/s measured in the same run.
"""
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import experiment
from augment import batch_augment
from config import load_config
from data import ROOT
from experiment import build_model, load_task, place, run
from files import write_json, write_text
from train import amp_dtype, autocast, make_optimizer

MLP_SETTINGS = ["hidden_dims=[512, 256]", "activation='relu'", "optimizer='adam'", "lr=1e-3", "dropout=0.0",
                "augment=false", "label_smoothing=0.0", "scheduler='constant'", "weight_decay=0.0",
                "batch_size=256", "name='bench_fashion'"]


def matmul_gflops(dtype=torch.float32, n=2048, seconds=3.0):
    """Warm square matmuls for about `seconds`: the practical ceiling for this machine and dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def textbook_fashion(config, data, epochs):
    """The homework skeleton's loop: DataLoader shuffling a TensorDataset, a host sync every batch."""
    torch.manual_seed(config["seed"])
    model = build_model(config, data["meta"]["input_dim"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=64, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        losses, accs = [], []
        for xb, yb in loader:
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            accs += (logits.argmax(1) == yb).float().tolist()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        acc = (model(data["dev"][0]).argmax(1) == data["dev"][1]).float().mean().item()
    return seconds, acc


def sklearn_fashion(config, data, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    import warnings
    x, y = (t.flatten(1).numpy() if t.dim() > 1 else t.numpy() for t in data["train"])
    clf = MLPClassifier(hidden_layer_sizes=config["hidden_dims"], activation="relu", solver="adam",
                        learning_rate_init=config["lr"], max_iter=epochs, shuffle=True, random_state=0,
                        alpha=0.0, n_iter_no_change=epochs + 1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter = epochs is the point here
        clf.fit(x, y)
    seconds = time.perf_counter() - start
    return seconds, clf.score(data["dev"][0].flatten(1).numpy(), data["dev"][1].numpy())


def bench_fashion(data_dir, epochs, rows, sets):
    config = load_config(ROOT / "configs" / "fashion_mlp.toml", [*MLP_SETTINGS, f"epochs={epochs}", *sets])
    data = load_task(config, data_dir, torch.device("cpu"))
    n = len(data["train"][1]) * epochs
    for amp in (False, True):
        precision = amp_dtype(torch.device("cpu"), amp)
        if amp and precision is None:
            continue  # no native bf16 on this CPU: the fp32 row is the toolkit's figure
        with tempfile.TemporaryDirectory() as out:
            metrics = run({**config, "amp": amp}, data_dir, out)
        last = metrics["history"][-1]  # final-epoch accuracy, as for the other two systems (not best-of)
        seconds = sum(h["seconds"] for h in metrics["history"])  # training epochs incl. dev evaluation
        name = f"toolkit (batch 256, {'bf16 autocast' if amp else 'fp32'})"
        rows.append(row("fashion_mlp", name, epochs, seconds, n, last["dev_acc"]))
    seconds, acc = textbook_fashion(config, data, epochs)
    rows.append(row("fashion_mlp", "textbook loop (batch 64)", epochs, seconds, n, acc))
    seconds, acc = sklearn_fashion(config, data, epochs)
    rows.append(row("fashion_mlp", "sklearn MLPClassifier (batch 200)", epochs, seconds, n, acc))


def bench_sentiment(data_dir, rows, sets):
    config = load_config(ROOT / "configs" / "sentiment_mlp.toml", ["epochs=1", "name='bench_sentiment'", *sets])
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        import features
        saved, features.CACHE_DIR = features.CACHE_DIR, Path(cache)
        try:
            for label in ("cold", "cached"):
                experiment._loaded.clear()
                metrics = run(config, data_dir, out)
                rows.append(row("sentiment_features", label, None, metrics["features"]["seconds"], None, None))
        finally:
            features.CACHE_DIR = saved
    h = metrics["history"][0]
    rows.append(row("sentiment_mlp", "toolkit", 1, h["seconds"], len(load_task(config, data_dir, torch.device("cpu"))
                                                                      ["train"][1]), h["dev_acc"]))


def bench_cnn(data_dir, steps, rows, matmul, sets):
    config = load_config(ROOT / "configs" / "cifar10_cnn.toml", sets)
    data = load_task(config, data_dir, torch.device("cpu"))
    x, y = data["train"]
    for amp in (False, True):
        config["amp"] = amp
        torch.manual_seed(0)
        model = place(build_model(config, 0), config, torch.device("cpu")).train()
        optimizer = make_optimizer(model, config, torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        bs = config["batch_size"]

        def step(i):
            idx = torch.arange(i * bs, (i + 1) * bs) % len(y)
            xb = batch_augment(x[idx], gen, config["translate"])
            with autocast(torch.device("cpu"), amp):
                loss = F.cross_entropy(model(xb).float(), y[idx], label_smoothing=config["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        with FlopCounterMode(display=False) as counter:
            step(0)  # forward + backward FLOPs of one step; the dtype does not change the count
        flops = counter.get_total_flops()
        step(1)
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        seconds = time.perf_counter() - start
        precision = "bf16 autocast" if amp_dtype(torch.device("cpu"), amp) == torch.bfloat16 else "fp32"
        r = row("cifar10_cnn", f"toolkit, {precision}", None, seconds, steps * bs, None)
        r["achieved_gflops"] = flops * steps / seconds / 1e9
        r["fraction_of_fp32_matmul"] = r["achieved_gflops"] / matmul
        rows.append(r)


def row(task, system, epochs, seconds, samples, accuracy):
    return {"task": task, "system": system, "epochs": epochs, "seconds": seconds,
            "samples_per_s": samples / seconds if samples else None, "accuracy": accuracy}


def markdown(result):
    fmt = lambda v, f: "" if v is None else format(v, f)
    lines = [f"fp32 matmul: {result['matmul_gflops']:.0f} GFLOP/s; bf16 matmul: {result['matmul_bf16_gflops']:.0f} "
             f"GFLOP/s (2048x2048, warm)", "",
             "| task | system | epochs | seconds | samples/s | accuracy (dev) | GFLOP/s |", "|---" * 7 + "|"]
    for r in result["rows"]:
        gflops = "" if "achieved_gflops" not in r else \
            f"{r['achieved_gflops']:.0f} ({r['fraction_of_fp32_matmul']:.0%} of fp32 matmul)"
        lines.append(f"| {r['task']} | {r['system']} | {fmt(r['epochs'], 'd')} | {r['seconds']:.1f} | "
                     f"{fmt(r['samples_per_s'], ',.0f')} | {fmt(r['accuracy'], '.4f')} | {gflops} |")
    return "\n".join(lines) + "\n"


def bench(data_dir=None, out="runs", quick=False):
    sets = ["device='cpu'"] + (["dev_size=50", "min_df=1"] if quick else [])  # quick: tiny data sets
    result = {"matmul_gflops": matmul_gflops(seconds=1 if quick else 4),
              "matmul_bf16_gflops": matmul_gflops(torch.bfloat16, seconds=1 if quick else 4), "rows": []}
    bench_fashion(data_dir, 1 if quick else 5, result["rows"], sets)
    bench_sentiment(data_dir, result["rows"], sets)
    bench_cnn(data_dir, 2 if quick else 20, result["rows"], result["matmul_gflops"], sets)
    out = Path(out)
    write_json(out / "bench.json", result)
    write_text(out / "bench.md", markdown(result))
    print(markdown(result))
    print(f"bench.json and bench.md in {out}/")
    return result
