"""The withheld test's accuracy as a dev accuracy predicts it, from the task's scored pairs (its row's `scored`:
dev and test accuracy of models scored on the withheld test). Printed only for runs on the split those
pairs were measured on, with the spread of their offsets."""
import statistics

from toolkit.tasks import TASKS

SCORED_SPLIT = {"dev_block": 100, "dev_size": 5000, "max_train": 0}  # the split the scored pairs were measured on


def offsets(config):
    """(mean, standard deviation) of the test-minus-dev offsets, as fractions, or None where none apply."""
    pairs = TASKS[config["task"]].scored
    if len(pairs) < 2 or any(config.get(k) != v for k, v in SCORED_SPLIT.items()):
        return None
    differences = [(test - dev) / 100 for dev, test in pairs]
    return statistics.mean(differences), statistics.stdev(differences)


def describe_test_estimate(config, dev_acc):
    """'test estimate 93.6% +- 0.4; ...' for a dev accuracy with scored pairs to go by, else ''."""
    found = offsets(config)
    if found is None:
        return ""
    offset, spread = found
    return f"test estimate {100 * (dev_acc + offset):.1f}% +- {100 * spread:.1f}; block dev reads low, see hw3.md"


def describe_offset(config):
    """The same for a sweep's table: the offset every dev accuracy takes, or ''."""
    found = offsets(config)
    if found is None:
        return ""
    offset, spread = found
    return f"test estimate: each dev accuracy + {100 * offset:.1f} +- {100 * spread:.1f} points; block dev reads low, see hw3.md"
