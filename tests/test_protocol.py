"""The op protocol: ops describe themselves, names are table keys, theory asks the ops."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import recconv
from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv.models import RecNeXt
from recconv.ops import (
    AvgPoolDown,
    DepthwiseConv,
    HaarDown,
    HaarUp,
    LinearUp,
    NearestUp,
    OpProtocolError,
    TransposedUp,
    conv_window,
)

from .helpers import randomize_norms
from .test_core import gradient_support


@pytest.mark.parametrize(
    "by_name, by_class",
    [
        ({"upsample": "linear"}, {"upsample": LinearUp}),
        (
            {"upsample": "nearest", "downsample": "avgpool"},
            {"upsample": NearestUp, "downsample": AvgPoolDown},
        ),
        ({"upsample": "transposed", "conv": "depthwise"}, {"upsample": TransposedUp, "conv": DepthwiseConv}),
        ({"upsample": "haar", "downsample": "haar"}, {"upsample": HaarUp, "downsample": HaarDown}),
    ],
)
def test_a_built_in_class_builds_the_layer_its_name_builds(by_name, by_class):
    for layer_class, size in ((RecConv1d, (37,)), (RecConv2d, (13, 10))):
        torch.manual_seed(0)
        named = layer_class(4, 3, 2, **by_name)
        torch.manual_seed(0)
        classed = layer_class(4, 3, 2, **by_class)
        assert repr(named) == repr(classed)
        assert (named._liftable, named._sum_in_place) == (classed._liftable, classed._sum_in_place)
        assert recconv.receptive_field(named) == recconv.receptive_field(classed)
        assert recconv.conv_flops(named, size) == recconv.conv_flops(classed, size)
        x = torch.randn(2, 4, *size)
        assert torch.equal(named(x), classed(x))


def test_a_configured_builder_takes_the_same_speed_path_and_theory():
    plain = RecConv1d(4, 3, 2)
    configured = RecConv1d(4, 3, 2, upsample=functools.partial(LinearUp))
    assert configured._liftable and configured._sum_in_place  # the ops say so, not their names
    assert recconv.receptive_field(configured) == recconv.receptive_field(plain)
    configured.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 29)
    assert torch.equal(configured(x), plain(x))


class DilatedConv(nn.Module):
    """The docs' example of a new conv op: a depthwise conv with dilation 2, in one class."""

    liftable = False

    def __init__(self, channels, kernel_size, *, bias, causal_axis, device, dtype) -> None:
        super().__init__()
        if causal_axis is not None:
            raise ValueError("DilatedConv is centered and cannot be causal")
        conv_class = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(kernel_size) - 1]
        padding = tuple(k - 1 for k in kernel_size)  # dilation 2 keeps the size
        self.conv = conv_class(
            channels, channels, kernel_size, padding=padding, dilation=2, groups=channels, bias=bias,
            device=device, dtype=dtype,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def input_window(self, axis, lo, hi, input_size, output_size, exact=True):
        k = self.conv.kernel_size[axis]
        return conv_window(lo, hi, k, 1, k - 1, dilation=2)

    def flops(self, input_size, output_size):
        return 2 * self.conv.out_channels * math.prod(self.conv.kernel_size) * math.prod(output_size)


@pytest.mark.parametrize("layer_class, size", [(RecConv1d, (88,)), (RecConv2d, (40, 36))])  # exact scales
def test_a_user_op_with_the_protocol_gets_exact_theory_numbers(layer_class, size):
    layer = layer_class(2, 3, 2, conv=DilatedConv, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(1, 2, *size, dtype=torch.float64))
    assert recconv.conv_flops(layer, size) == counter.get_total_flops()
    center = tuple(s // 2 for s in size)
    window = recconv.receptive_field_window(layer, size, center)
    assert gradient_support(layer, size, center) == list(window)


def test_an_op_without_a_protocol_method_is_named_in_one_sentence():
    class Bare(nn.Module):
        def __init__(self, channels, kernel_size, factor, **kwargs) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x: Tensor) -> Tensor:
            return nn.functional.avg_pool1d(x, self.factor[0], ceil_mode=True)

    layer = RecConv1d(2, 3, 1, downsample=Bare)
    assert layer(torch.randn(1, 2, 9)).shape == (1, 2, 9)  # it runs; only the questions fail
    message = "RecConv1d(2, level=1): the op Bare does not answer flops(); give it that method"
    with pytest.raises(OpProtocolError, match=re.escape(message)):
        recconv.conv_flops(layer, (9,))
    with pytest.raises(OpProtocolError, match=re.escape("the op Bare does not answer input_window()")):
        recconv.receptive_field(layer)


def test_builders_are_checked_where_they_plug_in():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "RecConv2d: upsample must be a name from ['linear', 'nearest', 'transposed', 'haar'] or a builder (a class or callable that returns a module), got the module instance LinearUp"
        ),
    ):
        RecConv2d(4, upsample=LinearUp(4, (3, 3), (2, 2)))
    with pytest.raises(
        TypeError,
        match=re.escape("RecConv2d: the conv builder <lambda> returned Tensor, expected an nn.Module"),
    ):
        RecConv2d(4, conv=lambda *args, **kwargs: torch.zeros(1))


