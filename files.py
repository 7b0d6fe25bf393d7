"""Writing results so that a crash or kill -9 at any moment leaves the previous complete version readable."""
import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it into place only when the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # same suffix: savefig reads it
    try:
        yield tmp
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on one file system
    finally:
        tmp.unlink(missing_ok=True)


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
