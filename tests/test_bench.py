import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from main import main


def test_quick_bench_writes_json_and_markdown_with_every_system(imdb_dir, fashion_dir, cifar_dir, tmp_path):
    assert imdb_dir == fashion_dir == cifar_dir  # one folder holding all three generated data sets
    assert main(["bench", "--quick", "--data-dir", str(imdb_dir), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["matmul_gflops"] > 0
    systems = [(r["task"], r["system"].split(" (")[0].split(",")[0]) for r in result["rows"]]
    assert ("fashion_mlp", "toolkit") in systems and ("fashion_mlp", "textbook loop") in systems
    assert ("fashion_mlp", "sklearn MLPClassifier") in systems
    whole = {r["system"].split(":")[0]: r for r in result["rows"] if r["task"] == "fashion_whole"}
    assert set(whole) == {"toolkit", "textbook loop (batch 64)", "sklearn MLPClassifier (batch 200)"}
    assert all(r["seconds"] > 0 and 0 <= r["accuracy"] <= 1 for r in whole.values())
    assert {(c["task"], c["target_speedup"]) for c in result["speedups"]} == {
        ("fashion_mlp", 3.0), ("fashion_mlp", 2.0), ("fashion_whole", 2.5), ("fashion_whole", 2.0)}
    assert ("sentiment_features", "cold") in systems and ("sentiment_features", "cached") in systems
    cnn = [r for r in result["rows"] if r["task"] == "cifar10_cnn"]
    assert cnn and all(r["achieved_gflops"] > 0 and r["samples_per_s"] > 0 for r in cnn)
    assert all(r["fraction_of_fp32_matmul"] == r["achieved_gflops"] / r["fp32_matmul_gflops"] for r in cnn)
    assert {c["baseline"].split(" (")[0] for c in result["speedups"]} == {"textbook loop", "sklearn MLPClassifier"}
    assert 0 < result["fashion_profile"]["fp32"]["matmul_share"] <= 1
    assert result["fashion_profile"]["fp32"]["matmul_gflops"] > 0
    assert "| task | system |" in (tmp_path / "bench.md").read_text()
    assert "(256 square, warm)" in (tmp_path / "bench.md").read_text()  # the matrices --quick times


def test_speed_targets_need_both_the_speedup_and_equal_or_better_accuracy():
    from toolkit.bench import speedups

    def fashion(system, samples_per_s, accuracy):
        return {"task": "fashion_mlp", "system": system, "samples_per_s": samples_per_s, "accuracy": accuracy}
    rows = [fashion("toolkit (fast, less accurate)", 310, 0.889), fashion("toolkit (fast, as accurate)", 310, 0.890),
            fashion("toolkit with the textbook recipe", 1000, 0.95),  # not a recipe row: not compared
            fashion("textbook loop", 100, 0.890), fashion("sklearn MLPClassifier", 160, 0.880)]
    met = {(c["toolkit"], c["baseline"]): c["met"] for c in speedups(rows)}
    assert met == {("toolkit (fast, less accurate)", "textbook loop"): False,  # 3.1x but 0.1 point worse
                   ("toolkit (fast, less accurate)", "sklearn MLPClassifier"): False,  # more accurate, 1.9x
                   ("toolkit (fast, as accurate)", "textbook loop"): True,
                   ("toolkit (fast, as accurate)", "sklearn MLPClassifier"): False}


def test_whole_process_targets_compare_seconds_start_to_finish():
    from toolkit.bench import speedups

    def whole(system, seconds, accuracy):
        return {"task": "fashion_whole", "system": system, "seconds": seconds, "accuracy": accuracy}
    rows = [whole("toolkit: main.py run", 10.0, 0.89), whole("textbook loop: peers", 25.0, 0.889),
            whole("sklearn MLPClassifier: peers", 19.0, 0.88)]
    found = {c["baseline"]: (round(c["speedup"], 2), c["met"]) for c in speedups(rows)}
    assert found == {"textbook loop: peers": (2.5, True), "sklearn MLPClassifier: peers": (1.9, False)}


def test_whole_processes_run_in_turn_and_report_the_median_of_their_rounds(monkeypatch, tmp_path):
    from toolkit import bench
    order, seconds = [], {"toolkit": 10.0, "textbook": 30.0, "sklearn": 20.0}

    def timed(args):  # stands in for a subprocess: writes the run's metrics.json, returns its "seconds"
        system = "toolkit" if args[0] == "main.py" else args[2]  # -m toolkit.peers SYSTEM
        out = Path(args[args.index("--out") + 1])
        path = out / "fashion_mlp" / "metrics.json" if system == "toolkit" else out / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"history": [{"dev_acc": 0.9}]} if system == "toolkit" else {"dev_acc": 0.88}))
        order.append(system)
        slow = 3 if len(order) > 3 and len(order) <= 6 else 1  # the second round: a slow spell for all three
        return seconds[system] * slow
    monkeypatch.setattr(bench, "whole_run", timed)
    rows = []
    bench.bench_fashion_whole(tmp_path, 10, rows, [], rounds=3)
    assert order == ["toolkit", "textbook", "sklearn"] * 3
    assert [r["seconds"] for r in rows] == [10.0, 30.0, 20.0]  # the median leaves the slow round out
    assert rows[0]["seconds_runs"] == [10.0, 30.0, 10.0] and [r["accuracy"] for r in rows] == [0.9, 0.88, 0.88]


