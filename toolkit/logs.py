"""A run's epochs as they end: history.csv (one row an epoch, readable while the run goes) and, where the
tensorboard package is installed, TensorBoard events in the run's folder (`tensorboard --logdir runs`).

Both continue on --resume from the epochs last.pt holds: history.csv is written again from them, and the
events of later epochs (trained after the last checkpoint, before the stop) are purged.
"""
import csv
import functools
import os

from toolkit.files import write_csv

HISTORY = "history.csv"
COLUMNS = ("epoch", "steps", "train_loss", "train_acc", "dev_loss", "dev_acc", "lr", "seconds")
SCALARS = {"loss/train": "train_loss", "loss/dev": "dev_loss", "accuracy/train": "train_acc",
           "accuracy/dev": "dev_acc", "lr": "lr"}


@functools.cache
def summary_writer_class():
    """torch's SummaryWriter, or None (said once a process) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed, so no dashboard events are written (history.csv has the same "
              "numbers): pip install tensorboard", flush=True)
        return None
    return SummaryWriter


class EpochLog:
    """history.csv and the TensorBoard writer of one run folder, continued from `history` (the epochs so far)."""

    def __init__(self, out_dir, history):
        self.path = out_dir / HISTORY
        write_csv(self.path, COLUMNS, [row(h) for h in history])
        writer = summary_writer_class()
        self.board = writer and writer(str(out_dir), purge_step=len(history) + 1 if history else None)

    def epoch(self, h):
        """Append epoch h (a history entry) to history.csv and the events, both flushed to the disk."""
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow(row(h))  # as write_csv wrote the rows before it
            f.flush()
            os.fsync(f.fileno())
        if self.board:
            for tag, key in SCALARS.items():
                self.board.add_scalar(tag, h[key], h["epoch"])
            self.board.flush()

    def close(self):
        if self.board:
            self.board.close()
            self.board = None


def write_hparams(out_dir, config, metrics):
    """The finished run's config keys as TensorBoard hparams beside its best dev accuracy, so that the runs
    of a sweep compare in one table (TensorBoard's HPARAMS tab)."""
    writer = summary_writer_class()
    if writer is None or metrics["best_dev_acc"] is None:
        return
    from torch.utils.tensorboard.summary import hparams
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    best = {"hparam/best_dev_acc": metrics["best_dev_acc"]}
    with writer(str(out_dir)) as board:
        for summary in hparams(values, best):
            board.file_writer.add_summary(summary)
        board.add_scalar("hparam/best_dev_acc", metrics["best_dev_acc"], metrics["best_epoch"])


def row(h):
    return [h[key] for key in COLUMNS]
