"""What one training step needs and what it is scored with, for the loop (train.py), the time budget and
the bench: the device, mixed precision, the optimizer and its learning-rate schedule, batches taken by row,
one optimization step, and evaluation (with test-time augmentation for images).

x may be a dense tensor or a sparse CSR matrix (TF-IDF rows); `take` selects rows of either.
"""
import functools
import inspect
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit import ranks
from toolkit.errors import UserError
from toolkit.models import MODELS
from toolkit.muon import Muon


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device = '{name}' is not available on this machine (use 'auto' or 'cpu')")
    return torch.device(name, ranks.local_rank()) if name == "cuda" else torch.device(name)  # torchrun: a GPU a rank


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS too


def steps_per_epoch(n, config):
    """Training steps in an epoch of n rows: a last partial batch is one more, unless drop_last leaves it out."""
    size = config["batch_size"]
    return n // size if config["drop_last"] and n >= size else math.ceil(n / size)


def take(x, idx):
    """Rows idx of a dense tensor or of a sparse CSR matrix, as the same kind of tensor."""
    if x.layout != torch.sparse_csr:
        return x.index_select(0, idx)  # faster than x[idx] on the CPU
    crow, col, val = x.crow_indices(), x.col_indices(), x.values()
    starts, lengths = crow[idx], crow[idx + 1] - crow[idx]
    new_crow = torch.zeros(len(idx) + 1, dtype=crow.dtype, device=x.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    # position of every kept non-zero in the old arrays: its row's old start + its offset within the row
    src = torch.repeat_interleave(starts - new_crow[:-1], lengths) + torch.arange(int(new_crow[-1]), device=x.device)
    return torch.sparse_csr_tensor(new_crow, col[src], val[src], size=(len(idx), x.shape[1]), check_invariants=False)


def join_rows(a, b):
    """The rows of a then b, for dense tensors and sparse CSR matrices alike."""
    if a.layout != torch.sparse_csr:
        return torch.cat([a, b])
    crow = torch.cat([a.crow_indices(), b.crow_indices()[1:] + a.crow_indices()[-1]])
    return torch.sparse_csr_tensor(crow, torch.cat([a.col_indices(), b.col_indices()]),
                                   torch.cat([a.values(), b.values()]), size=(a.shape[0] + b.shape[0], a.shape[1]),
                                   check_invariants=False)


@functools.cache
def unguarded(cls):
    """The torch.optim class cls with its methods that torch.compile must not trace (step, zero_grad,
    add_param_group, state_dict, load_state_dict) called without their guards, the functions under them
    (inspect.unwrap); step under no_grad, as its guard runs it. Each guard imports torch._dynamo on its first
    call, seconds of a short run on a laptop CPU, and wraps every step. The loop compiles the model at most,
    never the optimizer step, so no guard is ever needed here; the updates are the same to the bit (tests)."""
    methods = {name: inspect.unwrap(getattr(cls, name))
               for name in ("zero_grad", "add_param_group", "state_dict", "load_state_dict")}
    methods["step"] = torch.no_grad()(inspect.unwrap(cls.step))
    return type(cls.__name__, (cls,), {**methods, "__doc__": cls.__doc__})


def make_optimizer(model, config, device):
    name, lr, wd, mom = config["optimizer"], config["lr"], config["weight_decay"], config["momentum"]
    params = [p for p in model.parameters() if p.requires_grad]
    if config["bias_lr"] != 1:  # batch norm's parameters in a group of their own (one group otherwise, as before)
        norms = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters()}
        params = [{"params": [p for p in params if id(p) not in norms]},
                  {"params": [p for p in params if id(p) in norms], "lr": lr * config["bias_lr"],
                   "weight_decay": wd / config["bias_lr"]}]
    if name == "muon":
        return unguarded(Muon)(Muon.make_groups(params, config["muon_lr"], config["muon_momentum"]), lr, mom, wd)
    if name in ("sgd", "momentum", "nesterov"):
        return unguarded(torch.optim.SGD)(params, lr=lr, momentum=0.0 if name == "sgd" else mom,
                                          nesterov=name == "nesterov", weight_decay=wd)
    # fused Adam is one kernel over all parameters: several times faster than the for-each version on the
    # sentiment MLP's 100M-weight sparse layer
    fused = device.type in ("cpu", "cuda")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return unguarded(cls)(params, lr=lr, betas=(mom, 0.999), weight_decay=wd, fused=fused)


