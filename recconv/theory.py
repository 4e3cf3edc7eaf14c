"""Parameter, FLOP and receptive-field formulas of RecConv.

For the paper's layer (conv down shared by all levels, linear up) with base kernel ``k``,
``d`` spatial axes, ``C`` channels, level ``l`` and factor 2 on every axis:

* parameters: ``(l + 2) * C * k**d`` (``l + 1`` convs plus the shared down conv);
* conv FLOPs relative to one k-kernel depthwise conv: ``1 + 2 * sum((2**-d)**i, i=1..l)``,
  below ``1 + 2 / (2**d - 1)``: 3 in 1D, 5/3 in 2D, 9/7 in 3D;
* effective kernel: ``k * 2**l`` per axis.

The helpers below are exact for any rank, level, per-axis kernel and factor, and any op
that answers the op protocol (:mod:`recconv.ops`): the built-in ops, RecAttn's attention and
a user's. They ask the layer's ops and never branch on op names. :func:`conv_flops` counts
what ``torch.utils.flop_counter.FlopCounterMode`` counts (convolutions and matrix products:
interpolation, pooling and additions are free there), odd sizes included, and
:func:`receptive_field_window` gives the input window each output position can see, following
the index arithmetic of every op. Each also takes a whole model, composed over its modules.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ._util import CONV, as_tuple, check_int, is_int
from ._util import num_params as count_params
from .core import RecConvNd
from .ops import OpProtocolError, Window, torch_conv_window


def flop_ratio(spatial_dims: int, level: int, factor: int | Sequence[int] = 2) -> float:
    """Conv FLOPs of the paper's layer over one k-kernel conv, for sizes divisible by ``factor**level``.

    Example:
        >>> flop_ratio(2, 3)
        1.65625
    """
    shrink = 1 / math.prod(as_tuple(factor, spatial_dims, "factor", "flop_ratio", minimum=1))
    return 1 + 2 * sum(shrink**i for i in range(1, level + 1))


def flop_ratio_limit(spatial_dims: int, factor: int | Sequence[int] = 2) -> float:
    """The bound ``1 + 2 / (prod(factor) - 1)`` that :func:`flop_ratio` approaches as the level grows.

    Example:
        >>> tuple(round(flop_ratio_limit(d), 4) for d in (1, 2, 3))
        (3.0, 1.6667, 1.2857)
    """
    cells = math.prod(as_tuple(factor, spatial_dims, "factor", "flop_ratio_limit", minimum=1))
    return math.inf if cells == 1 else 1 + 2 / (cells - 1)


def effective_kernel_size(layer: RecConvNd) -> tuple[int, ...]:
    """The paper's effective kernel ``k * factor**level`` per axis (convs at every level).

    Raises:
        OpProtocolError: If the coarsest op is not a conv with a ``kernel_size`` (RecAttn's attention).
    """
    _check_layer(layer, "effective_kernel_size")
    coarse = layer.convs[0]
    if tuple(getattr(coarse, "kernel_size", ())) != layer.kernel_size:
        raise OpProtocolError(
            f"effective_kernel_size: {layer._label}'s coarsest op {type(coarse).__qualname__} is not "
            f"a conv of the layer's kernel {layer.kernel_size}, so the layer has no effective kernel"
        )
    return tuple(k * f**layer.level for k, f in zip(layer.kernel_size, layer.factor))


def num_params(module: nn.Module) -> int:
    """Exact parameter count of a layer or a whole model (each shared parameter once).

    For the paper's layer it is ``(level + 2) * C * k**d``.

    Example:
        >>> from recconv import RecConv2d
        >>> num_params(RecConv2d(64, kernel_size=5, level=3)) == (3 + 2) * 64 * 5 * 5
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"num_params: expected an nn.Module, got {type(module).__name__}")
    return count_params(module)


def level_sizes(layer: RecConvNd, input_size: Sequence[int]) -> list[tuple[int, ...]]:
    """Spatial size of every level, from the input (level 0) to the coarsest: ``ceil(size / factor)``."""
    _check_layer(layer, "level_sizes")
    return layer.level_sizes(_check_size(input_size, layer.spatial_dims, "level_sizes"))


