"""The withheld test's accuracy as a dev accuracy predicts it, from runs of the same kind scored on that test (the
task row's `scored`: kind, dev %, test %). A kind is the model, what it reads and what it learns from: a
self-trained model reads the dev texts too, which narrows its gap to the test, and the submission of a refitted one
comes from a model that also trained on the dev rows. The estimate is dev plus the scored runs' offsets, given as
their range, so it covers every pair we have; with fewer than two like pairs, or on another split than the one
they were scored on, none is printed and the line says why."""
from toolkit.tasks import TASKS

SCORED_SPLIT = {"dev_block": 100, "dev_size": 5000, "dev_fraction": 0.25, "max_train": 0}  # as they were scored
LIKE_PAIRS = 2  # the fewest scored runs of a kind that give a range


def kind_of(config):
    """A run's kind, as the scored pairs name it: the model, whether it read the dev and test texts, and whether
    its submission came from a refit on train + dev."""
    return (config["model"] + (", self-trained" if config.get("self_train") else "")
            + (", refitted" if config.get("refit") else ""))


def offsets(config):
    """(the offsets in points of the scored runs of this run's kind, or None, and why there are none)."""
    pairs = TASKS[config["task"]].scored
    if not pairs:
        return None, ""
    if any(config.get(k, v) != v for k, v in SCORED_SPLIT.items()):
        return None, "no test estimate: the scored runs used the default dev split"
    like = [test - dev for kind, dev, test in pairs if kind == kind_of(config)]
    if len(like) < LIKE_PAIRS:
        return None, (f"no test estimate: {len(like)} scored run{'s' * (len(like) != 1)} of this kind "
                      f"({kind_of(config)}), {LIKE_PAIRS} needed")
    return like, ""


def describe_test_estimate(config, dev_acc):
    """'test estimate 92.2-92.7% from 2 scored mlp runs' for a dev accuracy, the reason there is none, or ''."""
    like, why = offsets(config)
    if like is None:
        return why
    low, high = (100 * dev_acc + d for d in (min(like), max(like)))
    return f"test estimate {low:.1f}-{high:.1f}% from {len(like)} scored {kind_of(config)} runs"


def describe_offsets(configs):
    """One line for a sweep's table: each kind's offset range, where its pairs give one."""
    parts = []
    for config in {kind_of(c): c for c in configs}.values():
        like, _ = offsets(config)
        if like:
            parts.append(f"{kind_of(config)} rows + {min(like):.1f} to {max(like):.1f} points ({len(like)} scored runs)")
    return "test estimate: " + "; ".join(parts) if parts else ""