def make_scheduler(optimizer, config, steps_per_epoch, total_steps):
    """Learning-rate multiplier updated every step, so short runs get a smooth schedule. total_steps() is the
    run's length in steps, read at every step: a time budget re-plans it between epochs (budget.replan), and
    the schedule stretches or shrinks from where it is. A run of no steps still builds one: a logreg's refit,
    which scikit-learn fits."""
    progress = lambda s: min(s / max(total_steps(), 1), 1.0)
    factor = {"constant": lambda s: 1.0,
              "exponential": lambda s: config["gamma"] ** (s / steps_per_epoch),
              "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * progress(s))),
              "onecycle": lambda s: one_cycle(progress(s), config["warmup"])}[config["scheduler"]]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def one_cycle(progress, warmup):
    """OneCycleLR's linear shape as a multiplier of each group's lr: from 1/10 up to 1 over the first `warmup`
    of the run, then down to 1/1000 (div_factor 10, final_div_factor 100); momentum left as configured.
    Written against progress rather than as OneCycleLR, whose length is fixed when it is made."""
    if progress < warmup or warmup >= 1:
        return 0.1 + 0.9 * progress / warmup
    return 0.001 + 0.999 * (1 - progress) / (1 - warmup)


def amp_dtype(device, enabled):
    """Mixed-precision dtype, or None for fp32: bf16 on GPUs that have it (no grad scaler needed), else
    fp16; bf16 on CPUs with native bf16 (avx512_bf16/AMX), where oneDNN convs run faster than fp32
    (docs/performance.md); fp32 on other CPUs, where bf16 is emulated and slow, and on MPS."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cuda_native_bf16(device) else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def cuda_native_bf16(device):
    """bf16 in the GPU's hardware: Ampere (compute capability 8.0) or later, or ROCm, as
    torch.cuda.is_bf16_supported(including_emulation=False) says for the current device. Its default also says
    yes on a Turing T4, Colab's free GPU, where bf16 is emulated: no tensor cores for it, and torch.compile
    skips bf16 graphs there (Triton has no bf16 below compute capability 8). Such a GPU trains in fp16 with a
    grad scaler."""
    return torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8


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


def tta_logits(model, xb, config):
    """Logits of an image batch, averaged over test-time augmentations as airbench does: the mirror image
    (as likely as the original), and with tta_shift copies shifted up-left and down-right, weighted half
    and half against the unshifted view."""
    views = lambda x: (model(x).float() + model(x.flip(-1)).float()) / 2 if config["tta_flip"] else model(x).float()
    logits, s = views(xb), config["tta_shift"]
    if not s:
        return logits
    up_left = F.pad(xb, (0, s, 0, s))[..., s:, s:]
    down_right = F.pad(xb, (s, 0, s, 0))[..., :-s, :-s]
    return logits / 2 + (views(up_left) + views(down_right)) / 4


@torch.inference_mode()
def evaluate(model, x, y, config, batch_size=2048, probabilities=False):
    """(mean loss or None, accuracy or None, predicted classes) of model on x; eval mode, no autograd. With
    probabilities=True a fourth element: the predicted probabilities [N, classes], float32 on the CPU.

    Under torchrun each rank evaluates its contiguous share of x and the sums and predictions are combined,
    so every rank gets the numbers one process would (the loss up to float rounding) in 1/N of the time."""
    model.eval()
    device = x.device
    rows = ranks.shard(torch.arange(x.shape[0], device=device))
    loss, correct, preds, probs = 0.0, 0, [torch.zeros(0, dtype=torch.long, device=device)], []
    for i in range(0, len(rows), batch_size):
        idx = rows[i:i + batch_size]
        xb = take(x, idx)
        if config["channels_last"] and MODELS[config["model"]].convolutional:  # the format it trains in
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, config["amp"]):
            logits = tta_logits(model, xb, config) if xb.dim() == 4 else model(xb).float()
        preds.append(logits.argmax(1))
        if probabilities:
            probs.append(logits.softmax(1).cpu())
        if y is not None:
            yb = y[idx]
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (preds[-1] == yb).sum().item()
    preds = ranks.cat_all(torch.cat(preds).cpu())
    extra = (ranks.cat_all(torch.cat(probs) if probs else torch.zeros(0)),) if probabilities else ()
    if y is None:
        return (None, None, preds, *extra)
    loss, correct = ranks.sum_all(torch.tensor([loss, correct], dtype=torch.float64, device=ranks.comm_device()))
    return (loss.item() / len(y), correct.item() / len(y), preds, *extra)
