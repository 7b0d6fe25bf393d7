"""Per-rank batch norm vs batch norm over the global batch, on the CIFAR-10 CNN of configs/cifar10_cnn.toml.

Two ranks with per-rank BN compute each half-batch's gradient with that half's statistics and DDP averages
them; one process (or SyncBatchNorm) uses the statistics of the whole batch. Same init, same batches,
fp32, no augmentation: train both ways for STEPS steps of batch 512 and compare the losses."""
import copy
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from toolkit.data import ROOT
from toolkit.config import load_config
from toolkit.models import build_model, init_from_data
from toolkit.tensors import load_task
torch.manual_seed(0)
# usage: python -m tools.bn_effect STEPS DATA_DIR
config = load_config(ROOT / "configs" / "cifar10_cnn.toml", ["device='cpu'"])
data = load_task(config, sys.argv[2] if len(sys.argv) > 2 else None, torch.device("cpu"))
x, y = data["train"]
STEPS, B = int(sys.argv[1]) if len(sys.argv) > 1 else 30, config["batch_size"]
net = build_model(config, data["meta"])
init_from_data(net, config, data)  # the whitening stem, set from the training images as a run sets it
net = net.to(memory_format=torch.channels_last)
a, b = net, copy.deepcopy(net)
oa, ob = (torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True) for m in (a, b))
perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
la, lb, t0 = [], [], time.perf_counter()
for s in range(STEPS):
    idx = perm[torch.arange(s * B, (s + 1) * B) % len(perm)]  # past the last image: round again
    xb, yb = x[idx], y[idx]
    oa.zero_grad(); loss = F.cross_entropy(a(xb), yb); loss.backward(); oa.step(); la.append(loss.item())
    ob.zero_grad(); tot = 0.0
    for h in idx.tensor_split(2):  # two ranks, each normalizing its own 256 images
        l = F.cross_entropy(b(x[h]), y[h]) / 2; l.backward(); tot += l.item()
    ob.step(); lb.append(tot)
print(f"config batch {B}, widths {config['widths']}, {STEPS} steps, {time.perf_counter() - t0:.0f}s")
for s in (0, 4, 9, 19, 29, 49, 99):
    if s < STEPS:
        print(f"step {s + 1}: global-batch BN loss {la[s]:.4f}  per-rank BN (2 x {B // 2}) loss {lb[s]:.4f}")
print(f"mean loss over the last 10 steps: {np.mean(la[-10:]):.4f} vs {np.mean(lb[-10:]):.4f}")
a.eval(); b.eval()
with torch.no_grad():
    xd, yd = data["dev"]
    acc = lambda m: sum((m(xd[i:i + 1000]).argmax(1) == yd[i:i + 1000]).sum().item()
                        for i in range(0, len(yd), 1000)) / len(yd)
    print(f"dev accuracy after {STEPS} steps: global BN {acc(a):.4f}, per-rank BN {acc(b):.4f}")
