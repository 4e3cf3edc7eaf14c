"""Module surgery: put RecConv in place of the depthwise convs of an existing network.

:func:`swap` walks a model with ``named_children``, replaces every depthwise ``nn.Conv1d``,
``nn.Conv2d`` or ``nn.Conv3d`` that RecConv can stand in for with a :class:`~recconv.RecConv1d`,
:class:`~recconv.RecConv2d` or :class:`~recconv.RecConv3d`, and returns a :class:`SwapReport`
of what it changed and what it left alone, and why. :func:`swapped` does the same for the
duration of a ``with`` block. The report types live in :mod:`recconv.swap_report`.

What RecConv can stand in for: a conv with ``groups == in_channels == out_channels``, stride 1,
dilation 1, an odd kernel, zero padding that keeps the size (``k // 2`` or ``"same"``); a RecConv
always returns its input size, looks at a dense window and pads with zeros, so other convs would
change the network's shapes or its function. Among those, 1x1 kernels (no spatial mixing to
enlarge), single-channel convs (as dense as depthwise) and subclasses of ``nn.ConvNd`` (whose
``forward`` may differ) are left alone unless a predicate selects them.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.flop_counter import FlopCounterMode

from .core import RecConv1d, RecConv2d, RecConv3d, RecConvNd
from .ops import as_tuple, per_rank
from .swap_report import SkippedLayer, SwappedLayer, SwapReport, _axes
from .theory import conv_flops, receptive_field

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RECCONVS = (RecConv1d, RecConv2d, RecConv3d)
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # by weight rank
# swap sets these per replaced conv; every other keyword-only RecConvNd option passes through,
# except the conv ops: the inits and the cost report assume RecConv's depthwise convs.
_PER_LAYER = ("bias", "device", "dtype")
_CONV_OPS = ("conv", "coarse")
_OPTIONS = tuple(
    name
    for name, p in inspect.signature(RecConvNd.__init__).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in _PER_LAYER + _CONV_OPS
)

Predicate = Callable[[str, nn.Module], bool]
ConvNd = nn.Conv1d | nn.Conv2d | nn.Conv3d


def _describe(module: nn.Module) -> str:
    return f"{type(module).__name__}({module.extra_repr()})"


def _keeps_size(conv: ConvNd) -> bool:
    if conv.padding == "same":
        return True
    if conv.padding == "valid":
        return all(k == 1 for k in conv.kernel_size)
    return all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))


def _why_not_possible(conv: ConvNd) -> list[str]:
    """What stops RecConv from standing in for this conv (empty if nothing does)."""
    if is_lazy(conv.weight):
        return ["uninitialized lazy conv: run one forward pass first"]
    reasons = []
    if not conv.groups == conv.in_channels == conv.out_channels:
        reasons.append(
            f"not depthwise (groups={conv.groups}, in_channels={conv.in_channels}, "
            f"out_channels={conv.out_channels})"
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


def _why_not_default(conv: ConvNd) -> list[str]:
    """Why a conv RecConv could replace is still left alone unless a predicate selects it."""
    reasons = []
    if math.prod(conv.kernel_size) == 1:
        reasons.append("1x1 kernel: no spatial mixing to enlarge")
    if conv.in_channels == 1:
        reasons.append("single channel: as dense as it is depthwise")
    if type(conv) not in _CONVS:
        reasons.append(f"{type(conv).__name__} subclasses an nn.ConvNd and may change its forward")
    return [f"{r} (a predicate can select it)" for r in reasons]


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, nn.Module | None, str]]:
    """Yield ``(name, module, parent, attribute)`` for every conv and RecConv, not descending into them."""
    if not prefix and isinstance(module, (RecConvNd, *_CONVS)):
        yield "", module, None, ""
        return
    for attr, child in module.named_children():
        name = f"{prefix}.{attr}" if prefix else attr
        if isinstance(child, (RecConvNd, *_CONVS)):
            yield name, child, module, attr
        else:
            yield from _walk(child, name)


@dataclass
class _Target:
    name: str
    conv: ConvNd
    kernel: tuple[int, ...]
    slots: list[tuple[nn.Module, str]]  # (parent, attribute) holding the conv; empty for the root
    sizes: list[tuple[int, ...]] = field(default_factory=list)  # spatial input size of each call


def _preserve(old: ConvNd, layer: RecConvNd) -> None:
    """Old kernel centered in ``convs[-1]``; ``convs[-2]`` zero, so the coarse path adds nothing yet."""
    with torch.no_grad():
        final = layer.convs[-1]
        final.weight.zero_()
        window = tuple(slice((n - o) // 2, (n + o) // 2) for n, o in zip(layer.kernel_size, old.kernel_size))
        final.weight[(..., *window)] = old.weight
        if old.bias is not None:
            final.bias.copy_(old.bias)
        if layer.level > 0:
            layer.convs[-2].weight.zero_()


def _random(old: ConvNd, layer: RecConvNd) -> None:
    """Default initialization; the bias that replaces the old one is drawn as ``nn.ConvNd`` draws it."""
    layer.convs[-1].reset_parameters()


_INITS: dict[str, Callable[[ConvNd, RecConvNd], None]] = {"preserve": _preserve, "random": _random}


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    """channels_last when the old weight has its strides (a depthwise weight is contiguous either way)."""
    fmt = _CHANNELS_LAST.get(weight.dim())
    if fmt is None:
        return torch.contiguous_format
    channels_last = torch.empty(weight.shape, device="meta", memory_format=fmt).stride()
    contiguous = torch.empty(weight.shape, device="meta").stride()
    return fmt if weight.stride() == channels_last != contiguous else torch.contiguous_format


def _build(target: _Target, level: int, init: str, options: dict[str, Any]) -> RecConvNd:
    old = target.conv
    weight = old.weight
    layer_class = per_rank(_RECCONVS, len(old.kernel_size))
    layer = layer_class(
        old.in_channels, target.kernel, level, device=weight.device, dtype=weight.dtype, **options
    )
    if old.bias is not None:  # the bias moves to the full-resolution conv, the layer's last op
        layer.convs[-1].bias = nn.Parameter(torch.empty_like(old.bias))
    _INITS[init](old, layer)
    layer.to(memory_format=_memory_format(weight))
    for p in layer.parameters():
        p.requires_grad_(weight.requires_grad)
    if old.bias is not None:
        layer.convs[-1].bias.requires_grad_(old.bias.requires_grad)
    return layer.train(old.training)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _check_arguments(
    owner: str,
    model: nn.Module,
    level: int,
    kernel_size: int | Sequence[int] | None,
    init: str,
    predicate: Predicate | None,
    input_size: Sequence[int] | None,
    options: dict[str, Any],
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{owner}: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise ValueError(f"{owner}: level must be an int >= 0, got {level!r}")
    if kernel_size is not None:
        sizes = tuple(kernel_size) if _is_sequence(kernel_size) else (kernel_size,)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in sizes):
            raise TypeError(
                f"{owner}: kernel_size must be None, an int or a tuple of ints, got {kernel_size!r}"
            )
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"{owner}: kernel_size must be odd and positive, got {kernel_size!r}")
    if init not in _INITS:
        close = difflib.get_close_matches(str(init), list(_INITS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{owner}: unknown init {init!r}; expected one of {sorted(_INITS)}.{hint}")
    if predicate is not None and not callable(predicate):
        raise TypeError(f"{owner}: predicate must be a callable (name, module) -> bool, got {predicate!r}")
    if input_size is not None and (
        not _is_sequence(input_size)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"{owner}: input_size must be the shape of one input sample without the batch axis, "
            f"as positive ints like (3, 224, 224), got {input_size!r}"
        )
    fixed = sorted(set(options) & set(_PER_LAYER))
    if fixed:
        raise TypeError(
            f"{owner}: {', '.join(fixed)} cannot be passed: device and dtype follow each replaced "
            "conv, and its bias (if any) moves to the RecConv's full-resolution conv convs[-1]"
        )
    for name in options:
        if name not in _OPTIONS:
            close = difflib.get_close_matches(name, _OPTIONS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{owner}: unknown RecConv option {name!r}; expected one of {list(_OPTIONS)}.{hint}"
            )
    if init == "preserve" and options.get("causal", False) is not False:
        raise ValueError(
            f"{owner}: init='preserve' cannot keep a centered conv's outputs in a causal RecConv "
            f"(causal={options['causal']!r}); use init='random'"
        )


def _plan(
    owner: str,
    model: nn.Module,
    kernel_size: int | Sequence[int] | None,
    init: str,
    predicate: Predicate | None,
) -> tuple[list[_Target], list[SkippedLayer]]:
    """Decide what to replace, checking everything before the model is touched."""
    targets: dict[int, _Target] = {}
    skipped: dict[int, SkippedLayer] = {}
    for name, module, parent, attr in _walk(model):
        key = id(module)
        if key in targets:  # one conv registered under several names: replace it everywhere
            slots = targets[key].slots
            if not any(p is parent and a == attr for p, a in slots):  # a shared parent is walked twice
                slots.append((parent, attr))
            continue
        if key in skipped:
            continue
        if isinstance(module, RecConvNd):
            reasons = ["already a RecConv (swap never looks inside one)"]
        else:
            reasons = _why_not_possible(module)
            if not reasons and predicate is not None:
                reasons = [] if predicate(name, module) else ["predicate returned False"]
            elif not reasons:
                reasons = _why_not_default(module)
        if reasons:
            skipped[key] = SkippedLayer(name or "(model)", _describe(module), "; ".join(reasons))
            continue
        old_kernel = tuple(module.kernel_size)
        kernel = (
            old_kernel
            if kernel_size is None
            else as_tuple(kernel_size, len(old_kernel), "kernel_size", f"{owner} at {name!r}")
        )
        if init == "preserve" and any(n < o for n, o in zip(kernel, old_kernel)):
            raise ValueError(
                f"{owner}: init='preserve' cannot fit the {_axes(old_kernel)} kernel of {name!r} "
                f"into a {_axes(kernel)} base kernel; use kernel_size >= {max(old_kernel)}, "
                "kernel_size=None or init='random'"
            )
        targets[key] = _Target(name or "(model)", module, kernel, [] if parent is None else [(parent, attr)])
    return list(targets.values()), list(skipped.values())


def _run_once(owner: str, model: nn.Module, input_size: tuple[int, ...], targets: list[_Target]) -> int:
    """Record each target's spatial input size over one eval-mode forward pass; return the model's FLOPs."""
    tensor = next(model.parameters(), None)
    device = tensor.device if tensor is not None else None
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else None
    hooks = [
        t.conv.register_forward_pre_hook(
            lambda _, args, t=t: t.sizes.append(tuple(args[0].shape[-len(t.kernel) :]))
        )
        for t in targets
    ]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    except Exception as error:
        raise ValueError(
            f"{owner}: the model failed on an input of shape {(1, *input_size)} "
            f"(input_size={input_size}): {error}"
        ) from error
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    return counter.get_total_flops()


def _builtin_ops(layer: RecConvNd) -> bool:
    """Whether the theory helpers know the layer's ops (they do not know custom builders)."""
    return isinstance(layer.upsample, str) and isinstance(layer.downsample, str)