def test_whole_processes_start_without_the_huge_pages_the_bench_turned_on_for_itself(monkeypatch):
    from toolkit import bench
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")  # as system.set_allocator leaves it for the bench's own rows
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # what the user set passes on
    check = ("import os, sys; env = os.environ; "
             "sys.exit('THP_MEM_ALLOC_ENABLE' in env or env['ONEDNN_MAX_CPU_ISA'] != 'AVX2')")
    assert bench.whole_run(["-c", check]) > 0  # raises when the process fails


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the variables imitate an x86 CPU")
def test_quick_bench_on_a_cpu_without_native_bf16_skips_bf16_and_says_so(imdb_dir, fashion_dir, cifar_dir, tmp_path):
    from toolkit.bench import CPU_LIMITS
    limits = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    unlimited = {k: v for k, v in os.environ.items() if k not in CPU_LIMITS}  # this machine may set some already
    env = {**unlimited, **limits}  # an AVX2-only CPU
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "main.py", "bench", "--quick", "--data-dir", str(imdb_dir), "--out",
                           str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["matmul_bf16_gflops"] is None and set(result["fashion_profile"]) == {"fp32"}
    assert not [r for r in result["rows"] if "bf16" in r["system"]]
    md = (tmp_path / "bench.md").read_text()
    assert "bf16 matmul: skipped (no native bf16 on this CPU)" in md
    assert result["cpu_limits"] == limits and "Warning" not in md
    assert "CPU limited by: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2" in md


def test_the_bench_warns_when_the_avx2_emulation_leaves_mkl_unlimited():
    from toolkit.bench import cpu_limits
    avx2_only = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "PATH": "/bin"}
    limits, warning = cpu_limits(avx2_only)
    assert limits == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    assert warning.startswith("MKL_ENABLE_INSTRUCTIONS is not set")
    assert cpu_limits({**avx2_only, "MKL_ENABLE_INSTRUCTIONS": "AVX2"})[1] is None
    assert cpu_limits({"PATH": "/bin"}) == ({}, None)  # a CPU as it is


def write_idx(path, array):
    """An MNIST-style idx file, as torchvision's Fashion-MNIST download leaves them in DIR/FashionMNIST/raw."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype("uint8").tobytes())


def test_the_peers_read_torchvisions_download_as_the_toolkit_does(tmp_path):
    import numpy as np
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 30)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    done = subprocess.run([sys.executable, "-m", "toolkit.peers", "sklearn", "--data-dir", str(tmp_path / "data"),
                           "--out", str(tmp_path / "out"), "--epochs", "1", "--dev-size", "50"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out" / "submission.csv").read_text().split()) == 31


def test_a_whole_process_that_fails_is_one_line_naming_it(tmp_path):
    from toolkit import bench
    from toolkit.errors import UserError
    (tmp_path / "fails.py").write_text("import sys\nsys.exit('no train.npz here')\n")
    with pytest.raises(UserError, match=r"fails.py` failed \(exit 1\): no train.npz here"):
        bench.whole_run([str(tmp_path / "fails.py")])
