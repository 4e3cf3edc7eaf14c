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


# --- RecAttn, from the state_dict names of the paper's code ----------------------------------------


def batch_norm(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    """Eval-mode BatchNorm, written out."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = state[f"{prefix}.running_mean"].reshape(shape), state[f"{prefix}.running_var"].reshape(shape)
    weight, bias = state[f"{prefix}.weight"].reshape(shape), state[f"{prefix}.bias"].reshape(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def conv_norm_depthwise(x: Tensor, state: dict[str, Tensor], prefix: str, stride: tuple[int, ...]) -> Tensor:
    return batch_norm(depthwise_conv(x, state[f"{prefix}.conv.weight"], stride), state, f"{prefix}.norm")


def linear_attention(x: Tensor, state: dict[str, Tensor], prefix: str, heads: int, variant: int) -> Tensor:
    """The issue's formulas, one sample and one head at a time, positions flattened in C order."""
    batch, channels, *spatial = x.shape
    n, d = math.prod(spatial), channels // heads
    s = n**-0.5
    # qk: a 1-wide conv C -> 2C in 2 groups: q from the first C/2 input channels, k from the rest.
    weight = state[f"{prefix}.qk.conv.weight"].reshape(2 * channels, channels // 2)
    flat = x.reshape(batch, channels, n)
    qk = torch.cat(
        [weight[:channels] @ flat[:, : channels // 2], weight[channels:] @ flat[:, channels // 2 :]], 1
    )
    qk = batch_norm(qk, state, f"{prefix}.qk.norm")
    qk = torch.where(qk > 0, qk, torch.expm1(qk)) + 1  # elu + 1
    out = torch.empty_like(flat)
    for b in range(batch):
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)
            q, k, v = qk[b, :channels][rows], qk[b, channels:][rows], flat[b, rows]  # each (d, n)
            if variant == 1:
                kv = (k * s) @ (v.T * s)
                result = q.T @ kv / (q.T @ k.mean(dim=1, keepdim=True) + 1e-6)
            else:
                a = q.T @ k
                a = a / (a.mean(dim=1, keepdim=True) + 1e-6)
                result = (a * s) @ (v.T * s)
            out[b, rows] = result.T
    pe = conv_norm_depthwise(x, state, f"{prefix}.pe", (1,) * len(spatial))
    return out.reshape(x.shape) + pe


def recattn(
    x: Tensor, state: dict[str, Tensor], heads: int, variant: int, level: int, prefix: str = ""
) -> Tensor:
    """Nested form: R_j(y) = conv_j(y + nearest(R_{j-1}(down(y)), size(y))), R_0 = the attention.

    ``conv_level`` is ``conv``, ``conv_j`` for ``0 < j < level`` is ``convs.j``; ``down.0`` is the
    strided ConvNorm and ``down.1`` the attention, as in the paper's state_dict.
    """
    ones = (1,) * (x.dim() - 2)

    def mixer(y: Tensor, j: int) -> Tensor:
        if j == 0:
            return linear_attention(y, state, f"{prefix}down.1", heads, variant)
        coarse = mixer(conv_norm_depthwise(y, state, f"{prefix}down.0", (2,) * len(ones)), j - 1)
        name = "conv" if j == level else f"convs.{j}"
        return conv_norm_depthwise(y + resize(coarse, y.shape[2:], "nearest"), state, prefix + name, ones)

    return mixer(x, level)


def conv_norm(x: Tensor, state: dict[str, Tensor], prefix: str, stride: int = 1, padding: int = 0) -> Tensor:
    """A bias-free conv and its BatchNorm (the paper's ConvNorm), by key names."""
    conv = torch.nn.functional.conv2d(x, state[f"{prefix}.conv.weight"], None, stride, padding)
    return batch_norm(conv, state, f"{prefix}.norm")


def mlp(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    gelu = torch.nn.functional.gelu(conv_norm(x, state, f"{prefix}.0"))
    return conv_norm(gelu, state, f"{prefix}.2")


def paper_backbone(state: dict[str, Tensor], x: Tensor, block) -> Tensor:
    """The paper's RecNeXt eval forward, driven by key names only: stem, four stages, both heads averaged.

    ``block(x, prefix, stage)`` applies one block of the series (M: RecConv, A: RecAttn).
    """
    x = conv_norm(
        torch.nn.functional.gelu(conv_norm(x, state, "stem.stem.0", 2, 1)), state, "stem.stem.2", 2, 1
    )
    for stage in range(4):
        prefix = f"stages.{stage}.downsample"
        if f"{prefix}.token_mixer.weight" in state:
            weight, bias = state[f"{prefix}.token_mixer.weight"], state[f"{prefix}.token_mixer.bias"]
            x = batch_norm(
                torch.nn.functional.conv2d(x, weight, bias, 2, 3, 1, x.shape[1]), state, f"{prefix}.norm"
            )
            x = x + mlp(x, state, f"{prefix}.channel_mixer")
        depth = len({k.split(".")[3] for k in state if k.startswith(f"stages.{stage}.blocks.")})
        for index in range(depth):
            x = block(x, f"stages.{stage}.blocks.{index}", stage)
    pooled = x.mean((2, 3))
    heads = [
        torch.nn.functional.linear(
            batch_norm(pooled, state, f"head.{h}.norm"),
            state[f"head.{h}.linear.weight"],
            state[f"head.{h}.linear.bias"],
        )
        for h in ("head", "head_dist")
    ]
    return (heads[0] + heads[1]) / 2
