import json

import numpy as np
import pytest

import data
from config import UserError
from data import dev_split, load_imdb


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
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(UserError) as err:
        load_imdb(tmp_path)
    message = str(err.value)
    assert f"{tmp_path}/imdb/train.jsonl" in message and f"{tmp_path}/aclImdb" in message
    assert "download failed" in message and "--data-dir" in message


@pytest.mark.parametrize("line, message", [
    ("{not json", "train.jsonl:2: not a JSON object"),
    ('{"label": 1}', "train.jsonl:2: each line needs a string 'text'"),
    ('{"text": "ok", "label": 3}', "train.jsonl:2: 'label' must be 0 or 1"),
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
    loaded = data.load_imdb(tmp_path)
    assert loaded["train"][0] == ["bad", "good"] and loaded["test"][1].tolist() == [0, 1]


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
