"""The video, Pathfinder and sequence examples: generators, real-data loaders, smoke runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy
import pytest
import torch

from examples import registry
from examples.kit import pathfinder_data, sequence_data, synthetic, video_data
from examples.kit.data import UsageError
from examples.kit.harness import ModelSpec
from recconv.models import load_checkpoint, load_model
from recconv.models.blocks import RecNeXtBlock

from .torchrun_check import torchrun_two_processes

EXAMPLES = registry()


def _new_wav(folder: Path) -> Path:
    from .test_examples_audio import tone, write_wav

    write_wav(folder / "new.WAV", tone(440.0, seconds=1.2))
    return folder / "new.WAV"


def _new_image(folder: Path) -> Path:
    from PIL import Image

    Image.new("L", (40, 40), 90).save(folder / "new.png")  # resized to the training images' 32 x 32
    return folder / "new.png"


def _new_clip(folder: Path) -> Path:
    numpy.save(folder / "new.npy", numpy.zeros((12, 20, 20), dtype=numpy.uint8))
    return folder / "new.npy"


def _new_series(folder: Path) -> Path:
    (folder / "new.tsv").write_text("0\t" + "\t".join(str(v % 7) for v in range(300)) + "\n")
    return folder / "new.tsv"


NEW_DATA = {  # a file of new data each example's predict reads
    "audio_keywords": _new_wav,
    "image_pathfinder": _new_image,
    "video_actions": _new_clip,
    "sequence_long_range": _new_series,
}


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# The generators: deterministic for a seed, and the class is what the docs say it is.


@pytest.mark.parametrize(
    ("generate", "shape"),
    [
        (sequence_data.pattern_position, (256,)),
        (sequence_data.adding_problem, (256,)),
        (video_data.render_clips, (8, 16)),
        (pathfinder_data.render_pathfinder, (32,)),
    ],
)
def test_generators_are_deterministic_for_a_seed(generate, shape) -> None:
    labels = torch.tensor([0, 1, 1, 0])
    first = generate(labels, *shape, _generator(3))
    assert torch.equal(first, generate(labels, *shape, _generator(3)))
    assert not torch.equal(first, generate(labels, *shape, _generator(4)))
    assert first.shape[0] == 4 and first.dtype == torch.float32 and torch.isfinite(first).all()


def test_pattern_position_puts_the_bump_where_the_label_says() -> None:
    labels = torch.arange(40) % 2
    series = sequence_data.pattern_position(labels, 2048, _generator())
    smooth = torch.nn.functional.avg_pool1d(series, 31, stride=1, padding=15)[:, 0]
    peak = smooth.argmax(dim=1).float() / 2048
    centres = torch.tensor(sequence_data.POSITIONS)[labels]
    assert ((peak - centres).abs() <= sequence_data.JITTER + 0.01).all()


def test_adding_problem_marks_one_number_per_half_and_labels_their_sum() -> None:
    labels = torch.arange(64) % 2
    series = sequence_data.adding_problem(labels, 100, _generator())
    values, markers = series[:, 0], series[:, 1]
    assert torch.equal(markers[:, :50].sum(dim=1), torch.ones(64))
    assert torch.equal(markers[:, 50:].sum(dim=1), torch.ones(64))
    assert torch.equal(((values * markers).sum(dim=1) > 1).long(), labels)
    assert ((values >= 0) & (values <= 1)).all()


def test_trajectories_close_exactly_for_the_closed_shapes() -> None:
    labels = torch.arange(len(video_data.SHAPES)).repeat(4)
    points = video_data.trajectories(labels, 24, _generator())
    assert ((points > -1) & (points < 1)).all()
    gap = (points[:, 0] - points[:, -1]).norm(dim=1)
    closed = torch.tensor([video_data.SHAPES[i] in ("circle", "square", "figure-eight") for i in labels])
    assert (gap[closed] < 1e-4).all() and (gap[~closed] > 0.2).all()


def test_rendered_clips_show_the_dot_on_its_trajectory() -> None:
    labels = torch.arange(8)
    generator = _generator(5)
    points = video_data.trajectories(labels, 8, _generator(5))
    clips = video_data.render_clips(labels, 8, 32, generator, distractors=0)
    assert clips.shape == (8, 1, 8, 32, 32) and clips.min() >= 0 and clips.max() <= 1
    brightest = clips[:, 0].flatten(2).argmax(dim=2)
    found = torch.stack([brightest % 32, brightest // 32], dim=-1).float()
    expected = (points + 1) / 2 * 32 - 0.5
    assert ((found - expected).abs() <= 1.0).all()


@pytest.mark.parametrize("size", [pathfinder_data.MIN_SIZE, 64])
def test_pathfinder_dots_sit_on_path_ends_as_the_label_says(size: int) -> None:
    labels = torch.arange(200) % 2
    paths, dots = pathfinder_data.pathfinder_layout(labels, size, _generator(1))
    assert len(paths) == 2 + pathfinder_data.DISTRACTORS
    assert torch.equal(dots[:, 0], paths[0][:, 0])
    assert torch.equal(dots[:, 1], torch.where(labels[:, None].bool(), paths[0][:, -1], paths[1][:, 0]))
    assert ((dots[:, 0] - dots[:, 1]).norm(dim=-1) >= pathfinder_data.SPAN[0] * size - 1e-3).all()
    # The label moves the second dot and nothing else.
    swapped, _ = pathfinder_data.pathfinder_layout(1 - labels, size, _generator(1))
    assert all(torch.equal(path, other) for path, other in zip(paths, swapped))
    images = pathfinder_data.render_pathfinder(labels[:2], 48, _generator(2))
    differs = (images - pathfinder_data.render_pathfinder(1 - labels[:2], 48, _generator(2))).abs() > 0.5
    assert differs.any(dim=(1, 2, 3)).all() and differs.sum() < 0.05 * differs.numel()


def test_pathfinder_dot_distance_does_not_tell_the_class() -> None:
    labels = torch.arange(4000) % 2
    _, dots = pathfinder_data.pathfinder_layout(labels, 64, _generator(3))
    distance = (dots[:, 0] - dots[:, 1]).norm(dim=-1)
    # The best a threshold on the distance does, either way round: chance, up to sampling noise.
    right = torch.stack([((distance < t) == labels.bool()).float().mean() for t in distance.unique()])
    assert max(right.max().item(), 1 - right.min().item()) < 0.55


def test_random_paths_stay_inside_the_image() -> None:
    length = torch.full((50,), 20.0)
    points = pathfinder_data.random_paths(50, 6, length, math.radians(40), 48, _generator())
    assert (points >= 0).all() and (points <= 47).all()
    steps = (points[:, 1:] - points[:, :-1]).norm(dim=-1)
    assert (steps <= 20.0 / int(20.0 / pathfinder_data.SAMPLE_STEP) + 1e-4).all()  # no jumps


def test_fresh_draws_follow_the_global_seed_and_labels() -> None:
    data = synthetic.FreshDraws(sequence_data.pattern_position, 6, 2, 128)
    torch.manual_seed(0)
    first = [data[i] for i in range(6)]
    torch.manual_seed(0)
    again = [data[i] for i in range(6)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert [int(y) for _, y in first] == [0, 1, 0, 1, 0, 1]
    torch.manual_seed(1)
    assert not torch.equal(data[0][0], first[0][0])
    with pytest.raises(IndexError, match="FreshDraws: index 6 out of range for 6 examples"):
        data[6]


def test_synthetic_splits_fix_validation_and_test_by_seed() -> None:
    one = sequence_data.synthetic_sequences("position", (8, 4, 6), 128, seed=1)
    two = sequence_data.synthetic_sequences("position", (8, 4, 6), 128, seed=1)
    other = sequence_data.synthetic_sequences("position", (8, 4, 6), 128, seed=2)
    assert (len(one.train), len(one.val), len(one.test)) == (8, 4, 6)
    assert torch.equal(one.test.tensors[0], two.test.tensors[0])
    assert not torch.equal(one.test.tensors[0], other.test.tensors[0])
    assert not torch.equal(one.val.tensors[0], one.test.tensors[0][:4])
    assert one.classes == sequence_data.POSITION_CLASSES
    clips = video_data.synthetic_clips((8, 8, 8), frames=8, size=16)
    assert clips.classes == list(video_data.SHAPES) and clips.test.tensors[0].shape == (8, 1, 8, 16, 16)
    images = pathfinder_data.synthetic_pathfinder((4, 4, 4), size=32)
    assert images.classes == pathfinder_data.CLASSES and images.val.tensors[0].shape == (4, 1, 32, 32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sequence_data.synthetic_sequences("copy", (4, 4, 4), 128), "unknown task 'copy'"),
        (lambda: sequence_data.synthetic_sequences("adding", (4, 4, 4), 32), "length must be at least 64"),
        (lambda: video_data.synthetic_clips((4, 4, 4), frames=4), "needs at least 8 frames of 16 x 16"),
        (lambda: pathfinder_data.synthetic_pathfinder((4, 4, 4), size=24), "size must be at least 32"),
    ],
)
def test_synthetic_data_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# Real data: UCR-style files.


def _write_ucr(root: Path, suffix: str = ".tsv") -> None:
    root.mkdir(parents=True, exist_ok=True)
    generator = _generator(7)
    for split, count in (("TRAIN", 20), ("TEST", 6)):
        labels = torch.arange(count) % 2 * 2 - 1  # UCR's -1 / 1
        series = torch.randn(count, 16, generator=generator) + 3 * labels[:, None]
        table = torch.cat([labels[:, None].float(), series], dim=1).numpy()
        path = root / f"Toy_{split}{suffix}"
        if suffix == ".npy":
            numpy.save(path, table)
        else:
            numpy.savetxt(path, table, delimiter="\t" if suffix == ".tsv" else ",", fmt="%.6g")


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".npy"])
def test_ucr_folder_loads_with_classes_split_and_normalization(tmp_path: Path, suffix: str) -> None:
    _write_ucr(tmp_path, suffix)
    splits = sequence_data.load_ucr(tmp_path, seed=0)
    assert splits.classes == ["-1", "1"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 6)
    x, y = splits.test.tensors
    assert x.shape == (6, 1, 16) and y.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.allclose(x.mean(dim=2), torch.zeros(6, 1), atol=1e-5)
    assert torch.allclose(x.std(dim=2, unbiased=False), torch.ones(6, 1), atol=1e-4)
    again = sequence_data.load_ucr(tmp_path, seed=0)
    assert torch.equal(again.val.tensors[0], splits.val.tensors[0])


def test_ucr_rows_of_different_lengths_and_missing_values(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("1.0000000e+00,1,2,3,4\n2,4,3,2,1\n1,1,,3,NaN\n")
    (tmp_path / "test.csv").write_text("2,1,2\n1,5,6,7,8,9,10\n")
    splits = sequence_data.load_ucr(tmp_path)
    assert splits.classes == ["1", "2"]
    test_x = splits.test.tensors[0][:, 0]
    assert test_x.shape == (2, 4)  # padded or cut to the training length
    assert test_x[0, 2:].eq(0).all() and torch.allclose(test_x[0, :2], torch.tensor([-1.0, 1.0]))
    rows = torch.cat([splits.train.tensors[0], splits.val.tensors[0]])[:, 0]
    assert any(torch.allclose(r, torch.tensor([-1.0, 0.0, 1.0, 0.0])) for r in rows)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no train file; expected DIR/<name>_TRAIN.tsv"),
        ({"A_TRAIN.tsv": "1\t2\n"}, "no test file"),
        ({"A_TRAIN.tsv": "1\t2\n", "B_TRAIN.csv": "1,2\n", "A_TEST.tsv": "1\t2\n"}, "several train files"),
        (
            {"A_TRAIN.tsv": "1\t2\n2\t3\n", "A_TEST.tsv": "3\t2\n"},
            r"labels \['3'\] do not occur in A_TRAIN.tsv",
        ),
        ({"A_TRAIN.tsv": "1\tx\n", "A_TEST.tsv": "1\t2\n"}, "line 1: values must be numbers"),
        ({"A_TRAIN.tsv": "1\n", "A_TEST.tsv": "1\t2\n"}, "line 1: expected a label and at least one value"),
        ({"A_TRAIN.tsv": "\n", "A_TEST.tsv": "1\t2\n"}, "no series in the file"),
        ({"A_TRAIN.tsv": "1\t2\n", "A_TEST.tsv": "1\t2\n"}, "needs at least two series"),
    ],
)
def test_bad_ucr_folders(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UsageError, match=message):
        sequence_data.load_ucr(tmp_path)


def test_bad_ucr_npy_and_missing_folder(tmp_path: Path) -> None:
    numpy.save(tmp_path / "x_TRAIN.npy", numpy.zeros(5))
    numpy.save(tmp_path / "x_TEST.npy", numpy.zeros((2, 3)))
    with pytest.raises(UsageError, match=r"expected a 2D numeric array .* got shape \(5,\)"):
        sequence_data.load_ucr(tmp_path)
    with pytest.raises(UsageError, match="no such folder"):
        sequence_data.load_ucr(tmp_path / "missing")


# Real data: image folders.


def _write_images(
    root: Path, mode: str = "L", size: tuple[int, int] = (12, 10), count: int = 4, splits=("train", "test")
) -> None:
    from PIL import Image

    for split in splits:
        for index, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                value = 40 + 160 * index + n
                Image.new(mode, (size[1], size[0]), value if mode == "L" else (value, 0, 255)).save(
                    folder / f"{n}.png"
                )


def test_image_folder_loads_grayscale_and_rgb_and_resizes(tmp_path: Path) -> None:
    _write_images(tmp_path / "gray")
    splits = pathfinder_data.load_image_folder(tmp_path / "gray", seed=0)
    assert splits.classes == ["cat", "dog"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 8)  # one of each class held out
    image, label = splits.test[5]
    assert image.shape == (1, 12, 10) and label == 1
    assert torch.allclose(image, torch.full_like(image, 201 / 255))
    _write_images(tmp_path / "rgb", mode="RGB", count=2, splits=("train", "val", "test"))
    rgb = pathfinder_data.load_image_folder(tmp_path / "rgb", size=6)
    assert (len(rgb.train), len(rgb.val)) == (4, 4)
    image, _ = rgb.train[0]
    assert image.shape == (3, 6, 6) and torch.allclose(image[2], torch.ones(6, 6))


def test_bad_image_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        pathfinder_data.load_image_folder(tmp_path / "missing")
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="no test folder; expected DIR/train/<class>"):
        pathfinder_data.load_image_folder(tmp_path)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="Couldn't find any class folder"):
        pathfinder_data.load_image_folder(tmp_path)
    _write_images(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    with pytest.raises(UsageError, match="Found no valid file for the classes bird"):
        pathfinder_data.load_image_folder(tmp_path)
    (tmp_path / "train" / "bird").rmdir()
    (tmp_path / "test" / "dog" / "0.png").rename(tmp_path / "test" / "cat" / "9.png")
    for path in (tmp_path / "test" / "dog").iterdir():
        path.unlink()
    (tmp_path / "test" / "dog").rmdir()
    with pytest.raises(
        UsageError, match=r"test classes \['cat'\] differ from train classes \['cat', 'dog'\]"
    ):
        pathfinder_data.load_image_folder(tmp_path)


# Real data: clip folders.


def _write_clips(root: Path) -> None:
    from PIL import Image

    generator = _generator(1)
    for label, name in enumerate(("left", "right")):
        folder = root / name
        folder.mkdir(parents=True)
        # A frame folder, a (T, H, W) uint8 .npy, a (T, H, W, C) float .pt and a (C, T, H, W) .npy.
        frames = folder / "clip0"
        frames.mkdir()
        for t in range(6):
            Image.new("L", (8, 8), 50 * label + t).save(frames / f"{t:03d}.png")
        numpy.save(folder / "clip1.npy", numpy.full((5, 8, 8), 100 + label, dtype=numpy.uint8))
        torch.save(torch.rand(7, 8, 8, 3, generator=generator), folder / "clip2.pt")
        numpy.save(folder / "clip3.npy", numpy.ones((1, 4, 16, 16), dtype=numpy.float32) * label)


def test_clip_folder_reads_every_clip_kind_and_splits_by_class(tmp_path: Path) -> None:
    _write_clips(tmp_path)
    splits = video_data.load_clip_folder(tmp_path, frames=4, size=8, seed=0)
    assert splits.classes == ["left", "right"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)
    assert [label for _, label in splits.val.items] == [0, 1]
    for dataset in (splits.train, splits.val, splits.test):
        for clip, _ in dataset:
            assert clip.shape == (splits.info["channels"], 4, 8, 8)
    frames = video_data.read_clip(tmp_path / "left" / "clip0")
    assert frames.shape == (6, 1, 8, 8) and torch.allclose(frames[:, 0, 0, 0] * 255, torch.arange(6.0))
    assert video_data.read_clip(tmp_path / "right" / "clip3.npy").shape == (4, 1, 16, 16)
    assert video_data.read_clip(tmp_path / "left" / "clip2.pt").shape == (7, 3, 8, 8)
    fitted = video_data.fit_clip(frames, 3, (4, 4), 3)
    assert fitted.shape == (3, 3, 4, 4) and torch.allclose(
        fitted[0, :, 0, 0] * 255, torch.tensor([0.0, 2.0, 5.0])
    )


def test_clip_folder_with_train_and_test_folders(tmp_path: Path) -> None:
    _write_clips(tmp_path / "train")
    _write_clips(tmp_path / "test")
    splits = video_data.load_clip_folder(tmp_path, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 1, 8)
    first = splits.train.items[0][0]
    assert splits.info["frames"] == video_data.read_clip(first).shape[0]


def test_bad_clip_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        video_data.load_clip_folder(tmp_path / "missing")
    with pytest.raises(UsageError, match="no class folders"):
        video_data.load_clip_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("")
    with pytest.raises(UsageError, match="a class folder without clips"):
        video_data.load_clip_folder(tmp_path)
    for n in range(2):
        numpy.save(tmp_path / "a" / f"{n}.npy", numpy.zeros((4, 8, 8), dtype=numpy.uint8))
    with pytest.raises(UsageError, match="class 'a' has 2 clip"):
        video_data.load_clip_folder(tmp_path)
    numpy.save(tmp_path / "bad.npy", numpy.zeros((2, 5, 8, 8)))
    with pytest.raises(UsageError, match=r"expected a clip of shape .* got \(2, 5, 8, 8\)"):
        video_data.read_clip(tmp_path / "bad.npy")
    torch.save({"clip": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(UsageError, match="expected a tensor, found a dict"):
        video_data.read_clip(tmp_path / "dict.pt")
    (tmp_path / "empty_clip").mkdir()
    with pytest.raises(UsageError, match="a clip folder without frame images"):
        video_data.read_clip(tmp_path / "empty_clip")
    (tmp_path / "movie.mp4").write_bytes(b"")
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="reading video files needs torchcodec"):
            video_data.read_clip(tmp_path / "movie.mp4")
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="give both train/ and test/ folders"):
        video_data.load_clip_folder(tmp_path)


# The example scripts: smoke runs, real data, flags.


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_smoke_run_writes_results_plots_and_checkpoints(tmp_path: Path, name: str) -> None:
    example = EXAMPLES[name]
    results = example.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert set(results["models"]) == {"recconv", "small"}
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    preset, options = example.model(example.parser().parse_args(["--smoke"]))
    models = {}
    for model_name, result in results["models"].items():
        assert set(result) >= {"accuracy", "params", "flops", "train_seconds", "examples_per_second"}
        config = torch.load(tmp_path / f"{model_name}.pt", weights_only=True)["model_config"]
        assert (
            config["preset"] == preset
            and config["options"].items() >= {k: v for k, v in options.items() if k != "levels"}.items()
        )
        models[model_name] = model = load_model(tmp_path / f"{model_name}.pt")  # no source read
        assert result["params"] == sum(p.numel() for p in model.parameters())
        assert model.pretrained_cfg["classes"] == results["data"]["classes"] and not model.training
        rebuilt = ModelSpec(**config)()
        load_checkpoint(rebuilt, tmp_path / f"{model_name}.pt")
        assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())
    new_file = NEW_DATA[name](tmp_path)
    predictions = example.main(["predict", str(tmp_path / "recconv.pt"), str(new_file), "--top", "2"])
    assert list(predictions) == [str(new_file)]
    (first, p1), (second, p2) = predictions[str(new_file)]
    assert {first, second} <= set(results["data"]["classes"]) and 1 >= p1 >= p2 >= 0
    recconv, small = models["recconv"], models["small"]
    assert [b.token_mixer.level for b in small.modules() if isinstance(b, RecNeXtBlock)] == [0] * sum(
        small.depths
    )
    assert all(b.token_mixer.level > 0 for b in recconv.modules() if isinstance(b, RecNeXtBlock))
    assert recconv.widths == small.widths and recconv.depths == small.depths


# One example in CI (they share the harness's DDP path); the others with -m slow.
@pytest.mark.parametrize(
    "name",
    [n if n == "audio_keywords" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(EXAMPLES)],
)
def test_torchrun_two_processes_end_with_identical_parameters(tmp_path: Path, name: str) -> None:
    results = torchrun_two_processes(name, tmp_path, "--smoke")
    assert results["models"]["small"]["epochs"] == 1


def test_sequence_smoke_run_on_a_ucr_folder(tmp_path: Path) -> None:
    _write_ucr(tmp_path / "data")
    results = EXAMPLES["sequence_long_range"].main(
        [
            "--smoke",
            "--device",
            "cpu",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--batch-size",
            "6",
        ]
    )
    assert results["data"]["classes"] == ["-1", "1"] and results["data"]["train"] == 18


@pytest.mark.parametrize(
    ("name", "flags", "message"),
    [
        ("sequence_long_range", ["--length", "10"], "argument --length: expected an int >= 64, got '10'"),
        ("sequence_long_range", ["--task", "copy"], "argument --task: invalid choice: 'copy'"),
        (
            "sequence_long_range",
            ["--data-dir", "x", "--task", "adding"],
            "--task chooses the embedded data; it does not",
        ),
        (
            "sequence_long_range",
            ["--data-dir", "x", "--task", "adding", "--length", "64"],
            "--task and --length choose the",
        ),
        (
            "sequence_long_range",
            ["--data-dir", "/nonexistent/ucr"],
            "--data-dir /nonexistent/ucr: no such folder",
        ),
        ("video_actions", ["--frames", "4"], "argument --frames: expected an int >= 8, got '4'"),
        (
            "video_actions",
            ["--data-dir", "/nonexistent/clips"],
            "--data-dir /nonexistent/clips: no such folder",
        ),
        ("image_pathfinder", ["--size", "big"], "argument --size: expected an int >= 32, got 'big'"),
        (
            "image_pathfinder",
            ["--data-dir", "/nonexistent/images"],
            "--data-dir /nonexistent/images: no such folder",
        ),
    ],
)
def test_bad_flags_and_folders_are_argparse_errors(
    name: str, flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        EXAMPLES[name].main(["--device", "cpu", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
