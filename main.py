"""Train and compare PyTorch classifiers: an IMDB sentiment MLP, a Fashion-MNIST MLP, a CIFAR-10 CNN, and the
same on your own texts or images laid out as Kaggle ships them, with sweeps that plot themselves and a
Kaggle submission.csv from every run.

A user mistake ends as one line on stderr and exit code 2; a fault of the machine (disk full, read-only or
vanished folder, permission denied, out of memory) as one line and exit code 1.

  python main.py run CONFIG [--data-dir DIR] [--out DIR] [--set key=value ...] [--resume | --overwrite]
  python main.py explore structures|activations|learning-rates|init [--config CONFIG] [--data-dir DIR] [--set ...]
  python main.py explore theory [--out DIR]   the written homework's claims, checked numerically
  python main.py explore sgd-learning-rates|scratch [--data-dir DIR] [--out DIR] [--set ...]   by-hand homework
  python main.py explore gradcheck|backprop [--out DIR]   numpy layers vs autograd; backprop three ways, timed
  python main.py predict RUN_DIR --test FILE|FOLDER [--out submission.csv] [--probabilities]
  python main.py bench [--data-dir DIR] [--out DIR] [--quick]   toolkit vs textbook loop vs scikit-learn
  python main.py plot SWEEP_DIR|RUN_DIR [--data-dir DIR]   redraw plots from saved metrics (and model.pt)
  python main.py default [--data-dir DIR] [--out DIR] [--set ...] [--force]   what `make run` runs
"""
import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import UserError
from toolkit.system import exit_now, ignore_sigterm_while_ranks_start, set_allocator
from toolkit.system import huge_pages  # noqa: F401  (a notebook asks for it: main.huge_pages())

ignore_sigterm_while_ranks_start()  # before the heavy imports: see toolkit/system.py

