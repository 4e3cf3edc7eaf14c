"""Module surgery: ``recconv.swap``, ``recconv.swapped`` and ``recconv swap`` on the command line."""

from __future__ import annotations

import copy
import io
import re
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import recconv
from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv.branch import RecBranch
from recconv.cli import main
from recconv.cli_specs import SpecError, load_model
from recconv.core import RecConvNd

SIZE = (3, 64, 64)


def tiny_audio_net() -> nn.Module:
    """A 1D net with one conv of every kind swap must tell apart (also a CLI factory)."""
    return nn.Sequential(
        nn.Conv1d(2, 16, 5, stride=2, padding=2),  # 0: dense, strided: skipped
        nn.Conv1d(16, 16, 7, padding=3, groups=16),  # 1: depthwise with bias: swapped
        nn.GELU(),
        nn.Conv1d(16, 32, 1),  # 3: pointwise: skipped
        nn.Conv1d(32, 32, 9, padding="same", groups=32, bias=False),  # 4: 'same' padding: swapped
        nn.Conv1d(32, 32, 3, stride=2, padding=1, groups=32),  # 5: strided depthwise: skipped
        nn.Conv1d(32, 32, 3, padding=2, dilation=2, groups=32),  # 6: dilated: skipped
        nn.Conv1d(32, 32, 3, padding=1, groups=32, padding_mode="reflect"),  # 7: reflect: skipped
        nn.Conv1d(32, 32, 1, groups=32),  # 8: 1x1 depthwise: skipped unless a predicate selects it
        nn.Conv1d(32, 32, 3, groups=32),  # 9: no padding, shrinks: skipped
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    )


def tiny_video_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1),  # dense: skipped
        nn.Conv3d(8, 8, (3, 5, 5), padding=(1, 2, 2), groups=8),  # anisotropic depthwise: swapped
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1, groups=8, bias=False),  # swapped
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def convnext_tiny() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.convnext_tiny(weights=None).eval()


# Expected counts from the torchvision configs: swapped = stride-1 depthwise convs, strided =
# stride-2 depthwise convs, and every other conv (stem, 1x1 expand/project/SE/head) is not depthwise.
# convnext_tiny: 3+3+9+3 blocks with a 7x7 depthwise conv; stem 4x4/4 and three 2x2/2 downsamplers.
# mobilenet_v2: 17 blocks with a 3x3 depthwise conv, 4 of them stride 2; stem + 34 1x1 convs.
# mobilenet_v3_small: 11 blocks, 4 stride 2, the others one 3x3 and six 5x5; stem, 10 expand,
#   11 project, 9 SE blocks x 2, head: 41 others.
# efficientnet_b0: 16 MBConv blocks, 4 stride 2, the others five 3x3 and seven 5x5; stem,
#   15 expand, 16 project, 16 SE x 2, head: 65 others.
TORCHVISION = {
    "convnext_tiny": (18, 0, 4, {(7, 7): 18}),
    "mobilenet_v2": (13, 4, 35, {(3, 3): 13}),
    "mobilenet_v3_small": (7, 4, 41, {(3, 3): 1, (5, 5): 6}),
    "efficientnet_b0": (12, 4, 65, {(3, 3): 5, (5, 5): 7}),
}


def build(name: str, convnext: nn.Module) -> nn.Module:
    if name == "convnext_tiny":
        return convnext
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models_swap_and_keep_their_function(name, convnext_tiny):
    model = build(name, convnext_tiny)
    swapped, strided, dense, kernels = TORCHVISION[name]
    new, report = recconv.swap(model, level=2, input_size=SIZE)
    assert len(report.swapped) == swapped
    assert Counter(r.old_kernel for r in report.swapped) == kernels
    reasons = [s.reason for s in report.skipped]
    assert len(reasons) == strided + dense
    assert sum(r.startswith("stride (2, 2)") for r in reasons) == strided
    assert sum(r.startswith("not depthwise") for r in reasons) == dense
    assert sum(isinstance(m, RecConv2d) for m in new.modules()) == swapped
    assert not any(isinstance(m, RecConvNd) for m in model.modules())  # inplace=False left it alone
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        expected, got = model(x), new(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The report's totals agree with FlopCounterMode and a parameter count of the swapped model.
    assert report.flops_after == model_flops(new, x[:1])
    assert report.flops_before == model_flops(model, x[:1])
    assert report.params_after == sum(p.numel() for p in new.parameters())
    before, after = report.swapped_params
    assert report.params_after - report.params_before == after - before


def test_preserve_centers_a_smaller_kernel_in_a_larger_base_kernel():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    new, report = recconv.swap(model, level=3, kernel_size=7)
    assert {r.new_kernel for r in report.swapped} == {(7, 7)}
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)
    old = model.features[3].block[1][0]  # the only stride-1 3x3 depthwise conv (block 3)
    layer = new.features[3].block[1][0]
    assert isinstance(layer, RecConv2d) and old.kernel_size == (3, 3)
    final = layer.convs[-1].weight.detach().clone()
    assert torch.equal(final[..., 2:5, 2:5], old.weight)
    final[..., 2:5, 2:5] = 0
    assert not final.any()  # zeros around the old kernel


def test_num_params_counts_the_bias_a_swap_moves_into_the_layer():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
    layer, _ = recconv.swap(conv, level=2)
    assert isinstance(layer, RecConv2d) and layer.convs[-1].bias is not None
    assert recconv.num_params(layer) == sum(p.numel() for p in layer.parameters()) == 4 * 8 * 9 + 8


