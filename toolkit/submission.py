"""submission.csv and probabilities.csv in the form a competition asks for.

Where the data folder holds a sample submission (sample_submission.csv, sampleSubmission.csv, any case), it
decides: its header line, its ids in its order, written as it writes them, and what its target columns
hold. One target column holds labels, written as the training file wrote them, or a probability where its
values are probabilities (or with `probabilities = true` and two classes): that of the class the column
names, else of the second class. One column per class, named by the training labels, holds probabilities
that sum to 1. Ids match test rows as strings without surrounding quotes or spaces; an image matches by its
file name with or without the extension; a test file without ids lists the sample's ids in its row order.
Without a sample: `Id,Category`, ids from the test file's id column or the image files' names, else 1..N in
test order, and the built-in sets write class indices (their row's `submit`).

A form is a plain dict (header, delimiter, ids, rows: the test row of each line, target, columns, metric).
"""
import csv
import io
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.files import write_text
from toolkit.tables import decode, delimiter, is_number, raw_bytes


def key(text):
    """An id as matched: without surrounding spaces or quotes."""
    return text.strip().strip('"').strip()


def read_sample(path):
    """{'path', 'header', 'delimiter', 'columns', 'ids', 'quoted', 'values'} of a sample submission."""
    text = decode(raw_bytes(path))
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise UserError(f"{path}: a sample submission needs a header and at least one row")
    sep = delimiter(path, lines[0])
    rows = list(csv.reader(lines, delimiter=sep))
    columns = [c.strip() for c in rows[0]]
    if len(columns) < 2:
        raise UserError(f"{path}: a sample submission needs an id column and a target column; found {columns}")
    bad = next((i for i, r in enumerate(rows[1:], 2) if len(r) != len(columns)), None)
    if bad:
        raise UserError(f"{path}:{bad}: {len(rows[bad - 1])} fields where the header has {len(columns)}")
    return {"path": str(path), "header": lines[0], "delimiter": sep, "columns": columns,
            "ids": [r[0] for r in rows[1:]], "quoted": lines[1].lstrip().startswith('"'),
            "values": [r[1] for r in rows[1:]]}


def target_of(sample, classes, probabilities):
    """(target, positive class, class of each column) that the sample's target columns ask for."""
    path, columns = sample["path"], sample["columns"][1:]
    names = {c.lower(): i for i, c in enumerate(classes)}
    if len(columns) > 1:
        order = [names.get(c.lower()) for c in columns]
        if None in order or sorted(order) != list(range(len(classes))):
            raise UserError(f"{path}: its columns {', '.join(columns)} are not the training labels "
                            f"({', '.join(classes)}): one column per class, named by its label, is what it can ask")
        return "classes", None, order
    values = sample["values"]
    holds_probabilities = all(is_number(v) for v in values) and any(float(v) % 1 for v in values)
    if not holds_probabilities and not (probabilities and len(classes) == 2):
        return "label", None, None
    if len(classes) != 2:
        raise UserError(f"{path}: one probability column ({columns[0]}) needs two classes; the training labels "
                        f"have {len(classes)}")
    return "probability", names.get(columns[0].lower(), 1), None


def rows_of(sample, test_keys, n_test):
    """The test row of each sample line: by id, or in order where the test rows have no ids."""
    path, keys = sample["path"], [key(i) for i in sample["ids"]]
    repeated = next((k for k, count in count_keys(keys).items() if count > 1), None)
    if repeated is not None:
        raise UserError(f"{path}: id {repeated!r} is listed twice")
    if test_keys is None:
        if len(keys) != n_test:
            raise UserError(f"{path}: {len(keys)} ids, but the test file has {n_test} rows and no id column to "
                            f"match them by")
        return list(range(n_test))
    index = {}
    for row, names in enumerate(test_keys):
        for name in set(names):
            if name in index:
                raise UserError(f"the test data repeat id {name!r}")
            index[name] = row
    missing = [k for k in keys if k not in index]
    if missing:
        raise UserError(f"{path}: {len(missing)} of its ids are not in the test data (first: {missing[0]!r}); "
                        f"the test ids must be the sample's")
    rows = [index[k] for k in keys]
    if len(set(rows)) != n_test:
        unlisted = sorted(set(range(n_test)) - set(rows))[0]
        raise UserError(f"{path}: lists {len(set(rows))} of the {n_test} test rows (not {test_keys[unlisted][0]!r}); "
                        f"the test ids must be the sample's")
    return rows


def count_keys(keys):
    counts = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return counts


def sample_form(sample, test_keys, n_test, classes, probabilities):
    """The form a sample submission asks for, its lines matched to the test rows."""
    target, positive, order = target_of(sample, classes, probabilities)
    return {"header": sample["header"], "delimiter": sample["delimiter"], "ids": sample["ids"],
            "quoted": sample["quoted"], "rows": rows_of(sample, test_keys, n_test), "target": target,
            "positive": positive, "order": order, "metric": "accuracy" if target == "label" else "log loss"}


def plain_form(ids, n_test):
    """Id,Category, one line a test row in test order: ids as given, else 1..N."""
    return {"header": "Id,Category", "delimiter": ",", "ids": ids or [str(i) for i in range(1, n_test + 1)],
            "quoted": False, "rows": list(range(n_test)), "target": "label", "positive": None, "order": None,
            "metric": "accuracy"}


def lines(form, values):
    """The file's text: the form's header, then each id with the values of its test row."""
    out = io.StringIO()
    out.write(form["header"] + "\n")
    writer = csv.writer(out, delimiter=form["delimiter"], lineterminator="\n")
    for name, row in zip(form["ids"], form["rows"]):
        out.write((f'"{name}"' if form["quoted"] else name) + form["delimiter"])
        writer.writerow(values(row))
    return out.getvalue()


def write_submission(path, form, preds, probs, written):
    """submission.csv: predicted labels (written[class]) or the probabilities the form asks for."""
    preds, probs = preds.tolist(), None if probs is None else probs.tolist()
    if form["target"] == "label":
        values = lambda row: [written[preds[row]]]
    elif form["target"] == "probability":
        values = lambda row: [f"{probs[row][form['positive']]:.6f}"]
    else:
        values = lambda row: [f"{probs[row][c]:.6f}" for c in form["order"]]
    write_text(path, lines(form, values))


def write_indices(path, preds):
    """Id,Category with Id from 1 in test order and the class indices: the built-in sets' form."""
    preds = np.asarray(preds)
    write_submission(path, plain_form(None, len(preds)), preds, None, [str(i) for i in range(preds.max() + 1)])


def write_probabilities(path, form, probs, classes):
    """probabilities.csv: each line's id, then for two classes the probability of the second (header
    Id,Probability), else one column per class, named by it."""
    probs = probs.tolist()
    two = len(classes) == 2
    header = ["Id", "Probability"] if two else ["Id", *classes]
    rows = [[name, *([f"{probs[r][1]:.6f}"] if two else [f"{q:.6f}" for q in probs[r]])]
            for name, r in zip(form["ids"], form["rows"])]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    write_text(path, out.getvalue())


def write_predictions(submission, form, preds, probs, meta, probabilities):
    """The submission file in the competition's form from the predicted classes and, where evaluate gave them
    ([probs]), their probabilities; with `probabilities` probabilities.csv beside it."""
    probs = probs[0] if probs else None
    write_submission(submission, form, preds, probs, meta["written"])
    if probabilities:
        write_probabilities(Path(submission).with_name("probabilities.csv"), form, probs, meta["classes"])
