"""The one training loop shared by every model: fit, its resumable state (last.pt), refit on train + dev,
and the run's files (model.pt, metrics.json, submission.csv). One step and evaluation are in steps.py.

Data arrive as tensors already on the device ({'train': (x, y), 'dev': (x, y), 'test': (x, y or None)});
a batch is a slice of a shuffled index, so there is no DataLoader and no per-sample collation.
"""
import copy
import importlib.metadata
import math
import platform
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from toolkit import budget, ranks
from toolkit.checkpoint import (Interrupted, config_hash, load_state, rng_states, safe_load, save_best, save_state,
                                set_rng_states, stop_requests)
from toolkit.files import write_json
from toolkit.logs import EpochLog, write_hparams
from toolkit.progress import progress_bar
from toolkit.steps import (amp_dtype, evaluate, make_optimizer, make_scheduler, seed_everything, steps_per_epoch, take,
                           train_step)
from toolkit.submission import write_predictions


def versions():
    """Package versions for metrics.json, read from the installed metadata: importing torchvision for its
    version alone would slow every run."""
    installed = {name: importlib.metadata.version(pkg) for name, pkg in
                 (("torchvision", "torchvision"), ("sklearn", "scikit-learn"))}
    return {"python": platform.python_version(), "torch": torch.__version__, **installed, "numpy": np.__version__}


def say(text, err=False):
    """Print on rank 0 only (one process: always)."""
    if ranks.is_main():
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


