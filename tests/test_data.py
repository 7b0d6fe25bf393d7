import json
from pathlib import Path

import numpy as np
import pytest

from toolkit import data
from toolkit.config import DEFAULTS, load_config
from toolkit.data import dev_split
from toolkit.errors import UserError
from toolkit.estimates import describe_test_estimate
from toolkit.tasks import TASKS, load_raw


def load_imdb(data_dir=None):
    return load_raw("sentiment", data_dir, DEFAULTS)


def no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_dev_split_is_stratified_even_when_the_file_is_sorted_by_label():
    labels = np.array([0] * 500 + [1] * 500)
    train, dev = dev_split(labels, 100)
    assert len(dev) == 100 and len(train) == 900 and not set(train) & set(dev)
    assert labels[dev].sum() == 50
    assert (np.diff(dev) > 1).any()  # drawn at random, not the first rows of each class


def test_dev_split_is_the_same_every_time():
    labels = np.arange(300) % 3
    assert all((a == b).all() for a, b in zip(dev_split(labels, 30), dev_split(labels, 30)))


def test_local_jsonl_folder_loads_texts_and_labels(imdb_dir):
    loaded = load_imdb(imdb_dir)
    texts, labels = loaded["train"]
    assert len(texts) == 400 and labels.tolist() == [0] * 200 + [1] * 200
    assert len(loaded["test"][0]) == 100 and loaded["test"][1] is None


def test_data_dir_comes_from_the_environment_when_not_given(imdb_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(imdb_dir))
    assert len(load_imdb()["train"][0]) == 400


def test_missing_data_without_network_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils
    monkeypatch.setattr(tv_utils, "download_url", no_network)
    with pytest.raises(UserError) as err:
        load_imdb(tmp_path)
    message = str(err.value)
    assert f"{tmp_path}/imdb/train.jsonl" in message and f"{tmp_path}/aclImdb" in message
    assert "download failed" in message and "--data-dir" in message


