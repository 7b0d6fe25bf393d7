"""Which folder a run writes to, by its folder mode:

  new        OUT/<name> when it holds no run, else the first free OUT/<name>-2, -3, ... (`main.py run`)
  overwrite  OUT/<name>, its results deleted first (--overwrite; a sweep's --force)
  resume     the newest unfinished OUT/<name>[-N] saved with this config and data, from its last.pt (--resume)
  continue   OUT/<name>, resumed from its last.pt where it has one of this config and data, else started
             afresh; a finished run of another config or other data there is refused (sweeps, run_config,
             `main.py default`, teachers)

The folder is held (an OS lock, files.hold) while the run works in it; under torchrun rank 0 chooses and
holds it, and the other ranks are told which.
"""
import glob
import json
from contextlib import ExitStack, contextmanager
from pathlib import Path

from toolkit import ranks
from toolkit.checkpoint import changed_keys, listed, saved_config
from toolkit.errors import UserError
from toolkit.files import clear, hold, new_run_dir

FOLDER_MODES = ("new", "overwrite", "resume", "continue")


def check_run_dir(out_dir, config):
    """Refuse to work in a folder that holds a different configuration's run (or one of other data)."""
    for name in ("metrics.json", "last.pt"):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())["config"] if name == "metrics.json" else saved_config(path)
        except Exception:
            raise UserError(f"{path}: exists but is unreadable; move it away or choose another --out") from None
        changed = changed_keys(saved, config)
        if changed:
            raise UserError(f"{out_dir} holds a run with a different config ({listed(changed, saved, config)}); choose "
                            f"another --out, or --force (force=True) to replace it")


def resume_dir(out_root, config):
    """The folder --resume continues: of OUT/<name> and OUT/<name>-2, -3, ... holding a last.pt, the newest one
    saved with this config (else the newest, whose load then says what differs)."""
    first = Path(out_root) / config["name"]
    numbered = [p for p in first.parent.glob(f"{glob.escape(config['name'])}-*") if p.name.rpartition("-")[2].isdigit()]
    unfinished = [p for p in [first, *numbered] if (p / "last.pt").is_file()]
    if not unfinished:
        raise UserError(f"{first / 'last.pt'}: nothing to resume (no checkpoint); run without --resume to start")

    def same_config(folder):
        try:
            return not changed_keys(saved_config(folder / "last.pt"), config)
        except Exception:
            return False
    return max([p for p in unfinished if same_config(p)] or unfinished, key=lambda p: (p / "last.pt").stat().st_mtime)


@contextmanager
def take_folder(out_root, config, mode):
    """Hold the run's folder for the block, chosen by `mode` (FOLDER_MODES); yields (folder, whether to resume)."""
    if mode == "resume":
        folder = resume_dir(out_root, config)
        saved_config(folder / "last.pt")  # a crafted or foreign last.pt is refused before anything is touched
        with hold(folder):
            yield folder, True
    elif mode == "continue":
        with hold(Path(out_root) / config["name"]) as folder:
            if (folder / "last.pt").is_file() and not changed_keys(saved_config(folder / "last.pt"), config):
                yield folder, True
                return
            check_run_dir(folder, config)
            clear(folder)  # what is left is a failed start of this config
            yield folder, False
    elif mode in ("new", "overwrite"):
        with new_run_dir(out_root, config["name"], overwrite=mode == "overwrite") as folder:
            yield folder, False
    else:
        raise ValueError(f"folder mode {mode!r} is not one of {FOLDER_MODES}")


@contextmanager
def shared_folder(out_root, config, mode):
    """take_folder, held by rank 0 alone under torchrun (one lock, one choice of folder); the other ranks are
    told the folder it chose, or the one-line error it met, so that all of them use it or all stop."""
    with ExitStack() as stack:
        taken, error = (None, False), None
        if ranks.is_main():
            try:
                folder, resume = stack.enter_context(take_folder(out_root, config, mode))
                taken = (str(folder), resume)
            except UserError as e:
                error = e
        (chosen, resume), message = ranks.gather((taken, error and str(error)))[0]
        if error is not None:
            raise error
        if message is not None:
            raise UserError(message)
        yield Path(chosen), resume
