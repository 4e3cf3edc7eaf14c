"""The one table of named models: the paper's M0..M5 and A0..A5, and presets for audio, video and sequences.

A model is one :class:`Preset` entry of :data:`PRESETS`; everything else follows from the table:
:func:`list_models`, :func:`create_model`, the builder functions (``recconv.models.recnext_m0``,
...), timm registration and the official checkpoints' URLs (:data:`CHECKPOINT_URLS`).

Example:
    >>> from recconv.models import recnext_m0, recnext_a0
    >>> sum(p.numel() for p in recnext_m0(device="meta").parameters())
    2832420
    >>> sum(p.numel() for p in recnext_a0(device="meta").parameters())
    3115220
    >>> import torch
    >>> from recconv.models import create_model
    >>> model = create_model("recnext_video_tiny", num_classes=10, features_only=True)
    >>> for feature in model(torch.randn(1, 3, 8, 64, 64)):
    ...     print(tuple(feature.shape))
    (1, 24, 8, 16, 16)
    (1, 48, 8, 8, 8)
    (1, 96, 8, 4, 4)
    (1, 192, 8, 2, 2)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._util import look_up
from .checkpoint import load_checkpoint
from .recnext import RecNeXt

__all__ = [
    "CHECKPOINT_URLS",
    "PRESETS",
    "Preset",
    "create_model",
    "get_builder",
    "list_models",
    "register_timm_models",
]

_RELEASES = "https://github.com/suous/RecNeXt/releases/download"


@dataclass(frozen=True)
class Preset:
    """A named model: its :class:`~recconv.models.RecNeXt` arguments and what goes with them.

    Attributes:
        config: ``RecNeXt`` keyword arguments; a builder's keyword arguments override them.
        input_size: The ``(C, *spatial)`` input its costs are reported for.
        summary: One line for tables and the builder's docstring.
        distilled: Overrides that apply with ``distillation=True`` (unless given explicitly).
        checkpoints: Official checkpoint URLs by kind (``"distill"``, ``"without_distill"``).
    """

    config: dict[str, Any]
    input_size: tuple[int, ...]
    summary: str
    distilled: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: Mapping[str, str] = field(default_factory=dict)


def _paper(
    series: str, index: int, widths: tuple[int, ...], depths: tuple[int, ...], **config: Any
) -> Preset:
    """A preset of the paper's image models, with its official checkpoints' URLs."""
    release = {"m": "v1.0", "a": "v2.0"}[series]
    name = f"recnext_{series}{index}"
    checkpoints = {
        kind: f"{_RELEASES}/{release}/{name}_{kind}_300e.pth" for kind in ("distill", "without_distill")
    }
    if series == "a":  # RecAttn of level 1 in every stage, the same stochastic depth in every block
        config = {"token_mixer": "recattn", "mlp_ratio": 2.0, "drop_path_schedule": "uniform", **config}
    summary = f"RecNeXt-{series.upper()}{index}, ImageNet"
    # The paper's code trains the distilled A models without drop path.
    distilled = {"drop_path_rate": 0.0} if series == "a" else {}
    return Preset(
        {"widths": widths, "depths": depths, **config}, (3, 224, 224), summary, distilled, checkpoints
    )


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
    "recnext_m0": _paper("m", 0, (40, 80, 160, 320), (2, 2, 9, 1)),
    "recnext_m1": _paper("m", 1, (48, 96, 192, 384), (3, 3, 15, 2)),
    "recnext_m2": _paper("m", 2, (56, 112, 224, 448), (3, 3, 15, 2)),
    "recnext_m3": _paper("m", 3, (64, 128, 256, 512), (3, 3, 13, 2)),
    "recnext_m4": _paper("m", 4, (64, 128, 256, 512), (5, 5, 25, 4), drop_path_rate=0.2),
    "recnext_m5": _paper("m", 5, (80, 160, 320, 640), (7, 7, 35, 2), drop_path_rate=0.3),
    "recnext_a0": _paper("a", 0, (40, 80, 160, 320), (2, 2, 9, 1)),
    "recnext_a1": _paper("a", 1, (48, 96, 192, 384), (3, 3, 15, 2)),
    "recnext_a2": _paper("a", 2, (56, 112, 224, 448), (3, 3, 15, 2)),
    "recnext_a3": _paper("a", 3, (64, 128, 256, 512), (3, 3, 13, 2), mlp_ratio=1.875),
    "recnext_a4": _paper("a", 4, (64, 128, 256, 512), (5, 5, 25, 4), mlp_ratio=1.875, drop_path_rate=0.2),
    "recnext_a5": _paper("a", 5, (80, 160, 320, 640), (7, 7, 35, 2), mlp_ratio=1.875, drop_path_rate=0.3),
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


"""Every named model, in the order :func:`list_models` gives them. Adding an entry adds a model."""

CHECKPOINT_URLS: dict[str, Mapping[str, str]] = {
    name: preset.checkpoints for name, preset in PRESETS.items() if preset.checkpoints
}
"""The official ImageNet-1k checkpoints (300 epochs, with and without distillation) of the paper's
repository; they hold ``{"model": state_dict}`` and load with :func:`load_checkpoint`."""


def _build(name: str, distillation: bool = False, **overrides: Any) -> RecNeXt:
    preset = PRESETS[name]
    if distillation:
        overrides = {**preset.distilled, **overrides}
    return RecNeXt(**{**preset.config, **overrides}, distillation=distillation)


def get_builder(name: str) -> Callable[..., RecNeXt]:
    """The builder function of a named model, ``recconv.models.<name>``; a ``ValueError`` lists the
    valid names otherwise. Its keyword arguments override the preset's ``RecNeXt`` arguments."""
    look_up(name, PRESETS, what="model", owner="create_model")  # before the cache, which needs a hashable
    return _builder(name)


