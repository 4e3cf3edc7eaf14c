"""What :func:`recconv.swap` changes and why: the walk over a model, the rules per conv, the plan.

Planning reads the model and never changes it; :mod:`recconv.swap` builds and commits the plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from ._util import CONV, as_tuple
from .branch import RecBranch
from .core import RecConvNd
from .swap_report import SkippedLayer, format_axes

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_NAMES = {c.__name__ for c in (*CONV, *_TRANSPOSED)}  # a scripted conv keeps its class name

Predicate = Callable[[str, nn.Module], bool]
ConvNd = nn.Conv1d | nn.Conv2d | nn.Conv3d


def describe(module: nn.Module) -> str:
    return f"{type(module).__name__}({module.extra_repr()})"


def _keeps_size(conv: ConvNd) -> bool:
    if isinstance(conv.padding, str):  # "same" or "valid"
        return conv.padding == "same" or all(k == 1 for k in conv.kernel_size)
    return all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))


def _is_depthwise(conv: ConvNd) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def _dropped_by_replacing(
    conv: ConvNd, holders: dict[int, list[tuple[str, nn.Module]]], inside: str | None
) -> list[str]:
    """What a RecConv in the conv's place would silently lose: parametrizations and ties."""
    reasons = []
    if inside is not None:
        reasons.append(f"also used as {inside!r}, where swap does not look: a RecConv would untie them")
    if parametrize.is_parametrized(conv):
        # a ModuleDict of ParametrizationLists set by torch.nn.utils.parametrize; the stubs see Tensor | Module
        parametrizations = cast(Mapping[str, nn.ModuleList], conv.parametrizations)
        found = [f"{type(p).__name__} on {t}" for t, ps in parametrizations.items() for p in ps]
        reasons.append(f"parametrized ({', '.join(found)}): a RecConv would drop the parametrization")
    hooks = [
        type(h).__name__ for h in conv._forward_pre_hooks.values() if isinstance(h, SpectralNorm | WeightNorm)
    ]
    if hooks:
        reasons.append(f"{', '.join(hooks)} hook: a RecConv would drop it")
    for attr, param in conv.named_parameters(recurse=False):
        others = [name for name, module in holders.get(id(param), []) if module is not conv]
        if others:
            reasons.append(f"{attr} is tied to {others[0]!r}: a RecConv would untie them")
    return reasons


def _why_not_replaceable(conv: ConvNd, dense: str | None) -> list[str]:
    """What stops RecConv from standing in for this conv (empty if nothing does)."""
    reasons = []
    if not _is_depthwise(conv):
        hint = (
            "; dense='branch' adds a RecConv before it" if dense is None and not _why_no_branch(conv) else ""
        )
        reasons.append(
            f"not depthwise (groups={conv.groups}, in_channels={conv.in_channels}, "
            f"out_channels={conv.out_channels}){hint}"
        )
    if any(s != 1 for s in conv.stride):
        reasons.append(f"stride {conv.stride}: RecConv keeps the input size")
    if any(d != 1 for d in conv.dilation):
        reasons.append(f"dilation {conv.dilation}: RecConv kernels are dense")
    if any(k % 2 == 0 for k in conv.kernel_size):
        reasons.append(f"even kernel {conv.kernel_size}: RecConv kernels are odd")
    elif not _keeps_size(conv):
        reasons.append(f"padding {conv.padding} changes the size; RecConv keeps it")
    if conv.padding_mode != "zeros":
        reasons.append(f"padding_mode {conv.padding_mode!r}: RecConv pads with zeros")
    return reasons


def _why_not_replaced_by_default(conv: ConvNd) -> list[str]:
    """Why a conv RecConv could replace is still left alone unless a predicate selects it."""
    reasons = []
    if math.prod(conv.kernel_size) == 1:
        reasons.append("1x1 kernel: no spatial mixing to enlarge")
    if conv.in_channels == 1:
        reasons.append("single channel: as dense as it is depthwise")
    if type(conv) not in CONV:
        reasons.append(f"{type(conv).__name__} subclasses an nn.ConvNd and may change its forward")
    return reasons


def _why_no_branch(conv: ConvNd) -> list[str]:
    """Why a dense conv gets no branch unless a predicate selects it."""
    reasons = []
    if any(s != 1 for s in conv.stride):
        reasons.append(f"stride {conv.stride}: a branch goes before stride-1 convs")
    if math.prod(conv.kernel_size) == 1:
        reasons.append("1x1 kernel: a pointwise conv mixes no positions")
    return reasons


@dataclass
class _Found:
    name: str
    module: nn.Module
    slots: list[tuple[nn.Module, str]]  # (parent, attribute) holding the module; empty for the root
    inside: str | None = None  # a name under a leaf where the same module is used too


def _is_leaf(module: nn.Module) -> bool:
    return isinstance(module, (RecConvNd, RecBranch, *CONV, *_TRANSPOSED, torch.jit.ScriptModule))


