"""Data-parallel runs under torchrun: the few places where ranks differ from one process.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and where to meet); with one process, or without torchrun,
every function here is a no-op and the loop runs as one plain process. As in torchvision's
references/classification/utils.py, the loop calls these at a few marked points: `setup` once, `wrap` on
the model, `shard` on every batch of indices, `sum_all`/`max_all`/`cat_all`/`gather` on the numbers the
ranks must agree on, and `is_main` before writing a file (only rank 0 writes).
"""
import datetime
import os
import re
import signal
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# A collective waiting longer than this for another rank fails instead of hanging. A rank killed outright
# is noticed at once (its sockets close, and torchrun stops the others); the timeout is for a rank that
# hangs. Everything a rank does alone between two collectives (rank 0 writing last.pt and model.pt, over a
# gigabyte for the sentiment model) must take less.
TIMEOUT = datetime.timedelta(seconds=60)
_device = torch.device("cpu")  # where the small tensors of max_all live (NCCL needs them on the GPU)


def setup(device):
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when there is more than one process."""
    global _device
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # every config is checked by now (main.py ignored it till here)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        _device = device
    # torch.distributed.nn.functional takes group.WORLD as the default of ten arguments when first imported
    # (DDP imports it, through torch._dynamo): imported after the group exists, it would hold the group to
    # the interpreter's exit (see teardown). Imported before, those defaults are None.
    from torch.distributed.nn import functional  # noqa: F401  (a from-import: `torch` stays the module's)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


def teardown():
    """Free the process group while the interpreter is whole (setup's early import lets it go). A gloo group
    left to the interpreter's exit is destroyed during finalization, where its worker threads, still releasing
    a finished collective's tensors, cannot take the GIL: "terminate called without an active exception" and
    SIGABRT on one rank, now and then (pytorch/pytorch#190489)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def say(text, err=False):
    """Print on rank 0 only (one process: always)."""
    if is_main():
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank():
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main():
    return rank() == 0


def backend():
    return dist.get_backend() if dist.is_initialized() else None


def wrap(model, device):
    """The model the training steps run: DDP averages gradients over ranks during backward. On CUDA its
    batch norms become SyncBatchNorm (statistics over the global batch, as one process has them); PyTorch
    has no SyncBatchNorm on the CPU, so there each rank normalizes its own slice (see README, Scaling out)."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # reuses the same parameters and buffers
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def same_buffers(model):
    """Rank 0's buffers (batch norm's running statistics) on every rank, before an evaluation. Each CPU rank
    updates them from its own slice and DDP sends rank 0's again only at the next training forward, so ranks
    would score their shares of dev and test with statistics that model.pt, rank 0's, does not hold."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def shard(idx):
    """This rank's contiguous part of a global batch of indices; sizes differ by at most one."""
    return idx if world_size() == 1 else idx.tensor_split(world_size())[rank()]


def sum_all(t):
    """t summed over ranks, in place."""
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def max_all(values):
    """The element-wise maximum of a few numbers over ranks: one small all_reduce."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (any picklable object)."""
    if world_size() == 1:
        return [obj]
    objs = [None] * world_size()
    dist.all_gather_object(objs, obj)
    return objs


def cat_all(t):
    """Every rank's CPU tensor concatenated in rank order (shards of `shard` come back in their order)."""
    return torch.cat(gather(t)) if world_size() > 1 else t


def comm_device():
    """Where tensors for a collective live: the rank's GPU under NCCL, else the CPU."""
    return _device


def barrier():
    if world_size() > 1:
        dist.barrier()


def short_reason(error):
    """'Connection reset by peer' out of gloo's '[.../pair.cc:545] Read error [127.0.0.1]:5867: Connection ...'."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"^\[[^]]*\]\s*", "", first).split(". ")[0].split(": ")[-1][:120]


def exiting():
    """This rank is ending with its own exit code (2 for a bad config, 130/143 after a stop, 1 after losing
    a peer). torchrun sends SIGTERM to the ranks still running once one has exited; ignoring it here keeps
    their codes (and last lines) from being replaced by 'killed by SIGTERM' while they finish."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def lost_peer(error):
    """Whether an exception says another rank died or stopped answering (gloo/NCCL/store errors)."""
    text = str(error).lower()
    return world_size() > 1 and (isinstance(error, dist.DistError)
                                 or any(s in text for s in ("gloo", "nccl", "connection", "timed out", "timeout")))
