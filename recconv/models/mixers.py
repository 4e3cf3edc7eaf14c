"""Token mixers that reach a large receptive field the other ways, for comparing RecConv with them.

Each is a builder like :class:`~recconv.models.RecConvMixer` (called as ``mixer(channels, level=...,
stage=..., spatial_dims=..., device=..., dtype=...)``) and takes the stage's ``level`` as the reach
to match: RecConv's effective kernel ``kernel_size * factor**level`` or its receptive field. So
``RecNeXt(token_mixer=name)`` changes only the mixer: same blocks, widths, depths and levels.

Example:
    >>> import torch
    >>> from recconv.models import RecNeXt
    >>> model = RecNeXt((8,), (1,), spatial_dims=1, in_chans=1, num_classes=2, token_mixer="fft")
    >>> model(torch.randn(2, 1, 100)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._util import CONV_FN, as_tuple, per_rank
from ..core import RECCONV
from ..ops import ONE_GRAPH_CONV, Window, conv_flops_of, conv_window
from ..theory import receptive_field
from .blocks import RecConvMixer


@dataclass(frozen=True)
class _ReachMixer:
    """What the comparison mixers share: the RecConv geometry whose reach they match, RecConv's
    levels per stage, and a BatchNorm after the mixer."""

    kernel_size: int | Sequence[int] = 5
    factor: int | Sequence[int] = 2
    norm = True
    min_level = 0

    def default_levels(self, stages: int) -> tuple[int, ...]:
        return RecConvMixer().default_levels(stages)

    def geometry(self, spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``kernel_size`` and ``factor`` per axis."""
        name = type(self).__name__
        kernel = as_tuple(self.kernel_size, spatial_dims, "kernel_size", name, minimum=1)
        factor = as_tuple(self.factor, spatial_dims, "factor", name, minimum=1)
        return kernel, factor


