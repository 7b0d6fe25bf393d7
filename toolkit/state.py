"""A run's resumable state, as torchvision's checkpoint dict: what last.pt holds and model.pt's best weights, and
airbench's lookahead, which is part of it."""
import math
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from toolkit import ranks
from toolkit.checkpoint import load_state, rng_states, safe_load, save_best, save_state, set_rng_states
from toolkit.ranks import say
from toolkit.steps import amp_dtype, make_optimizer, make_scheduler, seed_everything


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


def keep_best_in(state, path, data):
    """Where and how state.flush_best writes the best weights: model.pt, with what predict needs."""
    state.write_best = lambda: save_best(path, state.best["state"], state.config, state.best["epoch"],
                                         state.best["dev_acc"], data["meta"], data["reader"])
