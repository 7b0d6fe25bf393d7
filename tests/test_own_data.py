"""Your own data, as Kaggle and torchvision ship it: configs/texts.toml and configs/images.toml read a competition's
folder and write the submission its sample asks for."""
import csv
import gzip
import json
import random
import re

import numpy as np
import pytest

import main as notebook
from conftest import class_image, image_competition, make_review, one_error_line, text_competition, write_table
from main import main
from toolkit.config import DEFAULTS, load_config
from toolkit.data import ROOT
from toolkit.errors import UserError
from toolkit.tasks import load_raw

TEXTS = ["--set", "epochs=2", "--set", "budget_minutes=0", "--set", "min_df=1", "--set", "dev_size=60",
         "--set", "batch_size=32", "--set", "hidden_dims=[16]"]
IMAGES = ["--set", "epochs=2", "--set", "budget_minutes=0", "--set", "image_size=12", "--set", "widths=[24, 16, 16]",
          "--set", "amp_widths=[]", "--set", "batch_size=32", "--set", "dev_size=30", "--set", "tta_shift=0"]


def run_config(kind, data_dir, out, *more):
    return main(["run", str(ROOT / f"configs/{kind}.toml"), "--data-dir", str(data_dir), "--out", str(out),
                 *(TEXTS if kind == "texts" else IMAGES), *more])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def accuracy(submission, answers):
    lines = rows(submission)[1:]
    return sum(answers[i] == label for i, label in lines) / len(lines)


def texts_config(**changes):
    return load_config(ROOT / "configs/texts.toml", [f"{k}={v!r}" for k, v in changes.items()])


# ---------------------------------------------------------------- texts

def test_texts_config_writes_the_sample_submissions_header_ids_and_order_with_the_training_labels(tmp_path):
    answers = text_competition(tmp_path / "comp")
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    written, sample = rows(tmp_path / "out/texts/submission.csv"), rows(tmp_path / "comp/sample_submission.csv")
    assert written[0] == ["id", "label"] and [r[0] for r in written] == [r[0] for r in sample]
    assert {r[1] for r in written[1:]} == {"neg", "pos"} and accuracy(tmp_path / "out/texts/submission.csv", answers) > 0.9


