"""The CNN for images of any number of channels (CIFAR-10, 1-channel Fashion-MNIST, your own): airbench-style conv groups (conv - pool - batch norm -
GELU - conv - batch norm - GELU).

widths = [stem, group1, group2, ...]: a stem at full resolution, then one group per further width, each
halving the resolution; a global max pool and one linear layer classify. configs/cifar10_cnn.toml's
fp32 net is [24, 32, 64, 256] with the whitening stem (hw3.md lists each net's FLOPs and parameters).

The airbench options (KellerJordan/cifar10-airbench, airbench94.py), each a config key; hw3.md measures them:
- whiten: the stem is a 2x2 patch-whitening conv: fixed weights, the eigenvectors of the training images'
  2x2-patch covariance scaled to unit variance, each with its negative: 2 x 4 x channels outputs (24 for RGB,
  8 for grey), which replace widths[0]; and a trained bias (airbench freezes it after 3 epochs; here it trains throughout, which
  keeps every parameter in use for DDP). Decorrelated inputs from the first step, and faster than a 3x3
  stem of 24 channels with batch norm (hw3.md).
- bn_scale = false: batch norm scales fixed at 1, shifts trained. bn_momentum: torch's convention (weight of
  the new batch in the running statistics).
- dirac: each 3x3 conv starts as the identity on its first c_in output channels (the rest random).
- logit_scale: the logits are multiplied by it (airbench: 1/9), which tempers the early updates.
"""
import torch
import torch.nn.functional as F
from torch import nn

class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def conv_bn(c_in, c_out, bn_scale=True, bn_momentum=0.1, dirac=False):
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if dirac:
        nn.init.dirac_(conv.weight.data[:c_in])
    norm = nn.BatchNorm2d(c_out, momentum=bn_momentum)
    norm.weight.requires_grad_(bn_scale)
    return [conv, norm, nn.GELU()]


class GlobalMaxPool(nn.Module):
    """Each channel's largest value, [N, C, 1, 1], as nn.AdaptiveMaxPool2d(1) gives it (gradients too, ties
    included: both take the first maximum), by a max pool over the whole map, whose CUDA backward is
    deterministic (adaptive_max_pool2d's is not, so --deterministic would refuse it on a GPU). On the CPU it
    costs a little more; amax costs more and shares the gradient of tied values, which in bf16 are common."""

    def forward(self, x):
        return F.max_pool2d(x, x.shape[2:])


class ConvGroup(nn.Sequential):
    """Pooling right after the first conv (as in airbench) runs the second conv at a quarter of the cost."""

    def __init__(self, c_in, c_out, **options):
        conv1, norm1, act1 = conv_bn(c_in, c_out, **options)
        super().__init__(conv1, nn.MaxPool2d(2), norm1, act1, *conv_bn(c_out, c_out, **options))


class Net(nn.Sequential):
    def __init__(self, widths, num_classes=10, whiten=False, logit_scale=1.0, in_channels=3, **options):
        if whiten:
            widths = [whitened_width(in_channels), *widths[1:]]
            conv = nn.Conv2d(in_channels, widths[0], 2, padding=0, bias=True)  # 32 -> 31 pixels
            conv.weight.requires_grad_(False)  # set by init_whitening, then fixed
            stem = [conv, nn.GELU()]
        else:
            stem = conv_bn(in_channels, widths[0], **options)
        groups = [ConvGroup(a, b, **options) for a, b in zip(widths[:-1], widths[1:])]
        head = [GlobalMaxPool(), nn.Flatten(), nn.Linear(widths[-1], num_classes, bias=False)]
        super().__init__(*stem, *groups, *head, *([Scale(logit_scale)] if logit_scale != 1 else []))


def whitened_width(channels, patch=2):
    """The whitening stem's outputs: each eigenvector of the patch covariance and its negative."""
    return 2 * channels * patch * patch


@torch.no_grad()
def init_whitening(net, images, eps=5e-4):
    """Set the whitening stem of net from images [N, C, H, W] (airbench uses 5,000 training images)."""
    conv = net[0]
    c, h, w = conv.weight.shape[1:]
    patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    scaled = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, c, h, w)
    conv.weight.copy_(torch.cat([scaled, -scaled]))


def make_cnn(config, num_classes, in_channels):
    return Net(config["widths"], num_classes, config["whiten"], config["logit_scale"], in_channels,
               bn_scale=config["bn_scale"], bn_momentum=config["bn_momentum"], dirac=config["dirac"])
