"""A time budget (config `budget_minutes`): the run measures its own speed on this machine, then plans how
many epochs fit, so that the whole run, evaluation and files included, ends within the budget.

The plan is made once, before the first epoch, from
  step_s    seconds per training step: a few steps of a throwaway copy of the model and optimizer, after
            one warm-up step (the first step of a fresh model pays one-off costs: allocation, oneDNN
            kernel choice);
  eval_s    seconds to evaluate dev once: a few batches, scaled to the whole split;
  spent_s   what the run already took (loading, featurizing, this measurement);
and leaves a margin for what it cannot time ahead: the test predictions and plots at the end, checkpoint
writes, a busier machine. The learning-rate schedule (cosine, one-cycle) is sized to the planned epochs,
so it completes. The plan goes into last.pt, so --resume keeps it, and into metrics.json.
"""
import copy
import math
import time

import torch

import ranks
from train import evaluate, make_optimizer, take, train_step

MARGIN = 0.06        # of the budget, kept back for the test predictions, plots, checkpoints and noise
FINAL_EVALS = 2.0    # the test set and the last plots cost about two dev evaluations


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
        xb = take(x, idx) if augment is None else augment(take(x, idx), gen)
        train_step(model, optimizer, scaler, criterion, xb, y[idx], config["amp"])
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / steps


def measure_eval(model, data, config, batches=2, batch_size=2048):
    """Seconds to evaluate the whole dev split, from `batches` batches of it."""
    x, y = data["dev"]
    n = min(x.shape[0], batches * batch_size)
    evaluate(model, take(x, torch.arange(min(n, batch_size), device=x.device)), None, config)  # warm-up
    start = time.perf_counter()
    evaluate(model, take(x, torch.arange(n, device=x.device)), None, config)
    return (time.perf_counter() - start) * x.shape[0] / n


def plan(model, data, config, started, augment=None):
    """{"budget_minutes", "samples_per_s", "step_s", "eval_s", "epochs", "planned_steps"} for a run that began
    at time.perf_counter() == started. The plan counts steps, not whole epochs: the last epoch may stop part
    way (whole epochs left a quarter of a 12-minute budget unused when one epoch took 4 minutes), and each
    epoch, the last included, ends with a dev evaluation. At least one step, at most config["epochs"] epochs.
    Under torchrun every rank measures and the slowest rank's figures make the one plan (the all-reduce of
    gradients is not timed)."""
    step_s, eval_s, spent = ranks.max_all([measure_step(model, data, config, augment),
                                           measure_eval(model, data, config), time.perf_counter() - started])
    steps_per_epoch = math.ceil(data["train"][0].shape[0] / config["batch_size"])
    budget_s = config["budget_minutes"] * 60
    left = budget_s * (1 - MARGIN) - spent - FINAL_EVALS * eval_s
    steps = 1
    for epochs in range(1, config["epochs"] + 1):  # the steps that fit beside `epochs` dev evaluations
        fit = int((left - epochs * eval_s) // step_s)
        if fit <= (epochs - 1) * steps_per_epoch:  # not even one step of this epoch fits
            break
        steps = min(fit, epochs * steps_per_epoch)
    return {"budget_minutes": config["budget_minutes"], "samples_per_s": config["batch_size"] / step_s,
            "step_s": step_s, "eval_s": eval_s, "epochs": math.ceil(steps / steps_per_epoch), "planned_steps": steps}
