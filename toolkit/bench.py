"""`main.py bench`: the toolkit against the usual alternatives, in one process, on the same data.

1. Fashion-MNIST MLP, same layers and epochs, three seeds each: the toolkit's loop with its short-run recipe
   (fp32 and bf16) and with the textbook recipe; the textbook loop (DataLoader over a TensorDataset, batch
   64, loss.item() and accuracy(...).tolist() every batch, as the homework skeleton); scikit-learn's
   MLPClassifier. Speed-ups against the targets (see `speedups`) are computed, not eyeballed.
   The same three again as whole processes, start to finish as a user times them (Python start-up, imports,
   loading and files included): `main.py run configs/fashion_mlp.toml` with a 784-256-128-10 MLP and 10
   epochs, against toolkit/peers.py's textbook loop and MLPClassifier, the three in turn, three times.
2. Sentiment: TF-IDF featurization cold and cached, and training samples per second.
3. CIFAR-10 CNN: training images per second and achieved GFLOP/s (FLOPs from FlopCounterMode), beside
   the CPU's fp32 matmul GFLOP/s measured just before each row.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from toolkit.config import load_config
from toolkit.errors import UserError
from toolkit.data import ROOT, resolve_data_dir
from toolkit.models import build_model, init_from_data, place
from toolkit.run import as_trained, make_augment, run
from toolkit.tensors import forget, load_task
from toolkit.files import write_json, write_text
from toolkit.system import keep_freed_memory
from toolkit.peers import mlp_classifier, textbook_loop
from toolkit.steps import amp_dtype, make_optimizer, take, train_step

# Fashion-MNIST: the same network for every system (784-512-256-10, ReLU, Adam, no regularization), and
# two recipes. The toolkit's is its choice for short runs: batches of 512 with lr 2e-3 (per step) decayed
# to 0 on a cosine. The textbook one is the homework skeleton's: batches of 64, a constant lr 1e-3.
# A 5,000-image dev split leaves one run's accuracy noisy, so every system runs SEEDS times.
MLP_SETTINGS = ["hidden_dims=[512, 256]", "activation='relu'", "optimizer='adam'", "dropout=0.0", "augment=false",
                "label_smoothing=0.0", "weight_decay=0.0", "amp=false", "batch_norm=false", "name='bench_fashion'"]
TOOLKIT_RECIPE = ["batch_size=512", "lr=2e-3", "scheduler='cosine'"]
TEXTBOOK_RECIPE = ["batch_size=64", "lr=1e-3", "scheduler='constant'"]
SEEDS = (0, 1, 2)


def matmul_gflops(dtype=torch.float32, sizes=(2048, 3072, 4096), seconds=2.0):
    """Warm square matmuls for about `seconds` per size; the best size's GFLOP/s is the CPU's practical ceiling."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        best = max(best, 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9)
    return best


def peer_fashion(fit, config, data):
    """(training seconds, dev accuracy) of toolkit/peers.py's textbook_loop or mlp_classifier (batch 64
    and 200, lr 1e-3; no regularisation, as the toolkit rows here) on the toolkit's own split."""
    flat = lambda split: (data[split][0].flatten(1).numpy(), data[split][1].numpy())
    predict, seconds = fit(flat("train"), config["hidden_dims"], config["epochs"], config["seed"])
    x, y = flat("dev")
    return seconds, float((predict(x) == y).mean())


def toolkit_fashion(config, data_dir):
    with tempfile.TemporaryDirectory() as out:
        metrics = run(config, data_dir, out)
    expected = "bfloat16" if config["amp"] else "float32"
    if metrics["precision"] != expected:  # the row's label names the precision: it must be the one that ran
        raise RuntimeError(f"bench: toolkit ran in {metrics['precision']}, expected {expected}")
    # seconds of the training epochs, their dev evaluations and checkpoints included; final-epoch accuracy,
    # as for the other systems (not the best epoch)
    return sum(h["seconds"] for h in metrics["history"]), metrics["history"][-1]["dev_acc"]


