"""The ops of the recursive core and the protocol they follow: built-in and user ops alike.

Every op of a :class:`~recconv.RecConvNd` is built by a **builder**, a class or any callable
returning an ``nn.Module``. Names such as ``"linear"`` are keys of one table per role
(:data:`CONV_OPS`, :data:`DOWNSAMPLE_OPS`, :data:`UPSAMPLE_OPS`); passing the class behind a name, or a
``functools.partial`` of it, builds the same layer.

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
cannot honour it must raise ``ValueError``.

The rest of the library asks the built op about itself instead of branching on its name:

* ``op.input_window(axis, lo, hi, input_size, output_size)``: the inclusive range of input
  indices along spatial ``axis`` that outputs ``lo..hi`` read, before clipping to the input
  (``input_size``/``output_size`` are that axis's lengths). Used by
  :func:`recconv.receptive_field` and :func:`recconv.receptive_field_window`.
* ``op.flops(input_size, output_size)``: FLOPs of one call on one sample with these spatial
  sizes, as ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 per multiply-add of
  convolutions and matrix products). Used by :func:`recconv.conv_flops`.
* ``op.fresh_output`` (up ops): ``True`` if ``forward`` always returns a new tensor that
  nothing else holds, so the core may add the finer features into it in place.
* ``op.liftable``: ``True`` if ``forward`` also accepts extra leading singleton spatial axes,
  so a 1D layer may run as 2D on ``(N, C, 1, L)`` (faster on the CPU).
* ``op.recomputable``: ``True`` if ``forward`` is a pure function of its input and parameters
  (no running statistics, no randomness), so a training forward may keep only the layer's
  input and run the recursion again in backward (activation memory of one conv).

Streaming along the causal axis (:meth:`recconv.RecConvNd.step`) asks two more questions:

* ``op.init_state(input_shape, output_shape, *, device, dtype)``: the state before the first
  sample, a dict of tensors; the shapes are the op's input and output ``(N, C, *spatial)``, with
  ``0`` along the causal axis.
* ``op.step(x, state)`` (up ops: ``op.step(x, size, state)``, ``size`` the fine spatial size
  of this step) with ``x`` the op's input samples new since the last step (possibly none along
  the causal axis): returns ``(out, new_state)``, ``out`` the op's output samples that those
  inputs complete, so that concatenating them along the causal axis gives the offline output.
  The state is never changed in place, and its size does not grow with the stream. A step with
  no new input sample that owes no output sample (an up op: ``size`` 0 along the causal axis)
  changes nothing, so :meth:`~recconv.RecConvNd.step` skips such calls.

and, for a state from ``init_state(..., fixed_shape=True)`` (one traced graph for every step), two
more, called once per input sample at the finest level, whose state tensors never change shape:

* ``op.init_fixed_state(input_shape, output_shape, *, device, dtype)``: as ``init_state``.
* ``op.fixed_step(x, arrived, state)`` with ``x`` one input sample along the causal axis and
  ``arrived`` a boolean tensor, whether ``x`` is a new sample of the op's level (if not, the
  state must come back unchanged): returns the output sample whose window ends at ``x``, which
  the layer keeps only when its level's phase is due. Up ops: ``op.fixed_step(x, size, arrived,
  position, state)``, returning the fine sample at ``position`` (an integer tensor, ``0`` when
  ``x`` arrives) in the block of the latest coarse sample.

The three flags are optional (missing means ``False``: slower or more memory, never wrong). A layer with an op
that lacks a method still runs; asking a theory helper about it raises
:class:`OpProtocolError` naming the op and the method. :class:`ResizeOp` gives a user resize
op the protocol's constructor; the docs' op-protocol page builds a new op in one class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from types import EllipsisType
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ._util import (
    AVG_POOL_FN,
    BATCH_NORM,
    CHANNELS_LAST,
    CONV,
    CONV_FN,
    CONV_TRANSPOSE_FN,
    LINEAR_MODE,
    MAX_POOL_FN,
    look_up,
    per_rank,
)

Builder = Callable[..., nn.Module]
Window = tuple[int, int]


class OpProtocolError(TypeError):
    """An op does not answer a question of the op protocol (see :mod:`recconv.ops`)."""


def ask(op: nn.Module, question: str, owner: str) -> Callable[..., Any]:
    """The bound method ``question`` of ``op``, or an :class:`OpProtocolError` naming both."""
    answer = getattr(op, question, None)
    if not callable(answer):
        raise OpProtocolError(
            f"{owner}: the op {type(op).__name__} does not answer {question}(); "
            f"give it that method of the op protocol (see recconv.ops)"
        )
    return answer


def conv_window(lo: int, hi: int, kernel: int, stride: int, before: int, dilation: int = 1) -> Window:
    """Input range of outputs ``lo..hi`` of a conv that pads ``before`` samples at the start."""
    return lo * stride - before, hi * stride - before + dilation * (kernel - 1)


def conv_flops_of(
    channels_out: int, channels_in_per_group: int, kernel: Sequence[int], output_size: Sequence[int]
) -> int:
    """FLOPs of one convolution call on one sample: 2 per multiply-add."""
    return 2 * channels_out * channels_in_per_group * math.prod(kernel) * math.prod(output_size)


def resolve_builder(
    value: object, table: dict[str, Builder], role: str, owner: str
) -> tuple[str | Builder, Builder]:
    """The canonical form of an op argument and its builder.

    A name and the class behind it resolve alike (to the name), so both build the same layer.
    """
    if isinstance(value, str):
        return value, look_up(value, table, what=role, owner=owner, also="a builder callable")
    if isinstance(value, nn.Module):
        raise TypeError(
            f"{owner}: {role} must be a name from {list(table)} or a builder (a class or callable "
            f"that returns a module), got the module instance {type(value).__name__}; pass its class "
            f"or a functools.partial of it, so every level gets its own op"
        )
    if not callable(value):
        raise TypeError(f"{owner}: {role} must be a name or a builder callable, got {type(value).__name__}")
    for name, builder in table.items():
        if value is builder:
            return name, builder
    return value, value  # type: ignore[return-value]


def build_op(builder: Builder, role: str, owner: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Call an op builder and check that it returned a module."""
    op = builder(*args, **kwargs)
    if not isinstance(op, nn.Module):
        name = getattr(builder, "__name__", type(builder).__name__)
        raise TypeError(
            f"{owner}: the {role} builder {name} returned {type(op).__name__}, expected an nn.Module "
            f"(the op protocol in recconv.ops)"
        )
    return op


