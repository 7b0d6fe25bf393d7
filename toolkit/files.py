"""Writing results so that a crash or kill -9 at any moment leaves the previous complete version readable."""
import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, make_parents=True):
    """Yield a temporary path beside `path`; rename it into place only when the block finishes.

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
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on one file system
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # OSError(errno, ...) keeps its subclass
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished folder holds no temporary file to remove


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


def write_submission(path, predictions):
    """Kaggle format: header Id,Category; Id counts from 1 in test order; Category is the class index."""
    write_csv(path, ["Id", "Category"], ((i, int(p)) for i, p in enumerate(predictions, 1)))
