"""A time budget: the run plans its epochs from its own measured speed, sizes the schedule to them, records
the plan, and --resume keeps it. The measured speed is patched in, and the loading time left out of the
plans, so no test depends on the computer running it."""
import os
import signal
import time

import pytest

from toolkit import budget
from toolkit import train
from toolkit.config import load_config
from toolkit.run import run


def tiny(**changes):
    sets = {"dev_size": 100, "epochs": 5, "batch_size": 32, "hidden_dims": [16], "lr": 0.01, "min_df": 1,
            "device": "cpu", "name": "tiny", "scheduler": "cosine", "budget_minutes": 1.0, **changes}
    return load_config(None, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sets.items()])


def machine(monkeypatch, step_s, eval_s=1.0, epoch_step_s=None):
    """Pretend a training step takes step_s seconds and a dev evaluation eval_s, as the
    budget's first measurement sees it, and that the epochs then train at epoch_step_s (default step_s): the
    re-plan after each epoch sees those epochs' pretend speed and the pretend time they took."""
    monkeypatch.setattr(budget, "measure_step", lambda *a, **k: step_s)
    monkeypatch.setattr(budget, "measure_eval", lambda *a, **k: eval_s)
    plan = budget.plan  # as if loading took no time: the plans below then hold on any machine
    monkeypatch.setattr(budget, "plan", lambda model, data, config, started, augment=None:
                        plan(model, data, config, time.perf_counter(), augment))
    later = epoch_step_s or step_s
    replan = budget.replan
    pretend_elapsed = lambda state: sum(h["steps"] * later + eval_s for h in state.history)
    monkeypatch.setattr(budget, "replan", lambda state, config, elapsed, step_s, _eval_s:
                        replan(state, config, pretend_elapsed(state), later, eval_s))


def test_plan_takes_as_many_epochs_as_fit_in_the_budget_after_a_margin_and_the_final_test(imdb_dir, monkeypatch):
    from toolkit.tensors import load_task
    import torch
    config = tiny(epochs=20)
    data = load_task(config, imdb_dir, torch.device("cpu"))  # 300 training reviews: 10 steps of 32 an epoch
    machine(monkeypatch, step_s=0.5)
    plan = budget.plan(None, data, config, time.perf_counter())
    # the test set has as many reviews as dev: one evaluation's worth kept back for it
    # 60 s less 6% margin less one evaluation = 55.4 s, at 10 x 0.5 + 1 = 6 s an epoch: 9 epochs
    assert plan["final_evals"] == 1 and plan["epochs"] == 9 and plan["planned_steps"] == 90 and plan["fits"]
    assert plan["samples_per_s"] == 64
    # the plan counts steps: at 0.7 s, 7 evaluations leave 48.4 s for 69 steps, the 7th epoch stopping after 9
    # of its 10 (8 evaluations would leave 47.4 s, 67 steps: not one step of an 8th epoch)
    machine(monkeypatch, step_s=0.7)
    plan = budget.plan(None, data, config, time.perf_counter())
    assert plan["epochs"] == 7 and plan["planned_steps"] == 69
    # shifted views at the end (tta_shift) triple the test's evaluation and predict dev again: 6 evaluations,
    # so 50.4 s for 8 epochs and 2 steps of a 9th, whose 1 s is as long as its evaluation
    machine(monkeypatch, step_s=0.5)
    plan = budget.plan(None, data, {**config, "tta_shift": 1}, time.perf_counter())
    assert plan["final_evals"] == 6 and plan["epochs"] == 9 and plan["planned_steps"] == 82
    # a test set five times dev (IMDB's 25,000 reviews against 5,000): five evaluations, so 51.4 s for 8
    # epochs and 4 steps of a 9th, where one evaluation left 9 whole epochs
    plan = budget.plan(None, {**data, "test": (torch.zeros(500, 1), None)}, config, time.perf_counter())
    assert plan["final_evals"] == 5 and plan["epochs"] == 9 and plan["planned_steps"] == 84
    machine(monkeypatch, step_s=100.0)
    plan = budget.plan(None, data, config, time.perf_counter())
    assert plan["planned_steps"] == 1 and not plan["fits"]  # never less than one step, and it says it overruns
    machine(monkeypatch, step_s=0.001)
    assert budget.plan(None, data, config, time.perf_counter())["epochs"] == 20  # never more than the config's


def test_a_budgeted_run_trains_the_planned_epochs_on_a_schedule_sized_to_them(imdb_dir, tmp_path, monkeypatch):
    machine(monkeypatch, step_s=2.5)  # 26 s an epoch: 2 of the 5 epochs fit in a minute
    metrics = run(tiny(), imdb_dir, tmp_path)
    assert len(metrics["history"]) == 2 and metrics["config"]["epochs"] == 5  # the config is left as given
    assert metrics["budget"]["epochs"] == 2 and metrics["budget"]["completed_epochs"] == 2
    assert metrics["budget"]["completed_steps"] == metrics["budget"]["planned_steps"] == 20
    assert metrics["budget"]["replanned_steps"] == [20]  # after epoch 1, at the speed measured: the same plan
    assert metrics["history"][-1]["lr"] < 1e-9  # the cosine schedule ended with the planned epochs


