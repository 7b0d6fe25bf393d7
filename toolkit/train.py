"""The one training loop shared by every model: fit, refit on train + dev, and the run's files (model.pt,
metrics.json, submission.csv). Its resumable state (last.pt) is in state.py, one step and evaluation in steps.py.

Data arrive as tensors already on the device ({'train': (x, y), 'dev': (x, y), 'test': (x, y or None)});
a batch is a slice of a shuffled index, so there is no DataLoader and no per-sample collation.
"""
import copy
import importlib.metadata
import math
import platform
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from toolkit import budget, ranks
from toolkit.checkpoint import Interrupted, config_hash, load_state, save_best, stop_requests
from toolkit.files import write_json
from toolkit.logs import EpochLog, write_hparams
from toolkit.progress import progress_bar
from toolkit.ranks import say
from toolkit.state import TrainState, keep_best_in, lookahead_step
from toolkit.steps import evaluate, seed_everything, steps_per_epoch, take, train_step
from toolkit.submission import write_predictions


def versions():
    """Package versions for metrics.json, read from the installed metadata: importing torchvision for its
    version alone would slow every run."""
    installed = {name: importlib.metadata.version(pkg) for name, pkg in
                 (("torchvision", "torchvision"), ("sklearn", "scikit-learn"))}
    return {"python": platform.python_version(), "torch": torch.__version__, **installed, "numpy": np.__version__}


def train_one_epoch(state, step_model, train, config, augment, stop, last_path, soft=None):
    """Steps state.step... of epoch state.epoch, each rank on its slice of every global batch. Returns False
    when the loss turned non-finite (state.diverged says where). On Ctrl-C or SIGTERM all ranks stop at the
    same step, last.pt is written and Interrupted raised. soft: a teacher's probabilities [N, classes] for
    the training rows, mixed into the targets by config distill (distillation)."""
    x, y = train
    n, size, world = x.shape[0], config["batch_size"], ranks.world_size()
    steps = steps_per_epoch(n, config)
    last = min(steps, state.total_steps - (state.epoch - 1) * steps)  # a budget's last epoch may be partial
    # one permutation per epoch, the same on every rank, drawn from the seed and the epoch alone
    order = torch.Generator(device=x.device).manual_seed(config["seed"] * 100_003 + state.epoch)
    perm = torch.randperm(n, device=x.device, generator=order)
    if state.sums is None:  # summed loss and correct count, kept on the device: no sync per step
        state.sums = torch.zeros(2, device=x.device)
    state.model.train()
    todo = range(state.step, last)
    bar = progress_bar(todo, f"{config['name']} {state.epoch}/{state.epochs}") if ranks.is_main() \
        else tqdm(todo, disable=True)  # under torchrun rank 0 draws the one bar
    for i in bar:
        idx = perm[i * size:(i + 1) * size]
        mine = ranks.shard(idx)
        xb, yb = take(x, mine), y[mine]
        target = yb if soft is None else distilled_targets(soft[mine], yb, config["distill"])
        if augment is not None:
            xb = augment(xb, state.gen, mine, state.epoch)
        # DDP averages the ranks' gradients; each rank's summed loss over (global batch / ranks) makes that
        # average the global batch's mean gradient, however unevenly the last batch splits
        share = len(idx) / world
        criterion = lambda logits, target: F.cross_entropy(logits, target, label_smoothing=config["label_smoothing"],
                                                           reduction="sum") / share
        logits, loss = train_step(step_model, state.optimizer, state.scaler, criterion, xb, target, config["amp"])
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
        state.sums += torch.stack([loss.detach() * share, (logits.argmax(1) == yb).sum()])
        state.step = i + 1
        if state.lookahead is not None:
            lookahead_step(state, steps)
        # every 20 steps (and at once on a signal in one process) the ranks agree on stopping and divergence:
        # one all_reduce of two numbers: too dear every step under gloo (docs/scaling.md)
        if stop["signal"] and world == 1 or i % 20 == 19 or i == last - 1:
            signum, bad = ranks.max_all([stop["signal"] or 0, 0 if math.isfinite(loss.item()) else 1])
            if bad:
                state.diverged = {"epoch": state.epoch, "step": i + 1}
                return False
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if signum:
                state.save(last_path)
                raise Interrupted(int(signum), last_path)
    return True