def conv_flops(module: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> int:
    """FLOPs of one forward pass of a RecConv or RecAttn layer, as ``FlopCounterMode`` counts them
    (2 per multiply-add; resizes, pooling and additions are free), summed over what every op
    reports through the op protocol.

    For a model, the sum over the RecConv/RecAttn layers it contains, each at the spatial size it
    sees when the model runs on ``input_size`` (then ``(C, *spatial)``: one input sample).

    Example:
        >>> from recconv import RecConv2d
        >>> conv_flops(RecConv2d(8, kernel_size=3, level=0), (10, 10))
        14400
    """
    check_int(batch_size, "batch_size", "conv_flops", minimum=0)
    if isinstance(module, RecConvNd):
        return batch_size * module.flops(_check_size(input_size, module.spatial_dims, "conv_flops"))
    sizes = _module_sizes(module, input_size, "conv_flops")
    layers = [m for m in module.modules() if isinstance(m, RecConvNd)]
    if not layers:
        raise ValueError(f"conv_flops: {type(module).__name__} contains no RecConv or RecAttn layer")
    return batch_size * sum(layer.flops(sizes[layer][0]) for layer in layers)


def receptive_field(module: nn.Module) -> tuple[float, ...]:
    """Receptive field per axis of an interior output position on an unbounded input.

    It is the largest span over all output positions (they differ by their phase modulo
    ``factor**level``). A causal axis counts the current position and the past only. An axis on
    which some op sees its whole input (RecAttn's attention) has ``math.inf``.

    For a model, the receptive field of its feature map (``forward_features`` of a RecNeXt),
    composed through every module on the way (see :func:`receptive_field_window`).

    Example:
        >>> from recconv import RecAttn2d, RecConv2d
        >>> receptive_field(RecConv2d(8, kernel_size=5, level=0))
        (5, 5)
        >>> receptive_field(RecAttn2d(8, num_heads=2))
        (inf, inf)
    """
    spatial_dims, period = _spatial_dims_and_period(module)
    size = 64 * period
    spans: list[float] = []
    for _ in range(4):  # grow the input until no window reaches an edge
        try:
            sizes = _module_sizes(module, [size] * spatial_dims, "receptive_field")
        except ValueError:
            if not spans:
                raise
            break  # too large even for the meta device (a global op): the edge-reaching axes stay inf
        (in_size, out_size) = sizes[module]
        spans = []
        for axis in range(spatial_dims):
            center = out_size[axis] // 2 // period * period
            windows = [_window(module, axis, q, q, sizes, True) for q in range(center, center + period)]
            reaches_edge = any(lo == 0 or hi == in_size[axis] - 1 for lo, hi in windows)
            spans.append(math.inf if reaches_edge else max(hi - lo + 1 for lo, hi in windows))
        if math.inf not in spans:
            break
        size *= 16
    return tuple(spans)


def receptive_field_window(
    module: nn.Module, input_size: Sequence[int], position: Sequence[int]
) -> tuple[range, ...]:
    """Input indices per axis that the output at ``position`` may depend on, for this input size.

    The window is clipped to the input and follows PyTorch's index arithmetic (where a
    non-power-of-two resize scale makes float rounding matter, it keeps one extra index).
    ``input_size`` and ``position`` are spatial (no batch or channel axis); for a model,
    ``position`` indexes its feature map and every module on the way must be describable: a
    RecConv/RecAttn layer, an op of the op protocol, an ``nn.ConvNd``, a pointwise module
    (norms, activations, dropout), an ``nn.Sequential`` of those, or a module that names its
    spatial path (``spatial_path``, as the RecNeXt blocks do).

    Example:
        >>> from recconv import RecConv1d
        >>> receptive_field_window(RecConv1d(4, kernel_size=3, level=0), [10], [0])
        (range(0, 2),)
    """
    spatial_dims, _ = _spatial_dims_and_period(module)
    if len(input_size) != spatial_dims or len(position) != spatial_dims:
        raise ValueError(f"receptive_field_window: expected {spatial_dims} input sizes and positions")
    sizes = _module_sizes(module, input_size, "receptive_field_window")
    out_size = sizes[module][1]
    if not all(is_int(p) and 0 <= p < s for p, s in zip(position, out_size)):
        raise ValueError(
            f"receptive_field_window: position {tuple(position)} is outside the output size {tuple(out_size)}"
        )
    windows = (_window(module, axis, p, p, sizes, False) for axis, p in enumerate(position))
    return tuple(range(lo, hi + 1) for lo, hi in windows)


def _check_layer(layer: object, owner: str) -> None:
    if not isinstance(layer, RecConvNd):
        raise TypeError(f"{owner}: expected a RecConv or RecAttn layer, got {type(layer).__name__}")


def _check_size(size: Sequence[int], spatial_dims: int, owner: str) -> tuple[int, ...]:
    values = tuple(size) if isinstance(size, Sequence) else ()
    if len(values) != spatial_dims or not all(is_int(s) and s > 0 for s in values):
        raise ValueError(
            f"{owner}: expected {spatial_dims} positive spatial sizes (no batch or channel axis), got {size!r}"
        )
    return values


def _spatial_dims_and_period(module: nn.Module) -> tuple[int, int]:
    """The rank of ``module``'s input and the phase period of its outputs' windows."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a RecConv or RecAttn layer or a model, got {type(module).__name__}")
    layers = [m for m in module.modules() if isinstance(m, RecConvNd)]
    if isinstance(module, RecConvNd):
        spatial_dims = module.spatial_dims
    elif is_int(getattr(module, "spatial_dims", None)):
        spatial_dims = module.spatial_dims  # type: ignore[assignment]
    elif layers:
        spatial_dims = layers[0].spatial_dims
    else:
        raise ValueError(f"{type(module).__name__} contains no RecConv or RecAttn layer to describe")
    return spatial_dims, math.lcm(1, *(f**layer.level for layer in layers for f in layer.factor))


def _module_sizes(module: nn.Module, input_size: Sequence[int], owner: str) -> dict[nn.Module, tuple]:
    """Spatial input and output size of every submodule, from one forward pass on the meta device."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{owner}: expected an nn.Module, got {type(module).__name__}")
    spatial_dims, _ = _spatial_dims_and_period(module)
    if isinstance(module, RecConvNd):
        size = _check_size(input_size, spatial_dims, owner)
        return {module: (size, size)}
    shape = tuple(input_size)
    if len(shape) == spatial_dims:  # spatial sizes only: add the model's input channels
        first = next((m for m in module.modules() if is_int(getattr(m, "in_channels", None))), None)
        channels = getattr(module, "in_chans", getattr(first, "in_channels", None))
        if is_int(channels):
            shape = (channels, *shape)
        else:
            raise ValueError(
                f"{owner}: give the input size as (C, *spatial): {type(module).__name__}'s input channels are unknown"
            )
    # Run a twin on the meta device (no memory, no compute) and map its modules back to the originals.
    twin = copy.deepcopy(module).to("meta").eval()
    originals = dict(zip(twin.modules(), module.modules()))
    sizes: dict[nn.Module, tuple] = {}

    def record(sub: nn.Module, args: tuple, output: object) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            dims = getattr(sub, "spatial_dims", None)
            cut = 2 if not is_int(dims) else args[0].dim() - dims  # type: ignore[operator]
            sizes.setdefault(originals[sub], (tuple(args[0].shape[cut:]), tuple(output.shape[cut:])))

    for sub in twin.modules():
        sub.register_forward_hook(record)
    forward = getattr(twin, "forward_features", twin)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    try:
        with torch.no_grad():
            x = torch.empty(1, *shape, device="meta", dtype=dtype)
            out = forward(x)
        if isinstance(out, Tensor):  # forward_features bypasses the root's own hook
            sizes[module] = (tuple(x.shape[2:]), tuple(out.shape[2:]))
    except Exception as error:
        raise ValueError(
            f"{owner}: {type(module).__name__} failed on an input of shape {(1, *shape)}: {error}"
        ) from error
    return sizes


