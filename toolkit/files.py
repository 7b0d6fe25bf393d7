"""Result files and run folders: a crash or kill -9 at any moment leaves the last complete version of every
file readable, one process works in a run folder at a time, and a finished run is never replaced unasked.

A run holds an OS lock (fcntl.flock) on OUT/<name>/.lock while it works. The kernel drops the lock when the
process ends, however it ends (kill -9 included), so a lock is never stale and nothing needs cleaning up.
The file stays, holding the last holder's pid and command, for the message a second run prints.
A fresh `main.py run` writes to OUT/<name>/ when that folder holds no run, else to the first free
OUT/<name>-2, OUT/<name>-3, ...; `--overwrite` replaces OUT/<name>'s results instead. Sweeps keep fixed
folder names (their plots read them) and refuse a folder that another process holds.
"""
import csv
import errno
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from itertools import count
from pathlib import Path

from toolkit.errors import UserError

try:
    import fcntl
except ImportError:  # Windows has no flock: there a second run on one folder is not stopped
    fcntl = None

LOCK = ".lock"
HOLDS_A_RUN = ("metrics.json", "model.pt", "last.pt")  # a folder with any of these is used
RESULTS = HOLDS_A_RUN + ("model_refit.pt", "submission.csv", "probabilities.csv", "history.csv", "loss.png",
                        "accuracy.png", "confusion.png", "predictions.png")
EVENTS = "events.out.tfevents.*"  # TensorBoard's files (logs.py)


class FolderInUse(UserError):
    """Another live process holds the folder (exit code 2, like any other one-line refusal)."""


def used(folder):
    return any((Path(folder) / name).is_file() for name in HOLDS_A_RUN)


def holder(folder):
    """Who holds `folder`, as its lock file says (pid, command, start time)."""
    try:
        return (Path(folder) / LOCK).read_text().strip() or "another process"
    except OSError:
        return "another process"


def try_lock(folder):
    """The open lock file of `folder` (created if missing) with its lock held, or None when another process
    holds it. Closing the file releases the lock. A folder or lock file that a failed run removed while this
    was taking it (remove_if_bare) is made again."""
    for attempt in range(3):
        try:
            return lock_once(Path(folder))
        except FileNotFoundError:
            if attempt == 2:
                raise


def lock_once(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    if not path.is_file():
        path.touch()
    f = open(path)  # read-only: a file held open for writing would keep its disk from being remounted read-only
    try:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):  # held by another open file: another process
            f.close()
            return None
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            f.close()
            raise
        # a file system without locks (some network and FUSE mounts): run unprotected rather than not at all
    try:
        if os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:  # removed after we opened it: a stale lock
            raise FileNotFoundError(path)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        path.write_text(f"pid {os.getpid()} ({command}, started {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    except OSError:
        f.close()
        raise
    return f


def in_use(folder):
    return FolderInUse(f"{folder} is in use by {holder(folder)}; wait for it to finish, or choose another --out")


@contextmanager
def hold(folder):
    """Hold `folder` for the block; FolderInUse (one line naming the holder) when another process holds it."""
    f = try_lock(folder)
    if f is None:
        raise in_use(folder)
    try:
        yield Path(folder)
    finally:
        f.close()


def clear(folder):
    """Delete a run's result files (for --overwrite and sweeps' --force), so that old and new never mix."""
    for name in RESULTS:
        (Path(folder) / name).unlink(missing_ok=True)
    for events in Path(folder).glob(EVENTS):
        events.unlink(missing_ok=True)


@contextmanager
def new_run_dir(out_root, name, overwrite=False):
    """Hold OUT/<name> when it holds no run (or overwrite: its old results deleted), else the first free
    OUT/<name>-2, -3, ...; says on stdout why a numbered folder was chosen."""
    first = Path(out_root) / name
    if overwrite:
        with hold(first):
            clear(first)
            yield first
        return
    root_made = not first.parent.exists()
    for k in count(1):
        folder = first if k == 1 else first.with_name(f"{name}-{k}")
        if used(folder) or folder.exists() and not folder.is_dir():
            continue
        made = not folder.exists()
        f = try_lock(folder)
        if f is not None and used(folder):  # another run took it between the check and the lock
            f.close()
            f = None
        if f is not None:
            break
    try:
        if folder != first:
            print(f"{first} {why_taken(first)}; this run writes to {folder}/", flush=True)
        yield folder
    except (UserError, KeyboardInterrupt):
        if made:  # a run stopped before writing anything (bad data, say) leaves no empty folder behind; a fault
            remove_if_bare(folder)  # of the machine leaves the folder its one line names as kept
            if root_made:  # nor an empty --out folder where there was none
                remove_if_empty(first.parent)
        raise
    finally:
        f.close()


def remove_if_empty(folder):
    """Remove `folder` when nothing is in it (another run may just have put its own folder there)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def remove_if_bare(folder):
    """Remove `folder` when it holds only its lock file (held by this process). A run taking it at the same
    moment makes the folder and its lock file again (try_lock)."""
    try:
        if [p.name for p in folder.iterdir()] == [LOCK]:
            (folder / LOCK).unlink()
            folder.rmdir()
    except OSError:
        pass


def why_taken(folder):
    if held_elsewhere(folder):
        return f"is in use by {holder(folder)}"
    if (folder / "last.pt").is_file():
        return "holds an unfinished run (--resume continues it)"
    return "holds a finished run (--overwrite replaces it)"


def held_elsewhere(folder):
    """True when a process holds `folder` now (checked without writing to it)."""
    try:
        f = open(Path(folder) / LOCK)
    except OSError:
        return False
    with f:
        try:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError as e:
            return e.errno in (errno.EAGAIN, errno.EACCES)


# ---------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path, make_parents=True):
    """Yield a temporary path beside `path`; rename it into place only when the block finishes, its bytes on
    the disk first (fsync), so that a synced folder (Google Drive) or a power cut never holds half a file.

    A failing write (disk full, read-only, permission denied) removes the temporary file and raises an
    OSError that names `path` itself, not the temporary name. make_parents=False is for writes into a run
    folder that must already exist: a folder deleted or unmounted mid-run is then an error, not silently
    re-created empty."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # same suffix: savefig reads it
    try:
        yield tmp
        sync(tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on one file system
        sync(path.parent, folder=True)  # the rename itself
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # OSError(errno, ...) keeps its subclass
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished folder holds no temporary file to remove


def sync(path, folder=False):
    """fsync a file's bytes, or a folder's entries (POSIX only: Windows cannot open a folder for it). A file
    system that cannot sync (EINVAL, ENOTSUP: some network and FUSE mounts) is left to its own flushing."""
    if folder and os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY if os.name != "nt" else os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF) and not folder:
            raise


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path, header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())
