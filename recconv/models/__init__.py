"""RecNeXt backbones for images (the paper's M0..M5 and A0..A5), audio, video and sequences.

Every named model is an entry of :data:`PRESETS`; ``recconv.models.<name>`` is its builder.

Example:
    >>> import torch
    >>> from recconv.models import create_model, list_models
    >>> "recnext_audio_tiny" in list_models()
    True
    >>> model = create_model("recnext_audio_tiny", num_classes=35).eval()
    >>> model(torch.randn(2, 1, 64, 100)).shape
    torch.Size([2, 35])
"""

from collections.abc import Callable
from typing import Any

from .checkpoint import LoadResult, load_checkpoint, read_state_dict, save_checkpoint
from .recnext import RecAttnMixer, RecConvMixer, RecNeXt, RecNeXtStage
from .registry import (
    CHECKPOINT_URLS,
    PRESETS,
    Preset,
    create_model,
    get_builder,
    list_models,
    register_timm_models,
)

__all__ = [
    "CHECKPOINT_URLS",
    "PRESETS",
    "LoadResult",
    "Preset",
    "RecAttnMixer",
    "RecConvMixer",
    "RecNeXt",
    "RecNeXtStage",
    "create_model",
    "get_builder",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "register_timm_models",
    "save_checkpoint",
]


def __getattr__(name: str) -> Callable[..., Any]:
    # recconv.models.recnext_m0 and every other entry of PRESETS, from the one table.
    if name in PRESETS:
        return get_builder(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *PRESETS])
