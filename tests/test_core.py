"""Behaviour of the recursive core: shapes, costs, receptive fields, numerics and layouts."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import recconv
from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv.ops import OpProtocolError

from . import reference
from .strategies import LAYERS, build, layer_kwargs, ranks, sizes


def counted_flops(layer: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        layer(x)
    return counter.get_total_flops()


def gradient_support(layer: nn.Module, input_size: tuple[int, ...], position: tuple[int, ...]) -> list[range]:
    """Per-axis hull of the input positions whose gradient at ``position`` is nonzero."""
    x = torch.randn(1, layer.in_channels, *input_size, dtype=torch.float64, requires_grad=True)
    layer(x)[(0, slice(None), *position)].sum().backward()
    hit = x.grad.abs().sum(dim=(0, 1)) > 0
    support = []
    for axis in range(len(input_size)):
        others = tuple(d for d in range(len(input_size)) if d != axis)
        along = hit.any(dim=others) if others else hit
        idx = along.nonzero().flatten()
        support.append(range(int(idx.min()), int(idx.max()) + 1))
    return support


@given(kwargs=layer_kwargs(), size=sizes(), batch=st.integers(0, 2))
def test_shape_params_and_counted_flops(kwargs, size, batch):
    layer = build(kwargs)
    x = torch.randn(batch, layer.in_channels, *size)
    assert layer(x).shape == x.shape
    assert sum(p.numel() for p in layer.parameters()) == recconv.num_params(layer)
    assert counted_flops(layer, x) == recconv.conv_flops(layer, size, batch)


@given(d=ranks, level=st.integers(0, 4), kernel=st.sampled_from([3, 5, 7]))
def test_paper_layer_costs_match_closed_forms(d, level, kernel):
    layer = LAYERS[d](4, kernel, level, device="meta")
    assert recconv.num_params(layer) == (level + 2 - (level == 0)) * 4 * kernel**d
    size = (2**level * 3,) * d  # divisible by 2**level, where the paper's ratio is exact
    base = recconv.conv_flops(LAYERS[d](4, kernel, 0, device="meta"), size)
    ratio = counted_flops(layer, torch.empty(1, 4, *size, device="meta")) / base
    assert ratio == pytest.approx(recconv.flop_ratio(d, level))
    assert ratio < recconv.flop_ratio_limit(d)


def test_flop_ratio_limits_per_rank():
    assert recconv.flop_ratio_limit(1) == 3
    assert recconv.flop_ratio_limit(2) == pytest.approx(5 / 3)
    assert recconv.flop_ratio_limit(3) == pytest.approx(9 / 7)
    assert recconv.flop_ratio_limit(3, factor=(1, 2, 2)) == pytest.approx(5 / 3)
    assert recconv.flop_ratio_limit(2, factor=1) == math.inf


@given(kwargs=layer_kwargs(), size=sizes(), data=st.data())
def test_gradient_support_inside_theoretical_window(kwargs, size, data):
    layer = build(kwargs, dtype=torch.float64)
    position = tuple(data.draw(st.integers(0, s - 1)) for s in size)
    window = recconv.receptive_field_window(layer, size, position)
    for got, allowed in zip(gradient_support(layer, size, position), window):
        assert allowed.start <= got.start and got.stop <= allowed.stop, (got, allowed)


@pytest.mark.parametrize(
    "d, options",
    [
        (1, {}),
        (1, {"upsample": "nearest"}),
        (1, {"upsample": "transposed", "causal": True}),
        (1, {"factor": 3, "downsample": "avgpool"}),
        (2, {}),
        (2, {"causal": 1, "factor": (2, 1)}),
        (3, {"factor": (1, 2, 2)}),
    ],
)
def test_receptive_field_is_tight_and_grows_with_level(d, options):
    previous = None
    for level in range(4 if d < 3 else 3):
        layer = LAYERS[d](1, 3, level, dtype=torch.float64, **options)
        field = recconv.receptive_field(layer)
        period = [f**level for f in layer.factor]
        size = tuple(p * (2 * r // p + 2) for r, p in zip(field, period))  # divisible, no edge in reach
        spans = [0] * d
        for phase in range(max(period)):
            center = tuple(s // 2 + min(phase, p - 1) for s, p in zip(size, period))
            support = gradient_support(layer, size, center)
            spans = [max(a, len(b)) for a, b in zip(spans, support)]
        assert tuple(spans) == field  # the theory is exact on an unbounded input
        for axis, (k, f) in enumerate(zip(layer.kernel_size, layer.factor)):
            if f > 1:
                assert field[axis] >= k * f**level
                if previous is not None:
                    assert field[axis] > previous[axis]
        previous = field


@given(kwargs=layer_kwargs(), size=sizes(), a=st.floats(-2, 2), b=st.floats(-2, 2))
def test_linear_without_bias(kwargs, size, a, b):
    if kwargs["downsample"] == "maxpool":
        kwargs["downsample"] = "avgpool"  # max pooling is the one nonlinear op
    layer = build(kwargs, bias=False, dtype=torch.float64)
    x, y = (torch.randn(2, layer.in_channels, *size, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(layer(a * x + b * y), a * layer(x) + b * layer(y))


@given(
    d=ranks,
    level=st.integers(1, 3),
    kernel=st.sampled_from([3, 5]),
    upsample=st.sampled_from(["linear", "nearest", "transposed"]),
)
def test_interior_shift_equivariance_by_period(d, level, kernel, upsample):
    layer = LAYERS[d](2, kernel, level, upsample=upsample, dtype=torch.float64)
    period = 2**level
    margin = max(recconv.receptive_field(layer))
    length = period * (2 * margin // period + 2)  # divisible by the period, with an interior
    size = (length,) + (4,) * (d - 1)  # shift along the first axis only
    x = torch.randn(1, 2, length + period, *size[1:], dtype=torch.float64)
    out, shifted = layer(x[:, :, :length]), layer(x[:, :, period:])
    interior = slice(margin, length - period - margin)
    torch.testing.assert_close(out[:, :, period:][:, :, interior], shifted[:, :, interior])


@given(kwargs=layer_kwargs(causal=True), size=sizes(), data=st.data())
def test_causal_output_ignores_the_future(kwargs, size, data):
    layer = build(kwargs, dtype=torch.float64)
    axis = layer.causal_axis
    t = data.draw(st.integers(0, size[axis] - 1))
    x = torch.randn(1, layer.in_channels, *size, dtype=torch.float64, requires_grad=True)
    layer(x).select(axis + 2, t).sum().backward()
    future = x.grad.narrow(axis + 2, t + 1, size[axis] - t - 1)
    assert torch.count_nonzero(future) == 0


@given(d=ranks, kernel=st.sampled_from([1, 3, 5, 7]), size=sizes(), bias=st.booleans())
def test_level_zero_is_a_depthwise_conv(d, kernel, size, bias):
    layer = LAYERS[d](3, kernel, 0, bias=bias)
    conv = recconv.ops.dense_depthwise_conv(3, (kernel,) * d, bias=bias)
    conv.load_state_dict(layer.convs[0].state_dict())
    assert sum(p.numel() for p in layer.parameters()) == 3 * kernel**d + (3 if bias else 0)
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(layer(x), conv(x))


@given(
    d=ranks,
    kernel=st.sampled_from([1, 3, 5]),
    level=st.integers(0, 3),
    factor=st.integers(1, 3),
    mode=st.sampled_from(["linear", "nearest"]),
    size=sizes(),
)
def test_matches_plain_reference(d, kernel, level, factor, mode, size):
    layer = LAYERS[d](
        2, kernel, min(level, 2 if d == 3 else 3), factor=factor, upsample=mode, dtype=torch.float64
    )
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    conv_weights = [conv.weight for conv in layer.convs]
    down_weight = layer.down.weight if layer.level else None
    expected = reference.recconv(x, down_weight, conv_weights, layer.factor, mode)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "d, options",
    [
        (1, {"level": 3}),
        (1, {"level": 2, "causal": True, "upsample": "transposed", "bias": True}),
        (2, {"level": 2}),
        (2, {"level": 2, "upsample": "nearest", "downsample": "maxpool", "causal": 1}),
        (2, {"level": 1, "factor": (1, 3), "kernel_size": (3, 1), "shared_down": False}),
        (3, {"level": 1, "factor": (1, 2, 2), "causal": True}),
    ],
)
def test_gradcheck_float64(d, options):
    layer = LAYERS[d](2, dtype=torch.float64, **options)
    size = (7, 5, 3)[:d] if d > 1 else (11,)
    x = torch.randn(1, 2, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@given(kwargs=layer_kwargs(), size=sizes())
def test_layouts_give_the_same_numbers(kwargs, size):
    layer = build(kwargs, dtype=torch.float64)
    x = torch.randn(2, layer.in_channels, *size, dtype=torch.float64)
    expected = layer(x)
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(layer.spatial_dims)
    if fmt is not None:
        torch.testing.assert_close(layer(x.contiguous(memory_format=fmt)), expected)
    strided = torch.randn(2, layer.in_channels, *[2 * s for s in size], dtype=torch.float64)
    strided[(..., *[slice(None, None, 2)] * len(size))] = x
    view = strided[(..., *[slice(None, None, 2)] * len(size))]
    assert not view.is_contiguous()
    torch.testing.assert_close(layer(view), expected)
    torch.testing.assert_close(layer(x[0]), expected[0])
    assert layer(x[:0]).shape == (0, *x.shape[1:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("options", [{}, {"causal": True}, {"upsample": "transposed"}])
def test_low_precision_close_to_float64(dtype, options):
    layer = RecConv2d(4, 5, 3, dtype=torch.float64, **options)
    x = torch.randn(2, 4, 29, 31, dtype=torch.float64)
    expected = layer(x)
    got = copy.deepcopy(layer).to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 6e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(
        got.double(), expected, rtol=tolerance, atol=tolerance * expected.abs().max().item()
    )


def test_paper_state_dict_names():
    layer = RecConv2d(8, 5, 2, bias=True)
    assert sorted(layer.state_dict()) == [
        "convs.0.bias", "convs.0.weight", "convs.1.bias", "convs.1.weight",
        "convs.2.bias", "convs.2.weight", "down.bias", "down.weight",
    ]  # fmt: skip
    per_level = RecConv1d(8, 5, 2, shared_down=False, upsample="transposed")
    assert {k for k in per_level.state_dict() if not k.startswith("convs")} == {
        "downs.0.weight",
        "downs.1.weight",
        "ups.0.weight",
        "ups.1.weight",
    }


@given(kwargs=layer_kwargs(), size=sizes())
def test_state_dict_and_pickle_round_trips(kwargs, size):
    layer = build(kwargs)
    x = torch.randn(1, layer.in_channels, *size)
    fresh = build(kwargs)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), layer(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(layer))(x), layer(x))


def test_extra_repr_reads_like_the_constructor():
    assert RecConv2d(64, 5, 3).extra_repr() == "64, kernel_size=5, level=3"
    layer = RecConv3d(8, (3, 5, 5), 2, factor=(1, 2, 2), causal=True, upsample="nearest", bias=True)
    assert layer.extra_repr() == (
        "8, kernel_size=(3, 5, 5), level=2, bias=True, upsample='nearest', factor=(1, 2, 2), causal=0"
    )
    assert RecConv1d(4, downsample="avgpool", shared_down=False).extra_repr() == (
        "4, kernel_size=5, level=2, downsample='avgpool', shared_down=False"
    )


def test_deterministic_outputs_and_gradients():
    layer = RecConv2d(4, 5, 3, upsample="transposed")
    x = torch.randn(2, 4, 23, 19, requires_grad=True)
    runs = []
    for _ in range(2):
        x.grad = None
        out = layer(x)
        out.square().sum().backward()
        runs.append((out.detach(), x.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


class _ScaledAverageDown(nn.Module):
    """A user downsample builder: average pooling with a learned per-channel scale."""

    def __init__(self, channels, kernel_size, factor, *, bias, causal_axis, device, dtype):
        super().__init__()
        if causal_axis is not None:
            raise ValueError("_ScaledAverageDown cannot be causal")
        self.factor = factor
        self.scale = nn.Parameter(torch.ones(channels, *[1] * len(factor), device=device, dtype=dtype))

    def forward(self, x):
        pool = (nn.functional.avg_pool1d, nn.functional.avg_pool2d, nn.functional.avg_pool3d)[x.dim() - 3]
        return pool(x, self.factor, self.factor, ceil_mode=True) * self.scale


def test_user_builders_plug_into_the_core():
    layer = RecConv2d(4, 3, 2, downsample=_ScaledAverageDown)
    assert "downsample=_ScaledAverageDown" in layer.extra_repr()
    x = torch.randn(1, 4, 13, 8)
    assert layer(x).shape == x.shape
    assert "down.scale" in layer.state_dict()
    with pytest.raises(ValueError, match="cannot be causal"):
        RecConv2d(4, 3, 2, downsample=_ScaledAverageDown, causal=True)
    assert recconv.num_params(layer) == sum(p.numel() for p in layer.parameters())
    with pytest.raises(OpProtocolError, match="the op _ScaledAverageDown does not answer flops()"):
        recconv.conv_flops(layer, (13, 8))


class _KeepingUp(nn.Module):
    """A user up op that keeps a reference to what it returns, as a cache or a hook might."""

    def __init__(self, channels, kernel_size, factor, *, bias, causal_axis, device, dtype) -> None:
        super().__init__()
        self.kept = []

    def forward(self, x, size):
        out = nn.functional.interpolate(x, size=list(size), mode="bilinear", align_corners=False)
        self.kept.append((out, out.clone()))
        return out


def test_sums_go_in_place_only_into_tensors_of_the_built_in_up_ops():
    builtin = RecConv2d(4, 3, 2).double()
    keeping = RecConv2d(4, 3, 2, upsample=_KeepingUp).double()
    keeping.load_state_dict(builtin.state_dict())
    x = torch.randn(2, 4, 12, 10, dtype=torch.float64)
    torch.testing.assert_close(keeping(x), builtin(x), rtol=0, atol=0)  # in place or not, the same sums
    assert all(torch.equal(out, copy) for up in keeping.ups for out, copy in up.kept)


class _Zero(nn.Module):
    """A coarse op that discards its input: the coarsest level then adds nothing."""

    def __init__(self, channels, kernel_size, *, bias, causal_axis, device, dtype) -> None:
        super().__init__()

    def forward(self, x):
        self.seen_dims = x.dim()
        return torch.zeros_like(x)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_coarse_op_replaces_only_the_coarsest_conv(d):
    layer = RecConv1d if d == 1 else RecConv2d if d == 2 else RecConv3d
    plugged = layer(3, 3, 2, coarse=_Zero).double()
    assert isinstance(plugged.convs[0], _Zero) and len(plugged.convs) == 3
    assert "coarse=_Zero" in plugged.extra_repr()
    # Nothing comes up from the coarsest level, so the layer is the level-1 RecConv on its other convs.
    shorter = layer(3, 3, 1).double()
    shorter.down.weight.data.copy_(plugged.down.weight)
    for target, source in zip(shorter.convs, plugged.convs[1:]):
        target.weight.data.copy_(source.weight)
    x = torch.randn(2, 3, *(11,) * d, dtype=torch.float64)
    torch.testing.assert_close(
        plugged(x), shorter(x), rtol=1e-12, atol=1e-12
    )  # 1D: conv1d against lifted conv2d
    assert plugged.convs[0].seen_dims == d + 2  # a user op sees the protocol's layout (no 1D lift)
    assert isinstance(layer(3, 3, 0, coarse=_Zero).convs[0], _Zero)  # level 0: the coarse op is the layer
    with pytest.raises(OpProtocolError, match=r"the op _Zero does not answer flops\(\)"):
        recconv.conv_flops(plugged, (11,) * d)


def test_conv_builder_plugs_into_every_level():
    from recconv.ops import ConvNorm, depthwise_conv_norm

    plugged = RecConv2d(4, 3, 2, conv=depthwise_conv_norm, downsample=depthwise_conv_norm).eval().double()
    assert all(isinstance(m, ConvNorm) for m in (plugged.down, *plugged.convs))
    assert (
        plugged.extra_repr()
        == "4, kernel_size=3, level=2, downsample=depthwise_conv_norm, conv=depthwise_conv_norm"
    )
    plain = RecConv2d(4, 3, 2).double()
    plain.down.weight.data.copy_(plugged.down.conv.weight)
    for target, source in zip(plain.convs, plugged.convs):
        target.weight.data.copy_(source.conv.weight)
    for module in plugged.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0  # fresh running statistics: an exact identity
    x = torch.randn(2, 4, 13, 10, dtype=torch.float64)
    torch.testing.assert_close(plugged(x), plain(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="a centered ConvNorm cannot be causal"):
        RecConv2d(4, conv=depthwise_conv_norm, causal=True)
    with pytest.raises(ValueError, match="bias=True is not supported"):
        RecConv2d(4, conv=depthwise_conv_norm, bias=True)
    with pytest.raises(ValueError, match=r"unknown conv 'dense'; expected one of \['depthwise'\]"):
        RecConv2d(4, conv="dense")
    with pytest.raises(ValueError, match="unknown coarse 'attention'"):
        RecConv2d(4, coarse="attention")
