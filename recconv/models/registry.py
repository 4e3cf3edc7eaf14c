"""Named RecNeXt models: the paper's M0..M5 and A0..A5, and presets for audio, video and sequences.

Each name has one builder function (``recnext_m0(**kwargs)``, ...) whose keyword arguments
override the preset's :class:`~recconv.models.RecNeXt` arguments; :func:`create_model` adds
checkpoint loading and the feature-extraction switch on top.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import load_checkpoint
from .recnext import RecNeXt

__all__ = [
    "CHECKPOINT_URLS",
    "PRESETS",
    "Costs",
    "Preset",
    "costs_table",
    "create_model",
    "get_builder",
    "list_models",
    "model_costs",
    "register_timm_models",
    "recnext_m0",
    "recnext_m1",
    "recnext_m2",
    "recnext_m3",
    "recnext_m4",
    "recnext_m5",
    "recnext_a0",
    "recnext_a1",
    "recnext_a2",
    "recnext_a3",
    "recnext_a4",
    "recnext_a5",
    "recnext_audio_tiny",
    "recnext_audio_small",
    "recnext_video_tiny",
    "recnext_video_small",
    "recnext_seq_tiny",
]

_RELEASES = "https://github.com/suous/RecNeXt/releases/download"

CHECKPOINT_URLS: dict[str, dict[str, str]] = {
    f"recnext_{series}{i}": {
        "distill": f"{_RELEASES}/{release}/recnext_{series}{i}_distill_300e.pth",
        "without_distill": f"{_RELEASES}/{release}/recnext_{series}{i}_without_distill_300e.pth",
    }
    for series, release in (("m", "v1.0"), ("a", "v2.0"))
    for i in range(6)
}
"""The official ImageNet-1k checkpoints (300 epochs, with and without distillation) of the paper's
repository; they hold ``{"model": state_dict}`` and load with :func:`load_checkpoint` unchanged."""


class Preset(NamedTuple):
    """A named configuration: RecNeXt arguments and the input its costs are reported for."""

    config: dict[str, Any]
    input_size: tuple[int, ...]
    summary: str


def _image(widths: tuple[int, ...], depths: tuple[int, ...], drop_path_rate: float = 0.0) -> dict[str, Any]:
    return {"widths": widths, "depths": depths, "drop_path_rate": drop_path_rate}


def _attention(
    widths: tuple[int, ...], depths: tuple[int, ...], mlp_ratio: float = 2.0, drop_path_rate: float = 0.0
) -> dict[str, Any]:
    # The paper's A series: RecAttn of level 1 in every stage, the same stochastic depth in every block.
    return {
        **_image(widths, depths, drop_path_rate),
        "token_mixer": "recattn",
        "mlp_ratio": mlp_ratio,
        "drop_path_schedule": "uniform",
    }


_AUDIO = {
    "spatial_dims": 2,
    "in_chans": 1,
    "num_classes": 12,
    "stem_strides": ((2, 1), (2, 2)),  # keep twice the time resolution of the mel axis
    "levels": (3, 2, 1, 1),
}
_VIDEO = {
    "spatial_dims": 3,
    "num_classes": 400,
    "kernel_size": (3, 5, 5),
    "factor": (1, 2, 2),  # RecConv never pools time
    "stem_strides": ((1, 2, 2), (1, 2, 2)),
    "down_stride": (1, 2, 2),  # temporal stride 1, as X3D and MoViNet
    "down_kernel_size": (3, 7, 7),
}

PRESETS: dict[str, Preset] = {
    "recnext_m0": Preset(_image((40, 80, 160, 320), (2, 2, 9, 1)), (3, 224, 224), "RecNeXt-M0, ImageNet"),
    "recnext_m1": Preset(_image((48, 96, 192, 384), (3, 3, 15, 2)), (3, 224, 224), "RecNeXt-M1, ImageNet"),
    "recnext_m2": Preset(_image((56, 112, 224, 448), (3, 3, 15, 2)), (3, 224, 224), "RecNeXt-M2, ImageNet"),
    "recnext_m3": Preset(_image((64, 128, 256, 512), (3, 3, 13, 2)), (3, 224, 224), "RecNeXt-M3, ImageNet"),
    "recnext_m4": Preset(
        _image((64, 128, 256, 512), (5, 5, 25, 4), 0.2), (3, 224, 224), "RecNeXt-M4, ImageNet"
    ),
    "recnext_m5": Preset(
        _image((80, 160, 320, 640), (7, 7, 35, 2), 0.3), (3, 224, 224), "RecNeXt-M5, ImageNet"
    ),
    "recnext_a0": Preset(_attention((40, 80, 160, 320), (2, 2, 9, 1)), (3, 224, 224), "RecNeXt-A0, ImageNet"),
    "recnext_a1": Preset(
        _attention((48, 96, 192, 384), (3, 3, 15, 2)), (3, 224, 224), "RecNeXt-A1, ImageNet"
    ),
    "recnext_a2": Preset(
        _attention((56, 112, 224, 448), (3, 3, 15, 2)), (3, 224, 224), "RecNeXt-A2, ImageNet"
    ),
    "recnext_a3": Preset(
        _attention((64, 128, 256, 512), (3, 3, 13, 2), 1.875), (3, 224, 224), "RecNeXt-A3, ImageNet"
    ),
    "recnext_a4": Preset(
        _attention((64, 128, 256, 512), (5, 5, 25, 4), 1.875, 0.2), (3, 224, 224), "RecNeXt-A4, ImageNet"
    ),
    "recnext_a5": Preset(
        _attention((80, 160, 320, 640), (7, 7, 35, 2), 1.875, 0.3), (3, 224, 224), "RecNeXt-A5, ImageNet"
    ),
    "recnext_audio_tiny": Preset(
        {**_AUDIO, "widths": (16, 32, 48, 64), "depths": (1, 1, 1, 1)},
        (1, 64, 100),
        "log-mel (N, 1, mels, frames), keyword spotting",
    ),
    "recnext_audio_small": Preset(
        {**_AUDIO, "widths": (32, 64, 96, 128), "depths": (1, 2, 2, 2)},
        (1, 64, 100),
        "log-mel (N, 1, mels, frames), keyword spotting",
    ),
    "recnext_video_tiny": Preset(
        {**_VIDEO, "widths": (24, 48, 96, 192), "depths": (1, 2, 3, 1)},
        (3, 16, 112, 112),
        "clips (N, 3, T, H, W), temporal resolution kept",
    ),
    "recnext_video_small": Preset(
        {**_VIDEO, "widths": (40, 80, 160, 320), "depths": (2, 2, 6, 2)},
        (3, 16, 112, 112),
        "clips (N, 3, T, H, W), temporal resolution kept",
    ),
    "recnext_seq_tiny": Preset(
        {
            "spatial_dims": 1,
            "in_chans": 1,
            "num_classes": 10,
            "widths": (16, 32, 64, 128),
            "depths": (1, 1, 2, 1),
        },
        (1, 1024),
        "sequences (N, C, L): time series, 1D audio front ends",
    ),
}


def _build(name: str, overrides: dict[str, Any]) -> RecNeXt:
    return RecNeXt(**{**PRESETS[name].config, **overrides})


def recnext_m0(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M0 (widths 40-320, depths 2, 2, 9, 1) for ``(N, 3, H, W)`` images.

    Keyword arguments override the preset's :class:`~recconv.models.RecNeXt` arguments.

    Example:
        >>> from recconv.models import recnext_m0
        >>> sum(p.numel() for p in recnext_m0(device="meta").parameters())
        2832420
    """
    return _build("recnext_m0", kwargs)