def _walk(model: nn.Module) -> list[_Found]:
    """Every conv, RecConv and branch once, with every slot that holds it; convs inside
    scripted modules too (with no slots: they cannot be replaced). Nothing inside a leaf."""
    found: dict[int, _Found] = {}
    inside: dict[int, str] = {}  # modules used under a leaf, which the walk does not enter
    leaf = None  # the name of the leaf whose submodules are being passed over
    for name, module in model.named_modules(remove_duplicate=False):
        if leaf is not None and (leaf == "" or name.startswith(leaf + ".")):
            inside.setdefault(id(module), name)
            continue
        if not _is_leaf(module):
            continue
        leaf = name
        if isinstance(module, torch.jit.ScriptModule):
            for inner, sub in module.named_modules():
                if getattr(sub, "original_name", None) in _CONV_NAMES:
                    full = f"{name}.{inner}" if name and inner else name or inner
                    found.setdefault(id(sub), _Found(full or "(model)", sub, []))
            continue
        entry = found.setdefault(id(module), _Found(name or "(model)", module, []))
        if name:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            if not any(p is parent and a == attr for p, a in entry.slots):  # a shared parent is met twice
                entry.slots.append((parent, attr))
    for entry in found.values():
        entry.inside = inside.get(id(entry.module))
    return list(found.values())


@dataclass
class Target:
    name: str
    conv: ConvNd
    change: str  # "replaced" or "branch"
    kernel: tuple[int, ...]
    slots: list[tuple[nn.Module, str]]  # (parent, attribute) holding the conv; empty for the root
    sizes: list[tuple[int, ...]] = field(default_factory=list)  # spatial input size of each call


def _decide(
    found: _Found,
    dense: str | None,
    predicate: Predicate | None,
    holders: dict[int, list[tuple[str, nn.Module]]],
) -> tuple[str | None, list[str]]:
    """``(change, [])`` for a conv to change, ``(None, reasons)`` for one to leave in place."""
    module, name = found.module, found.name
    if isinstance(module, torch.jit.ScriptModule):
        return None, [
            "scripted (torch.jit.ScriptModule): its compiled code cannot change; swap before scripting"
        ]
    if isinstance(module, RecConvNd):
        return None, ["already a RecConv (swap never looks inside one)"]
    if isinstance(module, RecBranch):
        return None, ["already a RecBranch (swap never looks inside one)"]
    if not isinstance(module, CONV):  # the only leaves left are transposed convs
        return None, [f"transposed conv: swap changes {', '.join(c.__name__ for c in CONV)} only"]
    if is_lazy(module.weight):
        return None, ["uninitialized lazy conv: run one forward pass first"]
    if dense is None or _is_depthwise(module):
        change = "replaced"
        impossible = _why_not_replaceable(module, dense) or _dropped_by_replacing(
            module, holders, found.inside
        )
        not_by_default = _why_not_replaced_by_default(module)
    else:
        change = "branch"
        impossible = []
        not_by_default = _why_no_branch(module)
    if impossible:
        return None, impossible
    if predicate is not None:
        chosen = predicate(name, module)
        return (change, []) if chosen else (None, [f"predicate returned {chosen!r}"])
    if not_by_default:
        return None, [f"{r} (a predicate can select it)" for r in not_by_default]
    return change, []


def plan(
    owner: str,
    model: nn.Module,
    kernel_size: int | Sequence[int] | None,
    init: str,
    dense: str | None,
    predicate: Predicate | None,
    options: dict[str, Any],
) -> tuple[list[Target], list[SkippedLayer]]:
    """Decide what to change, checking everything before the model is touched."""
    holders: dict[int, list[tuple[str, nn.Module]]] = {}  # who holds each parameter, to find ties
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), []).append((name or "(model)", module))
    targets, skipped = [], []
    for found in _walk(model):
        change, reasons = _decide(found, dense, predicate, holders)
        if change is None:
            skipped.append(SkippedLayer(found.name, describe(found.module), "; ".join(reasons)))
            continue
        conv, name = cast(ConvNd, found.module), found.name  # _decide changes convs only
        old_kernel = tuple(conv.kernel_size)
        if kernel_size is not None:
            kernel = as_tuple(kernel_size, len(old_kernel), "kernel_size", f"{owner} at {name!r}")
        elif any(k % 2 == 0 for k in old_kernel):
            raise ValueError(
                f"{owner}: the {format_axes(old_kernel)} kernel of {name!r} is even, and RecConv kernels are "
                "odd; pass an odd kernel_size for its branch, or a predicate that leaves it out"
            )
        else:
            kernel = old_kernel
        if change == "replaced" and init == "preserve":
            if any(n < o for n, o in zip(kernel, old_kernel)):
                raise ValueError(
                    f"{owner}: init='preserve' cannot fit the {format_axes(old_kernel)} kernel of {name!r} "
                    f"into a {format_axes(kernel)} base kernel; use kernel_size >= {max(old_kernel)}, "
                    "kernel_size=None or init='random'"
                )
            if options.get("causal", False) is not False:
                raise ValueError(
                    f"{owner}: init='preserve' cannot keep a centered conv's outputs in a causal RecConv "
                    f"(causal={options['causal']!r}); use init='random'"
                )
        targets.append(Target(name, conv, change, kernel, found.slots))
    return targets, skipped
