"""RecNeXt backbones: the paper's layout and numbers, fusing, features, presets and checkpoints."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import recconv.models
from recconv.analysis.costs import model_costs
from recconv.attention import official_to_recconv
from recconv.cli import main
from recconv.models import (
    PRESETS,
    RecNeXt,
    create_model,
    list_models,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)

from . import reference
from .helpers import randomize_norms
from .official_layouts import official_format_checkpoint, official_layout

# Keys and shapes of the official checkpoints, from shared/reference/recnext_m_state_dict_layout.json
# (same content, one key per line).
M_NAMES = [f"recnext_m{i}" for i in range(6)]
PRESET_INPUTS = {
    "recnext_audio_tiny": (1, 40, 101),
    "recnext_audio_small": (1, 64, 98),
    "recnext_video_tiny": (3, 8, 40, 36),
    "recnext_video_small": (3, 5, 32, 32),
    "recnext_seq_tiny": (1, 300),
}


# --- the paper's layout and forward -------------------------------------------------------------


@pytest.mark.parametrize("name", M_NAMES + [f"recnext_a{i}" for i in range(6)])
def test_state_dict_layout_and_params_equal_the_official_checkpoints(name):
    reference = official_layout(name)
    model = create_model(name, device="meta")
    layout = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(layout.items()) == list(official_to_recconv(reference["state_dict"], model).items())
    assert sum(p.numel() for p in model.parameters()) == reference["num_params"]


def test_fused_sizes_and_macs_round_to_the_papers_table():
    # The paper's table lists fused models: M0 2.5M params and 0.4G MACs; M1 5.2M, M3 8.2M, M5 22.9M params.
    m0 = model_costs("recnext_m0")
    assert (round(m0.fused_params / 1e6, 1), round(m0.macs / 1e9, 1)) == (2.5, 0.4)
    fused = [create_model(f"recnext_m{i}", device="meta").fuse() for i in (1, 3, 5)]
    assert [round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for m in fused] == [5.2, 8.2, 22.9]


def official_forward(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """The paper's RecNeXt-M eval forward written with torch.nn.functional, driven by key names only."""

    def recconv(t: Tensor, prefix: str) -> Tensor:
        level = sum(1 for k in state if k.startswith(f"{prefix}.convs.")) - 1
        channels = t.shape[1]

        def dw(u: Tensor, weight: Tensor, stride: int = 1) -> Tensor:
            return F.conv2d(u, weight, None, stride, weight.shape[-1] // 2, 1, channels)

        features, current = [], t
        for _ in range(level):
            features.append((dw(current, state[f"{prefix}.down.weight"], 2), current.shape[2:]))
            current = features[-1][0]
        hidden = 0
        for i, (coarse, size) in enumerate(reversed(features)):
            hidden = F.interpolate(
                dw(coarse + hidden, state[f"{prefix}.convs.{i}.weight"]), size=size, mode="bilinear"
            )
        return dw(t + hidden, state[f"{prefix}.convs.{level}.weight"])

    def block(t: Tensor, prefix: str, stage: int) -> Tensor:
        mixed = reference.batch_norm(recconv(t, f"{prefix}.token_mixer"), state, f"{prefix}.norm")
        return t + reference.mlp(mixed, state, f"{prefix}.channel_mixer")

    return reference.paper_backbone(state, x, block)


@pytest.mark.parametrize("size", [(48, 48), (50, 37)])
def test_official_checkpoint_gives_the_papers_outputs(tmp_path, size):
    path = tmp_path / "recnext_m0_distill_300e.pth"
    state = official_format_checkpoint("recnext_m0", path, seed=sum(size))
    model = create_model("recnext_m0", checkpoint_path=path).eval().double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = official_forward({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, x)
    torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)


# --- fusing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape",
    [("recnext_m0", (2, 3, 56, 45)), *[(name, (2, *size)) for name, size in PRESET_INPUTS.items()]],
)
def test_fuse_keeps_outputs_and_removes_every_batchnorm(name, shape):
    generator = torch.Generator().manual_seed(0)
    model = randomize_norms(create_model(name), seed=0).eval().double()
    x = torch.randn(shape, dtype=torch.float64, generator=generator)
    expected = model(x)
    fused = model.fuse()
    assert fused is model and not model.training
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert isinstance(model.head, nn.Linear)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    assert model.fuse() is model  # fusing twice changes nothing
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_fusing_a_head_whose_batchnorm_keeps_no_running_statistics_is_refused():
    model = create_model("recnext_seq_tiny").eval()
    model.head.head.norm = nn.BatchNorm1d(model.head.head.norm.num_features, track_running_stats=False)
    with pytest.raises(ValueError, match="NormLinear: cannot fuse a BatchNorm1d without running statistics"):
        model.fuse()