def bench_fashion(data_dir, epochs, seeds, rows, sets):
    base = [*MLP_SETTINGS, f"epochs={epochs}", *sets]
    toolkit = load_config(ROOT / "configs" / "fashion_mlp.toml", [*base, *TOOLKIT_RECIPE])
    textbook = load_config(ROOT / "configs" / "fashion_mlp.toml", [*base, *TEXTBOOK_RECIPE])
    data = load_task(toolkit, data_dir, torch.device("cpu"))
    bf16 = native_bf16()  # else fp32 is what amp=true runs here
    systems = {"toolkit (batch 512, lr 2e-3 cosine, fp32)": lambda s: toolkit_fashion({**toolkit, "seed": s}, data_dir)}
    if bf16:
        systems["toolkit (batch 512, lr 2e-3 cosine, bf16 autocast)"] = \
            lambda s: toolkit_fashion({**toolkit, "seed": s, "amp": True}, data_dir)
    systems |= {
        "toolkit with the textbook recipe (batch 64, lr 1e-3, fp32)":  # the loop alone, recipe held equal
            lambda s: toolkit_fashion({**textbook, "seed": s}, data_dir),
        "textbook loop (batch 64, lr 1e-3)": lambda s: peer_fashion(textbook_loop, {**textbook, "seed": s}, data),
        "sklearn MLPClassifier (batch 200, lr 1e-3)":
            lambda s: peer_fashion(mlp_classifier, {**textbook, "seed": s}, data)}
    runs = {name: [] for name in systems}
    for seed in seeds:  # seeds outside, systems inside: a slow spell on a shared machine hits every system
        for name, fn in systems.items():
            runs[name].append(fn(seed))
    n = len(data["train"][1]) * epochs
    rows.extend({**repeated_row("fashion_mlp", name, epochs, results, n), "seeds": list(seeds)}
                for name, results in runs.items())
    return {("bf16" if amp else "fp32"): profile_matmuls({**toolkit, "amp": amp}, data)
            for amp in ([False, True] if bf16 else [False])}


def whole_run(args):
    """Wall seconds of `python ARGS` from the repository root, start to finish."""
    # as from a shell: without the huge pages this process turned on for its sentiment row (system.set_allocator),
    # which each command chooses for itself and which slow a short Fashion-MNIST run
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:  # one line, as any failure of a command: the process's own last line says why
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"bench: `python {' '.join(args)}` failed (exit {done.returncode}): {last}")
    return seconds


def bench_fashion_whole(data_dir, epochs, rows, sets, rounds=3):
    """The whole-process comparison: the three processes in turn, `rounds` times, so that a slow spell of a
    shared computer hits every system alike; median seconds, and the dev accuracy of the last epoch (seeded:
    the same every round, up to float rounding), as in the in-process rows."""
    where = ["--data-dir", str(resolve_data_dir(data_dir))]
    dev = next((s.split("=")[1] for s in sets if s.startswith("dev_size=")), "5000")
    # the peers' plain MLP: no batch norm
    toolkit = lambda out: ["main.py", "run", "configs/fashion_mlp.toml", "--set", "hidden_dims=[256, 128]", "--set",
                           "batch_norm=false", "--set", f"epochs={epochs}", "--out", out, *where,
                           *(a for s in sets for a in ("--set", s))]
    peer = lambda system: lambda out: ["-m", "toolkit.peers", system, "--epochs", str(epochs), "--dev-size", dev,
                                       "--out", out, *where]
    read = lambda path: json.loads(Path(path).read_text())
    toolkit_acc = lambda out: read(f"{out}/fashion_mlp/metrics.json")["history"][-1]["dev_acc"]
    peer_acc = lambda out: read(f"{out}/metrics.json")["dev_acc"]
    systems = {"toolkit: main.py run configs/fashion_mlp.toml": (toolkit, toolkit_acc),
               "textbook loop (batch 64): python -m toolkit.peers textbook": (peer("textbook"), peer_acc),
               "sklearn MLPClassifier (batch 200): python -m toolkit.peers sklearn": (peer("sklearn"), peer_acc)}
    runs = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, (name, (command, accuracy)) in enumerate(systems.items()):
                out = f"{tmp}/{i}-{r}"
                runs[name].append((whole_run(command(out)), accuracy(out)))
    rows.extend(repeated_row("fashion_whole", name, epochs, results) for name, results in runs.items())