@pytest.mark.parametrize(
    "make, rank, size, swapped, skipped",
    [(tiny_audio_net, 1, (2, 64), ["1", "4"], 7), (tiny_video_net, 3, (3, 8, 16, 16), ["1", "4"], 1)],
)
def test_small_1d_and_3d_nets(make, rank, size, swapped, skipped):
    torch.manual_seed(0)
    model = make().eval()
    new, report = recconv.swap(model, level=2, input_size=size)
    assert [r.name for r in report.swapped] == swapped
    assert len(report.skipped) == skipped
    layer_class = {1: RecConv1d, 3: RecConv3d}[rank]
    for name in swapped:
        old, layer = model.get_submodule(name), new.get_submodule(name)
        assert type(layer) is layer_class
        assert layer.kernel_size == old.kernel_size and layer.level == 2
        if old.bias is None:
            assert layer.convs[-1].bias is None
        else:
            assert torch.equal(layer.convs[-1].bias, old.bias)
    x = torch.randn(2, *size)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)
        assert report.flops_after == model_flops(new, x[:1])
        random, _ = recconv.swap(model, level=2, init="random")
        assert random(x).shape == model(x).shape
        assert not torch.allclose(random(x), model(x))


def test_skip_reasons_name_what_recconv_cannot_do():
    _, report = recconv.swap(tiny_audio_net(), level=1)
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons == {
        "0": "not depthwise (groups=1, in_channels=2, out_channels=16); stride (2,): RecConv keeps the input size",
        "3": "not depthwise (groups=1, in_channels=16, out_channels=32)",
        "5": "stride (2,): RecConv keeps the input size",
        "6": "dilation (2,): RecConv kernels are dense",
        "7": "padding_mode 'reflect': RecConv pads with zeros",
        "8": "1x1 kernel: no spatial mixing to enlarge (a predicate can select it)",
        "9": "padding (0,) changes the size; RecConv keeps it",
    }  # fmt: skip
    _, report = recconv.swap(
        nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(4, 4, 2, groups=4)), level=1
    )
    assert [s.reason for s in report.skipped] == [
        "single channel: as dense as it is depthwise (a predicate can select it)",
        "even kernel (2, 2): RecConv kernels are odd",
    ]


