"""Config: plain defaults, overridden by a TOML file, then by `--set key=value`.

Every value is type-checked against its default and range-checked here, so a typo stops the run before
any data is loaded. User mistakes raise UserError; main.py prints its one line and exits with code 2.
"""
import ast
import tomllib
from pathlib import Path

from toolkit.errors import UserError
from toolkit.models import MODELS
from toolkit.tasks import TASKS

DEFAULTS = dict(
    task="sentiment",        # a row of tasks.TASKS: sentiment | fashion | cifar10 (built in) | texts | images (your
                             # own, from the data folder as Kaggle or torchvision ship it)
    name="",                 # run folder name under --out; empty = the config file's stem
    model="mlp",             # a row of models.MODELS: mlp | cnn | logreg (NB logistic regression, scikit-learn)
    # MLP (texts and images)
    hidden_dims=[512],       # hidden layer sizes; [] is a single linear layer
    activation="ReLU",       # any name in mlp.ACTIVATIONS, case-insensitive
    dropout=0.0,             # probability, applied after every hidden activation (training only); reg_epochs
                             # scales it down in a shorter run
    batch_norm=False,        # a batch norm between each hidden layer and its activation (statistics of the batch in
                             # training, running averages in evaluation)
    init="default",          # default (PyTorch's) | zeros | constant | normal (std 1) | xavier | kaiming
    interpolate=0.0,         # sentiment, nb features: weight of the NB logistic regression's probabilities
                             # mixed into the MLP's at evaluation (dev, test); 0 = the MLP alone
    C=0.1,                   # model logreg: inverse L2 strength of scikit-learn's LogisticRegression
    # CNN (images)
    widths=[64, 128, 256],   # channels of the stem, then of each conv group (each halves the resolution)
    amp_widths=[],           # widths instead, where `amp` runs (a CPU with native bf16, a GPU): there about twice
                             # the images/s buy a wider net within a time budget; [] = widths
    whiten=False,            # stem = fixed 2x2 patch-whitening conv from the training images, 8 channels per image
                             # channel (24 for RGB), which take the place of widths[0]
    bn_scale=True,           # false: batch norm scales fixed at 1, only shifts trained (airbench)
    bn_momentum=0.1,         # weight of each batch in batch norm's running statistics (torch's convention)
    dirac=False,             # 3x3 convs start as the identity on their first c_in output channels
    logit_scale=1.0,         # the CNN's logits are multiplied by this (airbench: 1/9)
    # optimisation
    epochs=10,               # with budget_minutes: the most epochs the plan may choose
    budget_minutes=0.0,      # > 0: measure this machine's speed, then plan the epochs (and schedule) so that
                             # the whole run ends within this many minutes (budget.py); 0 = off
    batch_size=256,          # examples per step
    drop_last=False,         # each epoch leaves out its last partial batch (other rows each epoch), so every step
                             # has one batch shape and torch.compile compiles once
    lr=1e-3,                 # peak learning rate (per step, not scaled by batch size)
    optimizer="adam",        # sgd | momentum | nesterov | adam | adamw | muon (cnn: Muon on the conv filters,
                             # Nesterov SGD at lr on the rest; muon.py)
    momentum=0.9,            # for momentum/nesterov; beta1 for adam/adamw
    weight_decay=0.0,        # L2 (sgd/adam) or decoupled (adamw); reg_epochs scales it down in a shorter run
    muon_lr=0.24,            # optimizer muon: the filters' lr per step; an orthogonalized update has singular
                             # values ~1 whatever the loss scale or batch size
    muon_momentum=0.6,       # optimizer muon: the filters' Nesterov momentum (airbench94_muon's)
    bias_lr=1.0,             # batch-norm parameters get lr * bias_lr and weight_decay / bias_lr (the same
                             # decay per step); airbench: 64
    lookahead=False,         # airbench's lookahead: every 5 steps the weights move to an EMA of themselves
                             # whose decay rises from 0 to 0.95^5 with the cube of progress; the end takes the EMA
    scheduler="constant",    # constant | exponential | cosine | onecycle (per step)
    gamma=0.9,               # exponential: lr multiplier per epoch
    warmup=0.2,              # onecycle: fraction of steps spent warming up
    label_smoothing=0.0,     # of the training loss's targets; reg_epochs scales it down in a shorter run
    reg_epochs=0,            # > 0: dropout, flip, label_smoothing and weight_decay are set for this many epochs,
                             # and a run of fewer scales them down (scaled_regularisation); it prints what it set
                             # and metrics.json records it (scaled_by_reg_epochs); 0 = always as given
    seed=0,
    device="auto",           # auto | cpu | cuda | mps
    dev_size=5000,           # examples held out of train (seeded, stratified) for model selection, where the data
                             # folder gives no validation split
    dev_fraction=0.25,       # but at most this fraction of the training examples (a small data set)
    dev_block=100,           # where neighbouring training rows are related (IMDB lists a movie's reviews together;
                             # your own texts, where neighbours share far more words than random pairs), dev is
                             # whole blocks of this many consecutive rows of a class; 1 = always random
    refit=False,             # then train afresh on train + dev for the best epoch count; submission.csv from that
    max_train=0,             # keep this many training examples (seeded random subset, after the dev split);
                             # 0 = all. For smoke runs (the notebook's NOTEBOOK_SMOKE=1); test sets stay whole
    # your own data (folders.py): the columns, where the files leave them open; "" = found from the files
    text_column="",          # texts: the column holding the text (default: the other column with the longest texts)
    label_column="",         # the training file's label column (default: the column the test file lacks)
    id_column="",            # the test file's id column (default: the sample submission's first, else one named id)
    image_size=32,           # image files are resized to this many pixels a side (the short side, then the centre
                             # cropped, as torchvision's Resize + CenterCrop)
    # text features (scikit-learn; see features.py)
    features="tfidf",        # tfidf (TF-IDF n-grams) | nb (binary n-grams x naive Bayes log-count ratios)
    ngram_max=2,             # word n-grams 1..ngram_max
    min_df=2,                # drop n-grams seen in fewer training reviews
    max_features=200000,     # keep the most frequent n-grams; 0 = no limit
    self_train=0,            # nb: rounds of pseudo-labelling the unlabeled dev and test texts with the NB logistic
                             # regression, whose confident guesses then join training; 0 = off: no model reads a
                             # dev or test text. No dev or test label is ever used (see logreg.py)
    self_train_margin=0.3,   # keep an unlabeled review when its predicted probability is this far from 0.5
    # images
    augment=False,           # random flip + translate, on whole batches on the device
    flip=0.5,                # when augmenting: probability of mirroring each training image; reg_epochs
                             # scales it down in a shorter run
    alternate_flip=False,    # instead, mirror a fixed random half in odd epochs, the other half in even (airbench)
    translate=2,             # pixels of random translation when augmenting
    pad="zeros",             # what a translation shifts in at the edges: zeros | reflect (the image mirrored)
    tta_flip=False,          # average predictions over the image and its mirror at evaluation; off in a run
                             # shorter than reg_epochs
    tta_shift=0,             # and, for the best checkpoint's final dev and test predictions, over copies shifted
                             # by this many pixels (up-left, down-right): 3x their cost; the per-epoch dev
                             # evaluations, which choose the checkpoint, leave them out
    ema=0.0,                 # weight EMA decay per step; 0 = off
    teacher="",              # distillation: a config file (path, or relative to this repository) trained first
                             # into OUT/<name>/teacher/ (a finished one of the same config is reused, --overwrite
                             # too); its flip-averaged probabilities on the training images become the targets
                             # (Ba & Caruana 2014); "" = the labels alone
    distill=1.0,             # with a teacher: its probabilities' weight in each target, the label's 1 - distill
    amp=False,               # mixed precision: bf16 on Ampere+ GPUs (else fp16 + grad scaler) and on bf16 CPUs
    compile=False,           # torch.compile the model (CUDA; slow to start)
    probabilities=False,     # also write probabilities.csv: Id and the predicted probability of class 1 for two
                             # classes (Kaggle's IMDB is scored by ROC AUC), else one column per class
    checkpoint_minutes=5.0,  # at an epoch's end, save the training state (last.pt, and model.pt's best weights)
                             # when this many minutes passed since the last save; 0 = every epoch. A lost machine
                             # costs at most this much training and the epoch in progress; Ctrl-C and SIGTERM save
                             # at once
    keep_weights=True,       # false: a finished run keeps no model.pt (sweeps: their metrics and plots are what
                             # they compare, and a Drive keeps gigabytes less)
    plots=True,              # draw the run's figures at the end (loss, accuracy, confusion, dev images); false
                             # saves seconds of a short run, and `main.py plot RUN_DIR` draws them later
    channels_last=True,      # memory format for the CNN
)

