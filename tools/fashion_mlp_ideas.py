"""Ideas for the Fashion-MNIST MLP, each measured in one plain loop (hw3.md, Part 3): random erasing, mixup, 1-pixel
shifts of a share of the images, weight averaging (SWA), dropout on the pixels, pseudo-labelled test images,
batch norm, width, depth and length. Same split, normalisation and recipe as configs/fashion_mlp.toml before its
weight decay rose to 0.2 (AdamW 2e-3 with weight decay 1e-4, cosine to 0 per step, batches of 512, label
smoothing 0.1, dropout 0.3, random mirror images, bf16 autocast; dev predicted from the probabilities of each
image and its mirror averaged, where the toolkit averages their logits); it prints dev every EVAL_EVERY epochs
and the last epoch's. Only batch norm won, and it is in the toolkit (config batch_norm); the rest are not.

    python -m tools.fashion_mlp_ideas --data-dir DIR [--bn] [--erase P] [--mixup ALPHA] [--translate 1 --shifted P]
        [--swa FRACTION] [--input-dropout P] [--pseudo EPOCH [--pseudo-confidence 0.9]] [--hidden 1024,1024]
        [--epochs 60] [--lr 2e-3] [--dropout 0.3] [--seed 0]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from mlp import Dropout, SentimentClassifier
from toolkit.augment import batch_augment
from toolkit.config import DEFAULTS
from toolkit.tensors import load_task

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data-dir", default=None)
p.add_argument("--epochs", type=int, default=60)
p.add_argument("--hidden", default="1024,1024", help="hidden sizes, comma-separated")
p.add_argument("--dropout", type=float, default=0.3)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--bn", action="store_true", help="a batch norm before each hidden ReLU")
p.add_argument("--input-dropout", type=float, default=0.0, help="dropout on the pixels")
p.add_argument("--erase", type=float, default=0.0, help="share of images with one random rectangle erased")
p.add_argument("--mixup", type=float, default=0.0, help="mixup's Beta(alpha, alpha); 0 = off")
p.add_argument("--mixed", type=float, default=1.0, help="with mixup: share of the batches mixed")
p.add_argument("--translate", type=int, default=0, help="pixels of random shift")
p.add_argument("--shifted", type=float, default=1.0, help="share of the images shifted")
p.add_argument("--swa", type=float, default=0.0, help="also score the average of the last FRACTION of epochs")
p.add_argument("--pseudo", type=int, default=0,
               help="from this epoch on, also train on the test images the model then labels with confidence")
p.add_argument("--pseudo-confidence", type=float, default=0.9, help="the least probability a pseudo-label needs")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--eval-every", type=int, default=10)
a = p.parse_args()
BATCH, WEIGHT_DECAY, SMOOTHING = 512, 1e-4, 0.1  # the config's

torch.manual_seed(a.seed)
d = load_task({**DEFAULTS, "task": "fashion", "amp": True}, a.data_dir, torch.device("cpu"))  # bf16 images
(xtr, ytr), (xdv, ydv) = d["train"], d["dev"]
model = SentimentClassifier(784, 10, [int(h) for h in a.hidden.split(",")], "ReLU", a.dropout, batch_norm=a.bn)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=WEIGHT_DECAY)
n = len(ytr)
steps = math.ceil(n / BATCH)
progress = [0.0]  # the share of the run done: the cosine follows it however many steps an epoch has
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(progress[0], 1))))
gen = torch.Generator().manual_seed(a.seed)
swa = torch.optim.swa_utils.AveragedModel(model) if a.swa else None
pixel_dropout = Dropout(a.input_dropout)
swa_from = a.epochs - int(round(a.swa * a.epochs)) + 1


def erase(x):
    """Random erasing (Zhong et al. 2017) of whole batches: in a.erase of the images one rectangle of 2-20% of
    the area, aspect ratio 0.3-3.3, set to 0 (the mean pixel)."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen) < a.erase
    area = torch.empty(n).uniform_(0.02, 0.2, generator=gen) * 784
    log_ratio = torch.empty(n).uniform_(math.log(0.3), math.log(3.3), generator=gen)
    h = (area * log_ratio.exp()).sqrt().round().clamp(1, 28)
    w = (area / log_ratio.exp()).sqrt().round().clamp(1, 28)
    y0, x0 = (torch.rand(n, generator=gen) * (29 - h)).floor(), (torch.rand(n, generator=gen) * (29 - w)).floor()
    r = torch.arange(28.)
    inside = lambda start, size: (r >= start[:, None]) & (r < (start + size)[:, None])  # [N, 28]
    mask = inside(y0, h)[:, :, None] & inside(x0, w)[:, None, :] & chosen[:, None, None]
    return x.masked_fill(mask[:, None], 0)