def _flops(
    target: _Target, layer: RecConvNd, input_size: tuple[int, ...] | None
) -> tuple[float, float | None]:
    conv = target.conv
    per_position = 2 * conv.in_channels * math.prod(conv.kernel_size)
    if input_size is None:
        # Sizes divisible by factor**level give RecConv's exact average cost per position.
        size = [f**layer.level for f in layer.factor]
        return per_position, conv_flops(layer, size) / math.prod(size) if _builtin_ops(layer) else None
    old = sum(per_position * math.prod(s) for s in target.sizes)
    return old, sum(conv_flops(layer, s) for s in target.sizes) if _builtin_ops(layer) else None


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _swap_in_place(
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None,
    init: str,
    predicate: Predicate | None,
    input_size: Sequence[int] | None,
    options: dict[str, Any],
    allow_root: bool,
) -> tuple[nn.Module, SwapReport, list[tuple[nn.Module, str, nn.Module]]]:
    size = None if input_size is None else tuple(input_size)
    owner = "recconv.swap" if allow_root else "recconv.swapped"
    targets, skipped = _plan(owner, model, kernel_size, init, predicate)
    if not allow_root and any(not t.slots for t in targets):
        raise ValueError(
            f"{owner}: the model itself is a conv ({_describe(model)}) and cannot be swapped in "
            "place; use recconv.swap, which returns the replacement"
        )
    report = SwapReport(level, init, size, skipped=skipped, params_before=_num_params(model))
    if size is not None:
        report.flops_before = _run_once(owner, model, size, targets)
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    result = model
    for target in targets:
        layer = _build(target, level, init, options)
        for parent, attr in target.slots:
            setattr(parent, attr, layer)
            replaced.append((parent, attr, target.conv))
        if not target.slots:
            result = layer
        old_flops, new_flops = _flops(target, layer, size)
        report.swapped.append(
            SwappedLayer(
                name=target.name,
                channels=target.conv.in_channels,
                old_kernel=tuple(target.conv.kernel_size),
                new_kernel=target.kernel,
                receptive_field=receptive_field(layer) if _builtin_ops(layer) else None,
                old_params=_num_params(target.conv),
                new_params=_num_params(layer),
                old_flops=old_flops,
                new_flops=new_flops,
            )
        )
    report.params_after = _num_params(result)
    flops = report.swapped_flops
    if report.flops_before is not None and flops is not None:
        report.flops_after = report.flops_before - int(flops[0]) + int(flops[1])
    return result, report, replaced


