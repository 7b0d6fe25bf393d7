import json

from main import main


def test_quick_bench_writes_json_and_markdown_with_every_system(imdb_dir, fashion_dir, cifar_dir, tmp_path):
    assert imdb_dir == fashion_dir == cifar_dir  # one folder holding all three generated data sets
    assert main(["bench", "--quick", "--data-dir", str(imdb_dir), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["matmul_gflops"] > 0
    systems = [(r["task"], r["system"].split(" (")[0].split(",")[0]) for r in result["rows"]]
    assert ("fashion_mlp", "toolkit") in systems and ("fashion_mlp", "textbook loop") in systems
    assert ("fashion_mlp", "sklearn MLPClassifier") in systems
    assert ("sentiment_features", "cold") in systems and ("sentiment_features", "cached") in systems
    cnn = [r for r in result["rows"] if r["task"] == "cifar10_cnn"]
    assert cnn and all(r["achieved_gflops"] > 0 and r["samples_per_s"] > 0 for r in cnn)
    assert "| task | system |" in (tmp_path / "bench.md").read_text()