def test_predicate_narrows_and_widens_but_is_asked_only_about_possible_convs():
    asked = []

    def everything(name: str, module: nn.Module) -> bool:
        asked.append(name)
        return True

    new, report = recconv.swap(tiny_audio_net(), level=1, predicate=everything)
    assert asked == ["1", "4", "8"]
    assert [r.name for r in report.swapped] == ["1", "4", "8"]
    assert isinstance(new[8], RecConv1d) and new[8].kernel_size == (1,)
    # The predicate replaces the default choice: it decides alone about every possible conv.
    _, report = recconv.swap(
        tiny_audio_net(), level=1, predicate=lambda name, module: module.kernel_size[0] > 7
    )
    assert [r.name for r in report.swapped] == ["4"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["1"] == reasons["8"] == "predicate returned False"
    _, report = recconv.swap(tiny_audio_net(), level=1, predicate=lambda name, module: None)
    assert {s.reason for s in report.skipped if s.name in ("1", "4", "8")} == {"predicate returned None"}

    class SameConv(nn.Conv2d):
        pass

    net = nn.Sequential(SameConv(4, 4, 3, padding=1, groups=4))
    _, report = recconv.swap(net, level=1)
    assert report.skipped[0].reason.startswith("SameConv subclasses an nn.ConvNd and may change its forward")
    new, report = recconv.swap(net, level=1, predicate=lambda name, module: True)
    assert isinstance(new[0], RecConv2d)


def test_preserve_starts_the_coarse_path_at_zero_and_one_step_moves_it():
    torch.manual_seed(0)
    new, _ = recconv.swap(nn.Sequential(nn.Conv1d(4, 4, 5, padding=2, groups=4)), level=3)
    layer = new[0]
    assert not layer.convs[-2].weight.any()
    assert all(conv.weight.any() for conv in layer.convs[:-2])  # default init: gradients can pass
    x, target = torch.randn(2, 4, 64), torch.randn(2, 4, 64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    moved = []
    losses = []
    for _ in range(2):
        before = {n: p.detach().clone() for n, p in layer.named_parameters()}
        optimizer.zero_grad()
        loss = (layer(x) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        moved.append({n for n, p in layer.named_parameters() if not torch.equal(p, before[n])})
    # The first step moves the zero conv; from the second on, every coarse conv and the down op move.
    assert moved[0] == {"convs.2.weight", "convs.3.weight", "convs.3.bias"}
    assert moved[1] == {n for n, _ in layer.named_parameters()}
    assert losses[1] < losses[0]


def test_one_optimizer_step_on_a_swapped_network_changes_the_loss_and_the_coarse_path():
    torch.manual_seed(0)
    model, _ = recconv.swap(
        torchvision.models.mobilenet_v3_small(weights=None, num_classes=4).eval(), level=2
    )
    x, labels = torch.randn(2, *SIZE), torch.tensor([1, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(model(x), labels)
    assert after.item() != pytest.approx(loss.item(), rel=1e-4)
    layers = [m for m in model.modules() if isinstance(m, RecConv2d)]
    assert all(layer.convs[-2].weight.any() for layer in layers)  # the coarse path started moving


def test_state_dict_saves_and_reloads_into_a_fresh_swap():
    torch.manual_seed(0)
    new, _ = recconv.swap(tiny_audio_net().eval(), level=2, init="random")
    buffer = io.BytesIO()
    torch.save(new.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"1.convs.2.bias", "1.down.weight", "4.convs.0.weight"} <= set(state)
    assert "4.convs.2.bias" not in state  # conv 4 had no bias
    fresh, _ = recconv.swap(tiny_audio_net().eval(), level=2, init="random")
    fresh.load_state_dict(state)
    x = torch.randn(2, 2, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), new(x))


def test_dense_networks_are_untouched():
    model = torchvision.models.resnet18(weights=None).eval()
    state = copy.deepcopy(model.state_dict())
    reference = list(model.named_modules())
    new, report = recconv.swap(model, level=2, inplace=True)
    assert new is model
    assert report.swapped == [] and len(report.skipped) == 20  # resnet18 has 20 convs, all dense
    assert all(s.reason.startswith("not depthwise (groups=1") for s in report.skipped)
    assert [(n, m) for n, m in model.named_modules()] == reference
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert report.params_before == report.params_after


def test_swapped_restores_the_original_modules_exactly():
    torch.manual_seed(0)
    model = tiny_video_net().eval()
    reference = list(model.named_modules())
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(1, 3, 4, 8, 8)
    with recconv.swapped(model, level=1, init="random") as report:
        assert isinstance(model[1], RecConv3d) and isinstance(model[4], RecConv3d)
        assert len(report.swapped) == 2
        model(x).sum().backward()
    assert [(n, m) for n, m in model.named_modules()] == reference
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(RuntimeError, match="boom"), recconv.swapped(model, level=1):
        raise RuntimeError("boom")
    assert [(n, m) for n, m in model.named_modules()] == reference


def test_swap_never_looks_inside_an_existing_recconv():
    inner = []

    def smoothing_up(channels, kernel_size, factor, **kwargs):
        # A custom upsample whose stride-1 depthwise conv swap must not touch.
        conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        inner.append(conv)

        class Up(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.smooth = conv

            def forward(self, x: torch.Tensor, size) -> torch.Tensor:
                return self.smooth(nn.functional.interpolate(x, size=list(size)))

        return Up()

    existing = RecConv2d(4, 3, level=2, upsample=smoothing_up)
    model = nn.Sequential(existing, nn.Conv2d(4, 4, 3, padding=1, groups=4))
    new, report = recconv.swap(model, level=1, inplace=True)
    assert new[0] is existing and all(m in list(existing.modules()) for m in inner)
    assert [r.name for r in report.swapped] == ["1"]
    assert report.skipped[0].name == "0"
    assert report.skipped[0].reason == "already a RecConv (swap never looks inside one)"
    again, report = recconv.swap(new, level=1, inplace=True)
    assert report.swapped == [] and len(report.skipped) == 2
    # The same conv object inside the RecConv and beside it: replacing one use would untie them.
    shared = nn.Sequential(existing, inner[0])
    _, report = recconv.swap(shared, level=1)
    assert report.swapped == [] and report.skipped[1].reason == (
        "also used as '0.ups.0.smooth', where swap does not look: a RecConv would untie them"
    )


def test_keeps_dtype_device_memory_format_requires_grad_and_mode():
    frozen = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    frozen.requires_grad_(False)
    net = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), frozen).double().train()
    net = net.to(memory_format=torch.channels_last)
    new, _ = recconv.swap(net, level=2)
    channels_last_strides = torch.empty(8, 1, 5, 5).to(memory_format=torch.channels_last).stride()
    assert new[0].convs[-1].weight.stride() == channels_last_strides
    assert new[0].down.weight.stride() == channels_last_strides
    assert all(p.dtype == torch.float64 and p.requires_grad for p in new[0].parameters())
    assert all(not p.requires_grad for p in new[1].parameters())
    assert new[0].training and new[1].training
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = new(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, net(x))
    meta, _ = recconv.swap(nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, groups=4)).to("meta"), level=1)
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_shared_convs_and_a_conv_as_the_model():
    conv = nn.Conv1d(4, 4, 3, padding=1, groups=4)
    model = nn.Sequential(conv, nn.ReLU(), nn.Sequential(conv))
    new, report = recconv.swap(model, level=1)
    assert new[0] is new[2][0] and isinstance(new[0], RecConv1d)
    assert [r.name for r in report.swapped] == ["0"]
    layer, report = recconv.swap(conv.eval(), level=2)
    assert isinstance(layer, RecConv1d) and report.swapped[0].name == "(model)"
    x = torch.randn(1, 4, 20)
    with torch.no_grad():  # the same function; RecConv's CPU layout may round differently
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-6, atol=1e-6)


