"""``recconv erf --checkpoint`` and :func:`recconv.analysis.checkpoint_erf`: the ERF of a model an
example trained, rebuilt from its checkpoint alone, on inputs of the size it was trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from examples import registry
from recconv.analysis import checkpoint_erf
from recconv.cli import main
from recconv.models import create_model


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A ``--smoke`` run of the sequence example: its folder and results."""
    out = tmp_path_factory.mktemp("sequence_run")
    results = registry()["sequence_long_range"].main(["--smoke", "--device", "cpu", "--out", str(out)])
    return out, results


def _checkpoint(path: Path, preset: str, options: dict, **extra: object) -> Path:
    model = create_model(preset, **options)
    config = {"preset": preset, "options": options}
    torch.save({"model": model.state_dict(), "model_config": config, **extra}, path)
    return path


def test_cli_plots_the_erf_of_an_example_checkpoint_without_model(sequence_run, tmp_path, capsys) -> None:
    out, results = sequence_run
    figure = tmp_path / "erf.png"
    for name in ("recconv", "small"):
        argv = ["erf", "--checkpoint", str(out / f"{name}.pt"), "--samples", "1", "--out", str(figure)]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert f"| {name} | " in printed and figure.read_bytes()[:4] == b"\x89PNG"
        figure.unlink()


def test_the_input_is_what_the_example_trained_on(sequence_run) -> None:
    out, results = sequence_run
    label, result = checkpoint_erf(out / "recconv.pt", samples=1)
    assert label == "recconv" and result.scores.shape == (results["data"]["length"],)
    _, resized = checkpoint_erf(out / "small.pt", size=96, samples=1)
    assert resized.scores.shape == (96,) and resized.support > 0


@pytest.mark.parametrize(
    ("preset", "options", "data", "spatial"),
    [
        ("recnext_seq_tiny", {"in_chans": 2}, {"length": 48}, (48,)),
        ("recnext_audio_tiny", {}, {"image_size": [24, 40], "channels": 1}, (24, 40)),
        ("recnext_audio_tiny", {"in_chans": 3}, {"size": 32}, (32, 32)),
        ("recnext_video_tiny", {"in_chans": 1}, {"frames": 4, "size": [32, 24]}, (4, 32, 24)),
        ("recnext_seq_tiny", {"in_chans": 40}, {"input_size": [40, 101]}, (101,)),
    ],
    ids=["sequence", "image-folder", "embedded-image", "video", "input-size"],
)
def test_each_examples_data_info_gives_the_input_size(tmp_path, preset, options, data, spatial) -> None:
    path = _checkpoint(tmp_path / "m.pt", preset, options, data=data)
    _, result = checkpoint_erf(path, samples=1)
    assert result.scores.shape == spatial


def test_a_front_end_of_unrecorded_size_needs_size(tmp_path, capsys) -> None:
    data = {"source": "embedded synthetic keywords, seed 0", "per_class": [12, 4, 4]}
    path = _checkpoint(tmp_path / "audio.pt", "recnext_audio_tiny", {"num_classes": 5}, data=data)
    argv = ["erf", "--checkpoint", str(path), "--samples", "1", "--out", str(tmp_path / "erf.png")]
    with pytest.raises(SystemExit):
        main(argv)
    assert (
        "checkpoint_erf: " + str(path) + " does not record the 2D input size the model was trained on "
        "(its data info has ['per_class', 'source']); pass size (recconv erf --size N [N ...])"
    ) in capsys.readouterr().err
    assert main([*argv, "--size", "40", "101"]) == 0
    with pytest.raises(SystemExit):
        main([*argv, "--size", "40", "101", "7"])
    assert (
        "checkpoint_erf: size must be an int or a tuple of 2 ints, got [40, 101, 7]"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "load_model: no checkpoint at"),
        (
            {"model": {}},
            "holds no 'model_config' (preset and options) to rebuild the model from; build it with ",
        ),
        ({"model": {}}, "; or name its architecture with --model NAME"),
    ],
    ids=["missing", "no-config", "no-config-names-the-flag"],
)
def test_a_checkpoint_without_model_config_or_file_is_an_argparse_error(tmp_path, capsys, content, message):
    path = tmp_path / "weights.pt"
    if content is not None:
        torch.save(content, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["erf", "--checkpoint", str(path), "--out", str(tmp_path / "erf.png")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_size_per_axis_is_for_models_not_layers(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["erf", "--size", "16", "32"])
    assert "--size takes one value for RecConv layers" in capsys.readouterr().err