def distilled_targets(probs, labels, weight):
    """Each row's training target: weight x the teacher's probabilities + (1 - weight) x the one-hot label."""
    return torch.lerp(F.one_hot(labels, probs.shape[1]).to(probs.dtype), probs, weight)


def end_epoch(state, data, config, t0, out_dir):
    """Evaluate on dev, record the epoch, keep the best weights in model.pt, move on to the next epoch."""
    # the rows trained: all, or whole batches where the last is dropped or a budget's last epoch stopped part way
    whole = state.step >= state.steps_per_epoch and not config["drop_last"]
    n = data["train"][0].shape[0] if whole else min(data["train"][0].shape[0], state.step * config["batch_size"])
    train_loss, train_acc = (ranks.sum_all(state.sums) / n).tolist()
    t_eval = time.perf_counter()
    ranks.same_buffers(state.eval_model)
    # the shifted views (tta_shift) triple an evaluation; the checkpoint is chosen without them, and finish
    # predicts the best checkpoint's dev and test with them
    dev_loss, dev_acc, dev_preds = evaluate(state.eval_model, *data["dev"], {**config, "tta_shift": 0})
    h = {"epoch": state.epoch, "steps": state.step, "train_loss": train_loss, "train_acc": train_acc,
         "dev_loss": dev_loss, "dev_acc": dev_acc, "seconds": time.perf_counter() - t0,
         "eval_seconds": time.perf_counter() - t_eval, "lr": state.optimizer.param_groups[0]["lr"],
         "precision": str(state.precision).removeprefix("torch.")}
    state.history.append(h)
    if state.log:
        state.log.epoch(h)
    say(f"{config['name']} epoch {state.epoch}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
        f"dev loss {dev_loss:.4f} acc {dev_acc:.4f} | {h['seconds']:.1f}s")
    # the best epoch by dev accuracy, or by dev log loss where the submission holds probabilities
    if dev_acc > state.best["dev_acc"] if data["meta"]["metric"] == "accuracy" else dev_loss < state.best["dev_loss"]:
        state.best = {"dev_acc": dev_acc, "dev_loss": dev_loss, "epoch": state.epoch, "preds": dev_preds,
                      "state": copy.deepcopy(state.eval_model.state_dict())}
        state.best_unsaved = True  # written with the next last.pt, or at the end
    state.epoch, state.step, state.sums = state.epoch + 1, 0, None


def fit(model, data, config, out_dir, augment=None, extra=None, resume=False, started=None):
    """Train, keep the best-on-dev weights, test them, write OUT files (rank 0); return the metrics dict.

    augment(xb, generator, idx, epoch) -> xb runs on each training batch (whole-batch, on the device). resume=True
    continues from out_dir/last.pt. Ctrl-C or SIGTERM saves last.pt after the current step and raises
    Interrupted; a non-finite loss ends the run early with "diverged" in metrics.json. Under torchrun the
    ranks train one model data-parallel on slices of config's (global) batch_size. With budget_minutes the
    steps come from budget.plan, measured here and re-planned after every epoch at the mean speed so far
    (budget.replan); --resume keeps the plan from last.pt as it stood. `started` is when the run began
    (time.perf_counter()), default now."""

    start = time.perf_counter()
    started = started or start
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.pt"
    plan, saved = None, None
    if resume:
        saved = load_state(last_path, config)  # checked once here: it holds a budget's plan, and the state
        plan = saved.get("plan")
    elif config["budget_minutes"]:
        plan = budget.plan(model, data, config, started, augment)
        steps = plan["planned_steps"]
        say(f"budget {config['budget_minutes']:g} min: {plan['samples_per_s']:,.0f} examples/s measured, "
            f"{plan['epochs']} of {config['epochs']} epochs planned ({steps} step{'s' * (steps != 1)})")
        if not plan["fits"]:
            say(f"budget {config['budget_minutes']:g} min: too short for one step and the test after "
                f"{time.perf_counter() - started:.0f}s of loading; the run trains one step and will overrun it",
                err=True)
    state, step_model = prepare(model, data, config, plan)
    state.started = start
    keep_best_in(state, out_dir / "model.pt", data)
    if resume:
        state.load(last_path, saved)
        say(f"resuming {config['name']} at epoch {state.epoch}, step {state.step}")
    state.log = EpochLog(out_dir, state.history) if ranks.is_main() else None
    with stop_requests() as stop, closing_log(state):
        while state.epoch <= state.epochs:
            t0 = time.perf_counter()
            soft = data.get("soft")  # a teacher's probabilities, when distilling
            if not train_one_epoch(state, step_model, data["train"], config, augment, stop, last_path, soft):
                say(f"{config['name']} diverged in epoch {state.epoch}: non-finite loss at its check after step "
                    f"{state.diverged['step']} (checked every 20 steps and at the epoch's end); lr {config['lr']} "
                    f"is probably too high", err=True)
                break
            end_epoch(state, data, config, t0, out_dir)
            if plan and not resume:  # the time this process has seen is the run's: re-plan from it
                before = state.total_steps
                budget.replan(state, config, time.perf_counter() - started, *budget.mean_speed(state.history))
                if state.total_steps != before:
                    say(f"budget: {state.total_steps} steps in {state.epochs} epochs re-planned at the speed of "
                        f"epochs 1-{state.epoch - 1} (was {before})")
            signum, due = ranks.max_all([stop["signal"] or 0, state.save_due()])  # rank 0's clock for all
            if signum or due:
                state.save(last_path)
            if signum:
                raise Interrupted(int(signum), last_path)
    if plan:
        done = sum(epoch_steps(h, state) for h in state.history)
        extra = {**(extra or {}), "budget": {**plan, "completed_steps": done, "completed_epochs": len(state.history)}}
    return finish(state, data, config, out_dir, extra)


