"""Sharing a trained model as a Hugging Face folder (config.json + model.safetensors) with
``huggingface_hub``'s PyTorchModelHubMixin, on local folders only (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("huggingface_hub")

from recconv.cli import main  # noqa: E402
from recconv.models import create_model, load_checkpoint, load_model  # noqa: E402
from recconv.models.hub import HubModel  # noqa: E402

OPTIONS = {"num_classes": 3, "in_chans": 2, "levels": (0, 1, 2, 3)}
METADATA = {
    "classes": ["a", "b", "c"],
    "front_end": {"kind": "none"},
    "data": {"length": 64},
    "example": "sequence_long_range",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that reached for the Hub would fail, not download


def _example_checkpoint(path: Path) -> Path:
    """A checkpoint as the examples write it: weights, model_config and what they knew of the data."""
    torch.manual_seed(0)
    model = create_model("recnext_seq_tiny", **OPTIONS)
    config = {"preset": "recnext_seq_tiny", "options": OPTIONS}
    torch.save({"model": model.state_dict(), "model_config": config, **METADATA}, path)
    return path


def test_save_and_load_give_the_same_model_and_outputs(tmp_path: Path) -> None:
    shared = HubModel.from_checkpoint(_example_checkpoint(tmp_path / "recconv.pt"))
    shared.save_pretrained(tmp_path / "folder")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = HubModel.from_pretrained(tmp_path / "folder")
    assert isinstance(loaded, HubModel) and not loaded.training
    x = torch.randn(2, 2, 64)
    assert torch.equal(loaded(x), load_model(tmp_path / "recconv.pt")(x))
    assert loaded.model.pretrained_cfg == {
        "preset": "recnext_seq_tiny",
        "options": {**OPTIONS, "levels": [0, 1, 2, 3]},  # JSON has lists; the model is the same
        **METADATA,
    }
    assert loaded.model.levels == (0, 1, 2, 3)


def test_config_json_holds_the_preset_its_options_and_the_data_metadata(tmp_path: Path) -> None:
    HubModel.from_checkpoint(_example_checkpoint(tmp_path / "recconv.pt")).save_pretrained(tmp_path / "f")
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    assert config == {
        "preset": "recnext_seq_tiny",
        "options": {**OPTIONS, "levels": [0, 1, 2, 3]},
        **METADATA,
    }
    card = (tmp_path / "f" / "README.md").read_text()
    assert "library_name: recconv" in card


def test_the_weights_file_is_a_plain_state_dict_of_the_preset(tmp_path: Path) -> None:
    shared = HubModel("recnext_seq_tiny", {"num_classes": 3})
    shared.save_pretrained(tmp_path)
    model = create_model("recnext_seq_tiny", num_classes=3)
    load_checkpoint(model, tmp_path / "model.safetensors")  # strict: no wrapper prefix on the keys
    assert all(torch.equal(v, shared.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_model_built_for_sharing_trains_and_round_trips(tmp_path: Path) -> None:
    shared = HubModel("recnext_seq_tiny", {"num_classes": 2}, classes=["no", "yes"])
    loss = shared(torch.randn(4, 1, 32)).logsumexp(dim=1).sum()
    loss.backward()
    assert all(p.grad is not None for p in shared.model.parameters() if p.requires_grad)
    shared.save_pretrained(tmp_path)
    x = torch.randn(1, 1, 32)
    assert torch.equal(HubModel.from_pretrained(tmp_path)(x), shared.eval()(x))


def test_options_that_json_cannot_hold_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"HubModel: options goes into config.json .* got \{'act_layer'"):
        HubModel("recnext_seq_tiny", {"act_layer": torch.nn.ReLU})


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (
            lambda f: (f / "config.json").unlink(),
            ValueError,
            r"has no config.json naming a recconv preset \(no such file\)",
        ),
        (
            lambda f: (f / "config.json").write_text("{"),
            ValueError,
            r"the config.json of .* is not valid JSON",
        ),
        (
            lambda f: (f / "config.json").write_text('{"architectures": ["BertModel"]}'),
            ValueError,
            r"naming a recconv preset \(keys \['architectures'\]\); expected a folder written by HubModel.save_pretrained",
        ),
        (
            lambda f: (f / "config.json").write_text('{"preset": "recnext_seq_tyni"}'),
            ValueError,
            r"unknown model 'recnext_seq_tyni'.*Did you mean 'recnext_seq_tiny'",
        ),
        (
            lambda f: (f / "model.safetensors").unlink(),
            FileNotFoundError,
            r"no such file .*model.safetensors",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 16),
            ValueError,
            r"model.safetensors' is not a readable .safetensors file",
        ),
        (
            lambda f: (f / "config.json").write_text(
                '{"preset": "recnext_seq_tiny", "options": {"num_classes": 5}}'
            ),
            ValueError,
            r"does not match RecNeXt:\n  wrongly shaped keys \(4\): head",
        ),
    ],
    ids=[
        "no-config",
        "bad-json",
        "foreign-config",
        "unknown-preset",
        "no-weights",
        "bad-weights",
        "other-shape",
    ],
)
def test_a_damaged_or_foreign_folder_gets_a_clear_error(tmp_path: Path, damage, error, message) -> None:
    HubModel("recnext_seq_tiny", {"num_classes": 3}).save_pretrained(tmp_path)
    damage(tmp_path)
    with pytest.raises(error, match=message):
        HubModel.from_pretrained(tmp_path)


def test_strict_false_loads_what_fits_as_the_mixin_allows(tmp_path: Path) -> None:
    shared = HubModel("recnext_seq_tiny", {"num_classes": 3})
    shared.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"preset": "recnext_seq_tiny", "options": {"num_classes": 5}}')
    loaded = HubModel.from_pretrained(tmp_path, strict=False)  # a new head, the backbone's weights
    stem = "stem.stem.0.conv.weight"
    assert loaded.model.head.head.linear.out_features == 5
    assert torch.equal(loaded.model.state_dict()[stem], shared.model.state_dict()[stem])


def test_a_missing_local_folder_is_named_not_looked_up_on_the_hub(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no folder '.*nowhere'; expected a folder written by"):
        HubModel.from_pretrained(tmp_path / "nowhere")


def test_cli_export_hub_turns_an_example_checkpoint_into_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = _example_checkpoint(tmp_path / "recconv.pt")
    assert main(["export-hub", str(checkpoint), str(tmp_path / "shared")]) == 0
    assert "wrote" in capsys.readouterr().out
    x = torch.randn(1, 2, 64)
    assert torch.equal(HubModel.from_pretrained(tmp_path / "shared")(x), load_model(checkpoint)(x))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "shared").mkdir() or (d / "shared" / "keep.txt").write_text("x"), "is not empty"),
        (lambda d: torch.save({"model": {}}, d / "recconv.pt"), "holds no 'model_config'"),
    ],
    ids=["non-empty-folder", "no-model-config"],
)
def test_cli_export_hub_never_overwrites_and_names_a_checkpoint_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture, setup, message: str
) -> None:
    _example_checkpoint(tmp_path / "recconv.pt")
    setup(tmp_path)
    with pytest.raises(SystemExit):
        main(["export-hub", str(tmp_path / "recconv.pt"), str(tmp_path / "shared")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "shared" / "config.json").exists()
