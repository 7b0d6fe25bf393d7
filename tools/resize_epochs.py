"""Progressive resizing, hw3.md's experiment: `main.py run` with the first EARLY epochs trained on smaller
images, the rest as usual. Not in the toolkit: at equal time it did not beat plain training (hw3.md, Part 3).

    python -m tools.resize_epochs {crop,resize} SIZE EARLY run configs/cifar10_cnn.toml [main.py's options]

crop: random SIZE x SIZE crops of the image padded by `translate` pixels (in place of the translation);
resize: the usual flip and translation, then a bilinear, antialiased downscale to SIZE x SIZE. Either way the
network (a global max pool at the end) is evaluated on whole 32 x 32 images.
"""
import runpy
import sys

import torch
import torch.nn.functional as F

from toolkit.data import ROOT
from toolkit import augment
from toolkit import run
from toolkit import train

mode, size, early = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
epoch = [1]
train_one_epoch = train.train_one_epoch


def noting_the_epoch(state, *args, **kwargs):
    epoch[0] = state.epoch
    return train_one_epoch(state, *args, **kwargs)


def small_early(x, gen, translate=2, flip=0.5, **kw):  # kw: mirrored, pad
    if epoch[0] > early:
        return augment.batch_augment(x, gen, translate, flip, **kw)
    if mode == "resize":
        x = augment.batch_augment(x, gen, translate, flip, **kw)
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).contiguous(
            memory_format=torch.channels_last)
    return augment.batch_augment(x, gen, translate, flip, size=size, **kw)  # crop


train.train_one_epoch, run.batch_augment = noting_the_epoch, small_early
sys.argv = [str(ROOT / "main.py")] + sys.argv[4:]
runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
