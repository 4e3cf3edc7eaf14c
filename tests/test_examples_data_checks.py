"""Example data is checked, not trusted: broken files are skipped and counted or refused by name,
classes are checked per split, and the outcome is the same for every seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest

from examples import registry
from examples.kit import audio_data, pathfinder_data, sequence_data, video_data
from examples.kit.data import UsageError

from .test_examples_audio import SPEAKERS, tone, write_folder, write_wav
from .test_examples_more import _write_images, _write_ucr

# ---------------------------------------------------------------- WAV folders


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])  # the header still promises every frame


def test_truncated_wavs_are_skipped_and_counted(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_wav(tmp_path / "yes" / "cut_nohash_0.wav", tone(440.0))
    _truncate(tmp_path / "yes" / "cut_nohash_0.wav", 44 + 1000)
    with pytest.warns(UserWarning, match=r"skipped 1 truncated WAV files \(shorter than their header says\) "
                      r"\(yes/cut_nohash_0.wav\)"):  # fmt: skip
        splits = audio_data.load_speech_commands(tmp_path)
    assert splits.info["skipped_truncated"] == 1
    for seed in (0, 1, 2):  # the same files, whatever the seed
        again = audio_data.load_speech_commands(tmp_path, seed=seed)
        assert [path for path, _ in again.train.items] == [path for path, _ in splits.train.items]


def test_upper_case_wav_is_read_and_long_clips_are_cut_once(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_wav(tmp_path / "yes" / f"{SPEAKERS[3]}_nohash_7.WAV", tone(440.0, seconds=1.5))
    write_wav(tmp_path / "no" / f"{SPEAKERS[3]}_nohash_7.wav", tone(660.0, seconds=2.0))
    with pytest.warns(UserWarning) as caught:
        splits = audio_data.load_speech_commands(tmp_path)
    cut = [str(w.message) for w in caught if "longer than" in str(w.message)]
    assert cut == [
        f"--data-dir {tmp_path}: 2 WAV files longer than the model's one second "
        f"(no/{SPEAKERS[3]}_nohash_7.wav, yes/{SPEAKERS[3]}_nohash_7.WAV); each is cut to its first second"
    ]
    assert splits.info["cut_to_one_second"] == 2
    every = {p for d in (splits.train, splits.val, splits.test) for p, _ in d.items}
    assert f"yes/{SPEAKERS[3]}_nohash_7.WAV" in every
    dataset, index = next(
        (d, i)
        for d in (splits.train, splits.val, splits.test)
        for i, (p, _) in enumerate(d.items)
        if p and p.endswith(".WAV")
    )
    assert dataset[index][0].shape == (16_000,)


def test_one_word_and_a_word_missing_from_training_are_refused(tmp_path: Path) -> None:
    for n, speaker in enumerate(SPEAKERS[:6]):
        write_wav(tmp_path / "one" / "yes" / f"{speaker}_nohash_{n}.wav", tone(440.0))
    (tmp_path / "one" / "validation_list.txt").write_text(f"yes/{SPEAKERS[0]}_nohash_0.wav\n")
    (tmp_path / "one" / "testing_list.txt").write_text(f"yes/{SPEAKERS[1]}_nohash_1.wav\n")
    with pytest.raises(UsageError, match=r"found only the class \['yes'\]; a classifier needs two or more"):
        audio_data.load_speech_commands(tmp_path / "one")
    paths = write_folder(tmp_path / "two")
    up = [p for p in paths if p.startswith("up/")]
    (tmp_path / "two" / "validation_list.txt").write_text("\n".join(up) + "\n")  # every "up" clip
    (tmp_path / "two" / "testing_list.txt").write_text(paths[0] + "\n")
    with pytest.raises(UsageError, match=r"the training set has no example of \['up'\]"):
        audio_data.load_speech_commands(tmp_path / "two")


# ---------------------------------------------------------------- UCR files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1\t0.5\n2\t0.7\n1\t\xff\xfe\n", r"Toy_TRAIN.tsv, line 3: not UTF-8 text"),
        (
            b"1\t0.5\n2\tinf\n1\t0.2\n",
            r"Toy_TRAIN.tsv, line 2: values must be finite \(NaN marks a missing value\)",
        ),
        (b"1\t0.5\n1\t0.7\n1\t0.1\n", r"found only the class \['1'\]; a classifier needs two or more"),
    ],
)
def test_bad_ucr_content_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "Toy_TRAIN.tsv").write_bytes(content)
    (tmp_path / "Toy_TEST.tsv").write_text("1\t0.5\n")
    with pytest.raises(UsageError, match=message):
        sequence_data.load_ucr(tmp_path)


def test_infinite_values_in_npy_are_named(tmp_path: Path) -> None:
    numpy.save(tmp_path / "x_TRAIN.npy", numpy.array([[1, 0.5], [2, -numpy.inf], [1, 0.2]]))
    numpy.save(tmp_path / "x_TEST.npy", numpy.array([[1, 0.5]]))
    with pytest.raises(UsageError, match=r"x_TRAIN.npy, row 2: values must be finite"):
        sequence_data.load_ucr(tmp_path)


def test_ucr_validation_holds_every_class_for_every_seed(tmp_path: Path) -> None:
    rows = [f"{1 + (i >= 17)}\t{i}.0\t1.0" for i in range(20)]  # 17 of class 1, 3 of class 2
    (tmp_path / "Toy_TRAIN.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "Toy_TEST.tsv").write_text("1\t0.0\t1.0\n")  # class 2 missing from test
    for seed in range(8):
        with pytest.warns(UserWarning, match=r"the test set has no example of \['2'\]"):
            splits = sequence_data.load_ucr(tmp_path, seed=seed)
        assert sorted(set(splits.val.tensors[1].tolist())) == [0, 1]
        assert splits.info["classes_missing"] == {"test": ["2"]}


# ---------------------------------------------------------------- image and clip folders


def test_broken_images_are_skipped_and_counted(tmp_path: Path) -> None:
    _write_images(tmp_path)
    (tmp_path / "train" / "cat" / "empty.png").write_bytes(b"")
    good = (tmp_path / "train" / "dog" / "0.png").read_bytes()
    (tmp_path / "train" / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "test" / "cat" / "text.png").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable or corrupt images \(test/cat/text.png, "
                      r"train/cat/empty.png, train/dog/cut.png\)"):  # fmt: skip
        splits = pathfinder_data.load_image_folder(tmp_path)
    assert splits.info["skipped_unreadable"] == 3
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (8, 8)
    for image, _ in splits.train:  # every kept image reads, whichever the seed visits first
        assert image.shape == (1, 12, 10)


def test_one_image_class_is_refused(tmp_path: Path) -> None:
    _write_images(tmp_path)
    for split in ("train", "test"):
        for path in (tmp_path / split / "dog").iterdir():
            path.unlink()
        (tmp_path / split / "dog").rmdir()
    with pytest.raises(UsageError, match=r"found only the class \['cat'\]"):
        pathfinder_data.load_image_folder(tmp_path)


def test_frames_are_read_in_natural_order(tmp_path: Path) -> None:
    from PIL import Image

    for t in (1, 2, 10, 11):
        Image.new("L", (4, 4), t).save(tmp_path / f"frame_{t}.png")
    assert (video_data.read_clip(tmp_path)[:, 0, 0, 0] * 255).round().tolist() == [1, 2, 10, 11]


def test_broken_clips_are_skipped_and_counted(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("left", "right"):
        (tmp_path / label).mkdir()
        for n in range(4):
            numpy.save(tmp_path / label / f"{n}.npy", numpy.full((4, 8, 8), n, dtype=numpy.uint8))
    (tmp_path / "left" / "empty.npy").write_bytes(b"")
    (tmp_path / "right" / "bad.pt").write_bytes(b"\x00garbage")
    frames = tmp_path / "right" / "frames"
    frames.mkdir()
    Image.new("L", (8, 8), 3).save(frames / "0.png")
    (frames / "1.png").write_bytes(b"")
    with pytest.warns(
        UserWarning, match=r"skipped 3 unreadable clips \(left/empty.npy, right/bad.pt, right/frames\)"
    ):
        splits = video_data.load_clip_folder(tmp_path)
    assert splits.info["skipped_unreadable"] == 3
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8


# ---------------------------------------------------------------- --smoke on a small folder


def test_smoke_fits_the_batch_to_a_small_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_ucr(tmp_path / "data")
    (tmp_path / "data" / "Toy_TRAIN.tsv").write_text(  # 12 series: 10 after validation, under a batch of 16
        "\n".join((tmp_path / "data" / "Toy_TRAIN.tsv").read_text().splitlines()[:12]) + "\n"
    )
    argv = [
        "--smoke",
        "--device",
        "cpu",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "out"),
    ]
    results = registry()["sequence_long_range"].main(argv)
    assert results["data"]["train"] == 10 and results["training"]["batch_size"] == 10
    assert "budget: batch 10: the whole training set" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["status"] == "complete"
