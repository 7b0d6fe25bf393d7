"""Training images/s of the CIFAR-10 CNN variants in hw3.md's throughput table: 8 of the loop's train_step calls
(batch 512, augmentation included) after 2 warm-up steps, on random images.

    python -m tools.cnn_speed [--amp]          # --amp: bf16 autocast where the CPU has native bf16
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python -m tools.cnn_speed  # AVX2 only
"""
import argparse
import time

import torch

from toolkit.data import ROOT
from toolkit.bench import make_step
from toolkit.config import load_config
from toolkit.steps import amp_dtype

# Each variant names its widths: make_step builds config["widths"] in either precision (a run would train
# amp_widths where autocast runs), so a variant without them would time whatever widths the config has.
VARIANTS = {"the config's fp32 net (whitening stem, [24, 32, 64, 256])": ["widths=[24, 32, 64, 256]"],
            "the same with a 3x3 stem of 24 channels": ["widths=[24, 32, 64, 256]", "whiten=false"],
            "narrow [24, 32, 64, 128] (hw3.md's ablation net)": ["widths=[24, 32, 64, 128]"],
            "wide [24, 64, 128, 256]": ["widths=[24, 64, 128, 256]"],
            "the wide net with a 3x3 stem of 24 channels": ["widths=[24, 64, 128, 256]", "whiten=false"],
            "airbench94's widths [24, 64, 256, 256] (the config's bf16 net)": ["widths=[24, 64, 256, 256]"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(2048, 3, 32, 32), torch.randint(0, 10, (2048,))
    for name, sets in VARIANTS.items():
        config = load_config(ROOT / "configs" / "cifar10_cnn.toml",
                             sets + [f"amp={args.amp}", "device='cpu'"])
        step = make_step(config, {"train": (x, y), "meta": {"input_dim": 3072}})  # what main.py bench times
        step(0), step(1)
        start = time.perf_counter()
        for i in range(8):
            step(i)
        precision = "bf16" if amp_dtype(torch.device("cpu"), args.amp) else "fp32"
        print(f"{precision} {name}: {512 * 8 / (time.perf_counter() - start):,.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
