"""The recursive core of RecConv, written once for every rank.

For an input ``x`` the layer computes (Zhao, Luo, Ouyang, 2024, arXiv 2412.19628)::

    f_0 = x;  f_i = down(f_{i-1})                      for i = 1..level
    h = 0;    h = up(convs[level - i](f_i + h), size(f_{i-1}))   for i = level..1
    out = convs[level](x + h)

``convs[0]`` works at the coarsest scale and ``convs[level]`` at full resolution. Every op is
a builder (see :mod:`recconv.ops`): ``conv`` builds the op of every level and ``coarse``, if
given, replaces ``convs[0]``, the op at the coarsest scale; :class:`recconv.RecAttn2d` puts
linear attention there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .ops import CONV, DOWNSAMPLE, UPSAMPLE, Builder, as_tuple, resolve_builder

_LAYOUTS = ("L", "H, W", "D, H, W")
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # by tensor rank


def _name_of(op: str | Builder) -> str:
    return repr(op) if isinstance(op, str) else getattr(op, "__qualname__", repr(op))


class RecConvNd(nn.Module):
    """Recursive depthwise convolution; use :class:`RecConv1d`, :class:`RecConv2d` or :class:`RecConv3d`.

    Args:
        in_channels: Channels of the input and the output (the layer is depthwise).
        kernel_size: Odd base kernel ``k`` of every conv, an int or one per spatial axis.
        level: Number of recursive levels ``l``; the effective kernel is ``k * factor**l``.
            ``level=0`` is a single depthwise conv.
        bias: Learn a bias in every conv (off by default, as in the paper).
        upsample: ``"linear"`` (linear/bilinear/trilinear by rank, the paper's choice),
            ``"nearest"``, ``"transposed"`` (learned, any input size) or an upsample builder
            following the protocol in :mod:`recconv.ops`.
        downsample: ``"conv"`` (a depthwise stride-``factor`` conv, the paper's choice),
            ``"avgpool"``, ``"maxpool"`` or a downsample builder.
        factor: Downsampling factor per level, an int or one per axis; ``1`` leaves that axis
            at full resolution (for example ``(1, 2, 2)`` keeps the time axis of a video).
        shared_down: One down op for all levels (the paper's choice) instead of one per level.
        conv: ``"depthwise"`` (a bias-free depthwise conv, the paper's choice) or a conv
            builder: the op of every level, ``convs[0..level]``.
        coarse: ``None`` (the ``conv`` op) or a builder of a different op for the coarsest
            level, ``convs[0]`` (with ``level=0`` it is the whole layer).
        causal: ``False``; ``True`` for causality along the first spatial axis; or the index
            of the spatial axis along which an output never depends on later inputs.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Raises:
        ValueError: For an even kernel, a negative level, non-positive channels or factors,
            per-axis tuples of the wrong length, an unknown op name or an invalid causal axis.
        TypeError: For arguments of the wrong type.
    """

    spatial_dims: int

    def __init__(
        self,
        in_channels: int,
        kernel_size: int | Sequence[int] = 5,
        level: int = 2,
        *,
        bias: bool = False,
        upsample: str | Builder = "linear",
        downsample: str | Builder = "conv",
        factor: int | Sequence[int] = 2,
        shared_down: bool = True,
        conv: str | Builder = "depthwise",
        coarse: str | Builder | None = None,
        causal: bool | int = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not hasattr(self, "spatial_dims"):
            raise TypeError("RecConvNd is abstract: use RecConv1d, RecConv2d or RecConv3d")
        dims = self.spatial_dims
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f"{owner}: in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise ValueError(f"{owner}: level must be an int >= 0, got {level!r}")
        self.in_channels = in_channels
        self.level = level
        self.kernel_size = as_tuple(kernel_size, dims, "kernel_size", owner)
        if any(k < 1 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"{owner}: kernel_size must be odd and positive, got {kernel_size!r}")
        self.factor = as_tuple(factor, dims, "factor", owner)
        if any(f < 1 for f in self.factor):
            raise ValueError(f"{owner}: factor must be >= 1 on every axis, got {factor!r}")
        self.causal_axis = self._causal_axis(causal, owner)
        self.has_bias = bias
        self.upsample = upsample
        self.downsample = downsample
        self.shared_down = shared_down
        self.conv_op = conv
        self.coarse_op = coarse
        self._label = f"{owner}({in_channels}, level={level})"
        # Only the built-in ops know how to run a 1D layer lifted to (N, C, 1, L) (see forward).
        self._liftable = all(isinstance(op, str) for op in (upsample, downsample, conv)) and coarse is None
        # A built-in up op returns a new tensor that nothing else holds, so sums may go into it in place.
        self._sum_in_place = isinstance(upsample, str)
        # The built-in ops are pure functions of their input and parameters (no running statistics, no
        # randomness), so training may run them twice to save memory (see _recurse).
        self._recompute = self._liftable

        down_builder = resolve_builder(downsample, DOWNSAMPLE, "downsample", owner)
        up_builder = resolve_builder(upsample, UPSAMPLE, "upsample", owner)
        conv_builder = resolve_builder(conv, CONV, "conv", owner)
        coarse_builder = conv_builder if coarse is None else resolve_builder(coarse, CONV, "coarse", owner)
        op_kwargs = {"bias": bias, "causal_axis": self.causal_axis, "device": device, "dtype": dtype}

        def build(builder: Builder) -> nn.Module:
            return builder(in_channels, self.kernel_size, self.factor, **op_kwargs)

        def build_conv(builder: Builder) -> nn.Module:
            return builder(in_channels, self.kernel_size, **op_kwargs)

        levels = range(level)
        self.down = build(down_builder) if shared_down and level > 0 else None
        self.downs = None if shared_down else nn.ModuleList(build(down_builder) for _ in levels)
        self.ups = nn.ModuleList(build(up_builder) for _ in levels)
        self.convs = nn.ModuleList(
            build_conv(coarse_builder if i == 0 else conv_builder) for i in range(level + 1)
        )

    def _causal_axis(self, causal: bool | int, owner: str) -> int | None:
        if isinstance(causal, bool):
            return 0 if causal else None
        if not isinstance(causal, int):
            raise TypeError(f"{owner}: causal must be a bool or a spatial axis index, got {causal!r}")
        if not -self.spatial_dims <= causal < self.spatial_dims:
            raise ValueError(
                f"{owner}: causal axis must be in [{-self.spatial_dims}, {self.spatial_dims - 1}] "
                f"(spatial axes, batch and channel excluded), got {causal}"
            )
        return causal % self.spatial_dims

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._label}: expected a tensor, got {type(x).__name__}")
        dims = self.spatial_dims
        layout = _LAYOUTS[dims - 1]
        if x.dim() not in (dims + 1, dims + 2) or x.shape[-dims - 1] != self.in_channels:
            raise ValueError(
                f"{self._label}: expected (N, {self.in_channels}, {layout}) or "
                f"({self.in_channels}, {layout}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{self._label}: expected a floating-point input, got {x.dtype}")
        if min(x.shape[-dims:]) < 1:
            raise ValueError(f"{self._label}: spatial sizes must be >= 1, got {tuple(x.shape[-dims:])}")

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` input."""
        self._check_input(x)
        unbatched = x.dim() == self.spatial_dims + 1
        if unbatched:
            x = x.unsqueeze(0)
        # On the CPU, depthwise convs (their weight gradients most of all) and interpolation run several
        # times faster on channels-last tensors, which a 1D input reaches as (N, C, 1, L): recurse in
        # that layout, answer in the caller's. Same ops, same math, up to float rounding.
        on_cpu = x.device.type == "cpu"
        lift = on_cpu and self.spatial_dims == 1 and self._liftable
        if lift:
            x = x.unsqueeze(2)
        layout = _CHANNELS_LAST.get(x.dim()) if on_cpu else None
        restore = layout is not None and not x.is_contiguous(memory_format=layout)
        if restore:
            x = x.contiguous(memory_format=layout)
        if _recomputes(self):
            # Keep only x for backward and run the recursion again there: see _recurse.
            out = checkpoint(_recurse, self, x, use_reentrant=False, preserve_rng_state=False)
        else:
            out = _recurse(self, x)
        if lift:
            out = out.squeeze(2)
        if restore:
            out = out.contiguous()
        return out.squeeze(0) if unbatched else out

    def _add(self, upsampled: Tensor, features: Tensor) -> Tensor:
        """``features + upsampled``, written into ``upsampled`` where that is safe: one full-size
        buffer less per level, which on the CPU saves its allocation (page faults) and a pass.
        A forward hook on a built-in up op therefore sees its output before the sum only if it
        copies it."""
        if self._sum_in_place and upsampled.dtype == features.dtype:
            return upsampled.add_(features)
        return features + upsampled

    def extra_repr(self) -> str:
        k = self.kernel_size
        args = [
            str(self.in_channels),
            f"kernel_size={k[0] if len(set(k)) == 1 else k}",
            f"level={self.level}",
        ]
        f = self.factor
        options = {
            "bias": (self.has_bias, False),
            "upsample": (self.upsample, "linear"),
            "downsample": (self.downsample, "conv"),
            "factor": (f[0] if len(set(f)) == 1 else f, 2),
            "shared_down": (self.shared_down, True),
            "conv": (self.conv_op, "depthwise"),
            "coarse": (self.coarse_op, None),
            "causal": (self.causal_axis, None),
        }
        for name, (value, default) in options.items():
            if value != default:
                shown = _name_of(value) if name in ("upsample", "downsample", "conv", "coarse") else value
                args.append(f"{name}={shown}")
        return ", ".join(args)


def _recomputes(layer: RecConvNd) -> bool:
    """Whether this forward keeps only its input and recomputes in backward (see :func:`_recurse`)."""
    if not (layer._recompute and layer.training and torch.is_grad_enabled()):
        return False
    if torch.compiler.is_compiling():
        return not torch.compiler.is_exporting()
    # torch.func's transforms (grad, vjp, jacrev) refuse the saved-tensor hooks that checkpointing uses.
    return torch._C._functorch.peek_interpreter_stack() is None


def _recurse(layer: RecConvNd, x: Tensor) -> Tensor:
    """The recursion of ``layer`` on a batched input already in the layout it runs in.

    In training, :meth:`RecConvNd.forward` runs this under activation checkpointing: autograd keeps
    only ``x`` (which a single base conv keeps too) and the backward pass runs the recursion again
    to rebuild the sums ``f_i + up(h)`` and the coarse tensors, instead of storing them all (2.65x
    one base conv's saved memory for a 2D layer at level 3). The forward is cheap next to the
    backward, so a training step costs little more. Under ``torch.compile`` the recomputed convs
    also sit in the backward graph, which makes Inductor choose channels-last there too (see
    docs/performance.md).
    """
    features = [x]
    for i in range(layer.level):
        down = layer.down if layer.downs is None else layer.downs[i]
        features.append(down(features[-1]))
    hidden = None
    for conv, up, coarse, fine in zip(
        layer.convs, layer.ups, reversed(features[1:]), reversed(features[:-1])
    ):
        hidden = up(conv(coarse if hidden is None else layer._add(hidden, coarse)), fine.shape[2:])
    return layer.convs[-1](x if hidden is None else layer._add(hidden, x))


class RecConv1d(RecConvNd):
    """RecConv over sequences: input ``(N, C, L)`` or ``(C, L)``, output of the same shape.

    Example:
        >>> import torch
        >>> from recconv import RecConv1d
        >>> layer = RecConv1d(16, kernel_size=5, level=3)
        >>> layer(torch.randn(2, 16, 100)).shape
        torch.Size([2, 16, 100])
        >>> sum(p.numel() for p in layer.parameters()) == (3 + 2) * 16 * 5
        True
    """

    spatial_dims = 1


class RecConv2d(RecConvNd):
    """RecConv over images: input ``(N, C, H, W)`` or ``(C, H, W)``, output of the same shape.

    The default layer is the paper's: state_dict keys ``down.weight`` and ``convs.{0..level}.weight``.

    Example:
        >>> import torch
        >>> from recconv import RecConv2d
        >>> layer = RecConv2d(64, kernel_size=5, level=3)
        >>> layer(torch.randn(1, 64, 56, 56)).shape
        torch.Size([1, 64, 56, 56])
        >>> sorted(layer.state_dict())
        ['convs.0.weight', 'convs.1.weight', 'convs.2.weight', 'convs.3.weight', 'down.weight']
    """

    spatial_dims = 2


class RecConv3d(RecConvNd):
    """RecConv over volumes or video: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Example:
        >>> import torch
        >>> from recconv import RecConv3d
        >>> layer = RecConv3d(8, kernel_size=3, level=2, factor=(1, 2, 2), causal=True)
        >>> layer(torch.randn(1, 8, 16, 32, 32)).shape
        torch.Size([1, 8, 16, 32, 32])
    """

    spatial_dims = 3
