"""Rebuild a trained model from its checkpoint alone: the examples save the preset and its
overrides beside the weights, so no source has to be read to get the model back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .recnext import RecNeXt
from .registry import create_model


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"load_model: no checkpoint at {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for an empty, truncated or foreign file
        raise ValueError(f"load_model: {path} is not a readable checkpoint ({type(err).__name__})") from None
    return saved if isinstance(saved, dict) else {}


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The preset, its options and what the example knew about its data, from a checkpoint an
    example wrote: the ``pretrained_cfg`` of :func:`load_model`, without building the model.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file is not a readable checkpoint or holds no ``"model_config"``.
    """
    path = Path(path)
    saved = _read(path)
    config = saved.get("model_config")
    if not isinstance(config, dict) or not isinstance(config.get("preset"), str):
        example = saved.get("example")
        # An example's model that is no preset (examples/audio_streaming.py's causal one) has no config.
        hint = (
            f"examples/{example}.py wrote it and reloads it (--checkpoint)"
            if isinstance(example, str) and example.isidentifier()
            else "build it with create_model(...) and load the weights with load_checkpoint(model, path)"
        )
        raise ValueError(
            f"load_model: {path} holds no 'model_config' (preset and options) to rebuild the model from; {hint}"
        )
    return {
        "preset": config["preset"],
        "options": config.get("options", {}),
        "classes": saved.get("classes"),
        "front_end": saved.get("front_end", {}),
        "data": saved.get("data", {}),
        "example": saved.get("example"),
    }


def load_model(path: str | os.PathLike) -> RecNeXt:
    """The model a recconv example trained, rebuilt from its checkpoint, with its weights, in eval mode.

    The checkpoint names the preset and its overrides under ``"model_config"``; what the example
    knew about its data comes along as ``model.pretrained_cfg``: ``classes`` (the class names, in
    the order of the logits), ``front_end`` (the settings of an input transform, such as the
    audio example's log-mel features), ``data`` (the input sizes the model was trained on) and
    ``example``. The file is read with ``torch.load(weights_only=True)``: it cannot run code.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file is not a readable checkpoint, or holds weights without the
            ``"model_config"`` that rebuilds the model (then use :func:`create_model` and
            :func:`load_checkpoint`).

    Example:
        >>> import tempfile, torch
        >>> from recconv.models import create_model, load_model
        >>> options = {"num_classes": 3}
        >>> trained = create_model("recnext_seq_tiny", **options)
        >>> path = tempfile.mkdtemp() + "/model.pt"
        >>> config = {"preset": "recnext_seq_tiny", "options": options}
        >>> torch.save({"model": trained.state_dict(), "model_config": config, "classes": ["a", "b", "c"]}, path)
        >>> model = load_model(path)
        >>> model.pretrained_cfg["classes"], model.training
        (['a', 'b', 'c'], False)
    """
    config = read_model_config(path)
    model = create_model(config["preset"], **config["options"])
    load_checkpoint(model, path)
    model.pretrained_cfg = config  # type: ignore[assignment]
    return model.eval()
