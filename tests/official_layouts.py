"""The official RecNeXt checkpoints' state_dict layouts (copied from shared/reference into tests/data)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"
SERIES = {"recnext_m": "recnext_m_state_dict_layout.json", "recnext_a": "recnext_a_state_dict_layout.json"}


@functools.cache
def _series(file: str) -> dict:
    return json.loads((DATA / file).read_text())


def official_layout(name: str) -> dict:
    """``{"state_dict": {key: shape}, "num_params": int}`` of an official M or A model."""
    return _series(SERIES[name[:-1]])[name]


def official_format_checkpoint(name: str, path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Write a checkpoint shaped like the paper's release files (``{"model": state_dict}``) with random
    values in the official layout; return its state_dict."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(name)["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    torch.save({"model": state, "epoch": 299}, path)
    return state
