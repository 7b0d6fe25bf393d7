"""Progress bars that suit where the output goes: one policy, used by the training loop.

- Jupyter or Colab with ipywidgets: tqdm.auto's widget, redrawn in place; nothing piles up in the output.
- A terminal: tqdm's text bar, redrawn in place with carriage returns.
- Anything else (a log file, CI, a pipe, a notebook kernel without ipywidgets, where tqdm would fall back to
  text): no bar; the loop's own line per epoch is the progress report. A text bar in a log file would pile
  up hundreds of refreshes (they follow time, so a slower computer writes more) where a few lines say it all.
"""
import importlib.util
import sys

from tqdm import tqdm


def in_notebook():
    """True inside a Jupyter/Colab kernel (IPython already loaded and driven by a kernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return getattr(shell, "kernel", None) is not None


def progress_bar(iterable, desc):
    if in_notebook() and importlib.util.find_spec("ipywidgets"):
        from tqdm.auto import tqdm as auto_tqdm  # the notebook widget here
        return auto_tqdm(iterable, desc=desc, leave=False)
    return tqdm(iterable, desc=desc, leave=False, disable=in_notebook() or not sys.stderr.isatty())