_POINTWISE = (
    nn.modules.batchnorm._BatchNorm,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


def _window(module: nn.Module, axis: int, lo: int, hi: int, sizes: dict, exact: bool) -> Window:
    """Input range along ``axis`` of outputs ``lo..hi`` of one module, clipped to its input."""
    if module not in sizes:
        raise ValueError(f"receptive_field: {type(module).__qualname__} did not run in the forward pass")
    (in_size, out_size) = sizes[module]
    if isinstance(module, RecConvNd) or hasattr(module, "input_window"):
        # nn.Module's stubs type an unknown attribute as Tensor | Module
        input_window = cast(Callable[..., Window], module.input_window)
        lo, hi = input_window(axis, lo, hi, in_size[axis], out_size[axis], exact)
    elif isinstance(module, CONV):
        lo, hi = torch_conv_window(module, axis, lo, hi)
    elif isinstance(module, _POINTWISE) or type(module).__module__ == "torch.nn.modules.activation":
        pass
    elif isinstance(module, nn.Sequential) or hasattr(module, "spatial_path"):
        names = getattr(module, "spatial_path", None)
        children = [getattr(module, n) for n in names] if names else list(cast(nn.Sequential, module))
        for child in reversed([c for c in children if c in sizes]):
            lo, hi = _window(child, axis, lo, hi, sizes, exact)
        return lo, hi
    else:
        raise OpProtocolError(
            f"receptive_field: cannot describe {type(module).__name__}: it is no RecConv, conv, "
            f"pointwise module or nn.Sequential and has no input_window() (the op protocol in recconv.ops)"
        )
    return max(lo, 0), min(hi, in_size[axis] - 1)
