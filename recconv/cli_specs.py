"""Model specs of ``recconv swap``: ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from types import ModuleType
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
    return _call(f"torchvision:{name}", lambda: builder(weights=None, **backbone))


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
    return _call(f"timm:{name}", lambda: timm.create_model(name, pretrained=False))


_SOURCES: dict[str, Callable[[str], nn.Module]] = {"torchvision": _torchvision, "timm": _timm}


def _call(spec: str, build: Callable[[], object]) -> nn.Module:
    """``build()``, with any error it raises, or a result that is not a module, as a :class:`SpecError`."""
    try:
        model = build()
    except Exception as error:
        raise SpecError(f"{spec}() failed: {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise SpecError(f"{spec}() returned {type(model).__name__}, expected an nn.Module")
    return model


def _builds_a_module(target: object, module: ModuleType) -> bool:
    """An ``nn.Module`` subclass, or a function (plain, static or class method) defined in ``module``.

    Builtins such as ``sys.exit`` or ``os.system``, and functions a module merely imported,
    are refused: a spec names a model builder, not any callable.
    """
    if inspect.isclass(target):
        return issubclass(target, nn.Module)
    function = getattr(target, "__func__", target)  # a classmethod is bound: look at its function
    return inspect.isfunction(function) and function.__module__ == module.__name__


def _factory(path: str, attribute: str) -> nn.Module:
    try:
        module = importlib.import_module(path)
    except ImportError as error:
        raise SpecError(f"cannot import module {path!r}: {error}") from None
    except Exception as error:  # the module's own code failed
        raise SpecError(f"cannot import module {path!r}: {type(error).__name__}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecError(f"module {path!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    spec = f"{path}:{attribute}"
    if not _builds_a_module(target, module):
        what = f"the class {target.__name__}" if inspect.isclass(target) else f"a {type(target).__name__}"
        raise SpecError(
            f"{spec} is not a model builder ({what}); a spec calls only an nn.Module subclass or a "
            f"function defined in module {path!r}"
        )
    return _call(spec, target)


def load_model(spec: str) -> nn.Module:
    """Build a model from ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``, without weights.

    torchvision and timm models are built with random weights (``weights=None``,
    ``pretrained=False``), so nothing is downloaded. ``module.path:factory`` imports the
    module and calls the named attribute with no arguments, if it is an ``nn.Module``
    subclass or a function defined in that module (a dotted path such as ``Class.build``
    works for static and class methods); builtins such as ``sys:exit`` and functions the
    module only imported are refused. Nothing is evaluated.

    Raises:
        SpecError: (a ``ValueError``) for a malformed spec, an unknown model, a missing
            package, module or attribute, an attribute that is not a model builder, a module
            or builder that raises (the error is named), or a builder that returns no
            ``nn.Module``.

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
