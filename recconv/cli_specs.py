"""Model specs of ``recconv swap``: ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn


class SpecError(ValueError):
    """A model spec for :func:`load_model` that names nothing buildable."""


def _torchvision(name: str) -> nn.Module:
    try:
        from torchvision import models
    except ImportError as error:
        raise SpecError(f"torchvision is not installed ({error}); pip install torchvision") from None
    names = models.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"unknown torchvision model {name!r}; see torchvision.models.list_models().{hint}")
    builder = models.get_model_builder(name)
    # Detection builders default to a pretrained backbone; nothing may be downloaded here.
    backbone = (
        {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
    )
    return builder(weights=None, **backbone)


def _timm(name: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise SpecError(
            f"timm is not installed, so 'timm:{name}' cannot be built; pip install timm"
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"unknown timm model {name!r}; see timm.list_models().{hint}")
    return timm.create_model(name, pretrained=False)


_SOURCES: dict[str, Callable[[str], nn.Module]] = {"torchvision": _torchvision, "timm": _timm}


def _factory(path: str, attribute: str) -> nn.Module:
    try:
        target: Any = importlib.import_module(path)
    except ImportError as error:
        raise SpecError(f"cannot import module {path!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecError(f"module {path!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(f"{path}:{attribute} is not callable, expected a factory returning an nn.Module")
    model = target()
    if not isinstance(model, nn.Module):
        raise SpecError(f"{path}:{attribute}() returned {type(model).__name__}, expected an nn.Module")
    return model


def load_model(spec: str) -> nn.Module:
    """Build a model from ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``, without weights.

    torchvision and timm models are built with random weights (``weights=None``,
    ``pretrained=False``), so nothing is downloaded. ``module.path:factory`` imports the
    module and calls the named attribute (a dotted path such as ``Class.build`` works)
    with no arguments; nothing is evaluated.

    Raises:
        SpecError: (a ``ValueError``) for a malformed spec, an unknown model, a missing
            package, module or attribute, or a factory that returns no ``nn.Module``.

    Example:
        >>> type(load_model("torch.nn:Identity")).__name__
        'Identity'
    """
    source, colon, name = spec.partition(":")
    if not (colon and source and name):
        raise SpecError(
            f"a model spec is 'torchvision:NAME', 'timm:NAME' or 'module.path:factory', got {spec!r}"
        )
    if source in _SOURCES:
        return _SOURCES[source](name)
    return _factory(source, name)