def test_report_rows_and_table():
    conv = nn.Conv2d(96, 96, 7, padding=3, groups=96)
    model = nn.Sequential(conv, nn.Conv2d(96, 8, 1))
    _, report = recconv.swap(model, level=2)
    (row,) = report.swapped
    layer = RecConv2d(96, 7, 2)
    assert row.receptive_field == recconv.receptive_field(layer) == (67, 67)
    assert row.old_params == 96 * 49 + 96 and row.new_params == 4 * 96 * 49 + 96
    # Per output position: 2 FLOPs x 96 channels x 49 taps, times 1 + 2 * (1/4 + 1/16) for RecConv.
    assert row.old_flops == 2 * 96 * 49 and row.new_flops == 2 * 96 * 49 * 1.625
    assert report.swapped_flops is None and report.flops_before is None
    table = report.to_markdown()
    assert table.startswith(
        "recconv.swap: 1 swapped, 1 skipped (level 2, init 'preserve', no input size: FLOPs per output position)"
    )
    assert "| 0 | replaced | 96 | 7x7 | 7x7 | 7x7 → 67x67 | 4,800 → 18,912 | 9,408 → 15,288 |" in table
    assert "| params of the swapped layers | 4,800 | 18,912 | 3.940 |" in table
    assert "| FLOPs of the swapped layers | - | - | - |" in table
    assert "| 1 | Conv2d(96, 8, kernel_size=(1, 1), stride=(1, 1)) | not depthwise" in table
    _, report = recconv.swap(model, level=2, input_size=(96, 10, 12))
    # 10x12 -> 5x6 -> 3x3 positions: the full-resolution conv, two coarse convs and two down convs.
    taps = 2 * 96 * 49
    assert report.swapped[0].old_flops == taps * 120
    assert report.swapped[0].new_flops == taps * (120 + 2 * 30 + 2 * 9)
    assert "| FLOPs of the swapped layers | 1,128,960 | 1,862,784 | 1.650 |" in str(report)


def test_custom_builders_have_no_theory_numbers():
    _, report = recconv.swap(
        nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, groups=4)),
        level=1,
        input_size=(4, 16),
        upsample=lambda *args, **kwargs: UpNearest(),
    )
    assert report.swapped[0].receptive_field is None and report.swapped[0].new_flops is None
    assert report.flops_after is None
    assert "| 0 | replaced | 4 | 3 | 3 | 3 → - | 16 → 40 | 384 → - |" in report.to_markdown()


class UpNearest(nn.Module):
    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return nn.functional.interpolate(x, size=list(size))


def test_recconv_options_pass_through():
    new, _ = recconv.swap(
        tiny_video_net(), level=1, factor=(1, 2, 2), upsample="nearest", downsample="avgpool", init="random"
    )
    assert new[1].factor == (1, 2, 2) and new[1].upsample == "nearest" and new[1].down is not None
    causal, _ = recconv.swap(tiny_audio_net(), level=1, causal=True, init="random")
    assert causal[1].causal_axis == 0


def failing_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: recconv.swap("net", level=1), TypeError, "recconv.swap: model must be an nn.Module, got str"),
        (lambda: recconv.swap(failing_model(), level=-1), ValueError, "recconv.swap: level must be an int >= 0, got -1"),
        # _util.check_int decides TypeError or ValueError for a non-int level; the message names it either way.
        (lambda: recconv.swap(failing_model(), level=True), ValueError, "recconv.swap: level must be an int >= 0, got True"),
        (lambda: recconv.swap(failing_model(), level=1, kernel_size=4), ValueError, "recconv.swap: kernel_size must be odd and positive, got 4"),
        (lambda: recconv.swap(failing_model(), level=1, kernel_size="5"), TypeError, "recconv.swap: kernel_size must be None, an int or a tuple of ints, got '5'"),
        (lambda: recconv.swap(failing_model(), level=1, kernel_size=5.0), TypeError, "recconv.swap: kernel_size must be None, an int or a tuple of ints, got 5.0"),
        (lambda: recconv.swap(failing_model(), level=1, kernel_size=(5, 5, 5)), ValueError, "recconv.swap at '0': kernel_size must be an int or a tuple of 2 ints, got (5, 5, 5)"),
        (lambda: recconv.swap(failing_model(), level=1, init="preserved"), ValueError, "recconv.swap: unknown init 'preserved'; expected one of ['preserve', 'random']. Did you mean 'preserve'?"),
        (lambda: recconv.swap(failing_model(), level=1, predicate=True), TypeError, "recconv.swap: predicate must be a callable (name, module) -> bool, got True"),
        (lambda: recconv.swap(failing_model(), level=1, inplace="yes"), TypeError, "recconv.swap: inplace must be a bool, got 'yes'"),
        (lambda: recconv.swap(failing_model(), level=1, dense=True), TypeError, "recconv.swap: dense must be a name from ['branch'], got bool"),
        (lambda: recconv.swap(failing_model(), level=1, init=None), TypeError, "recconv.swap: init must be a name from ['preserve', 'random'], got NoneType"),
        (lambda: recconv.swap(failing_model(), level=1, input_size=(4, 0, 8)), ValueError, "recconv.swap: input_size must be the shape of one input sample without the batch axis, as positive ints like (3, 224, 224), got (4, 0, 8)"),
        (lambda: recconv.swap(failing_model(), level=1, input_size=224), ValueError, "recconv.swap: input_size must be the shape of one input sample without the batch axis, as positive ints like (3, 224, 224), got 224"),
        (lambda: recconv.swap(failing_model(), level=1, input_size=(3, 8, 8)), ValueError, "recconv.swap: the model failed on an input of shape (1, 3, 8, 8) (input_size=(3, 8, 8)): "),
        (lambda: recconv.swap(failing_model(), level=1, bias=True), TypeError, "recconv.swap: bias cannot be passed: device and dtype follow each replaced conv, and its bias (if any) moves to the RecConv's full-resolution conv convs[-1]"),
        (lambda: recconv.swap(failing_model(), level=1, device="cpu", dtype=torch.float64), TypeError, "recconv.swap: device, dtype cannot be passed"),
        (lambda: recconv.swap(failing_model(), level=1, upsampel="nearest"), TypeError, "recconv.swap: unknown RecConv option 'upsampel'; expected one of ['upsample', 'downsample', 'factor', 'shared_down', 'causal', 'recompute']. Did you mean 'upsample'?"),
        (lambda: recconv.swap(failing_model(), level=1, causal=True), ValueError, "recconv.swap: init='preserve' cannot keep a centered conv's outputs in a causal RecConv (causal=True); use init='random'"),
        (lambda: recconv.swap(failing_model(), level=1, kernel_size=1), ValueError, "recconv.swap: init='preserve' cannot fit the 3x3 kernel of '0' into a 1x1 base kernel; use kernel_size >= 3, kernel_size=None or init='random'"),
        (lambda: recconv.swap(failing_model(), level=1, upsample="cubic", init="random"), ValueError, "RecConv2d: unknown upsample 'cubic'"),
        (lambda: recconv.swapped(failing_model()[0], level=1).__enter__(), ValueError, "recconv.swapped: the model itself is a conv (Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=4)) and cannot be swapped in place; use recconv.swap, which returns the replacement"),
        (lambda: recconv.swapped(failing_model(), level=2.0).__enter__(), ValueError, "recconv.swapped: level must be an int >= 0, got 2.0"),
    ],
)  # fmt: skip
def test_swap_errors(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_a_failed_preserve_leaves_an_inplace_model_untouched():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 7, padding=3, groups=4))
    reference = list(model.named_modules())
    with pytest.raises(ValueError, match="cannot fit the 7x7 kernel of '1'"):
        recconv.swap(model, level=1, kernel_size=5, inplace=True)
    assert list(model.named_modules()) == reference


