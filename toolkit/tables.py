"""Tables as Kaggle ships them: .csv or .tsv, plain, gzipped or a one-file zip, UTF-8 with or without a BOM
(else cp1252), Kaggle's quoting read as it is (its IMDB files escape quotes as \\"). Every cell is read as the
string the file holds, so ids and labels are written back exactly as they came.
"""
import gzip
import io
import re
import zipfile
from pathlib import Path

from toolkit.errors import UserError

TABLE = re.compile(r"\.(csv|tsv)(\.gz|\.zip)?$", re.I)
# what a competition folder may hold that this toolkit does not read, and what to do instead
REFUSED = {".7z": "a .7z archive: extract it first", ".rar": "a .rar archive: extract it first",
           ".json": "JSON: out of scope; save it as .csv", ".jsonl": "JSON: out of scope; save it as .csv",
           ".xlsx": "an Excel file: out of scope; save it as .csv", ".xls": "an Excel file: out of scope; save it as .csv",
           ".parquet": "a Parquet file: out of scope; save it as .csv"}
SAMPLE = re.compile(r"sample.?(submission|solution)", re.I)  # sample_submission.csv, sampleSubmission.csv


def table_files(folder):
    """The .csv/.tsv files (plain, .gz, .zip) directly in folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and TABLE.search(p.name))


def refused_files(folder, words):
    """A UserError for the first file in folder whose name holds one of `words` ("train", "test") and whose
    format is out of scope, or None."""
    for p in sorted(Path(folder).iterdir()):
        suffix = "".join(p.suffixes[-1:]).lower()
        if suffix in REFUSED and any(w in p.name.lower() for w in words):
            return UserError(f"{p}: {REFUSED[suffix]}")
    return None


def raw_bytes(path):
    """The bytes of a table file, gunzipped or taken out of its zip (which must hold one file)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".gz":
            return gzip.decompress(path.read_bytes())
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise UserError(f"{path}: a zip of {len(names)} files; this reads a zip of one table (unzip it)")
                return z.read(names[0])
        return path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as e:
        if isinstance(e, OSError) and e.errno:  # the disk failed, not the file
            raise
        raise UserError(f"{path}: cannot be unpacked ({type(e).__name__}: {e})") from None


def decode(data):
    """UTF-8 (a BOM dropped), else cp1252, which maps nearly every byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def delimiter(path, first_line):
    """Tab for .tsv; for .csv the commonest of , ; and tab in the header line."""
    if ".tsv" in Path(path).name.lower():
        return "\t"
    return max([",", ";", "\t"], key=first_line.count)


def read_text(path):
    return decode(raw_bytes(path))


def read_table(path, numeric=None):
    """A pandas DataFrame of strings (empty cells as ""), its header checked; columns whose names match the
    regex `numeric` are parsed as numbers instead (pixels: far faster than strings). A UserError for an empty
    file, one without a header row, or rows that do not parse."""
    import csv
    import pandas as pd
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    first = text.split("\n", 1)[0]
    sep = delimiter(path, first)
    names = next(csv.reader([first], delimiter=sep))
    dtype = {name: str for name in names if not (numeric and numeric.match(name.strip()))}
    escape = "\\" if '\\"' in text[:1_000_000] else None  # Kaggle's IMDB files escape quotes with a backslash
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=dtype, keep_default_na=False, escapechar=escape)
    except (pd.errors.ParserError, ValueError) as e:
        raise UserError(f"{path}: not a table this toolkit reads ({str(e).strip().splitlines()[-1]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    check_header(path, list(table.columns))
    if table.empty:
        raise UserError(f"{path}: a header and no rows")
    return table


def check_header(path, columns):
    """A header row names its columns: a number, an empty name or a long text where a name should be means the
    file starts with data."""
    for name in columns:
        looks_like_data = not name or name.startswith("Unnamed:") or len(name) > 64 or is_number(name)
        if looks_like_data:
            raise UserError(f"{path}: the first row ({', '.join(c[:20] for c in columns[:4])}...) is not a header "
                            f"row; files without one are out of scope: add a row naming the columns")


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def column(table, wanted):
    """The table's column named `wanted`, matched without regard to case; None when it has none."""
    return next((c for c in table.columns if c.lower() == wanted.lower()), None)
