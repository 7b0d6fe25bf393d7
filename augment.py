"""Augmentation of whole batches on the device (as in airbench): no per-image Python, no PIL."""
import torch
import torch.nn.functional as F


def batch_augment(x, gen, translate=2, flip=0.5):
    """Random horizontal flip (each image with probability `flip`) and random translation by up to
    `translate` pixels of a [N, C, H, W] batch.

    The translation crops a zero-padded copy; zero is the mean pixel after normalization. `gen` (a
    torch.Generator on x's device) makes it reproducible."""
    n, c, h, w = x.shape
    mirrored = torch.rand(n, device=x.device, generator=gen) < flip
    x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    if translate == 0:
        return x
    padded = F.pad(x, (translate,) * 4)
    dy, dx = torch.randint(0, 2 * translate + 1, (2, n, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # [N, 1, H, 1]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols].contiguous(memory_format=torch.channels_last)
