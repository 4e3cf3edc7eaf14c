"""RecNeXt backbones for images (the paper's M0..M5 and A0..A5), audio, video and sequences.

Example:
    >>> import torch
    >>> from recconv.models import create_model, list_models
    >>> "recnext_audio_tiny" in list_models()
    True
    >>> model = create_model("recnext_audio_tiny", num_classes=35).eval()
    >>> model(torch.randn(2, 1, 64, 100)).shape
    torch.Size([2, 35])
"""

from .checkpoint import LoadResult, load_checkpoint, read_state_dict, save_checkpoint
from .pretrained import load_model
from .recnext import RecNeXt, RecNeXtStage
from .registry import (
    CHECKPOINT_URLS,
    PRESETS,
    Costs,
    Preset,
    costs_table,
    create_model,
    get_builder,
    list_models,
    model_costs,
    recnext_a0,
    recnext_a1,
    recnext_a2,
    recnext_a3,
    recnext_a4,
    recnext_a5,
    recnext_audio_small,
    recnext_audio_tiny,
    recnext_m0,
    recnext_m1,
    recnext_m2,
    recnext_m3,
    recnext_m4,
    recnext_m5,
    recnext_seq_tiny,
    recnext_video_small,
    recnext_video_tiny,
    register_timm_models,
)

__all__ = [
    "CHECKPOINT_URLS",
    "PRESETS",
    "Costs",
    "LoadResult",
    "Preset",
    "RecNeXt",
    "RecNeXtStage",
    "costs_table",
    "create_model",
    "get_builder",
    "list_models",
    "load_checkpoint",
    "load_model",
    "model_costs",
    "read_state_dict",
    "recnext_a0",
    "recnext_a1",
    "recnext_a2",
    "recnext_a3",
    "recnext_a4",
    "recnext_a5",
    "recnext_audio_small",
    "recnext_audio_tiny",
    "recnext_m0",
    "recnext_m1",
    "recnext_m2",
    "recnext_m3",
    "recnext_m4",
    "recnext_m5",
    "recnext_seq_tiny",
    "recnext_video_small",
    "recnext_video_tiny",
    "register_timm_models",
    "save_checkpoint",
]