def test_kaggles_imdb_tsv_reads_backslash_escaped_quotes_and_trains_on_the_labelled_of_two_training_tables(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    review = 'a \\"great\\" film, loved it'  # as Kaggle's labeledTrainData.tsv writes quotes inside a review
    lines = ["id\tsentiment\treview"] + [f'"{i}_9"\t{i % 2}\t"{review if i % 2 else "awful, dull"} {i}"'
                                          for i in range(40)]
    (folder / "labeledTrainData.tsv").write_text("\n".join(lines) + "\n")
    (folder / "unlabeledTrainData.tsv").write_text('id\treview\n"u1"\t"more of the same"\n')
    (folder / "testData.tsv").write_text('id\treview\n"t1"\t"fine"\n"t2"\t"bad"\n')
    (folder / "sampleSubmission.csv").write_text('"id","sentiment"\n"t2",0\n"t1",0\n')
    raw = load_raw("texts", folder, DEFAULTS)
    assert raw["train"][0][1] == 'a "great" film, loved it 1' and raw["classes"] == ["0", "1"]
    assert raw["unlabeled"] == ["more of the same"] and raw["ids"] == ["t1", "t2"]
    assert raw["columns"] == {"text": "review", "id": "id", "label": "sentiment"}


@pytest.mark.parametrize("name, encoding", [("train.csv.gz", "utf-8"), ("Train.csv.zip", "utf-8-sig"),
                                            ("train_data.csv", "cp1252")])
def test_training_tables_may_be_gzipped_zipped_or_in_cp1252_and_their_texts_arrive_whole(tmp_path, name, encoding):
    text_competition(tmp_path)
    (tmp_path / "train.csv").unlink()
    rows_in = [["id", "text", "label"], *[[f"r{i}", f"caf\u00e9 \u2013 {i}", "ab"[i % 2]] for i in range(20)]]
    data = "\n".join(",".join(r) for r in rows_in).encode(encoding)
    if name.endswith(".gz"):
        (tmp_path / name).write_bytes(gzip.compress(data))
    elif name.endswith(".zip"):
        import zipfile
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("train.csv", data)
    else:
        (tmp_path / name).write_bytes(data)
    raw = load_raw("texts", tmp_path, DEFAULTS)
    assert raw["train"][0][3] == "caf\u00e9 \u2013 3" and raw["classes"] == ["a", "b"]


def test_three_classes_train_and_the_sample_with_a_column_per_class_gets_probabilities_that_sum_to_1(tmp_path):
    answers = text_competition(tmp_path / "comp", labels=("bad", "good", "meh"), n_train=360)
    ids = list(answers)
    write_table(tmp_path / "comp/sample_submission.csv", [["id", "meh", "bad", "good"], *[[i, 0, 0, 1] for i in ids]])
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    written = rows(tmp_path / "out/texts/submission.csv")
    assert written[0] == ["id", "meh", "bad", "good"] and [r[0] for r in written[1:]] == ids
    probs = np.array([[float(v) for v in r[1:]] for r in written[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    named = [("meh", "bad", "good")[k] for k in probs.argmax(1)]
    assert np.mean([answers[i] == n for i, n in zip(ids, named)]) > 0.9
    metrics = json.loads((tmp_path / "out/texts/metrics.json").read_text())
    assert metrics["classes"] == ["bad", "good", "meh"] and metrics["metric"] == "log loss"


def test_a_sample_of_probabilities_in_one_column_gets_the_probability_of_the_class_it_names(tmp_path):
    answers = text_competition(tmp_path / "comp")
    write_table(tmp_path / "comp/sample_submission.csv", [["id", "pos"], *[[i, 0.5] for i in answers]])
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    written = rows(tmp_path / "out/texts/submission.csv")[1:]
    assert np.mean([(float(p) > 0.5) == (answers[i] == "pos") for i, p in written]) > 0.9


def test_integer_labels_are_written_back_as_the_training_table_wrote_them(tmp_path):
    answers = text_competition(tmp_path / "comp", labels=("2", "10"))
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    assert {r[1] for r in rows(tmp_path / "out/texts/submission.csv")[1:]} == {"2", "10"}
    assert accuracy(tmp_path / "out/texts/submission.csv", answers) > 0.9


def test_a_test_table_without_ids_lists_the_sample_ids_in_its_row_order(tmp_path):
    answers = text_competition(tmp_path)
    test = rows(tmp_path / "test.csv")
    write_table(tmp_path / "test.csv", [["text"], *[[r[1]] for r in test[1:]]])
    write_table(tmp_path / "sample_submission.csv", [["Id", "label"], *[[r[0], "neg"] for r in test[1:]]])
    raw = load_raw("texts", tmp_path, DEFAULTS)
    assert raw["ids"] is None and len(raw["test"][0]) == len(answers)


def test_without_a_sample_the_submission_is_id_category_with_the_test_tables_ids(tmp_path):
    text_competition(tmp_path / "comp")
    (tmp_path / "comp/sample_submission.csv").unlink()
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    written = rows(tmp_path / "out/texts/submission.csv")
    assert written[0] == ["Id", "Category"] and written[1][0] == "t000" and len(written) == 61


def test_the_columns_can_be_named_where_the_files_leave_them_open(tmp_path):
    text_competition(tmp_path)
    train, test = rows(tmp_path / "train.csv"), rows(tmp_path / "test.csv")
    write_table(tmp_path / "train.csv", [[*train[0], "title"], *[[*r, r[1]] for r in train[1:]]])  # a copy of text
    write_table(tmp_path / "test.csv", [[*test[0], "title"], *[[*r, r[1]] for r in test[1:]]])
    with pytest.raises(UserError, match=r"cannot tell the text column among text .*title.*--set text_column=NAME"):
        load_raw("texts", tmp_path, DEFAULTS)
    assert load_raw("texts", tmp_path, {**DEFAULTS, "text_column": "Title"})["columns"]["text"] == "title"


def test_explore_structures_runs_on_your_own_texts_with_their_config(tmp_path, capsys):
    text_competition(tmp_path / "comp")
    assert main(["explore", "structures", "--config", str(ROOT / "configs/texts.toml"), "--data-dir",
                 str(tmp_path / "comp"), "--out", str(tmp_path / "out"), *TEXTS[:8]]) == 0
    summary = rows(tmp_path / "out/structures/summary.csv")
    assert [r[0] for r in summary[1:]] == ["linear", "512", "512-512", "512-512-512", "nb-logreg"]
    assert all(float(r[1]) > 0.8 for r in summary[1:])


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("layout", ["folders", "ids", "pixels"])
def test_images_config_trains_on_each_layout_and_writes_the_samples_ids_with_class_names(tmp_path, layout):
    answers = image_competition(tmp_path / "comp", layout, n_train=240)
    assert run_config("images", tmp_path / "comp", tmp_path / "out") == 0
    written = rows(tmp_path / "out/images/submission.csv")
    assert written[0] == ["ImageId", "label"] and {r[0] for r in written[1:]} == set(answers)
    assert accuracy(tmp_path / "out/images/submission.csv", answers) > 0.8
    channels = json.loads((tmp_path / "out/images/metrics.json").read_text())["channels"]
    assert channels == (1 if layout == "pixels" else 3)


def test_grey_images_stay_one_channel_and_a_mix_becomes_rgb(tmp_path):
    from PIL import Image
    image_competition(tmp_path, "folders", channels=1)
    assert load_raw("images", tmp_path, {**DEFAULTS, "image_size": 12})["train"][0].shape[1:] == (12, 12)
    Image.fromarray(class_image(np.random.default_rng(0), 0, 12, 3)).save(tmp_path / "test" / "colour.png")
    assert load_raw("images", tmp_path, {**DEFAULTS, "image_size": 12})["train"][0].shape[1:] == (12, 12, 3)


def test_image_files_are_turned_upright_then_resized_on_their_short_side_and_cropped_in_the_centre(tmp_path):
    from PIL import Image
    import torchvision.transforms.functional as F
    from toolkit.images import decode
    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))  # 50 wide, 30 high
    expected = np.asarray(F.center_crop(F.resize(upright, 12), 12))
    upright.save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    assert np.array_equal(decode(tmp_path / "plain.png", 12), expected)
    assert np.array_equal(decode(tmp_path / "turned.png", 12), expected)


def test_a_val_folder_is_the_dev_split(tmp_path):
    image_competition(tmp_path, "folders")
    image_competition(tmp_path / "spare", "folders", n_train=24, seed=1)
    (tmp_path / "spare" / "train").rename(tmp_path / "val")
    raw = load_raw("images", tmp_path, {**DEFAULTS, "image_size": 12})
    assert len(raw["dev"][0]) == 24 and len(raw["train"][0]) == 120


def test_predict_writes_a_new_folders_submission_in_its_samples_form(tmp_path):
    image_competition(tmp_path / "comp", "ids")
    assert run_config("images", tmp_path / "comp", tmp_path / "out") == 0
    answers = image_competition(tmp_path / "new", "ids", n_test=12, seed=3)
    out = tmp_path / "new.csv"
    assert main(["predict", str(tmp_path / "out/images"), "--test", str(tmp_path / "new"), "--out", str(out)]) == 0
    assert [r[0] for r in rows(out)] == [r[0] for r in rows(tmp_path / "new/sample_submission.csv")]
    assert accuracy(out, answers) > 0.8


def test_predict_on_new_texts_uses_the_runs_vocabulary_and_matches_its_own_submission(tmp_path):
    text_competition(tmp_path / "comp")
    assert run_config("texts", tmp_path / "comp", tmp_path / "out") == 0
    out = tmp_path / "again.csv"
    assert main(["predict", str(tmp_path / "out/texts"), "--test", str(tmp_path / "comp"), "--out", str(out)]) == 0
    assert out.read_text() == (tmp_path / "out/texts/submission.csv").read_text()


def test_an_interrupted_run_on_your_own_texts_resumes_to_the_same_submission(tmp_path, monkeypatch, capsys):
    from conftest import signal_at_call
    text_competition(tmp_path / "comp")
    assert run_config("texts", tmp_path / "comp", tmp_path / "whole", "--set", "refit=false") == 0
    signal_at_call(monkeypatch, 5)
    assert run_config("texts", tmp_path / "comp", tmp_path / "split", "--set", "refit=false") == 130
    monkeypatch.undo()
    assert run_config("texts", tmp_path / "comp", tmp_path / "split", "--set", "refit=false", "--resume") == 0
    assert "resuming texts at epoch 1" in capsys.readouterr().out
    assert (tmp_path / "split/texts/submission.csv").read_text() == (tmp_path / "whole/texts/submission.csv").read_text()


# ---------------------------------------------------------------- one competition is not another

def test_two_competitions_with_one_config_never_take_each_others_runs(tmp_path, capsys):
    text_competition(tmp_path / "a")
    text_competition(tmp_path / "b", labels=("x", "y"))
    assert run_config("texts", tmp_path / "a", tmp_path / "out") == 0
    assert run_config("texts", tmp_path / "b", tmp_path / "out") == 0
    assert {r[1] for r in rows(tmp_path / "out/texts-2/submission.csv")[1:]} == {"x", "y"}
    settings = dict(epochs=2, budget_minutes=0, min_df=1, dev_size=60, batch_size=32, hidden_dims=[16])
    notebook.run_config("configs/texts.toml", data_dir=tmp_path / "a", out=tmp_path / "nb", **settings)
    assert "skipped" not in capsys.readouterr().out
    with pytest.raises(UserError, match="holds a run with a different config \\(data\\)"):
        notebook.run_config("configs/texts.toml", data_dir=tmp_path / "b", out=tmp_path / "nb", **settings)
    assert {r[1] for r in rows(tmp_path / "nb/texts/submission.csv")[1:]} == {"neg", "pos"}


# ---------------------------------------------------------------- what is refused, in one line

def test_data_that_would_not_fit_in_memory_are_refused_before_loading(tmp_path, monkeypatch):
    from toolkit import folders
    text_competition(tmp_path)
    monkeypatch.setattr(folders, "available_memory", lambda: 10_000)
    monkeypatch.setattr(folders, "read_table", lambda *a, **k: pytest.fail("read before the check"))
    with pytest.raises(UserError, match=r"need about 0\.0 GB of memory and 0\.0 GB are free; data that do not fit"):
        load_raw("texts", tmp_path, DEFAULTS)

def no_layout(root):
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("hello")


def sample_with_other_ids(root):
    text_competition(root)
    write_table(root / "sample_submission.csv", [["id", "label"], ["nope", "neg"]])


def repeated_test_ids(root):
    text_competition(root)
    test = rows(root / "test.csv")
    write_table(root / "test.csv", [test[0], *[[test[1][0], r[1]] for r in test[1:]]])


def single_class(root):
    text_competition(root, labels=("pos",))


def regression_target(root):
    text_competition(root)
    train = rows(root / "train.csv")
    write_table(root / "train.csv", [train[0], *[[*r[:2], f"{i / 7:.3f}"] for i, r in enumerate(train[1:])]])


def several_labels(root):
    text_competition(root)
    train = rows(root / "train.csv")
    write_table(root / "train.csv", [[*train[0], "toxic"], *[[*r, "0"] for r in train[1:]]])


def empty_test(root):
    text_competition(root)
    (root / "test.csv").write_text("")


def no_header(root):
    text_competition(root)
    write_table(root / "train.csv", [["1", make_review(random.Random(0), 1), "pos"]] * 5)


def archive(root):
    root.mkdir(parents=True)
    (root / "train.csv.7z").write_bytes(b"7z")
    (root / "test.csv.7z").write_bytes(b"7z")


def no_label_column(root):
    text_competition(root)
    train = rows(root / "train.csv")
    write_table(root / "train.csv", [r[:2] for r in train])


def json_files(root):
    root.mkdir(parents=True)
    (root / "train.json").write_text("[]")
    (root / "test.json").write_text("[]")


def broken_image(root):
    image_competition(root, "folders")
    (root / "train" / "ant" / "0.png").write_bytes(b"not a png")


@pytest.mark.parametrize("make, kind, message", [
    (no_layout, "texts", "no data in a layout this toolkit reads; expected, for texts, train and test"),
    (no_layout, "images", "train/<class>/\\* with test/\\*"),
    (sample_with_other_ids, "texts", "sample_submission.csv: 1 of its ids are not in the test data"),
    (repeated_test_ids, "texts", "the test data repeat id 't000'"),
    (single_class, "texts", "train.csv: every row has label 'pos'; classifying needs two classes"),
    (regression_target, "texts", "a numeric regression target, which is out of scope"),
    (several_labels, "texts", "several labels per row are out of scope: --set label_column=NAME"),
    (empty_test, "texts", "test.csv: the file is empty"),
    (no_header, "texts", "is not a header row; files without one are out of scope"),
    (archive, "texts", r"\.csv\.7z: a \.7z archive: extract it first"),
    (json_files, "texts", r"\.json: JSON: out of scope; save it as \.csv"),
    (no_label_column, "texts", "cannot tell the label column: test.csv has every one of its columns"),
    (broken_image, "images", "0.png: not an image this toolkit can decode"),
])
def test_data_outside_the_layouts_ends_in_one_line_exit_2_and_nothing_written(tmp_path, capsys, make, kind, message):
    make(tmp_path / "comp")
    assert run_config(kind, tmp_path / "comp", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()  # not even an empty --out folder where there was none


def test_the_notebook_picks_the_config_by_what_a_competitions_folder_holds(tmp_path):
    from toolkit.notebook import competition_config
    text_competition(tmp_path / "texts")
    image_competition(tmp_path / "folders", "folders")
    image_competition(tmp_path / "pixels", "pixels")
    assert competition_config(tmp_path / "texts") == "configs/texts.toml"
    assert competition_config(tmp_path / "folders") == competition_config(tmp_path / "pixels") == "configs/images.toml"