class LargeKernelConv(nn.Module):
    """A depthwise conv with one large odd kernel and 'same' padding.

    Taps farther than ``size - 1`` from the centre only ever meet padding, so ``forward`` drops
    them for inputs smaller than the kernel: the same output for less work.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, ...],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.in_channels, self.spatial_dims = channels, len(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(channels, 1, *self.kernel_size, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.ConvNd's initialization

    def forward(self, x: Tensor) -> Tensor:
        return _large_kernel_conv(x, self.weight)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        k = self.kernel_size[axis]
        return conv_window(lo, hi, k, 1, k // 2)

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        used = [min(k, 2 * n - 1) for k, n in zip(self.kernel_size, input_size)]
        return conv_flops_of(self.weight.shape[0], 1, used, output_size)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, kernel_size={self.kernel_size}"


def _large_kernel_conv(x: Tensor, weight: Tensor) -> Tensor:
    for axis, size in enumerate(x.shape[2:]):
        k = weight.shape[2 + axis]
        if k > 2 * size - 1:
            weight = weight.narrow(2 + axis, k // 2 - (size - 1), 2 * size - 1)
    padding = tuple(k // 2 for k in weight.shape[2:])
    conv = per_rank(CONV_FN, x.dim() - 2)
    return conv(x, weight, None, 1, padding, 1, weight.shape[0])


torch.fx.wrap("_large_kernel_conv")  # the crop depends on the input's size


@dataclass(frozen=True)
class DenseMixer(_ReachMixer):
    """One depthwise kernel as wide as RecConv's effective kernel: the route of RepLKNet (Ding et
    al., 2022) and SLaK (Liu et al., 2023).

    The kernel is ``kernel_size * factor**level`` per axis, rounded up to odd and capped at
    ``max_kernel_size`` (parameters grow with its square or cube); :meth:`kernel` says whether the
    cap cut it. Simplifies: no small parallel kernel and no re-parameterisation (RepLKNet), no
    sparse or decomposed kernel (SLaK).
    """

    max_kernel_size: int = 127

    def kernel(self, level: int, spatial_dims: int) -> tuple[tuple[int, ...], bool]:
        """The kernel per axis at ``level``, and whether ``max_kernel_size`` cut it."""
        kernel, factor = self.geometry(spatial_dims)
        wanted = [k * f**level for k, f in zip(kernel, factor)]
        odd = [w + 1 - w % 2 for w in wanted]
        cap = self.max_kernel_size - 1 + self.max_kernel_size % 2
        return tuple(min(o, cap) for o in odd), any(o > cap for o in odd)

    def __call__(
        self, channels: int, *, level: int, stage: int, spatial_dims: int, **factory: Any
    ) -> nn.Module:
        return LargeKernelConv(channels, self.kernel(level, spatial_dims)[0], **factory)


class DilatedStack(nn.Sequential):
    """Depthwise convs applied one after the other (an ``nn.Sequential`` that knows its rank)."""

    @property
    def spatial_dims(self) -> int:
        return len(cast(nn.modules.conv._ConvNd, self[0]).kernel_size)


@dataclass(frozen=True)
class DilatedMixer(_ReachMixer):
    """A stack of depthwise convs whose dilation grows by ``factor`` per conv (1, f, f², ...), as
    many as reach RecConv's receptive field at the stage's level: the route of dilated ConvNeXt
    variants and, with learned spacings, DCLS (Hassani et al., 2023).

    Simplifies: fixed dilations, no activation between the convs (RecConv is linear too).
    """

    def layers(self, level: int, spatial_dims: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The (kernel, dilation) per axis of each conv of the stack at ``level``.

        An axis that has reached RecConv's receptive field gets kernel 1 in the later convs, so an
        axis that grows slowly (factor 1, as video time) does not carry the others past their target.
        """
        kernel, factor = self.geometry(spatial_dims)
        recconv = per_rank(RECCONV, spatial_dims)(1, kernel, level, factor=factor, device="meta")
        target = receptive_field(recconv)
        layers: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        reach = [1] * spatial_dims
        while any(r < t for r, t in zip(reach, target)):
            sizes = tuple(k if r < t else 1 for k, r, t in zip(kernel, reach, target))
            dilation = tuple(f ** len(layers) if k > 1 else 1 for f, k in zip(factor, sizes))
            reach = [r + (k - 1) * d for r, k, d in zip(reach, sizes, dilation)]
            layers.append((sizes, dilation))
            if len(layers) > 64:  # factor 1 on an axis with kernel 1 never grows
                raise ValueError(f"DilatedMixer: kernel {kernel} and factor {factor} cannot reach {target}")
        return layers or [(kernel, (1,) * spatial_dims)]

    def __call__(
        self, channels: int, *, level: int, stage: int, spatial_dims: int, **factory: Any
    ) -> nn.Module:
        # Called with tuples of its rank, which the per-rank stubs (tuple[int], ...) cannot say.
        conv_class: Callable[..., nn.modules.conv._ConvNd] = per_rank(ONE_GRAPH_CONV, spatial_dims)
        return DilatedStack(
            *(
                conv_class(
                    channels,
                    channels,
                    sizes,
                    padding=tuple(d * (k // 2) for k, d in zip(sizes, dilation)),
                    dilation=dilation,
                    groups=channels,
                    bias=False,
                    **factory,
                )
                for sizes, dilation in self.layers(level, spatial_dims)
            )
        )


@dataclass(frozen=True)
class WaveletMixer(RecConvMixer):
    """RecConv with the Haar wavelet's ops (``downsample="haar"``, ``upsample="haar"``): the route of
    WTConv (Finder et al., 2024) through the recursive core.

    Simplifies: only the low-pass band recurses; WTConv also convolves the three (2D) detail bands
    at every level, which the core's channel-keeping ops do not carry.
    """

    upsample: Any = "haar"
    downsample: Any = "haar"


class GlobalConv(nn.Module):
    """A depthwise convolution as wide as the input along every axis, computed with ``torch.fft``.

    Each channel's kernel is separable over the axes (as S4ND) and, along each axis, a sum of
    ``modes`` damped cosines on either side of the centre, ``c * r * exp(-r * |t|) * cos(w * t)``
    (a real diagonal state-space kernel, as S4D): its parameters do not depend on the input size,
    and every output sees the whole input.
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int,
        modes: int = 4,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.spatial_dims = channels, spatial_dims
        shape = (spatial_dims, 2, channels, modes)  # axis, side (back, ahead), channel, mode
        self.log_rate = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.frequency = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # decay lengths from 1 to 1000 samples, log-uniform, as S4D's timescales
            self.log_rate.uniform_(-math.log(1000.0), 0.0)
            self.frequency.uniform_(0.0, math.pi / 4)
            self.weight.normal_(0.0, 1.0 / math.sqrt(self.weight.shape[-1]))

    def kernels(self, sizes: Sequence[int], dtype: torch.dtype) -> list[Tensor]:
        """Per axis, the ``(C, 2 * size)`` circular kernel: the taps on inputs ``0..size-1``
        samples back, a zero, then those on inputs ``size-1..1`` samples ahead."""
        kernels = []
        for axis, size in enumerate(sizes):
            t = torch.arange(size, device=self.weight.device, dtype=dtype)
            rate = self.log_rate[axis].to(dtype).exp()[..., None]  # (side, C, modes, 1)
            taps = self.weight[axis].to(dtype)[..., None] * rate * torch.exp(-rate * t)
            taps = (taps * torch.cos(self.frequency[axis].to(dtype)[..., None] * t)).sum(2)  # (side, C, size)
            back, ahead = taps[0], taps[1, :, 1:].flip(-1)
            kernels.append(torch.cat((back, back.new_zeros(back.shape[0], 1), ahead), -1))
        return kernels

    def forward(self, x: Tensor) -> Tensor:
        sizes = x.shape[2:]
        dims = tuple(range(-len(sizes), 0))
        padded = [2 * s for s in sizes]  # room for every tap without wrapping around
        dtype = torch.promote_types(x.dtype, torch.float32)  # the FFT has no half-precision CPU kernels
        kernel = None
        for axis, k in enumerate(self.kernels(sizes, dtype)):
            shape = [k.shape[0]] + [1] * len(sizes)
            shape[1 + axis] = k.shape[1]
            kernel = k.reshape(shape) if kernel is None else kernel * k.reshape(shape)
        spectrum = torch.fft.rfftn(x.to(dtype), s=padded, dim=dims) * torch.fft.rfftn(
            kernel, s=padded, dim=dims
        )
        out = torch.fft.irfftn(spectrum, s=padded, dim=dims)
        crop = (..., *(slice(0, s) for s in sizes))
        return out[crop].to(x.dtype)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        return 0, input_size - 1  # every output sees the whole input

    def extra_repr(self) -> str:
        return f"{self.weight.shape[2]}, modes={self.weight.shape[3]}"


@dataclass(frozen=True)
class FFTMixer(_ReachMixer):
    """A global depthwise long convolution by FFT: the route of S4/S4ND and Hyena (Poli et al.,
    2023) for sequences, and of global filters (GFNet) for images.

    Simplifies: a fixed damped-cosine kernel family instead of a state-space model's complex modes or
    Hyena's MLP filter, and no gating. ``level``, ``kernel_size`` and ``factor`` (accepted so that
    a preset's options apply to every mixer) do not matter: the kernel always spans the input.
    """

    modes: int = 4

    def __call__(
        self, channels: int, *, level: int, stage: int, spatial_dims: int, **factory: Any
    ) -> nn.Module:
        return GlobalConv(channels, spatial_dims, self.modes, **factory)
