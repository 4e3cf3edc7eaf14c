"""The official RecNeXt checkpoints' state_dict layouts (copied from shared/reference into tests/data)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

DATA = Path(__file__).parent / "data"
SERIES = {"recnext_m": "recnext_m_state_dict_layout.json", "recnext_a": "recnext_a_state_dict_layout.json"}


@functools.cache
def _series(file: str) -> dict:
    return json.loads((DATA / file).read_text())


def official_layout(name: str) -> dict:
    """``{"state_dict": {key: shape}, "num_params": int}`` of an official M or A model."""
    return _series(SERIES[name[:-1]])[name]