@torch.no_grad()
def probabilities(m, x):
    m.eval()
    with torch.autocast("cpu", torch.bfloat16):
        return torch.cat([(m(xb).float().softmax(1) + m(xb.flip(-1)).float().softmax(1)) / 2 for xb in x.split(2000)])


def dev_accuracy(m):
    return (probabilities(m, xdv).argmax(1) == ydv).float().mean().item()


t0 = time.time()
for epoch in range(1, a.epochs + 1):
    if a.pseudo and epoch == a.pseudo:  # the test images the model is sure of join the training images
        p, guess = probabilities(model, d["test"][0]).max(1)
        sure = p >= a.pseudo_confidence
        xtr, ytr = torch.cat([d["train"][0], d["test"][0][sure]]), torch.cat([d["train"][1], guess[sure]])
        n, steps = len(ytr), math.ceil(len(ytr) / BATCH)
        print(f"epoch {epoch}: {int(sure.sum())} test images pseudo-labelled", flush=True)
    model.train()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed * 100003 + epoch))
    for i in range(steps):
        idx = perm[i * BATCH:(i + 1) * BATCH]
        xb, yb = xtr[idx], ytr[idx]
        if a.translate and a.shifted < 1:
            shifted = batch_augment(xb, gen, a.translate, 0.5)
            keep = torch.rand(len(idx), generator=gen) < a.shifted
            xb = torch.where(keep[:, None, None, None], shifted, batch_augment(xb, gen, 0, 0.5))
        else:
            xb = batch_augment(xb, gen, a.translate, 0.5)
        if a.erase:
            xb = erase(xb)
        xb = pixel_dropout(xb)
        target = F.one_hot(yb, 10).float() * (1 - SMOOTHING) + SMOOTHING / 10
        if a.mixup and torch.rand(1, generator=gen).item() < a.mixed:
            lam = float(torch.distributions.Beta(a.mixup, a.mixup).sample())
            j = torch.randperm(len(idx), generator=gen)
            xb, target = lam * xb + (1 - lam) * xb[j], lam * target + (1 - lam) * target[j]
        with torch.autocast("cpu", torch.bfloat16):
            logits = model(xb)
        loss = torch.sum(-target * F.log_softmax(logits.float(), 1), 1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress[0] = (epoch - 1 + (i + 1) / steps) / a.epochs
        sched.step()
    if swa is not None and epoch >= swa_from:
        swa.update_parameters(model)
    if epoch % a.eval_every == 0 or epoch == a.epochs:
        acc = dev_accuracy(model)
        print(f"epoch {epoch}: train loss {loss.item():.4f} | dev acc {acc:.4f} | {time.time() - t0:.0f}s", flush=True)
seconds = time.time() - t0
result = {"dev_acc": acc, "seconds": round(seconds, 1), "images_per_s": round(n * a.epochs / seconds)}
if swa is not None:
    with torch.autocast("cpu", torch.bfloat16):  # batch norm's statistics for the averaged weights
        torch.optim.swa_utils.update_bn([(xb,) for xb in xtr.split(BATCH)], swa)
    result["swa_dev_acc"] = dev_accuracy(swa)
print(json.dumps({**vars(a), **result}))