@pytest.mark.parametrize(
    "spec, message",
    [
        ("convnext_tiny", "a model spec is 'torchvision:NAME', 'timm:NAME' or 'module.path:factory', got 'convnext_tiny'"),
        ("torchvision:", "a model spec is 'torchvision:NAME', 'timm:NAME' or 'module.path:factory', got 'torchvision:'"),
        ("torchvision:convnext_tin", "unknown torchvision model 'convnext_tin'; see torchvision.models.list_models(). Did you mean 'convnext_tiny'?"),
        ("timm:convnext_att", "unknown timm model 'convnext_att'; see timm.list_models(). Did you mean 'convnext_atto'?"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz': No module named 'no_such_module_xyz'"),
        ("tests.test_swap:no_such_factory", "module 'tests.test_swap' has no attribute 'no_such_factory'"),
        ("tests.test_swap:SIZE", "tests.test_swap:SIZE is not a model builder (a tuple); a spec calls only an nn.Module subclass or a function defined in module 'tests.test_swap'"),
        ("builtins:dict", "builtins:dict is not a model builder (the class dict); a spec calls only an nn.Module subclass or a function defined in module 'builtins'"),
        ("sys:exit", "sys:exit is not a model builder (a builtin_function_or_method)"),
        ("os:system", "os:system is not a model builder (a builtin_function_or_method)"),
        ("builtins:print", "builtins:print is not a model builder (a builtin_function_or_method)"),
        # Functions and classes a module imported from elsewhere are not its builders.
        ("tests.test_swap:copy.deepcopy", "tests.test_swap:copy.deepcopy is not a model builder (a function)"),
        ("tests.test_swap:Counter", "tests.test_swap:Counter is not a model builder (the class Counter)"),
        ("tests.test_swap:returns_a_tensor", "tests.test_swap:returns_a_tensor() returned Tensor, expected an nn.Module"),
        ("tests.test_swap:broken_factory", "tests.test_swap:broken_factory() failed: RuntimeError: no weights here"),
        ("torch.nn:Conv2d", "torch.nn:Conv2d() failed: TypeError: "),
    ],
)  # fmt: skip
def test_spec_errors(spec, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        load_model(spec)


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_a_missing_package_is_named(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    with pytest.raises(SpecError, match=f"{package} is not installed.*pip install {package}"):
        load_model(f"{package}:anything")


def broken_factory() -> nn.Module:
    raise RuntimeError("no weights here")


def returns_a_tensor() -> torch.Tensor:
    return torch.zeros(1)


class Builders:
    @staticmethod
    def audio() -> nn.Module:
        return tiny_audio_net()

    @classmethod
    def video(cls) -> nn.Module:
        return tiny_video_net()


def test_a_module_whose_import_fails_is_a_spec_error(tmp_path, monkeypatch):
    (tmp_path / "spec_module_that_fails.py").write_text("raise RuntimeError('import boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SpecError, match=re.escape("cannot import module 'spec_module_that_fails': RuntimeError: import boom")
    ):
        load_model("spec_module_that_fails:build")


def test_specs_build_models_without_weights():
    assert isinstance(load_model("tests.test_swap:tiny_audio_net"), nn.Sequential)
    assert isinstance(load_model("tests.test_swap:TinyUNet"), TinyUNet)
    assert isinstance(load_model("tests.test_swap:Builders.audio"), nn.Sequential)
    assert isinstance(load_model("tests.test_swap:Builders.video")[0], nn.Conv3d)
    assert type(load_model("timm:convnext_atto")).__name__ == "ConvNeXt"
    # Detection builders default to a pretrained backbone; the spec must not download one.
    assert type(load_model("torchvision:ssdlite320_mobilenet_v3_large")).__name__ == "SSD"


def test_cli_prints_the_report_table(capsys):
    argv = ["swap", "torchvision:mobilenet_v3_small", "--level", "1", "--input-size", "3", "64", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("recconv.swap: 7 swapped, 45 skipped (level 1, init 'preserve', input (3, 64, 64))")
    # Block 3 runs at 8x8 (three stride-2 steps); at level 1 RecConv adds a 4x4 conv and a 4x4 down conv.
    assert (
        "| features.3.block.1.0 | replaced | 88 | 3x3 | 3x3 | 3x3 → 11x11 | 792 → 2,376 | 101,376 → 152,064 |"
        in out
    )
    assert main(["swap", "tests.test_swap:tiny_audio_net", "--kernel-size", "9", "--init", "random"]) == 0
    out = capsys.readouterr().out
    # Per position: 2 x 16 x 7 before; 2 x 16 x 9 x (1 + 2 * (1/2 + 1/4)) after.
    assert "| 1 | replaced | 16 | 7 | 9 | 7 → 89 | 128 → 592 | 224 → 720 |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["swap"], "the following arguments are required: SPEC"),
        (["swap", "torchvision:resnet18", "--level", "9"], "argument --level: invalid choice: 9"),
        (["swap", "torchvision:resnet18", "--kernel-size", "4"], "expected an odd kernel size, got 4"),
        (["swap", "torchvision:resnet18", "--input-size", "3", "0"], "expected a positive int, got 0"),
        (["swap", "torchvision:resnet18", "--init", "zeros"], "argument --init: invalid choice: 'zeros'"),
        (["swap", "resnet18"], "a model spec is 'torchvision:NAME', 'timm:NAME' or 'module.path:factory', got 'resnet18'"),
        (["swap", "tests.test_swap:tiny_audio_net", "--kernel-size", "5"], "init='preserve' cannot fit the 7 kernel of '1' into a 5 base kernel"),
        (["swap", "sys:exit"], "sys:exit is not a model builder (a builtin_function_or_method)"),
        (["swap", "tests.test_swap:broken_factory"], "tests.test_swap:broken_factory() failed: RuntimeError: no weights here"),
        (["swap", "torchvision:resnet19"], "unknown torchvision model 'resnet19'"),
        (["swap", "torchvision:resnet18", "--dense", "branches"], "argument --dense: invalid choice: 'branches'"),
    ],
)  # fmt: skip
def test_cli_errors_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: recconv swap")
    assert message in err


DOCS = Path(__file__).resolve().parents[1] / "docs" / "swap.md"


@pytest.mark.parametrize(
    "argv",
    [
        ["torchvision:convnext_tiny", "--level", "2", "--input-size", "3", "224", "224"],
        ["torchvision:resnet18", "--dense", "branch", "--level", "2", "--input-size", "3", "224", "224"],
    ],
)
def test_the_docs_tables_are_the_command_output(capsys, argv):
    # tests/test_docs.py runs the page's snippets; this checks its tables against the CLI.
    assert main(["swap", *argv]) == 0
    assert capsys.readouterr().out.strip() in DOCS.read_text()


# --- atomic and complete surgery -----------------------------------------------------------------


def snapshot(model: nn.Module) -> tuple[list, dict]:
    """The module objects under every name and a copy of every tensor: what 'exactly as before' means."""
    modules = list(model.named_modules(remove_duplicate=False))
    return modules, {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_unchanged(model: nn.Module, before: tuple[list, dict]) -> None:
    modules, state = before
    assert list(model.named_modules(remove_duplicate=False)) == modules
    now = model.state_dict(keep_vars=True)
    assert now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


def mixed_ranks() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.Flatten(2),
        nn.Unflatten(2, (1, 4, 4)),
        nn.Conv3d(4, 4, 3, padding=1, groups=4),
    )


@pytest.mark.parametrize(
    "make, options, message",
    [
        # factor=(1, 2, 2) suits the 3D conv only: the 2D one, met first, fails when its layer is built.
        (mixed_ranks, {"factor": (1, 2, 2), "init": "random"}, "recconv.swap at '0': RecConv2d: factor must be an int or a tuple of 2 ints"),
        (mixed_ranks, {"kernel_size": (5, 5)}, "recconv.swap at '3': kernel_size must be an int or a tuple of 3 ints"),
        (lambda: nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 4, padding="same")), {"dense": "branch"}, "recconv.swap: the 4x4 kernel of '1' is even, and RecConv kernels are odd"),
        (lambda: nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, groups=4)), {"input_size": (3, 16)}, "recconv.swap: the model failed on an input of shape (1, 3, 16)"),
    ],
)  # fmt: skip
def test_an_error_leaves_an_inplace_model_exactly_as_before(make, options, message):
    model = make()
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        recconv.swap(model, level=1, inplace=True, **options)
    assert_unchanged(model, before)
    swapped_message = re.escape(message.replace("recconv.swap", "recconv.swapped"))
    with pytest.raises(ValueError, match=swapped_message), recconv.swapped(model, level=1, **options):
        pass
    assert_unchanged(model, before)