def recnext_m1(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M1 (widths 48-384, depths 3, 3, 15, 2) for ``(N, 3, H, W)`` images."""
    return _build("recnext_m1", kwargs)


def recnext_m2(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M2 (widths 56-448, depths 3, 3, 15, 2) for ``(N, 3, H, W)`` images."""
    return _build("recnext_m2", kwargs)


def recnext_m3(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M3 (widths 64-512, depths 3, 3, 13, 2) for ``(N, 3, H, W)`` images."""
    return _build("recnext_m3", kwargs)


def recnext_m4(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M4 (widths 64-512, depths 5, 5, 25, 4, drop path 0.2) for ``(N, 3, H, W)`` images."""
    return _build("recnext_m4", kwargs)


def recnext_m5(**kwargs: Any) -> RecNeXt:
    """RecNeXt-M5 (widths 80-640, depths 7, 7, 35, 2, drop path 0.3) for ``(N, 3, H, W)`` images."""
    return _build("recnext_m5", kwargs)


def _build_attention(name: str, overrides: dict[str, Any]) -> RecNeXt:
    if overrides.get("distillation"):  # the paper's code trains the distilled A models without drop path
        overrides.setdefault("drop_path_rate", 0.0)
    return _build(name, overrides)


def recnext_a0(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A0 (widths 40-320, depths 2, 2, 9, 1, RecAttn token mixers) for ``(N, 3, H, W)`` images.

    Keyword arguments override the preset's :class:`~recconv.models.RecNeXt` arguments.

    Example:
        >>> from recconv.models import recnext_a0
        >>> sum(p.numel() for p in recnext_a0(device="meta").parameters())
        3115220
    """
    return _build_attention("recnext_a0", kwargs)


def recnext_a1(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A1 (widths 48-384, depths 3, 3, 15, 2, RecAttn) for ``(N, 3, H, W)`` images."""
    return _build_attention("recnext_a1", kwargs)


def recnext_a2(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A2 (widths 56-448, depths 3, 3, 15, 2, RecAttn) for ``(N, 3, H, W)`` images."""
    return _build_attention("recnext_a2", kwargs)


def recnext_a3(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A3 (widths 64-512, depths 3, 3, 13, 2, MLP ratio 1.875, RecAttn) for ``(N, 3, H, W)``."""
    return _build_attention("recnext_a3", kwargs)


def recnext_a4(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A4 (widths 64-512, depths 5, 5, 25, 4, MLP ratio 1.875, RecAttn) for ``(N, 3, H, W)``.

    Drop path 0.2 in every block, or 0 with ``distillation=True``, as in the paper's code.
    """
    return _build_attention("recnext_a4", kwargs)


def recnext_a5(**kwargs: Any) -> RecNeXt:
    """RecNeXt-A5 (widths 80-640, depths 7, 7, 35, 2, MLP ratio 1.875, RecAttn) for ``(N, 3, H, W)``.

    Drop path 0.3 in every block, or 0 with ``distillation=True``, as in the paper's code.
    """
    return _build_attention("recnext_a5", kwargs)


def recnext_audio_tiny(**kwargs: Any) -> RecNeXt:
    """A keyword-spotting sized 2D RecNeXt for log-mel spectrograms ``(N, 1, mels, frames)``.

    Widths 16-64, 12 classes (Speech Commands v2-12; pass ``num_classes=35`` for all words).

    Example:
        >>> import torch
        >>> from recconv.models import recnext_audio_tiny
        >>> model = recnext_audio_tiny(num_classes=35).eval()
        >>> model(torch.randn(2, 1, 40, 101)).shape
        torch.Size([2, 35])
    """
    return _build("recnext_audio_tiny", kwargs)


def recnext_audio_small(**kwargs: Any) -> RecNeXt:
    """A larger 2D RecNeXt (widths 32-128) for log-mel spectrograms ``(N, 1, mels, frames)``."""
    return _build("recnext_audio_small", kwargs)


def recnext_video_tiny(**kwargs: Any) -> RecNeXt:
    """A 3D RecNeXt for clips ``(N, 3, T, H, W)`` that never strides or pools time.

    Pass ``stem_strides=((2, 2, 2), (1, 2, 2))`` (say) to halve the frames in the stem.

    Example:
        >>> import torch
        >>> from recconv.models import recnext_video_tiny
        >>> model = recnext_video_tiny(num_classes=10, features_only=True)
        >>> for feature in model(torch.randn(1, 3, 8, 64, 64)):
        ...     print(tuple(feature.shape))
        (1, 24, 8, 16, 16)
        (1, 48, 8, 8, 8)
        (1, 96, 8, 4, 4)
        (1, 192, 8, 2, 2)
    """
    return _build("recnext_video_tiny", kwargs)


def recnext_video_small(**kwargs: Any) -> RecNeXt:
    """A larger 3D RecNeXt (widths 40-320) for clips ``(N, 3, T, H, W)``, temporal stride 1."""
    return _build("recnext_video_small", kwargs)


def recnext_seq_tiny(**kwargs: Any) -> RecNeXt:
    """A 1D RecNeXt for sequences ``(N, C, L)`` (time series, learned audio front ends).

    Example:
        >>> import torch
        >>> from recconv.models import recnext_seq_tiny
        >>> model = recnext_seq_tiny(in_chans=6, num_classes=4).eval()
        >>> model(torch.randn(3, 6, 500)).shape
        torch.Size([3, 4])
    """
    return _build("recnext_seq_tiny", kwargs)


_BUILDERS: dict[str, Callable[..., RecNeXt]] = {
    builder.__name__: builder
    for builder in (
        recnext_m0,
        recnext_m1,
        recnext_m2,
        recnext_m3,
        recnext_m4,
        recnext_m5,
        recnext_a0,
        recnext_a1,
        recnext_a2,
        recnext_a3,
        recnext_a4,
        recnext_a5,
        recnext_audio_tiny,
        recnext_audio_small,
        recnext_video_tiny,
        recnext_video_small,
        recnext_seq_tiny,
    )
}


def list_models() -> list[str]:
    """Names :func:`create_model` accepts, in table order.

    Example:
        >>> from recconv.models import list_models
        >>> list_models()[:2], list_models()[-1]
        (['recnext_m0', 'recnext_m1'], 'recnext_seq_tiny')
    """
    return list(_BUILDERS)


def get_builder(name: str) -> Callable[..., RecNeXt]:
    """The builder function of ``name``; a ``ValueError`` lists the valid names otherwise."""
    if name in _BUILDERS:
        return _BUILDERS[name]
    close = difflib.get_close_matches(name, list(_BUILDERS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"create_model: unknown model {name!r}; expected one of {list(_BUILDERS)}.{hint}")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    distillation: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> RecNeXt:
    """Build a named model, optionally load a checkpoint, optionally keep only the stage outputs.

    Args:
        name: One of :func:`list_models`.
        num_classes: Classifier outputs (``None``: the preset's; ``0``: pooled features).
        in_chans: Input channels (``None``: the preset's).
        drop_path_rate: Stochastic depth (``None``: the preset's).
        distillation: In training, return the logits of both heads.
        features_only: Return the stage outputs listed in ``out_indices`` instead of logits.
        out_indices: Stages to return with ``features_only`` (default: all).
        checkpoint_path: A checkpoint loaded strictly (see :func:`load_checkpoint`) into the full
            model before ``features_only`` drops the classifier, so ImageNet checkpoints work
            for feature extraction too.
        **kwargs: Further :class:`~recconv.models.RecNeXt` arguments overriding the preset.

    Raises:
        ValueError: For an unknown name (with the valid names) and invalid arguments.

    Example:
        >>> import torch
        >>> from recconv.models import create_model
        >>> backbone = create_model("recnext_m0", features_only=True, out_indices=(1, 3))
        >>> tuple(info["reduction"] for info in backbone.feature_info)
        (8, 32)
        >>> for feature in backbone(torch.randn(1, 3, 64, 64)):
        ...     print(tuple(feature.shape))
        (1, 80, 8, 8)
        (1, 320, 2, 2)
    """
    builder = get_builder(name)
    options = {"num_classes": num_classes, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    kwargs.update({k: v for k, v in options.items() if v is not None})
    model = builder(distillation=distillation, **kwargs)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    if features_only:
        model.set_features_only(out_indices)
    elif out_indices is not None:
        raise ValueError("create_model: out_indices only applies with features_only=True")
    return model


class Costs(NamedTuple):
    """Parameters, parameters after :meth:`RecNeXt.fuse`, and multiply-accumulates of one input."""

    params: int
    fused_params: int
    macs: int


def model_costs(name: str, input_size: Sequence[int] | None = None) -> Costs:
    """Count a preset's parameters and MACs (FlopCounterMode FLOPs / 2: convs and linears) on the
    meta device, for one ``(C, *spatial)`` input (default: the preset's)."""
    model = create_model(name, device="meta").eval()
    size = tuple(PRESETS[name].input_size if input_size is None else input_size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, *size, device="meta"))
    fused_params = sum(p.numel() for p in model.fuse().parameters())
    return Costs(params, fused_params, counter.get_total_flops() // 2)


def costs_table(names: Sequence[str] | None = None) -> str:
    """A markdown table of :func:`model_costs` for ``names`` (default: all models)."""
    lines = ["| model | input (C, ...) | params | fused params | MACs | for |", "|---|---|---|---|---|---|"]
    for name in list_models() if names is None else names:
        costs = model_costs(name)
        size = " x ".join(map(str, PRESETS[name].input_size))
        lines.append(
            f"| `{name}` | {size} | {costs.params:,} | {costs.fused_params:,} | "
            f"{costs.macs / 1e6:,.1f} M | {PRESETS[name].summary} |"
        )
    return "\n".join(lines)


def register_timm_models() -> list[str]:
    """Register every builder with timm, so ``timm.create_model("recnext_audio_tiny")`` works.

    Names timm already has are left alone. ``pretrained=True`` is refused (nothing is
    downloaded); pass ``checkpoint_path`` instead.

    Returns:
        The names registered.

    Raises:
        ImportError: If timm is not installed.
    """
    try:
        from timm.models import is_model, register_model
    except ImportError as err:
        raise ImportError("register_timm_models: timm is not installed (pip install timm)") from err
    registered = []
    for name, builder in _BUILDERS.items():
        if not is_model(name):
            register_model(_timm_entrypoint(name, builder))
            registered.append(name)
    return registered


def _timm_entrypoint(name: str, builder: Callable[..., RecNeXt]) -> Callable[..., RecNeXt]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> RecNeXt:
        if pretrained:
            raise ValueError(
                f"{name}: recconv downloads nothing; get a checkpoint from "
                "recconv.models.CHECKPOINT_URLS and pass checkpoint_path=..."
            )
        for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(timm_only, None)
        return create_model(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = builder.__doc__
    return entrypoint
