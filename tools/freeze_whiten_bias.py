"""airbench's frozen whitening bias, hw3.md's experiment: `main.py run` with the whitening stem's bias trained
for the first EPOCHS epochs and then fixed. Not in the toolkit: over three seeds its effect on dev accuracy
was within noise (hw3.md, Part 3), and under torchrun DDP expects a gradient for every parameter it was built
with (cnn.py trains the bias throughout for that reason).

    python -m tools.freeze_whiten_bias EPOCHS run configs/cifar10_cnn.toml [main.py's options]
"""
import runpy
import sys

from toolkit.data import ROOT
from toolkit import train

epochs = int(sys.argv[1])
train_one_epoch = train.train_one_epoch


def freezing(state, *args, **kwargs):
    bias = state.model[0].bias  # the whitening conv's (cnn.Net with whiten = true)
    bias.requires_grad_(state.epoch <= epochs)
    if state.epoch > epochs:
        bias.grad = None  # SGD skips a parameter without a gradient (lookahead still averages it, as in airbench)
    return train_one_epoch(state, *args, **kwargs)


train.train_one_epoch = freezing
sys.argv = [str(ROOT / "main.py")] + sys.argv[2:]
runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
