"""After training: a checkpoint alone rebuilds the model (``recconv.models.load_model``), and
``<example>.py predict`` explains what it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from examples import registry
from recconv.models import create_model, load_model


def _checkpoint(path: Path, **extra: object) -> Path:
    options = {"num_classes": 2, "in_chans": 1}
    model = create_model("recnext_seq_tiny", **options)
    config = {"preset": "recnext_seq_tiny", "options": options}
    torch.save({"model": model.state_dict(), "model_config": config, "classes": ["a", "b"], **extra}, path)
    return path


def test_load_model_rebuilds_and_reports_what_the_example_knew(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m.pt", example="sequence_long_range", data={"length": 64})
    model = load_model(path)
    assert model.pretrained_cfg["classes"] == ["a", "b"] and model.pretrained_cfg["data"] == {"length": 64}
    assert model(torch.randn(3, 1, 64)).shape == (3, 2)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, "load_model: no checkpoint at"),
        (b"", ValueError, r"load_model: .*m.pt is not a readable checkpoint"),
        ({"model": {}}, ValueError, r"holds no 'model_config' .* load_checkpoint\(model, path\)"),
        (
            {"model": {}, "example": "audio_streaming"},
            ValueError,
            r"holds no 'model_config' .*; examples/audio_streaming.py wrote it and reloads it \(--checkpoint\)",
        ),
    ],
)
def test_load_model_errors_name_the_file(tmp_path: Path, content: object, error: type, message: str) -> None:
    path = tmp_path / "m.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(error, match=message):
        load_model(path)


def test_predict_refuses_another_examples_checkpoint_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _checkpoint(tmp_path / "m.pt", example="sequence_long_range", data={"length": 64})
    with pytest.raises(SystemExit):
        registry()["image_pathfinder"].main(["predict", str(path), "x.png"])
    assert "m.pt was trained by sequence_long_range, not image_pathfinder" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_bytes(b"1\t\xff\n")
    with pytest.raises(SystemExit):
        registry()["sequence_long_range"].main(["predict", str(path), str(tmp_path / "bad.tsv")])
    assert "bad.tsv, line 1: not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "ok.tsv").write_text("0\t1\t2\t3\n")
    predictions = registry()["sequence_long_range"].main(["predict", str(path), str(tmp_path / "ok.tsv")])
    assert [label for label, _ in predictions[str(tmp_path / "ok.tsv")]] in (["a", "b"], ["b", "a"])
