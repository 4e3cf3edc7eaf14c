"""Parameter, FLOP and receptive-field formulas of RecConv.

For the paper's layer (conv down shared by all levels, linear up) with base kernel ``k``,
``d`` spatial axes, ``C`` channels, level ``l`` and factor 2 on every axis:

* parameters: ``(l + 2) * C * k**d`` (``l + 1`` convs plus the shared down conv);
* conv FLOPs relative to one k-kernel depthwise conv: ``1 + 2 * sum((2**-d)**i, i=1..l)``,
  below ``1 + 2 / (2**d - 1)``: 3 in 1D, 5/3 in 2D, 9/7 in 3D;
* effective kernel: ``k * 2**l`` per axis.

The helpers below are exact for any rank, level, per-axis kernel and factor, and the
built-in ops: :func:`conv_flops` counts what ``torch.utils.flop_counter.FlopCounterMode``
counts (convolutions only: interpolation, pooling and additions are free there), odd sizes
included, and :func:`receptive_field_window` gives the input window each output position
can see, following the index arithmetic of every op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from torch import Tensor

from .core import RecConvNd

_PARAMETRIC_DOWN = {"conv": True, "avgpool": False, "maxpool": False}
_UPSAMPLE_NAMES = ("linear", "nearest", "transposed")


def flop_ratio(spatial_dims: int, level: int, factor: int | Sequence[int] = 2) -> float:
    """Conv FLOPs of the paper's layer over one k-kernel conv, for sizes divisible by ``factor**level``.

    Example:
        >>> flop_ratio(2, 3)
        1.65625
    """
    shrink = 1 / math.prod(_per_axis(factor, spatial_dims))
    return 1 + 2 * sum(shrink**i for i in range(1, level + 1))


def flop_ratio_limit(spatial_dims: int, factor: int | Sequence[int] = 2) -> float:
    """The bound ``1 + 2 / (prod(factor) - 1)`` that :func:`flop_ratio` approaches as the level grows.

    Example:
        >>> tuple(round(flop_ratio_limit(d), 4) for d in (1, 2, 3))
        (3.0, 1.6667, 1.2857)
    """
    cells = math.prod(_per_axis(factor, spatial_dims))
    return math.inf if cells == 1 else 1 + 2 / (cells - 1)


def effective_kernel_size(layer: RecConvNd) -> tuple[int, ...]:
    """The paper's effective kernel ``k * factor**level`` per axis (convs at every level)."""
    if layer.coarse_op is not None:
        layer_call = f"{type(layer).__name__}({layer.extra_repr()})"
        raise ValueError(
            f"effective_kernel_size: {layer_call} has a custom coarse op, not a conv of known size"
        )
    return tuple(k * f**layer.level for k, f in zip(layer.kernel_size, layer.factor))


def num_params(layer: RecConvNd) -> int:
    """Exact parameter count of a layer built from the built-in ops."""
    down, up = _builtin_ops(layer)
    channels, level = layer.in_channels, layer.level
    conv = channels * math.prod(layer.kernel_size)
    downs = (1 if layer.shared_down else level) if level > 0 and _PARAMETRIC_DOWN[down] else 0
    up_kernel = math.prod(k + f - 1 for k, f in zip(layer.kernel_size, layer.factor))
    ups = level * channels * up_kernel if up == "transposed" else 0
    # Biases are counted where they are: swap gives convs[-1] the bias of the conv it replaced.
    biases = sum(op.bias.numel() for op in layer.modules() if isinstance(getattr(op, "bias", None), Tensor))
    return (level + 1 + downs) * conv + ups + biases