SWEEPS = ["structures", "activations", "learning-rates", "init", "sgd-learning-rates"]  # toolkit/sweeps.py
BY_HAND = ["gradcheck", "backprop", "scratch"]  # byhand/: the numpy layers
SETTINGLESS = ["theory", "gradcheck", "backprop"]  # explorations with no config, so nothing to --set
EXPLORATIONS = [*SWEEPS[:4], "theory", "sgd-learning-rates", *BY_HAND]
DEFAULT_CONFIGS = [Path(__file__).resolve().parent / "configs/fashion_mlp.toml"]  # after the structures sweep


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="main.py", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "run": sub.add_parser("run", help="train one configuration"),
        "explore": sub.add_parser("explore", help="run a sweep"),
        "default": sub.add_parser("default", help="the default experiment suite (make run)"),
    }
    commands["run"].add_argument("config", help="a configs/*.toml file")
    commands["run"].add_argument("--resume", action="store_true",
                                 help="continue the newest unfinished run of this config in OUT/<name>[-N] "
                                      "from its last.pt")
    commands["run"].add_argument("--overwrite", action="store_true",
                                 help="replace the results in OUT/<name> (else a used folder leaves it to "
                                      "OUT/<name>-2, -3, ...)")
    for name in ("explore", "default"):
        commands[name].add_argument("--force", action="store_true", help="re-run configurations already finished")
    commands["explore"].add_argument("sweep", choices=EXPLORATIONS)
    commands["explore"].add_argument("--config", help=f"the base config of a sweep ({', '.join(SWEEPS)}), "
                                                      f"instead of the homework's")
    for p in commands.values():
        p.add_argument("--data-dir", help="the data folder: imdb/, fashion_mnist/, cifar10/, or your own data as "
                                          "Kaggle ships it (default: $DATA_DIR or data/)")
        p.add_argument("--out", default="runs", help="results folder (default: runs)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
        p.add_argument("--deterministic", action="store_true",
                       help="torch.use_deterministic_algorithms(True): reproducible GPU runs, at some speed")
    bench = sub.add_parser("bench", help="measure the toolkit against the textbook loop and scikit-learn")
    bench.add_argument("--data-dir")
    bench.add_argument("--out", default="runs")
    bench.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, 2 CNN steps")
    predict = sub.add_parser("predict", help="write a submission for new data with a run's model")
    predict.add_argument("run_dir")
    predict.add_argument("--test", "--images", "--texts", dest="test", required=True,
                         help="the data to predict: an .npz of images, a .csv/.tsv/.jsonl file, a folder of images, "
                              "or a folder laid out as the run's data (with its sample submission)")
    predict.add_argument("--out", default="submission.csv")
    predict.add_argument("--probabilities", action="store_true",
                         help="also write probabilities.csv beside it: Id and one probability per class")
    plot = sub.add_parser("plot", help="redraw the plots of a sweep (from its metrics.json files) or of a run")
    plot.add_argument("sweep_dir", metavar="DIR", help="a sweep folder, or a run folder (needs --data-dir)")
    plot.add_argument("--data-dir", help="for a run folder: the data its dev split comes from")
    for name, handler in (("run", run_command), ("explore", explore_command), ("default", default_command),
                          ("bench", bench_command), ("predict", predict_command), ("plot", plot_command)):
        sub.choices[name].set_defaults(handler=handler)
    return parser.parse_args(argv)


def check_out(out):
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")


def say_last(text):
    """Write a last line to stderr in one write. print() writes the text and then its newline, and under
    torchrun every rank meets the same mistake at once: on their shared pipe two ranks' lines can come out as
    "error: ...error: ...\n\n" (a CI run found one intact line of two). One write of under 4 KiB to a pipe
    is never interleaved (POSIX PIPE_BUF)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def prefetch_data(args):
    """Give a run's .npz files a head start: they inflate while torch imports. A config or data folder that
    cannot be read starts nothing here: the run reads them again inside main's error handling, which reports
    the problem."""
    from toolkit.config import load_config
    from toolkit.data import prefetch_npz
    from toolkit.tasks import TASKS
    try:
        prefetch_npz(TASKS[load_config(args.config, args.set)["task"]], args.data_dir)
    except Exception:  # an unreadable config, a data folder this user may not read (PermissionError)
        return


def resume_launcher(world_size):
    """The torchrun that continues a run of `world_size` ranks: --standalone where they all ran on this machine
    (a fresh port, as the first start had), else the rendezvous options, which only the user knows."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if local == world_size:
        return f"torchrun --standalone --nproc_per_node={world_size}"
    return f"torchrun --nnodes={world_size // local} --nproc_per_node={local} <your --rdzv options>"


def main(argv=None):
    """Exit code: 0 on success, 1 for a fault of the machine (one line on stderr naming the path or setting
    and what was kept) or a diverged run, 2 for a user mistake (one line on stderr, no traceback), 130/143
    when Ctrl-C/SIGTERM stopped training (its state saved for --resume)."""
    args = parse_args(argv)  # before any heavy import: --help and argument errors answer at once
    if args.command == "run":
        prefetch_data(args)
    try:
        from toolkit.checkpoint import Interrupted  # loads torch: seconds
        from toolkit.faults import Fault, line
        from toolkit import ranks
    except KeyboardInterrupt:  # Ctrl-C while torch loads
        say_last("stopped by Ctrl-C while starting: nothing was written")
        return 130
    try:
        return args.handler(args) or 0
    except UserError as e:  # under torchrun every rank meets the same mistake and says so
        ranks.exiting()
        say_last(f"error: {e}")
        return 2
    except Interrupted as e:
        ranks.exiting()
        skip = ("--resume", "--force", "--overwrite")
        again = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a not in skip)
        launcher = "python" if ranks.world_size() == 1 else resume_launcher(ranks.world_size())
        if ranks.is_main():
            say_last(f"{e}\nto continue: {launcher} main.py {again}{' --resume' if args.command == 'run' else ''}")
        return e.code
    except KeyboardInterrupt:  # Ctrl-C outside training (loading, featurizing, a refit, a sweep's summary)
        ranks.exiting()
        say_last("stopped by Ctrl-C outside training: nothing to resume; every file already written is complete")
        return 130
    except Fault as e:  # a fault of the machine during a run, with what its folder kept
        say_last(f"error: {e}")
        return 1
    except Exception as e:  # the same outside a run (reading data, a sweep's summary, predict, plot), else a bug
        if ranks.lost_peer(e):  # under torchrun: another rank died or hung
            ranks.exiting()
            say_last(f"error: rank {ranks.rank()}: lost contact with another rank ({ranks.short_reason(e)}): it "
                     f"died or hung; stopping (last.pt keeps the state of the last finished epoch for --resume)")
            return 1
        if line(e) is None:
            raise
        say_last(f"error: {line(e)}")
        return 1
    finally:
        ranks.teardown()