def bench_sentiment(data_dir, rows, sets):
    config = load_config(ROOT / "configs" / "sentiment_mlp.toml", ["epochs=1", "name='bench_sentiment'", *sets])
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        from toolkit import features
        saved, features.CACHE_DIR = features.CACHE_DIR, Path(cache)
        try:
            for label in ("cold", "cached"):
                forget()  # as a new process: only the disk cache (or none) to start from
                metrics = run(config, data_dir, out, folder="overwrite")  # the cached run replaces the cold one
                rows.append(row("sentiment_features", label, None, metrics["features"]["seconds"], None, None))
        finally:
            features.CACHE_DIR = saved
    h = metrics["history"][0]
    rows.append(row("sentiment_mlp", "toolkit", 1, h["seconds"], len(load_task(config, data_dir, torch.device("cpu"))
                                                                      ["train"][1]), h["dev_acc"]))


def make_step(config, data):
    """step(i): the loop's training step (train.train_step, augmentation included where configured) on batch
    i, on a fresh model set up as a run sets it up (whitening stem included); for timing steps without
    epochs, evaluation or files around them."""
    x, y = data["train"]
    torch.manual_seed(0)
    model = place(build_model(config, data["meta"]), config, torch.device("cpu")).train()
    init_from_data(model, config, data)
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # loss scaling is for fp16 on GPUs only
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    augment = make_augment(config, len(y)) or (lambda xb, gen, idx, epoch: xb)
    gen = torch.Generator().manual_seed(0)
    bs = config["batch_size"]

    def step(i):
        idx = torch.arange(i * bs, (i + 1) * bs) % len(y)
        train_step(model, optimizer, scaler, criterion, augment(take(x, idx), gen, idx, 1), y[idx], config["amp"])
    return step


def step_flops(step):
    """(all, matmul-only) FLOPs of one step, forward and backward, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        step(0)
    counts = counter.get_flop_counts()["Global"]
    return counter.get_total_flops(), sum(v for op, v in counts.items() if str(op).split(".")[1] in ("mm", "addmm"))


@contextlib.contextmanager
def quiet_stderr():
    """The profiler in CUDA builds of torch writes start/stop lines, and on machines without a GPU a
    'gpuGetDeviceCount failed' error, to the C-level stderr: noise in a CPU benchmark, so hidden here."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_matmuls(config, data, steps=20):
    """Where a toolkit step's time goes: the share spent in matrix multiplies (torch.profiler, self time of
    aten::mm/addmm) and the GFLOP/s those reach. A share near 1 at the matmul ceiling means compute-bound."""
    step = make_step(config, data)
    _, mm_flops = step_flops(step)
    step(1)
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}  # microseconds
    mm = times.get("aten::mm", 0) + times.get("aten::addmm", 0)
    return {"matmul_share": mm / sum(times.values()), "matmul_gflops": mm_flops * steps / (mm / 1e6) / 1e9}


# The variables that make this CPU act as an older one. The first two (say AVX2) limit oneDNN (convolutions) and
# ATen's own kernels, but not MKL, which does torch's fp32 matrix multiplies: without MKL_ENABLE_INSTRUCTIONS too,
# those still use the full CPU. OPENBLAS_CORETYPE does the same for numpy's OpenBLAS (scikit-learn's matmuls).
CPU_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE")


def cpu_limits(env):
    """The CPU-limiting variables set in env, and a warning when oneDNN or ATen is limited but MKL is not:
    then the matmul ceiling and the MLP rows are the full CPU's, not those of the CPU being imitated."""
    limits = {k: env[k] for k in CPU_LIMITS if env.get(k)}
    partial = ("ONEDNN_MAX_CPU_ISA" in limits or "ATEN_CPU_CAPABILITY" in limits) and \
        "MKL_ENABLE_INSTRUCTIONS" not in limits
    warning = ("MKL_ENABLE_INSTRUCTIONS is not set: torch's fp32 matrix multiplies (MKL) still use every instruction "
               "this CPU has, so the matmul ceiling and the MLP rows are not the limited CPU's") if partial else None
    return limits, warning