def level_sizes(layer: RecConvNd, input_size: Sequence[int]) -> list[tuple[int, ...]]:
    """Spatial size of every level, from the input (level 0) to the coarsest: ``ceil(size / factor)``."""
    sizes = [tuple(input_size)]
    for _ in range(layer.level):
        sizes.append(tuple(-(-s // f) for s, f in zip(sizes[-1], layer.factor)))
    return sizes


def conv_flops(layer: RecConvNd, input_size: Sequence[int], batch_size: int = 1) -> int:
    """Convolution FLOPs of one forward pass, as ``FlopCounterMode`` counts them (2 per MAC)."""
    down, up = _builtin_ops(layer)
    sizes = [math.prod(s) for s in level_sizes(layer, input_size)]
    per_position = 2 * batch_size * layer.in_channels
    kernel = math.prod(layer.kernel_size)
    # convs[i] runs once per level; a conv down and a transposed up run once per coarse level.
    total = kernel * sum(sizes)
    if _PARAMETRIC_DOWN[down]:
        total += kernel * sum(sizes[1:])
    if up == "transposed":
        total += math.prod(k + f - 1 for k, f in zip(layer.kernel_size, layer.factor)) * sum(sizes[1:])
    return per_position * total


def receptive_field(layer: RecConvNd) -> tuple[int, ...]:
    """Receptive field per axis of an interior output position on an unbounded input.

    It is the largest span over all output positions (they differ by their phase modulo
    ``factor**level``). A causal axis counts the current position and the past only.

    Example:
        >>> from recconv import RecConv2d
        >>> receptive_field(RecConv2d(8, kernel_size=5, level=0))
        (5, 5)
    """
    _builtin_ops(layer)
    spans = []
    for axis, (k, f) in enumerate(zip(layer.kernel_size, layer.factor)):
        period = f**layer.level
        coarse = 4 * (k + f) * (layer.level + 1)  # wide enough that no window reaches an edge
        sizes = [coarse * f ** (layer.level - i) for i in range(layer.level + 1)]
        center = period * (coarse // 2)
        windows = (
            _axis_window(layer, axis, sizes, center + phase, floating=False) for phase in range(period)
        )
        spans.append(max(len(w) for w in windows))
    return tuple(spans)


def receptive_field_window(
    layer: RecConvNd, input_size: Sequence[int], position: Sequence[int]
) -> tuple[range, ...]:
    """Input indices per axis that the output at ``position`` may depend on, for this input size.

    The window is clipped to the input and follows PyTorch's index arithmetic (where a
    non-power-of-two resize scale makes float rounding matter, it keeps one extra index).

    Example:
        >>> from recconv import RecConv1d
        >>> receptive_field_window(RecConv1d(4, kernel_size=3, level=0), [10], [0])
        (range(0, 2),)
    """
    _builtin_ops(layer)
    if len(input_size) != layer.spatial_dims or len(position) != layer.spatial_dims:
        raise ValueError(f"expected {layer.spatial_dims} input sizes and positions")
    windows = []
    for axis, (size, pos) in enumerate(zip(input_size, position)):
        if not 0 <= pos < size:
            raise ValueError(f"position {tuple(position)} is outside the input size {tuple(input_size)}")
        sizes = [s[axis] for s in level_sizes(layer, input_size)]
        windows.append(_axis_window(layer, axis, sizes, pos, floating=True))
    return tuple(windows)


def _per_axis(factor: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    return (factor,) * spatial_dims if isinstance(factor, int) else tuple(factor)


def _builtin_ops(layer: RecConvNd) -> tuple[str, str]:
    down, up = layer.downsample, layer.upsample
    if (
        down not in _PARAMETRIC_DOWN
        or up not in _UPSAMPLE_NAMES
        or layer.conv_op != "depthwise"
        or layer.coarse_op is not None
    ):
        raise ValueError(
            f"the theory helpers know the built-in ops only; {layer!r} uses "
            f"downsample={down!r}, upsample={up!r}, conv={layer.conv_op!r}, coarse={layer.coarse_op!r}"
        )
    return down, up


def _axis_window(layer: RecConvNd, axis: int, sizes: list[int], position: int, *, floating: bool) -> range:
    """Walk one output position back through the recursion along one axis.

    ``sizes[i]`` is the axis length at level ``i``. Intervals are inclusive ``(lo, hi)``.
    """
    k, f = layer.kernel_size[axis], layer.factor[axis]
    causal = layer.causal_axis == axis
    radius = k // 2
    before, after = (k - 1, 0) if causal else (radius, radius)

    def clip(lo: int, hi: int, level: int) -> tuple[int, int]:
        return max(lo, 0), min(hi, sizes[level] - 1)

    def conv(lo: int, hi: int, level: int) -> tuple[int, int]:
        return clip(lo - before, hi + after, level)

    def down_source(lo: int, hi: int, coarse_level: int) -> tuple[int, int]:
        return clip(lo * f - before, hi * f + after, coarse_level - 1)

    def up_source(lo: int, hi: int, coarse_level: int) -> tuple[int, int]:
        n, m = sizes[coarse_level], sizes[coarse_level - 1]
        if causal and f > 1 and layer.upsample != "transposed":
            start = lo // f
            if layer.upsample == "linear" and lo % f != f - 1:
                start -= 1  # the lagged ramp also reads the previous coarse sample
            return clip(start, hi // f, coarse_level)
        if layer.upsample == "transposed":
            pad = 0 if causal else radius
            width = k + f - 1
            return clip(-(-(lo + pad - width + 1) // f), (hi + pad) // f, coarse_level)
        if n == m:  # same size: the resize is skipped, an identity
            return lo, hi
        scale = Fraction(n, m)
        if layer.upsample == "nearest":
            start, stop = math.floor(lo * scale), math.floor(hi * scale)
        else:  # linear, align_corners=False: source (q + 1/2) * n / m - 1/2, clamped at 0
            first = max(Fraction(0), (lo + Fraction(1, 2)) * scale - Fraction(1, 2))
            last = max(Fraction(0), (hi + Fraction(1, 2)) * scale - Fraction(1, 2))
            start = math.floor(first)
            stop = math.floor(last) + (0 if last.denominator == 1 else 1)
        if floating and scale.denominator & (scale.denominator - 1):
            start, stop = start - 1, stop + 1  # the float scale is inexact: rounding may shift an index
        return clip(start, stop, coarse_level)

    lo, hi = conv(position, position, 0)
    first, last = lo, hi
    for level in range(1, layer.level + 1):
        lo, hi = conv(*up_source(lo, hi, level), level)
        a, b = lo, hi
        for coarse_level in range(level, 0, -1):
            a, b = down_source(a, b, coarse_level)
        first, last = min(first, a), max(last, b)
    return range(first, last + 1)
