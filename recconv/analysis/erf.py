"""Effective receptive field (ERF) of any layer or backbone, in 1, 2 or 3 spatial dimensions.

The method of RepLKNet (Ding et al., "Scaling Up Your Kernels to 31x31", CVPR 2022, its ``erf``
scripts), written once for every rank. For each input ``x`` of shape ``(N, C, *S)``:

* run the model and take its output feature map ``Y`` of shape ``(N, C', *S')`` (``S'`` may be
  smaller than ``S``, as in a backbone) and the output's center ``S' // 2``;
* ``s = sum_c ReLU(Y[0, c, center])``, ``G = ds/dx`` and ``M = sum over batch and channel of ReLU(G)``.

``M`` is averaged over the inputs and ``D = log10(M + 1) / max`` rescales it to ``[0, 1]``. The
*high-contribution area ratio* for a threshold ``t`` is the smallest centered interval, square or
cube whose share of ``sum(D)`` exceeds ``t``: its side and its share of the input area.

Two deliberate differences from the original script: boxes start at side 1 (it starts at 3, so a
1-wide ERF read as 3) and grow until they cover the whole input, clipped at its border (it stops
short of the border and crashes when no box passes ``t``); where no box passes ``t`` (an all-zero
map), the side and ratio are ``None``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._util import as_tuple, look_up, per_rank
from ..core import RECCONV
from ..models import PRESETS, create_model, list_models, load_model
from ..theory import receptive_field
from .progress import progress_bar

THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.5, 0.99)
"""The thresholds RepLKNet reports."""

DEFAULT_SAMPLES = 8


Model = nn.Module | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class AreaRatio:
    """The smallest centered box holding more than ``threshold`` of the normalized ERF.

    Attributes:
        threshold: The share ``t`` of ``sum(D)`` the box must exceed.
        side: Side of the box (``2 r + 1`` for radius ``r``), or ``None`` if no box exceeds ``t``.
        area_ratio: Box volume over input volume (the box is clipped at the input border),
            or ``None`` if no box exceeds ``t``.
    """

    threshold: float
    side: int | None
    area_ratio: float | None


@dataclass(frozen=True)
class ERFResult:
    """The effective receptive field of one model for one input shape.

    Attributes:
        scores: The mean contribution map ``M`` over the input's spatial axes (float64).
        normalized: ``D = log10(M + 1) / max(log10(M + 1))`` in ``[0, 1]`` (all zeros if ``M`` is).
        ratios: One :class:`AreaRatio` per threshold.
        samples: How many inputs were averaged.
    """

    scores: Tensor
    normalized: Tensor
    ratios: tuple[AreaRatio, ...]
    samples: int

    @property
    def support(self) -> int:
        """Number of input positions with a nonzero contribution."""
        return int((self.scores > 0).sum())


def erf(
    model: Model,
    input_shape: Sequence[int],
    *,
    samples: int | None = None,
    inputs: Iterable[Tensor] | None = None,
    seed: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: bool = False,
) -> ERFResult:
    """Effective receptive field of ``model`` at the center of its output.

    The model runs on the device and in the dtype of its first parameter (CPU float32 if it has
    none) and in whatever mode it is in: call ``model.eval()`` first, as RepLKNet does, so that
    normalization uses running statistics.

    Args:
        model: A module or callable mapping ``(N, C, *S)`` to a feature map ``(N, C', *S')``
            with the same number of spatial axes; for a classifier pass its ``forward_features``.
        input_shape: ``(N, C, *S)`` with 1, 2 or 3 spatial axes.
        samples: Number of standard-normal random inputs (default 8); not with ``inputs``.
        inputs: Tensors of shape ``input_shape`` (real data) to average over instead.
        seed: Seed of the random inputs; the same seed gives the same map.
        thresholds: Shares ``t`` in ``(0, 1)`` for the area ratios.
        progress: Show a tqdm bar over the inputs (only on a terminal).

    Returns:
        The map, its normalized form and the area ratios.

    Raises:
        ValueError: For a bad shape, sample count, threshold, input shape or model output, or a
            non-finite gradient.
        TypeError: If ``model`` is not callable.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
        >>> _ = nn.init.ones_(conv.weight)  # every tap counts the same: D is 1 on the 5 x 5 window
        >>> result = erf(conv, (1, 8, 16, 16), samples=4)
        >>> result.support
        25
        >>> [(r.side, round(r.area_ratio, 4)) for r in result.ratios]  # 9/25 > 0.3, 25/25 > 0.99
        [(3, 0.0352), (3, 0.0352), (5, 0.0977), (5, 0.0977)]
    """
    shape = _check_shape(input_shape)
    thresholds = _check_thresholds(thresholds)
    if not callable(model):
        raise TypeError(f"erf: model must be a module or a callable, got {type(model).__name__}")
    if inputs is not None and samples is not None:
        raise ValueError("erf: pass either samples (random inputs) or inputs, not both")
    if inputs is None:
        count = DEFAULT_SAMPLES if samples is None else samples
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"erf: samples must be a positive int, got {samples!r}")
        inputs = _random_inputs(shape, count, seed)
        total: int | None = count
    else:
        total = len(inputs) if isinstance(inputs, Sequence) else None

    device, dtype = _device_and_dtype(model)
    scores = torch.zeros(shape[2:], dtype=torch.float64)
    used = 0
    bar = progress_bar(total=total, desc="erf", enabled=progress)
    try:
        for index, x in enumerate(inputs):
            if tuple(x.shape) != shape:
                raise ValueError(f"erf: input {index} has shape {tuple(x.shape)}, expected {shape}")
            scores += _contribution(model, x.to(device=device, dtype=dtype), index).cpu()
            used += 1
            bar.update()
    finally:
        bar.close()
    if used == 0:
        raise ValueError("erf: inputs is empty")
    scores /= used
    normalized = torch.log10(scores + 1)
    peak = normalized.max()
    if peak > 0:
        normalized = normalized / peak
    ratios = tuple(_area_ratio(normalized, t) for t in thresholds)
    return ERFResult(scores=scores, normalized=normalized, ratios=ratios, samples=used)


def recconv_erfs(
    spatial_dims: int,
    kernel_size: int,
    levels: Sequence[int],
    *,
    channels: int = 8,
    size: int | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: bool = False,
) -> list[tuple[str, ERFResult]]:
    """ERFs of randomly initialized RecConv layers, one per level, on one common input.

    The layers' weights come from ``seed`` (the global RNG is left alone). Random weights show how
    far the recursion reaches, not what training makes of it: pass a trained model to :func:`erf`
    for that.

    Args:
        spatial_dims: 1, 2 or 3.
        kernel_size: Odd base kernel ``k``.
        levels: The levels to compare.
        channels: Channels of every layer.
        size: Input size per axis; by default the largest receptive field plus ``2 k``, rounded up
            to a multiple of ``2**max(levels)``, so every level's ERF fits in the input.
        samples: Random inputs per level.
        seed: Seed of the weights and inputs.
        progress: Show tqdm bars (only on a terminal).

    Returns:
        ``(label, result)`` per level, the label being ``"level l (RF r)"``.
    """
    if not levels:
        raise ValueError("recconv_erfs: levels must name at least one level")
    layer_class = per_rank(RECCONV, spatial_dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [layer_class(channels, kernel_size, level) for level in levels]
    fields = [receptive_field(layer)[0] for layer in layers]
    if size is None:
        # A multiple of 2**level keeps every resize an exact doubling, as on an unbounded input;
        # other sizes bend the interpolation grid and widen the reach a little.
        step = 2 ** max(levels)
        size = -(-(max(fields) + 2 * kernel_size) // step) * step
    shape = (1, channels, *(size,) * spatial_dims)
    return [
        (
            f"level {layer.level} (RF {field})",
            erf(layer, shape, samples=samples, seed=seed, progress=progress),
        )
        for layer, field in zip(layers, fields)
    ]


def model_erf(
    name: str,
    *,
    size: int | Sequence[int] | None = None,
    checkpoint: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: bool = False,
) -> tuple[str, ERFResult]:
    """ERF of a named backbone from :func:`recconv.models.create_model`, at its last feature map.

    The model is built in eval mode on the CPU and fed its preset's input shape
    (``recconv.models.PRESETS[name].input_size``), or ``size`` (one int for every axis, or one per axis).

    Args:
        name: A name from ``recconv.models.list_models()``.
        size: Input size, an int for every axis or one per axis; default: the preset's input.
        checkpoint: Weights to load (``create_model(..., checkpoint_path=checkpoint)``).
        samples: Random inputs.
        seed: Seed of the inputs.
        progress: Show a tqdm bar (only on a terminal).

    Returns:
        ``(name, result)``.

    Raises:
        ValueError: If the name is unknown or ``size`` does not fit the preset's axes.
    """
    look_up(name, list_models(), what="model", owner="model_erf")
    options: dict[str, Any] = {} if checkpoint is None else {"checkpoint_path": checkpoint}
    model = create_model(name, **options).eval()
    channels, *spatial = PRESETS[name].input_size
    if size is not None:
        spatial = list(as_tuple(size, len(spatial), "size", "model_erf", minimum=1))
    shape = (1, channels, *spatial)
    return name, erf(model.forward_features, shape, samples=samples, seed=seed, progress=progress)


def checkpoint_erf(
    path: str | os.PathLike,
    *,
    size: int | Sequence[int] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: bool = False,
) -> tuple[str, ERFResult]:
    """ERF of a model a recconv example trained, rebuilt from its checkpoint alone
    (:func:`recconv.models.load_model`), at its last feature map.

    The input is what the model was trained on: its channels, and the spatial size the checkpoint's
    data info records (``input_size``; else the sequence ``length``, the video ``frames`` and
    ``size``, the image ``image_size`` or ``size``). For a front end that changes the size (the audio
    example's log-mel features) the checkpoint does not say it: pass ``size``.

    Args:
        path: A checkpoint an example wrote, e.g. ``runs/audio_keywords/recconv.pt``.
        size: Input size per spatial axis (an int for every axis, or one per axis) instead.
        samples: Random inputs.
        seed: Seed of the inputs.
        progress: Show a tqdm bar (only on a terminal).

    Returns:
        ``(file name without suffix, result)``, e.g. ``("recconv", ...)``.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file is no checkpoint with a model config, or neither it nor ``size``
            gives the input size.
    """
    model = load_model(path)
    dims = model.spatial_dims
    if size is None:
        data: dict[str, Any] = model.pretrained_cfg["data"]  # type: ignore[index,assignment]  # set by load_model
        spatial = _trained_size(data, dims)
        if spatial is None:
            raise ValueError(
                f"checkpoint_erf: {path} does not record the {dims}D input size the model was trained on "
                f"(its data info has {sorted(data)}); pass size (recconv erf --size N [N ...])"
            )
    else:
        spatial = as_tuple(size, dims, "size", "checkpoint_erf", minimum=1)
    shape = (1, model.in_chans, *spatial)
    return Path(path).stem, erf(model.forward_features, shape, samples=samples, seed=seed, progress=progress)


def _trained_size(data: dict[str, Any], spatial_dims: int) -> tuple[int, ...] | None:
    """The spatial input size an example's data info records, if it fits ``spatial_dims``."""
    if "input_size" in data:
        spatial = tuple(data["input_size"][1:])
    elif "length" in data:
        spatial = (data["length"],)
    elif "frames" in data:
        spatial = (data["frames"], *as_tuple(data["size"], 2, "size", "checkpoint_erf"))
    elif "image_size" in data:
        spatial = tuple(data["image_size"])
    elif "size" in data:
        spatial = (data["size"],) * spatial_dims
    else:
        return None
    return spatial if len(spatial) == spatial_dims else None


def ratio_table(results: Sequence[tuple[str, ERFResult]]) -> str:
    """A markdown table of the area ratios: ``side (share of the input)`` per threshold.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv1d(4, 4, 3, padding=1, groups=4, bias=False)
        >>> _ = nn.init.ones_(conv.weight)
        >>> print(ratio_table([("k=3", erf(conv, (1, 4, 9), samples=2))]))
        | model | support | t = 0.2 | t = 0.3 | t = 0.5 | t = 0.99 |
        |---|---|---|---|---|---|
        | k=3 | 3 | 1 (11.1%) | 1 (11.1%) | 3 (33.3%) | 3 (33.3%) |
    """
    thresholds = [r.threshold for r in results[0][1].ratios] if results else list(THRESHOLDS)
    lines = [
        "| model | support | " + " | ".join(f"t = {t:g}" for t in thresholds) + " |",
        "|---|---|" + "---|" * len(thresholds),
    ]
    for label, result in results:
        cells = [
            "none" if r.side is None or r.area_ratio is None else f"{r.side} ({100 * r.area_ratio:.3g}%)"
            for r in result.ratios
        ]
        lines.append(f"| {label} | {result.support} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    valid = all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    if not valid or not 3 <= len(shape) <= 5:
        raise ValueError(
            f"erf: input_shape must be (N, C, *spatial) with 1 to 3 spatial axes of positive sizes, "
            f"got {input_shape!r}"
        )
    return shape


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(thresholds)
    if not values or not all(isinstance(t, int | float) and 0 < t < 1 for t in values):
        raise ValueError(f"erf: thresholds must be numbers in (0, 1), got {thresholds!r}")
    return values


def _random_inputs(shape: tuple[int, ...], count: int, seed: int) -> Iterable[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) for _ in range(count))


def _device_and_dtype(model: Model) -> tuple[torch.device, torch.dtype]:
    # A bound method such as model.forward_features runs on its module's parameters.
    owner = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
    if isinstance(owner, nn.Module):
        for parameter in owner.parameters():
            if parameter.is_floating_point():
                return parameter.device, parameter.dtype
    return torch.device("cpu"), torch.float32


def _contribution(model: Model, x: Tensor, index: int) -> Tensor:
    """``M = sum over batch and channel of ReLU(ds/dx)`` for one input."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        if not isinstance(y, Tensor) or y.dim() != x.dim():
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(
                f"erf: the model must return a feature map (N, C, *spatial) with the input's "
                f"{x.dim() - 2} spatial axes, got {got}; for a classifier pass model.forward_features"
            )
        center: tuple[int | slice, ...] = (0, slice(None), *(n // 2 for n in y.shape[2:]))
        s = F.relu(y[center]).sum()
        # An output that does not depend on the input has no graph back to it: a zero gradient.
        grad = torch.autograd.grad(s, x, allow_unused=True)[0] if s.requires_grad else None
    if grad is None:
        return torch.zeros(x.shape[2:], dtype=torch.float64, device=x.device)
    if not torch.isfinite(grad).all():
        raise ValueError(f"erf: the gradient for input {index} is not finite")
    return F.relu(grad).sum(dim=(0, 1), dtype=torch.float64)


def _area_ratio(normalized: Tensor, threshold: float) -> AreaRatio:
    """The smallest centered box whose share of ``normalized.sum()`` exceeds ``threshold``."""
    total = normalized.sum()
    if total > 0:
        sizes = normalized.shape
        centers = [n // 2 for n in sizes]
        widest = max(max(c, n - 1 - c) for c, n in zip(centers, sizes))
        for radius in range(widest + 1):
            box = tuple(slice(max(c - radius, 0), c + radius + 1) for c in centers)
            inside = normalized[box]
            if inside.sum() / total > threshold:
                return AreaRatio(threshold, 2 * radius + 1, inside.numel() / math.prod(sizes))
    return AreaRatio(threshold, None, None)
