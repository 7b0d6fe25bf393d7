"""The CIFAR-10 CNN: airbench-style conv groups (conv - pool - batch norm - GELU - conv - batch norm - GELU).

widths = [stem, group1, group2, ...]: a 3x3 stem at full resolution, then one group per further width, each
halving the resolution; a global max pool and one linear layer classify. [32, 64, 128, 256] costs about
0.17 GFLOP per 32x32 image forward.
"""
from torch import nn


def conv_bn(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]


class ConvGroup(nn.Sequential):
    """Pooling right after the first conv (as in airbench) runs the second conv at a quarter of the cost."""

    def __init__(self, c_in, c_out):
        conv1, norm1, act1 = conv_bn(c_in, c_out)
        super().__init__(conv1, nn.MaxPool2d(2), norm1, act1, *conv_bn(c_out, c_out))


class Net(nn.Sequential):
    def __init__(self, widths, num_classes=10):
        groups = [ConvGroup(a, b) for a, b in zip(widths[:-1], widths[1:])]
        super().__init__(*conv_bn(3, widths[0]), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(widths[-1], num_classes, bias=False))


def make_cnn(config, num_classes):
    return Net(config["widths"], num_classes)
