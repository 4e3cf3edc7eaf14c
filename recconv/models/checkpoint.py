"""Safe checkpoint reading and writing: ``.pth``/``.pt`` through ``torch.load(weights_only=True)``
and ``.safetensors``; nothing in a file can run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..attention import official_to_recconv

_SHOWN = 10  # keys listed per kind in an error; the rest are counted
_EXPECTED = "expected a state_dict written by torch.save (.pth/.pt) or safetensors (.safetensors)"


class LoadResult(NamedTuple):
    """What did not match when a checkpoint was loaded with ``strict=False``."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[str]


def _import_safetensors() -> ModuleType:
    try:
        import safetensors.torch
    except ImportError as err:
        raise ImportError(
            "recconv.models: reading or writing .safetensors needs the safetensors package "
            "(pip install safetensors, or recconv[test])"
        ) from err
    return safetensors.torch


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state_dict from ``.safetensors``, or from ``.pth``/``.pt`` holding it at the top level
    or under ``"model"`` or ``"state_dict"``; a ``"module."`` prefix on every key (DDP) is removed.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is empty, truncated or in another format (text, a zip that torch
            did not write, damaged safetensors), holds anything but tensors and plain containers
            (a pickle that could run code is refused, never executed) or holds no state_dict.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_checkpoint: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"load_checkpoint: {str(path)!r} is a folder; {_EXPECTED}")
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no such file {str(path)!r}")
    if path.stat().st_size == 0:
        raise ValueError(f"load_checkpoint: {str(path)!r} is empty; {_EXPECTED}")
    if path.suffix == ".safetensors":
        safetensors_torch = _import_safetensors()
        try:
            return safetensors_torch.load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError (header), or OSError, for damaged files
            raise ValueError(
                f"load_checkpoint: {str(path)!r} is not a readable .safetensors file ({err})"
            ) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported" not in str(err):  # not a refusal: the bytes are no pickle at all
            raise _unreadable(path, err) from None
        raise ValueError(
            f"load_checkpoint: refused {str(path)!r}: it is not a plain tensor checkpoint "
            f"({_unpickler_reason(err)}), and unpickling anything else could run code. Save a "
            "state_dict (torch.save(model.state_dict(), path)) or use .safetensors."
        ) from None
    except RuntimeError as err:
        if "TorchScript" not in str(err):  # a truncated file or a zip that torch did not write
            raise _unreadable(path, err) from None
        raise ValueError(
            f"load_checkpoint: {str(path)!r} is a TorchScript archive, not a state_dict; such files "
            "(the official *_fused.pt among them) load with torch.jit.load"
        ) from None
    except (EOFError, KeyError, IndexError, ValueError) as err:  # text or cut-off legacy pickles
        raise _unreadable(path, err) from None
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"load_checkpoint: {str(path)!r} holds no state_dict of tensors at the top level or under "
            f"'model' or 'state_dict' (top-level type {type(checkpoint).__name__})"
        )
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    return checkpoint


def _unreadable(path: Path, err: BaseException) -> ValueError:
    # A KeyError or EOFError from the unpickler says nothing readable; name the cause instead.
    first_line = str(err).splitlines()[0] if isinstance(err, RuntimeError) and str(err) else ""
    reason = first_line or "neither a torch.save zip nor a complete pickle"
    return ValueError(f"load_checkpoint: {str(path)!r} is not a readable checkpoint ({reason}); {_EXPECTED}")


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    # torch's message suggests weights_only=False; keep only the line that names the offending object.
    for line in str(err).splitlines():
        if "Unsupported" in line:
            return line.split("error:")[-1].split(". Please")[0].strip()
    return "unreadable"


def _listed(title: str, items: list[str]) -> str:
    more = f"; ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"\n  {title} ({len(items)}): " + "; ".join(items[:_SHOWN]) + more


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadResult:
    """Load a checkpoint into ``model`` without ever executing code from the file.

    Args:
        model: The model to fill.
        path: A ``.safetensors`` file, or a ``.pth``/``.pt`` file with the state_dict at the top
            level or under ``"model"`` (the official RecNeXt checkpoints) or ``"state_dict"``.
            The paper's RecAttn key names are converted (:func:`recconv.attention.official_to_recconv`).
        strict: Raise unless the keys and shapes match exactly; otherwise load the matching
            entries and report the rest.

    Returns:
        The missing, unexpected and wrongly shaped keys (all empty after a strict load).

    Raises:
        ValueError: With ``strict``, listing missing, unexpected and wrongly shaped keys; also
            for files :func:`read_state_dict` refuses.

    Example:
        >>> import tempfile, torch
        >>> from recconv.models import create_model, load_checkpoint, save_checkpoint
        >>> model = create_model("recnext_seq_tiny")
        >>> path = tempfile.mkdtemp() + "/seq.pth"
        >>> save_checkpoint(model, path)
        >>> load_checkpoint(create_model("recnext_seq_tiny"), path)
        LoadResult(missing_keys=[], unexpected_keys=[], mismatched_keys=[])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_checkpoint: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"load_checkpoint: strict must be True or False, got {strict!r}")
    state = official_to_recconv(read_state_dict(path), model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if strict and (missing or unexpected or mismatched):
        message = f"load_checkpoint: {str(path)!r} does not match {type(model).__name__}:"
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrongly shaped keys", mismatched),
        ):
            if items:
                message += _listed(title, items)
        raise ValueError(message)
    matching = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(matching, strict=False)
    return LoadResult(missing, unexpected, mismatched)


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``model.state_dict()`` as ``.safetensors`` (by suffix) or with ``torch.save`` otherwise.

    Raises:
        FileNotFoundError: If the folder of ``path`` does not exist.
    """
    folder = Path(path).parent
    if not folder.is_dir():
        raise FileNotFoundError(f"save_checkpoint: cannot write {str(path)!r}: no folder {str(folder)!r}")
    state = model.state_dict()
    if Path(path).suffix == ".safetensors":
        _import_safetensors().save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
