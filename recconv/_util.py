"""Helpers every recconv module shares: name lookup, argument checks, per-rank tables, FLOP counts.

Each fact lives here once: the did-you-mean message, the int and per-axis checks, which torch
class or function serves which rank, and how FLOPs are counted.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")

LAYOUTS = ("L", "H, W", "D, H, W")
"""Names of the spatial axes of a 1D, 2D and 3D input, for error messages."""

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CONV_FN = (F.conv1d, F.conv2d, F.conv3d)
CONV_TRANSPOSE_FN = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
AVG_POOL_FN = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
MAX_POOL_FN = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
LINEAR_MODE = ("linear", "bilinear", "trilinear")
CHANNELS_LAST: dict[int, torch.memory_format] = {4: torch.channels_last, 5: torch.channels_last_3d}
"""The channels-last memory format of a tensor (or conv weight) of this many dimensions."""


def per_rank(table: Sequence[T], spatial_dims: int, owner: str = "recconv") -> T:
    """The entry of a per-rank ``table`` for 1, 2 or 3 spatial dimensions.

    Example:
        >>> per_rank(CONV, 3).__name__
        'Conv3d'
    """
    if not is_int(spatial_dims) or not 1 <= spatial_dims <= len(table):
        raise ValueError(f"{owner}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return table[spatial_dims - 1]


def look_up(
    value: object, table: Mapping[str, T] | Iterable[str], *, what: str, owner: str, also: str = ""
) -> Any:
    """The entry of ``table`` named ``value`` (or the name itself for a list of names).

    Raises ``ValueError`` naming the owner, the valid names (``also`` names what else is
    accepted) and the closest one, or ``TypeError`` for a name that is not a string.

    Example:
        >>> look_up("lineer", {"linear": 1, "nearest": 2}, what="upsample", owner="RecConv2d")
        Traceback (most recent call last):
        ...
        ValueError: RecConv2d: unknown upsample 'lineer'; expected one of ['linear', 'nearest']. Did you mean 'linear'?
    """
    names = list(table)
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {what} must be a name from {names}, got {type(value).__name__}")
    alternatives = f" or {also}" if also else ""
    if value in names:
        return table[value] if isinstance(table, Mapping) else value
    close = difflib.get_close_matches(value, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{owner}: unknown {what} {value!r}; expected one of {names}{alternatives}.{hint}")


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: object, name: str, owner: str, *, minimum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``; else a clear error.

    Example:
        >>> check_int(3, "level", "RecConv2d", minimum=0)
        3
        >>> check_int(2.0, "level", "RecConv2d", minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: RecConv2d: level must be an int >= 0, got 2.0
    """
    if minimum is not None and not (is_int(value) and value >= minimum):  # type: ignore[operator]
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    return value  # type: ignore[return-value]


def as_tuple(
    value: int | Sequence[int], spatial_dims: int, name: str, owner: str, *, minimum: int | None = None
) -> tuple[int, ...]:
    """Broadcast an int to ``spatial_dims`` axes, or check a per-axis sequence of ints.

    Example:
        >>> as_tuple(3, 2, "kernel_size", "RecConv2d")
        (3, 3)
        >>> as_tuple((1, 2), 3, "factor", "RecConv3d")
        Traceback (most recent call last):
        ...
        ValueError: RecConv3d: factor must be an int or a tuple of 3 ints, got (1, 2)
    """
    if is_int(value):
        values: tuple[Any, ...] = (value,) * spatial_dims
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
    else:
        raise TypeError(f"{owner}: {name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
    if len(values) != spatial_dims:
        raise ValueError(f"{owner}: {name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
    if not all(is_int(v) for v in values):
        raise TypeError(f"{owner}: {name} must contain ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in values):
        raise ValueError(f"{owner}: {name} must be >= {minimum} on every axis, got {value!r}")
    return values


def _fft_flops(real: bool) -> Callable[..., int]:
    """The usual count of an FFT over ``dim``: ``5 N log2 N`` per complex transform of ``N`` points,
    half of it for a real one (Cooley-Tukey's count; FlopCounterMode has none)."""

    def flops(
        x_shape: Sequence[int], dim: Sequence[int], *args: Any, out_shape: Sequence[int], **kwargs: Any
    ) -> int:
        # the longer of input and output: a complex-to-real transform's output is the full signal
        shape = x_shape if math.prod(x_shape) >= math.prod(out_shape) else out_shape
        points = math.prod(shape[d] for d in dim)
        per_transform = (2.5 if real else 5.0) * points * math.log2(max(points, 2))
        return int(per_transform * math.prod(shape) / points)

    return flops


def _complex_product_flops(a: Any, b: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # A spectral product is an FFT convolution's multiply-adds: 6 real FLOPs per complex product.
    return 6 * out_val.numel() if isinstance(out_val, torch.Tensor) and out_val.is_complex() else 0


_complex_product_flops._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode: pass tensors, not shapes

_FLOP_FORMULAS = {
    torch.ops.aten._fft_r2c: _fft_flops(real=True),
    torch.ops.aten._fft_c2r: _fft_flops(real=True),
    torch.ops.aten._fft_c2c: _fft_flops(real=False),
    torch.ops.aten.mul: _complex_product_flops,
}


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of ``run()`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 per
    multiply-add of convolutions and matrix products; elementwise ops, pooling and
    interpolation are free), plus what it does not count: FFTs at ``5 N log2 N`` per complex
    transform of ``N`` points (half for real ones) and products of complex tensors at 6 per element,
    so that an FFT convolution is not free.

    Example:
        >>> conv = torch.nn.Conv1d(2, 2, 3, device="meta")
        >>> count_flops(lambda: conv(torch.empty(1, 2, 10, device="meta")))
        192
    """
    with FlopCounterMode(display=False, custom_mapping=_FLOP_FORMULAS) as counter:
        run()
    return counter.get_total_flops()


def num_params(module: nn.Module) -> int:
    """Parameters of ``module`` (each shared parameter once)."""
    return sum(p.numel() for p in module.parameters())
