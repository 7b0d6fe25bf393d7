"""Augmentation of whole batches on the device (as in airbench): no per-image Python, no PIL."""
import torch
import torch.nn.functional as F


def batch_augment(x, gen, translate=2, flip=0.5, size=None):
    """Random horizontal flip (each image with probability `flip`) and random translation by up to
    `translate` pixels of a [N, C, H, W] batch of square images.

    The translation crops a zero-padded copy; zero is the mean pixel after normalization. size: the side of
    that crop, default the image's (tools/resize_epochs.py trains on smaller ones). `gen` (a
    torch.Generator on x's device) makes it reproducible."""
    n, c, h, w = x.shape
    size = size or h
    mirrored = torch.rand(n, device=x.device, generator=gen) < flip
    x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    if translate == 0 and size == h:
        return x
    padded = F.pad(x, (translate,) * 4)
    dy, dx = torch.randint(0, h + 2 * translate - size + 1, (2, n, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(size, device=x.device))[:, None, :, None]  # [N, 1, size, 1]
    cols = (dx + torch.arange(size, device=x.device))[:, None, None, :]  # [N, 1, 1, size]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols].contiguous(memory_format=torch.channels_last)
