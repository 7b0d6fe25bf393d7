"""What notebooks/colab.ipynb needs beside main.py's functions: smoke-mode settings, the machine's facts,
showing the PNGs the runs wrote, and handing a submission over. Every experiment itself goes through main.py,
the same functions the command line calls.
"""
import base64
import os
import sys
from pathlib import Path

# NOTEBOOK_SMOKE=1: every part on 400 training and 100 dev examples for one epoch, to check that the
# notebook runs top to bottom. Test sets stay whole, so each submission.csv has one row per test example;
# predicting CIFAR-10's test images with test-time flips would be much of a smoke run's time, hence no flips.
SMOKE_SETTINGS = {"epochs": 1, "max_train": 400, "dev_size": 100, "tta_flip": False}


def smoke():
    return os.environ.get("NOTEBOOK_SMOKE", "0") not in ("", "0")


def settings():
    """Keyword arguments for every main.* call: the smoke-mode shrink, or none for the real runs."""
    return dict(SMOKE_SETTINGS) if smoke() else {}


DRIVE = "/content/drive"
DRIVE_RESULTS = f"{DRIVE}/MyDrive/classifier-toolkit/runs"


def use_drive():
    """On Colab, mount Google Drive (Colab asks for the user's consent) and keep the results there, where a
    disconnect or a runtime reset cannot wipe them: RESULTS_DIR, unless already set, names that folder.
    Elsewhere nothing changes. Returns the results folder."""
    if in_colab():
        from google.colab import drive
        drive.mount(DRIVE)
        os.environ.setdefault("RESULTS_DIR", DRIVE_RESULTS)
    return results_dir()


def results_dir():
    """$RESULTS_DIR when set, else runs/ in the repository."""
    return os.environ.get("RESULTS_DIR") or "runs"


def out_dir():
    """The results folder; smoke runs get their own inside it: their configs differ, and a run folder holds one
    config. Running the notebook again continues every interrupted run there and skips every finished one."""
    return f"{results_dir()}/smoke" if smoke() else results_dir()


def in_colab():
    return "google.colab" in sys.modules


def device_report():
    """Print and return what decides speed and precision here: GPU (name, memory, bf16), CPU (cores,
    instruction set, native bf16), and the device and mixed-precision dtype runs will use."""
    import torch
    from toolkit.steps import amp_dtype, cuda_native_bf16, pick_device
    device = pick_device("auto")
    report = {"torch": torch.__version__, "device": str(device)}
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0)
        report.update(gpu=gpu.name, gpu_memory_gib=round(gpu.total_memory / 2**30, 1),
                      gpu_bf16=cuda_native_bf16(torch.device("cuda", 0)))
    else:
        report["gpu"] = "none"
    report.update(cpu_cores=os.cpu_count(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                  cpu_native_bf16=amp_dtype(torch.device("cpu"), True) == torch.bfloat16,
                  amp_dtype=str(amp_dtype(device, True) or torch.float32).removeprefix("torch."))
    for key, value in report.items():
        print(f"{key:>15}: {value}")
    return report


OWN_CONFIGS = {"text": "configs/texts.toml", "image": "configs/images.toml"}


def competition_config(folder):
    """The config for a competition's folder, by what it holds: configs/texts.toml or configs/images.toml."""
    from toolkit.image_folders import kind_of
    return OWN_CONFIGS[kind_of(folder)]


def upload_competition(folder="/content/competition"):
    """On Colab: ask for a .zip of a competition's files (as Kaggle's download gives them), unpack it into
    `folder` and return it; elsewhere, or when nothing is chosen, "". A zip holding one folder gives that."""
    if not in_colab():
        return ""
    import io
    import zipfile
    from google.colab import files
    uploaded = files.upload()
    if not uploaded:
        return ""
    for data in uploaded.values():
        zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
    entries = list(Path(folder).iterdir())
    return str(entries[0] if len(entries) == 1 and entries[0].is_dir() else folder)


def cifar_config():
    """The GPU recipe where CUDA is, the 2-core-CPU recipe otherwise."""
    import torch
    return "configs/cifar10_cnn_gpu.toml" if torch.cuda.is_available() else "configs/cifar10_cnn.toml"


def show(*paths, width=400):
    """Display PNGs side by side, inline. They were drawn by plots.py from saved metrics, so what the
    notebook shows is what the command line writes."""
    from IPython.display import HTML, display
    images = [f'<img src="data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}" '
              f'width="{width}" style="display:inline-block; margin:2px">' for p in paths if Path(p).is_file()]
    display(HTML("".join(images)))


def show_sweep(sweep_dir):
    """A sweep's dev loss and accuracy across configurations, then each configuration's train-vs-dev loss."""
    sweep_dir = Path(sweep_dir)
    show(sweep_dir / "dev_loss.png", sweep_dir / "dev_acc.png")
    show(*sorted(sweep_dir.glob("*/loss.png"), key=lambda p: p.stat().st_mtime), width=300)


def show_run(run_dir):
    """A run's loss and accuracy curves, its dev confusion matrix and, for images, the prediction grid."""
    run_dir = Path(run_dir)
    show(run_dir / "loss.png", run_dir / "accuracy.png")
    show(run_dir / "confusion.png", run_dir / "predictions.png", width=500)


def describe_submission(path):
    """Say where a submission is and how many rows it has."""
    path = Path(path)
    rows = sum(1 for _ in path.open()) - 1
    print(f"{path}: {rows:,} predictions")


def hand_over(out):
    """Every submission.csv under `out` in one zip, submissions.zip beside them, named by their runs' folders;
    on Colab offered as one download (several in a row would trip the browser's prompt). Returns the zip."""
    import zipfile
    out = Path(out)
    found = sorted(out.rglob("submission.csv"))
    zipped = out / "submissions.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        for path in found:
            z.write(path, path.parent.relative_to(out).as_posix().replace("/", "-") + ".csv")
    print(f"{zipped}: {len(found)} submissions ({', '.join(p.parent.name for p in found) or 'none yet'})")
    if in_colab() and found:
        from google.colab import files
        files.download(str(zipped))
    return zipped


def finish():
    """On Colab with the Drive mounted: write every file through to Google Drive and unmount it, so that nothing
    is left in Drive's local staging when Colab recycles the machine. Elsewhere nothing to do."""
    if in_colab() and Path(DRIVE).is_dir() and os.path.ismount(DRIVE):
        from google.colab import drive
        drive.flush_and_unmount()
        print("Google Drive flushed and unmounted: every result is on Drive")