CHOICES = dict(
    task=TASKS.keys(),  # the tables' rows, as they stand when a config is read
    model=MODELS.keys(),
    features={"tfidf", "nb"},
    init={"default", "zeros", "constant", "normal", "xavier", "kaiming"},
    optimizer={"sgd", "momentum", "nesterov", "adam", "adamw", "muon"},
    scheduler={"constant", "exponential", "cosine", "onecycle"},
    pad={"zeros", "reflect"},
    device={"auto", "cpu", "cuda", "mps"},
)

# (low, high, low inclusive?) for numeric keys; None = unbounded on that side
RANGES = dict(
    epochs=(1, None, True), batch_size=(1, None, True), lr=(0, None, False), dropout=(0, 1, True),
    momentum=(0, 1, True), weight_decay=(0, None, True), gamma=(0, 1, False), warmup=(0, 1, True),
    label_smoothing=(0, 1, True), dev_size=(1, None, True), max_train=(0, None, True), ngram_max=(1, 5, True),
    min_df=(1, None, True), max_features=(0, None, True), self_train=(0, 10, True),
    self_train_margin=(0, 0.5, False), dev_block=(1, None, True), distill=(0, 1, True),
    interpolate=(0, 1, True), C=(0, None, False), budget_minutes=(0, None, True), translate=(0, 16, True),
    tta_shift=(0, 8, True), ema=(0, 1, True), bn_momentum=(0, 1, True), logit_scale=(0, None, False),
    bias_lr=(0, None, False), flip=(0, 1, True), reg_epochs=(0, None, True), muon_lr=(0, None, False),
    muon_momentum=(0, 1, True), dev_fraction=(0, 1, False), image_size=(4, 1024, True),
    checkpoint_minutes=(0, None, True),
    seed=(0, 2**31 - 1, True),  # numpy takes seeds < 2**32; each rank seeds seed + rank
)


