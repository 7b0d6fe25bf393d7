"""Faults of the machine as one line: what failed, on which path or setting, and what the run folder kept.

Disk full, a read-only, vanished or forbidden folder, a read that fails midway (any OSError with an errno),
memory that runs out (on the CPU, or torch.OutOfMemoryError on a GPU): `main.py` prints the line and exits
with 1. Anything else is a bug and keeps its traceback.
"""
import errno
import json
import re
from contextlib import contextmanager
from pathlib import Path

DISK = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder (deleted or unmounted while running?)",
    errno.ENOTDIR: "a file stands where a folder is expected",
    errno.EEXIST: "a file stands where a folder is expected",  # from mkdir, the only place we meet it
    errno.EIO: "input/output error (a failing disk, card or network drive?)",
    errno.ENOMEM: "out of memory",
}
ADVICE = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EFBIG: "choose another --out",
          errno.EROFS: "make it writable or choose another --out", errno.EACCES: "fix its permissions or choose "
          "another --out", errno.EPERM: "fix its permissions or choose another --out"}
ASKED = re.compile(r"(?:tried to allocate|unable to allocate)\s+(\d+ bytes|[\d.]+\s*[KMGTP]?i?B)", re.I)


class Fault(Exception):
    """A fault of the machine, already put in one line (exit code 1)."""


def out_of_memory(e):
    if isinstance(e, MemoryError):
        return True
    import torch  # only asked once torch is loaded, so light commands stay light
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def asked(e):
    """The size an allocator was asked for, as its message says it ('2.00 GiB', '40000000000 bytes')."""
    m = ASKED.search(str(e))
    if m is None:
        return "an allocation"
    size = m.group(1)
    if not size.endswith(" bytes"):
        return size
    n = int(size.split()[0]) / 2 ** 30
    for unit in ("GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.2f} {unit}"
        n /= 1024


def describe(e, config=None):
    """(what happened, what to do) for a fault of the machine, or None when `e` is not one."""
    if isinstance(e, OSError) and e.errno:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{DISK.get(e.errno, e.strerror)}", ADVICE.get(e.errno, "")
    if not out_of_memory(e):
        return None
    gpu = any(word in str(e) for word in ("CUDA", "GPU", "MPS"))
    what = f"out of memory on the {'GPU' if gpu else 'CPU'}: asked for {asked(e)}"
    if config is None:
        return what, ""
    from toolkit.models import MODELS
    size = MODELS[config["model"]].size  # the key that sizes the model, where it has one
    return (f"{what} with batch_size {config['batch_size']}" + (f", {size} {config[size]}" if size else ""),
            f"lower {size + ' or ' if size else ''}batch_size")


def line(e, config=None):
    """The one line for a fault outside a run (or None)."""
    described = describe(e, config)
    return described and "; ".join(part for part in described if part)


def kept(run_dir):
    """What the run folder holds, each file loaded to show it is whole: 'model.pt (epoch 3, dev acc 0.8812),
    last.pt (resumes at epoch 4)'."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return f"kept: nothing ({run_dir} is gone)"
    found = []
    for name, what in (("model.pt", best_epoch), ("last.pt", resume_point), ("metrics.json", finished),
                       ("submission.csv", lambda p: "")):
        path = run_dir / name
        if path.is_file():
            try:
                found.append(f"{name}{what(path)}")
            except Exception as e:  # a file that does not load is not kept, whatever its name
                found.append(f"{name} (unreadable: {type(e).__name__})")
    return f"kept in {run_dir}: " + (", ".join(found) if found else "no results yet")


def load(path):
    from toolkit.checkpoint import safe_load  # torch: loaded only when a fault is reported
    return safe_load(path, mmap=True)  # mmap: last.pt can be 1 GB


def best_epoch(path):
    checkpoint = load(path)
    return f" (best, epoch {checkpoint['epoch']}, dev acc {checkpoint['dev_acc']:.4f})"


def resume_point(path):
    state = load(path)
    if state["epoch"] > state["config"]["epochs"]:
        return " (all epochs trained)"
    return f" (resumes at epoch {state['epoch']}" + (f", step {state['step']})" if state["step"] else ")")


def finished(path):
    return f" ({'diverged' if json.loads(path.read_text())['diverged'] else 'finished'} run)"


@contextmanager
def in_run(run_dir, config, again):
    """Turn a fault of the machine inside the block into Fault('<what>; kept in <run_dir>: ...; <what to do>');
    `again` says how to continue from last.pt ('add --resume')."""
    try:
        yield
    except Exception as e:
        described = describe(e, config)
        if described is None:
            raise
        what, advice = described
        if not out_of_memory(e):  # a lower batch_size is another config: --resume would refuse it
            advice += (", then " if advice else "") + (again if (Path(run_dir) / "last.pt").is_file() else
                                                        "run it again")
        raise Fault(f"{what}; {kept(run_dir)}; {advice}") from e