class Stubborn(nn.Module):
    """A parent that refuses a RecConv: the commit fails after an earlier conv was already replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, RecConvNd):
            raise RuntimeError("no RecConv here")
        super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_failed_commit_is_undone():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), Stubborn())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="no RecConv here"):
        recconv.swap(model, level=1, inplace=True)
    assert_unchanged(model, before)
    with pytest.raises(RuntimeError, match="no RecConv here"), recconv.swapped(model, level=1):
        pass
    assert_unchanged(model, before)


def test_swapped_restores_on_every_exit_path():
    model = tiny_video_net()
    before = snapshot(model)

    def leave_early() -> str:
        with recconv.swapped(model, level=1):
            return "returned"

    assert leave_early() == "returned"
    assert_unchanged(model, before)
    for _ in range(2):  # break out of a loop body inside the block
        with recconv.swapped(model, level=1):
            break
    assert_unchanged(model, before)
    with pytest.raises(KeyboardInterrupt), recconv.swapped(model, level=1):
        raise KeyboardInterrupt
    assert_unchanged(model, before)


class Aliased(nn.Module):
    """One conv under two attributes, and twice in one Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.second = self.first
        self.dense = nn.Conv2d(4, 4, 3, padding=1)
        self.twice = nn.Sequential(self.dense, nn.ReLU(), self.dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twice(self.second(self.first(x)))


@pytest.mark.parametrize("dense", [None, "branch"])
def test_a_conv_used_several_times_becomes_one_module_everywhere(dense):
    torch.manual_seed(0)
    model = Aliased().eval()
    x = torch.randn(1, 4, 12, 12)
    new, report = recconv.swap(model, level=1, dense=dense)
    assert isinstance(new.first, RecConv2d) and new.first is new.second
    assert [r.name for r in report.swapped] == (["first"] if dense is None else ["first", "dense"])
    if dense:
        assert isinstance(new.dense, RecBranch)
        assert new.dense is new.twice[0] is new.twice[2]
    else:
        assert new.dense is new.twice[0] is new.twice[2]
        assert all(s.name == "dense" for s in report.skipped)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-6, atol=1e-6)
    before = snapshot(model)
    with recconv.swapped(model, level=1, dense=dense):
        assert model.first is model.second and isinstance(model.first, RecConv2d)
        assert model.twice[0] is model.twice[2] is model.dense
    assert_unchanged(model, before)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scripted_lazy_transposed_parametrized_and_tied_convs_are_listed_with_the_reason():
    tied = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    twin = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    twin.weight = tied.weight
    model = nn.Sequential(
        torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU())),
        nn.LazyConv2d(4, 3, padding=1),
        nn.ConvTranspose2d(4, 4, 3, padding=1, groups=4),
        nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 4, 3, padding=1, groups=4)),
        nn.utils.spectral_norm(nn.Conv2d(4, 4, 3, padding=1, groups=4)),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 3, padding=1, groups=4)),
        tied,
        twin,
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
    )
    # The predicate may not overrule what a RecConv would lose: it is not asked about these.
    asked = []
    new, report = recconv.swap(model, level=1, predicate=lambda name, conv: asked.append(name) or True)
    assert asked == ["8"] and [r.name for r in report.swapped] == ["8"]
    assert {s.name: s.reason for s in report.skipped} == {
        "0.0": "scripted (torch.jit.ScriptModule): its compiled code cannot change; swap before scripting",
        "1": "uninitialized lazy conv: run one forward pass first",
        "2": "transposed conv: swap changes Conv1d, Conv2d, Conv3d only",
        "3": "parametrized (_SpectralNorm on weight): a RecConv would drop the parametrization",
        "4": "SpectralNorm hook: a RecConv would drop it",
        "5": "parametrized (_WeightNorm on weight): a RecConv would drop the parametrization",
        "6": "weight is tied to '7': a RecConv would untie them",
        "7": "weight is tied to '6': a RecConv would untie them",
    }
    assert report.skipped[0].layer == "RecursiveScriptModule(original_name=Conv2d)"
    assert all(new[i] is not model[i] and type(new[i]) is type(model[i]) for i in range(8))
    _, report = recconv.swap(torch.jit.script(nn.Conv1d(2, 2, 3, padding=1, groups=2)), level=1)
    assert report.skipped[0].name == "(model)" and report.skipped[0].reason.startswith("scripted")


