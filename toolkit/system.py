"""Process settings a command makes before torch allocates or after it has finished: how freed CPU memory
is kept (glibc's malloc, transparent huge pages), SIGTERM while torchrun's ranks start, and a fast exit.

Each is a trade-off measured on real runs; docs/performance.md has the figures and the commands.
"""
import os
import signal
import sys
import threading


def set_allocator(kind):
    """CPU memory for a command training a task of `kind` (None: several or none), before torch allocates: image
    tasks keep their freed memory, text tasks (and a command that may train one) run on transparent huge pages."""
    if kind == "image":
        keep_freed_memory()
    else:
        huge_pages()


def huge_pages():
    """Put CPU tensors of 2 MB and more on transparent huge pages (PyTorch reads THP_MEM_ALLOC_ENABLE once, at
    its first allocation, so this only helps before torch loads). The sentiment MLP frees and re-allocates a
    400 MB dense gradient every step, which in 4 KB pages faults in again every step (docs/performance.md has
    the count). Image tasks keep freed memory instead (set_allocator), which is faster for them. A value already
    set wins."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def keep_freed_memory():
    """Keep freed memory in the process for the next training step: glibc's malloc then maps no block of its
    own for a large allocation and trims the heap only past 2 GB free. By default each CNN activation over
    32 MB is mapped afresh, returned when freed and faulted in again, zeroed, 4 KB at a time, on every step.
    Without glibc (macOS, Windows) nothing is done."""
    if sys.platform == "linux":
        import ctypes
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt(-4, 0)  # M_MMAP_MAX
            libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
        except (OSError, AttributeError):  # a libc without mallopt
            pass


def ignore_sigterm_while_ranks_start():
    """Under torchrun the first rank to exit (a bad config: every rank finds it) gets the others SIGTERMed at
    once, perhaps while they still load torch; so until the ranks join (ranks.setup) a rank ignores SIGTERM,
    reaches its own one-line error and exits 2 like the first. A kill -TERM to torchrun in those first
    seconds waits for torchrun's grace period (then SIGKILL) instead."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_now(code):
    """Leave without the interpreter's teardown, which frees torch's modules one object at a time (a few
    tenths of a second of a short run). Only for the end of main.py: every file is written and closed by then,
    atomically, the process group is destroyed, and no thread of ours is left running."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