@contextmanager
def closing_log(state):
    """Close the run's events file when the loop stops, however it stops (finish writes the hparams)."""
    try:
        yield
    finally:
        if state.log:
            state.log.close()


def prepare(model, data, config, plan=None):
    """(TrainState, the model to step) for fit and refit: seeded RNGs (dropout masks differ between ranks;
    rank 0's are one process's), DDP under torchrun, cuDNN's search for the fastest convolutions on a GPU,
    torch.compile when configured."""
    device = data["train"][0].device
    seed_everything(config["seed"] + ranks.rank())
    if device.type == "cuda":  # one search per input shape; left out where the algorithms must be deterministic
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    step_model = ranks.wrap(model, device)
    state = TrainState(getattr(step_model, "module", step_model), config,
                       steps_per_epoch(data["train"][0].shape[0], config), device, plan)
    if not config["compile"]:
        return state, step_model
    # the training steps only: with drop_last they have one batch shape, so one compilation. Evaluation runs
    # uncompiled: its batches have several shapes (2,048 and the remainders), each another compilation
    say("compiling the model for its training steps (torch.compile): the first step waits for it")
    return state, torch.compile(step_model)


def epoch_steps(h, state):
    """Steps an epoch of history trained."""
    return h["steps"]


def fit_fixed(model, data, config, out_dir, extra=None):
    """For a model fitted outside the loop (model = "logreg"): evaluate it on train and dev as one epoch, keep
    it as the best, then test it and write the same files as fit."""
    start = time.perf_counter()
    device = data["train"][0].device
    state = TrainState(model, config, 1, device)
    state.step, state.started = 1, start  # the fit is its one whole epoch
    out_dir.mkdir(parents=True, exist_ok=True)
    train_loss, train_acc, _ = evaluate(model, *data["train"], config)
    n = data["train"][0].shape[0]
    # end_epoch sums the ranks' shares
    state.sums = torch.tensor([train_loss * n, train_acc * n], device=device) / ranks.world_size()
    keep_best_in(state, out_dir / "model.pt", data)
    state.log = EpochLog(out_dir, []) if ranks.is_main() else None
    with closing_log(state):
        end_epoch(state, data, config, start, out_dir)
    return finish(state, data, config, out_dir, extra)


