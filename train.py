"""The one training loop shared by every model: fit, evaluate, predict, checkpoints, metrics.json.

Data arrive as tensors already on the device ({'train': (x, y), 'dev': (x, y), 'test': (x, y or None)});
a batch is a slice of a shuffled index, so there is no DataLoader and no per-sample collation. x may be a
dense tensor or a sparse CSR matrix (TF-IDF rows); `take` selects rows of either.
"""
import copy
import math
import platform
import random
import sys
import time

import numpy as np
import sklearn
import torch
import torchvision
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from checkpoint import Interrupted, config_hash, load_state, rng_states, save_best, save_state, set_rng_states, \
    stop_requests
from config import UserError
from files import write_json, write_submission
from plots import plot_confusion, plot_image_grid, plot_run
from progress import progress_bar


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device = '{name}' is not available on this machine (use 'auto' or 'cpu')")
    return torch.device(name)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS too


def take(x, idx):
    """Rows idx of a dense tensor or of a sparse CSR matrix, as the same kind of tensor."""
    if x.layout != torch.sparse_csr:
        return x[idx]
    crow, col, val = x.crow_indices(), x.col_indices(), x.values()
    starts, lengths = crow[idx], crow[idx + 1] - crow[idx]
    new_crow = torch.zeros(len(idx) + 1, dtype=crow.dtype, device=x.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    # position of every kept non-zero in the old arrays: its row's old start + its offset within the row
    src = torch.repeat_interleave(starts - new_crow[:-1], lengths) + torch.arange(int(new_crow[-1]), device=x.device)
    return torch.sparse_csr_tensor(new_crow, col[src], val[src], size=(len(idx), x.shape[1]), check_invariants=False)


def make_optimizer(model, config, device):
    name, lr, wd, mom = config["optimizer"], config["lr"], config["weight_decay"], config["momentum"]
    params = [p for p in model.parameters() if p.requires_grad]
    if name in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=0.0 if name == "sgd" else mom,
                               nesterov=name == "nesterov", weight_decay=wd)
    # fused Adam is one kernel over all parameters: ~7x faster than the for-each version on the 100M-weight
    # sparse layer here (0.055 s vs 0.38 s a step on 2 cores)
    fused = device.type in ("cpu", "cuda")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(mom, 0.999), weight_decay=wd, fused=fused)