def test_distillation_returns_both_heads_in_training_and_their_mean_in_eval():
    model = create_model("recnext_seq_tiny", distillation=True)
    x = torch.randn(4, 1, 64)
    logits, logits_dist = model.train()(x)
    assert logits.shape == logits_dist.shape == (4, 10)
    model.eval()
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model(x), (model.head.head(pooled) + model.head.head_dist(pooled)) / 2)
    assert isinstance(create_model("recnext_seq_tiny").train()(x), Tensor)


# --- timm's feature API -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape, reductions",
    [
        ("recnext_m0", (1, 3, 64, 96), [4, 8, 16, 32]),
        ("recnext_audio_tiny", (1, 1, 64, 100), [4, 8, 16, 32]),
        ("recnext_video_tiny", (1, 3, 6, 64, 64), [4, 8, 16, 32]),
        ("recnext_seq_tiny", (1, 1, 256), [4, 8, 16, 32]),
    ],
)
def test_features_only_shapes_follow_feature_info(name, shape, reductions):
    model = create_model(name, features_only=True).eval()
    features = model(torch.randn(shape))
    assert [info["reduction"] for info in model.feature_info] == reductions
    assert [info["module"] for info in model.feature_info] == [f"stages.{i}" for i in range(4)]
    for feature, info in zip(features, model.feature_info):
        expected = [-(-n // s) for n, s in zip(shape[2:], info["stride"])]
        assert list(feature.shape) == [shape[0], info["num_chs"], *expected]
    assert model.head is None and not any(k.startswith("head") for k in model.state_dict())


def test_video_and_audio_strides_per_axis():
    video = create_model("recnext_video_small", features_only=True, out_indices=(0, -1))
    assert [info["stride"] for info in video.feature_info] == [(1, 4, 4), (1, 32, 32)]
    assert len(video.stages) == 4
    audio = create_model("recnext_audio_tiny", features_only=True, out_indices=(1,))
    assert [info["stride"] for info in audio.feature_info] == [(8, 4)]
    assert len(audio.stages) == 2  # later stages are dropped


def test_features_match_forward_features_and_heads():
    generator = torch.Generator().manual_seed(1)
    model = randomize_norms(create_model("recnext_m0"), seed=1).eval()
    x = torch.randn(1, 3, 64, 64, generator=generator)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (1, 320)
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    backbone = create_model("recnext_m0", features_only=True, out_indices=(3,))
    backbone.load_state_dict(model.state_dict(), strict=False)
    (last,) = backbone.eval()(x)
    torch.testing.assert_close(last, model.forward_features(x))


def test_reset_classifier_and_headless_models():
    model = create_model("recnext_m0", device="meta")
    model.reset_classifier(10)
    assert model.head.head.linear.out_features == 10 and model.head.head.linear.weight.is_meta
    fused = create_model("recnext_seq_tiny").fuse()
    fused.reset_classifier(2)
    assert fused.eval()(torch.randn(1, 1, 64)).shape == (1, 2)
    features = create_model("recnext_seq_tiny", num_classes=0).eval()
    assert features(torch.randn(2, 1, 64)).shape == (2, 128)


# --- presets ------------------------------------------------------------------------------------


def test_preset_budgets():
    # Budgets from issue 3: audio tiny <= 100k and small <= 500k params (even with 35 classes), video small <= 4M.
    for classes in (12, 35):
        assert (
            sum(
                p.numel()
                for p in create_model("recnext_audio_tiny", num_classes=classes, device="meta").parameters()
            )
            <= 100_000
        )
        assert (
            sum(
                p.numel()
                for p in create_model("recnext_audio_small", num_classes=classes, device="meta").parameters()
            )
            <= 500_000
        )
    assert (
        sum(p.numel() for p in create_model("recnext_video_small", device="meta").parameters()) <= 4_000_000
    )
    assert [model_costs(n).params for n in ("recnext_audio_tiny", "recnext_seq_tiny")] == [95_360, 204_764]


@pytest.mark.parametrize("name", list(PRESET_INPUTS))
def test_presets_train_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, drop_path_rate=0.1, in_chans=2)
    assert model.spatial_dims == len(PRESET_INPUTS[name]) - 1
    x = torch.randn(3, 2, *PRESET_INPUTS[name][1:])
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.count_nonzero() > 0, name


def test_drop_path_is_stochastic_in_training_only():
    model = create_model("recnext_seq_tiny", drop_path_rate=0.5)
    rates = [m.drop_path.p for m in model.modules() if hasattr(m, "drop_path") and hasattr(m.drop_path, "p")]
    assert rates == pytest.approx(torch.linspace(0, 0.5, 5)[1:].tolist())  # the first block's rate is 0
    x = torch.randn(2, 1, 64)
    model.train()
    torch.manual_seed(0)
    first = model.forward_features(x)
    torch.manual_seed(1)
    assert not torch.equal(first, model.forward_features(x))
    model.eval()
    assert torch.equal(model.forward_features(x), model.forward_features(x))


def test_list_models_and_builders_agree():
    assert list_models() == list(PRESETS)
    assert len(list_models()) == 17


def test_cli_prints_the_counted_table(capsys):
    assert main(["models", "recnext_audio_tiny", "recnext_seq_tiny"]) == 0
    out = capsys.readouterr().out
    assert "| `recnext_audio_tiny` | 1 x 64 x 100 | 95,360 | 92,940 | 6.6 M |" in out
    assert "| `recnext_seq_tiny` | 1 x 1024 | 204,764 | 200,602 | 9.1 M |" in out
    with pytest.raises(SystemExit):
        main(["models", "recnext_m9"])
    assert "unknown model 'recnext_m9'" in capsys.readouterr().err


# --- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_saved_checkpoint_restores_outputs_exactly(tmp_path, suffix):
    generator = torch.Generator().manual_seed(2)
    model = randomize_norms(create_model("recnext_audio_tiny"), seed=2).eval()
    x = torch.randn(2, 1, 40, 101, generator=generator)
    path = tmp_path / f"audio{suffix}"
    save_checkpoint(model, path)
    restored = create_model("recnext_audio_tiny", checkpoint_path=path).eval()
    assert torch.equal(restored(x), model(x))
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("wrap", ["model", "state_dict", "ddp"])
def test_wrapped_state_dicts_load(tmp_path, wrap):
    model = create_model("recnext_seq_tiny")
    state = model.state_dict()
    payload = {f"module.{k}": v for k, v in state.items()} if wrap == "ddp" else {wrap: state, "epoch": 3}
    torch.save(payload, tmp_path / "ckpt.pt")
    assert read_state_dict(tmp_path / "ckpt.pt").keys() == state.keys()


class _RunsCode:
    """Unpickling this calls open(marker, "w"), standing for any code a hostile file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"model": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match=r"refused .*not a plain tensor checkpoint \(Unsupported global"):
        load_checkpoint(create_model("recnext_seq_tiny"), path)
    assert not marker.exists()
    with open(path.with_suffix(".pkl"), "wb") as f:  # a plain pickle stream, not torch's zip format
        pickle.dump(_RunsCode(marker), f, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        read_state_dict(path.with_suffix(".pkl"))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_and_non_state_dict_files_are_explained(tmp_path):
    path = tmp_path / "fused.pt"
    torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.randn(1, 2)), path)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="TorchScript archive.*torch.jit.load"):
        read_state_dict(path)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds no state_dict of tensors"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")


def test_strict_mismatch_lists_missing_unexpected_and_wrongly_shaped_keys(tmp_path):
    state = create_model("recnext_seq_tiny").state_dict()
    state.pop("stem.stem.0.conv.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(state, str(path))
    target = create_model("recnext_seq_tiny", num_classes=4)
    message = (
        r"does not match RecNeXt:\n  missing keys \(1\): stem\.stem\.0\.conv\.weight\n"
        r"  unexpected keys \(1\): extra\.weight\n  wrongly shaped keys \(4\): "
        r"head\.head\.linear\.weight: checkpoint \(10, 128\), model \(4, 128\)"
    )
    with pytest.raises(ValueError, match=message):
        load_checkpoint(target, path)
    before = target.stem.stem[0].conv.weight.clone()
    result = load_checkpoint(target, path, strict=False)
    assert result.missing_keys == ["stem.stem.0.conv.weight"] and result.unexpected_keys == ["extra.weight"]
    assert len(result.mismatched_keys) == 4
    assert torch.equal(target.stem.stem[0].conv.weight, before)
    assert torch.equal(target.stem.stem[2].conv.weight, state["stem.stem.2.conv.weight"])


def test_long_key_lists_are_shortened(tmp_path):
    save_checkpoint(create_model("recnext_seq_tiny"), tmp_path / "seq.pth")
    with pytest.raises(ValueError, match=re.escape("; ... and ")):
        load_checkpoint(create_model("recnext_audio_tiny"), tmp_path / "seq.pth")


# --- errors -------------------------------------------------------------------------------------

CONSTRUCTOR_ERRORS = [
    (
        lambda: create_model("recnext_m9"),
        r"unknown model 'recnext_m9'; expected one of \['recnext_m0'.*Did you mean",
    ),
    (lambda: RecNeXt((16, 32), (1,)), "widths, depths and levels need one entry per stage, got 2, 1 and 2"),
    (lambda: RecNeXt((), ()), "widths must be a non-empty sequence of ints >= 1"),
    (lambda: RecNeXt((16, 0), (1, 1)), r"widths must be a non-empty sequence of ints >= 1, got \(16, 0\)"),
    (lambda: RecNeXt((16,), (1,), levels=(-1,)), "levels must be a non-empty sequence of ints >= 0"),
    (lambda: RecNeXt(spatial_dims=4), "spatial_dims must be 1, 2 or 3, got 4"),
    (lambda: RecNeXt(in_chans=0), "in_chans must be a positive int"),
    (lambda: RecNeXt(num_classes=-1), "num_classes must be an int >= 0"),
    (lambda: RecNeXt(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\), got 1.0"),
    (lambda: RecNeXt(drop_rate=-0.1), r"drop_rate must be in \[0, 1\)"),
    (lambda: RecNeXt(stem_strides=(2,)), r"stem_strides needs one stride per stem conv \(2\)"),
    (lambda: RecNeXt(stem_strides=4), r"stem_strides needs one stride per stem conv \(2\), got 4"),
    (lambda: RecNeXt(stem_strides=(2, 0)), "strides must be >= 1"),
    (lambda: RecNeXt(features_only=True).set_features_only(), "already returns features only"),
    (lambda: RecNeXt(spatial_dims=3, down_stride=(1, 2)), "down_stride must be an int or a tuple of 3 ints"),
    (lambda: RecNeXt(out_indices=(0,)), "out_indices only applies with features_only=True"),
    (
        lambda: create_model("recnext_m0", out_indices=(0,)),
        "out_indices only applies with features_only=True",
    ),
    (
        lambda: RecNeXt(features_only=True, out_indices=(4,)),
        r"out_indices must be stage indices in \[-4, 3\], got \(4,\)",
    ),
    (lambda: RecNeXt(features_only=True, out_indices=()), "out_indices must be stage indices"),
]


@pytest.mark.parametrize("make, message", CONSTRUCTOR_ERRORS)
def test_constructor_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_input_and_usage_errors():
    model = create_model("recnext_m0", device="meta")
    with pytest.raises(
        ValueError,
        match=re.escape("RecNeXt(spatial_dims=2, in_chans=3): expected (N, 3, H, W), got (1, 1, 64, 64)"),
    ):
        model(torch.empty(1, 1, 64, 64, device="meta"))
    video = create_model("recnext_video_tiny", device="meta")
    with pytest.raises(ValueError, match=re.escape("expected (N, 3, D, H, W), got (3, 8, 32, 32)")):
        video(torch.empty(3, 8, 32, 32, device="meta"))
    with pytest.raises(TypeError, match="expected a tensor, got list"):
        model([1, 2])
    backbone = create_model("recnext_m0", features_only=True, device="meta")
    with pytest.raises(ValueError, match="a features_only model has no head"):
        backbone.forward_head(torch.empty(1, 320, 2, 2, device="meta"))
    with pytest.raises(ValueError, match="a features_only model has no classifier to reset"):
        backbone.reset_classifier(10)


def test_missing_optional_packages_are_named(monkeypatch, tmp_path):
    from recconv.models import register_timm_models

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"needs the safetensors package \(pip install safetensors"):
        save_checkpoint(create_model("recnext_seq_tiny"), tmp_path / "x.safetensors")
    monkeypatch.setitem(sys.modules, "timm.models", None)
    with pytest.raises(ImportError, match=r"timm is not installed \(pip install timm\)"):
        register_timm_models()


def test_a_preset_is_one_table_entry(monkeypatch):
    from recconv.analysis import costs_table
    from recconv.models import PRESETS, Preset, RecConvMixer, register_timm_models

    config = {"widths": (8, 16), "depths": (1, 1), "spatial_dims": 1, "in_chans": 2, "num_classes": 3}
    config["token_mixer"] = RecConvMixer(kernel_size=3)
    monkeypatch.setitem(PRESETS, "recnext_test_one_entry", Preset(config, (2, 64), "a test preset"))
    assert list_models()[-1] == "recnext_test_one_entry"
    model = recconv.models.recnext_test_one_entry(num_classes=5).eval()  # an attribute, from the table
    assert model(torch.randn(2, 2, 64)).shape == (2, 5)
    assert create_model("recnext_test_one_entry").num_classes == 3
    assert "| `recnext_test_one_entry` | 2 x 64 |" in costs_table(["recnext_test_one_entry"])
    assert "recnext_test_one_entry" in register_timm_models()
    import timm

    assert timm.create_model("recnext_test_one_entry", num_classes=4).eval()(torch.randn(1, 2, 64)).shape == (
        1,
        4,
    )


def test_model_names_are_looked_up_with_one_message():
    with pytest.raises(
        ValueError, match=re.escape("create_model: unknown model 'recnext_mo'; expected one of")
    ):
        create_model("recnext_mo")
    with pytest.raises(TypeError, match="create_model: name must be a model name"):
        create_model(0)
    with pytest.raises(AttributeError, match="has no attribute 'recnext_zz'"):
        recconv.models.recnext_zz  # noqa: B018
