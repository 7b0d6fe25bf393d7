"""The one exception every layer raises for a mistake the user can fix."""
import re

# the command line's words, and what a notebook calling main.py's functions writes instead
NOTEBOOK_WORDS = ((r"--set (\w+)=", r"\1="), (r"--data-dir \(or DATA_DIR\)", "data_dir= (or DATA_DIR)"),
                  (r"--data-dir", "data_dir="), (r"--out\b", "out="), (r"--force \(force=True\)", "force=True"),
                  (r"--force", "force=True"), (r"--overwrite", "force=True"))


class UserError(Exception):
    """A mistake the user can fix (bad file, key or value): reported as one line, exit code 2. In a notebook
    (IPython) it shows as that line in the notebook's words, keywords for flags, without a traceback."""

    def _render_traceback_(self):
        return [f"error: {notebook_words(str(self))}"]


def notebook_words(text):
    for flag, keyword in NOTEBOOK_WORDS:
        text = re.sub(flag, keyword, text)
    return text