def check_value(key, value, where):
    """Return value converted to the default's type, or raise UserError naming key and where it came from."""
    if key not in DEFAULTS:
        raise UserError(f"{where}: unknown key '{key}' (valid keys: {', '.join(DEFAULTS)})")
    default = DEFAULTS[key]
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = type(value) is type(default)
    if not ok:
        raise UserError(f"{where}: '{key}' must be {type(default).__name__}"
                        f"{' of ints' if isinstance(default, list) else ''}, got {value!r}")
    if key in CHOICES and value.lower() not in CHOICES[key]:
        raise UserError(f"{where}: '{key}' = {value!r} is not one of {', '.join(sorted(CHOICES[key]))}")
    if key in CHOICES:
        value = value.lower()
    if key in RANGES:
        lo, hi, lo_inclusive = RANGES[key]
        if (lo is not None and (value < lo if lo_inclusive else value <= lo)) or (hi is not None and value > hi):
            bound = f"{'>=' if lo_inclusive else '>'} {lo}" + (f" and <= {hi}" if hi is not None else "")
            raise UserError(f"{where}: '{key}' = {value!r} is out of range (must be {bound})")
    if key in ("hidden_dims", "widths", "amp_widths") and any(v < 1 for v in value):
        raise UserError(f"{where}: '{key}' = {value!r}: every size must be >= 1")
    if key == "name" and (value in (".", "..") or any(c in value for c in "/\\")):
        raise UserError(f"{where}: 'name' = {value!r} must be a plain folder name under --out (no / or \\, "
                        f"not . or ..)")
    if key == "widths" and not value:
        raise UserError(f"{where}: 'widths' must name at least one conv group")
    return value


def parse_override(text):
    """'key=value' -> (key, value); value read as a Python/TOML literal, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected key=value")
    raw = raw.strip()
    lowered = {"true": True, "false": False}.get(raw.lower())
    if lowered is not None:
        return key.strip(), lowered
    try:
        return key.strip(), ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key.strip(), raw


def teacher_path(config):
    """The teacher's config file: the path as given, else relative to this repository (configs/...)."""
    path = Path(config["teacher"])
    return path if path.is_file() or path.is_absolute() else Path(__file__).resolve().parents[1] / path


def check_teacher(config):
    where = f"config '{config['name']}': teacher = {config['teacher']!r}"
    if not teacher_path(config).is_file():
        raise UserError(f"{where}: config file not found")
    if TASKS[config["task"]].kind != "image" or config["refit"]:  # the refit's dev rows would have no teacher targets
        raise UserError(f"{where}: distillation needs an image task and refit = false")