def test_a_machine_slower_than_measured_gets_a_shorter_plan_after_the_first_epoch(imdb_dir, tmp_path, monkeypatch):
    # measured 1 s a step: all 5 epochs (56.4 s less 1 evaluation for the test less 5 after each epoch: about
    # 50 steps); the first epoch takes 2 s a step: 21 s gone, 34.4 s left less the test's evaluation: 16 steps
    # (each next epoch with its evaluation), epoch 3 part way
    machine(monkeypatch, step_s=1.0, epoch_step_s=2.0)
    metrics = run(tiny(scheduler="onecycle", warmup=0.2), imdb_dir, tmp_path)
    assert metrics["budget"]["planned_steps"] > 40 and metrics["budget"]["replanned_steps"][0] == 26
    assert metrics["budget"]["completed_steps"] == metrics["budget"]["replanned_steps"][-1] == 26
    assert [h["steps"] for h in metrics["history"]] == [10, 10, 6]
    assert metrics["history"][-1]["lr"] == pytest.approx(0.01 / 1000)  # one-cycle's end, at the new length


def test_a_budget_can_end_part_way_through_an_epoch_with_the_schedule_and_lookahead_complete(imdb_dir, tmp_path,
                                                                                          monkeypatch):
    machine(monkeypatch, step_s=3.0)  # 1 minute: about 17 steps, the second epoch partial
    metrics = run(tiny(lookahead=True), imdb_dir, tmp_path)
    planned, history = metrics["budget"]["planned_steps"], metrics["history"]
    assert planned % 10 and metrics["budget"]["epochs"] == len(history) == 2
    assert [h["steps"] for h in history] == [10, planned - 10] == [10, metrics["budget"]["completed_steps"] - 10]
    assert history[-1]["lr"] < 1e-9 and 0 < history[-1]["train_acc"] <= 1  # averaged over the examples it saw


def test_resume_keeps_the_plan_made_before_the_interruption(imdb_dir, tmp_path, monkeypatch):
    machine(monkeypatch, step_s=2.5)
    calls = {"n": 0}
    original = train.take

    def take(x, idx):  # a real SIGINT during the 14th batch: in epoch 2
        calls["n"] += 1
        if calls["n"] == 14:
            os.kill(os.getpid(), signal.SIGINT)
        return original(x, idx)
    monkeypatch.setattr(train, "take", take)
    with pytest.raises(train.Interrupted):
        run(tiny(), imdb_dir, tmp_path)
    monkeypatch.setattr(train, "take", original)
    machine(monkeypatch, step_s=0.001)  # a faster machine now: it must not re-plan
    metrics = run(tiny(), imdb_dir, tmp_path, folder="resume")
    assert len(metrics["history"]) == 2 and metrics["budget"]["epochs"] == 2


def test_an_epoch_is_begun_only_for_steps_that_take_as_long_as_its_evaluation():
    # epochs of 10 steps of 1 s, evaluations of 5 s: 30 s fit two whole epochs with their evaluations
    assert budget.steps_that_fit(30, 1.0, 5.0, 10, 5) == 20
    # 23 s: 3 steps of epoch 2 would cost a 5 s evaluation; it is not begun
    assert budget.steps_that_fit(23, 1.0, 5.0, 10, 5) == 10
    assert budget.steps_that_fit(25, 1.0, 5.0, 10, 5) == 15  # 5 steps of epoch 2: as long as its evaluation
    assert budget.steps_that_fit(7, 1.0, 5.0, 10, 5) == 2  # the first epoch is begun for any steps at all
    assert budget.steps_that_fit(5, 1.0, 5.0, 10, 5) == 0
    # a re-plan after 5 epochs: 7 s leave 2 steps of a 6th epoch, which a 5 s evaluation would follow
    assert budget.steps_that_fit(7, 1.0, 5.0, 10, 5, trained_epochs=5) == 0
    assert budget.steps_that_fit(10, 1.0, 5.0, 10, 5, trained_epochs=5) == 5


def test_a_replan_uses_the_mean_speed_of_the_epochs_so_far_not_the_last_one():
    history = [{"seconds": 31.0, "eval_seconds": 1.0, "steps": 10}, {"seconds": 51.0, "eval_seconds": 3.0, "steps": 10}]
    assert budget.mean_speed(history) == pytest.approx((3.9, 2.0))  # (30 + 48) s over 20 steps; (1 + 3) / 2


def test_the_plan_times_dev_as_each_epoch_evaluates_it_without_the_shifted_views(monkeypatch):
    import torch
    seen = []
    monkeypatch.setattr(budget, "evaluate", lambda model, x, y, config: seen.append(config["tta_shift"]))
    data = {"dev": (torch.zeros(10, 3, 4, 4), torch.zeros(10, dtype=torch.long))}
    budget.measure_eval(None, data, {"tta_shift": 1})
    assert seen == [0, 0]  # the warm-up and the timed evaluation


def test_a_budget_too_short_for_one_step_says_the_run_will_overrun_it(imdb_dir, tmp_path, monkeypatch, capsys):
    machine(monkeypatch, step_s=100.0)  # not one 100 s step fits in a minute
    metrics = run(tiny(), imdb_dir, tmp_path)
    assert metrics["budget"]["completed_steps"] == 1 and not metrics["budget"]["fits"]
    assert "too short for one step" in capsys.readouterr().err
