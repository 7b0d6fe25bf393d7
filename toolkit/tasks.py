"""The tasks a config can name, one row each: the kind of data, its classes, what its submission writes, its
images' shape, where its files live, how it loads and how it downloads. The three built-in data sets are
rows; `texts` and `images` read your own data from the data folder itself, laid out as Kaggle and
torchvision ship it (folders.py). Code that needs a fact about a task reads its row (`TASKS[name].kind`);
nothing compares task names. Adding a data set is a row here and a config (docs/datasets.md shows one).
"""
from dataclasses import dataclass
from typing import Callable

from toolkit import data, folders, image_folders


@dataclass(frozen=True)
class Task:
    kind: str                  # "text" (n-gram features) | "image"
    load: Callable             # load(task, data_dir, config) -> raw data (data.py says what it holds), or None
                               # where the folder lacks the files
    folder: str = ""           # its folder in the data folder; "" = the data folder itself
    classes: tuple = ()        # class names; () = the labels the training file holds, sorted
    submit: str = "label"      # what submission.csv writes: "index" (the class's position in classes) | "label"
                               # (the class as the training file wrote it)
    shape: tuple = ()          # images' (height, width); () = each file resized to image_size
    channels: int = 0          # images' channels; 0 = as the files are (1 where all are grey, else 3)
    download: Callable = None  # download(task, data_dir) -> raw data, where the folder lacks the files
    scored: tuple = ()         # (kind, dev %, test %) of runs scored on the withheld test (estimates.py)


FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

TASKS = {
    # the dev (block dev for IMDB) and withheld-test accuracies of runs scored so far (hw3.md says which)
    "sentiment": Task("text", data.read_imdb, folder="imdb", classes=("negative", "positive"), submit="index",
                      download=data.download_imdb,
                      scored=(("logreg", 88.42, 90.30), ("logreg, refitted", 90.35, 91.60), ("mlp", 88.34, 90.45),
                              ("mlp, refitted", 90.60, 92.24), ("mlp, self-trained, refitted", 91.88, 92.73))),
    "fashion": Task("image", data.read_npz_folder, folder="fashion_mnist", classes=FASHION, submit="index",
                    shape=(28, 28), channels=1, download=data.torchvision_set("FashionMNIST"),
                    scored=(("mlp", 91.30, 90.34), ("mlp", 90.72, 90.20), ("mlp", 91.76, 90.92))),
    "cifar10": Task("image", data.read_npz_folder, folder="cifar10", classes=CIFAR10, submit="index",
                    shape=(32, 32), channels=3, download=data.torchvision_set("CIFAR10"),
                    scored=(("cnn", 87.98, 87.61), ("cnn", 90.34, 90.68), ("cnn", 88.06, 88.52))),
    "texts": Task("text", folders.read_texts),
    "images": Task("image", image_folders.read_images),
}


def load_raw(name, data_dir, config):
    """The raw data of task `name` (data.py says what it holds), from the data folder or downloaded, with its
    classes: the row's, or those its files name."""
    task, root = TASKS[name], data.resolve_data_dir(data_dir)
    raw = task.load(task, root, config)
    if raw is None:
        raw = task.download(task, root)
    return {"classes": list(task.classes), **raw}


def data_files(name, data_dir):
    """The data folder as a run's identity holds it: for your own data, the folder itself, so that two
    competitions run with one config never take each other's runs; for a built-in set, None: its name says it."""
    task = TASKS[name]
    return None if task.folder or task.download else str(data.resolve_data_dir(data_dir).resolve())
