"""Rank-generic building blocks of the recursive core: depthwise convs, ConvNorm and resize ops.

This is the only module that looks up per-rank torch functions for the layers. Every op of
the core is a builder with one protocol, so built-in and user ops plug in the same way:

* a **downsample builder** is called as
  ``builder(channels, kernel_size, factor, *, bias, causal_axis, device, dtype)`` and
  returns a module mapping ``(N, C, *S)`` to ``(N, C, *ceil(S / factor))``;
* an **upsample builder** is called the same way and returns a module whose
  ``forward(x, size)`` maps a coarse ``(N, C, *s)`` tensor to ``(N, C, *size)``;
* a **conv builder** (the op of every level, or of the coarsest level only) is called as
  ``builder(channels, kernel_size, *, bias, causal_axis, device, dtype)`` and returns a
  module that keeps the shape ``(N, C, *S)``.

``kernel_size`` and ``factor`` arrive as per-axis tuples. ``causal_axis`` is ``None`` or
the index of the spatial axis along which the op must not look ahead; a builder that
cannot honour it must raise ``ValueError``. Subclassing :class:`ResizeOp` gives a user op
the protocol's constructor. A layer with a user op gives every op the input layout named
here; only the built-in ops are also run on a 1D layer lifted to ``(N, C, 1, L)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV = (F.conv1d, F.conv2d, F.conv3d)
_CONV_TRANSPOSE = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
_AVG_POOL = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
_MAX_POOL = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
_LINEAR_MODE = ("linear", "bilinear", "trilinear")
_DENSE_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Builder = Callable[..., nn.Module]


def per_rank(table: Sequence[Any], spatial_dims: int) -> Any:
    """Pick the entry of ``table`` for 1, 2 or 3 spatial dimensions."""
    if not 1 <= spatial_dims <= len(table):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    return table[spatial_dims - 1]


def dense_depthwise_conv(
    channels: int, kernel_size: tuple[int, ...], *, bias: bool = False, **factory_kwargs: Any
) -> nn.Module:
    """A plain ``nn.ConvNd`` depthwise conv with 'same' padding (the dense baseline)."""
    conv_class = per_rank(_DENSE_CONV, len(kernel_size))
    return conv_class(
        channels,
        channels,
        kernel_size,
        padding=tuple(k // 2 for k in kernel_size),
        groups=channels,
        bias=bias,
        **factory_kwargs,
    )


def as_tuple(value: int | Sequence[int], spatial_dims: int, name: str, owner: str) -> tuple[int, ...]:
    """Broadcast an int to ``spatial_dims`` axes, or check a per-axis sequence."""
    values = (value,) * spatial_dims if isinstance(value, int) else tuple(value)
    if len(values) != spatial_dims:
        raise ValueError(f"{owner}: {name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{owner}: {name} must contain ints, got {value!r}")
    return values


def resolve_builder(value: str | Builder, table: Mapping[str, Builder], name: str, owner: str) -> Builder:
    """Turn an op name into its builder (or pass a user builder through)."""
    if isinstance(value, str):
        if value in table:
            return table[value]
        close = difflib.get_close_matches(value, list(table), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{owner}: unknown {name} {value!r}; expected one of {sorted(table)} or a builder callable.{hint}"
        )
    if callable(value):
        return value
    raise TypeError(f"{owner}: {name} must be a name or a builder callable, got {type(value).__name__}")


def pad_before(x: Tensor, axis: int, amount: int) -> Tensor:
    """Zero-pad ``amount`` samples before the start of spatial ``axis`` (causal padding)."""
    spatial_dims = x.dim() - 2
    pad = [0] * (2 * (spatial_dims - axis))
    pad[-2] = amount  # F.pad lists the last axis first; our axis is the last pair here
    return F.pad(x, pad)


def lifted(weight: Tensor, lift: int) -> Tensor:
    """View a ``(C, 1, *kernel)`` weight with ``lift`` leading singleton kernel axes.

    The core may run a 1D layer on ``(N, C, 1, L)`` tensors (PyTorch's channels-last 2D kernels
    are faster on the CPU); every op then sees ``lift`` more spatial axes than its geometry names.
    """
    return weight.reshape(*weight.shape[:2], *(1,) * lift, *weight.shape[2:])


def _symmetric_padding(kernel_size: tuple[int, ...], causal_axis: int | None) -> tuple[int, ...]:
    # The causal axis is padded on one side by the op itself, so the conv adds none there.
    return tuple(0 if axis == causal_axis else k // 2 for axis, k in enumerate(kernel_size))


def _init_like_conv(weight: nn.Parameter, bias: nn.Parameter | None) -> None:
    # The same initialization as nn.ConvNd.reset_parameters, so swapping layers keeps habits.
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(weight[0].numel())
        nn.init.uniform_(bias, -bound, bound)


class DepthwiseConv(nn.Module):
    """Depthwise conv of any rank with 'same' padding, or causal padding along one axis.

    Args:
        channels: Input and output channels (one filter each).
        kernel_size: Per-axis odd kernel sizes.
        stride: Per-axis strides; the downsample factor when used as the down op.
        bias: Learn an additive bias per channel.
        causal_axis: Spatial axis padded only before its start, or ``None``.

    The output size along every axis is ``ceil(size / stride)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...] | None = None,
        *,
        bias: bool = False,
        causal_axis: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride) if stride is not None else (1,) * len(kernel_size)
        self.causal_axis = causal_axis
        self.padding = _symmetric_padding(self.kernel_size, causal_axis)
        self.weight = nn.Parameter(torch.empty((channels, 1, *self.kernel_size), device=device, dtype=dtype))
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(channels, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_like_conv(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        lift = x.dim() - self.weight.dim()
        if self.causal_axis is not None:
            x = pad_before(x, self.causal_axis + lift, self.kernel_size[self.causal_axis] - 1)
        conv = per_rank(_CONV, x.dim() - 2)
        stride, padding = (1,) * lift + self.stride, (0,) * lift + self.padding
        return conv(x, lifted(self.weight, lift), self.bias, stride, padding, 1, self.weight.shape[0])

    def extra_repr(self) -> str:
        causal = f", causal_axis={self.causal_axis}" if self.causal_axis is not None else ""
        return (
            f"{self.weight.shape[0]}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bias={self.bias is not None}{causal}"
        )


def fold_batch_norm(
    weight: Tensor, bias: Tensor | None, norm: nn.modules.batchnorm._BatchNorm
) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``norm(op(x))`` for a linear ``op`` whose output channel is axis 0 of ``weight``."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


class ConvNorm(nn.Sequential):
    """A bias-free convolution (``conv``) followed by BatchNorm (``norm``, weight 1, bias 0).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel per axis (an int or one per axis).
        stride: Stride per axis.
        padding: Padding per axis.
        groups: Convolution groups.
        spatial_dims: 1, 2 or 3.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Example:
        >>> import torch
        >>> block = ConvNorm(3, 8, 3, stride=2, padding=1).eval()
        >>> fused = block.fuse()
        >>> x = torch.randn(1, 3, 16, 16)
        >>> torch.allclose(fused(x), block(x), atol=1e-6)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        groups: int = 1,
        *,
        spatial_dims: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        conv_class = per_rank(_DENSE_CONV, spatial_dims)
        self.conv = conv_class(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups=groups,
            bias=False,
            device=device,
            dtype=dtype,
        )
        self.norm = per_rank(_BATCH_NORM, spatial_dims)(out_channels, device=device, dtype=dtype)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """One convolution with a bias that computes ``norm(conv(x))`` with the running statistics."""
        conv = self.conv
        weight, bias = fold_batch_norm(conv.weight, conv.bias, self.norm)
        fused = type(conv)(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
            device=weight.device,
            dtype=weight.dtype,
        )
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused


def depthwise_conv_norm(
    channels: int,
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
    *,
    bias: bool = False,
    causal_axis: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ConvNorm:
    """Conv and down builder: a depthwise :class:`ConvNorm` with 'same' padding (RecAttn's convs).

    As a down op its stride is the factor, so sizes become ``ceil(size / factor)`` as with
    :class:`DepthwiseConv`. ``fuse()`` turns it into one ``nn.ConvNd`` with a bias.

    Raises:
        ValueError: For ``bias=True`` (the BatchNorm's shift is the bias) or a causal axis
            (the conv is centered).
    """
    if bias:
        raise ValueError("depthwise_conv_norm: bias=True is not supported; the BatchNorm's shift is the bias")
    if causal_axis is not None:
        raise ValueError("depthwise_conv_norm: a centered ConvNorm cannot be causal")
    return ConvNorm(
        channels,
        channels,
        kernel_size,
        1 if stride is None else stride,
        tuple(k // 2 for k in kernel_size),
        groups=channels,
        spatial_dims=len(kernel_size),
        device=device,
        dtype=dtype,
    )


class ResizeOp(nn.Module):
    """Base of the built-in resize ops: keeps the geometry every builder is called with.

    Args follow the builder protocol of this module; ``channels``, ``bias``, ``device`` and
    ``dtype`` matter only to ops with parameters.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, ...],
        factor: tuple[int, ...],
        *,
        bias: bool = False,
        causal_axis: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.factor = tuple(factor)
        self.causal_axis = causal_axis

    def extra_repr(self) -> str:
        causal = f", causal_axis={self.causal_axis}" if self.causal_axis is not None else ""
        return f"kernel_size={self.kernel_size}, factor={self.factor}{causal}"


class _PoolDown(ResizeOp):
    """Parameter-free downsampling with the conv down op's geometry (window k, stride f).

    The input is edge-padded (``k // 2`` per side, or ``k - 1`` before a causal axis), so
    every window holds real samples and tiny inputs work in every rank.
    """

    pools: tuple[Callable[..., Tensor], ...]

    def forward(self, x: Tensor) -> Tensor:
        padding: list[int] = []  # F.pad order: last axis first
        for axis in reversed(range(len(self.kernel_size))):
            k = self.kernel_size[axis]
            padding += [k - 1, 0] if axis == self.causal_axis else [k // 2, k // 2]
        lift = x.dim() - 2 - len(self.kernel_size)
        padding += [0, 0] * lift  # replicate padding must name every spatial axis
        pool = per_rank(self.pools, x.dim() - 2)
        ones = (1,) * lift
        return pool(F.pad(x, padding, mode="replicate"), ones + self.kernel_size, ones + self.factor)


class AvgPoolDown(_PoolDown):
    """Average over the k-window of each stride-f step."""

    pools = _AVG_POOL


class MaxPoolDown(_PoolDown):
    """Maximum over the k-window of each stride-f step."""

    pools = _MAX_POOL


def _causal_resample(x: Tensor, axis: int, size: int, factor: int, linear: bool) -> Tensor:
    """Upsample along ``axis`` using only coarse samples that exist at each fine position.

    Coarse sample ``i`` summarizes fine positions up to ``i * factor``, so fine position
    ``t`` may read coarse ``t // factor`` and earlier: a hold (``linear=False``) or a
    linear ramp from the previous coarse sample to the current one.
    """
    dim = axis + 2
    fine = torch.arange(size, device=x.device)
    current = fine // factor
    if not linear:
        return x.index_select(dim, current)
    previous = (current - 1).clamp(min=0)
    shape = [1] * x.dim()
    shape[dim] = size
    weight = ((fine % factor + 1).to(x.dtype) / factor).reshape(shape)
    return torch.lerp(x.index_select(dim, previous), x.index_select(dim, current), weight)


class _InterpolateUp(ResizeOp):
    """Parameter-free upsampling through ``F.interpolate``, causal along one axis if asked."""

    linear: bool

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        size = list(size)
        lift = x.dim() - 2 - len(self.factor)
        axis = None if self.causal_axis is None else self.causal_axis + lift
        if axis is not None:
            # Interpolate the other axes first; same size along the causal axis is the identity.
            target = size[axis]
            size[axis] = x.shape[axis + 2]
        if list(x.shape[2:]) != size:
            mode = per_rank(_LINEAR_MODE, x.dim() - 2) if self.linear else "nearest"
            align = False if self.linear else None
            x = F.interpolate(x, size=size, mode=mode, align_corners=align)
        if axis is not None and self.factor[self.causal_axis] > 1:
            x = _causal_resample(x, axis, target, self.factor[self.causal_axis], self.linear)
        return x


class LinearUp(_InterpolateUp):
    """(Bi/tri)linear interpolation, ``align_corners=False`` as in the paper.

    Along a causal axis it becomes a lagged linear ramp between the two latest coarse samples.
    """

    linear = True


class NearestUp(_InterpolateUp):
    """Nearest-neighbour interpolation; along a causal axis, a hold of the latest coarse sample."""

    linear = False


class TransposedUp(ResizeOp):
    """Learned depthwise transposed conv (kernel ``k + f - 1``, stride ``f``), cropped to size.

    Fine position ``t`` receives coarse samples ``i`` with ``t - i * f + pad`` inside the
    kernel; the output (``n * f`` long, or ``n * f + k - 1`` when causal) is cropped at the
    end, so any target size ``ceil(size / f) == n`` works, odd sizes included.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, ...],
        factor: tuple[int, ...],
        *,
        bias: bool = False,
        causal_axis: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(channels, kernel_size, factor, causal_axis=causal_axis)
        self.padding = _symmetric_padding(self.kernel_size, causal_axis)
        upsample_kernel = tuple(k + f - 1 for k, f in zip(kernel_size, factor))
        self.weight = nn.Parameter(torch.empty((channels, 1, *upsample_kernel), device=device, dtype=dtype))
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(channels, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_like_conv(self.weight, self.bias)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        lift = x.dim() - self.weight.dim()
        conv_transpose = per_rank(_CONV_TRANSPOSE, x.dim() - 2)
        stride, padding = (1,) * lift + self.factor, (0,) * lift + self.padding
        y = conv_transpose(x, lifted(self.weight, lift), self.bias, stride, padding, 0, self.weight.shape[0])
        if any(have < want for have, want in zip(y.shape[2:], size)):
            raise ValueError(
                f"TransposedUp: cannot reach size {tuple(size)} from {tuple(x.shape[2:])} "
                f"with factor {self.factor}; the coarse input must have ceil(size / factor) samples"
            )
        return y[(..., *(slice(0, s) for s in size))]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.bias is not None}"


CONV: dict[str, Builder] = {"depthwise": DepthwiseConv}
DOWNSAMPLE: dict[str, Builder] = {"conv": DepthwiseConv, "avgpool": AvgPoolDown, "maxpool": MaxPoolDown}
UPSAMPLE: dict[str, Builder] = {"linear": LinearUp, "nearest": NearestUp, "transposed": TransposedUp}
