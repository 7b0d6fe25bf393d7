"""Checkpoints and interruption: what a run needs to stop at any step and continue exactly where it was.

model.pt  the best-on-dev weights with the config and data facts `predict` needs (small, portable)
last.pt   the full training state (model, optimizer, scheduler, scaler, EMA, epoch, step, history, every
          RNG), written after every epoch and when Ctrl-C or SIGTERM stops a run; `--resume` reads it.
Both are written to a temporary file and renamed, so a kill -9 leaves the previous complete version.
"""
import hashlib
import json
import pickle
import random
import signal
from contextlib import contextmanager

import numpy as np
import torch

from toolkit.config import DATA_RECORD, DEFAULTS, RUNTIME_KEYS, SCALED_WITH_EPOCHS
from toolkit.errors import UserError
from toolkit.files import atomic_path

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    """The run stopped on a signal after saving last.pt; `code` is the shell's exit code for that signal."""

    def __init__(self, signum, path):
        super().__init__(f"stopped by {signal.Signals(signum).name}; training state saved in {path}")
        self.code, self.path = EXIT_CODES[signum], path


def config_hash(config):
    """Identifies a configuration across runs: a finished sweep entry with the same hash is not re-run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def stop_requests():
    """Within the block, SIGINT and SIGTERM only set a flag ({'signal': n}); the loop stops at the next step."""
    requested = {"signal": None}
    handler = lambda signum, frame: requested.update(signal=signum)
    previous = {s: signal.signal(s, handler) for s in EXIT_CODES}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def rng_states(gen):
    """Every RNG's state as tensors and plain values, which torch.load(weights_only=True) reads back."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                   "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate(),
             "gen": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state, gen):
    """Restore what rng_states saved; False when gen's state came from a generator of another kind of device
    (a GPU run resumed on a CPU: 16 bytes of Philox state where a CPU generator takes 5,056), which gen
    cannot take."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state["gen"].numel() != gen.get_state().numel():
        return False
    gen.set_state(state["gen"])
    return True


class _Writer:
    """The file torch.save writes through, keeping the OSError that torch's zip writer would otherwise turn into
    'RuntimeError: [enforce fail at inline_container.cc] unexpected pos' (all a full disk would say)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def torch_save(obj, path):
    """torch.save into the run folder (which must exist), atomically; a failed write raises its OSError
    (ENOSPC, EROFS, ...) naming `path`. Writing through a Python file is no slower than torch's own."""
    with atomic_path(path, make_parents=False) as tmp, open(tmp, "wb") as f:
        writer = _Writer(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None


def save_state(path, state):
    torch_save(state, path)


def load_state(path, config):
    """last.pt of an interrupted run; its config must be this config (else resuming would mix two runs)."""
    if not path.is_file():
        raise UserError(f"{path}: nothing to resume (no checkpoint); run without --resume to start")
    state = read_checkpoint(path)
    saved = state["config"]
    changed = changed_keys(saved, config)
    if changed:
        raise UserError(f"{path}: saved with a different config ({listed(changed, saved, config)}); resume with "
                        f"the same config or use another --out")
    return state


def changed_keys(saved, config):
    """The config keys whose values differ ([] when the two configs are the same run), the data folder of
    your own data included (DATA_RECORD), the device and precision left out (RUNTIME_KEYS). A key the saved
    config lacks (added to config.py after that run) counts as its default, so old runs stay valid."""
    if config_hash(saved) == config_hash(config):
        return []
    keys = (set(config) | set(saved)) - set(RUNTIME_KEYS)
    return sorted(k for k in keys if (k in DEFAULTS or k == DATA_RECORD)
                  and saved.get(k, DEFAULTS.get(k)) != config.get(k, DEFAULTS.get(k)))


def listed(changed, saved, config):
    """changed_keys for a refusal's message. Below reg_epochs a change of epochs changes the keys scaled with it
    (config.scaled_regularisation), which the user may never have set; with amp_widths the net's widths follow
    the precision, which the machine chose: the message says so."""
    scaled = [k for k in changed if k in SCALED_WITH_EPOCHS]
    below = min(saved.get("epochs", config["epochs"]), config["epochs"]) < config["reg_epochs"]
    note = f"; below reg_epochs, {', '.join(scaled)} follow epochs" if "epochs" in changed and scaled and below else ""
    if "widths" in changed and config.get("amp_widths") and saved.get("amp_widths") == config["amp_widths"]:
        note += (f"; the net is amp_widths {config['amp_widths']} where autocast runs and widths elsewhere, and it "
                 f"trained as {saved['widths']}: continue it where the precision is as it was (a GPU, or a CPU with "
                 f"native bf16, with amp = true), or start it afresh")
    return ", ".join(changed) + note


def saved_config(path):
    """The config stored in last.pt, without reading its tensors (mmap: the file can be 1 GB)."""
    return read_checkpoint(path, mmap=True)["config"]


def read_checkpoint(path, mmap=False):
    """last.pt's contents (safe_load), with a one-line UserError for a file that is not one."""
    try:
        state = safe_load(path, mmap=mmap)
        if not isinstance(state, dict) or "config" not in state:
            raise ValueError("no config")  # another program's file
        return state
    except (MemoryError, OSError, UserError):
        raise  # a fault of the machine, or a file refused
    except Exception as e:
        raise UserError(f"{path}: not a readable training checkpoint ({type(e).__name__}); delete it to start "
                        f"over") from None


def safe_load(path, mmap=False, map_location="cpu"):
    """torch.load of a file the toolkit wrote (last.pt, model.pt, model_refit.pt), with weights_only=True: its
    tensors and plain values, never a call that a crafted or foreign file carries. Such a file is refused
    with a UserError naming it, and nothing it carries runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise UserError(f"{path}: refused: it holds more than tensors and plain values (loading it could run code); "
                        f"it is not a file this toolkit wrote, or one from an older version of it; move it away "
                        f"to continue") from None


def save_best(path, state, config, epoch, dev_acc, meta, reader):
    """Best weights with the config, the data's facts (classes, input size) and the reader that `predict` needs
    to read new data as the run read its own (normalization, text vocabulary and weights, columns)."""
    torch_save({"model": state, "config": config, "epoch": epoch, "dev_acc": dev_acc, "meta": meta,
                "reader": reader}, path)