# ---------------------------------------------------------------- one handler per subcommand
# Each imports what it needs when called, so `--help` and argument errors answer without loading torch.

def prepare(args, kind=None):
    """What every training command sets for its process before torch allocates: the output folder checked, the
    CPU allocator for the task's kind (None: several), and --deterministic."""
    check_out(args.out)
    set_allocator(kind)
    if args.deterministic:
        use_deterministic_algorithms(True)  # for the whole process, which ends with the command


def use_deterministic_algorithms(on):
    """torch.use_deterministic_algorithms(on), with the cuBLAS workspace setting it needs on a GPU."""
    import torch
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)


@contextmanager
def deterministic_algorithms(on):
    """use_deterministic_algorithms(on) within the block; after it, as it was: a notebook's kernel keeps the user's
    own setting."""
    import torch
    before, workspace = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def run_command(args):
    from toolkit.config import load_config
    from toolkit.run import run
    from toolkit.tasks import TASKS
    config = load_config(args.config, args.set)
    prepare(args, TASKS[config["task"]].kind)
    if args.resume and args.overwrite:
        raise UserError("--resume continues a run, --overwrite starts one afresh: give one of them")
    folder = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    metrics = run(config, args.data_dir, args.out, folder=folder)
    print_result(metrics, metrics["run_dir"])
    return 1 if metrics["diverged"] else 0


def explore_command(args):
    if args.sweep in SETTINGLESS and args.set:  # not run as if they were taken
        raise UserError(f"explore {args.sweep} has no settings; drop --set {args.set[0]}")
    if args.config and args.sweep not in SWEEPS:
        raise UserError(f"explore {args.sweep} takes no --config (the sweeps that do: {', '.join(SWEEPS)})")
    prepare(args)
    if args.sweep == "theory":
        explore_theory(args.out)
    elif args.sweep in BY_HAND:
        from byhand.checks import explore
        return explore(args.sweep, args.data_dir, args.out, args.set, args.force)
    else:
        from toolkit.sweeps import SWEEPS as sweeps
        sweeps[args.sweep](args.data_dir, args.out, args.set, args.force, base=args.config)


def default_command(args):
    from toolkit.config import load_config, parse_override
    from toolkit.run import run_or_skip
    from toolkit.sweeps import explore_mlp_structures
    prepare(args)
    # like a sweep, a re-run skips what finished and resumes what was interrupted
    # the structures sweep sets hidden_dims itself; the other settings go to it and to the configs after it
    explore_mlp_structures(args.data_dir, args.out, [s for s in args.set if parse_override(s)[0] != "hidden_dims"],
                           args.force)
    for path in DEFAULT_CONFIGS:
        config = load_config(path, args.set)
        metrics = run_or_skip(config, args.data_dir, Path(args.out), args.force)
        print_result(metrics, Path(args.out) / config["name"])


def bench_command(args):
    from toolkit.bench import bench
    check_out(args.out)
    bench(args.data_dir, args.out, args.quick)


