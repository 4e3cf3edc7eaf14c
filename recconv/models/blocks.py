"""The building blocks of RecNeXt backbones, written once for 1, 2 and 3 spatial dimensions.

Module and parameter names follow the paper's code, so state_dicts load unchanged. Every block
that holds a BatchNorm has a ``fuse()`` method returning its inference-time replacement (itself,
changed in place, where only a child changes), with every BatchNorm folded into the linear op
before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._util import BATCH_NORM, per_rank
from ..attention import RECATTN
from ..core import RECCONV, RecConvNd
from ..ops import ONE_GRAPH_CONV, Builder, ConvNorm, DepthwiseConv, fold_batch_norm


def channel_mixer(
    channels: int, mlp_ratio: float, act_layer: type[nn.Module], spatial_dims: int, **factory: Any
) -> nn.Sequential:
    """The pointwise MLP ``[ConvNorm C -> rC, act, ConvNorm rC -> C]``."""
    hidden = int(channels * mlp_ratio)
    return nn.Sequential(
        ConvNorm(channels, hidden, spatial_dims=spatial_dims, **factory),
        act_layer(),
        ConvNorm(hidden, channels, spatial_dims=spatial_dims, **factory),
    )


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch per sample with probability ``p``.

    Example:
        >>> import torch
        >>> drop = DropPath(0.5).train()
        >>> out = drop(torch.ones(1000, 1, 2))
        >>> sorted(out.unique().tolist())
        [0.0, 2.0]
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _drop_path(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _drop_path(x: Tensor, p: float) -> Tensor:
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


torch.fx.wrap("_drop_path")  # the mask's shape depends on the input's rank


class Stem(nn.Module):
    """Two strided 3-wide ConvNorms with an activation between them (``stem.stem``).

    Args:
        in_channels: Input channels.
        out_channels: Channels of the first stage; the first conv gives half of them.
        strides: Stride of each of the two convs, an int or one per axis each.
        act_layer: Activation class.
        spatial_dims: 1, 2 or 3.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        strides: Sequence[tuple[int, ...]],
        act_layer: type[nn.Module],
        spatial_dims: int,
        **factory: Any,
    ) -> None:
        super().__init__()
        first, second = strides
        self.stem = nn.Sequential(
            ConvNorm(in_channels, out_channels // 2, 3, first, 1, spatial_dims=spatial_dims, **factory),
            act_layer(),
            ConvNorm(out_channels // 2, out_channels, 3, second, 1, spatial_dims=spatial_dims, **factory),
        )

    spatial_path = ("stem",)

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class Downsample(nn.Module):
    """Stage transition: grouped strided conv (``token_mixer``), BatchNorm, residual channel MLP.

    ``y = norm(token_mixer(x)); out = y + channel_mixer(y)``. The conv has
    ``gcd(in_channels, out_channels)`` groups: depthwise-with-multiplier for the paper's doubling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        mlp_ratio: float,
        act_layer: type[nn.Module],
        **factory: Any,
    ) -> None:
        super().__init__()
        spatial_dims = len(kernel_size)
        # Called with tuples of its rank, which the per-rank stubs (tuple[int], tuple[int, int]) cannot say.
        conv_class: Callable[..., nn.modules.conv._ConvNd] = per_rank(ONE_GRAPH_CONV, spatial_dims)
        self.token_mixer = conv_class(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=tuple(k // 2 for k in kernel_size),
            groups=math.gcd(in_channels, out_channels),
            **factory,
        )
        self.norm: nn.Module = per_rank(BATCH_NORM, spatial_dims)(out_channels, **factory)
        self.channel_mixer = channel_mixer(out_channels, mlp_ratio, act_layer, spatial_dims, **factory)

    spatial_path = ("token_mixer",)  # norm and the channel MLP are pointwise

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.token_mixer(x))
        return x + self.channel_mixer(x)

    @torch.no_grad()
    def fuse(self) -> Downsample:
        """Fold ``norm`` into ``token_mixer`` (in place); the MLP's ConvNorms fuse through their own ``fuse``."""
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            weight, bias = fold_batch_norm(self.token_mixer.weight, self.token_mixer.bias, self.norm)
            self.token_mixer.weight.copy_(weight)
            self.token_mixer.bias = nn.Parameter(bias)
            self.norm = nn.Identity()
        return self


@dataclass(frozen=True)
class RecConvMixer:
    """Token-mixer builder of the M series: a RecConv of the block's rank, followed by a BatchNorm.

    Called as ``mixer(channels, level=..., stage=..., spatial_dims=..., device=..., dtype=...)``.

    Args:
        kernel_size: RecConv base kernel, an int or one per axis.
        factor: RecConv factor, an int or one per axis.
        upsample: RecConv upsample op name or builder.
        downsample: RecConv downsample op name or builder.
    """

    kernel_size: int | Sequence[int] = 5
    factor: int | Sequence[int] = 2
    upsample: str | Builder = "linear"
    downsample: str | Builder = "conv"
    norm = True  # the block puts a BatchNorm after the mixer
    min_level = 0

    def default_levels(self, stages: int) -> tuple[int, ...]:
        """``stages - i``: 4, 3, 2, 1 for four stages, as in the paper."""
        return tuple(stages - i for i in range(stages))

    def __call__(
        self, channels: int, *, level: int, stage: int, spatial_dims: int, **factory: Any
    ) -> nn.Module:
        layer_class = per_rank(RECCONV, spatial_dims)
        return layer_class(
            channels,
            self.kernel_size,
            level,
            factor=self.factor,
            upsample=self.upsample,
            downsample=self.downsample,
            **factory,
        )


@dataclass(frozen=True)
class RecAttnMixer:
    """Token-mixer builder of the A series: a RecAttn of the block's rank (it ends in a ConvNorm, so
    the block adds no norm).

    Args:
        num_heads: Heads per stage; default ``2 ** (stage + 1)`` (2, 4, 8, 16).
        attention_variants: :class:`~recconv.LinearAttention` variant per stage; default 1, and 2
            from the fourth stage on, as in the paper's code.
        kernel_size: Kernel of the down op and the convs, an int or one per axis.
        factor: Factor, an int or one per axis.
        upsample: Upsample op name or builder.
    """

    num_heads: Sequence[int] | None = None
    attention_variants: Sequence[int] | None = None
    kernel_size: int | Sequence[int] = 5
    factor: int | Sequence[int] = 2
    upsample: str | Builder = "nearest"
    norm = False
    min_level = 1

    def default_levels(self, stages: int) -> tuple[int, ...]:
        """Level 1 in every stage, the paper's RecAttn."""
        return (1,) * stages

    def check(self, stages: int) -> None:
        """Refuse per-stage options that do not have one entry per stage."""
        for name in ("num_heads", "attention_variants"):
            value = getattr(self, name)
            if value is not None and len(tuple(value)) != stages:
                raise ValueError(f"RecNeXt: {name} needs one entry per stage ({stages}), got {value!r}")

    def __call__(
        self, channels: int, *, level: int, stage: int, spatial_dims: int, **factory: Any
    ) -> nn.Module:
        heads = 2 ** (stage + 1) if self.num_heads is None else tuple(self.num_heads)[stage]
        if self.attention_variants is None:
            variant = 2 if stage >= 3 else 1
        else:
            variant = tuple(self.attention_variants)[stage]
        layer_class = per_rank(RECATTN, spatial_dims)
        return layer_class(
            channels,
            heads,
            self.kernel_size,
            level,
            variant=variant,
            factor=self.factor,
            upsample=self.upsample,
            **factory,
        )


class RecNeXtBlock(nn.Module):
    """``x + drop_path(channel_mixer(norm(token_mixer(x))))``: the block of every RecNeXt.

    Args:
        channels: Input and output channels.
        token_mixer: The spatial mixer (a RecConv, a RecAttn or a user's), already built.
        norm: Put a BatchNorm after the token mixer (the M series; RecAttn ends in its own).
        mlp_ratio: Hidden width of the channel MLP over ``channels``.
        act_layer: Activation class.
        drop_path: Stochastic depth probability of the residual branch.
        spatial_dims: 1, 2 or 3.
    """

    spatial_path = ("token_mixer",)  # the rest is pointwise (see recconv.receptive_field_window)

    def __init__(
        self,
        channels: int,
        token_mixer: nn.Module,
        *,
        norm: bool,
        mlp_ratio: float,
        act_layer: type[nn.Module],
        drop_path: float,
        spatial_dims: int,
        **factory: Any,
    ) -> None:
        super().__init__()
        self.token_mixer = token_mixer
        self.norm: nn.Module = (
            per_rank(BATCH_NORM, spatial_dims)(channels, **factory) if norm else nn.Identity()
        )
        self.channel_mixer = channel_mixer(channels, mlp_ratio, act_layer, spatial_dims, **factory)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.channel_mixer(self.norm(self.token_mixer(x))))

    @torch.no_grad()
    def fuse(self) -> RecNeXtBlock:
        """Fold ``norm`` into a RecConv's full-resolution conv (in place).

        RecConv ends with ``convs[-1](x + h)``, so scaling that conv per channel and giving it
        a bias applies the BatchNorm to the whole output, every recursive path included. A
        mixer that does not end in such a conv keeps its norm.
        """
        last = self.token_mixer.convs[-1] if isinstance(self.token_mixer, RecConvNd) else None
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm) and isinstance(last, DepthwiseConv):
            # DepthwiseConv registers its bias, so the stubs see Tensor | Module
            weight, bias = fold_batch_norm(last.weight, cast(Tensor | None, last.bias), self.norm)
            last.weight.copy_(weight)
            last.bias = nn.Parameter(bias)
            self.norm = nn.Identity()
        return self