class TrainState:
    """What a run needs to stop at any step and continue exactly, as torchvision's checkpoint dict: model,
    optimizer, scheduler, grad scaler, EMA, epoch and step, the epoch's running sums, history, best-on-dev and
    every rank's RNG states. `save` writes model.pt's best weights where they changed, then last.pt (every rank
    calls it, rank 0 writes); `load` reads them, on this device and precision whatever they were saved on."""

    def __init__(self, model, config, steps_per_epoch, device, plan=None):
        self.model, self.config, self.device, self.plan = model, config, device, plan
        self.steps_per_epoch = steps_per_epoch
        # what this run trains: a budget's plan, as last re-planned, may end part way through an epoch
        planned = (plan.get("replanned_steps") or [plan["planned_steps"]])[-1] if plan else None
        self.total_steps = planned or config["epochs"] * steps_per_epoch
        self.epochs = math.ceil(self.total_steps / steps_per_epoch)
        self.optimizer = make_optimizer(model, config, device)
        self.scheduler = make_scheduler(self.optimizer, config, steps_per_epoch, lambda: self.total_steps)
        self.precision = amp_dtype(device, config["amp"]) or torch.float32
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == torch.float16)  # fp16 needs it
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config["ema"]), use_buffers=True) \
            if config["ema"] > 0 else None
        self.lookahead = [t.detach().clone() for t in float_tensors(model)] if config["lookahead"] else None
        self.gen = torch.Generator(device=device).manual_seed(config["seed"] + ranks.rank())  # augmentation
        self.epoch, self.step, self.sums, self.history, self.diverged = 1, 0, None, [], None
        # the run's seconds: those of the processes before a --resume, and this one's since `started`
        self.seconds_before, self.started = 0.0, time.perf_counter()
        self.best = {"dev_acc": -1.0, "dev_loss": math.inf, "epoch": None, "state": None, "preds": None}
        self.write_best, self.best_unsaved = None, False  # model.pt is written with last.pt, not at every best
        self.saved_at = time.perf_counter()
        self.log = None  # the run folder's EpochLog (rank 0), while fit trains

    @property
    def eval_model(self):
        """The averaged copy when EMA is on: what we evaluate and save."""
        return self.ema.module if self.ema is not None else self.model

    def seconds(self):
        return self.seconds_before + time.perf_counter() - self.started

    def save_due(self):
        """Whether checkpoint_minutes have passed since the last save (0: always)."""
        return time.perf_counter() - self.saved_at >= 60 * self.config["checkpoint_minutes"]

    def save(self, path):
        rngs = ranks.gather(rng_states(self.gen))  # each rank's: a resume on as many ranks is exact
        sums = None if self.sums is None else ranks.sum_all(self.sums.clone())  # the whole global batch's
        if ranks.is_main():
            self.flush_best()  # first: last.pt's record of the best epoch must find its weights in model.pt
            save_state(path, {
                "config": self.config, "plan": self.plan, "epoch": self.epoch, "step": self.step, "sums": sums,
                "history": self.history, "seconds": self.seconds(), "device": self.device.type,
                "precision": str(self.precision).removeprefix("torch."),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(), "lookahead": self.lookahead, "rng": rngs,
                "best": {k: self.best[k] for k in ("dev_acc", "dev_loss", "epoch", "preds")}})
        self.saved_at = time.perf_counter()

    def flush_best(self):
        """Write model.pt where the best weights changed since it was written (rank 0)."""
        if self.best_unsaved and self.write_best is not None:
            self.write_best()
            self.best_unsaved = False

    def load(self, path, state=None):
        """Restore from last.pt at path (or from its contents, already read by load_state)."""
        state = state or load_state(path, self.config)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        now = (self.device.type, str(self.precision).removeprefix("torch."))
        before = (state.get("device", now[0]), state.get("precision", now[1]))
        if state["scaler"] and self.scaler.is_enabled():  # fp16 both times; else the scaler starts afresh
            self.scaler.load_state_dict(state["scaler"])
        if before != now:
            say(f"resuming on {now[0]} in {now[1]}; trained so far on {before[0]} in {before[1]}"
                f"{': the fp16 loss scale starts afresh' if self.scaler.is_enabled() else ''}")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None:
            for avg, saved in zip(self.lookahead, state["lookahead"]):
                avg.copy_(saved)
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.seconds_before = state.get("seconds", 0.0)  # a last.pt from before it was saved: this process's only
        if state["sums"] is not None:  # rank 0 carries the saved sums, the others start from zero
            sums = torch.stack([torch.as_tensor(s).float() for s in state["sums"]]).to(self.device)
            self.sums = sums if ranks.is_main() else torch.zeros_like(sums)
        self.best.update(state["best"])
        if self.best["epoch"] is not None:  # the best weights live in model.pt, not twice on disk
            self.best["state"] = safe_load(path.parent / "model.pt", map_location=self.device)["model"]
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one dict before torchrun
        if not (ranks.rank() < len(rngs) and set_rng_states(rngs[ranks.rank()], self.gen)):
            # more ranks than saved them, or saved on another kind of device: fresh streams (matters only with
            # dropout or augmentation)
            seed = self.config["seed"] * 100_003 + ranks.rank() * 1009 + self.epoch
            seed_everything(seed)
            self.gen.manual_seed(seed)


def float_tensors(model):
    """The model's floating-point parameters and buffers (batch norm's running statistics), as airbench's
    lookahead averages them: views that share the model's storage."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]


@torch.no_grad()
def lookahead_step(state, steps_per_epoch):
    """airbench's lookahead, after every 5th step: average <- decay * average + (1 - decay) * weights, then
    weights <- average, with decay = 0.95^5 * progress^3 (no averaging early, heavy at the end); after the
    last planned step the weights become the average."""
    done, total = (state.epoch - 1) * steps_per_epoch + state.step, state.total_steps
    if done % 5 and done < total:
        return
    decay = 1.0 if done >= total else 0.95 ** 5 * (done / total) ** 3
    for avg, t in zip(state.lookahead, float_tensors(state.model)):
        avg.lerp_(t, 1 - decay)
        t.copy_(avg)


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


def keep_best_in(state, path, data):
    """Where and how state.flush_best writes the best weights: model.pt, with what predict needs."""
    state.write_best = lambda: save_best(path, state.best["state"], state.config, state.best["epoch"],
                                         state.best["dev_acc"], data["meta"], data["reader"])


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