def predict_command(args):
    from toolkit.predict import predict
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; name the .csv file to write")
    preds = predict(args.run_dir, args.test, args.out, args.probabilities)
    also = f" and {Path(args.out).with_name('probabilities.csv')}" if args.probabilities else ""
    print(f"{len(preds)} predictions written to {args.out}{also}")


def plot_command(args):
    if (Path(args.sweep_dir) / "metrics.json").is_file():
        from toolkit.predict import redraw_run
        redraw_run(args.sweep_dir, args.data_dir)  # holds the folder, as a run does
        return
    if not Path(args.sweep_dir).is_dir():
        raise UserError(f"{args.sweep_dir}: no such folder (plot takes a run's or a sweep's folder)")
    from toolkit.sweeps import redraw_sweep
    redraw_sweep(args.sweep_dir)  # holds the folder, as a sweep does


# ---------------------------------------------------------------- the same experiments as Python functions
# For notebooks and the homework skeleton (`import main; main.explore_mlp_structures(epochs=5)`). Keyword
# arguments become the `--set key=value` overrides the command line passes: any key of config.py works
# (lr=3e-3, batch_size=128, max_train=400, ...), and a wrong one raises UserError naming it, which a notebook
# shows as one line in its own words (errors.py). They leave the process as they found it: the allocator and
# huge pages are the caller's to ask for (huge_pages()), and deterministic=True lasts the call.
# Each imports the heavy modules when called, so `import main` and `main.py --help` do not load torch.

def as_overrides(settings):
    """{'epochs': 2, 'device': 'cpu'} -> ['epochs=2', "device='cpu'"]; None means keep the config's value."""
    return [f"{key}={value!r}" for key, value in settings.items() if value is not None]


def config_path(config):
    """A config file's path as given, else relative to this repository (configs/...)."""
    return Path(config) if Path(config).is_file() else Path(__file__).resolve().parent / config


def run_sweep(name, data_dir, out, force, config, deterministic, settings):
    from toolkit import sweeps
    base = config and config_path(config)
    with deterministic_algorithms(deterministic):
        metrics = getattr(sweeps, name)(data_dir, out, as_overrides(settings), force, base=base)
    return {m["name"]: m for m in metrics}


def explore_mlp_structures(data_dir=None, out="runs", epochs=None, device=None, force=False, config=None,
                           deterministic=False, **settings):
    """IMDB MLP with hidden dims [], [512], [512, 512], [512, 512, 512]; plots and summary.csv in
    OUT/structures/. Returns {config name: metrics}: each with its per-epoch `history` (train/dev loss and
    accuracy, what the plots show), `best_dev_acc`, `best_epoch` and `test_acc` (None when withheld).
    Finished configurations are skipped on a re-run unless force=True; data_dir defaults to $DATA_DIR;
    config names another base config (configs/texts.toml with your own texts' data_dir); deterministic=True
    runs them with torch's deterministic algorithms (reproducible on a GPU)."""
    return run_sweep("explore_mlp_structures", data_dir, out, force, config, deterministic,
                     dict(epochs=epochs, device=device, **settings))


def explore_mlp_activations(data_dir=None, out="runs", epochs=None, device=None, force=False, config=None,
                            deterministic=False, **settings):
    """One 512 hidden layer with Sigmoid, Tanh, ReLU, GELU; OUT/activations/. Returns as explore_mlp_structures."""
    return run_sweep("explore_mlp_activations", data_dir, out, force, config, deterministic,
                     dict(epochs=epochs, device=device, **settings))


def explore_mlp_learning_rates(data_dir=None, out="runs", epochs=None, device=None, force=False, config=None,
                               deterministic=False, **settings):
    """One 512 hidden layer at lr 1e-4 ... 1e-2; OUT/learning-rates/. Returns as explore_mlp_structures."""
    return run_sweep("explore_mlp_learning_rates", data_dir, out, force, config, deterministic,
                     dict(epochs=epochs, device=device, **settings))


