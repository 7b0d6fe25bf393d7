"""A time budget (config `budget_minutes`): the run measures its own speed on your computer, then plans how
many training steps fit, so that the whole run, evaluation and files included, ends within the budget.

The first plan is made before the first epoch, from
  step_s    seconds per training step: a few steps of a throwaway copy of the model and optimizer, after
            one warm-up step (the first step of a fresh model pays one-off costs: allocation, oneDNN
            kernel choice);
  eval_s    seconds to evaluate dev once: a few batches, scaled to the whole split;
  spent_s   what the run already took (loading, featurizing, this measurement);
and leaves a margin for what it cannot time ahead: the test predictions and plots at the end, checkpoint
writes, a busier computer. After each epoch `replan` sizes the rest again from the mean speed of the epochs
so far. The learning-rate schedules (cosine, one-cycle) are functions of progress through the planned steps,
so they complete at whatever length the last plan set. The plan goes into last.pt, so --resume keeps it, and
into metrics.json.
"""
import copy
import math
import time

import torch

from toolkit import ranks
from toolkit.steps import evaluate, make_optimizer, steps_per_epoch, take, train_step

MARGIN = 0.06  # of the budget, kept back for the plots, checkpoints and noise


def final_evals(config, data):
    """Dev evaluations' worth of work after training: the test set (CIFAR-10's 10,000 images are two of
    dev's 5,000, IMDB's 25,000 reviews five), and with tta_shift the test and dev again, each at 3x the views
    of the per-epoch evaluation (train.end_epoch leaves the shifted ones out)."""
    test = data["test"][0].shape[0] / data["dev"][0].shape[0]
    return (test + 1) * 3 if config["tta_shift"] else test


def measure_step(model, data, config, augment=None, steps=4):
    """Seconds per training step of a copy of model (one warm-up step first), batch augmentation included;
    model itself is untouched."""
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model, config, data["train"][0].device)
    x, y = data["train"]
    scaler = torch.amp.GradScaler(x.device.type, enabled=False)
    gen = torch.Generator(device=x.device).manual_seed(config["seed"])
    size = min(config["batch_size"] // ranks.world_size() or 1, x.shape[0])  # a rank's share of the batch
    criterion = lambda logits, target: torch.nn.functional.cross_entropy(logits, target)
    for i in range(steps + 1):
        if i == 1:
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
        idx = torch.randint(0, x.shape[0], (size,), device=x.device, generator=gen)
        xb = take(x, idx) if augment is None else augment(take(x, idx), gen, idx, 1)
        train_step(model, optimizer, scaler, criterion, xb, y[idx], config["amp"])
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / steps


def measure_eval(model, data, config, batches=2, batch_size=2048):
    """Seconds to evaluate the whole dev split as each epoch does (without tta_shift's views, train.end_epoch),
    from `batches` batches of it."""
    x, y = data["dev"]
    config = {**config, "tta_shift": 0}
    n = min(x.shape[0], batches * batch_size)
    evaluate(model, take(x, torch.arange(min(n, batch_size), device=x.device)), None, config)  # warm-up
    start = time.perf_counter()
    evaluate(model, take(x, torch.arange(n, device=x.device)), None, config)
    return (time.perf_counter() - start) * x.shape[0] / n


def steps_that_fit(seconds, step_s, eval_s, steps_per_epoch, epochs, trained_epochs=0):
    """The most training steps, from an epoch boundary after `trained_epochs` epochs and in at most `epochs`
    more, that fit in `seconds` beside a dev evaluation after each epoch begun; 0 when not one step fits. An
    epoch after the run's first is begun only if its steps take at least as long as its evaluation: a few
    steps more would not change the dev accuracy the evaluation measures."""
    steps = 0
    for e in range(1, epochs + 1):
        fit = int((seconds - e * eval_s) // step_s)
        more = fit - (e - 1) * steps_per_epoch  # the steps epoch e would train
        if more <= 0 or (e > 1 or trained_epochs) and more * step_s < eval_s:
            break
        steps = min(fit, e * steps_per_epoch)
    return steps


def plan(model, data, config, started, augment=None):
    """{"budget_minutes", "samples_per_s", "step_s", "eval_s", "final_evals", "epochs", "planned_steps",
    "replanned_steps", "fits": false when not one step fitted and the plan takes one anyway}
    for a run that began at time.perf_counter() == started. The plan counts steps, not whole epochs: the last
    epoch may stop part way (whole epochs leave much of a budget unused when an epoch is long), and each
    epoch, the last included, ends with a dev evaluation. At least one step, at most
    config["epochs"] epochs. Under torchrun every rank measures and the slowest rank's figures make the one
    plan (the all-reduce of gradients is not timed)."""
    step_s, eval_s, spent = ranks.max_all([measure_step(model, data, config, augment),
                                           measure_eval(model, data, config), time.perf_counter() - started])
    per_epoch = steps_per_epoch(data["train"][0].shape[0], config)
    evals = final_evals(config, data)
    left = config["budget_minutes"] * 60 * (1 - MARGIN) - spent - evals * eval_s
    fit = steps_that_fit(left, step_s, eval_s, per_epoch, config["epochs"])
    steps = max(1, fit)
    return {"budget_minutes": config["budget_minutes"], "samples_per_s": config["batch_size"] / step_s,
            "step_s": step_s, "eval_s": eval_s, "final_evals": evals, "epochs": math.ceil(steps / per_epoch),
            "planned_steps": steps, "replanned_steps": [], "fits": fit > 0}


def mean_speed(history):
    """(seconds per training step, seconds per dev evaluation) over the epochs of history: the mean rather
    than the last epoch's, because on a shared computer one epoch's speed can swing far within a run."""
    train_s = sum(h["seconds"] - h["eval_seconds"] for h in history)
    return train_s / sum(h["steps"] for h in history), sum(h["eval_seconds"] for h in history) / len(history)


def replan(state, config, elapsed, step_s, eval_s):
    """After a whole epoch, `elapsed` seconds into the run whose epochs trained at step_s seconds a step and
    evaluated dev in eval_s: size the rest of the run again from that speed, towards the same end as the
    first plan. The first plan times only a few steps, and a computer's speed can change between those and
    the epochs after them; the schedule and lookahead read state.total_steps, so they stretch or shrink from
    where they are. The new total goes into state.plan["replanned_steps"] (and so into last.pt and
    metrics.json); a total equal to the steps done ends the run. Nothing to do once the planned steps are done."""
    done = (state.epoch - 1) * state.steps_per_epoch  # called between epochs: all of them whole
    if done >= state.total_steps:
        return
    step_s, eval_s, elapsed = ranks.max_all([step_s, eval_s, elapsed])  # the slowest rank sets the pace
    left = config["budget_minutes"] * 60 * (1 - MARGIN) - elapsed - state.plan["final_evals"] * eval_s
    total = done + steps_that_fit(left, step_s, eval_s, state.steps_per_epoch, config["epochs"] - state.epoch + 1,
                                  trained_epochs=state.epoch - 1)
    state.total_steps, state.epochs = total, math.ceil(total / state.steps_per_epoch)
    state.plan["replanned_steps"].append(total)
