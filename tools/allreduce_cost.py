"""Cost of all_reduce under gloo between the ranks torchrun starts: a 2-float stop flag and the sentiment
first layer's dense gradient (200,000 x 512 fp32 = 410 MB), and a sparse gradient of the rows one batch touches.

usage: torchrun --standalone --nproc_per_node=2 tools/allreduce_cost.py [ROWS, default 30000]"""
import sys
import time

import torch
import torch.distributed as dist
dist.init_process_group("gloo")
r = dist.get_rank()
def timeit(fn, reps):
    dist.barrier(); fn(); dist.barrier()
    t = time.perf_counter()
    for _ in range(reps): fn()
    dist.barrier()
    return (time.perf_counter() - t) / reps
flag = torch.zeros(2)
f = timeit(lambda: dist.all_reduce(flag, op=dist.ReduceOp.MAX), 2000)
g = torch.randn(200_000, 512)
d = timeit(lambda: dist.all_reduce(g), 5)
rows = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
idx = torch.randperm(200_000)[:rows]
sp = torch.sparse_coo_tensor(idx[None], torch.randn(rows, 512), (200_000, 512), check_invariants=True).coalesce()
s = timeit(lambda: dist.all_reduce(sp), 5)
if r == 0:
    print(f"world {dist.get_world_size()}: flag all_reduce {f*1e6:.0f} us; dense 200000x512 fp32 all_reduce {d:.3f} s; "
          f"sparse {rows} rows x 512 all_reduce {s:.3f} s", flush=True)
dist.destroy_process_group()