def run_config(config, data_dir=None, out="runs", epochs=None, device=None, force=False, deterministic=False,
               **settings):
    """Train one configs/*.toml file (path relative to here or to this repository) into OUT/<name>/, as
    `main.py run` does; a finished run with the same config and data is skipped unless force=True, an
    interrupted one resumed. Returns its metrics (history, best_dev_acc, test_acc, ...)."""
    from toolkit.config import load_config
    config = load_config(config_path(config), as_overrides(dict(epochs=epochs, device=device, **settings)))
    from toolkit.run import run_or_skip
    with deterministic_algorithms(deterministic):
        metrics = run_or_skip(config, data_dir, Path(out), force)
    print_result(metrics, Path(out) / config["name"])
    return metrics


def explore_theory(out="runs"):
    """The written homework's claims checked numerically; theory.json and its figures in OUT/theory/."""
    from byhand.theory import run_theory
    results = run_theory(Path(out) / "theory")
    print(f"theory.json and plots in {Path(out) / 'theory'}/")
    return results


def fetch_data(data_dir=None):
    """Load each built-in data set once (downloading into data_dir, default $DATA_DIR or data/, when missing),
    so that a missing file stops here and not after an hour of sweeps. Returns {task: (train, test) sizes}."""
    from toolkit.config import DEFAULTS
    from toolkit.data import resolve_data_dir
    from toolkit.tasks import TASKS, load_raw
    raw = {name: load_raw(name, data_dir, DEFAULTS) for name, task in TASKS.items() if task.folder}
    sizes = {name: (len(d["train"][1]), len(d["test"][0])) for name, d in raw.items()}
    print(f"data from {resolve_data_dir(data_dir)}: " +
          ", ".join(f"{task} {train:,} train / {test:,} test" for task, (train, test) in sizes.items()))
    return sizes


def print_result(metrics, out_dir):
    if metrics.get("world_size", 1) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun rank 0 speaks for all
    if metrics["best_epoch"] is None:
        print(f"{metrics['name']}: diverged in its first epoch; no model saved; details in {out_dir}/metrics.json")
        return
    test = "withheld (see submission.csv)" if metrics["test_acc"] is None else f"{metrics['test_acc']:.4f}"
    if metrics["diverged"]:
        test += f"; diverged at epoch {metrics['diverged_at']['epoch']}, best weights kept from before"
    refit = metrics.get("refit")
    if refit and "test_acc" in refit:
        test = "withheld" if refit["test_acc"] is None else f"{refit['test_acc']:.4f}"
        test += (f" (model refitted on train + dev for {refit['epochs']} epoch{'s' * (refit['epochs'] != 1)}"
                 f"{', submission.csv from it' if refit['test_acc'] is None else ''})")
    from toolkit.estimates import describe_test_estimate
    estimate = describe_test_estimate(metrics["config"], metrics["best_dev_acc"])
    dev = f"{metrics['best_dev_acc']:.4f} at epoch {metrics['best_epoch']}" + (f" ({estimate})" if estimate else "")
    if metrics.get("final_dev_acc", metrics["best_dev_acc"]) != metrics["best_dev_acc"]:  # (older metrics.json lack it)
        dev += f" ({metrics['final_dev_acc']:.4f} with the shifted views the test is predicted with)"
    loading = metrics.get("data_seconds", 0) + metrics.get("logreg_seconds", 0)  # featurizing included
    took = f"{metrics['seconds']:.0f}s training" + (f" after {loading:.0f}s loading" if loading else "")
    if "teacher" in metrics:
        took += f", and {metrics['teacher']['wall_seconds']:.0f}s before that for the teacher"
    print(f"{metrics['name']}: best dev acc {dev}, test acc {test}, {took}; results in {out_dir}/")


if __name__ == "__main__":
    exit_now(main())
