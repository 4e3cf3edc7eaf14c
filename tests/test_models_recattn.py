"""RecNeXt-A0..A5: the official layout and outputs, fusing, features, presets, export and errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recconv.analysis.costs import model_costs
from recconv.attention import official_to_recconv
from recconv.cli import main
from recconv.models import CHECKPOINT_URLS, RecNeXt, create_model

from . import reference
from .helpers import randomize_norms
from .official_layouts import official_format_checkpoint


def test_fused_sizes_and_macs_round_to_the_papers_table():
    # The paper's repository lists fused A0..A3 with 2.8M / 5.9M / 7.9M / 9.0M params and
    # 0.4 / 0.9 / 1.2 / 1.4 GMACs (A4: 15.8M there, 15.75M here; see docs/models.md).
    costs = [model_costs(f"recnext_a{i}") for i in range(4)]
    assert [round(c.fused_params / 1e6, 1) for c in costs] == [2.8, 5.9, 7.9, 9.0]
    assert [round(c.macs / 1e9, 1) for c in costs] == [0.4, 0.9, 1.2, 1.4]


def official_a_forward(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """The paper's RecNeXt-A eval forward, written with functional ops and driven by key names only."""

    def block(t: Tensor, prefix: str, stage: int) -> Tensor:
        heads, variant = 2 ** (stage + 1), 2 if stage >= 3 else 1
        mixed = reference.recattn(t, state, heads, variant, level=1, prefix=f"{prefix}.token_mixer.")
        return t + reference.mlp(mixed, state, f"{prefix}.channel_mixer")

    return reference.paper_backbone(state, x, block)


@pytest.mark.parametrize("size", [(64, 48), (50, 37)])
def test_official_checkpoint_gives_the_papers_outputs(tmp_path, size):
    path = tmp_path / "recnext_a0_distill_300e.pth"
    state = official_format_checkpoint("recnext_a0", path, seed=sum(size))
    model = create_model("recnext_a0", checkpoint_path=path).eval().double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = official_a_forward(
        {k: v.double() if v.is_floating_point() else v for k, v in state.items()}, x
    )
    torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)
    assert list(model.state_dict()) == list(official_to_recconv(state, model))
    with pytest.raises(ValueError, match="load it with recconv.models.load_checkpoint"):
        model.load_state_dict(state)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: create_model("recnext_a0"), (2, 3, 56, 45)),
        (lambda: RecNeXt((8, 16), (1, 2), spatial_dims=1, token_mixer="recattn", levels=(2, 1)), (2, 3, 70)),
        (
            lambda: RecNeXt((8, 16), (1, 1), spatial_dims=3, token_mixer="recattn", num_heads=(2, 2)),
            (1, 3, 8, 12, 9),
        ),
    ],
)
def test_fuse_folds_every_conv_norm_and_keeps_outputs(make, shape):
    model = randomize_norms(make()).eval().double()
    x = torch.randn(shape, dtype=torch.float64)
    expected = model(x)
    names = [key for key in model.state_dict() if key.endswith(".conv.weight")]
    assert model.fuse() is model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    fused_names = set(model.state_dict())
    assert all(name.replace(".conv.weight", ".weight") in fused_names for name in names)


def test_features_only_follows_feature_info():
    model = create_model("recnext_a0", features_only=True, out_indices=(0, 2, 3)).eval()
    assert [info["reduction"] for info in model.feature_info] == [4, 16, 32]
    full = randomize_norms(create_model("recnext_a0")).eval()
    model.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 96)
    features = model(x)
    assert [tuple(f.shape) for f in features] == [(1, 40, 16, 24), (1, 160, 4, 6), (1, 320, 2, 3)]
    torch.testing.assert_close(features[-1], full.forward_features(x))


def test_presets_heads_variants_and_drop_path():
    model = create_model("recnext_a4")
    mixers = [stage.blocks[0].token_mixer for stage in model.stages]
    assert [m.num_heads for m in mixers] == [2, 4, 8, 16]
    assert [m.variant for m in mixers] == [1, 1, 1, 2]
    assert {m.level for m in mixers} == {1} and {m.upsample for m in mixers} == {"nearest"}
    rates = [b.drop_path.p for s in model.stages for b in s.blocks]
    assert rates == [0.2] * 39  # the same rate in every block, as in the paper's code
    hidden = model.stages[1].downsample.channel_mixer[0].conv.out_channels
    assert hidden == int(1.875 * 128) == 240
    distilled = create_model("recnext_a4", distillation=True)
    assert not any(hasattr(b.drop_path, "p") for s in distilled.stages for b in s.blocks)
    chosen = create_model("recnext_a5", distillation=True, drop_path_rate=0.1)
    assert {b.drop_path.p for s in chosen.stages for b in s.blocks} == {0.1}
    assert CHECKPOINT_URLS["recnext_a0"]["distill"].endswith("/v2.0/recnext_a0_distill_300e.pth")


def test_multilevel_recattn_backbone_trains():
    torch.manual_seed(0)
    model = RecNeXt(
        (8, 16, 32), (1, 1, 1), spatial_dims=1, token_mixer="recattn", levels=(3, 2, 1), num_classes=3
    )
    x = torch.randn(3, 3, 200)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.count_nonzero() > 0, name
    assert [stage.blocks[0].token_mixer.level for stage in model.stages] == [3, 2, 1]


def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = randomize_norms(create_model("recnext_a0", num_classes=10)).eval().fuse()
    x = torch.randn(2, 3, 64, 48)
    path = tmp_path / "recnext_a0.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-5)


def test_cli_lists_the_a_series(capsys):
    assert main(["models", "recnext_a0"]) == 0
    assert "| `recnext_a0` | 3 x 224 x 224 | 3,115,220 | 2,774,080 | 424.1 M | RecNeXt-A0, ImageNet |" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RecNeXt(token_mixer="attention"), r"unknown token_mixer 'attention'; expected one of \['recconv', 'recattn', 'dense', 'dilated', 'wavelet', 'fft'\] or a builder"),
        (lambda: RecNeXt(num_heads=(1, 2, 4, 8)), "num_heads does not apply to token_mixer='recconv'"),
        (lambda: RecNeXt(attention_variants=(1, 1, 1, 1)), "attention_variants does not apply to token_mixer='recconv'"),
        (lambda: RecNeXt(token_mixer="recattn", downsample="avgpool"), "downsample does not apply to token_mixer='recattn'"),
        (lambda: RecNeXt(token_mixer="recattn", num_heads=(2, 4)), r"num_heads needs one entry per stage \(4\)"),
        (lambda: RecNeXt(token_mixer="recattn", levels=(1, 1, 0, 1)), "levels must be a non-empty sequence of ints >= 1"),
        (lambda: RecNeXt(drop_path_schedule="cosine"), r"unknown drop_path_schedule 'cosine'; expected one of \['linear', 'uniform'\]"),
        (lambda: RecNeXt((12,), (1,), token_mixer="recattn", num_heads=(8,)), "RecAttn2d: in_channels must be even and a multiple of num_heads"),
    ],
)  # fmt: skip
def test_constructor_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