def swap(
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None = None,
    init: str = "preserve",
    predicate: Predicate | None = None,
    inplace: bool = False,
    input_size: Sequence[int] | None = None,
    **recconv_options: Any,
) -> tuple[nn.Module, SwapReport]:
    """Replace the depthwise convs of ``model`` by RecConv layers of the same rank.

    Every ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` with ``groups == in_channels ==
    out_channels > 1``, stride 1, dilation 1, an odd kernel larger than 1x1 and zero padding
    that keeps the size becomes a ``RecConv1d``/``2d``/``3d`` with the same channels. Other
    convs stay, and the report says why (see the module docstring). Existing RecConv layers
    are left alone and never looked inside. A conv registered under several names is replaced
    by one RecConv everywhere. A model that is itself such a conv is returned replaced.

    ``init="preserve"`` keeps the network's function at swap time: the old kernel sits
    centered in the full-resolution conv ``convs[-1]`` (zeros around it), the old bias
    becomes ``convs[-1].bias``, and ``convs[-2]``, the coarse conv whose output is upsampled
    and added to the input of ``convs[-1]``, starts at zero, so the coarse path adds exactly
    nothing. Everything else (``convs[:-2]``, the down and up ops) keeps its default random
    init. Zeroing only that one conv is deliberate. Every coarser level reaches the output
    through ``convs[-2]``, so one zero conv suffices. A conv's weight gradient is its input
    times the gradient at its output: ``convs[-2]`` sees nonzero coarse features, so the first
    optimizer step moves it, and from the second step on every coarser conv and the down op
    get gradients through it (a "zero convolution" as in ControlNet). Zeroing all coarse
    convs would keep the function too, but each one's output gradient would pass through
    the zero convs after it: ``convs[i]`` would first move at step ``level - i``, with
    gradients scaled by products of the few learning-rate-sized weights before it.
    Custom up builders must map zeros to zeros for ``"preserve"`` to hold, as the built-in
    ones do. ``init="random"`` draws every weight as RecConv does by default (and a replacing
    bias as ``nn.ConvNd`` draws one).

    The new layers keep the device, dtype, channels_last memory format, ``requires_grad`` and
    training mode of the convs they replace. Forward hooks registered on a replaced conv do
    not move to its RecConv.

    Args:
        model: The network (left untouched unless ``inplace=True``).
        level: RecConv level ``l`` (the effective kernel is ``k * 2**l`` with the default factor).
        kernel_size: Base kernel of every RecConv, an odd int or one per spatial axis; ``None``
            keeps each conv's own kernel.
        init: ``"preserve"`` or ``"random"``.
        predicate: ``predicate(name, conv) -> bool`` decides, for every conv RecConv could
            replace, whether to replace it: it can leave convs out (narrow) or select 1x1,
            single-channel or subclassed convs (widen). It is not asked about convs RecConv
            cannot stand in for (strided, dense, dilated, ...).
        inplace: Modify ``model`` itself instead of a deep copy.
        input_size: Shape of one input sample without the batch axis, e.g. ``(3, 224, 224)``.
            The model then runs once, in eval mode without gradients, on zeros of that shape
            to count FLOPs per layer and in total; without it FLOPs are per output position.
        **recconv_options: Further RecConv options: ``upsample``, ``downsample``, ``factor``,
            ``shared_down``, ``causal`` (``bias``, ``device`` and ``dtype`` follow each conv).

    Returns:
        The swapped model (``model`` itself if ``inplace``) and a :class:`SwapReport`.

    Raises:
        ValueError: For a level below 0, an even or non-positive kernel, an unknown init, a bad
            ``input_size`` or a model that fails on it, ``"preserve"`` with a causal RecConv or
            with a base kernel smaller than a conv's own kernel (nothing is modified then).
        TypeError: For a model that is not an ``nn.Module``, a non-callable predicate, a
            kernel of the wrong type or length, or an unknown or per-layer RecConv option.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import recconv
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 5, padding=2, groups=16))
        >>> new, report = recconv.swap(net.eval(), level=2)
        >>> type(new[1]).__name__
        'RecConv2d'
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.allclose(new(x), net(x), rtol=1e-6, atol=1e-6)
        True
        >>> row = report.swapped[0]
        >>> row.name, row.receptive_field
        ('1', (49, 49))
        >>> report.skipped[0].reason
        'not depthwise (groups=1, in_channels=3, out_channels=16)'
    """
    _check_arguments("recconv.swap", model, level, kernel_size, init, predicate, input_size, recconv_options)
    if not inplace:
        model = copy.deepcopy(model)
    result, report, _ = _swap_in_place(
        model,
        level=level,
        kernel_size=kernel_size,
        init=init,
        predicate=predicate,
        input_size=input_size,
        options=recconv_options,
        allow_root=True,
    )
    return result, report