def make_scheduler(optimizer, config, steps_per_epoch):
    """Learning-rate multiplier updated every step, so short runs get a smooth schedule."""
    total = config["epochs"] * steps_per_epoch
    name = config["scheduler"]
    if name == "onecycle":  # linear warmup then linear decay; momentum left as configured
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=total,
                                                   pct_start=config["warmup"], anneal_strategy="linear",
                                                   cycle_momentum=False, div_factor=10, final_div_factor=100)
    factor = {"constant": lambda s: 1.0,
              "exponential": lambda s: config["gamma"] ** (s / steps_per_epoch),
              "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))}[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(device, enabled):
    """Mixed-precision dtype, or None for fp32: bf16 on GPUs that have it (no grad scaler needed), else
    fp16; bf16 on CPUs with native bf16 (avx512_bf16/AMX), where oneDNN convs run ~2x faster than fp32
    (measured on this project's 2-core EPYC); fp32 on other CPUs, where bf16 is emulated and slow, and MPS."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device, enabled):
    dtype = amp_dtype(device, enabled)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def train_step(model, optimizer, scaler, criterion, xb, yb, amp):
    """One optimization step on a batch (the loop's, and what `main.py bench` times); returns (logits, loss)."""
    with autocast(xb.device, amp):
        logits = model(xb)
        loss = criterion(logits.float(), yb)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


@torch.inference_mode()
def evaluate(model, x, y, config, batch_size=2048):
    """(mean loss or None, accuracy or None, predicted classes) of model on x; eval mode, no autograd."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    device = x.device
    loss, correct, preds = 0.0, 0, []
    for i in range(0, x.shape[0], batch_size):
        xb = take(x, torch.arange(i, min(i + batch_size, x.shape[0]), device=device))
        with autocast(device, config["amp"]):
            logits = model(xb).float()
            if config["tta_flip"] and xb.dim() == 4:  # mirror images are as likely as the originals
                logits = (logits + model(xb.flip(-1)).float()) / 2
        preds.append(logits.argmax(1))
        if y is not None:
            yb = y[i:i + batch_size]
            loss += criterion(logits, yb).item()
            correct += (preds[-1] == yb).sum().item()
    preds = torch.cat(preds).cpu()
    if y is None:
        return None, None, preds
    return loss / len(y), correct / len(y), preds


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__}


def fit(model, data, config, out_dir, augment=None, extra=None, resume=False):
    """Train, keep the best-on-dev weights, test them, write OUT files; return the metrics dict.

    augment(xb, generator) -> xb runs on each training batch (whole-batch, on the device). resume=True
    continues from out_dir/last.pt. Ctrl-C or SIGTERM saves last.pt after the current step and raises
    Interrupted; a non-finite loss ends the run early with "diverged" in metrics.json."""
    start = time.perf_counter()
    device = data["train"][0].device
    seed_everything(config["seed"])
    gen = torch.Generator(device=device).manual_seed(config["seed"])  # batch order and augmentation
    (x, y), (x_dev, y_dev) = data["train"], data["dev"]
    n = x.shape[0]
    steps = math.ceil(n / config["batch_size"])
    optimizer = make_optimizer(model, config, device)
    scheduler = make_scheduler(optimizer, config, steps)
    precision = amp_dtype(device, config["amp"]) or torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)  # fp16 needs loss scaling
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config["ema"]), use_buffers=True) \
        if config["ema"] > 0 else None
    step_model = torch.compile(model) if config["compile"] else model
    eval_model = ema.module if ema is not None else model  # the averaged copy is what we evaluate and save
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.pt"
    history, best, diverged = [], {"dev_acc": -1.0, "epoch": None, "state": None, "preds": None}, None
    epoch, first_step, perm, sums = 1, 0, None, None
    if resume:
        state = load_state(last_path, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, epoch, first_step, perm, sums = (state[k] for k in ("history", "epoch", "step", "perm", "sums"))
        best.update(state["best"])
        if best["epoch"] is not None:  # the best weights live in model.pt, not twice on disk
            best["state"] = torch.load(out_dir / "model.pt", map_location=device, weights_only=True)["model"]
        set_rng_states(state["rng"], gen)
        print(f"resuming {config['name']} at epoch {epoch}, step {first_step}", flush=True)

    def full_state(epoch, step, perm, sums):
        return {"config": config, "epoch": epoch, "step": step, "perm": perm, "sums": sums, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": None if ema is None else ema.state_dict(), "rng": rng_states(gen),
                "best": {k: best[k] for k in ("dev_acc", "epoch", "preds")}}

    with stop_requests() as stop:
        while epoch <= config["epochs"] and diverged is None:
            t0 = time.perf_counter()
            model.train()
            if perm is None:
                perm = torch.randperm(n, device=device, generator=gen)
                sums = [torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)]
            bar = progress_bar(range(first_step, steps), f"{config['name']} {epoch}/{config['epochs']}")
            for i in bar:
                idx = perm[i * config["batch_size"]:(i + 1) * config["batch_size"]]
                xb, yb = take(x, idx), y[idx]
                if augment is not None:
                    xb = augment(xb, gen)
                logits, loss = train_step(step_model, optimizer, scaler, criterion, xb, yb, config["amp"])
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                sums[0] += loss.detach() * len(idx)  # summed on the device: no sync per step
                sums[1] += (logits.argmax(1) == yb).sum()
                if i % 20 == 19 or i == steps - 1:  # an occasional sync for the bar and the divergence check
                    if not math.isfinite(loss.item()):
                        diverged = {"epoch": epoch, "step": i + 1}
                        break
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if stop["signal"]:
                    save_state(last_path, full_state(epoch, i + 1, perm, sums))
                    raise Interrupted(stop["signal"], last_path)
            if diverged:
                print(f"{config['name']} diverged at epoch {epoch}, step {diverged['step']} (non-finite loss); "
                      f"lr {config['lr']} is probably too high", file=sys.stderr, flush=True)
                break
            dev_loss, dev_acc, dev_preds = evaluate(eval_model, x_dev, y_dev, config)
            history.append({"epoch": epoch, "train_loss": sums[0].item() / n, "train_acc": sums[1].item() / n,
                            "dev_loss": dev_loss, "dev_acc": dev_acc, "seconds": time.perf_counter() - t0,
                            "lr": optimizer.param_groups[0]["lr"]})
            h = history[-1]
            print(f"{config['name']} epoch {epoch}: train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f} | "
                  f"dev loss {dev_loss:.4f} acc {dev_acc:.4f} | {h['seconds']:.1f}s", flush=True)
            if dev_acc > best["dev_acc"]:
                best = {"dev_acc": dev_acc, "epoch": epoch, "state": copy.deepcopy(eval_model.state_dict()),
                        "preds": dev_preds}
                save_best(out_dir / "model.pt", best["state"], config, epoch, dev_acc, data["meta"])
            epoch, first_step, perm, sums = epoch + 1, 0, None, None
            save_state(last_path, full_state(epoch, 0, None, None))  # at least once an epoch
            if stop["signal"]:
                raise Interrupted(stop["signal"], last_path)
    test_acc = None
    if best["state"] is not None:
        eval_model.load_state_dict(best["state"])
        plot_dev_predictions(x_dev, y_dev, best["preds"], data["meta"], out_dir)
        x_test, y_test = data["test"]
        _, test_acc, preds = evaluate(eval_model, x_test, y_test, config)
        if y_test is None:
            write_submission(out_dir / "submission.csv", preds.tolist())
    metrics = {"name": config["name"], "config": config, "config_hash": config_hash(config), "seed": config["seed"],
               "versions": versions(), "device": str(device), "precision": str(precision).removeprefix("torch."),
               "params": sum(p.numel() for p in model.parameters()), "history": history,
               "best_epoch": best["epoch"], "best_dev_acc": best["dev_acc"] if best["epoch"] else None,
               "test_acc": test_acc, "diverged": diverged is not None, "diverged_at": diverged,
               "seconds": time.perf_counter() - start, **data["meta"], **(extra or {})}
    write_json(out_dir / "metrics.json", metrics)
    if history:
        plot_run(history, out_dir, config["name"])
    last_path.unlink(missing_ok=True)  # finished: nothing to resume (and it can be 1 GB for the sentiment MLP)
    return metrics


def plot_dev_predictions(x_dev, y_dev, preds, meta, out_dir):
    """Confusion matrix of the best model on dev, and for images a grid of the first 32 with mistakes marked."""
    y_dev = y_dev.cpu().numpy()
    plot_confusion(y_dev, preds.numpy(), meta["classes"], out_dir / "confusion.png")
    if x_dev.dim() == 4:
        mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
        images = (x_dev[:32].float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).squeeze(-1).numpy()
        plot_image_grid(images, y_dev[:32], preds[:32].numpy(), meta["classes"], out_dir / "predictions.png")