def test_a_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils
    from torchvision import datasets

    def makes_folder_then_fails(folder):  # as torchvision's downloads do, which make their folders first
        Path(folder).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("network is unreachable")
    def FashionMNIST(root, **kwargs):  # noqa: N802: stands in for the class, whose name says where it downloads
        makes_folder_then_fails(f"{root}/FashionMNIST/raw")
    monkeypatch.setattr(datasets, "FashionMNIST", FashionMNIST)
    monkeypatch.setattr(tv_utils, "download_url", lambda url, root, **kw: makes_folder_then_fails(root))
    for load in (lambda d: load_raw("fashion", d, DEFAULTS), load_imdb):
        with pytest.raises(UserError, match="download failed"):
            load(tmp_path / "typo" / "data")
        assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()  # a folder the user had stays, and so does what a download left in it
    (tmp_path / "mine" / "part.tar.gz").write_bytes(b"half")
    with pytest.raises(UserError):
        load_imdb(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["part.tar.gz"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "train.jsonl:2: not a JSON object"),
    ('{"label": 1}', "train.jsonl:2: each line needs a string 'text'"),
    ('{"text": "ok", "label": 3}', "train.jsonl:2: 'label' must be an integer 0..1, got 3"),
    ("", "train.jsonl:2: not a JSON object"),
])
def test_broken_jsonl_lines_name_the_file_and_line(tmp_path, line, message):
    folder = tmp_path / "imdb"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": "fine", "label": 0}) + "\n" + line + "\n")
    (folder / "test.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UserError, match=message):
        load_imdb(tmp_path)


def test_training_reviews_without_labels_are_refused(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": "no label"}) + "\n")
    (folder / "test.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UserError, match="training reviews need a 'label'"):
        load_imdb(tmp_path)


def test_non_utf8_file_is_refused_with_its_name(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes('{"text": "caf\xe9", "label": 1}\n'.encode("latin-1"))
    (folder / "test.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UserError, match="train.jsonl: cannot read as UTF-8"):
        load_imdb(tmp_path)


def test_acl_imdb_folder_layout_is_read(tmp_path):
    for split in ("train", "test"):
        for sub, text in (("neg", "bad"), ("pos", "good")):
            folder = tmp_path / "aclImdb" / split / sub
            folder.mkdir(parents=True)
            (folder / "0_1.txt").write_text(text)
    loaded = load_imdb(tmp_path)
    assert loaded["train"][0] == ["bad", "good"] and loaded["test"][1].tolist() == [0, 1]


def test_acl_imdb_reviews_are_read_in_the_order_of_their_ids(tmp_path):
    # one movie's reviews have consecutive ids; sorted as strings, 10000 came between 1000 and 999
    for split in ("train", "test"):
        for sub in ("neg", "pos"):
            folder = tmp_path / "aclImdb" / split / sub
            folder.mkdir(parents=True)
            for review_id in (1000, 999, 10000, 2):
                (folder / f"{review_id}_3.txt").write_text(f"{sub} {review_id}")
    assert load_imdb(tmp_path)["train"][0][:4] == ["neg 2", "neg 999", "neg 1000", "neg 10000"]


def test_an_incomplete_acl_imdb_folder_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "aclImdb" / "train" / "neg").mkdir(parents=True)
    (tmp_path / "aclImdb" / "train" / "neg" / "0_1.txt").write_text("bad")
    with pytest.raises(UserError, match="aclImdb/train/pos: no reviews"):
        load_imdb(tmp_path)


def test_the_imdb_download_is_checked_and_extracted_whole(tmp_path, monkeypatch):
    import tarfile
    import torchvision.datasets.utils as tv_utils
    source = tmp_path / "source"
    for split in ("train", "test"):
        for sub in ("neg", "pos"):
            (source / "aclImdb" / split / sub).mkdir(parents=True)
            (source / "aclImdb" / split / sub / "0_1.txt").write_text(sub)
    asked = {}

    def download_url(url, root, md5=None, **kwargs):  # as torchvision's, once the archive has passed its MD5
        asked["md5"] = md5
        with tarfile.open(f"{root}/aclImdb_v1.tar.gz", "w:gz") as tar:
            tar.add(source / "aclImdb", "aclImdb")
    monkeypatch.setattr(tv_utils, "download_url", download_url)
    target = tmp_path / "data"
    target.mkdir()
    assert load_imdb(target)["test"][0] == ["neg", "pos"]
    assert asked["md5"] == data.IMDB_MD5 and not (target / "aclImdb.partial").exists()


def test_a_download_that_fills_the_disk_is_a_fault_of_the_machine_not_missing_data(tmp_path, monkeypatch):
    import errno
    import torchvision.datasets.utils as tv_utils

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "aclImdb_v1.tar.gz"))
    monkeypatch.setattr(tv_utils, "download_url", disk_full)
    with pytest.raises(OSError) as err:
        load_imdb(tmp_path)
    assert not isinstance(err.value, UserError) and err.value.errno == errno.ENOSPC


def runs_of(rows):
    """Lengths of the runs of consecutive indices in sorted rows."""
    breaks = np.flatnonzero(np.diff(rows) != 1)
    return np.diff(np.concatenate([[-1], breaks, [len(rows) - 1]]))


def test_block_dev_split_holds_out_whole_blocks_of_consecutive_examples_of_each_class():
    labels = np.array([0] * 1000 + [1] * 1000)
    train, dev = dev_split(labels, 400, block=50)
    assert len(dev) == 400 and len(train) == 1600 and not set(train) & set(dev)
    assert labels[dev].sum() == 200  # stratified
    for c in (0, 1):
        rows = dev[labels[dev] == c] - (1000 * c)
        assert (rows % 50 == 0).sum() == 4  # four blocks start on a block boundary...
        assert (runs_of(rows) % 50 == 0).all()  # ...and every run of held-out rows is whole blocks


def test_block_dev_split_is_seeded_and_block_1_is_the_default_random_split():
    labels = np.array([0] * 300 + [1] * 100)
    a, b = dev_split(labels, 40, block=10), dev_split(labels, 40, block=10)
    assert (a[1] == b[1]).all() and not (a[1] == dev_split(labels, 40, seed=1, block=10)[1]).all()
    assert labels[a[1]].sum() == 10  # the classes' shares (3:1) are kept
    assert (dev_split(labels, 40, block=1)[1] == dev_split(labels, 40)[1]).all()


def test_a_test_estimate_is_the_range_of_scored_runs_of_the_same_kind_or_none_and_why():
    config = load_config(None, ["task=fashion"])  # an MLP, 5,000 dev images, submission from the dev-selected model
    like = [test - dev for kind, dev, test in TASKS["fashion"].scored if kind == "mlp"]  # in points
    assert describe_test_estimate(config, 0.90) == \
        f"test estimate {90 + min(like):.1f}-{90 + max(like):.1f}% from {len(like)} scored mlp runs"
    # a refit trains on the dev images too: its own kind, never scored on Fashion-MNIST
    assert describe_test_estimate({**config, "refit": True}, 0.90) == \
        "no test estimate: 0 scored runs of this kind (mlp, refitted), 2 needed"
    self_trained = {**load_config(None, []), "features": "nb", "self_train": 2, "refit": True}  # reads dev texts
    assert describe_test_estimate(self_trained, 0.90) == \
        "no test estimate: 1 scored run of this kind (mlp, self-trained, refitted), 2 needed"
    for other in ({"dev_block": 1}, {"dev_size": 100}, {"max_train": 1000}):
        assert describe_test_estimate({**config, **other}, 0.90) == \
            "no test estimate: the scored runs used the default dev split"
    assert describe_test_estimate({**config, "task": "texts"}, 0.90) == ""  # your own data: nothing scored