def finish(state, data, config, out_dir, extra=None):
    """Test the best weights, write metrics.json, plots and submission.csv (rank 0); keep model.pt where the
    config keeps weights; drop last.pt."""
    test_acc, best = None, state.best
    final_dev_acc, dev_preds = best["dev_acc"] if best["epoch"] else None, best["preds"]
    if best["state"] is not None:
        state.eval_model.load_state_dict(best["state"])
        if config["tta_shift"]:  # dev as the test is predicted, with the views end_epoch leaves out
            _, final_dev_acc, dev_preds = evaluate(state.eval_model, *data["dev"], config)
        x_test, y_test = data["test"]
        _, test_acc, preds, *probs = evaluate(state.eval_model, x_test, y_test, config,
                                              probabilities=needs_probabilities(config, data))
        if ranks.is_main():
            if config["plots"]:
                from toolkit.plots import plot_dev_predictions  # matplotlib: imported only when drawing
                plot_dev_predictions(*data["dev"], dev_preds, data["meta"], out_dir)
            # also where the test has labels
            write_predictions(out_dir / "submission.csv", data["form"], preds, probs, data["meta"],
                              config["probabilities"])
    metrics = {"name": config["name"], "config": config, "config_hash": config_hash(config), "seed": config["seed"],
               "versions": versions(), "device": str(state.device),
               "precision": str(state.precision).removeprefix("torch."), "world_size": ranks.world_size(),
               "backend": ranks.backend(), "params": sum(p.numel() for p in state.model.parameters()),
               "train_examples": data["train"][0].shape[0],
               "history": state.history, "best_epoch": best["epoch"],
               "best_dev_acc": best["dev_acc"] if best["epoch"] else None, "final_dev_acc": final_dev_acc,
               "test_acc": test_acc, "diverged": state.diverged is not None, "diverged_at": state.diverged,
               "seconds": state.seconds(), **data["meta"], **(extra or {})}
    if ranks.is_main():
        if config["keep_weights"]:
            state.flush_best()
        write_json(out_dir / "metrics.json", metrics)
        write_hparams(out_dir, config, metrics)
        if state.history and config["plots"]:
            from toolkit.plots import plot_run  # matplotlib: imported only when drawing
            plot_run(state.history, out_dir, config["name"])
        (out_dir / "last.pt").unlink(missing_ok=True)  # finished: nothing to resume (up to 1 GB for sentiment)
        if not config["keep_weights"]:
            (out_dir / "model.pt").unlink(missing_ok=True)  # written only for a resume, if the run was long
    ranks.barrier()  # every rank returns once the files exist (a sweep's summary reads them)
    return metrics


def refit(model, data, config, epochs, out_dir, augment=None):
    """Train model (fresh weights) on data["train"], the run's train + dev rows, for `epochs` epochs (the
    count the dev-selected run found best; 0 for a model fitted outside the loop) and write submission.csv
    and model_refit.pt from it. Nothing can score it on dev, so the run's dev figures stay the dev-selected
    model's. A signal stops it like any command outside training: the dev-selected files are complete by
    then. Returns its record for metrics.json."""
    start = time.perf_counter()
    config = {**config, "epochs": epochs}  # a schedule (cosine, one-cycle) completes in the refit's epochs
    state, step_model = prepare(model, data, config)
    record = {"epochs": epochs, "train_examples": data["train"][0].shape[0]}
    for _ in range(epochs):
        if not train_one_epoch(state, step_model, data["train"], config, augment, {"signal": None}, None):
            say(f"{config['name']} refit diverged at epoch {state.epoch}; submission.csv stays the dev-selected "
                f"model's", err=True)
            return {**record, "diverged_at": state.diverged, "seconds": time.perf_counter() - start}
        state.epoch, state.step, state.sums = state.epoch + 1, 0, None
    ranks.same_buffers(state.eval_model)
    _, test_acc, preds, *probs = evaluate(state.eval_model, *data["test"], config,
                                          probabilities=needs_probabilities(config, data))
    if ranks.is_main():
        if config["keep_weights"]:
            save_best(out_dir / "model_refit.pt", state.eval_model.state_dict(), config, epochs, None, data["meta"],
                      data["reader"])
        write_predictions(out_dir / "submission.csv", data["form"], preds, probs, data["meta"], config["probabilities"])
    return {**record, "test_acc": test_acc, "seconds": time.perf_counter() - start}


def needs_probabilities(config, data):
    """Whether the test predictions need their probabilities: for probabilities.csv, or a submission of them."""
    return config["probabilities"] or data["form"]["target"] != "label"
