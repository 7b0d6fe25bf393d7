"""Where the training step of an MLP config spends its time: milliseconds a step, the share and GFLOP/s of its
matrix multiplies (torch.profiler), beside the CPU's matmul ceiling in the same precision (the best of 2048 and
3072 squares), and the costliest operations. The step is the loop's own (train_step, augmentation included) on
the config's data, in bf16 autocast where the CPU has native bf16 and `amp = true`, else fp32.

    python -m tools.mlp_step configs/fashion_mlp.toml --data-dir DIR
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m tools.mlp_step configs/fashion_mlp.toml \
        --data-dir DIR --set amp=false
"""
import argparse
import time

import torch

from toolkit.bench import make_step, matmul_gflops, profile_matmuls, quiet_stderr
from toolkit.config import load_config
from toolkit.steps import amp_dtype
from toolkit.tensors import load_task


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    config = load_config(args.config, [*args.overrides, "device='cpu'"])
    data = load_task(config, args.data_dir, torch.device("cpu"))
    precision = amp_dtype(torch.device("cpu"), config["amp"]) or torch.float32
    step = make_step(config, data)
    for i in range(5):
        step(i)
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    ms = (time.perf_counter() - start) / args.steps * 1e3
    profile = profile_matmuls(config, data)
    ceiling = matmul_gflops(precision, (2048, 3072), 1.0)
    name = str(precision).removeprefix("torch.")
    print(f"{config['name']}, batch {config['batch_size']}, {name}: {ms:.2f} ms a step; matrix multiplies "
          f"{profile['matmul_share']:.0%} of it at {profile['matmul_gflops']:.0f} GFLOP/s, "
          f"{profile['matmul_gflops'] / ceiling:.0%} of the {name} ceiling ({ceiling:.0f} GFLOP/s)")
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(20):
            step(i)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