def test_a_model_that_cannot_be_copied_needs_inplace():
    model = nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, groups=2))
    model.lock = threading.Lock()
    with pytest.raises(
        TypeError, match=r"recconv.swap: cannot deep-copy the model \(.*\); pass inplace=True"
    ):
        recconv.swap(model, level=1)
    new, _ = recconv.swap(model, level=1, inplace=True)
    assert isinstance(new[0], RecConv1d)


# --- dense="branch": RecConv in any CNN ----------------------------------------------------------


class TinyUNet(nn.Module):
    """Two scales, a skip connection, a strided down conv and a transposed up conv."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        return self.dec(torch.cat([skip, self.up(self.mid(self.down(skip)))], 1))


def input_reach(model: nn.Module, size: int, channels: int = 3) -> int:
    """How far from the center the input gradient of the center output is nonzero (Chebyshev)."""
    generator = torch.Generator().manual_seed(0)  # the same input for every model compared
    x = torch.randn(1, channels, size, size, dtype=torch.float64, generator=generator, requires_grad=True)
    model(x)[0, 0, size // 2, size // 2].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    return int(torch.maximum((rows - size // 2).abs(), (cols - size // 2).abs()).max())


def test_branch_keeps_a_unet_exactly_and_one_step_widens_its_receptive_field():
    torch.manual_seed(0)
    model = TinyUNet().double()
    new, report = recconv.swap(model, level=2, dense="branch", input_size=(3, 32, 32))
    assert [(r.name, r.change) for r in report.swapped] == [
        ("enc.0", "branch"), ("enc.2", "branch"), ("mid.0", "branch"), ("dec.0", "branch")
    ]  # fmt: skip
    assert {s.name: s.reason for s in report.skipped} == {
        "down": "stride (2, 2): a branch goes before stride-1 convs (a predicate can select it)",
        "up": "transposed conv: swap changes Conv1d, Conv2d, Conv3d only",
        "dec.2": "1x1 kernel: a pointwise conv mixes no positions (a predicate can select it)",
    }
    assert report.flops_after == model_flops(new, torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    assert report.params_after == sum(p.numel() for p in new.parameters())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(new(x), model(x))  # x + 0 is x: the same function, bit for bit
    reach = input_reach(model, 64)
    assert input_reach(new, 64) == reach
    optimizer = torch.optim.SGD(new.parameters(), lr=0.1)
    nn.functional.mse_loss(new(x), torch.randn(2, 2, 32, 32, dtype=torch.float64)).backward()
    branches = [m for m in new.modules() if isinstance(m, RecBranch)]
    assert len(branches) == 4 and all(b.rec.convs[-1].weight.grad.any() for b in branches)
    optimizer.step()
    # One step in, the zero convs moved: each branch adds a level-2 RecConv's reach (13 at its scale).
    assert input_reach(new, 64) >= reach + 13


def test_branch_on_resnet18_keeps_its_outputs_and_learns():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    new, report = recconv.swap(model, level=2, dense="branch", input_size=SIZE)
    # 16 3x3 convs in the blocks, 3 of them stride 2; the 7x7/2 stem and three 1x1/2 downsamples stay.
    assert len(report.swapped) == 13 and {r.change for r in report.swapped} == {"branch"}
    assert [s.name for s in report.skipped] == [
        "conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer3.0.conv1",
        "layer3.0.downsample.0", "layer4.0.conv1", "layer4.0.downsample.0",
    ]  # fmt: skip
    row = report.swapped[0]
    assert (row.name, row.channels, row.old_receptive_field) == ("layer1.0.conv1", 64, (3, 3))
    assert recconv.receptive_field(new.layer1[0].conv1.rec) == (27, 27)
    assert row.receptive_field == (31, 31)  # the 3x3 conv over 27x27 windows of neighbouring phases
    assert row.new_params == row.old_params + recconv.num_params(new.layer1[0].conv1.rec)
    assert report.flops_after == model_flops(new, torch.zeros(1, *SIZE))
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(new(x), model(x))
    new.train()
    nn.functional.cross_entropy(new(x), torch.tensor([0, 3])).backward()
    branches = [m for m in new.modules() if isinstance(m, RecBranch)]
    assert all(b.rec.convs[-1].weight.grad.any() for b in branches)
    assert {"layer1.0.conv1.conv.weight", "layer1.0.conv1.rec.convs.2.weight"} <= set(new.state_dict())


@pytest.mark.parametrize("rank", [1, 3])
def test_branch_in_1d_and_3d_and_its_receptive_field(rank):
    torch.manual_seed(0)
    conv = (nn.Conv1d, nn.Conv3d)[rank // 3](4, 6, 3, padding=1, dilation=1)
    new, report = recconv.swap(conv, level=2, dense="branch", init="random", factor=2)
    assert isinstance(new, RecBranch) and new.rec.spatial_dims == rank
    (row,) = report.swapped
    # RecConv(k=3, level 2) sees 27; the 3-tap conv reads neighbours whose windows shift by phase.
    assert recconv.receptive_field(new.rec) == (27,) * rank and row.receptive_field == (31,) * rank
    if rank == 1:  # every weight is nonzero: at its widest phase the input gradient spans the window
        spans = []
        for position in range(60, 64):
            x = torch.randn(1, 4, 128, dtype=torch.float64, requires_grad=True)
            new.double()(x)[0, 0, position].backward()
            (hit,) = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
            spans.append(int(hit.max() - hit.min()) + 1)
        assert max(spans) == 31
    frozen = conv.requires_grad_(False).train()
    new, _ = recconv.swap(frozen, level=1, dense="branch")
    assert new.training and not any(p.requires_grad for p in new.parameters())


def test_branch_keeps_parametrizations_and_swapped_puts_the_conv_back():
    torch.manual_seed(0)
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 8, 3, padding=1))
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.randn(1, 4, 16, 16)
    expected = model(x)
    with recconv.swapped(model, level=1, dense="branch") as report:
        assert isinstance(model[0], RecBranch) and model[0].conv is conv
        assert report.swapped[0].change == "branch" and report.dense == "branch"
        assert torch.equal(model(x), expected)
        assert "dense 'branch'" in report.to_markdown().splitlines()[0]
    assert model[0] is conv


def test_branch_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "recconv.swap: unknown dense 'branches'; expected one of ['branch']. Did you mean 'branch'?"
        ),
    ):
        recconv.swap(nn.Conv2d(4, 4, 3), level=1, dense="branches")
    with pytest.raises(
        ValueError, match=re.escape("RecBranch: rec must be a RecConv with the conv's 4 input channels")
    ):
        RecBranch(nn.Conv2d(4, 4, 3), RecConv2d(8, 3, 1))