def native_bf16():
    """Whether this CPU runs bf16 natively (avx512_bf16 or AMX): elsewhere it is emulated, many times slower
    than fp32, and the bench leaves it out (timing it would take far too long)."""
    return amp_dtype(torch.device("cpu"), True) is not None


def bench_cnn(data_dir, steps, rows, ceiling, sets):
    """Training images/s and GFLOP/s of the config's CNN, in fp32 (and bf16 where native), each against the
    fp32 matmul ceiling ceiling() measures just before it, not the one from the bench's start: a shared
    computer's speed moves within minutes."""
    # Keep freed memory, as main.py does for a CIFAR-10 run: steps are faster with it, even beside the huge pages
    # the sentiment row turned on (system.set_allocator), which stay on. Last in the bench: it lasts for the process.
    keep_freed_memory()
    config = load_config(ROOT / "configs" / "cifar10_cnn.toml", sets)
    data = load_task(config, data_dir, torch.device("cpu"))
    for amp in (False, True) if native_bf16() else (False,):
        trained = as_trained({**config, "amp": amp}, None, torch.device("cpu"))  # the net a run trains: bf16, amp_widths
        step = make_step(trained, data)
        flops = step_flops(step)[0]  # the dtype does not change the count
        matmul = ceiling()
        step(1)
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        seconds = time.perf_counter() - start
        precision = "bf16 autocast" if amp_dtype(torch.device("cpu"), amp) == torch.bfloat16 else "fp32"
        r = row("cifar10_cnn", f"toolkit, {precision}, widths {trained['widths']}", None, seconds,
                steps * config["batch_size"], None)
        r["achieved_gflops"] = flops * steps / seconds / 1e9
        r["fp32_matmul_gflops"], r["fraction_of_fp32_matmul"] = matmul, r["achieved_gflops"] / matmul
        rows.append(r)


def row(task, system, epochs, seconds, samples, accuracy):
    return {"task": task, "system": system, "epochs": epochs, "seconds": seconds,
            "samples_per_s": samples / seconds if samples else None, "accuracy": accuracy}