@contextmanager
def swapped(
    model: nn.Module,
    *,
    level: int,
    kernel_size: int | Sequence[int] | None = None,
    init: str = "preserve",
    predicate: Predicate | None = None,
    input_size: Sequence[int] | None = None,
    **recconv_options: Any,
) -> Iterator[SwapReport]:
    """Swap RecConv into ``model`` in place for a ``with`` block, then put the original convs back.

    Takes the arguments of :func:`swap` (always in place) and yields its report. On exit,
    exception or not, every replaced conv object is put back where it was, so the model is
    exactly what it was before (the same module objects, with their parameters as they were;
    an optimizer built inside the block holds the RecConv parameters, not these).

    Raises:
        ValueError: As :func:`swap`, and when ``model`` is itself a conv that would be replaced.
        TypeError: As :func:`swap`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import recconv
        >>> net = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1, groups=8))
        >>> conv = net[0]
        >>> with recconv.swapped(net, level=3) as report:
        ...     type(net[0]).__name__, len(report.swapped)
        ('RecConv1d', 1)
        >>> net[0] is conv
        True
    """
    _check_arguments(
        "recconv.swapped", model, level, kernel_size, init, predicate, input_size, recconv_options
    )
    _, report, replaced = _swap_in_place(
        model,
        level=level,
        kernel_size=kernel_size,
        init=init,
        predicate=predicate,
        input_size=input_size,
        options=recconv_options,
        allow_root=False,
    )
    try:
        yield report
    finally:
        for parent, attr, old in reversed(replaced):
            setattr(parent, attr, old)
