"""RecAttn: the recursive core with linear attention at its coarsest level, in every rank.

RecAttn is :class:`~recconv.core.RecConvNd` with three ops plugged in: depthwise
:class:`~recconv.ops.ConvNorm` for the down op and the convs, nearest upsampling, and
:class:`LinearAttention` as the coarse-level op ``convs[0]``. With ``level=1`` it is the
token mixer of the paper's RecNeXt-A models::

    out = conv(x + nearest_up(attention(down(x)), size(x)))

Costs per sample for ``C`` channels, ``h`` heads (``d = C / h``), ``n`` positions at the
coarse level and a ``k``-kernel: the attention's matrix products take ``2 * C * d * n + C * n``
multiply-accumulates in variant 1 (linear in ``n``) and ``2 * C * n**2`` in variant 2; its
``qk`` conv adds ``C**2 * n`` and its ``pe`` conv ``C * 3**D * n`` in ``D`` dimensions.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import RecConvNd
from .ops import Builder, ConvNorm, depthwise_conv_norm

_VARIANTS = (1, 2)
_EPS = 1e-6  # keeps the normalization finite where every q . k is tiny; the paper's value


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class LinearAttention(nn.Module):
    """Multi-head linear attention over every position of a ``(N, C, *spatial)`` map (the paper's A series).

    ``qk`` (a 1-wide :class:`~recconv.ops.ConvNorm` ``C -> 2C`` with 2 groups) gives
    ``q, k = elu(qk(x)) + 1``; the values are ``x`` itself; ``pe`` (a 3-wide depthwise ConvNorm)
    adds a positional term. Per head, with ``n`` positions and ``s = n ** -0.5``:

    * variant 1: ``out = q^T (k s)(v^T s) / (q^T mean_n(k) + 1e-6)``, cost linear in ``n``;
    * variant 2: ``a = q^T k``, ``a = a / (mean_row(a) + 1e-6)``, ``out = (a s)(v^T s)``,
      cost quadratic in ``n`` (the paper uses it at the coarse level of its last stage).

    Both are the same function in exact arithmetic. The matrix products and the normalization
    run in float32 (float64 for float64 input), also under autocast; the result is cast back to
    the input's dtype.

    Args:
        dim: Channels ``C``; even, and a multiple of ``num_heads``.
        num_heads: Heads ``h``; each has ``C / h`` channels.
        variant: 1 or 2, as above.
        spatial_dims: 1, 2 or 3.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Raises:
        ValueError: For channels that do not split into heads or into the two ``qk`` groups,
            an unknown variant or a bad rank.

    Example:
        >>> import torch
        >>> attention = LinearAttention(32, 4, spatial_dims=3).eval()
        >>> attention(torch.randn(2, 32, 4, 6, 5)).shape
        torch.Size([2, 32, 4, 6, 5])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        variant: int = 1,
        spatial_dims: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not _positive_int(dim) or not _positive_int(num_heads):
            raise ValueError(
                f"LinearAttention: dim and num_heads must be positive ints, got {dim!r} and {num_heads!r}"
            )
        if dim % num_heads or dim % 2:
            raise ValueError(
                f"LinearAttention: dim must be even (qk has 2 groups) and a multiple of num_heads, "
                f"got dim={dim}, num_heads={num_heads}"
            )
        if variant not in _VARIANTS:
            raise ValueError(f"LinearAttention: variant must be 1 or 2, got {variant!r}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"LinearAttention: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.variant = variant
        self.spatial_dims = spatial_dims
        factory: dict[str, Any] = {"spatial_dims": spatial_dims, "device": device, "dtype": dtype}
        self.qk = ConvNorm(dim, 2 * dim, 1, groups=2, **factory)
        self.pe = ConvNorm(dim, dim, 3, padding=1, groups=dim, **factory)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over all positions of ``(N, C, *spatial)`` input; the output has its shape."""
        x = _checked(x, f"LinearAttention({self.dim}, {self.num_heads})", self.dim, self.spatial_dims)
        return _attend_heads(x, self.qk(x), self.num_heads, self.variant) + self.pe(x)

    def input_window(
        self, axis: int, lo: int, hi: int, input_size: int, output_size: int, exact: bool = True
    ) -> tuple[int, int]:
        """Every position attends to all others: the whole input (op protocol)."""
        return 0, input_size - 1

    def flops(self, input_size: Sequence[int], output_size: Sequence[int]) -> int:
        """FLOPs of one sample as ``FlopCounterMode`` counts them: the ``qk`` and ``pe`` convs and
        the attention's matrix products (see the module docstring)."""
        channels, n = self.dim, math.prod(input_size)
        convs = channels * channels * n + channels * 3**self.spatial_dims * n
        attend = (
            2 * channels * self.head_dim * n + channels * n if self.variant == 1 else 2 * channels * n * n
        )
        return 2 * (convs + attend)

    def extra_repr(self) -> str:
        variant = f", variant={self.variant}" if self.variant != 1 else ""
        return f"{self.dim}, num_heads={self.num_heads}{variant}, spatial_dims={self.spatial_dims}"


def _checked(x: Tensor, label: str, channels: int, spatial_dims: int) -> Tensor:
    if x.dim() != spatial_dims + 2 or x.shape[1] != channels:
        raise ValueError(
            f"{label}: expected (N, {channels}) followed by {spatial_dims} spatial sizes, got {tuple(x.shape)}"
        )
    return x


def _attend_heads(x: Tensor, qk: Tensor, num_heads: int, variant: int) -> Tensor:
    """The attention of ``x`` (the values) with ``q, k = elu(qk) + 1``, in the shape of ``x``."""
    batch, channels, positions = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    dtype = torch.promote_types(qk.dtype, torch.float32)
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    # Low-precision sums over n positions lose the normalization (and overflow in float16).
    with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
        heads = (batch, num_heads, channels // num_heads, positions)
        q, k = (F.elu(qk.to(dtype)) + 1.0).reshape(batch, 2, *heads[1:]).unbind(1)
        v = x.to(dtype).reshape(heads)
        out = _ATTEND[variant](q, k, v, positions**-0.5)
    return out.transpose(-1, -2).reshape(x.shape).to(x.dtype)


# torch.fx records these as single calls: their shape arithmetic and checks run with real tensors.
torch.fx.wrap("_checked")
torch.fx.wrap("_attend_heads")


def _attend_linear(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Variant 1 on ``(N, h, d, n)`` tensors: ``(N, h, n, d)``, never forming an ``n x n`` matrix."""
    q_t = q.transpose(-1, -2)
    kv = (k * scale) @ (v.transpose(-1, -2) * scale)
    return q_t @ kv / (q_t @ k.mean(dim=-1, keepdim=True) + _EPS)


def _attend_quadratic(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Variant 2 on ``(N, h, d, n)`` tensors: ``(N, h, n, d)`` through the ``n x n`` scores."""
    scores = q.transpose(-1, -2) @ k
    scores = scores / (scores.mean(dim=-1, keepdim=True) + _EPS)
    return (scores * scale) @ (v.transpose(-1, -2) * scale)


_ATTEND = {1: _attend_linear, 2: _attend_quadratic}


def linear_attention(
    channels: int,
    kernel_size: tuple[int, ...],
    *,
    num_heads: int,
    variant: int = 1,
    bias: bool = False,
    causal_axis: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LinearAttention:
    """Coarse-op builder for the core: ``functools.partial(linear_attention, num_heads=4)``.

    The rank comes from ``kernel_size``; the kernel itself is unused (the attention is global).

    Raises:
        ValueError: For ``bias=True`` or a causal axis (every position attends to all others).
    """
    if bias:
        raise ValueError("linear_attention: bias=True is not supported (its ConvNorms carry the shift)")
    if causal_axis is not None:
        raise ValueError("linear_attention: every position attends to all others, so it cannot be causal")
    return LinearAttention(
        channels, num_heads, variant=variant, spatial_dims=len(kernel_size), device=device, dtype=dtype
    )


class RecAttnNd(RecConvNd):
    """RecConv with linear attention at the coarsest level; use :class:`RecAttn1d`, :class:`RecAttn2d`
    or :class:`RecAttn3d`.

    The down op and every conv are depthwise ConvNorms of kernel ``k``, upsampling is nearest,
    and ``convs[0]`` is a :class:`LinearAttention`. ``level=1`` is the paper's RecAttn; a higher
    level recurses further down before attending, with a ConvNorm at each level in between.

    Its state_dict keys are its module names, as for every module (``down``, ``convs.0`` the
    attention, ``convs.{level}`` the full-resolution ConvNorm). The paper's checkpoints name them
    ``down.0``, ``down.1`` and ``conv``: :func:`recconv.models.load_checkpoint` converts them on
    loading (see :func:`official_to_recconv`), and ``load_state_dict`` refuses them with a message
    that says so.

    Args:
        in_channels: Channels of the input and the output; even and a multiple of ``num_heads``.
        num_heads: Attention heads.
        kernel_size: Odd kernel of the down op and the convs, an int or one per spatial axis.
        level: Recursive levels, at least 1; the attention works at ``size / factor**level``.
        variant: :class:`LinearAttention` variant, 1 (linear cost) or 2.
        factor: Downsampling factor per level, an int or one per axis.
        upsample: ``"nearest"`` (the paper's), ``"linear"``, ``"transposed"`` or a builder.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Raises:
        ValueError: For a level below 1, heads that do not divide the channels, an unknown
            variant, and everything :class:`~recconv.core.RecConvNd` refuses.
    """

    def __init__(
        self,
        in_channels: int,
        num_heads: int,
        kernel_size: int | Sequence[int] = 5,
        level: int = 1,
        *,
        variant: int = 1,
        factor: int | Sequence[int] = 2,
        upsample: str | Builder = "nearest",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        owner = type(self).__name__
        if not hasattr(self, "spatial_dims"):
            raise TypeError("RecAttnNd is abstract: use RecAttn1d, RecAttn2d or RecAttn3d")
        if not isinstance(level, int) or isinstance(level, bool) or level < 1:
            raise ValueError(
                f"{owner}: level must be an int >= 1 (the attention works one level down), got {level!r}"
            )
        if not _positive_int(num_heads):
            raise ValueError(f"{owner}: num_heads must be a positive int, got {num_heads!r}")
        if _positive_int(in_channels) and (in_channels % num_heads or in_channels % 2):
            raise ValueError(
                f"{owner}: in_channels must be even and a multiple of num_heads, "
                f"got in_channels={in_channels}, num_heads={num_heads}"
            )
        if variant not in _VARIANTS:
            raise ValueError(f"{owner}: variant must be 1 or 2, got {variant!r}")
        super().__init__(
            in_channels,
            kernel_size,
            level,
            upsample=upsample,
            downsample=depthwise_conv_norm,
            factor=factor,
            conv=depthwise_conv_norm,
            coarse=functools.partial(linear_attention, num_heads=num_heads, variant=variant),
            device=device,
            dtype=dtype,
        )
        self.num_heads = num_heads
        self.variant = variant
        self.register_load_state_dict_pre_hook(_refuse_official_names)

    @torch.no_grad()
    def fuse(self) -> RecAttnNd:
        """Fold every ConvNorm's BatchNorm into its conv (in place) and return the layer.

        The fused layer computes the eval-mode outputs.

        Example:
            >>> import torch
            >>> from recconv import RecAttn1d
            >>> layer = RecAttn1d(8, num_heads=2).eval()
            >>> x = torch.randn(1, 8, 50)
            >>> expected = layer(x)
            >>> torch.allclose(layer.fuse()(x), expected, atol=1e-6)
            True
            >>> any(isinstance(m, torch.nn.BatchNorm1d) for m in layer.modules())
            False
        """
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, ConvNorm):
                    setattr(module, name, child.fuse())
        return self

    def extra_repr(self) -> str:
        k, f = self.kernel_size, self.factor
        args = [str(self.in_channels), f"num_heads={self.num_heads}"]
        args.append(f"kernel_size={k[0] if len(set(k)) == 1 else k}")
        args.append(f"level={self.level}")
        if self.variant != 1:
            args.append(f"variant={self.variant}")
        if f != (2,) * len(f):
            args.append(f"factor={f[0] if len(set(f)) == 1 else f}")
        if self.upsample != "nearest":
            args.append(f"upsample={self.upsample!r}")
        return ", ".join(args)


def _official_names(level: int) -> list[tuple[str, str]]:
    """``(ours, the paper's)`` name prefixes of a RecAttn's modules, relative to the layer."""
    return [("down.", "down.0."), ("convs.0.", "down.1."), (f"convs.{level}.", "conv.")]


def _renamed(state: Mapping[str, Tensor], model: nn.Module, to_official: bool) -> dict[str, Tensor]:
    layers = [
        (name + "." if name else "", m) for name, m in model.named_modules() if isinstance(m, RecAttnNd)
    ]
    renamed = {}
    for key, value in state.items():
        for prefix, layer in layers:
            if key.startswith(prefix):
                for ours, official in _official_names(layer.level):
                    old, new = (ours, official) if to_official else (official, ours)
                    if key.startswith(prefix + old):
                        key = prefix + new + key[len(prefix + old) :]
                        break
                break
        renamed[key] = value
    return renamed


def official_to_recconv(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename the paper's RecAttn keys (``down.0``, ``down.1``, ``conv``) in ``state`` to ``model``'s.

    ``timm``'s ``checkpoint_filter_fn`` habit: foreign checkpoints are converted when loaded;
    :func:`recconv.models.load_checkpoint` calls this. Keys of other modules pass unchanged.

    Example:
        >>> from recconv import RecAttn2d
        >>> layer = RecAttn2d(8, num_heads=2)
        >>> paper = recconv_to_official(layer.state_dict(), layer)
        >>> sorted({key.split(".")[0] + "." + key.split(".")[1] for key in paper})
        ['conv.conv', 'conv.norm', 'down.0', 'down.1']
        >>> list(official_to_recconv(paper, layer)) == list(layer.state_dict())
        True
    """
    return _renamed(state, model, to_official=False)


def recconv_to_official(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_recconv`: ``model``'s keys in the paper's names."""
    return _renamed(state, model, to_official=True)


def _refuse_official_names(module: RecAttnNd, state: dict[str, Any], prefix: str, *args: Any) -> None:
    paper_names = [
        key for key in state if key.startswith((prefix + "down.0.", prefix + "down.1.", prefix + "conv."))
    ]
    if paper_names:
        raise ValueError(
            f"{module._label} at {prefix[:-1] or 'the top level'!r}: the state_dict uses the paper's "
            f"RecAttn names (e.g. {paper_names[0]!r}); load it with recconv.models.load_checkpoint(model, "
            "path), which converts them, or rename with recconv.attention.official_to_recconv(state, model)"
        )


class RecAttn1d(RecAttnNd):
    """RecAttn over sequences: input ``(N, C, L)`` or ``(C, L)``, output of the same shape.

    Example:
        >>> import torch
        >>> from recconv import RecAttn1d
        >>> layer = RecAttn1d(32, num_heads=4, level=2)
        >>> layer(torch.randn(2, 32, 1000)).shape
        torch.Size([2, 32, 1000])
    """

    spatial_dims = 1


class RecAttn2d(RecAttnNd):
    """RecAttn over images: input ``(N, C, H, W)`` or ``(C, H, W)``; the paper's layer with ``level=1``.

    Example:
        >>> import torch
        >>> from recconv import RecAttn2d
        >>> layer = RecAttn2d(64, num_heads=4)
        >>> layer(torch.randn(1, 64, 56, 56)).shape
        torch.Size([1, 64, 56, 56])
        >>> sorted({key.rsplit(".", 2)[0] for key in layer.state_dict()})
        ['convs.0.pe', 'convs.0.qk', 'convs.1', 'down']
    """

    spatial_dims = 2


class RecAttn3d(RecAttnNd):
    """RecAttn over volumes or video: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Example:
        >>> import torch
        >>> from recconv import RecAttn3d
        >>> layer = RecAttn3d(16, num_heads=2, kernel_size=3, factor=(1, 2, 2))
        >>> layer(torch.randn(1, 16, 8, 32, 32)).shape
        torch.Size([1, 16, 8, 32, 32])
    """

    spatial_dims = 3


RECATTN: tuple[type[RecAttnNd], ...] = (RecAttn1d, RecAttn2d, RecAttn3d)
"""The RecAttn class of each rank, 1 to 3 (pick with ``recconv._util.per_rank``)."""
