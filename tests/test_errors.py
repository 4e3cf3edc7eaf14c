"""One test per promised error message."""

from __future__ import annotations

import re

import pytest
import torch

import recconv
from recconv import RecConv1d, RecConv2d, RecConv3d
from recconv.core import RecConvNd
from recconv.ops import OpProtocolError, TransposedUp


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: RecConv2d(8, 4), ValueError, "RecConv2d: kernel_size must be odd and positive, got 4"),
        (lambda: RecConv2d(8, (3, 4)), ValueError, "RecConv2d: kernel_size must be odd and positive, got (3, 4)"),
        (lambda: RecConv1d(8, 5, -1), ValueError, "RecConv1d: level must be an int >= 0, got -1"),
        (lambda: RecConv1d(8, 5, 1.5), ValueError, "RecConv1d: level must be an int >= 0, got 1.5"),
        (lambda: RecConv3d(0), ValueError, "RecConv3d: in_channels must be a positive int, got 0"),
        (lambda: RecConv3d(-4), ValueError, "RecConv3d: in_channels must be a positive int, got -4"),
        (lambda: RecConv2d(8, (3, 3, 3)), ValueError, "RecConv2d: kernel_size must be an int or a tuple of 2 ints, got (3, 3, 3)"),
        (lambda: RecConv3d(8, factor=(1, 2)), ValueError, "RecConv3d: factor must be an int or a tuple of 3 ints, got (1, 2)"),
        (lambda: RecConv2d(8, factor=(2, 2.0)), TypeError, "RecConv2d: factor must contain ints, got (2, 2.0)"),
        (lambda: RecConv2d(8, factor=0), ValueError, "RecConv2d: factor must be >= 1 on every axis, got 0"),
        (lambda: RecConv2d(8, upsample="bilinearr"), ValueError, "RecConv2d: unknown upsample 'bilinearr'; expected one of ['linear', 'nearest', 'transposed', 'haar'] or a builder callable. Did you mean 'linear'?"),
        (lambda: RecConv2d(8, downsample="avg"), ValueError, "RecConv2d: unknown downsample 'avg'; expected one of ['conv', 'avgpool', 'maxpool', 'haar'] or a builder callable."),
        (lambda: RecConv2d(8, upsample=3), TypeError, "RecConv2d: upsample must be a name or a builder callable, got int"),
        (lambda: RecConv2d(8, causal=2), ValueError, "RecConv2d: causal axis must be in [-2, 1] (spatial axes, batch and channel excluded), got 2"),
        (lambda: RecConv1d(8, causal="time"), TypeError, "RecConv1d: causal must be a bool or a spatial axis index, got 'time'"),
        (lambda: RecConvNd(8), TypeError, "RecConvNd is abstract: use RecConv1d, RecConv2d or RecConv3d"),
    ],
)  # fmt: skip
def test_constructor_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "layer, x, error, message",
    [
        (RecConv2d(64, level=3), torch.randn(8, 32, 56, 56), ValueError, "RecConv2d(64, level=3): expected (N, 64, H, W) or (64, H, W), got (8, 32, 56, 56)"),
        (RecConv2d(64, level=3), torch.randn(8, 64, 56), ValueError, "RecConv2d(64, level=3): expected (N, 64, H, W) or (64, H, W), got (8, 64, 56)"),
        (RecConv1d(4), torch.randn(2, 4, 3, 3), ValueError, "RecConv1d(4, level=2): expected (N, 4, L) or (4, L), got (2, 4, 3, 3)"),
        (RecConv3d(4, level=1), torch.randn(4, 8, 8), ValueError, "RecConv3d(4, level=1): expected (N, 4, D, H, W) or (4, D, H, W), got (4, 8, 8)"),
        (RecConv1d(4), torch.ones(1, 4, 9, dtype=torch.int64), TypeError, "RecConv1d(4, level=2): expected a floating-point input, got torch.int64"),
        (RecConv1d(4), torch.ones(1, 4, 0), ValueError, "RecConv1d(4, level=2): spatial sizes must be >= 1, got (0,)"),
        (RecConv1d(4), [[1.0]], TypeError, "RecConv1d(4, level=2): expected a tensor, got list"),
    ],
)  # fmt: skip
def test_input_errors(layer, x, error, message):
    with pytest.raises(error, match=re.escape(message)):
        layer(x)


def test_transposed_up_refuses_an_unreachable_size():
    up = TransposedUp(2, (5,), (2,))
    with pytest.raises(
        ValueError, match=re.escape("TransposedUp: cannot reach size (9,) from (3,) with factor (2,)")
    ):
        up(torch.randn(1, 2, 3), (9,))


def test_theory_helpers_refuse_ops_outside_the_protocol_and_bad_positions():
    layer = RecConv1d(2, upsample=lambda *args, **kwargs: torch.nn.Identity())
    message = "RecConv1d(2, level=2): the op Identity does not answer input_window(); give it that method"
    with pytest.raises(OpProtocolError, match=re.escape(message)):
        recconv.receptive_field(layer)
    with pytest.raises(ValueError, match=re.escape("position (9,) is outside the output size (9,)")):
        recconv.receptive_field_window(RecConv1d(2), [9], [9])
    with pytest.raises(ValueError, match="expected 2 input sizes and positions"):
        recconv.receptive_field_window(RecConv2d(2), [9], [0])


def test_an_input_of_another_dtype_than_the_parameters_is_named():
    layer = RecConv2d(4, level=1)
    message = "RecConv2d(4, level=1): expected a torch.float32 input (the dtype of its parameters), got torch.float64"
    with pytest.raises(TypeError, match=re.escape(message)):
        layer(torch.randn(1, 4, 8, 8, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the ops choose, as nn.ConvNd's do
        assert layer(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)).shape == (1, 4, 8, 8)