def dense_depthwise_conv(
    channels: int, kernel_size: tuple[int, ...], *, bias: bool = False, **factory_kwargs: Any
) -> nn.Module:
    """A plain ``nn.ConvNd`` depthwise conv with 'same' padding (the dense baseline)."""
    conv_class: Callable[..., nn.Module] = per_rank(CONV, len(kernel_size))
    return conv_class(
        channels,
        channels,
        kernel_size,
        padding=tuple(k // 2 for k in kernel_size),
        groups=channels,
        bias=bias,
        **factory_kwargs,
    )


def pad_before(x: Tensor, axis: int, amount: int) -> Tensor:
    """Zero-pad ``amount`` samples before the start of spatial ``axis`` (causal padding)."""
    spatial_dims = x.dim() - 2
    pad = [0] * (2 * (spatial_dims - axis))
    pad[-2] = amount  # F.pad lists the last axis first; our axis is the last pair here
    return F.pad(x, pad)


def streamed_axis(op: nn.Module) -> int:
    """The causal axis ``op`` streams along, or a ``ValueError`` naming the op."""
    axis = getattr(op, "causal_axis", None)
    if axis is None:
        raise ValueError(
            f"{type(op).__name__}: streaming needs a causal axis; build the op with causal_axis set"
        )
    return axis


def with_length(shape: Sequence[int], dim: int, length: int) -> tuple[int, ...]:
    """``shape`` with ``length`` at ``dim``."""
    return (*shape[:dim], length, *shape[dim + 1 :])


def stream_window(tail: Tensor, x: Tensor, axis: int, kernel: int, stride: int) -> tuple[Tensor, int, Tensor]:
    """Join the samples a causal strided window op keeps with the new ones ``x``.

    Output ``j`` reads inputs ``j * stride - (kernel - 1) .. j * stride``. ``tail`` starts
    ``stride - 1`` samples before the first window of the next output (so it is never shorter
    than ``kernel - 1``, and an output is emitted as soon as its last input arrives). Returns the
    unpadded input of the next ``count`` outputs (valid only if ``count > 0``), ``count``, and the
    next tail: at most ``kernel + stride - 2`` samples.
    """
    dim = axis + 2
    joined = torch.cat((tail, x), dim)
    length = joined.shape[dim]
    count = max(0, (length - stride + 1 - kernel) // stride + 1)
    used = count * stride
    # A step is a few small ops, each costing a call: skip the views that would change nothing.
    window = joined.narrow(dim, stride - 1, length - stride + 1) if count and stride > 1 else joined
    return window, count, joined.narrow(dim, used, length - used)


def shift_in(kept: Tensor, x: Tensor, arrived: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """A fixed-length shift register along ``dim`` (see ``fixed_step`` in the op protocol). Returns
    ``kept`` followed by the one sample ``x``, and the next ``kept``: the last ``kept.shape[dim]``
    samples of that if ``x`` ``arrived`` (a boolean tensor), else ``kept`` unchanged. Shapes never
    change, so one traced graph serves every step."""
    joined = torch.cat((kept, x), dim)
    return joined, torch.where(arrived, joined.narrow(dim, 1, kept.shape[dim]), kept)


def window_tail(
    shape: Sequence[int],
    axis: int,
    kernel: int,
    stride: int,
    fixed_shape: bool,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The zeros a causal window op (``kernel`` and ``stride`` along spatial ``axis``) keeps before the
    stream, of ``shape`` but along the axis: ``kernel + stride - 2`` samples for :func:`stream_window`
    (a default state), the last ``kernel - 1`` for :func:`shift_in` (a fixed-shape state)."""
    kept = kernel - 1 if fixed_shape else kernel + stride - 2
    return torch.zeros(with_length(shape, axis + 2, kept), device=device, dtype=dtype)


# oneDNN's depthwise conv costs about 0.1 ms a call on the CPU, however small: a streaming step's
# window of a few samples is cheaper as a sum over its unfolded taps, up to about this many products.
# Not in an exported graph (torch.export, and the ONNX export built on it): there the unfolding takes
# several operators and the conv one, which runtimes implement well. torch < 2.6 cannot tell.
_DIRECT_CONV_WORK = 1 << 15
# Under torch.compile the taps become loops of the step's own fused kernel, with no cost per call:
# oneDNN's conv is the faster only for 2D and 3D windows of more products than this. Inductor runs a
# 1D conv as oneDNN's 2D one with layout copies around it, slower than the taps at every size tried,
# so compiled 1D steps always sum taps.
_COMPILED_DIRECT_CONV_WORK = {1: math.inf, 2: 1 << 21, 3: 1 << 21}
_exporting: Callable[[], bool] = getattr(torch.compiler, "is_exporting", lambda: False)
_KERNEL_AXES = {dims: tuple(range(-dims, 0)) for dims in (1, 2, 3)}  # the unfolded taps, last


def stream_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: Sequence[int], padding: Sequence[int]
) -> Tensor:
    """The depthwise ``F.convNd(x, weight, bias, stride, padding, groups=channels)``, fast on the
    small windows of a streaming step."""
    dims, kernel = x.dim() - 2, weight.shape[2:]
    if not any(padding) and x.shape[2:] == kernel:  # one window (a single sample's, in 1D): its weighted sum
        out = (x * weight.squeeze(1)).sum(_KERNEL_AXES[dims], keepdim=True)
    elif not x.is_cpu or _exporting() or x.numel() * math.prod(kernel) > _direct_conv_work(dims):
        return per_rank(CONV_FN, dims)(x, weight, bias, stride, padding, 1, weight.shape[0])
    else:
        if any(padding):
            x = pad_both_sides(x, padding)
        for axis in range(dims):
            x = x.unfold(axis + 2, kernel[axis], stride[axis])  # (N, C, *outputs, *kernel)
        # The weight (C, 1, *kernel) broadcasts as (C, *(1,) * dims, *kernel); in 1D it already does.
        taps = weight if dims == 1 else weight.view(weight.shape[0], *(1,) * dims, *kernel)
        out = (x * taps).sum(_KERNEL_AXES[dims])
    return out if bias is None else out + bias.view(-1, *(1,) * dims)


def _direct_conv_work(dims: int) -> float:
    """The most products :func:`stream_conv` sums over unfolded taps before it calls the conv."""
    return _COMPILED_DIRECT_CONV_WORK[dims] if torch.compiler.is_compiling() else _DIRECT_CONV_WORK


def no_samples(x: Tensor, axis: int, stride: Sequence[int]) -> Tensor:
    """The empty output of a 'same'-padded strided op along ``axis`` when no window is complete."""
    size = [-(-s // f) for s, f in zip(x.shape[2:], stride)]
    size[axis] = 0
    return x.new_zeros(x.shape[0], x.shape[1], *size)


def pad_after(x: Tensor, axis: int, amount: int) -> Tensor:
    """Zero-pad ``amount`` samples after the end of spatial ``axis``."""
    pad = [0] * (2 * (x.dim() - 2 - axis))
    pad[-1] = amount
    return F.pad(x, pad)


def pad_both_sides(x: Tensor, padding: Sequence[int]) -> Tensor:
    """Zero-pad ``padding[i]`` samples before and after spatial axis ``i``, as a conv's ``padding`` does."""
    return F.pad(x, [p for p in reversed(padding) for _ in range(2)])


def lifted(weight: Tensor, lift: int) -> Tensor:
    """View a ``(C, 1, *kernel)`` weight with ``lift`` leading singleton kernel axes.

    The core may run a 1D layer on ``(N, C, 1, L)`` tensors (PyTorch's channels-last 2D kernels
    are faster on the CPU); every op then sees ``lift`` more spatial axes than its geometry names.
    """
    return weight.reshape(*weight.shape[:2], *(1,) * lift, *weight.shape[2:])


def torch_conv_window(conv: nn.modules.conv._ConvNd, axis: int, lo: int, hi: int) -> Window:
    """:func:`conv_window` of an ``nn.ConvNd`` (integer padding) along spatial ``axis``."""
    padding = conv.padding
    if isinstance(padding, str):  # "same" pads (k - 1) // 2 before for odd or even k; "valid" none
        before = (conv.dilation[axis] * (conv.kernel_size[axis] - 1)) // 2 if padding == "same" else 0
    else:
        before = padding[axis]
    return conv_window(lo, hi, conv.kernel_size[axis], conv.stride[axis], before, conv.dilation[axis])


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

    liftable = True
    recomputable = True

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
        self.bias: nn.Parameter | None
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(channels, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_like_conv(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return _depthwise_conv(x, self.weight, self.bias, self.stride, self.padding, self.causal_axis)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        k = self.kernel_size[axis]
        before = k - 1 if axis == self.causal_axis else self.padding[axis]
        return conv_window(lo, hi, k, self.stride[axis], before)

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        return conv_flops_of(self.weight.shape[0], 1, self.kernel_size, output_size)

    def init_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The zero padding before the stream: ``kernel + stride - 2`` samples along the causal axis."""
        axis = streamed_axis(self)
        kernel, stride = self.kernel_size[axis], self.stride[axis]
        return {"tail": window_tail(input_shape, axis, kernel, stride, False, device=device, dtype=dtype)}

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The outputs that the new samples ``x`` complete, and the next state."""
        axis = streamed_axis(self)
        window, count, tail = stream_window(state["tail"], x, axis, self.kernel_size[axis], self.stride[axis])
        if not count:
            return no_samples(x, axis, self.stride), {"tail": tail}
        # self.padding is 0 along the causal axis
        out = stream_conv(window, self.weight, self.bias, self.stride, self.padding)
        return out, {"tail": tail}

    def init_fixed_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The last ``kernel - 1`` input samples along the causal axis, zeros before the stream."""
        axis = streamed_axis(self)
        kernel, stride = self.kernel_size[axis], self.stride[axis]
        return {"tail": window_tail(input_shape, axis, kernel, stride, True, device=device, dtype=dtype)}

    def fixed_step(
        self, x: Tensor, arrived: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The output of the window that ends at the one input sample ``x``."""
        window, tail = shift_in(state["tail"], x, arrived, streamed_axis(self) + 2)
        return stream_conv(window, self.weight, self.bias, self.stride, self.padding), {"tail": tail}

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
    # The library's BatchNorms keep running statistics (track_running_stats=True): never None.
    running_mean, running_var = cast(Tensor, norm.running_mean), cast(Tensor, norm.running_var)
    scale = norm.weight / torch.sqrt(running_var + norm.eps)
    shift = norm.bias - running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


class _OneGraphForAllSizes(nn.modules.conv._ConvNd):
    """An ``nn.ConvNd`` whose compiled training graphs call ``recconv::conv_any_size``, so that a model
    compiled for dynamic sizes compiles once for them all. Elsewhere it is its ``nn.ConvNd``."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        plain = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if plain and _compiles_for_training(input, weight):
            geometry = (self.stride, self.padding, self.dilation, self.groups, False)
            return torch.ops.recconv.conv_any_size(input, weight, bias, *geometry)
        return super()._conv_forward(input, weight, bias)  # type: ignore[misc]


class Conv1d(_OneGraphForAllSizes, nn.Conv1d):
    """``nn.Conv1d`` (same arguments and state) that compiles to one graph for dynamic sizes in training."""


class Conv2d(_OneGraphForAllSizes, nn.Conv2d):
    """``nn.Conv2d`` (same arguments and state) that compiles to one graph for dynamic sizes in training."""


class Conv3d(_OneGraphForAllSizes, nn.Conv3d):
    """``nn.Conv3d`` (same arguments and state) that compiles to one graph for dynamic sizes in training."""


ONE_GRAPH_CONV = (Conv1d, Conv2d, Conv3d)


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
        conv_class: Callable[..., nn.modules.conv._ConvNd] = per_rank(ONE_GRAPH_CONV, spatial_dims)
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
        self.norm = per_rank(BATCH_NORM, spatial_dims)(out_channels, device=device, dtype=dtype)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        return torch_conv_window(self.conv, axis, lo, hi)

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        conv = self.conv
        return conv_flops_of(
            conv.out_channels, conv.in_channels // conv.groups, conv.kernel_size, output_size
        )

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """One convolution with a bias that computes ``norm(conv(x))`` with the running statistics."""
        conv = self.conv
        weight, bias = fold_batch_norm(conv.weight, conv.bias, self.norm)
        # type(conv) is a per-rank nn.ConvNd, whose constructor differs from _ConvNd's in the stubs
        conv_class = cast(Callable[..., nn.modules.conv._ConvNd], type(conv))
        fused = conv_class(
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
        cast(Tensor, fused.bias).copy_(bias)  # built with bias=True
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
    ``dtype`` matter only to ops with parameters. Subclasses answer the rest of the op protocol.
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

    pool: str  # a key of _POOLS
    liftable = True
    recomputable = True

    def forward(self, x: Tensor) -> Tensor:
        return _pool_down(x, self.pool, self.kernel_size, self.factor, self.causal_axis)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        k = self.kernel_size[axis]
        return conv_window(lo, hi, k, self.factor[axis], k - 1 if axis == self.causal_axis else k // 2)

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        return 0  # FlopCounterMode counts no pooling

    def init_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """``kernel + factor - 2`` samples before the stream, edge-padded by the first one when it comes."""
        return self._state(input_shape, False, device, dtype)

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The outputs that the new samples ``x`` complete, and the next state."""
        axis = streamed_axis(self)
        if not x.shape[axis + 2]:
            return no_samples(x, axis, self.factor), state
        first = x.narrow(axis + 2, 0, 1)
        tail = torch.where(state["started"], state["tail"], first.expand_as(state["tail"]))
        window, count, tail = stream_window(tail, x, axis, self.kernel_size[axis], self.factor[axis])
        new_state = {"tail": tail, "started": torch.ones_like(state["started"])}
        if not count:
            return no_samples(x, axis, self.factor), new_state
        return self._pool_window(window, axis), new_state

    def init_fixed_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The last ``kernel - 1`` input samples, the first one repeated before it comes."""
        return self._state(input_shape, True, device, dtype)

    def _state(
        self,
        input_shape: Sequence[int],
        fixed_shape: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> dict[str, Tensor]:
        """Either state: the window's tail (:func:`window_tail`) and whether the first sample came."""
        axis = streamed_axis(self)
        kernel, stride = self.kernel_size[axis], self.factor[axis]
        return {
            "tail": window_tail(input_shape, axis, kernel, stride, fixed_shape, device=device, dtype=dtype),
            "started": torch.zeros((), dtype=torch.bool, device=device),
        }

    def fixed_step(
        self, x: Tensor, arrived: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The output of the window that ends at the one input sample ``x``."""
        axis = streamed_axis(self)
        tail = torch.where(state["started"], state["tail"], x.expand_as(state["tail"]))
        window, tail = shift_in(tail, x, arrived, axis + 2)
        return self._pool_window(window, axis), {"tail": tail, "started": state["started"] | arrived}

    def _pool_window(self, window: Tensor, axis: int) -> Tensor:
        """Pool ``window`` (unpadded along the causal axis), edge-padding the other axes as ``forward`` does."""
        padding: list[int] = []
        for other in reversed(range(len(self.kernel_size))):
            k = self.kernel_size[other]
            padding += [0, 0] if other == axis else [k // 2, k // 2]
        pool = per_rank(_POOLS[self.pool], window.dim() - 2)
        return pool(F.pad(window, padding, mode="replicate"), self.kernel_size, self.factor)


class AvgPoolDown(_PoolDown):
    """Average over the k-window of each stride-f step."""

    pool = "avg"


class MaxPoolDown(_PoolDown):
    """Maximum over the k-window of each stride-f step."""

    pool = "max"


def _causal_resample(x: Tensor, axis: int, size: int, factor: int, linear: bool) -> Tensor:
    """Upsample along ``axis`` using only coarse samples that exist at each fine position.

    Coarse sample ``i`` summarizes fine positions up to ``i * factor``, so fine position
    ``t`` may read coarse ``t // factor`` and earlier: a hold (``linear=False``) or a
    linear ramp from the previous coarse sample to the current one.
    """
    dim = axis + 2
    # Whole blocks cut to ``size``: in eager mode 2-5x faster than gathering along the last axis
    # (index_select copies sample by sample there), and compiled, their backward sums blocks where the
    # gather's scattered. Compiled inference ramps by gathering, which Inductor fuses; so do graphs of
    # symbolic sizes (torch.export, dynamic shapes), where whether the cut keeps every block is not
    # known, and asking would add a guard, a graph per answer (benchmarks/compare_commit.py e7c5169
    # --causal [--compile]). A hold gathered after a nearest resize of another axis fails Inductor's C++
    # code generation (torch 2.14: sympy cannot simplify the fused index), so static sizes hold in blocks.
    compiling = torch.compiler.is_compiling()
    static = _known_equal_or_not(size, x.shape[dim] * factor)
    if not compiling or (static and (_will_backward(x) or not linear)):
        blocks = _ramp(x, x.narrow(dim, 0, 1), dim, factor) if linear else _interleave([x] * factor, dim)
        if not compiling and blocks.shape[dim] == size:
            return blocks  # not a view, so that the core's sum can go into it in place (see core._sum)
        return blocks.narrow(dim, 0, size)
    fine = torch.arange(size, device=x.device)
    current = fine // factor
    if not linear:
        return x.index_select(dim, current)
    previous = (current - 1).clamp(min=0)
    shape = [1] * x.dim()
    shape[dim] = size
    weight = ((fine % factor + 1).to(x.dtype) / factor).reshape(shape)
    return torch.lerp(x.index_select(dim, previous), x.index_select(dim, current), weight)


def _known_equal_or_not(a: int, b: int) -> bool:
    """Whether ``a == b`` is decided without a guard: always for ints, for symbolic sizes only if provable."""
    return statically_known_true(a == b) or statically_known_true(a != b)


def _runs_in_bfloat16(x: Tensor) -> bool:
    """Whether an op on ``x`` computes in bfloat16: ``x`` is, or CPU autocast makes it so."""
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16 or (autocast and x.is_cpu)


def _will_backward(x: Tensor) -> bool:
    """Whether autograd records what is done with ``x``."""
    return torch.is_grad_enabled() and x.requires_grad


def _ramp(x: Tensor, before: Tensor, dim: int, factor: int) -> Tensor:
    """``factor`` fine samples per sample of ``x`` along ``dim``: a linear ramp from the sample before it
    (``before`` for the first) that reaches it at the block's last fine sample."""
    count = x.shape[dim]
    previous = before if count == 1 else torch.cat((before, x.narrow(dim, 0, count - 1)), dim)
    # One lerp per position in the block, stacked: its backward needs no sum over a broadcast weight,
    # which took about a quarter of an eager causal layer's training step, and a step makes no weights.
    steps = [torch.lerp(previous, x, (position + 1) / factor) for position in range(factor)]
    return _interleave(steps, dim)


def _interleave(parts: list[Tensor], dim: int) -> Tensor:
    """Blocks of ``len(parts)`` samples along ``dim``, sample ``p`` of each from ``parts[p]``, in the
    layout of ``parts``. A plain stack (or ``repeat_interleave``) returns them contiguous, and the convs
    after a causal up op then ran off oneDNN's faster channels-last path (docs/performance.md)."""
    if _is_channels_last(parts[0]):  # stacked as (N, *spatial, C), where channels-last is contiguous
        moved = [part.movedim(1, -1) for part in parts]
        return torch.stack(moved, dim).flatten(dim - 1, dim).movedim(-1, 1)
    return torch.stack(parts, dim + 1).flatten(dim, dim + 1)


class HaarDown(ResizeOp):
    """Low-pass band of the Haar wavelet transform: each block of ``factor`` samples averaged and
    scaled by ``sqrt(prod(factor))`` (orthonormal); a partial last block is padded with zeros
    (PyWavelets' ``"zero"`` mode).

    WTConv's down op without its detail bands (the core's ops keep the channel count). It reads
    each block's future, so it refuses a causal axis.
    """

    liftable = True
    recomputable = True

    def __init__(
        self, channels: int, kernel_size: tuple[int, ...], factor: tuple[int, ...], **options: Any
    ) -> None:
        super().__init__(channels, kernel_size, factor, **options)
        if self.causal_axis is not None:
            raise ValueError("HaarDown: a Haar block reads its own future samples, so it cannot be causal")

    def forward(self, x: Tensor) -> Tensor:
        return _haar_down(x, self.factor)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        f = self.factor[axis]
        return lo * f, hi * f + f - 1

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        return 0  # FlopCounterMode counts no pooling


class _InterpolateUp(ResizeOp):
    """Parameter-free upsampling through ``F.interpolate``, causal along one axis if asked."""

    linear: bool
    liftable = True
    recomputable = True
    fresh_output = True

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return _interpolate_up(x, size, self.factor, self.causal_axis, self.linear)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        n, m, f = input_size, output_size, self.factor[axis]
        if axis == self.causal_axis and f > 1:
            start = lo // f
            if self.linear and lo % f != f - 1:
                start -= 1  # the lagged ramp also reads the previous coarse sample
            return start, hi // f
        if n == m:  # same size: the resize is skipped, an identity
            return lo, hi
        scale = Fraction(n, m)
        if not self.linear:
            start, stop = math.floor(lo * scale), math.floor(hi * scale)
        else:  # align_corners=False: source (q + 1/2) * n / m - 1/2, clamped at 0
            first = max(Fraction(0), (lo + Fraction(1, 2)) * scale - Fraction(1, 2))
            last = max(Fraction(0), (hi + Fraction(1, 2)) * scale - Fraction(1, 2))
            start = math.floor(first)
            stop = math.floor(last) + (0 if last.denominator == 1 else 1)
        if not exact and scale.denominator & (scale.denominator - 1):
            start, stop = start - 1, stop + 1  # the float scale is inexact: rounding may shift an index
        return start, stop

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        return 0  # FlopCounterMode counts no interpolation

    def init_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """Fine samples computed ahead (at most ``factor - 1``); the linear ramp also keeps
        the latest coarse sample (resized along the other axes) and whether one came yet."""
        dim = streamed_axis(self) + 2
        state = {"pending": torch.zeros(output_shape, device=device, dtype=dtype)}
        if self.linear:
            state["last"] = torch.zeros(with_length(output_shape, dim, 1), device=device, dtype=dtype)
            state["started"] = torch.zeros((), dtype=torch.bool, device=device)
        return state

    def step(
        self, x: Tensor, size: Sequence[int], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``size[causal axis]`` fine samples: those due, then the full blocks of the new coarse ``x``."""
        axis = streamed_axis(self)
        dim, factor, count = axis + 2, self.factor[axis], x.shape[axis + 2]
        if factor == 1:
            return _interpolate_up(x, size, self.factor, self.causal_axis, self.linear), state
        new_state = dict(state)
        fine = state["pending"]
        if count:
            x = self._resize_others(x, size, axis)
            if self.linear:  # the lagged ramp of _causal_resample, one block per coarse sample
                first, latest = (x, x) if count == 1 else (x.narrow(dim, 0, 1), x.narrow(dim, count - 1, 1))
                blocks = _ramp(x, torch.where(state["started"], state["last"], first), dim, factor)
                new_state["last"] = latest
                new_state["started"] = torch.ones_like(state["started"])
            else:
                blocks = _interleave([x] * factor, dim)
            fine = torch.cat((fine, blocks), dim) if fine.shape[dim] else blocks
        length = size[axis]
        new_state["pending"] = fine.narrow(dim, length, fine.shape[dim] - length)
        return fine.narrow(dim, 0, length), new_state

    def init_fixed_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The latest coarse sample, resized along the other axes; the linear ramp also keeps the one
        before it (the first one itself at the start) and whether one came yet."""
        axis = streamed_axis(self)
        if self.factor[axis] == 1:
            return {}
        sample = with_length(output_shape, axis + 2, 1)
        state = {"current": torch.zeros(sample, device=device, dtype=dtype)}
        if self.linear:
            state["previous"] = torch.zeros(sample, device=device, dtype=dtype)
            state["started"] = torch.zeros((), dtype=torch.bool, device=device)
        return state

    def fixed_step(
        self, x: Tensor, size: Sequence[int], arrived: Tensor, position: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The fine sample at ``position`` in the block of the latest coarse sample (``x`` if it ``arrived``)."""
        axis = streamed_axis(self)
        factor = self.factor[axis]
        if factor == 1:
            return _interpolate_up(x, size, self.factor, self.causal_axis, self.linear), state
        x = self._resize_others(x, size, axis)
        current = torch.where(arrived, x, state["current"])
        if not self.linear:
            return current, {"current": current}
        previous = torch.where(arrived, torch.where(state["started"], state["current"], x), state["previous"])
        out = torch.lerp(previous, current, (position + 1).to(x.dtype) / factor)  # as _ramp's block
        return out, {"current": current, "previous": previous, "started": state["started"] | arrived}

    def _resize_others(self, x: Tensor, size: Sequence[int], axis: int) -> Tensor:
        """``x`` resized to ``size`` along the axes other than the causal one."""
        other = with_length(size, axis, x.shape[axis + 2])
        if tuple(x.shape[2:]) == other:
            return x
        mode = per_rank(LINEAR_MODE, x.dim() - 2) if self.linear else "nearest"
        return F.interpolate(x, size=other, mode=mode, align_corners=False if self.linear else None)


class LinearUp(_InterpolateUp):
    """(Bi/tri)linear interpolation, ``align_corners=False`` as in the paper.

    Along a causal axis it becomes a lagged linear ramp between the two latest coarse samples.
    """

    linear = True


class NearestUp(_InterpolateUp):
    """Nearest-neighbour interpolation; along a causal axis, a hold of the latest coarse sample."""

    linear = False


class HaarUp(NearestUp):
    """Inverse Haar transform of the low-pass band alone: each coarse sample repeated over its
    block and divided by ``sqrt(prod(factor))``, the synthesis that pairs with :class:`HaarDown`."""

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return super().forward(x, size) / math.prod(self.factor) ** 0.5

    def step(
        self, x: Tensor, size: Sequence[int], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out, state = super().step(x, size, state)
        return out / math.prod(self.factor) ** 0.5, state

    def fixed_step(
        self, x: Tensor, size: Sequence[int], arrived: Tensor, position: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out, state = super().fixed_step(x, size, arrived, position, state)
        return out / math.prod(self.factor) ** 0.5, state


class TransposedUp(ResizeOp):
    """Learned depthwise transposed conv (kernel ``k + f - 1``, stride ``f``), cropped to size.

    Fine position ``t`` receives coarse samples ``i`` with ``t - i * f + pad`` inside the
    kernel; the output (``n * f`` long, or ``n * f + k - 1`` when causal) is cropped at the
    end, so any target size ``ceil(size / f) == n`` works, odd sizes included.
    """

    liftable = True
    recomputable = True
    fresh_output = True  # a crop of the conv's new output

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
        self.bias: nn.Parameter | None
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(channels, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_like_conv(self.weight, self.bias)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return _transposed_up(x, size, self.weight, self.bias, self.factor, self.padding)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> Window:
        f = self.factor[axis]
        width = self.weight.shape[2 + axis]
        pad = 0 if axis == self.causal_axis else self.padding[axis]
        return -(-(lo + pad - width + 1) // f), (hi + pad) // f

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        return conv_flops_of(self.weight.shape[0], 1, self.weight.shape[2:], input_size)

    def init_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """Partial sums of fine samples not yet due (overlap-add): ``kernel - 1`` plus those
        computed ahead, at most ``kernel + factor - 2``."""
        axis = streamed_axis(self)
        kept = self.kernel_size[axis] - 1
        return {"overlap": torch.zeros(with_length(output_shape, axis + 2, kept), device=device, dtype=dtype)}

    def step(
        self, x: Tensor, size: Sequence[int], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``size[causal axis]`` fine samples, adding the new coarse ``x``'s contributions to the overlap."""
        axis = streamed_axis(self)
        dim = axis + 2
        overlap = state["overlap"]
        if x.shape[dim]:
            conv_transpose = per_rank(CONV_TRANSPOSE_FN, x.dim() - 2)
            spread = conv_transpose(x, self.weight, None, self.factor, self.padding, 0, self.weight.shape[0])
            spread = _crop_other_axes(spread, size, axis)
            # The first new coarse sample starts ``due`` fine samples after the overlap does.
            due = overlap.shape[dim] - (self.kernel_size[axis] - 1)
            spread = pad_before(spread, axis, due)
            overlap = spread + pad_after(overlap, axis, spread.shape[dim] - overlap.shape[dim])
        length = size[axis]
        out = overlap.narrow(dim, 0, length)
        if self.bias is not None:  # once per fine sample, not per overlapping contribution
            out = out + self.bias.reshape(-1, *(1,) * (x.dim() - 2))
        return out, {"overlap": overlap.narrow(dim, length, overlap.shape[dim] - length)}

    def init_fixed_state(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]:
        """The coarse samples that reach the latest one's block: the last ``ceil((kernel + factor - 1)
        / factor)``, zeros before the stream."""
        axis = streamed_axis(self)
        kept = -(-self.weight.shape[2 + axis] // self.factor[axis])
        return {"coarse": torch.zeros(with_length(input_shape, axis + 2, kept), device=device, dtype=dtype)}

    def fixed_step(
        self, x: Tensor, size: Sequence[int], arrived: Tensor, position: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The fine sample at ``position`` in the block of the latest coarse sample (``x`` if it ``arrived``)."""
        axis = streamed_axis(self)
        dim, factor = axis + 2, self.factor[axis]
        _, coarse = shift_in(state["coarse"], x, arrived, dim)
        conv_transpose = per_rank(CONV_TRANSPOSE_FN, x.dim() - 2)
        spread = conv_transpose(
            coarse, self.weight, self.bias, self.factor, self.padding, 0, self.weight.shape[0]
        )
        # The latest coarse sample's block starts ``factor`` fine samples per earlier coarse sample in.
        first = (coarse.shape[dim] - 1) * factor
        out = _crop_other_axes(spread, size, axis).index_select(dim, (first + position).reshape(1))
        return out, {"coarse": coarse}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.bias is not None}"


def _crop_other_axes(x: Tensor, size: Sequence[int], axis: int) -> Tensor:
    """``x`` cut to ``size`` along every spatial axis but the causal ``axis``."""
    crop: tuple[EllipsisType | slice, ...] = (
        ...,
        *(slice(None) if a == axis else slice(0, s) for a, s in enumerate(size)),
    )
    return x[crop]


# The ops' shape arithmetic lives in these functions, which torch.fx records as single calls
# (torch.fx.wrap), so symbolic tracing and torchvision's feature extraction see through every
# layer without special cases. A 1D layer may run them lifted to (N, C, 1, L) (see the core).


_POOLS: dict[str, tuple[Callable[..., Tensor], ...]] = {"avg": AVG_POOL_FN, "max": MAX_POOL_FN}


def _depthwise_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    causal_axis: int | None,
) -> Tensor:
    lift = x.dim() - weight.dim()
    if causal_axis is not None:
        x = pad_before(x, causal_axis + lift, weight.shape[2 + causal_axis] - 1)
    conv = per_rank(CONV_FN, x.dim() - 2)
    stride, padding = (1,) * lift + stride, (0,) * lift + padding
    if x.dim() == 5 and x.is_cpu and _will_backward(weight) and _runs_in_bfloat16(x) and _is_channels_last(x):
        # oneDNN's bfloat16 depthwise conv3d gets the weight's gradient wrong for some small
        # channels-last inputs on AVX-512 CPUs, such as a coarse level's (4, 1, 1) map (off by about its
        # own size: benchmarks/onednn_bf16_conv3d.py); contiguous input is right.
        x = x.contiguous()
    if torch.compiler.is_compiling():  # one question per eager conv; the rest only while tracing
        geometry = (stride, padding, (1,) * len(stride), weight.shape[0], False)
        if _conv_needs_op(x, weight):
            return _with_bias(_conv(x, lifted(weight, lift), *geometry), bias)
        if not lift:  # lifted 1D layers ran slower with it in a trial
            weight = _channels_last_hint(weight, x)
        if _compiles_for_training(x, weight):
            return torch.ops.recconv.conv_any_size(x, lifted(weight, lift), bias, *geometry)
    return conv(x, lifted(weight, lift), bias, stride, padding, 1, weight.shape[0])


def convs_run_as_op(x: Tensor) -> bool:
    """Whether depthwise convs (and transposed convs) on ``x`` run as
    ``recconv::conv`` where a backward will run: under ``torch.compile`` on the CPU, in
    float32 (oneDNN's, whose output keeps the input's layout). See :func:`_conv`."""
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    return compiling and x.is_cpu and x.dtype == torch.float32 and not _runs_in_bfloat16(x)


def _conv_needs_op(x: Tensor, weight: Tensor) -> bool:
    return (_will_backward(x) or _will_backward(weight)) and convs_run_as_op(x)


def _is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also contiguous)."""
    layout = CHANNELS_LAST.get(x.dim())
    return layout is not None and x.is_contiguous(memory_format=layout) and not x.is_contiguous()


def _channels_last_hint(weight: Tensor, x: Tensor) -> Tensor:
    """A depthwise ``weight`` with channels-last strides when ``x`` is channels-last: the same memory
    (its input-channel axis has size 1), but Inductor, which lays out a 3D conv and every conv's
    backward after the weight, then reads it as channels-last rather than contiguous and keeps the
    convs on oneDNN's fast channels-last path (see docs/performance.md)."""
    if not _is_channels_last(x):
        return weight
    # Only the size-1 axis's stride changes, so any weight layout addresses the same elements.
    return weight.as_strided(weight.shape, (weight.stride(0), 1, *weight.stride()[2:]))


def _pool_down(
    x: Tensor,
    kind: str,
    kernel_size: tuple[int, ...],
    factor: tuple[int, ...],
    causal_axis: int | None,
) -> Tensor:
    padding: list[int] = []  # F.pad order: last axis first
    for axis in reversed(range(len(kernel_size))):
        k = kernel_size[axis]
        padding += [k - 1, 0] if axis == causal_axis else [k // 2, k // 2]
    lift = x.dim() - 2 - len(kernel_size)
    padding += [0, 0] * lift  # replicate padding must name every spatial axis
    ones = (1,) * lift
    return _padded_pool(x, kind, ones + kernel_size, ones + factor, padding, "replicate", bool(lift))


def _haar_down(x: Tensor, factor: tuple[int, ...]) -> Tensor:
    padding: list[int] = []  # F.pad order: last axis first
    for size, f in zip(reversed(x.shape[2:]), reversed(factor)):
        # Up to a whole block; not -size % f, which Inductor fails on for a symbolic size (torch 2.14).
        padding += [0, -(-size // f) * f - size]
    lift = x.dim() - 2 - len(factor)
    ones = (1,) * lift
    pooled = _padded_pool(x, "avg", ones + factor, ones + factor, padding, "constant", bool(lift))
    return pooled * math.prod(factor) ** 0.5


def _padded_pool(
    x: Tensor,
    kind: str,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: list[int],
    mode: str,
    lifted: bool,
) -> Tensor:
    """``F.pad(x, padding, mode)`` pooled. Under ``torch.compile`` on the CPU, where a backward will run,
    as ``recconv::padded_pool`` (see :func:`_pool_op`) in 3D, and in 2D for overlapping windows. Inductor's
    own pool was the faster in 1D layers, which run lifted to 2D, and for the Haar block's windows in 2D
    (``benchmarks/compare_commit.py d5f9b75 --compile --downsample avgpool`` or ``haar``: the op took
    1.16-1.28x and 1.12x its time); there a replication pad is built from the edge samples, whose
    backward Inductor gets right."""
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting() and _will_backward(x) and x.is_cpu:
        if not lifted and (x.dim() == 5 or (x.dim() == 4 and list(kernel) != list(stride))):
            return _pool_op(x, kind, kernel, stride, padding, mode)
        if mode == "replicate":
            x, padding, mode = _pad_edges(x, padding), [0] * len(padding), "constant"
    return _pad_and_pool(x, kind, kernel, stride, padding, mode)


def _pad_edges(x: Tensor, padding: list[int]) -> Tensor:
    """``F.pad(x, padding, mode="replicate")`` from the edge samples, in ``x``'s layout."""
    padded = x
    for i, (before, after) in enumerate(zip(padding[::2], padding[1::2])):
        dim, size = x.dim() - 1 - i, padded.shape[x.dim() - 1 - i]
        first = padded.narrow(dim, 0, 1).expand(with_length(padded.shape, dim, before))
        last = padded.narrow(dim, size - 1, 1).expand(with_length(padded.shape, dim, after))
        padded = torch.cat([first, padded, last], dim)
    return _in_layout_of(padded, x)  # the expanded edges would make cat's output contiguous


def _pad_and_pool(
    x: Tensor, kind: str, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], mode: str
) -> Tensor:
    return per_rank(_POOLS[kind], x.dim() - 2)(F.pad(x, list(padding), mode=mode), list(kernel), list(stride))


def _interpolate_up(
    x: Tensor, size: Sequence[int], factor: tuple[int, ...], causal_axis: int | None, linear: bool
) -> Tensor:
    size = list(size)
    lift = x.dim() - 2 - len(factor)
    axis = None if causal_axis is None else causal_axis + lift
    if axis is not None:
        # Interpolate the other axes first; same size along the causal axis is the identity.
        target = size[axis]
        size[axis] = x.shape[axis + 2]
    # Decided by the factors, not by comparing sizes: a resize to the same size is an identity,
    # and symbolic sizes (torch.export, torch.compile(dynamic=True)) need no guard.
    interpolate = any(f > 1 for a, f in enumerate(factor) if a != causal_axis)
    resample = causal_axis is not None and factor[causal_axis] > 1
    if interpolate:
        mode = per_rank(LINEAR_MODE, x.dim() - 2) if linear else "nearest"
        if _resize_needs_op(x):
            x = _resize(x, size, mode)
        else:
            x = F.interpolate(x, size=size, mode=mode, align_corners=False if linear else None)
    if resample:
        x = _causal_resample(x, axis, target, factor[causal_axis], linear)  # type: ignore[arg-type,index]
    return x if interpolate or resample else x.clone()  # fresh_output: the core sums into it


# Under torch.compile, where a backward will run, the interpolation is an op of its own (torch.library),
# which Inductor calls as it is instead of decomposing it. Decomposed, its backward became a scatter-add,
# the costliest of the compiled step's kernels after the convolutions on the CPU, and compiled training
# took 1.3-2.2x eager training's time; with ATen's kernels in forward and backward it is about as fast
# (docs/performance.md). Without a backward, 1D and 2D keep the decomposed forward, which Inductor fuses
# with the sum after it (0.82-1.02x the op's time in 1D, 0.84-0.87x in 2D); 3D keeps the op (2.1x without;
# benchmarks/compare_commit.py fb9686e --compile). Exporting keeps F.interpolate, which ONNX knows. The
# namespace is the package's name, so that an earlier copy imported beside it (compare_commit.py)
# registers its own.
_LIBRARY = __name__.partition(".")[0]
_RESIZE_BACKWARD = {
    "linear": torch.ops.aten.upsample_linear1d_backward,
    "bilinear": torch.ops.aten.upsample_bilinear2d_backward,
    "trilinear": torch.ops.aten.upsample_trilinear3d_backward,
}
_NEAREST_BACKWARD = (
    torch.ops.aten.upsample_nearest1d_backward,
    torch.ops.aten.upsample_nearest2d_backward,
    torch.ops.aten.upsample_nearest3d_backward,
)


def _resize_needs_op(x: Tensor) -> bool:
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    return compiling and (_will_backward(x) or x.dim() == 5)


def _memory_format(channels_last: bool, dims: int) -> torch.memory_format:
    return CHANNELS_LAST[dims + 2] if channels_last else torch.contiguous_format


def _in_layout_of(out: Tensor, x: Tensor) -> Tensor:
    """``out`` channels-last if ``x`` is, else contiguous: what an op's fake promises Inductor."""
    return out.contiguous(memory_format=_memory_format(_is_channels_last(x), x.dim() - 2))


@torch.library.custom_op(f"{_LIBRARY}::resize", mutates_args=())
def _resize(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    """``F.interpolate(x, size, mode)`` (``align_corners=False`` for the linear modes)."""
    out = F.interpolate(x, size=list(size), mode=mode, align_corners=None if mode == "nearest" else False)
    return _in_layout_of(out, x)


@_resize.register_fake
def _(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    out = x.new_empty((*x.shape[:2], *size))
    return _in_layout_of(out, x)


@torch.library.custom_op(f"{_LIBRARY}::resize_backward", mutates_args=())
def _resize_backward(grad: Tensor, input_shape: Sequence[int], mode: str, channels_last: bool) -> Tensor:
    """The gradient of :func:`_resize` for its input of shape ``input_shape``."""
    dims = grad.dim() - 2
    sizes = (list(grad.shape[2:]), list(input_shape))
    if mode == "nearest":
        out = _NEAREST_BACKWARD[dims - 1](grad, *sizes, *(None,) * dims)
    else:
        out = _RESIZE_BACKWARD[mode](grad, *sizes, False, *(None,) * dims)
    return out.contiguous(memory_format=_memory_format(channels_last, dims))


@_resize_backward.register_fake
def _(grad: Tensor, input_shape: Sequence[int], mode: str, channels_last: bool) -> Tensor:
    return grad.new_empty(list(input_shape)).contiguous(
        memory_format=_memory_format(channels_last, grad.dim() - 2)
    )


def _resize_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, _, mode = inputs
    ctx.input_shape, ctx.mode, ctx.channels_last = list(x.shape), mode, _is_channels_last(x)


def _resize_grad(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
    return _resize_backward(grad, ctx.input_shape, ctx.mode, ctx.channels_last), None, None


_resize.register_autograd(_resize_grad, setup_context=_resize_setup)


# Under torch.compile on the CPU, where a backward will run in float32, a 2D or 3D depthwise conv (or
# transposed conv) is an op of its own too, forward and backward ATen's as in eager mode. Lowered by
# Inductor, a conv's backward is laid out after the weight's gradient, whose size-1 axis makes the order
# ambiguous: in a backward graph without convolutions (a layer that stores its intermediates) the 2D convs
# got (N, H, C, W) tensors, and 3D ones always got copies into (N, D, H, C, W), off oneDNN's fast
# channels-last path (docs/performance.md). The op keeps the layout eager mode chose. 1D layers run
# lifted to 2D, where the op was slower in a trial. Every conv of a compiled training graph with symbolic
# sizes runs as the op too, dense ones included (see :func:`_conv_any_size`).
@torch.library.custom_op(f"{_LIBRARY}::conv", mutates_args=())
def _conv(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool,
) -> Tensor:
    """A conv (or transposed conv) without bias, its output in ``x``'s layout."""
    out = torch.convolution(x, weight, None, stride, padding, dilation, transposed, [0] * len(stride), groups)
    return _in_layout_of(out, x)


@_conv.register_fake
def _(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool,
) -> Tensor:
    geometry = zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    if transposed:
        channels = weight.shape[1] * groups
        size = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, k, s, p, d in geometry]
    else:
        channels = weight.shape[0]
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in geometry]
    return _in_layout_of(x.new_empty((x.shape[0], channels, *size)), x)


@torch.library.custom_op(f"{_LIBRARY}::conv_backward", mutates_args=())
def _conv_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool,
    needed: Sequence[bool],
) -> tuple[Tensor, Tensor]:
    """The gradients of :func:`_conv` for ``x`` (in its layout) and for ``weight`` (contiguous), each
    empty where ``needed`` says it is not (as autograd skips the input's gradient of a first conv)."""
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(stride), list(padding), list(dilation), transposed, [0] * len(stride),
        groups, [*needed, False],
    )  # fmt: skip
    return (
        _in_layout_of(grad_x, x) if needed[0] else x.new_empty(0),
        # clone, not contiguous: a size-1 axis may come back with another stride and still be "contiguous"
        grad_weight.clone(memory_format=torch.contiguous_format) if needed[1] else weight.new_empty(0),
    )


@_conv_backward.register_fake
def _(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool,
    needed: Sequence[bool],
) -> tuple[Tensor, Tensor]:
    return (
        _in_layout_of(x.new_empty(x.shape), x) if needed[0] else x.new_empty(0),
        weight.new_empty(weight.shape) if needed[1] else weight.new_empty(0),
    )


# Compiled training takes the weight gradient of a depthwise conv as sums that Inductor fuses where the map has
# at least this many positions per channel (batch times output size). On maps of 6272 positions and more they
# were 1.8-2.6x faster than ATen's (oneDNN's) kernel, less below; but each kernel offset is a reduction of its
# own in a C++ kernel that takes seconds to compile (about 5 s for a 5x5 kernel, half a minute for 5x5x5, on two
# cores), which small maps repay late or never: benchmarks/compiled_backward.py --weight-grad [--3d].
SUMMED_WEIGHT_GRAD_POSITIONS = 4096


def _sums_weight_grad(grad: Tensor, x: Tensor, weight: Tensor, groups: int, transposed: bool) -> bool:
    """Whether :func:`_conv_grad` takes this conv's weight gradient as sums: where AOTAutograd traces the
    backward for a compiler (not where it runs eagerly, as under ``backend="eager"``), for a depthwise conv
    (one filter per channel) on a map of static size (a float32 sum over a symbolic size makes Inductor guard
    on whether it exceeds 4096 elements, a recompile) of at least ``SUMMED_WEIGHT_GRAD_POSITIONS`` positions."""
    depthwise = not transposed and weight.shape[1] == 1 and groups == x.shape[1] == weight.shape[0]
    static = all(isinstance(n, int) for n in (*grad.shape, *x.shape))
    large = grad.numel() >= SUMMED_WEIGHT_GRAD_POSITIONS * grad.shape[1]
    return torch.compiler.is_compiling() and depthwise and static and large


def _depthwise_weight_grad(
    grad: Tensor, x: Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:  # fmt: skip
    """The weight gradient of a depthwise conv: per channel, the sum of ``grad`` times ``x`` shifted by each
    kernel offset. Inductor computes all of them in one kernel that reads ``grad`` and ``x`` a few times."""
    padded = pad_both_sides(x, padding)
    axes = (0, *range(2, x.dim()))
    sums = []
    for offset in itertools.product(*map(range, kernel)):
        window = tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, s, n in zip(offset, dilation, stride, grad.shape[2:])
        )
        sums.append((padded[(slice(None), slice(None)) + window] * grad).sum(axes))
    return torch.stack(sums, 1).view(x.shape[1], 1, *kernel)


@torch.library.custom_op(f"{_LIBRARY}::in_layout_of", mutates_args=())
def _layout_copy(x: Tensor, like: Tensor) -> Tensor:
    """A copy of ``x`` in ``like``'s layout. An op of its own so that Inductor writes the copy once, rather than
    fusing the strided reads into each consumer (in the summed weight gradient, once per group of sums)."""
    return x.clone(memory_format=_memory_format(_is_channels_last(like), like.dim() - 2))


@_layout_copy.register_fake
def _(x: Tensor, like: Tensor) -> Tensor:
    return _in_layout_of(x.new_empty(x.shape), like)


def _conv_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, weight, *ctx.geometry = inputs
    ctx.save_for_backward(x, weight)


def _conv_grad(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    needed = list(ctx.needs_input_grad[:2])
    if needed[1] and _sums_weight_grad(grad, x, weight, *ctx.geometry[3:]):
        if _is_channels_last(grad) != _is_channels_last(x):  # as the output's caller left it
            grad = _layout_copy(grad, x)
        grad_x, _ = _conv_backward(grad, x, weight, *ctx.geometry, [needed[0], False])
        grad_weight = _depthwise_weight_grad(grad, x, weight.shape[2:], *ctx.geometry[:3])
    else:
        grad_x, grad_weight = _conv_backward(grad, x, weight, *ctx.geometry, needed)
    return grad_x if needed[0] else None, grad_weight if needed[1] else None, *(None,) * len(ctx.geometry)


_conv.register_autograd(_conv_grad, setup_context=_conv_setup)


# A conv of a compiled training graph, as the graph's sizes need. Where Inductor lowers convs, the backward
# graph gets fixed sizes (torch 2.14: the convolution_backward lowering turns the strides of the input's
# gradient into numbers, and the strides of the channels-last tensors a forward saves come back as
# numbers; docs/performance.md), so a model compiled for dynamic sizes compiled again for every size.
# With symbolic sizes this op is recconv::conv, whose backward keeps them symbolic; with static ones it
# is ATen's conv, which Inductor lowers into faster training (1.07x and 1.22x the time of
# recnext_audio_tiny with every conv as recconv::conv, in two trials). Dynamo shows symbolic sizes to
# Python as ints, so the choice is made where AOTAutograd traces the op: a CompositeImplicitAutograd
# kernel sees the real SymInts.
torch.library.define(
    f"{_LIBRARY}::conv_any_size",
    "(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups, "
    "bool transposed) -> Tensor",
)


@torch.library.impl(f"{_LIBRARY}::conv_any_size", "CompositeImplicitAutograd")
def _conv_any_size(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    transposed: bool,
) -> Tensor:
    if not any(isinstance(size, torch.SymInt) for size in x.shape[2:]):
        return torch.convolution(
            x, weight, bias, stride, padding, dilation, transposed, [0] * len(stride), groups
        )
    device = x.device.type
    if torch.is_autocast_enabled(device):  # cast as autocast casts a conv's inputs: it does not see the op
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return _with_bias(_conv(x, weight, stride, padding, dilation, groups, transposed), bias)


def _compiles_for_training(x: Tensor, weight: Tensor) -> bool:
    """Whether a conv of ``weight`` on ``x`` is traced by ``torch.compile`` (not export) for a backward."""
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    return compiling and (_will_backward(x) or _will_backward(weight))


# Under torch.compile on the CPU, where a backward will run, the pooling of the pool and Haar down ops of 2D
# and 3D layers (with its edge padding) is an op of its own too, run by ATen's kernels in forward and
# backward. Inductor decomposed the pool's backward into a slow loop (compiled training with the op:
# 0.54x in 2D, 0.36x in 3D with avgpool; benchmarks/compare_commit.py d5f9b75 --compile --downsample
# avgpool), and its fallback for the replication pad's backward failed its own stride check (ATen's meta
# promises a channels-last gradient for channels-last input, the CPU kernel returns it contiguous).
@torch.library.custom_op(f"{_LIBRARY}::padded_pool", mutates_args=())
def _pool_op(
    x: Tensor, kind: str, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], mode: str
) -> Tensor:
    """``F.pad(x, padding, mode)`` pooled (``kind``: ``"avg"`` or ``"max"``; 2D or 3D), in ``x``'s layout."""
    return _in_layout_of(_pad_and_pool(x, kind, kernel, stride, padding, mode), x)


@_pool_op.register_fake
def _(
    x: Tensor, kind: str, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], mode: str
) -> Tensor:
    padded = [n + padding[2 * i] + padding[2 * i + 1] for i, n in enumerate(reversed(x.shape[2:]))][::-1]
    size = [(n - k) // s + 1 for n, k, s in zip(padded, kernel, stride)]
    return _in_layout_of(x.new_empty((*x.shape[:2], *size)), x)


@torch.library.custom_op(f"{_LIBRARY}::padded_pool_backward", mutates_args=())
def _pool_op_backward(
    grad: Tensor,
    x: Tensor,
    kind: str,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    mode: str,
) -> Tensor:
    """The gradient of :func:`_pool_op` for ``x``, by ATen's backward kernels of the pool and the pad (a
    max pool's indices are found again: cheap next to a conv, and nothing more to keep)."""
    dims = x.dim() - 2
    padded = F.pad(x, list(padding), mode=mode)
    no_padding, ones = [0] * dims, [1] * dims
    if kind == "avg":
        grad = _AVG_POOL_BACKWARD[dims - 2](grad, padded, kernel, stride, no_padding, False, True, None)
    else:
        _, indices = _MAX_POOL_WITH_INDICES[dims - 2](padded, kernel, stride, no_padding, ones)
        grad = _MAX_POOL_BACKWARD[dims - 2](grad, padded, kernel, stride, no_padding, ones, False, indices)
    if mode == "replicate":
        grad = _REPLICATION_PAD_BACKWARD[dims - 2](grad, x, padding)
    else:
        for i, size in enumerate(reversed(x.shape[2:])):
            grad = grad.narrow(x.dim() - 1 - i, padding[2 * i], size)
    return _in_layout_of(grad, x)


_AVG_POOL_BACKWARD = (torch.ops.aten.avg_pool2d_backward, torch.ops.aten.avg_pool3d_backward)
_MAX_POOL_WITH_INDICES = (torch.ops.aten.max_pool2d_with_indices, torch.ops.aten.max_pool3d_with_indices)
_MAX_POOL_BACKWARD = (
    torch.ops.aten.max_pool2d_with_indices_backward,
    torch.ops.aten.max_pool3d_with_indices_backward,
)
_REPLICATION_PAD_BACKWARD = (
    torch.ops.aten.replication_pad2d_backward,
    torch.ops.aten.replication_pad3d_backward,
)


@_pool_op_backward.register_fake
def _(
    grad: Tensor,
    x: Tensor,
    kind: str,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    mode: str,
) -> Tensor:
    return _in_layout_of(x.new_empty(x.shape), x)


def _pool_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, *ctx.arguments = inputs
    ctx.save_for_backward(x)


def _pool_grad(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:
    (x,) = ctx.saved_tensors
    return _pool_op_backward(grad, x, *ctx.arguments), None, None, None, None, None


_pool_op.register_autograd(_pool_grad, setup_context=_pool_setup)


def _with_bias(out: Tensor, bias: Tensor | None) -> Tensor:
    return out if bias is None else out + bias.view(-1, *(1,) * (out.dim() - 2))


def _transposed_up(
    x: Tensor,
    size: Sequence[int],
    weight: Tensor,
    bias: Tensor | None,
    factor: tuple[int, ...],
    padding: tuple[int, ...],
) -> Tensor:
    lift = x.dim() - weight.dim()
    stride, pad = (1,) * lift + factor, (0,) * lift + padding
    geometry = (stride, pad, (1,) * len(stride), weight.shape[0], True)
    if _conv_needs_op(x, weight):
        y = _with_bias(_conv(x, lifted(weight, lift), *geometry), bias)
    elif _compiles_for_training(x, weight):
        y = torch.ops.recconv.conv_any_size(x, lifted(weight, lift), bias, *geometry)
    else:
        conv_transpose = per_rank(CONV_TRANSPOSE_FN, x.dim() - 2)
        y = conv_transpose(x, lifted(weight, lift), bias, stride, pad, 0, weight.shape[0])
    for have, want in zip(y.shape[2:], size):
        message = (
            f"TransposedUp: cannot reach size {tuple(size)} from {tuple(x.shape[2:])} "
            f"with factor {factor}; the coarse input must have ceil(size / factor) samples"
        )
        if isinstance(have, int) and isinstance(want, int):
            if have < want:
                raise ValueError(message)
        else:  # symbolic sizes (torch.export): a run-time assert instead of a guard
            torch._check(have >= want, lambda message=message: message)
    crop: tuple[EllipsisType | slice, ...] = (..., *(slice(0, s) for s in size))
    return y[crop]


for _function in ("_depthwise_conv", "_pool_down", "_haar_down", "_interpolate_up", "_transposed_up"):
    torch.fx.wrap(_function)


# The one table per role: a name is only a key here.
CONV_OPS: dict[str, Builder] = {"depthwise": DepthwiseConv}
DOWNSAMPLE_OPS: dict[str, Builder] = {
    "conv": DepthwiseConv,
    "avgpool": AvgPoolDown,
    "maxpool": MaxPoolDown,
    "haar": HaarDown,
}
UPSAMPLE_OPS: dict[str, Builder] = {
    "linear": LinearUp,
    "nearest": NearestUp,
    "transposed": TransposedUp,
    "haar": HaarUp,
}