def test_interpolating_up_ops_return_a_fresh_tensor_where_the_resize_is_an_identity():
    up = LinearUp(2, (3,), (1,))
    x = torch.randn(1, 2, 5)
    out = up(x, (5,))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()  # the core may sum into it in place
    layer = RecConv1d(2, 3, 2, factor=1, dtype=torch.float64)
    x = torch.randn(1, 2, 7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(layer, (x,))


def test_theory_describes_recattn_in_every_rank():
    for layer in (recconv.RecAttn1d(8, 2, level=2), recconv.RecAttn3d(8, 2, kernel_size=3, factor=(1, 2, 2))):
        size = (40,) if layer.spatial_dims == 1 else (4, 8, 6)
        with FlopCounterMode(display=False) as counter:
            layer(torch.randn(1, 8, *size))
        assert recconv.conv_flops(layer, size) == counter.get_total_flops()
        assert recconv.receptive_field(layer) == (math.inf,) * layer.spatial_dims


def test_theory_composes_through_a_whole_model():
    model = RecNeXt(
        (4, 8), (1, 1), spatial_dims=1, in_chans=1, num_classes=0, levels=(2, 1), dtype=torch.float64
    )
    model = randomize_norms(model).eval()
    field = recconv.receptive_field(model)
    size = 64 * (field[0] // 16 + 1)  # every resize scale a power of two: the window is exact
    features = model.forward_features(torch.zeros(1, 1, size, dtype=torch.float64)).shape[-1]
    spans = []
    for position in range(features // 2, features // 2 + 4):  # one period of the coarsest level
        x = torch.randn(1, 1, size, dtype=torch.float64, requires_grad=True)
        model.forward_features(x)[0, :, position].sum().backward()
        hit = (x.grad[0, 0] != 0).nonzero().flatten()
        window = recconv.receptive_field_window(model, (size,), (position,))[0]
        assert (int(hit.min()), int(hit.max())) == (window.start, window.stop - 1)
        spans.append(len(window))
    assert field == (max(spans),)
    layers = [m for m in model.modules() if isinstance(m, recconv.RecConvNd)]
    sizes = [size // 4, size // 8]  # the stem strides 4, the transition 2
    assert recconv.conv_flops(model, (size,)) == sum(
        recconv.conv_flops(layer, (s,)) for layer, s in zip(layers, sizes)
    )


def test_theory_names_the_module_it_cannot_describe():
    class Shift(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.roll(x, 1, dims=-1)

    model = nn.Sequential(RecConv1d(2, 3, 1), Shift())
    with pytest.raises(OpProtocolError, match=re.escape("receptive_field: cannot describe Shift")):
        recconv.receptive_field(model)
    with pytest.raises(ValueError, match="contains no RecConv or RecAttn layer"):
        recconv.receptive_field(nn.Conv1d(2, 2, 3))
    with pytest.raises(TypeError, match="expected a RecConv or RecAttn layer or a model, got str"):
        recconv.receptive_field("RecConv1d")
    with pytest.raises(ValueError, match=re.escape("conv_flops: expected 3 positive spatial sizes")):
        recconv.conv_flops(RecConv3d(2), (8, 8))


def test_the_docs_haar_down_op_gets_exact_theory_numbers():
    namespace: dict = {}
    page = (Path(__file__).parents[1] / "docs" / "ops.md").read_text()
    exec(re.findall(r"```python\n(.*?)```", page, flags=re.S)[0], namespace)  # the page's class, as written
    layer = RecConv2d(2, 3, 2, downsample=namespace["HaarDown"], dtype=torch.float64)
    size = (48, 40)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(1, 2, *size, dtype=torch.float64))
    assert recconv.conv_flops(layer, size) == counter.get_total_flops()
    center = (24, 20)
    assert gradient_support(layer, size, center) == list(recconv.receptive_field_window(layer, size, center))


class _KeepsSizeDown(nn.Module):
    def __init__(self, channels, kernel_size, factor, **options) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class _CroppingConv(nn.Module):
    def __init__(self, channels, kernel_size, **options) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x[..., 1:]


class _NoResizeUp(nn.Module):
    def __init__(self, channels, kernel_size, factor, **options) -> None:
        super().__init__()

    def forward(self, x: Tensor, size) -> Tensor:
        return x


@pytest.mark.parametrize(
    "options, message",
    [
        ({"downsample": _KeepsSizeDown}, "the downsample op _KeepsSizeDown returned (1, 4, 8, 8), but the op protocol asks for (1, 4, 4, 4)"),
        ({"conv": _CroppingConv}, "the conv op _CroppingConv returned (1, 4, 4, 3), but the op protocol asks for (1, 4, 4, 4)"),
        ({"upsample": _NoResizeUp}, "the upsample op _NoResizeUp returned (1, 4, 4, 4), but the op protocol asks for (1, 4, 8, 8)"),
    ],
)  # fmt: skip
def test_an_op_whose_output_breaks_the_protocol_is_named_at_its_first_call(options, message):
    layer = RecConv2d(4, 3, 1, **options)
    with pytest.raises(ValueError, match=re.escape(f"RecConv2d(4, level=1): {message}")):
        layer(torch.randn(1, 4, 8, 8))