def repeated_row(task, system, epochs, results, samples=None):
    """A row of repeated runs [(seconds, accuracy), ...]: median seconds, mean accuracy, and every run's."""
    seconds, accs = sorted(s for s, _ in results)[len(results) // 2], [a for _, a in results]
    return {**row(task, system, epochs, seconds, samples, sum(accs) / len(accs)),
            "seconds_runs": [s for s, _ in results], "accuracy_runs": accs}


def speedups(rows):
    """Each toolkit row against the textbook loop and scikit-learn, at equal or better mean accuracy: in one
    process (samples/s; targets 3x and 2x) and as whole processes (seconds; targets 2.5x and 2x)."""
    found = []
    for task, toolkit, targets in (("fashion_mlp", "toolkit (", (3.0, 2.0)), ("fashion_whole", "toolkit:", (2.5, 2.0))):
        mine = [r for r in rows if r["task"] == task]
        baselines = [(r, targets[0]) for r in mine if r["system"].startswith("textbook")] + \
                    [(r, targets[1]) for r in mine if r["system"].startswith("sklearn")]
        found += [{"task": task, "toolkit": t["system"], "baseline": b["system"], "speedup": b["seconds"] / t["seconds"]
                   if task == "fashion_whole" else t["samples_per_s"] / b["samples_per_s"],
                   "accuracy_delta": t["accuracy"] - b["accuracy"], "target_speedup": target}
                  for t in mine if t["system"].startswith(toolkit) for b, target in baselines]
    return [{**c, "met": c["speedup"] >= c["target_speedup"] and c["accuracy_delta"] >= 0} for c in found]


def markdown(result):
    fmt = lambda v, f: "" if v is None else format(v, f)
    bf16 = result["matmul_bf16_gflops"]
    bf16 = "skipped (no native bf16 on this CPU)" if bf16 is None else f"{bf16:.0f} GFLOP/s"
    limits, warning = cpu_limits(result.get("cpu_limits", {}))
    limited = ", ".join(f"{k}={v}" for k, v in limits.items()) or "none"
    sizes = result.get("matmul_sizes", [2048, 3072, 4096])  # a bench.json from before it was recorded
    sizes = f"best of {', '.join(map(str, sizes[:-1]))} and {sizes[-1]}" if len(sizes) > 1 else f"{sizes[0]}"
    lines = [f"fp32 matmul: {result['matmul_gflops']:.0f} GFLOP/s; bf16 matmul: {bf16} "
             f"({sizes} square, warm)", "", f"CPU limited by: {limited}",
             *([f"Warning: {warning}"] if warning else []), "",
             "| task | system | epochs | seconds | samples/s | accuracy (dev) | GFLOP/s |", "|---" * 7 + "|"]
    for r in result["rows"]:
        gflops = "" if "achieved_gflops" not in r else \
            f"{r['achieved_gflops']:.0f} ({r['fraction_of_fp32_matmul']:.0%} of fp32 matmul, " \
            f"{r['fp32_matmul_gflops']:.0f} just before)"
        acc = fmt(r["accuracy"], ".4f")
        if len(r.get("accuracy_runs", [])) > 1:
            acc += f" ({min(r['accuracy_runs']):.4f}-{max(r['accuracy_runs']):.4f})"
        lines.append(f"| {r['task']} | {r['system']} | {fmt(r['epochs'], 'd')} | {r['seconds']:.1f} | "
                     f"{fmt(r['samples_per_s'], ',.0f')} | {acc} | {gflops} |")
    seeds = next((len(r["seeds"]) for r in result["rows"] if "seeds" in r), 1)
    rounds = next((len(r["seconds_runs"]) for r in result["rows"] if r["task"] == "fashion_whole"), 0)
    lines += ["", f"Fashion-MNIST MLP over {seeds} seed(s): median seconds, mean accuracy (min-max). Whole processes "
              f"(fashion_whole): {rounds} round(s) of the three in turn, median seconds."]
    for c in result["speedups"]:
        what = "as fast start to finish" if c["task"] == "fashion_whole" else "the samples/s"
        lines.append(f"- {c['toolkit']} vs {c['baseline']}: {c['speedup']:.2f}x {what}, accuracy "
                     f"{100 * c['accuracy_delta']:+.2f} points; target {c['target_speedup']:g}x at equal or "
                     f"better accuracy: {'met' if c['met'] else 'missed'}")
    for precision, p in result["fashion_profile"].items():
        ceiling = result["matmul_gflops" if precision == "fp32" else "matmul_bf16_gflops"]
        lines.append(f"- toolkit MLP step, {precision} (torch.profiler): matrix multiplies take "
                     f"{p['matmul_share']:.0%} of the time and run at {p['matmul_gflops']:.0f} GFLOP/s, "
                     f"{p['matmul_gflops'] / ceiling:.0%} of the {precision} matmul ceiling")
    return "\n".join(lines) + "\n"


def bench(data_dir=None, out="runs", quick=False):
    sets = ["device='cpu'"] + (["dev_size=50", "min_df=1"] if quick else [])  # quick: tiny data sets
    sizes, seconds = ((256,), 0.2) if quick else ((2048, 3072, 4096), 2.0)
    limits, warning = cpu_limits(os.environ)
    if warning:
        print(f"bench: {warning}", file=sys.stderr)
    result = {"cpu_limits": limits, "matmul_sizes": list(sizes),
              "matmul_gflops": matmul_gflops(torch.float32, sizes, seconds),
              "matmul_bf16_gflops": matmul_gflops(torch.bfloat16, sizes, seconds) if native_bf16() else None,
              "rows": []}
    result["fashion_profile"] = bench_fashion(data_dir, 1 if quick else 5, SEEDS[:1] if quick else SEEDS,
                                              result["rows"], sets)
    bench_fashion_whole(data_dir, 1 if quick else 10, result["rows"], sets, 1 if quick else 3)
    result["speedups"] = speedups(result["rows"])
    bench_sentiment(data_dir, result["rows"], sets)
    bench_cnn(data_dir, 2 if quick else 20, result["rows"], lambda: matmul_gflops(torch.float32, sizes, seconds), sets)
    out = Path(out)
    write_json(out / "bench.json", result)
    write_text(out / "bench.md", markdown(result))
    print(markdown(result))
    print(f"bench.json and bench.md in {out}/")
    return result