def load_config(path=None, overrides=(), pinned=None):
    """Defaults <- TOML file <- `key=value` overrides <- `pinned` (a sweep's own values, which must win)."""
    config = dict(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid TOML ({e})") from None
        for key, value in table.items():
            config[key] = check_value(key, value, str(path))
        default_name = config["name"] or path.stem
    for text in overrides:
        key, value = parse_override(text)
        if key in (pinned or {}):  # it would be silently replaced below
            raise UserError(f"--set {text}: this sweep sets {key} itself, for each of its runs; drop it")
        config[key] = check_value(key, value, f"--set {text}")
    for key, value in (pinned or {}).items():
        config[key] = check_value(key, value, "sweep")
    config["name"] = config["name"] or (default_name if path is not None else config["task"])
    if config["epochs"] < config["reg_epochs"]:
        scaled = scaled_regularisation(config)
        changed = {key: [config[key], value] for key, value in scaled.items() if value != config[key]}
        config = {**config, **scaled, SCALED_RECORD: changed}
    check_combination(config)
    return config


def check_combination(config):
    """Keys that are valid alone but not together, judged by the task's and the model's rows."""
    where = f"config '{config['name']}'"
    task, model = TASKS[config["task"]], MODELS[config["model"]]
    if task.kind not in model.takes:
        raise UserError(f"{where}: model '{config['model']}' takes {' or '.join(model.takes)} data, and task "
                        f"'{config['task']}' is {task.kind} data")
    if config["whiten"] and not model.convolutional:
        raise UserError(f"{where}: whiten = true needs a convolutional model (its stem whitens 2x2 patches), got "
                        f"model '{config['model']}'")
    if config["optimizer"] == "muon" and not model.convolutional:
        raise UserError(f"{where}: optimizer 'muon' needs a convolutional model (it orthogonalizes conv filters), got "
                        f"model '{config['model']}'")
    if config["teacher"]:
        check_teacher(config)
    if config["batch_norm"] and config["batch_size"] < 2:
        raise UserError(f"{where}: batch_norm = true needs batch_size >= 2 (a batch norm standardises over the "
                        f"batch), got {config['batch_size']}")
    if config["interpolate"] > 0 and task.kind != "text":
        raise UserError(f"{where}: interpolate = {config['interpolate']} needs a text task (it mixes in a logistic "
                        f"regression on the n-grams)")
    if config["self_train"] > 0 and (task.kind, config["features"]) != ("text", "nb"):
        raise UserError(f"{where}: self_train = {config['self_train']} needs a text task with features 'nb'")


# the data folder of a run of your own data (tasks.data_files), part of its identity: set by run, never by a user
DATA_RECORD = "data"
# how a run computes and what it keeps, not what it trains: a run resumed on another device or precision is the same
# run (where the precision changes the net, amp_widths, its widths differ)
RUNTIME_KEYS = ("device", "amp", "compile", "channels_last", "checkpoint_minutes", "keep_weights")
REGULARISATION = ("label_smoothing", "weight_decay")
SCALED_WITH_EPOCHS = ("dropout", "flip", "tta_flip", *REGULARISATION)  # the keys scaled_regularisation sets
# what load_config scaled, {key: [as given, as trained]}: derived from the keys above, never set by a user
SCALED_RECORD = "scaled_by_reg_epochs"


def describe_scaling(config):
    """One line saying what reg_epochs scaled in this config, or None when it scaled nothing."""
    changed = config.get(SCALED_RECORD)
    if not changed:
        return None
    shown = lambda v, spec: str(v).lower() if isinstance(v, bool) else format(v, spec)
    what = ", ".join(f"{key} {shown(given, 'g')} -> {shown(trained, '.3g')}"
                     for key, (given, trained) in changed.items())
    return f"reg_epochs = {config['reg_epochs']}: this {config['epochs']}-epoch run scales {what}"


def scaled_regularisation(config):
    """The regularisation keys of a run shorter than reg_epochs: label smoothing and weight decay scaled by
    epochs / reg_epochs; dropout and the flip probability by 2 * epochs / reg_epochs - 1, so none at half of
    reg_epochs or less. A short run underfits, so the long run's regularisation costs it accuracy, and dropout
    and flips cost it time too. It also predicts without mirror images (tta_flip): trained on few or no
    mirrored garments, its guesses for them cost dev accuracy. hw3.md, Part 3, has the measurements."""
    scale = config["epochs"] / config["reg_epochs"]
    faster = max(0.0, 2 * scale - 1)
    return {"dropout": config["dropout"] * faster, "flip": config["flip"] * faster,
            "tta_flip": False, **{key: config[key] * scale for key in REGULARISATION}}