class NormLinear(nn.Sequential):
    """BatchNorm1d (``norm``) then Linear (``linear``, truncated-normal weight std 0.02, zero bias)."""

    def __init__(self, in_features: int, out_features: int, **factory: Any) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_features, **factory)
        self.linear = nn.Linear(in_features, out_features, **factory)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fuse_weights(self) -> tuple[Tensor, Tensor]:
        """Weight and bias of one Linear equal to ``linear(norm(x))`` with the running statistics."""
        norm, linear = self.norm, self.linear
        if norm.running_mean is None or norm.running_var is None:
            raise ValueError("NormLinear: cannot fuse a BatchNorm1d without running statistics")
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        return linear.weight * scale, linear.bias + linear.weight @ shift


class DistillationHead(nn.Module):
    """Two NormLinear classifiers (``head`` and ``head_dist``) as in DeiT-style distillation.

    Returns their mean, or both logits in training when ``distillation`` is on.
    """

    def __init__(self, in_features: int, num_classes: int, distillation: bool, **factory: Any) -> None:
        super().__init__()
        self.distillation = distillation
        self.head = NormLinear(in_features, num_classes, **factory)
        self.head_dist = NormLinear(in_features, num_classes, **factory)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.training and self.distillation:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """One Linear computing the mean of both heads in eval mode."""
        weight, bias = self.head.fuse_weights()
        weight_dist, bias_dist = self.head_dist.fuse_weights()
        fused = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        fused.weight.copy_((weight + weight_dist) / 2)
        fused.bias.copy_((bias + bias_dist) / 2)
        return fused