@functools.cache
def _builder(name: str) -> Callable[..., RecNeXt]:
    builder = functools.partial(_build, name)
    functools.update_wrapper(builder, _build)
    builder.__name__ = builder.__qualname__ = name  # type: ignore[attr-defined]
    builder.__doc__ = (
        f"{PRESETS[name].summary}: input (N, {', '.join(map(str, PRESETS[name].input_size))}).\n\n"
        "Keyword arguments override the preset's :class:`~recconv.models.RecNeXt` arguments."
    )
    return builder


def list_models() -> list[str]:
    """Names :func:`create_model` accepts, in table order.

    Example:
        >>> from recconv.models import list_models
        >>> list_models()[:2], list_models()[-1]
        (['recnext_m0', 'recnext_m1'], 'recnext_seq_tiny')
    """
    return list(PRESETS)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    distillation: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
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
        out_indices: Stages to return with ``features_only`` (default: all); an int ``n`` means
            the last ``n`` stages, as in timm.
        checkpoint_path: A checkpoint loaded strictly (see :func:`load_checkpoint`) into the full
            model before ``features_only`` drops the classifier, so ImageNet checkpoints work
            for feature extraction too.
        **kwargs: Further :class:`~recconv.models.RecNeXt` arguments overriding the preset.

    Raises:
        ValueError: For an unknown name (with the valid names) and invalid arguments.
        TypeError: For a name that is not a string, or a ``checkpoint_path`` that is no path.

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
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a model name (str), got {type(name).__name__}")
    builder = get_builder(name)
    for flag, value in (("distillation", distillation), ("features_only", features_only)):
        if not isinstance(value, bool):
            raise TypeError(f"create_model: {flag} must be True or False, got {value!r}")
    if checkpoint_path is not None and not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(
            f"create_model: checkpoint_path must be a path (str or os.PathLike), got {checkpoint_path!r}"
        )
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
    for name in PRESETS:
        if not is_model(name):
            register_model(_timm_entrypoint(name))
            registered.append(name)
    return registered


def _timm_entrypoint(name: str) -> Callable[..., RecNeXt]:
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
    entrypoint.__doc__ = get_builder(name).__doc__
    return entrypoint
