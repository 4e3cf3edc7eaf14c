"""A slow, plainly written reference of the paper's formula, independent of recconv.ops.

Convolutions are sums of shifted slices and interpolation is explicit index arithmetic,
so agreement with the core checks the formula, not a shared helper.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor


def depthwise_conv(x: Tensor, weight: Tensor, stride: tuple[int, ...]) -> Tensor:
    """Zero-padded ('same' for stride 1) depthwise conv, one shifted slice per kernel offset."""
    kernel = weight.shape[2:]
    padded = torch.nn.functional.pad(x, [p for k in reversed(kernel) for p in (k // 2, k // 2)])
    out_size = [(s - 1) // f + 1 for s, f in zip(x.shape[2:], stride)]
    out = x.new_zeros(*x.shape[:2], *out_size)
    for offset in itertools.product(*[range(k) for k in kernel]):
        window = tuple(slice(o, o + f * (n - 1) + 1, f) for o, f, n in zip(offset, stride, out_size))
        out += weight[(slice(None), 0, *offset)].reshape(-1, *[1] * len(kernel)) * padded[(..., *window)]
    return out


def _linear_axis(x: Tensor, dim: int, size: int) -> Tensor:
    n = x.shape[dim]
    scale = n / size  # multiplied as PyTorch does, so float rounding lands alike
    lows, highs, fractions = [], [], []
    for q in range(size):
        source = max((q + 0.5) * scale - 0.5, 0.0)
        low = math.floor(source)
        lows.append(low)
        highs.append(min(low + 1, n - 1))
        fractions.append(source - low)
    shape = [1] * x.dim()
    shape[dim] = size
    weight = torch.tensor(fractions, dtype=x.dtype).reshape(shape)
    return (
        x.index_select(dim, torch.tensor(lows)) * (1 - weight)
        + x.index_select(dim, torch.tensor(highs)) * weight
    )


def _nearest_axis(x: Tensor, dim: int, size: int) -> Tensor:
    n = x.shape[dim]
    scale = n / size
    return x.index_select(dim, torch.tensor([min(math.floor(q * scale), n - 1) for q in range(size)]))


def resize(x: Tensor, size: tuple[int, ...], mode: str) -> Tensor:
    """Separable resize, one axis at a time (align_corners=False for linear)."""
    axis_resize = _linear_axis if mode == "linear" else _nearest_axis
    for axis, target in enumerate(size):
        x = axis_resize(x, axis + 2, target)
    return x


def recconv(
    x: Tensor, down_weight: Tensor, conv_weights: list[Tensor], factor: tuple[int, ...], mode: str
) -> Tensor:
    """f_i = down(f_{i-1}); h = up(conv_{l-i}(f_i + h)); out = conv_l(x + h)."""
    level = len(conv_weights) - 1
    ones = (1,) * len(factor)
    features = [x]
    for _ in range(level):
        features.append(depthwise_conv(features[-1], down_weight, factor))
    h = 0
    for i in range(level, 0, -1):
        h = resize(
            depthwise_conv(features[i] + h, conv_weights[level - i], ones), features[i - 1].shape[2:], mode
        )
    return depthwise_conv(x + h, conv_weights[level], ones)
