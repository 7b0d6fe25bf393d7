"""Augmentation of whole batches on the device (as in airbench): no per-image Python, no PIL."""
import torch
import torch.nn.functional as F


def batch_augment(x, gen, translate=2, flip=0.5, size=None, mirrored=None, pad="zeros"):
    """Random horizontal flip (each image with probability `flip`, or those `mirrored` marks when given)
    and random translation by up to `translate` pixels of a [N, C, H, W] batch of square images.

    The translation crops a padded copy: pad "zeros" (the mean pixel after normalization) or "reflect" (the
    image mirrored at its edges, as airbench pads). size: the side of that crop, default the image's
    (tools/resize_epochs.py trains on smaller ones). `gen` (a torch.Generator on x's device) makes it
    reproducible."""
    n, c, h, w = x.shape
    size = size or h
    if mirrored is None:
        mirrored = torch.rand(n, device=x.device, generator=gen) < flip
    x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    if translate == 0 and size == h:
        return x
    padded = F.pad(x, (translate,) * 4, mode="constant" if pad == "zeros" else "reflect")
    dy, dx = torch.randint(0, h + 2 * translate - size + 1, (2, n, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(size, device=x.device))[:, None, :, None]  # [N, 1, size, 1]
    cols = (dx + torch.arange(size, device=x.device))[:, None, None, :]  # [N, 1, 1, size]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols].contiguous(memory_format=torch.channels_last)


def alternating_flips(n, seed):
    """airbench's alternating flip: mirrored(idx, epoch) marks a fixed random half of the n training images
    in odd epochs and the other half in even ones, so every image is seen both ways in each two epochs.
    airbench's reason: random flips show a quarter of the images unmirrored in both epochs of a pair, and a
    quarter mirrored in both, so alternation is more distinct images for the same steps. On the toolkit's
    CIFAR-10 config it scored worse than random flips (hw3.md), so it is off by default. idx and epoch alone
    decide it, so a resumed run or another rank marks the same images."""
    base = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5

    def mirrored(idx, epoch):
        nonlocal base
        base = base.to(idx.device)  # once, on the first batch: the data's device
        return base[idx] ^ (epoch % 2 == 0)
    return mirrored
